//! Release archives (an uploaded zip, or one dropped in `inbox/`): every entry name is parsed into
//! a `RelPath` before anything is written, sizes and ratios are capped, the signed manifest inside
//! is verified before any file is extracted, and each extracted file must match it.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use crate::config::Limits;
use crate::error::{Error, IoContext, Result};
use crate::manifest::relpath::{MANIFEST_NAME, SIGNATURE_NAME};
use crate::manifest::{FileEntry, PublicKey, RelPath, VerifiedManifest, digest};
use crate::progress::Progress;

const S_IFMT: u32 = 0o170000;
const S_IFLNK: u32 = 0o120000;
/// Entries smaller than this are not held to the compression-ratio cap (tiny files of zeros
/// compress very well without being bombs).
const RATIO_FLOOR: u64 = 1 << 20;

/// An archive whose names, sizes and signed manifest passed every check.
pub struct Archive {
    zip: zip::ZipArchive<File>,
    name: String,
    entries: HashMap<RelPath, usize>,
}

fn refuse(name: &str, reason: impl Into<String>) -> Error {
    Error::Archive {
        archive: name.to_string(),
        reason: reason.into(),
    }
}

impl Archive {
    /// Open and check an archive.
    /// Open and check an archive; returns it with the verified manifest it carries (handed out,
    /// not kept: a release of 100,000 files has a manifest of tens of megabytes).
    pub fn open(path: &Path, limits: &Limits, key: &PublicKey) -> Result<(Self, VerifiedManifest)> {
        let name = path.display().to_string();
        let file = File::open(path).ctx("open", path)?;
        let mut zip = zip::ZipArchive::new(file)
            .map_err(|e| refuse(&name, format!("not a readable zip file ({e})")))?;
        if zip.len() as u64 > limits.max_archive_entries {
            return Err(refuse(
                &name,
                format!(
                    "{} entries, more than the limit of {} (limits.max_archive_entries)",
                    zip.len(),
                    limits.max_archive_entries
                ),
            ));
        }

        // Pass 1: names only, to find the manifest and an optional single top folder.
        let mut names = Vec::with_capacity(zip.len());
        for i in 0..zip.len() {
            let e = zip
                .by_index_raw(i)
                .map_err(|e| refuse(&name, format!("entry {i}: {e}")))?;
            let raw = std::str::from_utf8(e.name_raw())
                .map_err(|_| refuse(&name, format!("entry {i} has a name that is not UTF-8")))?;
            names.push(raw.to_string());
        }
        let prefix = if names.iter().any(|n| n == MANIFEST_NAME) {
            String::new()
        } else {
            let tops: HashSet<&str> = names.iter().filter_map(|n| n.split('/').next()).collect();
            match tops.into_iter().collect::<Vec<_>>()[..] {
                [top] if names.iter().any(|n| *n == format!("{top}/{MANIFEST_NAME}")) => {
                    format!("{top}/")
                }
                _ => {
                    return Err(Error::Signature {
                        what: name.clone(),
                        reason: format!(
                            "the archive carries no {MANIFEST_NAME} (at its root or under a single top folder): it is not a signed upkeep release"
                        ),
                    });
                }
            }
        };

        // Pass 2: every entry's name, type and sizes.
        let mut entries = HashMap::new();
        let mut folded = HashSet::new();
        let mut total: u64 = 0;
        let (mut manifest_idx, mut sig_idx) = (None, None);
        for (i, raw) in names.iter().enumerate() {
            let e = zip
                .by_index_raw(i)
                .map_err(|e| refuse(&name, format!("entry {raw:?}: {e}")))?;
            let Some(inner) = raw.strip_prefix(prefix.as_str()) else {
                return Err(refuse(
                    &name,
                    format!("entry {raw:?} lies outside the archive's top folder {prefix:?}"),
                ));
            };
            if e.is_dir() {
                if !inner.is_empty() {
                    RelPath::parse(inner.trim_end_matches('/'))
                        .map_err(|err| refuse(&name, format!("entry {raw:?}: {err}")))?;
                }
                continue;
            }
            if e.unix_mode().is_some_and(|m| m & S_IFMT == S_IFLNK) {
                return Err(refuse(
                    &name,
                    format!("entry {raw:?} is a symbolic link; releases hold regular files only"),
                ));
            }
            let size = e.size();
            total = total.saturating_add(size);
            if total > limits.max_archive_bytes {
                return Err(refuse(
                    &name,
                    format!(
                        "declares more than {} bytes uncompressed (limits.max_archive_bytes)",
                        limits.max_archive_bytes
                    ),
                ));
            }
            let ratio = size / e.compressed_size().max(1);
            if size > RATIO_FLOOR && ratio > limits.max_compression_ratio {
                return Err(refuse(
                    &name,
                    format!(
                        "entry {raw:?} expands {ratio} times, more than the limit of {} (limits.max_compression_ratio): a zip bomb?",
                        limits.max_compression_ratio
                    ),
                ));
            }
            if inner == MANIFEST_NAME {
                manifest_idx = Some(i);
                continue;
            }
            if inner == SIGNATURE_NAME {
                sig_idx = Some(i);
                continue;
            }
            let rel = RelPath::parse_release_file(inner)
                .map_err(|err| refuse(&name, format!("entry {raw:?}: {err}")))?;
            if !folded.insert(rel.folded()) {
                return Err(refuse(
                    &name,
                    format!("entry {raw:?} appears twice (names may differ only in case)"),
                ));
            }
            entries.insert(rel, i);
        }

        let read_small =
            |zip: &mut zip::ZipArchive<File>, i: usize, what: &str| -> Result<Vec<u8>> {
                let mut e = zip
                    .by_index(i)
                    .map_err(|e| refuse(&name, format!("{what}: {e}")))?;
                let mut out = Vec::new();
                (&mut e)
                    .take(256 << 20)
                    .read_to_end(&mut out)
                    .map_err(|e| refuse(&name, format!("{what}: {e}")))?;
                Ok(out)
            };
        let manifest_bytes = read_small(
            &mut zip,
            manifest_idx.expect("found in pass 1"),
            MANIFEST_NAME,
        )?;
        let sig = match sig_idx {
            Some(i) => {
                String::from_utf8_lossy(&read_small(&mut zip, i, SIGNATURE_NAME)?).into_owned()
            }
            None => {
                return Err(Error::Signature {
                    what: name.clone(),
                    reason: format!("the archive has no {SIGNATURE_NAME}"),
                });
            }
        };
        let manifest = VerifiedManifest::verify(
            manifest_bytes,
            sig,
            key,
            &format!("{name}: {MANIFEST_NAME}"),
        )?;

        for (rel, &i) in &entries {
            let Some(m) = manifest.entry(rel) else {
                return Err(refuse(
                    &name,
                    format!("entry {rel} is not listed in the signed manifest"),
                ));
            };
            let e = zip
                .by_index_raw(i)
                .map_err(|e| refuse(&name, e.to_string()))?;
            if e.size() != m.size {
                return Err(refuse(
                    &name,
                    format!(
                        "entry {rel} declares {} bytes, the signed manifest says {}",
                        e.size(),
                        m.size
                    ),
                ));
            }
        }
        Ok((Archive { zip, name, entries }, manifest))
    }

