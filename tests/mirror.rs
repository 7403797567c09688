//! `upkeep mirror` against a real `upkeep reference`: a copy equal to the origin, served again
//! to a real site; a second sync fetching only what is new; a tampered object and an upstream
//! gone backwards refused with the old copy kept; a sync killed before its pointer resumes and
//! never serves a half state; pruning with --keep.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;

/// The files a mirror copies: everything but release zips and the fleet database.
fn mirrored(dir: &Path) -> BTreeMap<String, String> {
    snapshot(dir)
        .into_iter()
        .filter(|(k, _)| !k.ends_with(".zip") && !k.contains(".mirror-partial"))
        .collect()
}

fn mirror(w: &World, from: &str, to: &Path, extra: &[&str]) -> serde_json::Value {
    let a = [extra, &["--json"]].concat();
    let v: serde_json::Value = serde_json::from_str(&ok(w.mirror(from, to, &a))).unwrap();
    v["sync"].clone()
}

fn mirror_fails(w: &World, from: &str, to: &Path, extra: &[&str]) -> String {
    fails(w.mirror(from, to, extra), 1)
}

/// Rewrite a zip with one entry's content replaced (its signed manifest inside unchanged).
fn tamper_zip(zip: &Path, entry_suffix: &str, content: &[u8]) {
    use std::io::{Read, Write};
    let mut src = zip::ZipArchive::new(std::fs::File::open(zip).unwrap()).unwrap();
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for i in 0..src.len() {
        let mut e = src.by_index(i).unwrap();
        let name = e.name().to_string();
        let mut body = Vec::new();
        e.read_to_end(&mut body).unwrap();
        if name.ends_with(entry_suffix) {
            body = content.to_vec();
        }
        out.start_file(name, zip::write::SimpleFileOptions::default())
            .unwrap();
        out.write_all(&body).unwrap();
    }
    std::fs::write(zip, out.finish().unwrap().into_inner()).unwrap();
}

/// A `stable` channel on `version` (with an online key delegated on first use).
fn channel(w: &World, version: &str) {
    ok(w.promote(version, "stable", &[]));
}

#[test]
fn a_mirror_equals_its_origin_serves_a_site_and_then_fetches_only_what_is_new() {
    let w = World::new();
    let d1 = w.publish(
        "1.0.0",
        &[
            ("index.html", b"v1"),
            ("a.css", b"body{}"),
            ("lib/x.php", b"<?php 1;"),
        ],
    );
    channel(&w, "1.0.0");
    let origin = w.reference();
    let m = w.path("mirror");
    let s = mirror(&w, &origin.url, &m, &[]);
    assert_eq!(s["latest"], "1.0.0");
    assert_eq!(s["new_objects"], 3);
    assert_eq!(s["channels"], serde_json::json!(["stable"]));
    let origin_files: BTreeMap<String, String> = mirrored(&w.repo)
        .into_iter()
        .filter(|(k, _)| !k.contains("fleet.db"))
        .collect();
    assert_eq!(
        mirrored(&m),
        origin_files,
        "byte for byte, every file sites read"
    );

    // A site initialised and updated through the mirror alone.
    let served = spawn_server(&["reference", "--repo", m.to_str().unwrap()]);
    w.publish(
        "1.1.0",
        &[
            ("index.html", b"v2"),
            ("a.css", b"body{}"),
            ("lib/x.php", b"<?php 1;"),
        ],
    );
    channel(&w, "1.1.0");
    let s = mirror(&w, &origin.url, &m, &[]);
    assert_eq!(s["latest"], "1.1.0");
    assert_eq!(s["new_objects"], 1, "only the changed file: {s}");
    let site = Site::new(w.instance("site", Some(&d1), &served.url, &[]));
    ok(site.run(&["stage", "--network"]));
    site.update_yes();
    assert_eq!(
        std::fs::read_to_string(site.root.join("index.html")).unwrap(),
        "v2"
    );

    let s = mirror(&w, &origin.url, &m, &[]);
    assert_eq!(s["unchanged"], true);
    assert_eq!(s["new_objects"], 0);
}

