//! Hostile archives: every refusal names the entry, writes nothing outside staging/ and leaves
//! the live tree untouched.

mod common;
use common::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use zip::write::SimpleFileOptions;

const V1: &[(&str, &[u8])] = &[("index.php", b"one")];

struct Case {
    w: World,
    root: PathBuf,
    _srv: Server,
}

fn setup() -> Case {
    let w = World::new();
    let d1 = w.publish("1.0.0", V1);
    w.publish("1.1.0", &[("index.php", b"two"), ("lib/a.php", b"a")]);
    let srv = w.reference();
    let root = w.instance("site", Some(&d1), &srv.url, &[]);
    Case { w, root, _srv: srv }
}

/// A zip carrying the genuine signed 1.1.0 manifest plus the given raw entries.
fn hostile(c: &Case, name: &str, entries: &[(&str, &[u8])]) -> PathBuf {
    let path = c.w.path(name);
    let mut z = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let o = SimpleFileOptions::default();
    z.start_file("upkeep-manifest.json", o).unwrap();
    z.write_all(&std::fs::read(c.w.repo.join("releases/1.1.0/manifest.json")).unwrap())
        .unwrap();
    z.start_file("upkeep-manifest.sig", o).unwrap();
    z.write_all(&std::fs::read(c.w.repo.join("releases/1.1.0/manifest.sig")).unwrap())
        .unwrap();
    for (n, b) in entries {
        z.start_file(*n, o).unwrap();
        z.write_all(b).unwrap();
    }
    z.finish().unwrap();
    path
}

#[track_caller]
fn refused(c: &Case, zip: &Path, needle: &str) {
    let before = snapshot(c.w.tmp.path());
    let e = fails(
        upkeep(&[
            "stage",
            "--root",
            c.root.to_str().unwrap(),
            "--archive",
            zip.to_str().unwrap(),
        ]),
        1,
    );
    assert!(e.contains(needle), "expected {needle:?} in: {e}");
    assert!(
        list_files(&c.root.join("staging")).is_empty(),
        "nothing staged"
    );
    assert_eq!(snapshot(c.w.tmp.path()), before, "nothing written anywhere");
}

#[test]
fn traversal_absolute_backslash_drive_and_empty_names() {
    let c = setup();
    for (i, (name, needle)) in [
        ("../escape.php", "`.` or `..`"),
        ("lib/../../escape.php", "`.` or `..`"),
        ("/etc/cron.d/evil", "absolute path"),
        ("lib\\..\\..\\evil.php", "backslash"),
        ("C:/evil.php", "drive letter"),
        ("lib//a.php", "empty path component"),
        ("evil\u{1}.php", "control character"),
    ]
    .into_iter()
    .enumerate()
    {
        let z = hostile(&c, &format!("h{i}.zip"), &[(name, b"x")]);
        refused(&c, &z, needle);
    }
    assert!(!c.w.tmp.path().join("escape.php").exists());
}

#[test]
fn entries_aimed_at_upkeeps_own_folders() {
    let c = setup();
    for (i, name) in [
        "staging/x.php",
        ".upkeep/state.db",
        "upkeep.toml",
        "inbox/a.zip",
    ]
    .into_iter()
    .enumerate()
    {
        let z = hostile(&c, &format!("o{i}.zip"), &[(name, b"x")]);
        refused(&c, &z, name);
    }
}

#[test]
fn duplicates_case_folded_and_unlisted_entries() {
    let c = setup();
    let z = hostile(&c, "dup.zip", &[("lib/a.php", b"a"), ("LIB/A.php", b"a")]);
    refused(&c, &z, "appears twice");
    // The very same name twice (the zip crate keeps one of them): written as another name of
    // the same length, then renamed in place in the local header and the central directory.
    let z = hostile(
        &c,
        "exact-dup.zip",
        &[
            ("index.php", b"two"),
            ("lib/a.php", b"a"),
            ("lib/a.phq", b"evil"),
        ],
    );
    let bytes = std::fs::read(&z).unwrap();
    let patched: Vec<u8> = {
        let mut out = bytes.clone();
        let needle = b"lib/a.phq";
        let mut i = 0;
        while let Some(p) = out[i..].windows(needle.len()).position(|w| w == needle) {
            out[i + p + needle.len() - 1] = b'p';
            i += p + needle.len();
        }
        out
    };
    assert_ne!(bytes, patched);
    std::fs::write(&z, patched).unwrap();
    refused(&c, &z, "an entry appears twice");
    let z = hostile(
        &c,
        "extra.zip",
        &[
            ("index.php", b"two"),
            ("lib/a.php", b"a"),
            ("backdoor.php", b"x"),
        ],
    );
    refused(&c, &z, "backdoor.php is not listed in the signed manifest");
    // A forged file is only found while extracting: files verified before it may stay staged
    // (they are genuine, and a later staging reuses them), the forged one never lands, and no
    // release is recorded as staged.
    let z = hostile(
        &c,
        "swap.zip",
        &[("index.php", b"TWO"), ("lib/a.php", b"a")],
    );
    let e = fails(
        upkeep(&[
            "stage",
            "--root",
            c.root.to_str().unwrap(),
            "--archive",
            z.to_str().unwrap(),
        ]),
        1,
    );
    assert!(
        e.contains("index.php does not match the signed manifest"),
        "{e}"
    );
    assert!(!c.root.join("staging/index.php").exists());
    assert!(
        !list_files(&c.root.join("staging"))
            .iter()
            .any(|f| f.contains("upkeep-manifest"))
    );
    let db = rusqlite::Connection::open(c.root.join(".upkeep/state.db")).unwrap();
    assert_eq!(
        db.query_row("SELECT count(*) FROM staged", [], |r| r.get::<_, i64>(0))
            .unwrap(),
        0
    );
}

