//! The run: `check -> stage -> review -> close -> swap -> scan -> migrate -> run_once -> reopen`.
//! Every step boundary is persisted in state.db before the next begins, and every step can be
//! run again after a crash (its progress is read back from the filesystem or the database), so
//! `resume` is simply "run the remaining steps" and `rollback` undoes whatever was done.
//!
//! `prepare` computes the plan (all the slow work, before anything closes), this file drives
//! the steps, `rollback` undoes a run, `status` reports.

pub mod after;
pub mod backups;
pub mod gate;
pub mod migrate;
pub mod prepare;
pub mod rollback;
pub mod scan;
pub mod status;
pub mod swap;
pub mod tasks;

use std::time::{Duration, Instant};

use crate::base::crash;
use crate::base::error::{Error, IoContext, Result};
use crate::base::progress::Progress;
use crate::documents::manifest::relpath::{MANIFEST_NAME, SIGNATURE_NAME};
use crate::documents::manifest::{RelPath, VerifiedManifest};
use crate::site::config::Instance;
use crate::site::database::Phase;
use crate::site::lock::InstanceLock;
pub use crate::site::plan::Plan;
use crate::site::state::State;
pub use crate::site::state::{Run, RunStatus, Step, TaskState};
pub use prepare::{preflight, prepare};
pub use rollback::{DatabaseStep, RollbackOptions, RollbackPlan, RolledBack, rollback};
pub use status::{Status, status};

/// How to run.
pub struct Options<'a> {
    /// Leave locally modified files in place instead of installing the release's version.
    pub keep_modified: bool,
    /// The digest of the plan the operator reviewed ([`Plan::digest`]): the run starts only if
    /// the plan computed now has it. `None` when `confirm` shows the plan itself.
    pub approved: Option<&'a str>,
    /// Asked with the plan before anything changes; false stops there.
    pub confirm: &'a dyn Fn(&Plan) -> bool,
    /// Told when a step starts (`None`) and ends (`Some(ms)`).
    pub on_step: &'a dyn Fn(Step, Option<u64>),
    /// What to do with an interrupted shell task.
    pub decision: tasks::Decision,
    /// Tasks not from the release that the operator allows to run, by name.
    pub allow_tasks: &'a [RelPath],
    /// Compute the plan again after `confirm` said yes, and refuse if it changed meanwhile
    /// (`confirm` asked a person, who took a while).
    pub recheck: bool,
    /// Progress of the swap.
    pub progress: &'a Progress,
}

impl Options<'_> {
    /// Options for a run approved beforehand (the panel, a script with `--plan`): no prompt,
    /// no step printer.
    pub fn approved<'a>(
        digest: Option<&'a str>,
        keep_modified: bool,
        decision: tasks::Decision,
        progress: &'a Progress,
    ) -> Options<'a> {
        Options {
            keep_modified,
            approved: digest,
            confirm: &|_| true,
            on_step: &|_, _| {},
            decision,
            allow_tasks: &[],
            recheck: false,
            progress,
        }
    }
}

/// `upkeep update`: plan, check the approval, confirm, then run every step.
pub fn update(inst: &Instance, o: &Options) -> Result<Option<Run>> {
    let _lock = InstanceLock::acquire(inst, "update")?;
    let mut state = State::open(&inst.state_db())?;
    state.refuse_unfinished(&inst.root)?;
    let (plan, _) = prepare(inst, &mut state, o.keep_modified, o.allow_tasks)?;
    if let Some(approved) = o.approved {
        let now = plan.digest();
        if approved != now {
            return Err(Error::PlanChanged {
                approved: approved.to_string(),
                now,
            });
        }
    }
    if !(o.confirm)(&plan) {
        return Ok(None);
    }
    if o.recheck {
        let (now, _) = prepare(inst, &mut state, o.keep_modified, o.allow_tasks)?;
        if now.digest() != plan.digest() {
            return Err(Error::PlanChanged {
                approved: plan.digest(),
                now: now.digest(),
            });
        }
    }
    preflight(inst, &plan)?;
    let id = state.insert_run(&plan)?;
    drive(inst, &mut state, id, o).map(Some)
}

