//! `RelPath`: the only way a path from a manifest, an archive entry, a form or a URL reaches the
//! filesystem. It is parsed once, refuses anything that could resolve outside the instance root,
//! and deliberately does not deref to `str`, so that callers choose `as_str()` or `under()` on
//! purpose.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Top-level names that belong to upkeep itself, never to a release.
pub const RESERVED_TOP: &[&str] = &["staging", "inbox", ".upkeep", "upkeep.toml"];
/// File names at the root of an archive or `staging/` that carry the signed manifest.
pub const MANIFEST_NAME: &str = "upkeep-manifest.json";
/// Detached signature of [`MANIFEST_NAME`].
pub const SIGNATURE_NAME: &str = "upkeep-manifest.sig";

/// A normalised, `/`-separated relative path with no way out of the folder it is joined to.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelPath(String);

impl RelPath {
    /// Parse a path as it appears in a manifest or an archive: components separated by `/`.
    ///
    /// Refused: empty names, absolute paths, `.` and `..`, backslashes, NUL and other control
    /// characters, drive letters, over-long names.
    pub fn parse(raw: &str) -> Result<Self> {
        let bad = |reason: &str| Error::UnsafePath {
            path: raw.to_string(),
            reason: reason.to_string(),
        };
        if raw.is_empty() {
            return Err(bad("empty name"));
        }
        if raw.len() > 4096 {
            return Err(bad("longer than 4096 bytes"));
        }
        if raw.starts_with('/') {
            return Err(bad("absolute path"));
        }
        if raw.contains('\\') {
            return Err(bad("backslash in name"));
        }
        if raw.chars().any(|c| c.is_control()) {
            return Err(bad("NUL or control character in name"));
        }
        let b = raw.as_bytes();
        if b.len() >= 2 && b[1] == b':' && b[0].is_ascii_alphabetic() {
            return Err(bad("drive letter"));
        }
        for comp in raw.split('/') {
            match comp {
                "" => return Err(bad("empty path component")),
                "." | ".." => return Err(bad("`.` or `..` component")),
                c if c.len() > 255 => return Err(bad("component longer than 255 bytes")),
                _ => {}
            }
        }
        Ok(RelPath(raw.to_string()))
    }

    /// Parse a path that must be a file of a release: on top of [`RelPath::parse`], refuses
    /// upkeep's own working folders and the names the update flow gives meaning to.
    pub fn parse_release_file(raw: &str) -> Result<Self> {
        let p = Self::parse(raw)?;
        p.check_release_file()?;
        Ok(p)
    }

    /// The release-file rules on an already parsed path.
    pub fn check_release_file(&self) -> Result<()> {
        let bad = |reason: &str| {
            Err(Error::UnsafePath {
                path: self.0.clone(),
                reason: reason.to_string(),
            })
        };
        let top = self.0.split('/').next().unwrap_or_default();
        if RESERVED_TOP.contains(&top) {
            return bad(
                "aimed at one of upkeep's own folders (staging/, inbox/, .upkeep/, upkeep.toml)",
            );
        }
        if self.0 == MANIFEST_NAME || self.0 == SIGNATURE_NAME {
            return bad("reserved for the signed manifest");
        }
        if self.0.ends_with(".bak") || self.0.ends_with(".done") {
            return bad("`.bak` and `.done` names are reserved for backups and finished tasks");
        }
        Ok(())
    }

    /// The path as text, `/`-separated.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key used to detect names that collide on case-insensitive filesystems.
    pub fn folded(&self) -> String {
        self.0.to_lowercase()
    }

    /// This path below `root`. Safe by construction: no component can climb out.
    pub fn under(&self, root: &Path) -> PathBuf {
        let mut p = root.to_path_buf();
        for comp in self.0.split('/') {
            p.push(comp);
        }
        p
    }

    /// The path with a suffix appended to its last component (`a/b.php` -> `a/b.php.bak`).
    pub fn with_suffix(&self, suffix: &str) -> RelPath {
        RelPath(format!("{}{}", self.0, suffix))
    }

    /// The first component.
    pub fn top(&self) -> &str {
        self.0.split('/').next().unwrap_or_default()
    }

    /// Build from a path found while walking `root` (the walk itself guarantees it is below root).
    pub fn from_walk(root: &Path, path: &Path) -> Result<Self> {
        use std::os::unix::ffi::OsStrExt;
        // Byte slicing instead of `strip_prefix`, which walks path components one by one: this
        // runs once per file of every walk.
        let (r, p) = (root.as_os_str().as_bytes(), path.as_os_str().as_bytes());
        let rest = p
            .strip_prefix(r)
            .map(|x| x.strip_prefix(b"/").unwrap_or(x))
            .filter(|x| !x.is_empty());
        let Some(rest) = rest else {
            return Err(Error::UnsafePath {
                path: path.display().to_string(),
                reason: "not below the folder being read".into(),
            });
        };
        let s = std::str::from_utf8(rest).map_err(|_| Error::UnsafePath {
            path: String::from_utf8_lossy(rest).into_owned(),
            reason: "file name is not valid UTF-8".into(),
        })?;
        Self::parse(s)
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RelPath({:?})", self.0)
    }
}

impl serde::Serialize for RelPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for RelPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RelPath::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_1() {
        assert_eq!(RelPath::parse("index.php").unwrap().as_str(), "index.php");
    }
    #[test]
    fn simple_2() {
        let p = RelPath::parse("a/b/c.js").unwrap();
        assert_eq!(p.under(Path::new("/srv")), PathBuf::from("/srv/a/b/c.js"));
        assert_eq!(p.top(), "a");
    }
    #[test]
    fn simple_3() {
        assert_eq!(
            RelPath::parse("run_once/01.sql")
                .unwrap()
                .with_suffix(".done")
                .as_str(),
            "run_once/01.sql.done"
        );
    }
    #[test]
    fn bad_dotdot() {
        assert!(RelPath::parse("../etc/passwd").is_err());
        assert!(RelPath::parse("a/../../b").is_err());
        assert!(RelPath::parse("a/./b").is_err());
    }
    #[test]
    fn bad_absolute() {
        assert!(RelPath::parse("/etc/passwd").is_err());
    }
    #[test]
    fn bad_drive_and_backslash() {
        assert!(RelPath::parse("C:/x").is_err());
        assert!(RelPath::parse("c:x").is_err());
        assert!(RelPath::parse("a\\..\\b").is_err());
    }
    #[test]
    fn bad_nul_and_empty() {
        assert!(RelPath::parse("a\0b").is_err());
        assert!(RelPath::parse("").is_err());
        assert!(RelPath::parse("a//b").is_err());
        assert!(RelPath::parse("a/").is_err());
    }
    #[test]
    fn bad_reserved() {
        for raw in [
            "staging/x",
            ".upkeep/state.db",
            "upkeep.toml",
            "inbox/a.zip",
            "upkeep-manifest.json",
            "x.php.bak",
            "run_once/a.sql.done",
        ] {
            assert!(
                RelPath::parse_release_file(raw).is_err(),
                "{raw} should be refused"
            );
        }
        assert!(RelPath::parse_release_file("docs/staging/x").is_ok());
    }
    #[test]
    fn folded_collides() {
        assert_eq!(
            RelPath::parse("A/B.txt").unwrap().folded(),
            RelPath::parse("a/b.TXT").unwrap().folded()
        );
    }
}
