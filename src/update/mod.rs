//! The run: `check -> stage -> review -> close -> swap -> scan -> migrate -> run_once -> reopen`.
//! Every step boundary is persisted in state.db before the next begins, and every step can be
//! run again after a crash (its progress is read back from the filesystem or the database), so
//! `resume` is simply "run the remaining steps" and `rollback` undoes whatever was done.

pub mod crash;
pub mod gate;
pub mod migrate;
pub mod scan;
pub mod swap;
pub mod tasks;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rayon::prelude::*;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::check::diff_live;
use crate::config::Instance;
use crate::error::{DbContext, Error, IoContext, Result};
use crate::fsutil::{device_of, free_bytes, human_bytes};
use crate::lock::InstanceLock;
use crate::manifest::{RelPath, VerifiedManifest, digest};
use crate::progress::Progress;
use crate::state::{StagedInfo, State, now_text};
use swap::{Action, Kind};

/// The steps after review, in order.
pub const STEPS: &[&str] = &["close", "swap", "scan", "migrate", "run_once", "reopen"];

/// What a run will do; shown for review and kept with the run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    /// Installed release.
    pub from: Option<String>,
    /// Staged release.
    pub to: String,
    /// Every file change, in swap order.
    pub actions: Vec<Action>,
    /// Locally modified files (also among the actions).
    pub modified: Vec<RelPath>,
    /// run_once tasks that will run.
    pub tasks: Vec<String>,
    /// Schema changes.
    pub schema: migrate::SchemaPlan,
    /// Bytes of the files to install.
    pub bytes: u64,
    /// Extensions of the live tree, found before the site closes (the scan step applies the
    /// plan's changes to them instead of walking the tree while closed).
    #[serde(default)]
    pub extensions: Vec<scan::Extension>,
}

impl Plan {
    /// Paths of one kind.
    pub fn of(&self, kind: Kind) -> Vec<&RelPath> {
        self.actions
            .iter()
            .filter(|a| a.kind == kind)
            .map(|a| &a.path)
            .collect()
    }
}

/// How to run.
pub struct Options<'a> {
    /// Leave locally modified files in place instead of installing the release's version.
    pub keep_modified: bool,
    /// Asked with the plan before anything changes; false stops there.
    pub confirm: &'a dyn Fn(&Plan) -> bool,
    /// Told when a step starts (`None`) and ends (`Some(ms)`).
    pub on_step: &'a dyn Fn(&str, Option<u64>),
    /// What to do with an interrupted shell task.
    pub decision: tasks::Decision,
    /// Progress of the swap.
    pub progress: &'a Progress,
}

/// One run, as recorded.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    /// Its number.
    pub id: i64,
    /// Release before.
    pub from: Option<String>,
    /// Release after.
    pub to: String,
    /// The step it is at (or stopped at).
    pub step: String,
    /// running, failed, done, rolling_back, rolled_back.
    pub status: String,
    /// When it started.
    pub started_at: String,
    /// When it ended.
    pub finished_at: Option<String>,
    /// How long visitors saw the maintenance page, in milliseconds.
    pub closed_ms: Option<i64>,
    /// The error that stopped it.
    pub error: Option<String>,
    /// The plan.
    #[serde(skip)]
    pub plan: Plan,
    /// Where the database copy taken before migrate lives ("" when there was no database).
    #[serde(skip)]
    pub db_backup: Option<String>,
    /// Step timings.
    pub steps: Vec<StepTime>,
    /// Tasks and their output.
    pub tasks: Vec<TaskRecord>,
}

/// A step's timing.
#[derive(Clone, Debug, Serialize)]
pub struct StepTime {
    /// Step name.
    pub step: String,
    /// Duration, once finished.
    pub duration_ms: Option<i64>,
    /// ok or the error.
    pub result: Option<String>,
}

/// A task's record.
#[derive(Clone, Debug, Serialize)]
pub struct TaskRecord {
    /// Its path.
    pub name: String,
    /// started, succeeded, done, failed, skipped.
    pub state: String,
    /// Its output.
    pub output: String,
    /// Exit status.
    pub exit_code: Option<i32>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

const RUN_COLS: &str = "id, from_version, to_version, step, status, started_at, finished_at, closed_ms, error, plan, db_backup";

fn run_from_row(r: &rusqlite::Row) -> rusqlite::Result<Run> {
    let plan: String = r.get(9)?;
    let id: i64 = r.get(0)?;
    Ok(Run {
        id,
        from: r.get(1)?,
        to: r.get(2)?,
        step: r.get(3)?,
        status: r.get(4)?,
        started_at: r.get(5)?,
        finished_at: r.get(6)?,
        closed_ms: r.get(7)?,
        error: r.get(8)?,
        plan: serde_json::from_str(&plan).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(9, rusqlite::types::Type::Text, Box::new(e))
        })?,
        db_backup: r.get(10)?,
        steps: Vec::new(),
        tasks: Vec::new(),
    })
}

