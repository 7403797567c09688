//! The reference's fleet database: enrolment tokens, enrolled sites (id and public key), and
//! their signed reports. It lives beside the served repository, never inside it (nothing in it
//! is served as a file).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::Digest;

use crate::base::clock::{now_secs, now_text};
use crate::base::error::{DbContext, Error, Result};
use crate::documents::manifest::PublicKey;
use crate::documents::report::{Enrolment, Outcome, Report};

const SCHEMA: &str = "
PRAGMA journal_mode=WAL;
PRAGMA synchronous=NORMAL;
PRAGMA busy_timeout=5000;
CREATE TABLE IF NOT EXISTS tokens(hash TEXT PRIMARY KEY, created_at TEXT NOT NULL,
    expires_at INTEGER NOT NULL, uses_left INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sites(id TEXT PRIMARY KEY, public_key TEXT NOT NULL, name TEXT NOT NULL,
    groups TEXT NOT NULL, channel TEXT NOT NULL, enrolled_at TEXT NOT NULL,
    last_seq INTEGER NOT NULL DEFAULT 0, last_seen INTEGER, version TEXT, last_report TEXT,
    last_outcome TEXT, last_to TEXT, url TEXT);
CREATE TABLE IF NOT EXISTS reports(id INTEGER PRIMARY KEY, site_id TEXT NOT NULL, seq INTEGER NOT NULL,
    received_at INTEGER NOT NULL, outcome TEXT NOT NULL, to_version TEXT, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS reports_site ON reports(site_id, id);
CREATE TABLE IF NOT EXISTS outcomes(site_id TEXT NOT NULL, release TEXT NOT NULL, outcome TEXT NOT NULL,
    seq INTEGER NOT NULL, received_at INTEGER NOT NULL, PRIMARY KEY(site_id, release));
CREATE INDEX IF NOT EXISTS outcomes_release ON outcomes(release);
CREATE INDEX IF NOT EXISTS reports_about ON reports(site_id, to_version, id);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS notify_queue(id INTEGER PRIMARY KEY, created_at INTEGER NOT NULL, url TEXT NOT NULL,
    body TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at INTEGER NOT NULL, last_error TEXT);
";

/// A webhook delivery waiting in the fleet database.
#[derive(Debug)]
pub struct Delivery {
    /// Its row.
    pub id: i64,
    /// The receiver.
    pub url: String,
    /// The JSON.
    pub body: String,
    /// Tries so far.
    pub attempts: i64,
    /// Whether its next try is due now.
    pub due: bool,
}

/// Webhook deliveries kept waiting, the newest (a receiver down for days does not grow the
/// database without end).
const NOTIFY_KEPT: i64 = 1000;

/// The default place of a repository's fleet database: beside it (`/srv/repo` ->
/// `/srv/repo.fleet.db`).
pub fn default_path(repo: &Path) -> PathBuf {
    let name = repo
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "repo".into());
    repo.with_file_name(format!("{name}.fleet.db"))
}

/// Why a site's request was turned down: the HTTP status and a sentence.
#[derive(Debug)]
pub struct Refusal {
    /// 400, 401, 409.
    pub status: u16,
    /// What went wrong.
    pub why: String,
}

fn refuse(status: u16, why: impl Into<String>) -> Refusal {
    Refusal {
        status,
        why: why.into(),
    }
}

/// One row of `fleet status`.
#[derive(Debug, Clone, Serialize)]
pub struct SiteRow {
    /// The site id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its groups.
    pub groups: Vec<String>,
    /// Its channel.
    pub channel: String,
    /// The release it last said it has.
    pub version: Option<String>,
    /// What its last report said happened.
    pub outcome: Option<Outcome>,
    /// The release its last report was about.
    pub to: Option<String>,
    /// Its last report, whole (`None` in the light rows the pilot reads).
    pub last: Option<Report>,
    /// Seconds since it was last heard of.
    pub last_seen_secs: Option<i64>,
    /// Where it takes triggers.
    pub url: Option<String>,
    /// The number of its last report.
    pub last_seq: i64,
}

/// Reports one site may send in a minute: a pass or a run sends one or two; a site sending
/// in a loop (a bug, a stolen key) is answered 429 instead of growing the database.
pub const REPORTS_PER_MINUTE: i64 = 30;
/// Reports kept per site, the newest; older ones are dropped as new ones come.
pub const REPORTS_KEPT: i64 = 1000;
/// Reports older than this are dropped as new ones come (what happened to each release, per
/// site, stays: see [`FleetDb::outcomes`]).
pub const REPORTS_MAX_AGE_DAYS: i64 = 400;

/// What each site last said about one release (a failure stays until the site succeeds or
/// tries again: a later "held" does not hide it).
pub type Outcomes = std::collections::HashMap<String, Outcome>;

/// An open fleet database.
pub struct FleetDb {
    conn: Connection,
    path: PathBuf,
    /// [`REPORTS_PER_MINUTE`], [`REPORTS_KEPT`] and [`REPORTS_MAX_AGE_DAYS`] in seconds.
    limits: (i64, i64, i64),
}

fn token_hash(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.trim().as_bytes()))
}

