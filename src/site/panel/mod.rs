//! `upkeep serve`: the site behind the gate, and the control panel under `/control`. Handlers
//! check the session, call one library function (or start a background job) and render a page;
//! every failure goes through [`Problem`], whose one `ResponseError` impl picks the status and
//! renders the problem page.
//!
//! One file per concern: `auth` (login, sessions, CSRF), `stage` (check, staging and their jobs),
//! `upload`, `review` (the plan and the diff view), `run` (apply, resume, rollback, the gate),
//! `jobs` (background work), `pages` (the HTML).

pub mod auth;
pub mod jobs;
pub mod pages;
mod review;
mod run;
mod stage;
mod trigger;
mod upload;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use actix_web::http::{StatusCode, header};
use actix_web::middleware::DefaultHeaders;
use actix_web::{App, HttpResponse, HttpServer, ResponseError, web};
use maud::Markup;

use crate::base::accounts::Session;
use crate::base::error::Error;
use crate::site::config::Instance;
use crate::site::state::State;
use jobs::Jobs;

/// Shared by every request.
pub struct AppState {
    /// The instance.
    pub inst: Instance,
    /// Its root (jobs reopen the instance from it).
    pub root: PathBuf,
    /// The state store for the panel's own queries.
    pub state: Mutex<State>,
    /// Background jobs.
    pub jobs: Jobs,
}

type Data = web::Data<Arc<AppState>>;
type Page = Result<HttpResponse, Problem>;

fn html(m: Markup) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(m.into_string())
}

fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to))
        .finish()
}

