//! Release archives (an uploaded zip, or one dropped in `inbox/`): every entry name is parsed into
//! a `RelPath` before anything is written, sizes and ratios are capped, the signed manifest inside
//! is verified before any file is extracted, and each extracted file must match it.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::base::error::{Error, IoContext, Result};
use crate::base::progress::Progress;
use crate::documents::manifest::relpath::{MANIFEST_NAME, SIGNATURE_NAME};
use crate::documents::manifest::{FileEntry, PublicKey, RelPath, VerifiedManifest, digest};

/// Limits that keep a hostile archive from filling the disk (`[limits]` in upkeep.toml).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
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

const S_IFMT: u32 = 0o170000;
const S_IFLNK: u32 = 0o120000;
/// Entries smaller than this are not held to the compression-ratio cap (tiny files of zeros
/// compress very well without being bombs).
const RATIO_FLOOR: u64 = 1 << 20;

/// An archive whose names, sizes and signed manifest passed every check.
pub struct Archive {
    path: PathBuf,
    at: Names,
    listed: Listed,
}

/// How the archive is named in messages, and the single top folder the release sits in
/// (`site-1.2.0/`, or empty).
struct Names {
    name: String,
    prefix: String,
}

fn refuse(name: &str, reason: impl Into<String>) -> Error {
    Error::Archive {
        archive: name.to_string(),
        reason: reason.into(),
    }
}

/// The file entries of an archive: names end to end in one string, with their ends, sizes and
/// where their local headers start, plus their order by name for lookups. About 60 bytes per
/// file, where the zip crate's central directory holds 350.
#[derive(Default)]
struct Listed {
    names: String,
    ends: Vec<usize>,
    sizes: Vec<u64>,
    headers: Vec<u64>,
    by_name: Vec<u32>,
}

impl Listed {
    fn push(&mut self, name: &str, size: u64, header: u64) {
        self.names.push_str(name);
        self.ends.push(self.names.len());
        self.sizes.push(size);
        self.headers.push(header);
    }

    fn name(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.names[start..self.ends[i]]
    }

    fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        (0..self.ends.len()).map(|i| (self.name(i), self.sizes[i]))
    }

    /// Make [`Listed::find`] work.
    fn index(&mut self) {
        let mut by_name: Vec<u32> = (0..self.ends.len() as u32).collect();
        by_name.sort_unstable_by(|a, b| self.name(*a as usize).cmp(self.name(*b as usize)));
        self.by_name = by_name;
    }

    /// The entry of that name.
    fn find(&self, name: &str) -> Option<usize> {
        let k = self
            .by_name
            .binary_search_by(|i| self.name(*i as usize).cmp(name))
            .ok()?;
        Some(self.by_name[k] as usize)
    }
}

/// Copies one entry into a writer (named by the path, for messages), checked on the way.
type Reader<'a> = dyn FnMut(&mut dyn Write, &Path) -> Result<()> + 'a;

/// What an entry of the archive is.
enum Kind<'a> {
    Dir,
    Manifest,
    Signature,
    File(&'a str),
}

