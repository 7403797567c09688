//! init, fingerprint, check, and staging from the four sources; signatures and downgrades.

mod common;
use common::*;
use std::path::Path;

const V1: &[(&str, &[u8])] = &[
    ("index.php", b"<?php echo 1;"),
    ("css/site.css", b"body{}"),
    ("gone.txt", b"old"),
    ("mine.php", b"m1"),
];
const V2: &[(&str, &[u8])] = &[
    ("index.php", b"<?php echo 2;"),
    ("css/site.css", b"body{}"),
    ("added/new.js", b"js"),
    ("mine.php", b"m2"),
];

fn two_releases() -> (World, std::path::PathBuf) {
    let w = World::new();
    let d1 = w.publish("1.0.0", V1);
    w.publish("1.1.0", V2);
    (w, d1)
}

fn check_json(root: &Path) -> (i32, serde_json::Value) {
    let o = upkeep(&["check", "--root", root.to_str().unwrap(), "--json"]);
    (
        o.status.code().unwrap(),
        serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", stderr(&o))),
    )
}

fn staged(root: &Path) -> Vec<String> {
    list_files(&root.join("staging"))
}

#[test]
fn init_identifies_exact_closest_fresh_and_given() {
    let (w, d1) = two_releases();
    let srv = w.reference();
    let exact = w.instance("exact", Some(&d1), &srv.url, &["--json"]);
    let (code, j) = check_json(&exact);
    assert_eq!((code, j["installed"].as_str()), (10, Some("1.0.0")));
    for d in ["staging", "inbox", "run_once", ".upkeep"] {
        assert!(exact.join(d).is_dir(), "{d}");
    }
    assert!(exact.join(".upkeep/state.db").is_file());
    assert_eq!(
        std::fs::read(exact.join("index.php")).unwrap(),
        b"<?php echo 1;",
        "init touches no application file"
    );

    let close = w.path("close");
    copy_tree(&d1, &close);
    std::fs::write(close.join("index.php"), b"edited").unwrap();
    let out = ok(upkeep(&[
        "init",
        "--root",
        close.to_str().unwrap(),
        "--reference",
        &srv.url,
        "--public-key",
        &w.pubkey(),
        "--json",
    ]));
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["identified"]["how"], "closest");
    assert_eq!(j["identified"]["version"], "1.0.0");
    assert_eq!(
        j["identified"]["differences"],
        serde_json::json!(["changed: index.php"])
    );

    let fresh = w.instance("fresh", None, &srv.url, &[]);
    let (code, j) = check_json(&fresh);
    assert_eq!(code, 10);
    assert!(j["installed"].is_null());
    assert_eq!(j["new"].as_array().unwrap().len(), 4);

    let given = w.instance("given", None, &srv.url, &["--installed", "1.1.0"]);
    assert_eq!(check_json(&given).1["installed"], "1.1.0");
    let e = fails(
        upkeep(&[
            "init",
            "--root",
            w.path("x").to_str().unwrap(),
            "--reference",
            &srv.url,
            "--public-key",
            &w.pubkey(),
            "--installed",
            "3.0.0",
        ]),
        1,
    );
    assert!(e.contains("no release 3.0.0"), "{e}");
    let e = fails(
        upkeep(&[
            "init",
            "--root",
            exact.to_str().unwrap(),
            "--reference",
            &srv.url,
            "--public-key",
            &w.pubkey(),
        ]),
        1,
    );
    assert!(e.contains("already an instance"), "{e}");
}

#[test]
fn check_lists_and_exit_codes() {
    let (w, d1) = two_releases();
    let srv = w.reference();
    let root = w.instance("site", Some(&d1), &srv.url, &[]);
    std::fs::write(root.join("mine.php"), b"operator edit").unwrap();
    let (code, j) = check_json(&root);
    assert_eq!(code, 10);
    assert_eq!(j["installed"], "1.0.0");
    assert_eq!(j["latest"], "1.1.0");
    assert_eq!(j["new"], serde_json::json!(["added/new.js"]));
    assert_eq!(j["changed"], serde_json::json!(["index.php", "mine.php"]));
    assert_eq!(j["removed"], serde_json::json!(["gone.txt"]));
    assert_eq!(j["modified"], serde_json::json!(["mine.php"]));
    assert_eq!(j["unchanged"], 1);
    let text = stdout(&upkeep(&["check", "--root", root.to_str().unwrap()]));
    assert!(
        text.contains("locally modified: 1 files") && text.contains("update available"),
        "{text}"
    );

    let up = w.instance("up", Some(&w.path("release-1.1.0")), &srv.url, &[]);
    let (code, j) = check_json(&up);
    assert_eq!((code, j["installed"].as_str()), (0, Some("1.1.0")));
}

