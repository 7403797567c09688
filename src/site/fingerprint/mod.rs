//! Tree -> fingerprints, in parallel, with a stat cache so that a warm check costs little more
//! than `stat`.

pub mod cache;

use std::collections::HashMap;
use std::fs::Metadata;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::base::error::{Error, IoContext, Result};
use crate::documents::manifest::VerifiedManifest;
use crate::documents::manifest::{RelPath, digest};
use crate::documents::tree::{Found, Walk, stat_entry, stat_of, walk_with};
use crate::site::config::Instance;
use crate::site::plan::{Diff, Live};
use crate::site::state::State;

pub use cache::{CachedPrint, PrintCache};

/// One file's fingerprint; SHA-256 only when it was asked for.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Print {
    /// Its path below the folder.
    pub path: RelPath,
    /// Size in bytes.
    pub size: u64,
    /// MD5 of the contents.
    pub md5: crate::documents::manifest::Md5,
    /// SHA-256 of the contents, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<crate::documents::manifest::Sha256>,
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
    Ok(Diff::compute_keeping(
        installed,
        target,
        &live,
        &excluded,
        &|p| inst.kept(p),
    ))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::documents::tree::write_file as write;

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
