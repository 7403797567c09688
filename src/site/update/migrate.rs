//! The database steps of a run, whatever the engine: the copy taken before anything changes,
//! the schema statements of each phase (journalled in state.db), and the marks that later tell
//! a rollback whether anyone but upkeep wrote to the database.
//!
//! A server's copy (`mysqldump`, `pg_dump`) is taken with the site still open, after approval:
//! it is slow work, kept out of the closed window. Marks are taken right before it, when the
//! gate closes and before it reopens; between the first two only visitors write, between the
//! last two only upkeep (the closed-phase statements and the tasks), after the last visitors
//! again. SQLite's copy takes milliseconds: it is taken closed, and one mark at reopen does.

use std::path::{Path, PathBuf};

use crate::base::crash;
use crate::base::error::{Error, IoContext, Result};
use crate::site::config::Instance;
use crate::site::database::{self, Engine, Journal, Phase, Progress, SiteDatabase, Statement};
use crate::site::state::{Run, State};

/// The journal of one part of a run, in state.db.
pub struct StateJournal<'a> {
    state: &'a State,
    run: i64,
    part: String,
}

impl<'a> StateJournal<'a> {
    /// The journal of `part` (`schema:open`, `schema:closed`, `task:NAME`) in run `run`.
    pub fn new(state: &'a State, run: i64, part: impl Into<String>) -> Self {
        StateJournal {
            state,
            run,
            part: part.into(),
        }
    }
}

impl Journal for StateJournal<'_> {
    fn get(&self, seq: usize) -> Result<Option<Progress>> {
        Ok(
            match self
                .state
                .journal_get(self.run, &self.part, seq as i64)?
                .as_deref()
            {
                Some("done") => Some(Progress::Done),
                Some(_) => Some(Progress::Started),
                None => None,
            },
        )
    }
    fn set(&mut self, seq: usize, sql: &str, p: Progress) -> Result<()> {
        let word = match p {
            Progress::Started => "started",
            Progress::Done => "done",
        };
        self.state
            .journal_set(self.run, &self.part, seq as i64, sql, word)?;
        crash::point(&format!("{}:{seq}:{word}", self.part));
        Ok(())
    }
}

/// The journal part of a phase's schema statements.
pub fn part(phase: Phase) -> &'static str {
    match phase {
        Phase::Open => "schema:open",
        Phase::Closed => "schema:closed",
    }
}

/// Where a mark is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkPoint {
    /// Right before a server's copy is taken.
    Backup,
    /// When the gate has closed.
    Close,
    /// Before the gate reopens, the run's own changes done.
    Reopen,
}

/// Where state.db keeps a mark of run `run`.
pub fn mark_key(run: i64, at: MarkPoint) -> String {
    match at {
        MarkPoint::Backup => format!("db_mark_backup:{run}"),
        MarkPoint::Close => format!("db_mark_close:{run}"),
        MarkPoint::Reopen => format!("db_mark:{run}"),
    }
}

/// Take the mark of `run` at `at`, once: a resumed step keeps the first (a gate opened by
/// hand meanwhile lets writes in that a second mark would hide).
pub fn take_mark(db: &mut dyn SiteDatabase, state: &State, run: i64, at: MarkPoint) -> Result<()> {
    let key = mark_key(run, at);
    if state.meta(&key)?.is_none() {
        let m = db.mark()?;
        state.set_meta(&key, &m.to_string())?;
    }
    Ok(())
}

/// The mark of `run` at `at`, if one was taken.
pub fn load_mark(state: &State, run: i64, at: MarkPoint) -> Result<Option<serde_json::Value>> {
    state
        .meta(&mark_key(run, at))?
        .map(|m| {
            serde_json::from_str(&m)
                .map_err(|e| Error::msg(format!("the database mark {:?} of run {run}: {e}", at)))
        })
        .transpose()
}

/// Write the copy of `db` to `.upkeep/backups/NAME` whole or not at all (a crash leaves a
/// `.partial` file, never a copy that looks complete), readable by its owner only.
pub fn copy_to(inst: &Instance, db: &mut dyn SiteDatabase, name: &str) -> Result<PathBuf> {
    let dir = inst.own_dir(".upkeep/backups")?;
    let to = dir.join(name);
    let part = dir.join(format!("{name}.partial"));
    let _ = std::fs::remove_file(&part);
    db.backup(&part)?;
    database::private(&part)?;
    std::fs::rename(&part, &to).ctx("rename", &part)?;
    crate::base::fsutil::sync_dir(&dir)?;
    Ok(to)
}

/// The backup step: a server's copy, taken with the site open (SQLite's is taken closed, in
/// the migrate step).
pub fn backup_step(inst: &Instance, state: &State, run: &Run) -> Result<()> {
    let mut db = inst.database()?;
    if db.engine() == Engine::Sqlite || run.db_backup.is_some() {
        return Ok(());
    }
    take_mark(db.as_mut(), state, run.id, MarkPoint::Backup)?;
    let name = db.backup_name(run.id);
    let copy = copy_to(inst, db.as_mut(), &name)?;
    crash::point("backup:copied");
    state.set_db_backup(run.id, &copy.display().to_string())
}

/// Apply the statements of `phase` from the approved plan, each journalled. A statement the
/// journal shows begun but not done (the runner died in it) is asked of the server: if a
/// fresh plan no longer needs it, it took effect.
pub fn schema_step(
    inst: &Instance,
    state: &State,
    run: &Run,
    phase: Phase,
    fresh_plan: &dyn Fn(&mut dyn SiteDatabase) -> Result<database::SchemaPlan>,
) -> Result<()> {
    let statements = run.plan.schema.of(phase);
    if statements.is_empty() {
        return Ok(());
    }
    let mut db = inst.database()?;
    let mut journal = StateJournal::new(state, run.id, part(phase));
    let begun: Vec<usize> = (0..statements.len())
        .filter(|i| matches!(journal.get(*i), Ok(Some(Progress::Started))))
        .collect();
    if !begun.is_empty() {
        let now = fresh_plan(db.as_mut())?;
        for i in begun {
            if !now.statements.iter().any(|s| s.sql == statements[i].sql) {
                journal.set(i, &statements[i].sql, Progress::Done)?;
            }
        }
    }
    db.apply(&statements, &mut journal)
}

/// The schema statements run `run` applied (or began), newest first: what a rollback takes
/// back with their undo.
pub fn applied(state: &State, run: &Run) -> Result<Vec<Statement>> {
    let mut out = Vec::new();
    for phase in [Phase::Open, Phase::Closed] {
        let statements = run.plan.schema.of(phase);
        for e in state.journal(run.id, part(phase))? {
            if let Some(s) = statements.get(e.seq as usize) {
                out.push(s.clone());
            }
        }
    }
    out.reverse();
    Ok(out)
}

/// Remove an SQLite database file and its companions (a rollback of the run that created it).
pub fn remove_sqlite(db: &Path) {
    for p in [
        db.to_path_buf(),
        PathBuf::from(format!("{}-wal", db.display())),
        PathBuf::from(format!("{}-shm", db.display())),
    ] {
        let _ = std::fs::remove_file(p);
    }
}
