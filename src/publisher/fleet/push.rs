//! `upkeep push`, the big red button (apu's "apt-all CLASS OPERATION"): a signed "check now" to
//! every enrolled site of a group, a channel or one name, in parallel, and with `--wait` the
//! sites' own reports as they come, until each has reported, failed or timed out. A push only
//! asks; each site's policy decides.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::db::{FleetDb, SiteRow};
use crate::base::error::Result;
use crate::documents::manifest::SecretKey;

/// Which sites.
#[derive(Debug, Default)]
pub struct Class {
    /// Sites in this group.
    pub group: Option<String>,
    /// Sites on this channel.
    pub channel: Option<String>,
    /// The site with this name.
    pub site: Option<String>,
}

impl Class {
    /// Whether `s` belongs to the class.
    pub fn has(&self, s: &SiteRow) -> bool {
        self.group.as_ref().is_none_or(|g| s.groups.contains(g))
            && self.channel.as_ref().is_none_or(|c| &s.channel == c)
            && self.site.as_ref().is_none_or(|n| &s.name == n)
    }
}

/// What one site answered.
#[derive(Debug, Serialize)]
pub struct Answer {
    /// The site's name.
    pub site: String,
    /// Its id.
    pub id: String,
    /// The HTTP status, when it answered.
    pub status: Option<u16>,
    /// Its words, or why it could not be reached.
    pub text: String,
    /// The number of its last report before the push.
    #[serde(skip)]
    pub seq_before: i64,
}

impl Answer {
    /// The site took the trigger.
    pub fn started(&self) -> bool {
        self.status == Some(202)
    }
}

/// Trigger every site of `class` (see [`crate::publisher::trigger::send_all`]).
pub fn push(db: &FleetDb, key: &SecretKey, class: &Class) -> Result<Vec<Answer>> {
    let sites: Vec<SiteRow> = db.sites()?.into_iter().filter(|s| class.has(s)).collect();
    let to: Vec<crate::publisher::trigger::Receiver> = sites
        .iter()
        .map(|s| crate::publisher::trigger::Receiver {
            label: s.name.clone(),
            url: s.url.clone(),
            target: s.id.clone(),
        })
        .collect();
    let answers = crate::publisher::trigger::send_all(key, &to)?;
    Ok(sites
        .into_iter()
        .zip(answers)
        .map(|(s, a)| Answer {
            site: s.name,
            id: s.id,
            status: a.status,
            text: a.text,
            seq_before: s.last_seq,
        })
        .collect())
}

/// Wait until every started site has reported past its number before the push (an outcome that
/// ends a pass: not "installing"), or `timeout`. Calls `tick` with (reported, started) as it goes.
pub fn wait(
    db: &FleetDb,
    answers: &[Answer],
    timeout: Duration,
    tick: &dyn Fn(usize, usize),
) -> Result<Vec<(String, Option<SiteRow>)>> {
    use crate::documents::report::Outcome;
    let started: Vec<&Answer> = answers.iter().filter(|a| a.started()).collect();
    let t = Instant::now();
    loop {
        let rows = db.sites()?;
        let done: Vec<(String, Option<SiteRow>)> = started
            .iter()
            .map(|a| {
                let row = rows.iter().find(|r| {
                    r.id == a.id
                        && r.last_seq > a.seq_before
                        && !matches!(r.outcome, Some(Outcome::Installing | Outcome::Downloading))
                });
                (a.site.clone(), row.cloned())
            })
            .collect();
        let n = done.iter().filter(|(_, r)| r.is_some()).count();
        tick(n, started.len());
        if n == started.len() || t.elapsed() >= timeout {
            return Ok(done);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
