//! Channels and waves: the signed documents a rollout is made of, and the rule that says whether
//! a site is offered a channel's release.
//!
//! Keys, in the spirit of TUF's roles: the release key (offline) signs manifests and a
//! *delegation* (`keys/online.json`) naming the online keys; an online key signs *channel
//! pointers* (`channels/NAME.json`). A channel pointer only chooses among manifests the release
//! key signed (it names one by its SHA-256, and sites verify the manifest's own signature), so a
//! stolen online key can delay or halt updates, never install anything.

use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::base::error::{Error, Result};
use crate::documents::manifest::Sha256;

/// Format number of the delegation and of channel pointers.
pub const FORMAT: u32 = 1;
/// The delegation, signed by the release key.
pub const DELEGATION: &str = "keys/online.json";
/// Its signature.
pub const DELEGATION_SIG: &str = "keys/online.sig";
/// The channel a site follows when upkeep.toml names none.
pub const DEFAULT_CHANNEL: &str = "stable";

/// A channel's pointer file.
pub fn channel_path(name: &str) -> String {
    format!("channels/{name}.json")
}
/// Its signature.
pub fn channel_sig_path(name: &str) -> String {
    format!("channels/{name}.sig")
}

/// Whether `name` can name a channel or a group: short, lowercase letters, digits, `-`, `_`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name != "index"
}

/// The list of a repository's channels (unsigned: discovery only, each channel is verified on
/// its own), so that a mirror of a static repository knows what to copy.
pub const CHANNEL_INDEX: &str = "channels/index.json";

/// Which online keys may sign channel pointers, signed by the release key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Delegation {
    /// [`FORMAT`].
    pub format: u32,
    /// The release key that signed this (for the publisher's tools; sites trust only the key in
    /// their own upkeep.toml).
    pub release_key: String,
    /// Public keys (`upkeep-public-key-v1:...`).
    pub online_keys: Vec<String>,
    /// When it was signed.
    pub date: String,
    /// After this, sites refuse it: the release key must sign it again (a yearly ceremony).
    pub expires: String,
    /// Where sites enrol and send their reports (the publisher's `upkeep reference`, base
    /// URL), whichever mirror they fetch the repository from: signed here so that a mirror
    /// cannot send a fleet's reports elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reports: Option<String>,
}

/// One wave of a rollout: the sites of a group, or a share of all sites.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wave {
    /// Sites listing this group in upkeep.toml.
    Group(String),
    /// A share of every site, in hundredths of a percent (10% = 1000).
    Share(u32),
}

impl std::fmt::Display for Wave {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Wave::Group(g) => write!(f, "{g}"),
            Wave::Share(bp) if bp % 100 == 0 => write!(f, "{}%", bp / 100),
            Wave::Share(bp) => write!(f, "{}.{:02}%", bp / 100, bp % 100),
        }
    }
}

/// Parse a share, "10%" or "2.5%", into hundredths of a percent.
fn parse_share(s: &str) -> Option<u32> {
    let n = s.strip_suffix('%')?;
    let (int, frac) = n.split_once('.').unwrap_or((n, ""));
    if int.is_empty()
        || frac.len() > 2
        || !(int.bytes().chain(frac.bytes())).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let frac: u32 = format!("{frac:0<2}").parse().ok()?;
    let v = int
        .parse::<u32>()
        .ok()?
        .checked_mul(100)?
        .checked_add(frac)?;
    (1..=10_000).contains(&v).then_some(v)
}

impl std::str::FromStr for Wave {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        if s.ends_with('%') {
            parse_share(s).map(Wave::Share).ok_or_else(|| {
                format!("{s:?} is not a share: write 1% to 100%, for example 10% or 2.5%")
            })
        } else if valid_name(s) {
            Ok(Wave::Group(s.to_string()))
        } else {
            Err(format!(
                "{s:?} is neither a share (10%) nor a group name (lowercase letters, digits, - and _)"
            ))
        }
    }
}

