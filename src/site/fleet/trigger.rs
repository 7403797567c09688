//! Triggers a site accepts (the message and its checks are [`crate::documents::trigger`]):
//! state.db remembers their nonces, and an accepted one starts an unattended pass.

use crate::base::error::{Error, Result};
use crate::documents::trigger::Ledger;
use crate::site::state::State;

impl Ledger for State {
    fn use_nonce(&self, nonce: &str, now: i64, forget: i64) -> Result<bool> {
        State::use_nonce(self, nonce, now, forget)
    }
    fn meta(&self, key: &str) -> Result<Option<String>> {
        State::meta(self, key)
    }
    fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        State::set_meta(self, key, value)
    }
}

/// Start `upkeep auto --root ROOT` in the background, its output in `.upkeep/trigger.log`.
pub fn start_pass(root: &std::path::Path) -> Result<u32> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().map_err(|e| Error::msg(format!("the upkeep binary: {e}")))?;
    let log_path = root.join(".upkeep").join("trigger.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| Error::msg(format!("{}: {e}", log_path.display())))?;
    let child = std::process::Command::new(exe)
        .args(["auto", "--root"])
        .arg(root)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(|e| Error::msg(e.to_string()))?)
        .stderr(log)
        // Its own process group: the pass outlives a server restart.
        .process_group(0)
        .spawn()
        .map_err(|e| Error::msg(format!("start upkeep auto: {e}")))?;
    Ok(child.id())
}
