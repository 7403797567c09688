//! The SQLite state store in `.upkeep/state.db`: installed release, staged release, fingerprint
//! cache, runs with their steps and file journal, tasks, extensions, accounts and sessions.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::{DbContext, Result};
use crate::manifest::{Md5, PublicKey, Sha256, VerifiedManifest};

/// Bumped whenever SCHEMA changes (its statements are idempotent).
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS print_cache(id INTEGER PRIMARY KEY CHECK (id = 1), data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS releases(version TEXT PRIMARY KEY, manifest BLOB NOT NULL, sig TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS staged(id INTEGER PRIMARY KEY CHECK (id = 1), version TEXT NOT NULL,
    source TEXT NOT NULL, staged_at TEXT NOT NULL, files INTEGER NOT NULL, bytes INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS staged_files(path TEXT PRIMARY KEY, sha256 BLOB NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS runs(id INTEGER PRIMARY KEY, from_version TEXT, to_version TEXT NOT NULL,
    step TEXT NOT NULL, status TEXT NOT NULL, started_at TEXT NOT NULL, finished_at TEXT,
    closed_at_ms INTEGER, reopened_at_ms INTEGER, closed_ms INTEGER, error TEXT, keep_modified INTEGER NOT NULL,
    plan TEXT NOT NULL, db_backup TEXT);
CREATE TABLE IF NOT EXISTS run_steps(run_id INTEGER NOT NULL, step TEXT NOT NULL, started_at TEXT NOT NULL,
    duration_ms INTEGER, result TEXT, PRIMARY KEY(run_id, step));
CREATE TABLE IF NOT EXISTS tasks(run_id INTEGER NOT NULL, name TEXT NOT NULL, state TEXT NOT NULL,
    output TEXT NOT NULL DEFAULT '', exit_code INTEGER, started_at TEXT, finished_at TEXT,
    PRIMARY KEY(run_id, name));
CREATE TABLE IF NOT EXISTS extensions(path TEXT PRIMARY KEY, name TEXT NOT NULL, version TEXT NOT NULL,
    schema TEXT, run_once TEXT);
CREATE TABLE IF NOT EXISTS accounts(name TEXT PRIMARY KEY, hash TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions(id TEXT PRIMARY KEY, account TEXT NOT NULL, csrf TEXT NOT NULL,
    created_at INTEGER NOT NULL, seen_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS login_failures(key TEXT NOT NULL, at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS jobs(id INTEGER PRIMARY KEY, kind TEXT NOT NULL, state TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '', started_at TEXT NOT NULL, finished_at TEXT);
";

/// What the stat cache remembers of one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CachedStat {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds.
    pub mtime_ns: i64,
    /// Status change time, nanoseconds.
    pub ctime_ns: i64,
    /// Inode number.
    pub ino: u64,
}

/// A cached fingerprint: valid while the stat matches.
#[derive(Clone, Copy, Debug)]
pub struct CachedPrint {
    /// The stat it was computed for.
    pub stat: CachedStat,
    /// MD5 of the contents.
    pub md5: Md5,
    /// SHA-256, when it was computed.
    pub sha256: Option<Sha256>,
}

const PRINTS_MAGIC: &[u8; 6] = b"UPKC1\n";

/// Serialise the cache: magic, then per entry the path (u16 length + bytes), size, mtime, ctime,
/// inode, MD5, a flag and the SHA-256 when known. Little-endian fixed-width fields.
fn encode_prints(prints: &HashMap<String, CachedPrint>) -> Vec<u8> {
    let mut out = Vec::with_capacity(6 + prints.len() * 120);
    out.extend_from_slice(PRINTS_MAGIC);
    for (path, p) in prints {
        let Ok(len) = u16::try_from(path.len()) else {
            continue;
        };
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(path.as_bytes());
        out.extend_from_slice(&p.stat.size.to_le_bytes());
        out.extend_from_slice(&p.stat.mtime_ns.to_le_bytes());
        out.extend_from_slice(&p.stat.ctime_ns.to_le_bytes());
        out.extend_from_slice(&p.stat.ino.to_le_bytes());
        out.extend_from_slice(&p.md5.0);
        match &p.sha256 {
            Some(s) => {
                out.push(1);
                out.extend_from_slice(&s.0);
            }
            None => out.push(0),
        }
    }
    out
}

/// Parse [`encode_prints`] output; anything malformed yields what was read so far (a cache may
/// always be incomplete).
fn decode_prints(d: &[u8]) -> HashMap<String, CachedPrint> {
    let mut out = HashMap::new();
    let Some(mut rest) = d.strip_prefix(PRINTS_MAGIC.as_slice()) else {
        return out;
    };
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (a, b) = (rest.get(..n)?, rest.get(n..)?);
        *rest = b;
        Some(a)
    }
    let u64_of = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
    while !rest.is_empty() {
        let entry = (|| {
            let len = u16::from_le_bytes(take(&mut rest, 2)?.try_into().ok()?) as usize;
            let path = std::str::from_utf8(take(&mut rest, len)?).ok()?.to_string();
            let size = u64_of(take(&mut rest, 8)?);
            let mtime_ns = u64_of(take(&mut rest, 8)?) as i64;
            let ctime_ns = u64_of(take(&mut rest, 8)?) as i64;
            let ino = u64_of(take(&mut rest, 8)?);
            let md5 = Md5(take(&mut rest, 16)?.try_into().ok()?);
            let sha256 = match take(&mut rest, 1)?[0] {
                1 => Some(Sha256(take(&mut rest, 32)?.try_into().ok()?)),
                _ => None,
            };
            Some((
                path,
                CachedPrint {
                    stat: CachedStat {
                        size,
                        mtime_ns,
                        ctime_ns,
                        ino,
                    },
                    md5,
                    sha256,
                },
            ))
        })();
        match entry {
            Some((k, v)) => {
                out.insert(k, v);
            }
            None => break,
        }
    }
    out
}

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

/// An open state store.
pub struct State {
    /// The connection; public so that modules with their own tables can query.
    pub conn: Connection,
    path: PathBuf,
}

/// Current time as RFC 3339.
pub fn now_text() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

impl State {
    /// Open (and create) the store.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path).db(path)?;
        // FULL: a task marked started must survive power loss before the task runs.
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000;",
        )
        .db(path)?;
        // The schema is created once per version, not parsed again on every open: opening the
        // store is on the path of a warm fingerprint, which should cost little more than stat.
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .db(path)?;
        if version != SCHEMA_VERSION {
            conn.execute_batch(SCHEMA).db(path)?;
            conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
                .db(path)?;
        }
        Ok(State {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read a meta value.
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .db(&self.path)
    }

    /// Write a meta value.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.conn
            .execute("INSERT INTO meta(key, value) VALUES(?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2", [key, value])
            .db(&self.path)?;
        Ok(())
    }

    /// Remove a meta value.
    pub fn del_meta(&self, key: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM meta WHERE key = ?1", [key])
            .db(&self.path)?;
        Ok(())
    }

    /// Keep a verified manifest so that later commands need not fetch it again.
    pub fn save_release(&self, m: &VerifiedManifest) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO releases(version, manifest, sig) VALUES(?1, ?2, ?3)",
                params![m.version(), m.bytes(), m.sig()],
            )
            .db(&self.path)?;
        Ok(())
    }

    /// A stored manifest, verified again against the configured key.
    pub fn load_release(&self, version: &str, key: &PublicKey) -> Result<Option<VerifiedManifest>> {
        let row: Option<(Vec<u8>, String)> = self
            .conn
            .query_row(
                "SELECT manifest, sig FROM releases WHERE version = ?1",
                [version],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .db(&self.path)?;
        row.map(|(b, s)| {
            VerifiedManifest::verify(b, s, key, &format!("stored manifest of {version}"))
        })
        .transpose()
    }

    /// The installed release version, if known.
    pub fn installed_version(&self) -> Result<Option<String>> {
        self.meta("installed_version")
    }

    /// The installed release's manifest, if known.
    pub fn installed(&self, key: &PublicKey) -> Result<Option<VerifiedManifest>> {
        match self.installed_version()? {
            Some(v) => self.load_release(&v, key),
            None => Ok(None),
        }
    }

    /// Record the installed release.
    pub fn set_installed(&self, m: &VerifiedManifest) -> Result<()> {
        self.save_release(m)?;
        self.set_meta("installed_version", m.version())
    }

    /// Load the whole fingerprint cache. It is one blob, not a row per file: on a tree of
    /// 100,000 files, decoding rows cost more than the `stat` walk the cache is there to beat.
    pub fn load_prints(&self) -> Result<HashMap<String, CachedPrint>> {
        let data: Option<Vec<u8>> = self
            .conn
            .query_row("SELECT data FROM print_cache WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()
            .db(&self.path)?;
        Ok(data.map(|d| decode_prints(&d)).unwrap_or_default())
    }

    /// Replace the fingerprint cache.
    pub fn save_prints(&self, prints: &HashMap<String, CachedPrint>) -> Result<()> {
        let data = encode_prints(prints);
        // The cache only saves work: losing it to a power cut is harmless, so this commit skips
        // the fsync that every other write of the store keeps.
        self.conn
            .execute_batch("PRAGMA synchronous=NORMAL")
            .db(&self.path)?;
        let r = self
            .conn
            .execute(
                "INSERT OR REPLACE INTO print_cache(id, data) VALUES(1, ?1)",
                [data],
            )
            .db(&self.path);
        self.conn
            .execute_batch("PRAGMA synchronous=FULL")
            .db(&self.path)?;
        r.map(drop)
    }

    /// Forget every cached fingerprint (the next check hashes everything again).
    pub fn clear_prints(&self) -> Result<()> {
        self.conn
            .execute("DELETE FROM print_cache", [])
            .db(&self.path)
            .map(drop)
    }

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
    pub fn staged_files(&self) -> Result<HashMap<String, (Sha256, u64, i64)>> {
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
            if let Ok(s) = <[u8; 32]>::try_from(sha.as_slice()) {
                out.insert(p, (Sha256(s), size as u64, mtime));
            }
        }
        Ok(out)
    }

    /// Remember that a staged file was verified.
    pub fn mark_staged_file(
        &self,
        path: &str,
        sha: &Sha256,
        size: u64,
        mtime_ns: i64,
    ) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO staged_files(path, sha256, size, mtime_ns) VALUES(?1, ?2, ?3, ?4)",
                params![path, &sha.0[..], size as i64, mtime_ns],
            )
            .db(&self.path)?;
        Ok(())
    }
}
