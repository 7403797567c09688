//! The fingerprint cache, stored as one blob (its format lives with the fingerprint code).

use rusqlite::OptionalExtension;

use super::State;
use crate::base::error::{DbContext, Result};

impl State {
    /// Load the whole fingerprint cache. It is one blob, not a row per file: on a tree of
    /// 100,000 files, decoding rows cost more than the `stat` walk the cache is there to beat.
    /// The stored blob, if any (decoded by `fingerprint::cache::PrintCache`).
    pub fn load_prints(&self) -> Result<Option<Vec<u8>>> {
        let len: Option<usize> = self
            .conn
            .query_row(
                "SELECT length(data) FROM print_cache WHERE id = 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .db(&self.path)?;
        len.map(|len| self.get_blob("print_cache", "data", 1, len))
            .transpose()
    }

    /// Replace the fingerprint cache with a blob from `PrintCache::encode` or `merged`.
    pub fn save_prints(&self, data: Vec<u8>) -> Result<()> {
        // The cache only saves work: losing it to a power cut is harmless, so this commit skips
        // the fsync that every other write of the store keeps.
        let sync: i64 = self
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .db(&self.path)?;
        self.conn
            .execute_batch("PRAGMA synchronous=NORMAL")
            .db(&self.path)?;
        let r = self.put_blob(
            |c| {
                c.execute(
                    "INSERT OR REPLACE INTO print_cache(id, data) VALUES(1, zeroblob(?1))",
                    [data.len() as i64],
                )
            },
            "print_cache",
            "data",
            &data,
        );
        self.conn
            .execute_batch(&format!("PRAGMA synchronous={sync}"))
            .db(&self.path)?;
        r
    }
}
