//! After the new code is in place: the restart hooks (`auto.after`: reload php-fpm, clear a
//! cache), run before the site reopens so that no visitor meets a cache of the old code; then,
//! the site open, the health check (`[auto.health]`), which sees the application as visitors
//! do, after its restart.

use std::ffi::OsStr;
use std::time::{Duration, Instant};

use crate::base::error::{Error, Result};
use crate::client;
use crate::site::config::Instance;
use crate::site::state::{HealthRecord, HookRecord, Run};

/// Output kept per hook: the end of it, where the error usually is.
const MAX_OUTPUT: usize = 16 << 10;
/// Body read for `contains`.
const MAX_BODY: usize = 1 << 20;

/// Run every restart hook in order, each within `auto.after_timeout`. A failing hook does not
/// stop the others nor fail the run (the health check judges the site); it is reported.
pub fn run_hooks(inst: &Instance, env: &[(String, String)]) -> Result<Vec<HookRecord>> {
    let timeout = inst.config.auto.after_timeout.0;
    let mut out = Vec::new();
    for command in &inst.config.auto.after {
        let t = Instant::now();
        let (exit_code, mut output) = crate::base::shell::run_marked(
            &inst.root,
            &[OsStr::new("-c"), OsStr::new(command)],
            timeout,
            None,
            env,
        )?;
        if exit_code.is_none() {
            output.push_str(&format!(
                "\n[upkeep: stopped after {} (auto.after_timeout)]\n",
                crate::base::clock::span_words(timeout)
            ));
        }
        if output.len() > MAX_OUTPUT {
            let cut = output.len() - MAX_OUTPUT;
            let cut = (cut..output.len())
                .find(|i| output.is_char_boundary(*i))
                .unwrap_or(0);
            output = format!("[...]{}", &output[cut..]);
        }
        out.push(HookRecord {
            command: command.clone(),
            exit_code,
            output,
            ms: t.elapsed().as_millis() as u64,
        });
    }
    Ok(out)
}

/// The health check, when `[auto.health] url` is set: up to `attempts` GETs, one second apart,
/// until one answers `expect_status` with `contains` in its body.
pub fn health(inst: &Instance) -> Option<HealthRecord> {
    let h = &inst.config.auto.health;
    let url = h.url.as_ref()?;
    let mut rec = HealthRecord {
        url: url.clone(),
        status: None,
        ok: false,
        detail: String::new(),
        ms: 0,
    };
    for attempt in 0..h.attempts {
        if attempt > 0 {
            std::thread::sleep(Duration::from_secs(1));
        }
        let t = Instant::now();
        let answer = client::probe(url, h.timeout.0, MAX_BODY);
        rec.ms = t.elapsed().as_millis() as u64;
        match answer {
            Err(e) => rec.detail = format!("GET {url}: no answer ({e})"),
            Ok(p) => {
                rec.status = Some(p.status.as_u16());
                if p.status.as_u16() != h.expect_status {
                    rec.detail = format!(
                        "GET {url} answered {}, expected {}",
                        p.describe(),
                        h.expect_status
                    );
                } else if let Some(text) = h.contains.as_ref().filter(|t| !p.body.contains(*t)) {
                    rec.detail =
                        format!("GET {url} answered {} without the text {text:?}", p.status);
                } else {
                    rec.ok = true;
                    rec.detail = format!("GET {url} answered {} in {} ms", p.status, rec.ms);
                    break;
                }
            }
        }
    }
    if !rec.ok && h.attempts > 1 {
        rec.detail
            .push_str(&format!(" (after {} attempts)", h.attempts));
    }
    Some(rec)
}

/// The error a failed check stops the run with.
pub fn unhealthy(inst: &Instance, rec: &HealthRecord) -> Error {
    Error::refused(
        format!("the health check failed: {}", rec.detail),
        format!(
            "see what the new release does at {} (the web server's error log); [auto.health] in {}",
            rec.url,
            inst.root.join("upkeep.toml").display()
        ),
    )
}

/// What the hooks and the health check of `run` did, a line each, with the end of a failed
/// hook's output indented below it: for the terminal and for the mail report.
pub fn describe(run: &Run) -> Vec<String> {
    let mut lines = Vec::new();
    for h in &run.hooks {
        let how = match h.exit_code {
            Some(0) => "ok".to_string(),
            Some(c) => format!("FAILED, exit {c}"),
            None => "FAILED, stopped at its timeout".to_string(),
        };
        lines.push(format!("hook `{}`: {how} ({} ms)", h.command, h.ms));
        if !h.ok() {
            let out: Vec<&str> = h.output.lines().filter(|l| !l.trim().is_empty()).collect();
            for l in &out[out.len().saturating_sub(10)..] {
                lines.push(format!("    {l}"));
            }
        }
    }
    if let Some(h) = &run.health {
        lines.push(format!(
            "health check: {} {}",
            if h.ok { "ok," } else { "FAILED," },
            h.detail
        ));
    }
    lines
}
