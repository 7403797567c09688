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
}
