//! The reference's fleet database: enrolment tokens, enrolled sites (id and public key), and
//! their signed reports. It lives beside the served repository, never inside it (nothing in it
//! is served as a file).

use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::Digest;

use crate::args;
use crate::base::clock::{now_secs, now_text};
use crate::base::dburl::Server;
use crate::base::error::{Error, Result};
use crate::base::sql::{Arg, Lite, Pg, Row, Sql};
use crate::documents::manifest::PublicKey;
use crate::documents::report::{Enrolment, Outcome, Report};

const PRAGMAS: &str = "
PRAGMA journal_mode=WAL;
PRAGMA synchronous=NORMAL;
PRAGMA busy_timeout=5000;
";

/// The tables, in SQLite's words; PostgreSQL's are these with 64-bit integers (see
/// [`pg_schema`]).
const SCHEMA: &str = "
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
CREATE TABLE IF NOT EXISTS channels(name TEXT PRIMARY KEY, serial INTEGER NOT NULL, doc TEXT NOT NULL,
    sig TEXT NOT NULL);
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

/// Where a fleet database is: an SQLite file (the default, beside the repository), or a
/// PostgreSQL database that several reference servers share.
#[derive(Clone, Debug)]
pub enum Place {
    /// A file.
    File(PathBuf),
    /// A server (its password read already).
    Server(Server),
}

impl Place {
    /// For messages (never the password).
    pub fn display(&self) -> String {
        match self {
            Place::File(p) => p.display().to_string(),
            Place::Server(s) => format!("postgresql://{}", s.display()),
        }
    }
}

/// Where the fleet's PostgreSQL URL and password come from, for the hint of a failed login.
pub const SERVER_HINT: &str = "check --fleet-db postgresql://USER@HOST:PORT/NAME, its password (in the file UPKEEP_FLEET_DB_PASSWORD_FILE names, mode 0600, or in UPKEEP_FLEET_DB_PASSWORD), pg_hba.conf and that the server runs";

/// PostgreSQL's tables: SQLite's, with 64-bit integers (a row id is a `BIGSERIAL`).
fn pg_schema(sqlite: &str) -> String {
    sqlite
        .replace("INTEGER PRIMARY KEY,", "BIGSERIAL PRIMARY KEY,")
        .replace("INTEGER", "BIGINT")
}

/// The engine under a fleet database.
enum Store {
    Lite(Lite),
    Pg(Box<Pg>),
}

impl Store {
    fn sql(&self) -> &dyn Sql {
        match self {
            Store::Lite(l) => l,
            Store::Pg(p) => &**p,
        }
    }
}

/// The advisory lock a reference server holds while it steers the rollouts of a fleet on
/// PostgreSQL (any number fixed for upkeep: `b"upkeep:p"` read as a number; the next one
/// guards the creation of the tables).
pub const PILOT_LOCK: i64 = 0x7570_6b65_6570_3a70;

/// An open fleet database.
pub struct FleetDb {
    store: Store,
    /// [`REPORTS_PER_MINUTE`], [`REPORTS_KEPT`] and [`REPORTS_MAX_AGE_DAYS`] in seconds.
    limits: (i64, i64, i64),
}

impl Sql for FleetDb {
    fn run(&self, sql: &str, args: &[Arg]) -> Result<u64> {
        self.store.sql().run(sql, args)
    }
    fn rows(&self, sql: &str, args: &[Arg]) -> Result<Vec<Row>> {
        self.store.sql().rows(sql, args)
    }
    fn batch(&self, sql: &str) -> Result<()> {
        self.store.sql().batch(sql)
    }
    fn is_postgres(&self) -> bool {
        matches!(self.store, Store::Pg(_))
    }
}

fn token_hash(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.trim().as_bytes()))
}