impl Serialize for Wave {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Wave {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Parse `--waves test,10%,50%,100%`: groups anywhere, shares rising, the last wave reaching
/// every site (100%), no wave twice.
pub fn parse_waves(text: &str) -> std::result::Result<Vec<Wave>, String> {
    let waves: Vec<Wave> = text
        .split(',')
        .map(|w| w.parse())
        .collect::<std::result::Result<_, _>>()?;
    let mut last_share = 0;
    for (i, w) in waves.iter().enumerate() {
        if waves[..i].contains(w) {
            return Err(format!("wave {w} is listed twice"));
        }
        if let Wave::Share(bp) = w {
            if *bp <= last_share {
                return Err(format!(
                    "wave {w} comes after a share at least as large: shares must grow (10%,50%,100%)"
                ));
            }
            last_share = *bp;
        }
    }
    if waves.last() != Some(&Wave::Share(10_000)) {
        return Err(
            "the last wave must be 100%, so that every site gets the release in the end".into(),
        );
    }
    Ok(waves)
}

/// A wave list, as given on the command line (`test,10%,100%`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waves(pub Vec<Wave>);

impl std::str::FromStr for Waves {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        parse_waves(s).map(Waves)
    }
}

/// When a rollout halts by itself: a share of the reports, or a number of failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threshold {
    /// Failures over this share of the wave's reports (hundredths of a percent).
    Share(u32),
    /// This many failures.
    Count(u32),
}

impl std::fmt::Display for Threshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Threshold::Share(bp) => write!(f, "{}", Wave::Share(*bp)),
            Threshold::Count(n) => write!(f, "{n}"),
        }
    }
}

impl std::str::FromStr for Threshold {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        if s.ends_with('%') {
            parse_share(s)
                .map(Threshold::Share)
                .ok_or_else(|| format!("{s:?} is not a share (1% to 100%)"))
        } else {
            s.parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .map(Threshold::Count)
                .ok_or_else(|| {
                    format!("{s:?} is neither a share (5%) nor a number of failures (3)")
                })
        }
    }
}

impl Serialize for Threshold {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Threshold {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Where a rollout stands.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// Moving through its waves.
    Active,
    /// Held at its current wave by the publisher; sites in the waves so far still get it.
    Paused,
    /// Stopped: every site not yet updated is offered the previous release.
    Halted,
    /// Past its last wave: every site is offered the release.
    Complete,
}

impl std::fmt::Display for RolloutState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RolloutState::Active => "active",
            RolloutState::Paused => "paused",
            RolloutState::Halted => "halted",
            RolloutState::Complete => "complete",
        })
    }
}

/// A channel pointer: which release the channel offers, to which waves so far, and what the
/// sites outside them stay on. Signed by an online key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChannelPointer {
    /// [`FORMAT`].
    pub format: u32,
    /// The pointer's place in the channel's history, one more than the pointer it replaced:
    /// what orders pointers (see [`ChannelPointer::is_older_than`]), since a clock that was
    /// ahead once must not freeze every mirror until that date. 0 in pointers signed before
    /// serials.
    #[serde(default)]
    pub serial: u64,
    /// The channel's name.
    pub channel: String,
    /// The release being rolled out.
    pub release: String,
    /// SHA-256 of its manifest bytes (the manifest itself is signed by the release key).
    pub manifest_sha256: Sha256,
    /// Size of those bytes.
    pub manifest_size: u64,
    /// Releases whose manifest `release`'s has a delta from (`releases/V/manifest.from-OLD.zst`),
    /// as in the latest pointer: a site keeping one of them fetches a few kilobytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifest_deltas: Vec<String>,
    /// The release sites outside the waves so far stay on (the channel's release before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Previous>,
    /// The waves, in order.
    pub waves: Vec<Wave>,
    /// The current wave (index into `waves`): waves up to it are offered the release.
    pub wave: usize,
    /// Where the rollout stands.
    pub state: RolloutState,
    /// Why it was paused or halted, in the publisher's or the server's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the current wave began.
    pub wave_started: String,
    /// Rollout rules: time to wait in a wave before the next.
    pub every_secs: u64,
    /// Rollout rules: successes a wave needs before the next.
    pub min_reports: u32,
    /// Rollout rules: failures that halt it.
    pub halt_on_failure: Threshold,
    /// How long each signature of the pointer is valid (refreshes keep it).
    pub ttl_secs: u64,
    /// The release's manifest says it is urgent (sites check that manifest before trusting it):
    /// every wave at once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub urgent: bool,
    /// When the pointer was signed.
    pub date: String,
    /// After this, sites refuse it (the online key refreshes it, daily by default).
    pub expires: String,
}

