//! The swap: each replaced or removed live file becomes `NAME.bak`, each staged file takes its
//! place, by rename on one filesystem, then the touched folders are synced.
//!
//! Every step is one atomic rename, and where a file stands can be read from the filesystem
//! alone (is the staged copy still in staging? is the live name taken?), so the same code resumes
//! a swap after a crash at any instant, and [`undo`] puts back exactly what was there.
//!
//! Nothing the operator had is overwritten: an older `NAME.bak` (an earlier local edit, or the
//! operator's own file of that name) first moves into the run's aside folder
//! (`.upkeep/aside/run-N/`), and so does, whole, whatever stands where a new file goes
//! (a folder that becomes a file). A rollback moves them back.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use crate::base::crash;
use crate::base::error::{IoContext, Result};
use crate::base::fsutil::sync_dir;
use crate::base::progress::Progress;
use crate::documents::manifest::RelPath;
use crate::documents::manifest::relpath::{BAK, DONE};
use crate::site::config::Instance;

pub use crate::site::plan::{Action, Kind};

struct Paths {
    live: PathBuf,
    bak: PathBuf,
    staged: PathBuf,
    /// Where an older `NAME.bak` waits during the run.
    old_bak: PathBuf,
    /// Where a displaced file or folder waits.
    displaced: PathBuf,
}

fn paths(inst: &Instance, aside: &Path, a: &Action) -> Paths {
    let p = &a.path;
    Paths {
        live: p.under(&inst.root),
        bak: match a.backup_aside {
            true => p.with_suffix(BAK).under(&aside.join("backup")),
            false => p.with_suffix(BAK).under(&inst.root),
        },
        staged: p.under(&inst.staging()),
        old_bak: p.with_suffix(BAK).under(&aside.join("bak")),
        displaced: p.under(&aside.join("displaced")),
    }
}

/// The aside folder of run `run`.
pub fn aside_dir(inst: &Instance, run: i64) -> PathBuf {
    inst.state_dir().join("aside").join(format!("run-{run}"))
}

/// Make the folder `dir` (below the instance root) and those above it, none of them a link;
/// each folder made takes the owner, group and mode a new folder there takes ([`new_meta`]).
fn make_dir(inst: &Instance, dir: &Path) -> Result<()> {
    let rel = dir
        .strip_prefix(&inst.root)
        .expect("the swap works below the instance root");
    if rel.as_os_str().is_empty() {
        return Ok(());
    }
    let mut existing = dir.to_path_buf();
    while !existing.exists() && existing.pop() {}
    crate::base::beneath::create_dir_all(&inst.root, rel).ctx("create folder", dir)?;
    let mut made = dir.to_path_buf();
    let mut new = Vec::new();
    while made != existing && made.starts_with(&existing) {
        new.push(made.clone());
        if !made.pop() {
            break;
        }
    }
    for d in new.iter().rev() {
        let parent = std::fs::metadata(d.parent().expect("below the root")).ctx("stat", d)?;
        apply_meta(d, new_meta(inst, &parent, true))?;
    }
    Ok(())
}

/// Owner, group and permission bits.
#[derive(Clone, Copy, Debug)]
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
}

/// What a new file (or folder, `dir`) takes: the owner and group of the folder it lands in,
/// or `[files] owner`/`group`; the mode `[files] umask` leaves (0644 files and 0755 folders by
/// default, the execute bits for an executable file).
fn new_meta(inst: &Instance, folder: &std::fs::Metadata, exec: bool) -> Meta {
    use std::os::unix::fs::MetadataExt;
    let f = &inst.config.files;
    let full = if exec { 0o777 } else { 0o666 };
    Meta {
        uid: f
            .owner
            .as_deref()
            .and_then(crate::base::users::user)
            .map_or(folder.uid(), |u| u.uid),
        gid: f
            .group
            .as_deref()
            .and_then(crate::base::users::group_id)
            .unwrap_or(folder.gid()),
        mode: full & !f.umask_bits(),
    }
}

/// What a file replacing `before` takes: its owner, group and mode exactly, so an update never
/// makes a file more permissive (0600 stays 0600); where the release marks the file
/// executable, the execute bits are added beside each read bit.
fn replacing_meta(before: &std::fs::Metadata, exec: bool) -> Meta {
    use std::os::unix::fs::MetadataExt;
    let mut mode = before.mode() & 0o7777;
    if exec {
        mode |= (mode & 0o444) >> 2;
    }
    Meta {
        uid: before.uid(),
        gid: before.gid(),
        mode,
    }
}

