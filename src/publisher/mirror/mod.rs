//! `upkeep mirror`: make or refresh a copy of a repository, from `upkeep reference` or any static
//! server, in two stages as Debian's ftpsync does: first every object the kept releases need
//! (each checked against its signed SHA-256), then the signed documents (manifests, the
//! delegation, channels) and the latest pointer last, each by an atomic rename. A mirror thus
//! never serves a pointer naming an object it lacks; a sync cut anywhere resumes from the
//! objects it already has; an upstream that does not verify or goes backwards is refused and the
//! old copy keeps being served. Objects no kept release needs are pruned after the new
//! pointers are live.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::base::error::{Error, IoContext, Result};
use crate::base::fsutil::{sync_dir, write_atomic};
use crate::base::progress::Progress;
use crate::client::Network;
use crate::client::fetch::{self, Wanted};
use crate::client::{Remote, block_on};
use crate::documents::channel::{self, ChannelPointer, DELEGATION, DELEGATION_SIG, Delegation};
use crate::documents::manifest::{self, Pointer, PublicKey, Sha256, VerifiedManifest, digest};
use crate::documents::repo;

pub mod leaf;

/// Largest pointer, signature, delegation or channel document.
const MAX_SMALL: u64 = 1 << 20;
/// Largest manifest.
const MAX_MANIFEST: u64 = 256 << 20;

/// What a sync is asked to do.
pub struct Mirror<'a> {
    /// The upstream repository's base URL.
    pub from: &'a str,
    /// The mirror folder.
    pub to: &'a Path,
    /// The release key every document is checked against.
    pub key: &'a PublicKey,
    /// Keep only the newest N releases (0: all).
    pub keep: usize,
    /// Copy the release zips too, each checked against its signed manifest.
    pub zips: bool,
    /// Network settings.
    pub net: Network,
    /// Progress of the object transfer.
    pub progress: Arc<Progress>,
}

/// What a sync did.
#[derive(Debug, Serialize)]
pub struct Synced {
    /// The latest release now served.
    pub latest: String,
    /// Releases kept.
    pub releases: usize,
    /// Objects fetched now.
    pub new_objects: usize,
    /// Their bytes.
    pub new_bytes: u64,
    /// Release zips fetched now (with `--zips`).
    pub zips: usize,
    /// Bytes of compressed objects and deltas fetched now.
    pub form_bytes: u64,
    /// Channels copied.
    pub channels: Vec<String>,
    /// Files pruned from objects/ (objects and compressed objects no kept release needs; the
    /// deltas that give them go too).
    pub pruned: usize,
    /// Nothing changed upstream since the last sync.
    pub unchanged: bool,
}

/// A signed document as fetched: its bytes and its signature, written back unchanged.
struct Doc {
    path: String,
    bytes: Vec<u8>,
    sig_path: String,
    sig: Vec<u8>,
}

/// The folder `rel` of the mirror, made if missing, none of its folders a link: a link
/// planted in the served folder would take the mirror's writes elsewhere.
fn made_dir(m: &Mirror, rel: &Path) -> Result<PathBuf> {
    if !rel.as_os_str().is_empty() {
        crate::base::beneath::create_dir_all(m.to, rel).ctx("create folder", &m.to.join(rel))?;
    }
    Ok(m.to.join(rel))
}

/// Where the mirror writes `rel`: its folder made by [`made_dir`].
fn beneath(m: &Mirror, rel: &str) -> Result<PathBuf> {
    let parent = Path::new(rel).parent().unwrap_or(Path::new(""));
    Ok(made_dir(m, parent)?.join(Path::new(rel).file_name().unwrap_or_default()))
}

async fn fetch_doc(remote: &Remote, path: &str, sig_path: &str, max: u64) -> Result<Option<Doc>> {
    let (bytes, sig) = tokio::join!(
        remote.get_doc_opt(path, max),
        remote.get_doc_opt(sig_path, MAX_SMALL)
    );
    match (bytes?, sig?) {
        (Some(bytes), Some(sig)) => Ok(Some(Doc {
            path: path.into(),
            bytes,
            sig_path: sig_path.into(),
            sig,
        })),
        (None, _) => Ok(None),
        (Some(_), None) => Err(Error::Signature {
            what: remote.url(path),
            reason: "its signature is missing".into(),
        }),
    }
}