impl FleetDb {
    /// Open (and create) the database in a file.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_at(&Place::File(path.to_path_buf()))
    }

    /// Open (and create) the database where `place` says.
    pub fn open_at(place: &Place) -> Result<Self> {
        let tables = format!(
            "{SCHEMA}{}{}",
            crate::base::accounts::ACCOUNT_TABLES,
            crate::base::nonces::NONCE_TABLE
        );
        let store = match place {
            Place::File(path) => {
                let l = Lite::open(path)?;
                l.batch(PRAGMAS)?;
                l.batch(&tables)?;
                Store::Lite(l)
            }
            Place::Server(server) => {
                // A commit waits for the disk only where losing it would matter (enrolments,
                // failure reports and steering ask for it): an ordinary report lost to a crash
                // of the database server in its last fraction of a second is made good by the
                // site's next one, which says again where it stands. The SQLite file's bargain
                // (synchronous=NORMAL), and it takes the disk's flush out of every report.
                let pg = Pg::connect(
                    server.clone(),
                    "the fleet database",
                    SERVER_HINT,
                    "SET synchronous_commit = off",
                )?;
                // Two servers starting together: one creates the tables, the other waits.
                pg.tx(|| {
                    pg.rows(
                        "SELECT 1 FROM (SELECT pg_advisory_xact_lock(?1)) l",
                        args![PILOT_LOCK + 1],
                    )?;
                    pg.batch(&pg_schema(&tables))
                })?;
                Store::Pg(Box::new(pg))
            }
        };
        let db = FleetDb {
            store,
            limits: (
                REPORTS_PER_MINUTE,
                REPORTS_KEPT,
                REPORTS_MAX_AGE_DAYS * 86_400,
            ),
        };
        // A database from before `outcomes` (only ever SQLite): what its kept reports say, once.
        if db.meta("outcomes_from_reports")?.is_none() {
            if !db.is_postgres() {
                db.batch(
                    "INSERT OR IGNORE INTO outcomes(site_id, release, outcome, seq, received_at)
                     SELECT site_id, to_version, outcome, seq, received_at FROM reports r
                     WHERE to_version IS NOT NULL AND id = (SELECT max(id) FROM reports
                         WHERE site_id = r.site_id AND to_version = r.to_version)",
                )?;
            }
            db.set_meta("outcomes_from_reports", &now_text())?;
        }
        Ok(db)
    }

    /// Run `steer` as the one reference server steering the fleet's rollouts at this moment.
    /// On SQLite the file is one server's. On PostgreSQL, several servers share the fleet and
    /// any of them steers (after a report it took, on its timer), each holding the fleet's
    /// advisory lock for that time, in a transaction with what it queues for the webhooks: a
    /// second waits, then reads the channel the first left, so a halt or an advance happens
    /// once; a server that dies while steering lets the lock go with its connection. Without
    /// `wait` (a success, the timer: another steer is as good), `None` when another server is
    /// steering now; a failure waits its turn, so that a halt it calls for is not missed.
    pub fn steering<T>(&self, wait: bool, steer: impl FnOnce() -> Result<T>) -> Result<Option<T>> {
        if !self.is_postgres() {
            return steer().map(Some);
        }
        self.tx(|| {
            self.durable()?;
            if wait {
                self.row(
                    "SELECT 1 FROM (SELECT pg_advisory_xact_lock(?1)) l",
                    args![PILOT_LOCK],
                )?;
            } else if self
                .row("SELECT pg_try_advisory_xact_lock(?1)", args![PILOT_LOCK])?
                .is_none_or(|r| r[0].int() != 1)
            {
                return Ok(None);
            }
            steer().map(Some)
        })
    }

    /// On PostgreSQL, make the transaction under way wait for its commit to be on disk (the
    /// connection's default does not: see [`FleetDb::open_at`]).
    fn durable(&self) -> Result<()> {
        if self.is_postgres() {
            self.batch("SET LOCAL synchronous_commit = on")?;
        }
        Ok(())
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
        self.run(
            "INSERT INTO tokens(hash, created_at, expires_at, uses_left) VALUES(?1, ?2, ?3, ?4)",
            args![
                &token_hash(&token),
                &now_text(),
                now_secs() + valid_secs as i64,
                i64::from(uses)
            ],
        )?;
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
        let groups = serde_json::to_string(&e.groups).expect("strings serialise");
        // One transaction, the token's use counted only if it is left: two servers taking the
        // last use of a token at once enrol one site, not two.
        self.tx(|| {
            self.durable()?;
            let used = self.run(
                "UPDATE tokens SET uses_left = uses_left - 1 WHERE hash = ?1 AND uses_left > 0 AND expires_at > ?2",
                args![&hash, now_secs()],
            )?;
            if used == 0 {
                let known = self.row("SELECT 1 FROM tokens WHERE hash = ?1", args![&hash])?;
                return Ok(Err(match known {
                    Some(_) => refuse(
                        401,
                        "this enrolment token is used up or expired: ask the publisher for a new one (`upkeep fleet token`)",
                    ),
                    None => refuse(401, "unknown enrolment token"),
                }));
            }
            self.run(
                "INSERT INTO sites(id, public_key, name, groups, channel, enrolled_at, url, version, last_seen) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT(id) DO NOTHING",
                args![
                    &e.site_id,
                    &e.public_key,
                    &e.name,
                    &groups,
                    &e.channel,
                    &now_text(),
                    &e.url,
                    &e.installed,
                    now_secs()
                ],
            )?;
            let key = self
                .row("SELECT public_key FROM sites WHERE id = ?1", args![&e.site_id])?
                .map(|mut r| r[0].text());
            if key.as_deref() != Some(e.public_key.as_str()) {
                // Nothing of this try is kept, the token's use neither.
                return Err(Error::msg(format!("\u{0}409 site id {} is already enrolled with another key", e.site_id)));
            }
            Ok(Ok(()))
        })
        .or_else(|err| match err.to_string().split_once("\u{0}409 ") {
            Some((_, why)) => Ok(Err(refuse(409, why))),
            None => Err(err),
        })
    }

    /// Take a report: signed by the enrolled site's key, newer than any before from that site.
    pub fn accept(&self, body: &[u8], sig: &str) -> Result<std::result::Result<Report, Refusal>> {
        let report: Report = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return Ok(Err(refuse(400, format!("not a report: {e}")))),
        };
        let now = now_secs();
        // The site and its reports of the last minute in one question (a round trip to a
        // database server costs more than the counting).
        let site = self.row(
            "SELECT public_key, last_seq, (SELECT count(*) FROM reports WHERE site_id = ?1 AND received_at > ?2) FROM sites WHERE id = ?1",
            args![&report.site_id, now - 60],
        )?;
        let Some(mut site) = site else {
            return Ok(Err(refuse(
                401,
                "unknown site: enrol it first (`upkeep enroll`)",
            )));
        };
        let (key, last_seq, lately) = (site[0].text(), site[1].int(), site[2].int());
        let key = PublicKey::parse(&key)?;
        if key.verify(body, sig, "report").is_err() {
            return Ok(Err(refuse(
                401,
                "the report is not signed by this site's key",
            )));
        }
        let seq = report.seq as i64;
        if let Some(r) = out_of_order(seq, last_seq) {
            return Ok(Err(r));
        }
        if let Err(why) = report.check() {
            return Ok(Err(refuse(400, format!("report refused: {why}"))));
        }
        let (per_minute, kept, max_age) = self.limits;
        if lately >= per_minute {
            return Ok(Err(refuse(
                429,
                format!(
                    "this site sent {lately} reports in the last minute (at most {per_minute}): try again later"
                ),
            )));
        }
        let text = String::from_utf8_lossy(body);
        let groups = serde_json::to_string(&report.groups).expect("strings serialise");
        // One commit for the report, its trimming, what it says of its release and the site's
        // row: a commit costs more than the writes themselves. The site's row moves first and
        // only forward, so that of two servers taking the same report at once one keeps it.
        let failed = matches!(report.outcome, Outcome::Failure | Outcome::RolledBack);
        self.tx(|| {
            if failed {
                self.durable()?;
            }
            let moved = self.run(
                "UPDATE sites SET last_seq = ?2, last_seen = ?3, version = ?4, last_report = ?5, name = ?6, groups = ?7, channel = ?8, last_outcome = ?9, last_to = ?10, url = COALESCE(?11, url) WHERE id = ?1 AND last_seq < ?2",
                args![
                    &report.site_id,
                    seq,
                    now,
                    &report.installed,
                    &*text,
                    &report.name,
                    &groups,
                    &report.channel,
                    report.outcome.word(),
                    &report.to,
                    &report.url
                ],
            )?;
            if moved == 0 {
                return Ok(false);
            }
            self.run(
                "INSERT INTO reports(site_id, seq, received_at, outcome, to_version, data) VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
                args![
                    &report.site_id,
                    seq,
                    now,
                    report.outcome.word(),
                    &report.to,
                    &*text
                ],
            )?;
            self.run(
                "DELETE FROM reports WHERE site_id = ?1 AND (received_at < ?3 OR id <= (SELECT id FROM reports WHERE site_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2))",
                args![&report.site_id, kept, now - max_age],
            )?;
            if let Some(release) = &report.to {
                // What happened to the release stays counted: a failure is replaced by what
                // the site does with the release next (it tries again, it succeeds), not by
                // its policy holding it back.
                self.run(
                    "INSERT INTO outcomes(site_id, release, outcome, seq, received_at) VALUES(?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(site_id, release) DO UPDATE SET outcome = excluded.outcome,
                         seq = excluded.seq, received_at = excluded.received_at
                     WHERE NOT (outcomes.outcome IN ('failure', 'rolled_back')
                         AND excluded.outcome IN ('held', 'postponed'))",
                    args![&report.site_id, release, report.outcome.word(), seq, now],
                )?;
            }
            Ok(true)
        })
        .and_then(|kept| {
            if kept {
                return Ok(Ok(report));
            }
            // Another server took a report of this site between the check and now.
            let last = self
                .row(
                    "SELECT last_seq FROM sites WHERE id = ?1",
                    args![&report.site_id],
                )?
                .map_or(0, |r| r[0].int());
            Ok(Err(out_of_order(seq, last)
                .unwrap_or_else(|| refuse(409, "the report crossed another: send it again"))))
        })
    }

    /// What each site last said about `release` (see [`Outcomes`]).
    pub fn outcomes(&self, release: &str) -> Result<Outcomes> {
        Ok(self
            .rows(
                "SELECT site_id, outcome FROM outcomes WHERE release = ?1",
                args![release],
            )?
            .into_iter()
            .filter_map(|mut r| Outcome::parse(&r[1].text()).map(|o| (r[0].text(), o)))
            .collect())
    }

    /// The site named `who` (its name or its id), if enrolled.
    pub fn find_site(&self, who: &str) -> Result<Option<SiteRow>> {
        Ok(self
            .site_rows(true, Some(Only::Site(who)))?
            .into_iter()
            .next())
    }

    /// The newest report of a site about `release` that says it failed or rolled back.
    pub fn failure_about(&self, site_id: &str, release: &str) -> Result<Option<Report>> {
        Ok(self
            .row(
                "SELECT data FROM reports WHERE site_id = ?1 AND to_version = ?2 AND outcome IN ('failure', 'rolled_back') ORDER BY id DESC LIMIT 1",
                args![site_id, release],
            )?
            .and_then(|mut r| serde_json::from_str(&r[0].text()).ok()))
    }

    /// A site's kept reports, newest first, at most `limit`, each with when it was received
    /// (seconds since the epoch).
    pub fn history(&self, site_id: &str, limit: usize) -> Result<Vec<(i64, Report)>> {
        Ok(self
            .rows(
                "SELECT received_at, data FROM reports WHERE site_id = ?1 ORDER BY id DESC LIMIT ?2",
                args![site_id, limit as i64],
            )?
            .into_iter()
            .filter_map(|mut r| {
                serde_json::from_str(&r[1].text())
                    .ok()
                    .map(|rep| (r[0].int(), rep))
            })
            .collect())
    }

    /// Every enrolled site, by name, with its last report whole.
    pub fn sites(&self) -> Result<Vec<SiteRow>> {
        self.site_rows(true, None)
    }

    /// The sites on `channel`, without their reports' text: what the pilot counts.
    pub fn sites_on(&self, channel: &str) -> Result<Vec<SiteRow>> {
        self.site_rows(false, Some(Only::Channel(channel)))
    }

    fn site_rows(&self, whole: bool, only: Option<Only>) -> Result<Vec<SiteRow>> {
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
        let rows = match only {
            Some(Only::Channel(c) | Only::Site(c)) => self.rows(&sql, args![c])?,
            None => self.rows(&sql, &[])?,
        };
        let now = now_secs();
        Ok(rows
            .into_iter()
            .map(|mut r| {
                let groups = r[2].text();
                SiteRow {
                    id: r[0].text(),
                    name: r[1].text(),
                    groups: if groups == "[]" {
                        Vec::new()
                    } else {
                        serde_json::from_str(&groups).unwrap_or_default()
                    },
                    channel: r[3].text(),
                    version: r[4].opt_text(),
                    outcome: r[7].opt_text().as_deref().and_then(Outcome::parse),
                    to: r[8].opt_text(),
                    last: r[5].opt_text().and_then(|l| serde_json::from_str(&l).ok()),
                    last_seen_secs: r[6].opt_int().map(|s| now - s),
                    url: r[9].opt_text(),
                    last_seq: r[10].int(),
                }
            })
            .collect())
    }
}

