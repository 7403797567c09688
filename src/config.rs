//! An instance: its root, its working folders and `upkeep.toml`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::manifest::{PublicKey, RelPath};

/// Limits that keep a hostile archive from filling the disk.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Total uncompressed bytes an archive may declare.
    pub max_archive_bytes: u64,
    /// Entries an archive may hold.
    pub max_archive_entries: u64,
    /// Largest uncompressed/compressed ratio of one entry.
    pub max_compression_ratio: u64,
    /// Largest upload accepted by the panel.
    pub max_upload_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_archive_bytes: 8 << 30,
            max_archive_entries: 500_000,
            max_compression_ratio: 200,
            max_upload_bytes: 2 << 30,
        }
    }
}

/// How `stage --network` talks to the reference.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Network {
    /// Concurrent GETs against a static repository.
    pub concurrency: usize,
    /// Seconds without a byte before a transfer counts as stalled.
    pub io_timeout_secs: u64,
    /// Seconds the whole staging may take.
    pub deadline_secs: u64,
    /// Seconds one small document (a pointer, a manifest, a signature) may take in all, however
    /// slowly its bytes trickle in.
    pub doc_timeout_secs: u64,
    /// Attempts after the first failure.
    pub retries: u32,
}

impl Default for Network {
    fn default() -> Self {
        Network {
            concurrency: 16,
            io_timeout_secs: 30,
            deadline_secs: 3600,
            doc_timeout_secs: 120,
            retries: 5,
        }
    }
}

/// run_once task settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Tasks {
    /// Seconds a shell task may run.
    pub timeout_secs: u64,
}

impl Default for Tasks {
    fn default() -> Self {
        Tasks { timeout_secs: 600 }
    }
}

/// The largest version step an unattended pass may take.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Allow {
    /// 1.2.3 -> 1.2.4.
    #[default]
    Patch,
    /// 1.2.3 -> 1.3.0.
    Minor,
    /// 1.2.3 -> 2.0.0.
    Major,
}

impl Allow {
    /// The word used in upkeep.toml.
    pub fn word(self) -> &'static str {
        match self {
            Allow::Patch => "patch",
            Allow::Minor => "minor",
            Allow::Major => "major",
        }
    }
}

/// What an unattended pass does with locally modified files (the conffile question).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OnModified {
    /// Stop before anything live changes; the report lists the files.
    #[default]
    Hold,
    /// Leave the site's version in place.
    KeepMine,
    /// Install the release's version, the site's kept as NAME.bak.
    TakeRelease,
}

/// `[auto]`: what an unattended pass (`upkeep auto`) may do. Unknown keys are refused, so a
/// typo never silently widens or narrows the policy.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Auto {
    /// Unattended updates happen at all.
    pub enabled: bool,
    /// The largest semver step taken unattended.
    pub allow: Allow,
    /// Local time window for closing the site, `HH:MM-HH:MM` (may cross midnight).
    pub window: Option<String>,
    /// Days the window applies (`mon` ... `sun`); every day when empty.
    pub days: Vec<String>,
    /// Locally modified files.
    pub on_modified: OnModified,
    /// Stage a held or postponed release ahead, so the window is spent on the swap only.
    pub stage_ahead: bool,
}

/// The contents of `upkeep.toml`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    /// Base URL of the reference repository.
    pub reference: String,
    /// The publisher's public key (one line from `upkeep keygen`).
    pub public_key: String,
    /// The site database (SQLite), relative to the root or absolute.
    #[serde(default = "default_db")]
    pub database: String,
    /// Paths (relative, `dir/` for a folder) never fingerprinted nor touched.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Archive and upload limits.
    #[serde(default)]
    pub limits: Limits,
    /// Network settings.
    #[serde(default)]
    pub network: Network,
    /// Task settings.
    #[serde(default)]
    pub tasks: Tasks,
    /// Unattended updates.
    #[serde(default)]
    pub auto: Auto,
}

fn default_db() -> String {
    ".upkeep/site.db".into()
}

impl Config {
    /// The text written by `upkeep init`, with comments an operator can follow.
    pub fn render(&self) -> String {
        let mut s =
            String::from("# upkeep instance configuration. See `upkeep --help` and the README.\n");
        s.push_str(&toml::to_string_pretty(self).expect("config always serialises"));
        s
    }
}

/// One installed web application.
pub struct Instance {
    /// The instance root (the live tree plus upkeep's folders).
    pub root: PathBuf,
    /// Parsed `upkeep.toml`.
    pub config: Config,
    /// The trusted publisher key.
    pub key: PublicKey,
}

impl Instance {
    /// Open an instance made by `upkeep init`.
    pub fn open(root: &Path) -> Result<Self> {
        let root = root.canonicalize().ctx("open instance root", root)?;
        let cfg_path = root.join("upkeep.toml");
        if !cfg_path.exists() {
            return Err(Error::refused(
                format!(
                    "{} is not an upkeep instance (no upkeep.toml)",
                    root.display()
                ),
                format!(
                    "run `upkeep init --root {} --reference URL --public-key FILE` first",
                    root.display()
                ),
            ));
        }
        let text = std::fs::read_to_string(&cfg_path).ctx("read", &cfg_path)?;
        let config: Config = toml::from_str(&text).map_err(|e| Error::Config {
            file: cfg_path.clone(),
            reason: e.to_string(),
        })?;
        let key = PublicKey::parse(&config.public_key)?;
        Ok(Instance { root, config, key })
    }

    /// `staging/`.
    pub fn staging(&self) -> PathBuf {
        self.root.join("staging")
    }
    /// `staging/` must be a real folder of the instance: a link would let staging's clean-up
    /// and the swap work on files elsewhere.
    pub fn check_staging_folder(&self) -> Result<()> {
        let st = self.staging();
        if std::fs::symlink_metadata(&st).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(Error::refused(
                format!(
                    "{} is a symbolic link: upkeep works only in a real staging folder inside the instance",
                    st.display()
                ),
                format!(
                    "replace the link with a folder (`rm {0} && mkdir {0}`), then stage again",
                    st.display()
                ),
            ));
        }
        Ok(())
    }
    /// `inbox/`.
    pub fn inbox(&self) -> PathBuf {
        self.root.join("inbox")
    }
    /// `.upkeep/`.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join(".upkeep")
    }
    /// `.upkeep/state.db`.
    pub fn state_db(&self) -> PathBuf {
        Self::state_db_of(&self.root)
    }
    /// `.upkeep/state.db` of the instance at `root`, for code that has only the root.
    pub fn state_db_of(root: &Path) -> PathBuf {
        root.join(".upkeep").join("state.db")
    }
    /// Partial downloads, keyed by SHA-256, on the same filesystem as staging.
    pub fn partial_dir(&self) -> PathBuf {
        self.state_dir().join("partial")
    }
    /// The site database path.
    pub fn database(&self) -> PathBuf {
        let p = Path::new(&self.config.database);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.root.join(p)
        }
    }
    /// True when a path is excluded by `upkeep.toml`.
    pub fn excluded(&self, p: &RelPath) -> bool {
        is_excluded(&self.config.exclude, p)
    }
}

/// True when `p` equals an exclude entry or lies below a `dir/` entry.
pub fn is_excluded(excludes: &[String], p: &RelPath) -> bool {
    excludes.iter().any(|e| {
        let e = e.trim_start_matches('/');
        match e.strip_suffix('/') {
            Some(dir) => p.as_str() == dir || p.as_str().starts_with(&format!("{dir}/")),
            None => p.as_str() == e || p.as_str().starts_with(&format!("{e}/")),
        }
    })
}
