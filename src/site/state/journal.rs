//! The database journal of runs (`db_journal`): each schema statement and each statement of
//! an SQL task, recorded before it runs and after it took effect, so a crash between two
//! resumes at the next and a rollback takes back exactly those that ran.

use rusqlite::{OptionalExtension, params};

use super::State;
use crate::base::clock::now_text;
use crate::base::error::{DbContext, Result};

/// One statement as the journal holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its place in its part.
    pub seq: i64,
    /// Its SQL.
    pub sql: String,
    /// `started` or `done`.
    pub state: String,
}

impl State {
    /// What the journal of run `run` knows of statement `seq` of `part` (`schema:open`,
    /// `schema:closed`, `task:run_once/x.sql`).
    pub fn journal_get(&self, run: i64, part: &str, seq: i64) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT state FROM db_journal WHERE run_id = ?1 AND part = ?2 AND seq = ?3",
                params![run, part, seq],
                |r| r.get(0),
            )
            .optional()
            .db(&self.path)
    }

    /// Record statement `seq` of `part` as `state` (durably: state.db syncs every commit).
    pub fn journal_set(
        &self,
        run: i64,
        part: &str,
        seq: i64,
        sql: &str,
        state: &str,
    ) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO db_journal(run_id, part, seq, sql, state, at) VALUES(?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(run_id, part, seq) DO UPDATE SET state = ?5, at = ?6",
                params![run, part, seq, sql, state, now_text()],
            )
            .db(&self.path)?;
        Ok(())
    }

    /// The statements of `part` in run `run`, in order.
    pub fn journal(&self, run: i64, part: &str) -> Result<Vec<Entry>> {
        let mut st = self
            .conn
            .prepare("SELECT seq, sql, state FROM db_journal WHERE run_id = ?1 AND part = ?2 ORDER BY seq")
            .db(&self.path)?;
        st.query_map(params![run, part], |r| {
            Ok(Entry {
                seq: r.get(0)?,
                sql: r.get(1)?,
                state: r.get(2)?,
            })
        })
        .db(&self.path)?
        .collect::<rusqlite::Result<_>>()
        .db(&self.path)
    }
}
