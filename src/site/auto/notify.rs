//! Webhooks (`[[notify]]`): each unattended pass's report as JSON, POSTed to chat and incident
//! tools. The body is signed with the hook's shared secret (`X-Upkeep-Signature-256:
//! sha256=HEX`, an HMAC-SHA256 of the exact body, as GitHub signs its hooks), so the receiver
//! can tell it came from this site. Deliveries are queued in state.db first and sent oldest
//! first; one the receiver does not take (no answer, a status other than 2xx) waits and goes
//! with the next pass, like mail.

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use super::{Pass, mail};
use crate::base::error::{Error, IoContext, Result};
use crate::client::{block_on, describe};
use crate::site::config::{Instance, Notify};
use crate::site::fleet::identity::site_name;
use crate::site::state::State;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "x-upkeep-signature-256";

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

/// `sha256=HEX` of `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn secret(n: &Notify) -> Result<Option<Vec<u8>>> {
    let Some(f) = &n.secret_file else {
        return Ok(None);
    };
    use std::os::unix::fs::PermissionsExt;
    let m = std::fs::metadata(f).ctx("read", f)?;
    if m.permissions().mode() & 0o077 != 0 {
        return Err(Error::refused(
            format!(
                "{}: the webhook secret is readable by others (mode {:o})",
                f.display(),
                m.permissions().mode() & 0o777
            ),
            format!("chmod 600 {}", f.display()),
        ));
    }
    let text = std::fs::read_to_string(f).ctx("read", f)?;
    Ok(Some(
        text.trim_end_matches(['\n', '\r']).as_bytes().to_vec(),
    ))
}

/// Queue the report of `p` for every hook that wants it, then deliver everything queued.
/// Returns what happened, in a line, or `None` when no hook is set and nothing waits.
pub fn report(
    inst: &Instance,
    p: &Pass,
    previous: Option<&serde_json::Value>,
) -> Result<Option<String>> {
    let state = State::open(&inst.state_db())?;
    for n in &inst.config.notify {
        if mail::wanted(n.report, p, previous) {
            let (subject, _) = mail::compose(inst, p);
            let body = serde_json::to_string(&Event {
                event: "pass",
                site: site_name(inst),
                text: subject,
                pass: p,
            })
            .expect("an event serialises");
            state.queue_notify(&n.url, &body)?;
        }
    }
    let queue = state.queued_notify()?;
    if queue.is_empty() {
        return Ok(None);
    }
    let (mut sent, mut waiting) = (0, Vec::new());
    for (id, url, body, _) in &queue {
        // A hook removed from upkeep.toml since: its deliveries go unsigned nowhere.
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
    let secret = secret(n).map_err(|e| e.to_string())?;
    let c = crate::client::http_client(&inst.config.network)
        .map_err(|e| e.to_string())?
        .timeout(n.timeout.0)
        .build()
        .map_err(|e| e.to_string())?;
    block_on(async {
        let mut r = c
            .post(&n.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::USER_AGENT, "upkeep-webhook");
        if let Some(s) = &secret {
            r = r.header(SIGNATURE_HEADER, sign(s, body.as_bytes()));
        }
        let r = r
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| describe(&e))?;
        match r.status() {
            s if s.is_success() => Ok(()),
            s => Err(format!("the receiver answered {s}")),
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_signature_is_an_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            super::sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
