//! The SQLite state store in `.upkeep/state.db`: installed release, staged release, fingerprint
//! cache, runs with their steps and file journal, tasks, extensions, accounts and sessions.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::{DbContext, IoContext, Result};
use crate::manifest::{Md5, PublicKey, Sha256, VerifiedManifest};

/// Bumped whenever SCHEMA changes (its statements are idempotent).
const SCHEMA_VERSION: i64 = 3;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS print_cache(id INTEGER PRIMARY KEY CHECK (id = 1), data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS manifests(version TEXT PRIMARY KEY, sig TEXT NOT NULL, manifest BLOB NOT NULL);
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
/// Bytes of one entry after its path: size, mtime, ctime, inode, MD5, SHA-256 flag.
const FIXED: usize = 8 * 4 + 16 + 1;

/// The fingerprint cache as stored: one blob of entries sorted by path, read in place.
///
/// Per entry: the path (u16 length + bytes), size, mtime, ctime, inode, MD5, a flag and the
/// SHA-256 when known; little-endian fixed-width fields. Loading indexes where each entry starts
/// and nothing more: on a warm check of 100,000 files, building a map of owned paths (an
/// allocation and a SipHash per entry) cost as much as the `stat` walk the cache is there to beat.
#[derive(Default)]
pub struct PrintCache {
    data: Vec<u8>,
    /// Offsets of the entries, in path order.
    starts: Vec<usize>,
    /// The blob was not in path order (an older upkeep wrote it): worth writing again.
    resorted: bool,
}

impl PrintCache {
    /// Read a stored blob; anything malformed yields what was read so far (a cache may always
    /// be incomplete). A blob written unsorted (by an older upkeep) is put in order here.
    pub fn decode(data: Vec<u8>) -> Self {
        let mut starts = Vec::new();
        if data.starts_with(PRINTS_MAGIC) {
            let mut at = PRINTS_MAGIC.len();
            while let Some(len) = data.get(at..at + 2) {
                let start = at;
                let path_end = at + 2 + u16::from_le_bytes([len[0], len[1]]) as usize;
                let Some(&flag) = data.get(path_end + FIXED - 1) else {
                    break;
                };
                let end = path_end + FIXED + if flag == 1 { 32 } else { 0 };
                if end > data.len() || std::str::from_utf8(&data[at + 2..path_end]).is_err() {
                    break;
                }
                starts.push(start);
                at = end;
            }
        }
        let mut cache = PrintCache {
            data,
            starts,
            resorted: false,
        };
        if !cache
            .starts
            .is_sorted_by(|a, b| cache.path_at(*a) < cache.path_at(*b))
        {
            cache.resorted = true;
            let mut starts = std::mem::take(&mut cache.starts);
            starts.sort_by(|a, b| cache.path_at(*a).cmp(cache.path_at(*b)));
            starts.dedup_by(|a, b| cache.path_at(*a) == cache.path_at(*b));
            cache.starts = starts;
        }
        cache
    }

    /// Serialise entries given in path order.
    pub fn encode<'a, P: std::borrow::Borrow<CachedPrint>>(
        entries: impl Iterator<Item = (&'a str, P)>,
    ) -> Vec<u8> {
        // Sized up front: doubling a buffer of 10 MB holds 24 MB for a moment.
        let guess = PRINTS_MAGIC.len() + entries.size_hint().0 * (FIXED + 2 + 64);
        Self::encode_into(Vec::with_capacity(guess), entries)
    }

    fn encode_into<'a, P: std::borrow::Borrow<CachedPrint>>(
        mut out: Vec<u8>,
        entries: impl Iterator<Item = (&'a str, P)>,
    ) -> Vec<u8> {
        out.extend_from_slice(PRINTS_MAGIC);
        for (path, p) in entries {
            let p = p.borrow();
            let Ok(len) = u16::try_from(path.len()) else {
                continue;
            };
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(path.as_bytes());
            for v in [
                p.stat.size,
                p.stat.mtime_ns as u64,
                p.stat.ctime_ns as u64,
                p.stat.ino,
            ] {
                out.extend_from_slice(&v.to_le_bytes());
            }
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

    /// The path of the entry at `start`, as bytes: they sort like the text (UTF-8 keeps the
    /// order), and checking them again on every comparison of a lookup cost a sixth of a warm
    /// check.
    fn path_at(&self, start: usize) -> &[u8] {
        let len = u16::from_le_bytes([self.data[start], self.data[start + 1]]) as usize;
        &self.data[start + 2..start + 2 + len]
    }

    fn print_at(&self, start: usize) -> CachedPrint {
        let len = u16::from_le_bytes([self.data[start], self.data[start + 1]]) as usize;
        let f = &self.data[start + 2 + len..];
        let u = |i: usize| u64::from_le_bytes(f[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        CachedPrint {
            stat: CachedStat {
                size: u(0),
                mtime_ns: u(1) as i64,
                ctime_ns: u(2) as i64,
                ino: u(3),
            },
            md5: Md5(f[32..48].try_into().expect("16 bytes")),
            sha256: (f[48] == 1).then(|| Sha256(f[49..81].try_into().expect("32 bytes"))),
        }
    }

    /// The entry for a path, by binary search.
    pub fn get(&self, path: &str) -> Option<CachedPrint> {
        let i = self
            .starts
            .binary_search_by(|s| self.path_at(*s).cmp(path.as_bytes()))
            .ok()?;
        Some(self.print_at(self.starts[i]))
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Whether the stored blob should be written again (it was not in path order).
    pub fn stale(&self) -> bool {
        self.resorted
    }

    /// Every entry, in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, CachedPrint)> + '_ {
        self.starts.iter().map(|s| {
            // Checked to be UTF-8 in `decode`.
            let path = std::str::from_utf8(self.path_at(*s)).unwrap_or_default();
            (path, self.print_at(*s))
        })
    }

    /// This cache with `fresh` entries added or replacing those of the same path, serialised.
    /// The two sorted lists are merged straight into the blob.
    pub fn merged(&self, mut fresh: Vec<(std::borrow::Cow<'_, str>, CachedPrint)>) -> Vec<u8> {
        fresh.sort_by(|a, b| a.0.cmp(&b.0));
        fresh.dedup_by(|a, b| a.0 == b.0);
        let mut old = self.iter().peekable();
        let mut new = fresh.iter().map(|(p, c)| (p.as_ref(), *c)).peekable();
        let merged = std::iter::from_fn(move || match (old.peek(), new.peek()) {
            (Some(o), Some(n)) if o.0 < n.0 => old.next(),
            (Some(o), Some(n)) if o.0 == n.0 => {
                old.next();
                new.next()
            }
            (Some(_), None) => old.next(),
            (_, Some(_)) => new.next(),
            (None, None) => None,
        });
        let size = |(p, c): &(std::borrow::Cow<str>, CachedPrint)| {
            2 + p.len() + FIXED + 32 * c.sha256.is_some() as usize
        };
        let bound = PRINTS_MAGIC.len() + self.data.len() + fresh.iter().map(size).sum::<usize>();
        Self::encode_into(Vec::with_capacity(bound), merged)
    }
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
            // Version 3 keeps the manifest blob in the last column, where SQLite can write it
            // by incremental I/O without building the whole record in memory. Checked inside
            // the write transaction, so that two processes opening at once move it once.
            conn.execute_batch("BEGIN IMMEDIATE").db(path)?;
            let old: bool = conn
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'releases'",
                    [],
                    |r| r.get(0),
                )
                .db(path)?;
            if old {
                conn.execute_batch(
                    "INSERT OR IGNORE INTO manifests(version, sig, manifest) SELECT version, sig, manifest FROM releases; DROP TABLE releases;",
                )
                .db(path)?;
            }
            conn.execute_batch("COMMIT").db(path)?;
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
        // Without its bytes, the manifest was read from this store and is still in it.
        let Some(bytes) = m.bytes() else {
            return Ok(());
        };
        self.put_blob(
            |c| {
                c.execute(
                    "INSERT OR REPLACE INTO manifests(version, sig, manifest) VALUES(?1, ?2, zeroblob(?3))",
                    params![m.version(), m.sig(), bytes.len() as i64],
                )
            },
            "manifests",
            "manifest",
            bytes,
        )
    }

    /// Insert a row whose last column is a `zeroblob` (by `insert`), then fill that blob through
    /// SQLite's incremental I/O, all or nothing. Bound as a parameter, a blob is copied twice
    /// inside SQLite: for a manifest or a fingerprint cache of 100,000 files that was the peak
    /// memory of a staging.
    fn put_blob(
        &self,
        insert: impl FnOnce(&Connection) -> rusqlite::Result<usize>,
        table: &str,
        column: &str,
        bytes: &[u8],
    ) -> Result<()> {
        use std::io::Write;
        let c = &self.conn;
        c.execute_batch("SAVEPOINT put_blob").db(&self.path)?;
        let r = (|| -> rusqlite::Result<()> {
            insert(c)?;
            let row = c.last_insert_rowid();
            let mut blob = c.blob_open(rusqlite::DatabaseName::Main, table, column, row, false)?;
            blob.write_all(bytes)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
        })();
        match r {
            Ok(()) => c.execute_batch("RELEASE put_blob").db(&self.path),
            Err(e) => {
                let _ = c.execute_batch("ROLLBACK TO put_blob; RELEASE put_blob");
                Err(e).db(&self.path)
            }
        }
    }

    /// Read a blob straight into a buffer of its exact size (see [`State::put_blob`]).
    fn get_blob(&self, table: &str, column: &str, row: i64, len: usize) -> Result<Vec<u8>> {
        use std::io::Read;
        let mut bytes = Vec::with_capacity(len);
        self.conn
            .blob_open(rusqlite::DatabaseName::Main, table, column, row, true)
            .db(&self.path)?
            .read_to_end(&mut bytes)
            .ctx("read", &self.path)?;
        Ok(bytes)
    }

    /// A stored manifest, verified again against the configured key.
    pub fn load_release(&self, version: &str, key: &PublicKey) -> Result<Option<VerifiedManifest>> {
        let Some((bytes, sig)) = self.release_bytes(version)? else {
            return Ok(None);
        };
        VerifiedManifest::verify(bytes, sig, key, &format!("stored manifest of {version}"))
            .map(Some)
    }

    /// A stored manifest's signed bytes and signature, not verified: the caller checks them.
    pub fn release_bytes(&self, version: &str) -> Result<Option<(Vec<u8>, String)>> {
        let row: Option<(i64, usize, String)> = self
            .conn
            .query_row(
                "SELECT rowid, length(manifest), sig FROM manifests WHERE version = ?1",
                [version],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .db(&self.path)?;
        let Some((row, len, sig)) = row else {
            return Ok(None);
        };
        let bytes = self.get_blob("manifests", "manifest", row, len)?;
        Ok(Some((bytes, sig)))
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

    /// The installed release's verified list of files, without the signed bytes (they stay
    /// here): for comparing with the live tree or another release.
    pub fn installed_list(&self, key: &PublicKey) -> Result<Option<VerifiedManifest>> {
        let mut m = self.installed(key)?;
        if let Some(m) = m.as_mut() {
            m.drop_bytes();
        }
        Ok(m)
    }

    /// Record the installed release.
    pub fn set_installed(&self, m: &VerifiedManifest) -> Result<()> {
        self.save_release(m)?;
        self.set_meta("installed_version", m.version())
    }

    /// Load the whole fingerprint cache. It is one blob, not a row per file: on a tree of
    /// 100,000 files, decoding rows cost more than the `stat` walk the cache is there to beat.
    pub fn load_prints(&self) -> Result<PrintCache> {
        let len: Option<usize> = self
            .conn
            .query_row(
                "SELECT length(data) FROM print_cache WHERE id = 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .db(&self.path)?;
        Ok(match len {
            Some(len) => PrintCache::decode(self.get_blob("print_cache", "data", 1, len)?),
            None => PrintCache::default(),
        })
    }

    /// Replace the fingerprint cache with a blob from [`PrintCache::encode`] or
    /// [`PrintCache::merged`].
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

#[cfg(test)]
mod tests {
    use super::*;

    fn print(n: u64, sha: bool) -> CachedPrint {
        CachedPrint {
            stat: CachedStat {
                size: n,
                mtime_ns: -(n as i64),
                ctime_ns: n as i64 * 7,
                ino: n + 1,
            },
            md5: Md5([n as u8; 16]),
            sha256: sha.then_some(Sha256([n as u8 + 1; 32])),
        }
    }

    fn blob(entries: &[(&str, CachedPrint)]) -> Vec<u8> {
        PrintCache::encode(entries.iter().map(|(p, c)| (*p, c)))
    }

    fn same(a: CachedPrint, b: CachedPrint) -> bool {
        a.stat == b.stat && a.md5 == b.md5 && a.sha256.map(|s| s.0) == b.sha256.map(|s| s.0)
    }

    #[test]
    fn manifests_move_out_of_the_version_2_table_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        {
            let c = Connection::open(&db).unwrap();
            c.execute_batch(
                "CREATE TABLE releases(version TEXT PRIMARY KEY, manifest BLOB NOT NULL, sig TEXT NOT NULL);
                 INSERT INTO releases VALUES('1.0.0', x'7b7d0a', 'sig-a');
                 PRAGMA user_version = 2;",
            )
            .unwrap();
        }
        let st = State::open(&db).unwrap();
        assert_eq!(
            st.release_bytes("1.0.0").unwrap(),
            Some((b"{}\n".to_vec(), "sig-a".to_string()))
        );
        assert_eq!(st.release_bytes("2.0.0").unwrap(), None);
        let old: i64 = st
            .conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'releases'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(old, 0);
        drop(st);
        // Opening again (now at version 3) keeps it.
        let st = State::open(&db).unwrap();
        assert!(st.release_bytes("1.0.0").unwrap().is_some());
    }

    #[test]
    fn a_saved_manifest_reads_back_byte_for_byte() {
        use crate::manifest::{FORMAT, FileEntry, Manifest, RelPath, SecretKey, to_bytes};
        let dir = tempfile::tempdir().unwrap();
        let st = State::open(&dir.path().join("state.db")).unwrap();
        let k = SecretKey::generate().unwrap();
        let files = (0..5000)
            .map(|i| FileEntry {
                path: RelPath::parse(&format!("d{}/f{i:05}.php", i % 9)).unwrap(),
                size: i,
                md5: Md5([i as u8; 16]),
                sha256: Sha256([(i / 7) as u8; 32]),
            })
            .collect::<Vec<_>>();
        let mut files = files;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let m = Manifest {
            format: FORMAT,
            version: "3.1.4".into(),
            date: "2026-01-01T00:00:00Z".into(),
            expires: "2099-01-01T00:00:00Z".into(),
            previous: None,
            notes: String::new(),
            min_upkeep: "0.1.0".into(),
            files,
        };
        let b = to_bytes(&m);
        let v = VerifiedManifest::verify(b.clone(), k.sign(&b), &k.public(), "m").unwrap();
        st.save_release(&v).unwrap();
        st.save_release(&v).unwrap();
        let back = st.load_release("3.1.4", &k.public()).unwrap().unwrap();
        assert_eq!(back.bytes().unwrap(), b.as_slice());
        assert_eq!(back.files(), v.files());
        // A manifest that let go of its bytes came from the store: saving it changes nothing.
        let mut light = back.clone();
        light.drop_bytes();
        st.save_release(&light).unwrap();
        assert_eq!(st.release_bytes("3.1.4").unwrap().unwrap().0, b);
    }

    #[test]
    fn print_cache_round_trip_and_lookup() {
        let entries = [
            ("a", print(1, false)),
            ("a.txt", print(2, true)),
            ("a/b", print(3, false)),
        ];
        let cache = PrintCache::decode(blob(&entries));
        assert_eq!(cache.len(), 3);
        assert!(!cache.stale());
        for (p, c) in &entries {
            assert!(same(cache.get(p).unwrap(), *c), "{p}");
        }
        assert!(cache.get("a/c").is_none());
        assert!(cache.get("").is_none());
    }

    #[test]
    fn print_cache_sorts_an_unsorted_blob_and_says_so() {
        let entries = [
            ("z", print(1, false)),
            ("b", print(2, false)),
            ("m/n", print(3, true)),
        ];
        let cache = PrintCache::decode(blob(&entries));
        assert!(cache.stale());
        let order: Vec<&str> = cache.iter().map(|(p, _)| p).collect();
        assert_eq!(order, ["b", "m/n", "z"]);
        assert!(same(cache.get("z").unwrap(), print(1, false)));
    }

    #[test]
    fn print_cache_keeps_what_precedes_a_damaged_tail() {
        let entries = [("a", print(1, true)), ("b", print(2, false))];
        let mut damaged = blob(&entries);
        damaged.truncate(damaged.len() - 3);
        let cache = PrintCache::decode(damaged);
        assert_eq!(cache.len(), 1);
        assert!(same(cache.get("a").unwrap(), print(1, true)));
        assert_eq!(PrintCache::decode(b"not a cache".to_vec()).len(), 0);
    }

    #[test]
    fn print_cache_merge_replaces_and_adds_in_order() {
        let entries = [("a", print(1, false)), ("c", print(3, false))];
        let cache = PrintCache::decode(blob(&entries));
        let merged = PrintCache::decode(cache.merged(vec![
            ("d".into(), print(4, false)),
            (String::from("a").into(), print(9, true)),
            ("b".into(), print(2, false)),
        ]));
        assert!(!merged.stale());
        let got: Vec<(&str, u64)> = merged.iter().map(|(p, c)| (p, c.stat.size)).collect();
        assert_eq!(got, [("a", 9), ("b", 2), ("c", 3), ("d", 4)]);
    }
}
