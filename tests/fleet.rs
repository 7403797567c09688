//! Channels and waves, end to end: a real reference server, several real instances, a release
//! rolled out to a group, then a share, then everyone; a halt; forged, replayed and stale
//! channel pointers refused by sites.

mod common;

use common::*;

struct Fleet {
    w: World,
    srv: Server,
    online: String,
}

/// 1.0.0 and 1.1.0 published; an online key delegated by the release key.
fn fleet() -> Fleet {
    let w = World::new();
    w.publish("1.0.0", &[("index.html", b"v1")]);
    w.publish("1.1.0", &[("index.html", b"v2")]);
    let online = w.online_key();
    let srv = w.reference();
    Fleet { online, w, srv }
}

impl Fleet {
    fn site(&self, name: &str, extra: &[&str]) -> Site {
        Site::new(self.w.instance(
            name,
            Some(&self.w.path("release-1.0.0")),
            &self.srv.url,
            extra,
        ))
    }

    fn repo(&self) -> &str {
        self.w.repo.to_str().unwrap()
    }

    fn rollout(&self, action: &str, extra: &[&str]) -> String {
        let mut a = vec![
            "rollout",
            action,
            "--channel",
            "stable",
            "--repo",
            self.repo(),
            "--key",
            &self.online,
        ];
        a.extend_from_slice(extra);
        ok(upkeep(&a))
    }
}

/// `check --json` of a site: its exit code and what it was offered.
fn check(site: &Site) -> (i32, serde_json::Value) {
    let o = site.run(&["check", "--json"]);
    let code = o.status.code().unwrap();
    assert!(code == 0 || code == 10, "{}", stderr(&o));
    (code, serde_json::from_str(&stdout(&o)).unwrap())
}

/// The documented wave rule: the first 8 bytes of SHA-256("upkeep-wave\0ID\0RELEASE"), as a
/// fraction of 2^64 (to 53 bits).
fn bucket(id: &str, release: &str) -> f64 {
    use sha2::Digest;
    let h = sha2::Sha256::digest(format!("upkeep-wave\0{id}\0{release}").as_bytes());
    (u64::from_be_bytes(h[..8].try_into().unwrap()) >> 11) as f64 / (1u64 << 53) as f64
}

#[test]
fn a_rollout_reaches_the_test_group_then_half_then_everyone() {
    let f = fleet();
    let tester = f.site("tester", &["--group", "test", "--name", "tester"]);
    let others: Vec<Site> = (0..6).map(|i| f.site(&format!("s{i}"), &[])).collect();
    // Before any channel: the latest release, as always.
    assert_eq!(check(&others[0]).1["latest"], "1.1.0");

    let out =
        ok(f.w.promote("1.1.0", "stable", &["--waves", "test,50%,100%"]));
    assert!(
        out.contains("channel stable: release 1.1.0 (active), waves [test] → 50% → 100%"),
        "{out}"
    );
    assert!(out.contains("stay on: 1.0.0"), "{out}");

    let (code, d) = check(&tester);
    assert_eq!(code, 10);
    assert_eq!(d["latest"], "1.1.0");
    assert!(
        d["offer"]
            .as_str()
            .unwrap()
            .contains("in wave 1 of 3 (test), reached: the site is in group test"),
        "{d}"
    );
    for s in &others {
        let (code, d) = check(s);
        assert_eq!(code, 0, "not offered yet: {d}");
        assert_eq!(d["latest"], "1.0.0");
        assert!(
            d["offer"]
                .as_str()
                .unwrap()
                .contains("not reached yet (the rollout is at wave 1 of 3 (test))"),
            "{d}"
        );
    }
    ok(tester.run(&["stage", "--network"]));
    tester.update_yes();
    assert_eq!(
        std::fs::read_to_string(tester.root.join("index.html")).unwrap(),
        "v2"
    );

    // Wave 2: exactly the sites whose bucket for 1.1.0 is under one half.
    f.rollout("advance", &[]);
    for s in &others {
        let id = s.status_json()["site"]["id"].as_str().unwrap().to_string();
        assert_eq!(id.len(), 32);
        let (code, d) = check(s);
        let inside = bucket(&id, "1.1.0") < 0.5;
        assert_eq!(code == 10, inside, "{id}: {d}");
        if inside {
            assert!(
                d["offer"]
                    .as_str()
                    .unwrap()
                    .contains("in wave 2 of 3 (50%), reached: its bucket"),
                "{d}"
            );
        }
    }
    // Wave 3 reaches everyone; then the rollout is complete.
    f.rollout("advance", &[]);
    for s in &others {
        assert_eq!(check(s).0, 10);
    }
    let out = f.rollout("advance", &[]);
    assert!(out.contains("(complete)"), "{out}");
    let s = &others[0];
    let (_, d) = check(s);
    assert!(
        d["offer"]
            .as_str()
            .unwrap()
            .contains("the rollout of 1.1.0 is complete"),
        "{d}"
    );
    ok(s.run(&["stage", "--network"]));
    s.update_yes();
    let st = s.status_json();
    assert_eq!(st["installed"], "1.1.0");
    assert_eq!(st["site"]["channel"], "stable");
}

