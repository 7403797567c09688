//! `upkeep schedule`: the systemd service and timer (or the crontab line) that run `upkeep auto`
//! once a day. The timer is `Persistent` (a pass missed while the machine was off runs at boot)
//! and randomly delayed, so a fleet does not reach its reference in the same second.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::base::error::{Error, IoContext, Result};
use crate::site::config::{Instance, parse_window};

/// Where `--install` writes units by default.
pub const SYSTEM_UNITS: &str = "/etc/systemd/system";

/// The unit files and the crontab line for one instance.
#[derive(Debug, serde::Serialize)]
pub struct Schedule {
    /// The units' name, without suffix (`upkeep-auto-srv-site`).
    pub name: String,
    /// `NAME.service`.
    pub service: String,
    /// `NAME.timer`.
    pub timer: String,
    /// One crontab line, for machines without systemd.
    pub cron: String,
    /// The daily time (`HH:MM`).
    pub at: String,
}

/// Quote a word for a systemd command line or a shell, when it needs it.
fn quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/-_.:@+=".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The user owning the instance root, by name, when it is not root (the pass runs as the site).
fn owner(root: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata(root).ok()?.uid();
    if uid == 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
    })
}

/// Build the schedule: daily at `at` (default: the start of `auto.window`, else 03:00), delayed
/// by up to `random_delay`.
pub fn schedule(
    inst: &Instance,
    exe: &Path,
    at: Option<&str>,
    random_delay: Duration,
) -> Result<Schedule> {
    let at = match at {
        Some(a) => a.to_string(),
        None => inst
            .config
            .auto
            .window
            .as_deref()
            .and_then(|w| w.split_once('-'))
            .map(|(a, _)| a.trim().to_string())
            .unwrap_or_else(|| "03:00".into()),
    };
    let (minutes, _) = parse_window(&format!("{at}-{at}")).ok_or_else(|| {
        Error::refused(
            format!("--at {at:?} is not a time of day"),
            "write HH:MM, for example --at 03:00",
        )
    })?;
    let root = inst.root.display().to_string();
    // A unit file is line-based and a crontab line is one line: a control character in a
    // path (a newline, above all) would inject a line into them, and quoting cannot help.
    for (what, p) in [
        ("the instance root", &root),
        ("the upkeep binary", &exe.display().to_string()),
    ] {
        if p.chars().any(char::is_control) {
            return Err(Error::refused(
                format!(
                    "{what} {p:?} holds a control character: it cannot go into a systemd unit or a crontab line"
                ),
                "rename the folder (or the binary's) to a name without newlines or other control characters",
            ));
        }
    }
    let slug: String = root
        .trim_matches('/')
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let name = format!(
        "upkeep-auto-{}",
        if slug.is_empty() { "root" } else { &slug }
    );
    let command = format!(
        "{} auto --root {}",
        quote(&exe.display().to_string()),
        quote(&root)
    );
    let user = owner(&inst.root)
        .map(|u| format!("User={u}\n"))
        .unwrap_or_default();
    let service = format!(
        "[Unit]\n\
         Description=upkeep: unattended update pass for {root}\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         {user}\
         ExecStart={command}\n\
         # 3: held or postponed by the policy, a decision rather than a failure.\n\
         SuccessExitStatus=3\n\
         Nice=10\n\
         IOSchedulingClass=idle\n\
         TimeoutStartSec=4h\n"
    );
    let delay = random_delay.as_secs();
    let timer = format!(
        "[Unit]\n\
         Description=upkeep: daily unattended update of {root}\n\
         \n\
         [Timer]\n\
         OnCalendar=*-*-* {at}:00\n\
         RandomizedDelaySec={delay}\n\
         Persistent=true\n\
         \n\
         [Install]\n\
         WantedBy=timers.target\n"
    );
    // cron has no random delay: spread sites by a fixed offset drawn from the root's name.
    let spread = if delay >= 60 {
        let h = root
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
        h % (delay / 60)
    } else {
        0
    };
    let m = (minutes as u64 + spread) % (24 * 60);
    let cron = format!("{} {} * * * {command}", m % 60, m / 60);
    Ok(Schedule {
        name,
        service,
        timer,
        cron,
        at,
    })
}

/// Write the units into `dir`; returns the files written.
pub fn install(s: &Schedule, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).ctx("create folder", dir)?;
    let mut written = Vec::new();
    for (ext, text) in [("service", &s.service), ("timer", &s.timer)] {
        let p = dir.join(format!("{}.{ext}", s.name));
        crate::base::fsutil::write_atomic(&p, text.as_bytes())?;
        written.push(p);
    }
    Ok(written)
}
