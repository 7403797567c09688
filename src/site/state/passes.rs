//! Unattended passes and what waits to go out: the tables `passes`, `mail_queue` and
//! `report_queue` (signed fleet reports).

use rusqlite::params;

use super::State;
use crate::base::clock::now_text;
use crate::base::error::{DbContext, Result};

/// Passes kept; older ones are dropped as new ones come.
const KEEP_PASSES: i64 = 500;
/// Reports kept waiting; the oldest go first when an SMTP server stays down for months.
const KEEP_MAIL: i64 = 100;

/// A report that could not be sent yet.
#[derive(Clone, Debug)]
pub struct QueuedMail {
    /// Its number.
    pub id: i64,
    /// When the pass made it.
    pub created_at: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
    /// Sending attempts so far.
    pub attempts: i64,
}

impl State {
    /// Keep a pass (`data` is its JSON), dropping the oldest beyond the limit; returns its id.
    pub fn record_pass(&self, at: &str, decision: &str, data: &str) -> Result<i64> {
        self.in_transaction(|| {
            self.conn
                .execute(
                    "INSERT INTO passes(at, decision, data) VALUES(?1, ?2, ?3)",
                    params![at, decision, data],
                )
                .db(&self.path)?;
            self.conn
                .execute(
                    "DELETE FROM passes WHERE id <= (SELECT max(id) FROM passes) - ?1",
                    [KEEP_PASSES],
                )
                .db(&self.path)?;
            Ok(self.conn.last_insert_rowid())
        })
    }

    /// Replace a recorded pass's JSON (to add what happened to its mail).
    pub fn update_pass(&self, id: i64, data: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE passes SET data = ?2 WHERE id = ?1",
                params![id, data],
            )
            .db(&self.path)?;
        Ok(())
    }

    /// The last `limit` passes as recorded (JSON), newest first.
    pub fn passes(&self, limit: usize) -> Result<Vec<serde_json::Value>> {
        let mut st = self
            .conn
            .prepare("SELECT data FROM passes ORDER BY id DESC LIMIT ?1")
            .db(&self.path)?;
        let rows: Vec<String> = st
            .query_map([limit as i64], |r| r.get(0))
            .db(&self.path)?
            .collect::<rusqlite::Result<_>>()
            .db(&self.path)?;
        Ok(rows
            .iter()
            .filter_map(|d| serde_json::from_str(d).ok())
            .collect())
    }

    /// Put a report in the queue.
    pub fn queue_mail(&self, subject: &str, body: &str) -> Result<()> {
        self.in_transaction(|| {
            self.conn
                .execute(
                    "INSERT INTO mail_queue(created_at, subject, body) VALUES(?1, ?2, ?3)",
                    params![now_text(), subject, body],
                )
                .db(&self.path)?;
            self.conn
                .execute(
                    "DELETE FROM mail_queue WHERE id <= (SELECT max(id) FROM mail_queue) - ?1",
                    [KEEP_MAIL],
                )
                .db(&self.path)?;
            Ok(())
        })
    }

    /// Reports waiting, oldest first.
    pub fn queued_mail(&self) -> Result<Vec<QueuedMail>> {
        let mut st = self
            .conn
            .prepare("SELECT id, created_at, subject, body, attempts FROM mail_queue ORDER BY id")
            .db(&self.path)?;
        st.query_map([], |r| {
            Ok(QueuedMail {
                id: r.get(0)?,
                created_at: r.get(1)?,
                subject: r.get(2)?,
                body: r.get(3)?,
                attempts: r.get(4)?,
            })
        })
        .db(&self.path)?
        .collect::<rusqlite::Result<_>>()
        .db(&self.path)
    }

    /// A report went out.
    pub fn mail_sent(&self, id: i64) -> Result<()> {
        self.conn
            .execute("DELETE FROM mail_queue WHERE id = ?1", [id])
            .db(&self.path)?;
        Ok(())
    }

    /// A report could not go out this time.
    pub fn mail_failed(&self, id: i64, error: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE mail_queue SET attempts = attempts + 1, last_error = ?2 WHERE id = ?1",
                params![id, error],
            )
            .db(&self.path)?;
        Ok(())
    }

    /// Put a webhook delivery in the queue (the newest [`KEEP_MAIL`] are kept).
    pub fn queue_notify(&self, url: &str, body: &str) -> Result<()> {
        self.in_transaction(|| {
            self.conn
                .execute(
                    "INSERT INTO notify_queue(created_at, url, body) VALUES(?1, ?2, ?3)",
                    params![now_text(), url, body],
                )
                .db(&self.path)?;
            self.conn
                .execute(
                    "DELETE FROM notify_queue WHERE id <= (SELECT max(id) FROM notify_queue) - ?1",
                    [KEEP_MAIL],
                )
                .db(&self.path)?;
            Ok(())
        })
    }

    /// Webhook deliveries waiting, oldest first: id, url, body, attempts.
    pub fn queued_notify(&self) -> Result<Vec<(i64, String, String, i64)>> {
        let mut st = self
            .conn
            .prepare("SELECT id, url, body, attempts FROM notify_queue ORDER BY id")
            .db(&self.path)?;
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .db(&self.path)?
            .collect::<rusqlite::Result<_>>()
            .db(&self.path)
    }

    /// A webhook delivery went out.
    pub fn notify_sent(&self, id: i64) -> Result<()> {
        self.conn
            .execute("DELETE FROM notify_queue WHERE id = ?1", [id])
            .db(&self.path)?;
        Ok(())
    }

    /// A webhook delivery could not go out this time.
    pub fn notify_failed(&self, id: i64, error: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE notify_queue SET attempts = attempts + 1, last_error = ?2 WHERE id = ?1",
                params![id, error],
            )
            .db(&self.path)?;
        Ok(())
    }

    /// The next report number (1, 2, ...): the reference refuses a number it has seen.
    pub fn next_report_seq(&self) -> Result<u64> {
        let n = self
            .meta("report_seq")?
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        self.set_meta("report_seq", &n.to_string())?;
        Ok(n)
    }

    /// Put a report (its JSON) in the queue.
    pub fn queue_report(&self, body: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO report_queue(created_at, body) VALUES(?1, ?2)",
                params![now_text(), body],
            )
            .db(&self.path)?;
        Ok(())
    }

    /// Reports waiting, oldest first: (id, body, attempts).
    pub fn queued_reports(&self) -> Result<Vec<(i64, String, i64)>> {
        let mut st = self
            .conn
            .prepare("SELECT id, body, attempts FROM report_queue ORDER BY id")
            .db(&self.path)?;
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .db(&self.path)?
            .collect::<rusqlite::Result<_>>()
            .db(&self.path)
    }

    /// A report went out (or the reference already had it).
    pub fn report_sent(&self, id: i64) -> Result<()> {
        self.conn
            .execute("DELETE FROM report_queue WHERE id = ?1", [id])
            .db(&self.path)?;
        Ok(())
    }

    /// A report could not go out this time.
    pub fn report_failed(&self, id: i64, error: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE report_queue SET attempts = attempts + 1, last_error = ?2 WHERE id = ?1",
                params![id, error],
            )
            .db(&self.path)?;
        Ok(())
    }
}
