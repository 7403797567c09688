//! One run at a time per instance: an OS file lock on `.upkeep/lock`, released by the kernel when
//! the process dies, so a crash never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::io::Write;

use crate::base::error::{Error, IoContext, Result};
use crate::site::config::Instance;
use crate::site::state::{RunStatus, State};

/// Held while a command changes the instance.
pub struct InstanceLock {
    _file: File,
}

impl InstanceLock {
    /// Take the lock for `what` (a command name), or say who holds it.
    pub fn acquire(inst: &Instance, what: &str) -> Result<Self> {
        Self::acquire_file(inst, "lock", what)
    }

    /// Take the lock an unattended pass holds from its first check to its mail, beside the
    /// instance lock its steps take: two passes never interleave their decisions.
    pub fn acquire_pass(inst: &Instance) -> Result<Self> {
        Self::acquire_file(inst, "auto.lock", "auto")
    }

    fn acquire_file(inst: &Instance, name: &str, what: &str) -> Result<Self> {
        let path = inst.state_dir().join(name);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .ctx("open", &path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                return Err(Error::Busy(describe_busy(inst, holder.trim())));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e).ctx("lock", &path),
        }
        file.set_len(0).ctx("write", &path)?;
        let _ = write!(file, "{} pid {}", what, std::process::id());
        Ok(InstanceLock { _file: file })
    }
}

fn describe_busy(inst: &Instance, holder: &str) -> String {
    let run = State::open(&inst.state_db())
        .ok()
        .and_then(|s| s.unfinished_run().ok().flatten())
        .filter(|r| r.status == RunStatus::Running);
    match run {
        Some(r) => format!("run {} at step {} ({holder})", r.id, r.step),
        None => format!("another upkeep command is working on this instance ({holder})"),
    }
}