impl FleetDb {
    /// Open (and create) the database.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path).db(path)?;
        conn.execute_batch(SCHEMA).db(path)?;
        conn.execute_batch(crate::base::accounts::ACCOUNT_TABLES)
            .db(path)?;
        conn.execute_batch(crate::base::nonces::NONCE_TABLE)
            .db(path)?;
        let db = FleetDb {
            conn,
            path: path.to_path_buf(),
            limits: (
                REPORTS_PER_MINUTE,
                REPORTS_KEPT,
                REPORTS_MAX_AGE_DAYS * 86_400,
            ),
        };
        // A database from before `outcomes`: what its kept reports say, once.
        if db.meta("outcomes_from_reports")?.is_none() {
            db.conn
                .execute_batch(
                    "INSERT OR IGNORE INTO outcomes(site_id, release, outcome, seq, received_at)
                     SELECT site_id, to_version, outcome, seq, received_at FROM reports r
                     WHERE to_version IS NOT NULL AND id = (SELECT max(id) FROM reports
                         WHERE site_id = r.site_id AND to_version = r.to_version)",
                )
                .db(path)?;
            db.set_meta("outcomes_from_reports", &now_text())?;
        }
        Ok(db)
    }

    /// Other limits of reports per site: per minute, and kept.
    pub fn with_limits(mut self, per_minute: i64, kept: i64) -> Self {
        self.limits.0 = per_minute;
        self.limits.1 = kept;
        self
    }

    /// Keep a site's reports this many days at most (and [`REPORTS_KEPT`] at most).
    pub fn with_max_age_days(mut self, days: i64) -> Self {
        self.limits.2 = days.max(1) * 86_400;
        self
    }

    /// A new enrolment token, valid `uses` times for `valid_secs`; returns the token (only its
    /// hash is kept).
    pub fn new_token(&self, uses: u32, valid_secs: u64) -> Result<String> {
        let mut raw = [0u8; 20];
        getrandom::getrandom(&mut raw).map_err(|e| Error::msg(format!("no random source: {e}")))?;
        let token = format!("upkeep-enrol-{}", hex::encode(raw));
        self.conn
            .execute(
                "INSERT INTO tokens(hash, created_at, expires_at, uses_left) VALUES(?1, ?2, ?3, ?4)",
                params![token_hash(&token), now_text(), now_secs() + valid_secs as i64, uses],
            )
            .db(&self.path)?;
        Ok(token)
    }

    /// Enrol a site with a token.
    pub fn enrol(&self, e: &Enrolment) -> Result<std::result::Result<(), Refusal>> {
        if PublicKey::parse(&e.public_key).is_err()
            || e.site_id.len() != 32
            || !e.site_id.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Ok(Err(refuse(
                400,
                "a site id (32 hex digits) and a public key are needed",
            )));
        }
        if let Err(why) = e.check() {
            return Ok(Err(refuse(400, format!("enrolment refused: {why}"))));
        }
        let hash = token_hash(&e.token);
        let tok: Option<(i64, i64)> = self
            .conn
            .query_row(
                "SELECT expires_at, uses_left FROM tokens WHERE hash = ?1",
                [&hash],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .db(&self.path)?;
        match tok {
            Some((exp, uses)) if exp > now_secs() && uses > 0 => {}
            Some(_) => {
                return Ok(Err(refuse(
                    401,
                    "this enrolment token is used up or expired: ask the publisher for a new one (`upkeep fleet token`)",
                )));
            }
            None => return Ok(Err(refuse(401, "unknown enrolment token"))),
        }
        let known: Option<String> = self
            .conn
            .query_row(
                "SELECT public_key FROM sites WHERE id = ?1",
                [&e.site_id],
                |r| r.get(0),
            )
            .optional()
            .db(&self.path)?;
        match known {
            Some(k) if k == e.public_key => {}
            Some(_) => {
                return Ok(Err(refuse(
                    409,
                    format!("site id {} is already enrolled with another key", e.site_id),
                )));
            }
            None => {
                self.conn
                    .execute(
                        "INSERT INTO sites(id, public_key, name, groups, channel, enrolled_at, url, version, last_seen) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                        params![
                            e.site_id,
                            e.public_key,
                            e.name,
                            serde_json::to_string(&e.groups).expect("strings serialise"),
                            e.channel,
                            now_text(),
                            e.url,
                            e.installed,
                            now_secs()
                        ],
                    )
                    .db(&self.path)?;
            }
        }
        self.conn
            .execute(
                "UPDATE tokens SET uses_left = uses_left - 1 WHERE hash = ?1",
                [&hash],
            )
            .db(&self.path)?;
        Ok(Ok(()))
    }

    /// Take a report: signed by the enrolled site's key, newer than any before from that site.
    pub fn accept(&self, body: &[u8], sig: &str) -> Result<std::result::Result<Report, Refusal>> {
        let report: Report = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return Ok(Err(refuse(400, format!("not a report: {e}")))),
        };
        let site: Option<(String, i64)> = self
            .conn
            .query_row(
                "SELECT public_key, last_seq FROM sites WHERE id = ?1",
                [&report.site_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .db(&self.path)?;
        let Some((key, last_seq)) = site else {
            return Ok(Err(refuse(
                401,
                "unknown site: enrol it first (`upkeep enroll`)",
            )));
        };
        let key = PublicKey::parse(&key)?;
        if key.verify(body, sig, "report").is_err() {
            return Ok(Err(refuse(
                401,
                "the report is not signed by this site's key",
            )));
        }
        if report.seq as i64 == last_seq {
            return Ok(Err(refuse(
                409,
                format!("report {} was already received", report.seq),
            )));
        }
        if (report.seq as i64) < last_seq {
            return Ok(Err(refuse(
                409,
                format!(
                    "report {} is older than the last one received ({last_seq}): refused as a possible replay (a site's reports are numbered in order)",
                    report.seq
                ),
            )));
        }
        if let Err(why) = report.check() {
            return Ok(Err(refuse(400, format!("report refused: {why}"))));
        }
        let now = now_secs();
        let (per_minute, kept, max_age) = self.limits;
        let lately: i64 = self
            .conn
            .query_row(
                "SELECT count(*) FROM reports WHERE site_id = ?1 AND received_at > ?2",
                params![report.site_id, now - 60],
                |r| r.get(0),
            )
            .db(&self.path)?;
        if lately >= per_minute {
            return Ok(Err(refuse(
                429,
                format!(
                    "this site sent {lately} reports in the last minute (at most {per_minute}): try again later"
                ),
            )));
        }
        // One commit for the report, its trimming, what it says of its release and the site's
        // row: a commit costs more than the writes themselves.
        let tx = self.conn.unchecked_transaction().db(&self.path)?;
        tx.execute(
                "INSERT INTO reports(site_id, seq, received_at, outcome, to_version, data) VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    report.site_id,
                    report.seq as i64,
                    now,
                    report.outcome.word(),
                    report.to,
                    String::from_utf8_lossy(body)
                ],
            )
            .db(&self.path)?;
        tx.execute(
                "DELETE FROM reports WHERE site_id = ?1 AND id <= (SELECT id FROM reports WHERE site_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                params![report.site_id, kept],
            )
            .db(&self.path)?;
        tx.execute(
            "DELETE FROM reports WHERE site_id = ?1 AND received_at < ?2",
            params![report.site_id, now - max_age],
        )
        .db(&self.path)?;
        if let Some(release) = &report.to {
            // What happened to the release stays counted: a failure is replaced by what the
            // site does with the release next (it tries again, it succeeds), not by its
            // policy holding it back.
            tx.execute(
                    "INSERT INTO outcomes(site_id, release, outcome, seq, received_at) VALUES(?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(site_id, release) DO UPDATE SET outcome = excluded.outcome,
                         seq = excluded.seq, received_at = excluded.received_at
                     WHERE NOT (outcomes.outcome IN ('failure', 'rolled_back')
                         AND excluded.outcome IN ('held', 'postponed'))",
                    params![
                        report.site_id,
                        release,
                        report.outcome.word(),
                        report.seq as i64,
                        now
                    ],
                )
                .db(&self.path)?;
        }
        tx.execute(
                "UPDATE sites SET last_seq = ?2, last_seen = ?3, version = ?4, last_report = ?5, name = ?6, groups = ?7, channel = ?8, last_outcome = ?9, last_to = ?10, url = COALESCE(?11, url) WHERE id = ?1",
                params![
                    report.site_id,
                    report.seq as i64,
                    now,
                    report.installed,
                    String::from_utf8_lossy(body),
                    report.name,
                    serde_json::to_string(&report.groups).expect("strings serialise"),
                    report.channel,
                    report.outcome.word(),
                    report.to,
                    report.url
                ],
            )
            .db(&self.path)?;
        tx.commit().db(&self.path)?;
        Ok(Ok(report))
    }

    /// What each site last said about `release` (see [`Outcomes`]).
    pub fn outcomes(&self, release: &str) -> Result<Outcomes> {
        let mut st = self
            .conn
            .prepare_cached("SELECT site_id, outcome FROM outcomes WHERE release = ?1")
            .db(&self.path)?;
        let rows = st
            .query_map([release], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .db(&self.path)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .db(&self.path)?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, o)| Outcome::parse(&o).map(|o| (id, o)))
            .collect())
    }

    /// The site named `who` (its name or its id), if enrolled.
    pub fn find_site(&self, who: &str) -> Result<Option<SiteRow>> {
        Ok(self.rows(true, Some(Only::Site(who)))?.into_iter().next())
    }

    /// The newest report of a site about `release` that says it failed or rolled back.
    pub fn failure_about(&self, site_id: &str, release: &str) -> Result<Option<Report>> {
        let data: Option<String> = self
            .conn
            .query_row(
                "SELECT data FROM reports WHERE site_id = ?1 AND to_version = ?2 AND outcome IN ('failure', 'rolled_back') ORDER BY id DESC LIMIT 1",
                params![site_id, release],
                |r| r.get(0),
            )
            .optional()
            .db(&self.path)?;
        Ok(data.and_then(|d| serde_json::from_str(&d).ok()))
    }

    /// A site's kept reports, newest first, at most `limit`, each with when it was received
    /// (seconds since the epoch).
    pub fn history(&self, site_id: &str, limit: usize) -> Result<Vec<(i64, Report)>> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT received_at, data FROM reports WHERE site_id = ?1 ORDER BY id DESC LIMIT ?2",
            )
            .db(&self.path)?;
        let rows = st
            .query_map(params![site_id, limit as i64], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })
            .db(&self.path)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .db(&self.path)?;
        Ok(rows
            .into_iter()
            .filter_map(|(at, d)| serde_json::from_str(&d).ok().map(|r| (at, r)))
            .collect())
    }

    /// Every enrolled site, by name, with its last report whole.
    pub fn sites(&self) -> Result<Vec<SiteRow>> {
        self.rows(true, None)
    }

    /// The sites on `channel`, without their reports' text: what the pilot counts.
    pub fn sites_on(&self, channel: &str) -> Result<Vec<SiteRow>> {
        self.rows(false, Some(Only::Channel(channel)))
    }

    fn rows(&self, whole: bool, only: Option<Only>) -> Result<Vec<SiteRow>> {
        let sql = format!(
            "SELECT id, name, groups, channel, version, {}, last_seen, last_outcome, last_to, url, last_seq FROM sites {}",
            if whole { "last_report" } else { "NULL" },
            // The pilot counts; only people need the rows in order.
            match only {
                Some(Only::Channel(_)) => "WHERE channel = ?1",
                Some(Only::Site(_)) => "WHERE id = ?1 OR name = ?1 ORDER BY id = ?1 DESC LIMIT 1",
                None => "ORDER BY name, id",
            }
        );
        let mut st = self.conn.prepare_cached(&sql).db(&self.path)?;
        let now = now_secs();
        let map = |r: &rusqlite::Row| {
            let groups: String = r.get(2)?;
            let last: Option<String> = r.get(5)?;
            let seen: Option<i64> = r.get(6)?;
            let outcome: Option<String> = r.get(7)?;
            Ok(SiteRow {
                id: r.get(0)?,
                name: r.get(1)?,
                groups: if groups == "[]" {
                    Vec::new()
                } else {
                    serde_json::from_str(&groups).unwrap_or_default()
                },
                channel: r.get(3)?,
                version: r.get(4)?,
                outcome: outcome.as_deref().and_then(Outcome::parse),
                to: r.get(8)?,
                last: last.and_then(|l| serde_json::from_str(&l).ok()),
                last_seen_secs: seen.map(|s| now - s),
                url: r.get(9)?,
                last_seq: r.get(10)?,
            })
        };
        let rows = match only {
            Some(Only::Channel(c) | Only::Site(c)) => st.query_map([c], map),
            None => st.query_map([], map),
        }
        .db(&self.path)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .db(&self.path)?;
        Ok(rows)
    }
}

