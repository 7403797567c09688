//! Control-panel accounts (argon2id), server-side sessions, and failed-login throttling.
//! `init`, `demo`, `upkeep user`, the panel and the fleet page all call these; the rows live in
//! any database implementing [`AccountStore`] (a site's state.db, the fleet database).

mod store;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

pub use store::{ACCOUNT_TABLES, AccountStore, FailureCount, Session};

use crate::base::clock::now_secs;
use crate::base::error::{Error, Result};

/// A session idle longer than this is over.
pub const IDLE_SECS: i64 = 30 * 60;
/// No session lives longer than this.
pub const ABSOLUTE_SECS: i64 = 12 * 3600;
/// Failed logins per address and per account answered at once; after them the next attempt is
/// not even checked before a wait that doubles with each failure.
pub const FREE_FAILURES: i64 = 3;
/// The longest wait between attempts: an attacker gets about one guess a minute, while the
/// operator who knows the password is never locked out for longer.
pub const MAX_DELAY_SECS: i64 = 60;
/// Failures older than this are forgotten.
pub const FAIL_WINDOW_SECS: i64 = 15 * 60;
/// Shortest accepted password.
pub const MIN_PASSWORD: usize = 10;

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
pub fn add(state: &impl AccountStore, name: &str, password: &str) -> Result<()> {
    check_name(name)?;
    check_password(password)?;
    if !state.insert_account(name, &hash(password)?)? {
        return Err(Error::refused(
            format!("account {name} already exists"),
            format!("change its password with `upkeep user passwd {name}`"),
        ));
    }
    Ok(())
}

/// Change a password; every session of the account ends.
pub fn passwd(state: &impl AccountStore, name: &str, password: &str) -> Result<()> {
    check_password(password)?;
    if !state.set_account_hash(name, &hash(password)?)? {
        return Err(Error::refused(
            format!("no account {name}"),
            format!("create it with `upkeep user add {name}`"),
        ));
    }
    Ok(())
}

/// Why a login was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum LoginError {
    /// Wrong name or password: one answer for both, so names cannot be probed.
    Wrong,
    /// Too many failures lately, for this address or this account: try again after this many
    /// seconds (the right password then passes).
    Wait(i64),
}

// A valid hash to verify against when the account does not exist, so that an unknown name
// costs the same time as a wrong password.
const DUMMY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0nIkJ3PcHwpQpn2Xe/yO2nEEJ5RZXq7dWcvKaKfRcOY";

/// The wait owed after `failures` recent failures: 5 s after the free ones, doubling up to a
/// minute (an operator who mistyped three times waits a few seconds).
fn delay_after(failures: i64) -> i64 {
    match failures - FREE_FAILURES {
        n if n < 0 => 0,
        n => (5i64 << n.min(16)).min(MAX_DELAY_SECS),
    }
}

/// Check a login; failures per address and per account make the next attempt wait longer.
pub fn login(
    state: &impl AccountStore,
    name: &str,
    password: &str,
    addr: &str,
) -> Result<std::result::Result<Session, LoginError>> {
    login_at(state, name, password, addr, now_secs())
}

fn login_at(
    state: &impl AccountStore,
    name: &str,
    password: &str,
    addr: &str,
    now: i64,
) -> Result<std::result::Result<Session, LoginError>> {
    state.prune_failures(now - FAIL_WINDOW_SECS)?;
    let keys = [format!("addr:{addr}"), format!("user:{name}")];
    for k in &keys {
        let f = state.failures(k)?;
        let wait = f
            .last_at
            .map(|last| last + delay_after(f.count) - now)
            .unwrap_or(0);
        if wait > 0 {
            return Ok(Err(LoginError::Wait(wait)));
        }
    }
    let stored = state.account_hash(name)?;
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
            state.add_failure(k, now)?;
        }
        return Ok(Err(LoginError::Wrong));
    }
    for k in &keys {
        state.clear_failures(k)?;
    }
    create_session_at(state, name, now).map(Ok)
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

/// Start a session (always a new id: no fixation).
pub fn create_session(state: &impl AccountStore, account: &str) -> Result<Session> {
    create_session_at(state, account, now_secs())
}

fn create_session_at(state: &impl AccountStore, account: &str, now: i64) -> Result<Session> {
    let s = Session {
        id: random_hex(32),
        account: account.to_string(),
        csrf: random_hex(32),
    };
    state.insert_session(&s, now)?;
    Ok(s)
}

/// The session behind a cookie, if it is still valid; touching it extends the idle timeout.
pub fn session(state: &impl AccountStore, id: &str) -> Result<Option<Session>> {
    let Some((s, created, seen)) = state.session_row(id)? else {
        return Ok(None);
    };
    let t = now_secs();
    if t - seen > IDLE_SECS || t - created > ABSOLUTE_SECS {
        state.delete_session(id)?;
        return Ok(None);
    }
    state.touch_session(id, t)?;
    Ok(Some(s))
}

/// End a session.
pub fn end_session(state: &impl AccountStore, id: &str) -> Result<()> {
    state.delete_session(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::base::sql::{Lite, Sql};

    impl AccountStore for Lite {}

    /// A database holding nothing but the account tables.
    fn store() -> (tempfile::TempDir, Lite) {
        let d = tempfile::tempdir().unwrap();
        let db = Lite::open(&d.path().join("s.db")).unwrap();
        db.batch(ACCOUNT_TABLES).unwrap();
        (d, db)
    }

    #[test]
    fn passwords() {
        let p = generate_password();
        assert_eq!(p.len(), 20);
        let (_d, st) = store();
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

    #[test]
    fn delays_grow_and_stop_at_a_minute() {
        let d: Vec<i64> = (0..12).map(delay_after).collect();
        assert_eq!(d, [0, 0, 0, 5, 10, 20, 40, 60, 60, 60, 60, 60]);
    }

    #[test]
    fn the_right_password_passes_after_the_wait_however_many_failures() {
        let (_d, st) = store();
        let p = generate_password();
        add(&st, "admin", &p).unwrap();
        let mut t = 1_000_000;
        for _ in 0..20 {
            // An attacker who waits out every delay: each guess is checked, and wrong.
            let r = login_at(&st, "admin", "guess guess guess", "6.6.6.6", t).unwrap();
            assert_eq!(r.unwrap_err(), LoginError::Wrong);
            t += MAX_DELAY_SECS;
        }
        // Right after a failure, even the right password waits (no oracle for guesses).
        let r = login_at(&st, "admin", &p, "1.2.3.4", t - MAX_DELAY_SECS + 1).unwrap();
        assert!(matches!(r, Err(LoginError::Wait(w)) if w > 0 && w <= MAX_DELAY_SECS));
        // After the wait, from another address, the operator gets in.
        assert!(login_at(&st, "admin", &p, "1.2.3.4", t).unwrap().is_ok());
        // And the account's count starts again.
        assert_eq!(st.failures("user:admin").unwrap().count, 0);
    }
}
