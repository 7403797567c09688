//! The release vocabulary: safe relative paths, digests, the manifest and the latest pointer, their
//! signatures, and the diff of a live tree against a release (the plan).

pub mod digest;
pub mod relpath;
pub mod sign;

use std::collections::HashSet;
use std::time::SystemTime;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

pub use digest::{Hashes, Md5, Sha256};
pub use relpath::RelPath;
pub use sign::{PublicKey, SecretKey};

use crate::base::error::{Error, Result};

/// Current manifest format number.
pub const FORMAT: u32 = 1;

/// One file of a release.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    /// Where the file lives below the instance root.
    pub path: RelPath,
    /// Size in bytes.
    pub size: u64,
    /// Fingerprint for comparison.
    pub md5: Md5,
    /// What the staged file must match.
    pub sha256: Sha256,
    /// The publisher's file was executable (a script, a cron job): sites keep or give it the
    /// execute bits. Absent (false) in manifests from before it, which old sites still read.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exec: bool,
}

/// A release's list of files and its metadata. Serialised with a fixed field order and files
/// sorted by path, so that the same tree gives the same bytes apart from the dates.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// Format number ([`FORMAT`]).
    pub format: u32,
    /// Semantic version of the release.
    pub version: String,
    /// When it was published (RFC 3339, UTC).
    pub date: String,
    /// After this instant sites refuse the manifest as stale (RFC 3339, UTC).
    pub expires: String,
    /// The release this one follows, if any.
    pub previous: Option<String>,
    /// Release notes shown to operators.
    pub notes: String,
    /// Oldest upkeep that understands this manifest.
    pub min_upkeep: String,
    /// A security release: unattended sites take it through every rollout wave at once and
    /// inside any window (set by the release key at publish, so no online key can fake it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub urgent: bool,
    /// Every file, sorted by path.
    pub files: Vec<FileEntry>,
}

/// The signed pointer to the latest release of a repository.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pointer {
    /// Format number ([`FORMAT`]).
    pub format: u32,
    /// Version of the latest release.
    pub latest: String,
    /// SHA-256 of that release's manifest bytes.
    pub manifest_sha256: Sha256,
    /// Size of those bytes: a site reads no more than this (an endless or swollen manifest
    /// is cut off at once, not at the 256 MiB ceiling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_size: Option<u64>,
    /// When the pointer was written.
    pub date: String,
    /// After this instant sites refuse the pointer as stale.
    pub expires: String,
    /// Every published version, oldest first.
    pub releases: Vec<String>,
    /// Versions whose manifest the latest one is published as a delta against (see
    /// [`crate::documents::forms::manifest_delta_path`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifest_deltas: Vec<String>,
}

/// Serialise to the stable on-disk form.
pub fn to_bytes<T: Serialize>(v: &T) -> Vec<u8> {
    let mut b = serde_json::to_vec_pretty(v).expect("manifest types always serialise");
    b.push(b'\n');
    b
}

/// Parse bytes whose detached signature is checked first; nothing is parsed from unsigned bytes.
pub fn verify_signed<T: DeserializeOwned>(
    bytes: &[u8],
    sig: &str,
    key: &PublicKey,
    what: &str,
) -> Result<T> {
    key.verify(bytes, sig, what)?;
    serde_json::from_slice(bytes).map_err(|e| Error::BadManifest {
        what: what.into(),
        reason: e.to_string(),
    })
}

/// [`verify_signed`] for a document any of `keys` may sign (a channel pointer, by any online
/// key the release key delegated). A signature none of them made and a signed document that
/// does not parse are told apart: they call for different fixes.
pub fn verify_signed_by_any<T: DeserializeOwned>(
    bytes: &[u8],
    sig: &str,
    keys: &[PublicKey],
    what: &str,
) -> Result<T> {
    let Some(key) = keys.iter().find(|k| k.verify(bytes, sig, what).is_ok()) else {
        return Err(Error::Signature {
            what: what.into(),
            reason: "it is not signed by an online key the release key delegated".into(),
        });
    };
    serde_json::from_slice(bytes).map_err(|e| Error::BadManifest {
        what: what.into(),
        reason: format!(
            "it is signed by delegated online key {}, but is not a valid document of its kind: {e}",
            key.to_text()
        ),
    })
}

