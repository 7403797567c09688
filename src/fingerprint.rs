//! Tree -> fingerprints, in parallel, with a stat cache so that a warm check costs little more
//! than `stat`.

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::config::{Instance, is_excluded, is_instance_private};
use crate::error::{Error, IoContext, Result};
use crate::manifest::plan::Live;
use crate::manifest::{RelPath, digest};
use crate::state::{CachedPrint, CachedStat, State};

/// The stat fields the cache keys on.
pub fn stat_of(md: &Metadata) -> CachedStat {
    CachedStat {
        size: md.len(),
        mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
        ctime_ns: md.ctime() * 1_000_000_000 + md.ctime_nsec(),
        ino: md.ino(),
    }
}

/// How to walk a folder.
#[derive(Default, Clone)]
pub struct Walk {
    /// Leave out upkeep's own folders, `*.bak` and `*.done` (the folder is an instance root).
    pub instance: bool,
    /// Extra exclusions from `upkeep.toml`.
    pub excludes: Vec<String>,
    /// Refuse symlinks and special files instead of skipping them (publishing).
    pub strict: bool,
}

/// A regular file found by [`walk`].
pub struct Found {
    /// Its path below the walked folder.
    pub rel: RelPath,
    /// Its full path.
    pub path: PathBuf,
    /// Its stat.
    pub stat: CachedStat,
}

/// The entries of a walk, upkeep's own files filtered out by name. No per-directory sort:
/// comparing `file_name()`s cost more than the walk itself; results are sorted once at the end.
fn entries<'a>(
    dir: &'a Path,
    opts: &'a Walk,
) -> impl Iterator<Item = walkdir::Result<walkdir::DirEntry>> + Send + 'a {
    walkdir::WalkDir::new(dir)
        .follow_links(false)
        .into_iter()
        .filter_entry(move |e| {
            if e.depth() == 0 || !opts.instance {
                return true;
            }
            // Cheap name checks first; a RelPath is built only where excludes need one.
            let name = e.file_name().to_string_lossy();
            if e.depth() == 1 && crate::manifest::relpath::RESERVED_TOP.contains(&name.as_ref()) {
                return false;
            }
            if name.ends_with(".bak") || name.ends_with(".done") {
                return false;
            }
            if opts.excludes.is_empty() {
                return true;
            }
            match RelPath::from_walk(dir, e.path()) {
                Ok(rel) => !(is_instance_private(&rel) || is_excluded(&opts.excludes, &rel)),
                Err(_) => true,
            }
        })
}

/// What one walk entry is.
enum Seen {
    File(Found),
    Skipped(String),
    Dir,
}

/// Classify an entry: a regular file with its stat, a skipped one (or an error in strict mode).
fn see(dir: &Path, opts: &Walk, entry: walkdir::Result<walkdir::DirEntry>) -> Result<Seen> {
    let entry = entry.map_err(|e| {
        let path = e
            .path()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.to_path_buf());
        match e.into_io_error() {
            Some(io) => Error::Io {
                op: "read",
                path,
                source: io,
            },
            None => Error::msg(format!("{}: filesystem loop", path.display())),
        }
    })?;
    let ft = entry.file_type();
    if ft.is_dir() {
        return Ok(Seen::Dir);
    }
    let rel = RelPath::from_walk(dir, entry.path())?;
    if !ft.is_file() {
        let kind = if ft.is_symlink() {
            "symbolic link"
        } else if ft.is_fifo() || ft.is_socket() || ft.is_block_device() || ft.is_char_device() {
            "special file"
        } else {
            "not a regular file"
        };
        if opts.strict {
            return Err(Error::refused(
                format!(
                    "{} is a {kind}: a release holds regular files only",
                    entry.path().display()
                ),
                "replace it with the file it points to, or remove it from the release folder",
            ));
        }
        return Ok(Seen::Skipped(format!("{rel} ({kind})")));
    }
    let md = entry
        .metadata()
        .map_err(|e| Error::msg(format!("{}: {e}", entry.path().display())))?;
    Ok(Seen::File(Found {
        rel,
        path: entry.path().to_path_buf(),
        stat: stat_of(&md),
    }))
}

