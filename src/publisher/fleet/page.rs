//! The fleet page on the reference server (`/fleet`), behind a login like the panel's (the same
//! accounts rules, stored in the fleet database): the deployment table, each channel's rollout
//! with a progress bar per wave, the failures with their step and message, and the rollout
//! controls as POST forms with a CSRF token. Works without JavaScript.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use super::Fleet;
use super::db::{FleetDb, Outcomes, SiteRow, counters};
use super::rollout::{Move, read_channel, rollout};
use crate::base::accounts::{self, LoginError, Session, same, same_origin};
use crate::documents::channel::{ChannelPointer, RolloutState, SiteView, first_wave};
use crate::documents::report::Outcome;

const COOKIE: &str = "upkeep_fleet";

/// Register the page's routes (inside the `/fleet` scope).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("", web::get().to(page))
        .route("/login", web::get().to(login_page))
        .route("/login", web::post().to(login))
        .route("/logout", web::post().to(logout))
        .route("/rollout", web::post().to(control))
        .route("/promote", web::post().to(promote))
        .route("/site/{id}", web::get().to(site_page))
        .route("/static/app.css", web::get().to(css));
}

async fn css() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(crate::base::http::APP_CSS)
}

fn with_db<T>(
    f: &Fleet,
    work: impl FnOnce(&FleetDb) -> crate::base::error::Result<T>,
) -> crate::base::error::Result<T> {
    let db = f.db.lock().unwrap_or_else(|e| e.into_inner());
    work(&db)
}

fn session(req: &HttpRequest, f: &Fleet) -> Option<Session> {
    let id = req.cookie(COOKIE)?.value().to_string();
    with_db(f, |db| accounts::session(db, &id)).ok().flatten()
}

fn origin_ok(req: &HttpRequest) -> bool {
    let h = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok());
    same_origin(h("origin"), h("referer"), h("host").unwrap_or_default())
}

fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to.to_string()))
        .finish()
}

fn page_response(status: StatusCode, m: Markup) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "same-origin"))
        .body(m.into_string())
}

fn layout(title: &str, s: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · upkeep fleet" }
                link rel="stylesheet" href="/fleet/static/app.css";
            }
            body {
                header { div.bar {
                    a.brand href="/fleet" { "upkeep fleet" }
                    @if let Some(s) = s {
                        form.inline method="post" action="/fleet/logout" {
                            input type="hidden" name="csrf" value=(s.csrf);
                            button.secondary type="submit" { "Log out " (s.account) }
                        }
                    }
                } }
                main { (body) }
            }
        }
    }
}

fn login_form(msg: Option<&str>) -> Markup {
    layout(
        "Log in",
        None,
        html! {
            h1 { "Log in" }
            @if let Some(m) = msg { div.card.error { p { (m) } } }
            form method="post" action="/fleet/login" {
                label for="name" { "Account" }
                input id="name" name="name" type="text" autocomplete="username" required;
                label for="password" { "Password" }
                input id="password" name="password" type="password" autocomplete="current-password" required;
                p { button type="submit" { "Log in" } }
            }
            p.muted { "Accounts: " code { "upkeep fleet user add NAME --repo REPO" } }
        },
    )
}

async fn login_page(req: HttpRequest, f: web::Data<Fleet>) -> HttpResponse {
    if session(&req, &f).is_some() {
        return see_other("/fleet");
    }
    page_response(StatusCode::OK, login_form(None))
}

#[derive(Deserialize)]
struct LoginForm {
    name: String,
    password: String,
}

