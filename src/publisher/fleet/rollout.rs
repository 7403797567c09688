//! The publisher's side of channels: delegate online keys (release key), promote a release to a
//! channel and move its rollout (online key). Each writes a signed document into the
//! repository folder, signature first and document last, each by an atomic rename.

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::base::error::{Error, IoContext, Result};
use crate::base::fsutil::write_atomic;
use crate::documents::channel::{
    self, ChannelPointer, DELEGATION, DELEGATION_SIG, Delegation, FORMAT, Previous, RolloutState,
    Threshold, Wave,
};
use crate::documents::manifest::{self, PublicKey, SecretKey, digest};
use crate::documents::repo;

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn write_signed<T: Serialize>(
    dir: &Path,
    doc: &str,
    sig: &str,
    v: &T,
    key: &SecretKey,
) -> Result<()> {
    let bytes = manifest::to_bytes(v);
    write_atomic(&dir.join(sig), key.sign(&bytes).as_bytes())?;
    write_atomic(&dir.join(doc), &bytes)
}

/// The delegation as written in the repository, with the release key it names; its signature is
/// checked against that key, and `release_key` (when given) must be it.
pub fn read_delegation(repo_dir: &Path) -> Result<Option<(Delegation, PublicKey)>> {
    let p = repo_dir.join(DELEGATION);
    if !p.exists() {
        return Ok(None);
    }
    let bytes = std::fs::read(&p).ctx("read", &p)?;
    let sig = std::fs::read_to_string(repo_dir.join(DELEGATION_SIG))
        .ctx("read", &repo_dir.join(DELEGATION_SIG))?;
    let d: Delegation = serde_json::from_slice(&bytes).map_err(|e| Error::BadManifest {
        what: p.display().to_string(),
        reason: e.to_string(),
    })?;
    let release = PublicKey::parse(&d.release_key)?;
    release.verify(&bytes, &sig, &p.display().to_string())?;
    Ok(Some((d, release)))
}

/// `upkeep delegate`: the release key names the online keys that may sign channel pointers.
pub fn delegate(
    repo_dir: &Path,
    release_key: &SecretKey,
    online: &[PublicKey],
    valid_for: Duration,
    reports: Option<&str>,
) -> Result<Delegation> {
    if let Some(u) = reports
        && !(u.starts_with("http://") || u.starts_with("https://"))
    {
        return Err(Error::refused(
            format!("--reports {u:?} is not an http:// or https:// URL"),
            "give the base URL of the `upkeep reference` that keeps the fleet, e.g. https://ref.example/",
        ));
    }
    if !repo_dir.join(repo::POINTER).exists() {
        return Err(Error::refused(
            format!(
                "{} is not a repository (no latest.json)",
                repo_dir.display()
            ),
            "publish a release into it first",
        ));
    }
    crate::publisher::publish::read_pointer(repo_dir, release_key)?;
    let now = SystemTime::now();
    let d = Delegation {
        format: FORMAT,
        release_key: release_key.public().to_text(),
        online_keys: online.iter().map(|k| k.to_text()).collect(),
        date: rfc3339(now),
        expires: rfc3339(now + valid_for),
        reports: reports.map(|u| u.trim_end_matches('/').to_string() + "/"),
    };
    write_signed(repo_dir, DELEGATION, DELEGATION_SIG, &d, release_key)?;
    Ok(d)
}

/// A channel's pointer as it is in the repository, if the channel exists.
pub fn read_channel(repo_dir: &Path, name: &str) -> Result<Option<ChannelPointer>> {
    channel::check_channel_name(name)?;
    let p = repo_dir.join(channel::channel_path(name));
    if !p.exists() {
        return Ok(None);
    }
    let bytes = std::fs::read(&p).ctx("read", &p)?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::BadManifest {
            what: p.display().to_string(),
            reason: e.to_string(),
        })
}

/// The online key must be one the release key delegated, or sites will refuse what it signs.
fn check_delegated(repo_dir: &Path, key: &SecretKey) -> Result<PublicKey> {
    let Some((d, release)) = read_delegation(repo_dir)? else {
        return Err(Error::refused(
            format!("{} has no delegation of online keys", repo_dir.display()),
            "sign one with the release key: `upkeep delegate --repo REPO --key RELEASE_KEY --online-key-pub ONLINE.pub`",
        ));
    };
    let text = key.public().to_text();
    if !d.online_keys.contains(&text) {
        return Err(Error::refused(
            format!(
                "this online key (key id {}) is not delegated by the release key in {}",
                key.public().key_id(),
                repo_dir.join(DELEGATION).display()
            ),
            "add it with `upkeep delegate ... --online-key-pub` (the release key signs that), or use a delegated key",
        ));
    }
    Ok(release)
}

/// A published release: its manifest verifies with the release key, and its digest and size.
fn published(
    repo_dir: &Path,
    release: &PublicKey,
    version: &str,
) -> Result<(manifest::Sha256, u64)> {
    published_manifest(repo_dir, release, version).map(|(sha, size, _)| (sha, size))
}

