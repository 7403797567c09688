//! A login to a PostgreSQL server named by a [`Server`] (a site's database, a fleet database):
//! plain on loopback and sockets, TLS with the certificate always verified.

use std::time::Duration;

use postgres::{Client, NoTls};

use crate::base::dburl::{Address, Server, Tls};
use crate::base::error::{Error, Result};

/// Log in to `s` (`what` it is, for messages); a failure is refused with `hint` (where the URL
/// and the password come from).
pub fn login(s: &Server, what: &str, hint: &str) -> Result<Client> {
    let mut c = postgres::Config::new();
    c.user(&s.user)
        .dbname(&s.name)
        .application_name("upkeep")
        .connect_timeout(Duration::from_secs(10));
    if let Some(p) = &s.password {
        c.password(p);
    }
    match &s.address {
        Address::Tcp(h, p) => {
            c.host(h).port(*p);
        }
        Address::Socket(d, p) => {
            c.host_path(d).port(*p);
        }
    }
    let fail = |e: &dyn std::error::Error| {
        // The driver's own words ("error connecting to server") say little; the cause says why.
        let mut why = e.to_string();
        let mut cause = e.source();
        while let Some(c) = cause {
            why = format!("{why}: {c}");
            cause = c.source();
        }
        Error::refused(
            format!("cannot reach {what} {}: {why}", s.display()),
            hint.to_string(),
        )
    };
    match s.tls {
        Tls::Off => c.connect(NoTls).map_err(|e| fail(&e)),
        Tls::On => {
            c.ssl_mode(postgres::config::SslMode::Require);
            c.connect(tokio_postgres_rustls::MakeRustlsConnect::new(
                tls_config(s).map_err(|e| fail(&*Box::<dyn std::error::Error>::from(e)))?,
            ))
            .map_err(|e| fail(&e))
        }
    }
}

fn tls_config(s: &Server) -> std::result::Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match &s.root_cert {
        Some(p) => {
            let pem = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| format!("{}: {e}", p.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", p.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// What a server said went wrong: its own message, not the driver's "db error".
pub fn detail(e: &postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string())
}