async fn login(req: HttpRequest, f: web::Data<Fleet>, form: web::Form<LoginForm>) -> HttpResponse {
    if !origin_ok(&req) {
        return page_response(
            StatusCode::BAD_REQUEST,
            login_form(Some("Cross-origin login refused.")),
        );
    }
    let LoginForm { name, password } = form.into_inner();
    let addr = req
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let f2 = f.clone();
    // argon2 is deliberately slow: keep it off the event loop.
    let r =
        web::block(move || with_db(&f2, |db| accounts::login(db, &name, &password, &addr))).await;
    match r {
        Ok(Ok(Ok(s))) => {
            let cookie = Cookie::build(COOKIE, s.id)
                .path("/fleet")
                .http_only(true)
                .same_site(SameSite::Strict)
                .secure(req.connection_info().scheme() == "https")
                .finish();
            HttpResponse::SeeOther()
                .cookie(cookie)
                .insert_header((header::LOCATION, "/fleet"))
                .finish()
        }
        Ok(Ok(Err(LoginError::Wrong))) => page_response(
            StatusCode::UNAUTHORIZED,
            login_form(Some("Wrong account name or password.")),
        ),
        Ok(Ok(Err(LoginError::Wait(secs)))) => {
            let mut r = page_response(
                StatusCode::TOO_MANY_REQUESTS,
                login_form(Some(&format!(
                    "Too many failed logins: wait {secs} seconds, then try again."
                ))),
            );
            r.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from(secs.max(1) as u64),
            );
            r
        }
        _ => page_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            login_form(Some("The login could not be checked.")),
        ),
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(req: HttpRequest, f: web::Data<Fleet>, form: web::Form<CsrfForm>) -> HttpResponse {
    if let Some(s) = session(&req, &f).filter(|s| origin_ok(&req) && same(&form.csrf, &s.csrf)) {
        let _ = with_db(&f, |db| accounts::end_session(db, &s.id));
    }
    let mut gone = Cookie::build(COOKIE, "").path("/fleet").finish();
    gone.make_removal();
    HttpResponse::SeeOther()
        .cookie(gone)
        .insert_header((header::LOCATION, "/fleet/login"))
        .finish()
}

/// A form that moves a rollout: a session, this page's token and origin, and an online key to
/// sign with; else the page that says which is missing.
fn may_steer<'f>(
    req: &HttpRequest,
    f: &'f Fleet,
    csrf: &str,
) -> std::result::Result<(Session, &'f super::pilot::Pilot), Box<HttpResponse>> {
    let Some(s) = session(req, f) else {
        return Err(Box::new(see_other("/fleet/login")));
    };
    if !origin_ok(req) || !same(csrf, &s.csrf) {
        return Err(Box::new(page_response(
            StatusCode::FORBIDDEN,
            layout(
                "Refused",
                Some(&s),
                html! { h1 { "Refused" } p { "This form did not come from this page (its token or origin is wrong). Reload the fleet page and try again." } },
            ),
        )));
    }
    let Some(pilot) = &f.pilot else {
        return Err(Box::new(page_response(
            StatusCode::CONFLICT,
            layout(
                "No online key",
                Some(&s),
                html! { h1 { "No online key" } p { "This server holds no online key, so it cannot sign a channel pointer. Start it with " code { "--online-key FILE" } ", or use " code { "upkeep rollout" } " where the key is." } },
            ),
        )));
    };
    Ok((s, pilot))
}

fn refused(s: &Session, status: StatusCode, why: &str) -> HttpResponse {
    page_response(
        status,
        layout(
            "Refused",
            Some(s),
            html! { h1 { "Refused" } p { (why) } p { a href="/fleet" { "Back to the fleet" } } },
        ),
    )
}

#[derive(Deserialize)]
struct PromoteForm {
    #[serde(default)]
    csrf: String,
    channel: String,
    version: String,
    waves: String,
    every: String,
    halt_on_failure: String,
    min_reports: String,
}

/// Start a rollout from the page, as `upkeep promote` does.
async fn promote(
    req: HttpRequest,
    f: web::Data<Fleet>,
    form: web::Form<PromoteForm>,
) -> HttpResponse {
    let (s, _) = match may_steer(&req, &f, &form.csrf) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let form = form.into_inner();
    let parsed = (|| {
        let waves = crate::documents::channel::parse_waves(form.waves.trim())?;
        let every = humantime::parse_duration(form.every.trim())
            .map_err(|e| format!("time in a wave {:?}: {e}", form.every))?;
        let halt: crate::documents::channel::Threshold = form.halt_on_failure.trim().parse()?;
        let min: u32 = form
            .min_reports
            .trim()
            .parse()
            .map_err(|_| format!("successes a wave needs {:?}: a number", form.min_reports))?;
        Ok::<_, String>((waves, every, halt, min))
    })();
    let (waves, every, halt, min) = match parsed {
        Ok(p) => p,
        Err(why) => return refused(&s, StatusCode::BAD_REQUEST, &why),
    };
    let f2 = f.clone();
    let r = web::block(move || {
        let _db = f2.db.lock().unwrap_or_else(|e| e.into_inner());
        let pilot = f2.pilot.as_ref().expect("checked above");
        super::rollout::promote(&super::rollout::Promote {
            repo: &pilot.repo,
            channel: form.channel.trim(),
            version: form.version.trim(),
            key: &pilot.key,
            waves,
            every,
            halt_on_failure: halt,
            min_reports: min,
            ttl: std::time::Duration::from_secs(86_400),
        })
    })
    .await;
    match r {
        Ok(Ok(_)) => see_other("/fleet"),
        Ok(Err(e)) => refused(&s, StatusCode::CONFLICT, &e.to_string()),
        Err(_) => page_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            html! { "the release could not be promoted" },
        ),
    }
}

