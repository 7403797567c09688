//! A mirror that takes triggers: `upkeep reference --mirror-from URL` answers `POST /trigger`
//! (signed by a key given with `--trigger-key`) by syncing from its upstream at once, then
//! triggering its own downstream leaves: the hub-and-leaves push of Debian's mirrors, with any
//! number of hops. A trigger that arrives during a sync makes one more sync after it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::{HttpRequest, HttpResponse, web};

use super::{Mirror, sync};
use crate::base::progress::Progress;
use crate::client::Network;
use crate::documents::manifest::{PublicKey, SecretKey};
use crate::documents::trigger::{self, SIGNATURE_HEADER};
use crate::publisher::fleet::db::FleetDb;
use crate::publisher::trigger::{Answer, Receiver, send_all};

/// A leaf mirror's settings and state.
pub struct Leaf {
    /// The upstream.
    pub from: String,
    /// The mirror folder (the served repository).
    pub to: PathBuf,
    /// The release key.
    pub key: PublicKey,
    /// Keys whose triggers start a sync.
    pub trigger_keys: Vec<PublicKey>,
    /// Leaves to trigger after a sync that changed something.
    pub downstream: Vec<Receiver>,
    /// The key those triggers are signed with.
    pub downstream_key: Option<SecretKey>,
    /// Nonces and the rate limit.
    pub ledger: Mutex<FleetDb>,
    /// Mirror the release zips too.
    pub zips: bool,
    busy: Mutex<bool>,
    again: AtomicBool,
    queued: AtomicBool,
}

impl Leaf {
    /// A leaf.
    pub fn new(
        from: String,
        to: PathBuf,
        key: PublicKey,
        trigger_keys: Vec<PublicKey>,
        downstream: Vec<Receiver>,
        downstream_key: Option<SecretKey>,
        ledger: FleetDb,
    ) -> Leaf {
        Leaf {
            from,
            to,
            key,
            trigger_keys,
            downstream,
            downstream_key,
            ledger: Mutex::new(ledger),
            zips: false,
            busy: Mutex::new(false),
            again: AtomicBool::new(false),
            queued: AtomicBool::new(false),
        }
    }

    /// Mirror the release zips too.
    pub fn with_zips(mut self, zips: bool) -> Leaf {
        self.zips = zips;
        self
    }

    /// Sync now (or once more after the sync under way), then trigger the leaves below.
    pub fn run(self: &Arc<Self>) {
        {
            let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
            if *busy {
                self.again.store(true, Ordering::SeqCst);
                return;
            }
            *busy = true;
        }
        loop {
            let m = Mirror {
                from: &self.from,
                to: &self.to,
                key: &self.key,
                keep: 0,
                zips: self.zips,
                net: Network::default(),
                progress: Arc::new(Progress::default()),
            };
            match sync(&m) {
                Ok(s) => {
                    crate::errln!(
                        "mirror: synced release {} ({} new objects)",
                        s.latest,
                        s.new_objects
                    );
                    if let (false, Some(k)) =
                        (s.unchanged && s.new_objects == 0, &self.downstream_key)
                    {
                        trigger_leaves(k, &self.downstream);
                    }
                }
                Err(e) => crate::errln!("mirror: sync from {} failed: {e}", self.from),
            }
            if !self.again.swap(false, Ordering::SeqCst) {
                break;
            }
        }
        *self.busy.lock().unwrap_or_else(|e| e.into_inner()) = false;
    }
}

/// Trigger every leaf, logging who answered.
pub fn trigger_leaves(key: &SecretKey, leaves: &[Receiver]) -> Vec<Answer> {
    match send_all(key, leaves) {
        Ok(answers) => {
            for a in &answers {
                crate::errln!(
                    "mirror: leaf {}: {}",
                    a.label,
                    a.status
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| format!("not reached ({})", a.text))
                );
            }
            answers
        }
        Err(e) => {
            crate::errln!("mirror: could not trigger the leaves: {e}");
            Vec::new()
        }
    }
}

/// Read a downstream list: one leaf base URL per line, `#` comments.
pub fn read_downstream(path: &std::path::Path) -> crate::base::error::Result<Vec<Receiver>> {
    use crate::base::error::IoContext;
    let text = std::fs::read_to_string(path).ctx("read", path)?;
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .map(|url| Receiver {
            label: url.to_string(),
            url: Some(url.to_string()),
            target: "*".into(),
        })
        .collect())
}

/// Register `POST /trigger` for this leaf.
pub fn configure(leaf: Arc<Leaf>) -> impl Fn(&mut web::ServiceConfig) + Clone + Send + Sync {
    move |cfg: &mut web::ServiceConfig| {
        cfg.service(
            web::resource("/trigger")
                .app_data(web::Data::new(leaf.clone()))
                .app_data(web::PayloadConfig::new(trigger::MAX_TRIGGER * 2))
                .route(web::post().to(take)),
        );
    }
}

async fn take(req: HttpRequest, leaf: web::Data<Arc<Leaf>>, body: web::Bytes) -> HttpResponse {
    let sig = req
        .headers()
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let l = leaf.get_ref().clone();
    let r = web::block(move || {
        let db = l.ledger.lock().unwrap_or_else(|e| e.into_inner());
        trigger::accept(
            &body,
            sig.as_deref(),
            &l.trigger_keys,
            &["mirror"],
            &*db,
            std::time::SystemTime::now(),
        )
    })
    .await;
    let text = |status: u16, s: String| {
        HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap_or_default())
            .content_type("text/plain; charset=utf-8")
            .body(s + "\n")
    };
    match r {
        Ok(Ok(Ok(_))) => {
            let l = leaf.get_ref().clone();
            std::thread::spawn(move || l.run());
            text(202, format!("syncing from {}", leaf.from))
        }
        // Within the rate limit, triggers fold into one sync at its end: a flood costs one
        // sync, and no change pushed from upstream is lost.
        Ok(Ok(Err(refusal))) if refusal.status == 429 => {
            let wait = refusal.retry_after.unwrap_or(1);
            let l = leaf.get_ref().clone();
            if !l.queued.swap(true, Ordering::SeqCst) {
                std::thread::spawn(move || {
                    std::thread::sleep(std::time::Duration::from_secs(wait));
                    l.queued.store(false, Ordering::SeqCst);
                    l.run();
                });
            }
            text(
                202,
                format!("queued: one sync in {wait} s for every trigger until then"),
            )
        }
        Ok(Ok(Err(refusal))) => text(refusal.status, refusal.why),
        Ok(Err(e)) => text(500, e.to_string()),
        Err(_) => text(500, "the trigger could not be checked".into()),
    }
}