/// Give `path` its owner and group (as root: a process running as the site's owner makes its
/// files its own already) and its mode. Never through a link: `path` was checked to be a
/// regular file or a real folder.
fn apply_meta(path: &Path, m: Meta) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let now = std::fs::symlink_metadata(path).ctx("stat", path)?;
    if crate::base::users::euid() == 0 && (now.uid() != m.uid || now.gid() != m.gid) {
        std::os::unix::fs::lchown(path, Some(m.uid), Some(m.gid)).ctx("chown", path)?;
    }
    if now.mode() & 0o7777 != m.mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(m.mode))
            .ctx("chmod", path)?;
    }
    Ok(())
}

/// Move `from` to `to` (creating `to`'s folder) unless `to` is already taken: the move
/// happened before a crash, or is not needed.
fn move_into(inst: &Instance, from: &Path, to: &Path, point: &str) -> Result<()> {
    if exists(from) && !exists(to) {
        make_dir(inst, to.parent().expect("aside paths have a parent"))?;
        rename(from, to, point)?;
    }
    Ok(())
}

/// Move the live file to its backup (`NAME.bak`), an older `NAME.bak` moved aside first.
fn back_up(inst: &Instance, p: &Paths, n: usize) -> Result<()> {
    if exists(&p.bak) {
        move_into(inst, &p.bak, &p.old_bak, &format!("swap:{n}:old-bak"))?;
        crash::point(&format!("swap:{n}:old-bak-aside"));
    }
    make_dir(inst, p.bak.parent().expect("backups have a folder"))?;
    rename(&p.live, &p.bak, &format!("swap:{n}:bak"))
}

fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

fn rename(from: &Path, to: &Path, point: &str) -> Result<()> {
    crash::fail(point).ctx("rename", from)?;
    std::fs::rename(from, to).ctx("rename", from)
}

/// The staged `p` is a regular file reached without a link: a link planted in staging (with
/// the signed bytes behind it) is never installed, nor a file moved out of a linked folder.
fn staged_file(inst: &Instance, p: &RelPath) -> Result<()> {
    let staging = inst.staging();
    let path = p.under(&staging);
    crate::base::beneath::no_links(&staging, Path::new(p.as_str())).ctx("install", &path)?;
    if !std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
        return Err(crate::base::error::Error::refused(
            format!(
                "{} is not a regular file: upkeep installs files only",
                path.display()
            ),
            "stage the release again",
        ));
    }
    Ok(())
}

/// Apply (or continue) the swap; `aside` is [`aside_dir`] of the run.
pub fn apply(inst: &Instance, aside: &Path, actions: &[Action], progress: &Progress) -> Result<()> {
    let mut dirs = BTreeSet::new();
    progress.set_totals(actions.len() as u64, 0);
    for (n, a) in actions.iter().enumerate() {
        let n = n + 1;
        let p = paths(inst, aside, a);
        match a.kind {
            Kind::Replace | Kind::Add => {
                if exists(&p.staged) {
                    staged_file(inst, &a.path)?;
                    // What the file it replaces had (in its backup once moved, after a crash),
                    // else what a new file in its folder takes; given before it goes live.
                    let before = std::fs::symlink_metadata(&p.live)
                        .or_else(|_| std::fs::symlink_metadata(&p.bak))
                        .ok()
                        .filter(|m| a.kind == Kind::Replace && m.is_file());
                    if exists(&p.live) {
                        back_up(inst, &p, n)?;
                        crash::point(&format!("swap:{n}:moved-live"));
                    }
                    let parent = p.live.parent().expect("live paths have a parent");
                    make_dir(inst, parent)?;
                    let meta = match &before {
                        Some(b) => replacing_meta(b, a.exec),
                        None => new_meta(
                            inst,
                            &std::fs::metadata(parent).ctx("stat", parent)?,
                            a.exec,
                        ),
                    };
                    apply_meta(&p.staged, meta)?;
                    rename(&p.staged, &p.live, &format!("swap:{n}:live"))?;
                    crash::point(&format!("swap:{n}:done"));
                }
            }
            Kind::Remove => {
                // A removed path names a file; a folder there now was made by this run's
                // installs (a file that became a folder), when the swap is resumed.
                if exists(&p.live) && !std::fs::symlink_metadata(&p.live).is_ok_and(|m| m.is_dir())
                {
                    back_up(inst, &p, n)?;
                    crash::point(&format!("swap:{n}:done"));
                }
            }
            Kind::Displace => {
                move_into(inst, &p.live, &p.displaced, &format!("swap:{n}:displace"))?;
                crash::point(&format!("swap:{n}:done"));
            }
            Kind::Keep => {}
        }
        if let Some(d) = p.live.parent() {
            dirs.insert(d.to_path_buf());
        }
        progress.add_file();
    }
    for d in &dirs {
        if d.exists() {
            sync_dir(d)?;
        }
    }
    crash::point("swap:synced");
    Ok(())
}

