//! `check`: the live tree against the installed release and the reference's latest release.

use crate::clock::now_text;
use crate::config::Instance;
use crate::error::Result;
use crate::fingerprint::diff_live;
use crate::manifest::VerifiedManifest;
use crate::manifest::plan::Diff;
use crate::reference::client::{Remote, block_on};
use crate::state::State;

/// Fetch and verify the latest release, then compare. The fetched manifest is kept in state.db.
pub fn check(inst: &Instance) -> Result<(Diff, VerifiedManifest)> {
    let remote = Remote::new(&inst.config.reference, &inst.key, &inst.config.network)?;
    let (_, latest) = block_on(remote.latest())?;
    let mut state = State::open(&inst.state_db())?;
    let installed = state.installed_list(&inst.key)?;
    let mut diff = diff_live(inst, &mut state, installed.as_ref(), &latest)?;
    // The same rule as staging's: an older release is no update.
    if let Some(i) = &installed {
        diff.older = crate::manifest::parse_version(latest.version())?
            < crate::manifest::parse_version(i.version())?;
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