/// The sites on `channel` whose last word about `release` is a failure, each with its latest
/// report about it (the step and the reason), even when passes on other releases came since.
pub fn failures(
    db: &FleetDb,
    sites: &[SiteRow],
    channel: &str,
    release: &str,
    about: &Outcomes,
) -> Result<Vec<(SiteRow, Report)>> {
    let mut out = Vec::new();
    for s in sites.iter().filter(|s| s.channel == channel) {
        if s.version.as_deref() == Some(release)
            || !matches!(
                about.get(&s.id),
                Some(Outcome::Failure | Outcome::RolledBack)
            )
        {
            continue;
        }
        if let Some(r) = db.failure_about(&s.id, release)? {
            out.push((s.clone(), r));
        }
    }
    Ok(out)
}

/// Which sites [`FleetDb::rows`] reads.
#[derive(Clone, Copy)]
enum Only<'a> {
    /// Those on a channel.
    Channel(&'a str),
    /// One, by id or name.
    Site(&'a str),
}

/// Per-release counters, in the spirit of Mender's deployment statistics.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Counters {
    /// Offered, not started.
    pub pending: usize,
    /// Staging.
    pub downloading: usize,
    /// Running the update.
    pub installing: usize,
    /// On the release.
    pub success: usize,
    /// Failed without changing anything live.
    pub failure: usize,
    /// Failed and rolled back.
    pub rolled_back: usize,
    /// Held by their policy.
    pub held: usize,
    /// Postponed by their policy.
    pub postponed: usize,
    /// Started and then said nothing for too long (counted as failed).
    pub silent: usize,
}