#[test]
fn a_tampered_object_or_an_upstream_gone_backwards_is_refused_and_the_old_copy_kept() {
    let w = World::new();
    w.publish("1.0.0", &[("index.html", b"v1")]);
    let old_repo = w.path("repo-at-1.0.0");
    copy_tree(&w.repo, &old_repo);
    let origin = w.reference();
    let m = w.path("mirror");
    mirror(&w, &origin.url, &m, &[]);
    let served_before = std::fs::read(m.join("latest.json")).unwrap();

    // A tampered object upstream: refused, nothing new served.
    w.publish("1.1.0", &[("index.html", b"v2-is-new")]);
    let obj = w.repo.join(format!(
        "objects/{0}/{1}",
        &sha256_hex(b"v2-is-new")[..2],
        sha256_hex(b"v2-is-new")
    ));
    std::fs::write(&obj, b"v2-EVIL!!").unwrap();
    let e = mirror_fails(&w, &origin.url, &m, &[]);
    assert!(e.contains("does not match") || e.contains("damaged"), "{e}");
    assert_eq!(std::fs::read(m.join("latest.json")).unwrap(), served_before);
    std::fs::write(&obj, b"v2-is-new").unwrap();

    // A release zip whose file differs from its signed manifest: refused, nothing new served.
    let zip = w.zip("1.1.0");
    let good_zip = std::fs::read(&zip).unwrap();
    tamper_zip(&zip, "index.html", b"v2-EVIL!!");
    let e = mirror_fails(&w, &origin.url, &m, &["--zips"]);
    assert!(
        e.contains("zip of release 1.1.0") && e.contains("does not match the signed manifest"),
        "{e}"
    );
    assert_eq!(std::fs::read(m.join("latest.json")).unwrap(), served_before);
    assert!(!m.join("releases/1.1.0").exists());
    std::fs::write(&zip, &good_zip).unwrap();
    let s = mirror(&w, &origin.url, &m, &["--zips"]);
    // 1.0.0's zip came with the refused sync (it checked out); 1.1.0's now.
    assert_eq!(
        (s["latest"].as_str(), s["zips"].as_u64()),
        (Some("1.1.0"), Some(1))
    );
    assert!(m.join("releases/1.0.0/upkeep-1.0.0.zip").exists());
    assert_eq!(
        std::fs::read(m.join("releases/1.1.0/upkeep-1.1.0.zip")).unwrap(),
        good_zip
    );

    // An upstream that went back to 1.0.0 (a rollback, a stale copy): refused.
    let stale = spawn_server(&["reference", "--repo", old_repo.to_str().unwrap()]);
    let now = std::fs::read(m.join("latest.json")).unwrap();
    let e = mirror_fails(&w, &stale.url, &m, &[]);
    assert!(e.contains("goes backwards"), "{e}");
    assert_eq!(std::fs::read(m.join("latest.json")).unwrap(), now);
}

#[test]
fn a_sync_killed_before_its_pointer_never_serves_a_half_state_and_resumes() {
    use std::os::unix::process::ExitStatusExt;
    let w = World::new();
    let d1 = w.publish("1.0.0", &[("index.html", b"v1"), ("b.txt", b"b1")]);
    let origin = w.reference();
    let m = w.path("mirror");
    mirror(&w, &origin.url, &m, &[]);
    let before = std::fs::read(m.join("latest.json")).unwrap();
    w.publish("1.1.0", &[("index.html", b"v2"), ("b.txt", b"b2")]);
    let pubkey = format!("{}.pub", w.key.display());
    let o = upkeep_env(
        &[
            "mirror",
            "--from",
            &origin.url,
            "--to",
            m.to_str().unwrap(),
            "--public-key",
            &pubkey,
        ],
        &[("UPKEEP_CRASH_AT", "mirror:objects")],
    );
    assert_eq!(o.status.signal(), Some(9), "{}", stderr(&o));
    // The new objects are there, the old pointer still served: sites see 1.0.0, whole.
    assert_eq!(std::fs::read(m.join("latest.json")).unwrap(), before);
    assert!(!m.join("releases/1.1.0/manifest.json").exists());
    let served = spawn_server(&["reference", "--repo", m.to_str().unwrap()]);
    let site = Site::new(w.instance("site", Some(&d1), &served.url, &[]));
    let o = site.run(&["check", "--json"]);
    let d: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(d["latest"], "1.0.0");
    // The next sync finishes with what it has: nothing fetched twice.
    let s = mirror(&w, &origin.url, &m, &[]);
    assert_eq!(s["latest"], "1.1.0");
    assert_eq!(s["new_objects"], 0, "{s}");
    // --keep 1: only 1.1.0's objects and manifest remain, after the pointer is live.
    let s = mirror(&w, &origin.url, &m, &["--keep", "1"]);
    assert_eq!(s["pruned"], 2, "{s}");
    assert!(!m.join("releases/1.0.0").exists());
    let objects: Vec<String> = list_files(&m.join("objects"));
    assert_eq!(objects.len(), 2, "{objects:?}");
}

#[test]
fn a_mirror_on_a_full_disk_keeps_serving_its_copy_and_resumes_when_there_is_room() {
    let w = World::new();
    w.publish("1.0.0", &[("index.html", b"v1")]);
    let origin = w.reference();
    let disk = Tmpfs::mount("1m");
    let m = disk.path().join("mirror");
    mirror(&w, &origin.url, &m, &[]);
    let served = std::fs::read(m.join("latest.json")).unwrap();

    // Release 1.1.0 brings 3 MB the small disk cannot hold.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    w.publish("1.1.0", &[("index.html", b"v2"), ("media.bin", &big)]);
    let e = mirror_fails(&w, &origin.url, &m, &[]);
    assert!(e.contains("No space left on device"), "{e}");
    assert!(e.contains("free disk space"), "{e}");
    assert_eq!(
        std::fs::read(m.join("latest.json")).unwrap(),
        served,
        "the old copy is still what is served"
    );
    assert!(!m.join("releases/1.1.0").exists());

    // With room again, the next sync completes.
    let st = std::process::Command::new("mount")
        .args(["-o", "remount,size=16m"])
        .arg(disk.path())
        .status()
        .unwrap();
    assert!(st.success());
    let s = mirror(&w, &origin.url, &m, &[]);
    assert_eq!(s["latest"], "1.1.0");
    assert_eq!(
        sha256_hex(
            &std::fs::read(m.join(format!(
                "objects/{}/{}",
                &sha256_hex(&big)[..2],
                sha256_hex(&big)
            )))
            .unwrap()
        ),
        sha256_hex(&big)
    );
    assert_eq!(mirrored(&m), mirrored(&w.repo));
}
