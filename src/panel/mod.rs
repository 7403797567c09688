//! `upkeep serve`: the site behind the gate, and the control panel under `/control`.

use std::sync::Arc;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

use crate::config::Instance;

/// Shared by every request.
pub struct AppState {
    /// The instance.
    pub inst: Instance,
}

async fn site(req: HttpRequest, app: web::Data<Arc<AppState>>) -> HttpResponse {
    crate::site::serve_file(&req, &app.inst).await
}

/// Start serving; returns the server and the bound address.
pub fn start(
    inst: Instance,
    listen: &str,
) -> std::io::Result<(actix_web::dev::Server, std::net::SocketAddr)> {
    let app = web::Data::new(Arc::new(AppState { inst }));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(app.clone())
            .route("/{tail:.*}", web::get().to(site))
            .route("/{tail:.*}", web::head().to(site))
    })
    .bind(listen)?;
    let addr = server.addrs()[0];
    Ok((server.run(), addr))
}
