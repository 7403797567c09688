//! `upkeep auto`: one unattended pass, decided by the `[auto]` policy of upkeep.toml (the job of
//! unattended-upgrades, for a web site). Check; decide (off, up to date, held by the version
//! step or by locally modified files, postponed by the window or by visitors); stage from the
//! network; apply the plan without a prompt (the policy is the approval, and the digest of the
//! plan it approved is the one that runs); the run's own hooks and health check follow its
//! reopen; record the pass; mail the report.
//!
//! Unattended means nobody is there to unstick a half-done run: a run that fails is rolled back
//! in the same pass, and a run found interrupted is resumed or rolled back first.

pub mod busy;
pub mod mail;
pub mod notify;
pub mod schedule;

use serde::Serialize;

use crate::base::clock::{now_secs, now_text};
use crate::base::error::{Error, Result};
use crate::base::progress::Progress;
use crate::documents::manifest::{RelPath, parse_version};
use crate::site::config::{Allow, Auto, Instance, OnModified, day_number, parse_window};
use crate::site::lock::InstanceLock;
use crate::site::stage::{self, Source, StageOptions};
use crate::site::state::{Run, RunStatus, State};
use crate::site::update::{self, tasks::Decision};

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
    /// Postponed: outside the window, or visitors are active.
    Postponed,
    /// The pass could not do its work (the reference is down, staging failed); nothing live
    /// changed.
    Failed,
    /// A run failed (a task, the health check) or was found interrupted and could not be
    /// finished: it was rolled back, the previous release is live.
    RolledBack,
}

impl Verdict {
    /// The word printed and used in reports.
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Nothing => "NOTHING TO DO",
            Verdict::Updated => "UPDATED",
            Verdict::Held => "HELD",
            Verdict::Postponed => "POSTPONED",
            Verdict::Failed => "FAILED",
            Verdict::RolledBack => "ROLLED BACK",
        }
    }
}

/// What a pass did, as printed, recorded and mailed.
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
    /// What the busy signals said.
    pub busy: Vec<busy::Reading>,
    /// Other things worth knowing (a staged-ahead release, a busy site overridden).
    pub notes: Vec<String>,
    /// The command an operator would run next, if any.
    pub next: Option<String>,
    /// The run, when one ran.
    pub run: Option<Run>,
    /// What happened to the mail report.
    pub mail: Option<String>,
    /// What happened to the fleet report (enrolled sites).
    pub report: Option<String>,
    /// What happened to the webhooks (`[[notify]]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<String>,
    /// The release offered is urgent (a security release, said by the release key).
    pub urgent: bool,
    /// Bytes this pass fetched from the network, as they came (deltas and compressed objects
    /// count what they weigh on the wire; files a resumed staging had already verified are not
    /// fetched again, nor counted).
    pub bytes_staged: Option<u64>,
    /// Nothing was changed on purpose (`--dry-run`).
    pub dry_run: bool,
}

