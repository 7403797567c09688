//! `upkeep init`: make a folder an instance without touching any application file, and find out
//! which published release its live tree is.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::base::error::{Error, IoContext, Result};
use crate::base::fsutil::write_atomic;
use crate::client::{Remote, block_on};
use crate::documents::manifest::{PublicKey, RelPath, VerifiedManifest};
use crate::documents::tree::{self, Walk};
use crate::site::config::{Config, Instance, Limits, Network, Tasks};
use crate::site::fingerprint::live_prints;
use crate::site::state::State;

/// How the installed release was determined.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "how", rename_all = "snake_case")]
pub enum Identified {
    /// `--installed V`.
    Given { version: String },
    /// The live tree was empty: the next update is a fresh install.
    Fresh,
    /// Every file of that release matches.
    Exact { version: String },
    /// The release with the fewest differences, which are listed.
    Closest {
        version: String,
        differences: Vec<String>,
    },
    /// No release shares a file with the live tree.
    Unknown,
}

/// What init did.
#[derive(Debug, Serialize)]
pub struct Initialised {
    /// The instance root.
    pub root: PathBuf,
    /// How the installed release was found.
    pub identified: Identified,
    /// run_once tasks of the installed release marked done (`NAME.done`): they ran when the
    /// site was installed.
    pub tasks_marked_done: Vec<RelPath>,
    /// The generated password of `admin`, shown once (absent when one was given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_password: Option<String>,
    /// The site's fleet identity (made now: a random id and a site key).
    pub site: crate::site::fleet::identity::Identity,
    /// The site database, as reached now ("MariaDB 10.11 at 127.0.0.1:3306/wordpress").
    pub database: String,
}

/// Options for [`init`].
pub struct InitOptions<'a> {
    /// The instance root (created if missing).
    pub root: &'a Path,
    /// The reference URL.
    pub reference: &'a str,
    /// The publisher's public key text.
    pub public_key: &'a str,
    /// The installed release, when the operator knows it.
    pub installed: Option<&'a str>,
    /// The first administrator's password; generated when absent.
    pub admin_password: Option<&'a str>,
    /// Leave the installed release's run_once tasks pending (run them at the next update)
    /// instead of marking them done.
    pub pending_tasks: bool,
    /// The site's name in reports and the fleet table.
    pub name: Option<&'a str>,
    /// Fleet groups.
    pub groups: &'a [String],
    /// The release channel to follow.
    pub channel: Option<&'a str>,
    /// The site's own address (where triggers go).
    pub url: Option<&'a str>,
    /// The site database (`mysql://`, `postgresql://` or an SQLite path); default
    /// `.upkeep/site.db`.
    pub database: Option<&'a str>,
    /// The file holding the database server's password (mode 0600).
    pub database_password_file: Option<&'a str>,
}

/// The `database` setting from init's options: a bare path for SQLite alone, a table when
/// there is more to say.
fn database_setting(o: &InitOptions) -> Result<crate::site::config::Database> {
    use crate::site::config::Database;
    let Some(url) = o.database else {
        if o.database_password_file.is_some() {
            return Err(Error::refused(
                "--database-password-file without --database: the password is for a database server",
                "add --database mysql://USER@HOST/NAME (or postgresql://...)",
            ));
        }
        return Ok(Database::default());
    };
    let server = !matches!(
        crate::site::database::target::parse(url, o.root)
            .map_err(|e| Error::refused(e, "see the README's \"The database\" section"))?,
        crate::site::database::Target::Sqlite(_)
    );
    Ok(match (server, o.database_password_file) {
        (false, None) => Database::Path(url.to_string()),
        (false, Some(_)) => {
            return Err(Error::refused(
                "--database-password-file with an SQLite database: SQLite has no password",
                "drop --database-password-file",
            ));
        }
        (true, f) => {
            let mut t = Database::default().settings();
            t.url = url.to_string();
            t.password_file = f.map(String::from);
            Database::Table(t)
        }
    })
}

