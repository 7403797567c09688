//! The site database, whatever its engine: SQLite (a file), MariaDB/MySQL or PostgreSQL (a
//! server). Each engine answers the same questions for a run: what the declared schema adds
//! ([`SiteDatabase::plan`]), how to apply it a statement at a time, how to copy the database
//! before and put the copy back, whether it was written since a mark, and how to run an SQL
//! task with its done-mark.

pub mod ddl;
pub mod mysql;
pub mod postgres;
pub mod sqlite;
pub use crate::base::dburl as target;
pub mod tools;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::base::error::Result;
pub use target::{Engine, Target};

/// One piece of declared schema: where it comes from and its SQL.
pub struct Fragment {
    /// `schema.sql`, or an extension's fragment path.
    pub source: String,
    /// The DDL.
    pub sql: String,
}

/// The statements that bring a database to the declared schema, and what it has beyond it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SchemaPlan {
    /// The statements, in order: CREATE TABLE, ADD COLUMN, CREATE INDEX.
    pub statements: Vec<Statement>,
    /// Tables and columns in the database but not in the schema (reported, never dropped).
    pub extra: Vec<String>,
}

impl SchemaPlan {
    /// The statements of one phase.
    pub fn of(&self, phase: Phase) -> Vec<Statement> {
        self.statements
            .iter()
            .filter(|s| s.phase == phase)
            .cloned()
            .collect()
    }
}

/// When a statement of the plan runs.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// After approval, with the site still open: it does not break the code still running
    /// (an added table, a column with a default, an index built without blocking writes).
    Open,
    /// Between close and reopen.
    Closed,
}

impl Phase {
    /// When, in words.
    pub fn words(self) -> &'static str {
        match self {
            Phase::Open => "before the site closes",
            Phase::Closed => "while the site is closed",
        }
    }
}

impl Statement {
    /// The statement with its phase and lock words, one line for a plan.
    pub fn line(&self) -> String {
        match self.holds.as_str() {
            "" => self.sql.clone(),
            holds => format!("{}\n    -- {}; holds {holds}", self.sql, self.phase.words()),
        }
    }
}

/// One statement of a schema plan, with what it holds while it runs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(from = "StatementForm")]
pub struct Statement {
    /// The SQL, as it runs.
    pub sql: String,
    /// What it locks, in words ("no lock on existing tables", "rebuilds wp_posts, blocks
    /// writes").
    pub holds: String,
    /// When it runs.
    pub phase: Phase,
    /// The statement that takes it back (DROP TABLE, DROP COLUMN, DROP INDEX).
    pub undo: String,
}

/// A statement as state.db may hold it: runs recorded before statements carried their locks
/// and undo hold the SQL alone.
#[derive(Deserialize)]
#[serde(untagged)]
enum StatementForm {
    Full {
        sql: String,
        holds: String,
        phase: Phase,
        undo: String,
    },
    Sql(String),
}

impl From<StatementForm> for Statement {
    fn from(f: StatementForm) -> Self {
        match f {
            StatementForm::Full {
                sql,
                holds,
                phase,
                undo,
            } => Statement {
                sql,
                holds,
                phase,
                undo,
            },
            StatementForm::Sql(sql) => Statement {
                sql,
                holds: String::new(),
                phase: Phase::Closed,
                undo: String::new(),
            },
        }
    }
}

/// A write found after a mark.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// When, as far as the engine tells ("last at T"), or why it may have been ("perhaps: ...").
    pub when: String,
    /// What, table by table ("wp_posts: 1 row added").
    pub changes: Vec<String>,
}

/// What a journal knows of one statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Begun; it may or may not have taken effect (the server tells).
    Started,
    /// Took effect.
    Done,
}

/// Where a run records each statement before and after it runs (state.db), so that a crash
/// between two resumes at the next one and a rollback takes back exactly those that ran.
pub trait Journal {
    /// What is known of statement `seq`.
    fn get(&self, seq: usize) -> Result<Option<Progress>>;
    /// Record statement `seq`.
    fn set(&mut self, seq: usize, sql: &str, p: Progress) -> Result<()>;
}

/// An SQL task to run with its done-mark.
pub struct SqlTask<'a> {
    /// Its path below the root (`run_once/001-x.sql`).
    pub name: &'a str,
    /// The SHA-256 of its content (hex), kept with the mark.
    pub sha256: &'a str,
    /// The SQL.
    pub sql: &'a str,
    /// The run.
    pub run: i64,
}

