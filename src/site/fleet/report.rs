//! Site reports: after every run or unattended pass, an enrolled site tells its reference what
//! happened (the message is [`crate::documents::report`]). Reports are queued in state.db
//! first; one that cannot be sent goes with the next contact.

use std::time::Duration;

use super::identity;
use crate::base::clock::now_text;
use crate::base::error::{Error, Result};
use crate::client::{block_on, describe};
use crate::documents::manifest::SecretKey;
use crate::documents::report::{Enrolment, FORMAT, Health, Outcome, Report, SIGNATURE_HEADER};
use crate::site::config::Instance;
use crate::site::state::{Run, RunStatus, State};

/// What a report says, before it is numbered.
#[derive(Debug, Default)]
pub struct Facts {
    /// The release before.
    pub from: Option<String>,
    /// The release concerned.
    pub to: Option<String>,
    /// The step a failed run stopped at.
    pub failed_step: Option<String>,
    /// Why.
    pub reason: String,
    /// Closed window.
    pub closed_ms: Option<i64>,
    /// Bytes fetched.
    pub bytes_fetched: Option<u64>,
    /// Locally modified files.
    pub modified: usize,
    /// The health check.
    pub health: Option<Health>,
}

impl Facts {
    /// The facts of a finished (or stopped) run.
    pub fn of_run(run: &Run) -> (Outcome, Facts) {
        let outcome = match run.status {
            RunStatus::Done => Outcome::Success,
            RunStatus::RolledBack => Outcome::RolledBack,
            _ => Outcome::Failure,
        };
        let facts = Facts {
            from: run.from.clone(),
            to: Some(run.to.clone()),
            // A finished run undone later failed at no step.
            failed_step: (outcome != Outcome::Success
                && run.step != crate::site::state::Step::Done)
                .then(|| run.step.to_string()),
            reason: run.error.clone().unwrap_or_else(|| match run.status {
                RunStatus::RolledBack => format!(
                    "run {} was rolled back by the operator (`upkeep rollback` or the panel)",
                    run.id
                ),
                RunStatus::Done => format!("run {} finished", run.id),
                _ => format!("run {} stopped at step {}", run.id, run.step),
            }),
            closed_ms: run.closed_ms,
            bytes_fetched: None,
            modified: run.plan.modified.len(),
            health: run.health.as_ref().map(|h| Health {
                ok: h.ok,
                detail: h.detail.clone(),
            }),
        };
        (outcome, facts)
    }
}

/// Whether the site has enrolled with its reference (reports are sent only then).
pub fn enrolled(inst: &Instance) -> Result<bool> {
    Ok(State::open(&inst.state_db())?
        .meta("enrolled_at")?
        .is_some())
}

/// Where the site enrols and reports: the address the publisher signed into the repository's
/// delegation (so a site behind a mirror reaches the publisher's reference), remembered for
/// when the repository cannot be read; else the reference itself.
fn endpoint(inst: &Instance, path: &str) -> String {
    let state = State::open(&inst.state_db()).ok();
    let signed =
        crate::client::Remote::new(&inst.config.reference, &inst.key, &inst.config.network)
            .and_then(|r| block_on(r.reports_url()));
    let base = match (signed, &state) {
        (Ok(Some(u)), Some(st)) => {
            if st.meta("reports_url").ok().flatten().as_deref() != Some(u.as_str()) {
                let _ = st.set_meta("reports_url", &u);
            }
            u
        }
        (Ok(Some(u)), None) => u,
        (Ok(None), Some(st)) => {
            let _ = st.del_meta("reports_url");
            inst.config.reference.clone()
        }
        (Err(_), Some(st)) => st
            .meta("reports_url")
            .ok()
            .flatten()
            .unwrap_or_else(|| inst.config.reference.clone()),
        _ => inst.config.reference.clone(),
    };
    format!("{}/fleet/{path}", base.trim_end_matches('/'))
}

/// The client for enrolment and reports: through the same proxy as the site's other requests.
fn client(inst: &Instance) -> Result<reqwest::Client> {
    crate::client::http_client(&inst.config.network)?
        .timeout(Duration::from_secs(
            inst.config.network.doc_timeout_secs.max(1),
        ))
        .build()
        .map_err(|e| Error::msg(format!("HTTP client: {e}")))
}

/// `upkeep enroll`: present the publisher's token, the site id and the site's public key.
pub fn enroll(inst: &Instance, token: &str) -> Result<identity::Identity> {
    let me = identity::identity(inst)?;
    let key = SecretKey::load(&identity::key_path(inst))?;
    let body = Enrolment {
        token: token.trim().to_string(),
        site_id: me.id.clone(),
        public_key: key.public().to_text(),
        name: identity::site_name(inst),
        groups: me.groups.clone(),
        channel: me.channel.clone(),
        url: inst.config.url.clone(),
        installed: crate::site::state::State::open(&inst.state_db())?.installed_version()?,
    };
    let url = endpoint(inst, "enroll");
    let c = client(inst)?;
    let (status, text) = block_on(async {
        let r = c
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&body).expect("an enrolment serialises"))
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let status = r.status();
        Ok::<_, String>((status, r.text().await.unwrap_or_default()))
    })
    .map_err(|reason| Error::Network {
        url: url.clone(),
        reason,
    })?;
    if status.as_u16() == 404 || status.as_u16() == 405 {
        return Err(Error::refused(
            format!(
                "{url} answered {status}: it does not take enrolments (a mirror served by a plain web server, or not an `upkeep reference`)"
            ),
            "ask the publisher to sign the fleet's address into the repository (`upkeep delegate ... --reports https://REFERENCE/`), which mirrors carry; the token is not the problem",
        ));
    }
    if !status.is_success() {
        return Err(Error::refused(
            format!(
                "the reference refused the enrolment: {status}: {}",
                crate::base::text::printable(text.trim())
            ),
            "check the token with the publisher (`upkeep fleet token --repo REPO` makes one)",
        ));
    }
    State::open(&inst.state_db())?.set_meta("enrolled_at", &now_text())?;
    Ok(me)
}

