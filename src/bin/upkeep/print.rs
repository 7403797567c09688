//! What the commands print: plain text for people (progress on a terminal), JSON for scripts.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use upkeep::{err, errln, outln};

use upkeep::base::error::Result;
use upkeep::base::fsutil::human_bytes;
use upkeep::base::progress::Progress;
use upkeep::documents::manifest::RelPath;
use upkeep::site::config::Instance;
use upkeep::site::plan::{Kind, Plan};
use upkeep::site::state::{Run, RunStatus, Step};
use upkeep::site::update;

/// Pretty JSON on standard output.
pub fn print_json<T: serde::Serialize>(v: &T) {
    emit(&format!(
        "{}\n",
        serde_json::to_string_pretty(v).expect("report types serialise")
    ));
}

/// Write to stdout; a reader that went away (`upkeep fingerprint DIR | head`) ends the command
/// quietly, as it does for coreutils, instead of a panic.
pub fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        errln!("error: writing to standard output: {e}");
        std::process::exit(1);
    }
}

pub fn print_list(title: &str, list: &[RelPath]) {
    if list.is_empty() {
        return;
    }
    outln!("{title}: {} files", list.len());
    for p in list.iter().take(50) {
        outln!("  {p}");
    }
    if list.len() > 50 {
        outln!("  ... and {} more (use --json for all)", list.len() - 50);
    }
}

/// A progress bar on a terminal, nothing otherwise.
pub fn show_progress(p: &Arc<Progress>) -> Option<std::thread::JoinHandle<()>> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let p = p.clone();
    Some(std::thread::spawn(move || {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:30} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        while !p.finished.load(Ordering::Relaxed) {
            let s = p.snapshot();
            bar.set_length(s.bytes_total);
            bar.set_position(s.bytes_done);
            bar.set_message(s.phase);
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        bar.finish_and_clear();
    }))
}

/// One line per step: its name when it starts, its time when it ends.
pub fn step_line(json: bool, step: Step, ms: Option<u64>) {
    if json {
        return;
    }
    match ms {
        None => err!("{:<10} ...", step.as_str()),
        Some(ms) => errln!(" ok ({ms} ms)"),
    }
}

/// How a run ended.
pub fn finished_run(json: bool, run: &Run) {
    if json {
        print_json(run);
        return;
    }
    if run.status == RunStatus::Done && run.error.is_none() {
        outln!(
            "updated {} -> {}; the site was closed for {} ms",
            run.from.as_deref().unwrap_or("(fresh)"),
            run.to,
            run.closed_ms.unwrap_or_default()
        );
    } else {
        outln!("run {} is {} at step {}", run.id, run.status, run.step);
    }
    // What the tasks said, as the operator would have seen it running them by hand.
    for t in &run.tasks {
        let output = t.output.trim_end();
        outln!(
            "task {}: {}{}",
            t.name,
            t.state,
            if output.is_empty() {
                ""
            } else {
                ", its output:"
            }
        );
        for line in output.lines().take(40) {
            outln!("  | {}", upkeep::base::text::printable(line));
        }
        if output.lines().count() > 40 {
            outln!("  | ... (the whole output: upkeep status --json)");
        }
    }
    for l in upkeep::site::update::after::describe(run) {
        outln!("{l}");
    }
}

/// The plan, locally modified files first, with its digest.
pub fn print_plan(inst: &Instance, plan: &Plan) {
    outln!(
        "plan {}: {} -> {} ({} to install)",
        plan.digest(),
        plan.from.as_deref().unwrap_or("(fresh)"),
        plan.to,
        human_bytes(plan.bytes)
    );
    let section = |title: &str, items: Vec<String>| {
        if !items.is_empty() {
            outln!("{title} ({}):", items.len());
            for i in items.iter().take(100) {
                outln!("  {i}");
            }
            if items.len() > 100 {
                outln!("  ... and {} more", items.len() - 100);
            }
        }
    };
    let modified: Vec<String> = plan
        .actions
        .iter()
        .filter(|a| a.modified)
        .map(|a| match a.kind {
            Kind::Keep => format!("{} (kept as it is: --keep-modified)", a.path),
            Kind::Displace => format!(
                "{} (in the way of the release's files: moved whole into .upkeep/aside/)",
                a.path
            ),
            Kind::Remove if a.backup_aside => format!(
                "{} (your version kept in .upkeep/aside/; removed by the release)",
                a.path
            ),
            Kind::Remove => format!(
                "{} (your version kept as {}.bak; removed by the release)",
                a.path, a.path
            ),
            _ if a.backup_aside => format!("{} (your version kept in .upkeep/aside/)", a.path),
            _ => format!("{} (your version kept as {}.bak)", a.path, a.path),
        })
        .collect();
    section("locally modified", modified);
    section(
        "kept as they are (upkeep.toml keep): the release's version is not installed",
        plan.kept.iter().map(|p| p.to_string()).collect(),
    );
    section(
        "changed here, and not by the release: left as they are",
        plan.yours.iter().map(|p| p.to_string()).collect(),
    );
    for (title, kind) in [
        ("add", Kind::Add),
        ("replace", Kind::Replace),
        ("remove", Kind::Remove),
    ] {
        section(title, plan.of(kind).iter().map(|p| p.to_string()).collect());
    }
    section(
        "existing backups moved into .upkeep/aside/ (put back by rollback)",
        plan.moved_aside().iter().map(|p| p.to_string()).collect(),
    );
    section(
        "run_once tasks",
        plan.tasks_to_run()
            .map(|t| match plan.allowed_tasks.iter().any(|a| &a.path == t) {
                true => format!("{t} (not from the release: allowed by --allow-task)"),
                false => t.to_string(),
            })
            .collect(),
    );
    section(
        "in run_once/ but not from the release: NOT run (allow one by name with --allow-task PATH)",
        plan.foreign_tasks.iter().map(|t| t.to_string()).collect(),
    );
    section(
        "in run_once/ but not tasks (only .sh and .sql run; these never will)",
        plan.not_tasks.iter().map(|t| t.to_string()).collect(),
    );
    section(
        "run_once tasks NOT run again: the site database holds their done-mark (an earlier run did their work and a rollback kept it)",
        plan.done_in_database
            .iter()
            .map(|t| t.to_string())
            .collect(),
    );
    section("about the tasks", plan.task_notes.clone());
    section(
        "schema changes",
        plan.schema.statements.iter().map(|s| s.line()).collect(),
    );
    section(
        "database objects not in the schema (kept)",
        plan.schema.extra.clone(),
    );
    if let Some(line) = database_copy(inst) {
        outln!("{line}");
    }
}

