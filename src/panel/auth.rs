//! Accounts (argon2id), server-side sessions, failed-login rate limiting, and the checks every
//! state-changing request passes (CSRF token and Origin).

use std::time::{SystemTime, UNIX_EPOCH};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rusqlite::{OptionalExtension, params};

use crate::error::{DbContext, Error, Result};
use crate::state::{State, now_text};

/// A session idle longer than this is over.
pub const IDLE_SECS: i64 = 30 * 60;
/// No session lives longer than this.
pub const ABSOLUTE_SECS: i64 = 12 * 3600;
/// Failed logins allowed per address and per account in [`FAIL_WINDOW_SECS`].
pub const MAX_FAILURES: i64 = 5;
/// The window failed logins are counted in.
pub const FAIL_WINDOW_SECS: i64 = 15 * 60;
/// Shortest accepted password.
pub const MIN_PASSWORD: usize = 10;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::getrandom(&mut b).expect("the OS random source works");
    hex::encode(b)
}

/// A password to print once: 20 characters from an unambiguous alphabet.
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut b = [0u8; 20];
    getrandom::getrandom(&mut b).expect("the OS random source works");
    b.iter()
        .map(|x| ALPHABET[*x as usize % ALPHABET.len()] as char)
        .collect()
}

fn hash(password: &str) -> Result<String> {
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(|e| Error::msg(format!("no random source: {e}")))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| Error::msg(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::msg(e.to_string()))
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(Error::refused(
            format!("{name:?} is not a valid account name"),
            "use 1 to 64 letters, digits, dots, dashes or underscores",
        ));
    }
    Ok(())
}

fn check_password(pw: &str) -> Result<()> {
    if pw.chars().count() < MIN_PASSWORD {
        return Err(Error::refused(
            format!("the password is shorter than {MIN_PASSWORD} characters"),
            "choose a longer password (a passphrase works well)",
        ));
    }
    Ok(())
}

/// Create an account.
pub fn add(state: &State, name: &str, password: &str) -> Result<()> {
    check_name(name)?;
    check_password(password)?;
    let exists: Option<String> = state
        .conn
        .query_row("SELECT name FROM accounts WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()
        .db(state.path())?;
    if exists.is_some() {
        return Err(Error::refused(
            format!("account {name} already exists"),
            format!("change its password with `upkeep user passwd {name}`"),
        ));
    }
    state
        .conn
        .execute(
            "INSERT INTO accounts(name, hash, created_at) VALUES(?1, ?2, ?3)",
            params![name, hash(password)?, now_text()],
        )
        .db(state.path())?;
    Ok(())
}

/// Change a password; every session of the account ends.
pub fn passwd(state: &State, name: &str, password: &str) -> Result<()> {
    check_password(password)?;
    let n = state
        .conn
        .execute(
            "UPDATE accounts SET hash = ?2 WHERE name = ?1",
            params![name, hash(password)?],
        )
        .db(state.path())?;
    if n == 0 {
        return Err(Error::refused(
            format!("no account {name}"),
            format!("create it with `upkeep user add {name}`"),
        ));
    }
    state
        .conn
        .execute("DELETE FROM sessions WHERE account = ?1", [name])
        .db(state.path())?;
    Ok(())
}

/// Why a login was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum LoginError {
    /// Wrong name or password: one answer for both, so names cannot be probed.
    Wrong,
    /// Too many failures lately, for this address or this account.
    Throttled,
}

// A valid hash to verify against when the account does not exist, so that an unknown name
// costs the same time as a wrong password.
const DUMMY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0nIkJ3PcHwpQpn2Xe/yO2nEEJ5RZXq7dWcvKaKfRcOY";