/// Load a run with its steps and tasks.
pub fn load_run(state: &State, id: i64) -> Result<Run> {
    let mut run = state
        .conn
        .query_row(
            &format!("SELECT {RUN_COLS} FROM runs WHERE id = ?1"),
            [id],
            run_from_row,
        )
        .db(state.path())?;
    let mut st = state
        .conn
        .prepare("SELECT step, duration_ms, result FROM run_steps WHERE run_id = ?1 ORDER BY rowid")
        .db(state.path())?;
    run.steps = st
        .query_map([id], |r| {
            Ok(StepTime {
                step: r.get(0)?,
                duration_ms: r.get(1)?,
                result: r.get(2)?,
            })
        })
        .db(state.path())?
        .collect::<rusqlite::Result<_>>()
        .db(state.path())?;
    let mut st = state
        .conn
        .prepare(
            "SELECT name, state, output, exit_code FROM tasks WHERE run_id = ?1 ORDER BY rowid",
        )
        .db(state.path())?;
    run.tasks = st
        .query_map([id], |r| {
            Ok(TaskRecord {
                name: r.get(0)?,
                state: r.get(1)?,
                output: r.get(2)?,
                exit_code: r.get(3)?,
            })
        })
        .db(state.path())?
        .collect::<rusqlite::Result<_>>()
        .db(state.path())?;
    Ok(run)
}

/// The run that is not finished (running, failed or rolling back), if any.
pub fn unfinished(state: &State) -> Result<Option<Run>> {
    let id: Option<i64> = state
        .conn
        .query_row("SELECT id FROM runs WHERE status IN ('running', 'failed', 'rolling_back') ORDER BY id DESC LIMIT 1", [], |r| r.get(0))
        .optional()
        .db(state.path())?;
    id.map(|id| load_run(state, id)).transpose()
}

/// The most recent runs, newest first.
pub fn history(state: &State, limit: usize) -> Result<Vec<Run>> {
    let ids: Vec<i64> = {
        let mut st = state
            .conn
            .prepare("SELECT id FROM runs ORDER BY id DESC LIMIT ?1")
            .db(state.path())?;
        st.query_map([limit as i64], |r| r.get(0))
            .db(state.path())?
            .collect::<rusqlite::Result<_>>()
            .db(state.path())?
    };
    ids.into_iter().map(|id| load_run(state, id)).collect()
}

fn set_step(state: &State, id: i64, step: &str) -> Result<()> {
    state
        .conn
        .execute("UPDATE runs SET step = ?2 WHERE id = ?1", params![id, step])
        .db(state.path())?;
    Ok(())
}

fn set_status(state: &State, id: i64, status: &str, error: Option<&str>) -> Result<()> {
    let finished = matches!(status, "done" | "rolled_back").then(now_text);
    state
        .conn
        .execute("UPDATE runs SET status = ?2, error = ?3, finished_at = COALESCE(?4, finished_at) WHERE id = ?1", params![id, status, error, finished])
        .db(state.path())?;
    Ok(())
}

/// The schema the live tree (or staging, for files about to change) declares.
fn fragments(
    inst: &Instance,
    exts: &[scan::Extension],
    prefer_staging: bool,
) -> Result<Vec<migrate::Fragment>> {
    let mut out = Vec::new();
    let staged = inst.staging().join("schema.sql");
    let live = inst.root.join("schema.sql");
    let main = if prefer_staging && staged.is_file() {
        staged
    } else {
        live
    };
    if main.is_file() {
        out.push(migrate::Fragment {
            source: "schema.sql".into(),
            sql: std::fs::read_to_string(&main).ctx("read", &main)?,
        });
    }
    for e in exts {
        if let Some(s) = &e.schema {
            let p = e.resolve(&inst.root, s)?;
            out.push(migrate::Fragment {
                source: format!("{} ({})", p.display(), e.name),
                sql: std::fs::read_to_string(&p).ctx("read", &p)?,
            });
        }
    }
    Ok(out)
}

