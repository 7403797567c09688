//! Rollouts that steer themselves: a reference server holding the online key advances a
//! three-wave rollout on good reports from real instances, survives a restart mid-rollout, and
//! halts a failing release by its threshold before any site outside the first wave touches it.

mod common;

use common::smtp::free_port;
use common::*;

struct Ref {
    w: World,
    args: Vec<String>,
    listen: String,
}

impl Ref {
    fn new(w: World) -> Ref {
        let online = w.online_key();
        Ref {
            args: vec![
                "reference".into(),
                "--repo".into(),
                w.repo.to_str().unwrap().into(),
                "--online-key".into(),
                online,
            ],
            listen: format!("127.0.0.1:{}", free_port()),
            w,
        }
    }

    fn start(&self) -> Server {
        let a: Vec<&str> = self.args.iter().map(String::as_str).collect();
        spawn_server_on(&a, &self.listen)
    }

    fn promote(&self, v: &str, extra: &[&str]) {
        ok(self.w.promote(v, "stable", extra));
    }

    fn rollout(&self) -> serde_json::Value {
        serde_json::from_str(&ok(upkeep(&[
            "rollout",
            "status",
            "--channel",
            "stable",
            "--repo",
            self.w.repo.to_str().unwrap(),
            "--json",
        ])))
        .unwrap()
    }

    fn site(&self, name: &str, url: &str, token: &str, group: Option<&str>) -> Site {
        let mut extra = vec!["--name", name, "--enroll", token];
        if let Some(g) = group {
            extra.extend(["--group", g]);
        }
        let s = Site::new(
            self.w
                .instance(name, Some(&self.w.path("release-1.0.0")), url, &extra),
        );
        set_config(&s.root, "auto", "enabled", "true");
        set_config(&s.root, "auto", "allow", "\"minor\"");
        s
    }
}

fn token(w: &World, uses: u32) -> String {
    ok(upkeep(&[
        "fleet",
        "token",
        "--repo",
        w.repo.to_str().unwrap(),
        "--uses",
        &uses.to_string(),
    ]))
    .trim()
    .to_string()
}

/// One unattended pass; returns the output, the exit code checked.
fn pass(s: &Site) -> String {
    let o = s.run(&["auto"]);
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert!(matches!(o.status.code(), Some(0 | 1 | 3)), "{out}");
    out
}

fn installed(s: &Site) -> String {
    s.status_json()["installed"].as_str().unwrap().to_string()
}

#[test]
fn a_three_wave_rollout_advances_on_good_reports_and_survives_a_restart() {
    let w = World::new();
    w.publish("1.0.0", &[("index.html", b"v1")]);
    w.publish("1.1.0", &[("index.html", b"v2")]);
    let mut r = Ref::new(w);
    // A webhook down for its first delivery, told of the failed site and of the halt.
    let hook = common::webhook::Receiver::start(1);
    let secret = r.w.path("hook.secret");
    std::fs::write(&secret, "publisher secret\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    r.args.extend(
        [
            "--notify",
            &hook.url,
            "--notify-secret-file",
            secret.to_str().unwrap(),
            "--tick",
            "1s",
        ]
        .map(String::from),
    );
    let srv = r.start();
    let t = token(&r.w, 10);
    let tester = r.site("tester", &srv.url, &t, Some("test"));
    let sites: Vec<Site> = (0..6)
        .map(|i| r.site(&format!("s{i}"), &srv.url, &t, None))
        .collect();
    r.promote(
        "1.1.0",
        &[
            "--waves",
            "test,50%,100%",
            "--every",
            "0s",
            "--min-reports",
            "1",
        ],
    );

    // Before the test group reports, nobody else is offered the release.
    for s in &sites {
        let out = pass(s);
        assert!(
            out.contains("NOTHING TO DO: up to date with release 1.0.0"),
            "{out}"
        );
    }
    assert_eq!(r.rollout()["wave"], 0);
    // The tester updates and reports: the server moves the rollout to 50% at once.
    let out = pass(&tester);
    assert!(out.contains("UPDATED"), "{out}");
    let p = r.rollout();
    assert_eq!(p["wave"], 1, "{p}");
    assert_eq!(p["state"], "active");

    // The server restarts mid-rollout: the state is in the signed pointer and the database.
    drop(srv);
    let srv = r.start();
    assert_eq!(r.rollout()["wave"], 1);

    // Every site that updates was offered the release by a wave reached at that moment; the
    // first success of the 50% wave moves the rollout on, and in the end everyone has it.
    let mut rounds = 0;
    while sites.iter().any(|s| installed(s) != "1.1.0") {
        rounds += 1;
        assert!(
            rounds <= 3,
            "the rollout should reach everyone within three rounds"
        );
        for s in &sites {
            let wave_before = r.rollout()["wave"].as_u64().unwrap();
            let out = pass(s);
            if out.contains("UPDATED") {
                let check = ok(s.run(&["status", "--json"]));
                let st: serde_json::Value = serde_json::from_str(&check).unwrap();
                let offer = st["offer"].as_str().unwrap_or_default().to_string();
                assert!(
                    offer.contains(", reached: ") || offer.contains("is complete"),
                    "updated without being reached: {offer}"
                );
                assert!(wave_before >= 1, "{out}");
            }
        }
    }
    let p = r.rollout();
    assert!(
        p["wave"].as_u64().unwrap() == 2 || p["state"] == "complete",
        "{p}"
    );
    let st: serde_json::Value = serde_json::from_str(&ok(upkeep(&[
        "fleet",
        "status",
        "--repo",
        r.w.repo.to_str().unwrap(),
        "--json",
    ])))
    .unwrap();
    assert_eq!(st["releases"][0]["counters"]["success"], 7, "{st}");
    drop(srv);
}

