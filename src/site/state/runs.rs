//! Runs, their step timings and their tasks: the tables `runs`, `run_steps` and `tasks`.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::State;
use crate::base::clock::{now_ms, now_text};
use crate::base::error::{DbContext, Result};
use crate::documents::manifest::RelPath;
use crate::site::plan::Plan;

text_enum! {
    /// A step of a run after review, in order, and `Done` once it reopened.
    pub enum Step {
        /// A server database is copied with its engine's tool (the site still open).
        Backup = "backup",
        /// The schema changes that do not break the running code (site still open).
        Schema = "schema",
        /// The gate closes.
        Close = "close",
        /// Staged files take the place of live ones.
        Swap = "swap",
        /// Extensions are found in the new tree.
        Scan = "scan",
        /// The site database is brought to the release's schema.
        Migrate = "migrate",
        /// The release's run_once tasks run.
        RunOnce = "run_once",
        /// The restart hooks (`auto.after`: reload php-fpm, clear a cache) run, the site still
        /// closed, so that the first request after the reopen meets the new code and not what
        /// a cache (PHP's opcache) kept of the old.
        Hooks = "hooks",
        /// The gate opens and the new release is recorded as installed.
        Reopen = "reopen",
        /// The health check (`[auto.health]`); a failure rolls the run back.
        Health = "health",
        /// Nothing left.
        Done = "done",
    }
}

impl Step {
    /// The step after this one.
    pub fn next(self) -> Step {
        let all = Step::ALL;
        let i = all.iter().position(|s| *s == self).unwrap_or(all.len() - 1);
        all.get(i + 1).copied().unwrap_or(Step::Done)
    }

    /// Whether a run at this step has finished its swap (the whole new tree is live).
    pub fn swapped(self) -> bool {
        !matches!(self, Step::Backup | Step::Schema | Step::Close | Step::Swap)
    }

    /// Whether a run at this step has closed the site (or would have, had it got there).
    pub fn closed(self) -> bool {
        !matches!(self, Step::Backup | Step::Schema | Step::Close)
    }
}

text_enum! {
    /// Where a run stands.
    pub enum RunStatus {
        /// Steps are running (or the process running them died).
        Running = "running",
        /// A step failed: `resume` or `rollback` decides.
        Failed = "failed",
        /// Finished: the new release is live and the site open.
        Done = "done",
        /// Being undone (or the process undoing it died).
        RollingBack = "rolling_back",
        /// Undone: the previous release is live again.
        RolledBack = "rolled_back",
    }
}

impl RunStatus {
    /// The states of a run that still needs `resume` or `rollback`.
    pub const UNFINISHED: [RunStatus; 3] = [
        RunStatus::Running,
        RunStatus::Failed,
        RunStatus::RollingBack,
    ];

    /// Whether the run needs `resume` or `rollback` before anything else.
    pub fn unfinished(self) -> bool {
        Self::UNFINISHED.contains(&self)
    }
}

text_enum! {
    /// Where a run_once task stands within a run.
    pub enum TaskState {
        /// A shell task was started; nobody saw it end.
        Started = "started",
        /// It exited 0; its `.done` rename may still be missing.
        Succeeded = "succeeded",
        /// It ran and is marked `.done`.
        Done = "done",
        /// It failed.
        Failed = "failed",
        /// The operator marked it done without running it again.
        Skipped = "skipped",
    }
}

impl TaskState {
    /// Whether the task's work is behind it (so a rollback must undo its `.done` mark).
    pub fn completed(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Done | TaskState::Skipped
        )
    }
}

