//! `upkeep auto`: one unattended pass, decided by the `[auto]` policy of upkeep.toml (the job of
//! unattended-upgrades, for a web site). Check; decide (off, up to date, held by the version
//! step or by locally modified files, postponed by the window); stage from the network; apply the
//! plan without a prompt (the policy is the approval, and the digest of the plan it approved is
//! the one that runs); record the pass. Mail, busy signals, health checks and hooks come next.

use serde::Serialize;

use crate::clock::now_text;
use crate::config::{Allow, Auto, Instance, OnModified, day_number, parse_window};
use crate::error::{Error, Result};
use crate::manifest::{RelPath, parse_version};
use crate::progress::Progress;
use crate::stage::{self, Source, StageOptions};
use crate::state::{Run, State};
use crate::update::{self, tasks::Decision};

/// What a pass decided.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Nothing to do: up to date.
    Nothing,
    /// Updated (or would be, with `--dry-run`).
    Updated,
    /// Held by policy: automatic updates off, a version step beyond `allow`, modified files.
    Held,
    /// Postponed: outside the window.
    Postponed,
    /// An interrupted run could not be finished and was rolled back: the previous release is
    /// live; an operator should look.
    RolledBack,
}

/// What a pass did, as printed and recorded.
#[derive(Debug, Serialize)]
pub struct Pass {
    /// When.
    pub at: String,
    /// The decision.
    pub decision: Verdict,
    /// Why, in a sentence.
    pub reason: String,
    /// The installed release before the pass.
    pub from: Option<String>,
    /// The release offered.
    pub to: Option<String>,
    /// Locally modified files that held the pass.
    pub modified: Vec<RelPath>,
    /// The run, when one ran.
    pub run: Option<Run>,
    /// Nothing was changed on purpose (`--dry-run`).
    pub dry_run: bool,
}

impl Pass {
    /// The process exit status: 0 updated or nothing, 3 held or postponed.
    pub fn exit_code(&self) -> u8 {
        match self.decision {
            Verdict::Nothing | Verdict::Updated => 0,
            Verdict::Held | Verdict::Postponed => crate::error::exit::HELD,
            Verdict::RolledBack => crate::error::exit::FAILED,
        }
    }
}

/// Local time now: minutes since midnight and the day of the week (0 = Sunday).
fn local_now() -> (u32, u32) {
    use chrono::{Datelike, Timelike};
    let t = chrono::Local::now();
    (
        t.hour() * 60 + t.minute(),
        t.weekday().num_days_from_sunday(),
    )
}

/// Whether `now` (minutes, weekday) falls in the policy's window.
fn in_window(a: &Auto, now: (u32, u32)) -> bool {
    let (min, day) = now;
    let day_ok = a.days.is_empty() || a.days.iter().any(|d| day_number(d) == Some(day));
    let time_ok = match a.window.as_deref().and_then(parse_window) {
        None => true,
        Some((from, to)) if from <= to => (from..to).contains(&min),
        // A window across midnight (22:00-04:00).
        Some((from, to)) => min >= from || min < to,
    };
    day_ok && time_ok
}

/// The semver step from `from` to `to`.
fn step(from: &semver::Version, to: &semver::Version) -> Allow {
    if to.major != from.major {
        Allow::Major
    } else if to.minor != from.minor {
        Allow::Minor
    } else {
        Allow::Patch
    }
}