/// Make `root` an instance.
pub fn init(o: &InitOptions) -> Result<Initialised> {
    let key = PublicKey::parse(o.public_key)?;
    std::fs::create_dir_all(o.root).ctx("create folder", o.root)?;
    let root = o.root.canonicalize().ctx("open", o.root)?;
    if root.join("upkeep.toml").exists() {
        return Err(Error::refused(
            format!(
                "{} is already an instance (upkeep.toml exists)",
                root.display()
            ),
            "use `upkeep check --root DIR`; to start over, remove upkeep.toml and .upkeep/ first",
        ));
    }
    let config = Config {
        name: o.name.map(String::from),
        groups: o.groups.to_vec(),
        trigger_keys: Vec::new(),
        trusted_proxies: Vec::new(),
        url: o.url.map(String::from),
        proxy: None,
        channel: o.channel.map(String::from),
        reference: o.reference.to_string(),
        public_key: key.to_text(),
        database: database_setting(o)?,
        exclude: Vec::new(),
        keep: Vec::new(),
        run_as: None,
        extensions: Vec::new(),
        limits: Limits::default(),
        network: Network::default(),
        files: Default::default(),
        tasks: Tasks::default(),
        auto: Default::default(),
        mail: Default::default(),
        notify: Vec::new(),
    };
    let inst = Instance::with_config(root.clone(), config)?;
    // A server database is reached now, so that a wrong address, account or password is told
    // at init and not at the first update.
    let database = {
        let mut db = inst.database()?;
        if db.engine() != crate::site::database::Engine::Sqlite && !db.exists()? {
            return Err(Error::refused(
                format!("{}: no such database on the server", db.describe()),
                "create it (or name the application's database in --database), then run init again",
            ));
        }
        db.describe()
    };
    let remote = Remote::new(&inst.config.reference, &inst.key, &inst.config.network)?;
    let ptr = block_on(remote.pointer())?;

    for d in ["staging", "inbox", "run_once", ".upkeep"] {
        let p = root.join(d);
        std::fs::create_dir_all(&p).ctx("create folder", &p)?;
    }
    let mut state = State::open(&inst.state_db())?;

    let identified = if let Some(v) = o.installed {
        crate::client::require_published(&ptr, v)?;
        let m = block_on(remote.manifest(v, None))?;
        state.set_installed(&m)?;
        Identified::Given {
            version: v.to_string(),
        }
    } else {
        let (live, _) = tree::walk(
            &root,
            &Walk {
                instance: true,
                ..Walk::default()
            },
        )?;
        if live.is_empty() {
            Identified::Fresh
        } else {
            let manifests: Vec<VerifiedManifest> = block_on(async {
                futures_util::future::try_join_all(
                    ptr.releases.iter().map(|v| remote.manifest(v, None)),
                )
                .await
            })?;
            identify(&inst, &mut state, &manifests)?
        }
    };
    let tasks_marked_done = match state.installed_list(&inst.key)? {
        Some(m) if !o.pending_tasks => mark_installed_tasks_done(&inst, &m)?,
        _ => Vec::new(),
    };
    let (password, generated) = match o.admin_password {
        Some(p) => (p.to_string(), None),
        None => {
            let p = crate::base::accounts::generate_password();
            (p.clone(), Some(p))
        }
    };
    crate::base::accounts::add(&state, "admin", &password)?;
    if let Some(m) = state.installed(&inst.key)? {
        state.record_extensions(&crate::site::update::scan::find(&inst, &m, &|_| false)?)?;
    }
    let template = crate::site::update::gate::template_path(&inst.root);
    if !template.exists() {
        write_atomic(
            &template,
            crate::site::update::gate::DEFAULT_PAGE.as_bytes(),
        )?;
    }
    write_atomic(&root.join("upkeep.toml"), inst.config.render().as_bytes())?;
    let site = crate::site::fleet::identity::identity(&inst)?;
    Ok(Initialised {
        root,
        identified,
        tasks_marked_done,
        admin_password: generated,
        site,
        database,
    })
}

/// The installed release's run_once tasks found in the tree as shipped ran when the site was
/// installed: renamed `NAME.done`, so the first update does not run them again.
fn mark_installed_tasks_done(inst: &Instance, m: &VerifiedManifest) -> Result<Vec<RelPath>> {
    let mut marked = Vec::new();
    for f in m.files() {
        let name = f.path.as_str().rsplit('/').next().unwrap_or_default();
        if f.path.top() != "run_once" || !crate::site::update::tasks::is_task_name(name) {
            continue;
        }
        let live = f.path.under(&inst.root);
        let done = f
            .path
            .with_suffix(crate::documents::manifest::relpath::DONE)
            .under(&inst.root);
        if done.exists() || !live.is_file() {
            continue;
        }
        if crate::documents::manifest::digest::hash_file(&live)?.sha256 != f.sha256 {
            continue;
        }
        std::fs::rename(&live, &done).ctx("rename", &live)?;
        marked.push(f.path.clone());
    }
    Ok(marked)
}

fn identify(
    inst: &Instance,
    state: &mut State,
    manifests: &[VerifiedManifest],
) -> Result<Identified> {
    let mut paths: Vec<&RelPath> = manifests
        .iter()
        .flat_map(|m| m.files().iter().map(|f| &f.path))
        .collect();
    paths.sort();
    paths.dedup();
    let live = live_prints(inst, state, &paths)?;
    let mut best: Option<(usize, usize, &VerifiedManifest, Vec<String>)> = None;
    for m in manifests {
        let mut diffs = Vec::new();
        let mut same = 0;
        for f in m.files() {
            match live.get(&f.path) {
                Some(l) if l.md5 == f.md5 && l.size == f.size => same += 1,
                Some(_) => diffs.push(format!("changed: {}", f.path)),
                None => diffs.push(format!("missing: {}", f.path)),
            }
        }
        let better = match &best {
            None => true,
            Some((bd, bs, _, _)) => diffs.len() < *bd || (diffs.len() == *bd && same > *bs),
        };
        if better {
            best = Some((diffs.len(), same, m, diffs));
        }
    }
    Ok(match best {
        Some((_, 0, _, _)) | None => Identified::Unknown,
        Some((0, _, m, _)) => {
            state.set_installed(m)?;
            Identified::Exact {
                version: m.version().to_string(),
            }
        }
        Some((_, _, m, differences)) => {
            state.set_installed(m)?;
            Identified::Closest {
                version: m.version().to_string(),
                differences,
            }
        }
    })
}
