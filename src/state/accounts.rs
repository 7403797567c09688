//! Panel accounts, sessions and failed logins: the tables `accounts`, `sessions` and
//! `login_failures`. The rules (hashing, throttling, expiry) live with the accounts module
//! above this one.

use rusqlite::{OptionalExtension, params};

use super::State;
use crate::clock::now_text;
use crate::error::{DbContext, Result};

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

impl State {
    /// The password hash of an account.
    pub fn account_hash(&self, name: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT hash FROM accounts WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .db(&self.path)
    }

    /// Create an account; false when the name is taken.
    pub fn insert_account(&self, name: &str, hash: &str) -> Result<bool> {
        let n = self
            .conn
            .execute(
                "INSERT OR IGNORE INTO accounts(name, hash, created_at) VALUES(?1, ?2, ?3)",
                params![name, hash, now_text()],
            )
            .db(&self.path)?;
        Ok(n == 1)
    }

    /// Replace an account's hash and end its sessions; false when there is no such account.
    pub fn set_account_hash(&self, name: &str, hash: &str) -> Result<bool> {
        let tx = self.conn.unchecked_transaction().db(&self.path)?;
        let n = tx
            .execute(
                "UPDATE accounts SET hash = ?2 WHERE name = ?1",
                params![name, hash],
            )
            .db(&self.path)?;
        tx.execute("DELETE FROM sessions WHERE account = ?1", [name])
            .db(&self.path)?;
        tx.commit().db(&self.path)?;
        Ok(n == 1)
    }

    /// Forget failures older than `before`.
    pub fn prune_failures(&self, before: i64) -> Result<()> {
        self.conn
            .execute("DELETE FROM login_failures WHERE at < ?1", [before])
            .db(&self.path)?;
        Ok(())
    }

    /// The failures recorded for `key`.
    pub fn failures(&self, key: &str) -> Result<FailureCount> {
        self.conn
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
            .db(&self.path)
    }

    /// Record a failure for `key` at `at`.
    pub fn add_failure(&self, key: &str, at: i64) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO login_failures(key, at) VALUES(?1, ?2)",
                params![key, at],
            )
            .db(&self.path)?;
        Ok(())
    }

    /// Forget the failures of `key`.
    pub fn clear_failures(&self, key: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM login_failures WHERE key = ?1", [key])
            .db(&self.path)?;
        Ok(())
    }

    /// Record a new session started at `at`.
    pub fn insert_session(&self, s: &Session, at: i64) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO sessions(id, account, csrf, created_at, seen_at) VALUES(?1, ?2, ?3, ?4, ?4)",
                params![s.id, s.account, s.csrf, at],
            )
            .db(&self.path)?;
        Ok(())
    }

    /// A session with when it was created and last seen.
    pub fn session_row(&self, id: &str) -> Result<Option<(Session, i64, i64)>> {
        self.conn
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
            .db(&self.path)
    }

    /// A session was used at `at`.
    pub fn touch_session(&self, id: &str, at: i64) -> Result<()> {
        self.conn
            .execute(
                "UPDATE sessions SET seen_at = ?2 WHERE id = ?1",
                params![id, at],
            )
            .db(&self.path)?;
        Ok(())
    }

    /// End a session.
    pub fn delete_session(&self, id: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM sessions WHERE id = ?1", [id])
            .db(&self.path)?;
        Ok(())
    }
}
