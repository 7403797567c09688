//! The report of an unattended pass, mailed through the operator's SMTP server. A report is
//! queued in state.db first and sent from the queue, so one that cannot go now goes with the
//! next pass; the update itself never waits on mail.

use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{Message, SmtpTransport, Transport};

use super::{Pass, Verdict};
use crate::base::error::Result;
use crate::base::fsutil::human_bytes;
use crate::site::config::{Instance, Mail, Report};
use crate::site::plan::Kind;
use crate::site::state::State;

use crate::site::fleet::identity::site_name;

/// The subject's first word.
fn word(p: &Pass) -> &'static str {
    match p.decision {
        Verdict::Updated => "SUCCESS",
        Verdict::Failed | Verdict::RolledBack => "FAILURE",
        Verdict::Held => "HELD",
        Verdict::Postponed => "POSTPONED",
        Verdict::Nothing => "UP TO DATE",
    }
}

/// Whether `report` asks for a mail about `p`, given the pass before it. A hold or a
/// postponement is news once per release and reason, not every night.
pub fn wanted(report: Report, p: &Pass, previous: Option<&serde_json::Value>) -> bool {
    let failed_hook = p
        .run
        .as_ref()
        .is_some_and(|r| r.hooks.iter().any(|h| !h.ok()));
    match report {
        Report::Always => true,
        Report::OnlyOnError => {
            matches!(p.decision, Verdict::Failed | Verdict::RolledBack) || failed_hook
        }
        Report::OnChange => match p.decision {
            Verdict::Nothing => false,
            Verdict::Updated | Verdict::Failed | Verdict::RolledBack => true,
            Verdict::Held | Verdict::Postponed => previous.is_none_or(|prev| {
                prev["decision"] != serde_json::to_value(p.decision).unwrap_or_default()
                    || prev["to"].as_str() != p.to.as_deref()
                    || prev["reason"].as_str() != Some(p.reason.as_str())
            }),
        },
    }
}

/// Subject and plain-text body: short lines, the verdict first, the next command last.
pub fn compose(inst: &Instance, p: &Pass) -> (String, String) {
    let name = site_name(inst);
    let versions = match (&p.from, &p.to) {
        (Some(f), Some(t)) if f != t => format!("{f} -> {t}"),
        (_, Some(t)) => t.clone(),
        (Some(f), None) => f.clone(),
        (None, None) => "no release".into(),
    };
    let subject = format!(
        "[upkeep] {}{} {name}: {versions}",
        word(p),
        if p.urgent { " (URGENT)" } else { "" }
    );
    let mut b = String::new();
    let mut line = |s: String| {
        b.push_str(&s);
        b.push('\n');
    };
    line(format!("{}: {}", word(p), p.reason));
    line(String::new());
    line(format!("site:    {name}"));
    line(format!("root:    {}", inst.root.display()));
    line(format!("pass:    {}", p.at));
    line(format!(
        "release: {} installed{}",
        p.from.as_deref().unwrap_or("none"),
        p.to.as_deref()
            .map(|t| format!(", {t} offered"))
            .unwrap_or_default()
    ));
    for n in &p.notes {
        line(format!("note:    {n}"));
    }
    if let Some(r) = &p.run {
        let count = |k: Kind| r.plan.actions.iter().filter(|a| a.kind == k).count();
        line(String::new());
        line(format!(
            "Run {} ({} -> {}): {}",
            r.id,
            r.from.as_deref().unwrap_or("none"),
            r.to,
            r.status
        ));
        line(format!(
            "files: {} added, {} replaced, {} removed ({})",
            count(Kind::Add),
            count(Kind::Replace),
            count(Kind::Remove),
            human_bytes(r.plan.bytes)
        ));
        if let Some(ms) = r.closed_ms {
            let span = if ms < 10_000 {
                format!("{ms} ms")
            } else {
                format!("{:.0} s", ms as f64 / 1000.0)
            };
            line(format!(
                "closed: {span} (run from {} to {})",
                r.started_at,
                r.finished_at.as_deref().unwrap_or("-")
            ));
        }
        if !r.plan.schema.statements.is_empty() {
            line(format!(
                "database: {} schema statements",
                r.plan.schema.statements.len()
            ));
        }
        for t in &r.tasks {
            line(format!(
                "task {}: {}{}",
                t.name,
                t.state,
                t.exit_code
                    .map(|c| format!(", exit {c}"))
                    .unwrap_or_default()
            ));
        }
        for t in &r.plan.foreign_tasks {
            line(format!(
                "task {t}: NOT RUN (not from the release; an operator may allow it: upkeep update --allow-task {t})"
            ));
        }
        for l in crate::site::update::after::describe(r) {
            line(l);
        }
        if let Some(e) = &r.error {
            line(format!("error: {e}"));
        }
    }
    if !p.modified.is_empty() {
        line(String::new());
        line(format!("Locally modified files ({}):", p.modified.len()));
        for m in p.modified.iter().take(50) {
            line(format!("  {m}"));
        }
        if p.modified.len() > 50 {
            line(format!("  ... and {} more", p.modified.len() - 50));
        }
    }
    if let Some(next) = &p.next {
        line(String::new());
        line("Next:".into());
        line(format!("  {next}"));
    }
    line(String::new());
    line(format!(
        "-- upkeep auto; [mail] report = \"{}\" in {}",
        match inst.config.mail.report {
            Report::Always => "always",
            Report::OnChange => "on-change",
            Report::OnlyOnError => "only-on-error",
        },
        inst.root.join("upkeep.toml").display()
    ));
    (subject, b)
}