/// Compute the plan for the staged release. All the slow work happens here, before anything
/// closes: the live tree is fingerprinted and every staged file is hashed again.
pub fn prepare(
    inst: &Instance,
    state: &mut State,
    keep_modified: bool,
) -> Result<(Plan, VerifiedManifest)> {
    let Some(staged) = state.staged()? else {
        return Err(Error::refused(
            "nothing is staged",
            format!(
                "run `upkeep check --root {0}` then `upkeep stage --root {0} --network` (or --archive, --inbox, --manual)",
                inst.root.display()
            ),
        ));
    };
    let target = state
        .load_release(&staged.version, &inst.key)?
        .ok_or_else(|| {
            Error::refused(
                format!(
                    "the manifest of staged release {} is missing",
                    staged.version
                ),
                "stage the release again",
            )
        })?;
    let installed = state.installed(&inst.key)?;
    let diff = diff_live(inst, state, installed.as_ref(), &target)?;
    let staging = inst.staging();
    let needed: Vec<&RelPath> = diff.needed().collect();
    let bad: Vec<String> = needed
        .par_iter()
        .filter_map(|p| {
            let e = target.entry(p).expect("diff paths come from the manifest");
            match digest::hash_file(&p.under(&staging)) {
                Ok(h) if h.sha256 == e.sha256 && h.size == e.size => None,
                Ok(_) => Some(format!("{p} (changed since it was staged)")),
                Err(_) => Some(format!("{p} (missing from staging)")),
            }
        })
        .collect();
    if !bad.is_empty() {
        return Err(Error::refused(
            format!(
                "staging no longer matches release {}: {}",
                target.version(),
                bad.join(", ")
            ),
            format!("run `upkeep stage --root {}` again", inst.root.display()),
        ));
    }
    let modified: HashSet<&RelPath> = diff.modified.iter().collect();
    let mut actions: Vec<Action> = needed
        .iter()
        .map(|p| {
            let m = modified.contains(p);
            let kind = if m && keep_modified {
                Kind::Keep
            } else if std::fs::symlink_metadata(p.under(&inst.root)).is_ok() {
                Kind::Replace
            } else {
                Kind::Add
            };
            Action {
                path: (*p).clone(),
                kind,
                modified: m,
            }
        })
        .collect();
    actions.sort_by(|a, b| a.path.cmp(&b.path));
    for p in &diff.removed {
        let m = modified.contains(p);
        actions.push(Action {
            path: p.clone(),
            kind: if m && keep_modified {
                Kind::Keep
            } else {
                Kind::Remove
            },
            modified: m,
        });
    }
    let exts = scan::find(inst)?;
    let mut task_names: Vec<String> = actions
        .iter()
        .filter(|a| {
            matches!(a.kind, Kind::Add | Kind::Replace)
                && a.path.top() == "run_once"
                && (a.path.as_str().ends_with(".sql") || a.path.as_str().ends_with(".sh"))
        })
        .map(|a| a.path.to_string())
        .collect();
    for t in tasks::pending(inst, &exts)? {
        if !task_names.contains(&t.name) {
            task_names.push(t.name);
        }
    }
    task_names.sort();
    let schema = migrate::plan(&inst.database(), &fragments(inst, &exts, true)?)?;
    let bytes = needed
        .iter()
        .filter_map(|p| target.entry(p))
        .map(|e| e.size)
        .sum();
    let plan = Plan {
        from: installed.map(|m| m.version().to_string()),
        to: target.version().to_string(),
        actions,
        modified: diff.modified.clone(),
        tasks: task_names,
        schema,
        bytes,
        extensions: exts,
    };
    Ok((plan, target))
}

