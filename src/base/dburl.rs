//! `database` in upkeep.toml: which engine, where, as whom. A path is an SQLite file;
//! `mysql://USER@HOST:PORT/NAME` (MariaDB or MySQL, `?socket=PATH` for a unix socket) and
//! `postgresql://USER@HOST:PORT/NAME` (`?sslmode=`, `?host=/run/postgresql` for a socket) are
//! servers. The password is never in the URL: it comes from `password_file` (mode 0600) or
//! `UPKEEP_DATABASE_PASSWORD`.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::base::error::{Error, IoContext, Result};

/// The engines upkeep speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// An SQLite file.
    Sqlite,
    /// MariaDB or MySQL.
    Mysql,
    /// PostgreSQL.
    Postgres,
}

impl Engine {
    /// The name of the release's declared schema for this engine.
    pub fn schema_file(self) -> &'static str {
        match self {
            Engine::Sqlite => "schema.sql",
            Engine::Mysql => "schema.mysql.sql",
            Engine::Postgres => "schema.postgresql.sql",
        }
    }
    /// For messages.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Sqlite => "SQLite",
            Engine::Mysql => "MariaDB/MySQL",
            Engine::Postgres => "PostgreSQL",
        }
    }
}

/// How a server is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    /// Host and port.
    Tcp(String, u16),
    /// A unix socket (MySQL: the socket file; PostgreSQL: the folder that holds it), and the
    /// port (PostgreSQL names its socket by it: `.s.PGSQL.5432`).
    Socket(PathBuf, u16),
}

/// PostgreSQL's `sslmode`, as far as upkeep goes: it always verifies a certificate it is
/// shown (libpq's `require` does not), against `sslrootcert` or the usual roots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tls {
    /// Plain: loopback and unix sockets.
    Off,
    /// TLS, the server's certificate verified (`require`, `verify-ca`, `verify-full`).
    On,
}

/// A database on a server.
#[derive(Clone, PartialEq, Eq)]
pub struct Server {
    /// The account.
    pub user: String,
    /// Where.
    pub address: Address,
    /// The database (MySQL's schema).
    pub name: String,
    /// TLS (PostgreSQL).
    pub tls: Tls,
    /// `sslrootcert=PATH`: the CA that signed the server's certificate.
    pub root_cert: Option<PathBuf>,
    /// The password, when there is one.
    pub password: Option<String>,
}

impl fmt::Debug for Server {
    // Never the password, in any message or log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("user", &self.user)
            .field("address", &self.address)
            .field("name", &self.name)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Where, for messages: `wp@127.0.0.1:3306/wordpress`.
    pub fn display(&self) -> String {
        match &self.address {
            Address::Tcp(h, p) => format!("{}@{h}:{p}/{}", self.user, self.name),
            Address::Socket(s, _) => format!("{}@{}/{}", self.user, s.display(), self.name),
        }
    }
}

/// What `database` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// MariaDB or MySQL.
    Mysql(Server),
    /// PostgreSQL.
    Postgres(Server),
}

impl Target {
    /// The engine.
    pub fn engine(&self) -> Engine {
        match self {
            Target::Sqlite(_) => Engine::Sqlite,
            Target::Mysql(_) => Engine::Mysql,
            Target::Postgres(_) => Engine::Postgres,
        }
    }
}

fn decode(s: &str, what: &str) -> std::result::Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("{what}: a % not followed by two hex digits"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{what}: not UTF-8 once decoded"))
}

