//! The commands and their options, one file per face: `publisher` (keys, publishing, serving,
//! mirrors, rollouts, the fleet) and `site` (an instance's commands; every panel action is
//! also one of them).

mod publisher;
mod site;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use publisher::{FleetAction, FleetUserCommand, KeyRole, PublisherCommand, RolloutAction};
pub use site::{SiteCommand, UserCommand, WebServer};

/// Keep a web application's files up to date from a signed reference server.
///
/// Publisher: `keygen`, `publish`, `reference`. Site operator: `init`, `check`, `stage`,
/// `update`, `status`, `resume`, `rollback`, `serve`. Try `upkeep demo` for a local tour.
#[derive(Parser, Debug)]
#[command(name = "upkeep", version, about, long_about, after_help = EXIT_CODES)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 success (check: up to date), 10 check: an update is available, \
1 error, 2 bad usage or a mistake in upkeep.toml, 3 auto: held or postponed, 4 update: the plan changed \
since it was approved (--plan), 75 busy (another \
run holds the instance lock).";

/// Where an instance lives.
#[derive(clap::Args, Debug, Clone)]
pub struct RootArg {
    /// The instance root (the folder holding upkeep.toml).
    #[arg(long, value_name = "DIR", default_value = ".", env = "UPKEEP_ROOT")]
    pub root: PathBuf,
}

/// The commands: the publisher's, the site's, and the demo of both.
#[derive(Subcommand, Debug)]
pub enum Command {
    #[command(flatten)]
    Publisher(PublisherCommand),

    #[command(flatten)]
    Site(SiteCommand),

    /// A local tour: two releases of a sample site, a reference server and an instance at the
    /// first release, all on loopback. Prints the panel URL and a one-time password.
    Demo {
        /// Address for the site and its panel (port 0 picks a free port).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8000")]
        listen: String,
        /// Where to build the demo (default: a new temporary folder, removed on exit).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}