/// Which database the run may change, and how it is copied first.
fn database_copy(inst: &Instance) -> Option<String> {
    if inst.sqlite_path().is_some_and(|p| !p.exists()) {
        return None;
    }
    let db = inst.database().ok()?;
    let keep = inst.config.database.settings().keep_backups.max(1);
    Some(format!(
        "database: {}; copied before its first change, {}, into .upkeep/backups/ (the newest {keep} kept; `upkeep backup` lists them)",
        db.describe(),
        db.copied_how()
    ))
}

/// `upkeep status` as text.
pub fn print_status(st: &update::Status) {
    outln!("installed: {}", st.installed.as_deref().unwrap_or("none"));
    match &st.gate {
        Some(c) => outln!("gate:      CLOSED since {} ({})", c.since, c.message),
        None => outln!("gate:      open"),
    }
    if let Some((when, latest)) = &st.last_check {
        outln!("last check: {when} (latest {latest})");
    }
    outln!(
        "site:      id {}, channel {}{}",
        st.site.id,
        st.site.channel,
        if st.site.groups.is_empty() {
            String::new()
        } else {
            format!(", groups {}", st.site.groups.join(", "))
        }
    );
    if let Some(o) = &st.offer {
        outln!("offer:     {o}");
    }
    outln!("auto:      {}", st.policy);
    for a in st.passes.iter().take(5) {
        outln!(
            "  pass {} {}: {}",
            a["at"].as_str().unwrap_or_default(),
            a["decision"].as_str().unwrap_or_default().to_uppercase(),
            a["reason"].as_str().unwrap_or_default()
        );
    }
    if st.mail_waiting > 0 {
        outln!(
            "mail:      {} report(s) waiting for the SMTP server; they go with the next pass",
            st.mail_waiting
        );
    }
    if let Some(s) = &st.staged {
        outln!(
            "staged:    {} from {} ({} files, {})",
            s.version,
            s.source,
            s.files,
            human_bytes(s.bytes)
        );
    }
    if let Some(r) = &st.current {
        outln!(
            "current run: {} ({} -> {}) {} at step {}",
            r.id,
            r.from.as_deref().unwrap_or("fresh"),
            r.to,
            r.status,
            r.step
        );
        if let Some(e) = &r.error {
            outln!("  error: {e}");
        }
        outln!("  next: `upkeep resume` to continue, or `upkeep rollback` to go back");
    }
    if let Some(r) = st
        .history
        .iter()
        .find(|r| st.current.as_ref().is_none_or(|c| c.id != r.id))
    {
        outln!(
            "last run:  {} ({} -> {}) {}{}",
            r.id,
            r.from.as_deref().unwrap_or("fresh"),
            r.to,
            r.status,
            r.closed_ms
                .map(|ms| format!(", closed {ms} ms"))
                .unwrap_or_default()
        );
    }
    for e in &st.extensions {
        outln!(
            "extension: {} {} ({})",
            e.name,
            e.version,
            if e.folder().is_empty() {
                "/"
            } else {
                e.folder()
            }
        );
    }
    for t in &st.pending_tasks {
        outln!("pending task: {t}");
    }
}

/// The archives in inbox/.
pub fn list_inbox(inst: &Instance, json: bool) -> Result<u8> {
    let items = upkeep::site::stage::inbox::list(inst)?;
    if json {
        print_json(&items);
        return Ok(0);
    }
    if items.is_empty() {
        outln!(
            "{} is empty: drop a release zip there (upload it as NAME.zip.part and rename it when complete)",
            inst.inbox().display()
        );
    }
    for i in &items {
        outln!(
            "{:<40} {:>10}  {}  {}",
            i.name,
            human_bytes(i.size),
            i.modified,
            i.not_ready.as_deref().unwrap_or("ready")
        );
    }
    if items.iter().any(|i| i.not_ready.is_none()) {
        outln!(
            "stage one with: upkeep stage --root {} --inbox NAME",
            inst.root.display()
        );
    }
    Ok(0)
}

/// After a run: say so when the site stays closed because the operator had closed it.
pub fn still_closed(inst: &Instance) {
    if let Some(c) = upkeep::site::update::gate::closed(&inst.root)
        && c.run.is_none()
    {
        outln!(
            "the site stays closed, as you closed it before the run ({}); `upkeep open --root {}` opens it",
            c.message,
            inst.root.display()
        );
    }
}
