//! What `upkeep status` and the panel's dashboard show.

use serde::Serialize;

use super::{gate, scan, tasks};
use crate::config::Instance;
use crate::error::Result;
use crate::manifest::RelPath;
use crate::state::{Run, StagedInfo, State};

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
}

/// Gather the status.
pub fn status(inst: &Instance) -> Result<Status> {
    let state = State::open(&inst.state_db())?;
    let extensions = state.extensions()?;
    let last_check = match (state.meta("last_check")?, state.meta("last_check_latest")?) {
        (Some(a), Some(b)) => Some((a, b)),
        _ => None,
    };
    Ok(Status {
        installed: state.installed_version()?,
        gate: gate::closed(inst),
        staged: state.staged()?,
        current: state.unfinished_run()?,
        history: state.runs(20)?,
        pending_tasks: tasks::pending(inst, &extensions)?
            .into_iter()
            .map(|t| t.name)
            .collect(),
        extensions,
        last_check,
        last_auto: state
            .meta("last_auto")?
            .and_then(|j| serde_json::from_str(&j).ok()),
    })
}
