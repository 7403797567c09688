//! A real PostgreSQL for the tests: `initdb` and `postgres` on a scratch data folder, run as
//! the `postgres` user (the server refuses root), on a free loopback port and a socket folder;
//! local connections trusted (the test's own psql), TCP ones by password (upkeep's, real).
//! Skipped where the server is not installed, never on CI.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::php::Daemon;

/// The folder of the server's programs.
pub fn bin() -> Option<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("postgres").exists())
        .collect();
    v.sort();
    v.pop()
}

/// Whether the server is here; panics on CI when it is not.
pub fn installed() -> bool {
    if bin().is_some() && Path::new("/usr/bin/pg_dump").exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "postgresql is missing on CI"
    );
    eprintln!("skipped: postgresql is not installed");
    false
}

/// A running server, stopped on drop.
pub struct Postgres {
    _daemon: Daemon,
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    /// The folder of its socket.
    pub socket_dir: PathBuf,
    _dir: tempfile::TempDir,
}

fn as_postgres(dir: &Path) {
    let o = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(o.status.success());
}

/// `openssl ARGS` in `dir`, which must succeed.
fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A self-signed CA in `dir`: `NAME.pem` and its key `NAME.key`.
pub fn make_ca(dir: &Path, name: &str, cn: &str) {
    let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
    new_key(dir, &["-x509", "-days", "2"], &key, &pem, cn);
}

/// `openssl req`: a new P-256 key in `key`, and in `out` what `extra` asks (a request, or a
/// self-signed certificate with `-x509`) for the common name `cn`.
fn new_key(dir: &Path, extra: &[&str], key: &str, out: &str, cn: &str) {
    let subj = format!("/CN={cn}");
    let mut args = vec!["req"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        key,
        "-out",
        out,
        "-subj",
        &subj,
    ]);
    openssl(dir, &args);
}

/// A CA (`ca.pem`) and a server certificate it signed for localhost and 127.0.0.1
/// (`server.pem`, `server.key`, mode 0600 as postgres requires), made with openssl.
fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| openssl(dir, args);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    make_ca(dir, "ca", "upkeep test CA");
    new_key(dir, &[], "server.key", "server.csr", "localhost");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
}

/// A command run as the postgres user: `setpriv` execs it (no process in between, so the
/// server is the child a drop stops).
fn as_user() -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=postgres",
        "--regid=postgres",
        "--init-groups",
        "--",
    ]);
    c.env("HOME", "/tmp");
    c
}

impl Postgres {
    /// Start one in a folder of its own (the postgres user must reach it: not under a
    /// root-only temporary folder).
    pub fn start() -> Postgres {
        Self::start_with(false)
    }

    /// A server that also takes TLS, its certificate (for `localhost` and 127.0.0.1) signed by
    /// a CA made here: the CA's certificate is `tls_ca()`.
    pub fn start_tls() -> Postgres {
        Self::start_with(true)
    }

    /// The CA that signed a [`Postgres::start_tls`] server's certificate.
    pub fn tls_ca(&self) -> PathBuf {
        self._dir.path().join("ca.pem")
    }

    fn start_with(tls: bool) -> Postgres {
        let dir = tempfile::Builder::new()
            .prefix("upkeep-pg")
            .tempdir()
            .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let data = dir.path().join("data");
        let sock = dir.path().join("sock");
        std::fs::create_dir_all(&sock).unwrap();
        if tls {
            make_certificates(dir.path());
        }
        as_postgres(dir.path());
        let bin = bin().expect("postgres installed");
        let o = as_user()
            .arg(bin.join("initdb"))
            .args([
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-U",
                "postgres",
                "-D",
            ])
            .arg(&data)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let port = super::smtp::free_port();
        let child = as_user()
            .arg(bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c"])
            .arg(format!("unix_socket_directories={}", sock.display()))
            .args(match tls {
                true => vec![
                    "-c".to_string(),
                    "ssl=on".into(),
                    "-c".into(),
                    format!("ssl_cert_file={}", dir.path().join("server.pem").display()),
                    "-c".into(),
                    format!("ssl_key_file={}", dir.path().join("server.key").display()),
                ],
                false => Vec::new(),
            })
            .args(["-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let d = Daemon::new(child);
        assert!(super::wait_port(port), "postgres did not start");
        Postgres {
            _daemon: d,
            port,
            socket_dir: sock,
            _dir: dir,
        }
    }

    /// Run SQL with psql as the superuser, through the socket; its output, unaligned, tuples
    /// only, fields separated by tabs.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let o = Command::new("psql")
            .arg("-h")
            .arg(&self.socket_dir)
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db])
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-F",
                "\t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// A role `name` with `password` owning a database `name` (what a site's installer makes).
    pub fn site_database(&self, name: &str, password: &str) {
        let pw = password.replace('\'', "''");
        self.sql(
            "postgres",
            &format!("CREATE ROLE {name} LOGIN PASSWORD '{pw}'"),
        );
        self.sql("postgres", &format!("CREATE DATABASE {name} OWNER {name}"));
    }
}
