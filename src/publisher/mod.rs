//! The publisher: `publish` a release folder into a repository (`shrink` makes the smaller
//! forms), `serve` repositories, `mirror` them (hubs and leaves), steer a `fleet`, and send
//! `trigger`s.

pub mod fleet;
pub mod mirror;
pub mod publish;
pub mod serve;
pub mod shrink;
pub mod trigger;
