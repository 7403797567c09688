//! A fleet of mirrors on one machine: one origin, 2 hubs, 20 leaves and 1,000 real instances,
//! every server behind its own delaying proxy (25 ms each way: 50 ms RTT on every hop). A
//! release is published at the origin and pushed: the publisher triggers the hubs, the hubs
//! their leaves. Measures the time until every leaf serves it, the bytes and requests out of
//! the origin, an idle poll, and the time until every instance has staged it from its leaf.
//! Run it with `bash bench/run --fleet --mirrors`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::netem::{Proxy, proxy};
use super::trees::copy_tree;
use super::util::{self, Kill, dir_bytes, free_port, up};
use super::write_section;

const HUBS: usize = 2;
const LEAVES: usize = 20;
const ONE_WAY: Duration = Duration::from_millis(25);

/// `upkeep reference ARGS --listen ADDR`, kept with the other servers; its port.
fn serve(bin: &Path, args: &[&str], listen: &str, all: &mut Vec<Kill>) -> u16 {
    let (server, port) = util::reference(bin, args, listen);
    all.push(server);
    port
}

fn serves(dir: &Path, version: &str) -> bool {
    std::fs::read(dir.join("latest.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| v["latest"] == version)
}

/// Bounded wait until every folder serves `version`; the seconds it took, per folder.
fn wait_all(dirs: &[PathBuf], version: &str, since: Instant) -> Vec<f64> {
    let mut at = vec![None; dirs.len()];
    for _ in 0..12_000 {
        for (i, d) in dirs.iter().enumerate() {
            if at[i].is_none() && serves(d, version) {
                at[i] = Some(since.elapsed().as_secs_f64());
            }
        }
        if at.iter().all(Option::is_some) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    at.into_iter()
        .map(|t| t.unwrap_or_else(|| panic!("not every mirror served {version} within 60 s")))
        .collect()
}

/// A release tree: `n` files of a few kilobytes (deterministic).
fn tree(dir: &Path, n: usize, version: &str, changed: usize) {
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    for i in 0..n {
        let stamp = if i < changed { version } else { "1.0.0" };
        let body: String = (0..40)
            .map(|l| {
                format!(
                    "line {l} of file {i}, release {stamp}: {}\n",
                    "x".repeat(i % 50)
                )
            })
            .collect();
        std::fs::write(dir.join(format!("assets/f{i:04}.txt")), body).unwrap();
    }
}

fn human(b: u64) -> String {
    if b >= 10 << 20 {
        format!("{:.0} MiB", b as f64 / (1 << 20) as f64)
    } else if b >= 10 << 10 {
        format!("{:.0} KiB", b as f64 / 1024.0)
    } else {
        format!("{b} B")
    }
}

pub fn mirrors_bench(bin: &Path, n_sites: usize) {
    let tmp = tempfile::Builder::new()
        .prefix("upkeep-mirrors-bench-")
        .tempdir()
        .unwrap();
    let p = |x: &str| tmp.path().join(x);
    let s = |x: &Path| x.to_str().unwrap().to_string();
    let (key, t0_key, t1_key, origin) = (
        p("release.key"),
        p("publisher-trigger.key"),
        p("hub-trigger.key"),
        p("origin"),
    );
    for k in [&key, &t0_key, &t1_key] {
        up(bin, &["keygen", "--out", &s(k)]);
    }
    let pubk = format!("{}.pub", key.display());
    let (files, changed) = (200, 20);
    tree(&p("rel-1.0.0"), files, "1.0.0", 0);
    tree(&p("rel-1.1.0"), files, "1.1.0", changed);
    let publish = |v: &str| {
        up(
            bin,
            &[
                "publish",
                &s(&p(&format!("rel-{v}"))),
                "--version",
                v,
                "--repo",
                &s(&origin),
                "--key",
                &s(&key),
            ],
        )
    };
    publish("1.0.0");

    let mut servers = Vec::new();
    let origin_port = serve(bin, &["--repo", &s(&origin)], "127.0.0.1:0", &mut servers);
    let p0 = proxy(origin_port, ONE_WAY);
    // Leaves listen on ports chosen now, so the hubs can list them (behind their proxies).
    let leaf_ports: Vec<u16> = (0..LEAVES).map(|_| free_port()).collect();
    let leaf_px: Vec<Proxy> = leaf_ports.iter().map(|&pt| proxy(pt, ONE_WAY)).collect();
    let mut hub_px = Vec::new();
    let mut hub_dirs = Vec::new();
    for h in 0..HUBS {
        let list = p(&format!("hub{h}-leaves.txt"));
        let urls: String = leaf_px
            .iter()
            .enumerate()
            .filter(|(i, _)| i % HUBS == h)
            .map(|(_, x)| x.url() + "\n")
            .collect();
        std::fs::write(&list, urls).unwrap();
        let dir = p(&format!("hub{h}"));
        let port = serve(
            bin,
            &[
                "--repo",
                &s(&dir),
                "--mirror-from",
                &p0.url(),
                "--public-key",
                &pubk,
                "--trigger-key",
                &format!("{}.pub", t0_key.display()),
                "--downstream",
                &s(&list),
                "--downstream-key",
                &s(&t1_key),
            ],
            "127.0.0.1:0",
            &mut servers,
        );
        hub_px.push(proxy(port, ONE_WAY));
        hub_dirs.push(dir);
    }
    let mut leaf_dirs = Vec::new();
    for (i, &pt) in leaf_ports.iter().enumerate() {
        let dir = p(&format!("leaf{i:02}"));
        serve(
            bin,
            &[
                "--repo",
                &s(&dir),
                "--mirror-from",
                &hub_px[i % HUBS].url(),
                "--public-key",
                &pubk,
                "--trigger-key",
                &format!("{}.pub", t1_key.display()),
            ],
            &format!("127.0.0.1:{pt}"),
            &mut servers,
        );
        leaf_dirs.push(dir);
    }
    println!("{HUBS} hubs and {LEAVES} leaves syncing release 1.0.0 at start");
    wait_all(&leaf_dirs, "1.0.0", Instant::now());

    // The instances, each on its leaf, at 1.0.0.
    let t_init = Instant::now();
    let sites: Vec<PathBuf> = (0..n_sites).map(|i| p(&format!("site-{i:04}"))).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|sc| {
        for _ in 0..4 {
            sc.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(root) = sites.get(i) else { break };
                    copy_tree(&p("rel-1.0.0"), root);
                    up(
                        bin,
                        &[
                            "init",
                            "--root",
                            &s(root),
                            "--reference",
                            &leaf_px[i % LEAVES].url(),
                            "--public-key",
                            &pubk,
                        ],
                    );
                }
            });
        }
    });
    let t_init = t_init.elapsed().as_secs_f64();
    println!("{n_sites} instances made in {t_init:.0} s");
    // Every site polls once, so that the next poll can be conditional.
    run_all(bin, &sites, &["check"], 16);

    // Publish and push.
    p0.count.reset();
    let t0 = Instant::now();
    publish("1.1.0");
    let t_publish = t0.elapsed().as_secs_f64();
    std::thread::scope(|sc| {
        for h in &hub_px {
            let url = h.url();
            let k = s(&t0_key);
            sc.spawn(move || up(bin, &["trigger", "--url", &url, "--key", &k]));
        }
    });
    let hubs_at = wait_all(&hub_dirs, "1.1.0", t0);
    let leaves_at = wait_all(&leaf_dirs, "1.1.0", t0);
    let t_all = leaves_at.iter().cloned().fold(0.0, f64::max);
    let (o_up, o_down, o_req, _) = p0.count.get();
    let new_bytes = new_object_bytes(&origin, "1.0.0", "1.1.0");
    let manifest = std::fs::metadata(origin.join("releases/1.1.0/manifest.json"))
        .unwrap()
        .len();

    // An idle poll: one site asks its leaf again, nothing has changed since its last poll.
    run_all(bin, &sites[..1], &["check"], 1);
    let lp = &leaf_px[0];
    lp.count.reset();
    p0.count.reset();
    run_all(bin, &sites[..1], &["check"], 1);
    let (i_up, i_down, i_req, i_304) = lp.count.get();
    let origin_idle = p0.count.get().2;

    // Every instance stages the release from its leaf.
    for x in &leaf_px {
        x.count.reset();
    }
    p0.count.reset();
    let t1 = Instant::now();
    let failed = run_all(bin, &sites, &["stage", "--network"], 16);
    let t_stage = t1.elapsed().as_secs_f64();
    let leaf_bytes: u64 = leaf_px.iter().map(|x| x.count.get().1).sum();
    let leaf_reqs: u64 = leaf_px.iter().map(|x| x.count.get().2).sum();
    let origin_during = p0.count.bytes();
    drop(servers);

    let copies = o_down as f64 / (new_bytes + manifest) as f64;
    let per_site = leaf_bytes as f64 / n_sites as f64;
    let section = format!(
        "<!-- mirrors -->\n## A fleet of mirrors: origin, {HUBS} hubs, {LEAVES} leaves, {n_sites} instances\n\n\
         `bash bench/run --fleet --mirrors` ({}), release build, one machine (2 cores). Every server (`upkeep reference`; the\n\
         hubs and leaves with `--mirror-from`) sits behind its own delaying proxy, 25 ms each way, so every hop and every\n\
         trigger costs a 50 ms round trip. Releases of {files} text files ({}); 1.1.0 changes {changed} of them. The publisher runs\n\
         `upkeep publish`, then `upkeep trigger` to both hubs; each hub syncs and triggers its {} leaves; nobody polls.\n\
         Instances are real (`upkeep init`, {:.0} s for {n_sites}); each stages with its own `upkeep stage --network`, 16 at a time.\n\n\
         | measure | figure | target |\n|---|---|---|\n\
         | `publish` to every hub serving 1.1.0 (publish itself: {:.2} s) | {:.2} s | |\n\
         | `publish` to all {LEAVES} leaves serving 1.1.0, by push | {:.2} s | under 5 s (ftpsync polls: minutes) |\n\
         | bytes out of the origin for the release (up: {}) | {} in {} requests | about one copy per hub |\n\
         | ... as copies of the release's new objects and manifest ({}) | {:.2} copies for {HUBS} hubs | {HUBS} |\n\
         | origin traffic while {n_sites} instances staged | {} | 0 |\n\
         | an idle poll (`upkeep check`, nothing new since the last): requests at the leaf | {i_req} requests, {i_304} answered 304, {} down / {} up | one conditional request |\n\
         | ... requests at the origin | {origin_idle} | 0 |\n\
         | every instance staged 1.1.0 from its leaf | {:.1} s ({failed} failed) | |\n\
         | leaf traffic per instance staging | {} in {:.1} requests | |\n\
         <!-- /mirrors -->\n",
        chrono::Local::now().format("%Y-%m-%d"),
        human(dir_bytes(&p("rel-1.0.0"))),
        LEAVES / HUBS,
        t_init,
        t_publish,
        hubs_at.iter().cloned().fold(0.0, f64::max),
        t_all,
        human(o_up),
        human(o_down),
        o_req,
        human(new_bytes + manifest),
        copies,
        human(origin_during),
        human(i_down),
        human(i_up),
        t_stage,
        human(per_site as u64),
        leaf_reqs as f64 / n_sites as f64,
    );
    write_section("mirrors", &section);
}

