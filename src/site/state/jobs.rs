//! The panel's background jobs: the table `jobs`.

use rusqlite::{OptionalExtension, params};

use super::State;
use crate::base::clock::now_text;
use crate::base::error::{DbContext, Result};

text_enum! {
    /// What a background job does.
    pub enum JobKind {
        /// Compare with the reference.
        Check = "check",
        /// Fill staging.
        Stage = "stage",
        /// Apply the staged release.
        Update = "update",
        /// Continue an unfinished run.
        Resume = "resume",
        /// Undo the last run.
        Rollback = "rollback",
        /// Finish an update made by copying the release over the tree.
        Finish = "finish",
    }
}

impl JobKind {
    /// Whether the job drives a run (its page is the run page).
    pub fn drives_run(self) -> bool {
        matches!(
            self,
            JobKind::Update | JobKind::Resume | JobKind::Rollback | JobKind::Finish
        )
    }
}

text_enum! {
    /// How a job stands.
    pub enum JobState {
        /// Working.
        Running = "running",
        /// Finished.
        Done = "done",
        /// Failed.
        Failed = "failed",
        /// Cancelled by the operator.
        Cancelled = "cancelled",
        /// The server stopped while it ran.
        Interrupted = "interrupted",
    }
}

/// A job as recorded.
#[derive(Clone, Debug)]
pub struct JobRecord {
    /// What it did.
    pub kind: JobKind,
    /// How it stands.
    pub state: JobState,
    /// Its summary or error.
    pub detail: String,
}

impl State {
    /// Record a job that starts now.
    pub fn insert_job(&self, kind: JobKind) -> Result<i64> {
        self.conn
            .execute(
                "INSERT INTO jobs(kind, state, started_at) VALUES(?1, ?2, ?3)",
                params![kind, JobState::Running, now_text()],
            )
            .db(&self.path)?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Record how a job ended.
    pub fn finish_job(&self, id: i64, state: JobState, detail: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE jobs SET state = ?2, detail = ?3, finished_at = ?4 WHERE id = ?1",
                params![id, state, detail, now_text()],
            )
            .db(&self.path)?;
        Ok(())
    }

    /// Jobs recorded as running by a server that is gone were interrupted.
    pub fn interrupt_jobs(&self) -> Result<()> {
        self.conn
            .execute(
                "UPDATE jobs SET state = ?1, finished_at = ?2 WHERE state = ?3",
                params![JobState::Interrupted, now_text(), JobState::Running],
            )
            .db(&self.path)?;
        Ok(())
    }

    /// A recorded job.
    pub fn job(&self, id: i64) -> Result<Option<JobRecord>> {
        self.conn
            .query_row(
                "SELECT kind, state, detail FROM jobs WHERE id = ?1",
                [id],
                |r| {
                    Ok(JobRecord {
                        kind: r.get(0)?,
                        state: r.get(1)?,
                        detail: r.get(2)?,
                    })
                },
            )
            .optional()
            .db(&self.path)
    }
}