impl Archive {
    /// Open and check an archive; returns it with the verified manifest it carries (handed out,
    /// not kept: a release of 100,000 files has a manifest of tens of megabytes).
    ///
    /// Nothing is held per entry beyond what the zip crate keeps (its central directory): names
    /// are checked as they are read, and files are found again by name when extracted. On a
    /// release of 100,000 files, tables of our own doubled the memory of a staging.
    pub fn open(path: &Path, limits: &Limits, key: &PublicKey) -> Result<(Self, VerifiedManifest)> {
        let name = path.display().to_string();
        let file = File::open(path).ctx("open", path)?;
        let declared = declared_entries(&file);
        let mut zip = zip::ZipArchive::new(file)
            .map_err(|e| refuse(&name, format!("not a readable zip file ({e})")))?;
        // The zip crate keeps one entry per name: a second entry of the same name would pass
        // unseen (and which one a tool extracts differs). The directory's own count tells.
        if let Some(n) = declared
            && n != zip.len() as u64
        {
            return Err(refuse(
                &name,
                format!(
                    "its directory lists {n} entries but {} distinct names: an entry appears twice",
                    zip.len()
                ),
            ));
        }
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
        let prefix = find_prefix(&mut zip, &name)?;
        let at = Names { name, prefix };
        let raw_entry = |zip: &mut zip::ZipArchive<File>, i: usize| {
            zip.by_index_raw(i)
                .map(|e| {
                    let (name, dir, mode) = (e.name_raw().to_vec(), e.is_dir(), e.unix_mode());
                    (
                        name,
                        dir,
                        mode,
                        e.size(),
                        e.compressed_size(),
                        e.header_start(),
                    )
                })
                .map_err(|e| refuse(&at.name, format!("entry {i}: {e}")))
        };

        // Every entry's name, type and sizes, before anything is read from the archive. The
        // file entries are kept in one compact list (names end to end) for the check against
        // the manifest, so that the zip's central directory can go before the manifest is
        // parsed: the two together were the peak memory of staging a large release.
        let mut listed = Listed::default();
        let mut total: u64 = 0;
        let (mut manifest_idx, mut sig_idx) = (None, None);
        for i in 0..zip.len() {
            let (raw, is_dir, mode, size, compressed, header) = raw_entry(&mut zip, i)?;
            let raw = std::str::from_utf8(&raw)
                .map_err(|_| refuse(&at.name, format!("entry {i} has a name that is not UTF-8")))?;
            let kind = at.kind(raw, is_dir)?;
            if matches!(kind, Kind::Dir) {
                continue;
            }
            if mode.is_some_and(|m| m & S_IFMT == S_IFLNK) {
                return Err(refuse(
                    &at.name,
                    format!("entry {raw:?} is a symbolic link; releases hold regular files only"),
                ));
            }
            total = total.saturating_add(size);
            if total > limits.max_archive_bytes {
                return Err(refuse(
                    &at.name,
                    format!(
                        "declares more than {} bytes uncompressed (limits.max_archive_bytes)",
                        limits.max_archive_bytes
                    ),
                ));
            }
            let ratio = size / compressed.max(1);
            if size > RATIO_FLOOR && ratio > limits.max_compression_ratio {
                return Err(refuse(
                    &at.name,
                    format!(
                        "entry {raw:?} expands {ratio} times, more than the limit of {} (limits.max_compression_ratio): a zip bomb?",
                        limits.max_compression_ratio
                    ),
                ));
            }
            match kind {
                Kind::Manifest => manifest_idx = Some((i, size)),
                Kind::Signature => sig_idx = Some((i, size)),
                Kind::File(inner) => listed.push(inner, size, header),
                Kind::Dir => {}
            }
        }

        let (mi, msize) = manifest_idx.expect("found with the prefix");
        let manifest_bytes = read_small(&mut zip, &at, mi, msize, MANIFEST_NAME)?;
        let sig = match sig_idx {
            Some((i, size)) => {
                let sig = read_small(&mut zip, &at, i, size, SIGNATURE_NAME)?;
                String::from_utf8_lossy(&sig).into_owned()
            }
            None => {
                return Err(Error::Signature {
                    what: at.name.clone(),
                    reason: format!("the archive has no {SIGNATURE_NAME}"),
                });
            }
        };
        drop(zip);
        let manifest = VerifiedManifest::verify(
            manifest_bytes,
            sig,
            key,
            &format!("{}: {MANIFEST_NAME}", at.name),
        )?;

        // Every file entry is listed in the signed manifest, once, with its size.
        let files = manifest.files();
        let mut seen = vec![false; files.len()];
        for (inner, size) in listed.iter() {
            let raw = format!("{}{inner}", at.prefix);
            let Ok(k) = files.binary_search_by(|f| f.path.as_str().cmp(inner)) else {
                let folded = inner.to_lowercase();
                let twin = files.iter().any(|f| f.path.folded() == folded);
                let reason = if twin {
                    format!("entry {raw:?} appears twice (names may differ only in case)")
                } else {
                    format!("entry {inner} is not listed in the signed manifest")
                };
                return Err(refuse(&at.name, reason));
            };
            if std::mem::replace(&mut seen[k], true) {
                return Err(refuse(
                    &at.name,
                    format!("entry {raw:?} appears twice (names may differ only in case)"),
                ));
            }
            if size != files[k].size {
                return Err(refuse(
                    &at.name,
                    format!(
                        "entry {inner} declares {size} bytes, the signed manifest says {}",
                        files[k].size
                    ),
                ));
            }
        }
        drop(seen);
        listed.index();
        let path = path.to_path_buf();
        Ok((Archive { path, at, listed }, manifest))
    }
}

