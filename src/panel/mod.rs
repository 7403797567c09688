//! `upkeep serve`: the site behind the gate, and the control panel under `/control`. Handlers
//! check the session, call one library function (or start a background job) and render a page.

pub mod auth;
pub mod jobs;
pub mod pages;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::header;
use actix_web::middleware::DefaultHeaders;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use futures_util::StreamExt;
use maud::Markup;

use crate::config::Instance;
use crate::error::Error;
use crate::manifest::RelPath;
use crate::stage::{self, Source, StageOptions};
use crate::state::State;
use crate::update::{self, tasks::Decision};
use auth::Session;
use jobs::{Jobs, Outcome};

const COOKIE: &str = "upkeep_session";

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
type Form = web::Form<HashMap<String, String>>;

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

fn failure(s: Option<&Session>, e: &Error) -> HttpResponse {
    let status = match e {
        Error::Busy(_) => actix_web::http::StatusCode::CONFLICT,
        Error::Refused { .. } | Error::UnsafePath { .. } => {
            actix_web::http::StatusCode::BAD_REQUEST
        }
        _ => actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
    };
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(
            pages::problem(s, "That did not work", &e.to_string(), e.hint().as_deref())
                .into_string(),
        )
}

/// The session of a request, if logged in.
fn session(req: &HttpRequest, app: &AppState) -> Option<Session> {
    let id = req.cookie(COOKIE)?.value().to_string();
    with_state(app, |st| auth::session(st, &id)).ok().flatten()
}

/// Logged in, or sent to the login page.
fn require(req: &HttpRequest, app: &AppState) -> Result<Session, Box<HttpResponse>> {
    session(req, app).ok_or_else(|| Box::new(see_other("/control/login")))
}

fn origin_ok(req: &HttpRequest) -> bool {
    let h = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok());
    let host = h("host").unwrap_or_default();
    auth::same_origin(h("origin"), h("referer"), host)
}

/// Logged in, same origin, and the form's CSRF token matches: the gate of every POST.
fn require_post(
    req: &HttpRequest,
    app: &AppState,
    token: Option<&String>,
) -> Result<Session, Box<HttpResponse>> {
    let s = require(req, app)?;
    if !origin_ok(req) || !token.is_some_and(|t| auth::same(t, &s.csrf)) {
        return Err(Box::new(HttpResponse::Forbidden()
            .content_type("text/html; charset=utf-8")
            .body(pages::problem(Some(&s), "Refused", "This form did not come from this panel (missing or wrong CSRF token, or another origin).", Some("Reload the page and try again.")).into_string())));
    }
    Ok(s)
}

macro_rules! guard {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(resp) => return *resp,
        }
    };
}

fn peer(req: &HttpRequest) -> String {
    req.peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default()
}

/// Where an operator lands: the unfinished run, the running job, or the dashboard.
fn landing(app: &AppState) -> String {
    if let Ok(Some(_)) = with_state(app, update::unfinished) {
        return "/control/run".into();
    }
    match app.jobs.running() {
        Some(j) if j.kind == "update" || j.kind == "resume" || j.kind == "rollback" => {
            "/control/run".into()
        }
        Some(j) => format!("/control/job/{}", j.id),
        None => "/control".into(),
    }
}

async fn login_page(req: HttpRequest, app: Data) -> HttpResponse {
    if session(&req, &app).is_some() {
        return see_other(&landing(&app));
    }
    html(pages::login(None))
}

