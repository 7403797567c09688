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
use upkeep::update::{self, Plan, Run, swap::Kind, tasks::Decision};
use upkeep::{check, fingerprint, init, reference, stage};

/// `check` found an update.
const EXIT_UPDATE: u8 = 10;
/// Another run holds the lock.
const EXIT_BUSY: u8 = 75;

fn main() -> ExitCode {
    // glibc raises its mmap threshold after each large block is freed, after which blocks of
    // up to 32 MB come from the heap and stay counted against the process once freed. Staging
    // a release of 100,000 files frees several such blocks (manifests, the fingerprint cache)
    // one after another; a fixed threshold of 4 MB gives those back (about 15% of the peak),
    // while buffers below it stay on the heap: at 256 KB, every response of the reference
    // server with a 640 KB manifest paid an mmap and its page faults (half the requests/s).
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; called before any thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
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
    emit(&format!(
        "{}\n",
        serde_json::to_string_pretty(v).expect("report types serialise")
    ));
}

/// Write to stdout; a reader that went away (`upkeep fingerprint DIR | head`) ends the command
/// quietly, as it does for coreutils, instead of a panic.
fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to standard output: {e}");
        std::process::exit(1);
    }
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
            admin_password_file,
            json,
        } => {
            let key_text =
                std::fs::read_to_string(&public_key).ctx("read public key", &public_key)?;
            let admin = match &admin_password_file {
                Some(f) => Some(
                    std::fs::read_to_string(f)
                        .ctx("read", f)?
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                ),
                None => None,
            };
            let r = init::init(&init::InitOptions {
                root: &root,
                reference: &reference,
                public_key: &key_text,
                installed: installed.as_deref(),
                admin_password: admin.as_deref(),
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
                if let Some(pw) = &r.admin_password {
                    println!(
                        "control panel account: admin, password: {pw}  (shown once; change it with `upkeep user passwd admin`)"
                    );
                }
                println!("next: upkeep check --root {}", r.root.display());
            }
            Ok(0)
        }
        Command::Fingerprint { dir, json } => {
            let (entries, skipped) = fingerprint::fingerprint_dir(&dir, json)?;
            if json {
                print_json(&entries);
            } else {
                let mut out = String::with_capacity(entries.len() * 80);
                for e in &entries {
                    // md5sum's layout; built by hand because it runs once per file.
                    e.md5.push_hex(&mut out);
                    let size = e.size.to_string();
                    out.push_str("  ");
                    out.push_str(&" ".repeat(10usize.saturating_sub(size.len())));
                    out.push_str(&size);
                    out.push_str("  ");
                    out.push_str(e.path.as_str());
                    out.push('\n');
                }
                emit(&out);
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
        Command::Update {
            root,
            yes,
            keep_modified,
            json,
        } => {
            let inst = Instance::open(&root.root)?;
            let progress = Progress::default();
            let interactive = std::io::stdin().is_terminal();
            let confirm = |plan: &Plan| {
                if json {
                    eprintln!(
                        "{}",
                        serde_json::to_string_pretty(plan).expect("serialises")
                    );
                } else {
                    print_plan(plan);
                }
                if yes {
                    return true;
                }
                if !interactive {
                    eprintln!(
                        "not applied: no terminal to confirm on; pass --yes to apply without a question"
                    );
                    return false;
                }
                eprint!("apply this update? the site will be closed during the swap [y/N] ");
                let mut answer = String::new();
                let _ = std::io::stdin().read_line(&mut answer);
                matches!(answer.trim(), "y" | "Y" | "yes")
            };
            let on_step = |step: &str, ms: Option<u64>| step_line(json, step, ms);
            let opts = update::Options {
                keep_modified,
                confirm: &confirm,
                on_step: &on_step,
                decision: Decision::Ask,
                progress: &progress,
            };
            match update::update(&inst, &opts)? {
                None => Err(Error::refused(
                    "update not applied",
                    "run it again and answer y, or pass --yes",
                )),
                Some(run) => {
                    finished_run(json, &run);
                    Ok(0)
                }
            }
        }
        Command::Status { root, json } => {
            let inst = Instance::open(&root.root)?;
            let st = update::status(&inst)?;
            if json {
                print_json(&st);
            } else {
                print_status(&st);
            }
            Ok(0)
        }
        Command::Resume {
            root,
            rerun_task,
            skip_task,
            json,
        } => {
            let inst = Instance::open(&root.root)?;
            let progress = Progress::default();
            let on_step = |step: &str, ms: Option<u64>| step_line(json, step, ms);
            let decision = if rerun_task {
                Decision::Rerun
            } else if skip_task {
                Decision::Skip
            } else {
                Decision::Ask
            };
            let opts = update::Options {
                keep_modified: false,
                confirm: &|_| true,
                on_step: &on_step,
                decision,
                progress: &progress,
            };
            let run = update::resume(&inst, &opts)?;
            finished_run(json, &run);
            Ok(0)
        }
        Command::Rollback { root, json } => {
            let inst = Instance::open(&root.root)?;
            let run = update::rollback(&inst)?;
            if json {
                print_json(&run);
            } else {
                println!(
                    "rolled back run {}: release {} is installed again; the site is open",
                    run.id,
                    run.from.as_deref().unwrap_or("(none: fresh instance)")
                );
            }
            Ok(0)
        }
        Command::Close { root, message } => {
            let inst = Instance::open(&root.root)?;
            let c = update::gate::close(&inst, &message, None)?;
            println!(
                "closed since {}: visitors get 503 and {}",
                c.since,
                update::gate::page_path(&inst).display()
            );
            Ok(0)
        }
        Command::Open { root } => {
            let inst = Instance::open(&root.root)?;
            if let Some(r) = upkeep::state::State::open(&inst.state_db())
                .ok()
                .and_then(|s| update::unfinished(&s).ok().flatten())
            {
                eprintln!(
                    "warning: run {} is unfinished (step {}); opening shows visitors a half-updated site",
                    r.id, r.step
                );
            }
            update::gate::open(&inst)?;
            println!("open");
            Ok(0)
        }
        Command::Serve { root, listen } => serve_site(&root.root, &listen),
        Command::User(cli::UserCommand::Add { name, root }) => {
            let inst = Instance::open(&root.root)?;
            let pw = read_new_password(&name)?;
            upkeep::panel::auth::add(&upkeep::state::State::open(&inst.state_db())?, &name, &pw)?;
            println!("account {name} created");
            Ok(0)
        }
        Command::User(cli::UserCommand::Passwd { name, root }) => {
            let inst = Instance::open(&root.root)?;
            let pw = read_new_password(&name)?;
            upkeep::panel::auth::passwd(
                &upkeep::state::State::open(&inst.state_db())?,
                &name,
                &pw,
            )?;
            println!("password of {name} changed; its sessions were ended");
            Ok(0)
        }
        Command::Demo { listen, dir } => upkeep::demo::run(&listen, dir.as_deref()).map(|_| 0),
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

fn step_line(json: bool, step: &str, ms: Option<u64>) {
    if json {
        return;
    }
    match ms {
        None => eprint!("{step:<10} ..."),
        Some(ms) => eprintln!(" ok ({ms} ms)"),
    }
}

fn finished_run(json: bool, run: &Run) {
    if json {
        print_json(run);
        return;
    }
    if run.status == "done" && run.error.is_none() {
        println!(
            "updated {} -> {}; the site was closed for {} ms",
            run.from.as_deref().unwrap_or("(fresh)"),
            run.to,
            run.closed_ms.unwrap_or_default()
        );
    } else {
        println!("run {} is {} at step {}", run.id, run.status, run.step);
    }
}

fn print_plan(plan: &Plan) {
    println!(
        "plan: {} -> {} ({} to install)",
        plan.from.as_deref().unwrap_or("(fresh)"),
        plan.to,
        human_bytes(plan.bytes)
    );
    let section = |title: &str, items: Vec<String>| {
        if !items.is_empty() {
            println!("{title} ({}):", items.len());
            for i in items.iter().take(100) {
                println!("  {i}");
            }
            if items.len() > 100 {
                println!("  ... and {} more", items.len() - 100);
            }
        }
    };
    let modified: Vec<String> = plan
        .actions
        .iter()
        .filter(|a| a.modified)
        .map(|a| match a.kind {
            Kind::Keep => format!("{} (kept as it is: --keep-modified)", a.path),
            Kind::Remove => format!(
                "{} (your version kept as {}.bak; removed by the release)",
                a.path, a.path
            ),
            _ => format!("{} (your version kept as {}.bak)", a.path, a.path),
        })
        .collect();
    section("locally modified", modified);
    section(
        "add",
        plan.of(Kind::Add).iter().map(|p| p.to_string()).collect(),
    );
    section(
        "replace",
        plan.of(Kind::Replace)
            .iter()
            .map(|p| p.to_string())
            .collect(),
    );
    section(
        "remove",
        plan.of(Kind::Remove)
            .iter()
            .map(|p| p.to_string())
            .collect(),
    );
    section("run_once tasks", plan.tasks.clone());
    section("schema changes", plan.schema.statements.clone());
    section(
        "database objects not in the schema (kept)",
        plan.schema.extra.clone(),
    );
}

fn print_status(st: &update::Status) {
    println!("installed: {}", st.installed.as_deref().unwrap_or("none"));
    match &st.gate {
        Some(c) => println!("gate:      CLOSED since {} ({})", c.since, c.message),
        None => println!("gate:      open"),
    }
    if let Some((when, latest)) = &st.last_check {
        println!("last check: {when} (latest {latest})");
    }
    if let Some(s) = &st.staged {
        println!(
            "staged:    {} from {} ({} files, {})",
            s.version,
            s.source,
            s.files,
            human_bytes(s.bytes)
        );
    }
    if let Some(r) = &st.current {
        println!(
            "current run: {} ({} -> {}) {} at step {}",
            r.id,
            r.from.as_deref().unwrap_or("fresh"),
            r.to,
            r.status,
            r.step
        );
        if let Some(e) = &r.error {
            println!("  error: {e}");
        }
        println!("  next: `upkeep resume` to continue, or `upkeep rollback` to go back");
    }
    if let Some(r) = st
        .history
        .iter()
        .find(|r| st.current.as_ref().is_none_or(|c| c.id != r.id))
    {
        println!(
            "last run:  {} ({} -> {}) {}{}",
            r.id,
            r.from.as_deref().unwrap_or("fresh"),
            r.to,
            r.status,
            r.closed_ms
                .map(|ms| format!(", closed {ms} ms"))
                .unwrap_or_default()
        );
    }
    for e in &st.extensions {
        println!(
            "extension: {} {} ({})",
            e.name,
            e.version,
            if e.path.is_empty() { "/" } else { &e.path }
        );
    }
    for t in &st.pending_tasks {
        println!("pending task: {t}");
    }
}

fn serve_site(root: &Path, listen: &str) -> Result<u8> {
    let inst = Instance::open(root)?;
    let sys = actix_web::rt::System::new();
    sys.block_on(async {
        let (server, addr) =
            upkeep::panel::start(inst, listen).ctx("listen on", Path::new(listen))?;
        println!("serving the site on http://{addr}/ (control panel: http://{addr}/control)");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        server.await.ctx("serve", root)
    })?;
    Ok(0)
}

/// A new password: asked twice on a terminal, one line of standard input otherwise.
fn read_new_password(name: &str) -> Result<String> {
    if std::io::stdin().is_terminal() {
        let a = rpassword::prompt_password(format!("new password for {name}: "))
            .map_err(|e| Error::msg(e.to_string()))?;
        let b = rpassword::prompt_password("again: ").map_err(|e| Error::msg(e.to_string()))?;
        if a != b {
            return Err(Error::refused(
                "the two passwords differ",
                "run the command again",
            ));
        }
        Ok(a)
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| Error::msg(e.to_string()))?;
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    }
}
