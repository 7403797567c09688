//! One function per command: open what it needs, call the library, print the result (through
//! `print.rs`), return the exit code.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use upkeep::config::Instance;
use upkeep::error::{Error, IoContext, Result, exit};
use upkeep::fsutil::human_bytes;
use upkeep::manifest::plan::Plan;
use upkeep::manifest::{PublicKey, SecretKey};
use upkeep::progress::Progress;
use upkeep::state::{State, Step};
use upkeep::update::{self, tasks::Decision};
use upkeep::{
    accounts, check as check_mod, fingerprint as fp, init as init_mod, reference,
    stage as stage_mod,
};

use crate::print::{
    emit, finished_run, list_inbox, print_json, print_list, print_plan, print_status,
    show_progress, step_line, still_closed,
};

/// `upkeep keygen`.
pub fn keygen(out: &Path, role: crate::cli::KeyRole, force: bool) -> Result<u8> {
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
    match role {
        crate::cli::KeyRole::Release => println!(
            "this is a release key: it signs manifests; keep the secret offline, give {} to sites (`upkeep init --public-key`)",
            pub_path.display()
        ),
        crate::cli::KeyRole::Online => println!(
            "this is an online key: delegate it with the release key (`upkeep delegate --repo REPO --key RELEASE_KEY --online-key-pub {}`), then it signs channel pointers (`upkeep promote`, `upkeep rollout`)",
            pub_path.display()
        ),
    }
    Ok(0)
}

/// `upkeep delegate`: the release key names the online keys.
pub fn delegate(
    repo: &Path,
    key: &Path,
    online: &[std::path::PathBuf],
    expires: std::time::Duration,
) -> Result<u8> {
    let release = SecretKey::load(key)?;
    let keys = online
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).ctx("read public key", p)?;
            PublicKey::parse(&text)
        })
        .collect::<Result<Vec<_>>>()?;
    let d = upkeep::fleet::rollout::delegate(repo, &release, &keys, expires)?;
    println!(
        "delegated {} online key(s) ({}) until {}: {}",
        keys.len(),
        keys.iter()
            .map(|k| k.key_id())
            .collect::<Vec<_>>()
            .join(", "),
        d.expires,
        repo.join(upkeep::fleet::channel::DELEGATION).display()
    );
    Ok(0)
}

fn print_rollout(p: &upkeep::fleet::channel::ChannelPointer) {
    let waves: Vec<String> = p
        .waves
        .iter()
        .enumerate()
        .map(|(i, w)| {
            if i == p.wave {
                format!("[{w}]")
            } else {
                w.to_string()
            }
        })
        .collect();
    println!(
        "channel {}: release {} ({:?}{}), waves {}",
        p.channel,
        p.release,
        p.state,
        p.reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default(),
        waves.join(" → ")
    );
    println!(
        "  sites outside the waves so far stay on: {}",
        p.previous
            .as_ref()
            .map(|x| x.release.as_str())
            .unwrap_or("nothing (they are offered nothing yet)")
    );
    println!(
        "  rules: at least {} in a wave, {} successful report(s), halt at {} failures; signed {}, valid until {}",
        humantime::format_duration(std::time::Duration::from_secs(p.every_secs)),
        p.min_reports,
        p.halt_on_failure,
        p.date,
        p.expires
    );
}

/// `upkeep promote`.
pub fn promote(p: &upkeep::fleet::rollout::Promote, json: bool) -> Result<u8> {
    let ptr = upkeep::fleet::rollout::promote(p)?;
    if json {
        print_json(&ptr);
    } else {
        print_rollout(&ptr);
    }
    Ok(0)
}

/// `upkeep rollout ...`.
pub fn rollout(action: crate::cli::RolloutAction) -> Result<u8> {
    use crate::cli::RolloutAction as A;
    use upkeep::fleet::rollout::{Move, read_channel, rollout as mv};
    let (ch, key, m) = match action {
        A::Status { ch, json } => {
            let Some(p) = read_channel(&ch.repo, &ch.channel)? else {
                return Err(Error::refused(
                    format!(
                        "channel {} does not exist in {}",
                        ch.channel,
                        ch.repo.display()
                    ),
                    "start it with `upkeep promote VERSION --channel NAME ...`",
                ));
            };
            if json {
                print_json(&p);
            } else {
                print_rollout(&p);
            }
            return Ok(0);
        }
        A::Advance { ch, key } => (ch, key, Move::Advance),
        A::Pause { ch, key, reason } => (ch, key, Move::Pause(reason)),
        A::Resume { ch, key } => (ch, key, Move::Resume),
        A::Halt { ch, key, reason } => (ch, key, Move::Halt(reason)),
        A::Refresh { ch, key, expires } => (ch, key, Move::Refresh(expires)),
    };
    let key = SecretKey::load(&key)?;
    let p = mv(&ch.repo, &ch.channel, &key, &m)?;
    print_rollout(&p);
    Ok(0)
}

