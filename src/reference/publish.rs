//! `upkeep publish`: a release folder becomes a signed release in a reference repository.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rayon::prelude::*;

use super::repo;
use crate::error::{Error, IoContext, Result};
use crate::fingerprint::{self, Walk};
use crate::fsutil::write_atomic;
use crate::manifest::relpath::{MANIFEST_NAME, SIGNATURE_NAME};
use crate::manifest::{self, FORMAT, FileEntry, Manifest, Pointer, SecretKey, digest};

/// What to publish.
pub struct Publish<'a> {
    /// The release folder.
    pub dir: &'a Path,
    /// The new version.
    pub version: &'a str,
    /// The repository (created if missing).
    pub repo: &'a Path,
    /// The publisher's key.
    pub key: &'a SecretKey,
    /// Release notes.
    pub notes: &'a str,
    /// Days until sites refuse the manifest and pointer as stale.
    pub expires_days: u64,
    /// A security release (see [`Manifest::urgent`]).
    pub urgent: bool,
}

/// What publishing did.
#[derive(Debug, serde::Serialize)]
pub struct Published {
    /// The version.
    pub version: String,
    /// The previous latest version.
    pub previous: Option<String>,
    /// Files in the release.
    pub files: usize,
    /// Their total size.
    pub bytes: u64,
    /// Objects the repository did not have yet.
    pub new_objects: usize,
    /// The release zip.
    pub zip: PathBuf,
}

/// Read a repository's pointer, checked against the publisher's own key.
pub fn read_pointer(repo_dir: &Path, key: &SecretKey) -> Result<Option<Pointer>> {
    let p = repo_dir.join(repo::POINTER);
    if !p.exists() {
        return Ok(None);
    }
    let bytes = std::fs::read(&p).ctx("read", &p)?;
    let sig_path = repo_dir.join(repo::POINTER_SIG);
    let sig = std::fs::read_to_string(&sig_path).ctx("read", &sig_path)?;
    manifest::verify_signed(&bytes, &sig, &key.public(), &p.display().to_string()).map(Some)
}

/// The latest version named by a repository's pointer (unverified: for the publisher's own
/// tables, never for what a site installs).
pub fn latest_version(repo_dir: &Path) -> Result<Option<String>> {
    let p = repo_dir.join(repo::POINTER);
    if !p.exists() {
        return Ok(None);
    }
    let bytes = std::fs::read(&p).ctx("read", &p)?;
    Ok(serde_json::from_slice::<Pointer>(&bytes)
        .ok()
        .map(|ptr| ptr.latest))
}

