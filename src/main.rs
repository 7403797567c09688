//! Command-line entry: parse, dispatch, print, exit codes.

mod cli;

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use clap::Parser;
use cli::{Cli, Command};
use upkeep::config::Instance;
use upkeep::error::{Error, IoContext, Result};
use upkeep::fsutil::human_bytes;
use upkeep::manifest::{PublicKey, SecretKey};
use upkeep::progress::Progress;
use upkeep::{check, fingerprint, init, reference, stage};

/// `check` found an update.
const EXIT_UPDATE: u8 = 10;
/// Another run holds the lock.
const EXIT_BUSY: u8 = 75;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            if let Some(h) = e.hint() {
                eprintln!("hint: {h}");
            }
            ExitCode::from(if matches!(e, Error::Busy(_)) {
                EXIT_BUSY
            } else {
                1
            })
        }
    }
}

fn print_json<T: serde::Serialize>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("report types serialise")
    );
}

fn run(cmd: Command) -> Result<u8> {
    match cmd {
        Command::Keygen { out, force } => keygen(&out, force),
        Command::Publish {
            dir,
            version,
            repo,
            key,
            notes,
            expires,
            json,
        } => {
            let key = SecretKey::load(&key)?;
            let p = reference::publish::publish(&reference::publish::Publish {
                dir: &dir,
                version: &version,
                repo: &repo,
                key: &key,
                notes: &notes,
                expires_days: expires,
            })?;
            if json {
                print_json(&p);
            } else {
                println!(
                    "published {} ({} files, {}, {} new objects){} into {}",
                    p.version,
                    p.files,
                    human_bytes(p.bytes),
                    p.new_objects,
                    p.previous
                        .as_ref()
                        .map(|v| format!(", after {v}"))
                        .unwrap_or_default(),
                    repo.display()
                );
                println!("release zip: {}", p.zip.display());
            }
            Ok(0)
        }
        Command::Reference { repo, listen } => serve_reference(&repo, &listen),
        Command::Init {
            root,
            reference,
            public_key,
            installed,
            json,
        } => {
            let key_text =
                std::fs::read_to_string(&public_key).ctx("read public key", &public_key)?;
            let r = init::init(&init::InitOptions {
                root: &root,
                reference: &reference,
                public_key: &key_text,
                installed: installed.as_deref(),
            })?;
            if json {
                print_json(&r);
            } else {
                println!("initialised instance {}", r.root.display());
                match &r.identified {
                    init::Identified::Given { version } => {
                        println!("installed release: {version} (as given)")
                    }
                    init::Identified::Fresh => {
                        println!("the folder is empty: the next update installs the latest release")
                    }
                    init::Identified::Exact { version } => {
                        println!("installed release: {version} (every file matches)")
                    }
                    init::Identified::Closest {
                        version,
                        differences,
                    } => {
                        println!(
                            "installed release: {version} (closest match, {} differences):",
                            differences.len()
                        );
                        for d in differences.iter().take(30) {
                            println!("  {d}");
                        }
                        println!("if that is wrong, run init again with --installed V");
                    }
                    init::Identified::Unknown => {
                        println!(
                            "no published release shares a file with this tree; the next update treats every file as new"
                        );
                        println!("if you know the release, run init again with --installed V");
                    }
                }
                println!("next: upkeep check --root {}", r.root.display());
            }
            Ok(0)
        }
        Command::Fingerprint { dir, json } => {
            let (entries, skipped) = fingerprint::fingerprint_dir(&dir)?;
            if json {
                print_json(&entries);
            } else {
                let mut out = String::with_capacity(entries.len() * 80);
                for e in &entries {
                    out.push_str(&format!("{}  {:>10}  {}\n", e.md5, e.size, e.path));
                }
                print!("{out}");
            }
            for s in skipped {
                eprintln!("skipped: {s}");
            }
            Ok(0)
        }
        Command::Check { root, json } => {
            let inst = Instance::open(&root.root)?;
            let (d, latest) = check::check(&inst)?;
            if json {
                print_json(&d);
            } else {
                println!(
                    "installed: {}",
                    d.installed.as_deref().unwrap_or("none (fresh install)")
                );
                println!("latest:    {} ({})", d.latest, latest.manifest().date);
                if !latest.manifest().notes.is_empty() {
                    println!("notes:     {}", latest.manifest().notes);
                }
                print_list("locally modified", &d.modified);
                print_list("new", &d.new);
                print_list("changed", &d.changed);
                print_list("removed", &d.removed);
                println!("unchanged: {} files", d.unchanged);
                if d.up_to_date() {
                    println!("up to date");
                } else {
                    println!(
                        "update available: run `upkeep stage --root {} --network` (or --archive, --inbox, --manual)",
                        root.root.display()
                    );
                }
            }
            Ok(if d.up_to_date() { 0 } else { EXIT_UPDATE })
        }
        Command::Stage {
            root,
            network,
            archive,
            inbox,
            manual,
            allow_downgrade,
            json,
        } => {
            let inst = Instance::open(&root.root)?;
            let source = if network {
                stage::Source::Network
            } else if let Some(a) = archive {
                stage::Source::Archive(a)
            } else if manual {
                stage::Source::Manual
            } else {
                match inbox.as_deref() {
                    Some("") | None => return list_inbox(&inst, json),
                    Some(name) => stage::Source::Inbox(name.to_string()),
                }
            };
            let progress = Arc::new(Progress::default());
            let bar = show_progress(&progress);
            let opts = stage::StageOptions {
                allow_downgrade,
                progress: progress.clone(),
            };
            let r = stage::stage(&inst, &source, &opts);
            progress.finished.store(true, Ordering::Relaxed);
            if let Some(b) = bar {
                let _ = b.join();
            }
            let r = r?;
            if json {
                print_json(&r);
            } else {
                println!(
                    "staged release {} from {}: {} files, {} ({} already staged) in {:.1} s",
                    r.version,
                    r.source,
                    r.files,
                    human_bytes(r.bytes),
                    r.reused,
                    r.seconds
                );
                if r.removed > 0 {
                    println!("{} files will be removed at the swap", r.removed);
                }
                if !r.modified.is_empty() {
                    println!(
                        "{} locally modified files (kept as NAME.bak unless --keep-modified):",
                        r.modified.len()
                    );
                    for m in r.modified.iter().take(30) {
                        println!("  {m}");
                    }
                }
                println!("next: upkeep update --root {}", root.root.display());
            }
            Ok(0)
        }
    }
}