/// Checks before closing: free space, one filesystem, writable folders, a sound database.
pub fn preflight(inst: &Instance, plan: &Plan) -> Result<()> {
    let db = inst.database();
    let db_size = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
    let need = db_size + (16 << 20);
    let free = free_bytes(&inst.root)?;
    if free < need {
        return Err(Error::refused(
            format!(
                "not enough free disk on {}: {} free, {} needed (database copy for rollback plus a margin)",
                inst.root.display(),
                human_bytes(free),
                human_bytes(need)
            ),
            format!(
                "free {} on that filesystem, then run the update again",
                human_bytes(need - free)
            ),
        ));
    }
    let staging_dev = device_of(&inst.staging())?;
    let mut checked = HashSet::new();
    for a in plan.actions.iter().filter(|a| a.kind != Kind::Keep) {
        let mut dir = a.path.under(&inst.root);
        while !dir.is_dir() {
            if !dir.pop() {
                break;
            }
        }
        if !checked.insert(dir.clone()) {
            continue;
        }
        if device_of(&dir)? != staging_dev {
            return Err(Error::refused(
                format!(
                    "{} is on another filesystem than staging/: files cannot be swapped by rename",
                    dir.display()
                ),
                "keep the instance root, staging/ and the application files on one filesystem",
            ));
        }
        let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
            .map_err(|_| Error::msg("path holds NUL"))?;
        // SAFETY: c is a valid NUL-terminated path.
        if unsafe { libc::access(c.as_ptr(), libc::W_OK) } != 0 {
            return Err(Error::refused(
                format!("no write permission on {}", dir.display()),
                "run upkeep as the user that owns the site's files",
            ));
        }
    }
    migrate::integrity(&db)
}

/// `upkeep update`: plan, confirm, then run every step.
pub fn update(inst: &Instance, o: &Options) -> Result<Option<Run>> {
    let _lock = InstanceLock::acquire(inst, "update")?;
    let mut state = State::open(&inst.state_db())?;
    if let Some(r) = unfinished(&state)? {
        return Err(Error::refused(
            format!("run {} stopped at step {} ({})", r.id, r.step, r.status),
            format!(
                "finish it with `upkeep resume --root {0}` or undo it with `upkeep rollback --root {0}`",
                inst.root.display()
            ),
        ));
    }
    let (plan, _) = prepare(inst, &mut state, o.keep_modified)?;
    if !(o.confirm)(&plan) {
        return Ok(None);
    }
    preflight(inst, &plan)?;
    state
        .conn
        .execute(
            "INSERT INTO runs(from_version, to_version, step, status, started_at, keep_modified, plan) VALUES(?1, ?2, 'close', 'running', ?3, ?4, ?5)",
            params![plan.from, plan.to, now_text(), o.keep_modified, serde_json::to_string(&plan).expect("serialises")],
        )
        .db(state.path())?;
    let id = state.conn.last_insert_rowid();
    drive(inst, &mut state, id, o).map(Some)
}

/// `upkeep resume`: continue the unfinished run.
pub fn resume(inst: &Instance, o: &Options) -> Result<Run> {
    let _lock = InstanceLock::acquire(inst, "resume")?;
    let mut state = State::open(&inst.state_db())?;
    let Some(run) = unfinished(&state)? else {
        // Resuming is idempotent: after a crash that came once the run had finished, there is
        // nothing left to do, and scripts should not fail on that.
        return match history(&state, 1)?.into_iter().next() {
            Some(last) => Ok(last),
            None => Err(Error::refused(
                "no run to resume: this instance has never run an update",
                "see `upkeep status`",
            )),
        };
    };
    if run.status == "rolling_back" {
        drop(_lock);
        return rollback(inst);
    }
    set_status(&state, run.id, "running", None)?;
    drive(inst, &mut state, run.id, o)
}

fn begin_step(state: &State, id: i64, step: &str) -> Result<()> {
    state
        .conn
        .execute("INSERT INTO run_steps(run_id, step, started_at) VALUES(?1, ?2, ?3) ON CONFLICT(run_id, step) DO UPDATE SET result = NULL", params![id, step, now_text()])
        .db(state.path())?;
    Ok(())
}

fn end_step(state: &State, id: i64, step: &str, ms: u64, result: &str) -> Result<()> {
    state
        .conn
        .execute(
            "UPDATE run_steps SET duration_ms = COALESCE(duration_ms, 0) + ?3, result = ?4 WHERE run_id = ?1 AND step = ?2",
            params![id, step, ms as i64, result],
        )
        .db(state.path())?;
    Ok(())
}