/// A document and its signature as this mirror holds them.
fn local_doc(dir: &Path, path: &str, sig_path: &str) -> Option<Doc> {
    Some(Doc {
        path: path.into(),
        bytes: std::fs::read(dir.join(path)).ok()?,
        sig_path: sig_path.into(),
        sig: std::fs::read(dir.join(sig_path)).ok()?,
    })
}

fn sig_text(d: &Doc) -> String {
    String::from_utf8_lossy(&d.sig).into_owned()
}

/// The pointer a mirror serves now, if any (checked against the key: a copy that does not
/// verify is replaced).
fn local_pointer(dir: &Path, key: &PublicKey) -> Option<Pointer> {
    let bytes = std::fs::read(dir.join(repo::POINTER)).ok()?;
    let sig = std::fs::read_to_string(dir.join(repo::POINTER_SIG)).ok()?;
    manifest::verify_signed(&bytes, &sig, key, "local pointer").ok()
}

fn refuse_backwards(what: &str, upstream: &str, local: &str) -> Error {
    Error::refused(
        format!(
            "the upstream {what} goes backwards ({upstream}, older than the {local} this mirror serves): a rollback or a stale upstream; the mirror keeps its copy"
        ),
        "check the upstream (`--from`); if the publisher really went back, remove the mirror's latest.json to accept it",
    )
}

/// Sync once.
pub fn sync(m: &Mirror) -> Result<Synced> {
    std::fs::create_dir_all(m.to).ctx("create folder", m.to)?;
    // A mirror reads the manifests of every release: the whole sync's deadline for them.
    let remote = Remote::new(m.from, m.key, &m.net)?
        .with_doc_budget(Duration::from_secs(m.net.deadline_secs.max(1)));
    block_on(sync_async(m, &remote))
}

