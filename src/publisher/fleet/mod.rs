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
    /// When each channel was last steered after a report.
    pub last_steer: Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

impl Fleet {
    /// Steer every channel now (at start and on the timer); what was done goes to the log.
    pub fn steer_all(&self) {
        let Some(p) = &self.pilot else { return };
        let db = self.db.lock().unwrap_or_else(|e| e.into_inner());
        match p.steer_all(&db) {
            Ok(done) => done.iter().for_each(|l| crate::errln!("rollout: {l}")),
            Err(e) => crate::errln!("rollout: could not steer: {e}"),
        }
    }
}