#[test]
fn a_failing_release_is_halted_by_its_threshold_before_anyone_outside_the_first_wave_has_it() {
    let w = World::new();
    w.publish("1.0.0", &[("index.html", b"v1")]);
    w.publish(
        "1.1.0",
        &[
            ("index.html", b"v2"),
            (
                "run_once/001-migrate.sh",
                b"echo the new schema fails >&2; exit 3\n",
            ),
        ],
    );
    let mut r = Ref::new(w);
    // A webhook down for its first delivery, told of the failed site and of the halt.
    let hook = common::webhook::Receiver::start(1);
    let secret = r.w.path("hook.secret");
    std::fs::write(&secret, "publisher secret\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    r.args.extend(
        [
            "--notify",
            &hook.url,
            "--notify-secret-file",
            secret.to_str().unwrap(),
            "--tick",
            "1s",
        ]
        .map(String::from),
    );
    let srv = r.start();
    let t = token(&r.w, 10);
    let tester = r.site("tester", &srv.url, &t, Some("test"));
    let sites: Vec<Site> = (0..5)
        .map(|i| r.site(&format!("s{i}"), &srv.url, &t, None))
        .collect();
    let before: Vec<_> = sites.iter().map(|s| snapshot(&s.root)).collect();
    r.promote(
        "1.1.0",
        &[
            "--waves",
            "test,100%",
            "--every",
            "0s",
            "--halt-on-failure",
            "1",
        ],
    );

    // The test site's run fails, is rolled back, and its report halts the rollout.
    let out = pass(&tester);
    assert!(out.contains("ROLLED BACK"), "{out}");
    assert_eq!(installed(&tester), "1.0.0");
    let p = r.rollout();
    assert_eq!(p["state"], "halted", "{p}");
    assert!(
        p["reason"]
            .as_str()
            .unwrap()
            .contains("1 of 1 reporting sites failed"),
        "{p}"
    );

    // Nobody else is offered 1.1.0; their trees are exactly as before.
    for (s, b) in sites.iter().zip(&before) {
        let out = pass(s);
        assert!(
            out.contains("NOTHING TO DO: up to date with release 1.0.0"),
            "{out}"
        );
        let check: serde_json::Value =
            serde_json::from_str(&stdout(&s.run(&["check", "--json"]))).unwrap();
        assert!(
            check["offer"].as_str().unwrap().contains("halted"),
            "{check}"
        );
        let mut now = snapshot(&s.root);
        let mut b = b.clone();
        now.remove("upkeep.toml");
        b.remove("upkeep.toml");
        assert_eq!(now, b);
    }
    let st: serde_json::Value = serde_json::from_str(&ok(upkeep(&[
        "fleet",
        "status",
        "--repo",
        r.w.repo.to_str().unwrap(),
        "--json",
    ])))
    .unwrap();
    let c = &st["releases"][0]["counters"];
    assert_eq!(c["rolled_back"], 1, "{st}");
    assert_eq!(c["success"], 0, "{st}");

    // The webhook: refused once, then both events in order, signed, within the retries.
    let t0 = std::time::Instant::now();
    while hook.received().len() < 2 && t0.elapsed().as_secs() < 30 {
        std::thread::yield_now();
    }
    let got = hook.received();
    let events: Vec<serde_json::Value> = got
        .iter()
        .map(|g| serde_json::from_str(g["body"].as_str().unwrap()).unwrap())
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["site_failed", "rollout_halted"], "{events:?}");
    assert_eq!(events[0]["site"], "tester");
    assert_eq!(events[0]["release"], "1.1.0");
    assert!(
        events[0]["text"]
            .as_str()
            .unwrap()
            .contains("tester rolled back release 1.1.0")
    );
    assert!(
        events[1]["reason"]
            .as_str()
            .unwrap()
            .contains("1 of 1 reporting sites failed")
    );
    for g in &got {
        assert_eq!(
            g["headers"]["x-upkeep-signature-256"],
            upkeep::client::webhook::sign(
                b"publisher secret",
                g["body"].as_str().unwrap().as_bytes()
            )
        );
    }
    drop(srv);
}

