//! Step 3: the plan, with its digest for the apply form, and the side-by-side diff of a file.

use actix_web::{HttpRequest, web};
use serde::Deserialize;

use super::auth::require;
use super::{Data, ForSession, Page, Problem, html, pages};
use crate::documents::manifest::RelPath;
use crate::site::config::Instance;
use crate::site::state::State;
use crate::site::update;

pub(super) async fn review(req: HttpRequest, app: Data) -> Page {
    let s = require(&req, &app)?;
    let root = app.root.clone();
    // Re-hashing the staged files takes a moment on a large release: not on the event loop.
    let plan = web::block(move || {
        let inst = Instance::open(&root)?;
        let mut st = State::open(&inst.state_db())?;
        update::prepare(&inst, &mut st, false).map(|(p, _)| p)
    })
    .await
    .map_err(|_| Problem::BadRequest("the plan could not be computed"))?
    .for_session(&s)?;
    Ok(html(pages::review(&s, &plan)))
}

#[derive(Deserialize)]
pub(super) struct DiffQuery {
    path: String,
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

pub(super) async fn diff(req: HttpRequest, app: Data, query: web::Query<DiffQuery>) -> Page {
    let s = require(&req, &app)?;
    let rel =
        RelPath::parse_release_file(&query.path).map_err(|_| Problem::BadRequest("bad path"))?;
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
    Ok(html(pages::diff(&s, rel.as_str(), rows.as_deref())))
}