async fn sync_async(m: &Mirror<'_>, remote: &Remote) -> Result<Synced> {
    let now = SystemTime::now();
    // Stage 0: what the upstream says, verified before anything is fetched on its word.
    let ptr_doc = fetch_doc(remote, repo::POINTER, repo::POINTER_SIG, MAX_SMALL)
        .await?
        .ok_or_else(|| Error::Network {
            url: remote.url(repo::POINTER),
            reason: "the upstream has no latest.json: is --from a repository?".into(),
        })?;
    let what = remote.url(repo::POINTER);
    let ptr: Pointer = manifest::verify_signed(&ptr_doc.bytes, &sig_text(&ptr_doc), m.key, &what)?;
    manifest::check_fresh(&ptr.expires, &what, now)?;
    let unchanged = std::fs::read(m.to.join(repo::POINTER)).is_ok_and(|b| b == ptr_doc.bytes);
    if let Some(local) = local_pointer(m.to, m.key) {
        let (up, here) = (
            manifest::parse_version(&ptr.latest)?,
            manifest::parse_version(&local.latest)?,
        );
        if up < here || (up == here && ptr.date < local.date) {
            return Err(refuse_backwards(
                "pointer",
                &format!("release {} of {}", ptr.latest, ptr.date),
                &format!("release {} of {}", local.latest, local.date),
            ));
        }
    }
    let kept: Vec<String> = {
        let n = if m.keep == 0 {
            ptr.releases.len()
        } else {
            m.keep.min(ptr.releases.len())
        };
        ptr.releases[ptr.releases.len() - n..].to_vec()
    };
    let mut manifests = Vec::new();
    for v in &kept {
        let path = repo::manifest_path(v);
        // Manifests are immutable: one this mirror already holds, verified (and for the
        // latest, the one the pointer names) is not fetched again.
        let is_latest = v == &ptr.latest;
        if let Some(doc) = local_doc(m.to, &path, &repo::manifest_sig_path(v))
            && (!is_latest || digest::sha256_bytes(&doc.bytes) == ptr.manifest_sha256)
            && let Ok(vm) =
                VerifiedManifest::verify(doc.bytes.clone(), sig_text(&doc), m.key, &path)
            && vm.version() == v
        {
            manifests.push((doc, vm));
            continue;
        }
        let doc = fetch_doc(remote, &path, &repo::manifest_sig_path(v), MAX_MANIFEST)
            .await?
            .ok_or_else(|| Error::Network {
                url: remote.url(&path),
                reason: "the upstream pointer lists this release but its manifest is not there"
                    .into(),
            })?;
        let vm =
            VerifiedManifest::verify(doc.bytes.clone(), sig_text(&doc), m.key, &remote.url(&path))?;
        if vm.version() != v {
            return Err(Error::BadManifest {
                what: remote.url(&path),
                reason: format!("it is signed as release {}", vm.version()),
            });
        }
        if v == &ptr.latest && digest::sha256_bytes(&doc.bytes) != ptr.manifest_sha256 {
            return Err(Error::Signature {
                what: remote.url(&path),
                reason: "the manifest does not match the one the signed pointer names".into(),
            });
        }
        manifests.push((doc, vm));
    }
    // The delegation and the channels, verified (a channel only by a delegated key) and never
    // older than what the mirror serves.
    let deleg = fetch_doc(remote, DELEGATION, DELEGATION_SIG, MAX_SMALL).await?;
    let mut online = Vec::new();
    if let Some(d) = &deleg {
        let dd: Delegation =
            manifest::verify_signed(&d.bytes, &sig_text(d), m.key, &remote.url(DELEGATION))?;
        online = dd
            .online_keys
            .iter()
            .filter_map(|k| PublicKey::parse(k).ok())
            .collect();
    }
    let mut channels = Vec::new();
    for name in upstream_channels(remote, m.to).await? {
        let Some(doc) = fetch_doc(
            remote,
            &channel::channel_path(&name),
            &channel::channel_sig_path(&name),
            MAX_SMALL,
        )
        .await?
        else {
            continue;
        };
        let url = remote.url(&channel::channel_path(&name));
        let cp: ChannelPointer =
            manifest::verify_signed_by_any(&doc.bytes, &sig_text(&doc), &online, &url)?;
        if let Ok(b) = std::fs::read(m.to.join(channel::channel_path(&name)))
            && let Ok(here) = serde_json::from_slice::<ChannelPointer>(&b)
            && cp.is_older_than(&here)
        {
            return Err(refuse_backwards(
                &format!("channel {name}"),
                &format!("pointer {} of {}", cp.serial, cp.date),
                &format!("pointer {} of {}", here.serial, here.date),
            ));
        }
        channels.push((name, doc, cp));
    }

    // Stage 1: the objects, each checked against its signed SHA-256, straight into objects/.
    let mut seen = HashSet::new();
    let wanted: Vec<Wanted> = manifests
        .iter()
        .flat_map(|(_, vm)| vm.files())
        .filter(|f| seen.insert(f.sha256))
        .filter(|f| !m.to.join(repo::object_path(&f.sha256)).exists())
        .map(|f| Wanted::raw(f.sha256, f.size))
        .collect();
    let new_bytes: u64 = wanted.iter().map(|w| w.size).sum();
    let partial = made_dir(m, Path::new(".mirror-partial"))?;
    m.progress.set_totals(wanted.len() as u64, new_bytes);
    m.progress
        .set_phase(format!("fetching {} objects", wanted.len()));
    fetch::fetch(remote, &wanted, &partial, &m.progress, None).await?;
    let mut dirs = BTreeMap::new();
    for w in &wanted {
        let dest = beneath(m, &repo::object_path(&w.sha))?;
        let dir = dest.parent().expect("objects/ab").to_path_buf();
        let src = fetch::done_path(&partial, &w.sha);
        std::fs::rename(&src, &dest).ctx("move into place", &dest)?;
        dirs.insert(dir, ());
    }
    for d in dirs.keys() {
        sync_dir(d)?;
    }
    let zips = if m.zips {
        fetch_zips(m, remote, &manifests, &partial).await?
    } else {
        0
    };
    let (forms, form_bytes) = fetch_forms(m, remote, &manifests, &partial).await?;
    // The manifest deltas the latest pointer and the channels list, each checked by rebuilding
    // the manifest from the older one this mirror holds (a site asks for them on the pointer's
    // word).
    let mut listed: Vec<(&str, &Sha256, Option<u64>, &String)> = ptr
        .manifest_deltas
        .iter()
        .map(|old| {
            (
                ptr.latest.as_str(),
                &ptr.manifest_sha256,
                ptr.manifest_size,
                old,
            )
        })
        .collect();
    for (_, _, cp) in &channels {
        listed.extend(cp.manifest_deltas.iter().map(|old| {
            (
                cp.release.as_str(),
                &cp.manifest_sha256,
                Some(cp.manifest_size),
                old,
            )
        }));
    }
    listed.sort();
    listed.dedup();
    for (version, sha, size, old) in listed {
        let rel = crate::documents::forms::manifest_delta_path(version, old);
        let (Some(size), Some((_, base))) =
            (size, manifests.iter().find(|(_, vm)| vm.version() == old))
        else {
            continue;
        };
        if m.to.join(&rel).exists() {
            continue;
        }
        let Some(delta) = remote.get_doc_opt(&rel, size).await? else {
            continue;
        };
        let mut out = Vec::new();
        let base_bytes = base.bytes().unwrap_or_default();
        if let Ok(Ok(h)) =
            crate::documents::forms::apply_delta(&delta, base_bytes, &mut out, Path::new("-"), size)
            && h.sha256 == *sha
        {
            write_atomic(&beneath(m, &rel)?, &delta)?;
        }
    }
    crate::base::crash::point("mirror:objects");

    // Stage 2: the signed documents, the latest pointer last.
    let put = |doc: &Doc| -> Result<()> {
        write_atomic(&beneath(m, &doc.sig_path)?, &doc.sig)?;
        write_atomic(&beneath(m, &doc.path)?, &doc.bytes)
    };
    for (v, bytes) in &forms {
        crate::publisher::shrink::write_with_gzip(
            &beneath(m, &crate::documents::forms::forms_path(v))?,
            bytes,
        )?;
    }
    for (doc, _) in &manifests {
        write_atomic(&beneath(m, &doc.sig_path)?, &doc.sig)?;
        crate::publisher::shrink::write_with_gzip(&beneath(m, &doc.path)?, &doc.bytes)?;
    }
    if let Some(d) = &deleg {
        put(d)?;
    }
    for (_, doc, _) in &channels {
        put(doc)?;
    }
    if !channels.is_empty() {
        crate::publisher::fleet::rollout::write_channel_index(m.to)?;
    }
    put(&ptr_doc)?;
    crate::base::crash::point("mirror:pointer");
    let _ = std::fs::remove_dir_all(&partial);

    // After the new pointers are live: drop what no kept release needs.
    let pruned = prune(
        m.to,
        &manifests.iter().map(|(_, vm)| vm).collect::<Vec<_>>(),
        &kept,
    )?;
    Ok(Synced {
        latest: ptr.latest.clone(),
        releases: kept.len(),
        new_objects: wanted.len(),
        new_bytes,
        form_bytes,
        zips,
        channels: channels.into_iter().map(|(n, _, _)| n).collect(),
        pruned,
        unchanged,
    })
}