/// `upkeep resume`: continue the unfinished run.
pub fn resume(inst: &Instance, o: &Options) -> Result<Run> {
    let lock = InstanceLock::acquire(inst, "resume")?;
    let mut state = State::open(&inst.state_db())?;
    let Some(run) = state.unfinished_run()? else {
        // Resuming is idempotent: after a crash that came once the run had finished, there is
        // nothing left to do, and scripts should not fail on that.
        return match state.runs(1)?.into_iter().next() {
            Some(last) => Ok(last),
            None => Err(Error::refused(
                "no run to resume: this instance has never run an update",
                "see `upkeep status`",
            )),
        };
    };
    // A task the interrupted runner started may still be running: it ends (or is stopped)
    // before anything else, a rollback included.
    let timeout = Duration::from_secs(inst.config.tasks.timeout_secs);
    for line in tasks::settle_interrupted(&state, run.id, timeout)? {
        crate::errln!("{line}");
    }
    if run.status == RunStatus::RollingBack {
        drop(lock);
        // Its recorded decision on the database holds (a decision to keep is made again).
        return rollback(inst, &RollbackOptions::default()).map(|r| r.run);
    }
    state.set_run_status(run.id, RunStatus::Running, None)?;
    drive(inst, &mut state, run.id, o)
}