/// One unattended pass.
pub fn pass(inst: &Instance, dry_run: bool) -> Result<Pass> {
    let a = &inst.config.auto;
    let state = State::open(&inst.state_db())?;
    let from = state.installed_version()?;
    drop(state);
    let mut out = Pass {
        at: now_text(),
        decision: Verdict::Nothing,
        reason: String::new(),
        from: from.clone(),
        to: None,
        modified: Vec::new(),
        run: None,
        dry_run,
    };
    // A run interrupted earlier (a killed pass, a power cut) is dealt with first, as an operator
    // would: resumed, or rolled back when it cannot be finished unattended.
    if !dry_run && State::open(&inst.state_db())?.unfinished_run()?.is_some() {
        return recover(inst, out);
    }
    if !a.enabled {
        out.decision = Verdict::Held;
        out.reason = "automatic updates are off ([auto] enabled = false in upkeep.toml)".into();
        return record(inst, out);
    }
    let (diff, latest) = crate::check::check(inst)?;
    out.to = Some(latest.version().to_string());
    if diff.up_to_date() {
        out.reason = format!("up to date with release {}", diff.latest);
        return record(inst, out);
    }
    if let Some(f) = &from {
        let s = step(&parse_version(f)?, &parse_version(latest.version())?);
        if s > a.allow {
            out.decision = Verdict::Held;
            out.reason = format!(
                "release {} is a {} step from {f}, beyond auto.allow = \"{}\": update by hand (`upkeep update`)",
                latest.version(),
                s.word(),
                a.allow.word()
            );
            stage_ahead(inst, a, dry_run)?;
            return record(inst, out);
        }
    }
    if !in_window(a, local_now()) {
        out.decision = Verdict::Postponed;
        out.reason = format!(
            "outside the window ({}{}): the next pass in it will update",
            a.window.as_deref().unwrap_or("any time"),
            if a.days.is_empty() {
                String::new()
            } else {
                format!(" on {}", a.days.join(", "))
            }
        );
        stage_ahead(inst, a, dry_run)?;
        return record(inst, out);
    }
    if dry_run {
        out.decision = Verdict::Updated;
        out.reason = format!(
            "would stage and apply release {} (dry run: nothing changed)",
            latest.version()
        );
        return Ok(out);
    }
    stage::stage(inst, &Source::Network, &StageOptions::default())?;
    let keep = a.on_modified == OnModified::KeepMine;
    let plan = {
        let mut state = State::open(&inst.state_db())?;
        update::prepare(inst, &mut state, keep)?.0
    };
    if !plan.modified.is_empty() && a.on_modified == OnModified::Hold {
        out.decision = Verdict::Held;
        out.modified = plan.modified.clone();
        out.reason = format!(
            "{} locally modified files (auto.on_modified = \"hold\"): review them and run `upkeep update --root {}` by hand",
            plan.modified.len(),
            inst.root.display()
        );
        return record(inst, out);
    }
    // The policy approved this plan: the same digest guards against a change in between.
    let digest = plan.digest();
    let progress = Progress::default();
    let o = update::Options::approved(Some(&digest), keep, Decision::Ask, &progress);
    let run = update::update(inst, &o)?;
    out.decision = Verdict::Updated;
    out.reason = format!("updated to release {}", plan.to);
    out.run = run;
    record(inst, out)
}

fn recover(inst: &Instance, mut out: Pass) -> Result<Pass> {
    let progress = Progress::default();
    let o = update::Options::approved(None, false, Decision::Ask, &progress);
    match update::resume(inst, &o) {
        Ok(run) => {
            out.decision = Verdict::Updated;
            out.reason = format!(
                "resumed interrupted run {} and finished it: release {} is live",
                run.id, run.to
            );
            out.to = Some(run.to.clone());
            out.run = Some(run);
        }
        Err(e @ Error::Busy(_)) => return Err(e),
        Err(e) => {
            let run = update::rollback(inst)?;
            out.decision = Verdict::RolledBack;
            out.reason = format!(
                "interrupted run {} could not be finished unattended ({e}); it was rolled back: release {} is live again",
                run.id,
                run.from.as_deref().unwrap_or("(none)")
            );
            out.run = Some(run);
        }
    }
    record(inst, out)
}

fn stage_ahead(inst: &Instance, a: &Auto, dry_run: bool) -> Result<()> {
    if a.stage_ahead && !dry_run {
        stage::stage(inst, &Source::Network, &StageOptions::default())?;
    }
    Ok(())
}

/// Keep the pass in state.db (the last one; `status` shows it).
fn record(inst: &Instance, p: Pass) -> Result<Pass> {
    if !p.dry_run {
        let state = State::open(&inst.state_db())?;
        state.set_meta(
            "last_auto",
            &serde_json::to_string(&p).expect("a pass serialises"),
        )?;
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auto(window: Option<&str>, days: &[&str]) -> Auto {
        Auto {
            window: window.map(String::from),
            days: days.iter().map(|d| d.to_string()).collect(),
            ..Auto::default()
        }
    }

    #[test]
    fn windows_1() {
        let a = auto(Some("02:00-05:00"), &[]);
        assert!(in_window(&a, (2 * 60, 1)));
        assert!(in_window(&a, (4 * 60 + 59, 1)));
        assert!(!in_window(&a, (5 * 60, 1)));
        assert!(!in_window(&a, (60, 1)));
        let night = auto(Some("22:00-04:00"), &["sat", "sun"]);
        assert!(in_window(&night, (23 * 60, 6)));
        assert!(in_window(&night, (60, 0)));
        assert!(!in_window(&night, (23 * 60, 3)), "not on a wednesday");
        assert!(in_window(&auto(None, &[]), (0, 0)));
    }

    #[test]
    fn bad_windows_1() {
        for w in ["2-5", "25:00-03:00", "02:00", "02:60-03:00", "ab:cd-ef:gh"] {
            assert!(parse_window(w).is_none(), "{w}");
        }
        assert_eq!(day_number("Mon"), Some(1));
        assert_eq!(day_number("monday"), None);
    }

    #[test]
    fn steps_1() {
        let v = |s: &str| semver::Version::parse(s).unwrap();
        assert_eq!(step(&v("1.2.3"), &v("1.2.4")), Allow::Patch);
        assert_eq!(step(&v("1.2.3"), &v("1.3.0")), Allow::Minor);
        assert_eq!(step(&v("1.2.3"), &v("2.0.0")), Allow::Major);
        assert!(Allow::Major > Allow::Minor && Allow::Minor > Allow::Patch);
    }
}
