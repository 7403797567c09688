//! The site's user. A site belongs to a user (the web server's, a deploy account); upkeep
//! started as root (an operator's `sudo`, a root cron job) does that site's work as that user:
//! what it writes (`.upkeep/`, staging, backups, new files) is the site's, and its tasks and
//! hooks run with the site's rights, not root's. `run_as` in upkeep.toml names the user; by
//! default it is the owner of the instance root.

use std::path::Path;

use crate::base::error::{Error, IoContext, Result};
use crate::base::users::{self, User};

/// The user the site's work runs as, when it is not root: upkeep.toml's `run_as`, else the
/// owner of `root`. Read from upkeep.toml alone, before the instance is opened.
pub fn site_user(root: &Path) -> Result<Option<User>> {
    use std::os::unix::fs::MetadataExt;
    let named = std::fs::read_to_string(root.join("upkeep.toml"))
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .and_then(|t| t.get("run_as")?.as_str().map(String::from));
    let user = match &named {
        Some(n) => Some(users::user(n).ok_or_else(|| Error::Config {
            file: root.join("upkeep.toml"),
            reason: format!("run_as = {n:?}: no such user on this machine"),
        })?),
        None => {
            let uid = std::fs::metadata(root).ctx("stat", root)?.uid();
            users::user_by_id(uid)
        }
    };
    Ok(user.filter(|u| u.uid != 0))
}

/// When this process is root and the site at `root` belongs to another user: give that user
/// upkeep's own files (a site set up by root before, or a command run by root since), then
/// become that user for the rest of the command. Returns who the process is now, if it
/// changed.
pub fn act_as_site_user(root: &Path) -> Result<Option<User>> {
    if users::euid() != 0 {
        return Ok(None);
    }
    let Some(user) = site_user(root)? else {
        return Ok(None);
    };
    for own in [".upkeep", "staging", "inbox", "upkeep.toml"] {
        give(&root.join(own), &user)?;
    }
    users::become_user(&user).map_err(|e| {
        Error::refused(
            format!(
                "could not act as {} (uid {}), the user site {} belongs to: {e}",
                user.name,
                user.uid,
                root.display()
            ),
            "run upkeep as that user, or set run_as in upkeep.toml",
        )
    })?;
    Ok(Some(user))
}

/// `path` and everything below it owned by `user`, never through a link: the site's user
/// could plant `.upkeep -> /etc`, and root would then hand it /etc.
fn give(path: &Path, user: &User) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::symlink_metadata(path) {
        Err(_) => return Ok(()),
        Ok(m) if m.file_type().is_symlink() => {
            return Err(Error::refused(
                format!(
                    "{} is a symbolic link: upkeep started as root does not hand over what it points to",
                    path.display()
                ),
                "replace the link with a real folder (or file) inside the instance",
            ));
        }
        Ok(_) => {}
    }
    for e in walkdir::WalkDir::new(path) {
        let Ok(e) = e else { continue };
        let Ok(md) = e.path().symlink_metadata() else {
            continue;
        };
        if md.uid() != user.uid {
            let gid = if md.gid() == 0 { user.gid } else { md.gid() };
            std::os::unix::fs::lchown(e.path(), Some(user.uid), Some(gid))
                .ctx("chown", e.path())?;
        }
    }
    Ok(())
}
