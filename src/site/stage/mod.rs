//! Staging: gather into `staging/` every file the next release needs, from one of four sources,
//! each file verified against the signed manifest. Nothing here touches the live tree.

pub mod inbox;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::base::error::{Error, IoContext, Result};
use crate::base::fsutil::write_atomic;
use crate::base::progress::Progress;
use crate::client as remote;
use crate::client::fetch;
use crate::documents::archive;
use crate::documents::manifest::relpath::{MANIFEST_NAME, SIGNATURE_NAME};
use crate::documents::manifest::{self, FileEntry, RelPath, VerifiedManifest, digest};
use crate::documents::tree::stat_of;
use crate::site::config::Instance;
use crate::site::fingerprint::diff_live;
use crate::site::lock::InstanceLock;
use crate::site::state::State;

/// Where the files come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// The reference server (only new and changed files).
    Network,
    /// A release zip on disk (uploaded, or given by path).
    Archive(PathBuf),
    /// A zip in `inbox/`, by name.
    Inbox(String),
    /// Files the operator copied into `staging/` by hand.
    Manual,
}

impl Source {
    /// Short name recorded in state.db.
    pub fn label(&self) -> String {
        match self {
            Source::Network => "network".into(),
            Source::Archive(p) => format!("archive {}", p.display()),
            Source::Inbox(n) => format!("inbox {n}"),
            Source::Manual => "manual".into(),
        }
    }
}

/// Options for [`stage`].
#[derive(Default, Clone)]
pub struct StageOptions {
    /// Accept a release older than the installed one.
    pub allow_downgrade: bool,
    /// Where progress is reported.
    pub progress: Arc<Progress>,
}

/// What staging did.
#[derive(Debug, Serialize)]
pub struct Staged {
    /// The staged release.
    pub version: String,
    /// The installed release.
    pub installed: Option<String>,
    /// The source.
    pub source: String,
    /// Files the update needs (new and changed).
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Files that were already staged and verified (a resumed staging).
    pub reused: usize,
    /// Bytes of the files gathered now (not those already staged): what came over the network
    /// for a network staging.
    pub fetched: u64,
    /// Files to remove at the swap.
    pub removed: usize,
    /// Locally modified files.
    pub modified: Vec<RelPath>,
    /// Files found in staging that this release does not need, moved into `.upkeep/aside/`.
    pub moved_aside: usize,
    /// Files found in staging at paths the release needs, with other contents (copied by
    /// hand?): moved into `.upkeep/aside/` too before the release's were staged.
    pub replaced_aside: usize,
    /// For a network staging: the bytes that came in each form (raw, compressed, delta).
    pub forms: Option<fetch::Fetched>,
    /// Wall time.
    pub seconds: f64,
}

