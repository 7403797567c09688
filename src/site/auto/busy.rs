//! `[auto.busy]`: is anyone using the site right now? A command, a URL answering
//! `{"active": N}`, and the web server's access log are asked; one "busy" postpones the pass,
//! until the release has waited `max_postpone`. A signal that cannot be read counts as busy:
//! closing the site on a guess is the thing to avoid, and `max_postpone` bounds the wait.

use std::ffi::OsStr;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::base::clock::now_secs;
use crate::base::error::Result;
use crate::client;
use crate::site::config::{Busy, Instance};
use crate::site::state::State;

/// What one signal said.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Reading {
    /// It says busy (or could not tell).
    pub busy: bool,
    /// What it said, in words.
    pub what: String,
}

/// Ask every configured signal.
pub fn readings(inst: &Instance) -> Vec<Reading> {
    let b = &inst.config.auto.busy;
    let mut out = Vec::new();
    if let Some(cmd) = &b.command {
        out.push(command(inst, b, cmd));
    }
    if let Some(url) = &b.url {
        out.push(url_signal(b, url));
    }
    if let Some(log) = &b.access_log {
        out.push(access_log(b, log, now_secs()));
    }
    out
}

fn command(inst: &Instance, b: &Busy, cmd: &str) -> Reading {
    match crate::base::shell::run(
        &inst.root,
        &[OsStr::new("-c"), OsStr::new(cmd)],
        b.timeout.0,
    ) {
        Ok((Some(0), _)) => Reading {
            busy: true,
            what: format!("`{cmd}` exited 0: busy"),
        },
        Ok((Some(c), _)) => Reading {
            busy: false,
            what: format!("`{cmd}` exited {c}: idle"),
        },
        Ok((None, _)) => Reading {
            busy: true,
            what: format!(
                "`{cmd}` did not finish within {}: counted as busy",
                crate::base::clock::span_words(b.timeout.0)
            ),
        },
        Err(e) => Reading {
            busy: true,
            what: format!("`{cmd}` could not run ({e}): counted as busy"),
        },
    }
}

fn url_signal(b: &Busy, url: &str) -> Reading {
    let unsure = |why: String| Reading {
        busy: true,
        what: format!("{url}: {why}: counted as busy"),
    };
    let p = match client::probe(url, b.timeout.0, 64 << 10) {
        Ok(p) => p,
        Err(e) => return unsure(format!("no answer ({e})")),
    };
    if !p.status.is_success() {
        return unsure(format!("answered {}", p.describe()));
    }
    let active = serde_json::from_str::<serde_json::Value>(&p.body)
        .ok()
        .and_then(|v| v.get("active").and_then(|a| a.as_u64()));
    match active {
        Some(0) => Reading {
            busy: false,
            what: format!("{url}: 0 active: idle"),
        },
        Some(n) => Reading {
            busy: true,
            what: format!("{url}: {n} active: busy"),
        },
        None => unsure("the answer is not JSON with a number \"active\"".into()),
    }
}

/// The time of the last request in a combined-format log (`... [23/Nov/2026:03:12:01 +0100]
/// "GET / ..."`), read from the end of the file only: logs grow large.
fn last_request_secs(log: &Path) -> std::io::Result<Option<i64>> {
    let mut f = std::fs::File::open(log)?;
    let len = f.metadata()?.len();
    let tail = len.min(64 << 10);
    f.seek(SeekFrom::Start(len - tail))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    Ok(text.lines().rev().find_map(|line| {
        let (_, rest) = line.split_once('[')?;
        let (stamp, _) = rest.split_once(']')?;
        chrono::DateTime::parse_from_str(stamp, "%d/%b/%Y:%H:%M:%S %z")
            .ok()
            .map(|t| t.timestamp())
    }))
}

fn access_log(b: &Busy, log: &Path, now: i64) -> Reading {
    match last_request_secs(log) {
        Err(e) => Reading {
            busy: true,
            what: format!("{}: cannot read ({e}): counted as busy", log.display()),
        },
        Ok(None) => Reading {
            busy: false,
            what: format!("{}: no request logged: idle", log.display()),
        },
        Ok(Some(t)) => {
            let age = (now - t).max(0) as u64;
            Reading {
                busy: age < b.idle_seconds,
                what: format!(
                    "{}: last request {age} s ago ({} under {} s of quiet)",
                    log.display(),
                    if age < b.idle_seconds {
                        "busy:"
                    } else {
                        "idle: not"
                    },
                    b.idle_seconds
                ),
            }
        }
    }
}

/// The postponement of `release` so far: since when the pass has been finding the site busy.
/// Remembered per release, so a newer release starts its own wait.
pub fn busy_since(state: &State, release: &str) -> Result<Option<i64>> {
    Ok(state.meta("busy_since")?.and_then(|v| {
        let (r, t) = v.split_once(' ')?;
        (r == release).then(|| t.parse().ok()).flatten()
    }))
}

/// Remember (or forget, with `None`) when `release` was first postponed as busy.
pub fn set_busy_since(state: &State, release: &str, since: Option<i64>) -> Result<()> {
    match since {
        Some(t) => state.set_meta("busy_since", &format!("{release} {t}")),
        None => state.del_meta("busy_since"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_stamp_of_a_combined_log_is_read_from_its_end_1() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        let mut text = String::new();
        for _ in 0..3000 {
            text.push_str("10.0.0.1 - - [22/Nov/2026:10:00:00 +0000] \"GET /old HTTP/1.1\" 200 12 \"-\" \"curl\"\n");
        }
        text.push_str("10.0.0.2 - bob [23/Nov/2026:03:12:01 +0100] \"GET /a?b=[c] HTTP/1.1\" 200 5 \"-\" \"Mozilla\"\n\n");
        std::fs::write(&log, text).unwrap();
        let t = last_request_secs(&log).unwrap().unwrap();
        assert_eq!(
            t,
            chrono::DateTime::parse_from_rfc3339("2026-11-23T02:12:01Z")
                .unwrap()
                .timestamp()
        );
        let b = Busy::default();
        assert!(access_log(&b, &log, t + 10).busy);
        assert!(!access_log(&b, &log, t + 300).busy);
        std::fs::write(&log, "").unwrap();
        assert!(!access_log(&b, &log, 0).busy, "an empty log is idle");
        assert!(access_log(&b, &dir.path().join("missing.log"), 0).busy);
    }
}
