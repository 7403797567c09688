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
    let what = Path::new(args.last().copied().unwrap_or_default());
    let (mut reader, writer) = std::io::pipe().ctx("create pipe for", what)?;
    use std::os::unix::process::CommandExt;
    let mut child = Command::new("/bin/sh")
        .args(args)
        .process_group(0)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(writer.try_clone().ctx("pipe", what)?)
        .stderr(writer)
        .spawn()
        .ctx("run /bin/sh", what)?;
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
    let drained = eof_rx.recv_timeout(OUTPUT_GRACE).is_ok();
    let mut output =
        String::from_utf8_lossy(&buf.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    if left_behind && code.is_some() {
        output.push_str("\n[upkeep: the command left processes running; they were stopped]\n");
    }
    if !drained {
        output.push_str("\n[upkeep: a process the command started detached itself (setsid) and still holds its output; it was left running]\n");
    }
    Ok((code, output))
}