/// Parse `url` (as upkeep.toml's `database` holds it) without its password, relative paths
/// taken from `root`.
pub fn parse(url: &str, root: &Path) -> std::result::Result<Target, String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        let p = Path::new(url);
        return Ok(Target::Sqlite(if p.is_absolute() {
            p.to_path_buf()
        } else {
            root.join(p)
        }));
    };
    let engine = match scheme {
        "mysql" | "mariadb" => Engine::Mysql,
        "postgresql" | "postgres" => Engine::Postgres,
        "sqlite" => {
            return Err(format!(
                "database = {url:?}: an SQLite database is named by its path alone (database = \"{rest}\")"
            ));
        }
        other => {
            return Err(format!(
                "database = {url:?}: {other}:// is not an engine upkeep speaks (mysql://, postgresql://, or an SQLite path)"
            ));
        }
    };
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let Some((authority, name)) = rest.split_once('/') else {
        return Err(format!(
            "database = {url:?}: the database name is missing ({scheme}://USER@HOST:PORT/NAME)"
        ));
    };
    let Some((user, hostport)) = authority.rsplit_once('@') else {
        return Err(format!(
            "database = {url:?}: the user is missing ({scheme}://USER@HOST:PORT/NAME)"
        ));
    };
    if user.contains(':') {
        return Err("database: the URL holds a password, which anyone who reads upkeep.toml (or a backup of it) would see; remove it and put it in a file named by `password_file` (mode 0600), or in UPKEEP_DATABASE_PASSWORD".into());
    }
    let user = decode(user, "database user")?;
    let name = decode(name, "database name")?;
    if user.is_empty() || name.is_empty() || name.contains('/') {
        return Err(format!(
            "database = {url:?}: USER and NAME must not be empty ({scheme}://USER@HOST:PORT/NAME)"
        ));
    }
    let default_port = if engine == Engine::Mysql { 3306 } else { 5432 };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => (
            h.trim_start_matches('[').trim_end_matches(']').to_string(),
            p.parse::<u16>()
                .map_err(|_| format!("database = {url:?}: {p:?} is not a port"))?,
        ),
        _ => (hostport.to_string(), default_port),
    };
    let mut address = Address::Tcp(
        if host.is_empty() {
            "localhost".into()
        } else {
            host
        },
        port,
    );
    let mut tls = Tls::Off;
    let mut root_cert = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = decode(v, k)?;
        match (engine, k) {
            (Engine::Mysql, "socket") | (Engine::Postgres, "host") if v.starts_with('/') => {
                address = Address::Socket(PathBuf::from(v), port);
            }
            (Engine::Postgres, "sslmode") => {
                tls = match v.as_str() {
                    "disable" => Tls::Off,
                    "require" | "verify-ca" | "verify-full" => Tls::On,
                    other => {
                        return Err(format!(
                            "database: sslmode={other} is not one upkeep takes: disable, or require / verify-ca / verify-full (upkeep verifies the server's certificate in each; sslrootcert=PATH names a private CA)"
                        ));
                    }
                }
            }
            (Engine::Postgres, "sslrootcert") => root_cert = Some(PathBuf::from(v)),
            _ => {
                return Err(format!(
                    "database = {url:?}: unknown parameter {k:?} ({})",
                    match engine {
                        Engine::Mysql => "mysql:// takes socket=/PATH",
                        _ => "postgresql:// takes sslmode=, sslrootcert= and host=/SOCKET_FOLDER",
                    }
                ));
            }
        }
    }
    let server = Server {
        user,
        address,
        name,
        tls,
        root_cert,
        password: None,
    };
    Ok(match engine {
        Engine::Mysql => Target::Mysql(server),
        _ => Target::Postgres(server),
    })
}

/// The password for a server: `password_file` (refused unless 0600 or stricter), else
/// `UPKEEP_DATABASE_PASSWORD`, else none (a socket with peer authentication).
pub fn password(file: Option<&Path>) -> Result<Option<String>> {
    if let Some(f) = file {
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(f).ctx("read", f)?;
        if m.permissions().mode() & 0o077 != 0 {
            return Err(Error::refused(
                format!(
                    "{}: the database password file is readable by others (mode {:o})",
                    f.display(),
                    m.permissions().mode() & 0o777
                ),
                format!("chmod 600 {}", f.display()),
            ));
        }
        let text = std::fs::read_to_string(f).ctx("read", f)?;
        return Ok(Some(text.trim_end_matches(['\n', '\r']).to_string()));
    }
    Ok(std::env::var("UPKEEP_DATABASE_PASSWORD").ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(t: Target) -> Server {
        match t {
            Target::Mysql(s) | Target::Postgres(s) => s,
            Target::Sqlite(p) => panic!("sqlite {p:?}"),
        }
    }

    #[test]
    fn urls() {
        let root = Path::new("/srv/site");
        assert_eq!(
            parse(".upkeep/site.db", root).unwrap(),
            Target::Sqlite("/srv/site/.upkeep/site.db".into())
        );
        let s = server(parse("mysql://wp@127.0.0.1:3307/word%70ress", root).unwrap());
        assert_eq!(
            (s.user.as_str(), &s.address, s.name.as_str()),
            ("wp", &Address::Tcp("127.0.0.1".into(), 3307), "wordpress")
        );
        let s = server(
            parse(
                "mysql://wp@localhost/wp?socket=/run/mysqld/mysqld.sock",
                root,
            )
            .unwrap(),
        );
        assert_eq!(
            s.address,
            Address::Socket("/run/mysqld/mysqld.sock".into(), 3306)
        );
        let t = parse(
            "postgresql://app@db.example:6432/app?sslmode=verify-full",
            root,
        )
        .unwrap();
        assert_eq!(t.engine(), Engine::Postgres);
        let s = server(t);
        assert_eq!(s.tls, Tls::On);
        assert_eq!(s.address, Address::Tcp("db.example".into(), 6432));
        let s = server(parse("postgresql://app@/app?host=/run/postgresql", root).unwrap());
        assert_eq!(s.address, Address::Socket("/run/postgresql".into(), 5432));
        let s = server(parse("postgresql://app@localhost:6543/app?host=/tmp/pg", root).unwrap());
        assert_eq!(s.address, Address::Socket("/tmp/pg".into(), 6543));
        for bad in [
            "mysql://wp:secret@localhost/wp",
            "mysql://localhost/wp",
            "mysql://wp@localhost",
            "mysql://wp@localhost:x/wp",
            "oracle://a@b/c",
            "postgresql://a@b/c?sslmode=prefer",
            "mysql://wp@h/wp?charset=utf8",
        ] {
            assert!(parse(bad, root).is_err(), "{bad}");
        }
        assert!(
            parse("mysql://wp:secret@localhost/wp", root)
                .unwrap_err()
                .contains("password_file")
        );
    }

    #[test]
    fn a_password_file_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("pass");
        std::fs::write(&f, "s3cret\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(password(Some(&f)).is_err());
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(password(Some(&f)).unwrap().as_deref(), Some("s3cret"));
    }
}