impl ChannelPointer {
    /// Whether this pointer comes before `other` in the channel's history: by their signed
    /// serials, which only count up, and by date only between pointers that both predate
    /// serials. A pointer with a serial is newer than one without.
    pub fn is_older_than(&self, other: &ChannelPointer) -> bool {
        match (self.serial, other.serial) {
            (0, 0) => self.date < other.date,
            (a, b) => a < b,
        }
    }
}

/// The release sites outside the waves stay on.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Previous {
    /// Its version.
    pub release: String,
    /// SHA-256 of its manifest bytes.
    pub manifest_sha256: Sha256,
    /// Size of those bytes.
    pub manifest_size: u64,
}

/// What a site brings to the question "am I offered this release?".
#[derive(Clone, Debug)]
pub struct SiteView<'a> {
    /// Its site id.
    pub id: &'a str,
    /// Its groups.
    pub groups: &'a [String],
}

/// Where a site falls for a release: a number in [0, 1) from a hash of (site id, release),
/// uniform over sites and independent from one release to the next, so the same sites are
/// not always first. Every mirror gives the same answer: it depends on nothing else.
pub fn bucket(site_id: &str, release: &str) -> f64 {
    let h = sha2::Sha256::digest(format!("upkeep-wave\0{site_id}\0{release}").as_bytes());
    let n = u64::from_be_bytes(h[..8].try_into().expect("8 bytes"));
    (n >> 11) as f64 / (1u64 << 53) as f64
}

/// The first wave that includes `site`, if any.
pub fn first_wave(p: &ChannelPointer, site: &SiteView) -> Option<usize> {
    let b = bucket(site.id, &p.release);
    p.waves.iter().position(|w| match w {
        Wave::Group(g) => site.groups.iter().any(|s| s == g),
        Wave::Share(bp) => b < *bp as f64 / 10_000.0,
    })
}

/// What a channel offers a site: the release (and its manifest digest) and why, in words.
#[derive(Clone, Debug, Serialize)]
pub struct Offer {
    /// The channel.
    pub channel: String,
    /// The release offered, if any.
    pub release: Option<String>,
    /// Its manifest digest and size.
    #[serde(skip)]
    pub manifest: Option<(Sha256, u64)>,
    /// Whether the site is in the rollout's waves so far.
    pub in_rollout: bool,
    /// Why, in a sentence ("in wave 2 of 3 (50%): its bucket 0.31 is under 0.50").
    pub why: String,
}