#[test]
fn fingerprint_matches_md5sum_and_uses_the_cache() {
    let (w, d1) = two_releases();
    let out = ok(upkeep(&["fingerprint", d1.to_str().unwrap()]));
    let md5sum = std::process::Command::new("md5sum")
        .current_dir(&d1)
        .args(["index.php", "css/site.css", "gone.txt", "mine.php"])
        .output()
        .unwrap();
    for line in String::from_utf8_lossy(&md5sum.stdout).lines() {
        let (sum, path) = line.split_once("  ").unwrap();
        assert!(
            out.lines().any(|l| l.starts_with(sum) && l.ends_with(path)),
            "{path} {sum} not in\n{out}"
        );
    }
    let srv = w.reference();
    let root = w.instance("site", Some(&d1), &srv.url, &[]);
    std::fs::write(root.join("gone.txt.bak"), b"backup").unwrap();
    let j: serde_json::Value = serde_json::from_str(&ok(upkeep(&[
        "fingerprint",
        root.to_str().unwrap(),
        "--json",
    ])))
    .unwrap();
    let paths: Vec<&str> = j
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        ["css/site.css", "gone.txt", "index.php", "mine.php"],
        "instance folders, .bak and upkeep.toml left out"
    );
    // The cache holds exactly the live files, each with both digests.
    let db = rusqlite::Connection::open(root.join(".upkeep/state.db")).unwrap();
    let blob: Vec<u8> = db
        .query_row("SELECT data FROM print_cache", [], |r| r.get(0))
        .unwrap();
    for p in ["css/site.css", "gone.txt", "index.php", "mine.php"] {
        assert!(
            blob.windows(p.len()).any(|w| w == p.as_bytes()),
            "{p} cached"
        );
    }
    assert!(
        !blob.windows(12).any(|w| w == b"gone.txt.bak"),
        "a .bak is no live file"
    );
    let sha = hex::decode(sha256_hex(b"<?php echo 1;")).unwrap();
    assert!(
        blob.windows(32).any(|w| w == sha.as_slice()),
        "SHA-256 cached for --json"
    );
    std::fs::write(root.join("index.php"), b"changed!").unwrap();
    let j: serde_json::Value = serde_json::from_str(&ok(upkeep(&[
        "fingerprint",
        root.to_str().unwrap(),
        "--json",
    ])))
    .unwrap();
    let idx = j
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "index.php")
        .unwrap();
    assert_eq!(
        idx["sha256"],
        sha256_hex(b"changed!").as_str(),
        "a changed stat invalidates the cache"
    );
}

fn assert_staged_v2(root: &Path) {
    assert_eq!(
        staged(root),
        [
            "added/new.js",
            "index.php",
            "mine.php",
            "upkeep-manifest.json",
            "upkeep-manifest.sig"
        ]
    );
    assert_eq!(
        std::fs::read(root.join("staging/index.php")).unwrap(),
        b"<?php echo 2;"
    );
    assert_eq!(
        std::fs::read(root.join("index.php")).unwrap(),
        b"<?php echo 1;",
        "live tree untouched"
    );
    let db = rusqlite::Connection::open(root.join(".upkeep/state.db")).unwrap();
    let v: String = db
        .query_row("SELECT version FROM staged", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, "1.1.0");
}