fn with_state<T>(app: &AppState, f: impl FnOnce(&State) -> crate::Result<T>) -> crate::Result<T> {
    f(&app.state.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Why a panel request did not get its page.
#[derive(Debug)]
pub enum Problem {
    /// Not logged in: to the login page.
    Login,
    /// A form that did not come from this panel (CSRF token or Origin).
    Forged(Session),
    /// A request the panel does not understand.
    BadRequest(&'static str),
    /// Nothing here.
    NotFound(&'static str),
    /// The library refused or failed; shown with its hint.
    Failed(Option<Session>, Box<Error>),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Login => f.write_str("not logged in"),
            Problem::Forged(_) => f.write_str("form not from this panel"),
            Problem::BadRequest(m) | Problem::NotFound(m) => f.write_str(m),
            Problem::Failed(_, e) => write!(f, "{e}"),
        }
    }
}

impl From<Error> for Problem {
    fn from(e: Error) -> Self {
        Problem::Failed(None, Box::new(e))
    }
}

/// Attach the session to a library error, so the problem page keeps the panel's navigation.
trait ForSession<T> {
    fn for_session(self, s: &Session) -> Result<T, Problem>;
}

impl<T> ForSession<T> for crate::Result<T> {
    fn for_session(self, s: &Session) -> Result<T, Problem> {
        self.map_err(|e| Problem::Failed(Some(s.clone()), Box::new(e)))
    }
}

impl ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        match self {
            Problem::Login => StatusCode::SEE_OTHER,
            Problem::Forged(_) => StatusCode::FORBIDDEN,
            Problem::BadRequest(_) => StatusCode::BAD_REQUEST,
            Problem::NotFound(_) => StatusCode::NOT_FOUND,
            Problem::Failed(_, e) => {
                StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        let page = |s: Option<&Session>, title: &str, msg: &str, hint: Option<&str>| {
            HttpResponse::build(self.status_code())
                .content_type("text/html; charset=utf-8")
                .body(pages::problem(s, title, msg, hint).into_string())
        };
        match self {
            Problem::Login => see_other("/control/login"),
            Problem::Forged(s) => page(
                Some(s),
                "Refused",
                "This form did not come from this panel (missing or wrong CSRF token, or another origin).",
                Some("Reload the page and try again."),
            ),
            Problem::BadRequest(m) => page(None, "Bad request", m, None),
            Problem::NotFound(m) => page(None, "Not found", m, None),
            Problem::Failed(s, e) => page(
                s.as_ref(),
                "That did not work",
                &e.to_string(),
                e.hint().as_deref(),
            ),
        }
    }
}

/// What the last check found, as it recorded it.
fn last_diff(app: &AppState) -> Option<crate::site::plan::Diff> {
    with_state(app, |st| st.meta("last_check_diff"))
        .ok()
        .flatten()
        .and_then(|j| serde_json::from_str(&j).ok())
}

/// Where an operator lands: the unfinished run, the running job, or the dashboard.
fn landing(app: &AppState) -> String {
    if let Ok(Some(_)) = with_state(app, |st| st.unfinished_run()) {
        return "/control/run".into();
    }
    match app.jobs.running() {
        Some(j) if j.kind.drives_run() => "/control/run".into(),
        Some(j) => format!("/control/job/{}", j.id),
        None => "/control".into(),
    }
}

async fn dashboard(req: actix_web::HttpRequest, app: Data) -> Page {
    let s = auth::require(&req, &app)?;
    // upkeep.toml is read afresh: an operator who just edited the policy sees it (or its mistake).
    let fresh = Instance::open(&app.root);
    let mut st =
        crate::site::update::status(fresh.as_ref().unwrap_or(&app.inst)).for_session(&s)?;
    if let Err(e) = &fresh {
        st.policy = format!("upkeep.toml has a mistake: {e}");
    }
    let latest = st.last_check.as_ref().and_then(|(_, v)| {
        with_state(&app, |state| state.load_release(v, &app.inst.key))
            .ok()
            .flatten()
    });
    let latest_view = latest.as_ref().map(|m| {
        (
            m.version(),
            m.manifest().date.as_str(),
            m.manifest().notes.as_str(),
        )
    });
    // The last check found the whole latest release in place, yet it is not the installed
    // one: it was copied by hand, and `finish` is the way on.
    let diff = last_diff(&app);
    let copied = diff
        .as_ref()
        .filter(|d| {
            !d.older
                && d.new.is_empty()
                && d.changed.is_empty()
                && st.installed.as_deref() != Some(d.latest.as_str())
                && st.current.is_none()
        })
        .map(|d| d.latest.as_str());
    Ok(html(pages::dashboard(
        &s,
        &st,
        &app.inst.config.reference,
        latest_view,
        copied,
    )))
}

async fn static_file(path: web::Path<String>) -> Page {
    let (kind, body) = match path.as_str() {
        "app.css" => ("text/css; charset=utf-8", crate::base::http::APP_CSS),
        "app.js" => (
            "text/javascript; charset=utf-8",
            include_str!("static/app.js"),
        ),
        _ => return Err(Problem::NotFound("no such file")),
    };
    Ok(HttpResponse::Ok().content_type(kind).body(body))
}

async fn site(req: actix_web::HttpRequest, app: Data) -> HttpResponse {
    crate::site::serve::serve_file(&req, &app.inst).await
}

/// Security headers on every panel response.
fn panel_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((header::CONTENT_SECURITY_POLICY, "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"))
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        .add((header::REFERRER_POLICY, "same-origin"))
        .add((header::CACHE_CONTROL, "no-store"))
}

/// Start serving; returns the server and the bound address.
pub fn start(
    inst: Instance,
    listen: &str,
) -> std::io::Result<(actix_web::dev::Server, std::net::SocketAddr)> {
    let state = State::open(&inst.state_db()).map_err(std::io::Error::other)?;
    // Jobs recorded as running belong to a server that is gone.
    state.interrupt_jobs().map_err(std::io::Error::other)?;
    let root = inst.root.clone();
    let app = web::Data::new(Arc::new(AppState {
        inst,
        root,
        state: Mutex::new(state),
        jobs: Jobs::default(),
    }));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(app.clone())
            // A form that does not parse is a 400 page, not actix's plain text.
            .app_data(web::FormConfig::default().error_handler(|_, _| {
                Problem::BadRequest("this form is incomplete or malformed").into()
            }))
            .app_data(web::QueryConfig::default().error_handler(|_, _| {
                Problem::BadRequest("this address is incomplete or malformed").into()
            }))
            .service(
                web::scope("/control")
                    .wrap(panel_headers())
                    .route("", web::get().to(dashboard))
                    .route("/", web::get().to(dashboard))
                    .route("/login", web::get().to(auth::login_page))
                    .route("/login", web::post().to(auth::login))
                    .route("/logout", web::post().to(auth::logout))
                    .route("/check", web::get().to(stage::check_page))
                    .route("/check", web::post().to(stage::check_start))
                    .route("/stage", web::get().to(stage::stage_page))
                    .route("/stage", web::post().to(stage::stage_start))
                    .route("/upload", web::post().to(upload::upload))
                    .route("/job/{id}", web::get().to(stage::job_page))
                    .route("/job/{id}/cancel", web::post().to(stage::job_cancel))
                    .route("/api/job/{id}", web::get().to(stage::job_api))
                    .route("/review", web::get().to(review::review))
                    .route("/diff", web::get().to(review::diff))
                    .route("/apply", web::post().to(run::apply))
                    .route("/run", web::get().to(run::run_page))
                    .route("/api/run", web::get().to(run::run_api))
                    .route("/resume", web::post().to(run::resume))
                    .route("/rollback", web::post().to(run::rollback))
                    .route("/finish", web::post().to(run::finish))
                    .route("/gate/{action}", web::post().to(run::gate))
                    .route("/static/{file}", web::get().to(static_file))
                    .default_service(web::to(|| async {
                        Problem::NotFound("no such page in the control panel").error_response()
                    })),
            )
            .service(
                web::resource("/trigger")
                    .app_data(web::PayloadConfig::new(
                        crate::documents::trigger::MAX_TRIGGER * 2,
                    ))
                    .route(web::post().to(trigger::trigger)),
            )
            .route("/{tail:.*}", web::get().to(site))
            .route("/{tail:.*}", web::head().to(site))
    })
    .on_connect(crate::base::http::nodelay)
    .bind(listen)?;
    let addr = server.addrs()[0];
    Ok((server.run(), addr))
}
