//! The fleet benchmark: a real `upkeep reference` (release build) holding the online key, with
//! 10,000 enrolled sites. Measures enrolment and report ingestion over HTTP on loopback (signed
//! reports, the rollout steered after each one, as in production), `fleet status` for the whole
//! fleet, and the server's memory. Rewrites the fleet section of bench/RESULTS.md.
//! Run it with `bash bench/run --fleet` (`--sites N` for another fleet size).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use upkeep::manifest::SecretKey;

fn up(bin: &Path, args: &[&str]) -> String {
    let o = Command::new(bin).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "upkeep {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// POST every body to `url` with `conc` requests in flight; returns (seconds, failures).
async fn blast(url: String, bodies: Vec<(Vec<u8>, Option<String>)>, conc: usize) -> (f64, usize) {
    let client = reqwest::Client::new();
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (client, bodies, next, failed, url) = (
            client.clone(),
            bodies.clone(),
            next.clone(),
            failed.clone(),
            url.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((body, sig)) = bodies.get(i) else {
                    break;
                };
                let mut r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone());
                if let Some(s) = sig {
                    r = r.header("x-upkeep-signature", s.trim());
                }
                match r.send().await {
                    Ok(resp) if resp.status().is_success() => {}
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (t.elapsed().as_secs_f64(), failed.load(Ordering::Relaxed))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let sites: usize = args
        .windows(2)
        .find(|w| w[0] == "--sites")
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(10_000);
    let bin = std::env::current_dir()
        .unwrap()
        .join("target/release/upkeep");
    assert!(bin.exists(), "build first: cargo build --release");
    let tmp = tempfile::Builder::new()
        .prefix("upkeep-fleet-bench-")
        .tempdir()
        .unwrap();
    let p = |n: &str| tmp.path().join(n);
    let (key, online, repo) = (p("release.key"), p("online.key"), p("repo"));
    up(&bin, &["keygen", "--out", key.to_str().unwrap()]);
    up(
        &bin,
        &[
            "keygen",
            "--role",
            "online",
            "--out",
            online.to_str().unwrap(),
        ],
    );
    for (v, body) in [("1.0.0", "v1"), ("1.1.0", "v2")] {
        let d = p(&format!("rel-{v}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("index.html"), body).unwrap();
        up(
            &bin,
            &[
                "publish",
                d.to_str().unwrap(),
                "--version",
                v,
                "--repo",
                repo.to_str().unwrap(),
                "--key",
                key.to_str().unwrap(),
            ],
        );
    }
    up(
        &bin,
        &[
            "delegate",
            "--repo",
            repo.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--online-key-pub",
            &format!("{}.pub", online.display()),
        ],
    );
    up(
        &bin,
        &[
            "promote",
            "1.1.0",
            "--channel",
            "stable",
            "--repo",
            repo.to_str().unwrap(),
            "--key",
            online.to_str().unwrap(),
            "--waves",
            "test,10%,50%,100%",
            "--every",
            "24h",
            "--halt-on-failure",
            "5%",
        ],
    );
    let token = up(
        &bin,
        &[
            "fleet",
            "token",
            "--repo",
            repo.to_str().unwrap(),
            "--uses",
            &sites.to_string(),
        ],
    );
    let token = token.trim().to_string();

    let mut child = Command::new(&bin)
        .args([
            "reference",
            "--repo",
            repo.to_str().unwrap(),
            "--online-key",
            online.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    let pid = child.id();
    let rss_idle = rss_kib(pid);

    // Sites: an id and a key each; 1% in group "test".
    let keys: Vec<(String, SecretKey)> = (0..sites)
        .map(|i| {
            (
                format!("{:032x}", 0x5173_0000_0000u128 + i as u128),
                SecretKey::generate().unwrap(),
            )
        })
        .collect();
    let enrol: Vec<(Vec<u8>, Option<String>)> = keys
        .iter()
        .enumerate()
        .map(|(i, (id, k))| {
            let groups: Vec<&str> = if i.is_multiple_of(100) {
                vec!["test"]
            } else {
                vec![]
            };
            (
                serde_json::to_vec(&serde_json::json!({
                    "token": token, "site_id": id, "public_key": k.public().to_text(),
                    "name": format!("site-{i:05}"), "groups": groups, "channel": "stable",
                }))
                .unwrap(),
                None,
            )
        })
        .collect();
    let report = |i: usize, id: &str, k: &SecretKey, seq: u64, outcome: &str, installed: &str| {
        let body = serde_json::to_vec(&serde_json::json!({
            "format": 1, "site_id": id, "seq": seq, "at": "2026-11-23T03:00:00Z",
            "name": format!("site-{i:05}"), "groups": if i.is_multiple_of(100) { vec!["test"] } else { vec![] },
            "channel": "stable", "installed": installed, "from": "1.0.0", "to": "1.1.0",
            "outcome": outcome, "failed_step": null, "reason": "bench", "closed_ms": 12,
            "bytes_fetched": 2048, "modified": 0, "health": {"ok": true, "detail": "GET / answered 200 OK"}
        }))
        .unwrap();
        let sig = k.sign(&body);
        (body, Some(sig))
    };
    let round1: Vec<_> = keys
        .iter()
        .enumerate()
        .map(|(i, (id, k))| report(i, id, k, 1, "up_to_date", "1.0.0"))
        .collect();
    let round2: Vec<_> = keys
        .iter()
        .enumerate()
        .map(|(i, (id, k))| report(i, id, k, 2, "success", "1.1.0"))
        .collect();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let conc = 32;
    let (t_enrol, f_enrol) = rt.block_on(blast(format!("{base}/fleet/enroll"), enrol, conc));
    let (t_r1, f_r1) = rt.block_on(blast(format!("{base}/fleet/report"), round1, conc));
    let (t_r2, f_r2) = rt.block_on(blast(format!("{base}/fleet/report"), round2, conc));
    let rss_after = rss_kib(pid);

    let mut status_ms = Vec::new();
    let mut rows = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let out = up(
            &bin,
            &[
                "fleet",
                "status",
                "--repo",
                repo.to_str().unwrap(),
                "--json",
            ],
        );
        status_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        rows = v["sites"].as_array().map(|a| a.len()).unwrap_or(0);
    }
    status_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let rollout: serde_json::Value = serde_json::from_str(&up(
        &bin,
        &[
            "rollout",
            "status",
            "--channel",
            "stable",
            "--repo",
            repo.to_str().unwrap(),
            "--json",
        ],
    ))
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();

    let rate = |n: usize, t: f64| format!("{:.0}/s", n as f64 / t);
    let section = format!(
        "<!-- fleet -->\n## Fleet: one reference, {sites} enrolled sites\n\n\
         `bash bench/run --fleet` ({}), release build, loopback, {conc} requests in flight from one client thread,\n\
         the reference holding the online key (the rollout steered after every failure and, at most every 200 ms, after successes, as in production).\n\n\
         | measure | figure | target |\n|---|---|---|\n\
         | enrolments (POST /fleet/enroll) | {} ({} failed) | |\n\
         | reports, first round (signed, verified, stored, rollout steered) | {} ({} failed) | over 2,000/s |\n\
         | reports, second round (every site updated) | {} ({} failed) | over 2,000/s |\n\
         | `fleet status --json`, {rows} sites (median of 5, whole command) | {:.0} ms | under 200 ms |\n\
         | reference memory (RSS), idle / after {sites} sites and {} reports | {} MiB / {} MiB | |\n\
         | rollout after the second round | wave {} of 4, {} | |\n\
         <!-- /fleet -->\n",
        chrono::Local::now().format("%Y-%m-%d"),
        rate(sites, t_enrol),
        f_enrol,
        rate(sites, t_r1),
        f_r1,
        rate(sites, t_r2),
        f_r2,
        status_ms[2],
        2 * sites,
        rss_idle / 1024,
        rss_after / 1024,
        rollout["wave"].as_u64().unwrap_or(0) + 1,
        rollout["state"].as_str().unwrap_or("?"),
    );
    println!("{section}");
    let out = PathBuf::from("bench/RESULTS.md");
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let new = match (text.find("<!-- fleet -->"), text.find("<!-- /fleet -->")) {
        (Some(a), Some(b)) => format!(
            "{}{}{}",
            &text[..a],
            section,
            &text[b + "<!-- /fleet -->\n".len()..]
        ),
        _ => format!("{text}\n{section}"),
    };
    std::fs::write(&out, new).unwrap();
    println!("wrote {}", out.display());
}