fn gather(seen: impl Iterator<Item = Result<Seen>>) -> Result<(Vec<Found>, Vec<String>)> {
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    for s in seen {
        match s? {
            Seen::File(f) => files.push(f),
            Seen::Skipped(k) => skipped.push(k),
            Seen::Dir => {}
        }
    }
    files.sort_unstable_by(|a, b| a.rel.cmp(&b.rel));
    skipped.sort();
    Ok((files, skipped))
}

/// Every regular file below `dir`, sorted by path, and the entries skipped.
pub fn walk(dir: &Path, opts: &Walk) -> Result<(Vec<Found>, Vec<String>)> {
    gather(entries(dir, opts).map(|e| see(dir, opts, e)))
}

/// [`walk`] with the `stat` calls spread over all cores (reading directories stays serial).
pub fn walk_parallel(dir: &Path, opts: &Walk) -> Result<(Vec<Found>, Vec<String>)> {
    use rayon::iter::ParallelBridge;
    let seen: Vec<Result<Seen>> = entries(dir, opts)
        .par_bridge()
        .map(|e| see(dir, opts, e))
        .collect();
    gather(seen.into_iter())
}

/// One file's fingerprint; SHA-256 only when it was asked for.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Print {
    /// Its path below the folder.
    pub path: RelPath,
    /// Size in bytes.
    pub size: u64,
    /// MD5 of the contents.
    pub md5: crate::manifest::Md5,
    /// SHA-256 of the contents, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<crate::manifest::Sha256>,
}

/// Fingerprints of every file, computed on all cores, reusing `known` where the stat still
/// matches. `with_sha` adds SHA-256; without it only MD5 is computed, which costs about half as
/// much CPU (the text output shows no SHA-256). Also returns the cache entries computed afresh.
pub fn fingerprint_files(
    files: &[Found],
    known: &HashMap<String, CachedPrint>,
    with_sha: bool,
) -> Result<(Vec<Print>, Vec<CachedPrint>, usize)> {
    let results: Vec<Result<(Print, Option<CachedPrint>)>> = files
        .par_iter()
        .map(|f| {
            if let Some(c) = known.get(f.rel.as_str())
                && c.stat == f.stat
                && (c.sha256.is_some() || !with_sha)
            {
                let p = Print {
                    path: f.rel.clone(),
                    size: f.stat.size,
                    md5: c.md5,
                    sha256: c.sha256.filter(|_| with_sha),
                };
                return Ok((p, None));
            }
            let p = if with_sha {
                let h = digest::hash_file(&f.path)?;
                Print {
                    path: f.rel.clone(),
                    size: h.size,
                    md5: h.md5,
                    sha256: Some(h.sha256),
                }
            } else {
                let (size, md5) = digest::md5_file(&f.path)?;
                Print {
                    path: f.rel.clone(),
                    size,
                    md5,
                    sha256: None,
                }
            };
            let c = CachedPrint {
                stat: f.stat,
                md5: p.md5,
                sha256: p.sha256,
            };
            Ok((p, Some(c)))
        })
        .collect();
    let mut prints = Vec::with_capacity(results.len());
    let mut entries = Vec::with_capacity(results.len());
    let mut fresh = 0;
    for r in results {
        let (p, c) = r?;
        fresh += c.is_some() as usize;
        entries.push(c.unwrap_or_else(|| known[p.path.as_str()]));
        prints.push(p);
    }
    Ok((prints, entries, fresh))
}

/// Where a manifest path lives in an instance: `run_once/X` counts as present when only
/// `run_once/X.done` is there, so a finished task is never fetched again.
pub fn live_location(root: &Path, p: &RelPath) -> Option<(PathBuf, Metadata)> {
    let path = p.under(root);
    if let Ok(md) = std::fs::symlink_metadata(&path) {
        return md.is_file().then_some((path, md));
    }
    if p.top() == "run_once" {
        let done = p.with_suffix(".done").under(root);
        if let Ok(md) = std::fs::symlink_metadata(&done) {
            return md.is_file().then_some((done, md));
        }
    }
    None
}

