//! Network faults during `stage --network` against a plain static server that misbehaves:
//! bounded retries, a clear failure, a half file never counted as staged, and resuming.

mod common;
use common::fault::{Fault, FaultServer};
use common::*;
use std::time::{Duration, Instant};

// Above the size received in memory (1 MiB): a cut transfer of this one is continued.
const BIG: usize = 1_500_000;

fn setup() -> (World, std::path::PathBuf, FaultServer, Vec<u8>) {
    let w = World::new();
    let d1 = w.publish("1.0.0", &[("index.php", b"one")]);
    // Bytes that do not compress: the object travels raw, as these faults expect.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let big: Vec<u8> = (0..BIG)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    w.publish("1.1.0", &[("index.php", b"two"), ("media/big.bin", &big)]);
    // Manifests travel whole here: the faults are the whole manifest's.
    w.drop_manifest_deltas();
    let fs = FaultServer::start(w.repo.clone(), vec![]);
    let root = w.instance("site", Some(&d1), &fs.url, &[]);
    set_config(&root, "network", "retries", "2");
    set_config(&root, "network", "concurrency", "1");
    (w, root, fs, big)
}

fn stage(root: &std::path::Path) -> std::process::Output {
    upkeep(&["stage", "--root", root.to_str().unwrap(), "--network"])
}

#[test]
fn reset_mid_file_is_retried_and_continues_with_a_range_request() {
    let (_w, root, fs, big) = setup();
    fs.faults
        .lock()
        .unwrap()
        .extend([Fault::ResetAfter(100_000), Fault::ResetAfter(10)]);
    ok(stage(&root));
    assert_eq!(
        std::fs::read(root.join("staging/media/big.bin")).unwrap(),
        big
    );
    let ranges: Vec<String> = fs
        .object_requests()
        .into_iter()
        .filter_map(|(_, r)| r)
        .collect();
    // A reset may lose bytes in flight, so the exact offset varies; what matters is that the
    // transfer continued from what it had rather than starting over.
    let offsets: Vec<u64> = ranges
        .iter()
        .filter_map(|r| r.strip_prefix("bytes=")?.trim_end_matches('-').parse().ok())
        .collect();
    assert!(
        offsets.iter().any(|&o| o > 0 && o <= 100_000),
        "continued where it stopped: {ranges:?}"
    );
}

#[test]
fn server_errors_past_the_retry_budget_fail_clearly_then_a_rerun_resumes() {
    let (_w, root, fs, big) = setup();
    fs.faults.lock().unwrap().extend([
        Fault::ResetAfter(50_000),
        Fault::Status(503),
        Fault::Status(503),
        Fault::Status(503),
        Fault::Status(503),
    ]);
    let e = fails(stage(&root), 1);
    assert!(
        e.contains("503") && e.contains("gave up after 3 attempts") && e.contains("kept"),
        "{e}"
    );
    assert!(
        !root.join("staging/media/big.bin").exists(),
        "a half file never counts as staged"
    );
    let db = rusqlite::Connection::open(root.join(".upkeep/state.db")).unwrap();
    assert_eq!(
        db.query_row("SELECT count(*) FROM staged", [], |r| r.get::<_, i64>(0))
            .unwrap(),
        0
    );
    assert_eq!(
        std::fs::read(root.join("index.php")).unwrap(),
        b"one",
        "live tree untouched"
    );
    let before = fs.object_requests().len();
    ok(stage(&root));
    assert_eq!(
        std::fs::read(root.join("staging/media/big.bin")).unwrap(),
        big
    );
    let later: Vec<(String, Option<String>)> = fs.object_requests().split_off(before);
    let resumed = later
        .iter()
        .filter_map(|(_, r)| {
            r.as_deref()?
                .strip_prefix("bytes=")?
                .trim_end_matches('-')
                .parse::<u64>()
                .ok()
        })
        .any(|o| o > 0 && o <= 50_000);
    assert!(
        resumed,
        "the rerun resumed: {later:?}\nall: {:?}",
        fs.object_requests()
    );
}

#[test]
fn a_trickling_server_hits_the_deadline() {
    let (_w, root, fs, _) = setup();
    set_config(&root, "network", "deadline_secs", "2");
    fs.faults.lock().unwrap().extend(std::iter::repeat_n(
        Fault::Trickle(Duration::from_millis(50)),
        10,
    ));
    let t = Instant::now();
    let e = fails(stage(&root), 1);
    assert!(e.contains("did not finish within 2 s"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(30), "bounded");
    assert!(!root.join("staging/media/big.bin").exists());
}

#[test]
fn a_body_longer_than_declared_is_refused() {
    let (_w, root, fs, big) = setup();
    set_config(&root, "network", "retries", "0");
    fs.faults.lock().unwrap().extend([Fault::Overlong]);
    let e = fails(stage(&root), 1);
    assert!(
        e.contains("more than the") && e.contains("signed manifest declares"),
        "{e}"
    );
    assert!(
        !root.join("staging/media/big.bin").exists() && !root.join("staging/index.php").exists()
    );
    ok(stage(&root));
    assert_eq!(
        std::fs::read(root.join("staging/media/big.bin")).unwrap(),
        big
    );
}

#[test]
fn a_dead_reference_fails_fast_with_a_hint() {
    let (_w, root, _fs, _) = setup();
    set_config(&root, "", "reference", "\"http://127.0.0.1:9/\"");
    set_config(&root, "network", "retries", "1");
    let e = fails(stage(&root), 1);
    assert!(
        e.contains("could not connect") && e.contains("hint:"),
        "{e}"
    );
}

#[test]
fn a_trickled_manifest_hits_its_total_deadline() {
    let (_w, root, fs, _) = setup();
    set_config(&root, "network", "doc_timeout_secs", "1");
    // One byte every 300 ms never trips the idle timeout; the total deadline cuts each attempt.
    fs.doc_faults.lock().unwrap().extend(std::iter::repeat_n(
        Fault::Trickle(Duration::from_millis(300)),
        3,
    ));
    let t = Instant::now();
    let e = fails(upkeep(&["check", "--root", root.to_str().unwrap()]), 1);
    // One deadline for the command's documents, retries included, and the time it really took.
    assert!(
        e.contains("past the 1 s a command may spend on them"),
        "{e}"
    );
    let took: u64 = e
        .split("documents took ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{e}"));
    assert!(took <= 2, "{e}");
    assert!(t.elapsed() < Duration::from_secs(10), "bounded");
}

#[test]
fn a_cut_manifest_is_reported_as_a_cut_transfer_not_a_forgery() {
    let (_w, root, fs, _) = setup();
    set_config(&root, "network", "retries", "0");
    fs.doc_faults
        .lock()
        .unwrap()
        .push_back(Fault::ResetAfter(40));
    let e = fails(upkeep(&["check", "--root", root.to_str().unwrap()]), 1);
    assert!(e.contains("the transfer was cut after 40 bytes of"), "{e}");
    assert!(!e.contains("changed after signing"), "{e}");
    // The next attempt, undisturbed, works.
    assert_eq!(
        upkeep(&["check", "--root", root.to_str().unwrap()])
            .status
            .code(),
        Some(10)
    );
}
