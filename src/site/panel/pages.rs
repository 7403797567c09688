//! The panel's pages: each a function of what it shows; repeated fragments are functions too.
//! Escaping is maud's default.

use maud::{DOCTYPE, Markup, html};

use crate::base::accounts::Session;
use crate::base::fsutil::human_bytes;
use crate::base::progress::Snapshot;
use crate::documents::manifest::RelPath;
use crate::site::plan::{Diff, Kind, Plan};
use crate::site::stage::inbox;
use crate::site::state::{JobKind, Run, RunStatus, Step, TaskState};
use crate::site::update::{DatabaseStep, Status};

/// The wizard's steps, for the breadcrumb.
const WIZARD: &[(&str, &str)] = &[
    ("check", "1. Check"),
    ("stage", "2. Stage"),
    ("review", "3. Review"),
    ("run", "4. Apply"),
    ("done", "5. Done"),
];

/// Every page's frame. `refresh` adds a no-JavaScript refresh for progress pages.
pub fn layout(title: &str, session: Option<&Session>, refresh: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · upkeep" }
                link rel="stylesheet" href="/control/static/app.css";
                @if refresh { noscript { meta http-equiv="refresh" content="2"; } }
                script src="/control/static/app.js" defer {}
            }
            body {
                header { div.bar {
                    a.brand href="/control" { "upkeep" }
                    @if let Some(s) = session {
                        a href="/control" { "Dashboard" }
                        a href="/control/check" { "Update" }
                        a href="/control/run" { "Runs" }
                        form.inline method="post" action="/control/logout" {
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

/// The wizard breadcrumb.
pub fn steps(here: &str) -> Markup {
    html! { ol.steps aria-label="update steps" { @for (k, label) in WIZARD {
        li.here[*k == here] aria-current=[(*k == here).then_some("step")] { (label) }
    } } }
}

/// A hidden CSRF field.
pub fn csrf(s: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(s.csrf); }
}

/// A button that posts to `action`.
pub fn post_button(s: &Session, action: &str, label: &str, class: &str) -> Markup {
    html! { form.inline method="post" action=(action) { (csrf(s)) button class=(class) type="submit" { (label) } } }
}

/// The login page.
pub fn login(error: Option<&str>) -> Markup {
    layout(
        "Log in",
        None,
        false,
        html! {
            div.card.narrow {
                h1 { "Log in" }
                @if let Some(e) = error { p.bad role="alert" { (e) } }
                form method="post" action="/control/login" {
                    label for="name" { "Account" }
                    input id="name" type="text" name="name" autocomplete="username" required autofocus;
                    label for="password" { "Password" }
                    input id="password" type="password" name="password" autocomplete="current-password" required;
                    p { button type="submit" { "Log in" } }
                }
            }
        },
    )
}

/// An error in plain words with the next action.
pub fn problem(session: Option<&Session>, title: &str, msg: &str, hint: Option<&str>) -> Markup {
    layout(
        title,
        session,
        false,
        html! {
            div.card.error {
                h1 { (title) }
                pre { (msg) }
                @if let Some(h) = hint { p { strong { "What to do: " } (h) } }
                p { a href="/control" { "Back to the dashboard" } }
            }
        },
    )
}

/// The dashboard.
pub fn dashboard(
    s: &Session,
    st: &Status,
    reference: &str,
    latest: Option<(&str, &str, &str)>,
    copied: Option<&str>,
) -> Markup {
    layout(
        "Dashboard",
        Some(s),
        false,
        html! {
            h1 { "Dashboard" }
            div.grid {
                div.card {
                    h2 { "Installed" }
                    p { strong { (st.installed.as_deref().unwrap_or("nothing yet")) } }
                    p.muted { "Reference: " code { (reference) } }
                }
                div.card {
                    h2 { "Site" }
                    @match &st.gate {
                        Some(c) => {
                            p { span.badge.bad { "closed" } " since " (c.since) }
                            p.muted { (c.message) }
                            (post_button(s, "/control/gate/open", "Open the site", "secondary"))
                        }
                        None => {
                            p { span.badge.ok { "open" } }
                            form method="post" action="/control/gate/close" {
                                (csrf(s))
                                label for="message" { "Maintenance message" }
                                input id="message" type="text" name="message" value="This site is under maintenance. Please come back in a few minutes.";
                                p { button.secondary type="submit" { "Close the site" } }
                            }
                        }
                    }
                }
                div.card {
                    h2 { "Latest release" }
                    @match latest {
                        Some((v, date, notes)) => {
                            p { strong { (v) } " " span.muted { (date) } }
                            @if !notes.is_empty() { p { (notes) } }
                        }
                        None => { p.muted { "Not checked yet." } }
                    }
                    @if let Some((when, _)) = &st.last_check { p.muted { "Last check: " (when) } }
                    (post_button(s, "/control/check", "Check now", ""))
                }
            }
            @if let Some(v) = copied {
                div.card {
                    h2 { "Release " (v) " was copied over the site" }
                    p { "The last check found every file of release " (v) " in place, but it is not recorded as installed: someone copied it by hand. Finishing closes the site, migrates the database (with a copy for rollback), runs its pending tasks and reopens." }
                    (post_button(s, "/control/finish", "Finish the update", ""))
                }
            }
            @if let Some(r) = &st.current {
                div.card.error {
                    h2 { "Unfinished run" }
                    p { "Run " (r.id) " (" (r.from.as_deref().unwrap_or("fresh")) " → " (r.to) ") stopped at step " strong { (r.step) } "." }
                    a.button href="/control/run" { "See the run" }
                }
            }
            @if let Some(st) = &st.staged {
                div.card { p { "Release " strong { (st.version) } " is staged (" (st.files) " files, " (human_bytes(st.bytes)) ", from " (st.source) ")." }
                    a.button href="/control/review" { "Review the update" } }
            }
            h2 { "History" }
            @if st.history.is_empty() { p.muted { "No update has run yet." } } @else {
                table { thead { tr { th { "Run" } th { "Started" } th { "From" } th { "To" } th { "Result" } th { "Closed" } } }
                tbody { @for r in &st.history { tr {
                    td { (r.id) } td { (r.started_at) } td { (r.from.as_deref().unwrap_or("fresh")) } td { (r.to) }
                    td { (run_badge(r.status)) }
                    td { @if let Some(ms) = r.closed_ms { (ms) " ms" } }
                } } } }
            }
            h2 { "Unattended updates" }
            p { "Policy: " (st.policy) }
            @if st.mail_waiting > 0 {
                p { span.badge.warn { "mail waiting" } " " (st.mail_waiting) " report(s) could not reach the SMTP server; they go with the next pass." }
            }
            @if st.passes.is_empty() { p.muted { "No unattended pass has run yet (" code { "upkeep auto" } ", scheduled with " code { "upkeep schedule" } ")." } } @else {
                table { thead { tr { th { "Pass" } th { "Decision" } th { "Release" } th { "Why" } } }
                tbody { @for p in &st.passes { tr {
                    td { (p["at"].as_str().unwrap_or_default()) }
                    td { (pass_badge(p["decision"].as_str().unwrap_or_default())) }
                    td { (p["from"].as_str().unwrap_or("none")) @if let Some(t) = p["to"].as_str().filter(|t| Some(*t) != p["from"].as_str()) { " → " (t) } }
                    td { (p["reason"].as_str().unwrap_or_default()) }
                } } } }
            }
            h2 { "Extensions" }
            @if st.extensions.is_empty() { p.muted { "None found." } } @else {
                ul { @for e in &st.extensions { li { (e.name) " " (e.version) " " span.muted { "/" (e.folder()) } } } }
            }
            h2 { "Pending run_once tasks" }
            @if st.pending_tasks.is_empty() { p.muted { "None." } } @else { ul { @for t in &st.pending_tasks { li { code { (t) } } } } }
        },
    )
}

/// A run's status as a badge.
fn run_badge(status: RunStatus) -> Markup {
    let class = match status {
        RunStatus::Done => "badge ok",
        RunStatus::Failed | RunStatus::RollingBack => "badge bad",
        RunStatus::RolledBack => "badge warn",
        RunStatus::Running => "badge",
    };
    badge(class, status.as_str())
}

/// An unattended pass's decision as a badge.
fn pass_badge(decision: &str) -> Markup {
    let class = match decision {
        "updated" | "nothing" => "badge ok",
        "failed" | "rolled_back" => "badge bad",
        "held" | "postponed" => "badge warn",
        _ => "badge",
    };
    badge(class, decision)
}

/// A task's state as a badge.
fn task_badge(state: TaskState) -> Markup {
    let class = match state {
        TaskState::Done | TaskState::Succeeded => "badge ok",
        TaskState::Failed => "badge bad",
        TaskState::Skipped => "badge warn",
        TaskState::Started => "badge",
    };
    badge(class, state.as_str())
}

fn badge(class: &str, word: &str) -> Markup {
    html! { span class=(class) { (word.replace('_', " ")) } }
}

fn path_list(title: &str, items: &[String]) -> Markup {
    html! {
        @if !items.is_empty() {
            h2 { (title) " (" (items.len()) ")" }
            ul { @for i in items.iter().take(500) { li { code { (i) } } } }
            @if items.len() > 500 { p.muted { "… and " (items.len() - 500) " more." } }
        }
    }
}

/// Step 1: the comparison with the reference.
pub fn check(s: &Session, diff: Option<&Diff>) -> Markup {
    layout(
        "Check",
        Some(s),
        false,
        html! {
            (steps("check"))
            h1 { "Check for an update" }
            @match diff {
                None => { p { "No check yet." } }
                Some(d) => {
                    div.card {
                        p { "Installed: " strong { (d.installed.as_deref().unwrap_or("none")) } " · latest: " strong { (d.latest) } }
                        p { (d.new.len()) " new, " (d.changed.len()) " changed, " (d.removed.len()) " removed, " (d.unchanged) " unchanged, "
                            strong { (d.modified.len()) " locally modified" } "." }
                        @if d.up_to_date() { p.ok { "Up to date." } } @else { a.button href="/control/stage" { "Next: stage the files" } }
                    }
                    (path_list("Locally modified", &d.modified.iter().map(|p| p.to_string()).collect::<Vec<_>>()))
                    (path_list("New", &d.new.iter().map(|p| p.to_string()).collect::<Vec<_>>()))
                    (path_list("Changed", &d.changed.iter().map(|p| p.to_string()).collect::<Vec<_>>()))
                    (path_list("Removed", &d.removed.iter().map(|p| p.to_string()).collect::<Vec<_>>()))
                }
            }
            p { (post_button(s, "/control/check", "Check now", "secondary")) }
        },
    )
}

/// Step 2: choose where the files come from.
pub fn stage(s: &Session, items: &[inbox::Item], max_upload: u64) -> Markup {
    layout(
        "Stage",
        Some(s),
        false,
        html! {
            (steps("stage"))
            h1 { "Stage the new files" }
            p.muted { "Nothing on the live site changes while staging; every file is checked against the signed manifest." }
            div.grid {
                div.card {
                    h2 { "From the reference server" }
                    p { "Downloads only the new and changed files, in one stream." }
                    form method="post" action="/control/stage" { (csrf(s)) input type="hidden" name="source" value="network"; button type="submit" { "Download" } }
                }
                div.card {
                    h2 { "Upload a release zip" }
                    // The token is the first field, before the file: the server reads it first and
                    // refuses the upload before storing a byte (never in the URL, where logs keep it).
                    form method="post" action="/control/upload" enctype="multipart/form-data" {
                        (csrf(s))
                        label for="zip" { "Release zip (up to " (human_bytes(max_upload)) ")" }
                        input id="zip" type="file" name="zip" accept=".zip" required;
                        p { button type="submit" { "Upload and stage" } }
                    }
                }
                div.card {
                    h2 { "From the inbox" }
                    @if items.is_empty() { p.muted { "inbox/ is empty. Copy a release zip there by FTP or scp." } }
                    @else { table { tbody { @for i in items { tr {
                        td { code { (i.name) } br; span.muted { (human_bytes(i.size)) ", " (i.modified) } }
                        td { @match &i.not_ready {
                            Some(why) => span.warn { (why) },
                            None => form.inline method="post" action="/control/stage" { (csrf(s))
                                input type="hidden" name="source" value="inbox"; input type="hidden" name="name" value=(i.name);
                                button type="submit" { "Stage" } },
                        } }
                    } } } } }
                }
                div.card {
                    h2 { "Files copied by hand" }
                    p { "Copy the release's files and its " code { "upkeep-manifest.json" } " and " code { "upkeep-manifest.sig" } " into " code { "staging/" } ", then verify them." }
                    form method="post" action="/control/stage" { (csrf(s)) input type="hidden" name="source" value="manual"; button type="submit" { "Verify staging/" } }
                }
            }
        },
    )
}

fn progress_fields(p: &Snapshot) -> Markup {
    html! {
        progress max=(p.bytes_total.max(1)) value=(p.bytes_done) {}
        p { span data-field="phase" { (p.phase) } }
        p { span data-field="files" { (p.files_done) " of " (p.files_total) " files" } " · "
            span data-field="bytes" { (human_bytes(p.bytes_done)) " of " (human_bytes(p.bytes_total)) } " · "
            span data-field="speed" { (human_bytes(p.bytes_per_sec)) "/s" } " · "
            span data-field="eta" { @if let Some(e) = p.eta_secs { (e) " s left" } } }
    }
}

/// A background job: live progress while it runs, then its result and the next step.
pub fn job(
    s: &Session,
    id: i64,
    kind: JobKind,
    snap: Option<&Snapshot>,
    outcome: &super::jobs::Outcome,
    next: Option<(&str, &str)>,
) -> Markup {
    use super::jobs::Outcome;
    let running = matches!(outcome, Outcome::Running);
    let here = if kind == JobKind::Check {
        "check"
    } else {
        "stage"
    };
    layout(
        &format!("{kind} job"),
        Some(s),
        running,
        html! {
            (steps(here))
            h1 { (kind) " (job " (id) ")" }
            @match outcome {
                Outcome::Running => {
                    div.card data-poll={ "/control/api/job/" (id) } data-key="working" aria-live="polite" {
                        @if let Some(p) = snap { (progress_fields(p)) }
                        p.muted { "You can close this page: the work goes on, and logging in again brings you back here." }
                        // Staging checks the cancel between files; a check is bounded by its deadlines.
                        @if kind == JobKind::Stage {
                            (post_button(s, &format!("/control/job/{id}/cancel"), "Cancel", "secondary"))
                        }
                    }
                }
                Outcome::Done(msg) => {
                    div.card { p.ok { (msg) }
                        @if let Some((href, label)) = next { a.button href=(href) { (label) } } }
                }
                Outcome::Failed(msg, hint) => {
                    div.card.error { p.bad { "It did not work:" } pre { (msg) }
                        @if let Some(h) = hint { p { strong { "What to do: " } (h) } }
                        a.button.secondary href="/control/stage" { "Back to staging" } }
                }
            }
        },
    )
}

/// One row of a side-by-side diff.
pub struct DiffRow {
    /// Left (live) text, if any.
    pub left: Option<String>,
    /// Right (staged) text, if any.
    pub right: Option<String>,
    /// A changed pair.
    pub changed: bool,
}

/// Step 3: the plan.
pub fn review(s: &Session, plan: &Plan) -> Markup {
    let kinds = |k: Kind| {
        plan.of(k)
            .into_iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
    };
    layout(
        "Review",
        Some(s),
        false,
        html! {
            (steps("review"))
            h1 { "Review: " (plan.from.as_deref().unwrap_or("fresh")) " → " (plan.to) }
            div.card {
                p { (plan.of(Kind::Add).len()) " to add, " (plan.of(Kind::Replace).len()) " to replace, " (plan.of(Kind::Remove).len()) " to remove ("
                    (human_bytes(plan.bytes)) "), " (plan.tasks_to_run().count()) " run_once tasks, " (plan.schema.statements.len()) " schema changes." }
                p.muted { "Nothing live has changed yet. Applying closes the site only for the swap and the steps after it." }
                p.muted { "Plan " code { (plan.digest()) } ": applying runs exactly this plan, or nothing if staging or the site changed meanwhile." }
                form method="post" action="/control/apply" {
                    (csrf(s))
                    input type="hidden" name="plan" value=(plan.with_keep_modified(false).digest());
                    input type="hidden" name="plan_keep" value=(plan.with_keep_modified(true).digest());
                    input type="hidden" name="allow" value=(allow_field(plan, None, None));
                    @if !plan.modified.is_empty() {
                        label { input type="checkbox" name="keep_modified" value="1"; " Keep my locally modified files as they are" }
                    }
                    p { button type="submit" { "Apply the update" } }
                }
            }
            @if !plan.modified.is_empty() {
                h2.warn { "Locally modified (" (plan.modified.len()) ")" }
                p { "These files differ from both releases. By default your version is kept as " code { "NAME.bak" } " and the release's version installed." }
                ul { @for m in &plan.modified { li { code { (m) } " " a href=(diff_href(m)) { "compare" } } } }
            }
            (path_list("Add", &kinds(Kind::Add)))
            @if !plan.of(Kind::Replace).is_empty() {
                h2 { "Replace (" (plan.of(Kind::Replace).len()) ")" }
                ul { @for p in plan.of(Kind::Replace).iter().take(500) { li { code { (p) } " " a href=(diff_href(p)) { "compare" } } } }
            }
            (path_list("Remove", &kinds(Kind::Remove)))
            (path_list("In the way of new files: moved whole into .upkeep/aside/", &kinds(Kind::Displace)))
            (path_list("In run_once/ but not tasks (only .sh and .sql run)", &plan.not_tasks.iter().map(|p| p.to_string()).collect::<Vec<_>>()))
            (path_list("Existing backups moved into .upkeep/aside/ (a rollback puts them back)", &plan.moved_aside().iter().map(|p| p.to_string()).collect::<Vec<_>>()))
            @if !plan.done_in_database.is_empty() {
                (path_list("run_once tasks not run again: the site database holds their done-mark (a rollback kept their work)", &plan.done_in_database.iter().map(|p| p.to_string()).collect::<Vec<_>>()))
            }
            @if plan.tasks_to_run().next().is_some() {
                h2 { "run_once tasks (" (plan.tasks_to_run().count()) ")" }
                ul { @for t in plan.tasks_to_run() { li { code { (t) }
                    @if plan.allowed_tasks.iter().any(|a| &a.path == t) {
                        " " span.warn { "not from the release: allowed by you" } " "
                        a href=(review_href(&allow_field(plan, None, Some(t)))) { "do not run it" }
                    }
                } } }
            }
            @if !plan.foreign_tasks.is_empty() {
                h2.warn { "In run_once/ but not from the release: not run (" (plan.foreign_tasks.len()) ")" }
                p { "The signed release does not ship these files: someone or something else wrote them. They run only if you allow one by name (never in an unattended pass)." }
                ul { @for t in &plan.foreign_tasks { li { code { (t) } " "
                    a href=(review_href(&allow_field(plan, Some(t), None))) { "allow it to run" } } } }
            }
            @if !plan.schema.statements.is_empty() { h2 { "Schema changes" } pre { @for st in &plan.schema.statements { (st.line()) "\n" } } }
            @if !plan.task_notes.is_empty() {
                h2 { "About the tasks" }
                ul { @for n in &plan.task_notes { li { (n) } } }
            }
            @if !plan.schema.extra.is_empty() { (path_list("In the database but not in the schema (kept)", &plan.schema.extra)) }
        },
    )
}

/// The allowed tasks of `plan` as one form field (a path a line), with one more or one less.
fn allow_field(plan: &Plan, add: Option<&RelPath>, remove: Option<&RelPath>) -> String {
    plan.allowed_tasks
        .iter()
        .map(|a| &a.path)
        .chain(add)
        .filter(|p| Some(*p) != remove)
        .map(RelPath::as_str)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The review page with these tasks allowed.
fn review_href(allow: &str) -> String {
    if allow.is_empty() {
        return "/control/review".into();
    }
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("allow", allow)
        .finish();
    format!("/control/review?{q}")
}

/// The link to compare one file.
fn diff_href(p: &RelPath) -> String {
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("path", p.as_str())
        .finish();
    format!("/control/diff?{q}")
}

/// Side-by-side comparison of a live file with its staged version.
pub fn diff(s: &Session, path: &str, rows: Option<&[DiffRow]>) -> Markup {
    layout(
        "Compare",
        Some(s),
        false,
        html! {
            h1 { "Compare " code { (path) } }
            p { a href="/control/review" { "Back to the review" } }
            @match rows {
                None => p.muted { "Not shown: one side is missing, binary, or larger than 512 KB." },
                Some(rows) => table.diff { thead { tr { th { "Live (now)" } th { "Staged (new)" } } } tbody {
                    @for r in rows { tr {
                        td class=[r.changed.then_some("del")] { (r.left.as_deref().unwrap_or("")) }
                        td class=[r.changed.then_some("ins")] { (r.right.as_deref().unwrap_or("")) }
                    } }
                } },
            }
        },
    )
}

/// Steps 4 and 5: the run, live, then its summary; Resume and Rollback when it stopped.
pub fn run(
    s: &Session,
    (run, database): (Option<&Run>, Option<&DatabaseStep>),
    interrupted: bool,
    preparing: bool,
    refused: Option<&(String, Option<String>)>,
) -> Markup {
    if let Some((msg, hint)) = refused {
        return layout(
            "Run",
            Some(s),
            false,
            html! {
                (steps("review"))
                h1 { "The update did not start" }
                div.card.error {
                    p.bad { "Nothing was changed:" } pre { (msg) }
                    @if let Some(h) = hint { p { strong { "What to do: " } (h) } }
                    a.button href="/control/review" { "Review the plan again" }
                }
            },
        );
    }
    if preparing {
        return layout(
            "Run",
            Some(s),
            true,
            html! {
                (steps("run"))
                h1 { "Preparing the update" }
                div.card data-poll="/control/api/run" data-key="preparing" aria-live="polite" {
                    p { "Checking the staged files once more before the site closes…" }
                    p.muted { "You can close this page: the work goes on, and logging in again brings you back here." }
                }
            },
        );
    }
    let Some(r) = run else {
        return layout(
            "Run",
            Some(s),
            false,
            html! { h1 { "Runs" } p.muted { "No update has run yet." } a.button href="/control/check" { "Start with a check" } },
        );
    };
    let active = r.status == RunStatus::Running && !interrupted;
    let here = if r.status == RunStatus::Done {
        "done"
    } else {
        "run"
    };
    let key = format!("{}:{}:{}", r.status, r.step, interrupted);
    layout(
        &format!("Run {}", r.id),
        Some(s),
        active,
        html! {
            (steps(here))
            h1 { "Run " (r.id) ": " (r.from.as_deref().unwrap_or("fresh")) " → " (r.to) " " (run_badge(r.status)) }
            div.card data-poll=[active.then_some("/control/api/run")] data-key=(key) aria-live="polite" {
                table { thead { tr { th { "Step" } th { "Result" } th { "Time" } } } tbody {
                    @for step in Step::ALL.iter().filter(|s| **s != Step::Done) {
                        @let t = r.steps.iter().find(|x| x.step == *step);
                        tr {
                            td { (step) }
                            td { @match t.and_then(|t| t.result.as_deref()) {
                                Some("ok") => span.ok { "done" },
                                Some(_) => span.bad { "error" },
                                None if r.step == *step && active => span data-field="step" { "running…" },
                                None if r.step == *step => span.warn { "stopped here" },
                                None => span.muted { "—" },
                            } }
                            td { @if let Some(ms) = t.and_then(|t| t.duration_ms) { (ms) " ms" } }
                        }
                    }
                } }
            }
            @if r.status == RunStatus::Done {
                div.card { p.ok { "The update is done. The site was closed for " strong { (r.closed_ms.unwrap_or(0)) " ms" } "." }
                    a.button href="/" { "Open the site" } }
            }
            @if interrupted || (r.status.unfinished() && r.status != RunStatus::Running) {
                div.card.error {
                    @if interrupted { p { "This run was interrupted (the server stopped or the process died). Nothing is lost: resume it, or roll back." } }
                    @if let Some(e) = &r.error { pre { (e) } }
                    @if r.error.as_deref().is_some_and(|e| e.contains("never confirmed")) {
                        form method="post" action="/control/resume" { (csrf(s))
                            label { input type="radio" name="decision" value="rerun" required; " Run the interrupted task again" }
                            label { input type="radio" name="decision" value="skip"; " It finished: mark it done" }
                            p { button type="submit" { "Resume" } } }
                    } @else {
                        (post_button(s, "/control/resume", "Resume", ""))
                    }
                    " "
                    (post_button(s, "/control/rollback", "Roll back to the previous release", "danger"))
                    @if let Some(d) = database { p.muted { "Rolling back: " (d.describe()) } }
                    @if let Some(DatabaseStep::Keep { copy, .. }) = database {
                        @if !copy.is_empty() {
                            form.inline method="post" action="/control/rollback" { (csrf(s))
                                input type="hidden" name="restore_database" value="1";
                                button.danger type="submit" { "Roll back and put the database copy back (discards those writes; they are saved first)" } }
                        }
                    }
                }
            }
            @if !r.tasks.is_empty() {
                h2 { "run_once tasks" }
                @for t in &r.tasks { div.card { p { code { (t.name) } " " (task_badge(t.state)) }
                    @if !t.output.is_empty() { pre { (t.output) } } } }
            }
        },
    )
}
