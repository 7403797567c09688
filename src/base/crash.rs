//! Named crash points compiled into the normal binary, so that tests can kill the process at any
//! instant of a run and prove that `resume` and `rollback` recover. Free when the variables are
//! unset: one environment lookup, cached.
//!
//! - `UPKEEP_CRASH_AT=NAME`: the process kills itself with SIGKILL on reaching point NAME.
//! - `UPKEEP_CRASH_TRACE=FILE`: every point reached is appended to FILE (to enumerate them).
//! - `UPKEEP_FAIL_AT=NAME`: the operation at point NAME fails with ENOSPC (disk full), for the
//!   failures a test cannot produce for real (a rename never allocates space).

use std::io::Write;
use std::sync::OnceLock;

struct Env {
    crash_at: Option<String>,
    trace: Option<String>,
    fail_at: Option<String>,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| Env {
        crash_at: std::env::var("UPKEEP_CRASH_AT")
            .ok()
            .filter(|s| !s.is_empty()),
        trace: std::env::var("UPKEEP_CRASH_TRACE")
            .ok()
            .filter(|s| !s.is_empty()),
        fail_at: std::env::var("UPKEEP_FAIL_AT")
            .ok()
            .filter(|s| !s.is_empty()),
    })
}

/// Mark a crash point.
pub fn point(name: &str) {
    let e = env();
    if let Some(t) = &e.trace
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(t)
    {
        let _ = writeln!(f, "{name}");
    }
    if e.crash_at.as_deref() == Some(name) {
        // SAFETY: kill(2) on our own pid with a valid signal number.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// An injected failure at `name`, if asked for.
pub fn fail(name: &str) -> std::io::Result<()> {
    if env().fail_at.as_deref() == Some(name) {
        return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
    }
    Ok(())
}
