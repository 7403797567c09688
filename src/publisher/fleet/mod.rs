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

/// Successes steer a channel at most this often (the timer catches up); failures always do,
/// so a bad release halts at the report that crosses the threshold. Other reports (installing,
/// held, up to date...) move nothing: the timer sees them.
pub const STEER_EVERY: std::time::Duration = std::time::Duration::from_millis(200);
/// ... and no sooner than this many times what the last steer of the channel took.
pub const STEER_COST_SHARE: u32 = 5;

/// The open fleet database, shared by the workers, and the pilot when the server holds an
/// online key.
pub struct Fleet {
    /// The database.
    pub db: Mutex<db::FleetDb>,
    /// Steers rollouts.
    pub pilot: Option<pilot::Pilot>,
    /// The repository folder (its channels, for the fleet page).
    pub repo: std::path::PathBuf,
    /// When each channel was last steered, and what that took.
    pub last_steer: Mutex<std::collections::HashMap<String, LastSteer>>,
    /// Webhooks told of rollout moves and failed sites.
    pub notify: Notify,
}

/// When a channel was last steered (see [`Fleet::steer_due`]).
#[derive(Debug, Default)]
pub struct LastSteer {
    /// Last steered, for any reason.
    pub at: Option<std::time::Instant>,
    /// What that took.
    pub cost: std::time::Duration,
    /// Last steered after a success.
    pub success_at: Option<std::time::Instant>,
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
    /// Run `steer` as the one server steering the fleet now ([`db::FleetDb::steering`]), this
    /// server's channel pointers made the same as the fleet's first and after (on a shared
    /// fleet, each server may serve a repository folder of its own). `None` when `wait` is
    /// false and another server is steering.
    pub fn steering<T>(
        &self,
        db: &db::FleetDb,
        wait: bool,
        steer: impl FnOnce() -> crate::base::error::Result<T>,
    ) -> crate::base::error::Result<Option<T>> {
        use crate::base::sql::Sql;
        db.steering(wait, || {
            if db.is_postgres() {
                self.sync_channels(db)?;
            }
            let r = steer()?;
            if db.is_postgres() {
                self.sync_channels(db)?;
            }
            Ok(r)
        })
    }

    /// Make this server's channel pointers and the fleet database's the same, each way by
    /// serial: a pointer this folder has later (the pilot moved it, a publisher ran `upkeep
    /// rollout` here) goes into the database; one the database has later is written into the
    /// folder, when a key the release key delegated signed it (a pointer another server wrote,
    /// never one the database alone vouches for).
    pub fn sync_channels(&self, db: &db::FleetDb) -> crate::base::error::Result<()> {
        use crate::base::error::IoContext;
        use crate::documents::channel::{channel_path, channel_sig_path};
        let mut kept: std::collections::HashMap<String, (i64, String, String)> = db
            .channel_docs()?
            .into_iter()
            .map(|(n, serial, doc, sig)| (n, (serial, doc, sig)))
            .collect();
        // This folder's pointers, each read once: serial, document, signature.
        let mut ours = std::collections::HashMap::new();
        for name in rollout::channels(&self.repo) {
            if let Some(p) = rollout::read_channel(&self.repo, &name)? {
                let read = |rel: String| {
                    let p = self.repo.join(rel);
                    std::fs::read_to_string(&p).ctx("read", &p)
                };
                let (doc, sig) = (read(channel_path(&name))?, read(channel_sig_path(&name))?);
                ours.insert(name, (p.serial as i64, doc, sig));
            }
        }
        for (name, (serial, doc, sig)) in &ours {
            if kept.get(name).is_none_or(|k| *serial > k.0) {
                db.put_channel_doc(name, *serial, doc, sig)?;
                kept.remove(name);
            }
        }
        let delegated: Vec<crate::documents::manifest::PublicKey> =
            rollout::read_delegation(&self.repo)?
                .map(|(d, _)| d.online_keys)
                .unwrap_or_default()
                .iter()
                .filter_map(|k| crate::documents::manifest::PublicKey::parse(k).ok())
                .collect();
        let mut wrote = false;
        for (name, (serial, doc, sig)) in kept {
            let mine = ours.get(&name);
            if crate::documents::channel::check_channel_name(&name).is_err()
                || mine.is_some_and(|m| m.0 >= serial)
            {
                continue;
            }
            let signed = delegated
                .iter()
                .any(|k| k.verify(doc.as_bytes(), &sig, "channel pointer").is_ok());
            if !signed {
                // What this folder has, signed, takes its place, so that the others' next
                // moves can be shared again.
                crate::errln!(
                    "rollout: the fleet database held a pointer of channel {name} (serial {serial}) that no delegated online key signed: not served, replaced by this server's"
                );
                if let Some((serial, doc, sig)) = mine {
                    db.replace_channel_doc(&name, *serial, doc, sig)?;
                }
                continue;
            }
            // The signature first, as `upkeep rollout` writes them: a pointer is never served
            // beside an older one's signature for long.
            crate::base::fsutil::write_atomic(
                &self.repo.join(channel_sig_path(&name)),
                sig.as_bytes(),
            )?;
            crate::base::fsutil::write_atomic(
                &self.repo.join(channel_path(&name)),
                doc.as_bytes(),
            )?;
            wrote = true;
        }
        if wrote {
            rollout::write_channel_index(&self.repo)?;
        }
        Ok(())
    }

