//! `POST /trigger` on `upkeep serve`: a signed "check now" starts the site's own unattended
//! pass in the background (202); anything else gets its 4xx and changes nothing.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};

use super::{Data, with_state};
use crate::documents::manifest::PublicKey;
use crate::documents::trigger::{self, SIGNATURE_HEADER};
use crate::site::config::Instance;

fn answer(status: u16, body: String) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap_or_default())
        .content_type("text/plain; charset=utf-8")
        .body(body + "\n")
}

pub(super) async fn trigger(req: HttpRequest, app: Data, body: web::Bytes) -> HttpResponse {
    // upkeep.toml read afresh: a key added or removed counts at once.
    let inst = match Instance::open(&app.root) {
        Ok(i) => i,
        Err(e) => return answer(500, format!("upkeep.toml: {e}")),
    };
    let keys: Vec<PublicKey> = inst
        .config
        .trigger_keys
        .iter()
        .filter_map(|k| PublicKey::parse(k).ok())
        .collect();
    let sig = req
        .headers()
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let id = crate::site::fleet::identity::identity(&inst)
        .map(|i| i.id)
        .unwrap_or_default();
    let name = crate::site::fleet::identity::site_name(&inst);
    let app2 = app.clone();
    let r = web::block(move || {
        with_state(&app2, |st| {
            trigger::accept(
                &body,
                sig.as_deref(),
                &keys,
                &[name.as_str(), id.as_str()],
                st,
                std::time::SystemTime::now(),
            )
        })
    })
    .await;
    match r {
        Ok(Ok(Ok(_))) => match crate::site::fleet::trigger::start_pass(&inst.root) {
            Ok(pid) => answer(
                202,
                format!("started upkeep auto (pid {pid}); its policy decides"),
            ),
            Err(e) => answer(500, e.to_string()),
        },
        Ok(Ok(Err(refusal))) => {
            let mut r = answer(refusal.status, refusal.why);
            if let Some(s) = refusal.retry_after {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from(s));
            }
            r
        }
        Ok(Err(e)) => answer(500, e.to_string()),
        Err(_) => answer(500, "the trigger could not be checked".into()),
    }
}