/// `upkeep publish`.
pub fn publish(
    dir: &Path,
    version: &str,
    repo: &Path,
    key: &Path,
    notes: &str,
    (expires, urgent, shrink): (u64, bool, reference::publish::Shrink),
    json: bool,
) -> Result<u8> {
    let key = SecretKey::load(key)?;
    let p = reference::publish::publish(&reference::publish::Publish {
        dir,
        version,
        repo,
        key: &key,
        notes,
        expires_days: expires,
        urgent,
        shrink,
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
        let f = &p.forms;
        for (what, n, whole, small) in [
            (
                "compressed objects",
                f.compressed,
                f.compressed_raw,
                f.compressed_bytes,
            ),
            ("deltas", f.deltas, f.delta_whole, f.delta_bytes),
        ] {
            if n > 0 {
                println!(
                    "{what}: {n}, {} whole -> {} ({:.0}% saved)",
                    human_bytes(whole),
                    human_bytes(small),
                    100.0 - 100.0 * small as f64 / whole.max(1) as f64
                );
            }
        }
        if f.too_large > 0 {
            println!(
                "no delta for {} changed files larger than --delta-max (sites fetch them compressed or whole)",
                f.too_large
            );
        }
        if f.compressed + f.deltas > 0 {
            println!(
                "smaller forms: {} more on disk, {:.1} s",
                human_bytes(f.disk_added),
                f.seconds
            );
        }
    }
    Ok(0)
}

/// `upkeep reference`.
/// A mirror that syncs when triggered (`reference --mirror-from`).
pub struct LeafArgs<'a> {
    pub from: &'a str,
    pub public_key: &'a Path,
    pub trigger_keys: &'a [std::path::PathBuf],
    pub downstream: Option<&'a Path>,
    pub downstream_key: Option<&'a Path>,
    pub zips: bool,
}

fn read_public(p: &Path) -> Result<PublicKey> {
    PublicKey::parse(&std::fs::read_to_string(p).ctx("read public key", p)?)
}

/// The leaves to trigger after a sync, and the key to sign with.
fn downstream_of(
    file: Option<&Path>,
    key: Option<&Path>,
) -> Result<(Vec<upkeep::trigger::Receiver>, Option<SecretKey>)> {
    match (file, key) {
        (Some(f), Some(k)) => Ok((
            upkeep::mirror::leaf::read_downstream(f)?,
            Some(SecretKey::load(k)?),
        )),
        (None, None) => Ok((Vec::new(), None)),
        _ => Err(Error::refused(
            "--downstream and --downstream-key go together",
            "give the list of leaves and the trigger key that signs for them",
        )),
    }
}

pub fn reference(
    repo: &Path,
    listen: &str,
    fleet_db: Option<&Path>,
    online_key: Option<&Path>,
    (silent_after, tick): (std::time::Duration, std::time::Duration),
    leaf: Option<LeafArgs>,
) -> Result<u8> {
    if leaf.is_some() {
        std::fs::create_dir_all(repo).ctx("create folder", repo)?;
    }
    if !repo.is_dir() {
        return Err(Error::refused(
            format!("{} is not a folder", repo.display()),
            "publish a release into it first with `upkeep publish`",
        ));
    }
    let db_path = fleet_db.map(Path::to_path_buf).unwrap_or_else(|| {
        upkeep::fleet::db::default_path(&repo.canonicalize().unwrap_or(repo.to_path_buf()))
    });
    let db_path = fleet_db_outside(repo, &db_path)?;
    let pilot = match online_key {
        Some(k) => Some(upkeep::fleet::pilot::Pilot {
            repo: repo.canonicalize().ctx("open", repo)?,
            key: SecretKey::load(k)?,
            silent_after,
        }),
        None => None,
    };
    let extra: Option<reference::serve::ExtraRoutes> = match &leaf {
        None => None,
        Some(l) => {
            let keys = l
                .trigger_keys
                .iter()
                .map(|p| read_public(p))
                .collect::<Result<Vec<_>>>()?;
            let (downstream, downstream_key) = downstream_of(l.downstream, l.downstream_key)?;
            let leaf = std::sync::Arc::new(
                upkeep::mirror::leaf::Leaf::new(
                    l.from.to_string(),
                    repo.canonicalize().ctx("open", repo)?,
                    read_public(l.public_key)?,
                    keys,
                    downstream,
                    downstream_key,
                    upkeep::fleet::db::FleetDb::open(&db_path)?,
                )
                .with_zips(l.zips),
            );
            // A first sync at start: a leaf that was down catches up without a trigger.
            let first = leaf.clone();
            std::thread::spawn(move || first.run());
            Some(std::sync::Arc::new(upkeep::mirror::leaf::configure(leaf)))
        }
    };
    // The files are served whatever happens to the fleet database: sites update without it.
    let fleet = match upkeep::fleet::db::FleetDb::open(&db_path) {
        Ok(db) => Some((db, pilot)),
        Err(e) => {
            eprintln!("warning: no fleet endpoints (site enrolment and reports): {e}");
            None
        }
    };
    let sys = actix_web::rt::System::new();
    sys.block_on(async {
        let on = fleet.is_some();
        let (server, addr) = reference::serve::start(repo, listen, fleet, tick, extra)
            .ctx("listen on", Path::new(listen))?;
        println!("serving {} on http://{addr}/", repo.display());
        if on {
            eprintln!("fleet database: {}", db_path.display());
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
        server.await.ctx("serve", repo)
    })?;
    Ok(0)
}

/// The fleet database must not be a file the repository serves or mirrors.
fn fleet_db_outside(repo: &Path, db: &Path) -> Result<std::path::PathBuf> {
    let repo = repo.canonicalize().ctx("open", repo)?;
    let parent = db
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = parent.canonicalize().ctx("open", parent)?;
    if dir.starts_with(&repo) {
        return Err(Error::refused(
            format!(
                "the fleet database {} would be inside the repository",
                db.display()
            ),
            "put it beside the repository (the default is REPO.fleet.db), never inside it",
        ));
    }
    Ok(dir.join(db.file_name().unwrap_or_default()))
}

/// What `upkeep init` was given.
pub struct InitArgs<'a> {
    pub root: &'a Path,
    pub reference: &'a str,
    pub public_key: &'a Path,
    pub installed: Option<&'a str>,
    pub admin_password_file: Option<&'a Path>,
    pub pending_tasks: bool,
    pub name: Option<&'a str>,
    pub groups: &'a [String],
    pub channel: Option<&'a str>,
    pub enroll: Option<&'a str>,
    pub url: Option<&'a str>,
    pub json: bool,
}

