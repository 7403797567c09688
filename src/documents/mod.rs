//! The documents site and publisher speak: their formats, and how each is verified. No
//! network, no state store: a site, a mirror and a publisher read them the same way.
//!
//! `manifest` (safe paths, digests, signatures, the manifest and the latest pointer),
//! `channel` (channel pointers, the delegation, the wave rule), `repo` (where each document
//! lives in a repository), `forms` (compressed objects and deltas), `archive` (a release zip),
//! `tree` (which files of a folder make a release), `trigger` and `report` (what fleets send).

pub mod archive;
pub mod channel;
pub mod forms;
pub mod manifest;
pub mod repo;
pub mod report;
pub mod tree;
pub mod trigger;
