//! The diff of a live tree against the installed release and a target release.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{Md5, RelPath, VerifiedManifest};

/// What a live file looks like: enough to compare with a manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Live {
    /// Size in bytes.
    pub size: u64,
    /// MD5 of its contents.
    pub md5: Md5,
}

/// The lists `upkeep check` prints and `upkeep update` acts on.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Diff {
    /// The installed release, if known.
    pub installed: Option<String>,
    /// The release compared against.
    pub latest: String,
    /// In the latest release, absent from the live tree and the installed release.
    pub new: Vec<RelPath>,
    /// In the latest release and in the live tree (or the installed release), with other contents.
    pub changed: Vec<RelPath>,
    /// In the installed release and the live tree, not in the latest release.
    pub removed: Vec<RelPath>,
    /// Live files that already match the latest release.
    pub unchanged: usize,
    /// Files that match neither the installed release nor the latest: the operator changed them
    /// (or deleted them). Each also appears in `changed`, `new` or `removed`.
    pub modified: Vec<RelPath>,
}

impl Diff {
    /// Compare. `live` holds the files that exist, keyed by path, for at least every path of both
    /// manifests.
    pub fn compute(
        installed: Option<&VerifiedManifest>,
        latest: &VerifiedManifest,
        live: &HashMap<&RelPath, Live>,
    ) -> Diff {
        let mut d = Diff {
            installed: installed.map(|m| m.version().to_string()),
            latest: latest.version().to_string(),
            ..Diff::default()
        };
        for f in latest.files() {
            let here = live.get(&f.path);
            let before = installed.and_then(|m| m.entry(&f.path));
            match (here, before) {
                (Some(l), _) if l.md5 == f.md5 && l.size == f.size => d.unchanged += 1,
                (None, None) => d.new.push(f.path.clone()),
                (Some(l), Some(b)) => {
                    if l.md5 != b.md5 || l.size != b.size {
                        d.modified.push(f.path.clone());
                    }
                    d.changed.push(f.path.clone());
                }
                (Some(_), None) | (None, Some(_)) => {
                    // A local file the installed release does not know, or a release file the
                    // operator deleted: either way the operator's intent is at stake.
                    d.modified.push(f.path.clone());
                    d.changed.push(f.path.clone());
                }
            }
        }
        if let Some(inst) = installed {
            for f in inst.files() {
                if latest.entry(&f.path).is_some() {
                    continue;
                }
                if let Some(l) = live.get(&f.path) {
                    if l.md5 != f.md5 || l.size != f.size {
                        d.modified.push(f.path.clone());
                    }
                    d.removed.push(f.path.clone());
                }
            }
        }
        d.modified.sort();
        d
    }

    /// True when the live tree already is the latest release.
    pub fn up_to_date(&self) -> bool {
        self.new.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }

    /// Files to fetch into staging: new and changed.
    pub fn needed(&self) -> impl Iterator<Item = &RelPath> {
        self.new.iter().chain(self.changed.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{
        FORMAT, FileEntry, Manifest, SecretKey, Sha256, digest::Hasher, to_bytes,
    };

    fn md5_of(s: &str) -> Md5 {
        let mut h = Hasher::default();
        h.update(s.as_bytes());
        h.finish().md5
    }

    fn release(k: &SecretKey, v: &str, files: &[(&str, &str)]) -> VerifiedManifest {
        let m = Manifest {
            format: FORMAT,
            version: v.into(),
            date: "2026-01-01T00:00:00Z".into(),
            expires: "2099-01-01T00:00:00Z".into(),
            previous: None,
            notes: String::new(),
            min_upkeep: "0.1.0".into(),
            files: files
                .iter()
                .map(|(p, c)| FileEntry {
                    path: RelPath::parse(p).unwrap(),
                    size: c.len() as u64,
                    md5: md5_of(c),
                    sha256: Sha256([0; 32]),
                })
                .collect(),
        };
        let b = to_bytes(&m);
        VerifiedManifest::verify(b.clone(), k.sign(&b), &k.public(), "t").unwrap()
    }

    fn live(files: &[(&str, &str)]) -> HashMap<&'static RelPath, Live> {
        files
            .iter()
            .map(|(p, c)| {
                (
                    &*Box::leak(Box::new(RelPath::parse(p).unwrap())),
                    Live {
                        size: c.len() as u64,
                        md5: md5_of(c),
                    },
                )
            })
            .collect()
    }

    fn names(v: &[RelPath]) -> Vec<&str> {
        v.iter().map(|p| p.as_str()).collect()
    }

    #[test]
    fn lists_1() {
        let k = SecretKey::generate().unwrap();
        let a = release(
            &k,
            "1.0.0",
            &[("same", "s"), ("chg", "1"), ("gone", "g"), ("mine", "m")],
        );
        let b = release(
            &k,
            "1.1.0",
            &[("same", "s"), ("chg", "2"), ("add", "a"), ("mine", "m2")],
        );
        let d = Diff::compute(
            Some(&a),
            &b,
            &live(&[
                ("same", "s"),
                ("chg", "1"),
                ("gone", "g"),
                ("mine", "edited"),
            ]),
        );
        assert_eq!(names(&d.new), ["add"]);
        assert_eq!(names(&d.changed), ["chg", "mine"]);
        assert_eq!(names(&d.removed), ["gone"]);
        assert_eq!(names(&d.modified), ["mine"]);
        assert_eq!(d.unchanged, 1);
        assert!(!d.up_to_date());
    }
    #[test]
    fn fresh_install_2() {
        let k = SecretKey::generate().unwrap();
        let b = release(&k, "1.0.0", &[("x", "1"), ("y", "2")]);
        let d = Diff::compute(None, &b, &HashMap::new());
        assert_eq!(names(&d.new), ["x", "y"]);
        assert!(d.modified.is_empty());
    }
    #[test]
    fn up_to_date_3() {
        let k = SecretKey::generate().unwrap();
        let b = release(&k, "1.0.0", &[("x", "1")]);
        let d = Diff::compute(Some(&b), &b, &live(&[("x", "1")]));
        assert!(d.up_to_date());
        assert_eq!(d.unchanged, 1);
    }
    #[test]
    fn deleted_locally_is_modified() {
        let k = SecretKey::generate().unwrap();
        let a = release(&k, "1.0.0", &[("x", "1")]);
        let d = Diff::compute(Some(&a), &a, &HashMap::new());
        assert_eq!(names(&d.changed), ["x"]);
        assert_eq!(names(&d.modified), ["x"]);
    }
}