pub fn init(a: &InitArgs) -> Result<u8> {
    let InitArgs {
        root,
        reference,
        public_key,
        installed,
        admin_password_file,
        pending_tasks,
        name,
        groups,
        channel,
        enroll,
        url,
        json,
    } = *a;
    let key_text = std::fs::read_to_string(public_key).ctx("read public key", public_key)?;
    let admin = match admin_password_file {
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
    let r = init_mod::init(&init_mod::InitOptions {
        root,
        reference,
        public_key: &key_text,
        installed,
        admin_password: admin.as_deref(),
        pending_tasks,
        name,
        groups,
        channel,
        url,
    })?;
    if json {
        print_json(&r);
    } else {
        println!("initialised instance {}", r.root.display());
        match &r.identified {
            init_mod::Identified::Given { version } => {
                println!("installed release: {version} (as given)")
            }
            init_mod::Identified::Fresh => {
                println!("the folder is empty: the next update installs the latest release")
            }
            init_mod::Identified::Exact { version } => {
                println!("installed release: {version} (every file matches)")
            }
            init_mod::Identified::Closest {
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
            init_mod::Identified::Unknown => {
                println!(
                    "no published release shares a file with this tree; the next update treats every file as new"
                );
                println!("if you know the release, run init again with --installed V");
            }
        }
        if !r.tasks_marked_done.is_empty() {
            println!(
                "marked done (they ran when the site was installed; `init --pending-tasks` leaves them pending):"
            );
            for t in &r.tasks_marked_done {
                println!("  {t}.done");
            }
        }
        if let Some(pw) = &r.admin_password {
            println!(
                "control panel account: admin, password: {pw}  (shown once; change it with `upkeep user passwd admin`)"
            );
        }
        println!(
            "site id: {} (channel {}{})",
            r.site.id,
            r.site.channel,
            if r.site.groups.is_empty() {
                String::new()
            } else {
                format!(", groups {}", r.site.groups.join(", "))
            }
        );
        println!("next: upkeep check --root {}", r.root.display());
    }
    if let Some(token) = enroll {
        let inst = Instance::open(&r.root)?;
        upkeep::fleet::report::enroll(&inst, token)?;
        if !json {
            println!(
                "enrolled with {}: reports go there after every run",
                inst.config.reference
            );
        }
    }
    Ok(0)
}

/// `upkeep trigger`: send one, or take one as an SSH forced command.
pub fn trigger(
    root: Option<&Path>,
    url: Option<&str>,
    key: Option<&Path>,
    target: &str,
) -> Result<u8> {
    if let (Some(url), Some(key)) = (url, key) {
        let key = SecretKey::load(key)?;
        let (body, sig) = upkeep::trigger::make(&key, target)?;
        let to = format!("{}/trigger", url.trim_end_matches('/'));
        let (status, text) = upkeep::reference::client::block_on(async {
            let r = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .map_err(|e| e.to_string())?
                .post(&to)
                .header(upkeep::trigger::SIGNATURE_HEADER, sig.trim())
                .body(body)
                .send()
                .await
                .map_err(|e| upkeep::reference::client::describe(&e))?;
            let s = r.status();
            Ok::<_, String>((s, r.text().await.unwrap_or_default()))
        })
        .map_err(|reason| Error::Network {
            url: to.clone(),
            reason,
        })?;
        println!("{to}: {status}: {}", text.trim());
        return Ok(if status.as_u16() == 202 {
            0
        } else {
            exit::FAILED
        });
    }
    let Some(root) = root else {
        return Err(Error::refused(
            "nothing to do: give --url and --key to send a trigger, or --root DIR to take one",
            "see `upkeep trigger --help`",
        ));
    };
    let asked = std::env::var("SSH_ORIGINAL_COMMAND").ok();
    if !upkeep::trigger::ssh_command_ok(asked.as_deref()) {
        eprintln!(
            "refused: this key may only trigger an update pass; SSH_ORIGINAL_COMMAND must be empty or one of {}",
            upkeep::trigger::SSH_WORDS.join(", ")
        );
        return Ok(exit::CONFIG);
    }
    auto(root, false, false)
}

/// `upkeep push`.
pub fn push(
    repo: &Path,
    fleet_db: Option<&Path>,
    class: upkeep::fleet::push::Class,
    key: &Path,
    (wait, timeout): (bool, std::time::Duration),
    json: bool,
) -> Result<u8> {
    use upkeep::fleet::push;
    if class.group.is_none() && class.channel.is_none() && class.site.is_none() {
        return Err(Error::refused(
            "push to whom? give --group G, --channel C or --site NAME",
            "a push reaches every enrolled site of that class at once",
        ));
    }
    let key = SecretKey::load(key)?;
    let p = match fleet_db {
        Some(p) => p.to_path_buf(),
        None => upkeep::fleet::db::default_path(&repo.canonicalize().ctx("open", repo)?),
    };
    let db = upkeep::fleet::db::FleetDb::open(&fleet_db_outside(repo, &p)?)?;
    let answers = push::push(&db, &key, &class)?;
    if answers.is_empty() {
        return Err(Error::refused(
            "no enrolled site is in that class",
            "see `upkeep fleet status --repo REPO`",
        ));
    }
    let started = answers.iter().filter(|a| a.started()).count();
    if !json {
        for a in &answers {
            println!(
                "{:<24} {}",
                a.site,
                match a.status {
                    Some(s) => format!("{s} {}", a.text),
                    None => format!("not reached: {}", a.text),
                }
            );
        }
        println!("triggered {started} of {} site(s)", answers.len());
    }
    let mut results = Vec::new();
    if wait && started > 0 {
        results = push::wait(&db, &answers, timeout, &|n, of| {
            if !json {
                eprint!("\rreported: {n} of {of}   ");
            }
        })?;
        if !json {
            eprintln!();
            for (name, row) in &results {
                match row.as_ref().and_then(|r| r.last.as_ref()) {
                    Some(r) => println!(
                        "{name:<24} {:<12} {} {}",
                        r.outcome.word(),
                        r.installed.as_deref().unwrap_or("-"),
                        r.reason.chars().take(100).collect::<String>()
                    ),
                    None => println!(
                        "{name:<24} no report within {}",
                        humantime::format_duration(timeout)
                    ),
                }
            }
        }
    }
    if json {
        print_json(&serde_json::json!({
            "answers": answers,
            "reports": results.iter().map(|(n, r)| serde_json::json!({"site": n, "report": r.as_ref().and_then(|r| r.last.clone())})).collect::<Vec<_>>(),
        }));
    }
    let all_reported = results.iter().all(|(_, r)| r.is_some());
    Ok(if started == answers.len() && (!wait || all_reported) {
        0
    } else {
        exit::FAILED
    })
}

/// `upkeep mirror`.
pub fn mirror(
    from: &str,
    to: &Path,
    public_key: &Path,
    (keep, zips): (usize, bool),
    (downstream, downstream_key): (Option<&Path>, Option<&Path>),
    json: bool,
) -> Result<u8> {
    let key = read_public(public_key)?;
    let (leaves, leaf_key) = downstream_of(downstream, downstream_key)?;
    let progress = std::sync::Arc::new(Progress::default());
    let s = upkeep::mirror::sync(&upkeep::mirror::Mirror {
        from,
        to,
        key: &key,
        keep,
        zips,
        net: upkeep::config::Network::default(),
        progress,
    })?;
    // After a complete sync that changed something, the leaves below are told at once.
    let answers = match &leaf_key {
        Some(k) if !(s.unchanged && s.new_objects == 0) => {
            upkeep::mirror::leaf::trigger_leaves(k, &leaves)
        }
        _ => Vec::new(),
    };
    if json {
        print_json(&serde_json::json!({ "sync": s, "downstream": answers }));
    } else if s.unchanged && s.new_objects == 0 {
        println!(
            "mirror of {from} is up to date: release {} ({} releases)",
            s.latest, s.releases
        );
    } else {
        println!(
            "mirrored {from} into {}: release {} ({} releases), {} new objects ({}){}{}{}",
            to.display(),
            s.latest,
            s.releases,
            s.new_objects,
            human_bytes(s.new_bytes),
            if s.zips > 0 {
                format!(", {} release zips", s.zips)
            } else {
                String::new()
            },
            if s.channels.is_empty() {
                String::new()
            } else {
                format!(", channels {}", s.channels.join(", "))
            },
            if s.pruned > 0 {
                format!(", {} objects pruned", s.pruned)
            } else {
                String::new()
            }
        );
        for a in &answers {
            println!(
                "leaf {}: {}",
                a.label,
                a.status
                    .map(|st| format!("{st} {}", a.text))
                    .unwrap_or_else(|| format!("not reached: {}", a.text))
            );
        }
    }
    Ok(if answers.iter().all(|a| a.started()) {
        0
    } else {
        exit::FAILED
    })
}

/// `upkeep enroll`.
pub fn enroll(root: &Path, token: &str) -> Result<u8> {
    let inst = Instance::open(root)?;
    let me = upkeep::fleet::report::enroll(&inst, token)?;
    println!(
        "enrolled site {} with {}: reports go there after every run and every unattended pass",
        me.id, inst.config.reference
    );
    Ok(0)
}

/// `upkeep fleet ...`.
pub fn fleet(action: crate::cli::FleetAction) -> Result<u8> {
    use crate::cli::FleetAction as A;
    use upkeep::fleet::db::{FleetDb, counters, default_path};
    let open = |repo: &Path, db: &Option<std::path::PathBuf>| -> Result<FleetDb> {
        let p = match db {
            Some(p) => p.clone(),
            None => default_path(&repo.canonicalize().ctx("open", repo)?),
        };
        FleetDb::open(&fleet_db_outside(repo, &p)?)
    };
    match action {
        A::User {
            name,
            repo,
            fleet_db,
            passwd,
        } => {
            let db = open(&repo, &fleet_db)?;
            let pw = read_new_password(&name)?;
            if passwd {
                accounts::passwd(&db, &name, &pw)?;
                println!("password of {name} changed; its sessions were ended");
            } else {
                accounts::add(&db, &name, &pw)?;
                println!(
                    "fleet page account {name} created: log in at /fleet on the reference server"
                );
            }
            Ok(0)
        }
        A::Token {
            repo,
            fleet_db,
            uses,
            expires,
        } => {
            let db = open(&repo, &fleet_db)?;
            let t = db.new_token(uses, expires.as_secs())?;
            println!("{t}");
            eprintln!(
                "valid for {} site(s) during {}: on each site, `upkeep enroll --root DIR {t}` (or `upkeep init ... --enroll {t}`)",
                uses,
                humantime::format_duration(expires)
            );
            Ok(0)
        }
        A::Status {
            repo,
            fleet_db,
            group,
            channel,
            silent_after,
            json,
        } => {
            let db = open(&repo, &fleet_db)?;
            let rows: Vec<_> = db
                .sites()?
                .into_iter()
                .filter(|s| group.as_ref().is_none_or(|g| s.groups.contains(g)))
                .filter(|s| channel.as_ref().is_none_or(|c| &s.channel == c))
                .collect();
            // Per channel: the release it rolls out and the sites' counters for it.
            let mut channels: Vec<String> = rows.iter().map(|s| s.channel.clone()).collect();
            channels.sort();
            channels.dedup();
            let mut per = Vec::new();
            for c in &channels {
                let ptr = upkeep::fleet::rollout::read_channel(&repo, c)
                    .ok()
                    .flatten();
                let release = ptr.as_ref().map(|p| p.release.clone()).or_else(|| {
                    upkeep::reference::publish::latest_version(&repo)
                        .ok()
                        .flatten()
                });
                if let Some(r) = release {
                    let on: Vec<_> = rows.iter().filter(|s| &s.channel == c).collect();
                    per.push(serde_json::json!({
                        "channel": c,
                        "release": r,
                        "rollout": ptr.as_ref().map(|p| serde_json::json!({
                            "state": p.state, "wave": p.wave + 1, "waves": p.waves.iter().map(|w| w.to_string()).collect::<Vec<_>>(),
                        })),
                        "counters": counters(&r, &on, silent_after.as_secs() as i64),
                    }));
                }
            }
            if json {
                #[derive(serde::Serialize)]
                struct Out<'a> {
                    sites: &'a [upkeep::fleet::db::SiteRow],
                    releases: &'a [serde_json::Value],
                }
                print_json(&Out {
                    sites: &rows,
                    releases: &per,
                });
                return Ok(0);
            }
            println!(
                "{:<20} {:<14} {:<8} {:<9} {:<12} {:<10} {:>8}",
                "site", "groups", "channel", "version", "last", "seen", "closed"
            );
            for s in &rows {
                let last = s.last.as_ref();
                println!(
                    "{:<20} {:<14} {:<8} {:<9} {:<12} {:<10} {:>8}",
                    s.name.chars().take(20).collect::<String>(),
                    s.groups.join(","),
                    s.channel,
                    s.version.as_deref().unwrap_or("-"),
                    last.map(|r| r.outcome.word()).unwrap_or("-"),
                    s.last_seen_secs
                        .map(|t| format!(
                            "{} ago",
                            humantime::format_duration(std::time::Duration::from_secs(
                                t.max(0) as u64
                            ))
                        ))
                        .unwrap_or_else(|| "never".into()),
                    last.and_then(|r| r.closed_ms)
                        .map(|ms| format!("{ms} ms"))
                        .unwrap_or_else(|| "-".into()),
                );
            }
            for p in &per {
                println!(
                    "channel {} release {}: {}",
                    p["channel"].as_str().unwrap_or_default(),
                    p["release"].as_str().unwrap_or_default(),
                    p["counters"]
                );
            }
            Ok(0)
        }
    }
}

/// `upkeep fingerprint`.
pub fn fingerprint(dir: &Path, json: bool) -> Result<u8> {
    let (entries, skipped) = fp::fingerprint_dir(dir, json)?;
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

/// `upkeep check`: exit 10 when an update is available.
pub fn check(root: &Path, json: bool) -> Result<u8> {
    let inst = Instance::open(root)?;
    let (d, latest) = check_mod::check(&inst)?;
    if json {
        print_json(&d);
    } else {
        println!(
            "installed: {}",
            d.installed.as_deref().unwrap_or("none (fresh install)")
        );
        println!("latest:    {} ({})", d.latest, latest.manifest().date);
        if let Some(o) = &d.offer {
            println!("offer:     {o}");
        }
        if !latest.manifest().notes.is_empty() {
            println!("notes:     {}", latest.manifest().notes);
        }
        print_list("locally modified", &d.modified);
        print_list("new", &d.new);
        print_list("changed", &d.changed);
        print_list("removed", &d.removed);
        print_list("excluded by upkeep.toml (never touched)", &d.excluded);
        println!("unchanged: {} files", d.unchanged);
        if d.older {
            println!(
                "the reference's latest release {} is older than the installed {}: nothing to update (staging it needs --allow-downgrade)",
                d.latest,
                d.installed.as_deref().unwrap_or_default()
            );
        } else if d.up_to_date() {
            println!("up to date");
        } else {
            println!(
                "update available: run `upkeep stage --root {} --network` (or --archive, --inbox, --manual)",
                root.display()
            );
        }
    }
    Ok(if d.up_to_date() {
        0
    } else {
        exit::UPDATE_AVAILABLE
    })
}

/// `upkeep stage`: without a source, list the inbox.
pub fn stage(
    root: &Path,
    source: Option<stage_mod::Source>,
    allow_downgrade: bool,
    json: bool,
) -> Result<u8> {
    let inst = Instance::open(root)?;
    let Some(source) = source else {
        return list_inbox(&inst, json);
    };
    let progress = Arc::new(Progress::default());
    let bar = show_progress(&progress);
    let opts = stage_mod::StageOptions {
        allow_downgrade,
        progress: progress.clone(),
    };
    let r = stage_mod::stage(&inst, &source, &opts);
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
        if let Some(f) = r.forms.as_ref().filter(|f| f.whole > 0) {
            println!(
                "fetched {} for {} of files: {} as deltas, {} compressed, {} whole ({:.0}% saved){}",
                human_bytes(f.wire()),
                human_bytes(f.whole),
                human_bytes(f.delta),
                human_bytes(f.compressed),
                human_bytes(f.raw),
                100.0 - 100.0 * f.wire() as f64 / f.whole as f64,
                if f.fell_back > 0 {
                    format!(
                        "; {} smaller forms unusable, fetched another way (first: {})",
                        f.fell_back,
                        f.reasons.first().map(String::as_str).unwrap_or("")
                    )
                } else {
                    String::new()
                }
            );
        }
        if r.moved_aside > 0 {
            println!(
                "{} files in staging/ that this release does not need were moved into {}",
                r.moved_aside,
                inst.state_dir().join("aside").display()
            );
        }
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
        println!("next: upkeep update --root {}", root.display());
    }
    Ok(0)
}

/// `upkeep update`: show the plan with its digest, then apply it after a yes (or with `--yes`,
/// and with `--plan DIGEST` only that plan).
pub fn update(
    root: &Path,
    yes: bool,
    approved: Option<&str>,
    keep_modified: bool,
    json: bool,
) -> Result<u8> {
    let inst = Instance::open(root)?;
    let progress = Progress::default();
    let interactive = std::io::stdin().is_terminal();
    let confirm = |plan: &Plan| {
        if json {
            eprintln!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "digest": plan.digest(),
                    "plan": plan,
                }))
                .expect("serialises")
            );
        } else {
            print_plan(plan);
        }
        if yes {
            return true;
        }
        if !interactive {
            eprintln!(
                "not applied: no terminal to confirm on; to apply exactly this plan, run\n  upkeep update --root {} --yes --plan {}",
                root.display(),
                plan.digest()
            );
            return false;
        }
        eprint!(
            "apply plan {}? the site will be closed during the swap [y/N] ",
            plan.digest()
        );
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        matches!(answer.trim(), "y" | "Y" | "yes")
    };
    let on_step = |step: Step, ms: Option<u64>| step_line(json, step, ms);
    let opts = update::Options {
        keep_modified,
        approved,
        confirm: &confirm,
        on_step: &on_step,
        decision: Decision::Ask,
        progress: &progress,
    };
    let r = reported(&inst, json, || update::update(&inst, &opts));
    if let Err(Error::PlanChanged { .. }) = &r {
        // The refusal is only useful with the plan of now beside it.
        let mut state = State::open(&inst.state_db())?;
        if let Ok((now, _)) = update::prepare(&inst, &mut state, keep_modified) {
            print_plan(&now);
        }
    }
    match r? {
        None => Err(Error::refused(
            "update not applied",
            "run it again and answer y, or pass --yes (with --plan DIGEST for exactly the plan shown)",
        )),
        Some(run) => {
            finished_run(json, &run);
            if !json {
                still_closed(&inst);
            }
            Ok(0)
        }
    }
}

