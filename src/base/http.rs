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
