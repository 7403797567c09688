//! Users and groups of the machine, by name (through libc, so NSS sources count), and running
//! as another user: what lets upkeep started as root act as the site's owner.

use std::ffi::{CStr, CString};

/// A user account: its name, ids and home.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home folder.
    pub home: String,
}

fn from_passwd(p: &libc::passwd) -> User {
    // SAFETY: getpwnam_r/getpwuid_r filled these with NUL-terminated strings in our buffer.
    let s = |c: *const libc::c_char| unsafe { CStr::from_ptr(c) }.to_string_lossy().into_owned();
    User {
        name: s(p.pw_name),
        uid: p.pw_uid,
        gid: p.pw_gid,
        home: s(p.pw_dir),
    }
}

/// The user named `name`, or with that numeric id.
pub fn user(name: &str) -> Option<User> {
    if let Ok(uid) = name.parse::<u32>() {
        return user_by_id(uid);
    }
    let c = CString::new(name).ok()?;
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 << 10];
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; the result points into `pw` and `buf`.
    let rc =
        unsafe { libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
    (rc == 0 && !out.is_null()).then(|| from_passwd(&pw))
}

/// The user with id `uid`.
pub fn user_by_id(uid: u32) -> Option<User> {
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 << 10];
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: as in `user`.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
    (rc == 0 && !out.is_null()).then(|| from_passwd(&pw))
}

/// The id of the group named `name` (or given as a number).
pub fn group_id(name: &str) -> Option<u32> {
    if let Ok(gid) = name.parse::<u32>() {
        return Some(gid);
    }
    let c = CString::new(name).ok()?;
    let mut gr: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 << 10];
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: as in `user`.
    let rc =
        unsafe { libc::getgrnam_r(c.as_ptr(), &mut gr, buf.as_mut_ptr(), buf.len(), &mut out) };
    (rc == 0 && !out.is_null()).then_some(gr.gr_gid)
}

/// This process's effective user id.
pub fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// Become `u` for good (its groups, its group, then its user), as a process started as root
/// does before it acts for that user. Refused unless the process is root or already `u`.
pub fn become_user(u: &User) -> std::io::Result<()> {
    if euid() == u.uid {
        return Ok(());
    }
    let name = CString::new(u.name.as_str()).map_err(std::io::Error::other)?;
    // SAFETY: plain system calls on values we own; each result is checked.
    unsafe {
        if libc::initgroups(name.as_ptr(), u.gid as _) != 0
            || libc::setgid(u.gid) != 0
            || libc::setuid(u.uid) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