impl Pass {
    /// The process exit status: 0 updated or nothing, 1 failed or rolled back, 3 held or
    /// postponed.
    pub fn exit_code(&self) -> u8 {
        match self.decision {
            Verdict::Nothing | Verdict::Updated => 0,
            Verdict::Held | Verdict::Postponed => crate::base::error::exit::HELD,
            Verdict::Failed | Verdict::RolledBack => crate::base::error::exit::FAILED,
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

/// One unattended pass: decide, act, record, report. Errors only for what must not be
/// recorded as a pass: a mistake in upkeep.toml (exit 2) and another pass or command holding
/// the instance (exit 75).
pub fn pass(inst: &Instance, dry_run: bool, retry: bool) -> Result<Pass> {
    let _pass_lock = InstanceLock::acquire_pass(inst)?;
    let state = State::open(&inst.state_db())?;
    let from = state.installed_version()?;
    let last_run = state.runs(1)?.first().map(|r| r.id);
    let previous = state.passes(1)?.into_iter().next();
    drop(state);
    let mut out = Pass {
        at: now_text(),
        decision: Verdict::Nothing,
        reason: String::new(),
        from,
        to: None,
        modified: Vec::new(),
        busy: Vec::new(),
        notes: Vec::new(),
        next: None,
        run: None,
        mail: None,
        report: None,
        notify: None,
        urgent: false,
        bytes_staged: None,
        dry_run,
    };
    match decide(inst, &mut out, retry) {
        Ok(()) => {}
        Err(e @ (Error::Busy(_) | Error::Config { .. })) => return Err(e),
        Err(e) => failed(inst, &mut out, last_run, e)?,
    }
    if dry_run {
        return Ok(out);
    }
    let state = State::open(&inst.state_db())?;
    // A release that failed here (a step, a task, the health check) is remembered, so that the
    // next passes hold it instead of a nightly outage until the publisher ships a fix.
    if matches!(out.decision, Verdict::Failed | Verdict::RolledBack)
        && let Some(run) = out.run.as_ref().filter(|r| r.error.is_some())
    {
        let failure = serde_json::json!({
            "at": out.at,
            "run": run.id,
            "step": run.step.to_string(),
            "reason": run.error,
        });
        state.set_meta(&failed_key(&run.to), &failure.to_string())?;
    }
    let json = |p: &Pass| serde_json::to_string(p).expect("a pass serialises");
    let id = state.record_pass(&out.at, out.decision.word(), &json(&out))?;
    // The report never decides the pass: a mail error is told, and the mail waits.
    out.mail = match mail::report(inst, &out, previous.as_ref()) {
        Ok(m) => m,
        Err(e) => Some(format!("mail: not queued ({e})")),
    };
    out.notify = match notify::report(inst, &out, previous.as_ref()) {
        Ok(n) => n,
        Err(e) => Some(format!("webhooks: not queued ({e})")),
    };
    out.report = match fleet_report(inst, &out) {
        Ok(r) => r,
        Err(e) => Some(format!("report: not queued ({e})")),
    };
    if out.mail.is_some() || out.report.is_some() || out.notify.is_some() {
        state.update_pass(id, &json(&out))?;
    }
    Ok(out)
}

/// The pass, told to the reference (when the site is enrolled).
fn fleet_report(inst: &Instance, p: &Pass) -> Result<Option<String>> {
    use crate::documents::report::{Health, Outcome};
    use crate::site::fleet::report::{Facts, report};
    let outcome = match p.decision {
        Verdict::Nothing => Outcome::UpToDate,
        Verdict::Updated => Outcome::Success,
        Verdict::Held => Outcome::Held,
        Verdict::Postponed => Outcome::Postponed,
        Verdict::Failed => Outcome::Failure,
        Verdict::RolledBack => Outcome::RolledBack,
    };
    let run = p.run.as_ref();
    report(
        inst,
        outcome,
        Facts {
            from: p.from.clone(),
            to: p.to.clone(),
            failed_step: run
                .filter(|r| r.status != crate::site::state::RunStatus::Done)
                .map(|r| r.step.to_string()),
            reason: p.reason.clone(),
            closed_ms: run.and_then(|r| r.closed_ms),
            bytes_fetched: p.bytes_staged,
            modified: p.modified.len(),
            health: run.and_then(|r| r.health.as_ref()).map(|h| Health {
                ok: h.ok,
                detail: h.detail.clone(),
            }),
        },
    )
}

/// Where state.db remembers that release `v` failed here.
fn failed_key(v: &str) -> String {
    format!("failed_release:{v}")
}

/// The decision and the work, writing into `out`. `retry`: take a release that failed here.
fn decide(inst: &Instance, out: &mut Pass, retry: bool) -> Result<()> {
    let a = &inst.config.auto;
    let root = inst.root.display().to_string();
    // A run interrupted earlier (a killed pass, a power cut) is dealt with first, as an operator
    // would: resumed, or rolled back when it cannot be finished unattended.
    if !out.dry_run && State::open(&inst.state_db())?.unfinished_run()?.is_some() {
        return recover(inst, out);
    }
    if !a.enabled {
        out.decision = Verdict::Held;
        out.reason = "automatic updates are off ([auto] enabled = false in upkeep.toml)".into();
        return Ok(());
    }
    let (diff, latest) = crate::site::check::check(inst)?;
    let version = latest.version().to_string();
    out.to = Some(version.clone());
    if diff.up_to_date() {
        out.reason = match out.from.as_deref() {
            Some(f) if f != diff.latest => format!(
                "release {f} is installed, and the reference offers this site {}: nothing to do",
                diff.latest
            ),
            _ => format!("up to date with release {}", diff.latest),
        };
        return Ok(());
    }
    let state = State::open(&inst.state_db())?;
    if retry && !out.dry_run {
        state.del_meta(&failed_key(&version))?;
    } else if let Some(f) = state.meta(&failed_key(&version))? {
        let f: serde_json::Value = serde_json::from_str(&f).unwrap_or_default();
        out.decision = Verdict::Held;
        out.reason = format!(
            "release {version} failed here at step {} on {} ({}): held until a newer release",
            f["step"].as_str().unwrap_or("?"),
            f["at"].as_str().unwrap_or("?"),
            f["reason"]
                .as_str()
                .map(|r| r.lines().next().unwrap_or(r).to_string())
                .unwrap_or_default()
        );
        out.next = Some(format!(
            "fix the cause, then take it again with `upkeep auto --root {root} --retry` (or update by hand)"
        ));
        return Ok(());
    }
    drop(state);
    if let Some(f) = &out.from {
        let s = step(&parse_version(f)?, &parse_version(&version)?);
        if s > a.allow {
            out.decision = Verdict::Held;
            out.reason = format!(
                "release {version} is a {} step from {f}, beyond auto.allow = \"{}\": update by hand",
                s.word(),
                a.allow.word()
            );
            out.next = Some(format!(
                "upkeep stage --root {root} --network && upkeep update --root {root}"
            ));
            return stage_ahead(inst, out);
        }
    }
    out.urgent = latest.manifest().urgent;
    if out.urgent && !in_window(a, local_now()) {
        out.notes.push(format!(
            "release {version} is urgent (a security release): taken outside the window"
        ));
    } else if !in_window(a, local_now()) {
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
        return stage_ahead(inst, out);
    }
    if a.busy.any() && busy(inst, out, &version)? {
        return stage_ahead(inst, out);
    }
    if out.dry_run {
        // The real pass's last decision, taken on what the check saw.
        if !diff.modified.is_empty() && a.on_modified == OnModified::Hold {
            out.decision = Verdict::Held;
            out.modified = diff.modified.clone();
            out.reason = format!(
                "{} locally modified files (auto.on_modified = \"hold\"): would stage release {version} and change nothing (dry run: nothing changed)",
                diff.modified.len(),
            );
            return Ok(());
        }
        out.decision = Verdict::Updated;
        out.reason = format!("would stage and apply release {version} (dry run: nothing changed)");
        return Ok(());
    }
    let staged = stage::stage(inst, &Source::Network, &StageOptions::default())?;
    out.bytes_staged = Some(
        staged
            .forms
            .as_ref()
            .map(|f| f.wire())
            .unwrap_or(staged.fetched),
    );
    let keep = a.on_modified == OnModified::KeepMine;
    let plan = {
        let mut state = State::open(&inst.state_db())?;
        update::prepare(inst, &mut state, keep, &[])?.0
    };
    if !plan.modified.is_empty() && a.on_modified == OnModified::Hold {
        out.decision = Verdict::Held;
        out.modified = plan.modified.clone();
        out.reason = format!(
            "{} locally modified files (auto.on_modified = \"hold\"): nothing was changed; release {version} is staged",
            plan.modified.len(),
        );
        out.next = Some(format!(
            "review them and update by hand: upkeep update --root {root} (add --keep-modified to keep yours)"
        ));
        return Ok(());
    }
    // The reference learns that this site is installing, so a site that then goes silent
    // counts as failed in the rollout.
    let _ = crate::site::fleet::report::report(
        inst,
        crate::documents::report::Outcome::Installing,
        crate::site::fleet::report::Facts {
            from: out.from.clone(),
            to: Some(plan.to.clone()),
            reason: format!("installing release {}", plan.to),
            ..Default::default()
        },
    );
    // The policy approved this plan: the same digest guards against a change in between.
    let digest = plan.digest();
    let progress = Progress::default();
    let o = update::Options::approved(Some(&digest), keep, Decision::Ask, &progress);
    let run = update::update(inst, &o)?;
    out.decision = Verdict::Updated;
    out.reason = format!("updated to release {}", plan.to);
    if keep && !plan.modified.is_empty() {
        out.notes.push(format!(
            "{} locally modified files kept as they were (auto.on_modified = \"keep-mine\")",
            plan.modified.len()
        ));
        out.modified = plan.modified.clone();
    } else if !plan.modified.is_empty() {
        out.notes.push(format!(
            "{} locally modified files replaced, each kept as NAME.bak (auto.on_modified = \"take-release\")",
            plan.modified.len()
        ));
        out.modified = plan.modified.clone();
    }
    out.next = Some(format!("to undo: upkeep rollback --root {root}"));
    out.run = run;
    let state = State::open(&inst.state_db())?;
    busy::set_busy_since(&state, &version, None)
}

/// Ask the busy signals; true when the pass postpones. A release postponed for longer than
/// `max_postpone` goes ahead anyway, and the pass says so.
fn busy(inst: &Instance, out: &mut Pass, version: &str) -> Result<bool> {
    let b = &inst.config.auto.busy;
    out.busy = busy::readings(inst);
    let state = State::open(&inst.state_db())?;
    let Some(reading) = out.busy.iter().find(|r| r.busy) else {
        busy::set_busy_since(&state, version, None)?;
        return Ok(false);
    };
    let now = now_secs();
    let since = busy::busy_since(&state, version)?.unwrap_or(now);
    if !out.dry_run {
        busy::set_busy_since(&state, version, Some(since))?;
    }
    let waited = std::time::Duration::from_secs((now - since).max(0) as u64);
    if waited >= b.max_postpone.0 {
        out.notes.push(format!(
            "visitors are active ({}), but release {version} has waited {} since the first busy pass, not less than auto.busy.max_postpone = {}: going ahead",
            reading.what,
            crate::base::clock::span_words(std::time::Duration::from_secs(waited.as_secs())),
            crate::base::clock::span_words(b.max_postpone.0)
        ));
        return Ok(false);
    }
    out.decision = Verdict::Postponed;
    out.reason = format!(
        "the site is busy ({}): postponed; after {} of postponing it goes ahead anyway",
        reading.what,
        crate::base::clock::span_words(b.max_postpone.0)
    );
    Ok(true)
}

/// The pass failed with `e`. A run it started and left unfinished is rolled back now (nobody
/// is there to choose); a run the update already rolled back (the health check) is reported.
fn failed(inst: &Instance, out: &mut Pass, last_run: Option<i64>, e: Error) -> Result<()> {
    let root = inst.root.display().to_string();
    let mut why = e.to_string();
    if let Some(h) = e.hint() {
        why.push_str(&format!(" ({h})"));
    }
    let state = State::open(&inst.state_db())?;
    let newest = state.runs(1)?.into_iter().next();
    drop(state);
    let ours = newest.filter(|r| Some(r.id) != last_run);
    match ours {
        Some(run) if run.status.unfinished() => match update::rollback(inst, &Default::default()) {
            Ok(update::RolledBack { run: r, database }) => {
                out.notes.push(database.describe());
                out.decision = Verdict::RolledBack;
                out.reason = format!(
                    "run {} failed at step {} and was rolled back: release {} is live again and the site open. What failed: {e}",
                    r.id,
                    run.step,
                    r.from.as_deref().unwrap_or("(none)")
                );
                out.run = Some(r);
            }
            Err(e2) => {
                out.decision = Verdict::Failed;
                out.reason = format!(
                    "run {} failed at step {} ({e}) and rolling it back failed too ({e2}): the site may be closed",
                    run.id, run.step
                );
                out.run = Some(run);
                out.next = Some(format!(
                    "upkeep status --root {root}, then upkeep rollback --root {root}"
                ));
                return Ok(());
            }
        },
        Some(run) if run.status == RunStatus::RolledBack => {
            out.decision = Verdict::RolledBack;
            out.reason = format!(
                "run {} was rolled back: release {} is live again and the site open. What failed: {}",
                run.id,
                run.from.as_deref().unwrap_or("(none)"),
                run.error.as_deref().unwrap_or(&why)
            );
            out.run = Some(run);
        }
        _ => {
            out.decision = Verdict::Failed;
            out.reason = format!("nothing live was changed. {why}");
        }
    }
    out.next = Some(format!(
        "see upkeep status --root {root}; the next pass tries again"
    ));
    Ok(())
}

/// Why the reference no longer offers this site release `to` (a rollout halted meanwhile
/// sends the sites not yet updated back), or `None` when it still does or cannot be asked (a
/// reference out of reach does not decide for the site).
fn withdrawn(inst: &Instance, to: &str) -> Option<String> {
    let remote =
        crate::client::Remote::new(&inst.config.reference, &inst.key, &inst.config.network).ok()?;
    let t = crate::site::fleet::identity::offered(inst, &remote).ok()?;
    let offered = t.manifest.as_ref().map(|m| m.version().to_string());
    if offered.as_deref() == Some(to) {
        return None;
    }
    Some(match (t.offer, offered) {
        (Some(o), _) => o.why,
        (None, Some(v)) => format!("it offers release {v}"),
        (None, None) => "it offers nothing".into(),
    })
}

/// Roll the interrupted run back and say so; `why` ends the sentence's first half.
fn roll_back_interrupted(inst: &Instance, out: &mut Pass, why: &str) -> Result<()> {
    let update::RolledBack { run, database } = update::rollback(inst, &Default::default())?;
    out.notes.push(database.describe());
    out.decision = Verdict::RolledBack;
    out.reason = format!(
        "interrupted run {} {why}; it was rolled back: release {} is live again",
        run.id,
        run.from.as_deref().unwrap_or("(none)")
    );
    out.to = Some(run.to.clone());
    out.run = Some(run);
    Ok(())
}

fn recover(inst: &Instance, out: &mut Pass) -> Result<()> {
    let unfinished = State::open(&inst.state_db())?.unfinished_run()?;
    if let Some(to) = unfinished.map(|r| r.to)
        && let Some(why) = withdrawn(inst, &to)
    {
        return roll_back_interrupted(
            inst,
            out,
            &format!(
                "was installing release {to}, which the reference no longer offers this site ({why})"
            ),
        );
    }
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
            roll_back_interrupted(
                inst,
                out,
                &format!("could not be finished unattended ({e})"),
            )?;
            out.next = Some(format!(
                "see upkeep status --root {}; the next pass tries the update again",
                inst.root.display()
            ));
        }
    }
    Ok(())
}

/// Stage a held or postponed release ahead when asked, so the window is spent on the swap.
fn stage_ahead(inst: &Instance, out: &mut Pass) -> Result<()> {
    if inst.config.auto.stage_ahead && !out.dry_run {
        let staged = stage::stage(inst, &Source::Network, &StageOptions::default())?;
        out.notes
            .push(format!("release {} staged ahead", staged.version));
    }
    Ok(())
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