/// Stage the next release from `source`.
pub fn stage(inst: &Instance, source: &Source, opts: &StageOptions) -> Result<Staged> {
    let started = Instant::now();
    let _lock = InstanceLock::acquire(inst, "stage")?;
    let mut state = State::open(&inst.state_db())?;
    // Staging records which files it verified so that a rerun can skip them; losing the last of
    // those rows to a power cut only costs a re-hash, so they are not fsynced one by one (tens
    // of thousands of fsyncs made a large staging slower than rsync).
    state.relax_durability()?;
    // Staging while a run is swapping would mix two releases.
    state.refuse_unfinished(&inst.root)?;
    inst.check_staging_folder()?;
    let progress = &opts.progress;
    progress.set_phase("reading the release manifest");

    let mut archive = None;
    let mut net = match source {
        Source::Network => Some(NetStage::new(inst)?),
        _ => None,
    };
    let mut target = match source {
        Source::Network => {
            let n = net.as_mut().expect("made above for a network staging");
            let t = crate::site::fleet::identity::offered_on(inst, &n.remote, &n.rt)?;
            t.manifest.ok_or_else(|| {
                Error::refused(
                    format!(
                        "{}: nothing to stage",
                        t.offer.map(|o| o.why).unwrap_or_default()
                    ),
                    "wait for the rollout to reach this site (`upkeep check` says why)",
                )
            })?
        }
        Source::Archive(p) => {
            let (a, m) = archive::Archive::open(p, &inst.config.limits, &inst.key)?;
            archive = Some(a);
            m
        }
        Source::Inbox(name) => {
            let p = inbox::ready(inst, name)?;
            let (a, m) = archive::Archive::open(&p, &inst.config.limits, &inst.key)?;
            archive = Some(a);
            m
        }
        Source::Manual => manual_manifest(inst)?,
    };
    // The signed bytes wait in state.db while the files are gathered (a release of 100,000
    // files has a manifest of 20 MB); they are written into staging/ at the end.
    state.save_release(&target)?;
    target.drop_bytes();
    let installed = state.installed_list(&inst.key)?;
    manifest::check_fresh(
        &target.manifest().expires,
        &format!("release {}", target.version()),
        std::time::SystemTime::now(),
    )?;
    if let Some(inst_m) = &installed {
        let (new_v, old_v) = (
            manifest::parse_version(target.version())?,
            manifest::parse_version(inst_m.version())?,
        );
        if new_v < old_v && !opts.allow_downgrade {
            return Err(Error::Downgrade {
                release: target.version().to_string(),
                installed: inst_m.version().to_string(),
            });
        }
    }

    progress.set_phase("comparing the live tree with the release");
    let diff = diff_live(inst, &mut state, installed.as_ref(), &target)?;
    // Only its version is needed from here on; a release of 100,000 files has a manifest of
    // tens of megabytes.
    // For a delta: the content each needed path has live now, when that is the installed
    // release's (a locally modified file is no base the publisher could have used).
    let bases: HashMap<RelPath, manifest::Sha256> = match &installed {
        Some(im) => needed_bases(&diff, im),
        None => HashMap::new(),
    };
    let installed = installed.map(|m| m.version().to_string());
    let needed: Vec<&FileEntry> = diff
        .needed()
        .map(|p| target.entry(p).expect("diff paths come from the manifest"))
        .collect();
    let staging = inst.staging();
    std::fs::create_dir_all(&staging).ctx("create folder", &staging)?;
    if state
        .staged()?
        .is_some_and(|s| s.version != target.version())
    {
        state.clear_staged()?;
    }
    let aside = format!(
        ".upkeep/aside/staging-{}",
        crate::base::clock::now_text().replace([':', '-'], "")
    );
    let moved_aside = if matches!(source, Source::Manual) {
        0
    } else {
        prune(inst, &aside, &needed)?
    };

    // Resume: files already staged and verified are kept.
    let known = state.staged_files()?;
    let mut missing = Vec::new();
    let mut reused = 0;
    let bytes: u64 = needed.iter().map(|f| f.size).sum();
    progress.set_totals(needed.len() as u64, bytes);
    for f in &needed {
        if already_staged(&staging, f, &known, &state)? {
            reused += 1;
            progress.add_file();
            progress.add_bytes(f.size);
        } else {
            missing.push(*f);
        }
    }

    // A file at a path the release needs that is not the release's (copied by hand, or left
    // half-written): moved aside and counted, never overwritten without a word.
    let mut replaced_aside = 0;
    if !matches!(source, Source::Manual) {
        for f in &missing {
            let p = f.path.under(&staging);
            if std::fs::symlink_metadata(&p).is_ok() {
                move_aside(inst, &aside, f.path.as_str(), &p)?;
                replaced_aside += 1;
            }
        }
    }
    check_space(&staging, target.version(), &missing)?;
    let fetched: u64 = missing.iter().map(|f| f.size).sum();
    let mut forms = None;
    match source {
        Source::Network => {
            let net = net.take().expect("made above for a network staging");
            // Files of the same content come once.
            let mut by_sha: HashMap<manifest::Sha256, Vec<&FileEntry>> = HashMap::new();
            for f in &missing {
                by_sha.entry(f.sha256).or_default().push(f);
            }
            let wanted = wanted_objects(inst, &by_sha, &bases);
            progress.set_phase(format!("downloading {} files", missing.len()));
            let list = crate::documents::forms::forms_path(target.version());
            forms = Some(fetch_network(
                inst, &net, by_sha, wanted, &list, &state, progress,
            )?);
        }
        Source::Archive(_) | Source::Inbox(_) => {
            progress.set_phase(format!("extracting {} files", missing.len()));
            let a = archive.as_ref().expect("opened above");
            state.in_transaction(|| {
                a.extract(&missing, &staging, progress, |f, dest| {
                    mark(&state, f, dest)
                })
            })?;
        }
        Source::Manual => {
            if !missing.is_empty() {
                return Err(manual_report(&staging, &missing));
            }
        }
    }

    crate::base::crash::point("stage:filled");
    progress.set_phase("writing the signed manifest into staging");
    let what = format!("stored manifest of {}", target.version());
    let (signed, _) = state
        .release_bytes(target.version())?
        .ok_or_else(|| Error::msg(format!("the {what} is gone from state.db")))?;
    inst.key.verify(&signed, target.sig(), &what)?;
    write_atomic(&staging.join(MANIFEST_NAME), &signed)?;
    drop(signed);
    write_atomic(&staging.join(SIGNATURE_NAME), target.sig().as_bytes())?;
    state.set_staged(&target, &source.label(), needed.len() as u64, bytes)?;
    if let Some(f) = &forms {
        // What this staging cost on the wire, for the fleet report of the run that applies it.
        state.set_meta(
            &format!("wire_bytes:{}", target.version()),
            &f.wire().to_string(),
        )?;
    }
    progress.set_phase("staged");
    progress
        .finished
        .store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(Staged {
        version: target.version().to_string(),
        installed,
        source: source.label(),
        files: needed.len(),
        bytes,
        reused,
        fetched,
        removed: diff.removed.len(),
        modified: diff.modified.clone(),
        moved_aside,
        replaced_aside,
        forms,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The installed content of each needed path that is unmodified live (see `bases` above).
fn needed_bases(
    diff: &crate::site::plan::Diff,
    installed: &VerifiedManifest,
) -> HashMap<RelPath, manifest::Sha256> {
    let modified: HashSet<&RelPath> = diff.modified.iter().collect();
    diff.needed()
        .filter(|p| !modified.contains(p))
        .filter_map(|p| Some((p.clone(), installed.entry(p)?.sha256)))
        .collect()
}

/// The network side of a staging: one runtime for the pointers and the objects, so that the
/// objects come over a connection the pointers opened (a round trip saved).
struct NetStage {
    rt: tokio::runtime::Runtime,
    remote: remote::Remote,
}

impl NetStage {
    fn new(inst: &Instance) -> Result<NetStage> {
        // One worker, which receives and decodes the objects (see `fetch_network`).
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .ctx("start", Path::new("the network runtime"))?;
        let remote = remote::Remote::new(&inst.config.reference, &inst.key, &inst.config.network)?;
        Ok(NetStage { rt, remote })
    }
}

/// What to ask for each missing object: the smallest form the server holds, a delta from
/// the content a path of that object has live when the release has one (the server chooses;
/// a server that cannot has the forms list chosen from, see [`fetch::Wanted::choose`]).
fn wanted_objects(
    inst: &Instance,
    by_sha: &HashMap<manifest::Sha256, Vec<&FileEntry>>,
    bases: &HashMap<RelPath, manifest::Sha256>,
) -> Vec<fetch::Wanted> {
    by_sha
        .values()
        .map(|same| {
            let f = same[0];
            // Both files are held in memory to apply a delta: none from a base that would
            // take more than the publisher builds deltas for.
            let candidates = same
                .iter()
                .filter_map(|g| {
                    let base = bases.get(&g.path)?;
                    let live = g.path.under(&inst.root);
                    let n = std::fs::metadata(&live).ok()?.len();
                    (f.size + n <= 2 * crate::documents::forms::DELTA_MAX_DEFAULT)
                        .then_some((*base, live))
                })
                .collect();
            fetch::Wanted::best(f.sha256, f.size, candidates)
        })
        .collect()
}

/// Refuse before writing a byte when the files to gather cannot fit, with a margin (OCS-NG's
/// arithmetic: what is needed, plus room for the database copy and logs).
fn check_space(staging: &Path, version: &str, missing: &[&FileEntry]) -> Result<()> {
    let bytes: u64 = missing.iter().map(|f| f.size).sum();
    if bytes == 0 {
        return Ok(());
    }
    let needed = bytes + bytes / 50 + (16 << 20);
    let free = crate::base::fsutil::free_bytes(staging)?;
    if free < needed {
        return Err(Error::DiskSpace {
            folder: staging.to_path_buf(),
            what: format!(
                "{} files of release {version}, {}, plus a margin",
                missing.len(),
                crate::base::fsutil::human_bytes(bytes)
            ),
            needed,
            free,
        });
    }
    Ok(())
}

fn mark(state: &State, f: &FileEntry, dest: &Path) -> Result<()> {
    let md = std::fs::metadata(dest).ctx("stat", dest)?;
    state.mark_staged_file(&f.path, &f.sha256, f.size, stat_of(&md).mtime_ns)
}

/// A staged file counts when state.db says it was verified and its stat did not change since, or
/// when hashing it now matches the manifest.
fn already_staged(
    staging: &Path,
    f: &FileEntry,
    known: &HashMap<RelPath, (manifest::Sha256, u64, i64)>,
    state: &State,
) -> Result<bool> {
    let p = f.path.under(staging);
    let Ok(md) = std::fs::symlink_metadata(&p) else {
        return Ok(false);
    };
    if !md.is_file() || md.len() != f.size {
        return Ok(false);
    }
    if let Some((sha, size, mtime)) = known.get(&f.path)
        && *sha == f.sha256
        && *size == f.size
        && *mtime == stat_of(&md).mtime_ns
    {
        return Ok(true);
    }
    // Opened without following a link: a link in staging is never a staged file.
    let Ok(mut file) = f.path.open_under(staging) else {
        return Ok(false);
    };
    let h = digest::hash_reader(&mut file).ctx("read", &p)?;
    if h.sha256 == f.sha256 {
        mark(state, f, &p)?;
        return Ok(true);
    }
    Ok(false)
}

/// Move out of staging what this update does not need (left by an older staging, or copied by
/// hand): into `.upkeep/aside/staging-TIME/`, never deleted, so a file the operator put there
/// is not lost. Returns how many were moved.
fn prune(inst: &Instance, aside: &str, needed: &[&FileEntry]) -> Result<usize> {
    let staging = inst.staging();
    let keep: HashSet<&str> = needed.iter().map(|f| f.path.as_str()).collect();
    let mut moved = 0;
    for entry in walkdir::WalkDir::new(&staging)
        .min_depth(1)
        .contents_first(true)
    {
        let Ok(entry) = entry else { continue };
        let rel = entry
            .path()
            .strip_prefix(&staging)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if entry.file_type().is_dir() {
            let _ = std::fs::remove_dir(entry.path());
        } else if !keep.contains(rel.as_str())
            && rel != MANIFEST_NAME
            && rel != SIGNATURE_NAME
            && rel != ".gitkeep"
        {
            move_aside(inst, aside, &rel, entry.path())?;
            moved += 1;
        }
    }
    Ok(moved)
}

/// Move the staging entry `path` (at `rel` below staging) into the aside folder `aside`.
fn move_aside(inst: &Instance, aside: &str, rel: &str, path: &Path) -> Result<()> {
    let to = Path::new(aside).join(rel);
    let parent = to.parent().expect("aside paths have a parent");
    let to = inst
        .own_dir(&parent.to_string_lossy())?
        .join(to.file_name().expect("a staged path has a name"));
    std::fs::rename(path, &to).ctx("move aside", path)
}

fn fetch_network(
    inst: &Instance,
    net: &NetStage,
    by_sha: HashMap<manifest::Sha256, Vec<&FileEntry>>,
    wanted: Vec<fetch::Wanted>,
    list: &str,
    state: &State,
    progress: &Arc<Progress>,
) -> Result<fetch::Fetched> {
    let dir = inst.own_dir(".upkeep/partial")?;
    crate::base::crash::point("stage:fetching");
    // On the runtime's worker, where the connection's reads are: the thread that receives the
    // bytes also decodes and writes them, without a hand-over per chunk.
    let (remote, worker_dir, p) = (net.remote.clone(), dir.clone(), progress.clone());
    let list = list.to_string();
    let fetched = net
        .rt
        .block_on(net.rt.spawn(async move {
            fetch::fetch(&remote, &wanted, &worker_dir, &p, Some(&list)).await
        }))
        .map_err(|e| Error::msg(format!("the download stopped: {e}")))??;
    let staging = inst.staging();
    progress.set_phase("placing the files into staging");
    // One transaction for the marks of every placed file.
    state.in_transaction(|| place_fetched(&staging, &dir, by_sha, state))?;
    Ok(fetched)
}

fn place_fetched(
    staging: &Path,
    dir: &Path,
    by_sha: HashMap<manifest::Sha256, Vec<&FileEntry>>,
    state: &State,
) -> Result<()> {
    // Folders made so far: a release's files share few folders, and asking the file system
    // for each file's folder again costs a system call per file.
    let mut made: HashSet<PathBuf> = HashSet::new();
    for (sha, files) in by_sha {
        let src = fetch::done_path(dir, &sha);
        for (i, f) in files.iter().enumerate() {
            let dest = f.path.under(staging);
            let parent = dest.parent().expect("staged paths have a parent");
            if !made.contains(parent) {
                if let Some(p) = f.path.parent() {
                    crate::base::beneath::create_dir_all(staging, Path::new(p.as_str()))
                        .ctx("create folder", parent)?;
                }
                made.insert(parent.to_path_buf());
            }
            if i + 1 == files.len() {
                std::fs::rename(&src, &dest).ctx("move into staging", &dest)?;
            } else {
                std::fs::copy(&src, &dest).ctx("copy into staging", &dest)?;
            }
            mark(state, f, &dest)?;
        }
    }
    Ok(())
}

fn manual_manifest(inst: &Instance) -> Result<VerifiedManifest> {
    let staging = inst.staging();
    let (mp, sp) = (staging.join(MANIFEST_NAME), staging.join(SIGNATURE_NAME));
    if !mp.is_file() || !sp.is_file() {
        return Err(Error::refused(
            format!("staging/ has no {MANIFEST_NAME} and {SIGNATURE_NAME}"),
            format!(
                "copy both from the release zip into {} (or releases/V/manifest.json and manifest.sig from the repository, renamed), then run `upkeep stage --manual` again",
                staging.display()
            ),
        ));
    }
    let bytes = std::fs::read(&mp).ctx("read", &mp)?;
    let sig = std::fs::read_to_string(&sp).ctx("read", &sp)?;
    VerifiedManifest::verify(bytes, sig, &inst.key, &mp.display().to_string())
}

fn manual_report(staging: &Path, missing: &[&FileEntry]) -> Error {
    let mut absent = Vec::new();
    let mut wrong = Vec::new();
    for f in missing {
        match std::fs::symlink_metadata(f.path.under(staging)) {
            Ok(md) if md.file_type().is_symlink() => wrong.push(format!(
                "{} (a symbolic link: upkeep installs files, never links)",
                f.path
            )),
            Err(_) => absent.push(f.path.to_string()),
            Ok(md) if md.len() != f.size => wrong.push(format!(
                "{} (size {} instead of {})",
                f.path,
                md.len(),
                f.size
            )),
            Ok(_) => wrong.push(format!(
                "{} (contents differ from the signed manifest)",
                f.path
            )),
        }
    }
    let mut msg = format!(
        "staging is not complete: {} missing, {} wrong",
        absent.len(),
        wrong.len()
    );
    for a in absent.iter().take(50) {
        msg.push_str(&format!("\n  missing: {a}"));
    }
    for w in wrong.iter().take(50) {
        msg.push_str(&format!("\n  wrong:   {w}"));
    }
    if absent.len() + wrong.len() > 100 {
        msg.push_str("\n  ...");
    }
    Error::refused(
        msg,
        format!(
            "copy those files from the release into {}, then run `upkeep stage --manual` again",
            staging.display()
        ),
    )
}
