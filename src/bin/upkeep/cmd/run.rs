//! Running and steering an instance: unattended passes, finish, status, resume, rollback, the
//! gate, the site server, accounts.

use std::io::IsTerminal;
use std::path::Path;
use upkeep::{err, errln, out, outln};

use upkeep::base::accounts;
use upkeep::base::error::{Error, IoContext, Result};
use upkeep::base::progress::Progress;
use upkeep::base::text::paragraph;
use upkeep::site::config::Instance;
use upkeep::site::plan::Plan;
use upkeep::site::state::{State, Step};
use upkeep::site::update::{self, tasks::Decision};

use crate::print::{finished_run, print_json, print_plan, print_status, step_line, still_closed};

/// `upkeep auto`: one unattended pass; the exit code says what it decided.
pub fn auto(root: &Path, dry_run: bool, retry: bool, json: bool) -> Result<u8> {
    let inst = super::site_instance(root)?;
    let p = upkeep::site::auto::pass(&inst, dry_run, retry)?;
    if json {
        print_json(&p);
        return Ok(p.exit_code());
    }
    outln!("{}: {}", p.decision.word(), p.reason);
    for b in &p.busy {
        outln!("  busy signal: {}", b.what);
    }
    for m in p.modified.iter().take(50) {
        outln!("  modified: {m}");
    }
    for n in &p.notes {
        outln!("  note: {n}");
    }
    if let Some(r) = &p.run {
        finished_run(false, r);
    }
    if let Some(n) = &p.next {
        outln!("next: {n}");
    }
    if let Some(m) = &p.mail {
        outln!("{m}");
    }
    if let Some(n) = &p.notify {
        outln!("{n}");
    }
    if let Some(r) = &p.report {
        outln!("{r}");
    }
    Ok(p.exit_code())
}

/// `upkeep schedule`: print (or install) the timer that runs `upkeep auto` daily.
pub fn schedule(
    root: &Path,
    at: Option<&str>,
    random_delay: std::time::Duration,
    install: bool,
    unit_dir: &Path,
    json: bool,
) -> Result<u8> {
    let inst = Instance::open(root)?;
    let exe = std::env::current_exe().ctx("find", Path::new("the upkeep binary"))?;
    let s = upkeep::site::auto::schedule::schedule(&inst, &exe, at, random_delay)?;
    if json {
        print_json(&s);
        return Ok(0);
    }
    if !inst.config.auto.enabled {
        errln!(
            "note: [auto] enabled = false in {}: the passes will only report that automatic updates are off",
            inst.root.join("upkeep.toml").display()
        );
    }
    if !install {
        outln!("# {}/{}.service", unit_dir.display(), s.name);
        outln!("{}", s.service);
        outln!("# {}/{}.timer", unit_dir.display(), s.name);
        outln!("{}", s.timer);
        outln!(
            "# then: systemctl daemon-reload && systemctl enable --now {}.timer",
            s.name
        );
        outln!(
            "# (or write them with: upkeep schedule --root {} --install)",
            inst.root.display()
        );
        outln!();
        outln!("# without systemd, this crontab line (crontab -e) runs the same pass daily:");
        outln!("{}", s.cron);
        return Ok(0);
    }
    for p in upkeep::site::auto::schedule::install(&s, unit_dir)? {
        outln!("wrote {}", p.display());
    }
    let systemd = Path::new("/run/systemd/system").is_dir()
        && unit_dir == Path::new(upkeep::site::auto::schedule::SYSTEM_UNITS);
    let timer = format!("{}.timer", s.name);
    if systemd {
        for args in [vec!["daemon-reload"], vec!["enable", "--now", &timer]] {
            let st = std::process::Command::new("systemctl")
                .args(&args)
                .status()
                .ctx("run", Path::new("systemctl"))?;
            if !st.success() {
                return Err(upkeep::base::error::Error::refused(
                    format!("systemctl {} failed ({st})", args.join(" ")),
                    "run it by hand and read its message",
                ));
            }
        }
        outln!(
            "enabled {timer}: a pass runs daily at {} (plus up to {} of random delay); see `systemctl list-timers {timer}`",
            s.at,
            upkeep::base::clock::span_words(random_delay)
        );
    } else {
        outln!("now run: systemctl daemon-reload && systemctl enable --now {timer}");
    }
    Ok(0)
}

