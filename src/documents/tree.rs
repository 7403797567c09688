//! Which files of a folder make a release: regular files only, each named by a [`RelPath`], in
//! path order; in an instance, upkeep's own names and the excluded paths are left out. The
//! publisher reads a release folder this way and a site its live tree, so both count the same
//! files.

use std::ffi::{OsStr, OsString};
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::base::error::{Error, IoContext, Result};
use crate::documents::manifest::RelPath;
use crate::documents::manifest::relpath::is_reserved_name;

/// What the stat cache remembers of one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CachedStat {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds.
    pub mtime_ns: i64,
    /// Status change time, nanoseconds.
    pub ctime_ns: i64,
    /// Inode number.
    pub ino: u64,
}

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
pub type Visit<'a, T> = dyn Fn(RelPath, &std::fs::DirEntry) -> Result<Option<T>> + Sync + 'a;

/// The stat of a directory entry; `None` when it was removed since the directory was read (a
/// cache file of the running site): it is not part of the tree any more.
pub fn stat_entry(e: &std::fs::DirEntry) -> Result<Option<CachedStat>> {
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
pub fn walk_with<T: Send>(
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

/// True when `p` equals an exclude entry or lies below a `dir/` entry.
pub fn is_excluded(excludes: &[String], p: &RelPath) -> bool {
    excludes.iter().any(|e| {
        let e = e.trim_start_matches('/');
        match e.strip_suffix('/') {
            Some(dir) => p.as_str() == dir || p.as_str().starts_with(&format!("{dir}/")),
            None => p.as_str() == e || p.as_str().starts_with(&format!("{e}/")),
        }
    })
}

/// Write `body` at `rel` below `root`, folders made (for tests that build trees).
#[cfg(test)]
pub(crate) fn write_file(root: &Path, rel: &str, body: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, body).unwrap();
}

#[cfg(test)]
mod tests {
    use super::write_file as write;
    use super::*;

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
}
