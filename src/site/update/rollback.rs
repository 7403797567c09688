//! `upkeep rollback`: put back exactly the release before a run, however far the run got.

use std::collections::HashSet;
use std::path::PathBuf;

use super::{clear_staging, gate, migrate, scan, swap};
use crate::base::crash;
use crate::base::error::{Error, IoContext, Result};
use crate::documents::manifest::RelPath;
use crate::site::config::Instance;
use crate::site::lock::InstanceLock;
use crate::site::state::{Run, RunStatus, State};

/// `upkeep rollback`: put back exactly the release before the last run.
pub fn rollback(inst: &Instance) -> Result<Run> {
    let _lock = InstanceLock::acquire(inst, "rollback")?;
    let mut state = State::open(&inst.state_db())?;
    let Some(run) = state.run_to_roll_back()? else {
        return Err(Error::refused(
            "there is no run to roll back",
            "see `upkeep status` for the history",
        ));
    };
    // Only the newest run can be undone exactly: a later run (even one rolled back) replaced
    // the backups an older run would need.
    if let Some(newest) = state.runs(1)?.into_iter().next()
        && newest.id != run.id
    {
        return Err(Error::refused(
            format!(
                "run {} was already rolled back: release {} is installed. Run {} before it cannot be undone exactly (its backups were replaced)",
                newest.id,
                newest.from.as_deref().unwrap_or("(none)"),
                run.id
            ),
            format!(
                "to go further back, stage the release you want with `upkeep stage --root {} --archive ZIP --allow-downgrade` and update",
                inst.root.display()
            ),
        ));
    }
    // A task the interrupted runner started may still be running: not while its run is undone.
    let timeout = std::time::Duration::from_secs(inst.config.tasks.timeout_secs);
    for line in super::tasks::settle_interrupted(&state, run.id, timeout)? {
        crate::errln!("{line}");
    }
    rollback_run(inst, &mut state, run.id)
}

pub(super) fn rollback_run(inst: &Instance, state: &mut State, id: i64) -> Result<Run> {
    let run = state.run(id)?;
    let swapped = run.status == RunStatus::Done || run.step.swapped();
    state.set_run_status(id, RunStatus::RollingBack, run.error.as_deref())?;
    crash::point("rollback:begin");
    gate::close(
        &inst.root,
        "Restoring the previous release. We will be back in a moment.",
        Some(id),
    )?;
    if swapped {
        // Every action was applied: staging holds nothing of this run (maybe a newer staging).
        clear_staging(inst)?;
    }
    let done_tasks: HashSet<RelPath> = run
        .tasks
        .iter()
        .filter(|t| t.state.completed())
        .map(|t| t.name.clone())
        .collect();
    // An SQL task's done-mark goes back with the database: the copy taken before migrate
    // predates the task, so after the rollback it is pending again (invariant 5, both ways).
    // A shell task keeps its mark: what it did outside the database is not undone, and it must
    // not run a second time.
    for t in done_tasks.iter().filter(|t| t.as_str().ends_with(".sql")) {
        let (live, done) = (
            t.under(&inst.root),
            t.with_suffix(crate::documents::manifest::relpath::DONE)
                .under(&inst.root),
        );
        if done.exists() && !live.exists() {
            std::fs::rename(&done, &live).ctx("rename", &done)?;
        }
    }
    swap::undo(
        inst,
        &swap::aside_dir(inst, run.id),
        &run.plan.actions,
        &done_tasks,
    )?;
    crash::point("rollback:files");
    match run.db_backup.as_deref() {
        Some("") => {
            let db = inst.database();
            for p in [
                db.clone(),
                PathBuf::from(format!("{}-wal", db.display())),
                PathBuf::from(format!("{}-shm", db.display())),
            ] {
                let _ = std::fs::remove_file(p);
            }
        }
        Some(copy) => migrate::restore(std::path::Path::new(copy), &inst.database())?,
        None => {}
    }
    crash::point("rollback:database");
    let mut exts = Vec::new();
    match &run.from {
        Some(v) => {
            if let Some(m) = state.load_release(v, &inst.key)? {
                state.set_installed(&m)?;
                exts = scan::find(inst, &m, &|_| false)?;
            }
        }
        None => state.del_meta("installed_version")?,
    }
    state.record_extensions(&exts)?;
    state.clear_staged()?;
    clear_staging(inst)?;
    gate::reopen_after_run(&inst.root)?;
    // The code changed back: the restart hooks tell the caches that serve it (PHP's opcache
    // would go on serving the release just undone). Kept beside the run's own, marked.
    if !inst.config.auto.after.is_empty() {
        let mut hooks = state.run(id)?.hooks;
        for mut h in super::after::run_hooks(inst, &super::shell_env(inst, &run, "rollback"))? {
            h.command = format!("(after the rollback) {}", h.command);
            hooks.push(h);
        }
        state.record_hooks(id, &hooks)?;
    }
    state.set_run_status(id, RunStatus::RolledBack, run.error.as_deref())?;
    state.run(id)
}
