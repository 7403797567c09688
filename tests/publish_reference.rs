//! Publishing releases and serving a repository.

mod common;
use common::*;

fn manifest_json(w: &World, v: &str) -> serde_json::Value {
    serde_json::from_slice(
        &std::fs::read(w.repo.join(format!("releases/{v}/manifest.json"))).unwrap(),
    )
    .unwrap()
}

#[test]
fn publish_writes_signed_manifest_objects_zip_and_pointer() {
    let w = World::new();
    w.publish(
        "1.0.0",
        &[
            ("index.php", b"<?php echo 1;"),
            ("css/site.css", b"body{}"),
            ("b.txt", b"b"),
        ],
    );
    let m = manifest_json(&w, "1.0.0");
    let files = m["files"].as_array().unwrap();
    let paths: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        ["b.txt", "css/site.css", "index.php"],
        "files sorted by path"
    );
    let idx = files.iter().find(|f| f["path"] == "index.php").unwrap();
    assert_eq!(idx["size"], 13);
    assert_eq!(idx["md5"], format!("{:032x}", md5_of(b"<?php echo 1;")));
    let sha = sha256_hex(b"<?php echo 1;");
    assert_eq!(idx["sha256"], sha.as_str());
    assert_eq!(
        std::fs::read(w.repo.join(format!("objects/{}/{}", &sha[..2], sha))).unwrap(),
        b"<?php echo 1;"
    );
    assert!(w.repo.join("releases/1.0.0/manifest.sig").is_file());
    let ptr: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.repo.join("latest.json")).unwrap()).unwrap();
    assert_eq!(ptr["latest"], "1.0.0");
    let zip = zip::ZipArchive::new(std::fs::File::open(w.zip("1.0.0")).unwrap()).unwrap();
    let mut names: Vec<&str> = zip.file_names().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "b.txt",
            "css/site.css",
            "index.php",
            "upkeep-manifest.json",
            "upkeep-manifest.sig"
        ]
    );
}

fn md5_of(b: &[u8]) -> u128 {
    // The system's md5sum is the yardstick.
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("f"), b).unwrap();
    let out = std::process::Command::new("md5sum")
        .arg(d.path().join("f"))
        .output()
        .unwrap();
    u128::from_str_radix(
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap(),
        16,
    )
    .unwrap()
}

