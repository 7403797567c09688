//! Two reference servers, one fleet on a real PostgreSQL, each serving a repository folder of
//! its own: enrolments with one token through either, reports through either, one rollout
//! steered by whichever takes the report that moves it. The server that advanced the rollout
//! is killed; a third connection holds the steering lock as a server stuck mid-steer would,
//! and dies: the other server takes the advance from the database, halts the rollout the
//! moment the lock goes, and every move happens once. A pointer forged into the database is
//! not served.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::postgres::Postgres;
use common::*;
use upkeep::documents::manifest::SecretKey;

/// A site as the fleet endpoints see it: a key, an id, numbered signed reports.
struct Peer {
    id: String,
    key: SecretKey,
    name: String,
    groups: Vec<String>,
    seq: u64,
}

impl Peer {
    fn new(n: u8, name: &str, groups: &[&str]) -> Peer {
        Peer {
            id: format!("{n:02x}").repeat(16),
            key: SecretKey::generate().unwrap(),
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            seq: 0,
        }
    }

    fn enrol(&self, url: &str, token: &str) -> (u16, String) {
        let body = serde_json::json!({
            "token": token, "site_id": self.id, "public_key": self.key.public().to_text(),
            "name": self.name, "groups": self.groups, "channel": "stable", "url": null,
            "installed": "1.0.0"
        });
        let r = reqwest::blocking::Client::new()
            .post(format!("{url}fleet/enroll"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    }

    fn report(&mut self, url: &str, outcome: &str, installed: &str) -> (u16, String) {
        self.seq += 1;
        let failed = outcome == "rolled_back";
        let body = serde_json::to_vec(&serde_json::json!({
            "format": 1, "site_id": self.id, "seq": self.seq, "at": "2026-12-02T00:00:00Z",
            "name": self.name, "groups": self.groups, "channel": "stable",
            "installed": installed, "from": "1.0.0", "to": "1.1.0", "outcome": outcome,
            "failed_step": if failed { Some("health") } else { None },
            "reason": if failed { "the health check answered 500" } else { "fine" },
            "closed_ms": 12, "bytes_fetched": 100, "modified": 1, "health": null
        }))
        .unwrap();
        let sig = self.key.sign(&body);
        common::fleet::post(url, &body, Some(&sig))
    }
}

fn rollout(repo: &str) -> serde_json::Value {
    serde_json::from_str(&ok(upkeep(&[
        "rollout",
        "status",
        "--channel",
        "stable",
        "--repo",
        repo,
        "--json",
    ])))
    .unwrap()
}

fn events(hook: &common::webhook::Receiver) -> Vec<String> {
    hook.received()
        .iter()
        .map(|g| {
            let e: serde_json::Value = serde_json::from_str(g["body"].as_str().unwrap()).unwrap();
            e["event"].as_str().unwrap().to_string()
        })
        .collect()
}

/// Bounded wait until the receiver has taken `n` deliveries.
fn wait_events(hook: &common::webhook::Receiver, n: usize) -> Vec<String> {
    let t0 = std::time::Instant::now();
    while hook.received().len() < n && t0.elapsed().as_secs() < 30 {
        std::thread::yield_now();
    }
    events(hook)
}

#[test]
fn two_reference_servers_on_one_postgresql_steer_one_rollout_once_with_one_killed() {
    if !common::postgres::installed() {
        return;
    }
    let pg = Postgres::start();
    pg.site_database("fleet", "fleet pass");
    let w = World::new();
    w.publish("1.0.0", &[("index.html", b"v1")]);
    w.publish("1.1.0", &[("index.html", b"v2")]);
    let online = w.online_key();
    let repo = w.repo.to_str().unwrap().to_string();
    let pass = w.path("fleet.pass");
    std::fs::write(&pass, "fleet pass\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
    // One server by TCP with the password, the other by the socket folder.
    let by_tcp = format!("postgresql://fleet@127.0.0.1:{}/fleet", pg.port);
    let by_socket = format!(
        "postgresql://fleet@localhost:{}/fleet?host={}",
        pg.port,
        pg.socket_dir.display()
    );

    // A wrong password is told, with where the right one goes.
    let o = upkeep_env(
        &["fleet", "token", "--repo", &repo, "--fleet-db", &by_tcp],
        &[("UPKEEP_FLEET_DB_PASSWORD", "wrong")],
    );
    let err = stderr(&o);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        err.contains("cannot reach the fleet database") && err.contains("password"),
        "{err}"
    );
    let token = ok(upkeep(&[
        "fleet",
        "token",
        "--repo",
        &repo,
        "--fleet-db",
        &by_socket,
        "--uses",
        "4",
    ]))
    .trim()
    .to_string();

    let hook = common::webhook::Receiver::start(0);
    // B serves a folder of its own, copied before the promotion: the rollout reaches it
    // through the fleet database.
    let repo_b = w.path("repo-b").to_str().unwrap().to_string();
    assert!(
        Command::new("cp")
            .args(["-a", &repo, &repo_b])
            .status()
            .unwrap()
            .success()
    );
    let server = |repo: &str, db: &str, env: &[(&str, &str)]| {
        spawn_server_env(
            &[
                "reference",
                "--repo",
                repo,
                "--online-key",
                &online,
                "--fleet-db",
                db,
                "--notify",
                &hook.url,
                "--tick",
                "1s",
            ],
            "127.0.0.1:0",
            env,
        )
    };
    let mut a = server(
        &repo,
        &by_tcp,
        &[("UPKEEP_FLEET_DB_PASSWORD_FILE", pass.to_str().unwrap())],
    );
    let b = server(&repo_b, &by_socket, &[]);

    // One token of four uses, taken through both servers: four sites, then no fifth.
    let mut tester = Peer::new(1, "tester", &["test"]);
    let mut sites: Vec<Peer> = (2..5)
        .map(|n| Peer::new(n, &format!("s{n}"), &[]))
        .collect();
    assert_eq!(tester.enrol(&a.url, &token).0, 200);
    for (i, s) in sites.iter().enumerate() {
        let (status, text) = s.enrol(if i % 2 == 0 { &b.url } else { &a.url }, &token);
        assert_eq!(status, 200, "{text}");
    }
    let (status, text) = Peer::new(9, "late", &[]).enrol(&b.url, &token);
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("used up"), "{text}");

    ok(w.promote(
        "1.1.0",
        "stable",
        &[
            "--waves",
            "test,100%",
            "--every",
            "0s",
            "--halt-on-failure",
            "1",
        ],
    ));
    let promoted = rollout(&repo)["serial"].as_u64().unwrap();

    // The tester's success, taken by A, advances the rollout to its second wave.
    assert_eq!(tester.report(&a.url, "installing", "1.0.0").0, 200);
    let (status, text) = tester.report(&a.url, "success", "1.1.0");
    assert_eq!(status, 200, "{text}");
    let p = rollout(&repo);
    assert_eq!(
        (p["wave"].as_u64(), p["state"].as_str()),
        (Some(1), Some("active")),
        "{p}"
    );
    assert_eq!(wait_events(&hook, 1), ["wave_advanced"]);
    // Its delivery done and off the shared queue (a server killed between a receiver's answer
    // and that is the one case where a receiver is told twice, half a minute later).
    let t0 = std::time::Instant::now();
    while pg.sql("fleet", "SELECT count(*) FROM notify_queue").trim() != "0" {
        assert!(t0.elapsed().as_secs() < 30, "the delivery stays queued");
        std::thread::yield_now();
    }

    // A dies (kill -9). A connection holding the steering lock stands for a server that dies
    // in the middle of steering.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let mut holder = Command::new("psql")
        .arg("-h")
        .arg(&pg.socket_dir)
        .args(["-p", &pg.port.to_string(), "-U", "fleet", "-d", "fleet"])
        .args(["-X", "-q", "-A", "-t"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    writeln!(
        holder.stdin.as_mut().unwrap(),
        "SELECT pg_advisory_lock({}); SELECT 'held';",
        upkeep::publisher::fleet::db::PILOT_LOCK
    )
    .unwrap();
    let mut out = BufReader::new(holder.stdout.take().unwrap());
    let mut line = String::new();
    while line.trim() != "held" {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "psql ended");
    }

    // A site rolls the release back and tells B: B waits for the lock while the holder lives.
    let url = b.url.clone();
    let mut s = sites.remove(0);
    let told = std::thread::spawn(move || s.report(&url, "rolled_back", "1.0.0"));
    assert_ne!(
        rollout(&repo_b)["state"],
        "halted",
        "nothing moves while the lock is held"
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
    let (status, text) = told.join().unwrap();
    assert_eq!(status, 200, "{text}");
    // B took A's advance first (else it would have advanced again, from the first wave).
    let p = rollout(&repo_b);
    assert_eq!(p["state"], "halted", "{p}");
    assert!(
        p["reason"].as_str().unwrap().contains("1 rolled back"),
        "{p}"
    );
    // Promote, advance, halt: one pointer each.
    assert_eq!(p["serial"].as_u64(), Some(promoted + 2), "{p}");

    // A pointer forged into the database (a later serial, the rollout active again) is not
    // served; a second failure changes nothing; each event came once, B delivering its own.
    pg.sql(
        "fleet",
        "UPDATE channels SET serial = serial + 10, doc = replace(doc, '\"halted\"', '\"active\"')",
    );
    assert_eq!(sites[0].report(&b.url, "rolled_back", "1.0.0").0, 200);
    let p = rollout(&repo_b);
    assert_eq!(
        (p["serial"].as_u64(), p["state"].as_str()),
        (Some(promoted + 2), Some("halted")),
        "{p}"
    );
    assert_eq!(
        pg.sql("fleet", "SELECT serial FROM channels").trim(),
        (promoted + 2).to_string(),
        "the forged pointer is replaced by the signed one"
    );
    let mut got = wait_events(&hook, 4);
    got.sort();
    assert_eq!(
        got,
        [
            "rollout_halted",
            "site_failed",
            "site_failed",
            "wave_advanced"
        ]
    );

    // The table, read from PostgreSQL by the command line: both servers' reports.
    let st: serde_json::Value = serde_json::from_str(&ok(upkeep(&[
        "fleet",
        "status",
        "--repo",
        &repo_b,
        "--fleet-db",
        &by_socket,
        "--json",
    ])))
    .unwrap();
    assert_eq!(st["sites"].as_array().unwrap().len(), 4, "{st}");
    let c = &st["releases"][0]["counters"];
    assert_eq!(
        (c["success"].as_u64(), c["rolled_back"].as_u64()),
        (Some(1), Some(2)),
        "{st}"
    );
    drop(b);
}
