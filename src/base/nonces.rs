//! Trigger nonces seen lately: the table `trigger_nonces`, so that a trigger is accepted once.
//! It lives in a site's state.db and in a reference's fleet database (for mirrors taking
//! triggers).

use std::path::Path;

use rusqlite::{Connection, params};

use crate::base::error::{DbContext, Result};

/// The table, for any database that takes triggers.
pub const NONCE_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS trigger_nonces(nonce TEXT PRIMARY KEY, at INTEGER NOT NULL);";

/// Record `nonce` at `now` in `conn`; false when it was seen already. Nonces older than
/// `forget` are dropped (a trigger that old is refused as stale anyway).
pub fn use_nonce_in(
    conn: &Connection,
    path: &Path,
    nonce: &str,
    now: i64,
    forget: i64,
) -> Result<bool> {
    let tx = conn.unchecked_transaction().db(path)?;
    tx.execute("DELETE FROM trigger_nonces WHERE at < ?1", [forget])
        .db(path)?;
    let n = tx
        .execute(
            "INSERT OR IGNORE INTO trigger_nonces(nonce, at) VALUES(?1, ?2)",
            params![nonce, now],
        )
        .db(path)?;
    tx.commit().db(path)?;
    Ok(n == 1)
}