/// Where the signed manifest is: at the root, or under a single top folder.
fn find_prefix(zip: &mut zip::ZipArchive<File>, name: &str) -> Result<String> {
    if zip.index_for_name(MANIFEST_NAME).is_some() {
        return Ok(String::new());
    }
    let top = match zip.by_index_raw(0) {
        Ok(e) => std::str::from_utf8(e.name_raw())
            .ok()
            .and_then(|n| n.split('/').next())
            .map(str::to_string),
        Err(_) => None,
    };
    match top {
        Some(top)
            if zip
                .index_for_name(&format!("{top}/{MANIFEST_NAME}"))
                .is_some() =>
        {
            Ok(format!("{top}/"))
        }
        _ => Err(Error::Signature {
            what: name.to_string(),
            reason: format!(
                "the archive carries no {MANIFEST_NAME} (at its root or under a single top folder): it is not a signed upkeep release"
            ),
        }),
    }
}

impl Names {
    /// Classify an entry by its name, refusing any name that is not a safe release path.
    fn kind<'n>(&self, raw: &'n str, is_dir: bool) -> Result<Kind<'n>> {
        let Some(inner) = raw.strip_prefix(self.prefix.as_str()) else {
            return Err(refuse(
                &self.name,
                format!(
                    "entry {raw:?} lies outside the archive's top folder {:?}",
                    self.prefix
                ),
            ));
        };
        let bad = |err: Error| refuse(&self.name, format!("entry {raw:?}: {err}"));
        if is_dir {
            if !inner.is_empty() {
                RelPath::parse(inner.trim_end_matches('/')).map_err(bad)?;
            }
            return Ok(Kind::Dir);
        }
        Ok(match inner {
            MANIFEST_NAME => Kind::Manifest,
            SIGNATURE_NAME => Kind::Signature,
            _ => {
                RelPath::parse_release_file(inner).map_err(bad)?;
                Kind::File(inner)
            }
        })
    }
}

/// The whole of a small entry (the manifest, its signature), in a buffer of its exact size.
fn read_small(
    zip: &mut zip::ZipArchive<File>,
    at: &Names,
    i: usize,
    size: u64,
    what: &str,
) -> Result<Vec<u8>> {
    let mut e = zip
        .by_index(i)
        .map_err(|e| refuse(&at.name, format!("{what}: {e}")))?;
    let cap = 256 << 20;
    let mut out = Vec::with_capacity(size.min(cap) as usize);
    (&mut e)
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|e| refuse(&at.name, format!("{what}: {e}")))?;
    Ok(out)
}

impl Archive {
    /// Extract the given files into `staging`, each checked against the manifest on the way.
    ///
    /// Each entry is read from its local header, found through the list [`Archive::open`]
    /// kept, instead of through the zip crate's central directory, which needs 35 MB (and 80 MB
    /// while it is built) for a release of 100,000 files. Safe against the file changing since
    /// it was opened: entries are looked up by the signed manifest's paths, written only there,
    /// and every byte is checked against their SHA-256.
    pub fn extract(
        &self,
        files: &[&FileEntry],
        staging: &Path,
        progress: &Progress,
        mut done: impl FnMut(&FileEntry, &Path) -> Result<()>,
    ) -> Result<()> {
        self.each(files, progress, |f, read| {
            let dest = f.path.under(staging);
            let dir = dest.parent().expect("a RelPath under staging has a parent");
            // Never through a link in staging: the file would land outside it.
            if let Some(p) = f.path.parent() {
                crate::base::beneath::create_dir_all(staging, Path::new(p.as_str()))
                    .ctx("create folder", dir)?;
            }
            let mut tmp =
                tempfile::NamedTempFile::new_in(dir).ctx("create temporary file in", dir)?;
            let at = tmp.path().to_path_buf();
            read(&mut tmp, &at)?;
            // Staged files go live: readable by the web server, like files copied by hand.
            crate::base::fsutil::make_readable(tmp.as_file(), tmp.path())?;
            tmp.persist(&dest)
                .map_err(|e| e.error)
                .ctx("rename into place", &dest)?;
            progress.add_file();
            done(f, &dest)
        })
    }

    /// Read every given file and check it against the manifest, writing nothing: how a mirror
    /// makes sure the release zip it serves holds exactly the signed release.
    pub fn verify(&self, files: &[&FileEntry], progress: &Progress) -> Result<()> {
        self.each(files, progress, |_, read| {
            read(&mut std::io::sink(), Path::new("/dev/null"))?;
            progress.add_file();
            Ok(())
        })
    }

