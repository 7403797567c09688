//! Accounts, sessions and failed logins: the tables `accounts`, `sessions` and
//! `login_failures`, in any SQLite database that holds them. The rules (hashing, throttling,
//! expiry) live with the accounts module above this one.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use crate::base::clock::now_text;
use crate::base::error::{DbContext, Result};

/// A logged-in operator.
#[derive(Clone, Debug)]
pub struct Session {
    /// The cookie value.
    pub id: String,
    /// The account.
    pub account: String,
    /// The token every form posts back.
    pub csrf: String,
}

/// Failed logins recorded for one key (an address or an account) since some time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FailureCount {
    /// How many.
    pub count: i64,
    /// When the last one was, in seconds since the epoch.
    pub last_at: Option<i64>,
}

/// The account tables, for any database that holds them: a site's state.db (the panel) and
/// the reference's fleet database (the fleet page).
pub const ACCOUNT_TABLES: &str = "
CREATE TABLE IF NOT EXISTS accounts(name TEXT PRIMARY KEY, hash TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions(id TEXT PRIMARY KEY, account TEXT NOT NULL, csrf TEXT NOT NULL,
    created_at INTEGER NOT NULL, seen_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS login_failures(key TEXT NOT NULL, at INTEGER NOT NULL);
";

/// Accounts, sessions and failed logins, stored in a database with [`ACCOUNT_TABLES`].
pub trait AccountStore {
    /// The connection and the file it is on (for error messages).
    fn db(&self) -> (&Connection, &Path);

    /// The password hash of an account.
    fn account_hash(&self, name: &str) -> Result<Option<String>> {
        self.db()
            .0
            .query_row("SELECT hash FROM accounts WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .db(self.db().1)
    }

    /// Create an account; false when the name is taken.
    fn insert_account(&self, name: &str, hash: &str) -> Result<bool> {
        let n = self
            .db()
            .0
            .execute(
                "INSERT OR IGNORE INTO accounts(name, hash, created_at) VALUES(?1, ?2, ?3)",
                params![name, hash, now_text()],
            )
            .db(self.db().1)?;
        Ok(n == 1)
    }

    /// Replace an account's hash and end its sessions; false when there is no such account.
    fn set_account_hash(&self, name: &str, hash: &str) -> Result<bool> {
        let tx = self.db().0.unchecked_transaction().db(self.db().1)?;
        let n = tx
            .execute(
                "UPDATE accounts SET hash = ?2 WHERE name = ?1",
                params![name, hash],
            )
            .db(self.db().1)?;
        tx.execute("DELETE FROM sessions WHERE account = ?1", [name])
            .db(self.db().1)?;
        tx.commit().db(self.db().1)?;
        Ok(n == 1)
    }

    /// Forget failures older than `before`.
    fn prune_failures(&self, before: i64) -> Result<()> {
        self.db()
            .0
            .execute("DELETE FROM login_failures WHERE at < ?1", [before])
            .db(self.db().1)?;
        Ok(())
    }

    /// The failures recorded for `key`.
    fn failures(&self, key: &str) -> Result<FailureCount> {
        self.db()
            .0
            .query_row(
                "SELECT count(*), max(at) FROM login_failures WHERE key = ?1",
                [key],
                |r| {
                    Ok(FailureCount {
                        count: r.get(0)?,
                        last_at: r.get(1)?,
                    })
                },
            )
            .db(self.db().1)
    }

    /// Record a failure for `key` at `at`.
    fn add_failure(&self, key: &str, at: i64) -> Result<()> {
        self.db()
            .0
            .execute(
                "INSERT INTO login_failures(key, at) VALUES(?1, ?2)",
                params![key, at],
            )
            .db(self.db().1)?;
        Ok(())
    }

    /// Forget the failures of `key`.
    fn clear_failures(&self, key: &str) -> Result<()> {
        self.db()
            .0
            .execute("DELETE FROM login_failures WHERE key = ?1", [key])
            .db(self.db().1)?;
        Ok(())
    }

    /// Record a new session started at `at`.
    fn insert_session(&self, s: &Session, at: i64) -> Result<()> {
        self.db().0
            .execute(
                "INSERT INTO sessions(id, account, csrf, created_at, seen_at) VALUES(?1, ?2, ?3, ?4, ?4)",
                params![s.id, s.account, s.csrf, at],
            )
            .db(self.db().1)?;
        Ok(())
    }

    /// A session with when it was created and last seen.
    fn session_row(&self, id: &str) -> Result<Option<(Session, i64, i64)>> {
        self.db()
            .0
            .query_row(
                "SELECT account, csrf, created_at, seen_at FROM sessions WHERE id = ?1",
                [id],
                |r| {
                    Ok((
                        Session {
                            id: id.to_string(),
                            account: r.get(0)?,
                            csrf: r.get(1)?,
                        },
                        r.get(2)?,
                        r.get(3)?,
                    ))
                },
            )
            .optional()
            .db(self.db().1)
    }

    /// A session was used at `at`.
    fn touch_session(&self, id: &str, at: i64) -> Result<()> {
        self.db()
            .0
            .execute(
                "UPDATE sessions SET seen_at = ?2 WHERE id = ?1",
                params![id, at],
            )
            .db(self.db().1)?;
        Ok(())
    }

    /// End a session.
    fn delete_session(&self, id: &str) -> Result<()> {
        self.db()
            .0
            .execute("DELETE FROM sessions WHERE id = ?1", [id])
            .db(self.db().1)?;
        Ok(())
    }
}
