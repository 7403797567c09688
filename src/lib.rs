//! upkeep keeps a web application's files up to date from a signed reference server, safely:
//! nothing live changes before the operator approves, nothing enters the live tree unless it
//! matches a signed manifest, and a crash at any point is recoverable.
//!
//! The folders follow the spine of an update (see DESIGN.md): `manifest` (the vocabulary),
//! `fingerprint`, `reference` (publish, serve), `stage` (the four sources), `update` (the run),
//! `panel` (the browser face). The CLI in `main.rs` and the panel call the same functions.

pub mod accounts;
pub mod auto;
pub mod check;
pub mod clock;
pub mod config;
pub mod crash;
pub mod demo;
pub mod error;
pub mod fingerprint;
pub mod finish;
pub mod fleet;
pub mod forms;
pub mod fsutil;
pub mod init;
pub mod lock;
pub mod manifest;
pub mod mirror;
pub mod panel;
pub mod progress;
pub mod reference;
pub mod shell;
pub mod site;
pub mod stage;
pub mod state;
pub mod trigger;
pub mod update;

pub use error::{Error, Result};