/// [`published`], with the manifest's urgency.
fn published_manifest(
    repo_dir: &Path,
    release: &PublicKey,
    version: &str,
) -> Result<(manifest::Sha256, u64, bool)> {
    manifest::parse_version(version)?;
    let mp = repo_dir.join(repo::manifest_path(version));
    let bytes = std::fs::read(&mp).map_err(|_| {
        Error::refused(
            format!(
                "release {version} is not published in {}",
                repo_dir.display()
            ),
            "publish it first (`upkeep publish DIR --version V --repo REPO --key RELEASE_KEY`)",
        )
    })?;
    let sp = repo_dir.join(repo::manifest_sig_path(version));
    let sig = std::fs::read_to_string(&sp).ctx("read", &sp)?;
    release.verify(&bytes, &sig, &mp.display().to_string())?;
    let urgent = serde_json::from_slice::<manifest::Manifest>(&bytes)
        .map(|m| m.urgent)
        .unwrap_or(false);
    Ok((digest::sha256_bytes(&bytes), bytes.len() as u64, urgent))
}

/// The newest published release older than `version`, from the signed latest pointer.
fn release_before(repo_dir: &Path, release: &PublicKey, version: &str) -> Result<Option<String>> {
    let p = repo_dir.join(repo::POINTER);
    let bytes = std::fs::read(&p).ctx("read", &p)?;
    let sig_path = repo_dir.join(repo::POINTER_SIG);
    let sig = std::fs::read_to_string(&sig_path).ctx("read", &sig_path)?;
    let ptr: manifest::Pointer =
        manifest::verify_signed(&bytes, &sig, release, &p.display().to_string())?;
    let v = manifest::parse_version(version)?;
    Ok(ptr
        .releases
        .iter()
        .filter_map(|r| manifest::parse_version(r).ok().map(|x| (x, r)))
        .filter(|(x, _)| *x < v)
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, r)| r.clone()))
}

/// How a promotion is made.
pub struct Promote<'a> {
    /// The repository folder.
    pub repo: &'a Path,
    /// The channel.
    pub channel: &'a str,
    /// The release.
    pub version: &'a str,
    /// A delegated online key.
    pub key: &'a SecretKey,
    /// The waves.
    pub waves: Vec<Wave>,
    /// Time in a wave before the next.
    pub every: Duration,
    /// Failures that halt the rollout.
    pub halt_on_failure: Threshold,
    /// Successes a wave needs before the next.
    pub min_reports: u32,
    /// How long the signed pointer stays valid.
    pub ttl: Duration,
}

/// `upkeep promote`: start rolling `version` out on a channel, at its first wave.
pub fn promote(p: &Promote) -> Result<ChannelPointer> {
    channel::check_channel_name(p.channel)?;
    let release = check_delegated(p.repo, p.key)?;
    let (sha, size, urgent) = published_manifest(p.repo, &release, p.version)?;
    let old = read_channel(p.repo, p.channel)?;
    let previous = match &old {
        // A new channel: sites outside the first waves stay on the release published before.
        None => match release_before(p.repo, &release, p.version)? {
            Some(v) => {
                let (sha, size) = published(p.repo, &release, &v)?;
                Some(Previous {
                    release: v,
                    manifest_sha256: sha,
                    manifest_size: size,
                })
            }
            None => None,
        },
        Some(o) => {
            let (old_v, new_v) = (
                manifest::parse_version(&o.release)?,
                manifest::parse_version(p.version)?,
            );
            if new_v <= old_v && o.state != RolloutState::Halted {
                return Err(Error::refused(
                    format!(
                        "channel {} already offers release {} (state {}); {} is not newer",
                        p.channel, o.release, o.state, p.version
                    ),
                    "to stop a bad release use `upkeep rollout halt`; to continue one, `upkeep rollout resume`",
                ));
            }
            // Sites outside the new waves stay on what the channel gave everyone so far.
            match o.state {
                RolloutState::Complete => Some(Previous {
                    release: o.release.clone(),
                    manifest_sha256: o.manifest_sha256,
                    manifest_size: o.manifest_size,
                }),
                _ => o.previous.clone(),
            }
        }
    };
    let now = SystemTime::now();
    let mut ptr = ChannelPointer {
        format: FORMAT,
        serial: 0,
        channel: p.channel.to_string(),
        release: p.version.to_string(),
        manifest_sha256: sha,
        manifest_size: size,
        manifest_deltas: crate::publisher::shrink::manifest_deltas_in(p.repo, p.version),
        previous,
        waves: p.waves.clone(),
        wave: 0,
        state: RolloutState::Active,
        reason: None,
        wave_started: rfc3339(now),
        every_secs: p.every.as_secs(),
        min_reports: p.min_reports,
        halt_on_failure: p.halt_on_failure,
        ttl_secs: p.ttl.as_secs(),
        urgent,
        date: rfc3339(now),
        expires: rfc3339(now + p.ttl),
    };
    sign_channel(p.repo, &mut ptr, p.key)?;
    Ok(ptr)
}

