//! The publisher's side of a fleet: the fleet database of enrolled sites and their reports
//! (`db`), its endpoints (`server`) and page (`page`), rollouts on channels (`rollout`,
//! steered by `pilot`), and the big red button (`push`).

pub mod db;
pub mod page;
pub mod pilot;
pub mod push;
pub mod rollout;
pub mod server;

use std::sync::Mutex;

/// The open fleet database, shared by the workers, and the pilot when the server holds an
/// online key.
pub struct Fleet {
    /// The database.
    pub db: Mutex<db::FleetDb>,
    /// Steers rollouts.
    pub pilot: Option<pilot::Pilot>,
    /// The repository folder (its channels, for the fleet page).
    pub repo: std::path::PathBuf,
    /// When each channel was last steered after a report, and what that took.
    pub last_steer:
        Mutex<std::collections::HashMap<String, (std::time::Instant, std::time::Duration)>>,
    /// Webhooks told of rollout moves and failed sites.
    pub notify: Notify,
}

/// The publisher's webhooks (`upkeep reference --notify URL --notify-secret-file FILE`).
#[derive(Clone, Debug, Default)]
pub struct Notify {
    /// Receivers.
    pub urls: Vec<String>,
    /// The shared secret the bodies are signed with.
    pub secret: Option<Vec<u8>>,
}

/// Something the publisher's webhooks are told.
#[derive(Debug, serde::Serialize)]
pub struct Event {
    /// `rollout_halted`, `wave_advanced`, `rollout_complete`, `rollout_refreshed` or
    /// `site_failed`.
    pub event: &'static str,
    /// The channel.
    pub channel: String,
    /// The release concerned.
    pub release: String,
    /// One line a chat shows as it is.
    pub text: String,
    /// The site, for `site_failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// The step a failed site stopped at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<String>,
    /// Why (the rollout's reason, or the site's).
    pub reason: String,
    /// When (RFC 3339).
    pub at: String,
}

impl Fleet {
    /// Steer every channel now (at start and on the timer); what was done goes to the log and
    /// the webhooks.
    pub fn steer_all(&self) {
        let Some(p) = &self.pilot else { return };
        let db = self.db.lock().unwrap_or_else(|e| e.into_inner());
        let r = db.steering(|| {
            let done = p.steer_all(&db)?;
            for s in &done {
                if let Some(e) = s.event() {
                    self.tell(&db, &e);
                }
            }
            Ok(done)
        });
        match r {
            Ok(done) => {
                for s in done {
                    crate::errln!("rollout: {}", s.line);
                }
            }
            Err(e) => crate::errln!("rollout: could not steer: {e}"),
        }
    }

    /// Queue `e` for every webhook (a failure to queue is logged: it never stops a report).
    pub fn tell(&self, db: &db::FleetDb, e: &Event) {
        let body = serde_json::to_string(e).expect("an event serialises");
        for u in &self.notify.urls {
            if let Err(err) = db.queue_notify(u, &body) {
                crate::errln!("webhook {u}: not queued: {err}");
            }
        }
    }

    /// Deliver the webhooks due, oldest first; a receiver that does not take one is tried
    /// again later, with a growing pause. The database is not held while a receiver answers.
    pub fn deliver_due(&self) {
        if self.notify.urls.is_empty() {
            return;
        }
        let due = {
            let db = self.db.lock().unwrap_or_else(|e| e.into_inner());
            db.queued_notify().unwrap_or_default()
        };
        if !due.iter().any(|d| d.due) {
            return;
        }
        let Ok(client) = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
        else {
            return;
        };
        let mut down: Vec<String> = Vec::new();
        for db::Delivery {
            id,
            url,
            body,
            attempts,
            due: now,
        } in due
        {
            // One receiver down does not hold the others back; its own deliveries keep their
            // order (one waiting for its retry holds back those after it).
            let mine = || {
                let db = self.db.lock().unwrap_or_else(|e| e.into_inner());
                db.claim_notify(id).unwrap_or(false)
            };
            if down.contains(&url) || !now || !mine() {
                down.push(url);
                continue;
            }
            let r = crate::client::webhook::deliver(
                &client,
                &url,
                self.notify.secret.as_deref(),
                &body,
            );
            let db = self.db.lock().unwrap_or_else(|e| e.into_inner());
            let _ = match r {
                Ok(()) => db.notify_sent(id),
                Err(e) => {
                    crate::errln!("webhook {url}: {e}; tried again later");
                    down.push(url);
                    db.notify_failed(id, attempts, &e)
                }
            };
        }
    }
}