/// The counters of `release` over `sites` (those on its channel), by what each site last said
/// about it (`about`, from [`FleetDb::outcomes`]; a site's later passes on another release do
/// not wipe a failure): a site silent for longer than `silent_after` after saying it started
/// counts as silent.
pub fn counters(
    release: &str,
    sites: &[&SiteRow],
    about: &Outcomes,
    silent_after: i64,
) -> Counters {
    let mut c = Counters::default();
    for s in sites {
        if s.version.as_deref() == Some(release) {
            c.success += 1;
            continue;
        }
        let Some(&outcome) = about.get(&s.id) else {
            c.pending += 1;
            continue;
        };
        let quiet = s.last_seen_secs.unwrap_or(0) >= silent_after;
        match outcome {
            Outcome::Downloading | Outcome::Installing if quiet => c.silent += 1,
            Outcome::Downloading => c.downloading += 1,
            Outcome::Installing => c.installing += 1,
            Outcome::Success | Outcome::UpToDate => c.success += 1,
            Outcome::Failure => c.failure += 1,
            Outcome::RolledBack => c.rolled_back += 1,
            Outcome::Held => c.held += 1,
            Outcome::Postponed => c.postponed += 1,
        }
    }
    c
}

/// The fleet page's accounts and sessions live here, with the same rules as the panel's.
impl crate::base::accounts::AccountStore for FleetDb {
    fn db(&self) -> (&Connection, &Path) {
        (&self.conn, &self.path)
    }
}