/// Stage 1 for the release zips a kept release lacks here: each downloaded beside the objects
/// (continued after a cut), opened as a site would open it and read entry by entry against the
/// signed manifest, then renamed into place. A zip that does not hold exactly the signed
/// release is refused like a tampered object.
async fn fetch_zips(
    m: &Mirror<'_>,
    remote: &Remote,
    manifests: &[(Doc, VerifiedManifest)],
    partial: &Path,
) -> Result<usize> {
    let mut fetched = 0;
    for (_, vm) in manifests {
        let v = vm.version();
        let rel = repo::zip_path(v);
        let dest = m.to.join(&rel);
        if dest.exists() {
            continue;
        }
        std::fs::create_dir_all(partial).ctx("create folder", partial)?;
        let part = partial.join(format!("upkeep-{v}.zip"));
        let content: u64 = vm.files().iter().map(|f| f.size).sum();
        // Stored entries, their headers and the manifest inside: never more than this.
        let max = content + vm.files().len() as u64 * 1024 + (64 << 20);
        m.progress
            .set_phase(format!("fetching the zip of release {v}"));
        if !remote.download(&rel, &part, max).await? {
            continue;
        }
        m.progress
            .set_phase(format!("checking the zip of release {v}"));
        let url = remote.url(&rel);
        let checked = crate::documents::archive::Archive::open(&part, &Default::default(), m.key)
            .and_then(|(zip, inside)| {
                if inside.sig().trim() != vm.sig().trim() {
                    return Err(Error::Signature {
                        what: url.clone(),
                        reason: format!("it carries another manifest than release {v}'s"),
                    });
                }
                zip.verify(&vm.files().iter().collect::<Vec<_>>(), &m.progress)
            });
        if let Err(e) = checked {
            let _ = std::fs::remove_file(&part);
            return Err(Error::refused(
                format!("the upstream's zip of release {v} ({url}) is refused: {e}"),
                "the upstream serves a damaged or tampered zip; the mirror keeps its copy; tell the upstream's operator",
            ));
        }
        let dest = beneath(m, &rel)?;
        let dir = dest.parent().expect("releases/V");
        std::fs::rename(&part, &dest).ctx("move into place", &dest)?;
        sync_dir(dir)?;
        fetched += 1;
    }
    Ok(fetched)
}

