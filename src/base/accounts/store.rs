//! Accounts, sessions and failed logins: the tables `accounts`, `sessions` and
//! `login_failures`, in any database of upkeep's own that holds them (SQLite or PostgreSQL). The rules (hashing, throttling,
//! expiry) live with the accounts module above this one.

use crate::args;
use crate::base::clock::now_text;
use crate::base::error::Result;
use crate::base::sql::Sql;

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
pub trait AccountStore: Sql + Sized {
    /// The password hash of an account.
    fn account_hash(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .row("SELECT hash FROM accounts WHERE name = ?1", args![name])?
            .map(|mut r| r[0].text()))
    }

    /// Create an account; false when the name is taken.
    fn insert_account(&self, name: &str, hash: &str) -> Result<bool> {
        let n = self.run(
            "INSERT INTO accounts(name, hash, created_at) VALUES(?1, ?2, ?3) ON CONFLICT DO NOTHING",
            args![name, hash, &now_text()],
        )?;
        Ok(n == 1)
    }

    /// Replace an account's hash and end its sessions; false when there is no such account.
    fn set_account_hash(&self, name: &str, hash: &str) -> Result<bool> {
        self.tx(|| {
            let n = self.run(
                "UPDATE accounts SET hash = ?2 WHERE name = ?1",
                args![name, hash],
            )?;
            self.run("DELETE FROM sessions WHERE account = ?1", args![name])?;
            Ok(n == 1)
        })
    }

    /// Forget failures older than `before`.
    fn prune_failures(&self, before: i64) -> Result<()> {
        self.run("DELETE FROM login_failures WHERE at < ?1", args![before])?;
        Ok(())
    }

    /// The failures recorded for `key`.
    fn failures(&self, key: &str) -> Result<FailureCount> {
        let r = self.row(
            "SELECT count(*), max(at) FROM login_failures WHERE key = ?1",
            args![key],
        )?;
        Ok(r.map(|r| FailureCount {
            count: r[0].int(),
            last_at: r[1].opt_int(),
        })
        .unwrap_or_default())
    }

    /// Record a failure for `key` at `at`.
    fn add_failure(&self, key: &str, at: i64) -> Result<()> {
        self.run(
            "INSERT INTO login_failures(key, at) VALUES(?1, ?2)",
            args![key, at],
        )?;
        Ok(())
    }

    /// Forget the failures of `key`.
    fn clear_failures(&self, key: &str) -> Result<()> {
        self.run("DELETE FROM login_failures WHERE key = ?1", args![key])?;
        Ok(())
    }

    /// Record a new session started at `at`.
    fn insert_session(&self, s: &Session, at: i64) -> Result<()> {
        self.run(
            "INSERT INTO sessions(id, account, csrf, created_at, seen_at) VALUES(?1, ?2, ?3, ?4, ?4)",
            args![&s.id, &s.account, &s.csrf, at],
        )?;
        Ok(())
    }

    /// A session with when it was created and last seen.
    fn session_row(&self, id: &str) -> Result<Option<(Session, i64, i64)>> {
        Ok(self
            .row(
                "SELECT account, csrf, created_at, seen_at FROM sessions WHERE id = ?1",
                args![id],
            )?
            .map(|mut r| {
                (
                    Session {
                        id: id.to_string(),
                        account: r[0].text(),
                        csrf: r[1].text(),
                    },
                    r[2].int(),
                    r[3].int(),
                )
            }))
    }

    /// A session was used at `at`.
    fn touch_session(&self, id: &str, at: i64) -> Result<()> {
        self.run(
            "UPDATE sessions SET seen_at = ?2 WHERE id = ?1",
            args![id, at],
        )?;
        Ok(())
    }

    /// End a session.
    fn delete_session(&self, id: &str) -> Result<()> {
        self.run("DELETE FROM sessions WHERE id = ?1", args![id])?;
        Ok(())
    }
}
