//! `upkeep publish`: a release folder becomes a signed release in a reference repository.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rayon::prelude::*;

use super::shrink;
use crate::base::error::{Error, IoContext, Result};
use crate::base::fsutil::write_atomic;
use crate::documents::forms::{self, Forms};
use crate::documents::manifest::relpath::{MANIFEST_NAME, SIGNATURE_NAME};
use crate::documents::manifest::{
    self, FORMAT, FileEntry, Manifest, Pointer, SecretKey, Sha256, digest,
};
use crate::documents::repo;
use crate::documents::tree::{self, Walk};
use std::collections::{HashMap, HashSet};

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
    /// The smaller forms to store beside the objects.
    pub shrink: Shrink,
}

/// Which smaller forms publishing stores (see [`crate::documents::forms`]).
#[derive(Clone, Debug)]
pub struct Shrink {
    /// Store each object compressed too.
    pub compress: bool,
    /// Deltas against the same paths in this many previous releases (0: none).
    pub deltas: usize,
    /// zstd level for both.
    pub level: i32,
    /// No delta for a file whose old or new content is larger: both are held in memory.
    pub delta_max: u64,
}

impl Default for Shrink {
    fn default() -> Self {
        Shrink {
            compress: true,
            deltas: 3,
            level: 12,
            delta_max: crate::documents::forms::DELTA_MAX_DEFAULT,
        }
    }
}