fn drive(inst: &Instance, state: &mut State, id: i64, o: &Options) -> Result<Run> {
    loop {
        let run = load_run(state, id)?;
        let step = run.step.clone();
        if step == "done" {
            return Ok(run);
        }
        let next = STEPS
            .iter()
            .position(|s| *s == step)
            .and_then(|i| STEPS.get(i + 1))
            .copied()
            .unwrap_or("done");
        (o.on_step)(&step, None);
        begin_step(state, id, &step)?;
        let t = Instant::now();
        let r = run_step(inst, state, &run, o);
        let ms = t.elapsed().as_millis() as u64;
        match r {
            Ok(()) => {
                end_step(state, id, &step, ms, "ok")?;
                (o.on_step)(&step, Some(ms));
                if step != "reopen" {
                    set_step(state, id, next)?;
                }
                crash::point(&format!("{step}:after"));
            }
            Err(e) => {
                let text = e.to_string();
                let cause_hint = e.hint().unwrap_or_else(|| "fix the cause".into());
                end_step(state, id, &step, ms, &text)?;
                set_status(state, id, "failed", Some(&text))?;
                if step == "swap" {
                    // The site is closed and half swapped: go straight back to the old release.
                    return match rollback_run(inst, state, id) {
                        Ok(_) => Err(Error::refused(
                            format!(
                                "{text}\nthe swap was undone: the previous release is back in place and the site is open again"
                            ),
                            format!(
                                "{cause_hint}; then stage again (the staged files were used up) and run `upkeep update`"
                            ),
                        )),
                        Err(e2) => Err(Error::refused(
                            format!("{text}\nundoing the swap failed too: {e2}"),
                            format!(
                                "fix the cause, then run `upkeep rollback --root {}`",
                                inst.root.display()
                            ),
                        )),
                    };
                }
                return Err(e);
            }
        }
    }
}

fn run_step(inst: &Instance, state: &mut State, run: &Run, o: &Options) -> Result<()> {
    crash::point(&format!("{}:before", run.step));
    match run.step.as_str() {
        "close" => {
            gate::close(
                inst,
                &format!(
                    "Updating to release {}. We will be back in a moment.",
                    run.to
                ),
                Some(run.id),
            )?;
            state
                .conn
                .execute(
                    "UPDATE runs SET closed_at_ms = COALESCE(closed_at_ms, ?2) WHERE id = ?1",
                    params![run.id, now_ms()],
                )
                .db(state.path())?;
        }
        "swap" => swap::apply(inst, &run.plan.actions, o.progress)?,
        "scan" => {
            let exts = scan::after_swap(inst, &run.plan.extensions, &run.plan.actions)?;
            scan::record(state, &exts)?;
        }
        "migrate" => {
            let db = inst.database();
            if run.db_backup.is_none() {
                let copy = if db.exists() {
                    let dir = inst.state_dir().join("backups");
                    std::fs::create_dir_all(&dir).ctx("create folder", &dir)?;
                    let copy = dir.join(format!("run-{}.db", run.id));
                    migrate::backup(&db, &copy)?;
                    copy.display().to_string()
                } else {
                    String::new()
                };
                crash::point("migrate:backup");
                state
                    .conn
                    .execute(
                        "UPDATE runs SET db_backup = ?2 WHERE id = ?1",
                        params![run.id, copy],
                    )
                    .db(state.path())?;
            }
            if let Some(parent) = db.parent() {
                std::fs::create_dir_all(parent).ctx("create folder", parent)?;
            }
            let exts = scan::recorded(state)?;
            let plan = migrate::plan(&db, &fragments(inst, &exts, false)?)?;
            migrate::apply(&db, &plan)?;
        }
        "run_once" => {
            let exts = scan::recorded(state)?;
            tasks::run_all(
                inst,
                state,
                run.id,
                &exts,
                o.decision,
                Duration::from_secs(inst.config.tasks.timeout_secs),
            )?;
        }
        "reopen" => finish(inst, state, run)?,
        other => {
            return Err(Error::msg(format!(
                "run {} is at an unknown step {other:?}",
                run.id
            )));
        }
    }
    Ok(())
}