/// Refuse an expired document, naming it.
pub fn check_fresh(expires: &str, what: &str, now: SystemTime) -> Result<()> {
    let t = humantime::parse_rfc3339(expires).map_err(|e| Error::BadManifest {
        what: what.into(),
        reason: format!("bad expiry date {expires:?}: {e}"),
    })?;
    if t < now {
        return Err(Error::Expired {
            what: what.into(),
            expires: expires.into(),
        });
    }
    Ok(())
}

/// Parse a version string as semver, with a message that names it.
pub fn parse_version(v: &str) -> Result<semver::Version> {
    semver::Version::parse(v).map_err(|e| {
        Error::refused(
            format!("{v:?} is not a semantic version ({e})"),
            "use versions like 1.4.0 or 2.0.0-rc.1",
        )
    })
}

/// A manifest whose signature verified against a configured key and whose rules hold. Only this
/// type can drive staging or a swap.
///
/// Its files are kept sorted by path and looked up by binary search: a map from path to entry
/// held a second copy of every path (10 MB for a release of 100,000 files).
#[derive(Clone, Debug)]
pub struct VerifiedManifest {
    manifest: Manifest,
    /// The signed bytes; `None` once dropped by [`VerifiedManifest::drop_bytes`].
    bytes: Option<Vec<u8>>,
    sig: String,
}

impl VerifiedManifest {
    /// Check the signature, parse, and validate every path.
    pub fn verify(bytes: Vec<u8>, sig: String, key: &PublicKey, what: &str) -> Result<Self> {
        let mut manifest: Manifest = verify_signed(&bytes, &sig, key, what)?;
        let bad = |reason: String| Error::BadManifest {
            what: what.into(),
            reason,
        };
        if manifest.format != FORMAT {
            return Err(bad(format!(
                "format {} is not understood by this upkeep",
                manifest.format
            )));
        }
        parse_version(&manifest.version)?;
        // Publishers write the files sorted; the order of the parsed list carries no meaning
        // (the signature covers the bytes), so an unsorted list is sorted rather than refused.
        if !manifest.files.is_sorted_by(|a, b| a.path <= b.path) {
            manifest.files.sort_by(|a, b| a.path.cmp(&b.path));
        }
        manifest.files.shrink_to_fit();
        let files = &manifest.files;
        let duplicate = |p: &RelPath| {
            bad(format!(
                "duplicate path {p} (names may differ only in case)"
            ))
        };
        // Names that fold to another name: only those with a letter that changes under folding
        // can collide with a different name, so only those are folded and remembered.
        let mut folded = HashSet::new();
        for (i, f) in files.iter().enumerate() {
            f.path.check_release_file()?;
            if i > 0 && files[i - 1].path == f.path {
                return Err(duplicate(&f.path));
            }
            let text = f.path.as_str();
            if text
                .bytes()
                .all(|b| b.is_ascii() && !b.is_ascii_uppercase())
            {
                continue;
            }
            let low = f.path.folded();
            if low != text
                && (files
                    .binary_search_by(|g| g.path.as_str().cmp(&low))
                    .is_ok()
                    || !folded.insert(low))
            {
                return Err(duplicate(&f.path));
            }
        }
        Ok(VerifiedManifest {
            manifest,
            bytes: Some(bytes),
            sig,
        })
    }

