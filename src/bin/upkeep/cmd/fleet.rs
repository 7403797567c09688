//! Fleet commands: delegation, rollouts on channels, triggers, push, enrolment and the fleet table.

use std::path::Path;
use upkeep::{err, errln, outln};

use upkeep::base::accounts;
use upkeep::base::error::{Error, IoContext, Result, exit};
use upkeep::base::text::{one_line, printable};
use upkeep::documents::manifest::{PublicKey, SecretKey};

use crate::print::print_json;

/// `upkeep delegate`: the release key names the online keys.
pub fn delegate(
    repo: &Path,
    key: &Path,
    online: &[std::path::PathBuf],
    expires: std::time::Duration,
    reports: Option<&str>,
) -> Result<u8> {
    let release = SecretKey::load(key)?;
    let keys = online
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).ctx("read public key", p)?;
            PublicKey::parse(&text)
        })
        .collect::<Result<Vec<_>>>()?;
    let d = upkeep::publisher::fleet::rollout::delegate(repo, &release, &keys, expires, reports)?;
    outln!(
        "delegated {} online key(s) ({}) until {}: {}",
        keys.len(),
        keys.iter()
            .map(|k| k.key_id())
            .collect::<Vec<_>>()
            .join(", "),
        d.expires,
        repo.join(upkeep::documents::channel::DELEGATION).display()
    );
    if let Some(r) = &d.reports {
        outln!("sites enrol and report to {r}, whichever mirror they fetch from");
    }
    Ok(0)
}

fn print_rollout(p: &upkeep::documents::channel::ChannelPointer) {
    let waves: Vec<String> = p
        .waves
        .iter()
        .enumerate()
        .map(|(i, w)| {
            if i == p.wave {
                format!("[{w}]")
            } else {
                w.to_string()
            }
        })
        .collect();
    outln!(
        "channel {}: release {} ({}{}), waves {}",
        p.channel,
        p.release,
        p.state,
        p.reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default(),
        waves.join(" → ")
    );
    outln!(
        "  sites outside the waves so far stay on: {}",
        p.previous
            .as_ref()
            .map(|x| x.release.as_str())
            .unwrap_or("nothing (they are offered nothing yet)")
    );
    outln!(
        "  rules: at least {} in a wave, {} successful report(s), halt at {} failures; signed {}, valid until {}",
        upkeep::base::clock::span_words(std::time::Duration::from_secs(p.every_secs)),
        p.min_reports,
        p.halt_on_failure,
        p.date,
        p.expires
    );
}

/// `upkeep promote`.
pub fn promote(p: &upkeep::publisher::fleet::rollout::Promote, json: bool) -> Result<u8> {
    let ptr = upkeep::publisher::fleet::rollout::promote(p)?;
    if json {
        print_json(&ptr);
    } else {
        print_rollout(&ptr);
    }
    Ok(0)
}

/// `upkeep rollout ...`.
pub fn rollout(action: crate::cli::RolloutAction) -> Result<u8> {
    use crate::cli::RolloutAction as A;
    use upkeep::publisher::fleet::rollout::{Move, read_channel, rollout as mv};
    let (ch, key, m) = match action {
        A::Status { ch, json } => {
            let Some(p) = read_channel(&ch.repo, &ch.channel)? else {
                return Err(Error::refused(
                    format!(
                        "channel {} does not exist in {}",
                        ch.channel,
                        ch.repo.display()
                    ),
                    "start it with `upkeep promote VERSION --channel NAME ...`",
                ));
            };
            if json {
                print_json(&p);
            } else {
                print_rollout(&p);
            }
            return Ok(0);
        }
        A::Advance { ch, key } => (ch, key, Move::Advance),
        A::Pause { ch, key, reason } => (ch, key, Move::Pause(reason)),
        A::Resume { ch, key } => (ch, key, Move::Resume),
        A::Halt { ch, key, reason } => (ch, key, Move::Halt(reason)),
        A::Refresh { ch, key, expires } => (ch, key, Move::Refresh(expires)),
    };
    let key = SecretKey::load(&key)?;
    let p = mv(&ch.repo, &ch.channel, &key, &m)?;
    print_rollout(&p);
    Ok(0)
}

