//! What the rollback's "written since the update?" costs on a large SQLite database: the mark
//! taken in the closed window (checkpoint, mtime, one rowid lookup per table), the comparison a
//! rollback makes, and the count of rows added it shows.
//!
//! `cargo run --release --example database [ROWS]` (1,000,000 by default, 20 tables).

use std::time::{Duration, Instant};

use upkeep::site::database::sqlite::written;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let rows: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("site.db");
    let c = rusqlite::Connection::open(&db).expect("open");
    c.execute_batch("PRAGMA journal_mode=WAL;").expect("wal");
    for t in 0..20 {
        c.execute_batch(&format!(
            "CREATE TABLE t{t}(id INTEGER PRIMARY KEY, body TEXT)"
        ))
        .expect("create");
    }
    c.execute_batch(&format!(
        "BEGIN; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < {rows}) INSERT INTO t0(body) SELECT hex(randomblob(50)) FROM n; COMMIT;"
    ))
    .expect("fill");
    let size = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
    let (mut marks, mut compares, mut counts) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..9 {
        // A migration's last commit still in the log, as at the end of a run.
        c.execute_batch(&format!("INSERT INTO t1(body) VALUES ('run {i}')"))
            .expect("insert");
        let t = Instant::now();
        let m = written::mark(&db).expect("mark");
        marks.push(t.elapsed());
        let t = Instant::now();
        assert!(written::written_since(&db, &m).is_none());
        compares.push(t.elapsed());
        c.execute_batch("INSERT INTO t0(body) VALUES ('a visitor')")
            .expect("insert");
        let t = Instant::now();
        let ch = written::changes(&db, &m).expect("changes");
        counts.push(t.elapsed());
        assert_eq!(ch, ["t0: 1 row added"]);
    }
    println!(
        "| {rows} rows, 20 tables, {} MB: mark at reopen | {:?} |",
        size / 1_000_000,
        median(marks)
    );
    println!("| written since? (at rollback) | {:?} |", median(compares));
    println!("| rows added, for the plan | {:?} |", median(counts));
}
