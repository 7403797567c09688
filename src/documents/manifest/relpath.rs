//! `RelPath`: the only way a path from a manifest, an archive entry, a form or a URL reaches the
//! filesystem. It is parsed once, refuses anything that could resolve outside the instance root,
//! and deliberately does not deref to `str`, so that callers choose `as_str()` or `under()` on
//! purpose.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::base::error::{Error, Result};

/// Top-level names that belong to upkeep itself, never to a release.
pub const RESERVED_TOP: &[&str] = &["staging", "inbox", ".upkeep", "upkeep.toml"];
/// The suffix of a file's previous version kept by a swap.
pub const BAK: &str = ".bak";
/// The suffix of a run_once task that ran.
pub const DONE: &str = ".done";

/// The one rule for upkeep's own names, which are never part of the live tree (never
/// fingerprinted, planned or shipped by a release): its working folders and files at the top
/// (`at_top`), and backups and finished tasks anywhere.
pub fn is_reserved_name(name: &[u8], at_top: bool) -> bool {
    (at_top && RESERVED_TOP.iter().any(|r| r.as_bytes() == name))
        || name.ends_with(BAK.as_bytes())
        || name.ends_with(DONE.as_bytes())
}

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
        if let Some(reason) = drive_letter(raw) {
            return Err(bad(reason));
        }
        for comp in raw.split('/') {
            if let Some(reason) = bad_component(comp) {
                return Err(bad(reason));
            }
        }
        Ok(RelPath(raw.to_string()))
    }

    /// `parent/name` (or `name` at the top) for a name read from a directory: the same rules as
    /// [`RelPath::parse`], checking only the new component, since a walk builds one per file.
    pub fn child(parent: Option<&RelPath>, name: &std::ffi::OsStr) -> Result<Self> {
        use std::os::unix::ffi::OsStrExt;
        let shown = || match parent {
            Some(p) => format!("{p}/{}", name.to_string_lossy()),
            None => name.to_string_lossy().into_owned(),
        };
        let bad = |reason: &str| Error::UnsafePath {
            path: shown(),
            reason: reason.to_string(),
        };
        let name = std::str::from_utf8(name.as_bytes())
            .map_err(|_| bad("file name is not valid UTF-8"))?;
        let reason = match parent {
            None => drive_letter(name),
            Some(p) if p.0.len() + 1 + name.len() > 4096 => Some("longer than 4096 bytes"),
            Some(_) => None,
        };
        if let Some(reason) = reason.or_else(|| bad_component(name)) {
            return Err(bad(reason));
        }
        Ok(RelPath(match parent {
            Some(p) => {
                let mut s = String::with_capacity(p.0.len() + 1 + name.len());
                s.push_str(&p.0);
                s.push('/');
                s.push_str(name);
                s
            }
            None => name.to_string(),
        }))
    }

    /// Parse a path that must be a file of a release: on top of [`RelPath::parse`], refuses
    /// upkeep's own working folders and the signed manifest's names.
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
        if RESERVED_TOP.contains(&self.top()) {
            return bad(
                "aimed at one of upkeep's own folders (staging/, inbox/, .upkeep/, upkeep.toml)",
            );
        }
        if self.0 == MANIFEST_NAME || self.0 == SIGNATURE_NAME {
            return bad("reserved for the signed manifest");
        }
        // `NAME.bak` and `NAME.done` are fine: real releases ship them (Drupal's test
        // fixtures), and a site keeps its backups where they never collide with one.
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

    /// Whether this path below `root` is reached without passing through a symbolic link (the
    /// last component included): what upkeep serves or writes never leads out of the folder by
    /// a link (see [`crate::base::beneath`]).
    pub fn no_links_under(&self, root: &Path) -> bool {
        crate::base::beneath::no_links(root, Path::new(&self.0)).is_ok()
    }

    /// Open this regular file below `root` for reading, following no link on the way.
    pub fn open_under(&self, root: &Path) -> std::io::Result<std::fs::File> {
        crate::base::beneath::open(root, Path::new(&self.0))
    }

    /// The path with a suffix appended to its last component (`a/b.php` -> `a/b.php.bak`).
    pub fn with_suffix(&self, suffix: &str) -> RelPath {
        RelPath(format!("{}{}", self.0, suffix))
    }

    /// Whether this path is one of upkeep's own (see [`is_reserved_name`]).
    pub fn is_reserved(&self) -> bool {
        is_reserved_name(self.top().as_bytes(), true)
            || is_reserved_name(
                self.0.rsplit('/').next().unwrap_or_default().as_bytes(),
                false,
            )
    }

    /// The folder holding this path; `None` at the top.
    pub fn parent(&self) -> Option<RelPath> {
        self.0.rsplit_once('/').map(|(d, _)| RelPath(d.to_string()))
    }

    /// The first component.
    pub fn top(&self) -> &str {
        self.0.split('/').next().unwrap_or_default()
    }
}