fn print_list(title: &str, list: &[upkeep::manifest::RelPath]) {
    if list.is_empty() {
        return;
    }
    println!("{title}: {} files", list.len());
    for p in list.iter().take(50) {
        println!("  {p}");
    }
    if list.len() > 50 {
        println!("  ... and {} more (use --json for all)", list.len() - 50);
    }
}

fn list_inbox(inst: &Instance, json: bool) -> Result<u8> {
    let items = stage::inbox::list(inst)?;
    if json {
        print_json(&items);
        return Ok(0);
    }
    if items.is_empty() {
        println!(
            "{} is empty: drop a release zip there (upload it as NAME.zip.part and rename it when complete)",
            inst.inbox().display()
        );
    }
    for i in &items {
        println!(
            "{:<40} {:>10}  {}  {}",
            i.name,
            human_bytes(i.size),
            i.modified,
            i.not_ready.as_deref().unwrap_or("ready")
        );
    }
    if items.iter().any(|i| i.not_ready.is_none()) {
        println!(
            "stage one with: upkeep stage --root {} --inbox NAME",
            inst.root.display()
        );
    }
    Ok(0)
}

/// A progress bar on a terminal, nothing otherwise.
fn show_progress(p: &Arc<Progress>) -> Option<std::thread::JoinHandle<()>> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let p = p.clone();
    Some(std::thread::spawn(move || {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:30} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        while !p.finished.load(Ordering::Relaxed) {
            let s = p.snapshot();
            bar.set_length(s.bytes_total);
            bar.set_position(s.bytes_done);
            bar.set_message(s.phase);
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        bar.finish_and_clear();
    }))
}

fn keygen(out: &Path, force: bool) -> Result<u8> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let pub_path = out.with_file_name(format!(
        "{}.pub",
        out.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    if !force && (out.exists() || pub_path.exists()) {
        return Err(Error::refused(
            format!("{} already exists", out.display()),
            "choose another --out, or pass --force to replace it",
        ));
    }
    let key = SecretKey::generate()?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(out)
        .ctx("create", out)?;
    writeln!(f, "{}", key.to_text()).ctx("write", out)?;
    std::fs::write(&pub_path, format!("{}\n", key.public().to_text())).ctx("write", &pub_path)?;
    let public = PublicKey::parse(&key.public().to_text())?;
    println!("secret key: {} (keep it private)", out.display());
    println!(
        "public key: {} (key id {})",
        pub_path.display(),
        public.key_id()
    );
    println!("{}", public.to_text());
    Ok(0)
}

fn serve_reference(repo: &Path, listen: &str) -> Result<u8> {
    if !repo.is_dir() {
        return Err(Error::refused(
            format!("{} is not a folder", repo.display()),
            "publish a release into it first with `upkeep publish`",
        ));
    }
    let sys = actix_web::rt::System::new();
    sys.block_on(async {
        let (server, addr) =
            reference::serve::start(repo, listen).ctx("listen on", Path::new(listen))?;
        println!("serving {} on http://{addr}/", repo.display());
        use std::io::Write;
        let _ = std::io::stdout().flush();
        server.await.ctx("serve", repo)
    })?;
    Ok(0)
}
