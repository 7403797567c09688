//! Long work runs on background threads, never inside an HTTP request, so that a closed browser,
//! a proxy timeout or a lost session never stops an update. Each job is recorded in state.db;
//! its live progress is shared in memory with the pages that show it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use crate::base::error::{Error, Result};
use crate::base::progress::Progress;
use crate::site::config::Instance;
use crate::site::state::{JobKind, JobState, State};

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
    /// What it does.
    pub kind: JobKind,
    /// Live counters.
    pub progress: Arc<Progress>,
    /// How it ended.
    pub outcome: Mutex<Outcome>,
    /// The newest run when the job started: a run job that failed with the same newest run
    /// never began its run.
    pub run_before: Option<i64>,
}

impl Job {
    /// How it stands now.
    pub fn outcome(&self) -> Outcome {
        self.outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
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

    /// The newest job of this process.
    pub fn newest(&self) -> Option<Arc<Job>> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .max_by_key(|j| j.id)
            .cloned()
    }

    /// Start `work` on a thread of its own.
    pub fn spawn<F>(&self, root: PathBuf, kind: JobKind, work: F) -> Result<i64>
    where
        F: FnOnce(&Instance, &Arc<Progress>) -> Result<String> + Send + 'static,
    {
        if let Some(j) = self.running() {
            return Err(Error::Busy(format!(
                "a {} job (number {}) is still running",
                j.kind, j.id
            )));
        }
        let state_db = Instance::state_db_of(&root);
        let state = State::open(&state_db)?;
        let id = state.insert_job(kind)?;
        let run_before = state.runs(1)?.first().map(|r| r.id);
        drop(state);
        let job = Arc::new(Job {
            id,
            kind,
            run_before,
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
                Ok(s) => (JobState::Done, s.clone(), Outcome::Done(s)),
                Err(e) => (
                    if matches!(e, Error::Cancelled(_)) {
                        JobState::Cancelled
                    } else {
                        JobState::Failed
                    },
                    e.to_string(),
                    Outcome::Failed(e.to_string(), e.hint()),
                ),
            };
            job.progress.finished.store(true, Ordering::Relaxed);
            if let Ok(state) = State::open(&state_db) {
                let _ = state.finish_job(id, st, &detail);
            }
            *job.outcome.lock().unwrap_or_else(|e| e.into_inner()) = outcome;
        });
        Ok(id)
    }
}