/// `upkeep finish`: the rest of an update after the release was copied over the tree.
pub fn finish(root: &Path, installed: Option<&str>, yes: bool, json: bool) -> Result<u8> {
    let inst = super::site_instance(root)?;
    let progress = Progress::default();
    let interactive = std::io::stdin().is_terminal();
    let confirm = |plan: &Plan| {
        if !json {
            outln!(
                "the live tree is release {} (installed: {}); to finish:",
                plan.to,
                plan.from.as_deref().unwrap_or("none")
            );
            print_plan(&inst, plan);
        }
        if yes {
            return true;
        }
        if !interactive {
            errln!("not applied: no terminal to confirm on; pass --yes");
            return false;
        }
        err!("close the site and finish? [y/N] ");
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        matches!(answer.trim(), "y" | "Y" | "yes")
    };
    let on_step = |step: Step, ms: Option<u64>| step_line(json, step, ms);
    let opts = update::Options {
        keep_modified: false,
        approved: None,
        confirm: &confirm,
        on_step: &on_step,
        decision: Decision::Ask,
        allow_tasks: &[],
        recheck: false,
        progress: &progress,
    };
    let run = super::site::reported(&inst, json, || {
        upkeep::site::finish::finish(&inst, installed, &opts)
    })?;
    finished_run(json, &run);
    if !json {
        still_closed(&inst);
    }
    Ok(0)
}

/// `upkeep status`.
pub fn status(root: &Path, json: bool) -> Result<u8> {
    let inst = super::site_instance(root)?;
    let st = update::status(&inst)?;
    if json {
        print_json(&st);
    } else {
        print_status(&st);
    }
    Ok(0)
}

/// `upkeep resume`.
pub fn resume(root: &Path, rerun_task: bool, skip_task: bool, json: bool) -> Result<u8> {
    let inst = super::site_instance(root)?;
    let progress = Progress::default();
    let on_step = |step: Step, ms: Option<u64>| step_line(json, step, ms);
    let decision = if rerun_task {
        Decision::Rerun
    } else if skip_task {
        Decision::Skip
    } else {
        Decision::Ask
    };
    // Nothing interrupted: said as it is (the last run is not printed as if it had just run).
    if let Ok(st) = State::open(&inst.state_db())
        && st.unfinished_run()?.is_none()
        && let Some(r) = st.runs(1)?.into_iter().next()
    {
        if json {
            print_json(&r);
        } else {
            outln!(
                "nothing to resume: the last run ({}, release {}) ended {} at {}",
                r.id,
                r.to,
                r.status,
                r.finished_at.as_deref().unwrap_or("?")
            );
        }
        return Ok(0);
    }
    let opts = update::Options {
        keep_modified: false,
        approved: None,
        confirm: &|_| true,
        on_step: &on_step,
        decision,
        allow_tasks: &[],
        recheck: false,
        progress: &progress,
    };
    let run = super::site::reported(&inst, json, || update::resume(&inst, &opts))?;
    finished_run(json, &run);
    if !json {
        still_closed(&inst);
    }
    Ok(0)
}