#[test]
fn stage_from_network_fetches_only_new_and_changed_and_resumes() {
    let (w, d1) = two_releases();
    let srv = w.reference();
    let root = w.instance("site", Some(&d1), &srv.url, &[]);
    let j: serde_json::Value = serde_json::from_str(&ok(upkeep(&[
        "stage",
        "--root",
        root.to_str().unwrap(),
        "--network",
        "--json",
    ])))
    .unwrap();
    assert_eq!(
        (
            j["files"].as_u64(),
            j["reused"].as_u64(),
            j["removed"].as_u64()
        ),
        (Some(3), Some(0), Some(1))
    );
    assert_staged_v2(&root);
    let j: serde_json::Value = serde_json::from_str(&ok(upkeep(&[
        "stage",
        "--root",
        root.to_str().unwrap(),
        "--network",
        "--json",
    ])))
    .unwrap();
    assert_eq!(j["reused"], 3, "a second run fetches nothing again");
    // A tampered staged file is caught and fetched again.
    std::fs::write(root.join("staging/index.php"), b"<?php evil;!").unwrap();
    let j: serde_json::Value = serde_json::from_str(&ok(upkeep(&[
        "stage",
        "--root",
        root.to_str().unwrap(),
        "--network",
        "--json",
    ])))
    .unwrap();
    assert_eq!(j["reused"], 2);
    assert_staged_v2(&root);
}

