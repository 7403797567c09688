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

    /// Another run holds the instance lock.
    #[error("busy: {0}")]
    Busy(String),

    /// The state store or the site database failed.
    #[error("database {path}: {source}")]
    Db {
        path: PathBuf,
        source: rusqlite::Error,
    },

    /// A command was asked something it must refuse (wrong version, missing setup...).
    #[error("{msg}")]
    Refused { msg: String, hint: Option<String> },
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

    /// The next action, when one can be named.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Refused { hint, .. } => hint.clone(),
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
                Some("check the reference URL and the connection, then run the same command again: finished files are kept".into())
            }
            Error::Busy(_) => Some("wait for that run to finish, or see `upkeep status`".into()),
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
