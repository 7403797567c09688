//! The reference server steering rollouts with the online key: after each report and on a
//! timer, each channel's rollout is halted when the sites reached so far fail past its
//! threshold, advanced when its current wave has enough successes and has waited long enough,
//! and its pointer signed again before it expires. Everything it decides is written into the
//! signed channel pointer, so a restarted server (or a mirror) carries on from the files.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::db::{FleetDb, Outcomes, SiteRow, counters};
use super::rollout::{Move, read_channel, rollout};
use crate::base::error::Result;
use crate::documents::channel::{ChannelPointer, RolloutState, SiteView, Threshold, first_wave};
use crate::documents::manifest::SecretKey;

/// What the server steers with.
pub struct Pilot {
    /// The repository folder.
    pub repo: PathBuf,
    /// A delegated online key.
    pub key: SecretKey,
    /// A site that said it was installing and then nothing for this long counts as failed.
    pub silent_after: Duration,
}

/// What the pilot would do with a rollout, from the sites' reports.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Leave it.
    Stay,
    /// Halt, with the reason.
    Halt(String),
    /// Move to the next wave (or complete), with the reason.
    Advance(String),
    /// Sign it again: it expires soon.
    Refresh,
}

fn secs_since(rfc3339: &str, now: SystemTime) -> Option<u64> {
    let t = humantime::parse_rfc3339(rfc3339).ok()?;
    Some(now.duration_since(t).map(|d| d.as_secs()).unwrap_or(0))
}

/// Decide for one rollout. Failures (failed, rolled back, silent) are counted over every site
/// the rollout has reached; successes for advancing, over the current wave only; each site by
/// what it last said about the release (`about`).
pub fn decide(
    p: &ChannelPointer,
    sites: &[SiteRow],
    about: &Outcomes,
    silent_after: Duration,
    now: SystemTime,
) -> Decision {
    let wave_of = |s: &SiteRow| {
        first_wave(
            p,
            &SiteView {
                id: &s.id,
                groups: &s.groups,
            },
        )
    };
    // Each site's first wave, hashed once.
    let on: Vec<(&SiteRow, Option<usize>)> = sites
        .iter()
        .filter(|s| s.channel == p.channel)
        .map(|s| (s, wave_of(s)))
        .collect();
    let reached: Vec<&SiteRow> = on
        .iter()
        .filter(|(_, w)| w.is_some_and(|w| w <= p.wave))
        .map(|(s, _)| *s)
        .collect();
    let c = counters(&p.release, &reached, about, silent_after.as_secs() as i64);
    let failures = c.failure + c.rolled_back + c.silent;
    let decided = failures + c.success;
    if matches!(p.state, RolloutState::Active | RolloutState::Paused) && failures > 0 {
        let past = match p.halt_on_failure {
            Threshold::Count(n) => failures >= n as usize,
            Threshold::Share(bp) => failures * 10_000 > bp as usize * decided,
        };
        if past {
            return Decision::Halt(format!(
                "{failures} of {decided} reporting sites failed ({} failed, {} rolled back, {} silent), past --halt-on-failure {}",
                c.failure, c.rolled_back, c.silent, p.halt_on_failure
            ));
        }
    }
    if p.state == RolloutState::Active {
        let current: Vec<&SiteRow> = on
            .iter()
            .filter(|(_, w)| *w == Some(p.wave))
            .map(|(s, _)| *s)
            .collect();
        let ok = counters(&p.release, &current, about, silent_after.as_secs() as i64).success;
        // A wave without enrolled sites needs no reports, only its time.
        let enough = ok >= (p.min_reports as usize).min(current.len());
        let waited = secs_since(&p.wave_started, now).unwrap_or(0) >= p.every_secs;
        if enough && waited {
            return Decision::Advance(format!(
                "wave {} ({}) has {ok} successful report(s) of {} site(s) and waited {}",
                p.wave + 1,
                p.waves[p.wave],
                current.len(),
                crate::base::clock::span_words(Duration::from_secs(p.every_secs))
            ));
        }
    }
    let left = humantime::parse_rfc3339(&p.expires)
        .ok()
        .and_then(|t| t.duration_since(now).ok())
        .unwrap_or_default();
    if left.as_secs() * 2 < p.ttl_secs {
        return Decision::Refresh;
    }
    Decision::Stay
}

/// What steering did to a channel.
#[derive(Debug)]
pub struct Steered {
    /// In a line, for the log.
    pub line: String,
    /// `rollout_halted`, `wave_advanced`, `rollout_complete`, or `None` for a refresh (no
    /// news for anyone).
    pub event: Option<&'static str>,
    /// The channel.
    pub channel: String,
    /// Its release.
    pub release: String,
    /// Why.
    pub reason: String,
}

impl Steered {
    /// The webhooks' event, when it is news.
    pub fn event(&self) -> Option<super::Event> {
        Some(super::Event {
            event: self.event?,
            channel: self.channel.clone(),
            release: self.release.clone(),
            text: format!("[upkeep] {}", self.line),
            site: None,
            failed_step: None,
            reason: self.reason.clone(),
            at: crate::base::clock::now_text(),
        })
    }
}