/// Sign and write a channel pointer as the next of the channel's history (its serial one more
/// than the pointer it replaces), and list it in the index. A replaced pointer dated in the
/// future (a clock that was ahead) is named: pointers are ordered by serial, so mirrors take
/// this one anyway, but a mirror of an upkeep before serials keeps the future one until its
/// date.
pub fn sign_channel(repo_dir: &Path, ptr: &mut ChannelPointer, key: &SecretKey) -> Result<()> {
    if let Ok(Some(before)) = read_channel(repo_dir, &ptr.channel) {
        ptr.serial = ptr.serial.max(before.serial + 1);
        if humantime::parse_rfc3339(&before.date)
            .is_ok_and(|d| d > SystemTime::now() + Duration::from_secs(300))
        {
            crate::errln!(
                "warning: the pointer of channel {} this replaces was signed at {}, in the future by this machine's clock (a clock was ahead). Pointers are ordered by their serial ({} now), so sites and mirrors take this one; a mirror running an upkeep from before serials refuses it until that date: remove channels/{}.json on such a mirror to let it sync.",
                ptr.channel,
                before.date,
                ptr.serial,
                ptr.channel
            );
        }
    } else {
        ptr.serial = ptr.serial.max(1);
    }
    write_signed(
        repo_dir,
        &channel::channel_path(&ptr.channel),
        &channel::channel_sig_path(&ptr.channel),
        ptr,
        key,
    )?;
    write_channel_index(repo_dir)
}

/// Write `channels/index.json` from the channel files present.
pub fn write_channel_index(repo_dir: &Path) -> Result<()> {
    let names = channels(repo_dir);
    write_atomic(
        &repo_dir.join(channel::CHANNEL_INDEX),
        &manifest::to_bytes(&names),
    )
}

/// A change to a rollout.
#[derive(Clone, Debug)]
pub enum Move {
    /// To the next wave (complete after the last).
    Advance,
    /// Hold at the current wave.
    Pause(Option<String>),
    /// Go on after a pause (or after a halt, from the same wave).
    Resume,
    /// Stop: every site not yet updated is offered the previous release.
    Halt(String),
    /// Sign again with a fresh expiry (and a new validity, when given), nothing else changed.
    Refresh(Option<Duration>),
}

/// `upkeep rollout ...`: change a channel's rollout and sign the pointer again.
pub fn rollout(repo_dir: &Path, name: &str, key: &SecretKey, m: &Move) -> Result<ChannelPointer> {
    check_delegated(repo_dir, key)?;
    let Some(mut ptr) = read_channel(repo_dir, name)? else {
        return Err(Error::refused(
            format!("channel {name} does not exist in {}", repo_dir.display()),
            "start it with `upkeep promote VERSION --channel NAME ...`",
        ));
    };
    let now = SystemTime::now();
    let refuse = |why: String| Err(Error::refused(why, "see `upkeep rollout status`"));
    match m {
        Move::Advance => match ptr.state {
            RolloutState::Active | RolloutState::Paused if ptr.wave + 1 < ptr.waves.len() => {
                ptr.wave += 1;
                ptr.wave_started = rfc3339(now);
            }
            RolloutState::Active | RolloutState::Paused => ptr.state = RolloutState::Complete,
            s => {
                return refuse(format!(
                    "the rollout of {} is {s:?}: it cannot advance",
                    ptr.release
                ));
            }
        },
        Move::Pause(reason) => {
            if ptr.state != RolloutState::Active {
                return refuse(format!(
                    "the rollout of {} is {}, not active",
                    ptr.release, ptr.state
                ));
            }
            ptr.state = RolloutState::Paused;
            ptr.reason = reason.clone();
        }
        Move::Resume => {
            if !matches!(ptr.state, RolloutState::Paused | RolloutState::Halted) {
                return refuse(format!(
                    "the rollout of {} is {}: nothing to resume",
                    ptr.release, ptr.state
                ));
            }
            ptr.state = RolloutState::Active;
            ptr.reason = None;
            ptr.wave_started = rfc3339(now);
        }
        Move::Halt(reason) => {
            if ptr.state == RolloutState::Halted {
                return refuse(format!("the rollout of {} is already halted", ptr.release));
            }
            ptr.state = RolloutState::Halted;
            ptr.reason = Some(reason.clone());
        }
        Move::Refresh(ttl) => {
            if let Some(t) = ttl {
                ptr.ttl_secs = t.as_secs();
            }
        }
    }
    ptr.date = rfc3339(now);
    ptr.expires = rfc3339(now + Duration::from_secs(ptr.ttl_secs));
    sign_channel(repo_dir, &mut ptr, key)?;
    Ok(ptr)
}

/// The channels of a repository, by their pointer files.
pub fn channels(repo: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(repo.join("channels"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .filter(|n| crate::documents::channel::valid_name(n))
                .map(String::from)
        })
        .collect();
    v.sort();
    v
}
