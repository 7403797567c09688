//! Running an operator's or a release's shell code (run_once tasks, restart hooks, busy
//! probes) under /bin/sh with a timeout that really stops it.

use std::ffi::OsStr;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::base::error::{IoContext, Result};

/// How long output may keep arriving after the command ended and its process group was stopped
/// (only a process that left the group, by `setsid`, can still hold the pipe open).
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// Stop every process of a command's group.
fn kill_group(pgid: u32) -> bool {
    // SAFETY: kill(2) on the command's own process group, which upkeep created for it.
    unsafe { libc::kill(-(pgid as i32), libc::SIGKILL) == 0 }
}

/// Run `/bin/sh ARGS...` in `dir` (a script path, or `-c` and a command line), output and errors
/// merged; `None` as the exit code when it was killed at its timeout. The command and
/// everything it started run in a process group of their own: when it ends, or its timeout
/// passes, the whole group is stopped, so a background child (`cmd &`) cannot keep the site
/// closed after it, and the timeout bounds the wait.
pub fn run(dir: &Path, args: &[&OsStr], timeout: Duration) -> Result<(Option<i32>, String)> {
    run_marked(dir, args, timeout, None, &[])
}

/// The environment variable that marks every process of a run_once task, its detached
/// children included: `UPKEEP_TASK=MARK`. It survives `setsid`, a new process group and the
/// death of the upkeep that started the task, and a reused pid does not carry it.
pub const MARK_VAR: &str = "UPKEEP_TASK";

/// [`run`] with `env` added to the environment and every process of the command marked
/// ([`MARK_VAR`]): when it ends or its timeout passes, the processes that still carry the mark
/// (a `setsid` child escaped the process group) are stopped too.
pub fn run_marked(
    dir: &Path,
    args: &[&OsStr],
    timeout: Duration,
    mark: Option<&str>,
    env: &[(String, String)],
) -> Result<(Option<i32>, String)> {
    let what = Path::new(args.last().copied().unwrap_or_default());
    let (mut reader, writer) = std::io::pipe().ctx("create pipe for", what)?;
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new("/bin/sh");
    cmd.args(args)
        .process_group(0)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(writer.try_clone().ctx("pipe", what)?)
        .stderr(writer);
    if let Some(m) = mark {
        cmd.env(MARK_VAR, m);
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let mut child = cmd.spawn().ctx("run /bin/sh", what)?;
    // The command holds this process's copies of the pipe's write end: without them gone, the
    // reader would wait for an end of output that never comes.
    drop(cmd);
    let pgid = child.id();
    // Output is gathered as it comes, so whatever arrived can be shown even if a detached
    // process keeps the pipe open for ever.
    let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (eof_tx, eof_rx) = std::sync::mpsc::channel();
    {
        let buf = buf.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while let Ok(n) = reader.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&chunk[..n]);
            }
            let _ = eof_tx.send(());
        });
    }
    let start = Instant::now();
    let code = loop {
        if let Some(st) = child.try_wait().ctx("wait for", what)? {
            break st.code();
        }
        if start.elapsed() > timeout {
            kill_group(pgid);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let left_behind = kill_group(pgid);
    let strays = mark.map_or(0, |m| stop_marked(m, Duration::ZERO));
    let drained = eof_rx.recv_timeout(OUTPUT_GRACE).is_ok();
    let mut output =
        String::from_utf8_lossy(&buf.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    if left_behind && code.is_some() {
        output.push_str("\n[upkeep: the command left processes running; they were stopped]\n");
    }
    if strays > 0 {
        output.push_str(&format!(
            "\n[upkeep: the task left {strays} detached process(es) running (setsid); they were stopped]\n"
        ));
    }
    if !drained {
        output.push_str("\n[upkeep: a process the command started detached itself (setsid) and still holds its output; it was left running]\n");
    }
    Ok((code, output))
}

/// The processes that carry `UPKEEP_TASK=mark` in their environment (read from /proc: those of
/// this user, or all for root).
pub fn marked(mark: &str) -> Vec<u32> {
    let want = format!("{MARK_VAR}={mark}");
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == want.as_bytes()))
        })
        .filter(|pid| *pid != std::process::id() && !zombie(*pid))
        .collect()
}

/// A process that has ended and waits to be reaped.
fn zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// Stop every process marked `mark`: SIGTERM, then after `grace` SIGKILL for those left.
/// Returns how many there were.
pub fn stop_marked(mark: &str, grace: Duration) -> usize {
    let pids = marked(mark);
    let signal = |pids: &[u32], sig| {
        for p in pids {
            // SAFETY: kill(2) on a process found carrying this task's mark.
            unsafe { libc::kill(*p as i32, sig) };
        }
    };
    if !grace.is_zero() {
        signal(&pids, libc::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < grace && !marked(mark).is_empty() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // Until none is left: a process may fork between the reading of /proc and the signal.
    for _ in 0..10 {
        let left = marked(mark);
        if left.is_empty() {
            break;
        }
        signal(&left, libc::SIGKILL);
        std::thread::sleep(Duration::from_millis(10));
    }
    pids.len()
}
