//! The site's side of a fleet: who it is (`identity`), what it tells its reference after each
//! run (`report`), and the triggers it takes (`trigger`).

pub mod identity;
pub mod report;
pub mod trigger;
