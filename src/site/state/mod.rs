//! The SQLite state store in `.upkeep/state.db`. This file opens it and keeps its schema; each
//! group of tables has its own file with its queries: `manifests` (verified releases and the
//! installed one), `staged`, `prints` (the fingerprint cache blob), `runs` (runs, their steps
//! and tasks), `extensions`, `jobs` (the panel's background work), `accounts` (accounts,
//! sessions, failed logins).

pub use jobs::{JobKind, JobRecord, JobState};
pub use kept::KeptIn;
pub use passes::QueuedMail;
pub use runs::{HealthRecord, HookRecord, Run, RunStatus, Step, StepTime, TaskRecord, TaskState};
pub use staged::StagedInfo;

/// An enum stored as text: one place converts each value to and from its word (SQL, JSON, and
/// what the CLI prints), so no other code compares run states as strings.
macro_rules! text_enum {
    ($(#[$m:meta])* $vis:vis enum $name:ident { $($(#[$vm:meta])* $var:ident = $text:literal,)+ }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name { $($(#[$vm])* $var,)+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$var,)+];
            /// The stored word.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$var => $text,)+ }
            }
            /// The value of a stored word.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$var),)+ _ => None }
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).ok_or_else(|| serde::de::Error::custom(format!(
                    "unknown {} {s:?}", stringify!($name))))
            }
        }
        impl rusqlite::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(self.as_str().into())
            }
        }
        impl rusqlite::types::FromSql for $name {
            fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
                let s = v.as_str()?;
                Self::parse(s).ok_or_else(|| rusqlite::types::FromSqlError::Other(
                    format!("unknown {} {s:?} in state.db", stringify!($name)).into()))
            }
        }
    };
}

mod accounts;
mod extensions;
mod jobs;
mod journal;
mod kept;
mod manifests;
mod nonces;
mod passes;
mod prints;
mod runs;
mod staged;

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension};

use crate::base::error::{DbContext, IoContext, Result};

/// Bumped whenever SCHEMA changes (its statements are idempotent).
const SCHEMA_VERSION: i64 = 7;

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
CREATE TABLE IF NOT EXISTS hooks(run_id INTEGER NOT NULL, seq INTEGER NOT NULL, command TEXT NOT NULL,
    exit_code INTEGER, output TEXT NOT NULL, ms INTEGER NOT NULL, PRIMARY KEY(run_id, seq));
CREATE TABLE IF NOT EXISTS health(run_id INTEGER PRIMARY KEY, url TEXT NOT NULL, status INTEGER,
    ok INTEGER NOT NULL, detail TEXT NOT NULL, ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS passes(id INTEGER PRIMARY KEY, at TEXT NOT NULL, decision TEXT NOT NULL,
    data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS mail_queue(id INTEGER PRIMARY KEY, created_at TEXT NOT NULL, subject TEXT NOT NULL,
    body TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT);
CREATE TABLE IF NOT EXISTS notify_queue(id INTEGER PRIMARY KEY, created_at TEXT NOT NULL, url TEXT NOT NULL,
    body TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT);
CREATE TABLE IF NOT EXISTS report_queue(id INTEGER PRIMARY KEY, created_at TEXT NOT NULL, body TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT);
CREATE TABLE IF NOT EXISTS db_journal(run_id INTEGER NOT NULL, part TEXT NOT NULL, seq INTEGER NOT NULL,
    sql TEXT NOT NULL, state TEXT NOT NULL, at TEXT NOT NULL, PRIMARY KEY(run_id, part, seq));
CREATE TABLE IF NOT EXISTS jobs(id INTEGER PRIMARY KEY, kind TEXT NOT NULL, state TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '', started_at TEXT NOT NULL, finished_at TEXT);
";

/// An open state store. The connection stays inside this module: each table's queries live
/// in the file of this folder that owns the table, behind typed methods.
pub struct State {
    conn: Connection,
    path: PathBuf,
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
            conn.execute_batch(crate::base::accounts::ACCOUNT_TABLES)
                .db(path)?;
            conn.execute_batch(crate::base::nonces::NONCE_TABLE)
                .db(path)?;
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

    /// Run `f` in one transaction: many small writes (marks of verified files) commit together
    /// instead of one fsync each. Rolled back if `f` fails.
    pub fn in_transaction<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let tx = self.conn.unchecked_transaction().db(&self.path)?;
        let r = f()?;
        tx.commit().db(&self.path)?;
        Ok(r)
    }

    /// Commit without waiting for the disk from now on, for this connection: for work whose
    /// records only save time when kept (staging's verified-file marks: losing the last of
    /// them to a power cut costs a re-hash).
    pub fn relax_durability(&self) -> Result<()> {
        self.conn
            .execute_batch("PRAGMA synchronous=NORMAL")
            .db(&self.path)
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

    /// Forget the documents kept for conditional requests; returns how many were kept.
    pub fn clear_http_cache(&self) -> Result<usize> {
        self.conn
            .execute("DELETE FROM meta WHERE key LIKE 'http\\_%' ESCAPE '\\'", [])
            .db(&self.path)
    }

    /// Remove a meta value.
    pub fn del_meta(&self, key: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM meta WHERE key = ?1", [key])
            .db(&self.path)?;
        Ok(())
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::documents::manifest::{Md5, Sha256, VerifiedManifest};

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
        use crate::documents::manifest::{
            FORMAT, FileEntry, Manifest, RelPath, SecretKey, to_bytes,
        };
        let dir = tempfile::tempdir().unwrap();
        let st = State::open(&dir.path().join("state.db")).unwrap();
        let k = SecretKey::generate().unwrap();
        let files = (0..5000)
            .map(|i| FileEntry {
                path: RelPath::parse(&format!("d{}/f{i:05}.php", i % 9)).unwrap(),
                size: i,
                md5: Md5([i as u8; 16]),
                sha256: Sha256([(i / 7) as u8; 32]),
                exec: false,
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
            urgent: false,
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
}