    /// The parsed manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    /// The exact signed bytes, unless dropped.
    pub fn bytes(&self) -> Option<&[u8]> {
        self.bytes.as_deref()
    }
    /// Let go of the signed bytes, keeping the verified list: for a manifest read back from
    /// state.db (where its bytes stay) that is only compared with. A release of 100,000 files
    /// has a manifest of 20 MB.
    pub fn drop_bytes(&mut self) {
        self.bytes = None;
    }
    /// The detached signature text.
    pub fn sig(&self) -> &str {
        &self.sig
    }
    /// The identity of this signed manifest: a SHA-256 of its signature, which covers every
    /// byte of it. Two manifests of the same version signed with other content differ here.
    pub fn id(&self) -> String {
        digest::sha256_bytes(self.sig.trim().as_bytes()).to_hex()[..32].to_string()
    }
    /// The release version.
    pub fn version(&self) -> &str {
        &self.manifest.version
    }
    /// The entry for a path.
    pub fn entry(&self, p: &RelPath) -> Option<&FileEntry> {
        let files = &self.manifest.files;
        files
            .binary_search_by(|f| f.path.cmp(p))
            .ok()
            .map(|i| &files[i])
    }
    /// Every file.
    pub fn files(&self) -> &[FileEntry] {
        &self.manifest.files
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(paths: &[&str]) -> Manifest {
        Manifest {
            format: FORMAT,
            version: "1.0.0".into(),
            date: "2026-01-01T00:00:00Z".into(),
            expires: "2099-01-01T00:00:00Z".into(),
            previous: None,
            notes: String::new(),
            min_upkeep: "0.1.0".into(),
            urgent: false,
            files: paths
                .iter()
                .map(|p| FileEntry {
                    path: RelPath::parse(p).unwrap(),
                    size: 1,
                    md5: Md5([0; 16]),
                    sha256: Sha256([0; 32]),
                    exec: false,
                })
                .collect(),
        }
    }

    #[test]
    fn verified_1() {
        let k = SecretKey::generate().unwrap();
        let b = to_bytes(&manifest(&["a", "b/c"]));
        let v = VerifiedManifest::verify(b.clone(), k.sign(&b), &k.public(), "m").unwrap();
        assert_eq!(v.files().len(), 2);
        assert!(v.entry(&RelPath::parse("b/c").unwrap()).is_some());
    }
    #[test]
    fn bad_case_duplicate() {
        let k = SecretKey::generate().unwrap();
        let b = to_bytes(&manifest(&["A.txt", "a.TXT"]));
        assert!(VerifiedManifest::verify(b.clone(), k.sign(&b), &k.public(), "m").is_err());
    }
    #[test]
    fn case_duplicates_are_found_in_any_order_and_exact_ones_too() {
        let k = SecretKey::generate().unwrap();
        for paths in [
            &["a.txt", "b", "A.txt"][..],
            &["X/y", "x/Y"],
            &["d/É", "d/é"],
            &["same", "same"],
        ] {
            let b = to_bytes(&manifest(paths));
            let r = VerifiedManifest::verify(b.clone(), k.sign(&b), &k.public(), "m");
            assert!(r.is_err(), "{paths:?} accepted");
        }
        let b = to_bytes(&manifest(&["z", "A/b", "a.b", "É"]));
        let v = VerifiedManifest::verify(b.clone(), k.sign(&b), &k.public(), "m").unwrap();
        let order: Vec<&str> = v.files().iter().map(|f| f.path.as_str()).collect();
        assert_eq!(order, ["A/b", "a.b", "z", "É"]);
        for p in order {
            assert!(v.entry(&RelPath::parse(p).unwrap()).is_some(), "{p}");
        }
        assert!(v.entry(&RelPath::parse("a").unwrap()).is_none());
    }
    #[test]
    fn bad_reserved_entry() {
        let k = SecretKey::generate().unwrap();
        let b = to_bytes(&manifest(&["staging/x"]));
        assert!(VerifiedManifest::verify(b.clone(), k.sign(&b), &k.public(), "m").is_err());
    }
    #[test]
    fn bad_traversal_in_json() {
        let k = SecretKey::generate().unwrap();
        let b = String::from_utf8(to_bytes(&manifest(&["x"])))
            .unwrap()
            .replace("\"x\"", "\"../x\"")
            .into_bytes();
        assert!(VerifiedManifest::verify(b.clone(), k.sign(&b), &k.public(), "m").is_err());
    }
    #[test]
    fn stale() {
        assert!(check_fresh("2000-01-01T00:00:00Z", "m", SystemTime::now()).is_err());
        assert!(check_fresh("2999-01-01T00:00:00Z", "m", SystemTime::now()).is_ok());
    }
}
