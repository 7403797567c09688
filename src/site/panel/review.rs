//! Step 3: the plan, with its digest for the apply form, and the side-by-side diff of a file.

use actix_web::{HttpRequest, web};
use serde::Deserialize;

use super::auth::require;
use super::{Data, ForSession, Page, Problem, html, pages};
use crate::documents::manifest::RelPath;
use crate::site::config::Instance;
use crate::site::state::State;
use crate::site::update;

#[derive(Deserialize)]
pub(super) struct ReviewQuery {
    /// Tasks not from the release that the operator allows, one path a line.
    #[serde(default)]
    allow: String,
}

/// The allowed tasks of a form or a query: one path a line (a path holds no control
/// character, so a line is one path).
pub(super) fn allowed(field: &str) -> Result<Vec<RelPath>, Problem> {
    field
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| RelPath::parse(l).map_err(|_| Problem::BadRequest("bad task path")))
        .collect()
}

pub(super) async fn review(req: HttpRequest, app: Data, query: web::Query<ReviewQuery>) -> Page {
    let s = require(&req, &app)?;
    let root = app.root.clone();
    let allow = allowed(&query.allow)?;
    // Re-hashing the staged files takes a moment on a large release: not on the event loop.
    let plan = web::block(move || {
        let inst = Instance::open(&root)?;
        let mut st = State::open(&inst.state_db())?;
        update::prepare(&inst, &mut st, false, &allow).map(|(p, _)| p)
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

/// Text of a file for the diff view: UTF-8, no NUL, at most 512 KB, read without following a
/// link (a live `index.html -> /etc/shadow` shows nothing).
fn text_of(dir: &std::path::Path, rel: &RelPath) -> Option<String> {
    let f = rel.open_under(dir).ok()?;
    if f.metadata().ok()?.len() > 512 * 1024 {
        return None;
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(f, 512 * 1024), &mut bytes).ok()?;
    let s = String::from_utf8(bytes).ok()?;
    (!s.contains('\0')).then_some(s)
}

pub(super) async fn diff(req: HttpRequest, app: Data, query: web::Query<DiffQuery>) -> Page {
    let s = require(&req, &app)?;
    let rel =
        RelPath::parse_release_file(&query.path).map_err(|_| Problem::BadRequest("bad path"))?;
    let rows = match (
        text_of(&app.inst.root, &rel),
        text_of(&app.inst.staging(), &rel),
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