/// `upkeep rollback`: show what it will do (files, database), then do it after a yes (or with
/// `--yes`).
pub fn rollback(root: &Path, yes: bool, restore_database: bool, json: bool) -> Result<u8> {
    upkeep::site::owner::act_as_site_user(root)?;
    let (inst, warning) = Instance::open_lenient(root)?;
    if let Some(w) = warning {
        errln!("warning: {w}");
    }
    let o = update::RollbackOptions { restore_database };
    let plan = update::rollback::plan(&inst, &o)?;
    if json {
        errln!(
            "{}",
            serde_json::to_string_pretty(&plan).expect("serialises")
        );
    } else {
        print_rollback_plan(&inst, &plan);
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(Error::refused(
                "not rolled back: no terminal to confirm on",
                format!(
                    "to roll back as shown, run `upkeep rollback --root {} --yes{}`",
                    inst.root.display(),
                    if restore_database {
                        " --restore-database"
                    } else {
                        ""
                    }
                ),
            ));
        }
        err!(
            "roll back run {}? the site will be closed meanwhile [y/N] ",
            plan.run
        );
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err(Error::refused(
                "not rolled back",
                "run it again and answer y, or pass --yes",
            ));
        }
    }
    let done = super::site::reported(&inst, json, || update::rollback(&inst, &o))?;
    let run = &done.run;
    if run.plan.finish && !json {
        outln!(
            "this run finished an update copied by hand: the database and the tasks are back as before it, the copied files stay"
        );
    }
    if json {
        print_json(&done);
        return Ok(0);
    }
    let gate = match update::gate::closed(&inst.root) {
        Some(c) => format!(
            "the site stays closed, as it was closed by hand since {} (`upkeep open` opens it)",
            c.since
        ),
        None => "the site is open".into(),
    };
    outln!(
        "rolled back run {}: release {} is installed again; {gate}",
        run.id,
        run.from.as_deref().unwrap_or("(none: fresh instance)")
    );
    if done.database != plan.database {
        // Decided again with the site closed: a write came in after the plan was shown.
        for l in paragraph(&done.database.describe(), "", "  ") {
            outln!("{l}");
        }
    }
    Ok(0)
}

/// `upkeep backup`: the database copies, and how to put one back by hand.
pub fn backup(root: &Path, json: bool) -> Result<u8> {
    let inst = Instance::open(root)?;
    let list = update::backups::list(&inst)?;
    if json {
        print_json(&list);
        return Ok(0);
    }
    let keep = inst.config.database.keep_backups();
    if list.is_empty() {
        outln!(
            "no database copies in {} yet: one is taken before each migration",
            inst.root.join(".upkeep/backups").display()
        );
        return Ok(0);
    }
    let state = State::open(&inst.state_db())?;
    for b in &list {
        let what = match state.run(b.run) {
            Ok(r) if b.discarded => format!(
                "what the rollback of run {} ({} -> {}) discarded",
                r.id,
                r.from.as_deref().unwrap_or("none"),
                r.to
            ),
            Ok(r) => format!(
                "before run {} migrated ({} -> {})",
                r.id,
                r.from.as_deref().unwrap_or("none"),
                r.to
            ),
            Err(_) => format!("run {} (no longer recorded)", b.run),
        };
        outln!(
            "{}  {:>10}  {}  {what}",
            b.written,
            upkeep::base::fsutil::human_bytes(b.bytes),
            b.path.display()
        );
    }
    outln!();
    outln!(
        "the {keep} newest copies taken before migrations are kept ([database] keep_backups); those a rollback saved stay until you remove them"
    );
    outln!("to put one back by hand (here the newest), with the site closed:");
    let newest = &list.last().expect("not empty").path;
    for l in update::backups::restore_hint(&inst, newest) {
        outln!("  {l}");
    }
    Ok(0)
}

fn print_rollback_plan(inst: &Instance, p: &update::RollbackPlan) {
    outln!(
        "rollback of run {} ({} -> {}): release {} goes back",
        p.run,
        p.from.as_deref().unwrap_or("none"),
        p.to,
        p.from.as_deref().unwrap_or("(none: a fresh instance)")
    );
    outln!(
        "  files: {} put back from their backups, {} the run added removed",
        p.put_back,
        p.removed
    );
    for l in paragraph(&p.database.describe(), "  ", "    ") {
        outln!("{l}");
    }
    if let update::DatabaseStep::Keep { copy, .. } = &p.database
        && !copy.is_empty()
    {
        outln!(
            "  to put that copy back instead, discarding those writes (saved aside first): upkeep rollback --root {} --restore-database",
            inst.root.display()
        );
    }
    for t in &p.shell_tasks {
        outln!("  task {t}: ran; what it did is not undone (it will not run again)");
    }
}

/// The root of an instance for `close` and `open`, which need nothing of upkeep.toml: a
/// mistake there is named and does not stop them (they are what an emergency needs).
fn gate_root(root: &Path) -> Result<std::path::PathBuf> {
    let root = Instance::root_of(root)?;
    upkeep::site::owner::act_as_site_user(&root)?;
    if let Err(e @ Error::Config { .. }) = Instance::open(&root) {
        errln!("warning: {e} (the gate does not depend on it; fix it before the next update)");
    }
    Ok(root)
}