/// `upkeep trigger`: send one, or take one as an SSH forced command.
pub fn trigger(
    root: Option<&Path>,
    url: Option<&str>,
    key: Option<&Path>,
    target: &str,
) -> Result<u8> {
    if let (Some(url), Some(key)) = (url, key) {
        let key = SecretKey::load(key)?;
        let (body, sig) = upkeep::documents::trigger::make(&key, target)?;
        let to = format!("{}/trigger", url.trim_end_matches('/'));
        let (status, text) = upkeep::client::block_on(async {
            let r = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .map_err(|e| e.to_string())?
                .post(&to)
                .header(upkeep::documents::trigger::SIGNATURE_HEADER, sig.trim())
                .body(body)
                .send()
                .await
                .map_err(|e| upkeep::client::describe(&e))?;
            let s = r.status();
            Ok::<_, String>((s, r.text().await.unwrap_or_default()))
        })
        .map_err(|reason| Error::Network {
            url: to.clone(),
            reason,
        })?;
        outln!("{to}: {status}: {}", printable(text.trim()));
        return Ok(if status.as_u16() == 202 {
            0
        } else {
            exit::FAILED
        });
    }
    let Some(root) = root else {
        return Err(Error::refused(
            "nothing to do: give --url and --key to send a trigger, or --root DIR to take one",
            "see `upkeep trigger --help`",
        ));
    };
    let asked = std::env::var("SSH_ORIGINAL_COMMAND").ok();
    if !upkeep::documents::trigger::ssh_command_ok(asked.as_deref()) {
        errln!(
            "refused: this key may only trigger an update pass; SSH_ORIGINAL_COMMAND must be empty or one of {}",
            upkeep::documents::trigger::SSH_WORDS.join(", ")
        );
        return Ok(exit::CONFIG);
    }
    super::run::auto(root, false, false, false)
}

/// `upkeep push`.
pub fn push(
    repo: &Path,
    fleet_db: Option<&Path>,
    class: upkeep::publisher::fleet::push::Class,
    key: &Path,
    (wait, timeout): (bool, std::time::Duration),
    json: bool,
) -> Result<u8> {
    use upkeep::publisher::fleet::push;
    if class.group.is_none() && class.channel.is_none() && class.site.is_none() {
        return Err(Error::refused(
            "push to whom? give --group G, --channel C or --site NAME",
            "a push reaches every enrolled site of that class at once",
        ));
    }
    let key = SecretKey::load(key)?;
    let db = upkeep::publisher::fleet::db::FleetDb::open_at(&super::publisher::fleet_place(
        repo, fleet_db,
    )?)?;
    let answers = push::push(&db, &key, &class)?;
    if answers.is_empty() {
        return Err(Error::refused(
            "no enrolled site is in that class",
            "see `upkeep fleet status --repo REPO`",
        ));
    }
    let started = answers.iter().filter(|a| a.started()).count();
    if !json {
        for a in &answers {
            outln!(
                "{:<24} {}",
                one_line(&a.site),
                match a.status {
                    Some(s) => format!("{s} {}", one_line(&a.text)),
                    None => format!("not reached: {}", one_line(&a.text)),
                }
            );
        }
        outln!("triggered {started} of {} site(s)", answers.len());
    }
    let mut results = Vec::new();
    if wait && started > 0 {
        results = push::wait(&db, &answers, timeout, &|n, of| {
            if !json {
                err!("\rreported: {n} of {of}   ");
            }
        })?;
        if !json {
            errln!();
            for (name, row) in &results {
                match row.as_ref().and_then(|r| r.last.as_ref()) {
                    Some(r) => outln!(
                        "{:<24} {:<12} {} {}",
                        one_line(name),
                        r.outcome.word(),
                        r.installed.as_deref().unwrap_or("-"),
                        one_line(&r.reason.chars().take(100).collect::<String>())
                    ),
                    None => outln!(
                        "{:<24} no report within {}",
                        one_line(name),
                        upkeep::base::clock::span_words(timeout)
                    ),
                }
            }
        }
    }
    if json {
        print_json(&serde_json::json!({
            "answers": answers,
            "reports": results.iter().map(|(n, r)| serde_json::json!({"site": n, "report": r.as_ref().and_then(|r| r.last.clone())})).collect::<Vec<_>>(),
        }));
    }
    let all_reported = results.iter().all(|(_, r)| r.is_some());
    Ok(if started == answers.len() && (!wait || all_reported) {
        0
    } else {
        exit::FAILED
    })
}

/// `upkeep enroll`.
pub fn enroll(root: &Path, token: &str) -> Result<u8> {
    let inst = super::site_instance(root)?;
    let me = upkeep::site::fleet::report::enroll(&inst, token)?;
    outln!(
        "enrolled site {} with {}: reports go there after every run and every unattended pass",
        me.id,
        inst.config.reference
    );
    Ok(0)
}

