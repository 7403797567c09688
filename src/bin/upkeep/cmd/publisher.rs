//! The publisher's commands: keys, publishing, the reference server, mirrors.

use std::path::Path;
use upkeep::{errln, outln};

use upkeep::base::error::{Error, IoContext, Result, exit};
use upkeep::base::fsutil::human_bytes;
use upkeep::base::progress::Progress;
use upkeep::documents::manifest::{PublicKey, SecretKey};

use crate::print::print_json;

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
    outln!("secret key: {} (keep it private)", out.display());
    outln!(
        "public key: {} (key id {})",
        pub_path.display(),
        public.key_id()
    );
    outln!("{}", public.to_text());
    match role {
        crate::cli::KeyRole::Release => outln!(
            "this is a release key: it signs manifests; keep the secret offline, give {} to sites (`upkeep init --public-key`)",
            pub_path.display()
        ),
        crate::cli::KeyRole::Online => outln!(
            "this is an online key: delegate it with the release key (`upkeep delegate --repo REPO --key RELEASE_KEY --online-key-pub {}`), then it signs channel pointers (`upkeep promote`, `upkeep rollout`)",
            pub_path.display()
        ),
    }
    Ok(0)
}

/// `upkeep publish`.
pub fn publish(
    dir: &Path,
    version: &str,
    repo: &Path,
    key: &Path,
    notes: &str,
    (expires, urgent, shrink): (u64, bool, upkeep::publisher::publish::Shrink),
    json: bool,
) -> Result<u8> {
    let key = SecretKey::load(key)?;
    let p = upkeep::publisher::publish::publish(&upkeep::publisher::publish::Publish {
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
        outln!(
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
        outln!("release zip: {}", p.zip.display());
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
                outln!(
                    "{what}: {n}, {} whole -> {} ({:.0}% saved)",
                    human_bytes(whole),
                    human_bytes(small),
                    100.0 - 100.0 * small as f64 / whole.max(1) as f64
                );
            }
        }
        if f.too_large > 0 {
            outln!(
                "no delta for {} changed files larger than --delta-max (sites fetch them compressed or whole)",
                f.too_large
            );
        }
        if f.compressed + f.deltas > 0 {
            outln!(
                "smaller forms: {} more on disk, {:.1} s",
                human_bytes(f.disk_added),
                f.seconds
            );
        }
    }
    Ok(0)
}

