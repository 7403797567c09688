//! Webhooks (`[[notify]]`): each unattended pass's report as JSON, POSTed to chat and incident
//! tools, signed with the hook's secret ([`crate::client::webhook`]). Deliveries are queued in
//! state.db first and sent oldest first; one the receiver does not take (no answer, a status
//! other than 2xx) waits and goes with the next pass, like mail.

use serde::Serialize;

use super::{Pass, mail};
use crate::base::error::Result;
use crate::client::webhook;
use crate::site::config::{Instance, Notify};
use crate::site::fleet::identity::site_name;
use crate::site::state::State;

/// What a webhook receives.
#[derive(Serialize)]
struct Event<'a> {
    /// Always `pass` (a site's unattended pass).
    event: &'static str,
    /// The site's name.
    site: String,
    /// The mail's subject line: one line a chat shows as it is.
    text: String,
    /// The pass, whole (`decision`, `reason`, `from`, `to`, `run`...).
    pass: &'a Pass,
}

/// Queue the report of `p` for every hook that wants it, then deliver everything queued.
/// Returns what happened, in a line, or `None` when no hook is set and nothing waits.
pub fn report(
    inst: &Instance,
    p: &Pass,
    previous: Option<&serde_json::Value>,
) -> Result<Option<String>> {
    let state = State::open(&inst.state_db())?;
    let wanting: Vec<&Notify> = inst
        .config
        .notify
        .iter()
        .filter(|n| mail::wanted(n.report, p, previous))
        .collect();
    if !wanting.is_empty() {
        let body = serde_json::to_string(&Event {
            event: "pass",
            site: site_name(inst),
            text: mail::compose(inst, p).0,
            pass: p,
        })
        .expect("an event serialises");
        for n in wanting {
            state.queue_notify(&n.url, &body)?;
        }
    }
    let queue = state.queued_notify()?;
    if queue.is_empty() {
        return Ok(None);
    }
    let (mut sent, mut waiting) = (0, Vec::new());
    for (id, url, body, _) in &queue {
        // A hook removed from upkeep.toml since: its deliveries are dropped.
        let Some(n) = inst.config.notify.iter().find(|n| &n.url == url) else {
            state.notify_sent(*id)?;
            continue;
        };
        // One hook down does not hold the others' deliveries back; its own wait in order.
        if waiting.iter().any(|(u, _): &(String, String)| u == url) {
            continue;
        }
        match deliver(inst, n, body) {
            Ok(()) => {
                state.notify_sent(*id)?;
                sent += 1;
            }
            Err(e) => {
                state.notify_failed(*id, &e)?;
                waiting.push((url.clone(), e));
            }
        }
    }
    let mut line = format!("webhooks: {sent} sent");
    for (url, e) in &waiting {
        line.push_str(&format!(
            "; {url}: {e}, waiting in state.db for the next pass"
        ));
    }
    Ok(Some(line))
}

fn deliver(inst: &Instance, n: &Notify, body: &str) -> std::result::Result<(), String> {
    let secret = match &n.secret_file {
        Some(f) => Some(webhook::read_secret(f).map_err(|e| e.to_string())?),
        None => None,
    };
    let c = crate::client::http_client(&inst.config.network)
        .map_err(|e| e.to_string())?
        .timeout(n.timeout.0)
        .build()
        .map_err(|e| e.to_string())?;
    webhook::deliver(&c, &n.url, secret.as_deref(), body)
}
