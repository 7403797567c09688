//! upkeep keeps a web application's files up to date from a signed reference server, safely:
//! nothing live changes before the operator approves, nothing enters the live tree unless it
//! matches a signed manifest, and a crash at any point is recoverable.
//!
//! The folders name the faces (see DESIGN.md, "Where things live"); `tests/layering.rs` keeps
//! the arrows between them pointing one way:
//!
//! - [`base`]: small infrastructure every face uses (errors, clock, crash points, files,
//!   progress, shell, accounts and sessions);
//! - [`documents`]: what site and publisher say to each other, formats and verification only
//!   (manifest, pointers, channels, forms, archives, triggers, reports);
//! - [`client`]: reading a repository over HTTP, for sites and mirrors alike;
//! - [`site`]: an instance and everything done to it (check, stage, update, auto, panel);
//! - [`publisher`]: publishing, serving, mirroring, and steering a fleet.
//!
//! The binary (`src/bin/upkeep/`) and the panel call the same functions.

// Output goes through base::out, which never fails a run on a closed pipe.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod base;
pub mod client;
pub mod documents;
pub mod publisher;
pub mod site;

pub use base::error::{Error, Result};
