//! `upkeep finish`: YACS's emergency path. When an incremental update cannot be done, the
//! operator copies the whole new release over the live tree (FTP, rsync); this finds which
//! published release the tree now is, then runs the rest of an update: close, scan, migrate
//! (with the database copy for rollback), the pending run_once tasks, reopen, and records the
//! run in the history like any other.

use crate::base::error::{Error, Result};
use crate::client::{Remote, block_on};
use crate::documents::manifest::VerifiedManifest;
use crate::site::config::Instance;
use crate::site::fingerprint::diff_live;
use crate::site::lock::InstanceLock;
use crate::site::plan::Plan;
use crate::site::state::{Run, State};
use crate::site::update::{self, prepare, scan, tasks};

/// Which release the live tree is: the newest published release whose every file matches
/// (`installed` names it instead).
pub fn identify(
    inst: &Instance,
    state: &mut State,
    installed: Option<&str>,
) -> Result<VerifiedManifest> {
    let remote = Remote::new(&inst.config.reference, &inst.key, &inst.config.network)?;
    let ptr = block_on(remote.pointer())?;
    if let Some(v) = installed {
        crate::client::require_published(&ptr, v)?;
        return block_on(remote.manifest(v, None));
    }
    let mut closest: Option<(usize, String)> = None;
    for v in ptr.releases.iter().rev() {
        let m = block_on(remote.manifest(v, None))?;
        let d = diff_live(inst, state, None, &m)?;
        let off = d.new.len() + d.changed.len();
        if off == 0 {
            return Ok(m);
        }
        if closest.as_ref().is_none_or(|(n, _)| off < *n) {
            closest = Some((off, v.clone()));
        }
    }
    Err(Error::refused(
        match closest {
            Some((n, v)) => format!(
                "the live tree is no published release exactly: the closest is {v}, with {n} files missing or different"
            ),
            None => "the reference has no release to compare with".to_string(),
        },
        format!(
            "copy the whole release over the tree again, or say which release it is: `upkeep finish --root {} --installed V`",
            inst.root.display()
        ),
    ))
}

/// Finish an update made by copying the release over the tree.
pub fn finish(inst: &Instance, installed: Option<&str>, o: &update::Options) -> Result<Run> {
    let _lock = InstanceLock::acquire(inst, "finish")?;
    let mut state = State::open(&inst.state_db())?;
    state.refuse_unfinished(&inst.root)?;
    let target = identify(inst, &mut state, installed)?;
    if state.installed_version()?.as_deref() == Some(target.version()) && installed.is_none() {
        return Err(Error::refused(
            format!(
                "release {} is installed already and the tree matches it: nothing to finish",
                target.version()
            ),
            "see `upkeep status`",
        ));
    }
    state.save_release(&target)?;
    let extensions = scan::find(inst, &target, &|_| false)?;
    let mut found = tasks::find(inst, &target, &extensions)?;
    let allowed_tasks = tasks::allow(inst, &mut found, o.allow_tasks)?;
    let mut db = inst.database()?;
    let engine = db.engine();
    let schema = db.plan(&prepare::fragments(
        inst,
        engine,
        &target,
        &extensions,
        &|_| false,
    )?)?;
    drop(db);
    let plan = Plan {
        from: state.installed_version()?,
        to: target.version().to_string(),
        release: target.id(),
        tasks: found.tasks,
        foreign_tasks: found.foreign,
        allowed_tasks,
        schema,
        extensions,
        not_tasks: found.not_tasks,
        finish: true,
        ..Plan::default()
    };
    if !(o.confirm)(&plan) {
        return Err(Error::refused(
            "finish not applied",
            "run it again and answer y, or pass --yes",
        ));
    }
    prepare::preflight(inst, &plan)?;
    let id = state.insert_run(&plan)?;
    update::drive(inst, &mut state, id, o)
}