#[test]
fn a_halted_rollout_sends_every_site_not_yet_updated_back_to_the_release_before() {
    let f = fleet();
    let tester = f.site("tester", &["--group", "test"]);
    let other = f.site("other", &[]);
    ok(f.w.promote("1.1.0", "stable", &["--waves", "test,100%"]));
    ok(tester.run(&["stage", "--network"]));
    tester.update_yes();
    let out = f.rollout("halt", &["--reason", "logins fail on 1.1.0"]);
    assert!(out.contains("(halted: logins fail on 1.1.0)"), "{out}");
    // The other site is held on 1.0.0, and says why; staging finds nothing to fetch.
    let (code, d) = check(&other);
    assert_eq!(code, 0);
    assert_eq!(d["latest"], "1.0.0");
    assert!(
        d["offer"]
            .as_str()
            .unwrap()
            .contains("halted (logins fail on 1.1.0)"),
        "{d}"
    );
    let before = snapshot(&other.root);
    let out = ok(other.run(&["stage", "--network"]));
    assert!(
        out.contains("staged release 1.0.0 from network: 0 files"),
        "{out}"
    );
    assert_eq!(
        snapshot(&other.root).get("index.html"),
        before.get("index.html")
    );
    assert!(!other.root.join("staging/index.html").exists());
    // The tester keeps 1.1.0: the offered 1.0.0 is older, nothing to do.
    let (code, d) = check(&tester);
    assert_eq!(code, 0);
    assert_eq!(d["older"], true);
    // Advancing a halted rollout is refused; resuming goes on from the same wave.
    let a = [
        "rollout",
        "advance",
        "--channel",
        "stable",
        "--repo",
        f.repo(),
        "--key",
        &f.online,
    ];
    let e = fails(upkeep(&a), 1);
    assert!(e.contains("is Halted: it cannot advance"), "{e}");
    f.rollout("resume", &[]);
    assert_eq!(check(&tester).0, 0);
    assert!(
        check(&other).1["offer"]
            .as_str()
            .unwrap()
            .contains("not reached yet")
    );
}