#[derive(Deserialize)]
struct ControlForm {
    #[serde(default)]
    csrf: String,
    channel: String,
    action: String,
    #[serde(default)]
    reason: String,
}

async fn control(
    req: HttpRequest,
    f: web::Data<Fleet>,
    form: web::Form<ControlForm>,
) -> HttpResponse {
    let (s, pilot) = match may_steer(&req, &f, &form.csrf) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let reason = form.reason.trim();
    let by = |what: &str| {
        if reason.is_empty() {
            format!("{what} by {} on the fleet page", s.account)
        } else {
            format!("{reason} ({what} by {})", s.account)
        }
    };
    let m = match form.action.as_str() {
        "pause" => Move::Pause(Some(by("paused"))),
        "resume" => Move::Resume,
        "halt" => Move::Halt(by("halted")),
        "advance" => Move::Advance,
        _ => {
            return page_response(
                StatusCode::BAD_REQUEST,
                layout("Refused", Some(&s), html! { h1 { "Unknown action" } }),
            );
        }
    };
    let (repo, channel) = (pilot.repo.clone(), form.channel.clone());
    let f2 = f.clone();
    let r = web::block(move || {
        let _db = f2.db.lock().unwrap_or_else(|e| e.into_inner());
        let key = &f2.pilot.as_ref().expect("checked above").key;
        rollout(&repo, &channel, key, &m)
    })
    .await;
    match r {
        Ok(Ok(_)) => see_other("/fleet"),
        Ok(Err(e)) => page_response(
            StatusCode::CONFLICT,
            layout(
                "Refused",
                Some(&s),
                html! { h1 { "Refused" } p { (e.to_string()) } p { a href="/fleet" { "Back to the fleet" } } },
            ),
        ),
        Err(_) => page_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            html! { "the rollout could not be changed" },
        ),
    }
}

/// The form that starts a rollout (the server holds an online key).
fn promote_card(s: &Session, releases: &[String]) -> Markup {
    html! {
        div.card {
            h2 { "Promote a release" }
            form method="post" action="/fleet/promote" {
                input type="hidden" name="csrf" value=(s.csrf);
                label for="promote-version" { "Release" }
                select id="promote-version" name="version" {
                    @for v in releases.iter().rev() { option value=(v) { (v) } }
                }
                label for="promote-channel" { "Channel" }
                input id="promote-channel" type="text" name="channel" value="stable";
                label for="promote-waves" { "Waves (groups and rising shares, ending at 100%)" }
                input id="promote-waves" type="text" name="waves" value="test,10%,50%,100%";
                label for="promote-every" { "Least time in a wave" }
                input id="promote-every" type="text" name="every" value="24h";
                label for="promote-halt" { "Halt on failures (a share, 5%, or a count, 3)" }
                input id="promote-halt" type="text" name="halt_on_failure" value="5%";
                label for="promote-min" { "Successful reports a wave needs" }
                input id="promote-min" type="text" name="min_reports" value="1";
                p { button type="submit" { "Promote" } }
            }
        }
    }
}

fn outcome_badge(o: Option<Outcome>) -> Markup {
    let (class, word) = match o {
        None => ("badge", "none yet"),
        Some(o @ (Outcome::Success | Outcome::UpToDate)) => ("badge ok", o.words()),
        Some(o @ (Outcome::Failure | Outcome::RolledBack)) => ("badge bad", o.words()),
        Some(o) => ("badge warn", o.words()),
    };
    html! { span class=(class) { (word) } }
}

/// When a report was received, as UTC text.
fn when(secs: i64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64),
    )
    .to_string()
}

