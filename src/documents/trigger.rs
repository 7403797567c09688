//! Triggers: a signed "check now". A hub, a publisher's `upkeep push` or an SSH forced command
//! can only ask a site to run its own unattended pass now, instead of at its timer; the site's
//! policy, signatures and health check decide everything else. A trigger is a small JSON
//! document (target, time, nonce) signed by a key the site lists in `trigger_keys`; a stale or
//! replayed one is refused, and a flood is rate limited.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::base::error::{Error, Result};
use crate::documents::manifest::{PublicKey, SecretKey};

/// Format number of triggers.
pub const FORMAT: u32 = 1;
/// Largest trigger accepted.
pub const MAX_TRIGGER: usize = 4 << 10;
/// How far a trigger's time may be from the receiver's clock.
pub const MAX_SKEW: Duration = Duration::from_secs(300);
/// Least time between two accepted triggers.
pub const MIN_INTERVAL: Duration = Duration::from_secs(10);
/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-upkeep-signature";

/// A "check now".
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Trigger {
    /// [`FORMAT`].
    pub format: u32,
    /// Whom it is for (a site's name or id, `*` for anyone holding the key).
    pub target: String,
    /// What it asks: only "check" exists.
    pub action: String,
    /// When it was signed (RFC 3339).
    pub at: String,
    /// A random number used once.
    pub nonce: String,
}

/// A signed trigger for `target`: the body and its signature line.
pub fn make(key: &SecretKey, target: &str) -> Result<(Vec<u8>, String)> {
    make_at(key, target, SystemTime::now())
}

/// [`make`] at a given time (tests of staleness).
pub fn make_at(key: &SecretKey, target: &str, at: SystemTime) -> Result<(Vec<u8>, String)> {
    let mut raw = [0u8; 16];
    getrandom::getrandom(&mut raw).map_err(|e| Error::msg(format!("no random source: {e}")))?;
    let t = Trigger {
        format: FORMAT,
        target: target.to_string(),
        action: "check".into(),
        at: humantime::format_rfc3339_seconds(at).to_string(),
        nonce: hex::encode(raw),
    };
    let body = serde_json::to_vec(&t).expect("a trigger serialises");
    let sig = key.sign(&body);
    Ok((body, sig))
}

/// Why a trigger was turned down: the HTTP status and a sentence.
#[derive(Debug)]
pub struct Refusal {
    /// 400, 401, 409, 413, 429.
    pub status: u16,
    /// What went wrong.
    pub why: String,
    /// For 429: seconds until another is accepted.
    pub retry_after: Option<u64>,
}

fn refuse(status: u16, why: impl Into<String>) -> Refusal {
    Refusal {
        status,
        why: why.into(),
        retry_after: None,
    }
}

/// Where a receiver remembers the nonces it has seen and when it last accepted a trigger: a
/// site's state.db, a reference's fleet database.
pub trait Ledger {
    /// Record `nonce` at `now`; false when it was seen already (older than `forget`: dropped).
    fn use_nonce(&self, nonce: &str, now: i64, forget: i64) -> Result<bool>;
    /// A value of the store's key-value table.
    fn meta(&self, key: &str) -> Result<Option<String>>;
    /// Set a value of the store's key-value table.
    fn set_meta(&self, key: &str, value: &str) -> Result<()>;
    /// When the last trigger was accepted (seconds since the epoch; 0 for never).
    fn last_trigger(&self) -> Result<i64> {
        Ok(self
            .meta("last_trigger_at")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }
    /// Remember that a trigger was accepted at `t`.
    fn set_last_trigger(&self, t: i64) -> Result<()> {
        self.set_meta("last_trigger_at", &t.to_string())
    }
}

/// Check a trigger for the receiver `names` (a site's name and id) against `keys`, remembering
/// its nonce and time in `ledger`. The checks go from cheapest to dearest, the rate limit last,
/// so a flood of forged triggers does not stop a genuine one.
pub fn accept(
    body: &[u8],
    sig: Option<&str>,
    keys: &[PublicKey],
    names: &[&str],
    ledger: &impl Ledger,
    now: SystemTime,
) -> Result<std::result::Result<Trigger, Refusal>> {
    if body.len() > MAX_TRIGGER {
        return Ok(Err(refuse(413, "a trigger is a few hundred bytes")));
    }
    let Some(sig) = sig else {
        return Ok(Err(refuse(401, "the trigger is not signed")));
    };
    if keys.is_empty() {
        return Ok(Err(refuse(
            401,
            "this site accepts no trigger (trigger_keys is empty in upkeep.toml)",
        )));
    }
    if !keys.iter().any(|k| k.verify(body, sig, "trigger").is_ok()) {
        return Ok(Err(refuse(
            401,
            "the trigger is not signed by a key in trigger_keys",
        )));
    }
    let t: Trigger = match serde_json::from_slice(body) {
        Ok(t) => t,
        Err(e) => return Ok(Err(refuse(400, format!("not a trigger: {e}")))),
    };
    if t.format != FORMAT || t.action != "check" {
        return Ok(Err(refuse(
            400,
            format!("a trigger can only ask \"check\", not {:?}", t.action),
        )));
    }
    if t.target != "*" && !names.contains(&t.target.as_str()) {
        return Ok(Err(refuse(
            409,
            format!("the trigger is for {:?}, not this site", t.target),
        )));
    }
    let at = match humantime::parse_rfc3339(&t.at) {
        Ok(at) => at,
        Err(_) => return Ok(Err(refuse(400, "the trigger's time is not RFC 3339"))),
    };
    let skew = now.duration_since(at).unwrap_or_else(|e| e.duration());
    if skew > MAX_SKEW {
        return Ok(Err(refuse(
            409,
            format!(
                "the trigger was signed at {}, more than {} from this site's clock: stale or replayed",
                t.at,
                crate::base::clock::span_words(MAX_SKEW)
            ),
        )));
    }
    let now_s = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    if !ledger.use_nonce(&t.nonce, now_s, now_s - 2 * MAX_SKEW.as_secs() as i64)? {
        return Ok(Err(refuse(
            409,
            "this trigger was already received (a replay)",
        )));
    }
    let last = ledger.last_trigger()?;
    let wait = last + MIN_INTERVAL.as_secs() as i64 - now_s;
    if wait > 0 {
        return Ok(Err(Refusal {
            status: 429,
            why: format!(
                "a pass was triggered {} s ago: try again in {wait} s",
                now_s - last
            ),
            retry_after: Some(wait as u64),
        }));
    }
    ledger.set_last_trigger(now_s)?;
    Ok(Ok(t))
}

/// The words an SSH forced command accepts in `SSH_ORIGINAL_COMMAND` (none is fine too):
/// everything else is refused, so the key can ask for nothing but a pass.
pub const SSH_WORDS: &[&str] = &["check", "auto", "update", "trigger"];

/// Whether an `SSH_ORIGINAL_COMMAND` may run the pass.
pub fn ssh_command_ok(cmd: Option<&str>) -> bool {
    match cmd.map(str::trim) {
        None | Some("") => true,
        Some(c) => SSH_WORDS.contains(&c),
    }
}