/// Do `work` and tell the reference (enrolled sites) how the run it touched stands.
fn reported<T>(inst: &Instance, json: bool, work: impl FnOnce() -> Result<T>) -> Result<T> {
    let (r, line) = upkeep::fleet::report::around_run(inst, work);
    if let Some(l) = line.filter(|_| !json) {
        eprintln!("{l}");
    }
    r
}

/// `upkeep auto`: one unattended pass; the exit code says what it decided.
pub fn auto(root: &Path, dry_run: bool, json: bool) -> Result<u8> {
    let inst = Instance::open(root)?;
    let p = upkeep::auto::pass(&inst, dry_run)?;
    if json {
        print_json(&p);
        return Ok(p.exit_code());
    }
    println!("{}: {}", p.decision.word(), p.reason);
    for b in &p.busy {
        println!("  busy signal: {}", b.what);
    }
    for m in p.modified.iter().take(50) {
        println!("  modified: {m}");
    }
    for n in &p.notes {
        println!("  note: {n}");
    }
    if let Some(r) = &p.run {
        finished_run(false, r);
    }
    if let Some(n) = &p.next {
        println!("next: {n}");
    }
    if let Some(m) = &p.mail {
        println!("{m}");
    }
    if let Some(r) = &p.report {
        println!("{r}");
    }
    Ok(p.exit_code())
}

