//! The gate: open, or closed with a maintenance page. The marker `.upkeep/gate-closed` is the one
//! source of truth, so that `upkeep serve`, nginx and Apache all honour the same gate.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::base::clock::now_text;
use crate::base::error::{IoContext, Result};
use crate::base::fsutil::{sync_dir, write_atomic};
use crate::site::config::Instance;

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

/// The marker file.
pub fn marker(inst: &Instance) -> PathBuf {
    inst.state_dir().join("gate-closed")
}

/// The rendered maintenance page, served while closed.
pub fn page_path(inst: &Instance) -> PathBuf {
    inst.state_dir().join("maintenance.html")
}

/// The operator-editable template.
pub fn template_path(inst: &Instance) -> PathBuf {
    inst.state_dir().join("templates/maintenance.html")
}

/// Current gate state: `None` when open.
pub fn closed(inst: &Instance) -> Option<Closed> {
    let text = std::fs::read_to_string(marker(inst)).ok()?;
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
pub fn close(inst: &Instance, message: &str, run: Option<i64>) -> Result<Closed> {
    let before = closed(inst);
    if let Some(c) = &before
        && c.message == message
        && c.run == run
    {
        return Ok(c.clone());
    }
    // A run closing a site the operator closed keeps the operator's closure to put back.
    let operator = match (run, before) {
        (Some(_), Some(c)) if c.run.is_none() => Some(Box::new(c)),
        (Some(_), Some(c)) => c.operator,
        _ => None,
    };
    let c = Closed {
        message: message.to_string(),
        since: now_text(),
        run,
        operator,
    };
    write_marker(inst, &c)?;
    Ok(c)
}

fn write_marker(inst: &Instance, c: &Closed) -> Result<()> {
    let template =
        std::fs::read_to_string(template_path(inst)).unwrap_or_else(|_| DEFAULT_PAGE.to_string());
    let page = template
        .replace("{{message}}", &escape(&c.message))
        .replace("{{since}}", &escape(&c.since));
    write_atomic(&page_path(inst), page.as_bytes())?;
    write_atomic(
        &marker(inst),
        serde_json::to_string(c).expect("serialises").as_bytes(),
    )
}

/// The end of a run (reopen, rollback): open the gate, unless the operator had closed the
/// site before the run; then their closure, message and time included, is put back.
/// Returns the closure that stays, if any.
pub fn reopen_after_run(inst: &Instance) -> Result<Option<Closed>> {
    match closed(inst).and_then(|c| c.operator) {
        Some(op) => {
            write_marker(inst, &op)?;
            Ok(Some(*op))
        }
        None => open(inst).map(|_| None),
    }
}

/// Open the gate.
pub fn open(inst: &Instance) -> Result<()> {
    let m = marker(inst);
    match std::fs::remove_file(&m) {
        Ok(()) => sync_dir(&inst.state_dir()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).ctx("remove", &m),
    }
}
