//! Small infrastructure every face uses; it knows nothing of releases, sites or publishers.

pub mod accounts;
pub mod beneath;
pub mod clock;
pub mod crash;
pub mod dburl;
pub mod error;
pub mod fsutil;
pub mod http;
pub mod nonces;
pub mod out;
pub mod pg;
pub mod progress;
pub mod shell;
pub mod sql;
pub mod text;
pub mod users;
