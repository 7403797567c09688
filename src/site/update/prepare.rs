//! Planning a run: everything slow happens here, before the site closes (the live tree is
//! fingerprinted, every staged file is hashed again), plus the checks that must pass first.

use std::collections::HashSet;

use rayon::prelude::*;

use super::{scan, tasks};
use crate::base::error::{Error, Result};
use crate::base::fsutil::{device_of, free_bytes, human_bytes};
use crate::documents::manifest::relpath::BAK;
use crate::documents::manifest::{RelPath, VerifiedManifest, digest};
use crate::site::config::{Backups, Instance};
use crate::site::database::{Engine, Fragment};
use crate::site::fingerprint::diff_live;
use crate::site::plan::{Action, Kind, Plan};
use crate::site::state::State;

/// The schema `release` declares for `engine`: its `schema.sql` (or `schema.mysql.sql`,
/// `schema.postgresql.sql`) and its extensions' fragments, read from staging for the files
/// `staged` says are about to be installed (else from the live tree), each checked against the
/// signed manifest (an operator's own extension is read as it is).
pub(crate) fn fragments(
    inst: &Instance,
    engine: Engine,
    release: &VerifiedManifest,
    exts: &[scan::Extension],
    staged: &dyn Fn(&RelPath) -> bool,
) -> Result<Vec<Fragment>> {
    let read_signed = |rel: &RelPath, what: &str| -> Result<Option<String>> {
        let Some(e) = release.entry(rel) else {
            return Ok(None);
        };
        let dir = if staged(rel) {
            inst.staging()
        } else {
            inst.root.clone()
        };
        let bytes = scan::read_beneath(&dir, rel)?;
        if digest::sha256_bytes(&bytes) != e.sha256 {
            return Err(Error::refused(
                format!(
                    "{rel} ({what}) is not the file release {} signed: it was changed here",
                    release.version()
                ),
                format!(
                    "upkeep applies only the release's schema: put back the release's {rel}, or do not keep your version of it"
                ),
            ));
        }
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    };
    let mut out = Vec::new();
    let main = RelPath::parse(engine.schema_file())?;
    if let Some(sql) = read_signed(&main, "the release's schema")? {
        out.push(Fragment {
            source: engine.schema_file().into(),
            sql,
        });
    }
    for e in exts {
        let Some(s) = e.schema_for(engine) else {
            continue;
        };
        let rel = e.resolve_rel(s)?;
        let sql = if e.local {
            String::from_utf8_lossy(&scan::read_beneath(&inst.root, &rel)?).into_owned()
        } else {
            match read_signed(&rel, &format!("schema of extension {}", e.name))? {
                Some(sql) => sql,
                None => {
                    return Err(Error::refused(
                        format!(
                            "extension {} declares the schema {rel}, which release {} does not ship",
                            e.name,
                            release.version()
                        ),
                        "the release's extension.toml names a file that is not in the release: ask the publisher for a fixed release",
                    ));
                }
            }
        };
        out.push(Fragment {
            source: format!("{rel} ({})", e.name),
            sql,
        });
    }
    Ok(out)
}

/// What the plan says of the SQL tasks about to run, beyond their names: on MySQL, a task
/// holding DDL cannot be undone by a transaction (the server commits each such statement on
/// its own), so its statements are journalled one by one. Also the tasks whose done-mark the
/// database already holds.
fn about_sql_tasks(
    inst: &Instance,
    db: &mut dyn crate::site::database::SiteDatabase,
    tasks: &[RelPath],
    staged: &dyn Fn(&RelPath) -> bool,
) -> Result<(Vec<String>, Vec<RelPath>)> {
    let engine = db.engine();
    let mut notes = Vec::new();
    let mut done = Vec::new();
    for t in tasks.iter().filter(|t| t.as_str().ends_with(".sql")) {
        let dir = match staged(t) {
            true => inst.staging(),
            false => inst.root.clone(),
        };
        let bytes = scan::read_beneath(&dir, t)?;
        let sha = crate::documents::manifest::digest::sha256_bytes(&bytes).to_hex();
        if db.task_done(t.as_str())?.as_deref() == Some(sha.as_str()) {
            done.push(t.clone());
            continue;
        }
        if engine != Engine::Mysql {
            continue;
        }
        let sql = String::from_utf8_lossy(&bytes).into_owned();
        let statements = crate::site::database::ddl::split(&sql, engine).unwrap_or_default();
        let n = statements
            .iter()
            .filter(|s| crate::site::database::ddl::is_ddl(s, engine))
            .count();
        if n > 0 {
            notes.push(format!(
                "{t} holds {n} DDL statement(s) (CREATE, ALTER, DROP...), which MySQL commits one by one: the task cannot be undone by a transaction. Each statement is journalled, so an interrupted task goes on at its next statement, and a rollback puts back the copy taken before the update"
            ));
        }
    }
    Ok((notes, done))
}

