//! Small filesystem helpers whose durability rules matter: atomic writes and directory syncs.

use std::io::Write;
use std::path::Path;

use crate::base::error::{IoContext, Result};

/// Mode of files a web server must be able to read (temporary files are created 0600).
pub const READABLE: u32 = 0o644;

/// Make a file readable by other users (the web server), as ordinary files are.
pub fn make_readable(f: &std::fs::File, path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(std::fs::Permissions::from_mode(READABLE))
        .ctx("set permissions of", path)
}

/// Write `bytes` to `path` so that a reader sees the old file or the new one, never half of it.
/// The file is readable by other users, like one written by `cp`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).ctx("create folder", dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).ctx("create temporary file in", dir)?;
    tmp.write_all(bytes).ctx("write", tmp.path())?;
    make_readable(tmp.as_file(), tmp.path())?;
    tmp.as_file().sync_all().ctx("sync", tmp.path())?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .ctx("rename into place", path)?;
    sync_dir(dir)
}

/// fsync a directory so that renames inside it survive power loss.
pub fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .ctx("sync folder", dir)
}

/// Free bytes available to this user on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| crate::base::error::Error::msg("path holds NUL"))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid NUL-terminated string and st a properly sized out-parameter.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).ctx("statvfs", path);
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// The device a path lives on (to require staging and the live tree on one filesystem).
pub fn device_of(path: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(path).ctx("stat", path)?.dev())
}

/// Human-readable byte count in decimal units (as disk and transfer sizes are quoted).
pub fn human_bytes(n: u64) -> String {
    indicatif::DecimalBytes(n).to_string()
}

/// Make sure a path can be read, with the path in the message.
pub fn readable(path: &Path) -> Result<()> {
    std::fs::File::open(path).map(drop).ctx("read", path)
}
