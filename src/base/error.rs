//! One error type for the library. Every variant reads as a sentence about the operation that
//! failed, and `hint()` names the next thing the operator can do. The CLI prints both; the panel
//! renders both; `exit_code()` maps each kind to the process status in one place.

use std::path::{Path, PathBuf};

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, with enough context to act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed on a named path.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    /// A path from a manifest, archive, request or form was refused.
    #[error("refused path {path:?}: {reason}")]
    UnsafePath { path: String, reason: String },

    /// A signature was missing, invalid, or made by another key.
    #[error("signature check failed for {what}: {reason}")]
    Signature { what: String, reason: String },

    /// A manifest or pointer could not be parsed or breaks a rule.
    #[error("{what} is not a valid upkeep manifest: {reason}")]
    BadManifest { what: String, reason: String },

    /// A release archive was refused.
    #[error("archive {archive}: {reason}")]
    Archive { archive: String, reason: String },

    /// A network transfer failed after its retries.
    #[error("network: {url}: {reason}")]
    Network { url: String, reason: String },

    /// The reference (or a cache on the way) served content that does not match the signed
    /// manifest, though the transfer itself was whole.
    #[error("damaged content from {url}: {reason}")]
    Damaged { url: String, reason: String },

    /// Another run holds the instance lock.
    #[error("busy: {0}")]
    Busy(String),

    /// The operator cancelled the work; what was finished is kept.
    #[error("cancelled: {0}")]
    Cancelled(String),

    /// The state store or the site database failed.
    #[error("database {path}: {source}")]
    Db {
        path: PathBuf,
        source: rusqlite::Error,
    },

    /// `update` was asked to apply, but nothing is staged.
    #[error("nothing is staged")]
    NothingStaged { root: PathBuf },

    /// A release older than the installed one, without `--allow-downgrade`.
    #[error("release {release} is older than the installed release {installed}")]
    Downgrade { release: String, installed: String },

    /// `upkeep.toml` does not parse or breaks a rule (a typo in a key, a bad window).
    #[error("{}: {reason}", file.display())]
    Config { file: PathBuf, reason: String },

    /// Not enough free disk for the work asked.
    #[error(
        "not enough free disk in {}: {} needed ({what}), {} free",
        folder.display(),
        indicatif::DecimalBytes(*needed),
        indicatif::DecimalBytes(*free)
    )]
    DiskSpace {
        folder: PathBuf,
        what: String,
        needed: u64,
        free: u64,
    },

    /// A version already known with other content: a published version is immutable.
    #[error(
        "release {version} is already known here with other content: a published version never changes"
    )]
    VersionReused { version: String },

    /// Signed metadata past its expiry date.
    #[error("{what} expired on {expires}: refused as stale")]
    Expired { what: String, expires: String },

    /// Staged files no longer match the staged release.
    #[error("staging no longer matches release {version}: {}", files.join(", "))]
    StaleStaging {
        version: String,
        files: Vec<String>,
        root: PathBuf,
        /// How it was staged (`network`, `archive PATH`, `inbox NAME`, `manual`).
        staged_from: String,
    },

    /// A run stopped half way and must be resumed or rolled back first.
    #[error("run {run} stopped at step {step} ({status})")]
    Unfinished {
        run: i64,
        step: String,
        status: String,
        root: PathBuf,
    },

    /// The plan that would run now is not the plan the operator approved.
    #[error(
        "the plan changed since it was reviewed (approved {approved}, now {now}): nothing was changed"
    )]
    PlanChanged { approved: String, now: String },

    /// A command was asked something it must refuse (wrong version, missing setup...).
    #[error("{msg}")]
    Refused { msg: String, hint: Option<String> },
}

/// Process exit statuses that scripts may rely on (documented in `upkeep --help`).
pub mod exit {
    /// Any failure without a status of its own.
    pub const FAILED: u8 = 1;
    /// `check`: an update is available.
    pub const UPDATE_AVAILABLE: u8 = 10;
    /// The plan changed since it was approved (`update --plan`).
    pub const PLAN_CHANGED: u8 = 4;
    /// upkeep.toml is wrong (as for bad usage).
    pub const CONFIG: u8 = 2;
    /// `auto`: held or postponed by policy.
    pub const HELD: u8 = 3;
    /// Another command holds the instance lock (EX_TEMPFAIL: try again later).
    pub const BUSY: u8 = 75;
}

impl Error {
    /// A refusal with a next action for the operator.
    pub fn refused(msg: impl Into<String>, hint: impl Into<String>) -> Self {
        Error::Refused {
            msg: msg.into(),
            hint: Some(hint.into()),
        }
    }

    /// A refusal whose message already says everything.
    pub fn msg(msg: impl Into<String>) -> Self {
        Error::Refused {
            msg: msg.into(),
            hint: None,
        }
    }