    /// Extract the given files into `staging`, each checked against the manifest on the way.
    pub fn extract(
        &mut self,
        files: &[&FileEntry],
        staging: &Path,
        progress: &Progress,
        mut done: impl FnMut(&FileEntry, &Path) -> Result<()>,
    ) -> Result<()> {
        let mut buf = vec![0u8; 256 * 1024];
        for f in files {
            let Some(&i) = self.entries.get(&f.path) else {
                return Err(refuse(
                    &self.name,
                    format!("the archive lacks {}, which this update needs", f.path),
                ));
            };
            let dest = f.path.under(staging);
            let dir = dest.parent().expect("a RelPath under staging has a parent");
            std::fs::create_dir_all(dir).ctx("create folder", dir)?;
            let mut tmp =
                tempfile::NamedTempFile::new_in(dir).ctx("create temporary file in", dir)?;
            let mut e = self
                .zip
                .by_index(i)
                .map_err(|e| refuse(&self.name, format!("{}: {e}", f.path)))?;
            let mut h = digest::Hasher::default();
            // Read one byte past the declared size so that a lying header is caught.
            let mut limited = (&mut e).take(f.size + 1);
            let mut seen = 0u64;
            loop {
                let n = limited
                    .read(&mut buf)
                    .map_err(|err| refuse(&self.name, format!("{}: {err}", f.path)))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                seen += n as u64;
                if seen > f.size {
                    return Err(refuse(
                        &self.name,
                        format!(
                            "entry {} holds more bytes than its size header says: refused",
                            f.path
                        ),
                    ));
                }
                tmp.write_all(&buf[..n]).ctx("write", tmp.path())?;
                progress.add_bytes(n as u64);
            }
            let got = h.finish();
            if got.size != f.size || got.sha256 != f.sha256 {
                return Err(refuse(
                    &self.name,
                    format!(
                        "entry {} does not match the signed manifest (SHA-256 or size differs)",
                        f.path
                    ),
                ));
            }
            // Staged files go live: readable by the web server, like files copied by hand.
            crate::fsutil::make_readable(tmp.as_file(), tmp.path())?;
            tmp.persist(&dest)
                .map_err(|e| e.error)
                .ctx("rename into place", &dest)?;
            progress.add_file();
            done(f, &dest)?;
        }
        Ok(())
    }
}