/// One site's timeline: every report kept, newest first.
async fn site_page(req: HttpRequest, f: web::Data<Fleet>, id: web::Path<String>) -> HttpResponse {
    let Some(s) = session(&req, &f) else {
        return see_other("/fleet/login");
    };
    let f2 = f.clone();
    let id = id.into_inner();
    let data = web::block(move || {
        with_db(&f2, |db| {
            let Some(site) = db.find_site(&id)? else {
                return Ok(None);
            };
            let history = db.history(&site.id, 500)?;
            Ok(Some((site, history)))
        })
    })
    .await;
    let (site, history) = match data {
        Ok(Ok(Some(d))) => d,
        Ok(Ok(None)) => {
            return page_response(
                StatusCode::NOT_FOUND,
                layout(
                    "No such site",
                    Some(&s),
                    html! { h1 { "No such site" } p { a href="/fleet" { "Back to the fleet" } } },
                ),
            );
        }
        _ => {
            return page_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                html! { "the fleet database could not be read" },
            );
        }
    };
    page_response(
        StatusCode::OK,
        layout(
            &site.name,
            Some(&s),
            html! {
                h1 { (site.name) }
                p.muted { "id " code { (site.id) } " · channel " (site.channel)
                    @if !site.groups.is_empty() { " · groups " (site.groups.join(", ")) }
                    " · release " (site.version.as_deref().unwrap_or("unknown")) " · last heard of " (ago(site.last_seen_secs)) }
                h2 { "History (" (history.len()) " reports)" }
                table { thead { tr { th { "Received" } th { "Result" } th { "Release" } th { "Step" } th { "Closed" } th { "Fetched" } th { "Why" } } }
                tbody { @for (at, r) in &history { tr {
                    td { (when(*at)) }
                    td { (outcome_badge(Some(r.outcome))) }
                    td { (r.from.as_deref().unwrap_or("-")) " → " (r.to.as_deref().unwrap_or("-")) }
                    td { (r.failed_step.clone().unwrap_or_default()) }
                    td { @if let Some(ms) = r.closed_ms { (ms) " ms" } }
                    td { @if let Some(b) = r.bytes_fetched { (crate::base::fsutil::human_bytes(b)) } }
                    td { (r.reason.chars().take(500).collect::<String>()) }
                } } } }
                p { a href="/fleet" { "Back to the fleet" } }
            },
        ),
    )
}

fn ago(secs: Option<i64>) -> String {
    match secs {
        None => "never".into(),
        Some(s) => format!(
            "{} ago",
            crate::base::clock::span_words(std::time::Duration::from_secs(s.max(0) as u64))
        ),
    }
}

/// One channel's rollout: `about` is what each site last said about its release, and
/// `failures` each failed site's report about it (kept after the site's later passes).
fn channel_card(
    s: &Session,
    p: &ChannelPointer,
    sites: &[SiteRow],
    (about, failures): (&Outcomes, &[(SiteRow, crate::documents::report::Report)]),
    pilot: bool,
) -> Markup {
    let on: Vec<&SiteRow> = sites.iter().filter(|r| r.channel == p.channel).collect();
    let wave_of = |r: &SiteRow| {
        first_wave(
            p,
            &SiteView {
                id: &r.id,
                groups: &r.groups,
            },
        )
    };
    let c = counters(&p.release, &on, about, 3600);
    html! {
        div.card {
            h2 { "Channel " (p.channel) ": release " (p.release) }
            p {
                @match p.state {
                    RolloutState::Active => span.badge.ok { "active" },
                    RolloutState::Paused => span.badge.warn { "paused" },
                    RolloutState::Halted => span.badge.bad { "halted" },
                    RolloutState::Complete => span.badge.ok { "complete" },
                }
                " wave " (p.wave + 1) " of " (p.waves.len())
                @if let Some(r) = &p.reason { " · " (r) }
                @if p.urgent { " · " strong { "urgent" } }
            }
            p.muted { "Sites outside the waves reached stay on " (p.previous.as_ref().map(|x| x.release.as_str()).unwrap_or("nothing")) ". Pointer valid until " (p.expires) "." }
            table { thead { tr { th { "Wave" } th { "Sites" } th { "Updated" } th { "Progress" } } }
            tbody { @for (i, w) in p.waves.iter().enumerate() {
                @let in_wave: Vec<&&SiteRow> = on.iter().filter(|r| wave_of(r) == Some(i)).collect();
                @let done = in_wave.iter().filter(|r| r.version.as_deref() == Some(p.release.as_str())).count();
                tr {
                    td { (i + 1) ". " (w) @if i == p.wave && p.state != RolloutState::Complete { " ◀" } }
                    td { (in_wave.len()) }
                    td { (done) }
                    td { progress value=(done) max=(in_wave.len().max(1)) aria-label={"wave " (i + 1)} { (done) "/" (in_wave.len()) } }
                }
            } } }
            p { "pending " (c.pending) " · downloading " (c.downloading) " · installing " (c.installing)
                " · success " (c.success) " · failure " (c.failure) " · rolled back " (c.rolled_back)
                " · held " (c.held) " · postponed " (c.postponed) " · silent " (c.silent) }
            @if !failures.is_empty() {
                h3 { "Failures (" (failures.len()) ")" }
                table { thead { tr { th { "Site" } th { "Result" } th { "Step" } th { "Message" } } }
                tbody { @for (r, rep) in failures { tr {
                    td { a href={"/fleet/site/" (r.id)} { (r.name) } } td { (outcome_badge(Some(rep.outcome))) }
                    td { (rep.failed_step.clone().unwrap_or_default()) }
                    td { (rep.reason.chars().take(300).collect::<String>()) }
                } } } }
            }
            @if pilot {
                form method="post" action="/fleet/rollout" {
                    input type="hidden" name="csrf" value=(s.csrf);
                    input type="hidden" name="channel" value=(p.channel);
                    label for={"reason-" (p.channel)} { "Reason (shown to sites)" }
                    input id={"reason-" (p.channel)} type="text" name="reason";
                    p {
                        @if p.state == RolloutState::Active { button.secondary type="submit" name="action" value="pause" { "Pause" } " " }
                        @if matches!(p.state, RolloutState::Paused | RolloutState::Halted) { button type="submit" name="action" value="resume" { "Resume" } " " }
                        @if matches!(p.state, RolloutState::Active | RolloutState::Paused) { button type="submit" name="action" value="advance" { "Next wave" } " " button.danger type="submit" name="action" value="halt" { "Halt" } }
                    }
                }
            } @else {
                p.muted { "This server holds no online key: change the rollout with " code { "upkeep rollout" } "." }
            }
        }
    }
}

