//! Tree -> fingerprints, in parallel, with a stat cache so that a warm check costs little more
//! than `stat`.

pub mod cache;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::config::{Instance, is_excluded};
use crate::error::{Error, IoContext, Result};
use crate::manifest::VerifiedManifest;
use crate::manifest::plan::{Diff, Live};
use crate::manifest::relpath::is_reserved_name;
use crate::manifest::{RelPath, digest};
use crate::state::State;

pub use cache::{CachedPrint, CachedStat, PrintCache};

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
    /// Its stat.
    pub stat: CachedStat,
}

impl Found {
    /// Its full path, below the walked folder `root`.
    pub fn path(&self, root: &Path) -> PathBuf {
        self.rel.under(root)
    }
}

/// What one directory entry turned out to be.
enum Item<T> {
    File(T),
    Dir(Listing<T>),
    Skipped(String),
}

/// What a directory holds: what the visitor made of its files, in path order and in chunks (one
/// per run of files), so that putting the listings of subdirectories together copies nothing.
struct Listing<T> {
    chunks: Vec<Vec<T>>,
    skipped: Vec<String>,
}

/// One entry of a directory being listed.
struct Entry {
    name: OsString,
    entry: std::fs::DirEntry,
    kind: std::fs::FileType,
}

impl Entry {
    /// The byte order of the full paths this entry leads to: a directory sorts as `name/`, so
    /// the listings of subdirectories, put together in this order, are sorted as a whole.
    fn order(&self, other: &Entry) -> std::cmp::Ordering {
        fn key(e: &Entry) -> impl Iterator<Item = &u8> {
            e.name
                .as_bytes()
                .iter()
                .chain(e.kind.is_dir().then_some(&b'/'))
        }
        key(self).cmp(key(other))
    }
}

/// Whether the walk of an instance leaves out a name before anything else: upkeep's own
/// folders at the top, backups and finished tasks anywhere.
fn left_out_by_name(top: bool, name: &OsStr) -> bool {
    is_reserved_name(name.as_bytes(), top)
}

/// What [`walk_with`] does with each regular file: it gets the path and the directory entry (to
/// `stat` it, or not), and returns `None` for a file that vanished meanwhile.
type Visit<'a, T> = dyn Fn(RelPath, &std::fs::DirEntry) -> Result<Option<T>> + Sync + 'a;

/// The stat of a directory entry; `None` when it was removed since the directory was read (a
/// cache file of the running site): it is not part of the tree any more.
fn stat_entry(e: &std::fs::DirEntry) -> Result<Option<CachedStat>> {
    match e.metadata() {
        Ok(md) => Ok(Some(stat_of(&md))),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).ctx("read", &e.path()),
    }
}

/// Walk `root` on all cores and hand every regular file to `visit`, which may do the file's
/// work (hash it) right there, so that the work overlaps the walk.
///
/// One task per directory; each entry is `stat`ed relative to its open directory (std's
/// `DirEntry::metadata` is an `fstatat`), not by a full path the kernel must resolve again. The
/// result comes out in path order without a sort of the whole list.
fn walk_with<T: Send>(
    root: &Path,
    opts: &Walk,
    visit: &Visit<'_, T>,
) -> Result<(Vec<T>, Vec<String>)> {
    let listing = list_dir(root, None, opts, visit)?;
    let mut out = Vec::with_capacity(listing.chunks.iter().map(Vec::len).sum());
    for chunk in listing.chunks {
        out.extend(chunk);
    }
    let mut skipped = listing.skipped;
    skipped.sort();
    Ok((out, skipped))
}