    /// Find each file's entry and hand `put` a reader that copies it into a writer, checked
    /// against the manifest on the way.
    fn each(
        &self,
        files: &[&FileEntry],
        progress: &Progress,
        mut put: impl FnMut(&FileEntry, &mut Reader) -> Result<()>,
    ) -> Result<()> {
        if files.is_empty() {
            return Ok(());
        }
        let name = &self.at.name;
        let file = File::open(&self.path).ctx("open", &self.path)?;
        let mut reader = std::io::BufReader::with_capacity(64 * 1024, file);
        let mut fallback: Option<zip::ZipArchive<File>> = None;
        let mut buf = vec![0u8; 256 * 1024];
        for f in files {
            let lacks = || {
                refuse(
                    name,
                    format!("the archive lacks {}, which this update needs", f.path),
                )
            };
            let k = self.listed.find(f.path.as_str()).ok_or_else(lacks)?;
            let full = format!("{}{}", self.at.prefix, f.path);
            let bad = |e: zip::result::ZipError| refuse(name, format!("{}: {e}", f.path));
            reader
                .seek(SeekFrom::Start(self.listed.headers[k]))
                .ctx("read", &self.path)?;
            match zip::read::read_zipfile_from_stream(&mut reader) {
                Ok(Some(mut e)) => {
                    if e.name_raw() != full.as_bytes() {
                        return Err(refuse(
                            name,
                            format!("{}: the entry's local header names another file", f.path),
                        ));
                    }
                    put(f, &mut |w, p| {
                        fill(&mut e, f, w, p, &mut buf, progress, name)
                    })?;
                }
                Ok(None) => return Err(lacks()),
                // An entry whose sizes follow its data (a data descriptor: zips written to a
                // pipe, or by some desktop tools) can only be read through the central
                // directory; it is read for such archives only.
                Err(zip::result::ZipError::UnsupportedArchive(_)) => {
                    let zip = match &mut fallback {
                        Some(zip) => zip,
                        None => {
                            let file = File::open(&self.path).ctx("open", &self.path)?;
                            fallback.insert(zip::ZipArchive::new(file).map_err(bad)?)
                        }
                    };
                    let i = zip.index_for_name(&full).ok_or_else(lacks)?;
                    let mut e = zip.by_index(i).map_err(bad)?;
                    put(f, &mut |w, p| {
                        fill(&mut e, f, w, p, &mut buf, progress, name)
                    })?;
                }
                Err(e) => return Err(bad(e)),
            }
            progress.check_cancelled()?;
        }
        Ok(())
    }
}

/// How many entries the end-of-central-directory record declares (zip64 included); `None`
/// when it cannot be read (the zip crate then refuses the archive anyway).
fn declared_entries(file: &File) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata().ok()?.len();
    // The record is 22 bytes plus a comment of at most 65,535.
    let tail_len = len.min(22 + 65_535);
    let mut tail = vec![0u8; tail_len as usize];
    file.read_exact_at(&mut tail, len - tail_len).ok()?;
    let at = tail.windows(4).rposition(|w| w == b"PK\x05\x06")?;
    let count = u16::from_le_bytes(tail.get(at + 10..at + 12)?.try_into().ok()?);
    if count != u16::MAX {
        return Some(count as u64);
    }
    // Zip64: a locator just before the record gives the zip64 record's offset.
    let loc = at.checked_sub(20)?;
    if tail.get(loc..loc + 4)? != b"PK\x06\x07" {
        return None;
    }
    let off = u64::from_le_bytes(tail.get(loc + 8..loc + 16)?.try_into().ok()?);
    let mut rec = [0u8; 40];
    file.read_exact_at(&mut rec, off).ok()?;
    (&rec[..4] == b"PK\x06\x06")
        .then(|| u64::from_le_bytes(rec[32..40].try_into().unwrap_or_default()))
}

/// Copy one entry into `out`, refusing it unless it is exactly the manifest's file.
fn fill(
    entry: &mut impl Read,
    f: &FileEntry,
    out: &mut dyn Write,
    out_path: &Path,
    buf: &mut [u8],
    progress: &Progress,
    name: &str,
) -> Result<()> {
    let mut h = digest::Hasher::default();
    // Read one byte past the declared size so that a lying header is caught.
    let mut limited = entry.take(f.size + 1);
    let mut seen = 0u64;
    loop {
        let n = limited
            .read(buf)
            .map_err(|err| refuse(name, format!("{}: {err}", f.path)))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        seen += n as u64;
        if seen > f.size {
            return Err(refuse(
                name,
                format!(
                    "entry {} holds more bytes than its size header says: refused",
                    f.path
                ),
            ));
        }
        out.write_all(&buf[..n]).ctx("write", out_path)?;
        progress.add_bytes(n as u64);
    }
    let got = h.finish();
    if got.size != f.size || got.sha256 != f.sha256 {
        return Err(refuse(
            name,
            format!(
                "entry {} does not match the signed manifest (SHA-256 or size differs)",
                f.path
            ),
        ));
    }
    Ok(())
}
