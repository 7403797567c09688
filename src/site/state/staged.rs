//! The staged release and the staged files already verified.

use std::collections::HashMap;

use rusqlite::{OptionalExtension, params};

use super::State;
use crate::base::clock::now_text;
use crate::base::error::{DbContext, Result};
use crate::documents::manifest::{RelPath, Sha256, VerifiedManifest};

/// The release staged and ready to apply.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StagedInfo {
    /// Its version.
    pub version: String,
    /// Which of the four sources filled staging.
    pub source: String,
    /// When.
    pub staged_at: String,
    /// Files staged.
    pub files: u64,
    /// Bytes staged.
    pub bytes: u64,
}

impl State {
    /// The staged release, if any.
    pub fn staged(&self) -> Result<Option<StagedInfo>> {
        self.conn
            .query_row(
                "SELECT version, source, staged_at, files, bytes FROM staged WHERE id = 1",
                [],
                |r| {
                    Ok(StagedInfo {
                        version: r.get(0)?,
                        source: r.get(1)?,
                        staged_at: r.get(2)?,
                        files: r.get::<_, i64>(3)? as u64,
                        bytes: r.get::<_, i64>(4)? as u64,
                    })
                },
            )
            .optional()
            .db(&self.path)
    }

    /// Record the staged release (its manifest is saved too).
    pub fn set_staged(
        &self,
        m: &VerifiedManifest,
        source: &str,
        files: u64,
        bytes: u64,
    ) -> Result<()> {
        self.save_release(m)?;
        self.conn
            .execute(
                "INSERT OR REPLACE INTO staged(id, version, source, staged_at, files, bytes) VALUES(1, ?1, ?2, ?3, ?4, ?5)",
                params![m.version(), source, now_text(), files as i64, bytes as i64],
            )
            .db(&self.path)?;
        Ok(())
    }

    /// Forget the staged release (after a run, or when staging is refilled).
    pub fn clear_staged(&self) -> Result<()> {
        self.conn
            .execute_batch("DELETE FROM staged; DELETE FROM staged_files;")
            .db(&self.path)
    }

    /// Staged files already verified: path -> (sha256, size, mtime_ns).
    pub fn staged_files(&self) -> Result<HashMap<RelPath, (Sha256, u64, i64)>> {
        let mut st = self
            .conn
            .prepare("SELECT path, sha256, size, mtime_ns FROM staged_files")
            .db(&self.path)?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .db(&self.path)?;
        let mut out = HashMap::new();
        for row in rows {
            let (p, sha, size, mtime) = row.db(&self.path)?;
            // A row that does not parse is only a verification to redo.
            if let (Ok(s), Ok(p)) = (<[u8; 32]>::try_from(sha.as_slice()), RelPath::parse(&p)) {
                out.insert(p, (Sha256(s), size as u64, mtime));
            }
        }
        Ok(out)
    }

    /// Remember that a staged file was verified.
    pub fn mark_staged_file(
        &self,
        path: &RelPath,
        sha: &Sha256,
        size: u64,
        mtime_ns: i64,
    ) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO staged_files(path, sha256, size, mtime_ns) VALUES(?1, ?2, ?3, ?4)",
                params![path.as_str(), &sha.0[..], size as i64, mtime_ns],
            )
            .db(&self.path)?;
        Ok(())
    }
}
