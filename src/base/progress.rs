//! Progress of long work, shared between the worker and whoever shows it (a terminal bar, the
//! panel's progress page).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

fn trace_phases() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("UPKEEP_TRACE_PHASES").is_some())
}

/// Counters a worker bumps and a viewer reads.
pub struct Progress {
    /// What is happening, in a few words.
    pub phase: Mutex<String>,
    /// Files to handle.
    pub files_total: AtomicU64,
    /// Files handled.
    pub files_done: AtomicU64,
    /// Bytes to move.
    pub bytes_total: AtomicU64,
    /// Bytes moved.
    pub bytes_done: AtomicU64,
    /// Set when the work ended, well or not.
    pub finished: AtomicBool,
    /// Set by whoever wants the work to stop; the worker checks it between pieces of work.
    cancelled: AtomicBool,
    started: Instant,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            phase: Mutex::new(String::new()),
            files_total: AtomicU64::new(0),
            files_done: AtomicU64::new(0),
            bytes_total: AtomicU64::new(0),
            bytes_done: AtomicU64::new(0),
            finished: AtomicBool::new(false),
            cancelled: AtomicBool::new(false),
            started: Instant::now(),
        }
    }
}

/// A copy of the counters at one instant, with derived speed and time left.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Snapshot {
    /// What is happening.
    pub phase: String,
    /// Files to handle.
    pub files_total: u64,
    /// Files handled.
    pub files_done: u64,
    /// Bytes to move.
    pub bytes_total: u64,
    /// Bytes moved.
    pub bytes_done: u64,
    /// Bytes per second since the start.
    pub bytes_per_sec: u64,
    /// Seconds left at that speed, when it can be told.
    pub eta_secs: Option<u64>,
    /// The work ended.
    pub finished: bool,
}

impl Progress {
    /// Ask the worker to stop at its next check.
    pub fn cancel(&self) {
        self.cancelled.store(true, Relaxed);
    }

    /// Fails with [`crate::Error::Cancelled`] once [`Progress::cancel`] was called.
    pub fn check_cancelled(&self) -> crate::Result<()> {
        if self.cancelled.load(Relaxed) {
            return Err(crate::Error::Cancelled(format!(
                "stopped by the operator while {}",
                self.phase.lock().unwrap_or_else(|e| e.into_inner())
            )));
        }
        Ok(())
    }

    /// Name the current phase. With `UPKEEP_TRACE_PHASES` set in the environment, each phase
    /// is also written to stderr with the seconds since the work started: where a slow run
    /// spends its time, without a profiler.
    pub fn set_phase(&self, p: impl Into<String>) {
        let p = p.into();
        if trace_phases() {
            crate::errln!("[{:8.3} s] {p}", self.started.elapsed().as_secs_f64());
        }
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = p;
    }
    /// Set totals.
    pub fn set_totals(&self, files: u64, bytes: u64) {
        self.files_total.store(files, Relaxed);
        self.bytes_total.store(bytes, Relaxed);
        self.files_done.store(0, Relaxed);
        self.bytes_done.store(0, Relaxed);
    }
    /// Count bytes.
    pub fn add_bytes(&self, n: u64) {
        self.bytes_done.fetch_add(n, Relaxed);
    }
    /// Count a file.
    pub fn add_file(&self) {
        self.files_done.fetch_add(1, Relaxed);
    }
    /// Read everything.
    pub fn snapshot(&self) -> Snapshot {
        let bytes_done = self.bytes_done.load(Relaxed);
        let bytes_total = self.bytes_total.load(Relaxed);
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let speed = (bytes_done as f64 / secs) as u64;
        Snapshot {
            phase: self.phase.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            files_total: self.files_total.load(Relaxed),
            files_done: self.files_done.load(Relaxed),
            bytes_total,
            bytes_done,
            bytes_per_sec: speed,
            eta_secs: (speed > 0 && bytes_total >= bytes_done)
                .then(|| (bytes_total - bytes_done) / speed),
            finished: self.finished.load(Relaxed),
        }
    }
}
