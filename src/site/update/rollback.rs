//! `upkeep rollback`: put back exactly the release before a run, however far the run got, and
//! its database only when that loses no write made since.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::migrate::{self, MarkPoint};
use super::{clear_staging, gate, scan, swap};
use crate::base::crash;
use crate::base::error::{Error, IoContext, Result};
use crate::documents::manifest::RelPath;
use crate::site::config::Instance;
use crate::site::database::{Engine, SiteDatabase};
use crate::site::lock::InstanceLock;
use crate::site::plan::Kind;
use crate::site::state::{Run, RunStatus, State};

/// What a rollback does with the site database. Decided with the site closed, so that no
/// visitor's write lands between the decision and the act.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum DatabaseStep {
    /// The run changed no database (it stopped before migrate).
    Untouched,
    /// Nothing was written since the update: the copy taken before migrate goes back, exactly.
    Restore {
        /// The copy.
        copy: String,
    },
    /// Nothing was written since the update, which created the database: it is removed.
    Remove,
    /// Nothing but the update's own schema statements changed the database (no task wrote
    /// to it, no visitor wrote since it reopened): each is taken back (DROP of what it
    /// added), which loses nothing and takes no copy back.
    Undo {
        /// How many statements.
        statements: usize,
    },
    /// Written by visitors during the update, or since the site reopened: kept as it is.
    /// The schema the update added is a superset the previous code runs on; the copy stays in
    /// `.upkeep/backups/`.
    Keep {
        /// When and how it was written ("since the site reopened (last at T)").
        written: String,
        /// What a restore would discard, table by table.
        changes: Vec<String>,
        /// The copy taken before migrate ("" when there was no database).
        copy: String,
        /// The update's own tasks that wrote to it while the site was closed (a shell task
        /// running the application's database upgrade): their changes stay too.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tasks: Vec<String>,
    },
    /// `--restore-database` over writes: the database as it is is saved to `saved_to`, then
    /// the copy taken before migrate goes back (or the database is removed).
    Discard {
        /// When it was last written.
        written: String,
        /// What is discarded, table by table.
        changes: Vec<String>,
        /// Where the discarded database is kept.
        saved_to: String,
    },
}

impl DatabaseStep {
    /// One sentence for the operator.
    pub fn describe(&self) -> String {
        let listed = |changes: &[String]| match changes {
            [] => "no rows added: rows were changed or deleted in place".to_string(),
            c => c.join("; "),
        };
        match self {
            DatabaseStep::Untouched => "the database: not touched by the run".into(),
            DatabaseStep::Restore { copy } => format!(
                "the database: nothing was written since the update; the copy taken before it goes back ({copy})"
            ),
            DatabaseStep::Remove => {
                "the database: the update created it and nothing was written since; it is removed"
                    .into()
            }
            DatabaseStep::Undo { statements } => format!(
                "the database: only the update's {statements} schema change(s) touched it; each is taken back (what it added is dropped), nothing else changes"
            ),
            DatabaseStep::Keep {
                written,
                changes,
                copy,
                tasks,
            } => format!(
                "the database: kept as it is, because it was written {written}: {}. The tables and columns the update added stay; the previous release runs on them{}{}",
                listed(changes),
                match tasks.as_slice() {
                    [] => String::new(),
                    t => format!(
                        ". But the update's task(s) {} changed it while the site was closed, and that stays too: if the previous release cannot run on what they did (an application's database upgrade), restore the copy taken before the update instead (this database is saved first)",
                        t.join(", ")
                    ),
                },
                match copy.as_str() {
                    "" => String::new(),
                    c => format!(
                        ". The copy taken before the update stays in {c} (`upkeep backup` says how to put it back by hand)"
                    ),
                }
            ),
            DatabaseStep::Discard {
                written,
                changes,
                saved_to,
            } => format!(
                "the database: the copy taken before the update goes back, DISCARDING what was written {written}: {}. The database as it is now is saved first to {saved_to}",
                listed(changes)
            ),
        }
    }
}

/// What `upkeep rollback` will do, shown before it does it.
#[derive(Clone, Debug, Serialize)]
pub struct RollbackPlan {
    /// The run undone.
    pub run: i64,
    /// The release that goes back (`None`: a fresh instance).
    pub from: Option<String>,
    /// The release undone.
    pub to: String,
    /// Files put back from their backup (replaced or removed by the run).
    pub put_back: usize,
    /// Files the run added, removed.
    pub removed: usize,
    /// What happens to the database (decided again, the site closed, when it runs).
    pub database: DatabaseStep,
    /// Shell tasks that ran: what they did is not undone, and they do not run again.
    pub shell_tasks: Vec<RelPath>,
}

/// How to roll back.
#[derive(Clone, Copy, Debug, Default)]
pub struct RollbackOptions {
    /// Put back the copy of the database taken before the update even when it was written
    /// since (what was written is saved aside first).
    pub restore_database: bool,
}