/// One path's fingerprint, and the cache row to store when it was computed afresh.
type Looked = (RelPath, Live, Option<CachedPrint>);

/// The MD5 fingerprints of the given paths in an instance (only the ones that exist), using and
/// refreshing the stat cache. Cost on a warm cache: one `stat` per path.
pub fn live_prints(
    inst: &Instance,
    state: &mut State,
    paths: &[&RelPath],
) -> Result<HashMap<RelPath, Live>> {
    let known = state.load_prints()?;
    let results: Vec<Result<Option<Looked>>> = paths
        .par_iter()
        .map(|p| {
            if inst.excluded(p) {
                return Ok(None);
            }
            let Some((path, md)) = live_location(&inst.root, p) else {
                return Ok(None);
            };
            let stat = stat_of(&md);
            let key = path_key(&inst.root, &path);
            if let Some(c) = known.get(&key)
                && c.stat == stat
            {
                return Ok(Some((
                    (*p).clone(),
                    Live {
                        size: stat.size,
                        md5: c.md5,
                    },
                    None,
                )));
            }
            let (size, md5) = digest::md5_file(&path)?;
            let print = CachedPrint {
                stat,
                md5,
                sha256: None,
            };
            Ok(Some(((*p).clone(), Live { size, md5 }, Some(print))))
        })
        .collect();
    let mut out = HashMap::with_capacity(paths.len());
    let mut fresh = Vec::new();
    for r in results {
        if let Some((p, live, print)) = r? {
            if let Some(print) = print {
                let key = match live_location(&inst.root, &p) {
                    Some((path, _)) => path_key(&inst.root, &path),
                    None => p.as_str().to_string(),
                };
                fresh.push((key, print));
            }
            out.insert(p, live);
        }
    }
    if !fresh.is_empty() {
        let mut all = known;
        all.extend(fresh);
        state.save_prints(&all)?;
    }
    Ok(out)
}

fn path_key(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `upkeep fingerprint DIR`: the unsigned manifest of a folder; when it is an instance root, the
/// instance's working folders are left out and the cache in state.db is used.
pub fn fingerprint_dir(dir: &Path, with_sha: bool) -> Result<(Vec<Print>, Vec<String>)> {
    let instance = dir.join("upkeep.toml").is_file() && dir.join(".upkeep").is_dir();
    let excludes = if instance {
        Instance::open(dir)?.config.exclude
    } else {
        Vec::new()
    };
    // The stat cache loads on its own thread while the tree is walked: on a warm run these are
    // the two costs, and they do not depend on each other.
    let loader = instance.then(|| {
        let db = dir.join(".upkeep/state.db");
        std::thread::spawn(move || -> Result<(State, HashMap<String, CachedPrint>)> {
            let st = State::open(&db)?;
            let known = st.load_prints()?;
            Ok((st, known))
        })
    });
    let walked = walk_parallel(
        dir,
        &Walk {
            instance,
            excludes,
            strict: false,
        },
    );
    let (state, known) = match loader {
        Some(h) => {
            let (st, known) = h
                .join()
                .map_err(|_| Error::msg("the cache loader panicked"))??;
            (Some(st), known)
        }
        None => (None, HashMap::new()),
    };
    let (files, skipped) = walked?;
    let (prints, entries, fresh) = fingerprint_files(&files, &known, with_sha)?;
    // A warm run with nothing new and nothing gone leaves the cache as it is: no rebuild.
    if let Some(st) = state
        && (fresh > 0 || known.len() != prints.len())
    {
        let cache = prints
            .iter()
            .zip(entries)
            .map(|(p, c)| (p.path.as_str().to_string(), c))
            .collect();
        st.save_prints(&cache)?;
    }
    Ok((prints, skipped))
}

/// Make sure a path can be read, with the path in the message.
pub fn readable(path: &Path) -> Result<()> {
    std::fs::File::open(path).map(drop).ctx("read", path)
}
