//! Fleets: channels and staged rollouts over many sites (see DESIGN.md, "Fleets").
//!
//! `channel` holds the signed documents and the wave rule (pure), `rollout` the publisher's
//! commands on a repository folder, `site` a site's identity (id, key, groups, channel).

pub mod channel;
pub mod db;
pub mod page;
pub mod pilot;
pub mod push;
pub mod report;
pub mod rollout;
pub mod server;
pub mod site;