    /// The process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Busy(_) => exit::BUSY,
            Error::PlanChanged { .. } => exit::PLAN_CHANGED,
            Error::Config { .. } => exit::CONFIG,
            _ => exit::FAILED,
        }
    }

    /// The HTTP status the panel answers with for this error.
    pub fn http_status(&self) -> u16 {
        match self {
            Error::Busy(_) | Error::Unfinished { .. } | Error::PlanChanged { .. } => 409,
            Error::Refused { .. }
            | Error::UnsafePath { .. }
            | Error::NothingStaged { .. }
            | Error::Config { .. }
            | Error::Downgrade { .. }
            | Error::Expired { .. }
            | Error::VersionReused { .. }
            | Error::StaleStaging { .. }
            | Error::Archive { .. }
            | Error::BadManifest { .. }
            | Error::Signature { .. } => 400,
            Error::Network { .. } | Error::Damaged { .. } => 502,
            Error::DiskSpace { .. } => 507,
            Error::Cancelled(_) => 409,
            Error::Io { .. } | Error::Db { .. } => 500,
        }
    }

    /// The next action, when one can be named.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Refused { hint, .. } => hint.clone(),
            Error::NothingStaged { root } => Some(format!(
                "run `upkeep check --root {0}` then `upkeep stage --root {0} --network` (or --archive FILE, --inbox NAME, --manual)",
                root.display()
            )),
            Error::Downgrade { .. } => Some(
                "pass --allow-downgrade if you really mean to go back (`upkeep rollback` undoes the last run instead)".into(),
            ),
            Error::Config { .. } => Some(
                "fix that key in upkeep.toml (the README's \"Configuration\" and \"Unattended updates\" sections list them); nothing was changed".into(),
            ),
            Error::DiskSpace {
                folder,
                needed,
                free,
                ..
            } => Some(format!(
                "free {} on the filesystem holding {} (old archives in inbox/ are a good start), then run the same command again: finished files are kept",
                indicatif::DecimalBytes(needed.saturating_sub(*free)),
                folder.display()
            )),
            Error::Db { source, path }
                if matches!(
                    source.sqlite_error_code(),
                    Some(rusqlite::ErrorCode::DiskFull | rusqlite::ErrorCode::SystemIoFailure)
                ) =>
            {
                Some(format!(
                    "the disk holding {} is probably full: free space there (`df -h {}`), then run the same command again",
                    path.display(),
                    path.parent().unwrap_or(path).display()
                ))
            }
            Error::VersionReused { .. } => Some(
                "tell the publisher: a changed release must get a new version number; do not install this one".into(),
            ),
            Error::Expired { .. } => Some(
                "ask the publisher to publish again (or re-sign) with a later --expires".into(),
            ),
            Error::StaleStaging {
                root, staged_from, ..
            } => {
                let again = match staged_from.split_once(' ') {
                    Some(("archive", p)) => format!("--archive {p}"),
                    Some(("inbox", n)) => format!("--inbox {n}"),
                    _ if staged_from == "manual" => "--manual".to_string(),
                    _ => "--network".to_string(),
                };
                Some(format!(
                    "stage it again: `upkeep stage --root {} {again}` (files still verified are kept)",
                    root.display()
                ))
            }
            Error::Unfinished { root, .. } => Some(format!(
                "finish it with `upkeep resume --root {0}` or undo it with `upkeep rollback --root {0}`",
                root.display()
            )),
            Error::PlanChanged { .. } => Some(
                "review the new plan (`upkeep update` without --yes shows it, or the panel's review page) and approve it".into(),
            ),
            Error::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC) => {
                Some("free disk space on that filesystem, then run the command again".into())
            }
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => {
                Some("give the upkeep user write access to that path, then try again".into())
            }
            Error::Signature { .. } => Some(
                "check that upkeep.toml's public_key is the publisher's key; do not install this release".into(),
            ),
            Error::Network { .. } => {
                Some("check `reference` in upkeep.toml and the connection to it, then run the same command again".into())
            }
            Error::Busy(_) => Some("wait for that run to finish, or see `upkeep status`".into()),
            Error::Damaged { .. } => Some(
                "nothing of it was installed; tell the publisher, or purge the cache or proxy between this site and the reference, then stage again".into(),
            ),
            Error::Cancelled(_) => {
                Some("start it again when you are ready: finished files are kept".into())
            }
            Error::Archive { .. } => Some("use the release zip published by the reference repository".into()),
            _ => None,
        }
    }
}

/// Attach a path and an operation to an `io::Error`.
pub trait IoContext<T> {
    /// `op` is a verb phrase such as "read" or "rename".
    fn ctx(self, op: &'static str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T> {
        self.map_err(|source| Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Attach a database path to a `rusqlite::Error`.
pub trait DbContext<T> {
    /// `path` is the database file.
    fn db(self, path: &Path) -> Result<T>;
}

impl<T> DbContext<T> for rusqlite::Result<T> {
    fn db(self, path: &Path) -> Result<T> {
        self.map_err(|source| Error::Db {
            path: path.to_path_buf(),
            source,
        })
    }
}