#[test]
fn a_local_header_naming_another_file_than_the_central_directory() {
    // Zip readers that trust different copies of a name disagree about what an archive holds;
    // upkeep reads entries through their local headers and checks both copies agree.
    let c = setup();
    let z = hostile(
        &c,
        "twofaced.zip",
        &[("index.php", b"two"), ("lib/a.php", b"a")],
    );
    let mut bytes = std::fs::read(&z).unwrap();
    let at = bytes
        .windows(9)
        .position(|w| w == b"lib/a.php")
        .expect("the local header comes first");
    bytes[at..at + 9].copy_from_slice(b"lib/b.php");
    std::fs::write(&z, &bytes).unwrap();
    refused(
        &c,
        &z,
        "lib/a.php: the entry's local header names another file",
    );
    assert!(!c.root.join("staging/lib/a.php").exists());
    assert!(!c.root.join("staging/lib/b.php").exists());
}

#[test]
fn symlink_entries() {
    let c = setup();
    let path = c.w.path("link.zip");
    let mut z = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    z.add_symlink("index.php", "/etc/passwd", SimpleFileOptions::default())
        .unwrap();
    z.start_file("upkeep-manifest.json", SimpleFileOptions::default())
        .unwrap();
    z.write_all(b"{}").unwrap();
    z.finish().unwrap();
    refused(&c, &path, "symbolic link");
}

#[test]
fn missing_or_forged_manifest() {
    let c = setup();
    let path = c.w.path("plain.zip");
    let mut z = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    z.start_file("index.php", SimpleFileOptions::default())
        .unwrap();
    z.write_all(b"two").unwrap();
    z.finish().unwrap();
    refused(&c, &path, "no upkeep-manifest.json");

    let path = c.w.path("forged.zip");
    let mut z = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let m =
        String::from_utf8(std::fs::read(c.w.repo.join("releases/1.1.0/manifest.json")).unwrap())
            .unwrap();
    z.start_file("upkeep-manifest.json", SimpleFileOptions::default())
        .unwrap();
    z.write_all(m.replace("\"notes\": \"\"", "\"notes\": \"x\"").as_bytes())
        .unwrap();
    z.start_file("upkeep-manifest.sig", SimpleFileOptions::default())
        .unwrap();
    z.write_all(&std::fs::read(c.w.repo.join("releases/1.1.0/manifest.sig")).unwrap())
        .unwrap();
    z.finish().unwrap();
    refused(&c, &path, "signature check failed");
}

#[test]
fn zip_bomb_ratio_count_and_total_caps() {
    let c = setup();
    let zeros = vec![0u8; 8 << 20];
    let z = hostile(&c, "bomb.zip", &[("index.php", &zeros)]);
    refused(&c, &z, "expands");

    set_config(&c.root, "limits", "max_archive_entries", "3");
    let z = hostile(
        &c,
        "many.zip",
        &[("index.php", b"two"), ("lib/a.php", b"a")],
    );
    refused(&c, &z, "entries, more than the limit of 3");
    set_config(&c.root, "limits", "max_archive_entries", "100");

    set_config(&c.root, "limits", "max_archive_bytes", "1000");
    let z = hostile(&c, "big.zip", &[("index.php", &[b'x'; 2000])]);
    refused(&c, &z, "max_archive_bytes");
}

#[test]
fn a_size_header_that_lies_is_caught() {
    let c = setup();
    // Patch the size fields of lib/a.php (40 bytes) to claim 1 byte: whatever the
    // decompressor does with the lie, the entry must be refused and nothing staged.
    let z = hostile(
        &c,
        "lie.zip",
        &[
            ("index.php", b"two"),
            ("lib/a.php", b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
        ],
    );
    let mut bytes = std::fs::read(&z).unwrap();
    let name = b"lib/a.php";
    let mut patched = 0;
    let mut i = 0;
    while i + 4 <= bytes.len() {
        let sig = [bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]];
        if sig == [0x50, 0x4b, 0x03, 0x04] && bytes[i + 30..].starts_with(name) {
            bytes[i + 22..i + 26].copy_from_slice(&1u32.to_le_bytes());
            patched += 1;
        }
        if sig == [0x50, 0x4b, 0x01, 0x02] && bytes[i + 46..].starts_with(name) {
            bytes[i + 24..i + 28].copy_from_slice(&1u32.to_le_bytes());
            patched += 1;
        }
        i += 1;
    }
    assert_eq!(patched, 2);
    std::fs::write(&z, bytes).unwrap();
    refused(&c, &z, "lib/a.php");
}