impl FleetDb {
    /// Queue a webhook delivery, due now.
    pub fn queue_notify(&self, url: &str, body: &str) -> Result<()> {
        let now = now_secs();
        self.conn
            .execute(
                "INSERT INTO notify_queue(created_at, url, body, next_at) VALUES(?1, ?2, ?3, ?1)",
                params![now, url, body],
            )
            .db(&self.path)?;
        self.conn
            .execute(
                "DELETE FROM notify_queue WHERE id <= (SELECT max(id) FROM notify_queue) - ?1",
                [NOTIFY_KEPT],
            )
            .db(&self.path)?;
        Ok(())
    }

    /// Deliveries waiting, oldest first.
    pub fn queued_notify(&self) -> Result<Vec<Delivery>> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT id, url, body, attempts, next_at <= ?1 FROM notify_queue ORDER BY id LIMIT 500",
            )
            .db(&self.path)?;
        st.query_map([now_secs()], |r| {
            Ok(Delivery {
                id: r.get(0)?,
                url: r.get(1)?,
                body: r.get(2)?,
                attempts: r.get(3)?,
                due: r.get(4)?,
            })
        })
        .db(&self.path)?
        .collect::<rusqlite::Result<_>>()
        .db(&self.path)
    }

    /// A delivery was taken.
    pub fn notify_sent(&self, id: i64) -> Result<()> {
        self.conn
            .execute("DELETE FROM notify_queue WHERE id = ?1", [id])
            .db(&self.path)?;
        Ok(())
    }

    /// A delivery was not taken: tried again after a pause that doubles each time (2 s, 4 s,
    /// ... at most 10 minutes).
    pub fn notify_failed(&self, id: i64, attempts: i64, error: &str) -> Result<()> {
        let pause = 2i64
            .saturating_pow(attempts.clamp(0, 20) as u32 + 1)
            .min(600);
        self.conn
            .execute(
                "UPDATE notify_queue SET attempts = attempts + 1, last_error = ?2, next_at = ?3 WHERE id = ?1",
                params![id, error, now_secs() + pause],
            )
            .db(&self.path)?;
        Ok(())
    }

    /// A value kept by the reference (when it last took a trigger, ...).
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .db(&self.path)
    }

    /// Keep a value.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO meta(key, value) VALUES(?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2",
                [key, value],
            )
            .db(&self.path)?;
        Ok(())
    }
}