/// Put back what [`apply`] changed, however far it got. `done_tasks` are run_once paths whose
/// task finished in this run (their `.done` twin goes too).
pub fn undo(
    inst: &Instance,
    aside: &Path,
    actions: &[Action],
    done_tasks: &HashSet<RelPath>,
) -> Result<()> {
    let mut dirs = BTreeSet::new();
    for a in actions.iter().rev() {
        let p = paths(inst, aside, a);
        let done = a.path.with_suffix(DONE).under(&inst.root);
        match a.kind {
            Kind::Replace => {
                if exists(&p.bak) && (!exists(&p.staged) || !exists(&p.live)) {
                    std::fs::rename(&p.bak, &p.live).ctx("restore", &p.bak)?;
                }
                move_into(inst, &p.old_bak, &p.bak, "rollback:old-bak")?;
                if done_tasks.contains(&a.path) && exists(&done) {
                    std::fs::remove_file(&done).ctx("remove", &done)?;
                }
            }
            Kind::Add => {
                if !exists(&p.staged) {
                    for f in [&p.live, &done] {
                        if exists(f) {
                            std::fs::remove_file(f).ctx("remove", f)?;
                        }
                    }
                    remove_empty_parents(&inst.root, &p.live);
                }
            }
            Kind::Remove => {
                if !exists(&p.live) && exists(&p.bak) {
                    std::fs::rename(&p.bak, &p.live).ctx("restore", &p.bak)?;
                }
                move_into(inst, &p.old_bak, &p.bak, "rollback:old-bak")?;
            }
            Kind::Displace => {
                // Undone after the files that took its place, so its name is free again (a
                // folder the release's files needed is removed once empty).
                if exists(&p.displaced) {
                    if std::fs::symlink_metadata(&p.live).is_ok_and(|m| m.is_dir()) {
                        let _ = std::fs::remove_dir(&p.live);
                    }
                    move_into(inst, &p.displaced, &p.live, "rollback:displaced")?;
                }
            }
            Kind::Keep => {}
        }
        if let Some(d) = p.live.parent()
            && d.exists()
        {
            dirs.insert(d.to_path_buf());
        }
    }
    for d in dirs.iter().filter(|d| d.exists()) {
        sync_dir(d)?;
    }
    Ok(())
}

/// Folders an added file needed are removed again when they end up empty.
fn remove_empty_parents(root: &Path, file: &Path) {
    let mut dir = file.parent();
    while let Some(d) = dir {
        if d == root || d == root.join("run_once") || std::fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}

/// After a successful run, the backups of the run before it are no longer a way back: remove
/// the ones this run did not replace, except those of locally modified files, which hold the
/// operator's own edit (a later run that needs the name moves them aside).
pub fn drop_old_backups(
    inst: &Instance,
    (previous, previous_aside): (&[Action], &Path),
    current: &[Action],
) {
    let touched: HashSet<&RelPath> = current
        .iter()
        .filter(|a| a.kind != Kind::Keep)
        .map(|a| &a.path)
        .collect();
    for a in previous
        .iter()
        .filter(|a| matches!(a.kind, Kind::Replace | Kind::Remove) && !a.modified)
    {
        if !touched.contains(&a.path) {
            let _ = std::fs::remove_file(paths(inst, previous_aside, a).bak);
        }
    }
}
