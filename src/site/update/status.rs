//! What `upkeep status` and the panel's dashboard show.

use serde::Serialize;

use super::{gate, scan, tasks};
use crate::base::error::Result;
use crate::documents::manifest::RelPath;
use crate::site::config::Instance;
use crate::site::state::{Run, StagedInfo, State};

/// What `upkeep status` shows.
#[derive(Debug, Serialize)]
pub struct Status {
    /// Installed release.
    pub installed: Option<String>,
    /// The gate, when closed.
    pub gate: Option<gate::Closed>,
    /// The staged release.
    pub staged: Option<StagedInfo>,
    /// The unfinished run.
    pub current: Option<Run>,
    /// Recent runs, newest first.
    pub history: Vec<Run>,
    /// Extensions found by the last scan.
    pub extensions: Vec<scan::Extension>,
    /// run_once tasks waiting.
    pub pending_tasks: Vec<RelPath>,
    /// Last check time and the latest release it saw.
    pub last_check: Option<(String, String)>,
    /// The last unattended pass (`upkeep auto`), as it was recorded.
    pub last_auto: Option<serde_json::Value>,
    /// Recent unattended passes, newest first.
    pub passes: Vec<serde_json::Value>,
    /// The unattended policy in force, in words.
    pub policy: String,
    /// Mail reports waiting for the SMTP server.
    pub mail_waiting: usize,
    /// The site's fleet identity: id, groups, channel.
    pub site: crate::site::fleet::identity::Identity,
    /// Why the last check was offered the release it saw (when the site's channel has a
    /// rollout).
    pub offer: Option<String>,
}

/// The `[auto]` policy and `[mail]` in one line an operator can check at a glance.
pub fn policy(inst: &Instance) -> String {
    let a = &inst.config.auto;
    if !a.enabled {
        return "off ([auto] enabled = false)".into();
    }
    let mut parts = vec![format!("{} steps", a.allow.word())];
    if let Some(w) = &a.window {
        parts.push(format!("window {w}"));
    }
    if !a.days.is_empty() {
        parts.push(format!("on {}", a.days.join(",")));
    }
    parts.push(format!(
        "modified files: {}",
        match a.on_modified {
            crate::site::config::OnModified::Hold => "hold",
            crate::site::config::OnModified::KeepMine => "keep mine",
            crate::site::config::OnModified::TakeRelease => "take the release's",
        }
    ));
    if a.busy.any() {
        let mut sig = Vec::new();
        if a.busy.command.is_some() {
            sig.push("command");
        }
        if a.busy.url.is_some() {
            sig.push("url");
        }
        if a.busy.access_log.is_some() {
            sig.push("access log");
        }
        parts.push(format!(
            "wait while busy ({}; at most {})",
            sig.join(", "),
            crate::base::clock::span_words(a.busy.max_postpone.0)
        ));
    }
    if let Some(u) = &a.health.url {
        parts.push(format!("health check {u}"));
    }
    if !a.after.is_empty() {
        parts.push(format!("{} restart hooks", a.after.len()));
    }
    let m = &inst.config.mail;
    if !m.to.is_empty() {
        parts.push(format!("mail {} ({:?})", m.to.join(", "), m.report).to_lowercase());
    }
    format!("on: {}", parts.join("; "))
}

/// Gather the status.
pub fn status(inst: &Instance) -> Result<Status> {
    let state = State::open(&inst.state_db())?;
    let extensions = state.extensions()?;
    let last_check = match (state.meta("last_check")?, state.meta("last_check_latest")?) {
        (Some(a), Some(b)) => Some((a, b)),
        _ => None,
    };
    let passes = state.passes(10)?;
    Ok(Status {
        installed: state.installed_version()?,
        gate: gate::closed(&inst.root),
        staged: state.staged()?,
        current: state.unfinished_run()?,
        history: state.runs(20)?,
        pending_tasks: match state.installed(&inst.key)? {
            Some(m) => tasks::find(inst, &m, &extensions)?.tasks,
            None => Vec::new(),
        },
        extensions,
        last_check,
        last_auto: passes.first().cloned(),
        passes,
        policy: policy(inst),
        mail_waiting: state.queued_mail()?.len(),
        site: crate::site::fleet::identity::identity(inst)?,
        offer: state
            .meta("last_check_diff")?
            .and_then(|d| serde_json::from_str::<crate::site::plan::Diff>(&d).ok())
            .and_then(|d| d.offer),
    })
}