/// Compute the plan for the staged release. All the slow work happens here, before anything
/// closes: the live tree is fingerprinted and every staged file is hashed again. `allow_tasks`
/// names tasks not from the release that the operator allows to run.
pub fn prepare(
    inst: &Instance,
    state: &mut State,
    keep_modified: bool,
    allow_tasks: &[RelPath],
) -> Result<(Plan, VerifiedManifest)> {
    let Some(staged) = state.staged()? else {
        return Err(Error::NothingStaged {
            root: inst.root.clone(),
        });
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
            // Opened without following a link: a link in staging is never installed.
            let opened = p.open_under(&staging);
            match opened.and_then(|mut f| digest::hash_reader(&mut f)) {
                Ok(h) if h.sha256 == e.sha256 && h.size == e.size => None,
                Ok(_) => Some(format!("{p} (changed since it was staged)")),
                Err(_) if std::fs::symlink_metadata(p.under(&staging)).is_ok() => Some(format!(
                    "{p} (reached through a symbolic link in staging: upkeep installs files, never links)"
                )),
                Err(_) => Some(format!("{p} (missing from staging)")),
            }
        })
        .collect();
    if !bad.is_empty() {
        return Err(Error::StaleStaging {
            version: target.version().to_string(),
            files: bad,
            root: inst.root.clone(),
            staged_from: staged.source.clone(),
        });
    }
    let modified: HashSet<&RelPath> = diff.modified.iter().collect();
    let mut actions = Vec::new();
    // Removals first: a file that becomes a folder (x, then x/y) must be out of the way before
    // the folder is made.
    for p in &diff.removed {
        actions.push(Action {
            path: p.clone(),
            kind: Kind::Remove,
            modified: modified.contains(p),
            sha256: None,
            undo_keep: None,
            exec: false,
            backup_aside: false,
        });
    }
    actions.sort_by(|a, b| a.path.cmp(&b.path));
    let removed: HashSet<&RelPath> = diff.removed.iter().collect();
    // Then whatever else stands where a new file goes: a folder that becomes a file (a/, then
    // a), or a local file where the release needs a folder. It is moved aside whole, by one
    // rename, and put back by a rollback.
    let mut displaced = std::collections::BTreeSet::new();
    for p in &needed {
        let live = std::fs::symlink_metadata(p.under(&inst.root));
        if live.as_ref().is_ok_and(|m| m.is_dir()) {
            displaced.insert((*p).clone());
        }
        let mut up = p.parent();
        while let Some(a) = up {
            match std::fs::symlink_metadata(a.under(&inst.root)) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(Error::refused(
                        format!(
                            "{} is a symbolic link: upkeep never writes through links, and {p} would go there",
                            a.under(&inst.root).display()
                        ),
                        format!(
                            "add \"{a}/\" to exclude in upkeep.toml if the link is yours to keep, or replace the link with a folder"
                        ),
                    ));
                }
                Ok(m) if !m.is_dir() && !removed.contains(&a) => {
                    displaced.insert(a.clone());
                }
                _ => {}
            }
            up = a.parent();
        }
    }
    for p in displaced {
        actions.push(Action {
            path: p,
            kind: Kind::Displace,
            modified: true,
            sha256: None,
            undo_keep: None,
            exec: false,
            backup_aside: false,
        });
    }
    let mut installs: Vec<Action> = needed
        .iter()
        .map(|p| {
            let live = std::fs::symlink_metadata(p.under(&inst.root));
            let kind = if live.is_ok_and(|m| !m.is_dir()) {
                Kind::Replace
            } else {
                Kind::Add
            };
            Action {
                path: (*p).clone(),
                kind,
                modified: modified.contains(p),
                sha256: Some(
                    target
                        .entry(p)
                        .expect("diff paths come from the manifest")
                        .sha256,
                ),
                undo_keep: None,
                exec: target.entry(p).is_some_and(|e| e.exec),
                backup_aside: false,
            }
        })
        .collect();
    installs.sort_by(|a, b| a.path.cmp(&b.path));
    actions.extend(installs);
    // A backup beside its file must not take the name of a release file (`NAME.bak` shipped
    // by the release, in either manifest): that one goes aside, as all do with
    // `[files] backups = "aside"`.
    let aside_all = inst.config.files.backups == Backups::Aside;
    let is_release_path = |p: &RelPath| {
        target.entry(p).is_some() || installed.as_ref().is_some_and(|m| m.entry(p).is_some())
    };
    for a in actions
        .iter_mut()
        .filter(|a| matches!(a.kind, Kind::Replace | Kind::Remove))
    {
        a.backup_aside = aside_all || is_release_path(&a.path.with_suffix(BAK));
    }
    // Backups a swap would overwrite beside (an operator's own NAME.bak, or a local edit kept
    // by an earlier run) are moved aside first, and listed in the plan.
    let kept_aside: Vec<RelPath> = actions
        .iter()
        .filter(|a| matches!(a.kind, Kind::Replace | Kind::Remove) && !a.backup_aside)
        .map(|a| a.path.with_suffix(BAK))
        .filter(|b| std::fs::symlink_metadata(b.under(&inst.root)).is_ok())
        .collect();
    let needed_set: HashSet<&RelPath> = needed.iter().copied().collect();
    let staged = |p: &RelPath| needed_set.contains(p);
    let exts = scan::find(inst, &target, &staged)?;
    let mut found = tasks::find(inst, &target, &exts)?;
    let allowed_tasks = tasks::allow(inst, &mut found, allow_tasks)?;
    let mut db = inst.database()?;
    let engine = db.engine();
    let schema = db.plan(&fragments(inst, engine, &target, &exts, &staged)?)?;
    let (task_notes, done_in_database) = about_sql_tasks(inst, db.as_mut(), &found.tasks, &staged)?;
    let bytes = needed
        .iter()
        .filter_map(|p| target.entry(p))
        .map(|e| e.size)
        .sum();
    let plan = Plan {
        from: installed.map(|m| m.version().to_string()),
        to: target.version().to_string(),
        release: target.id(),
        keep_modified: false,
        actions,
        modified: diff.modified.clone(),
        yours: diff.yours.clone(),
        kept: diff.kept.clone(),
        tasks: found.tasks,
        foreign_tasks: found.foreign,
        allowed_tasks,
        schema,
        task_notes,
        done_in_database,
        bytes,
        extensions: exts,
        kept_aside,
        not_tasks: found.not_tasks,
        finish: false,
    };
    Ok((plan.with_keep_modified(keep_modified), target))
}

/// Checks before closing: free space, one filesystem, writable folders, a sound database.
pub fn preflight(inst: &Instance, plan: &Plan) -> Result<()> {
    // The folders the closed steps write into: a link there is refused now, not while closed.
    for own in [".upkeep/backups", ".upkeep/aside"] {
        inst.check_own_dir(own)?;
    }
    inst.check_staging_folder()?;
    let need = 16 << 20;
    let free = free_bytes(&inst.root)?;
    if free < need {
        return Err(Error::refused(
            format!(
                "not enough free disk on {}: {} free, {} needed at least",
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
        // Creating a file is the honest test (access(2) says yes to root on a read-only mount).
        let probe = tempfile::Builder::new()
            .prefix(".upkeep-probe")
            .tempfile_in(&dir);
        if probe.is_err() {
            return Err(Error::refused(
                format!("no write permission on {}", dir.display()),
                "run upkeep as the user that owns the site's files",
            ));
        }
    }
    // Reachable, sound, its copy's tools there and room for the copy: refused now, while
    // nothing has changed.
    inst.database()?.check(&inst.root.join(".upkeep/backups"))
}
