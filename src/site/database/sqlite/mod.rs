//! SQLite: the site database as a file. Its copy is taken with SQLite's backup API in the
//! closed window (a few milliseconds for most sites, and no visitor can write meanwhile), its
//! schema changes run in one transaction, an SQL task commits with its done-mark.

pub mod schema;
pub mod written;

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use super::{
    Engine, Fragment, Journal, Progress, SchemaPlan, SiteDatabase, SqlTask, Statement, Written,
};
use crate::base::clock::now_text;
use crate::base::error::{DbContext, Error, Result};

/// The table where SQL tasks' done-marks live, beside the data they changed.
pub const OWN_TABLE: &str = "upkeep_run_once";

/// An SQLite site database.
pub struct Sqlite {
    path: PathBuf,
}

impl Sqlite {
    /// The database at `path` (created only by what writes to it).
    pub fn new(path: PathBuf) -> Self {
        Sqlite { path }
    }
}

/// Create upkeep's one table in a site database (the README documents it).
pub fn ensure_own_table(c: &Connection, db: &Path) -> Result<()> {
    c.execute_batch(&format!("CREATE TABLE IF NOT EXISTS {OWN_TABLE}(name TEXT PRIMARY KEY, sha256 TEXT NOT NULL, run_id INTEGER, done_at TEXT NOT NULL)")).db(db)
}

impl SiteDatabase for Sqlite {
    fn describe(&self) -> String {
        format!("SQLite {}", self.path.display())
    }
    fn engine(&self) -> Engine {
        Engine::Sqlite
    }
    fn exists(&mut self) -> Result<bool> {
        Ok(self.path.exists())
    }
    fn plan(&mut self, fragments: &[Fragment]) -> Result<SchemaPlan> {
        schema::plan(&self.path, fragments)
    }
    fn apply(&mut self, statements: &[Statement], journal: &mut dyn Journal) -> Result<()> {
        if statements.is_empty() {
            return Ok(());
        }
        if let Some(parent) = self.path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::msg(format!("create {}: {e}", parent.display())))?;
        }
        // One transaction: all of it or none. Marked begun before and done after, so that a
        // crash between the commit and the marks is resolved by asking the database.
        let pending: Vec<usize> = (0..statements.len())
            .filter(|i| !matches!(journal.get(*i), Ok(Some(Progress::Done))))
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        for &i in &pending {
            journal.set(i, &statements[i].sql, Progress::Started)?;
        }
        let todo: Vec<Statement> = pending.iter().map(|&i| statements[i].clone()).collect();
        schema::apply(&self.path, &todo)?;
        for &i in &pending {
            journal.set(i, &statements[i].sql, Progress::Done)?;
        }
        Ok(())
    }
    fn undo(&mut self, statement: &Statement) -> Result<()> {
        let c = Connection::open(&self.path).db(&self.path)?;
        match c.execute_batch(&statement.undo) {
            Ok(()) => Ok(()),
            // A column already gone (the statement never took effect) is what undo wants.
            Err(e) if e.to_string().contains("no such column") => Ok(()),
            Err(e) => Err(e).db(&self.path),
        }
    }
    fn backup(&mut self, to: &Path) -> Result<()> {
        schema::backup(&self.path, to)?;
        super::private(to)
    }
    fn restore(&mut self, from: &Path) -> Result<()> {
        schema::restore(from, &self.path)
    }
    fn mark(&mut self) -> Result<serde_json::Value> {
        let m = written::mark(&self.path)?;
        Ok(serde_json::to_value(m).expect("serialises"))
    }
    fn written_since(&mut self, mark: &serde_json::Value) -> Result<Option<Written>> {
        let m: written::Mark = serde_json::from_value(mark.clone())
            .map_err(|e| Error::msg(format!("a database mark in state.db: {e}")))?;
        Ok(written::written_since(&self.path, &m).map(|when| Written {
            when: format!("last at {when}"),
            changes: match self.path.exists() {
                true => written::changes(&self.path, &m).unwrap_or_default(),
                false => vec!["the database is gone".into()],
            },
        }))
    }
    fn written_between(
        &mut self,
        from: &serde_json::Value,
        to: &serde_json::Value,
    ) -> Result<bool> {
        let parse = |v: &serde_json::Value| -> Result<written::Mark> {
            serde_json::from_value(v.clone())
                .map_err(|e| Error::msg(format!("a database mark in state.db: {e}")))
        };
        Ok(written::between(&parse(from)?, &parse(to)?))
    }
    fn task_done(&mut self, name: &str) -> Result<Option<String>> {
        if !self.path.exists() {
            return Ok(None);
        }
        let c = Connection::open(&self.path).db(&self.path)?;
        let has: bool = c
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [OWN_TABLE],
                |r| r.get(0),
            )
            .db(&self.path)?;
        if !has {
            return Ok(None);
        }
        c.query_row(
            &format!("SELECT sha256 FROM {OWN_TABLE} WHERE name = ?1"),
            [name],
            |r| r.get(0),
        )
        .optional()
        .db(&self.path)
    }
    fn run_task(&mut self, task: &SqlTask<'_>, _journal: &mut dyn Journal) -> Result<()> {
        let db = &self.path;
        let mut c = Connection::open(db).db(db)?;
        ensure_own_table(&c, db)?;
        let tx = c.transaction().db(db)?;
        if let Err(e) = tx.execute_batch(task.sql) {
            return Err(Error::refused(
                format!(
                    "run_once task {} failed: {e}\nits changes to the database were undone",
                    task.name
                ),
                "the site stays closed: fix the cause, then `upkeep resume` runs it again (or `upkeep rollback`)",
            ));
        }
        tx.execute(
            &format!("INSERT OR REPLACE INTO {OWN_TABLE}(name, sha256, run_id, done_at) VALUES(?1, ?2, ?3, ?4)"),
            params![task.name, task.sha256, task.run, now_text()],
        )
        .db(db)?;
        tx.commit().db(db)
    }
    fn check(&mut self, backups: &Path) -> Result<()> {
        schema::integrity(&self.path)?;
        let size = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        super::room_for(backups, size, &format!("{} bytes", size))
    }
    fn backup_name(&self, run: i64) -> String {
        format!("run-{run}.db")
    }
    fn copied_how(&self) -> &'static str {
        "with SQLite's backup API once the site is closed"
    }
}