#[test]
fn same_tree_gives_same_manifest_apart_from_dates() {
    let w = World::new();
    let files: &[(&str, &[u8])] = &[("z.txt", b"z"), ("a/b.txt", b"ab"), ("A1.txt", b"1")];
    w.publish("1.0.0", files);
    let repo2 = w.path("repo2");
    let dir = w.path("release-1.0.0");
    ok(upkeep(&[
        "publish",
        dir.to_str().unwrap(),
        "--version",
        "1.0.0",
        "--repo",
        repo2.to_str().unwrap(),
        "--key",
        w.key.to_str().unwrap(),
    ]));
    let strip = |mut v: serde_json::Value| {
        v["date"] = "".into();
        v["expires"] = "".into();
        v
    };
    let a = strip(manifest_json(&w, "1.0.0"));
    let b: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo2.join("releases/1.0.0/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(a, strip(b));
}

#[test]
fn refuses_existing_older_and_bad_versions() {
    let w = World::new();
    let dir = w.publish("1.2.0", &[("a", b"a")]);
    let args = |v: &'static str| {
        vec![
            "publish".to_string(),
            dir.display().to_string(),
            "--version".into(),
            v.into(),
            "--repo".into(),
            w.repo.display().to_string(),
            "--key".into(),
            w.key.display().to_string(),
        ]
    };
    let run = |v: &'static str| {
        let a = args(v);
        upkeep(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    assert!(fails(run("1.2.0"), 1).contains("already exists"));
    assert!(fails(run("1.1.9"), 1).contains("not newer"));
    assert!(fails(run("two"), 1).contains("not a semantic version"));
    ok(run("1.10.0"));
}

#[test]
fn refuses_symlinks_and_special_files_and_takes_any_name() {
    let w = World::new();
    let dir = w.path("rel");
    write_tree(&dir, &[("a.txt", b"a")]);
    std::os::unix::fs::symlink("/etc/passwd", dir.join("link")).unwrap();
    let args = [
        "publish",
        dir.to_str().unwrap(),
        "--version",
        "1.0.0",
        "--repo",
        w.repo.to_str().unwrap(),
        "--key",
        w.key.to_str().unwrap(),
    ];
    let e = fails(upkeep(&args), 1);
    assert!(e.contains("link") && e.contains("symbolic link"), "{e}");
    std::fs::remove_file(dir.join("link")).unwrap();
    let fifo = std::ffi::CString::new(dir.join("pipe").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let e = fails(upkeep(&args), 1);
    assert!(e.contains("pipe") && e.contains("special file"), "{e}");
    std::fs::remove_file(dir.join("pipe")).unwrap();
    assert!(
        !w.repo.join("latest.json").exists(),
        "refusals publish nothing"
    );
    // Any other name is a release file, backups' and done-marks' included (Drupal ships them).
    std::fs::write(dir.join("old.php.bak"), b"x").unwrap();
    ok(upkeep(&args));
    assert_eq!(
        manifest_json(&w, "1.0.0")["files"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn reference_serves_conditional_ranges_cache_headers_and_helpful_404() {
    let w = World::new();
    w.publish("1.0.0", &[("big.bin", &[7u8; 10_000])]);
    let srv = w.reference();
    let c = reqwest::blocking::Client::new();
    let r = c.get(format!("{}latest.json", srv.url)).send().unwrap();
    assert_eq!(r.status(), 200);
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    assert!(
        r.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("no-cache")
    );
    let r = c
        .get(format!("{}latest.json", srv.url))
        .header("If-None-Match", &etag)
        .send()
        .unwrap();
    assert_eq!(r.status(), 304);
    // HEAD and ranges go another way inside the server: the same validator all the same.
    let r = c.head(format!("{}latest.json", srv.url)).send().unwrap();
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);
    let r = c
        .head(format!("{}latest.json", srv.url))
        .header("If-None-Match", &etag)
        .send()
        .unwrap();
    assert_eq!(r.status(), 304);

    let sha = sha256_hex(&[7u8; 10_000]);
    let obj = format!("{}objects/{}/{}", srv.url, &sha[..2], sha);
    let r = c.get(&obj).header("Range", "bytes=9990-").send().unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), format!("\"{sha}\""));
    assert!(
        r.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    assert_eq!(r.bytes().unwrap().len(), 10);

    let r = c
        .get(format!("{}releases/9.9.9/manifest.json", srv.url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    let body = r.text().unwrap();
    assert!(
        body.contains("no release \"9.9.9\"") && body.contains("1.0.0"),
        "{body}"
    );
    let r = c
        .get(format!("{}..%2f..%2fetc/passwd", srv.url))
        .send()
        .unwrap();
    assert!(r.status().is_client_error());
}

#[test]
fn batch_streams_many_objects_in_one_response() {
    let w = World::new();
    w.publish("1.0.0", &[("a", b"hello"), ("b", b"world!")]);
    let srv = w.reference();
    let (ha, hb) = (sha256_hex(b"hello"), sha256_hex(b"world!"));
    let body = format!("{ha} 0\n{hb} 2\n{} 0\n", "0".repeat(64));
    let r = reqwest::blocking::Client::new()
        .post(format!("{}batch", srv.url))
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = r.bytes().unwrap();
    let expect = format!(
        "{ha} 0 5\nhello{hb} 2 4\nrld!{} missing\nend\n",
        "0".repeat(64)
    );
    assert_eq!(String::from_utf8_lossy(&got), expect);
}

#[test]
fn batch_takes_a_gzipped_body_and_numbers_frames_for_clients_that_ask() {
    let w = World::new();
    w.publish("1.0.0", &[("a", b"hello"), ("b", b"world!")]);
    let srv = w.reference();
    let (ha, hb) = (sha256_hex(b"hello"), sha256_hex(b"world!"));
    let body = format!("{ha} 0\n{} 0\n{hb} 2\n", "0".repeat(64));
    let gz = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(body.as_bytes()).unwrap();
        e.finish().unwrap()
    };
    assert!(gz.len() < body.len());
    let r = reqwest::blocking::Client::new()
        .post(format!("{}batch", srv.url))
        .header("content-encoding", "gzip")
        .header("upkeep-batch-frames", "numbered")
        .body(gz)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["upkeep-batch-frames"], "numbered");
    let got = r.bytes().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got),
        "#0 0 5\nhello#1 missing\n#2 2 4\nrld!end\n"
    );
    // A gzip bomb in the request is refused, not inflated without bound.
    let bomb = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![b'0'; 1 << 20];
        for _ in 0..100 {
            e.write_all(&zeros).unwrap();
        }
        e.finish().unwrap()
    };
    assert!(bomb.len() < 1 << 20);
    let r = reqwest::blocking::Client::new()
        .post(format!("{}batch", srv.url))
        .header("content-encoding", "gzip")
        .body(bomb)
        .send()
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
}