impl Pilot {
    /// Steer one channel; returns what was done.
    pub fn steer(&self, db: &FleetDb, channel: &str) -> Result<Option<Steered>> {
        let Some(p) = read_channel(&self.repo, channel)? else {
            return Ok(None);
        };
        // A halted or complete rollout needs no reports: only its expiry matters.
        let settled = matches!(p.state, RolloutState::Halted | RolloutState::Complete);
        let (sites, about) = if settled {
            (Vec::new(), Outcomes::new())
        } else {
            (db.sites_on(channel)?, db.outcomes(&p.release)?)
        };
        let (m, said, why) = match decide(&p, &sites, &about, self.silent_after, SystemTime::now())
        {
            Decision::Stay => return Ok(None),
            Decision::Halt(why) => (Move::Halt(why.clone()), format!("halted: {why}"), why),
            Decision::Advance(why) => (Move::Advance, format!("advanced: {why}"), why),
            Decision::Refresh => (Move::Refresh(None), "refreshed".to_string(), String::new()),
        };
        let after = rollout(&self.repo, channel, &self.key, &m)?;
        let event = match (&m, after.state) {
            (Move::Halt(_), _) => Some("rollout_halted"),
            (Move::Advance, RolloutState::Complete) => Some("rollout_complete"),
            (Move::Advance, _) => Some("wave_advanced"),
            _ => None,
        };
        Ok(Some(Steered {
            line: format!(
                "channel {channel}, release {}: {said} (now wave {} of {}, {})",
                after.release,
                after.wave + 1,
                after.waves.len(),
                after.state
            ),
            event,
            channel: channel.to_string(),
            release: after.release.clone(),
            reason: why,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::documents::channel::Wave;
    use crate::documents::manifest::Sha256;
    use crate::documents::report::Outcome;

    fn ptr(waves: Vec<Wave>, wave: usize, halt: Threshold) -> ChannelPointer {
        let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        ChannelPointer {
            serial: 1,
            format: 1,
            channel: "stable".into(),
            release: "1.1.0".into(),
            manifest_sha256: Sha256([0; 32]),
            manifest_size: 1,
            manifest_deltas: Vec::new(),
            previous: None,
            waves,
            wave,
            state: RolloutState::Active,
            reason: None,
            wave_started: now.clone(),
            every_secs: 0,
            min_reports: 1,
            halt_on_failure: halt,
            ttl_secs: 86_400,
            urgent: false,
            date: now.clone(),
            expires: humantime::format_rfc3339_seconds(
                SystemTime::now() + Duration::from_secs(86_400),
            )
            .to_string(),
        }
    }

    fn site(id: &str, groups: &[&str], outcome: Option<Outcome>) -> SiteRow {
        let done = outcome == Some(Outcome::Success);
        SiteRow {
            id: id.into(),
            name: id.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            channel: "stable".into(),
            version: Some(if done { "1.1.0" } else { "1.0.0" }.into()),
            outcome,
            to: Some("1.1.0".into()),
            last: None,
            last_seen_secs: Some(0),
            url: None,
            last_seq: 0,
        }
    }

    fn about(rows: &[SiteRow]) -> Outcomes {
        rows.iter()
            .filter_map(|s| s.outcome.map(|o| (s.id.clone(), o)))
            .collect()
    }

    #[test]
    fn halts_past_the_threshold_advances_on_success_and_refreshes_1() {
        let waves = vec![Wave::Group("test".into()), Wave::Share(10_000)];
        let quiet = Duration::from_secs(3600);
        let now = SystemTime::now();
        let p = ptr(waves.clone(), 0, Threshold::Count(1));
        let ok = [
            site("a", &["test"], Some(Outcome::Success)),
            site("b", &[], None),
        ];
        assert!(matches!(
            decide(&p, &ok, &about(&ok), quiet, now),
            Decision::Advance(_)
        ));
        let bad = [
            site("a", &["test"], Some(Outcome::RolledBack)),
            site("b", &[], None),
        ];
        assert!(
            matches!(decide(&p, &bad, &about(&bad), quiet, now), Decision::Halt(w) if w.contains("1 of 1"))
        );
        // A failure outside the waves reached so far does not count.
        let outside = [
            site("a", &["test"], None),
            site("b", &[], Some(Outcome::Failure)),
        ];
        assert_eq!(
            decide(&p, &outside, &about(&outside), quiet, now),
            Decision::Stay
        );
        // 1 failure in 30 is under 5%.
        let p = ptr(waves.clone(), 1, Threshold::Share(500));
        let mut many: Vec<SiteRow> = (0..29)
            .map(|i| site(&format!("s{i}"), &[], Some(Outcome::Success)))
            .collect();
        many.push(site("x", &[], Some(Outcome::Failure)));
        assert!(!matches!(
            decide(&p, &many, &about(&many), quiet, now),
            Decision::Halt(_)
        ));
        many.push(site("y", &[], Some(Outcome::Installing)));
        assert!(
            matches!(decide(&p, &many, &about(&many), Duration::ZERO, now), Decision::Halt(w) if w.contains("1 silent"))
        );
        // Not enough time in the wave yet.
        let mut p = ptr(waves, 0, Threshold::Count(1));
        p.every_secs = 3600;
        assert_eq!(decide(&p, &ok, &about(&ok), quiet, now), Decision::Stay);
        // Half the validity left: sign again.
        let waiting = [site("a", &["test"], None)];
        assert_eq!(
            decide(&p, &waiting, &about(&waiting), quiet, now),
            Decision::Stay
        );
        assert_eq!(
            decide(
                &p,
                &waiting,
                &about(&waiting),
                quiet,
                now + Duration::from_secs(50_000)
            ),
            Decision::Refresh
        );
    }
}