/// Decide what `p` offers `site`.
pub fn offer(p: &ChannelPointer, site: &SiteView) -> Offer {
    let n = p.waves.len();
    let first = first_wave(p, site);
    let wave_words = |i: usize| format!("wave {} of {n} ({})", i + 1, p.waves[i]);
    let how = |i: usize| match &p.waves[i] {
        Wave::Group(g) => format!("the site is in group {g}"),
        Wave::Share(bp) => format!(
            "its bucket {:.4} is under {:.4}",
            bucket(site.id, &p.release),
            *bp as f64 / 10_000.0
        ),
    };
    let (in_rollout, why) = match (p.state, first) {
        (RolloutState::Halted, _) => (
            false,
            format!(
                "the rollout of {} was halted{}",
                p.release,
                p.reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
        ),
        (RolloutState::Complete, _) => (true, format!("the rollout of {} is complete", p.release)),
        (_, _) if p.urgent => (
            true,
            format!("{} is an urgent release: every wave at once", p.release),
        ),
        (_, Some(i)) if i <= p.wave => (true, format!("in {}, reached: {}", wave_words(i), how(i))),
        (_, Some(i)) => (
            false,
            format!(
                "in {}, not reached yet (the rollout is at {}{})",
                wave_words(i),
                wave_words(p.wave),
                if p.state == RolloutState::Paused {
                    ", paused"
                } else {
                    ""
                }
            ),
        ),
        // Unreachable with a last wave of 100%, which parse_waves requires; a pointer signed
        // without it still answers sanely.
        (_, None) => (false, "in none of the rollout's waves".to_string()),
    };
    let (release, manifest) = if in_rollout {
        (
            Some(p.release.clone()),
            Some((p.manifest_sha256, p.manifest_size)),
        )
    } else {
        match &p.previous {
            Some(prev) => (
                Some(prev.release.clone()),
                Some((prev.manifest_sha256, prev.manifest_size)),
            ),
            None => (None, None),
        }
    };
    let why = match (&release, in_rollout) {
        (Some(r), true) => format!("channel {}: release {r}, {why}", p.channel),
        (Some(r), false) => format!(
            "channel {}: release {r} (the one before {}): {why}",
            p.channel, p.release
        ),
        (None, _) => format!("channel {}: nothing offered yet: {why}", p.channel),
    };
    Offer {
        channel: p.channel.clone(),
        release,
        manifest,
        in_rollout,
        why,
    }
}

/// Refuse a channel name that cannot be a file name in the repository.
pub fn check_channel_name(name: &str) -> Result<()> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(Error::refused(
            format!("{name:?} is not a channel name"),
            "use lowercase letters, digits, - and _ (for example stable, beta, eu-test)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waves_parse_and_nonsense_is_refused_1() {
        let w = parse_waves("test,10%,2.5%").unwrap_err();
        assert!(w.contains("shares must grow"), "{w}");
        let w = parse_waves("test,2.5%,50%,100%").unwrap();
        assert_eq!(
            w,
            vec![
                Wave::Group("test".into()),
                Wave::Share(250),
                Wave::Share(5000),
                Wave::Share(10_000)
            ]
        );
        assert_eq!(w[1].to_string(), "2.50%");
        for bad in [
            "",
            "10%,50%",
            "0%,100%",
            "110%",
            "Test,100%",
            "a b,100%",
            "x,x,100%",
            "10.123%,100%",
        ] {
            assert!(parse_waves(bad).is_err(), "{bad:?}");
        }
        assert_eq!("5%".parse::<Threshold>().unwrap(), Threshold::Share(500));
        assert_eq!("3".parse::<Threshold>().unwrap(), Threshold::Count(3));
        assert!("0".parse::<Threshold>().is_err());
    }

    #[test]
    fn buckets_are_uniform_deterministic_and_independent_across_releases_1() {
        let ids: Vec<String> = (0..20_000).map(|i| format!("site-{i:05}")).collect();
        let under = |v: &str, share: f64| ids.iter().filter(|id| bucket(id, v) < share).count();
        for share in [0.1, 0.5] {
            let n = under("1.2.0", share) as f64 / ids.len() as f64;
            assert!((n - share).abs() < 0.015, "{share}: {n}");
        }
        assert_eq!(bucket("a", "1.0.0"), bucket("a", "1.0.0"));
        // The first 10% of one release and of the next overlap about as chance says (1%).
        let both = ids
            .iter()
            .filter(|id| bucket(id, "1.2.0") < 0.1 && bucket(id, "1.3.0") < 0.1)
            .count() as f64
            / ids.len() as f64;
        assert!((both - 0.01).abs() < 0.005, "{both}");
    }
}
