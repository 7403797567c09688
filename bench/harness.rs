//! The benchmark harness: upkeep beside its yardsticks (md5sum, find, rsync, one GET per file,
//! cp, nginx) in the same run, on deterministic trees built in the system's temp dir. Writes
//! bench/RESULTS.md. Run it with `bash bench/run` (`--quick` for the 3,000-file tree only;
//! `--tree DIR` only writes the trees, for profiling).

#[path = "netem.rs"]
mod netem;
#[path = "trees.rs"]
mod trees;
#[path = "util.rs"]
mod util;

use netem::proxy;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use trees::{gen_tree, next_release};
use util::{free_port, wait_port};

// ---------- running things ----------

fn sh(cmd: &str) -> String {
    let o = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .output()
        .expect("sh");
    assert!(
        o.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn timed(cmd: &str) -> f64 {
    let t = Instant::now();
    sh(cmd);
    t.elapsed().as_secs_f64()
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Median and range of several runs.
#[derive(Clone, Copy)]
struct Fig {
    median: f64,
    min: f64,
    max: f64,
}

fn stats(mut v: Vec<f64>) -> Fig {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Fig {
        median: v[v.len() / 2],
        min: v[0],
        max: v[v.len() - 1],
    }
}

fn secs(f: Fig) -> String {
    if f.median < 1.0 {
        format!(
            "{:.0} ms ({:.0}–{:.0})",
            f.median * 1e3,
            f.min * 1e3,
            f.max * 1e3
        )
    } else {
        format!("{:.2} s ({:.2}–{:.2})", f.median, f.min, f.max)
    }
}

/// A server child killed on drop.
struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn spawn_banner(cmd: &mut Command) -> (Child, String) {
    let mut c = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut out = c.stdout.take().unwrap();
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while out.read(&mut b).unwrap_or(0) == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = out.read_to_end(&mut sink);
    });
    let line = String::from_utf8_lossy(&line).into_owned();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_default()
        .to_string();
    (Child(c), url)
}

// ---------- the figures ----------

struct Bench {
    upkeep: PathBuf,
    tmp: PathBuf,
    key: PathBuf,
    notes: Vec<String>,
    rows: Vec<[String; 5]>,
}

impl Bench {
    fn up(&self, args: &str) -> String {
        sh(&format!("{} {args}", self.upkeep.display()))
    }
    fn publish(&self, dir: &Path, version: &str, repo: &Path) {
        self.up(&format!(
            "publish {} --version {version} --repo {} --key {}",
            dir.display(),
            repo.display(),
            self.key.display()
        ));
    }
    /// `upkeep reference` on a free port: the server and its URL.
    fn reference(&self, repo: &Path) -> (Child, String) {
        spawn_banner(Command::new(&self.upkeep).args([
            "reference",
            "--repo",
            repo.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ]))
    }
    fn row(
        &mut self,
        figure: &str,
        upkeep: String,
        yardstick: String,
        target: &str,
        met: Option<bool>,
    ) {
        let met = match met {
            Some(true) => "met".to_string(),
            Some(false) => "**missed**".to_string(),
            None => "—".to_string(),
        };
        println!("{figure}: upkeep {upkeep} | {yardstick} | {target} {met}");
        self.rows.push([
            figure.to_string(),
            upkeep,
            yardstick,
            target.to_string(),
            met,
        ]);
    }
}

struct Set {
    name: &'static str,
    files: usize,
    bytes: u64,
    runs: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let out = args
        .windows(2)
        .find(|w| w[0] == "--out")
        .map(|w| PathBuf::from(&w[1]))
        .unwrap_or_else(|| PathBuf::from("bench/RESULTS.md"));
    // `--tree DIR`: only write the benchmark's trees (the same seeds) into DIR, for profiling.
    if let Some(dir) = args
        .windows(2)
        .find(|w| w[0] == "--tree")
        .map(|w| PathBuf::from(&w[1]))
    {
        gen_tree(&dir.join("small"), 3_000, 70_000_000, 1);
        if !quick {
            gen_tree(&dir.join("large"), 100_000, 1_000_000_000, 2);
        }
        println!("trees written under {}", dir.display());
        return;
    }
    let upkeep = std::env::current_dir()
        .unwrap()
        .join("target/release/upkeep");
    assert!(upkeep.exists(), "build first: cargo build --release");
    let tmpdir = tempfile::Builder::new()
        .prefix("upkeep-bench-")
        .tempdir_in(std::env::temp_dir())
        .unwrap();
    let tmp = tmpdir.path().to_path_buf();
    let key = tmp.join("key");
    let mut b = Bench {
        upkeep,
        tmp: tmp.clone(),
        key: key.clone(),
        notes: Vec::new(),
        rows: Vec::new(),
    };
    b.up(&format!("keygen --out {}", key.display()));
    for t in ["rsync", "wrk", "nginx", "md5sum"] {
        if !have(t) {
            b.notes.push(format!("`{t}` is not installed: the figures that need it were skipped (bench/run installs it when run as root)."));
        }
    }
    let mut sets = vec![Set {
        name: "CMS-like, 3,000 files, 70 MB",
        files: 3_000,
        bytes: 70_000_000,
        runs: 5,
    }];
    if !quick {
        sets.push(Set {
            name: "large, 100,000 files, 1 GB",
            files: 100_000,
            bytes: 1_000_000_000,
            runs: 3,
        });
    }
    for (i, set) in sets.iter().enumerate() {
        run_set(&mut b, set, i == 0, i as u64 + 1);
    }
    write_results(&b, &out, quick);
    println!("wrote {}", out.display());
}

fn run_set(b: &mut Bench, set: &Set, first: bool, seed: u64) {
    println!("== {} ==", set.name);
    let base = b.tmp.join(format!("set{seed}"));
    let a = base.join("A");
    std::fs::create_dir_all(&a).unwrap();
    let t = Instant::now();
    let paths = gen_tree(&a, set.files, set.bytes, seed);
    println!(
        "generated {} files in {:.1} s",
        paths.len(),
        t.elapsed().as_secs_f64()
    );

    // 1. Fingerprint.
    let repo = base.join("repo-fp");
    b.publish(&a, "1.0.0", &repo);
    let (_ref, url) = b.reference(&repo);
    let inst = base.join("fp");
    sh(&format!("cp -a {}/. {}/", a.display(), inst.display()));
    b.up(&format!(
        "init --root {} --reference {url} --public-key {}.pub --installed 1.0.0",
        inst.display(),
        b.key.display()
    ));
    let db = inst.join(".upkeep/state.db");
    let fp = format!(
        "{} fingerprint {} > /dev/null",
        b.upkeep.display(),
        inst.display()
    );
    let fp_json = format!(
        "{} fingerprint {} --json > /dev/null",
        b.upkeep.display(),
        inst.display()
    );
    let clear = || {
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute("DELETE FROM print_cache", [])
            .unwrap();
    };
    let ad = a.display();
    let md5_1_cmd = format!("cd {ad} && find . -type f -print0 | xargs -0 md5sum > /dev/null");
    let md5_2_cmd =
        format!("cd {ad} && find . -type f -print0 | xargs -0 -P2 -n 500 md5sum > /dev/null");
    let stat_cmd = format!("cd {ad} && find . -type f -printf '%s %T@ %p\\n' > /dev/null");
    // The trees were just written: flush them first, so that no tool pays for another's
    // writeback, read each once so that every tool starts from a warm page cache, and take
    // the tools in turn in every round, so that a noisy moment costs them all alike.
    sh("sync");
    timed(&fp);
    timed(&md5_2_cmd);
    let rounds = set.runs.max(7);
    let mut t: [Vec<f64>; 6] = Default::default();
    for _ in 0..rounds {
        clear();
        t[0].push(timed(&fp));
        t[1].push(timed(&fp));
        clear();
        t[2].push(timed(&fp_json));
        t[3].push(timed(&md5_1_cmd));
        t[4].push(timed(&md5_2_cmd));
        t[5].push(timed(&stat_cmd));
    }
    let [cold, warm, cold_json, md5_1, md5_2, stat] = t.map(stats);
    b.row(
        &format!(
            "{}: fingerprint, cold (text output, MD5 only; `--json` adds SHA-256: {})",
            set.name,
            secs(cold_json)
        ),
        secs(cold),
        format!(
            "md5sum one process {}; `xargs -P2` {}",
            secs(md5_1),
            secs(md5_2)
        ),
        "≤ xargs -P2 md5sum",
        Some(cold.median <= md5_2.median),
    );
    b.row(
        &format!("{}: fingerprint, warm", set.name),
        secs(warm),
        format!("stat-only `find -printf` {}", secs(stat)),
        "≤ 1.5 × stat walk",
        Some(warm.median <= 1.5 * stat.median),
    );

    // 2 and 3. Network staging at 50 ms round trip, then the closed window, for 5% and 30%.
    for (pct, frac) in [(5, 0.05), (30, 0.30)] {
        let bdir = base.join(format!("B{pct}"));
        std::fs::create_dir_all(&bdir).unwrap();
        let differ = next_release(&a, &paths, &bdir, frac, seed * 100 + pct);
        let diff_bytes: u64 = differ
            .iter()
            .map(|p| {
                std::fs::metadata(bdir.join(p))
                    .map(|m| m.len())
                    .unwrap_or(0)
            })
            .sum();
        let repo = base.join(format!("repo{pct}"));
        b.publish(&a, "1.0.0", &repo);
        b.publish(&bdir, "1.1.0", &repo);
        let (_ref, url) = b.reference(&repo);
        let ref_port: u16 = url
            .trim_end_matches('/')
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let px = proxy(ref_port, Duration::from_millis(25));
        let label = format!(
            "{}: {pct}% update ({} files, {:.1} MB)",
            set.name,
            differ.len(),
            diff_bytes as f64 / 1e6
        );

        let mut stage_t = Vec::new();
        let mut later = Vec::new();
        let mut wire = 0;
        let mut closed = Vec::new();
        let mut cp_t = Vec::new();
        for r in 0..set.runs.min(3) {
            let root = base.join(format!("site{pct}-{r}"));
            sh(&format!("cp -a {}/. {}/", a.display(), root.display()));
            b.up(&format!("init --root {} --reference http://127.0.0.1:{}/ --public-key {}.pub --installed 1.0.0", root.display(), px.port, b.key.display()));
            // Warm the stat cache as a site's regular check would.
            let _ = Command::new(&b.upkeep)
                .args(["check", "--root", root.to_str().unwrap()])
                .output();
            // The copy's writeback would otherwise land in the timed run.
            sh("sync");
            px.count.reset();
            stage_t.push(timed(&format!(
                "{} stage --root {} --network",
                b.upkeep.display(),
                root.display()
            )));
            wire = px.count.bytes();
            let staged_copy = base.join(format!("staged{pct}-{r}"));
            sh(&format!(
                "cp -a {}/staging/. {}/ && rm -f {}/upkeep-manifest.*",
                root.display(),
                staged_copy.display(),
                staged_copy.display()
            ));
            let j = b.up(&format!("update --root {} --yes --json", root.display()));
            let run: serde_json::Value = serde_json::from_str(&j).unwrap();
            closed.push(run["closed_ms"].as_f64().unwrap() / 1e3);
            // Yardstick: copying the same changed files into place.
            let live = base.join(format!("cp{pct}-{r}"));
            sh(&format!("cp -a {}/. {}/", a.display(), live.display()));
            cp_t.push(timed(&format!(
                "cp -a {}/. {}/",
                staged_copy.display(),
                live.display()
            )));
            // Removed after the last run: on this machine's ext4 a file created within seconds
            // of many deletions costs several times more, which made these figures bimodal.
            later.extend([root, staged_copy, live]);
        }
        let stage_f = stats(stage_t);

        // rsync daemon through its own delaying proxy.
        let rsync_f = if have("rsync") {
            let port = free_port();
            let conf = base.join(format!("rsyncd{pct}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "use chroot = no\nuid = root\ngid = root\n[b]\npath = {}\nread only = yes\n",
                    bdir.display()
                ),
            )
            .unwrap();
            let _d = Child(
                Command::new("rsync")
                    .args([
                        "--daemon",
                        "--no-detach",
                        "--address=127.0.0.1",
                        &format!("--port={port}"),
                        &format!("--config={}", conf.display()),
                    ])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            );
            wait_port(port);
            let rp = proxy(port, Duration::from_millis(25));
            let mut t = Vec::new();
            let mut rwire = 0;
            for r in 0..set.runs.min(3) {
                let dest = base.join(format!("rsync{pct}-{r}"));
                sh(&format!("cp -a {}/. {}/", a.display(), dest.display()));
                sh("sync");
                rp.count.reset();
                t.push(timed(&format!(
                    "rsync -a --delete -c rsync://127.0.0.1:{}/b/ {}/",
                    rp.port,
                    dest.display()
                )));
                rwire = rp.count.bytes();
                later.push(dest);
            }
            Some((stats(t), rwire))
        } else {
            None
        };
        for d in later {
            sh(&format!("rm -rf {}", d.display()));
        }

        // One sequential GET per changed file, as YACS did (keep-alive, and a new connection each).
        let sample: Vec<&String> = differ.iter().take(300).collect();
        let scale = differ.len() as f64 / sample.len().max(1) as f64;
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(repo.join("releases/1.1.0/manifest.json")).unwrap(),
        )
        .unwrap();
        let sha_of = |p: &str| {
            manifest["files"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["path"] == p)
                .map(|f| f["sha256"].as_str().unwrap().to_string())
        };
        let urls: Vec<String> = sample
            .iter()
            .filter_map(|p| sha_of(p))
            .map(|h| format!("http://127.0.0.1:{}/objects/{}/{}", px.port, &h[..2], h))
            .collect();
        let get_keep = {
            let c = reqwest::blocking::Client::new();
            let t = Instant::now();
            for u in &urls {
                c.get(u).send().unwrap().bytes().unwrap();
            }
            t.elapsed().as_secs_f64() * scale
        };
        let get_new = {
            let t = Instant::now();
            for u in &urls {
                reqwest::blocking::Client::builder()
                    .pool_max_idle_per_host(0)
                    .build()
                    .unwrap()
                    .get(u)
                    .send()
                    .unwrap()
                    .bytes()
                    .unwrap();
            }
            t.elapsed().as_secs_f64() * scale
        };
        let sampled = if scale > 1.0 {
            format!(" (timed on {} files, scaled)", sample.len())
        } else {
            String::new()
        };
        let mut yard = format!(
            "one GET per file {:.1} s keep-alive, {:.1} s without{sampled}",
            get_keep, get_new
        );
        let mut met = stage_f.median * 20.0 <= get_keep;
        if let Some((rf, rw)) = rsync_f {
            yard = format!(
                "rsync -c {} ({:.1} MB on the wire); {yard}",
                secs(rf),
                rw as f64 / 1e6
            );
            met = met && stage_f.median <= rf.median;
        }
        b.row(
            &format!("{label}: network staging at 50 ms RTT"),
            format!(
                "{} ({:.1} MB on the wire)",
                secs(stage_f),
                wire as f64 / 1e6
            ),
            yard,
            "≤ rsync and ≥ 20× faster than per-file GETs",
            Some(met),
        );
        let cl = stats(closed);
        let target_ok = if first { Some(cl.median < 1.0) } else { None };
        b.row(
            &format!("{label}: closed window of `upkeep update`"),
            secs(cl),
            format!("`cp -a` of the changed files {}", secs(stats(cp_t))),
            if first { "< 1 s" } else { "—" },
            target_ok,
        );
    }

    if first {
        reference_rps(b, &base);
    }
    // 5. Peak memory of staging from the release zip, and of an idle server.
    if have("/usr/bin/time") {
        let repo = base.join("repo30");
        let root = base.join("mem");
        sh(&format!("cp -a {}/. {}/", a.display(), root.display()));
        let (_ref, url) = b.reference(&repo);
        b.up(&format!(
            "init --root {} --reference {url} --public-key {}.pub --installed 1.0.0",
            root.display(),
            b.key.display()
        ));
        let zip = repo.join("releases/1.1.0/upkeep-1.1.0.zip");
        let zip_mb = std::fs::metadata(&zip).unwrap().len() as f64 / 1e6;
        let o = Command::new("/usr/bin/time")
            .args(["-f", "%M"])
            .arg(&b.upkeep)
            .args([
                "stage",
                "--root",
                root.to_str().unwrap(),
                "--archive",
                zip.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .output()
            .unwrap();
        let kb: f64 = String::from_utf8_lossy(&o.stderr)
            .lines()
            .last()
            .unwrap_or("0")
            .trim()
            .parse()
            .unwrap_or(0.0);
        b.row(
            &format!(
                "{}: peak memory of `stage --archive` ({zip_mb:.0} MB zip, 30% update)",
                set.name
            ),
            format!("{:.1} MB", kb / 1024.0),
            "—".into(),
            "< 100 MB",
            Some(kb / 1024.0 < 100.0),
        );
        let (srv, _) = spawn_banner(Command::new(&b.upkeep).args([
            "serve",
            "--root",
            root.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ]));
        std::thread::sleep(Duration::from_millis(500));
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", srv.0.id())).unwrap_or_default();
        let rss = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        b.row(
            &format!("{}: memory of an idle `upkeep serve`", set.name),
            format!("{:.1} MB", rss / 1024.0),
            "—".into(),
            "—",
            None,
        );
    }
    sh(&format!("rm -rf {}", base.display()));
}

fn wrk(url: &str, header: Option<&str>) -> f64 {
    let mut c = Command::new("wrk");
    c.args(["-t2", "-c32", "-d4s"]);
    if let Some(h) = header {
        c.args(["-H", h]);
    }
    let o = c.arg(url).output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// The ETag of the plain representation, the one wrk (which asks no compression) is served.
fn etag(url: &str) -> String {
    reqwest::blocking::Client::builder()
        .no_gzip()
        .build()
        .unwrap()
        .get(url)
        .send()
        .unwrap()
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// 4. Requests per second for the manifest (full and conditional) and an object, against nginx.
fn reference_rps(b: &mut Bench, base: &Path) {
    if !have("wrk") || !have("nginx") {
        return;
    }
    let repo = base.join("repo5");
    let (_ref, url) = b.reference(&repo);
    let port = free_port();
    let nd = base.join("nginx");
    std::fs::create_dir_all(&nd).unwrap();
    let n = nd.display();
    std::fs::write(nd.join("nginx.conf"), format!(
        "worker_processes 2; daemon off; pid {n}/pid; error_log {n}/error.log; events {{ worker_connections 1024; }} http {{ access_log off; \
         client_body_temp_path {n}; proxy_temp_path {n}; fastcgi_temp_path {n}; uwsgi_temp_path {n}; scgi_temp_path {n}; \
         server {{ listen 127.0.0.1:{port}; root {}; }} }}", repo.display())).unwrap();
    let _nginx = Child(
        Command::new("nginx")
            .args(["-c", nd.join("nginx.conf").to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(port);
    let ngx = format!("http://127.0.0.1:{port}/");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo.join("releases/1.1.0/manifest.json")).unwrap())
            .unwrap();
    let mut files: Vec<(u64, String)> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["size"].as_u64().unwrap(),
                f["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    files.sort();
    let (size, h) = files[files.len() / 2].clone();
    let obj = format!("objects/{}/{}", &h[..2], h);
    let m = "releases/1.1.0/manifest.json";
    let msize = std::fs::metadata(repo.join(m)).unwrap().len();
    for (what, path, cond) in [
        (
            format!("manifest ({:.0} KB), full", msize as f64 / 1e3),
            m,
            false,
        ),
        ("manifest, conditional (304)".to_string(), m, true),
        (format!("median object ({size} B)"), obj.as_str(), false),
    ] {
        let (u1, u2) = (format!("{url}{path}"), format!("{ngx}{path}"));
        let (h1, h2) = (
            format!("If-None-Match: {}", etag(&u1)),
            format!("If-None-Match: {}", etag(&u2)),
        );
        let up = wrk(&u1, cond.then_some(h1.as_str()));
        let ng = wrk(&u2, cond.then_some(h2.as_str()));
        b.row(
            &format!("reference server: {what}"),
            format!("{up:.0} req/s"),
            format!("nginx {ng:.0} req/s"),
            "≥ ½ nginx",
            Some(up * 2.0 >= ng),
        );
    }
}

fn write_results(b: &Bench, out: &Path, quick: bool) {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
        / 1024.0;
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        .unwrap_or_default();
    let date = sh("date -u +%Y-%m-%d").trim().to_string();
    let mut s = String::new();
    s.push_str("# Benchmarks\n\n");
    s.push_str(&format!("Measured {date} on {cores} cores ({cpu}), {mem:.0} GiB of memory, with `bash bench/run{}`. ", if quick { " --quick" } else { "" }));
    s.push_str(&format!("Trees, repositories and instances lived under `{}` (the system's temp dir: creating files inside the checkout costs about 30 times more here). ", std::env::temp_dir().display()));
    s.push_str("Each figure is the median of several runs with the range in brackets; yardsticks ran in the same run on the same trees. ");
    s.push_str("The 50 ms round trip comes from a delaying TCP proxy started by the harness (25 ms each way, throughput not limited). Page cache warm for every tool; the fingerprint figures start after a `sync` and take the tools in turn in every round.\n\n");
    s.push_str("| figure | upkeep | yardstick | target | |\n|---|---|---|---|---|\n");
    for r in &b.rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            r[0], r[1], r[2], r[3], r[4]
        ));
    }
    if !b.notes.is_empty() {
        s.push('\n');
        for n in &b.notes {
            s.push_str(&format!("- {n}\n"));
        }
    }
    // The other benches' sections and the notes written by hand below the table stay.
    let old = std::fs::read_to_string(out).unwrap_or_default();
    if let Some(i) = ["\n## ", "\n<!-- "]
        .iter()
        .filter_map(|m| old.find(m))
        .min()
    {
        s.push_str(&old[i..]);
    }
    let mut f = std::fs::File::create(out).unwrap();
    f.write_all(s.as_bytes()).unwrap();
}