/// What a rollback did.
#[derive(Clone, Debug, Serialize)]
pub struct RolledBack {
    /// The run, now rolled back.
    pub run: Run,
    /// What was done with the database.
    pub database: DatabaseStep,
}

/// The run a rollback undoes, or why there is none that can be undone exactly.
fn run_to_undo(inst: &Instance, state: &State) -> Result<Run> {
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
    Ok(run)
}

/// What `upkeep rollback` would do now, changing nothing.
pub fn plan(inst: &Instance, o: &RollbackOptions) -> Result<RollbackPlan> {
    // A busy instance says so before a plan that would be stale by the time it is approved.
    let _lock = InstanceLock::acquire(inst, "rollback")?;
    let state = State::open(&inst.state_db())?;
    let run = run_to_undo(inst, &state)?;
    let count = |k: &[Kind]| {
        run.plan
            .actions
            .iter()
            .filter(|a| k.contains(&a.kind))
            .count()
    };
    Ok(RollbackPlan {
        run: run.id,
        from: run.from.clone(),
        to: run.to.clone(),
        put_back: count(&[Kind::Replace, Kind::Remove, Kind::Displace]),
        removed: count(&[Kind::Add]),
        database: database_step(inst, &state, &run, o, false)?,
        shell_tasks: run
            .tasks
            .iter()
            .filter(|t| t.state.completed() && !t.name.as_str().ends_with(".sql"))
            .map(|t| t.name.clone())
            .collect(),
    })
}

/// `upkeep rollback`: put back exactly the release before the last run.
pub fn rollback(inst: &Instance, o: &RollbackOptions) -> Result<RolledBack> {
    let _lock = InstanceLock::acquire(inst, "rollback")?;
    let mut state = State::open(&inst.state_db())?;
    let run = run_to_undo(inst, &state)?;
    // A task the interrupted runner started may still be running: not while its run is undone.
    let timeout = std::time::Duration::from_secs(inst.config.tasks.timeout_secs);
    for line in super::tasks::settle_interrupted(&state, run.id, timeout)? {
        crate::errln!("{line}");
    }
    rollback_run(inst, &mut state, run.id, o)
}

/// What was written to the database of `run` by anyone but upkeep (`written`: when and how,
/// with the rows), and whether upkeep's own closed-phase work (tasks, rebuilds) wrote data.
struct Writes {
    visitors: Option<(String, Vec<String>)>,
    upkeep_data: bool,
}

fn writes(db: &mut dyn SiteDatabase, state: &State, run: &Run) -> Result<Writes> {
    let backup = migrate::load_mark(state, run.id, MarkPoint::Backup)?;
    let close = migrate::load_mark(state, run.id, MarkPoint::Close)?;
    let reopen = migrate::load_mark(state, run.id, MarkPoint::Reopen)?;
    let mut visitors = None;
    match &reopen {
        Some(m) => {
            if let Some(w) = db.written_since(m)? {
                visitors = Some((format!("since the site reopened ({})", w.when), w.changes));
            }
        }
        // A run that reopened the site without a mark (recorded by an older upkeep): nothing
        // says it was not written.
        None if run.closed_ms.is_some() => {
            visitors = Some((
                "since the site reopened, perhaps (the run predates upkeep's marks)".into(),
                Vec::new(),
            ));
        }
        None => {}
    }
    // A server's copy was taken with the site open: writes between it and the close are in
    // the database, not in the copy.
    if visitors.is_none()
        && let (Some(b), Some(c)) = (&backup, &close)
        && db.written_between(b, c)?
    {
        visitors = Some((
            "by visitors while the update prepared, between its copy and the close".into(),
            Vec::new(),
        ));
    }
    let upkeep_data = match (db.engine(), &close, &reopen) {
        (Engine::Sqlite, _, _) => true,
        (_, Some(c), Some(r)) => db.written_between(c, r)?,
        (_, Some(c), None) => db.written_since(c)?.is_some(),
        // Stopped before the close: only the open-phase schema statements ran.
        (_, None, _) => false,
    };
    Ok(Writes {
        visitors,
        upkeep_data,
    })
}