/// A mirror taking triggers remembers them here.
impl crate::documents::trigger::Ledger for FleetDb {
    fn use_nonce(&self, nonce: &str, now: i64, forget: i64) -> Result<bool> {
        let (conn, path) = crate::base::accounts::AccountStore::db(self);
        crate::base::nonces::use_nonce_in(conn, path, nonce, now, forget)
    }
    fn meta(&self, key: &str) -> Result<Option<String>> {
        FleetDb::meta(self, key)
    }
    fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        FleetDb::set_meta(self, key, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::documents::manifest::SecretKey;

    fn enrolled(dir: &Path) -> (FleetDb, SecretKey, String) {
        let db = FleetDb::open(&dir.join("f.db")).unwrap();
        let key = SecretKey::generate().unwrap();
        let id = "ab".repeat(16);
        let token = db.new_token(1, 600).unwrap();
        db.enrol(&Enrolment {
            token,
            site_id: id.clone(),
            public_key: key.public().to_text(),
            name: "a".into(),
            groups: Vec::new(),
            channel: "stable".into(),
            url: None,
            installed: Some("1.0.0".into()),
        })
        .unwrap()
        .unwrap();
        (db, key, id)
    }

    fn report(key: &SecretKey, id: &str, seq: u64) -> (Vec<u8>, String) {
        let body = serde_json::to_vec(&serde_json::json!({
            "format": 1, "site_id": id, "seq": seq, "at": "2026-12-01T00:00:00Z",
            "name": "a", "groups": [], "channel": "stable", "installed": "1.0.0",
            "from": null, "to": null, "outcome": "up_to_date", "failed_step": null,
            "reason": "fine", "closed_ms": null, "bytes_fetched": null, "modified": 0, "health": null
        }))
        .unwrap();
        let sig = key.sign(&body);
        (body, sig)
    }

    fn rows(db: &FleetDb) -> i64 {
        db.conn
            .query_row("SELECT count(*) FROM reports", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_site_sending_in_a_loop_is_answered_429_and_what_is_kept_is_capped() {
        let d = tempfile::tempdir().unwrap();
        let (db, key, id) = enrolled(d.path());
        let db = db.with_limits(3, 1000);
        for seq in 1..=3 {
            let (b, s) = report(&key, &id, seq);
            assert!(db.accept(&b, &s).unwrap().is_ok(), "{seq}");
        }
        let (b, s) = report(&key, &id, 4);
        let r = db.accept(&b, &s).unwrap().unwrap_err();
        assert_eq!(r.status, 429, "{}", r.why);
        assert_eq!(rows(&db), 3);
        let db = db.with_limits(1000, 5);
        for seq in 4..=12 {
            let (b, s) = report(&key, &id, seq);
            db.accept(&b, &s).unwrap().unwrap();
        }
        assert_eq!(rows(&db), 5, "the newest five are kept");
        let newest: i64 = db
            .conn
            .query_row("SELECT max(seq) FROM reports", [], |r| r.get(0))
            .unwrap();
        assert_eq!(newest, 12);
    }
}