/// `upkeep fleet ...`.
pub fn fleet(action: crate::cli::FleetAction) -> Result<u8> {
    use crate::cli::FleetAction as A;
    use upkeep::publisher::fleet::db::{FleetDb, counters};
    let open = |repo: &Path, db: &Option<std::path::PathBuf>| -> Result<FleetDb> {
        FleetDb::open_at(&super::publisher::fleet_place(repo, db.as_deref())?)
    };
    match action {
        A::User(op) => {
            use crate::cli::FleetUserCommand as U;
            let (name, db, passwd) = match op {
                U::Add { name, db } => (name, db, false),
                U::Passwd { name, db } => (name, db, true),
            };
            let db = open(&db.repo, &db.fleet_db)?;
            let pw = super::run::read_new_password(&name)?;
            if passwd {
                accounts::passwd(&db, &name, &pw)?;
                outln!("password of {name} changed; its sessions were ended");
            } else {
                accounts::add(&db, &name, &pw)?;
                outln!(
                    "fleet page account {name} created: log in at /fleet on the reference server"
                );
            }
            Ok(0)
        }
        A::Token {
            repo,
            fleet_db,
            uses,
            expires,
        } => {
            let db = open(&repo, &fleet_db)?;
            let t = db.new_token(uses, expires.as_secs())?;
            outln!("{t}");
            errln!(
                "valid for {} site(s) during {}: on each site, `upkeep enroll --root DIR {t}` (or `upkeep init ... --enroll {t}`)",
                uses,
                upkeep::base::clock::span_words(expires)
            );
            Ok(0)
        }
        A::Status {
            repo,
            fleet_db,
            site,
            group,
            channel,
            silent_after,
            json,
        } => {
            let db = open(&repo, &fleet_db)?;
            if let Some(who) = site {
                return site_history(&db, &who, json);
            }
            let rows: Vec<_> = db
                .sites()?
                .into_iter()
                .filter(|s| group.as_ref().is_none_or(|g| s.groups.contains(g)))
                .filter(|s| channel.as_ref().is_none_or(|c| &s.channel == c))
                .collect();
            // Per channel: the release it rolls out and the sites' counters for it.
            let mut channels: Vec<String> = rows.iter().map(|s| s.channel.clone()).collect();
            channels.sort();
            channels.dedup();
            let mut per = Vec::new();
            for c in &channels {
                let ptr = upkeep::publisher::fleet::rollout::read_channel(&repo, c)
                    .ok()
                    .flatten();
                let release = ptr.as_ref().map(|p| p.release.clone()).or_else(|| {
                    upkeep::publisher::publish::latest_version(&repo)
                        .ok()
                        .flatten()
                });
                if let Some(r) = release {
                    let on: Vec<_> = rows.iter().filter(|s| &s.channel == c).collect();
                    let about = db.outcomes(&r)?;
                    per.push(serde_json::json!({
                        "channel": c,
                        "release": r,
                        "rollout": ptr.as_ref().map(|p| serde_json::json!({
                            "state": p.state, "wave": p.wave + 1, "waves": p.waves.iter().map(|w| w.to_string()).collect::<Vec<_>>(),
                        })),
                        "counters": counters(&r, &on, &about, silent_after.as_secs() as i64),
                        "failures": upkeep::publisher::fleet::db::failures(&db, &rows, c, &r, &about)?
                            .into_iter()
                            .map(|(s, rep)| serde_json::json!({
                                "site": s.name, "outcome": rep.outcome, "failed_step": rep.failed_step, "reason": rep.reason,
                            }))
                            .collect::<Vec<_>>(),
                    }));
                }
            }
            if json {
                #[derive(serde::Serialize)]
                struct Out<'a> {
                    sites: &'a [upkeep::publisher::fleet::db::SiteRow],
                    releases: &'a [serde_json::Value],
                }
                print_json(&Out {
                    sites: &rows,
                    releases: &per,
                });
                return Ok(0);
            }
            outln!(
                "{:<20} {:<14} {:<8} {:<9} {:<12} {:<10} {:>8}",
                "site",
                "groups",
                "channel",
                "version",
                "last",
                "seen",
                "closed"
            );
            for s in &rows {
                let last = s.last.as_ref();
                outln!(
                    "{:<20} {:<14} {:<8} {:<9} {:<12} {:<10} {:>8}",
                    one_line(&s.name.chars().take(20).collect::<String>()),
                    s.groups.join(","),
                    s.channel,
                    s.version.as_deref().unwrap_or("-"),
                    last.map(|r| r.outcome.words()).unwrap_or("-"),
                    s.last_seen_secs
                        .map(|t| format!(
                            "{} ago",
                            upkeep::base::clock::span_words(std::time::Duration::from_secs(
                                t.max(0) as u64
                            ))
                        ))
                        .unwrap_or_else(|| "never".into()),
                    last.and_then(|r| r.closed_ms)
                        .map(|ms| format!("{ms} ms"))
                        .unwrap_or_else(|| "-".into()),
                );
            }
            for p in &per {
                outln!();
                let rollout = match &p["rollout"] {
                    serde_json::Value::Null => String::new(),
                    r => format!(
                        ", rollout {} at wave {} of {}",
                        r["state"].as_str().unwrap_or_default(),
                        r["wave"],
                        r["waves"].as_array().map_or(0, |w| w.len())
                    ),
                };
                outln!(
                    "channel {}: release {}{rollout}",
                    p["channel"].as_str().unwrap_or_default(),
                    p["release"].as_str().unwrap_or_default(),
                );
                outln!("  {}", counter_words(&p["counters"]));
                for f in p["failures"].as_array().into_iter().flatten() {
                    outln!(
                        "  {} {} at {}: {}",
                        one_line(f["site"].as_str().unwrap_or_default()),
                        f["outcome"].as_str().unwrap_or_default().replace('_', " "),
                        f["failed_step"].as_str().unwrap_or("-"),
                        one_line(
                            &f["reason"]
                                .as_str()
                                .unwrap_or_default()
                                .chars()
                                .take(200)
                                .collect::<String>()
                        )
                    );
                }
            }
            Ok(0)
        }
    }
}