fn list_dir<T: Send>(
    root: &Path,
    dir: Option<&RelPath>,
    opts: &Walk,
    visit: &Visit<'_, T>,
) -> Result<Listing<T>> {
    let path = dir.map_or_else(|| root.to_path_buf(), |d| d.under(root));
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(&path).ctx("read", &path)? {
        let entry = entry.ctx("read", &path)?;
        let name = entry.file_name();
        if opts.instance && left_out_by_name(dir.is_none(), &name) {
            continue;
        }
        let kind = entry.file_type().ctx("read", &entry.path())?;
        entries.push(Entry { name, entry, kind });
    }
    entries.sort_unstable_by(Entry::order);
    let items: Vec<Result<Option<Item<T>>>> = entries
        .into_par_iter()
        .map(|e| {
            let rel = RelPath::child(dir, &e.name)?;
            if opts.instance
                && !opts.excludes.is_empty()
                && (rel.is_reserved() || is_excluded(&opts.excludes, &rel))
            {
                return Ok(None);
            }
            if e.kind.is_dir() {
                return Ok(Some(Item::Dir(list_dir(root, Some(&rel), opts, visit)?)));
            }
            if !e.kind.is_file() {
                let ft = e.kind;
                let kind = if ft.is_symlink() {
                    "symbolic link"
                } else if ft.is_fifo() || ft.is_socket() || ft.is_block_device() || ft.is_char_device()
                {
                    "special file"
                } else {
                    "not a regular file"
                };
                if opts.strict {
                    return Err(Error::refused(
                        format!(
                            "{} is a {kind}: a release holds regular files only",
                            e.entry.path().display()
                        ),
                        "replace it with the file it points to, or remove it from the release folder",
                    ));
                }
                return Ok(Some(Item::Skipped(format!("{rel} ({kind})"))));
            }
            Ok(visit(rel, &e.entry)?.map(Item::File))
        })
        .collect();
    let mut listing = Listing {
        chunks: Vec::new(),
        skipped: Vec::new(),
    };
    let mut run = Vec::new();
    for item in items {
        match item? {
            None => {}
            Some(Item::File(t)) => run.push(t),
            Some(Item::Dir(sub)) => {
                if !run.is_empty() {
                    listing.chunks.push(std::mem::take(&mut run));
                }
                listing.chunks.extend(sub.chunks);
                listing.skipped.extend(sub.skipped);
            }
            Some(Item::Skipped(s)) => listing.skipped.push(s),
        }
    }
    if !run.is_empty() {
        listing.chunks.push(run);
    }
    Ok(listing)
}

/// Every regular file below `dir`, sorted by path, and the entries skipped.
pub fn walk(dir: &Path, opts: &Walk) -> Result<(Vec<Found>, Vec<String>)> {
    walk_with(dir, opts, &|rel, e| {
        Ok(stat_entry(e)?.map(|stat| Found { rel, stat }))
    })
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

/// A file's path, its fingerprint with the stat it is valid for, and whether it was computed
/// afresh (not taken from the cache).
type Printed = (RelPath, CachedPrint, bool);

/// A file of [`fingerprint_dir`]'s walk: done, or waiting because the walk got to it before the
/// cache was loaded.
enum Looked {
    Done(Printed),
    Later(Found),
}

/// A file's fingerprint from its cache entry when the stat still matches, else computed; `None`
/// when the file vanished meanwhile.
fn look(
    root: &Path,
    cached: Option<CachedPrint>,
    f: Found,
    with_sha: bool,
) -> Result<Option<Printed>> {
    if let Some(c) = cached
        && c.stat == f.stat
        && (c.sha256.is_some() || !with_sha)
    {
        return Ok(Some((f.rel, c, false)));
    }
    let path = f.path(root);
    compute(f.rel, &path, with_sha)
}

/// A file's fingerprint computed from the file itself: MD5, and SHA-256 when `with_sha` (about
/// twice the CPU; the text output shows no SHA-256). The stat comes from the open file, taken
/// before reading: a file written meanwhile shows a newer stat next time and is hashed again.
/// `None` when the file vanished since its directory was read.
fn compute(rel: RelPath, path: &Path, with_sha: bool) -> Result<Option<Printed>> {
    use std::os::unix::fs::OpenOptionsExt;
    // Not following a symbolic link put there since the directory was read.
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path);
    let mut file = match opened {
        Ok(f) => f,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).ctx("open", path),
    };
    let stat = stat_of(&file.metadata().ctx("read", path)?);
    let (md5, sha256) = if with_sha {
        let h = digest::hash_reader(&mut file).ctx("read", path)?;
        (h.md5, Some(h.sha256))
    } else {
        (digest::md5_open(&mut file, path)?.1, None)
    };
    let c = CachedPrint { stat, md5, sha256 };
    Ok(Some((rel, c, true)))
}

/// Where a manifest path lives in an instance: `run_once/X` counts as present when only
/// `run_once/X.done` is there, so a finished task is never fetched again.
/// Also says which: `true` for the `.done` name.
pub fn live_location(root: &Path, p: &RelPath) -> Option<(PathBuf, Metadata, bool)> {
    let path = p.under(root);
    if let Ok(md) = std::fs::symlink_metadata(&path) {
        return md.is_file().then_some((path, md, false));
    }
    if p.top() == "run_once" {
        let done = p.with_suffix(".done").under(root);
        if let Ok(md) = std::fs::symlink_metadata(&done) {
            return md.is_file().then_some((done, md, true));
        }
    }
    None
}