/// Publish a release.
pub fn publish(p: &Publish) -> Result<Published> {
    let version = manifest::parse_version(p.version)?;
    let pointer = read_pointer(p.repo, p.key)?;
    if let Some(ptr) = &pointer {
        if ptr.releases.iter().any(|v| v == p.version) {
            return Err(Error::refused(
                format!(
                    "release {} already exists in {}",
                    p.version,
                    p.repo.display()
                ),
                "releases are immutable: publish the change under a new version",
            ));
        }
        let latest = manifest::parse_version(&ptr.latest)?;
        if version <= latest {
            return Err(Error::refused(
                format!(
                    "version {} is not newer than the latest release {}",
                    p.version, ptr.latest
                ),
                format!("choose a version above {}", ptr.latest),
            ));
        }
    }
    if !p.dir.is_dir() {
        return Err(Error::msg(format!("{} is not a folder", p.dir.display())));
    }
    let (found, _) = fingerprint::walk(
        p.dir,
        &Walk {
            strict: true,
            ..Walk::default()
        },
    )?;
    for f in &found {
        f.rel.check_release_file()?;
        fingerprint::readable(&f.path(p.dir))?;
    }
    let mut seen = std::collections::HashSet::new();
    for f in &found {
        if !seen.insert(f.rel.folded()) {
            return Err(Error::refused(
                format!(
                    "{} collides with another file whose name differs only in case",
                    f.rel
                ),
                "rename one of them: sites on case-insensitive filesystems could not hold both",
            ));
        }
    }

    // Hash and store objects on all cores; each object is written once, named by its content.
    let results: Vec<Result<(FileEntry, bool)>> = found
        .par_iter()
        .map(|f| {
            let src = f.path(p.dir);
            let h = digest::hash_file(&src)?;
            let obj = p.repo.join(repo::object_path(&h.sha256));
            let fresh = !obj.exists();
            if fresh {
                let dir = obj.parent().expect("object paths have a parent");
                std::fs::create_dir_all(dir).ctx("create folder", dir)?;
                let tmp =
                    tempfile::NamedTempFile::new_in(dir).ctx("create temporary file in", dir)?;
                std::fs::copy(&src, tmp.path()).ctx("copy", &src)?;
                // A static web server serves the repository: objects must be readable by it.
                crate::fsutil::make_readable(tmp.as_file(), tmp.path())?;
                tmp.persist(&obj)
                    .map_err(|e| e.error)
                    .ctx("store object", &obj)?;
            }
            Ok((
                FileEntry {
                    path: f.rel.clone(),
                    size: h.size,
                    md5: h.md5,
                    sha256: h.sha256,
                },
                fresh,
            ))
        })
        .collect();
    let mut files = Vec::with_capacity(results.len());
    let mut new_objects = 0;
    for r in results {
        let (e, fresh) = r?;
        new_objects += fresh as usize;
        files.push(e);
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));

    let now = SystemTime::now();
    let expires = now + Duration::from_secs(p.expires_days * 86_400);
    let m = Manifest {
        format: FORMAT,
        version: p.version.to_string(),
        date: humantime::format_rfc3339_seconds(now).to_string(),
        expires: humantime::format_rfc3339_seconds(expires).to_string(),
        previous: pointer.as_ref().map(|ptr| ptr.latest.clone()),
        notes: p.notes.to_string(),
        min_upkeep: env!("CARGO_PKG_VERSION").to_string(),
        urgent: p.urgent,
        files,
    };
    let bytes = manifest::to_bytes(&m);
    let sig = p.key.sign(&bytes);

    let zip = p.repo.join(repo::zip_path(p.version));
    write_zip(&zip, p.dir, &m, &bytes, &sig)?;
    write_atomic(
        &p.repo.join(repo::manifest_sig_path(p.version)),
        sig.as_bytes(),
    )?;
    write_atomic(&p.repo.join(repo::manifest_path(p.version)), &bytes)?;

    // The pointer goes last: until it is written, no site sees the new release.
    let mut releases = pointer
        .as_ref()
        .map(|ptr| ptr.releases.clone())
        .unwrap_or_default();
    releases.push(p.version.to_string());
    let ptr = Pointer {
        format: FORMAT,
        latest: p.version.to_string(),
        manifest_sha256: digest::sha256_bytes(&bytes),
        manifest_size: Some(bytes.len() as u64),
        date: m.date.clone(),
        expires: m.expires.clone(),
        releases,
    };
    let ptr_bytes = manifest::to_bytes(&ptr);
    write_atomic(
        &p.repo.join(repo::POINTER_SIG),
        p.key.sign(&ptr_bytes).as_bytes(),
    )?;
    write_atomic(&p.repo.join(repo::POINTER), &ptr_bytes)?;

    Ok(Published {
        version: m.version.clone(),
        previous: m.previous.clone(),
        files: m.files.len(),
        bytes: m.files.iter().map(|f| f.size).sum(),
        new_objects,
        zip,
    })
}

/// Extensions whose contents are already compressed: stored, not deflated again.
fn already_compressed(path: &str) -> bool {
    let ext = path
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    matches!(
        ext.as_str(),
        "png"
            | "jpg"
            | "jpeg"
            | "gif"
            | "webp"
            | "zip"
            | "gz"
            | "tgz"
            | "bz2"
            | "xz"
            | "zst"
            | "woff"
            | "woff2"
            | "mp4"
            | "mp3"
            | "pdf"
    )
}

fn write_zip(
    zip_path: &Path,
    dir: &Path,
    m: &Manifest,
    manifest_bytes: &[u8],
    sig: &str,
) -> Result<()> {
    let parent = zip_path.parent().expect("zip path has a parent");
    std::fs::create_dir_all(parent).ctx("create folder", parent)?;
    let tmp = tempfile::NamedTempFile::new_in(parent).ctx("create temporary file in", parent)?;
    let mut zw = zip::ZipWriter::new(std::io::BufWriter::new(
        tmp.reopen().ctx("open", tmp.path())?,
    ));
    let zerr =
        |e: zip::result::ZipError| Error::msg(format!("writing {}: {e}", zip_path.display()));
    let deflate = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(false);
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zw.start_file(MANIFEST_NAME, deflate).map_err(zerr)?;
    zw.write_all(manifest_bytes).ctx("write", zip_path)?;
    zw.start_file(SIGNATURE_NAME, stored).map_err(zerr)?;
    zw.write_all(sig.as_bytes()).ctx("write", zip_path)?;
    for f in &m.files {
        let src = f.path.under(dir);
        let mut opts = if already_compressed(f.path.as_str()) {
            stored
        } else {
            deflate
        };
        if f.size >= 0xFFFF_FFFF {
            opts = opts.large_file(true);
        }
        zw.start_file(f.path.as_str(), opts).map_err(zerr)?;
        let mut r = std::fs::File::open(&src).ctx("open", &src)?;
        std::io::copy(&mut r, &mut zw).ctx("add to zip", &src)?;
    }
    let w = zw.finish().map_err(zerr)?;
    let f = w
        .into_inner()
        .map_err(|e| e.into_error())
        .ctx("flush", zip_path)?;
    crate::fsutil::make_readable(&f, zip_path)?;
    f.sync_all().ctx("sync", zip_path)?;
    tmp.persist(zip_path)
        .map_err(|e| e.error)
        .ctx("rename into place", zip_path)?;
    Ok(())
}
