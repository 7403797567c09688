//! Bytes on the wire: network staging of a realistic next release with compressed objects and
//! deltas, beside the old upkeep (raw objects only), `rsync -c` and `rsync -cz` (an rsync
//! daemon), each through the same delaying proxy at 50 ms RTT, with unlimited throughput and
//! with a 20 Mbit/s link each way. Also the time and disk publishing the forms costs. Rewrites
//! the `wire` section of bench/RESULTS.md. Run it with `bash bench/run --wire [--large]`.

#[path = "netem.rs"]
mod netem;
#[path = "trees.rs"]
mod trees;
#[path = "util.rs"]
mod util;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use netem::limited;
use trees::{copy_tree, edited_release, gen_tree, patched_release};
use util::{Kill, dir_bytes, free_port, up, wait_port};

const ONE_WAY: Duration = Duration::from_millis(25);

/// `upkeep reference` serving `repo` on a free port.
fn reference(bin: &Path, repo: &Path) -> (Kill, u16) {
    util::reference(bin, &["--repo", repo.to_str().unwrap()], "127.0.0.1:0")
}

fn zst_bytes(repo: &Path) -> u64 {
    walkdir::WalkDir::new(repo.join("objects"))
        .into_iter()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".zst"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn mb(b: u64) -> String {
    if b < 100_000 {
        return format!("{:.1} KB", b as f64 / 1e3);
    }
    format!("{:.2} MB", b as f64 / 1e6)
}

struct Tree {
    name: String,
    a: PathBuf,
    b: PathBuf,
    /// The paths of release A.
    paths: Vec<String>,
    changed: usize,
    new_bytes: u64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let large = args.iter().any(|a| a == "--large");
    let bin = std::env::current_dir()
        .unwrap()
        .join("target/release/upkeep");
    assert!(bin.exists(), "build first: cargo build --release");
    let tmp = tempfile::Builder::new()
        .prefix("upkeep-wire-bench-")
        .tempdir()
        .unwrap();
    let p = |x: &str| tmp.path().join(x);
    let key = p("key");
    up(&bin, &["keygen", "--out", key.to_str().unwrap()]);

    let mut specs = vec![(
        "CMS-like, 3,000 files, 70 MB",
        3_000usize,
        70_000_000u64,
        1u64,
    )];
    if large {
        specs.push(("large, 100,000 files, 1 GB", 100_000, 1_000_000_000, 2));
    }
    let mut c = Ctx {
        bin: &bin,
        key: &key,
        tmp: tmp.path(),
        rows: Vec::new(),
        notes: Vec::new(),
    };
    for (name, files, bytes, seed) in specs {
        let a = p(&format!("t{seed}-A"));
        let b = p(&format!("t{seed}-B"));
        let paths = gen_tree(&a, files, bytes, seed);
        let differ = edited_release(&a, &paths, &b, 0.33, seed * 7 + 1);
        let new_bytes = differ
            .iter()
            .filter_map(|d| std::fs::metadata(b.join(d)).ok())
            .map(|m| m.len())
            .sum();
        let t = Tree {
            name: name.to_string(),
            a,
            b,
            paths,
            changed: differ.len(),
            new_bytes,
        };
        println!(
            "== {} ({} files differ, {}) ==",
            t.name,
            t.changed,
            mb(t.new_bytes)
        );
        // The large tree is published only: staging it through a 20 Mbit/s link three times per
        // tool would take hours; its figure is the publishing time and disk.
        run_tree(&mut c, &t, seed, seed == 1);
        std::fs::remove_dir_all(&t.a).ok();
        std::fs::remove_dir_all(&t.b).ok();
    }
    write_results(&c.rows, &c.notes);
}

/// What every tree's run shares: the binary, the publisher's key, the scratch folder, and the
/// table being written.
struct Ctx<'a> {
    bin: &'a Path,
    key: &'a Path,
    tmp: &'a Path,
    rows: Vec<String>,
    notes: Vec<String>,
}

