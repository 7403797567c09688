//! One function per command: open what it needs, call the library, print the result (through
//! `print.rs`), return the exit code. One file per group of commands.

pub mod fleet;
pub mod publisher;
pub mod run;
pub mod site;

use std::path::Path;

use upkeep::base::error::Result;
use upkeep::site::config::Instance;

/// The instance at `root`, this process acting as the site's user from here on when it was
/// started as root (see `upkeep::site::owner`).
pub fn site_instance(root: &Path) -> Result<Instance> {
    upkeep::site::owner::act_as_site_user(root)?;
    Instance::open(root)
}