fn read_public(p: &Path) -> Result<PublicKey> {
    PublicKey::parse(&std::fs::read_to_string(p).ctx("read public key", p)?)
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

/// The leaves to trigger after a sync, and the key to sign with.
fn downstream_of(
    file: Option<&Path>,
    key: Option<&Path>,
) -> Result<(Vec<upkeep::publisher::trigger::Receiver>, Option<SecretKey>)> {
    match (file, key) {
        (Some(f), Some(k)) => Ok((
            upkeep::publisher::mirror::leaf::read_downstream(f)?,
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
    (online_key, notify, notify_secret): (Option<&Path>, &[String], Option<&Path>),
    (silent_after, tick): (std::time::Duration, std::time::Duration),
    leaf: Option<LeafArgs>,
) -> Result<u8> {
    for u in notify {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            return Err(Error::refused(
                format!("--notify {u:?} is not an http:// or https:// URL"),
                "give the receiver's address, e.g. https://chat.example.org/hooks/upkeep",
            ));
        }
    }
    let notify = upkeep::publisher::fleet::Notify {
        urls: notify.to_vec(),
        secret: notify_secret
            .map(upkeep::client::webhook::read_secret)
            .transpose()?,
    };
    if leaf.is_some() {
        std::fs::create_dir_all(repo).ctx("create folder", repo)?;
    }
    if !repo.is_dir() {
        return Err(Error::refused(
            format!("{} is not a folder", repo.display()),
            "publish a release into it first with `upkeep publish`",
        ));
    }
    let place = fleet_place(repo, fleet_db)?;
    let pilot = match online_key {
        Some(k) => Some(upkeep::publisher::fleet::pilot::Pilot {
            repo: repo.canonicalize().ctx("open", repo)?,
            key: SecretKey::load(k)?,
            silent_after,
        }),
        None => None,
    };
    let extra: Option<upkeep::publisher::serve::ExtraRoutes> = match &leaf {
        None => None,
        Some(l) => {
            let keys = l
                .trigger_keys
                .iter()
                .map(|p| read_public(p))
                .collect::<Result<Vec<_>>>()?;
            let (downstream, downstream_key) = downstream_of(l.downstream, l.downstream_key)?;
            let leaf = std::sync::Arc::new(
                upkeep::publisher::mirror::leaf::Leaf::new(
                    l.from.to_string(),
                    repo.canonicalize().ctx("open", repo)?,
                    read_public(l.public_key)?,
                    keys,
                    downstream,
                    downstream_key,
                    upkeep::publisher::fleet::db::FleetDb::open_at(&place)?,
                )
                .with_zips(l.zips),
            );
            // A first sync at start: a leaf that was down catches up without a trigger.
            let first = leaf.clone();
            std::thread::spawn(move || first.run());
            Some(std::sync::Arc::new(
                upkeep::publisher::mirror::leaf::configure(leaf),
            ))
        }
    };
    // The files are served whatever happens to the fleet database: sites update without it.
    let fleet = match upkeep::publisher::fleet::db::FleetDb::open_at(&place) {
        Ok(db) => Some((db, pilot, notify)),
        Err(e) => {
            errln!("warning: no fleet endpoints (site enrolment and reports): {e}");
            None
        }
    };
    let sys = actix_web::rt::System::new();
    sys.block_on(async {
        let on = fleet.is_some();
        let (server, addr) = upkeep::publisher::serve::start(repo, listen, fleet, tick, extra)
            .ctx("listen on", Path::new(listen))?;
        outln!("serving {} on http://{addr}/", repo.display());
        if on {
            errln!("fleet database: {}", place.display());
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
        server.await.ctx("serve", repo)
    })?;
    Ok(0)
}

/// Where the fleet database is: `--fleet-db` (a file outside the repository, or a
/// `postgresql://` URL several reference servers share), else REPO.fleet.db beside the
/// repository. A server's password comes from the file `UPKEEP_FLEET_DB_PASSWORD_FILE` names
/// (mode 0600), or `UPKEEP_FLEET_DB_PASSWORD`, never the command line.
pub fn fleet_place(
    repo: &Path,
    fleet_db: Option<&Path>,
) -> Result<upkeep::publisher::fleet::db::Place> {
    use upkeep::base::dburl::{Target, parse, password};
    use upkeep::publisher::fleet::db::{Place, default_path};
    let Some(given) = fleet_db else {
        let repo = repo.canonicalize().ctx("open", repo)?;
        return Ok(Place::File(fleet_db_outside(&repo, &default_path(&repo))?));
    };
    let text = given.to_string_lossy();
    if !text.contains("://") {
        return Ok(Place::File(fleet_db_outside(repo, given)?));
    }
    let wrong = |why: String| {
        Error::refused(
            format!("--fleet-db {text}: {why}"),
            "give a file (the default is REPO.fleet.db) or postgresql://USER@HOST:PORT/NAME, its password in the file UPKEEP_FLEET_DB_PASSWORD_FILE names or in UPKEEP_FLEET_DB_PASSWORD",
        )
    };
    if text.split_once("://").is_some_and(|(_, rest)| {
        rest.split('@').next().is_some_and(|u| u.contains(':')) && rest.contains('@')
    }) {
        return Err(wrong(
            "the URL holds a password, which every process list shows".into(),
        ));
    }
    match parse(&text, Path::new("/")).map_err(wrong)? {
        Target::Postgres(mut s) => {
            let file =
                std::env::var_os("UPKEEP_FLEET_DB_PASSWORD_FILE").map(std::path::PathBuf::from);
            s.password = match file {
                Some(f) => password(Some(&f))?,
                None => std::env::var("UPKEEP_FLEET_DB_PASSWORD").ok(),
            };
            Ok(Place::Server(s))
        }
        _ => Err(wrong(
            "a fleet database is an SQLite file or a PostgreSQL database".into(),
        )),
    }
}

/// The fleet database must not be a file the repository serves or mirrors.
pub fn fleet_db_outside(repo: &Path, db: &Path) -> Result<std::path::PathBuf> {
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

/// A mirror has no upkeep.toml: the hints that name it (a site's) name the mirror's options.
fn mirror_hint(e: Error, from: &str, public_key: &Path) -> Error {
    let hint = match &e {
        Error::Signature { .. } => format!(
            "check that --public-key {} is the publisher's release key (the FILE.pub of `upkeep keygen`); the mirror keeps serving its copy",
            public_key.display()
        ),
        Error::Network { .. } => format!(
            "check --from {from} and the connection to it, then run the same command again; the mirror keeps serving its copy"
        ),
        _ => return e,
    };
    Error::refused(e.to_string(), hint)
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
    let s = upkeep::publisher::mirror::sync(&upkeep::publisher::mirror::Mirror {
        from,
        to,
        key: &key,
        keep,
        zips,
        net: upkeep::client::Network::default(),
        progress,
    })
    .map_err(|e| mirror_hint(e, from, public_key))?;
    // After a complete sync that changed something, the leaves below are told at once.
    let answers = match &leaf_key {
        Some(k) if !(s.unchanged && s.new_objects == 0) => {
            upkeep::publisher::mirror::leaf::trigger_leaves(k, &leaves)
        }
        _ => Vec::new(),
    };
    if json {
        print_json(&serde_json::json!({ "sync": s, "downstream": answers }));
    } else if s.unchanged && s.new_objects == 0 {
        outln!(
            "mirror of {from} is up to date: release {} ({} releases)",
            s.latest,
            s.releases
        );
    } else {
        outln!(
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
            outln!(
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
