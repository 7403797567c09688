//! The engines' own command-line tools (`mariadb-dump`, `mariadb`, `pg_dump`, `pg_restore`):
//! found on the PATH, given the password through a file or the environment (never the
//! command line, where `ps` shows it), their errors told with what to install.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::base::error::{Error, IoContext, Result};

/// The first of `names` on the PATH.
pub fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .flat_map(|d| names.iter().map(move |n| d.join(n)))
        .find(|p| p.is_file())
}

/// The first of `names`, or a refusal naming the Debian package that has it.
pub fn need(names: &[&str], package: &str) -> Result<PathBuf> {
    find(names).ok_or_else(|| {
        Error::refused(
            format!(
                "{} is not installed: upkeep copies the database with it before changing anything",
                names.join(" or ")
            ),
            format!("install it (`apt install {package}`), then run the update again"),
        )
    })
}

/// A file readable by its owner only, created new (for a dump, or a client's option file).
pub fn private_file(p: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(p);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(p)
        .ctx("create", p)
}

/// A MySQL client option file holding the password, removed when dropped.
pub struct OptionFile {
    dir: tempfile::TempDir,
}

impl OptionFile {
    /// `[client] password=...` in a fresh private folder.
    pub fn new(password: Option<&str>) -> Result<OptionFile> {
        let dir = tempfile::tempdir().ctx("create", Path::new("a temporary folder"))?;
        let p = dir.path().join("client.cnf");
        let mut f = private_file(&p)?;
        let mut text = String::from("[client]\n");
        if let Some(pw) = password {
            // The option file format: backslash and quote escaped inside double quotes.
            text.push_str(&format!(
                "password=\"{}\"\n",
                pw.replace('\\', "\\\\").replace('"', "\\\"")
            ));
        }
        f.write_all(text.as_bytes()).ctx("write", &p)?;
        Ok(OptionFile { dir })
    }
    /// The argument that names it (must come first on a MySQL client's command line).
    pub fn arg(&self) -> String {
        format!(
            "--defaults-extra-file={}",
            self.dir.path().join("client.cnf").display()
        )
    }
}

/// Run `cmd`, its output to `stdout` (a file) or discarded, its input from `stdin`; a
/// failure carries the end of what it said on stderr.
pub fn run(mut cmd: Command, stdin: Option<File>, stdout: Option<File>, what: &str) -> Result<()> {
    cmd.stdin(stdin.map(Stdio::from).unwrap_or_else(Stdio::null))
        .stdout(stdout.map(Stdio::from).unwrap_or_else(Stdio::null))
        .stderr(Stdio::piped());
    let prog = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().ctx("run", Path::new(&prog))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = err.lines().rev().take(5).collect();
    Err(Error::refused(
        format!(
            "{what} failed ({}): {}",
            out.status,
            tail.into_iter()
                .rev()
                .map(crate::base::text::one_line)
                .collect::<Vec<_>>()
                .join(" / ")
        ),
        "check the database account's rights and the server's log, then try again",
    ))
}
