//! run_once tasks: the task files (`*.sh`, `*.sql`) that the signed manifest of the release
//! being installed ships in `run_once/` (and in its extensions' run_once folders), without a
//! `.done` twin, run in name order, each checked against its signed SHA-256 just before it
//! runs. A file someone else wrote there is listed in the plan as not from the release and
//! never run, unless the operator allows it by name (never in an unattended pass).
//!
//! A `*.sql` task and its done-mark commit together in the site database; a `*.sh` task is
//! marked started before it runs, so one found started after a crash is never re-run without
//! the operator's word.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::scan::Extension;
use crate::base::clock::now_secs;
use crate::base::crash;
use crate::base::error::{Error, IoContext, Result};
use crate::documents::manifest::relpath::{DONE, is_reserved_name};
use crate::documents::manifest::{RelPath, Sha256, VerifiedManifest};
use crate::site::config::Instance;
use crate::site::plan::{AllowedTask as Allowed, Plan};
use crate::site::state::{State, TaskState};

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

/// The tasks of a run and what the task folders hold beside them.
#[derive(Debug, Default)]
pub struct Found {
    /// Tasks the release ships that have not run (no `NAME.done`): the release's first, then
    /// each extension's, each group in name order.
    pub tasks: Vec<RelPath>,
    /// Task files (`*.sh`, `*.sql`) in the task folders that the release does not ship: never
    /// run, unless the operator allows one by name.
    pub foreign: Vec<RelPath>,
    /// Other files in the task folders (neither `.sh` nor `.sql`): never run, listed so that a
    /// mistyped task name does not pass unseen.
    pub not_tasks: Vec<RelPath>,
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

/// Whether the task `p` has run: its `NAME.done` is there (a regular file, not a link).
fn done(inst: &Instance, p: &RelPath) -> bool {
    std::fs::symlink_metadata(p.with_suffix(DONE).under(&inst.root)).is_ok_and(|m| m.is_file())
}

/// The tasks of `release` and the other files of its task folders. Only what the signed
/// manifest ships in a task folder is a task: a file written there by anyone else (an upload
/// form, a plugin) is listed in `foreign` and never run by itself.
pub fn find(inst: &Instance, release: &VerifiedManifest, exts: &[Extension]) -> Result<Found> {
    let dirs = task_dirs(exts)?;
    let mut found = Found::default();
    let mut ordered: Vec<(usize, RelPath)> = Vec::new();
    for e in release.files() {
        let parent = e.path.parent();
        let Some(group) = dirs.iter().position(|d| Some(d) == parent.as_ref()) else {
            continue;
        };
        if done(inst, &e.path) {
            continue;
        }
        if is_task_name(e.path.as_str()) {
            ordered.push((group, e.path.clone()));
        } else {
            found.not_tasks.push(e.path.clone());
        }
    }
    ordered.sort();
    found.tasks = ordered.into_iter().map(|(_, p)| p).collect();
    for dir in &dirs {
        let Ok(rd) = std::fs::read_dir(dir.under(&inst.root)) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(n) = e.file_name().into_string() else {
                continue;
            };
            if !e.file_type().is_ok_and(|t| t.is_file())
                || is_reserved_name(n.as_bytes(), false)
                || n.starts_with('.')
            {
                continue;
            }
            let rel = RelPath::parse(&format!("{dir}/{n}"))?;
            if release.entry(&rel).is_some() || done(inst, &rel) {
                continue;
            }
            if is_task_name(&n) {
                found.foreign.push(rel);
            } else {
                found.not_tasks.push(rel);
            }
        }
    }
    found.foreign.sort();
    found.not_tasks.sort();
    found.not_tasks.dedup();
    Ok(found)
}

/// A task file's bytes and their SHA-256, read without following a link.
fn read(inst: &Instance, p: &RelPath) -> Result<(Vec<u8>, Sha256)> {
    let mut bytes = Vec::new();
    p.open_under(&inst.root)
        .and_then(|mut f| std::io::Read::read_to_end(&mut f, &mut bytes))
        .ctx("read", &p.under(&inst.root))?;
    let sha = crate::documents::manifest::digest::sha256_bytes(&bytes);
    Ok((bytes, sha))
}

