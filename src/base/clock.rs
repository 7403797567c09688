//! The time as the state store records it: RFC 3339 text for people, milliseconds and seconds
//! since the epoch for arithmetic (closed windows, session ages).

use std::time::{SystemTime, UNIX_EPOCH};

/// Current time as RFC 3339, to the second.
pub fn now_text() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    since_epoch().as_millis() as i64
}

/// Seconds since the epoch.
pub fn now_secs() -> i64 {
    since_epoch().as_secs() as i64
}

fn since_epoch() -> std::time::Duration {
    // A clock before 1970 is a broken clock; zero keeps the arithmetic defined.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}
