//! Whether the site database was written after a run reopened the site: what decides if a
//! rollback may put back the copy taken before the migration (nothing would be lost) or must
//! keep the database as it is (a post, an order, a visitor's comment would be lost).
//!
//! SQLite: when the run's own changes are done (migrate and the tasks), while the site is still
//! closed, the write-ahead log is checkpointed and truncated and the database file's
//! modification time is set one second into the past; then the file and its `-wal` are
//! stat-ed. Any later commit changes one of them: the log grows from nothing, or the file is
//! written and its time moves to now (the time set into the past is what makes a commit in the
//! same tick of the kernel's coarse clock visible). A read never does. Its cost is one
//! checkpoint and two `stat`s, whatever the database's size.

use std::path::{Path, PathBuf};

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::base::error::{DbContext, Result};

/// One file as `stat` sees it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Stat {
    size: u64,
    mtime_ns: i64,
    ino: u64,
}

fn stat(p: &Path) -> Option<Stat> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).ok()?;
    Some(Stat {
        size: m.len(),
        mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        ino: m.ino(),
    })
}

fn wal(db: &Path) -> PathBuf {
    PathBuf::from(format!("{}-wal", db.display()))
}

/// The database as a run left it at reopen.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Mark {
    db: Option<Stat>,
    wal: Option<Stat>,
    /// Each table's largest rowid then (`None`: empty, or a table WITHOUT ROWID): what tells
    /// the rows added since, at the cost of one index lookup per table.
    #[serde(default)]
    tables: Vec<(String, Option<i64>)>,
}

/// Take the mark of `db` (checkpointing its log first, so that only new commits move it).
pub fn mark(db: &Path) -> Result<Mark> {
    let mut tables = Vec::new();
    if db.exists() {
        let c = Connection::open(db).db(db)?;
        for t in table_names(&c, db)? {
            let top = c
                .query_row(&format!("SELECT max(rowid) FROM {}", quoted(&t)), [], |r| {
                    r.get(0)
                })
                .ok()
                .flatten();
            tables.push((t, top));
        }
        // A database in rollback-journal mode answers this with nothing to do.
        let _ = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        drop(c);
        // Without the right to set it (a file of another user), the size and the coarse time
        // still tell most commits; never a reason to fail the run.
        if let Ok(f) = std::fs::OpenOptions::new().write(true).open(db) {
            let past = std::time::SystemTime::now() - std::time::Duration::from_secs(1);
            let _ = f.set_times(std::fs::FileTimes::new().set_modified(past));
        }
    }
    Ok(Mark {
        db: stat(db),
        wal: stat(&wal(db)),
        tables,
    })
}

/// Whether the database changed from mark `a` to mark `b`.
pub fn between(a: &Mark, b: &Mark) -> bool {
    // An empty log that came or went is no write (a connection opening or closing it).
    let empty = |s: Option<Stat>| s.is_none_or(|s| s.size == 0);
    let wal_same = b.wal == a.wal || (empty(b.wal) && empty(a.wal));
    !(b.db == a.db && wal_same)
}

/// `None` when `db` is as `m` recorded it, else when it last changed (RFC 3339).
pub fn written_since(db: &Path, m: &Mark) -> Option<String> {
    let now = Mark {
        db: stat(db),
        wal: stat(&wal(db)),
        tables: Vec::new(),
    };
    if !between(m, &now) {
        return None;
    }
    let newest = [now.db, now.wal]
        .into_iter()
        .flatten()
        .map(|s| s.mtime_ns)
        .max()
        .unwrap_or_default();
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(newest.max(0) as u64);
    Some(humantime::format_rfc3339_seconds(t).to_string())
}

