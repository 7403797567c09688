//! Sites behind a real squid (Debian's package) on loopback: with `proxy` in upkeep.toml the
//! objects are fetched one cacheable GET each, so the second site staging the same release is
//! served from the cache (squid's access log shows the HITs) and stages correctly.

mod common;

use std::process::{Child, Command, Stdio};

use common::smtp::free_port;
use common::*;

struct Squid {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Squid {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn squid() -> Option<Squid> {
    if Command::new("squid").arg("-v").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "squid is missing on CI");
        eprintln!("skipped: squid is not installed (apt-get install squid)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    // squid drops to its own user: it must be able to write its logs here.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let port = free_port();
    let d = dir.path().display();
    std::fs::write(
        dir.path().join("squid.conf"),
        format!(
            "http_port 127.0.0.1:{port}\npid_filename {d}/squid.pid\ncache_log {d}/cache.log\n\
             access_log stdio:{d}/access.log squid\ncoredump_dir {d}\ncache_mem 64 MB\n\
             maximum_object_size_in_memory 8 MB\nacl lo src 127.0.0.1/32\nhttp_access allow lo\n\
             http_access deny all\nshutdown_lifetime 0 seconds\n"
        ),
    )
    .unwrap();
    let child = Command::new("squid")
        .args(["-N", "-f"])
        .arg(dir.path().join("squid.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let s = Squid { child, port, dir };
    assert!(wait_port(port), "squid did not listen");
    Some(s)
}

#[test]
fn the_second_site_behind_squid_is_served_from_the_cache() {
    let Some(sq) = squid() else { return };
    let w = World::new();
    let files: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| {
            (
                format!("lib/m{i}.php"),
                format!("<?php // module {i} v1\n").repeat(200).into_bytes(),
            )
        })
        .collect();
    let v1: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, b)| (p.as_str(), b.as_slice()))
        .collect();
    let d1 = w.publish("1.0.0", &v1);
    let files2: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| {
            (
                format!("lib/m{i}.php"),
                format!("<?php // module {i} v2\n").repeat(200).into_bytes(),
            )
        })
        .collect();
    let v2: Vec<(&str, &[u8])> = files2
        .iter()
        .map(|(p, b)| (p.as_str(), b.as_slice()))
        .collect();
    w.publish("1.1.0", &v2);
    let srv = w.reference();
    let proxy = format!("\"http://127.0.0.1:{}\"", sq.port);
    let a = Site::new(w.instance("a", Some(&d1), &srv.url, &[]));
    let b = Site::new(w.instance("b", Some(&d1), &srv.url, &[]));
    for s in [&a, &b] {
        set_config(&s.root, "", "proxy", &proxy);
    }
    let log = sq.dir.path().join("access.log");
    let objects_in_log = |kind: &str| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            // Objects travel raw, compressed or as deltas: each an immutable file.
            .filter(|l| (l.contains("/objects/") || l.contains("/deltas/")) && l.contains(kind))
            .count()
    };
    // squid writes its log line after answering: a bounded wait for it.
    let settle = |kind: &str, n: usize| {
        for _ in 0..200 {
            if objects_in_log(kind) >= n {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        objects_in_log(kind)
    };
    ok(a.run(&["stage", "--network"]));
    assert_eq!(settle("GET", 6), 6, "one GET per object, through squid");
    assert_eq!(objects_in_log("HIT"), 0);
    ok(b.run(&["stage", "--network"]));
    assert_eq!(
        settle("HIT", 6),
        6,
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    b.update_yes();
    for (p, body) in &files2 {
        assert_eq!(&std::fs::read(b.root.join(p)).unwrap(), body);
    }
}

#[test]
fn an_idle_poll_asks_for_the_pointer_conditionally_and_still_verifies_what_it_kept() {
    let w = World::new();
    let d1 = w.publish("1.0.0", &[("index.html", b"v1")]);
    let srv = w.reference();
    let site = Site::new(w.instance("site", Some(&d1), &srv.url, &[]));
    ok(site.run(&["check"]));
    let db = rusqlite::Connection::open(site.root.join(".upkeep/state.db")).unwrap();
    let etag: String = db
        .query_row(
            "SELECT value FROM meta WHERE key = 'http_etag:latest.json'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(etag.starts_with('"'), "the pointer's ETag is kept: {etag}");
    // The kept copy is altered: a check that got the body again would not notice; this one is
    // answered 304, uses its copy, finds it does not verify, forgets it and asks again in full.
    db.execute(
        "UPDATE meta SET value = replace(value, '1.0.0', '9.9.9') WHERE key = 'http_body:latest.json'",
        [],
    )
    .unwrap();
    let o = site.run(&["check"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("did not verify"),
        "the 304 path was taken: {}",
        stderr(&o)
    );
    // A new pointer upstream (another ETag): a full answer, and all is well again.
    w.publish("1.1.0", &[("index.html", b"v2")]);
    let o = site.run(&["check"]);
    assert_eq!(o.status.code(), Some(10), "{}", stderr(&o));
}

/// Enrolment and reports go through the site's `proxy` too (they connected directly).
#[test]
fn enrolment_and_reports_go_through_the_proxy() {
    let Some(sq) = squid() else { return };
    let w = World::new();
    let d1 = w.publish("1.0.0", &[("index.html", b"v1")]);
    let srv = w.reference();
    let token = common::fleet::token(&w, "1");
    let site = Site::new(w.instance("a", Some(&d1), &srv.url, &["--name", "a"]));
    set_config(
        &site.root,
        "",
        "proxy",
        &format!("\"http://127.0.0.1:{}\"", sq.port),
    );
    ok(site.run(&["enroll", &token]));
    let out = site.run(&["auto"]);
    assert!(stdout(&out).contains("report: 1 sent"), "{}", stdout(&out));
    let log = sq.dir.path().join("access.log");
    let seen = |path: &str| {
        (0..200).any(|_| {
            let hit = std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .any(|l| l.contains("POST") && l.contains(path));
            if !hit {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            hit
        })
    };
    assert!(
        seen("/fleet/enroll"),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        seen("/fleet/report"),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}