/// Number, sign later, and queue a report; then send whatever waits. Does nothing for a site
/// that is not enrolled. Returns what happened, in a line.
pub fn report(inst: &Instance, outcome: Outcome, f: Facts) -> Result<Option<String>> {
    if !enrolled(inst)? {
        return Ok(None);
    }
    let me = identity::identity(inst)?;
    let state = State::open(&inst.state_db())?;
    // A run applies what an earlier `stage` fetched: the bytes it recorded for that release.
    let wire = f.to.as_deref().and_then(|to| {
        state
            .meta(&format!("wire_bytes:{to}"))
            .ok()??
            .parse::<u64>()
            .ok()
    });
    let r = Report {
        format: FORMAT,
        site_id: me.id,
        seq: state.next_report_seq()?,
        at: now_text(),
        name: identity::site_name(inst),
        groups: me.groups,
        channel: me.channel,
        installed: state.installed_version()?,
        from: f.from,
        to: f.to,
        outcome,
        failed_step: f.failed_step,
        // What the publisher reads: no escape sequence from a task's output.
        reason: crate::base::text::printable(&f.reason)
            .chars()
            .take(2000)
            .collect(),
        closed_ms: f.closed_ms,
        bytes_fetched: f.bytes_fetched.or(wire),
        modified: f.modified,
        health: f.health,
        url: inst.config.url.clone(),
    };
    state.queue_report(&serde_json::to_string(&r).expect("a report serialises"))?;
    drop(state);
    flush(inst).map(Some)
}

/// Send the queued reports, oldest first, stopping at the first that cannot go.
pub fn flush(inst: &Instance) -> Result<String> {
    let state = State::open(&inst.state_db())?;
    let queue = state.queued_reports()?;
    if queue.is_empty() {
        return Ok("report: nothing waiting".into());
    }
    let key = SecretKey::load(&identity::key_path(inst))?;
    let url = endpoint(inst, "report");
    let c = client(inst)?;
    let mut sent = 0;
    let mut dropped = Vec::new();
    for (id, body, _) in &queue {
        let sig = key.sign(body.as_bytes());
        let answer = block_on(async {
            let r = c
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(SIGNATURE_HEADER, sig.trim())
                .body(body.clone())
                .send()
                .await
                .map_err(|e| describe(&e))?;
            let status = r.status();
            Ok::<_, String>((status, r.text().await.unwrap_or_default()))
        });
        match answer {
            // 409: the reference already has it (an answer lost on the way back).
            Ok((s, _)) if s.is_success() || s.as_u16() == 409 => {
                state.report_sent(*id)?;
                sent += 1;
            }
            // Refused for good (the report itself is wrong): dropped, said, and the next goes.
            Ok((s, text)) if s.as_u16() == 400 => {
                state.report_sent(*id)?;
                dropped.push(format!("{}", crate::base::text::one_line(text.trim())));
            }
            Ok((s, text)) => {
                let e = format!("{s}: {}", crate::base::text::one_line(text.trim()));
                state.report_failed(*id, &e)?;
                return Ok(format!(
                    "report: {} waiting, the reference answered {e}",
                    queue.len() - sent
                ));
            }
            Err(e) => {
                state.report_failed(*id, &e)?;
                return Ok(format!(
                    "report: {} waiting ({url}: {e}); they go with the next contact",
                    queue.len() - sent
                ));
            }
        }
    }
    if !dropped.is_empty() {
        return Ok(format!(
            "report: {sent} sent to the reference, {} refused by it and dropped ({})",
            dropped.len(),
            dropped.join("; ")
        ));
    }
    Ok(format!("report: {sent} sent to the reference"))
}

/// The newest run's id, status and step: what changes when a run starts, moves or ends.
fn newest(inst: &Instance) -> Option<(i64, RunStatus, String)> {
    let state = State::open(&inst.state_db()).ok()?;
    let r = state.runs(1).ok()?.into_iter().next()?;
    Some((r.id, r.status, r.step.to_string()))
}

/// Do `work` (an update, a resume, a rollback, a finish) and, when it changed the newest run,
/// tell the reference how that run stands. The report never decides the work's result; the
/// second value says what happened to it.
pub fn around_run<T>(
    inst: &Instance,
    work: impl FnOnce() -> Result<T>,
) -> (Result<T>, Option<String>) {
    let before = newest(inst);
    let r = work();
    let after = newest(inst);
    if after.is_none() || after == before {
        return (r, None);
    }
    let run = State::open(&inst.state_db())
        .and_then(|s| s.runs(1))
        .ok()
        .and_then(|v| v.into_iter().next());
    let line = run.and_then(|run| {
        let (outcome, facts) = Facts::of_run(&run);
        match report(inst, outcome, facts) {
            Ok(l) => l,
            Err(e) => Some(format!("report: not queued ({e})")),
        }
    });
    (r, line)
}