fn run_tree(c: &mut Ctx, t: &Tree, seed: u64, stage: bool) {
    let (bin, key, tmp) = (c.bin, c.key, c.tmp);
    let (rows, notes) = (&mut c.rows, &mut c.notes);
    let k = key.to_str().unwrap();
    let publish = |dir: &Path, v: &str, repo: &Path, extra: &[&str]| -> f64 {
        let mut a = vec![
            "publish",
            dir.to_str().unwrap(),
            "--version",
            v,
            "--repo",
            repo.to_str().unwrap(),
            "--key",
            k,
        ];
        a.extend_from_slice(extra);
        let t0 = Instant::now();
        up(bin, &a);
        t0.elapsed().as_secs_f64()
    };
    let forms_repo = tmp.join(format!("repo{seed}-forms"));
    let raw_repo = tmp.join(format!("repo{seed}-raw"));
    let raw = ["--no-compress", "--deltas", "0"];
    let f1 = publish(&t.a, "1.0.0", &forms_repo, &[]);
    let f2 = publish(&t.b, "1.1.0", &forms_repo, &[]);
    let r1 = publish(&t.a, "1.0.0", &raw_repo, &raw);
    let r2 = publish(&t.b, "1.1.0", &raw_repo, &raw);
    let objects = dir_bytes(&raw_repo.join("objects"));
    let (zst, deltas) = (
        zst_bytes(&forms_repo),
        dir_bytes(&forms_repo.join("deltas")),
    );
    rows.push(format!(
        "| {} | publish 1.0.0 / 1.1.0, with forms | {:.1} s / {:.1} s | without: {:.1} s / {:.1} s |",
        t.name, f1, f2, r1, r2
    ));
    rows.push(format!(
        "| {} | disk: compressed objects / deltas | {} / {} | raw objects {} |",
        t.name,
        mb(zst),
        mb(deltas),
        mb(objects)
    ));

    notes.push(format!(
        "{}: release 1.1.0 differs from 1.0.0 in {} files ({} of new content).",
        t.name,
        t.changed,
        mb(t.new_bytes)
    ));
    if !stage {
        return;
    }
    for doc in [
        "releases/1.1.0/manifest.json.gz",
        "releases/1.1.0/manifest.from-1.0.0.zst",
        "releases/1.1.0/forms.json.gz",
    ] {
        let n = std::fs::metadata(forms_repo.join(doc)).map_or(0, |m| m.len());
        println!("{doc}: {n} B");
    }
    let (_fr, forms_port) = reference(bin, &forms_repo);
    let (_rr, raw_port) = reference(bin, &raw_repo);
    let sites = std::cell::Cell::new(0);
    let main = Step {
        name: t.name.clone(),
        from: &t.a,
        to: &t.b,
        installed: "1.0.0",
    };
    stage_step(c, &main, (forms_port, raw_port), seed, &sites);

    // Then a patch release: 20 files edited by a line or two (what most updates are).
    let pc = tmp.join(format!("t{seed}-C"));
    let patched = patched_release(&t.b, &t.paths, &pc, 20, seed * 11 + 3);
    let cf = publish(&pc, "1.1.1", &forms_repo, &[]);
    let cr = publish(&pc, "1.1.1", &raw_repo, &raw);
    let patch = Step {
        name: format!(
            "{}, patch release ({} files edited)",
            t.name.split(',').next().unwrap_or(&t.name),
            patched.len()
        ),
        from: &t.b,
        to: &pc,
        installed: "1.1.0",
    };
    c.rows.push(format!(
        "| {} | publish 1.1.1, with forms | {cf:.1} s | without: {cr:.1} s |",
        patch.name
    ));
    stage_step(c, &patch, (forms_port, raw_port), seed, &sites);
    std::fs::remove_dir_all(&pc).ok();
    for n in 1..=sites.get() {
        std::fs::remove_dir_all(tmp.join(format!("site{seed}-{n}"))).ok();
    }
}

/// One update staged by every tool: sites installed at `installed` (copies of `from`) take the
/// release `to` holds.
struct Step<'a> {
    name: String,
    from: &'a Path,
    to: &'a Path,
    installed: &'a str,
}