/// Stage 1 for the smaller forms (compressed objects, deltas) the kept releases list: each
/// fetched once, decoded and checked against its object's signed SHA-256 (a delta against the
/// base object this mirror holds), then placed. Returns each release's forms.json to serve:
/// the upstream's bytes when every form it lists is here, else a list of only those that are
/// (a site never asks for a form the mirror lacks).
async fn fetch_forms(
    m: &Mirror<'_>,
    remote: &Remote,
    manifests: &[(Doc, VerifiedManifest)],
    partial: &Path,
) -> Result<(Vec<(String, Vec<u8>)>, u64)> {
    use crate::documents::forms::{self, Forms};
    use fetch::Form;
    let mut lists = Vec::new();
    let mut wanted: Vec<Wanted> = Vec::new();
    let mut queued = HashSet::new();
    // Lists name objects by a prefix: the full names of every object the kept releases have.
    let full: std::collections::HashMap<String, (Sha256, u64)> = manifests
        .iter()
        .flat_map(|(_, vm)| vm.files())
        .map(|f| (forms::key(&f.sha256), (f.sha256, f.size)))
        .collect();
    for (_, vm) in manifests {
        let v = vm.version().to_string();
        // A release's list is written once at publish: one held here is complete.
        if m.to.join(forms::forms_path(&v)).exists() {
            continue;
        }
        let Some(bytes) = remote
            .get_doc_opt(&forms::forms_path(&v), forms::MAX_FORMS_DOC)
            .await?
        else {
            continue;
        };
        let Ok(list) = serde_json::from_slice::<Forms>(&bytes) else {
            continue;
        };
        let mine: HashSet<Sha256> = vm.files().iter().map(|f| f.sha256).collect();
        let of = |k: &String| full.get(k).filter(|(sha, _)| mine.contains(sha)).copied();
        let mut want = |w: Wanted| {
            if !m.to.join(fetch::form_rel(&w)).exists() && queued.insert(fetch::form_rel(&w)) {
                wanted.push(w);
            }
        };
        for (k, n) in &list.zst {
            if let Some((sha, size)) = of(k) {
                let mut w = Wanted::raw(sha, size);
                (w.form, w.transfer, w.zst) = (Form::Zst, *n, Some(*n));
                want(w);
            }
        }
        for (k, by_base) in &list.deltas {
            let Some((sha, size)) = of(k) else { continue };
            for (b, n) in by_base {
                // The base must be an object this mirror holds, to check the delta with.
                let Some((base, _)) = full.get(b) else {
                    continue;
                };
                let base_obj = m.to.join(repo::object_path(base));
                if base_obj.exists() {
                    let mut w = Wanted::raw(sha, size);
                    (w.form, w.transfer, w.base) = (Form::Delta(*base), *n, Some(base_obj));
                    want(w);
                }
            }
        }
        lists.push((v, bytes, list));
    }
    let total: u64 = wanted.iter().map(|w| w.transfer).sum();
    if !wanted.is_empty() {
        m.progress.set_totals(wanted.len() as u64, total);
        m.progress.set_phase(format!(
            "fetching {} compressed objects and deltas",
            wanted.len()
        ));
        let got = fetch::fetch_forms(remote, &wanted, partial, &m.progress).await?;
        if got.fell_back > 0 {
            crate::errln!(
                "mirror: {} forms left out (not on the upstream or not decoding to the signed content), first: {}",
                got.fell_back,
                got.reasons.first().map(String::as_str).unwrap_or("")
            );
        }
    }
    let mut bytes_in = 0;
    for w in &wanted {
        let done = fetch::form_done_path(partial, w);
        if done.exists() {
            let dest = beneath(m, &fetch::form_rel(w))?;
            std::fs::rename(&done, &dest).ctx("move into place", &dest)?;
            bytes_in += w.transfer;
        }
    }
    // Each list as served: only what is here.
    let mut out = Vec::new();
    for (v, bytes, mut list) in lists {
        let before = list.zst.len() + list.deltas.values().map(|d| d.len()).sum::<usize>();
        let here = |k: &String| full.get(k).map(|(sha, _)| *sha);
        list.zst
            .retain(|k, _| here(k).is_some_and(|sha| m.to.join(forms::zst_path(&sha)).exists()));
        for (k, by_base) in list.deltas.iter_mut() {
            by_base.retain(|b, _| match (here(k), here(b)) {
                (Some(sha), Some(base)) => m.to.join(forms::delta_path(&base, &sha)).exists(),
                _ => false,
            });
        }
        list.deltas.retain(|_, d| !d.is_empty());
        let after = list.zst.len() + list.deltas.values().map(|d| d.len()).sum::<usize>();
        let served = if after == before {
            bytes
        } else {
            serde_json::to_vec(&list).expect("forms serialise")
        };
        out.push((v, served));
    }
    Ok((out, bytes_in))
}

