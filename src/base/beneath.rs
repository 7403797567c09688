//! Files beneath a folder, reached without following a symbolic link anywhere below it: the one
//! way upkeep opens, creates and checks what lies under an instance root, a staging folder, a
//! repository or its own working folders. A link planted there (by an upload form, a careless
//! copy, a hostile archive unpacked by hand) makes the operation fail; it is never followed out.
//!
//! `open` uses openat2 with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` (Linux 5.6) and falls back
//! to a walk of `lstat`s where the kernel lacks it. The folder itself may be a link (`/var/www`
//! -> `/srv/www` is the operator's choice); what matters is what lies below it.
//!
//! `rel` is a relative path of plain components (callers pass a checked `RelPath` or a name
//! upkeep made); anything else is refused.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path};

fn refuse(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, why)
}

/// The error of a link met on the way.
fn link_error(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "{} is reached through a symbolic link, and upkeep never follows links",
            path.display()
        ),
    )
}

fn plain(rel: &Path) -> io::Result<()> {
    if rel.as_os_str().is_empty() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(refuse(format!(
            "{} is not a plain relative path",
            rel.display()
        )));
    }
    Ok(())
}

/// Walk the components of `rel` below `root` with `lstat`, refusing a symbolic link, and hand
/// each path and what is there (`None`: nothing) to `at`, which says whether to go on.
fn walk(
    root: &Path,
    rel: &Path,
    mut at: impl FnMut(&Path, Option<&std::fs::Metadata>) -> io::Result<bool>,
) -> io::Result<()> {
    plain(rel)?;
    let mut p = root.to_path_buf();
    for c in rel.components() {
        p.push(c);
        let md = match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => return Err(link_error(&p)),
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if !at(&p, md.as_ref())? {
            break;
        }
    }
    Ok(())
}

/// Whether `rel` below `root` is reached without passing through a symbolic link, the last
/// component included (a missing component ends the walk: nothing there to follow).
pub fn no_links(root: &Path, rel: &Path) -> io::Result<()> {
    walk(root, rel, |_, md| Ok(md.is_some()))
}

/// Open the regular file `rel` below `root` for reading, following no link on the way.
pub fn open(root: &Path, rel: &Path) -> io::Result<File> {
    plain(rel)?;
    let f = match openat2(root, rel) {
        Some(r) => r.map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::EXDEV) => link_error(&root.join(rel)),
            _ => e,
        })?,
        None => {
            no_links(root, rel)?;
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(root.join(rel))?
        }
    };
    if !f.metadata()?.is_file() {
        return Err(refuse(format!(
            "{} is not a regular file",
            root.join(rel).display()
        )));
    }
    Ok(f)
}

/// openat2 for reading; `None` when the kernel does not have it.
fn openat2(root: &Path, rel: &Path) -> Option<io::Result<File>> {
    let dir = match File::open(root) {
        Ok(d) => d,
        Err(e) => return Some(Err(e)),
    };
    let Ok(name) = std::ffi::CString::new(rel.as_os_str().as_bytes()) else {
        return Some(Err(refuse("a path holds NUL".into())));
    };
    // SAFETY: open_how is plain data (three integers); zero is its "nothing asked" value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS;
    // SAFETY: the pointers are valid for the call; the result is a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            name.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return if is_unsupported(&e) {
            None
        } else {
            Some(Err(e))
        };
    }
    // SAFETY: fd is a descriptor this process just received and owns.
    Some(Ok(unsafe { File::from_raw_fd(fd as i32) }))
}

/// ENOSYS (an older kernel) or EPERM (a seccomp filter refusing the call) mean "use the walk".
fn is_unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EPERM))
}

/// Make the folders of `rel` below `root` (each a real folder, never a link), like
/// `create_dir_all` but refusing a link on the way.
pub fn create_dir_all(root: &Path, rel: &Path) -> io::Result<()> {
    walk(root, rel, |p, md| {
        match md {
            Some(m) if m.is_dir() => {}
            Some(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} is a file where a folder is needed", p.display()),
                ));
            }
            None => match std::fs::create_dir(p) {
                Ok(()) => {}
                // Made meanwhile by another thread: check it again.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if std::fs::symlink_metadata(p)?.file_type().is_symlink() {
                        return Err(link_error(p));
                    }
                }
                Err(e) => return Err(e),
            },
        }
        Ok(true)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("a/b/f.txt"), "inside").unwrap();
        std::fs::write(d.path().join("outside.txt"), "outside").unwrap();
        d
    }

    #[test]
    fn open_1() {
        let d = tree();
        let mut s = String::new();
        use std::io::Read;
        open(d.path(), Path::new("a/b/f.txt"))
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "inside");
    }

    #[test]
    fn open_through_a_linked_file_is_refused() {
        let d = tree();
        symlink(d.path().join("outside.txt"), d.path().join("a/b/l.txt")).unwrap();
        let e = open(d.path(), Path::new("a/b/l.txt")).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(no_links(d.path(), Path::new("a/b/l.txt")).is_err());
    }

    #[test]
    fn open_through_a_linked_folder_is_refused() {
        let d = tree();
        symlink(d.path().join("a/b"), d.path().join("c")).unwrap();
        let e = open(d.path(), Path::new("c/f.txt")).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(create_dir_all(d.path(), Path::new("c/new")).is_err());
        assert!(!d.path().join("a/b/new").exists());
    }

    #[test]
    fn bad_paths_are_refused() {
        let d = tree();
        for p in ["../outside.txt", "/etc/passwd", "", "a/../outside.txt"] {
            assert!(
                open(d.path().join("a").as_path(), Path::new(p)).is_err(),
                "{p}"
            );
        }
        assert!(
            open(d.path(), Path::new("a/b")).is_err(),
            "a folder is no file"
        );
    }

    #[test]
    fn create_dir_all_makes_folders_and_refuses_a_link_or_a_file() {
        let d = tree();
        create_dir_all(d.path(), Path::new("x/partial")).unwrap();
        assert!(d.path().join("x/partial").is_dir());
        symlink(d.path().join("a"), d.path().join("y")).unwrap();
        assert!(create_dir_all(d.path(), Path::new("y")).is_err());
        assert!(create_dir_all(d.path(), Path::new("y/z")).is_err());
        assert!(!d.path().join("a/z").exists());
        assert!(create_dir_all(d.path(), Path::new("outside.txt")).is_err());
        create_dir_all(d.path(), Path::new("a/b/c/d")).unwrap();
        assert!(d.path().join("a/b/c/d").is_dir());
    }
}
