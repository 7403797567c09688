//! Logging in and out, and the checks every panel request passes: a live session, and for a
//! POST the same origin and the session's CSRF token. Accounts, sessions and login throttling
//! themselves are `crate::base::accounts`.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::{Data, Page, Problem, html, landing, pages, see_other, with_state};
pub use crate::base::accounts::Session;
use crate::base::accounts::{self, LoginError};

const COOKIE: &str = "upkeep_session";

/// A form that only carries the CSRF token.
#[derive(Deserialize)]
pub struct CsrfForm {
    /// The session's token.
    #[serde(default)]
    pub csrf: String,
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    name: String,
    password: String,
}

/// The session of a request, if logged in.
fn session(req: &HttpRequest, app: &super::AppState) -> Option<Session> {
    let id = req.cookie(COOKIE)?.value().to_string();
    with_state(app, |st| accounts::session(st, &id))
        .ok()
        .flatten()
}

/// Logged in, or sent to the login page.
pub(super) fn require(req: &HttpRequest, app: &super::AppState) -> Result<Session, Problem> {
    session(req, app).ok_or(Problem::Login)
}

/// What the request says of the browser, through the proxies upkeep.toml trusts.
fn seen(req: &HttpRequest, app: &super::AppState) -> crate::base::http::Seen {
    crate::base::http::seen(req, &app.inst.config.trusted_proxies)
}

fn origin_ok(req: &HttpRequest, app: &super::AppState) -> bool {
    let h = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok());
    same_origin(h("origin"), h("referer"), &seen(req, app).host)
}

/// Logged in, same origin, and the form's CSRF token matches: the gate of every POST.
pub(super) fn require_post(
    req: &HttpRequest,
    app: &super::AppState,
    token: &str,
) -> Result<Session, Problem> {
    let s = require(req, app)?;
    if !origin_ok(req, app) || !same(token, &s.csrf) {
        return Err(Problem::Forged(s));
    }
    Ok(s)
}

pub(super) async fn login_page(req: HttpRequest, app: Data) -> HttpResponse {
    if session(&req, &app).is_some() {
        return see_other(&landing(&app));
    }
    html(pages::login(None))
}

pub(super) async fn login(req: HttpRequest, app: Data, form: web::Form<LoginForm>) -> Page {
    if !origin_ok(&req, &app) {
        let h = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok());
        return Err(Problem::from(crate::Error::refused(
            format!(
                "cross-origin login refused: the browser sent it from {}, and this panel was asked for host {:?}",
                h("origin")
                    .or(h("referer"))
                    .unwrap_or("nowhere (no Origin, no Referer)"),
                seen(&req, &app).host
            ),
            "behind a proxy, pass the browser's host and port on: `proxy_set_header Host $http_host;` (nginx) or `ProxyPreserveHost On` (Apache), or name the proxy in trusted_proxies in upkeep.toml so its X-Forwarded-Host counts (`upkeep web-config` prints such lines)",
        )));
    }
    let LoginForm { name, password } = form.into_inner();
    let addr = seen(&req, &app).client;
    let app2 = app.clone();
    // argon2 is deliberately slow: keep it off the event loop.
    let r =
        web::block(move || with_state(&app2, |st| accounts::login(st, &name, &password, &addr)))
            .await
            .map_err(|_| Problem::BadRequest("the login could not be checked"))??;
    let page = |status: actix_web::http::StatusCode, msg: &str| {
        HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .body(pages::login(Some(msg)).into_string())
    };
    Ok(match r {
        Ok(s) => {
            let secure = seen(&req, &app).https;
            let cookie = Cookie::build(COOKIE, s.id)
                .path("/control")
                .http_only(true)
                .same_site(SameSite::Strict)
                .secure(secure)
                .finish();
            HttpResponse::SeeOther()
                .cookie(cookie)
                .insert_header((header::LOCATION, landing(&app)))
                .finish()
        }
        Err(LoginError::Wrong) => page(
            actix_web::http::StatusCode::UNAUTHORIZED,
            "Wrong account name or password.",
        ),
        Err(LoginError::Wait(secs)) => {
            let mut r = page(
                actix_web::http::StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "Too many failed logins: wait {secs} seconds, then try again. The right password works after the wait."
                ),
            );
            r.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from(secs.max(1) as u64),
            );
            r
        }
    })
}

pub(super) async fn logout(req: HttpRequest, app: Data, form: web::Form<CsrfForm>) -> Page {
    let s = require_post(&req, &app, &form.csrf)?;
    let _ = with_state(&app, |st| accounts::end_session(st, &s.id));
    let mut gone = Cookie::build(COOKIE, "").path("/control").finish();
    gone.make_removal();
    Ok(HttpResponse::SeeOther()
        .cookie(gone)
        .insert_header((header::LOCATION, "/control/login"))
        .finish())
}

pub use crate::base::accounts::{same, same_origin};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_1() {
        assert!(same_origin(
            Some("http://127.0.0.1:8000"),
            None,
            "127.0.0.1:8000"
        ));
        assert!(same_origin(
            None,
            Some("https://site.example/control/stage"),
            "site.example"
        ));
    }
    #[test]
    fn bad_origin() {
        assert!(!same_origin(
            Some("http://evil.example"),
            Some("http://127.0.0.1:8000/"),
            "127.0.0.1:8000"
        ));
        assert!(!same_origin(None, None, "127.0.0.1:8000"));
        assert!(!same_origin(Some("null"), None, "127.0.0.1:8000"));
    }
}