/// `upkeep schedule`: print (or install) the timer that runs `upkeep auto` daily.
pub fn schedule(
    root: &Path,
    at: Option<&str>,
    random_delay: std::time::Duration,
    install: bool,
    unit_dir: &Path,
    json: bool,
) -> Result<u8> {
    let inst = Instance::open(root)?;
    let exe = std::env::current_exe().ctx("find", Path::new("the upkeep binary"))?;
    let s = upkeep::auto::schedule::schedule(&inst, &exe, at, random_delay)?;
    if json {
        print_json(&s);
        return Ok(0);
    }
    if !inst.config.auto.enabled {
        eprintln!(
            "note: [auto] enabled = false in {}: the passes will only report that automatic updates are off",
            inst.root.join("upkeep.toml").display()
        );
    }
    if !install {
        println!("# {}/{}.service", unit_dir.display(), s.name);
        println!("{}", s.service);
        println!("# {}/{}.timer", unit_dir.display(), s.name);
        println!("{}", s.timer);
        println!(
            "# then: systemctl daemon-reload && systemctl enable --now {}.timer",
            s.name
        );
        println!(
            "# (or write them with: upkeep schedule --root {} --install)",
            inst.root.display()
        );
        println!();
        println!("# without systemd, this crontab line (crontab -e) runs the same pass daily:");
        println!("{}", s.cron);
        return Ok(0);
    }
    for p in upkeep::auto::schedule::install(&s, unit_dir)? {
        println!("wrote {}", p.display());
    }
    let systemd = Path::new("/run/systemd/system").is_dir()
        && unit_dir == Path::new(upkeep::auto::schedule::SYSTEM_UNITS);
    let timer = format!("{}.timer", s.name);
    if systemd {
        for args in [vec!["daemon-reload"], vec!["enable", "--now", &timer]] {
            let st = std::process::Command::new("systemctl")
                .args(&args)
                .status()
                .ctx("run", Path::new("systemctl"))?;
            if !st.success() {
                return Err(upkeep::error::Error::refused(
                    format!("systemctl {} failed ({st})", args.join(" ")),
                    "run it by hand and read its message",
                ));
            }
        }
        println!(
            "enabled {timer}: a pass runs daily at {} (plus up to {} of random delay); see `systemctl list-timers {timer}`",
            s.at,
            humantime::format_duration(random_delay)
        );
    } else {
        println!("now run: systemctl daemon-reload && systemctl enable --now {timer}");
    }
    Ok(0)
}