/// Why a report numbered `seq` is refused after `last`, if it is.
fn out_of_order(seq: i64, last: i64) -> Option<Refusal> {
    if seq == last {
        return Some(refuse(409, format!("report {seq} was already received")));
    }
    (seq < last).then(|| {
        refuse(
            409,
            format!(
                "report {seq} is older than the last one received ({last}): refused as a possible replay (a site's reports are numbered in order)"
            ),
        )
    })
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

/// The fleet page's accounts and sessions live here, with the same rules as the panel's (on
/// PostgreSQL, a login on one reference server holds on the others).
impl crate::base::accounts::AccountStore for FleetDb {}

impl FleetDb {
    /// Queue a webhook delivery, due now.
    pub fn queue_notify(&self, url: &str, body: &str) -> Result<()> {
        let now = now_secs();
        self.run(
            "INSERT INTO notify_queue(created_at, url, body, next_at) VALUES(?1, ?2, ?3, ?1)",
            args![now, url, body],
        )?;
        self.run(
            "DELETE FROM notify_queue WHERE id <= (SELECT max(id) FROM notify_queue) - ?1",
            args![NOTIFY_KEPT],
        )?;
        Ok(())
    }

    /// Deliveries waiting, oldest first.
    pub fn queued_notify(&self) -> Result<Vec<Delivery>> {
        Ok(self
            .rows(
                "SELECT id, url, body, attempts, next_at <= ?1 FROM notify_queue ORDER BY id LIMIT 500",
                args![now_secs()],
            )?
            .into_iter()
            .map(|mut r| Delivery {
                id: r[0].int(),
                url: r[1].text(),
                body: r[2].text(),
                attempts: r[3].int(),
                due: r[4].int() != 0,
            })
            .collect())
    }

    /// Take a due delivery for this server to try: false when another server sharing the
    /// fleet took it first. Taken, it is not due again for half a minute, longer than a try
    /// lasts (a server that dies while trying it leaves it to the others then).
    pub fn claim_notify(&self, id: i64) -> Result<bool> {
        let now = now_secs();
        Ok(self.run(
            "UPDATE notify_queue SET next_at = ?2 WHERE id = ?1 AND next_at <= ?3",
            args![id, now + 30, now],
        )? == 1)
    }

    /// A delivery was taken.
    pub fn notify_sent(&self, id: i64) -> Result<()> {
        self.run("DELETE FROM notify_queue WHERE id = ?1", args![id])?;
        Ok(())
    }

    /// A delivery was not taken: tried again after a pause that doubles each time (2 s, 4 s,
    /// ... at most 10 minutes).
    pub fn notify_failed(&self, id: i64, attempts: i64, error: &str) -> Result<()> {
        let pause = 2i64
            .saturating_pow(attempts.clamp(0, 20) as u32 + 1)
            .min(600);
        self.run(
            "UPDATE notify_queue SET attempts = attempts + 1, last_error = ?2, next_at = ?3 WHERE id = ?1",
            args![id, error, now_secs() + pause],
        )?;
        Ok(())
    }

    /// The channel pointers the servers sharing this fleet wrote: name, serial, the signed
    /// document and its signature.
    pub fn channel_docs(&self) -> Result<Vec<(String, i64, String, String)>> {
        Ok(self
            .rows("SELECT name, serial, doc, sig FROM channels", &[])?
            .into_iter()
            .map(|mut r| (r[0].text(), r[1].int(), r[2].text(), r[3].text()))
            .collect())
    }

    /// Keep a channel pointer for the others, unless a later one is kept already.
    pub fn put_channel_doc(&self, name: &str, serial: i64, doc: &str, sig: &str) -> Result<()> {
        self.run(
            "INSERT INTO channels(name, serial, doc, sig) VALUES(?1, ?2, ?3, ?4)
             ON CONFLICT(name) DO UPDATE SET serial = excluded.serial, doc = excluded.doc, sig = excluded.sig
             WHERE channels.serial < excluded.serial",
            args![name, serial, doc, sig],
        )?;
        Ok(())
    }

    /// Put a channel pointer in place of the one kept, whatever its serial (the one kept was
    /// not signed by a delegated key).
    pub fn replace_channel_doc(&self, name: &str, serial: i64, doc: &str, sig: &str) -> Result<()> {
        self.run(
            "UPDATE channels SET serial = ?2, doc = ?3, sig = ?4 WHERE name = ?1",
            args![name, serial, doc, sig],
        )?;
        Ok(())
    }

    /// A value kept by the reference (when it last took a trigger, ...).
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .row("SELECT value FROM meta WHERE key = ?1", args![key])?
            .map(|mut r| r[0].text()))
    }

    /// Keep a value.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.run(
            "INSERT INTO meta(key, value) VALUES(?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2",
            args![key, value],
        )?;
        Ok(())
    }
}

/// A mirror taking triggers remembers them here.
impl crate::documents::trigger::Ledger for FleetDb {
    fn use_nonce(&self, nonce: &str, now: i64, forget: i64) -> Result<bool> {
        crate::base::nonces::use_nonce_in(self, nonce, now, forget)
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
        db.row("SELECT count(*) FROM reports", &[])
            .unwrap()
            .unwrap()[0]
            .int()
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
        let newest = db
            .row("SELECT max(seq) FROM reports", &[])
            .unwrap()
            .unwrap()[0]
            .int();
        assert_eq!(newest, 12);
    }
}
