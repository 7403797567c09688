//! `check`: the live tree against the installed release and the reference's latest release.

use crate::base::clock::now_text;
use crate::base::error::{Error, Result};
use crate::client::Remote;
use crate::documents::manifest::VerifiedManifest;
use crate::site::config::Instance;
use crate::site::fingerprint::diff_live;
use crate::site::plan::Diff;
use crate::site::state::State;

/// Fetch and verify the latest release, then compare. The fetched manifest is kept in state.db.
pub fn check(inst: &Instance) -> Result<(Diff, VerifiedManifest)> {
    let remote = Remote::new(&inst.config.reference, &inst.key, &inst.config.network)?;
    let target = crate::site::fleet::identity::offered(inst, &remote)?;
    let mut state = State::open(&inst.state_db())?;
    let installed = state.installed_list(&inst.key)?;
    let why = target.offer.as_ref().map(|o| o.why.clone());
    // A channel that offers this site nothing yet leaves it where it is.
    let latest = match (target.manifest, &installed) {
        (Some(m), _) => m,
        (None, Some(_)) => state
            .installed_version()?
            .and_then(|v| state.load_release(&v, &inst.key).transpose())
            .transpose()?
            .ok_or_else(|| {
                Error::msg("the installed release's manifest is missing from state.db")
            })?,
        (None, None) => {
            return Err(Error::refused(
                format!(
                    "{}: there is nothing to install yet",
                    why.as_deref().unwrap_or("the channel offers nothing")
                ),
                "wait for the rollout to reach this site, or follow another channel (`channel` in upkeep.toml)",
            ));
        }
    };
    let mut diff = diff_live(inst, &mut state, installed.as_ref(), &latest)?;
    diff.offer = why;
    // The same rule as staging's: an older release is no update.
    if let Some(i) = &installed {
        diff.older = crate::documents::manifest::parse_version(latest.version())?
            < crate::documents::manifest::parse_version(i.version())?;
    }
    state.save_release(&latest)?;
    state.set_meta("last_check", &now_text())?;
    state.set_meta("last_check_latest", latest.version())?;
    state.set_meta(
        "last_check_diff",
        &serde_json::to_string(&diff).expect("serialises"),
    )?;
    Ok((diff, latest))
}
