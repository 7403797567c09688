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

/// A span in the words a person reads: its two largest units, spaced and plural where they
/// should be ("1 day", "3 days 2 h", "5 min 30 s", "0 s"); `humantime`'s form ("3days 2h")
/// stays for upkeep.toml, which reads it back.
pub fn span_words(d: std::time::Duration) -> String {
    let mut left = d.as_secs();
    let units: [(u64, &str, &str); 4] = [
        (86_400, " day", " days"),
        (3_600, " h", " h"),
        (60, " min", " min"),
        (1, " s", " s"),
    ];
    let mut parts = Vec::new();
    for (size, one, many) in units {
        let n = left / size;
        left %= size;
        if n > 0 {
            parts.push(format!("{n}{}", if n == 1 { one } else { many }));
        }
        // Two units at most, and adjacent ones: "1 day 5 s" says less than it seems to.
        if parts.len() == 2 || (!parts.is_empty() && n == 0) {
            break;
        }
    }
    match parts.is_empty() {
        true => "0 s".into(),
        false => parts.join(" "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn spans_read_as_words() {
        let w = |s| span_words(Duration::from_secs(s));
        assert_eq!(w(0), "0 s");
        assert_eq!(w(86_400), "1 day");
        assert_eq!(w(3 * 86_400 + 7_200 + 5), "3 days 2 h");
        assert_eq!(w(330), "5 min 30 s");
        assert_eq!(w(3_600), "1 h");
    }
}