/// One run, as recorded.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    /// Its number.
    pub id: i64,
    /// Release before.
    pub from: Option<String>,
    /// Release after.
    pub to: String,
    /// The step it is at (or stopped at).
    pub step: Step,
    /// Where it stands.
    pub status: RunStatus,
    /// When it started.
    pub started_at: String,
    /// When it ended.
    pub finished_at: Option<String>,
    /// How long visitors saw the maintenance page, in milliseconds.
    pub closed_ms: Option<i64>,
    /// The error that stopped it.
    pub error: Option<String>,
    /// The plan.
    #[serde(skip)]
    pub plan: Plan,
    /// Where the database copy taken before migrate lives ("" when there was no database).
    #[serde(skip)]
    pub db_backup: Option<String>,
    /// Step timings.
    pub steps: Vec<StepTime>,
    /// Tasks and their output.
    pub tasks: Vec<TaskRecord>,
    /// Restart hooks and their output.
    pub hooks: Vec<HookRecord>,
    /// The health check after reopening, when one is configured.
    pub health: Option<HealthRecord>,
}

/// What a restart hook did.
#[derive(Clone, Debug, Serialize)]
pub struct HookRecord {
    /// The command line.
    pub command: String,
    /// Exit status; `None` when it was killed at its timeout.
    pub exit_code: Option<i32>,
    /// Its output (the end of it, when long).
    pub output: String,
    /// How long it ran.
    pub ms: u64,
}

impl HookRecord {
    /// It exited 0.
    pub fn ok(&self) -> bool {
        self.exit_code == Some(0)
    }
}

/// What the health check saw.
#[derive(Clone, Debug, Serialize)]
pub struct HealthRecord {
    /// The page fetched.
    pub url: String,
    /// The status of the last answer; `None` when there was none.
    pub status: Option<u16>,
    /// It passed.
    pub ok: bool,
    /// What it saw, in a sentence ("answered 500 Internal Server Error: ...").
    pub detail: String,
    /// How long the last attempt took.
    pub ms: u64,
}

/// A step's timing.
#[derive(Clone, Debug, Serialize)]
pub struct StepTime {
    /// The step.
    pub step: Step,
    /// Duration, once finished.
    pub duration_ms: Option<i64>,
    /// ok or the error.
    pub result: Option<String>,
}

/// A task's record.
#[derive(Clone, Debug, Serialize)]
pub struct TaskRecord {
    /// Its path below the instance root.
    pub name: RelPath,
    /// Where it stands.
    pub state: TaskState,
    /// Its output.
    pub output: String,
    /// Exit status.
    pub exit_code: Option<i32>,
}

const RUN_COLS: &str = "id, from_version, to_version, step, status, started_at, finished_at, closed_ms, error, plan, db_backup";

