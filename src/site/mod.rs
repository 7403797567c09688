//! The site: an instance (its folder, upkeep.toml, state.db, lock) and everything done to it,
//! in the order of the spine: `fingerprint` and `check`, `stage`, the `plan`, `update` (close,
//! swap, scan, migrate, run_once, reopen, rollback), `finish`, `init`, `auto` (unattended
//! passes); `fleet` (the site's identity, its reports, triggers it accepts); `serve` (the live
//! tree behind the gate) and `panel` (the control panel); `owner` (acting as the site's user); `web` (the web server's lines).

pub mod auto;
pub mod check;
pub mod config;
pub mod database;
pub mod fingerprint;
pub mod finish;
pub mod fleet;
pub mod init;
pub mod lock;
pub mod owner;
pub mod panel;
pub mod plan;
pub mod serve;
pub mod stage;
pub mod state;
pub mod update;
pub mod web;