/// `upkeep finish`: the rest of an update after the release was copied over the tree.
pub fn finish(root: &Path, installed: Option<&str>, yes: bool, json: bool) -> Result<u8> {
    let inst = Instance::open(root)?;
    let progress = Progress::default();
    let interactive = std::io::stdin().is_terminal();
    let confirm = |plan: &Plan| {
        if !json {
            println!(
                "the live tree is release {} (installed: {}); to finish:",
                plan.to,
                plan.from.as_deref().unwrap_or("none")
            );
            print_plan(plan);
        }
        if yes {
            return true;
        }
        if !interactive {
            eprintln!("not applied: no terminal to confirm on; pass --yes");
            return false;
        }
        eprint!("close the site and finish? [y/N] ");
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        matches!(answer.trim(), "y" | "Y" | "yes")
    };
    let on_step = |step: Step, ms: Option<u64>| step_line(json, step, ms);
    let opts = update::Options {
        keep_modified: false,
        approved: None,
        confirm: &confirm,
        on_step: &on_step,
        decision: Decision::Ask,
        progress: &progress,
    };
    let run = reported(&inst, json, || {
        upkeep::finish::finish(&inst, installed, &opts)
    })?;
    finished_run(json, &run);
    if !json {
        still_closed(&inst);
    }
    Ok(0)
}