pub(crate) fn drive(inst: &Instance, state: &mut State, id: i64, o: &Options) -> Result<Run> {
    loop {
        let run = state.run(id)?;
        let step = run.step;
        if step == Step::Done {
            return Ok(run);
        }
        (o.on_step)(step, None);
        state.begin_step(id, step)?;
        let t = Instant::now();
        let r = run_step(inst, state, &run, o);
        let ms = t.elapsed().as_millis() as u64;
        match r {
            Ok(()) => {
                state.end_step(id, step, ms, "ok")?;
                (o.on_step)(step, Some(ms));
                match step.next() {
                    Step::Done => state.mark_done(id)?,
                    next => state.set_run_step(id, next)?,
                }
                crash::point(&format!("{step}:after"));
            }
            Err(e) => {
                let text = e.to_string();
                let cause_hint = e.hint().unwrap_or_else(|| "fix the cause".into());
                state.end_step(id, step, ms, &text)?;
                state.set_run_status(id, RunStatus::Failed, Some(&text))?;
                if step == Step::Swap || step == Step::Health {
                    // Half swapped and closed, or swapped and broken: go straight back to the
                    // old release; nobody may be there to decide.
                    return match rollback::rollback_run(
                        inst,
                        state,
                        id,
                        &RollbackOptions::default(),
                    ) {
                        Ok(r) => Err(Error::refused(
                            format!(
                                "{text}\nthe run was undone: the previous release is back in place and the site is open again; {}",
                                r.database.describe()
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
    // Before the swap the release's schema files are in staging, after it live.
    let staged = |p: &RelPath| {
        !run.step.swapped()
            && run.plan.actions.iter().any(|a| {
                &a.path == p
                    && matches!(
                        a.kind,
                        crate::site::plan::Kind::Add | crate::site::plan::Kind::Replace
                    )
            })
    };
    let fresh_plan = |db: &mut dyn crate::site::database::SiteDatabase| {
        let release = run_release(inst, state, run)?;
        db.plan(&prepare::fragments(
            inst,
            db.engine(),
            &release,
            &run.plan.extensions,
            &staged,
        )?)
    };
    match run.step {
        Step::Backup => migrate::backup_step(inst, state, run)?,
        Step::Schema => {
            migrate::schema_step(inst, state, run, Phase::Open, &fresh_plan)?;
        }
        Step::Close => {
            gate::close(
                &inst.root,
                &format!(
                    "Updating to release {}. We will be back in a moment.",
                    run.to
                ),
                Some(run.id),
            )?;
            state.mark_closed(run.id)?;
            // From here to reopen, only upkeep writes to a server's database.
            if run.db_backup.is_some() {
                let mut db = inst.database()?;
                migrate::take_mark(db.as_mut(), state, run.id, migrate::MarkPoint::Close)?;
            }
        }
        Step::Swap => swap::apply(
            inst,
            &swap::aside_dir(inst, run.id),
            &run.plan.actions,
            o.progress,
        )?,
        // The plan found the extensions of the release before the site closed.
        Step::Scan => state.record_extensions(&run.plan.extensions)?,
        Step::Migrate => {
            let mut db = inst.database()?;
            // SQLite's copy is taken here, closed: milliseconds, and no visitor writes
            // meanwhile. A server's was taken in the backup step.
            if db.engine() == crate::site::database::Engine::Sqlite && run.db_backup.is_none() {
                let name = db.backup_name(run.id);
                let copy = if db.exists()? {
                    migrate::copy_to(inst, db.as_mut(), &name)?
                        .display()
                        .to_string()
                } else {
                    String::new()
                };
                crash::point("migrate:backup");
                state.set_db_backup(run.id, &copy)?;
            }
            drop(db);
            let run = state.run(run.id)?;
            migrate::schema_step(inst, state, &run, Phase::Closed, &fresh_plan)?;
        }
        Step::RunOnce => {
            let release = run_release(inst, state, run)?;
            tasks::run_all(
                inst,
                state,
                (run.id, &shell_env(inst, run, "update")),
                (&run.plan, &release),
                o.decision,
                Duration::from_secs(inst.config.tasks.timeout_secs),
            )?;
        }
        Step::Reopen => reopen(inst, state, run)?,
        Step::Hooks => {
            let hooks = after::run_hooks(inst, &shell_env(inst, run, "update"))?;
            state.record_hooks(run.id, &hooks)?;
        }
        Step::Health => {
            if let Some(rec) = after::health(inst) {
                state.record_health(run.id, &rec)?;
                if !rec.ok {
                    return Err(after::unhealthy(inst, &rec));
                }
            }
        }
        Step::Done => {}
    }
    Ok(())
}

/// What a run_once task or a restart hook finds in its environment, beside upkeep's own
/// (the README lists it): where and what (`UPKEEP_ROOT`, `UPKEEP_RUN`, `UPKEEP_FROM`,
/// `UPKEEP_TO`, `UPKEEP_EVENT`: update or rollback), and who (`HOME`, `USER`, `LOGNAME` of
/// the user it runs as, not those of a root that started upkeep), with a `PATH` if none.
pub(crate) fn shell_env(inst: &Instance, run: &Run, event: &str) -> Vec<(String, String)> {
    let mut env = vec![
        ("UPKEEP_ROOT".into(), inst.root.display().to_string()),
        ("UPKEEP_RUN".into(), run.id.to_string()),
        ("UPKEEP_FROM".into(), run.from.clone().unwrap_or_default()),
        ("UPKEEP_TO".into(), run.to.clone()),
        ("UPKEEP_EVENT".into(), event.into()),
    ];
    if let Some(u) = crate::base::users::user_by_id(crate::base::users::euid()) {
        env.push(("HOME".into(), u.home));
        env.push(("USER".into(), u.name.clone()));
        env.push(("LOGNAME".into(), u.name));
    }
    if std::env::var_os("PATH").is_none() {
        env.push((
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ));
    }
    env
}

/// The signed manifest of the release a run installs, as state.db keeps it.
fn run_release(inst: &Instance, state: &State, run: &Run) -> Result<VerifiedManifest> {
    state.load_release(&run.to, &inst.key)?.ok_or_else(|| {
        Error::msg(format!(
            "the manifest of release {} is missing from state.db",
            run.to
        ))
    })
}

/// The reopen step: record the new release, clear staging, drop the backups of the run before,
/// open the gate, and write the closed window.
fn reopen(inst: &Instance, state: &State, run: &Run) -> Result<()> {
    // The run's own changes to the database are done and the site is still closed: from here
    // on, a write is a visitor's (or the operator's), which a rollback must not discard
    // silently.
    if run.db_backup.is_some() {
        let mut db = inst.database()?;
        migrate::take_mark(db.as_mut(), state, run.id, migrate::MarkPoint::Reopen)?;
    }
    backups::prune(inst, inst.config.database.keep_backups(), run.id)?;
    let target = run_release(inst, state, run)?;
    state.set_installed(&target)?;
    state.clear_staged()?;
    clear_staging(inst)?;
    if let Some((id, p)) = state.previous_done_plan(run.id)? {
        let aside = swap::aside_dir(inst, id);
        swap::drop_old_backups(inst, (&p.actions, &aside), &run.plan.actions);
    }
    let _ = std::fs::remove_dir_all(inst.partial_dir());
    gate::reopen_after_run(&inst.root)?;
    crash::point("reopen:opened");
    state.mark_reopened(run.id)
}

/// Empty `staging/` after a run: its release files are live (or obsolete); anything else found
/// there is moved into `.upkeep/aside/`, never deleted. A staging folder that is a link is left
/// alone (staging refuses to use one).
fn clear_staging(inst: &Instance) -> Result<()> {
    let st = inst.staging();
    if inst.check_staging_folder().is_err() {
        return Ok(());
    }
    // Folders emptied by the swap go first (deepest first; a folder with files stays).
    for e in walkdir::WalkDir::new(&st)
        .min_depth(1)
        .contents_first(true)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_dir())
    {
        let _ = std::fs::remove_dir(e.path());
    }
    let Ok(rd) = std::fs::read_dir(&st) else {
        return Ok(());
    };
    let aside = format!(
        ".upkeep/aside/staging-{}",
        crate::base::clock::now_text().replace([':', '-'], "")
    );
    for e in rd.flatten() {
        let p = e.path();
        let name = e.file_name();
        if name == ".gitkeep" {
            continue;
        }
        if name == MANIFEST_NAME || name == SIGNATURE_NAME {
            std::fs::remove_file(&p).ctx("remove", &p)?;
            continue;
        }
        let aside = inst.own_dir(&aside)?;
        std::fs::rename(&p, aside.join(&name)).ctx("move aside", &p)?;
    }
    Ok(())
}