/// The channels to copy: those the upstream lists in `channels/index.json`, those the mirror
/// already has, and `stable`.
async fn upstream_channels(remote: &Remote, here: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = crate::publisher::fleet::rollout::channels(here);
    if let Some(b) = remote
        .get_doc_opt(channel::CHANNEL_INDEX, MAX_SMALL)
        .await
        .ok()
        .flatten()
        && let Ok(list) = serde_json::from_slice::<Vec<String>>(&b)
    {
        names.extend(list.into_iter().filter(|n| channel::valid_name(n)));
    }
    names.push(channel::DEFAULT_CHANNEL.to_string());
    names.sort();
    names.dedup();
    Ok(names)
}

/// Remove the objects, deltas and release folders no kept release needs (nothing else);
/// returns the objects removed.
fn prune(dir: &Path, kept: &[&VerifiedManifest], versions: &[String]) -> Result<usize> {
    let needed: HashSet<Sha256> = kept
        .iter()
        .flat_map(|m| m.files())
        .map(|f| f.sha256)
        .collect();
    // objects/ab/SHA[.zst] and deltas/BASE/SHA.zst are named by the object they give.
    let mut removed = 0;
    for top in ["objects", "deltas"] {
        for e in walkdir::WalkDir::new(dir.join(top))
            .min_depth(2)
            .max_depth(2)
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file())
        {
            // Only objects and deltas go: a file of another name is not the mirror's to remove.
            let object = e
                .file_name()
                .to_str()
                .map(|n| n.strip_suffix(".zst").unwrap_or(n))
                .and_then(Sha256::from_hex);
            if object.is_some_and(|h| !needed.contains(&h)) {
                std::fs::remove_file(e.path()).ctx("remove", e.path())?;
                if top == "objects" {
                    removed += 1;
                } else {
                    // Gone when it was the base's last delta.
                    let _ = std::fs::remove_dir(e.path().parent().expect("deltas/BASE"));
                }
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir(dir.join("releases")) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // Only releases' folders go (a name that is a version), not anything else there.
            let release =
                e.file_type().is_ok_and(|t| t.is_dir()) && manifest::parse_version(&name).is_ok();
            if release && !versions.contains(&name) {
                let p: PathBuf = e.path();
                std::fs::remove_dir_all(&p).ctx("remove", &p)?;
            }
        }
    }
    Ok(removed)
}