#[test]
fn forged_replayed_stale_and_unknown_channel_pointers_are_refused() {
    let f = fleet();
    let site = f.site("site", &["--group", "test"]);
    // A key the release key never delegated cannot promote, and a pointer it signs is refused.
    let stranger = f.w.path("stranger.key");
    ok(upkeep(&[
        "keygen",
        "--role",
        "online",
        "--out",
        stranger.to_str().unwrap(),
    ]));
    let e = fails(
        upkeep(&[
            "promote",
            "1.1.0",
            "--channel",
            "stable",
            "--repo",
            f.repo(),
            "--key",
            stranger.to_str().unwrap(),
        ]),
        1,
    );
    assert!(e.contains("is not delegated by the release key"), "{e}");
    // An unpublished version and nonsense waves are refused before anything is written.
    let e = fails(f.w.promote("9.0.0", "stable", &[]), 1);
    assert!(e.contains("release 9.0.0 is not published"), "{e}");
    let e = fails(
        f.w.promote("1.1.0", "stable", &["--waves", "50%,10%,100%"]),
        2,
    );
    assert!(e.contains("shares must grow"), "{e}");
    assert!(!f.w.repo.join("channels").exists());

    // A second repository whose release key (another one) delegated the stranger: its pointer
    // for 1.1.0, copied here, is signed by a key this site's release key never named.
    let w2 = World::new();
    w2.publish("1.0.0", &[("index.html", b"v1")]);
    w2.publish("1.1.0", &[("index.html", b"evil")]);
    ok(upkeep(&[
        "delegate",
        "--repo",
        w2.repo.to_str().unwrap(),
        "--key",
        w2.key.to_str().unwrap(),
        "--online-key-pub",
        &format!("{}.pub", stranger.display()),
        "--online-key-pub",
        &format!("{}.pub", f.online),
    ]));
    ok(upkeep(&[
        "promote",
        "1.1.0",
        "--channel",
        "stable",
        "--repo",
        w2.repo.to_str().unwrap(),
        "--key",
        stranger.to_str().unwrap(),
    ]));
    let copy = |from: &World, name: &str| {
        std::fs::create_dir_all(f.w.repo.join("channels")).unwrap();
        for ext in ["json", "sig"] {
            std::fs::copy(
                from.repo.join(format!("channels/{name}.{ext}")),
                f.w.repo.join(format!("channels/stable.{ext}")),
            )
            .unwrap();
        }
    };
    copy(&w2, "stable");
    let before = snapshot(&site.root);
    let e = fails(site.run(&["check"]), 1);
    assert!(
        e.contains("not signed by an online key the release key delegated"),
        "{e}"
    );
    // The delegated online key pointing the channel at a manifest this release key did not
    // sign (1.1.0 of the other repository): the site refuses the manifest.
    ok(upkeep(&[
        "promote",
        "1.1.0",
        "--channel",
        "beta",
        "--repo",
        w2.repo.to_str().unwrap(),
        "--key",
        &f.online,
    ]));
    copy(&w2, "beta");
    let e = fails(site.run(&["check"]), 1);
    assert!(
        e.contains("pointer of channel \"beta\""),
        "a replay of another channel: {e}"
    );
    // Signed by the delegated key for this channel name, but naming the other repository's
    // manifest of 1.1.0, which this site's release key never signed.
    ok(upkeep(&[
        "rollout",
        "halt",
        "--channel",
        "stable",
        "--repo",
        w2.repo.to_str().unwrap(),
        "--key",
        stranger.to_str().unwrap(),
        "--reason",
        "x",
    ]));
    ok(upkeep(&[
        "promote",
        "1.1.0",
        "--channel",
        "stable",
        "--repo",
        w2.repo.to_str().unwrap(),
        "--key",
        &f.online,
        "--waves",
        "test,100%",
    ]));
    copy(&w2, "stable");
    let e = fails(site.run(&["check"]), 1);
    assert!(
        e.contains("does not match the one the signed pointer names") || e.contains("signature"),
        "{e}"
    );
    assert_eq!(snapshot(&site.root), before, "nothing changed on the site");

    // A pointer past its expiry is refused, however well signed.
    std::fs::remove_dir_all(f.w.repo.join("channels")).unwrap();
    ok(f.w.promote("1.1.0", "stable", &["--expires", "0s"]));
    let e = fails(site.run(&["check"]), 1);
    assert!(e.contains("expired"), "{e}");
    let out = f.rollout("refresh", &["--expires", "1d"]);
    assert!(out.contains("valid until"), "{out}");
    assert_eq!(check(&site).0, 10);

    // A channel the reference does not have.
    set_config(&site.root, "", "channel", "\"nightly\"");
    let e = fails(site.run(&["check"]), 1);
    assert!(e.contains("the reference has no channel nightly"), "{e}");
    set_config(&site.root, "", "channel", "\"Nightly!\"");
    let e = fails(site.run(&["check"]), 2);
    assert!(e.contains("is not a channel name"), "{e}");
}