/// Why one path component is refused, if it is.
fn bad_component(comp: &str) -> Option<&'static str> {
    match comp {
        "" => Some("empty path component"),
        "." | ".." => Some("`.` or `..` component"),
        c if c.len() > 255 => Some("component longer than 255 bytes"),
        c if c.contains('\\') => Some("backslash in name"),
        c if c.chars().any(|c| c.is_control()) => Some("NUL or control character in name"),
        c if c.contains('/') => Some("slash in a name"),
        _ => None,
    }
}

/// `C:...`: a drive letter, which would make the path absolute on Windows.
fn drive_letter(raw: &str) -> Option<&'static str> {
    let b = raw.as_bytes();
    (b.len() >= 2 && b[1] == b':' && b[0].is_ascii_alphabetic()).then_some("drive letter")
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
        ] {
            assert!(
                RelPath::parse_release_file(raw).is_err(),
                "{raw} should be refused"
            );
        }
        // A release may ship any other name, backups' and done-marks' included (Drupal does).
        for raw in ["docs/staging/x", "x.php.bak", "run_once/a.sql.done"] {
            assert!(RelPath::parse_release_file(raw).is_ok(), "{raw}");
        }
    }
    #[test]
    fn child_checks_the_new_name_like_parse() {
        use std::ffi::OsStr;
        let top = RelPath::child(None, OsStr::new("a")).unwrap();
        assert_eq!(top.as_str(), "a");
        let below = RelPath::child(Some(&top), OsStr::new("b.php")).unwrap();
        assert_eq!(below.as_str(), "a/b.php");
        for bad in ["x\\y", "x\ny", "..", ".", "", "s/t", &"n".repeat(256)] {
            assert!(
                RelPath::child(Some(&top), OsStr::new(bad)).is_err(),
                "{bad:?}"
            );
            // A slash in a name read from a directory cannot happen; in a path it separates.
            if !bad.contains('/') {
                assert!(RelPath::parse(&format!("a/{bad}")).is_err(), "{bad:?}");
            }
        }
        // A drive letter only means something at the top.
        assert!(RelPath::child(None, OsStr::new("c:x")).is_err());
        assert!(RelPath::child(Some(&top), OsStr::new("c:x")).is_ok());
        let deep = RelPath::parse(&vec!["d".repeat(200); 20].join("/")).unwrap();
        assert!(RelPath::child(Some(&deep), OsStr::new(&"e".repeat(100))).is_err());
        use std::os::unix::ffi::OsStrExt;
        assert!(RelPath::child(None, OsStr::from_bytes(b"caf\xe9")).is_err());
    }
    #[test]
    fn folded_collides() {
        assert_eq!(
            RelPath::parse("A/B.txt").unwrap().folded(),
            RelPath::parse("a/b.TXT").unwrap().folded()
        );
    }
}