#[test]
fn sites_behind_an_nginx_mirror_and_a_leaf_enrol_report_and_count_at_the_publisher() {
    let w = World::new();
    w.publish("1.0.0", &[("index.html", b"v1")]);
    w.publish("1.1.0", &[("index.html", b"v2")]);
    let r = Ref::new(w);
    let srv = r.start();
    // The publisher signs where the fleet reports into the delegation, which mirrors carry.
    let out = ok(upkeep(&[
        "delegate",
        "--repo",
        r.w.repo.to_str().unwrap(),
        "--key",
        r.w.key.to_str().unwrap(),
        "--online-key-pub",
        &format!("{}.pub", r.w.online_key()),
        "--reports",
        &srv.url,
    ]));
    assert!(out.contains(&format!("report to {}", srv.url)), "{out}");
    r.promote("1.1.0", &["--waves", "100%", "--every", "0s"]);
    let t = token(&r.w, 2);

    // A hub copied by `upkeep mirror`, served by nginx with the README's lines, and a leaf
    // (`upkeep reference --mirror-from` the nginx) with a fleet database of its own.
    let rel_pub = format!("{}.pub", r.w.key.display());
    let hub = r.w.path("hub");
    ok(upkeep(&[
        "mirror",
        "--from",
        &srv.url,
        "--to",
        hub.to_str().unwrap(),
        "--public-key",
        &rel_pub,
    ]));
    let nginx = common::nginx::Nginx::serve_mirror(&hub, &r.w.path("nginx"));
    let trigger = r.w.path("trigger.key");
    ok(upkeep(&["keygen", "--out", trigger.to_str().unwrap()]));
    let leaf = r.w.path("leaf");
    let leaf_srv = spawn_server(&[
        "reference",
        "--repo",
        leaf.to_str().unwrap(),
        "--mirror-from",
        &nginx.url,
        "--public-key",
        &rel_pub,
        "--trigger-key",
        &format!("{}.pub", trigger.display()),
    ]);
    let synced = leaf.join("channels/stable.json");
    let t0 = std::time::Instant::now();
    while !synced.exists() && t0.elapsed().as_secs() < 30 {
        std::thread::yield_now();
    }
    assert!(synced.exists(), "the leaf synced at start");

    // Each enrols and reports at the address the delegation names (nginx alone answers 404).
    let behind_nginx = r.site("behind-nginx", &nginx.url, &t, None);
    let behind_leaf = r.site("behind-leaf", &leaf_srv.url, &t, None);
    for s in [&behind_nginx, &behind_leaf] {
        let out = pass(s);
        assert!(out.contains("UPDATED"), "{out}");
        assert!(out.contains("report: 1 sent to the reference"), "{out}");
        assert_eq!(installed(s), "1.1.0");
    }
    let st: serde_json::Value = serde_json::from_str(&ok(upkeep(&[
        "fleet",
        "status",
        "--repo",
        r.w.repo.to_str().unwrap(),
        "--json",
    ])))
    .unwrap();
    let names: Vec<&str> = st["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["behind-leaf", "behind-nginx"], "{st}");
    assert_eq!(st["releases"][0]["counters"]["success"], 2, "{st}");
    // The origin's pilot counted both: the single-wave rollout is complete.
    assert_eq!(r.rollout()["state"], "complete");
    // The leaf's own fleet database enrolled nobody: the fleet is not split.
    let leaf_st: serde_json::Value = serde_json::from_str(&ok(upkeep(&[
        "fleet",
        "status",
        "--repo",
        leaf.to_str().unwrap(),
        "--json",
    ])))
    .unwrap();
    assert_eq!(leaf_st["sites"].as_array().unwrap().len(), 0, "{leaf_st}");
    drop(srv);
}
