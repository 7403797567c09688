//! `inbox/`: release archives dropped by FTP or scp. An archive still being written (`*.part`, or
//! a size that is still changing) is not taken.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::base::error::{Error, IoContext, Result};
use crate::documents::manifest::RelPath;
use crate::site::config::Instance;

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
    inst.check_own_dir("inbox")?;
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
        // A link is no archive in the inbox (`DirEntry::metadata` does not follow it).
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
    inst.check_own_dir("inbox")?;
    let path = rel.under(&inst.inbox());
    let md = std::fs::symlink_metadata(&path)
        .ok()
        .filter(|m| m.is_file())
        .ok_or_else(|| {
            Error::refused(
                format!("no archive {name:?} in {}", inst.inbox().display()),
                "run `upkeep stage --inbox` to list what is there (a link is not taken)",
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

/// An archive being written into `inbox/` under the `.part` convention: invisible to staging
/// until [`Incoming::finish`] renames it, removed if dropped unfinished (an interrupted upload
/// leaves nothing behind).
pub struct Incoming {
    part: PathBuf,
    path: PathBuf,
    file: Option<std::fs::File>,
    written: u64,
}

/// The first bytes of every zip archive that holds at least one entry.
const ZIP_MAGIC: &[u8; 4] = b"PK\x03\x04";

impl Incoming {
    /// Start `inbox/NAME.part`.
    pub fn create(inst: &Instance, name: &str) -> Result<Self> {
        let rel = RelPath::parse(name)?;
        let path = rel.under(&inst.inbox());
        let part = rel.with_suffix(".part").under(&inst.inbox());
        inst.own_dir("inbox")?;
        // A new file, never one a link stands for: a leftover part (or a link) goes first.
        let _ = std::fs::remove_file(&part);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&part)
            .ctx("create", &part)?;
        Ok(Incoming {
            part,
            path,
            file: Some(file),
            written: 0,
        })
    }

    /// Append a chunk. The first bytes must be a zip's: anything else is refused at once
    /// rather than stored and left in the inbox.
    pub fn write(&mut self, chunk: &[u8]) -> Result<()> {
        use std::io::Write;
        let seen = self.written as usize;
        if seen < ZIP_MAGIC.len() {
            let want = &ZIP_MAGIC[seen..(seen + chunk.len()).min(ZIP_MAGIC.len())];
            if !chunk.starts_with(want) {
                return Err(Error::Archive {
                    archive: self.path.display().to_string(),
                    reason: "this is not a zip archive".into(),
                });
            }
        }
        let f = self.file.as_mut().expect("open until finished");
        f.write_all(chunk).ctx("write", &self.part)?;
        self.written += chunk.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Sync and rename to the final name; returns it.
    pub fn finish(mut self) -> Result<PathBuf> {
        if self.written < ZIP_MAGIC.len() as u64 {
            return Err(Error::Archive {
                archive: self.path.display().to_string(),
                reason: "empty or truncated upload".into(),
            });
        }
        let f = self.file.take().expect("open until finished");
        f.sync_all().ctx("sync", &self.part)?;
        std::fs::rename(&self.part, &self.path).ctx("rename", &self.part)?;
        Ok(self.path.clone())
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.part);
        }
    }
}