async fn login(req: HttpRequest, app: Data, form: Form) -> HttpResponse {
    if !origin_ok(&req) {
        return HttpResponse::Forbidden().body("cross-origin login refused\n");
    }
    let name = form
        .get("name")
        .map(String::as_str)
        .unwrap_or_default()
        .to_string();
    let pw = form
        .get("password")
        .map(String::as_str)
        .unwrap_or_default()
        .to_string();
    let addr = peer(&req);
    let app2 = app.clone();
    // argon2 is deliberately slow: keep it off the event loop.
    let r = web::block(move || with_state(&app2, |st| auth::login(st, &name, &pw, &addr))).await;
    match r {
        Ok(Ok(Ok(s))) => {
            let secure = req.connection_info().scheme() == "https";
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
        Ok(Ok(Err(auth::LoginError::Wrong))) => HttpResponse::Unauthorized()
            .content_type("text/html; charset=utf-8")
            .body(pages::login(Some("Wrong account name or password.")).into_string()),
        Ok(Ok(Err(auth::LoginError::Throttled))) => HttpResponse::TooManyRequests()
            .insert_header((header::RETRY_AFTER, auth::FAIL_WINDOW_SECS.to_string()))
            .content_type("text/html; charset=utf-8")
            .body(
                pages::login(Some(
                    "Too many failed logins. Wait 15 minutes, then try again.",
                ))
                .into_string(),
            ),
        Ok(Err(e)) => failure(None, &e),
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}

async fn logout(req: HttpRequest, app: Data, form: Form) -> HttpResponse {
    let s = guard!(require_post(&req, &app, form.get("csrf")));
    let _ = with_state(&app, |st| auth::end_session(st, &s.id));
    let mut gone = Cookie::build(COOKIE, "").path("/control").finish();
    gone.make_removal();
    HttpResponse::SeeOther()
        .cookie(gone)
        .insert_header((header::LOCATION, "/control/login"))
        .finish()
}

async fn dashboard(req: HttpRequest, app: Data) -> HttpResponse {
    let s = guard!(require(&req, &app));
    let st = match update::status(&app.inst) {
        Ok(st) => st,
        Err(e) => return failure(Some(&s), &e),
    };
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
    html(pages::dashboard(
        &s,
        &st,
        &app.inst.config.reference,
        latest_view,
    ))
}

async fn check_page(req: HttpRequest, app: Data) -> HttpResponse {
    let s = guard!(require(&req, &app));
    let diff = with_state(&app, |st| st.meta("last_check_diff"))
        .ok()
        .flatten()
        .and_then(|j| serde_json::from_str(&j).ok());
    html(pages::check(&s, diff.as_ref()))
}

fn start_job<F>(s: &Session, app: &AppState, kind: &str, work: F) -> HttpResponse
where
    F: FnOnce(&Instance, &Arc<crate::progress::Progress>) -> crate::Result<String> + Send + 'static,
{
    match app.jobs.spawn(app.root.clone(), kind, work) {
        Ok(id) if matches!(kind, "update" | "resume" | "rollback") => {
            let _ = id;
            see_other("/control/run")
        }
        Ok(id) => see_other(&format!("/control/job/{id}")),
        Err(e) => failure(Some(s), &e),
    }
}

async fn check_start(req: HttpRequest, app: Data, form: Form) -> HttpResponse {
    let s = guard!(require_post(&req, &app, form.get("csrf")));
    start_job(&s, &app, "check", |inst, p| {
        p.set_phase("comparing with the reference");
        let (d, _) = crate::check::check(inst)?;
        Ok(if d.up_to_date() {
            format!("Up to date with release {}.", d.latest)
        } else {
            format!(
                "Release {} is available: {} new, {} changed, {} removed, {} locally modified.",
                d.latest,
                d.new.len(),
                d.changed.len(),
                d.removed.len(),
                d.modified.len()
            )
        })
    })
}

async fn stage_page(req: HttpRequest, app: Data) -> HttpResponse {
    let s = guard!(require(&req, &app));
    match stage::inbox::list(&app.inst) {
        Ok(items) => html(pages::stage(
            &s,
            &items,
            app.inst.config.limits.max_upload_bytes,
        )),
        Err(e) => failure(Some(&s), &e),
    }
}

fn stage_job(s: &Session, app: &AppState, source: Source) -> HttpResponse {
    start_job(s, app, "stage", move |inst, p| {
        let r = stage::stage(
            inst,
            &source,
            &StageOptions {
                allow_downgrade: false,
                progress: p.clone(),
            },
        )?;
        Ok(format!(
            "Release {} is staged: {} files ({} already there), verified against the signed manifest.",
            r.version, r.files, r.reused
        ))
    })
}

async fn stage_start(req: HttpRequest, app: Data, form: Form) -> HttpResponse {
    let s = guard!(require_post(&req, &app, form.get("csrf")));
    let source = match form.get("source").map(String::as_str) {
        Some("network") => Source::Network,
        Some("manual") => Source::Manual,
        Some("inbox") => Source::Inbox(form.get("name").cloned().unwrap_or_default()),
        _ => return HttpResponse::BadRequest().body("unknown source\n"),
    };
    stage_job(&s, &app, source)
}

async fn upload(
    req: HttpRequest,
    app: Data,
    query: web::Query<HashMap<String, String>>,
    mut payload: actix_multipart::Multipart,
) -> HttpResponse {
    let s = guard!(require_post(&req, &app, query.get("csrf")));
    let limit = app.inst.config.limits.max_upload_bytes;
    let inbox = app.inst.inbox();
    let name = format!(
        "upload-{}.zip",
        crate::state::now_text().replace([':', '-'], "")
    );
    let part = inbox.join(format!("{name}.part"));
    let mut written: u64 = 0;
    let mut got_file = false;
    while let Some(field) = payload.next().await {
        let Ok(mut field) = field else {
            return HttpResponse::BadRequest().body("broken upload\n");
        };
        if field.name() != Some("zip") {
            continue;
        }
        got_file = true;
        let Ok(mut f) = std::fs::File::create(&part) else {
            return failure(
                Some(&s),
                &Error::msg(format!("cannot write {}", part.display())),
            );
        };
        // Streamed to disk chunk by chunk: the archive is never held in memory.
        while let Some(chunk) = field.next().await {
            let Ok(chunk) = chunk else {
                let _ = std::fs::remove_file(&part);
                return HttpResponse::BadRequest().body("the upload was interrupted\n");
            };
            written += chunk.len() as u64;
            if written > limit {
                let _ = std::fs::remove_file(&part);
                return HttpResponse::PayloadTooLarge()
                    .content_type("text/html; charset=utf-8")
                    .body(
                        pages::problem(
                            Some(&s),
                            "Upload too large",
                            &format!(
                                "The upload is larger than {limit} bytes (limits.max_upload_bytes)."
                            ),
                            Some("Copy the zip into inbox/ by FTP or scp instead."),
                        )
                        .into_string(),
                    );
            }
            if let Err(e) = std::io::Write::write_all(&mut f, &chunk) {
                let _ = std::fs::remove_file(&part);
                return failure(
                    Some(&s),
                    &Error::Io {
                        op: "write",
                        path: part.clone(),
                        source: e,
                    },
                );
            }
        }
    }
    if !got_file || written == 0 {
        let _ = std::fs::remove_file(&part);
        return HttpResponse::BadRequest().body("no file uploaded\n");
    }
    let path = inbox.join(&name);
    if let Err(e) = std::fs::rename(&part, &path) {
        return failure(
            Some(&s),
            &Error::Io {
                op: "rename",
                path: part,
                source: e,
            },
        );
    }
    stage_job(&s, &app, Source::Archive(path))
}

async fn job_page(req: HttpRequest, app: Data, path: web::Path<i64>) -> HttpResponse {
    let s = guard!(require(&req, &app));
    let id = path.into_inner();
    let (kind, outcome, snap) = match app.jobs.get(id) {
        Some(j) => (
            j.kind.clone(),
            j.outcome.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            Some(j.progress.snapshot()),
        ),
        None => match with_state(&app, |st| jobs::recorded(st, id)) {
            Ok(Some((kind, state, detail))) => {
                let o = match state.as_str() {
                    "done" => Outcome::Done(detail),
                    "interrupted" => Outcome::Failed(
                        "This job was interrupted when the server stopped.".into(),
                        Some("Start it again: staging continues where it stopped.".into()),
                    ),
                    _ => Outcome::Failed(detail, None),
                };
                (kind, o, None)
            }
            _ => return HttpResponse::NotFound().body("no such job\n"),
        },
    };
    let next = match kind.as_str() {
        "check" => Some(("/control/check", "See what changed")),
        "stage" => Some(("/control/review", "Next: review the update")),
        _ => None,
    };
    html(pages::job(&s, id, &kind, snap.as_ref(), &outcome, next))
}

async fn job_api(req: HttpRequest, app: Data, path: web::Path<i64>) -> HttpResponse {
    if require(&req, &app).is_err() {
        return HttpResponse::Unauthorized().finish();
    }
    let Some(j) = app.jobs.get(path.into_inner()) else {
        return HttpResponse::NotFound().finish();
    };
    let p = j.progress.snapshot();
    let running = matches!(
        *j.outcome.lock().unwrap_or_else(|e| e.into_inner()),
        Outcome::Running
    );
    HttpResponse::Ok().json(serde_json::json!({
        "key": if running { "running" } else { "finished" },
        "max": p.bytes_total.max(1), "value": p.bytes_done,
        "fields": {
            "phase": p.phase,
            "files": format!("{} of {} files", p.files_done, p.files_total),
            "bytes": format!("{} of {}", crate::fsutil::human_bytes(p.bytes_done), crate::fsutil::human_bytes(p.bytes_total)),
            "speed": format!("{}/s", crate::fsutil::human_bytes(p.bytes_per_sec)),
            "eta": p.eta_secs.map(|e| format!("{e} s left")).unwrap_or_default(),
        },
        "progress": p,
    }))
}

async fn review(req: HttpRequest, app: Data) -> HttpResponse {
    let s = guard!(require(&req, &app));
    let root = app.root.clone();
    // Re-hashing the staged files takes a moment on a large release: not on the event loop.
    let r = web::block(move || {
        let inst = Instance::open(&root)?;
        let mut st = State::open(&inst.state_db())?;
        update::prepare(&inst, &mut st, false).map(|(p, _)| p)
    })
    .await;
    match r {
        Ok(Ok(plan)) => html(pages::review(&s, &plan)),
        Ok(Err(e)) => failure(Some(&s), &e),
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}

/// Text of a file for the diff view: UTF-8, no NUL, at most 512 KB.
fn text_of(p: &std::path::Path) -> Option<String> {
    let md = std::fs::metadata(p).ok()?;
    if md.len() > 512 * 1024 {
        return None;
    }
    let s = String::from_utf8(std::fs::read(p).ok()?).ok()?;
    (!s.contains('\0')).then_some(s)
}

async fn diff(
    req: HttpRequest,
    app: Data,
    query: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    let s = guard!(require(&req, &app));
    let Some(Ok(rel)) = query.get("path").map(|p| RelPath::parse_release_file(p)) else {
        return HttpResponse::BadRequest().body("bad path\n");
    };
    let rows = match (
        text_of(&rel.under(&app.inst.root)),
        text_of(&rel.under(&app.inst.staging())),
    ) {
        (Some(a), Some(b)) => {
            let d = similar::TextDiff::from_lines(&a, &b);
            let mut rows = Vec::new();
            for op in d.ops() {
                let (tag, old, new) = op.as_tag_tuple();
                let left: Vec<&str> = a.lines().skip(old.start).take(old.len()).collect();
                let right: Vec<&str> = b.lines().skip(new.start).take(new.len()).collect();
                let changed = tag != similar::DiffTag::Equal;
                for i in 0..left.len().max(right.len()) {
                    rows.push(pages::DiffRow {
                        left: left.get(i).map(|x| x.to_string()),
                        right: right.get(i).map(|x| x.to_string()),
                        changed,
                    });
                }
            }
            Some(rows)
        }
        _ => None,
    };
    html(pages::diff(&s, rel.as_str(), rows.as_deref()))
}

fn update_options<'a>(
    keep: bool,
    decision: Decision,
    progress: &'a crate::progress::Progress,
) -> update::Options<'a> {
    update::Options {
        keep_modified: keep,
        confirm: &|_| true,
        on_step: &|_, _| {},
        decision,
        progress,
    }
}

async fn apply(req: HttpRequest, app: Data, form: Form) -> HttpResponse {
    let s = guard!(require_post(&req, &app, form.get("csrf")));
    let keep = form.get("keep_modified").is_some();
    start_job(&s, &app, "update", move |inst, p| {
        let run = update::update(inst, &update_options(keep, Decision::Ask, p))?;
        Ok(run
            .map(|r| format!("Run {} finished", r.id))
            .unwrap_or_default())
    })
}

async fn resume(req: HttpRequest, app: Data, form: Form) -> HttpResponse {
    let s = guard!(require_post(&req, &app, form.get("csrf")));
    let decision = match form.get("decision").map(String::as_str) {
        Some("rerun") => Decision::Rerun,
        Some("skip") => Decision::Skip,
        _ => Decision::Ask,
    };
    start_job(&s, &app, "resume", move |inst, p| {
        update::resume(inst, &update_options(false, decision, p))
            .map(|r| format!("Run {} is {}", r.id, r.status))
    })
}

async fn rollback(req: HttpRequest, app: Data, form: Form) -> HttpResponse {
    let s = guard!(require_post(&req, &app, form.get("csrf")));
    start_job(&s, &app, "rollback", |inst, _| {
        update::rollback(inst).map(|r| format!("Run {} rolled back", r.id))
    })
}

/// The run to show: the unfinished one, else the newest; whether nobody is driving it; and
/// whether a run job is still preparing (its run row does not exist yet).
fn current_run(app: &AppState) -> crate::Result<(Option<update::Run>, bool, bool)> {
    let run = with_state(app, |st| {
        Ok(update::unfinished(st)?.or(update::history(st, 1)?.into_iter().next()))
    })?;
    let driving = app
        .jobs
        .running()
        .is_some_and(|j| matches!(j.kind.as_str(), "update" | "resume" | "rollback"));
    // A run marked running with no job of this server and a free lock was interrupted.
    let interrupted = run.as_ref().is_some_and(|r| {
        r.status == "running"
            && !driving
            && crate::lock::InstanceLock::acquire(&app.inst, "probe").is_ok()
    });
    let preparing = driving
        && !run
            .as_ref()
            .is_some_and(|r| matches!(r.status.as_str(), "running" | "rolling_back"));
    Ok((run, interrupted, preparing))
}

async fn run_page(req: HttpRequest, app: Data) -> HttpResponse {
    let s = guard!(require(&req, &app));
    match current_run(&app) {
        Ok((run, interrupted, preparing)) => {
            html(pages::run(&s, run.as_ref(), interrupted, preparing))
        }
        Err(e) => failure(Some(&s), &e),
    }
}

async fn run_api(req: HttpRequest, app: Data) -> HttpResponse {
    if require(&req, &app).is_err() {
        return HttpResponse::Unauthorized().finish();
    }
    match current_run(&app) {
        Ok((_, _, true)) => HttpResponse::Ok().json(serde_json::json!({ "key": "preparing" })),
        Ok((Some(r), interrupted, _)) => HttpResponse::Ok().json(serde_json::json!({
            "key": format!("{}:{}:{}", r.status, r.step, interrupted),
            "fields": { "step": format!("{}…", r.step) },
            "run": r,
        })),
        Ok((None, _, _)) => HttpResponse::Ok().json(serde_json::json!({ "key": "none" })),
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}

async fn gate(req: HttpRequest, app: Data, path: web::Path<String>, form: Form) -> HttpResponse {
    let s = guard!(require_post(&req, &app, form.get("csrf")));
    let r = match path.as_str() {
        "open" => update::gate::open(&app.inst),
        "close" => update::gate::close(
            &app.inst,
            form.get("message")
                .map(String::as_str)
                .unwrap_or("Under maintenance."),
            None,
        )
        .map(|_| ()),
        _ => return HttpResponse::NotFound().finish(),
    };
    match r {
        Ok(()) => see_other("/control"),
        Err(e) => failure(Some(&s), &e),
    }
}

async fn static_file(path: web::Path<String>) -> HttpResponse {
    match path.as_str() {
        "app.css" => HttpResponse::Ok()
            .content_type("text/css; charset=utf-8")
            .body(include_str!("static/app.css")),
        "app.js" => HttpResponse::Ok()
            .content_type("text/javascript; charset=utf-8")
            .body(include_str!("static/app.js")),
        _ => HttpResponse::NotFound().finish(),
    }
}

async fn site(req: HttpRequest, app: Data) -> HttpResponse {
    crate::site::serve_file(&req, &app.inst).await
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
    jobs::mark_interrupted(&state).map_err(std::io::Error::other)?;
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
            .service(
                web::scope("/control")
                    .wrap(panel_headers())
                    .route("", web::get().to(dashboard))
                    .route("/", web::get().to(dashboard))
                    .route("/login", web::get().to(login_page))
                    .route("/login", web::post().to(login))
                    .route("/logout", web::post().to(logout))
                    .route("/check", web::get().to(check_page))
                    .route("/check", web::post().to(check_start))
                    .route("/stage", web::get().to(stage_page))
                    .route("/stage", web::post().to(stage_start))
                    .route("/upload", web::post().to(upload))
                    .route("/job/{id}", web::get().to(job_page))
                    .route("/api/job/{id}", web::get().to(job_api))
                    .route("/review", web::get().to(review))
                    .route("/diff", web::get().to(diff))
                    .route("/apply", web::post().to(apply))
                    .route("/run", web::get().to(run_page))
                    .route("/api/run", web::get().to(run_api))
                    .route("/resume", web::post().to(resume))
                    .route("/rollback", web::post().to(rollback))
                    .route("/gate/{action}", web::post().to(gate))
                    .route("/static/{file}", web::get().to(static_file))
                    .default_service(web::to(|| async {
                        HttpResponse::NotFound().body("no such page in the control panel\n")
                    })),
            )
            .route("/{tail:.*}", web::get().to(site))
            .route("/{tail:.*}", web::head().to(site))
    })
    .on_connect(crate::reference::serve::nodelay)
    .bind(listen)?;
    let addr = server.addrs()[0];
    Ok((server.run(), addr))
}
