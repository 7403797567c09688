//! `upkeep push`, the big red button (apu's "apt-all CLASS OPERATION"): a signed "check now" to
//! every enrolled site of a group, a channel or one name, in parallel, and with `--wait` the
//! sites' own reports as they come, until each has reported, failed or timed out. A push only
//! asks; each site's policy decides.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::db::{FleetDb, SiteRow};
use crate::error::Result;
use crate::manifest::SecretKey;
use crate::reference::client::{block_on, describe};
use crate::trigger::{self, SIGNATURE_HEADER};

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

/// Trigger every site of `class`, 32 at a time, two attempts each.
pub fn push(db: &FleetDb, key: &SecretKey, class: &Class) -> Result<Vec<Answer>> {
    let sites: Vec<SiteRow> = db.sites()?.into_iter().filter(|s| class.has(s)).collect();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| crate::error::Error::msg(e.to_string()))?;
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(32));
    let answers = block_on(async {
        let tasks = sites.into_iter().map(|s| {
            let (client, gate) = (client.clone(), gate.clone());
            let made = trigger::make(key, &s.id);
            async move {
                let _permit = gate.acquire().await;
                let mut a = Answer {
                    site: s.name.clone(),
                    id: s.id.clone(),
                    status: None,
                    text: String::new(),
                    seq_before: s.last_seq,
                };
                let Some(url) = s.url.as_deref() else {
                    a.text = "no url known: set `url` in the site's upkeep.toml (it is sent with its reports)".into();
                    return a;
                };
                let (body, sig) = match made {
                    Ok(x) => x,
                    Err(e) => {
                        a.text = e.to_string();
                        return a;
                    }
                };
                let to = format!("{}/trigger", url.trim_end_matches('/'));
                for attempt in 0..2 {
                    if attempt > 0 {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    match client
                        .post(&to)
                        .header(SIGNATURE_HEADER, sig.trim())
                        .body(body.clone())
                        .send()
                        .await
                    {
                        Ok(r) => {
                            a.status = Some(r.status().as_u16());
                            a.text = r.text().await.unwrap_or_default().trim().to_string();
                            if !r_is_retry(a.status) {
                                break;
                            }
                        }
                        Err(e) => a.text = format!("{to}: {}", describe(&e)),
                    }
                }
                a
            }
        });
        futures_util::future::join_all(tasks).await
    });
    Ok(answers)
}

fn r_is_retry(status: Option<u16>) -> bool {
    status.is_some_and(|s| s >= 500)
}

/// Wait until every started site has reported past its number before the push (an outcome that
/// ends a pass: not "installing"), or `timeout`. Calls `tick` with (reported, started) as it goes.
pub fn wait(
    db: &FleetDb,
    answers: &[Answer],
    timeout: Duration,
    tick: &dyn Fn(usize, usize),
) -> Result<Vec<(String, Option<SiteRow>)>> {
    use super::report::Outcome;
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
