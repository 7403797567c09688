//! A real MariaDB for the tests: `mariadb-install-db` on a scratch datadir, `mariadbd` on a
//! free loopback port and a socket, with grant tables (so accounts and passwords are real).
//! Skipped where the server is not installed, never on CI.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::php::Daemon;

/// A running server, stopped on drop.
pub struct Mariadb {
    _daemon: Daemon,
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    /// Its socket.
    pub socket: PathBuf,
}

/// Whether the server is here; panics on CI when it is not.
pub fn installed() -> bool {
    if Path::new("/usr/sbin/mariadbd").exists() && Path::new("/usr/bin/mariadb-dump").exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "mariadb-server or mariadb-client is missing on CI"
    );
    eprintln!("skipped: mariadb-server is not installed");
    false
}

impl Mariadb {
    /// Start one under `tmp`.
    pub fn start(tmp: &Path) -> Mariadb {
        let data = tmp.join("data");
        std::fs::create_dir_all(&data).unwrap();
        let o = Command::new("mariadb-install-db")
            .args([
                "--no-defaults",
                "--user=root",
                "--skip-test-db",
                "--auth-root-authentication-method=normal",
            ])
            .arg(format!("--datadir={}", data.display()))
            // Concurrent bootstraps sharing /tmp lose each other's temporary tables.
            .arg(format!("--tmpdir={}", tmp.display()))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let port = super::smtp::free_port();
        let socket = tmp.join("mysql.sock");
        let child = Command::new("/usr/sbin/mariadbd")
            .args(["--no-defaults", "--user=root", "--bind-address=127.0.0.1"])
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg(format!("--port={port}"))
            .arg(format!("--pid-file={}", tmp.join("mysql.pid").display()))
            .arg("--innodb-buffer-pool-size=32M")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let d = Daemon::new(child);
        assert!(super::wait_port(port), "mariadbd did not start");
        Mariadb {
            _daemon: d,
            port,
            socket,
        }
    }

    /// Run SQL as root through the socket; returns its output (tab-separated, no headers).
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let o = Command::new("mariadb")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["-u", "root", "-N", "-B", db, "-e", sql])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// A database `name` and an account of the same name with `password`, allowed on it and
    /// on upkeep's scratch databases (as the README says to grant).
    pub fn site_database(&self, name: &str, password: &str) {
        let pw = password.replace('\\', "\\\\").replace('\'', "\\'");
        self.sql(
            "",
            &format!(
                "CREATE DATABASE {name}; CREATE USER '{name}'@'127.0.0.1' IDENTIFIED BY '{pw}'; GRANT ALL ON {name}.* TO '{name}'@'127.0.0.1'; GRANT ALL ON `upkeep\\_scratch\\_%`.* TO '{name}'@'127.0.0.1';"
            ),
        );
    }
}
