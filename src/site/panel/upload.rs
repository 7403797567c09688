//! Staging from an uploaded zip: streamed into `inbox/` under the `.part` convention (never
//! held in memory), then staged like any inbox archive.

use actix_web::{HttpRequest, HttpResponse, ResponseError};
use futures_util::StreamExt;

use super::auth::require_post;
use super::stage::stage_job;
use super::{Data, ForSession, Page, Problem};
use crate::base::clock::now_text;
use crate::base::error::Error;
use crate::base::fsutil::human_bytes;
use crate::site::stage::Source;
use crate::site::stage::inbox::Incoming;

/// Read one text field of a multipart form (small: a token).
async fn text_field(field: &mut actix_multipart::Field) -> Result<String, Problem> {
    let mut v = Vec::new();
    while let Some(chunk) = field.next().await {
        let chunk = chunk.map_err(|_| Problem::BadRequest("the upload was interrupted"))?;
        if v.len() + chunk.len() > 4096 {
            return Err(Problem::BadRequest("a form field is too long"));
        }
        v.extend_from_slice(&chunk);
    }
    String::from_utf8(v).map_err(|_| Problem::BadRequest("a form field is not text"))
}

pub(super) async fn upload(
    req: HttpRequest,
    app: Data,
    mut payload: actix_multipart::Multipart,
) -> Page {
    // The CSRF token comes first in the form: nothing is written before it is checked.
    let mut session = None;
    let mut stored = None;
    while let Some(field) = payload.next().await {
        let mut field = field.map_err(|_| Problem::BadRequest("broken upload"))?;
        match (field.name(), &session) {
            (Some("csrf"), None) => {
                let token = text_field(&mut field).await?;
                session = Some(require_post(&req, &app, &token)?);
            }
            (Some("zip"), Some(s)) => {
                let limit = app.inst.config.limits.max_upload_bytes;
                let name = format!("upload-{}.zip", now_text().replace([':', '-'], ""));
                let mut incoming = Incoming::create(&app.inst, &name).for_session(s)?;
                while let Some(chunk) = field.next().await {
                    let chunk =
                        chunk.map_err(|_| Problem::BadRequest("the upload was interrupted"))?;
                    if incoming.written() + chunk.len() as u64 > limit {
                        return Ok(too_large(s, limit));
                    }
                    incoming.write(&chunk).for_session(s)?;
                }
                stored = Some(incoming.finish().for_session(s)?);
            }
            (Some("zip"), None) => {
                return Err(Problem::BadRequest(
                    "the form's token must come before the file: reload the page and try again",
                ));
            }
            _ => {}
        }
    }
    let Some(s) = session else {
        return Err(Problem::BadRequest("this form carries no CSRF token"));
    };
    let Some(path) = stored else {
        return Err(Problem::Failed(
            Some(s),
            Box::new(Error::refused(
                "no file was uploaded",
                "choose a release zip, then upload it",
            )),
        ));
    };
    stage_job(&s, &app, Source::Archive(path))
}

fn too_large(s: &crate::base::accounts::Session, limit: u64) -> HttpResponse {
    let mut r = Problem::Failed(
        Some(s.clone()),
        Box::new(Error::refused(
            format!(
                "the upload is larger than {} (limits.max_upload_bytes)",
                human_bytes(limit)
            ),
            "copy the zip into inbox/ by FTP or scp instead",
        )),
    )
    .error_response();
    *r.status_mut() = actix_web::http::StatusCode::PAYLOAD_TOO_LARGE;
    r
}