/// The operator's allowances, checked against what the task folders hold: each must name a
/// task `found` lists as not from the release. Returns them with the hash of what they hold
/// now, and moves them from `found.foreign` to `found.tasks`.
pub fn allow(inst: &Instance, found: &mut Found, names: &[RelPath]) -> Result<Vec<Allowed>> {
    let mut out = Vec::new();
    for n in names {
        let Some(i) = found.foreign.iter().position(|f| f == n) else {
            return Err(Error::refused(
                format!(
                    "--allow-task {n}: no such task outside the release (an allowed task is a *.sh or *.sql file in a run_once folder that the release does not ship)"
                ),
                "the plan lists them under \"not from the release\" (`upkeep update` without --yes shows it)",
            ));
        };
        found.foreign.remove(i);
        found.tasks.push(n.clone());
        let (_, sha256) = read(inst, n)?;
        out.push(Allowed {
            path: n.clone(),
            sha256,
        });
    }
    Ok(out)
}

fn mark_done_file(path: &Path) -> Result<()> {
    let done = PathBuf::from(format!("{}{DONE}", path.display()));
    std::fs::rename(path, &done).ctx("rename", path)?;
    crate::base::fsutil::sync_dir(path.parent().expect("task has a folder"))
}

/// Where state.db keeps the mark of a shell task's processes and when it started.
fn mark_key(run: i64, name: &RelPath) -> String {
    format!("task_mark:{run}:{name}")
}

fn new_mark(run: i64, name: &RelPath) -> Result<String> {
    let mut raw = [0u8; 8];
    getrandom::getrandom(&mut raw).map_err(|e| Error::msg(format!("no random source: {e}")))?;
    Ok(format!(
        "run-{run}-{}-{}",
        name.as_str().replace('/', "_"),
        hex::encode(raw)
    ))
}

/// Before a resume does anything: the shell tasks of run `run` that an interrupted runner
/// started may still be running (its processes outlive it, a `setsid` child outlives the
/// task). Each is given until its timeout, counted from its start, to end, then stopped, so
/// that a rerun never runs beside it. Says what it waited for.
pub fn settle_interrupted(state: &State, run: i64, timeout: Duration) -> Result<Vec<String>> {
    let mut said = Vec::new();
    for t in state.run(run)?.tasks {
        if t.state != TaskState::Started {
            continue;
        }
        let Some(v) = state.meta(&mark_key(run, &t.name))? else {
            continue;
        };
        let (mark, started) = v.split_once(' ').unwrap_or((v.as_str(), "0"));
        let started: i64 = started.parse().unwrap_or(0);
        let pids = crate::base::shell::marked(mark);
        if pids.is_empty() {
            continue;
        }
        let deadline = started + timeout.as_secs() as i64;
        crate::errln!(
            "note: task {} of the interrupted run is still running (pid {}); waiting for it to end, at most {} s (tasks.timeout_secs)",
            t.name,
            pids.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            (deadline - now_secs()).max(0)
        );
        while now_secs() < deadline && !crate::base::shell::marked(mark).is_empty() {
            std::thread::sleep(Duration::from_millis(100));
        }
        let stopped = crate::base::shell::stop_marked(mark, Duration::from_secs(2));
        said.push(match stopped {
            0 => format!("task {}: its interrupted copy ended by itself", t.name),
            n => format!(
                "task {}: its interrupted copy ran past its timeout and was stopped ({n} process(es))",
                t.name
            ),
        });
    }
    Ok(said)
}

/// The SHA-256 a task of `plan` must have to run: the signed manifest's, or the one the
/// operator allowed.
fn expected(plan: &Plan, release: &VerifiedManifest, p: &RelPath) -> Option<Sha256> {
    release.entry(p).map(|e| e.sha256).or_else(|| {
        plan.allowed_tasks
            .iter()
            .find(|a| &a.path == p)
            .map(|a| a.sha256)
    })
}