/// `upkeep close`.
pub fn close(root: &Path, message: &str) -> Result<u8> {
    let root = gate_root(root)?;
    let c = update::gate::close(&root, message, None)?;
    outln!(
        "closed since {}: visitors get 503 and {}",
        c.since,
        update::gate::page_path(&root).display()
    );
    if let Some(run) = c.run {
        outln!("run {run} is under way: the site stays closed when it ends (`upkeep open` then)");
    }
    Ok(0)
}

/// `upkeep open`.
pub fn open(root: &Path) -> Result<u8> {
    let root = gate_root(root)?;
    if let Some(r) = State::open(&Instance::state_db_of(&root))
        .ok()
        .and_then(|s| s.unfinished_run().ok().flatten())
    {
        errln!(
            "warning: run {} is unfinished (step {}); opening shows visitors a half-updated site",
            r.id,
            r.step
        );
    }
    update::gate::open(&root)?;
    outln!("open");
    Ok(0)
}

/// `upkeep web-config`.
pub fn web_config(
    server: crate::cli::WebServer,
    root: &Path,
    (server_name, port): (Option<&str>, u16),
    (php_fpm, panel): (Option<&str>, &str),
) -> Result<u8> {
    let inst = Instance::open(root)?;
    let from_url = inst.config.url.as_deref().and_then(|u| {
        let rest = u.split_once("://")?.1;
        Some(rest.split(['/', ':']).next()?.to_string())
    });
    let name = server_name
        .map(String::from)
        .or(from_url)
        .unwrap_or_else(upkeep::site::fleet::identity::host_name);
    let fpm = php_fpm.map(String::from).unwrap_or_else(|| {
        std::fs::read_dir("/run/php")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().display().to_string())
            .find(|p| p.ends_with("-fpm.sock"))
            .unwrap_or_else(|| "/run/php/php-fpm.sock".into())
    });
    let c = upkeep::site::web::WebConfig {
        root: &inst.root,
        server_name: &name,
        port,
        php_fpm: &fpm,
        panel,
    };
    out!(
        "{}",
        match server {
            crate::cli::WebServer::Nginx => upkeep::site::web::nginx(&c),
            crate::cli::WebServer::Apache => upkeep::site::web::apache(&c),
        }
    );
    Ok(0)
}

/// `upkeep serve`.
pub fn serve(root: &Path, listen: &str) -> Result<u8> {
    let inst = super::site_instance(root)?;
    let sys = actix_web::rt::System::new();
    sys.block_on(async {
        let (server, addr) =
            upkeep::site::panel::start(inst, listen).ctx("listen on", Path::new(listen))?;
        outln!("serving the site on http://{addr}/ (control panel: http://{addr}/control)");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        server.await.ctx("serve", root)
    })?;
    Ok(0)
}

/// `upkeep user add`.
pub fn user_add(root: &Path, name: &str) -> Result<u8> {
    let inst = super::site_instance(root)?;
    let pw = read_new_password(name)?;
    accounts::add(&State::open(&inst.state_db())?, name, &pw)?;
    outln!("account {name} created");
    Ok(0)
}

/// `upkeep user passwd`.
pub fn user_passwd(root: &Path, name: &str) -> Result<u8> {
    let inst = super::site_instance(root)?;
    let pw = read_new_password(name)?;
    accounts::passwd(&State::open(&inst.state_db())?, name, &pw)?;
    outln!("password of {name} changed; its sessions were ended");
    Ok(0)
}

/// `upkeep demo`.
pub fn demo(listen: &str, dir: Option<&Path>) -> Result<u8> {
    crate::demo::run(listen, dir).map(|_| 0)
}

/// A new password: asked twice on a terminal, one line of standard input otherwise.
pub fn read_new_password(name: &str) -> Result<String> {
    if std::io::stdin().is_terminal() {
        let a = rpassword::prompt_password(format!("new password for {name}: "))
            .map_err(|e| Error::msg(e.to_string()))?;
        let b = rpassword::prompt_password("again: ").map_err(|e| Error::msg(e.to_string()))?;
        if a != b {
            return Err(Error::refused(
                "the two passwords differ",
                "run the command again",
            ));
        }
        Ok(a)
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| Error::msg(e.to_string()))?;
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    }
}
