//! The publisher's side: publish a release into a repository; serve a repository.

pub mod publish;
pub mod repo;
pub mod serve;