    /// Whether a channel is due to be steered now (and if so it counts as steered now): always
    /// after a failure; else no sooner than [`STEER_COST_SHARE`] times what its last steer took
    /// (a steer reads every site of the channel: in a fleet of 100,000 it takes seconds, and
    /// steering must not crowd out the reports), and after a success (`timer` false) no more
    /// often than every [`STEER_EVERY`] either.
    pub fn steer_due(&self, channel: &str, failed: bool, timer: bool) -> bool {
        let mut last = self.last_steer.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        let l = last.entry(channel.to_string()).or_default();
        let since = |t: Option<std::time::Instant>| t.map(|t| now.duration_since(t));
        let share = l.cost * STEER_COST_SHARE;
        // A cheap steer (a small fleet) is never put off for another: a success right after
        // the timer steered still steers, the timer having read the database before it.
        let spaced = share <= STEER_EVERY || since(l.at).is_none_or(|d| d >= share);
        let due = failed
            || if timer {
                since(l.at).is_none_or(|d| d >= share)
            } else {
                spaced && since(l.success_at).is_none_or(|d| d >= STEER_EVERY.max(share))
            };
        if due {
            l.at = Some(now);
            if !timer {
                l.success_at = Some(now);
            }
        }
        due
    }

    /// What steering `channel` took, from `started`.
    pub fn steer_cost(&self, channel: &str, started: std::time::Instant) {
        if let Some(l) = self
            .last_steer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(channel)
        {
            l.cost = started.elapsed();
        }
    }

    /// Steer every channel due now (at start and on the timer); what was done goes to the log
    /// and the webhooks. A server without the online key still takes the fleet's pointers.
    pub fn steer_all(&self) {
        let db = self.db.lock().unwrap_or_else(|e| e.into_inner());
        let due: Vec<String> = match &self.pilot {
            Some(_) => rollout::channels(&self.repo)
                .into_iter()
                .filter(|c| self.steer_due(c, false, true))
                .collect(),
            None => Vec::new(),
        };
        let (Some(p), false) = (&self.pilot, due.is_empty()) else {
            // Not steering now: still take the others' pointers (taking them decides
            // nothing: a later serial wins, checked against the delegated keys). Steering
            // takes them itself, under the lock.
            if crate::base::sql::Sql::is_postgres(&*db)
                && let Err(e) = self.sync_channels(&db)
            {
                crate::errln!("rollout: could not take the fleet's channel pointers: {e}");
            }
            return;
        };
        let t0 = std::time::Instant::now();
        let r = self.steering(&db, false, || {
            let mut done = Vec::new();
            for c in &due {
                if let Some(s) = p.steer(&db, c)? {
                    if let Some(e) = s.event() {
                        self.tell(&db, &e);
                    }
                    done.push(s);
                }
            }
            Ok(done)
        });
        // Shared among the channels steered: enough to keep the next ones apart.
        for c in &due {
            self.steer_cost(c, t0);
        }
        match r {
            Ok(done) => {
                for s in done.into_iter().flatten() {
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