/// What the smaller forms cost and save.
#[derive(Debug, Default, serde::Serialize)]
pub struct FormsMade {
    /// Objects of this release with a compressed form (made now or before).
    pub compressed: usize,
    /// Their raw bytes.
    pub compressed_raw: u64,
    /// Their compressed bytes.
    pub compressed_bytes: u64,
    /// Deltas listed for this release (made now or before).
    pub deltas: usize,
    /// What the files they rebuild weigh whole.
    pub delta_whole: u64,
    /// The deltas' bytes.
    pub delta_bytes: u64,
    /// Changed files left without a delta because they are larger than the limit.
    pub too_large: usize,
    /// Disk the forms made now take.
    pub disk_added: u64,
    /// Seconds spent compressing and building deltas.
    pub seconds: f64,
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
    /// The smaller forms stored.
    pub forms: FormsMade,
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
    let (found, _) = tree::walk(
        p.dir,
        &Walk {
            strict: true,
            ..Walk::default()
        },
    )?;
    for f in &found {
        f.rel.check_release_file()?;
        crate::base::fsutil::readable(&f.path(p.dir))?;
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
                crate::base::fsutil::make_readable(tmp.as_file(), tmp.path())?;
                tmp.persist(&obj)
                    .map_err(|e| e.error)
                    .ctx("store object", &obj)?;
            }
            use std::os::unix::fs::PermissionsExt;
            let exec = std::fs::symlink_metadata(&src)
                .ctx("stat", &src)?
                .permissions()
                .mode()
                & 0o111
                != 0;
            Ok((
                FileEntry {
                    path: f.rel.clone(),
                    size: h.size,
                    md5: h.md5,
                    sha256: h.sha256,
                    exec,
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
    // Before the pointer names the release, so that a site finds its forms listed.
    let forms = shrink(p, &m, pointer.as_ref())?;

    let zip = p.repo.join(repo::zip_path(p.version));
    write_zip(&zip, p.dir, &m, &bytes, &sig)?;
    write_atomic(
        &p.repo.join(repo::manifest_sig_path(p.version)),
        sig.as_bytes(),
    )?;
    shrink::write_with_gzip(&p.repo.join(repo::manifest_path(p.version)), &bytes)?;
    let manifest_deltas = manifest_deltas(p, pointer.as_ref(), &bytes)?;

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
        manifest_deltas,
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
        forms,
    })
}

/// Deltas of the new manifest against the manifests of the last releases (as many as
/// `--deltas`), kept when smaller than the gzipped manifest; the versions they start from.
fn manifest_deltas(p: &Publish, pointer: Option<&Pointer>, new: &[u8]) -> Result<Vec<String>> {
    let Some(ptr) = pointer else {
        return Ok(Vec::new());
    };
    let whole = forms::gzip(new).len();
    let mut from = Vec::new();
    for old in ptr.releases.iter().rev().take(p.shrink.deltas) {
        let Ok(base) = std::fs::read(p.repo.join(repo::manifest_path(old))) else {
            continue;
        };
        if (base.len() + new.len()) as u64 > 2 * p.shrink.delta_max {
            continue;
        }
        let d = shrink::make_delta(&base, new, p.shrink.level.max(19))?;
        if d.len() < whole {
            write_atomic(&p.repo.join(forms::manifest_delta_path(p.version, old)), &d)?;
            from.push(old.clone());
        }
    }
    Ok(from)
}

/// A release's manifest as this repository holds it (the publisher's own files, not checked).
fn stored_manifest(repo_dir: &Path, version: &str) -> Option<Manifest> {
    let b = std::fs::read(repo_dir.join(repo::manifest_path(version))).ok()?;
    serde_json::from_slice(&b).ok()
}

fn stored_forms(repo_dir: &Path, version: &str) -> Option<Forms> {
    let b = std::fs::read(repo_dir.join(forms::forms_path(version))).ok()?;
    serde_json::from_slice(&b).ok()
}

/// Write `bytes` to `rel` in the repository unless it is there; the bytes it takes.
fn store(repo_dir: &Path, rel: &str, bytes: &[u8]) -> Result<u64> {
    let dest = repo_dir.join(rel);
    if dest.exists() {
        return Ok(0);
    }
    let dir = dest.parent().expect("repository paths have a parent");
    std::fs::create_dir_all(dir).ctx("create folder", dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).ctx("create temporary file in", dir)?;
    tmp.write_all(bytes).ctx("write", tmp.path())?;
    crate::base::fsutil::make_readable(tmp.as_file(), tmp.path())?;
    tmp.persist(&dest)
        .map_err(|e| e.error)
        .ctx("store", &dest)?;
    Ok(bytes.len() as u64)
}

/// (object, raw size, compressed size when worth it, disk added).
type Compressed = (Sha256, u64, Option<u64>, u64);
/// (old object, new object, new size, delta size, disk added).
type Delta = (Sha256, Sha256, u64, u64, u64);

/// Store the compressed objects and the deltas of release `m` and list them in its forms.json.
/// Both keep only what is smaller than what a site would fetch otherwise; objects already
/// decided by an earlier release (compressed or found not worth it) are not compressed again.
fn shrink(p: &Publish, m: &Manifest, pointer: Option<&Pointer>) -> Result<FormsMade> {
    let started = std::time::Instant::now();
    let s = &p.shrink;
    let mut made = FormsMade::default();
    if !s.compress && s.deltas == 0 {
        return Ok(made);
    }
    let previous: Vec<&String> = pointer
        .map(|ptr| ptr.releases.iter().rev().take(s.deltas.max(1)).collect())
        .unwrap_or_default();
    let olds: Vec<Manifest> = previous
        .iter()
        .filter_map(|v| stored_manifest(p.repo, v))
        .collect();
    // Objects an earlier release already decided: their compressed form is there or not worth it.
    let mut decided: HashMap<Sha256, Option<u64>> = HashMap::new();
    if let Some(v) = previous.first()
        && let (Some(old), Some(f)) = (olds.first(), stored_forms(p.repo, v))
        && !f.zst.is_empty()
    {
        for e in &old.files {
            decided.insert(e.sha256, f.zst_of(&e.sha256));
        }
    }
    let mut unique: Vec<&FileEntry> = Vec::new();
    let mut seen = HashSet::new();
    for f in &m.files {
        if seen.insert(f.sha256) {
            unique.push(f);
        }
    }

    let mut forms = Forms {
        format: forms::FORMS_FORMAT,
        ..Forms::default()
    };
    if s.compress {
        let zst: Vec<Result<Compressed>> = unique
            .par_iter()
            .map(|f| {
                let rel = forms::zst_path(&f.sha256);
                if let Ok(md) = std::fs::metadata(p.repo.join(&rel)) {
                    return Ok((f.sha256, f.size, Some(md.len()), 0));
                }
                if let Some(known) = decided.get(&f.sha256) {
                    return Ok((f.sha256, f.size, *known, 0));
                }
                let obj = p.repo.join(repo::object_path(&f.sha256));
                let mut out = Vec::new();
                shrink::compress_file(&obj, &mut out, s.level)?;
                // Worth a file only when it saves a tenth: a site then fetches fewer bytes.
                if f.size < 64 || out.len() as u64 * 10 > f.size * 9 {
                    return Ok((f.sha256, f.size, None, 0));
                }
                let added = store(p.repo, &rel, &out)?;
                Ok((f.sha256, f.size, Some(out.len() as u64), added))
            })
            .collect();
        for r in zst {
            let (sha, raw, z, added) = r?;
            made.disk_added += added;
            if let Some(z) = z {
                forms.zst.insert(forms::key(&sha), z);
                made.compressed += 1;
                made.compressed_raw += raw;
                made.compressed_bytes += z;
            }
        }
    }

    if s.deltas > 0 {
        // (old, new, new size) for each file whose path held other content in a recent release.
        let mut pairs: Vec<(Sha256, Sha256, u64)> = Vec::new();
        let mut paired = HashSet::new();
        for old in olds.iter().take(s.deltas) {
            let by_path: HashMap<&str, &FileEntry> =
                old.files.iter().map(|e| (e.path.as_str(), e)).collect();
            for f in &m.files {
                let Some(o) = by_path.get(f.path.as_str()) else {
                    continue;
                };
                if o.sha256 == f.sha256 || !paired.insert((o.sha256, f.sha256)) {
                    continue;
                }
                if o.size > s.delta_max || f.size > s.delta_max {
                    made.too_large += 1;
                    continue;
                }
                pairs.push((o.sha256, f.sha256, f.size));
            }
        }
        let zst = &forms;
        let built: Vec<Result<Option<Delta>>> = pairs
            .par_iter()
            .map(|&(old, new, size)| {
                let rel = forms::delta_path(&old, &new);
                if let Ok(md) = std::fs::metadata(p.repo.join(&rel)) {
                    return Ok(Some((old, new, size, md.len(), 0)));
                }
                let read = |sha: &Sha256| {
                    let path = p.repo.join(repo::object_path(sha));
                    std::fs::read(&path).ctx("read", &path)
                };
                let d = shrink::make_delta(&read(&old)?, &read(&new)?, s.level)?;
                // Kept only when smaller than the form a site would fetch otherwise.
                let otherwise = zst.zst_of(&new).unwrap_or(size);
                if d.len() as u64 >= otherwise {
                    return Ok(None);
                }
                let added = store(p.repo, &rel, &d)?;
                Ok(Some((old, new, size, d.len() as u64, added)))
            })
            .collect();
        for r in built {
            if let Some((old, new, size, n, added)) = r? {
                forms
                    .deltas
                    .entry(forms::key(&new))
                    .or_default()
                    .insert(forms::key(&old), n);
                made.deltas += 1;
                made.delta_whole += size;
                made.delta_bytes += n;
                made.disk_added += added;
            }
        }
    }
    shrink::write_with_gzip(
        &p.repo.join(forms::forms_path(p.version)),
        &serde_json::to_vec(&forms).expect("forms serialise"),
    )?;
    made.seconds = started.elapsed().as_secs_f64();
    Ok(made)
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
    crate::base::fsutil::make_readable(&f, zip_path)?;
    f.sync_all().ctx("sync", zip_path)?;
    tmp.persist(zip_path)
        .map_err(|e| e.error)
        .ctx("rename into place", zip_path)?;
    Ok(())
}
