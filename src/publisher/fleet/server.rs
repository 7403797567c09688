//! The reference server's fleet endpoints: `POST /fleet/enroll` and `POST /fleet/report`.
//! Both are small JSON bodies with a hard size cap; the database work runs off the async
//! threads.

use actix_web::{HttpRequest, HttpResponse, web};

use super::Fleet;
use super::db::Refusal;
use crate::documents::report::Enrolment;
use crate::documents::report::{MAX_REPORT, Outcome, SIGNATURE_HEADER};

/// Register the endpoints.
pub fn configure(cfg: &mut web::ServiceConfig, fleet: web::Data<Fleet>) {
    cfg.service(
        web::scope("/fleet")
            .app_data(fleet)
            .app_data(web::PayloadConfig::new(MAX_REPORT))
            .route("/enroll", web::post().to(enroll))
            .route("/report", web::post().to(report))
            .configure(super::page::routes),
    );
}

fn answer(r: Refusal) -> HttpResponse {
    let mut b =
        HttpResponse::build(actix_web::http::StatusCode::from_u16(r.status).unwrap_or_default());
    if r.status == 429 {
        b.insert_header(("retry-after", "60"));
    }
    b.content_type("text/plain; charset=utf-8")
        .body(format!("{}\n", r.why))
}

fn broken(e: impl std::fmt::Display) -> HttpResponse {
    HttpResponse::InternalServerError()
        .content_type("text/plain; charset=utf-8")
        .body(format!("fleet database: {e}\n"))
}

async fn enroll(fleet: web::Data<Fleet>, body: web::Bytes) -> HttpResponse {
    let e: Enrolment = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => {
            return answer(Refusal {
                status: 400,
                why: format!("not an enrolment: {e}"),
            });
        }
    };
    let r = web::block(move || {
        let db = fleet.db.lock().unwrap_or_else(|p| p.into_inner());
        db.enrol(&e).map(|r| r.map(|()| e.site_id))
    })
    .await;
    match r {
        Ok(Ok(Ok(id))) => HttpResponse::Ok().json(serde_json::json!({ "enrolled": id })),
        Ok(Ok(Err(refusal))) => answer(refusal),
        Ok(Err(e)) => broken(e),
        Err(e) => broken(e),
    }
}

async fn report(req: HttpRequest, fleet: web::Data<Fleet>, body: web::Bytes) -> HttpResponse {
    let Some(sig) = req
        .headers()
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
    else {
        return answer(Refusal {
            status: 401,
            why: "the report is not signed".into(),
        });
    };
    let r = web::block(move || {
        let db = fleet.db.lock().unwrap_or_else(|p| p.into_inner());
        let r = db.accept(&body, &sig)?;
        // Each report may tip its channel's rollout: steer it before answering, so that the
        // next site to ask already sees the halt.
        let due = |rep: &crate::documents::report::Report| {
            let failed = matches!(rep.outcome, Outcome::Failure | Outcome::RolledBack);
            (failed || rep.outcome == Outcome::Success)
                && fleet.steer_due(&rep.channel, failed, false)
        };
        if let Ok(rep) = &r
            && matches!(rep.outcome, Outcome::Failure | Outcome::RolledBack)
        {
            fleet.tell(
                &db,
                &super::Event {
                    event: "site_failed",
                    channel: rep.channel.clone(),
                    release: rep.to.clone().unwrap_or_default(),
                    text: format!(
                        "[upkeep] {} {} release {}",
                        crate::base::text::one_line(&rep.name),
                        rep.outcome.words(),
                        rep.to.as_deref().unwrap_or("-")
                    ),
                    site: Some(rep.name.clone()),
                    failed_step: rep.failed_step.clone(),
                    reason: rep.reason.clone(),
                    at: crate::base::clock::now_text(),
                },
            );
        }
        if let (Ok(rep), Some(p)) = (&r, &fleet.pilot)
            && due(rep)
        {
            let t0 = std::time::Instant::now();
            let failed = matches!(rep.outcome, Outcome::Failure | Outcome::RolledBack);
            let steered = fleet.steering(&db, failed, || {
                let s = p.steer(&db, &rep.channel)?;
                if let Some(e) = s.as_ref().and_then(|s| s.event()) {
                    fleet.tell(&db, &e);
                }
                Ok(s)
            });
            fleet.steer_cost(&rep.channel, t0);
            match steered.map(Option::flatten) {
                Ok(Some(s)) => crate::errln!("rollout: {}", s.line),
                Ok(None) => {}
                Err(e) => crate::errln!("rollout: could not steer channel {}: {e}", rep.channel),
            }
        }
        Ok::<_, crate::base::error::Error>(r)
    })
    .await;
    match r {
        Ok(Ok(Ok(rep))) => HttpResponse::Ok().json(serde_json::json!({ "seq": rep.seq })),
        Ok(Ok(Err(refusal))) => answer(refusal),
        Ok(Err(e)) => broken(e),
        Err(e) => broken(e),
    }
}
