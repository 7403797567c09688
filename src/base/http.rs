//! What the panel, the fleet page and the reference server share as HTTP servers.

/// The stylesheet of the control panel and the fleet page.
pub const APP_CSS: &str = include_str!("static/app.css");

/// Send small responses at once: without TCP_NODELAY, a header write followed by a body write
/// waits for the peer's delayed ACK (about 40 ms on Linux), which capped keep-alive clients at a
/// few hundred requests per second per connection.
pub fn nodelay(conn: &dyn std::any::Any, _: &mut actix_web::dev::Extensions) {
    if let Some(sock) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
        let _ = sock.set_nodelay(true);
    }
}

/// Where a request was sent and from where: the connection's, or, when the connection comes
/// from a proxy the operator trusts (its address in `trusted`), what that proxy says in
/// `X-Forwarded-Host`, `X-Forwarded-Proto` and `X-Forwarded-For` (a proxy in front of the
/// panel on another port or in https).
pub struct Seen {
    /// The host (and port) the browser asked for.
    pub host: String,
    /// Whether the browser's connection is https.
    pub https: bool,
    /// The browser's address (what failed logins are counted by).
    pub client: String,
}

/// See [`Seen`].
pub fn seen(req: &actix_web::HttpRequest, trusted: &[std::net::IpAddr]) -> Seen {
    let h = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.trim().to_string())
    };
    let peer = req.peer_addr().map(|a| a.ip());
    let direct = Seen {
        host: h("host").unwrap_or_default(),
        https: req.connection_info().scheme() == "https",
        client: peer.map(|p| p.to_string()).unwrap_or_default(),
    };
    if !peer.is_some_and(|p| trusted.contains(&p)) {
        return direct;
    }
    let first =
        |v: Option<String>| v.and_then(|v| v.split(',').next().map(|s| s.trim().to_string()));
    Seen {
        host: first(h("x-forwarded-host")).unwrap_or(direct.host),
        https: first(h("x-forwarded-proto")).map_or(direct.https, |p| p == "https"),
        // The proxy appends the address it saw: the last entry is the one it vouches for.
        client: h("x-forwarded-for")
            .and_then(|v| v.rsplit(',').next().map(|s| s.trim().to_string()))
            .filter(|s| !s.is_empty())
            .unwrap_or(direct.client),
    }
}
