//! The fleet benchmark: a real `upkeep reference` (release build) holding the online key, with
//! 10,000 enrolled sites. Measures enrolment and report ingestion over HTTP on loopback (signed
//! reports, the rollout steered after each one, as in production), `fleet status` for the whole
//! fleet, and the server's memory. Rewrites the fleet section of bench/RESULTS.md.
//! Run it with `bash bench/run --fleet` (`--sites N` for another fleet size).

#[path = "mirrors.rs"]
mod mirrors;
#[path = "netem.rs"]
mod netem;
#[path = "trees.rs"]
mod trees;
#[path = "util.rs"]
mod util;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use upkeep::documents::manifest::SecretKey;
use util::up;

/// `upkeep reference` on a free loopback port holding the online key, on the fleet database
/// `db` (the default file when `None`); its base URL (no slash).
fn reference(bin: &Path, repo: &Path, online: &Path, db: Option<&str>) -> (util::Kill, String) {
    let mut args = vec![
        "--repo",
        repo.to_str().unwrap(),
        "--online-key",
        online.to_str().unwrap(),
    ];
    if let Some(db) = db {
        args.extend(["--fleet-db", db]);
    }
    let (server, port) = util::reference(bin, &args, "127.0.0.1:0");
    (server, format!("http://127.0.0.1:{port}"))
}

