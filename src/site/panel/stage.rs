//! Steps 1 and 2 of the wizard: the check against the reference and the staging, each a
//! background job with a live progress page that can be cancelled.

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::auth::{CsrfForm, require, require_post};
use super::jobs::Outcome;
use super::{Data, ForSession, Page, Problem, html, pages, see_other, with_state};
use crate::base::accounts::Session;
use crate::base::fsutil::human_bytes;
use crate::base::progress::Progress;
use crate::site::config::Instance;
use crate::site::stage::{self, Source, StageOptions};
use crate::site::state::{JobKind, JobState};

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum SourceField {
    Network,
    Manual,
    Inbox,
}

#[derive(Deserialize)]
pub(super) struct StageForm {
    #[serde(default)]
    csrf: String,
    source: SourceField,
    #[serde(default)]
    name: String,
}

pub(super) async fn check_page(req: HttpRequest, app: Data) -> Page {
    let s = require(&req, &app)?;
    Ok(html(pages::check(&s, super::last_diff(&app).as_ref())))
}

/// Start a background job and send the browser to the page that follows it.
pub(super) fn start_job<F>(s: &Session, app: &super::AppState, kind: JobKind, work: F) -> Page
where
    F: FnOnce(&Instance, &Arc<Progress>) -> crate::Result<String> + Send + 'static,
{
    let id = app
        .jobs
        .spawn(app.root.clone(), kind, work)
        .for_session(s)?;
    Ok(if kind.drives_run() {
        see_other("/control/run")
    } else {
        see_other(&format!("/control/job/{id}"))
    })
}

pub(super) async fn check_start(req: HttpRequest, app: Data, form: web::Form<CsrfForm>) -> Page {
    let s = require_post(&req, &app, &form.csrf)?;
    start_job(&s, &app, JobKind::Check, |inst, p| {
        p.set_phase("comparing with the reference");
        let (d, _) = crate::site::check::check(inst)?;
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

pub(super) async fn stage_page(req: HttpRequest, app: Data) -> Page {
    let s = require(&req, &app)?;
    let items = stage::inbox::list(&app.inst).for_session(&s)?;
    Ok(html(pages::stage(
        &s,
        &items,
        app.inst.config.limits.max_upload_bytes,
    )))
}

/// Stage from `source` as a background job.
pub(super) fn stage_job(s: &Session, app: &super::AppState, source: Source) -> Page {
    start_job(s, app, JobKind::Stage, move |inst, p| {
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

pub(super) async fn stage_start(req: HttpRequest, app: Data, form: web::Form<StageForm>) -> Page {
    let s = require_post(&req, &app, &form.csrf)?;
    let source = match form.source {
        SourceField::Network => Source::Network,
        SourceField::Manual => Source::Manual,
        SourceField::Inbox => Source::Inbox(form.name.clone()),
    };
    stage_job(&s, &app, source)
}

pub(super) async fn job_page(req: HttpRequest, app: Data, path: web::Path<i64>) -> Page {
    let s = require(&req, &app)?;
    let id = path.into_inner();
    let (kind, outcome, snap) = match app.jobs.get(id) {
        Some(j) => (j.kind, j.outcome(), Some(j.progress.snapshot())),
        None => {
            let Ok(Some(rec)) = with_state(&app, |st| st.job(id)) else {
                return Err(Problem::NotFound("no such job"));
            };
            let o = match rec.state {
                JobState::Done => Outcome::Done(rec.detail),
                JobState::Interrupted => Outcome::Failed(
                    "This job was interrupted when the server stopped.".into(),
                    Some("Start it again: staging continues where it stopped.".into()),
                ),
                _ => Outcome::Failed(rec.detail, None),
            };
            (rec.kind, o, None)
        }
    };
    let next = match kind {
        JobKind::Check => Some(("/control/check", "See what changed")),
        JobKind::Stage => Some(("/control/review", "Next: review the update")),
        _ => None,
    };
    Ok(html(pages::job(
        &s,
        id,
        kind,
        snap.as_ref(),
        &outcome,
        next,
    )))
}

pub(super) async fn job_cancel(
    req: HttpRequest,
    app: Data,
    path: web::Path<i64>,
    form: web::Form<CsrfForm>,
) -> Page {
    require_post(&req, &app, &form.csrf)?;
    let id = path.into_inner();
    match app.jobs.get(id) {
        Some(j) => {
            j.progress.cancel();
            Ok(see_other(&format!("/control/job/{id}")))
        }
        None => Err(Problem::NotFound("no such job running")),
    }
}

pub(super) async fn job_api(req: HttpRequest, app: Data, path: web::Path<i64>) -> HttpResponse {
    if require(&req, &app).is_err() {
        return HttpResponse::Unauthorized().finish();
    }
    let Some(j) = app.jobs.get(path.into_inner()) else {
        return HttpResponse::NotFound().finish();
    };
    let p = j.progress.snapshot();
    let running = matches!(j.outcome(), Outcome::Running);
    HttpResponse::Ok().json(serde_json::json!({
        "key": if running { "working" } else { "finished" },
        "max": p.bytes_total.max(1), "value": p.bytes_done,
        "fields": {
            "phase": p.phase,
            "files": format!("{} of {} files", p.files_done, p.files_total),
            "bytes": format!("{} of {}", human_bytes(p.bytes_done), human_bytes(p.bytes_total)),
            "speed": format!("{}/s", human_bytes(p.bytes_per_sec)),
            "eta": p.eta_secs.map(|e| format!("{e} s left")).unwrap_or_default(),
        },
        "progress": p,
    }))
}
