//! Long work runs on background threads, never inside an HTTP request, so that a closed browser,
//! a proxy timeout or a lost session never stops an update. Each job is recorded in state.db;
//! its live progress is shared in memory with the pages that show it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use rusqlite::params;

use crate::config::Instance;
use crate::error::{DbContext, Error, Result};
use crate::progress::Progress;
use crate::state::{State, now_text};

/// How a job ended.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Still running.
    Running,
    /// Finished: a one-line summary.
    Done(String),
    /// Failed: the error and the next action.
    Failed(String, Option<String>),
}

/// One background job.
pub struct Job {
    /// Its number (a row of the jobs table).
    pub id: i64,
    /// check, stage, update, resume or rollback.
    pub kind: String,
    /// Live counters.
    pub progress: Arc<Progress>,
    /// How it ended.
    pub outcome: Mutex<Outcome>,
}

/// The jobs of this server process.
#[derive(Default)]
pub struct Jobs {
    map: Mutex<HashMap<i64, Arc<Job>>>,
}

impl Jobs {
    /// A job of this process.
    pub fn get(&self, id: i64) -> Option<Arc<Job>> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    /// The job still running, if any (one at a time, like runs).
    pub fn running(&self) -> Option<Arc<Job>> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .find(|j| {
                matches!(
                    *j.outcome.lock().unwrap_or_else(|e| e.into_inner()),
                    Outcome::Running
                )
            })
            .cloned()
    }

    /// Start `work` on a thread of its own.
    pub fn spawn<F>(&self, root: PathBuf, kind: &str, work: F) -> Result<i64>
    where
        F: FnOnce(&Instance, &Arc<Progress>) -> Result<String> + Send + 'static,
    {
        if let Some(j) = self.running() {
            return Err(Error::Busy(format!(
                "a {} job (number {}) is still running",
                j.kind, j.id
            )));
        }
        let state = State::open(&root.join(".upkeep/state.db"))?;
        state
            .conn
            .execute(
                "INSERT INTO jobs(kind, state, started_at) VALUES(?1, 'running', ?2)",
                params![kind, now_text()],
            )
            .db(state.path())?;
        let id = state.conn.last_insert_rowid();
        let job = Arc::new(Job {
            id,
            kind: kind.to_string(),
            progress: Arc::new(Progress::default()),
            outcome: Mutex::new(Outcome::Running),
        });
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, job.clone());
        std::thread::spawn(move || {
            let r = Instance::open(&root).and_then(|inst| work(&inst, &job.progress));
            let (st, detail, outcome) = match r {
                Ok(s) => ("done", s.clone(), Outcome::Done(s)),
                Err(e) => (
                    "failed",
                    e.to_string(),
                    Outcome::Failed(e.to_string(), e.hint()),
                ),
            };
            job.progress.finished.store(true, Ordering::Relaxed);
            if let Ok(state) = State::open(&root.join(".upkeep/state.db")) {
                let _ = state.conn.execute(
                    "UPDATE jobs SET state = ?2, detail = ?3, finished_at = ?4 WHERE id = ?1",
                    params![id, st, detail, now_text()],
                );
            }
            *job.outcome.lock().unwrap_or_else(|e| e.into_inner()) = outcome;
        });
        Ok(id)
    }
}

/// Jobs recorded as running by a server that is gone: they were interrupted.
pub fn mark_interrupted(state: &State) -> Result<()> {
    state
        .conn
        .execute(
            "UPDATE jobs SET state = 'interrupted', finished_at = ?1 WHERE state = 'running'",
            [now_text()],
        )
        .db(state.path())?;
    Ok(())
}

/// A job as recorded (for jobs of an earlier server process).
pub fn recorded(state: &State, id: i64) -> Result<Option<(String, String, String)>> {
    use rusqlite::OptionalExtension;
    state
        .conn
        .query_row(
            "SELECT kind, state, detail FROM jobs WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .db(state.path())
}