/// A PostgreSQL server of its own on a scratch folder (as the postgres user: it refuses root),
/// trusting loopback; stopped on drop. Its URL for `--fleet-db`.
fn postgres(dir: &Path) -> (util::Kill, String) {
    let bin = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (apt-get install postgresql)")
        .flatten()
        .map(|e| e.path().join("bin"))
        .find(|p| p.join("postgres").exists())
        .expect("a postgres binary");
    let data = dir.join("pg");
    std::fs::create_dir_all(&data).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(&data)
        .status()
        .unwrap();
    let as_pg = || {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .env("HOME", "/tmp");
        c
    };
    let o = as_pg()
        .arg(bin.join("initdb"))
        .args(["-A", "trust", "-U", "postgres", "-D"])
        .arg(data.join("data"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let port = util::free_port();
    let child = as_pg()
        .arg(bin.join("postgres"))
        .arg("-D")
        .arg(data.join("data"))
        .args(["-p", &port.to_string(), "-k"])
        .arg(&data)
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "shared_buffers=256MB",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    util::wait_port(port);
    (
        util::Kill(child),
        format!("postgresql://postgres@127.0.0.1:{port}/postgres"),
    )
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// POST every body to one of `urls` (in turn) with `conc` requests in flight; returns
/// (seconds, failures).
async fn blast(
    urls: Vec<String>,
    bodies: Vec<(Vec<u8>, Option<String>)>,
    conc: usize,
) -> (f64, usize) {
    let client = reqwest::Client::new();
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (client, bodies, next, failed, urls) = (
            client.clone(),
            bodies.clone(),
            next.clone(),
            failed.clone(),
            urls.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((body, sig)) = bodies.get(i) else {
                    break;
                };
                let mut r = client
                    .post(&urls[i % urls.len()])
                    .header("content-type", "application/json")
                    .body(body.clone());
                if let Some(s) = sig {
                    r = r.header("x-upkeep-signature", s.trim());
                }
                match r.send().await {
                    Ok(resp) if resp.status().is_success() => {}
                    other => {
                        // The first failures are told: a count alone says nothing of why.
                        if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                            let why = match other {
                                Ok(resp) => format!(
                                    "{} {}",
                                    resp.status().as_u16(),
                                    resp.text().await.unwrap_or_default().trim()
                                ),
                                Err(e) => e.to_string(),
                            };
                            eprintln!("request {i} failed: {why}");
                        }
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
    let value = |name: &str| args.windows(2).find(|w| w[0] == name).map(|w| w[1].clone());
    let engine = value("--db").unwrap_or_else(|| "sqlite".into());
    let servers: usize = value("--servers").and_then(|v| v.parse().ok()).unwrap_or(1);
    assert!(
        matches!(engine.as_str(), "sqlite" | "postgresql"),
        "--db sqlite or --db postgresql"
    );
    assert!(
        servers == 1 || engine == "postgresql",
        "several servers share a fleet only on PostgreSQL: --db postgresql --servers {servers}"
    );
    let bin = std::env::current_dir()
        .unwrap()
        .join("target/release/upkeep");
    assert!(bin.exists(), "build first: cargo build --release");
    if args.iter().any(|a| a == "--mirrors") {
        let n = args
            .windows(2)
            .find(|w| w[0] == "--instances")
            .and_then(|w| w[1].parse().ok())
            .unwrap_or(1_000);
        mirrors::mirrors_bench(&bin, n);
        return;
    }
    if args.iter().any(|a| a == "--rollout") {
        let n = args
            .windows(2)
            .find(|w| w[0] == "--instances")
            .and_then(|w| w[1].parse().ok())
            .unwrap_or(1_000);
        rollout_bench(&bin, n);
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("upkeep-fleet-bench-")
        .tempdir()
        .unwrap();
    let p = |n: &str| tmp.path().join(n);
    let (key, online, repo) = (p("release.key"), p("online.key"), p("repo"));
    let pg = (engine == "postgresql").then(|| postgres(tmp.path()));
    let db = pg.as_ref().map(|p| p.1.clone());
    let db_args: Vec<&str> = match &db {
        Some(u) => vec!["--fleet-db", u],
        None => vec![],
    };
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
    let uses = sites.to_string();
    let mut token_args = vec![
        "fleet",
        "token",
        "--repo",
        repo.to_str().unwrap(),
        "--uses",
        &uses,
    ];
    token_args.extend(&db_args);
    let token = up(&bin, &token_args);
    let token = token.trim().to_string();

    let refs: Vec<(util::Kill, String)> = (0..servers)
        .map(|_| reference(&bin, &repo, &online, db.as_deref()))
        .collect();
    let pid = refs[0].0.0.id();
    let urls =
        |path: &str| -> Vec<String> { refs.iter().map(|(_, b)| format!("{b}{path}")).collect() };
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
    let (t_enrol, f_enrol) = rt.block_on(blast(urls("/fleet/enroll"), enrol, conc));
    let (t_r1, f_r1) = rt.block_on(blast(urls("/fleet/report"), round1, conc));
    let (t_r2, f_r2) = rt.block_on(blast(urls("/fleet/report"), round2, conc));
    let rss_after = rss_kib(pid);

    let mut status_ms = Vec::new();
    let mut rows = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let mut a = vec![
            "fleet",
            "status",
            "--repo",
            repo.to_str().unwrap(),
            "--json",
        ];
        a.extend(&db_args);
        let out = up(&bin, &a);
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
    drop(refs);
    drop(pg);

    let rate = |n: usize, t: f64| format!("{:.0}/s", n as f64 / t);
    let (name, title, how) = match (engine.as_str(), servers) {
        ("sqlite", _) => (
            "fleet".to_string(),
            "one reference".to_string(),
            format!("--sites {sites}"),
        ),
        (_, n) => (
            format!("fleet-postgresql-{n}"),
            format!(
                "{n} reference{} on one PostgreSQL",
                if n == 1 { "" } else { "s" }
            ),
            format!("--sites {sites} --db postgresql --servers {n}"),
        ),
    };
    let section = format!(
        "<!-- {name} -->\n## Fleet: {title}, {sites} enrolled sites\n\n\
         `bash bench/run --fleet {how}` ({}), release build, loopback, {conc} requests in flight from one client thread (in turn to each server),\n\
         the reference holding the online key (the rollout steered after every failure and after successes at most every 200 ms or five times what a steer takes, as in production).\n\n\
         | measure | figure | target |\n|---|---|---|\n\
         | enrolments (POST /fleet/enroll) | {} ({} failed) | |\n\
         | reports, first round (signed, verified, stored, rollout steered) | {} ({} failed) | over 2,000/s |\n\
         | reports, second round (every site updated) | {} ({} failed) | over 2,000/s |\n\
         | `fleet status --json`, {rows} sites (median of 5, whole command) | {:.0} ms | under 200 ms |\n\
         | reference memory (RSS), idle / after {sites} sites and {} reports | {} MiB / {} MiB | |\n\
         | rollout after the second round | wave {} of 4, {} | |\n\
         <!-- /{name} -->\n",
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
    write_section(&name, &section);
}

/// Replace the section between `<!-- NAME -->` and `<!-- /NAME -->` of bench/RESULTS.md (or
/// append it).
fn write_section(name: &str, section: &str) {
    println!("{section}");
    let (open, close) = (format!("<!-- {name} -->"), format!("<!-- /{name} -->\n"));
    let out = PathBuf::from("bench/RESULTS.md");
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let new = match (text.find(&open), text.find(&close)) {
        (Some(a), Some(b)) => format!("{}{}{}", &text[..a], section, &text[b + close.len()..]),
        _ => format!("{text}\n{section}"),
    };
    std::fs::write(&out, new).unwrap();
    println!("wrote {}", out.display());
}

/// A simulated rollout of a failing release over `n` real instances (small trees), each run
/// by its own unattended pass, two at a time (the cores), round after round, as daily timers
/// would: how many sites ran the bad release before the reference halted it.
fn rollout_bench(bin: &Path, n: usize) {
    let tmp = tempfile::Builder::new()
        .prefix("upkeep-rollout-bench-")
        .tempdir()
        .unwrap();
    let p = |x: &str| tmp.path().join(x);
    let (key, online, repo) = (p("release.key"), p("online.key"), p("repo"));
    let r = repo.to_str().unwrap();
    up(bin, &["keygen", "--out", key.to_str().unwrap()]);
    up(
        bin,
        &[
            "keygen",
            "--role",
            "online",
            "--out",
            online.to_str().unwrap(),
        ],
    );
    for (v, bad) in [("1.0.0", false), ("1.1.0", true)] {
        let d = p(&format!("rel-{v}"));
        std::fs::create_dir_all(d.join("run_once")).unwrap();
        for i in 0..20 {
            std::fs::write(d.join(format!("page{i}.html")), format!("{v} page {i}")).unwrap();
        }
        if bad {
            std::fs::write(
                d.join("run_once/001-migrate.sh"),
                "echo the migration fails >&2; exit 3\n",
            )
            .unwrap();
        }
        up(
            bin,
            &[
                "publish",
                d.to_str().unwrap(),
                "--version",
                v,
                "--repo",
                r,
                "--key",
                key.to_str().unwrap(),
            ],
        );
    }
    up(
        bin,
        &[
            "delegate",
            "--repo",
            r,
            "--key",
            key.to_str().unwrap(),
            "--online-key-pub",
            &format!("{}.pub", online.display()),
        ],
    );
    let (server, base) = reference(bin, &repo, &online, None);
    let token = up(
        bin,
        &["fleet", "token", "--repo", r, "--uses", &n.to_string()],
    );
    let pubk = format!("{}.pub", key.display());
    let t0 = Instant::now();
    let sites: Vec<PathBuf> = (0..n)
        .map(|i| {
            let root = p(&format!("site-{i:04}"));
            std::fs::create_dir_all(&root).unwrap();
            for f in std::fs::read_dir(p("rel-1.0.0")).unwrap().flatten() {
                if f.path().is_file() {
                    std::fs::copy(f.path(), root.join(f.file_name())).unwrap();
                }
            }
            let name = format!("site-{i:04}");
            let mut a = vec![
                "init",
                "--root",
                root.to_str().unwrap(),
                "--reference",
                &base,
                "--public-key",
                &pubk,
                "--enroll",
                token.trim(),
                "--name",
                &name,
            ];
            if i.is_multiple_of(100) {
                a.extend(["--group", "test"]);
            }
            up(bin, &a);
            let cfg = root.join("upkeep.toml");
            let text = std::fs::read_to_string(&cfg)
                .unwrap()
                .replace("enabled = false", "enabled = true")
                .replace("allow = \"patch\"", "allow = \"minor\"");
            std::fs::write(&cfg, text).unwrap();
            root
        })
        .collect();
    let t_init = t0.elapsed().as_secs_f64();
    up(
        bin,
        &[
            "promote",
            "1.1.0",
            "--channel",
            "stable",
            "--repo",
            r,
            "--key",
            online.to_str().unwrap(),
            "--waves",
            "test,10%,50%,100%",
            "--every",
            "0s",
            "--min-reports",
            "5",
            "--halt-on-failure",
            "5%",
        ],
    );
    // Rounds of passes, two at a time, in a shuffled but fixed order.
    let mut order: Vec<usize> = (0..n).collect();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let ran_bad = Arc::new(AtomicUsize::new(0));
    let t1 = Instant::now();
    let mut halted_in_round = None;
    for round in 1..=3 {
        let next = Arc::new(AtomicUsize::new(0));
        std::thread::scope(|sc| {
            for _ in 0..2 {
                let (next, order, sites, ran_bad) = (next.clone(), &order, &sites, ran_bad.clone());
                sc.spawn(move || {
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&i) = order.get(k) else { break };
                        let o = Command::new(bin)
                            .args(["auto", "--root", sites[i].to_str().unwrap()])
                            .output()
                            .unwrap();
                        if String::from_utf8_lossy(&o.stdout).contains("ROLLED BACK") {
                            ran_bad.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        let st: serde_json::Value = serde_json::from_str(&up(
            bin,
            &[
                "rollout",
                "status",
                "--channel",
                "stable",
                "--repo",
                r,
                "--json",
            ],
        ))
        .unwrap();
        if st["state"] == "halted" && halted_in_round.is_none() {
            halted_in_round = Some((
                round,
                st["wave"].as_u64().unwrap_or(0) + 1,
                st["reason"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    let t_rounds = t1.elapsed().as_secs_f64();
    drop(server);
    let installed_bad = sites
        .iter()
        .filter(|s| {
            std::fs::read_to_string(s.join("page0.html"))
                .unwrap_or_default()
                .starts_with("1.1.0")
        })
        .count();
    let (round, wave, reason) = halted_in_round.unwrap_or((0, 0, "not halted".into()));
    let section = format!(
        "<!-- fleet-rollout -->\n## A failing release rolled out to {n} real instances\n\n\
         `bash bench/run --fleet --rollout` ({}): {n} instances of a 21-file site on loopback, each enrolled, 1% in group\n\
         `test`; release 1.1.0 carries a run_once task that fails. `promote --waves test,10%,50%,100% --every 0s\n\
         --min-reports 5 --halt-on-failure 5%`; then three rounds of `upkeep auto` on every instance (two at a time,\n\
         a fixed shuffled order), as daily timers would run them.\n\n\
         | measure | figure | target |\n|---|---|---|\n\
         | sites that ran the bad release (each rolled back by itself) | {} | no more than the first wave ({}) plus the failures under the threshold |\n\
         | sites left on the bad release | {installed_bad} | 0 |\n\
         | halted | round {round}, wave {wave}: {reason} | |\n\
         | `init --enroll` of {n} instances / three rounds of passes | {:.0} s / {:.0} s | |\n\
         <!-- /fleet-rollout -->\n",
        chrono::Local::now().format("%Y-%m-%d"),
        ran_bad.load(Ordering::Relaxed),
        n.div_ceil(100),
        t_init,
        t_rounds,
    );
    write_section("fleet-rollout", &section);
}