/// The MD5 fingerprints of the given paths in an instance (only the ones that exist), using and
/// refreshing the stat cache. Cost on a warm cache: one `stat` per path.
pub fn live_prints<'p>(
    inst: &Instance,
    state: &mut State,
    paths: &[&'p RelPath],
) -> Result<HashMap<&'p RelPath, Live>> {
    let known = PrintCache::decode(state.load_prints()?.unwrap_or_default());
    // Entries computed afresh, keyed by where the file was found. Gathered on the side, so that
    // the list of results (one per path of two releases) stays small.
    let fresh = std::sync::Mutex::new(Vec::new());
    let results: Vec<Option<Live>> = paths
        .par_iter()
        .map(|p| -> Result<Option<Live>> {
            if inst.excluded(p) {
                return Ok(None);
            }
            let Some((path, md, done)) = live_location(&inst.root, p) else {
                return Ok(None);
            };
            let stat = stat_of(&md);
            let key: std::borrow::Cow<'p, str> = if done {
                p.with_suffix(".done").as_str().to_string().into()
            } else {
                p.as_str().into()
            };
            if let Some(c) = known.get(&key)
                && c.stat == stat
            {
                return Ok(Some(Live {
                    size: stat.size,
                    md5: c.md5,
                }));
            }
            let (size, md5) = digest::md5_file(&path)?;
            let print = CachedPrint {
                stat,
                md5,
                sha256: None,
            };
            fresh
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((key, print));
            Ok(Some(Live { size, md5 }))
        })
        .collect::<Result<_>>()?;
    let out: HashMap<&'p RelPath, Live> = paths
        .iter()
        .zip(results)
        .filter_map(|(p, live)| Some((*p, live?)))
        .collect();
    let fresh = fresh.into_inner().unwrap_or_else(|e| e.into_inner());
    if !fresh.is_empty() {
        state.save_prints(known.merged(fresh))?;
    }
    Ok(out)
}

/// Diff the live tree against `target`, fingerprinting only the paths either release names.
pub fn diff_live(
    inst: &Instance,
    state: &mut State,
    installed: Option<&VerifiedManifest>,
    target: &VerifiedManifest,
) -> Result<Diff> {
    let excluded = |p: &RelPath| inst.excluded(p);
    let mut paths: Vec<&RelPath> = target
        .files()
        .iter()
        .map(|f| &f.path)
        .filter(|p| !excluded(p))
        .collect();
    if let Some(i) = installed {
        paths.extend(i.files().iter().map(|f| &f.path).filter(|p| !excluded(p)));
    }
    // Two sorted runs: the stable sort merges them in one pass.
    paths.sort();
    paths.dedup();
    let live = live_prints(inst, state, &paths)?;
    Ok(Diff::compute(installed, target, &live, &excluded))
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
    let opts = Walk {
        instance,
        excludes,
        strict: false,
    };
    // The stat cache loads on its own thread while the walk starts: files reached before it is
    // there wait for it, those reached after are looked up (and, if new, hashed) at once, so
    // the hashing of a cold run overlaps the walk.
    let cache = std::sync::OnceLock::new();
    if !instance {
        let _ = cache.set(PrintCache::default());
    }
    let (found, skipped, state) = std::thread::scope(|s| -> Result<_> {
        let loader = instance.then(|| {
            s.spawn(|| -> Result<State> {
                let st = State::open(&Instance::state_db_of(dir))?;
                let _ = cache.set(PrintCache::decode(st.load_prints()?.unwrap_or_default()));
                Ok(st)
            })
        });
        let walked = walk_with(dir, &opts, &|rel, e| match cache.get() {
            None => Ok(stat_entry(e)?.map(|stat| Looked::Later(Found { rel, stat }))),
            Some(c) => match c.get(rel.as_str()) {
                // Not in the cache (every file of a cold run): no `stat` by name first.
                None => Ok(compute(rel, &e.path(), with_sha)?.map(Looked::Done)),
                Some(hit) => match stat_entry(e)? {
                    Some(stat) => {
                        Ok(look(dir, Some(hit), Found { rel, stat }, with_sha)?.map(Looked::Done))
                    }
                    None => Ok(None),
                },
            },
        });
        let state = match loader {
            Some(h) => Some(
                h.join()
                    .map_err(|_| Error::msg("the cache loader panicked"))??,
            ),
            None => None,
        };
        let (found, skipped) = walked?;
        Ok((found, skipped, state))
    })?;
    let cache = cache.into_inner().unwrap_or_default();
    let found: Vec<Result<Option<Printed>>> = found
        .into_par_iter()
        .map(|l| match l {
            Looked::Done(p) => Ok(Some(p)),
            Looked::Later(f) => look(dir, cache.get(f.rel.as_str()), f, with_sha),
        })
        .collect();
    let found: Vec<Printed> = found
        .into_iter()
        .filter_map(Result::transpose)
        .collect::<Result<_>>()?;
    // A warm run with nothing new and nothing gone leaves the cache as it is: no rebuild.
    let fresh = found.iter().any(|(_, _, fresh)| *fresh);
    if let Some(st) = state
        && (fresh || cache.len() != found.len() || cache.stale())
    {
        st.save_prints(PrintCache::encode(
            found.iter().map(|(r, c, _)| (r.as_str(), c)),
        ))?;
    }
    let prints = found
        .into_iter()
        .map(|(path, c, _)| Print {
            path,
            size: c.stat.size,
            md5: c.md5,
            sha256: c.sha256.filter(|_| with_sha),
        })
        .collect();
    Ok((prints, skipped))
}