/// The rows added to `db` since `m`, table by table ("pages: 1 row added"), and the tables
/// created since: what restoring the copy taken before the update would discard beyond the
/// update's own changes. Rows changed or deleted in place are not counted (the mark says
/// only that there were writes).
pub fn changes(db: &Path, m: &Mark) -> Result<Vec<String>> {
    let c = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).db(db)?;
    let mut out = Vec::new();
    for t in table_names(&c, db)? {
        let q = quoted(&t);
        let added: Option<i64> = match m.tables.iter().find(|(name, _)| *name == t) {
            None => c
                .query_row(&format!("SELECT count(*) FROM {q}"), [], |r| r.get(0))
                .ok(),
            Some((_, top)) => c
                .query_row(
                    &format!("SELECT count(*) FROM {q} WHERE rowid > ?1"),
                    [top.unwrap_or(0)],
                    |r| r.get(0),
                )
                .ok(),
        };
        let created = !m.tables.iter().any(|(name, _)| *name == t);
        match (created, added) {
            (true, n) => out.push(format!(
                "{t}: a table created since, {}",
                rows(n.unwrap_or(0))
            )),
            (false, Some(n)) if n > 0 => out.push(format!("{t}: {} added", rows(n))),
            _ => {}
        }
    }
    Ok(out)
}

fn rows(n: i64) -> String {
    match n {
        1 => "1 row".into(),
        n => format!("{n} rows"),
    }
}

fn quoted(t: &str) -> String {
    format!("\"{}\"", t.replace('"', "\"\""))
}

fn table_names(c: &Connection, db: &Path) -> Result<Vec<String>> {
    let mut q = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .db(db)?;
    q.query_map([], |r| r.get::<_, String>(0))
        .db(db)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .db(db)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_is_no_write_and_a_commit_is() {
        for journal in ["WAL", "DELETE"] {
            let d = tempfile::tempdir().unwrap();
            let db = d.path().join("site.db");
            let c = Connection::open(&db).unwrap();
            c.query_row(&format!("PRAGMA journal_mode = {journal}"), [], |_| Ok(()))
                .unwrap();
            c.execute_batch("CREATE TABLE posts(t TEXT); INSERT INTO posts VALUES ('before');")
                .unwrap();
            drop(c);
            let m = mark(&db).unwrap();
            let c = Connection::open(&db).unwrap();
            let n: i64 = c
                .query_row("SELECT count(*) FROM posts", [], |r| r.get(0))
                .unwrap();
            assert_eq!(n, 1);
            drop(c);
            assert_eq!(written_since(&db, &m), None, "{journal}: a read");
            Connection::open(&db)
                .unwrap()
                .execute("INSERT INTO posts VALUES ('after the update')", [])
                .unwrap();
            assert!(written_since(&db, &m).is_some(), "{journal}: a commit");
        }
    }

    #[test]
    fn an_update_in_place_at_once_is_seen_and_added_rows_are_named() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("site.db");
        let c = Connection::open(&db).unwrap();
        c.execute_batch(
            "CREATE TABLE posts(t TEXT); INSERT INTO posts VALUES ('a');
             CREATE TABLE kv(k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID;",
        )
        .unwrap();
        drop(c);
        let m = mark(&db).unwrap();
        // The same size, right after the mark: only the time set into the past shows it.
        Connection::open(&db)
            .unwrap()
            .execute("UPDATE posts SET t = 'b'", [])
            .unwrap();
        assert!(written_since(&db, &m).is_some());
        assert_eq!(changes(&db, &m).unwrap(), Vec::<String>::new());
        Connection::open(&db)
            .unwrap()
            .execute_batch(
                "INSERT INTO posts VALUES ('c'); INSERT INTO posts VALUES ('d');
                 CREATE TABLE tags(t TEXT); INSERT INTO tags VALUES ('x');
                 INSERT INTO kv VALUES ('k', 'v');",
            )
            .unwrap();
        assert_eq!(
            changes(&db, &m).unwrap(),
            vec![
                "posts: 2 rows added".to_string(),
                "tags: a table created since, 1 row".to_string()
            ]
        );
    }
}