/// Decide what the rollback of `run` does with the database; with `stamp`, name the file a
/// discarded database is saved to as of now.
fn database_step(
    inst: &Instance,
    state: &State,
    run: &Run,
    o: &RollbackOptions,
    stamp: bool,
) -> Result<DatabaseStep> {
    let Some(copy) = run.db_backup.clone() else {
        return Ok(DatabaseStep::Untouched);
    };
    let mut db = inst.database()?;
    let w = writes(db.as_mut(), state, run)?;
    let Some((written, changes)) = w.visitors else {
        if db.engine() == Engine::Sqlite {
            return Ok(match copy.as_str() {
                "" => DatabaseStep::Remove,
                _ => DatabaseStep::Restore { copy },
            });
        }
        if w.upkeep_data {
            return Ok(DatabaseStep::Restore { copy });
        }
        let n = migrate::applied(state, run)?.len();
        return Ok(match n {
            0 => DatabaseStep::Untouched,
            statements => DatabaseStep::Undo { statements },
        });
    };
    if !o.restore_database {
        // Only tasks that wrote: an engine that can tell says whether the closed phase wrote
        // data; SQLite cannot, so every task that ran is named.
        let tasks = match w.upkeep_data {
            true => run
                .tasks
                .iter()
                .filter(|t| t.state.completed())
                .map(|t| t.name.to_string())
                .collect(),
            false => Vec::new(),
        };
        return Ok(DatabaseStep::Keep {
            written,
            changes,
            copy,
            tasks,
        });
    }
    let when = if stamp {
        crate::base::clock::now_text().replace([':', '-'], "")
    } else {
        "TIME".into()
    };
    let ext = db
        .backup_name(run.id)
        .rsplit_once('.')
        .map(|(_, e)| e.to_string())
        .unwrap_or_else(|| "db".into());
    let saved_to = inst
        .root
        .join(".upkeep/backups")
        .join(format!("run-{}-discarded-{when}.{ext}", run.id));
    Ok(DatabaseStep::Discard {
        written,
        changes,
        saved_to: saved_to.display().to_string(),
    })
}

pub(super) fn rollback_run(
    inst: &Instance,
    state: &mut State,
    id: i64,
    o: &RollbackOptions,
) -> Result<RolledBack> {
    let run = state.run(id)?;
    let swapped = run.status == RunStatus::Done || run.step.swapped();
    state.set_run_status(id, RunStatus::RollingBack, run.error.as_deref())?;
    crash::point("rollback:begin");
    gate::close(
        &inst.root,
        "Restoring the previous release. We will be back in a moment.",
        Some(id),
    )?;
    // Decided once the gate is closed: no visitor writes between this and the restore. A
    // rollback resumed after a crash finds its decision recorded, the database perhaps
    // already restored (which a second look would take for a write).
    let key = format!("rollback_db:{id}");
    let recorded: Option<DatabaseStep> = match state.meta(&key)? {
        Some(d) => Some(
            serde_json::from_str(&d)
                .map_err(|e| Error::msg(format!("the recorded rollback of run {id}: {e}")))?,
        ),
        None => None,
    };
    let database = match recorded {
        // Keeping touched nothing: deciding again is safe, and follows a new --restore-database.
        Some(d) if !matches!(d, DatabaseStep::Keep { .. }) => d,
        _ => {
            let d = database_step(inst, state, &run, o, true)?;
            state.set_meta(&key, &serde_json::to_string(&d).expect("serialises"))?;
            d
        }
    };
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
    // A database kept keeps the task's work and its mark in `upkeep_run_once`, like a shell
    // task, which keeps its mark: what it did outside the database is not undone, and it must
    // not run a second time.
    let db_back = matches!(
        database,
        DatabaseStep::Restore { .. } | DatabaseStep::Remove | DatabaseStep::Discard { .. }
    );
    for t in done_tasks
        .iter()
        .filter(|t| db_back && t.as_str().ends_with(".sql"))
    {
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
    if let DatabaseStep::Discard { saved_to, .. } = &database
        && !Path::new(saved_to).exists()
    {
        let mut db = inst.database()?;
        if db.exists()? {
            let name = Path::new(saved_to)
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("discarded.db");
            migrate::copy_to(inst, db.as_mut(), name)?;
        }
        crash::point("rollback:saved");
    }
    if db_back {
        match run.db_backup.as_deref() {
            Some("") => {
                if let Some(p) = inst.sqlite_path() {
                    migrate::remove_sqlite(&p);
                }
            }
            Some(copy) => inst.database()?.restore(Path::new(copy))?,
            None => {}
        }
    }
    if let DatabaseStep::Undo { .. } = &database {
        let mut db = inst.database()?;
        for st in migrate::applied(state, &run)? {
            db.undo(&st)?;
            crash::point("rollback:undo");
        }
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
    // The code changed back: the restart hooks tell the caches that serve it (PHP's opcache
    // would go on serving the release just undone), before the site reopens. Kept beside the
    // run's own, marked.
    if !inst.config.auto.after.is_empty() {
        let mut hooks = state.run(id)?.hooks;
        for mut h in super::after::run_hooks(inst, &super::shell_env(inst, &run, "rollback"))? {
            h.command = format!("(after the rollback) {}", h.command);
            hooks.push(h);
        }
        state.record_hooks(id, &hooks)?;
    }
    gate::reopen_after_run(&inst.root)?;
    state.set_run_status(id, RunStatus::RolledBack, run.error.as_deref())?;
    Ok(RolledBack {
        run: state.run(id)?,
        database,
    })
}
