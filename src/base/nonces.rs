//! Trigger nonces seen lately: the table `trigger_nonces`, so that a trigger is accepted once.
//! It lives in a site's state.db and in a reference's fleet database (for mirrors taking
//! triggers).

use crate::args;
use crate::base::error::Result;
use crate::base::sql::Sql;

/// The table, for any database that takes triggers.
pub const NONCE_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS trigger_nonces(nonce TEXT PRIMARY KEY, at INTEGER NOT NULL);";

/// Record `nonce` at `now` in `db`; false when it was seen already. Nonces older than
/// `forget` are dropped (a trigger that old is refused as stale anyway).
pub fn use_nonce_in(db: &impl Sql, nonce: &str, now: i64, forget: i64) -> Result<bool> {
    db.tx(|| {
        db.run("DELETE FROM trigger_nonces WHERE at < ?1", args![forget])?;
        let n = db.run(
            "INSERT INTO trigger_nonces(nonce, at) VALUES(?1, ?2) ON CONFLICT DO NOTHING",
            args![nonce, now],
        )?;
        Ok(n == 1)
    })
}
