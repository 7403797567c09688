//! Site reports and enrolments: what an enrolled site tells its reference. A report is signed
//! with the site key and numbered, so it cannot be forged for another site nor replayed; the
//! site queues and sends it (`site::fleet::report`), the reference checks and keeps it
//! (`publisher::fleet::db`).

use serde::{Deserialize, Serialize};

/// Format number of reports.
pub const FORMAT: u32 = 1;
/// The header carrying a report's signature.
pub const SIGNATURE_HEADER: &str = "x-upkeep-signature";
/// Largest report the reference accepts.
pub const MAX_REPORT: usize = 64 << 10;

/// What happened, in the words of Mender's deployment states.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Staging the release.
    Downloading,
    /// Running the update.
    Installing,
    /// The release is live.
    Success,
    /// Nothing to do.
    UpToDate,
    /// Failed; nothing live changed.
    Failure,
    /// Failed and rolled back.
    RolledBack,
    /// Held by the site's policy.
    Held,
    /// Postponed by the site's policy.
    Postponed,
}

impl Outcome {
    /// The value of a stored word.
    pub fn parse(s: &str) -> Option<Outcome> {
        [
            Outcome::Downloading,
            Outcome::Installing,
            Outcome::Success,
            Outcome::UpToDate,
            Outcome::Failure,
            Outcome::RolledBack,
            Outcome::Held,
            Outcome::Postponed,
        ]
        .into_iter()
        .find(|o| o.word() == s)
    }

    /// The words a person reads (`fleet status`, the fleet page).
    pub fn words(self) -> &'static str {
        match self {
            Outcome::Downloading => "downloading",
            Outcome::Installing => "installing",
            Outcome::Success => "updated",
            Outcome::UpToDate => "up to date",
            Outcome::Failure => "failed",
            Outcome::RolledBack => "rolled back",
            Outcome::Held => "held",
            Outcome::Postponed => "postponed",
        }
    }

    /// The stored word.
    pub fn word(self) -> &'static str {
        match self {
            Outcome::Downloading => "downloading",
            Outcome::Installing => "installing",
            Outcome::Success => "success",
            Outcome::UpToDate => "up_to_date",
            Outcome::Failure => "failure",
            Outcome::RolledBack => "rolled_back",
            Outcome::Held => "held",
            Outcome::Postponed => "postponed",
        }
    }
}

/// The health check as reported.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Health {
    /// It passed.
    pub ok: bool,
    /// What it saw.
    pub detail: String,
}

/// One report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// [`FORMAT`].
    pub format: u32,
    /// The site id.
    pub site_id: String,
    /// Its number: each report's is greater than the one before.
    pub seq: u64,
    /// When it was made.
    pub at: String,
    /// The site's name.
    pub name: String,
    /// Its groups.
    pub groups: Vec<String>,
    /// Its channel.
    pub channel: String,
    /// The release live after this.
    pub installed: Option<String>,
    /// The release before.
    pub from: Option<String>,
    /// The release concerned.
    pub to: Option<String>,
    /// What happened.
    pub outcome: Outcome,
    /// The step a failed run stopped at.
    pub failed_step: Option<String>,
    /// Why, in a sentence.
    pub reason: String,
    /// How long the site was closed, in milliseconds.
    pub closed_ms: Option<i64>,
    /// Bytes fetched from the network.
    pub bytes_fetched: Option<u64>,
    /// Locally modified files.
    pub modified: usize,
    /// The health check.
    pub health: Option<Health>,
    /// Where the site takes triggers (`url` in upkeep.toml).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// What a site presents to enrol.
#[derive(Debug, Deserialize, Serialize)]
pub struct Enrolment {
    /// The token the publisher made.
    pub token: String,
    /// The site id.
    pub site_id: String,
    /// The site's public key.
    pub public_key: String,
    /// Its name.
    pub name: String,
    /// Its groups.
    pub groups: Vec<String>,
    /// Its channel.
    pub channel: String,
    /// Where its `upkeep serve` takes triggers (for `upkeep push`).
    #[serde(default)]
    pub url: Option<String>,
    /// The release it has (as `init` identified it), shown from the moment it enrols.
    #[serde(default)]
    pub installed: Option<String>,
}

/// Longest site name a reference keeps.
pub const MAX_NAME: usize = 200;
/// Longest free text (a reason, a health check's detail) a reference keeps.
pub const MAX_TEXT: usize = 8000;

/// The short fields a person reads in `fleet status` and on the fleet page: plain text of
/// their kind, or the report is refused (a reason with control characters is kept, and shown
/// with them replaced).
fn check_fields(
    name: &str,
    groups: &[String],
    channel: &str,
    url: Option<&str>,
) -> Result<(), String> {
    use crate::base::text::has_controls;
    use crate::documents::channel::valid_name;
    if name.is_empty() || name.chars().count() > MAX_NAME || has_controls(name, false) {
        return Err(format!(
            "the site name must be 1 to {MAX_NAME} characters without control characters"
        ));
    }
    if groups.len() > 64 || groups.iter().any(|g| !valid_name(g)) {
        return Err("groups must be at most 64 names of lowercase letters, digits, - and _".into());
    }
    if !valid_name(channel) {
        return Err("the channel must be a name of lowercase letters, digits, - and _".into());
    }
    if let Some(u) = url
        && (u.len() > 2048
            || !(u.starts_with("http://") || u.starts_with("https://"))
            || u.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err("url must be an http:// or https:// URL".into());
    }
    Ok(())
}

/// Versions a site names are release versions (semver), short.
fn check_versions(versions: &[(&str, &Option<String>)]) -> Result<(), String> {
    for (what, v) in versions {
        if let Some(v) = v
            && (v.len() > 64 || crate::documents::manifest::parse_version(v).is_err())
        {
            return Err(format!("{what} must be a release version (semver)"));
        }
    }
    Ok(())
}

impl Report {
    /// What a reference checks before it keeps a report, beside its signature and number.
    pub fn check(&self) -> Result<(), String> {
        check_fields(&self.name, &self.groups, &self.channel, self.url.as_deref())?;
        check_versions(&[
            ("installed", &self.installed),
            ("from", &self.from),
            ("to", &self.to),
        ])?;
        if let Some(s) = &self.failed_step
            && (s.len() > 32 || !s.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        {
            return Err("failed_step must be a step's name".into());
        }
        let detail = self.health.as_ref().map_or(0, |h| h.detail.len());
        if self.reason.len() > MAX_TEXT || detail > MAX_TEXT {
            return Err(format!(
                "the reason and the health detail are at most {MAX_TEXT} bytes"
            ));
        }
        Ok(())
    }
}

impl Enrolment {
    /// What a reference checks before it enrols a site, beside its token and key.
    pub fn check(&self) -> Result<(), String> {
        check_fields(&self.name, &self.groups, &self.channel, self.url.as_deref())?;
        check_versions(&[("installed", &self.installed)])
    }
}
