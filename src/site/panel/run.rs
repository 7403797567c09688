//! Steps 4 and 5: apply the reviewed plan, follow the run, resume or roll back; the gate.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::auth::{CsrfForm, require, require_post};
use super::jobs::Outcome;
use super::stage::start_job;
use super::{Data, ForSession, Page, Problem, html, pages, see_other, with_state};
use crate::site::fleet::report::around_run;
use crate::site::lock::InstanceLock;
use crate::site::state::{JobKind, Run, RunStatus};
use crate::site::update::{self, gate, tasks::Decision};

#[derive(Deserialize)]
pub(super) struct ApplyForm {
    #[serde(default)]
    csrf: String,
    /// The digest of the plan shown, with the release's version of modified files.
    plan: String,
    /// The digest of the same plan keeping modified files.
    #[serde(default)]
    plan_keep: String,
    #[serde(default)]
    keep_modified: Option<String>,
    /// Tasks not from the release allowed on the review page, one path a line.
    #[serde(default)]
    allow: String,
}

pub(super) async fn apply(req: HttpRequest, app: Data, form: web::Form<ApplyForm>) -> Page {
    let s = require_post(&req, &app, &form.csrf)?;
    let keep = form.keep_modified.is_some();
    // The operator approved the plan on the page, not whatever plan exists when the job
    // starts: the digest goes with the job, and `update` refuses any other plan.
    let digest = if keep {
        form.plan_keep.clone()
    } else {
        form.plan.clone()
    };
    if digest.is_empty() {
        return Err(Problem::BadRequest(
            "this form carries no plan digest: review the update again",
        ));
    }
    let allow = super::review::allowed(&form.allow)?;
    start_job(&s, &app, JobKind::Update, move |inst, p| {
        let mut o = update::Options::approved(Some(&digest), keep, Decision::Ask, p);
        o.allow_tasks = &allow;
        let run = around_run(inst, || update::update(inst, &o)).0?;
        Ok(run
            .map(|r| format!("Run {} finished", r.id))
            .unwrap_or_default())
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum DecisionField {
    Rerun,
    Skip,
}

#[derive(Deserialize)]
pub(super) struct ResumeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    decision: Option<DecisionField>,
}

pub(super) async fn resume(req: HttpRequest, app: Data, form: web::Form<ResumeForm>) -> Page {
    let s = require_post(&req, &app, &form.csrf)?;
    let decision = match form.decision {
        Some(DecisionField::Rerun) => Decision::Rerun,
        Some(DecisionField::Skip) => Decision::Skip,
        None => Decision::Ask,
    };
    start_job(&s, &app, JobKind::Resume, move |inst, p| {
        around_run(inst, || {
            update::resume(inst, &update::Options::approved(None, false, decision, p))
        })
        .0
        .map(|r| format!("Run {} is {}", r.id, r.status))
    })
}

#[derive(Deserialize)]
pub(super) struct RollbackForm {
    #[serde(default)]
    csrf: String,
    /// Put the database copy back even over writes made since (saved aside first).
    #[serde(default)]
    restore_database: Option<String>,
}

pub(super) async fn rollback(req: HttpRequest, app: Data, form: web::Form<RollbackForm>) -> Page {
    let s = require_post(&req, &app, &form.csrf)?;
    let o = update::RollbackOptions {
        restore_database: form.restore_database.is_some(),
    };
    start_job(&s, &app, JobKind::Rollback, move |inst, _| {
        around_run(inst, || update::rollback(inst, &o))
            .0
            .map(|r| format!("Run {} rolled back; {}", r.run.id, r.database.describe()))
    })
}

pub(super) async fn finish(req: HttpRequest, app: Data, form: web::Form<CsrfForm>) -> Page {
    let s = require_post(&req, &app, &form.csrf)?;
    start_job(&s, &app, JobKind::Finish, |inst, p| {
        let o = update::Options::approved(None, false, Decision::Ask, p);
        around_run(inst, || crate::site::finish::finish(inst, None, &o))
            .0
            .map(|r| format!("Run {} finished release {}", r.id, r.to))
    })
}

/// The run to show: the unfinished one, else the newest; whether nobody is driving it; and
/// whether a run job is still preparing (its run row does not exist yet).
fn current_run(app: &super::AppState) -> crate::Result<(Option<Run>, bool, bool)> {
    let run = with_state(app, |st| {
        Ok(st.unfinished_run()?.or(st.runs(1)?.into_iter().next()))
    })?;
    let driving = app.jobs.running().is_some_and(|j| j.kind.drives_run());
    // A run marked running with no job of this server and a free lock was interrupted.
    let interrupted = run.as_ref().is_some_and(|r| {
        r.status == RunStatus::Running
            && !driving
            && InstanceLock::acquire(&app.inst, "probe").is_ok()
    });
    let preparing = driving
        && !run
            .as_ref()
            .is_some_and(|r| matches!(r.status, RunStatus::Running | RunStatus::RollingBack));
    Ok((run, interrupted, preparing))
}

/// A run job of this server that failed before its run began (the plan changed, staging went
/// stale, the lock was taken): its message and hint, shown on the run page it sent the
/// operator to. A job whose run began (and failed, or was rolled back) shows that run instead.
fn refused_start(app: &super::AppState, run: Option<&Run>) -> Option<(String, Option<String>)> {
    let j = app.jobs.newest()?;
    let Outcome::Failed(msg, hint) = j.outcome() else {
        return None;
    };
    let run_began = run.map(|r| r.id) != j.run_before;
    (matches!(j.kind, JobKind::Update | JobKind::Finish) && !run_began).then_some((msg, hint))
}

pub(super) async fn run_page(req: HttpRequest, app: Data) -> Page {
    let s = require(&req, &app)?;
    let (run, interrupted, preparing) = current_run(&app).for_session(&s)?;
    let refused = refused_start(&app, run.as_ref());
    // What a rollback would do with the database, beside its button (none while busy).
    let database = run
        .as_ref()
        .filter(|r| interrupted || (r.status.unfinished() && r.status != RunStatus::Running))
        .and_then(|_| update::rollback::plan(&app.inst, &Default::default()).ok())
        .map(|p| p.database);
    Ok(html(pages::run(
        &s,
        (run.as_ref(), database.as_ref()),
        interrupted,
        preparing,
        refused.as_ref(),
    )))
}

pub(super) async fn run_api(req: HttpRequest, app: Data) -> HttpResponse {
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

#[derive(Deserialize)]
pub(super) struct GateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    message: Option<String>,
}

pub(super) async fn gate(
    req: HttpRequest,
    app: Data,
    path: web::Path<String>,
    form: web::Form<GateForm>,
) -> Page {
    let s = require_post(&req, &app, &form.csrf)?;
    match path.as_str() {
        "open" => gate::open(&app.inst.root).for_session(&s)?,
        "close" => {
            let message = form.message.as_deref().unwrap_or("Under maintenance.");
            gate::close(&app.inst.root, message, None).for_session(&s)?;
        }
        _ => return Err(Problem::NotFound("no such gate action")),
    }
    Ok(see_other("/control"))
}
