//! The reference repository: publish a release into it, serve it, and the client a site uses
//! to read it (`check`, `stage` and `init` all go through [`client`]).

pub mod client;
pub mod publish;
pub mod repo;
pub mod serve;