#[test]
fn an_urgent_release_reaches_every_wave_at_once_and_only_the_release_key_can_say_so() {
    let f = fleet();
    let site = f.site("site", &["--name", "shop"]);
    set_config(&site.root, "auto", "enabled", "true");
    set_config(&site.root, "auto", "allow", "\"minor\"");
    // A window that is not now.
    let hour: u32 = String::from_utf8(
        std::process::Command::new("date")
            .arg("+%H")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    let window = format!("\"{:02}:00-{:02}:00\"", (hour + 2) % 24, (hour + 3) % 24);
    set_config(&site.root, "auto", "window", &window);
    let smtp = common::smtp::Smtp::start();
    if let Some(s) = &smtp {
        set_config(&site.root, "mail", "to", "\"ops@example.org\"");
        set_config(&site.root, "mail", "smtp", &format!("\"{}\"", s.url()));
    }
    ok(f.w.promote("1.1.0", "stable", &["--waves", "test,100%"]));
    // 1.1.0 is not urgent: a pointer re-signed by the online key calling it urgent is refused.
    let ptr_path = f.w.repo.join("channels/stable.json");
    let mut ptr: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&ptr_path).unwrap()).unwrap();
    ptr["urgent"] = serde_json::json!(true);
    let bytes = serde_json::to_vec_pretty(&ptr).unwrap();
    let online =
        upkeep::documents::manifest::SecretKey::load(std::path::Path::new(&f.online)).unwrap();
    std::fs::write(f.w.repo.join("channels/stable.sig"), online.sign(&bytes)).unwrap();
    std::fs::write(&ptr_path, &bytes).unwrap();
    let e = fails(site.run(&["check"]), 1);
    assert!(
        e.contains("calls release 1.1.0 urgent, but the release's signed manifest does not"),
        "{e}"
    );

    // A real security release, published --urgent: every wave at once, outside the window.
    let d = f.w.path("release-1.1.1");
    write_tree(&d, &[("index.html", b"v2-fixed")]);
    ok(upkeep(&[
        "publish",
        d.to_str().unwrap(),
        "--version",
        "1.1.1",
        "--repo",
        f.repo(),
        "--key",
        f.w.key.to_str().unwrap(),
        "--urgent",
    ]));
    ok(upkeep(&[
        "rollout",
        "halt",
        "--channel",
        "stable",
        "--repo",
        f.repo(),
        "--key",
        &f.online,
        "--reason",
        "superseded",
    ]));
    ok(f.w.promote("1.1.1", "stable", &["--waves", "test,10%,100%"]));
    let (code, d) = check(&site);
    assert_eq!(code, 10);
    assert!(
        d["offer"]
            .as_str()
            .unwrap()
            .contains("1.1.1 is an urgent release: every wave at once"),
        "{d}"
    );
    let o = site.run(&["auto", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let p: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(p["decision"], "updated");
    assert_eq!(p["urgent"], true);
    assert!(
        p["notes"][0]
            .as_str()
            .unwrap()
            .contains("taken outside the window"),
        "{p}"
    );
    assert_eq!(
        std::fs::read_to_string(site.root.join("index.html")).unwrap(),
        "v2-fixed"
    );
    if let Some(s) = smtp {
        let m = s.messages();
        assert!(
            m.iter()
                .any(|m| m.subject == "[upkeep] SUCCESS (URGENT) shop: 1.0.0 -> 1.1.1"),
            "{m:#?}"
        );
    }
}

#[test]
fn a_staged_release_is_still_applied_after_its_channel_pointer_expired() {
    let f = fleet();
    let site = f.site("site", &["--group", "test"]);
    ok(f.w.promote("1.1.0", "stable", &["--waves", "test,100%"]));
    ok(site.run(&["stage", "--network"]));
    // The pointer expires (no refresh came): checks are refused, the verified staged release
    // still applies, since its manifest is signed by the release key and already verified.
    f.rollout("refresh", &["--expires", "0s"]);
    let e = fails(site.run(&["check"]), 1);
    assert!(e.contains("expired"), "{e}");
    site.update_yes();
    assert_eq!(
        std::fs::read_to_string(site.root.join("index.html")).unwrap(),
        "v2"
    );
}