/// Make sure a path can be read, with the path in the message.
pub fn readable(path: &Path) -> Result<()> {
    std::fs::File::open(path).map(drop).ctx("read", path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, body: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }

    #[test]
    fn walk_comes_out_in_path_order_without_a_sort() {
        let dir = tempfile::tempdir().unwrap();
        // Names where the order of directory entries and the order of full paths differ:
        // `a.txt` < `a/b` < `a0` as bytes, though `a` < `a.txt` < `a0` as names.
        let names = [
            "a/b", "a/c/d", "a.txt", "a0", "a-b/c", "b", "a/b0/x", "a/b.x", "z/y/x/w", "Z",
        ];
        for n in names {
            write(dir.path(), n, n);
        }
        let (found, skipped) = walk(dir.path(), &Walk::default()).unwrap();
        let got: Vec<&str> = found.iter().map(|f| f.rel.as_str()).collect();
        let mut want = names.to_vec();
        want.sort();
        assert_eq!(got, want);
        assert!(skipped.is_empty());
        let f = found.iter().find(|f| f.rel.as_str() == "a/c/d").unwrap();
        assert_eq!(f.stat.size, 5);
        assert_eq!(
            std::fs::read_to_string(f.path(dir.path())).unwrap(),
            "a/c/d"
        );
    }

    #[test]
    fn walk_of_an_instance_leaves_out_upkeeps_own_names() {
        let dir = tempfile::tempdir().unwrap();
        for n in [
            "index.php",
            "staging/index.php",
            "inbox/x.zip",
            ".upkeep/state.db",
            "upkeep.toml",
            "lib/a.php.bak",
            "run_once/01.sql.done",
            "run_once/02.sql",
            "docs/staging/kept.txt",
            "cache/big.bin",
            "cache2/kept.bin",
        ] {
            write(dir.path(), n, "x");
        }
        std::os::unix::fs::symlink("index.php", dir.path().join("link.php")).unwrap();
        let opts = Walk {
            instance: true,
            excludes: vec!["cache/".into()],
            strict: false,
        };
        let (found, skipped) = walk(dir.path(), &opts).unwrap();
        let got: Vec<&str> = found.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(
            got,
            [
                "cache2/kept.bin",
                "docs/staging/kept.txt",
                "index.php",
                "run_once/02.sql"
            ]
        );
        assert_eq!(skipped, ["link.php (symbolic link)"]);
        let strict = Walk {
            strict: true,
            ..Walk::default()
        };
        let err = walk(dir.path(), &strict).err().unwrap().to_string();
        assert!(err.contains("link.php is a symbolic link"), "{err}");
    }

    #[test]
    fn fingerprint_dir_matches_the_files_cold_and_warm() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..300 {
            write(dir.path(), &format!("d{}/f{i}.txt", i % 7), &"y".repeat(i));
        }
        let (first, _) = fingerprint_dir(dir.path(), true).unwrap();
        assert_eq!(first.len(), 300);
        for p in &first {
            let h = digest::hash_file(&p.path.under(dir.path())).unwrap();
            assert_eq!(
                (p.size, p.md5, p.sha256.map(|s| s.0)),
                (h.size, h.md5, Some(h.sha256.0))
            );
        }
        let (plain, _) = fingerprint_dir(dir.path(), false).unwrap();
        assert!(plain.iter().all(|p| p.sha256.is_none()));
        let md5s = |v: &[Print]| {
            v.iter()
                .map(|p| (p.path.clone(), p.md5))
                .collect::<Vec<_>>()
        };
        assert_eq!(md5s(&plain), md5s(&first));
    }
}