/// The questions a run asks of its database.
pub trait SiteDatabase {
    /// Engine and address, for messages.
    fn describe(&self) -> String;
    /// The engine.
    fn engine(&self) -> Engine;
    /// Whether the database exists yet (SQLite: the file).
    fn exists(&mut self) -> Result<bool>;
    /// What the declared schema adds to the database, each statement with its phase, its
    /// lock words and its undo. Changes nothing in the site's database.
    fn plan(&mut self, fragments: &[Fragment]) -> Result<SchemaPlan>;
    /// Apply `statements` (the plan's, of one phase), journalled; statements the journal
    /// marks done are skipped.
    fn apply(&mut self, statements: &[Statement], journal: &mut dyn Journal) -> Result<()>;
    /// Take back one applied statement; nothing when it did not take effect.
    fn undo(&mut self, statement: &Statement) -> Result<()>;
    /// Copy the database to `to` (the engine's own tool), readable by its owner only.
    fn backup(&mut self, to: &Path) -> Result<()>;
    /// Put the copy at `from` back, exactly.
    fn restore(&mut self, from: &Path) -> Result<()>;
    /// The database's state now, to tell later whether it was written since.
    fn mark(&mut self) -> Result<serde_json::Value>;
    /// A write since `mark`, or `None`.
    fn written_since(&mut self, mark: &serde_json::Value) -> Result<Option<Written>>;
    /// Whether the database was written between two marks.
    fn written_between(&mut self, from: &serde_json::Value, to: &serde_json::Value)
    -> Result<bool>;
    /// The SHA-256 an SQL task had when it ran here, or `None` if it never did.
    fn task_done(&mut self, name: &str) -> Result<Option<String>>;
    /// Run an SQL task and record its done-mark (together, where the engine can).
    fn run_task(&mut self, task: &SqlTask<'_>, journal: &mut dyn Journal) -> Result<()>;
    /// Before anything changes: reachable, sound, the tools and the room for a copy there.
    fn check(&mut self, backups: &Path) -> Result<()>;
    /// The file name of run `run`'s copy (`run-N.db`, `run-N.sql`, `run-N.pgdump`).
    fn backup_name(&self, run: i64) -> String;
    /// How and when that copy is taken, for the plan.
    fn copied_how(&self) -> &'static str;
}

/// Make a copy of the database readable by its owner only: it holds what the site holds
/// (accounts, password hashes, visitors' data).
pub fn private(p: &Path) -> Result<()> {
    use crate::base::error::IoContext;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).ctx("chmod 0600", p)
}

/// Refuse, before anything changes, when the filesystem of `backups` has not room for a copy
/// of `bytes` (plus a margin).
pub fn room_for(backups: &Path, bytes: u64, what: &str) -> Result<()> {
    use crate::base::fsutil::{free_bytes, human_bytes};
    let mut at = backups.to_path_buf();
    while !at.exists() && at.pop() {}
    let free = free_bytes(&at)?;
    let need = bytes + bytes / 10 + (16 << 20);
    if free < need {
        return Err(crate::base::error::Error::refused(
            format!(
                "not enough free disk for the copy of the database taken before the update ({what}): {} free on {}, about {} needed",
                human_bytes(free),
                at.display(),
                human_bytes(need)
            ),
            format!(
                "free {} there (old copies in {} can go: `upkeep backup` lists them), then run the update again",
                human_bytes(need - free),
                backups.display()
            ),
        ));
    }
    Ok(())
}

/// How long a schema statement waits for a lock, and how often it tries again.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// The wait for one lock.
    pub lock_timeout: std::time::Duration,
    /// Attempts after the first.
    pub lock_retries: u32,
}

/// What one try of a schema statement gave.
pub(crate) enum Try {
    /// It ran.
    Done,
    /// It waited its lock timeout for a lock another connection holds; the words say how
    /// ("for a lock another connection holds on the table: ...").
    Locked(String),
    /// It failed otherwise: the server's words.
    Failed(String),
}

impl Settings {
    /// Run a schema statement with `run`, tried again with a growing pause (0.5 s, 1 s, ...)
    /// while another connection holds the lock it needs, `lock_retries` times; then a refusal
    /// that says where to look for the holder (`holders`: the engine's view of connections).
    pub(crate) fn with_lock_retries(
        &self,
        sql: &str,
        holders: &str,
        mut run: impl FnMut() -> Try,
    ) -> Result<()> {
        let mut pause = std::time::Duration::from_millis(500);
        let mut attempt = 0;
        loop {
            match run() {
                Try::Done => return Ok(()),
                Try::Locked(_) if attempt < self.lock_retries => {
                    std::thread::sleep(pause);
                    pause *= 2;
                    attempt += 1;
                }
                Try::Locked(how) => {
                    return Err(crate::base::error::Error::refused(
                        format!(
                            "{sql}\nwaited {} times {} s {how}",
                            attempt + 1,
                            self.lock_timeout.as_secs()
                        ),
                        format!(
                            "find the connection that holds it ({holders}), let it finish, then `upkeep resume`; or `upkeep rollback`"
                        ),
                    ));
                }
                Try::Failed(e) => {
                    return Err(crate::base::error::Error::refused(
                        format!("the statement failed:\n  {sql}\n  {e}"),
                        "fix the cause, then `upkeep resume` goes on from this statement; or `upkeep rollback` takes back those that ran",
                    ));
                }
            }
        }
    }
}

/// The site database at `target`, ready to be asked.
pub fn open(target: Target, settings: Settings) -> Result<Box<dyn SiteDatabase>> {
    Ok(match target {
        Target::Sqlite(p) => Box::new(sqlite::Sqlite::new(p)),
        Target::Mysql(s) => Box::new(mysql::Mysql::new(s, settings)),
        Target::Postgres(s) => Box::new(postgres::Postgres::new(s, settings)),
    })
}