/// Bytes of the objects release `new` has and release `old` has not.
fn new_object_bytes(repo: &Path, old: &str, new: &str) -> u64 {
    let shas = |v: &str| -> std::collections::HashMap<String, u64> {
        let m: serde_json::Value = serde_json::from_slice(
            &std::fs::read(repo.join(format!("releases/{v}/manifest.json"))).unwrap(),
        )
        .unwrap();
        m["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["sha256"].as_str().unwrap().to_string(),
                    f["size"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let before = shas(old);
    shas(new)
        .into_iter()
        .filter(|(h, _)| !before.contains_key(h))
        .map(|(_, n)| n)
        .sum()
}

/// `upkeep ARGS --root SITE` for every site, `conc` at a time; how many failed.
fn run_all(bin: &Path, sites: &[PathBuf], args: &[&str], conc: usize) -> usize {
    let next = AtomicUsize::new(0);
    let failed = AtomicU64::new(0);
    std::thread::scope(|sc| {
        for _ in 0..conc {
            sc.spawn(|| {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(site) = sites.get(k) else { break };
                    let o = Command::new(bin)
                        .args(args)
                        .arg("--root")
                        .arg(site)
                        .output()
                        .unwrap();
                    // `check` exits 10 when it found an update: not a failure.
                    if !matches!(o.status.code(), Some(0) | Some(10))
                        && failed.fetch_add(1, Ordering::Relaxed) == 0
                    {
                        eprintln!(
                            "upkeep {args:?} failed: {}",
                            String::from_utf8_lossy(&o.stderr)
                        );
                    }
                }
            });
        }
    });
    failed.load(Ordering::Relaxed) as usize
}