/// A release's counters as a line a person reads: the non-zero ones, in the order of a run.
fn counter_words(c: &serde_json::Value) -> String {
    let words = [
        ("success", "on it"),
        ("pending", "pending"),
        ("downloading", "downloading"),
        ("installing", "installing"),
        ("failure", "failed"),
        ("rolled_back", "rolled back"),
        ("silent", "silent"),
        ("held", "held"),
        ("postponed", "postponed"),
    ];
    let parts: Vec<String> = words
        .iter()
        .filter_map(|(k, w)| match c[*k].as_u64() {
            Some(n) if n > 0 => Some(format!("{n} {w}")),
            _ => None,
        })
        .collect();
    match parts.is_empty() {
        true => "no site yet".into(),
        false => parts.join(", "),
    }
}

/// `fleet status --site NAME`: one site's reports, newest first.
fn site_history(db: &upkeep::publisher::fleet::db::FleetDb, who: &str, json: bool) -> Result<u8> {
    let Some(site) = db.find_site(who)? else {
        return Err(Error::refused(
            format!("no enrolled site is named {who}"),
            "see the names with `upkeep fleet status --repo REPO`",
        ));
    };
    let history = db.history(
        &site.id,
        upkeep::publisher::fleet::db::REPORTS_KEPT as usize,
    )?;
    if json {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            site: &'a upkeep::publisher::fleet::db::SiteRow,
            reports: Vec<serde_json::Value>,
        }
        print_json(&Out {
            site: &site,
            reports: history
                .iter()
                .map(|(at, r)| serde_json::json!({"received_at": at, "report": r}))
                .collect(),
        });
        return Ok(0);
    }
    outln!(
        "{} ({}), channel {}, release {}: {} report(s) kept",
        one_line(&site.name),
        site.id,
        site.channel,
        site.version.as_deref().unwrap_or("unknown"),
        history.len()
    );
    outln!(
        "{:<20} {:<12} {:<17} {:<9} {:>8} {:>9}  why",
        "received",
        "result",
        "release",
        "step",
        "closed",
        "fetched"
    );
    for (at, r) in &history {
        outln!(
            "{:<20} {:<12} {:<17} {:<9} {:>8} {:>9}  {}",
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs((*at).max(0) as u64)
            ),
            r.outcome.words(),
            format!(
                "{} -> {}",
                r.from.as_deref().unwrap_or("-"),
                r.to.as_deref().unwrap_or("-")
            ),
            r.failed_step.as_deref().unwrap_or("-"),
            r.closed_ms
                .map(|ms| format!("{ms} ms"))
                .unwrap_or_else(|| "-".into()),
            r.bytes_fetched
                .map(upkeep::base::fsutil::human_bytes)
                .unwrap_or_else(|| "-".into()),
            one_line(&r.reason.chars().take(200).collect::<String>())
        );
    }
    Ok(0)
}