async fn page(req: HttpRequest, f: web::Data<Fleet>) -> HttpResponse {
    let Some(s) = session(&req, &f) else {
        return see_other("/fleet/login");
    };
    let f2 = f.clone();
    let data = web::block(move || {
        let sites = with_db(&f2, |db| db.sites())?;
        let mut ptrs = Vec::new();
        for p in super::rollout::channels(&f2.repo)
            .iter()
            .filter_map(|c| read_channel(&f2.repo, c).ok().flatten())
        {
            let (about, failures) = with_db(&f2, |db| {
                let about = db.outcomes(&p.release)?;
                let failures = super::db::failures(db, &sites, &p.channel, &p.release, &about)?;
                Ok((about, failures))
            })?;
            ptrs.push((p, about, failures));
        }
        let releases = std::fs::read(f2.repo.join(crate::documents::repo::POINTER))
            .ok()
            .and_then(|b| serde_json::from_slice::<crate::documents::manifest::Pointer>(&b).ok())
            .map(|p| p.releases)
            .unwrap_or_default();
        Ok::<_, crate::base::error::Error>((sites, ptrs, releases))
    })
    .await;
    let Ok(Ok((sites, ptrs, releases))) = data else {
        return page_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            html! { "the fleet database could not be read" },
        );
    };
    let pilot = f.pilot.is_some();
    page_response(
        StatusCode::OK,
        layout(
            "Fleet",
            Some(&s),
            html! {
                h1 { "Fleet" }
                p.muted { (sites.len()) " enrolled sites" }
                @if ptrs.is_empty() { p.muted { "No channel yet: " code { "upkeep promote VERSION --channel NAME ..." } } }
                @for (p, about, failures) in &ptrs { (channel_card(&s, p, &sites, (about, failures), pilot)) }
                @if pilot { (promote_card(&s, &releases)) }
                h2 { "Sites" }
                table { thead { tr { th { "Site" } th { "Groups" } th { "Channel" } th { "Version" } th { "Last" } th { "Seen" } th { "Closed" } } }
                tbody { @for r in &sites { tr {
                    td { a href={"/fleet/site/" (r.id)} { (r.name) } } td { (r.groups.join(", ")) } td { (r.channel) }
                    td { (r.version.as_deref().unwrap_or("-")) }
                    td { (outcome_badge(r.outcome)) }
                    td { (ago(r.last_seen_secs)) }
                    td { @if let Some(ms) = r.last.as_ref().and_then(|l| l.closed_ms) { (ms) " ms" } }
                } } } }
            },
        ),
    )
}
