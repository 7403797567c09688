//! `inbox/`: release archives dropped by FTP or scp. An archive still being written (`*.part`, or
//! a size that is still changing) is not taken.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::Instance;
use crate::error::{Error, IoContext, Result};
use crate::manifest::RelPath;

/// One archive in the inbox.
#[derive(Debug, Serialize)]
pub struct Item {
    /// File name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification (RFC 3339).
    pub modified: String,
    /// Why it cannot be staged yet, if so.
    pub not_ready: Option<String>,
}

/// Seconds after the last write during which an archive may still be growing.
const SETTLE: Duration = Duration::from_secs(2);

/// The archives in `inbox/`, newest first.
pub fn list(inst: &Instance) -> Result<Vec<Item>> {
    let dir = inst.inbox();
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).ctx("read", &dir),
    };
    for e in rd {
        let e = e.ctx("read", &dir)?;
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        if name.starts_with('.') || name == ".gitkeep" {
            continue;
        }
        let md = e.metadata().ctx("stat", &e.path())?;
        if !md.is_file() {
            continue;
        }
        let modified = md.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let not_ready = if name.ends_with(".part") {
            Some("still being uploaded (.part)".to_string())
        } else if !name.ends_with(".zip") {
            Some("not a .zip archive".to_string())
        } else if SystemTime::now()
            .duration_since(modified)
            .unwrap_or_default()
            < SETTLE
        {
            Some("written in the last seconds; may still be growing".to_string())
        } else {
            None
        };
        out.push((
            modified,
            Item {
                name,
                size: md.len(),
                modified: humantime::format_rfc3339_seconds(modified).to_string(),
                not_ready,
            },
        ));
    }
    out.sort_by_key(|x| std::cmp::Reverse(x.0));
    Ok(out.into_iter().map(|(_, i)| i).collect())
}

/// The path of inbox archive `name`, once it is complete.
pub fn ready(inst: &Instance, name: &str) -> Result<PathBuf> {
    let rel = RelPath::parse(name)?;
    if rel.as_str().contains('/') {
        return Err(Error::refused(
            format!("{name:?} is not a file name in inbox/"),
            "give the archive's name as `upkeep stage --inbox` lists it",
        ));
    }
    let path = rel.under(&inst.inbox());
    let md = std::fs::metadata(&path).map_err(|_| {
        Error::refused(
            format!("no archive {name:?} in {}", inst.inbox().display()),
            "run `upkeep stage --inbox` to list what is there",
        )
    })?;
    if name.ends_with(".part") {
        return Err(Error::refused(
            format!("{name} is still being uploaded (.part)"),
            "wait for the upload to finish and the file to be renamed",
        ));
    }
    let recent = SystemTime::now()
        .duration_since(md.modified().unwrap_or(SystemTime::UNIX_EPOCH))
        .unwrap_or_default()
        < SETTLE;
    if recent {
        // A file written seconds ago may still be growing: look again after the settle time.
        std::thread::sleep(SETTLE);
        let again = std::fs::metadata(&path).ctx("stat", &path)?;
        if again.len() != md.len() || again.modified().ok() != md.modified().ok() {
            return Err(Error::refused(
                format!("{name} is still growing"),
                "wait for the upload to finish, then run the command again",
            ));
        }
    }
    Ok(path)
}
