//! The trigger nonces of state.db (the table is [`crate::base::nonces::NONCE_TABLE`]).

use super::State;
use crate::base::error::Result;
use crate::base::nonces::use_nonce_in;

impl State {
    /// [`use_nonce_in`] on state.db.
    pub fn use_nonce(&self, nonce: &str, now: i64, forget: i64) -> Result<bool> {
        use_nonce_in(self, nonce, now, forget)
    }
}