#[test]
fn stage_from_a_plain_static_server() {
    let (w, d1) = two_releases();
    let mut py = std::process::Command::new("python3")
        .args(["-c", "import http.server,socketserver,sys,functools\nh=functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])\ns=socketserver.TCPServer(('127.0.0.1',0),h)\nprint('http://127.0.0.1:%d/'%s.server_address[1],flush=True)\ns.serve_forever()", w.repo.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(py.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let url = line.trim().to_string();
    let root = w.instance("site", Some(&d1), &url, &[]);
    ok(upkeep(&[
        "stage",
        "--root",
        root.to_str().unwrap(),
        "--network",
    ]));
    assert_staged_v2(&root);
    let _ = py.kill();
    let _ = py.wait();
}

/// `upkeep stage --root ROOT --archive ZIP`.
fn stage_archive(root: &std::path::Path, zip: &std::path::Path) -> std::process::Output {
    upkeep(&[
        "stage",
        "--root",
        root.to_str().unwrap(),
        "--archive",
        zip.to_str().unwrap(),
    ])
}

#[test]
fn stage_from_archive_and_single_top_folder_archive() {
    let (w, d1) = two_releases();
    let srv = w.reference();
    let root = w.instance("site", Some(&d1), &srv.url, &[]);
    ok(stage_archive(&root, &w.zip("1.1.0")));
    assert_staged_v2(&root);

    // Repack the same release under one top folder, as a browser download often is.
    let repacked = w.path("wrapped.zip");
    {
        let mut src = zip::ZipArchive::new(std::fs::File::open(w.zip("1.1.0")).unwrap()).unwrap();
        let mut out = zip::ZipWriter::new(std::fs::File::create(&repacked).unwrap());
        for i in 0..src.len() {
            let mut e = src.by_index(i).unwrap();
            out.start_file(
                format!("mysite-1.1.0/{}", e.name()),
                zip::write::SimpleFileOptions::default(),
            )
            .unwrap();
            std::io::copy(&mut e, &mut out).unwrap();
        }
        out.finish().unwrap();
    }
    let root2 = w.instance("site2", Some(&d1), &srv.url, &[]);
    ok(stage_archive(&root2, &repacked));
    assert_staged_v2(&root2);
}

#[test]
fn stage_from_a_zip_written_to_a_pipe() {
    // Written to a pipe, a zip cannot go back to fill in sizes: each entry's sizes follow its
    // data (a data descriptor), so entries cannot be read from their local headers alone.
    let (w, d1) = two_releases();
    let srv = w.reference();
    let root = w.instance("site", Some(&d1), &srv.url, &[]);
    let script = "import sys, zipfile\n\
                  src = zipfile.ZipFile(sys.argv[1])\n\
                  out = zipfile.ZipFile(sys.stdout.buffer, 'w', zipfile.ZIP_DEFLATED)\n\
                  for i in src.infolist():\n    out.writestr(i.filename, src.read(i))\n\
                  out.close()\n";
    let mut child = std::process::Command::new("python3")
        .args(["-c", script, w.zip("1.1.0").to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (installed by .ci/run)");
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(child.stdout.as_mut().unwrap(), &mut bytes).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(&bytes[..4], b"PK\x03\x04");
    let flags = u16::from_le_bytes([bytes[6], bytes[7]]);
    assert_ne!(flags & 0x8, 0, "the first entry has a data descriptor");
    let piped = w.path("piped.zip");
    std::fs::write(&piped, &bytes).unwrap();
    ok(stage_archive(&root, &piped));
    assert_staged_v2(&root);
}

#[test]
fn stage_from_inbox_lists_and_skips_partial_uploads() {
    let (w, d1) = two_releases();
    let srv = w.reference();
    let root = w.instance("site", Some(&d1), &srv.url, &[]);
    let inbox = root.join("inbox");
    std::fs::copy(w.zip("1.1.0"), inbox.join("release.zip")).unwrap();
    std::fs::write(inbox.join("next.zip.part"), b"PK").unwrap();
    // Age the finished upload past the settle time instead of waiting for it.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(inbox.join("release.zip"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let list: serde_json::Value = serde_json::from_str(&ok(upkeep(&[
        "stage",
        "--root",
        root.to_str().unwrap(),
        "--inbox",
        "--json",
    ])))
    .unwrap();
    let items = list.as_array().unwrap();
    let rel = items.iter().find(|i| i["name"] == "release.zip").unwrap();
    assert!(rel["not_ready"].is_null());
    assert_eq!(
        rel["size"].as_u64(),
        Some(std::fs::metadata(w.zip("1.1.0")).unwrap().len())
    );
    let part = items.iter().find(|i| i["name"] == "next.zip.part").unwrap();
    assert!(part["not_ready"].as_str().unwrap().contains(".part"));
    let e = fails(
        upkeep(&[
            "stage",
            "--root",
            root.to_str().unwrap(),
            "--inbox",
            "next.zip.part",
        ]),
        1,
    );
    assert!(e.contains("still being uploaded"), "{e}");
    let e = fails(
        upkeep(&[
            "stage",
            "--root",
            root.to_str().unwrap(),
            "--inbox",
            "../repo/x.zip",
        ]),
        1,
    );
    assert!(e.contains("refused path"), "{e}");
    ok(upkeep(&[
        "stage",
        "--root",
        root.to_str().unwrap(),
        "--inbox",
        "release.zip",
    ]));
    assert_staged_v2(&root);
}

#[test]
fn stage_manual_reports_missing_and_wrong_then_accepts() {
    let (w, d1) = two_releases();
    let srv = w.reference();
    let root = w.instance("site", Some(&d1), &srv.url, &[]);
    let e = fails(
        upkeep(&["stage", "--root", root.to_str().unwrap(), "--manual"]),
        1,
    );
    assert!(e.contains("upkeep-manifest.json"), "{e}");
    let st = root.join("staging");
    std::fs::copy(
        w.repo.join("releases/1.1.0/manifest.json"),
        st.join("upkeep-manifest.json"),
    )
    .unwrap();
    std::fs::copy(
        w.repo.join("releases/1.1.0/manifest.sig"),
        st.join("upkeep-manifest.sig"),
    )
    .unwrap();
    write_tree(&st, &[("index.php", b"<?php echo 2;"), ("mine.php", b"m3")]);
    let e = fails(
        upkeep(&["stage", "--root", root.to_str().unwrap(), "--manual"]),
        1,
    );
    assert!(
        e.contains("1 missing, 1 wrong")
            && e.contains("missing: added/new.js")
            && e.contains("wrong:   mine.php"),
        "{e}"
    );
    write_tree(&st, &[("added/new.js", b"js"), ("mine.php", b"m2")]);
    ok(upkeep(&[
        "stage",
        "--root",
        root.to_str().unwrap(),
        "--manual",
    ]));
    assert_staged_v2(&root);
}

#[test]
fn signatures_are_checked_before_any_file_is_fetched() {
    let (w, d1) = two_releases();
    let root;
    {
        let srv = w.reference();
        root = w.instance("site", Some(&d1), &srv.url, &[]);
    }
    // A manifest edited after signing (and no delta to rebuild the genuine one from).
    w.drop_manifest_deltas();
    let m = w.repo.join("releases/1.1.0/manifest.json");
    let good = std::fs::read(&m).unwrap();
    std::fs::write(
        &m,
        String::from_utf8(good.clone())
            .unwrap()
            .replace("index.php", "index.phq"),
    )
    .unwrap();
    let fs = fault::FaultServer::start(w.repo.clone(), vec![]);
    set_config(&root, "", "reference", &format!("{:?}", fs.url));
    let e = fails(
        upkeep(&["stage", "--root", root.to_str().unwrap(), "--network"]),
        1,
    );
    assert!(e.contains("signature check failed"), "{e}");
    assert!(
        fs.object_requests().is_empty(),
        "no object fetched before the signature verified"
    );
    assert!(staged(&root).is_empty());
    std::fs::write(&m, &good).unwrap();

    // A missing signature.
    let sig = w.repo.join("releases/1.1.0/manifest.sig");
    let sig_bytes = std::fs::read(&sig).unwrap();
    std::fs::remove_file(&sig).unwrap();
    assert!(
        fails(
            upkeep(&["stage", "--root", root.to_str().unwrap(), "--network"]),
            1
        )
        .contains("signature")
    );
    std::fs::write(&sig, sig_bytes).unwrap();

    // Another publisher's key.
    let other = w.path("other.key");
    ok(upkeep(&["keygen", "--out", other.to_str().unwrap()]));
    let real_key = std::fs::read_to_string(root.join("upkeep.toml")).unwrap();
    let other_pub = std::fs::read_to_string(w.path("other.key.pub")).unwrap();
    set_config(&root, "", "public_key", &format!("{:?}", other_pub.trim()));
    let e = fails(upkeep(&["check", "--root", root.to_str().unwrap()]), 1);
    assert!(e.contains("another key"), "{e}");
    std::fs::write(root.join("upkeep.toml"), real_key).unwrap();
    assert!(fs.object_requests().is_empty());
    ok(upkeep(&[
        "stage",
        "--root",
        root.to_str().unwrap(),
        "--network",
    ]));
}

#[test]
fn downgrade_and_stale_releases_are_refused() {
    let w = World::new();
    let d1 = w.publish("1.0.0", V1);
    let srv = w.reference();
    let root = w.instance("site", Some(&d1), &srv.url, &["--installed", "1.0.0"]);
    let z1 = w.zip("1.0.0");
    w.publish("1.1.0", V2);
    // Pretend 1.1.0 is installed, then offer 1.0.0.
    let db = rusqlite::Connection::open(root.join(".upkeep/state.db")).unwrap();
    ok(upkeep(&[
        "stage",
        "--root",
        root.to_str().unwrap(),
        "--network",
    ]));
    db.execute(
        "UPDATE meta SET value = '1.1.0' WHERE key = 'installed_version'",
        [],
    )
    .unwrap();
    db.execute("DELETE FROM staged", []).unwrap();
    let e = fails(stage_archive(&root, &z1), 1);
    assert!(
        e.contains("older than the installed release") && e.contains("--allow-downgrade"),
        "{e}"
    );
    ok(upkeep(&[
        "stage",
        "--root",
        root.to_str().unwrap(),
        "--archive",
        z1.to_str().unwrap(),
        "--allow-downgrade",
    ]));

    // A release that expired.
    let stale = World::new();
    let dir = stale.path("r");
    write_tree(&dir, V1);
    ok(upkeep(&[
        "publish",
        dir.to_str().unwrap(),
        "--version",
        "1.0.0",
        "--repo",
        stale.repo.to_str().unwrap(),
        "--key",
        stale.key.to_str().unwrap(),
        "--expires",
        "0",
    ]));
    let srv2 = stale.reference();
    let e = fails(
        upkeep(&[
            "init",
            "--root",
            stale.path("s").to_str().unwrap(),
            "--reference",
            &srv2.url,
            "--public-key",
            &stale.pubkey(),
        ]),
        1,
    );
    assert!(e.contains("stale"), "{e}");
}
