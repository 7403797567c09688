//! Trigger nonces seen lately: the table `trigger_nonces`, so that a trigger is accepted once.

use rusqlite::params;

use super::State;
use crate::error::{DbContext, Result};

impl State {
    /// Record `nonce` at `now`; false when it was seen already. Nonces older than `forget`
    /// are dropped (a trigger that old is refused as stale anyway).
    pub fn use_nonce(&self, nonce: &str, now: i64, forget: i64) -> Result<bool> {
        self.in_transaction(|| {
            self.conn
                .execute("DELETE FROM trigger_nonces WHERE at < ?1", [forget])
                .db(&self.path)?;
            let n = self
                .conn
                .execute(
                    "INSERT OR IGNORE INTO trigger_nonces(nonce, at) VALUES(?1, ?2)",
                    params![nonce, now],
                )
                .db(&self.path)?;
            Ok(n == 1)
        })
    }
}