/// Check a login; counts failures per address and per account.
pub fn login(
    state: &State,
    name: &str,
    password: &str,
    addr: &str,
) -> Result<std::result::Result<Session, LoginError>> {
    let since = now() - FAIL_WINDOW_SECS;
    state
        .conn
        .execute("DELETE FROM login_failures WHERE at < ?1", [since])
        .db(state.path())?;
    let keys = [format!("addr:{addr}"), format!("user:{name}")];
    for k in &keys {
        let n: i64 = state
            .conn
            .query_row(
                "SELECT count(*) FROM login_failures WHERE key = ?1",
                [k],
                |r| r.get(0),
            )
            .db(state.path())?;
        if n >= MAX_FAILURES {
            return Ok(Err(LoginError::Throttled));
        }
    }
    let stored: Option<String> = state
        .conn
        .query_row("SELECT hash FROM accounts WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()
        .db(state.path())?;
    let candidate = stored.as_deref().unwrap_or(DUMMY);
    let ok = PasswordHash::new(candidate)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
        && stored.is_some();
    if !ok {
        for k in &keys {
            state
                .conn
                .execute(
                    "INSERT INTO login_failures(key, at) VALUES(?1, ?2)",
                    params![k, now()],
                )
                .db(state.path())?;
        }
        return Ok(Err(LoginError::Wrong));
    }
    state
        .conn
        .execute("DELETE FROM login_failures WHERE key = ?1", [&keys[1]])
        .db(state.path())?;
    create_session(state, name).map(Ok)
}

/// A logged-in operator.
#[derive(Clone, Debug)]
pub struct Session {
    /// The cookie value.
    pub id: String,
    /// The account.
    pub account: String,
    /// The token every form posts back.
    pub csrf: String,
}

/// Start a session (always a new id: no fixation).
pub fn create_session(state: &State, account: &str) -> Result<Session> {
    let s = Session {
        id: random_hex(32),
        account: account.to_string(),
        csrf: random_hex(32),
    };
    state
        .conn
        .execute("INSERT INTO sessions(id, account, csrf, created_at, seen_at) VALUES(?1, ?2, ?3, ?4, ?4)", params![s.id, s.account, s.csrf, now()])
        .db(state.path())?;
    Ok(s)
}

/// The session behind a cookie, if it is still valid; touching it extends the idle timeout.
pub fn session(state: &State, id: &str) -> Result<Option<Session>> {
    let row: Option<(String, String, i64, i64)> = state
        .conn
        .query_row(
            "SELECT account, csrf, created_at, seen_at FROM sessions WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()
        .db(state.path())?;
    let Some((account, csrf, created, seen)) = row else {
        return Ok(None);
    };
    let t = now();
    if t - seen > IDLE_SECS || t - created > ABSOLUTE_SECS {
        end_session(state, id)?;
        return Ok(None);
    }
    state
        .conn
        .execute(
            "UPDATE sessions SET seen_at = ?2 WHERE id = ?1",
            params![id, t],
        )
        .db(state.path())?;
    Ok(Some(Session {
        id: id.to_string(),
        account,
        csrf,
    }))
}

/// End a session.
pub fn end_session(state: &State, id: &str) -> Result<()> {
    state
        .conn
        .execute("DELETE FROM sessions WHERE id = ?1", [id])
        .db(state.path())?;
    Ok(())
}

/// Compare secrets in constant time.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// True when an Origin (or, without one, a Referer) names the host the request was sent to.
pub fn same_origin(origin: Option<&str>, referer: Option<&str>, host: &str) -> bool {
    let host_of = |url: &str| -> Option<String> {
        let rest = url.split_once("://")?.1;
        Some(rest.split('/').next()?.to_ascii_lowercase())
    };
    match (origin, referer) {
        (Some(o), _) if o != "null" => host_of(o).as_deref() == Some(&host.to_ascii_lowercase()),
        (_, Some(r)) => host_of(r).as_deref() == Some(&host.to_ascii_lowercase()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_1() {
        assert!(same_origin(
            Some("http://127.0.0.1:8000"),
            None,
            "127.0.0.1:8000"
        ));
        assert!(same_origin(
            None,
            Some("https://site.example/control/stage"),
            "site.example"
        ));
    }
    #[test]
    fn bad_origin() {
        assert!(!same_origin(
            Some("http://evil.example"),
            Some("http://127.0.0.1:8000/"),
            "127.0.0.1:8000"
        ));
        assert!(!same_origin(None, None, "127.0.0.1:8000"));
        assert!(!same_origin(Some("null"), None, "127.0.0.1:8000"));
    }
    #[test]
    fn passwords() {
        let p = generate_password();
        assert_eq!(p.len(), 20);
        let d = tempfile::tempdir().unwrap();
        let st = State::open(&d.path().join("s.db")).unwrap();
        add(&st, "admin", &p).unwrap();
        assert!(add(&st, "admin", &p).is_err());
        assert!(add(&st, "bob", "short").is_err());
        assert!(login(&st, "admin", &p, "1.2.3.4").unwrap().is_ok());
        assert_eq!(
            login(&st, "admin", "wrong password", "1.2.3.4")
                .unwrap()
                .unwrap_err(),
            LoginError::Wrong
        );
        assert_eq!(
            login(&st, "nobody", "wrong password", "1.2.3.4")
                .unwrap()
                .unwrap_err(),
            LoginError::Wrong
        );
    }
    #[test]
    fn dummy_hash_parses() {
        assert!(PasswordHash::new(DUMMY).is_ok());
    }
}
