//! Serving the live tree behind the gate. While the gate is closed every visitor request gets
//! 503 with Retry-After and the maintenance page. upkeep's own files are never served.

use actix_files::NamedFile;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};

use crate::documents::manifest::RelPath;
use crate::site::config::Instance;
use crate::site::update::gate;

/// True for paths that must never be served, whatever the gate: upkeep's own names, tasks,
/// extension manifests, and hidden files (`.env`, `.git/`), except `.well-known/`.
pub fn refused(rel: &RelPath) -> bool {
    rel.is_reserved()
        || rel
            .as_str()
            .split('/')
            .any(|c| c.starts_with('.') && c != ".well-known")
        || rel.top() == "run_once"
        || rel
            .as_str()
            .split('/')
            .any(|c| c == ".upkeep" || c == "extension.toml")
}

fn not_found() -> HttpResponse {
    HttpResponse::NotFound()
        .content_type("text/plain; charset=utf-8")
        .body("not found\n")
}

/// The maintenance answer.
pub fn maintenance(inst: &Instance) -> HttpResponse {
    let page = std::fs::read_to_string(gate::page_path(&inst.root)).unwrap_or_else(|_| {
        gate::DEFAULT_PAGE
            .replace("{{message}}", "Back soon.")
            .replace("{{since}}", "")
    });
    HttpResponse::ServiceUnavailable()
        .insert_header((header::RETRY_AFTER, gate::RETRY_AFTER.to_string()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .content_type("text/html; charset=utf-8")
        .body(page)
}

/// Serve one visitor request.
pub async fn serve_file(req: &HttpRequest, inst: &Instance) -> HttpResponse {
    let raw = req
        .match_info()
        .query("tail")
        .trim_start_matches('/')
        .to_string();
    let rel = if raw.is_empty() || raw.ends_with('/') {
        format!("{raw}index.html")
    } else {
        raw
    };
    let Ok(rel) = RelPath::parse(&rel) else {
        return HttpResponse::BadRequest().body("bad path\n");
    };
    if refused(&rel) {
        return not_found();
    }
    if gate::closed(&inst.root).is_some() {
        return maintenance(inst);
    }
    // Never through a link: a link to /etc/passwd in the tree is not served.
    if !rel.no_links_under(&inst.root) {
        return not_found();
    }
    let rel = match std::fs::symlink_metadata(rel.under(&inst.root)) {
        Ok(m) if m.is_dir() => match RelPath::parse(&format!("{rel}/index.html")) {
            Ok(r) => r,
            Err(_) => return not_found(),
        },
        _ => rel,
    };
    // Opened without following a link anywhere (openat2), so nothing changes between a check
    // and the open.
    match rel.open_under(&inst.root) {
        Ok(f) => match NamedFile::from_file(f, rel.under(&inst.root)) {
            Ok(n) => n.into_response(req),
            Err(_) => not_found(),
        },
        Err(_) => not_found(),
    }
}
