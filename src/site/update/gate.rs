//! The gate: open, or closed with a maintenance page. The marker `.upkeep/gate-closed` is the one
//! source of truth, so that `upkeep serve`, nginx and Apache all honour the same gate.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::base::clock::now_text;
use crate::base::error::{IoContext, Result};
use crate::base::fsutil::{sync_dir, write_atomic};

/// The default maintenance page; operators edit their copy in `.upkeep/templates/`.
pub const DEFAULT_PAGE: &str = include_str!("../../../templates/maintenance.html");
/// Seconds visitors are told to wait (Retry-After).
pub const RETRY_AFTER: u64 = 120;

/// What the marker records.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Closed {
    /// Shown to visitors.
    pub message: String,
    /// RFC 3339.
    pub since: String,
    /// The run that closed it, if any.
    pub run: Option<i64>,
    /// The operator's own closure that a run found in place: the run's reopen puts it back
    /// instead of opening the site (the operator's word outlasts the run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<Box<Closed>>,
}

/// `.upkeep/` of the instance at `root`: the gate needs nothing else of the instance, so that
/// `close` and `open` work even when upkeep.toml cannot be read.
fn state_dir(root: &Path) -> PathBuf {
    root.join(".upkeep")
}

/// The marker file.
pub fn marker(root: &Path) -> PathBuf {
    state_dir(root).join("gate-closed")
}

/// The rendered maintenance page, served while closed.
pub fn page_path(root: &Path) -> PathBuf {
    state_dir(root).join("maintenance.html")
}

/// The operator-editable template.
pub fn template_path(root: &Path) -> PathBuf {
    state_dir(root).join("templates/maintenance.html")
}

/// Current gate state: `None` when open.
pub fn closed(root: &Path) -> Option<Closed> {
    let text = std::fs::read_to_string(marker(root)).ok()?;
    Some(serde_json::from_str(&text).unwrap_or(Closed {
        message: text,
        since: String::new(),
        run: None,
        operator: None,
    }))
}

/// Text made safe for the operator's HTML template (maud's escaping, as in the panel).
fn escape(s: &str) -> String {
    maud::html! { (s) }.into_string()
}

/// Close the gate (idempotent: an existing marker keeps its time unless the message changes).
pub fn close(root: &Path, message: &str, run: Option<i64>) -> Result<Closed> {
    let before = closed(root);
    if let Some(c) = &before
        && c.message == message
        && c.run == run
    {
        return Ok(c.clone());
    }
    let c = match (run, before) {
        // A run closing a site the operator closed keeps the operator's closure to put back.
        (Some(_), Some(b)) => Closed {
            message: message.to_string(),
            since: now_text(),
            run,
            operator: if b.run.is_none() {
                Some(Box::new(b))
            } else {
                b.operator
            },
        },
        // The operator closing a site a run has closed: visitors see the operator's message
        // now, and the run's reopen puts the operator's closure back instead of opening.
        (None, Some(b)) if b.run.is_some() => Closed {
            message: message.to_string(),
            since: b.since,
            run: b.run,
            operator: Some(Box::new(Closed {
                message: message.to_string(),
                since: now_text(),
                run: None,
                operator: None,
            })),
        },
        _ => Closed {
            message: message.to_string(),
            since: now_text(),
            run,
            operator: None,
        },
    };
    write_marker(root, &c)?;
    Ok(c)
}

fn write_marker(root: &Path, c: &Closed) -> Result<()> {
    let template =
        std::fs::read_to_string(template_path(root)).unwrap_or_else(|_| DEFAULT_PAGE.to_string());
    let page = template
        .replace("{{message}}", &escape(&c.message))
        .replace("{{since}}", &escape(&c.since));
    write_atomic(&page_path(root), page.as_bytes())?;
    write_atomic(
        &marker(root),
        serde_json::to_string(c).expect("serialises").as_bytes(),
    )
}

/// The end of a run (reopen, rollback): open the gate, unless the operator had closed the
/// site before the run; then their closure, message and time included, is put back.
/// Returns the closure that stays, if any.
pub fn reopen_after_run(root: &Path) -> Result<Option<Closed>> {
    match closed(root).and_then(|c| c.operator) {
        Some(op) => {
            write_marker(root, &op)?;
            Ok(Some(*op))
        }
        None => open(root).map(|_| None),
    }
}

/// Open the gate.
pub fn open(root: &Path) -> Result<()> {
    let m = marker(root);
    match std::fs::remove_file(&m) {
        Ok(()) => sync_dir(&state_dir(root)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).ctx("remove", &m),
    }
}