fn run_from_row(r: &rusqlite::Row) -> rusqlite::Result<Run> {
    let plan: String = r.get(9)?;
    let plan: Plan = serde_json::from_str(&plan).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(9, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(Run {
        id: r.get(0)?,
        from: r.get(1)?,
        to: r.get(2)?,
        step: r.get(3)?,
        status: r.get(4)?,
        started_at: r.get(5)?,
        finished_at: r.get(6)?,
        closed_ms: r.get(7)?,
        error: r.get(8)?,
        plan,
        db_backup: r.get(10)?,
        steps: Vec::new(),
        tasks: Vec::new(),
        hooks: Vec::new(),
        health: None,
    })
}

impl State {
    /// Record a new run of `plan`, at its first step.
    pub fn insert_run(&self, plan: &Plan) -> Result<i64> {
        self.conn
            .execute(
                "INSERT INTO runs(from_version, to_version, step, status, started_at, keep_modified, plan) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    plan.from,
                    plan.to,
                    Step::Backup,
                    RunStatus::Running,
                    now_text(),
                    plan.keep_modified,
                    serde_json::to_string(plan).expect("a plan serialises")
                ],
            )
            .db(&self.path)?;
        Ok(self.conn.last_insert_rowid())
    }

    /// A run with its steps and tasks.
    pub fn run(&self, id: i64) -> Result<Run> {
        let mut run = self
            .conn
            .query_row(
                &format!("SELECT {RUN_COLS} FROM runs WHERE id = ?1"),
                [id],
                run_from_row,
            )
            .db(&self.path)?;
        let mut st = self
            .conn
            .prepare(
                "SELECT step, duration_ms, result FROM run_steps WHERE run_id = ?1 ORDER BY rowid",
            )
            .db(&self.path)?;
        run.steps = st
            .query_map([id], |r| {
                Ok(StepTime {
                    step: r.get(0)?,
                    duration_ms: r.get(1)?,
                    result: r.get(2)?,
                })
            })
            .db(&self.path)?
            .collect::<rusqlite::Result<_>>()
            .db(&self.path)?;
        let mut st = self
            .conn
            .prepare(
                "SELECT name, state, output, exit_code FROM tasks WHERE run_id = ?1 ORDER BY rowid",
            )
            .db(&self.path)?;
        let rows: Vec<(String, TaskState, String, Option<i32>)> = st
            .query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .db(&self.path)?
            .collect::<rusqlite::Result<_>>()
            .db(&self.path)?;
        run.tasks = rows
            .into_iter()
            .map(|(name, state, output, exit_code)| {
                Ok(TaskRecord {
                    name: RelPath::parse(&name)?,
                    state,
                    output,
                    exit_code,
                })
            })
            .collect::<Result<_>>()?;
        let mut st = self
            .conn
            .prepare(
                "SELECT command, exit_code, output, ms FROM hooks WHERE run_id = ?1 ORDER BY seq",
            )
            .db(&self.path)?;
        run.hooks = st
            .query_map([id], |r| {
                Ok(HookRecord {
                    command: r.get(0)?,
                    exit_code: r.get(1)?,
                    output: r.get(2)?,
                    ms: r.get::<_, i64>(3)? as u64,
                })
            })
            .db(&self.path)?
            .collect::<rusqlite::Result<_>>()
            .db(&self.path)?;
        run.health = self
            .conn
            .query_row(
                "SELECT url, status, ok, detail, ms FROM health WHERE run_id = ?1",
                [id],
                |r| {
                    Ok(HealthRecord {
                        url: r.get(0)?,
                        status: r.get(1)?,
                        ok: r.get(2)?,
                        detail: r.get(3)?,
                        ms: r.get::<_, i64>(4)? as u64,
                    })
                },
            )
            .optional()
            .db(&self.path)?;
        Ok(run)
    }

    /// Keep what run `id`'s restart hooks did (replacing an earlier attempt's).
    pub fn record_hooks(&self, id: i64, hooks: &[HookRecord]) -> Result<()> {
        self.in_transaction(|| {
            self.conn
                .execute("DELETE FROM hooks WHERE run_id = ?1", [id])
                .db(&self.path)?;
            for (seq, h) in hooks.iter().enumerate() {
                self.conn
                    .execute(
                        "INSERT INTO hooks(run_id, seq, command, exit_code, output, ms) VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
                        params![id, seq as i64, h.command, h.exit_code, h.output, h.ms as i64],
                    )
                    .db(&self.path)?;
            }
            Ok(())
        })
    }

    /// Keep what run `id`'s health check saw.
    pub fn record_health(&self, id: i64, h: &HealthRecord) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO health(run_id, url, status, ok, detail, ms) VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
                params![id, h.url, h.status, h.ok, h.detail, h.ms as i64],
            )
            .db(&self.path)?;
        Ok(())
    }

    /// The newest run whose status is one of `statuses`.
    fn newest_run_in(&self, statuses: &[RunStatus]) -> Result<Option<Run>> {
        let marks = vec!["?"; statuses.len()].join(", ");
        let id: Option<i64> = self
            .conn
            .query_row(
                &format!("SELECT id FROM runs WHERE status IN ({marks}) ORDER BY id DESC LIMIT 1"),
                rusqlite::params_from_iter(statuses),
                |r| r.get(0),
            )
            .optional()
            .db(&self.path)?;
        id.map(|id| self.run(id)).transpose()
    }

    /// The run that is not finished (running, failed or rolling back), if any.
    pub fn unfinished_run(&self) -> Result<Option<Run>> {
        self.newest_run_in(&RunStatus::UNFINISHED)
    }

    /// Refuse while a run is unfinished (it needs `resume` or `rollback` first).
    pub fn refuse_unfinished(&self, root: &std::path::Path) -> Result<()> {
        match self.unfinished_run()? {
            Some(r) => Err(crate::base::error::Error::Unfinished {
                run: r.id,
                step: r.step.to_string(),
                status: r.status.to_string(),
                root: root.to_path_buf(),
            }),
            None => Ok(()),
        }
    }

    /// The run a `rollback` undoes: the unfinished one, else the last that finished.
    pub fn run_to_roll_back(&self) -> Result<Option<Run>> {
        let mut statuses = RunStatus::UNFINISHED.to_vec();
        statuses.push(RunStatus::Done);
        self.newest_run_in(&statuses)
    }

    /// The most recent runs, newest first.
    pub fn runs(&self, limit: usize) -> Result<Vec<Run>> {
        let ids: Vec<i64> = {
            let mut st = self
                .conn
                .prepare("SELECT id FROM runs ORDER BY id DESC LIMIT ?1")
                .db(&self.path)?;
            st.query_map([limit as i64], |r| r.get(0))
                .db(&self.path)?
                .collect::<rusqlite::Result<_>>()
                .db(&self.path)?
        };
        ids.into_iter().map(|id| self.run(id)).collect()
    }

    /// The plan of the last run that finished before run `id`.
    pub fn previous_done_plan(&self, id: i64) -> Result<Option<(i64, Plan)>> {
        let row: Option<(i64, String)> = self
            .conn
            .query_row(
                "SELECT id, plan FROM runs WHERE status = ?2 AND id < ?1 ORDER BY id DESC LIMIT 1",
                params![id, RunStatus::Done],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .db(&self.path)?;
        Ok(row.and_then(|(id, p)| Some((id, serde_json::from_str(&p).ok()?))))
    }

    /// Move a run to a step.
    pub fn set_run_step(&self, id: i64, step: Step) -> Result<()> {
        self.conn
            .execute("UPDATE runs SET step = ?2 WHERE id = ?1", params![id, step])
            .db(&self.path)?;
        Ok(())
    }

    /// Set a run's status and error; a finished status records the end time.
    pub fn set_run_status(&self, id: i64, status: RunStatus, error: Option<&str>) -> Result<()> {
        let finished = (!status.unfinished()).then(now_text);
        self.conn
            .execute(
                "UPDATE runs SET status = ?2, error = ?3, finished_at = COALESCE(?4, finished_at) WHERE id = ?1",
                params![id, status, error, finished],
            )
            .db(&self.path)?;
        Ok(())
    }

    /// A step begins (again, after a resume: its result is cleared, its time adds up).
    pub fn begin_step(&self, id: i64, step: Step) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO run_steps(run_id, step, started_at) VALUES(?1, ?2, ?3) ON CONFLICT(run_id, step) DO UPDATE SET result = NULL",
                params![id, step, now_text()],
            )
            .db(&self.path)?;
        Ok(())
    }

    /// A step ended after `ms` with `result` ("ok" or the error).
    pub fn end_step(&self, id: i64, step: Step, ms: u64, result: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE run_steps SET duration_ms = COALESCE(duration_ms, 0) + ?3, result = ?4 WHERE run_id = ?1 AND step = ?2",
                params![id, step, ms as i64, result],
            )
            .db(&self.path)?;
        Ok(())
    }

    /// The gate closed for run `id` (the first time counts).
    pub fn mark_closed(&self, id: i64) -> Result<()> {
        self.conn
            .execute(
                "UPDATE runs SET closed_at_ms = COALESCE(closed_at_ms, ?2) WHERE id = ?1",
                params![id, now_ms()],
            )
            .db(&self.path)?;
        Ok(())
    }

    /// Where the database copy of run `id` lives ("" when there was no database).
    pub fn set_db_backup(&self, id: i64, copy: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE runs SET db_backup = ?2 WHERE id = ?1",
                params![id, copy],
            )
            .db(&self.path)?;
        Ok(())
    }

    /// Run `id` reopened the site: its closed window ends.
    pub fn mark_reopened(&self, id: i64) -> Result<()> {
        self.conn
            .execute(
                "UPDATE runs SET reopened_at_ms = ?2, closed_ms = ?2 - closed_at_ms WHERE id = ?1",
                params![id, now_ms()],
            )
            .db(&self.path)?;
        Ok(())
    }

    /// Run `id` finished every step.
    pub fn mark_done(&self, id: i64) -> Result<()> {
        self.conn
            .execute(
                "UPDATE runs SET step = ?2, status = ?3, finished_at = ?4, error = NULL WHERE id = ?1",
                params![id, Step::Done, RunStatus::Done, now_text()],
            )
            .db(&self.path)?;
        Ok(())
    }

    /// A task's state within run `run`.
    pub fn task_state(&self, run: i64, name: &RelPath) -> Result<Option<TaskState>> {
        self.conn
            .query_row(
                "SELECT state FROM tasks WHERE run_id = ?1 AND name = ?2",
                params![run, name.as_str()],
                |r| r.get(0),
            )
            .optional()
            .db(&self.path)
    }

    /// Record a task's state (output and exit code kept unless given again).
    pub fn set_task(
        &self,
        run: i64,
        name: &RelPath,
        state: TaskState,
        output: Option<&str>,
        code: Option<i32>,
    ) -> Result<()> {
        let ended = matches!(
            state,
            TaskState::Done | TaskState::Failed | TaskState::Skipped
        );
        self.conn
            .execute(
                "INSERT INTO tasks(run_id, name, state, output, exit_code, started_at) VALUES(?1, ?2, ?3, COALESCE(?4, ''), ?5, ?6)
                 ON CONFLICT(run_id, name) DO UPDATE SET state = ?3, output = COALESCE(?4, output), exit_code = COALESCE(?5, exit_code),
                 finished_at = CASE WHEN ?7 THEN ?6 ELSE finished_at END",
                params![run, name.as_str(), state, output, code, now_text(), ended],
            )
            .db(&self.path)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_in_order() {
        assert_eq!(Step::Backup.next(), Step::Schema);
        assert_eq!(Step::Schema.next(), Step::Close);
        assert_eq!(Step::Close.next(), Step::Swap);
        assert_eq!(Step::RunOnce.next(), Step::Hooks);
        assert_eq!(Step::Hooks.next(), Step::Reopen);
        assert_eq!(Step::Reopen.next(), Step::Health);
        assert_eq!(Step::Health.next(), Step::Done);
        assert_eq!(Step::Done.next(), Step::Done);
        assert!(!Step::Swap.swapped() && Step::Scan.swapped() && Step::Done.swapped());
    }

    #[test]
    fn words_round_trip() {
        for s in Step::ALL {
            assert_eq!(Step::parse(s.as_str()), Some(*s));
        }
        for s in RunStatus::ALL {
            assert_eq!(RunStatus::parse(s.as_str()), Some(*s));
        }
        assert_eq!(Step::parse("unknown"), None);
        assert_eq!(
            serde_json::to_string(&RunStatus::RollingBack).unwrap(),
            "\"rolling_back\""
        );
    }

    #[test]
    fn an_unknown_word_in_the_store_is_an_error_not_a_guess() {
        let d = tempfile::tempdir().unwrap();
        let st = State::open(&d.path().join("s.db")).unwrap();
        let id = st.insert_run(&Plan::default()).unwrap();
        st.conn
            .execute("UPDATE runs SET status = 'exploded' WHERE id = ?1", [id])
            .unwrap();
        let e = st.run(id).unwrap_err().to_string();
        assert!(e.contains("exploded"), "{e}");
    }
}