/// Run the tasks of `plan` that have not run yet, in order, each only if its content is the
/// one the release signed (or the operator allowed). Stops at the first failure with the
/// task's output.
pub fn run_all(
    inst: &Instance,
    state: &State,
    (run, env): (i64, &[(String, String)]),
    (plan, release): (&Plan, &VerifiedManifest),
    decision: Decision,
    timeout: Duration,
) -> Result<Vec<RelPath>> {
    let mut db = None;
    let mut ran = Vec::new();
    let pending = plan.tasks.iter().filter(|t| !done(inst, t));
    for (n, name) in pending.enumerate() {
        let n = n + 1;
        crash::point(&format!("run_once:{n}:before"));
        let path = name.under(&inst.root);
        let (bytes, sha) = read(inst, name)?;
        if expected(plan, release, name) != Some(sha) {
            state.set_task(
                run,
                name,
                TaskState::Failed,
                Some("not the file the release signed: not run"),
                None,
            )?;
            return Err(Error::refused(
                format!(
                    "run_once task {name} was not run: its content is not what release {} signed (SHA-256 {})",
                    release.version(),
                    sha.to_hex()
                ),
                "the site stays closed: put back the release's file (or remove it), then `upkeep resume`; or `upkeep rollback`",
            ));
        }
        let sha = sha.to_hex();
        if name.as_str().ends_with(".sql") {
            let db = match &mut db {
                Some(db) => db,
                None => db.insert(inst.database()?),
            };
            let already = db.task_done(name.as_str())?.as_deref() == Some(sha.as_str());
            if !already {
                let sql = String::from_utf8_lossy(&bytes).into_owned();
                let mut journal =
                    super::migrate::StateJournal::new(state, run, format!("task:{name}"));
                let task = crate::site::database::SqlTask {
                    name: name.as_str(),
                    sha256: &sha,
                    sql: &sql,
                    run,
                };
                if let Err(e) = db.run_task(&task, &mut journal) {
                    state.set_task(run, name, TaskState::Failed, Some(&e.to_string()), None)?;
                    return Err(e);
                }
            }
            crash::point(&format!("run_once:{n}:ran"));
            mark_done_file(&path)?;
            // A rollback that kept the database kept the mark too (or the runner died between
            // the task's commit and this line): the task's work is there, so it is not redone.
            let said = already.then_some(
                "not run again: the site database already holds its done-mark (its work is there)",
            );
            state.set_task(run, name, TaskState::Done, said, Some(0))?;
        } else {
            match state.task_state(run, name)? {
                Some(TaskState::Started) if decision == Decision::Ask => {
                    return Err(Error::refused(
                        format!(
                            "shell task {name} was started but never confirmed finished (the process was interrupted)"
                        ),
                        "check what it did, then run `upkeep resume --rerun-task` to run it again or `upkeep resume --skip-task` to mark it done",
                    ));
                }
                Some(TaskState::Started) if decision == Decision::Skip => {
                    mark_done_file(&path)?;
                    state.set_task(
                        run,
                        name,
                        TaskState::Skipped,
                        Some("skipped by the operator after an interruption"),
                        None,
                    )?;
                    continue;
                }
                Some(TaskState::Succeeded) => {
                    mark_done_file(&path)?;
                    state.set_task(run, name, TaskState::Done, None, None)?;
                    continue;
                }
                _ => {}
            }
            // Every process of the task carries this mark, recorded first: after a crash of
            // this runner, `resume` finds the copy still running (setsid children included)
            // and lets it end before anything else.
            let mark = new_mark(run, name)?;
            state.set_meta(&mark_key(run, name), &format!("{mark} {}", now_secs()))?;
            state.set_task(run, name, TaskState::Started, None, None)?;
            crash::point(&format!("run_once:{n}:started"));
            let (code, output) = crate::base::shell::run_marked(
                &inst.root,
                &[path.as_os_str()],
                timeout,
                Some(&mark),
                env,
            )?;
            if code != Some(0) {
                state.set_task(run, name, TaskState::Failed, Some(&output), code)?;
                let why = match code {
                    Some(c) => format!("exited with status {c}"),
                    None => format!(
                        "was stopped after {} s (tasks.timeout_secs)",
                        timeout.as_secs()
                    ),
                };
                return Err(Error::refused(
                    format!(
                        "run_once task {name} {why}. Its output:\n{}",
                        output.trim_end()
                    ),
                    "the site stays closed: fix the cause, then run `upkeep resume` to run it again (or `upkeep rollback`)",
                ));
            }
            state.set_task(run, name, TaskState::Succeeded, Some(&output), Some(0))?;
            crash::point(&format!("run_once:{n}:ran"));
            mark_done_file(&path)?;
            state.set_task(run, name, TaskState::Done, None, None)?;
        }
        crash::point(&format!("run_once:{n}:done"));
        ran.push(name.clone());
    }
    Ok(ran)
}
