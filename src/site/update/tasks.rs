//! run_once tasks: files in `run_once/` (and extensions' run_once folders) without a `.done`
//! twin, run in name order. A `*.sql` task and its done-mark commit together in the site
//! database; a `*.sh` task is marked started before it runs, so one found started after a crash
//! is never re-run without the operator's word.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::scan::Extension;
use crate::base::clock::now_text;
use crate::base::crash;
use crate::base::error::{DbContext, Error, IoContext, Result};
use crate::documents::manifest::RelPath;
use crate::documents::manifest::relpath::is_reserved_name;
use crate::site::config::Instance;
use crate::site::state::{State, TaskState};

/// A task waiting to run.
#[derive(Clone, Debug, Serialize)]
pub struct Task {
    /// Path relative to the root (the name shown and recorded).
    pub name: RelPath,
    /// The file.
    #[serde(skip)]
    pub path: PathBuf,
}

/// What the operator decided about a shell task found started but unfinished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Ask: stop the run.
    Ask,
    /// Run it again.
    Rerun,
    /// Mark it done without running it.
    Skip,
}

/// Whether a file name in a run_once folder is a task upkeep runs.
pub fn is_task_name(name: &str) -> bool {
    name.ends_with(".sql") || name.ends_with(".sh")
}

/// Files in the run_once folders that are not tasks (neither `.sh` nor `.sql`): never run,
/// listed in the plan so that a mistyped task name does not pass unseen.
pub fn not_tasks(inst: &Instance, exts: &[Extension]) -> Result<Vec<RelPath>> {
    let mut out = Vec::new();
    for rel in task_dirs(exts)? {
        let Ok(rd) = std::fs::read_dir(rel.under(&inst.root)) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(n) = e.file_name().into_string() else {
                continue;
            };
            if e.path().is_file()
                && !is_task_name(&n)
                && !is_reserved_name(n.as_bytes(), false)
                && !n.starts_with('.')
            {
                out.push(RelPath::parse(&format!("{rel}/{n}"))?);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The folders tasks come from: the release's `run_once/`, then each extension's.
fn task_dirs(exts: &[Extension]) -> Result<Vec<RelPath>> {
    let mut dirs = vec![RelPath::parse("run_once")?];
    for e in exts {
        if let Some(r) = &e.run_once {
            dirs.push(e.resolve_rel(r)?);
        }
    }
    Ok(dirs)
}

/// Pending tasks: release tasks first, then each extension's, each group in name order.
pub fn pending(inst: &Instance, exts: &[Extension]) -> Result<Vec<Task>> {
    let dirs = task_dirs(exts)?;
    let mut out = Vec::new();
    for rel in dirs {
        let dir = rel.under(&inst.root);
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        for n in &names {
            if is_reserved_name(n.as_bytes(), false)
                || n.starts_with('.')
                || names.contains(&format!("{n}.done"))
            {
                continue;
            }
            if !is_task_name(n) {
                continue;
            }
            out.push(Task {
                name: RelPath::parse(&format!("{rel}/{n}"))?,
                path: dir.join(n),
            });
        }
    }
    Ok(out)
}

fn ensure_own_table(c: &Connection, db: &Path) -> Result<()> {
    c.execute_batch("CREATE TABLE IF NOT EXISTS upkeep_run_once(name TEXT PRIMARY KEY, sha256 TEXT NOT NULL, run_id INTEGER, done_at TEXT NOT NULL)").db(db)
}

fn mark_done_file(t: &Task) -> Result<()> {
    let done = PathBuf::from(format!("{}.done", t.path.display()));
    std::fs::rename(&t.path, &done).ctx("rename", &t.path)?;
    crate::base::fsutil::sync_dir(t.path.parent().expect("task has a folder"))
}

/// Run every pending task of run `run`. Stops at the first failure with the task's output.
pub fn run_all(
    inst: &Instance,
    state: &State,
    run: i64,
    exts: &[Extension],
    decision: Decision,
    timeout: Duration,
) -> Result<Vec<RelPath>> {
    let db = inst.database();
    let mut ran = Vec::new();
    for (n, t) in pending(inst, exts)?.into_iter().enumerate() {
        let n = n + 1;
        crash::point(&format!("run_once:{n}:before"));
        let bytes = std::fs::read(&t.path).ctx("read", &t.path)?;
        let sha = crate::documents::manifest::digest::sha256_bytes(&bytes).to_hex();
        if t.name.as_str().ends_with(".sql") {
            let mut c = Connection::open(&db).db(&db)?;
            ensure_own_table(&c, &db)?;
            let already: Option<String> = c
                .query_row(
                    "SELECT sha256 FROM upkeep_run_once WHERE name = ?1",
                    [t.name.as_str()],
                    |r| r.get(0),
                )
                .optional()
                .db(&db)?;
            if already.as_deref() != Some(sha.as_str()) {
                let sql = String::from_utf8_lossy(&bytes).into_owned();
                let tx = c.transaction().db(&db)?;
                if let Err(e) = tx.execute_batch(&sql) {
                    drop(tx);
                    state.set_task(run, &t.name, TaskState::Failed, Some(&e.to_string()), None)?;
                    return Err(Error::refused(
                        format!(
                            "run_once task {} failed: {e}\nits changes to the database were undone",
                            t.name
                        ),
                        "the site stays closed: fix the cause, then `upkeep resume` runs it again (or `upkeep rollback`)",
                    ));
                }
                tx.execute("INSERT OR REPLACE INTO upkeep_run_once(name, sha256, run_id, done_at) VALUES(?1, ?2, ?3, ?4)", params![t.name.as_str(), sha, run, now_text()])
                    .db(&db)?;
                tx.commit().db(&db)?;
            }
            crash::point(&format!("run_once:{n}:ran"));
            mark_done_file(&t)?;
            state.set_task(run, &t.name, TaskState::Done, None, Some(0))?;
        } else {
            match state.task_state(run, &t.name)? {
                Some(TaskState::Started) if decision == Decision::Ask => {
                    return Err(Error::refused(
                        format!(
                            "shell task {} was started but never confirmed finished (the process was interrupted)",
                            t.name
                        ),
                        "check what it did, then run `upkeep resume --rerun-task` to run it again or `upkeep resume --skip-task` to mark it done",
                    ));
                }
                Some(TaskState::Started) if decision == Decision::Skip => {
                    mark_done_file(&t)?;
                    state.set_task(
                        run,
                        &t.name,
                        TaskState::Skipped,
                        Some("skipped by the operator after an interruption"),
                        None,
                    )?;
                    continue;
                }
                Some(TaskState::Succeeded) => {
                    mark_done_file(&t)?;
                    state.set_task(run, &t.name, TaskState::Done, None, None)?;
                    continue;
                }
                _ => {}
            }
            state.set_task(run, &t.name, TaskState::Started, None, None)?;
            crash::point(&format!("run_once:{n}:started"));
            let (code, output) =
                crate::base::shell::run(&inst.root, &[t.path.as_os_str()], timeout)?;
            if code != Some(0) {
                state.set_task(run, &t.name, TaskState::Failed, Some(&output), code)?;
                let why = match code {
                    Some(c) => format!("exited with status {c}"),
                    None => format!(
                        "was stopped after {} s (tasks.timeout_secs)",
                        timeout.as_secs()
                    ),
                };
                return Err(Error::refused(
                    format!(
                        "run_once task {} {why}. Its output:\n{}",
                        t.name,
                        output.trim_end()
                    ),
                    "the site stays closed: fix the cause, then run `upkeep resume` to run it again (or `upkeep rollback`)",
                ));
            }
            state.set_task(run, &t.name, TaskState::Succeeded, Some(&output), Some(0))?;
            crash::point(&format!("run_once:{n}:ran"));
            mark_done_file(&t)?;
            state.set_task(run, &t.name, TaskState::Done, None, None)?;
        }
        crash::point(&format!("run_once:{n}:done"));
        ran.push(t.name);
    }
    Ok(ran)
}