/// Stage `step` with upkeep (forms and raw objects) and rsync (-c, -cz), through the delaying
/// proxy with and without the rate limit; rows and notes for the table.
fn stage_step(
    c: &mut Ctx,
    step: &Step,
    (forms_port, raw_port): (u16, u16),
    seed: u64,
    sites: &std::cell::Cell<u32>,
) {
    let (bin, key, tmp) = (c.bin, c.key, c.tmp);
    let (rows, notes) = (&mut c.rows, &mut c.notes);
    let k = key.to_str().unwrap();
    // An rsync daemon serving release B, as `rsync -c` users mirror a release folder.
    let rsync_port = free_port();
    let conf = tmp.join(format!("rsyncd{seed}-{}.conf", step.installed));
    std::fs::write(
        &conf,
        format!(
            "use chroot = no\nuid = root\ngid = root\n[b]\npath = {}\nread only = yes\n",
            step.to.display()
        ),
    )
    .unwrap();
    let _rsyncd = Kill(
        Command::new("rsync")
            .args(["--daemon", "--no-detach", "--address=127.0.0.1"])
            .arg(format!("--port={rsync_port}"))
            .arg(format!("--config={}", conf.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rsync is installed (bench/run installs it)"),
    );
    wait_port(rsync_port);

    let runs = 3;
    // How the last upkeep staging's bytes split between the forms.
    let split = std::cell::RefCell::new(serde_json::Value::Null);
    for (link, rate) in [
        ("50 ms RTT, unlimited", None),
        ("50 ms RTT, 20 Mbit/s", Some(20_000_000 / 8)),
    ] {
        // An installed site: initialised beforehand (its fingerprint cache warm, as on any
        // site that ran `check`), not counted.
        let init = |url: &str, dest: &Path| {
            let d = dest.to_str().unwrap();
            up(
                bin,
                &[
                    "init",
                    "--root",
                    d,
                    "--reference",
                    url,
                    "--public-key",
                    &format!("{k}.pub"),
                    "--installed",
                    step.installed,
                ],
            );
            // `init --installed` takes the version's word for it and hashes nothing: the
            // fingerprint fills the cache a site's `check` leaves behind.
            up(bin, &["fingerprint", d]);
        };
        let line = |tool: &str, port: u16, stage: &dyn Fn(&str, &Path)| {
            let px = limited(port, ONE_WAY, rate);
            let mut times = Vec::new();
            let mut wire = 0;
            for _ in 0..runs {
                // Site copies are removed only after the tree's last run: on this machine's
                // ext4 a file created within seconds of many deletions costs several times more
                // (the allocator skips recently freed inodes), which would tax whichever tool
                // ran after a removal.
                sites.set(sites.get() + 1);
                let dest = tmp.join(format!("site{seed}-{}", sites.get()));
                copy_tree(step.from, &dest);
                if tool.starts_with("upkeep") {
                    init(&px.url(), &dest);
                }
                // The copy's writeback would otherwise land in the middle of the timed run.
                Command::new("sync").status().unwrap();
                px.count.reset();
                let t0 = Instant::now();
                stage(&px.url(), &dest);
                times.push(t0.elapsed().as_secs_f64());
                wire = px.count.bytes();
            }
            let m = median(times);
            let (up_b, down_b, requests, _) = px.count.get();
            println!(
                "{link}: {tool}: {m:.2} s, {} ({} up, {} down), {requests} requests",
                mb(wire),
                mb(up_b),
                mb(down_b)
            );
            (m, wire)
        };
        let upkeep_stage = |_url: &str, dest: &Path| {
            let d = dest.to_str().unwrap();
            let args = ["stage", "--root", d, "--network", "--json"];
            // WIRE_TRACE=1: each staging's phases with their times (see Progress::set_phase).
            let out = if std::env::var_os("WIRE_TRACE").is_some() {
                let o = Command::new(bin)
                    .args(args)
                    .env("UPKEEP_TRACE_PHASES", "1")
                    .output()
                    .unwrap();
                assert!(o.status.success());
                eprint!("{}", String::from_utf8_lossy(&o.stderr));
                String::from_utf8_lossy(&o.stdout).into_owned()
            } else {
                up(bin, &args)
            };
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            *split.borrow_mut() = v["forms"].clone();
        };
        let rsync = |z: bool| {
            move |url: &str, dest: &Path| {
                let port = url
                    .trim_end_matches('/')
                    .rsplit(':')
                    .next()
                    .unwrap()
                    .to_string();
                let st = Command::new("rsync")
                    .arg(if z { "-acz" } else { "-ac" })
                    .arg("--delete")
                    .arg(format!("rsync://127.0.0.1:{port}/b/"))
                    .arg(format!("{}/", dest.display()))
                    .stdout(Stdio::null())
                    .status()
                    .unwrap();
                assert!(st.success());
            }
        };
        let (ft, fw) = line("upkeep, forms", forms_port, &upkeep_stage);
        let f = split.borrow().clone();
        let docs = fw.saturating_sub(
            ["delta", "compressed", "raw"]
                .iter()
                .map(|k| f[*k].as_u64().unwrap_or(0))
                .sum::<u64>(),
        );
        println!("{link}: upkeep forms split: {f} (documents, requests and headers: {docs} B)");
        if rate.is_none() {
            notes.push(format!(
                "{}: upkeep's {} are {} of deltas, {} of compressed objects, {} of raw objects (incompressible images), and {} of signed documents (the manifest as a delta), requests and frame headers.",
                step.name,
                mb(fw),
                mb(f["delta"].as_u64().unwrap_or(0)),
                mb(f["compressed"].as_u64().unwrap_or(0)),
                mb(f["raw"].as_u64().unwrap_or(0)),
                mb(docs)
            ));
        }
        if std::env::var_os("WIRE_ONLY_FORMS").is_some() {
            continue;
        }
        let (rt, rw) = line("upkeep, raw objects", raw_port, &upkeep_stage);
        let (ct, cw) = line("rsync -c", rsync_port, &rsync(false));
        let (zt, zw) = line("rsync -cz", rsync_port, &rsync(true));
        rows.push(format!(
            "| {} | staging, {link}: upkeep with forms | {ft:.2} s, {} | raw objects {rt:.2} s, {}; rsync -c {ct:.2} s, {}; rsync -cz {zt:.2} s, {} |",
            step.name,
            mb(fw),
            mb(rw),
            mb(cw),
            mb(zw)
        ));
        if rate.is_some() {
            notes.push(format!(
                "{}: at 20 Mbit/s, upkeep with forms took {:.1} times as long as `rsync -cz`, with {:.0}% of its bytes ({:.0}% of `rsync -c`'s, {:.0}% of the raw objects').",
                step.name,
                ft / zt,
                100.0 * fw as f64 / zw as f64,
                100.0 * fw as f64 / cw as f64,
                100.0 * fw as f64 / rw as f64
            ));
        }
    }
}

fn write_results(rows: &[String], notes: &[String]) {
    let out = PathBuf::from("bench/RESULTS.md");
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let (open, close) = ("<!-- wire -->", "<!-- /wire -->\n");
    // A run without --large keeps the large tree's rows and notes of the last run that had it.
    let (mut rows, mut notes) = (rows.to_vec(), notes.to_vec());
    if !rows.iter().any(|r| r.starts_with("| large")) {
        let old = match (text.find(open), text.find(close)) {
            (Some(a), Some(b)) => &text[a..b],
            _ => "",
        };
        for l in old.lines() {
            if l.starts_with("| large") {
                rows.push(l.to_string());
            } else if let Some(n) = l.strip_prefix("- large") {
                notes.push(format!("large{n}"));
            }
        }
    }
    let section = format!(
        "<!-- wire -->\n## Bytes on the wire: compressed objects and deltas\n\n\
         `bash bench/run --wire [--large]` ({}), release build, 2 cores (the large tree is published, not staged; its rows are\n\
         from the last run with `--large`). The next release is made as CMS releases are:\n\
         a third of the files change; of those, most text files are edited in 1 to 6 places (lines inserted, removed\n\
         or changed), 5% are rewritten, images are replaced whole, 7% are new files and 3% are removed. Each tool\n\
         stages release 1.1.0 into a copy of 1.0.0 through the same delaying proxy (25 ms each way), once with\n\
         unlimited throughput and once with a 20 Mbit/s link each way (a token bucket per direction); bytes are\n\
         counted both ways at the proxy; times are medians of 3. Sites are initialised before the clock starts (their\n\
         fingerprint cache warm, as on a site that ran `check`), and every tool's copy is written to disk (`sync`) before its clock starts; `rsync -c` reads and hashes both trees every time. `upkeep, raw objects` is a repository published\n\
         with `--no-compress --deltas 0` (what upkeep sent before forms); rsync runs against an rsync daemon holding\n\
         the new release. Then the same sites, now at 1.1.0, take a patch release 1.1.1 (20 text files edited in a\n\
         few places, nothing else).\n\n\
         | tree | measure | upkeep | yardsticks |\n|---|---|---|---|\n{}\n\n{}\n<!-- /wire -->\n",
        chrono::Local::now().format("%Y-%m-%d"),
        rows.join("\n"),
        notes
            .iter()
            .map(|n| format!("- {n}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    println!("{section}");
    let new = match (text.find(open), text.find(close)) {
        (Some(a), Some(b)) => format!("{}{}{}", &text[..a], section, &text[b + close.len()..]),
        _ => format!("{text}\n{section}"),
    };
    std::fs::write(&out, new).unwrap();
    println!("wrote {}", out.display());
}