/// `upkeep status`.
pub fn status(root: &Path, json: bool) -> Result<u8> {
    let inst = Instance::open(root)?;
    let st = update::status(&inst)?;
    if json {
        print_json(&st);
    } else {
        print_status(&st);
    }
    Ok(0)
}

/// `upkeep resume`.
pub fn resume(root: &Path, rerun_task: bool, skip_task: bool, json: bool) -> Result<u8> {
    let inst = Instance::open(root)?;
    let progress = Progress::default();
    let on_step = |step: Step, ms: Option<u64>| step_line(json, step, ms);
    let decision = if rerun_task {
        Decision::Rerun
    } else if skip_task {
        Decision::Skip
    } else {
        Decision::Ask
    };
    let opts = update::Options {
        keep_modified: false,
        approved: None,
        confirm: &|_| true,
        on_step: &on_step,
        decision,
        progress: &progress,
    };
    let run = reported(&inst, json, || update::resume(&inst, &opts))?;
    finished_run(json, &run);
    if !json {
        still_closed(&inst);
    }
    Ok(0)
}

/// `upkeep rollback`.
pub fn rollback(root: &Path, json: bool) -> Result<u8> {
    let inst = Instance::open(root)?;
    let run = reported(&inst, json, || update::rollback(&inst))?;
    if run.plan.finish && !json {
        println!(
            "this run finished an update copied by hand: the database and the tasks are back as before it, the copied files stay"
        );
    }
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

/// `upkeep close`.
pub fn close(root: &Path, message: &str) -> Result<u8> {
    let inst = Instance::open(root)?;
    let c = update::gate::close(&inst, message, None)?;
    println!(
        "closed since {}: visitors get 503 and {}",
        c.since,
        update::gate::page_path(&inst).display()
    );
    Ok(0)
}

/// `upkeep open`.
pub fn open(root: &Path) -> Result<u8> {
    let inst = Instance::open(root)?;
    if let Some(r) = State::open(&inst.state_db())
        .ok()
        .and_then(|s| s.unfinished_run().ok().flatten())
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

/// `upkeep serve`.
pub fn serve(root: &Path, listen: &str) -> Result<u8> {
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

/// `upkeep user add`.
pub fn user_add(root: &Path, name: &str) -> Result<u8> {
    let inst = Instance::open(root)?;
    let pw = read_new_password(name)?;
    accounts::add(&State::open(&inst.state_db())?, name, &pw)?;
    println!("account {name} created");
    Ok(0)
}

/// `upkeep user passwd`.
pub fn user_passwd(root: &Path, name: &str) -> Result<u8> {
    let inst = Instance::open(root)?;
    let pw = read_new_password(name)?;
    accounts::passwd(&State::open(&inst.state_db())?, name, &pw)?;
    println!("password of {name} changed; its sessions were ended");
    Ok(0)
}

/// `upkeep demo`.
pub fn demo(listen: &str, dir: Option<&Path>) -> Result<u8> {
    upkeep::demo::run(listen, dir).map(|_| 0)
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