fn transport(m: &Mail) -> std::result::Result<SmtpTransport, String> {
    let mut t = SmtpTransport::from_url(&m.smtp)
        .map_err(|e| format!("mail.smtp = {:?}: {e}", m.smtp))?
        .timeout(Some(m.timeout.0));
    if let Some(pf) = &m.password_file {
        let password = std::fs::read_to_string(pf)
            .map_err(|e| format!("cannot read mail.password_file {}: {e}", pf.display()))?;
        let user = reqwest::Url::parse(&m.smtp)
            .map(|u| u.username().to_string())
            .unwrap_or_default();
        t = t.credentials(Credentials::new(user, password.trim_end().to_string()));
    }
    Ok(t.build())
}

fn message(inst: &Instance, subject: &str, body: &str) -> std::result::Result<Message, String> {
    let m = &inst.config.mail;
    let from: Mailbox = match &m.from {
        Some(f) => f.parse().map_err(|e| format!("mail.from: {e}"))?,
        None => {
            let host = crate::site::fleet::identity::host_name();
            format!("upkeep@{host}")
                .parse()
                .map_err(|e| format!("mail.from (upkeep@{host}): {e}; set mail.from"))?
        }
    };
    let mut b = Message::builder().from(from).subject(subject);
    for to in &m.to {
        b = b.to(to.parse().map_err(|e| format!("mail.to {to:?}: {e}"))?);
    }
    b.header(ContentType::TEXT_PLAIN)
        .body(body.to_string())
        .map_err(|e| e.to_string())
}

/// Queue the report of `p` when `[mail]` asks for it, then send everything queued, oldest
/// first. Returns what happened, in a line, or `None` when mail is off and nothing waits.
pub fn report(
    inst: &Instance,
    p: &Pass,
    previous: Option<&serde_json::Value>,
) -> Result<Option<String>> {
    let m = &inst.config.mail;
    if m.to.is_empty() {
        return Ok(None);
    }
    let state = State::open(&inst.state_db())?;
    if wanted(m.report, p, previous) {
        let (subject, body) = compose(inst, p);
        state.queue_mail(&subject, &body)?;
    }
    let queue = state.queued_mail()?;
    if queue.is_empty() {
        return Ok(None);
    }
    let t = match transport(m) {
        Ok(t) => t,
        Err(e) => return Ok(Some(format!("mail: not sent, {e}"))),
    };
    let mut sent = 0;
    for q in &queue {
        let body = if q.attempts > 0 {
            format!(
                "(This report waited since {}: the mail server could not be reached then.)\n\n{}",
                q.created_at, q.body
            )
        } else {
            q.body.clone()
        };
        let result = message(inst, &q.subject, &body)
            .and_then(|msg| t.send(&msg).map_err(|e| e.to_string()));
        match result {
            Ok(_) => {
                state.mail_sent(q.id)?;
                sent += 1;
            }
            Err(e) => {
                state.mail_failed(q.id, &e)?;
                return Ok(Some(format!(
                    "mail: {} of {} reports not sent ({} via {}: {e}); they wait in state.db and go with the next pass",
                    queue.len() - sent,
                    queue.len(),
                    m.to.join(", "),
                    m.smtp
                )));
            }
        }
    }
    Ok(Some(format!(
        "mail: {sent} report{} sent to {}",
        if sent == 1 { "" } else { "s" },
        m.to.join(", ")
    )))
}