/// The reopen step: record the new release, clear staging, drop the backups of the run before,
/// open the gate, and write the closed window.
fn finish(inst: &Instance, state: &State, run: &Run) -> Result<()> {
    let target = state.load_release(&run.to, &inst.key)?.ok_or_else(|| {
        Error::msg(format!(
            "the manifest of release {} is missing from state.db",
            run.to
        ))
    })?;
    state.set_installed(&target)?;
    state.clear_staged()?;
    clear_staging(inst)?;
    let previous: Option<String> = state
        .conn
        .query_row(
            "SELECT plan FROM runs WHERE status = 'done' AND id < ?1 ORDER BY id DESC LIMIT 1",
            [run.id],
            |r| r.get(0),
        )
        .optional()
        .db(state.path())?;
    if let Some(p) = previous.and_then(|p| serde_json::from_str::<Plan>(&p).ok()) {
        swap::drop_old_backups(inst, &p.actions, &run.plan.actions);
    }
    let _ = std::fs::remove_dir_all(inst.partial_dir());
    gate::open(inst)?;
    let now = now_ms();
    crash::point("reopen:opened");
    state
        .conn
        .execute(
            "UPDATE runs SET reopened_at_ms = ?2, closed_ms = ?2 - closed_at_ms, step = 'done', status = 'done', finished_at = ?3, error = NULL WHERE id = ?1",
            params![run.id, now, now_text()],
        )
        .db(state.path())?;
    Ok(())
}

/// Empty `staging/` (after a run, its files are live or obsolete).
fn clear_staging(inst: &Instance) -> Result<()> {
    let st = inst.staging();
    let Ok(rd) = std::fs::read_dir(&st) else {
        return Ok(());
    };
    for e in rd.flatten() {
        let p = e.path();
        if e.file_name() == ".gitkeep" {
            continue;
        }
        if p.is_dir() {
            std::fs::remove_dir_all(&p).ctx("remove", &p)?;
        } else {
            std::fs::remove_file(&p).ctx("remove", &p)?;
        }
    }
    Ok(())
}

/// `upkeep rollback`: put back exactly the release before the last run.
pub fn rollback(inst: &Instance) -> Result<Run> {
    let _lock = InstanceLock::acquire(inst, "rollback")?;
    let mut state = State::open(&inst.state_db())?;
    let id: Option<i64> = state
        .conn
        .query_row("SELECT id FROM runs WHERE status IN ('running', 'failed', 'rolling_back', 'done') ORDER BY id DESC LIMIT 1", [], |r| r.get(0))
        .optional()
        .db(state.path())?;
    let Some(id) = id else {
        return Err(Error::refused(
            "there is no run to roll back",
            "see `upkeep status` for the history",
        ));
    };
    rollback_run(inst, &mut state, id)
}

fn rollback_run(inst: &Instance, state: &mut State, id: i64) -> Result<Run> {
    let run = load_run(state, id)?;
    let swapped = run.status == "done"
        || matches!(
            run.step.as_str(),
            "scan" | "migrate" | "run_once" | "reopen" | "done"
        );
    set_status(state, id, "rolling_back", run.error.as_deref())?;
    crash::point("rollback:begin");
    gate::close(
        inst,
        "Restoring the previous release. We will be back in a moment.",
        Some(id),
    )?;
    if swapped {
        // Every action was applied: staging holds nothing of this run (maybe a newer staging).
        clear_staging(inst)?;
    }
    let done_tasks: HashSet<String> = run
        .tasks
        .iter()
        .filter(|t| matches!(t.state.as_str(), "done" | "succeeded" | "skipped"))
        .map(|t| t.name.clone())
        .collect();
    swap::undo(inst, &run.plan.actions, &done_tasks)?;
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
    match &run.from {
        Some(v) => {
            if let Some(m) = state.load_release(v, &inst.key)? {
                state.set_installed(&m)?;
            }
        }
        None => state.del_meta("installed_version")?,
    }
    let exts = scan::find(inst)?;
    scan::record(state, &exts)?;
    state.clear_staged()?;
    clear_staging(inst)?;
    gate::open(inst)?;
    set_status(state, id, "rolled_back", run.error.as_deref())?;
    load_run(state, id)
}

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
    pub pending_tasks: Vec<String>,
    /// Last check time and the latest release it saw.
    pub last_check: Option<(String, String)>,
}

/// Gather the status.
pub fn status(inst: &Instance) -> Result<Status> {
    let state = State::open(&inst.state_db())?;
    let extensions = scan::recorded(&state)?;
    let last_check = match (state.meta("last_check")?, state.meta("last_check_latest")?) {
        (Some(a), Some(b)) => Some((a, b)),
        _ => None,
    };
    Ok(Status {
        installed: state.installed_version()?,
        gate: gate::closed(inst),
        staged: state.staged()?,
        current: unfinished(&state)?,
        history: history(&state, 20)?,
        pending_tasks: tasks::pending(inst, &extensions)?
            .into_iter()
            .map(|t| t.name)
            .collect(),
        extensions,
        last_check,
    })
}
