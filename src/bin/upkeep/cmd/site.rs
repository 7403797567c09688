//! Setting up an instance and preparing an update: init, fingerprint, check, stage, update.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use upkeep::{err, errln, outln};

use upkeep::base::error::{Error, IoContext, Result, exit};
use upkeep::base::fsutil::human_bytes;
use upkeep::base::progress::Progress;
use upkeep::documents::manifest::RelPath;
use upkeep::site::config::Instance;
use upkeep::site::plan::Plan;
use upkeep::site::state::{State, Step};
use upkeep::site::update::{self, tasks::Decision};
use upkeep::site::{check as check_mod, fingerprint as fp, init as init_mod, stage as stage_mod};

use crate::print::{
    emit, finished_run, list_inbox, print_json, print_list, print_plan, show_progress, step_line,
    still_closed,
};

/// What `upkeep init` was given.
pub struct InitArgs<'a> {
    pub root: &'a Path,
    pub reference: &'a str,
    pub public_key: &'a Path,
    pub installed: Option<&'a str>,
    pub admin_password_file: Option<&'a Path>,
    pub pending_tasks: bool,
    pub name: Option<&'a str>,
    pub groups: &'a [String],
    pub channel: Option<&'a str>,
    pub enroll: Option<&'a str>,
    pub url: Option<&'a str>,
    pub database: Option<&'a str>,
    pub database_password_file: Option<&'a str>,
    pub json: bool,
}

pub fn init(a: &InitArgs) -> Result<u8> {
    let InitArgs {
        root,
        reference,
        public_key,
        installed,
        admin_password_file,
        pending_tasks,
        name,
        groups,
        channel,
        enroll,
        url,
        database,
        database_password_file,
        json,
    } = *a;
    let key_text = std::fs::read_to_string(public_key).ctx("read public key", public_key)?;
    let admin = match admin_password_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .ctx("read", f)?
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
        ),
        None => None,
    };
    // The key and the password file are read first (they may be root's to read); the rest is
    // done as the site's user, so what init writes is the site's.
    if root.is_dir() {
        upkeep::site::owner::act_as_site_user(root)?;
    }
    let r = init_mod::init(&init_mod::InitOptions {
        root,
        reference,
        public_key: &key_text,
        installed,
        admin_password: admin.as_deref(),
        pending_tasks,
        name,
        groups,
        channel,
        url,
        database,
        database_password_file,
    })?;
    if json {
        print_json(&r);
    } else {
        outln!("initialised instance {}", r.root.display());
        outln!("site database: {}", r.database);
        match &r.identified {
            init_mod::Identified::Given { version } => {
                outln!("installed release: {version} (as given)")
            }
            init_mod::Identified::Fresh => {
                outln!("the folder is empty: the next update installs the latest release")
            }
            init_mod::Identified::Exact { version } => {
                outln!("installed release: {version} (every file matches)")
            }
            init_mod::Identified::Closest {
                version,
                differences,
            } => {
                outln!(
                    "installed release: {version} (closest match, {} differences):",
                    differences.len()
                );
                for d in differences.iter().take(30) {
                    outln!("  {d}");
                }
                outln!("if that is wrong, run init again with --installed V");
            }
            init_mod::Identified::Unknown => {
                outln!(
                    "no published release shares a file with this tree; the next update treats every file as new"
                );
                outln!("if you know the release, run init again with --installed V");
            }
        }
        if !r.tasks_marked_done.is_empty() {
            outln!(
                "marked done (they ran when the site was installed; `init --pending-tasks` leaves them pending):"
            );
            for t in &r.tasks_marked_done {
                outln!("  {t}.done");
            }
        }
        if let Some(pw) = &r.admin_password {
            outln!(
                "control panel account: admin, password: {pw}  (shown once; change it with `upkeep user passwd admin`)"
            );
        }
        outln!(
            "site id: {} (channel {}{})",
            r.site.id,
            r.site.channel,
            if r.site.groups.is_empty() {
                String::new()
            } else {
                format!(", groups {}", r.site.groups.join(", "))
            }
        );
        outln!("next: upkeep check --root {}", r.root.display());
    }
    if let Some(token) = enroll {
        let inst = Instance::open(&r.root)?;
        upkeep::site::fleet::report::enroll(&inst, token)?;
        if !json {
            outln!(
                "enrolled with {}: reports go there after every run",
                inst.config.reference
            );
        }
    }
    Ok(0)
}

/// `upkeep fingerprint`.
pub fn fingerprint(dir: &Path, json: bool) -> Result<u8> {
    // In an instance, the stat cache in state.db is written: as the site's user.
    if dir.join("upkeep.toml").is_file() {
        upkeep::site::owner::act_as_site_user(dir)?;
    }
    let (entries, skipped) = fp::fingerprint_dir(dir, json)?;
    if json {
        print_json(&entries);
    } else {
        let mut out = String::with_capacity(entries.len() * 80);
        for e in &entries {
            // md5sum's layout; built by hand because it runs once per file.
            e.md5.push_hex(&mut out);
            let size = e.size.to_string();
            out.push_str("  ");
            out.push_str(&" ".repeat(10usize.saturating_sub(size.len())));
            out.push_str(&size);
            out.push_str("  ");
            out.push_str(e.path.as_str());
            out.push('\n');
        }
        emit(&out);
    }
    for s in skipped {
        errln!("skipped: {s}");
    }
    Ok(0)
}

/// `upkeep check`: exit 10 when an update is available.
pub fn check(root: &Path, json: bool) -> Result<u8> {
    let inst = super::site_instance(root)?;
    let (d, latest) = check_mod::check(&inst)?;
    if json {
        print_json(&d);
    } else {
        outln!(
            "installed: {}",
            d.installed.as_deref().unwrap_or("none (fresh install)")
        );
        outln!("latest:    {} ({})", d.latest, latest.manifest().date);
        if let Some(o) = &d.offer {
            outln!("offer:     {o}");
        }
        if !latest.manifest().notes.is_empty() {
            outln!("notes:     {}", latest.manifest().notes);
        }
        print_list("locally modified", &d.modified);
        print_list("new", &d.new);
        print_list("changed", &d.changed);
        print_list("removed", &d.removed);
        print_list("excluded by upkeep.toml (never touched)", &d.excluded);
        print_list("kept by upkeep.toml (never replaced nor removed)", &d.kept);
        print_list(
            "changed here, not by the release (left as they are)",
            &d.yours,
        );
        outln!("unchanged: {} files", d.unchanged);
        if d.older {
            outln!(
                "the reference's latest release {} is older than the installed {}: nothing to update (staging it needs --allow-downgrade)",
                d.latest,
                d.installed.as_deref().unwrap_or_default()
            );
        } else if d.up_to_date() {
            outln!("up to date");
        } else {
            outln!(
                "update available: run `upkeep stage --root {} --network` (or --archive, --inbox, --manual)",
                root.display()
            );
        }
    }
    Ok(if d.up_to_date() {
        0
    } else {
        exit::UPDATE_AVAILABLE
    })
}

/// `upkeep stage`: without a source, list the inbox.
pub fn stage(
    root: &Path,
    source: Option<stage_mod::Source>,
    allow_downgrade: bool,
    json: bool,
) -> Result<u8> {
    let inst = super::site_instance(root)?;
    let Some(source) = source else {
        return list_inbox(&inst, json);
    };
    let progress = Arc::new(Progress::default());
    let bar = show_progress(&progress);
    let opts = stage_mod::StageOptions {
        allow_downgrade,
        progress: progress.clone(),
    };
    let r = stage_mod::stage(&inst, &source, &opts);
    progress.finished.store(true, Ordering::Relaxed);
    if let Some(b) = bar {
        let _ = b.join();
    }
    let r = r?;
    if json {
        print_json(&r);
    } else {
        outln!(
            "staged release {} from {}: {} files, {} ({} already staged) in {:.1} s",
            r.version,
            r.source,
            r.files,
            human_bytes(r.bytes),
            r.reused,
            r.seconds
        );
        if let Some(f) = r.forms.as_ref().filter(|f| f.whole > 0) {
            outln!(
                "fetched {} for {} of files: {} as deltas, {} compressed, {} whole ({:.0}% saved){}",
                human_bytes(f.wire()),
                human_bytes(f.whole),
                human_bytes(f.delta),
                human_bytes(f.compressed),
                human_bytes(f.raw),
                100.0 - 100.0 * f.wire() as f64 / f.whole as f64,
                if f.fell_back > 0 {
                    format!(
                        "; {} smaller forms unusable, fetched another way (first: {})",
                        f.fell_back,
                        f.reasons.first().map(String::as_str).unwrap_or("")
                    )
                } else {
                    String::new()
                }
            );
        }
        if r.moved_aside > 0 {
            outln!(
                "{} files in staging/ that this release does not need were moved into {}",
                r.moved_aside,
                inst.state_dir().join("aside").display()
            );
        }
        if r.replaced_aside > 0 {
            outln!(
                "{} files in staging/ at paths this release needs held other contents (copied by hand?): moved into {}, and the release's staged",
                r.replaced_aside,
                inst.state_dir().join("aside").display()
            );
        }
        if r.removed > 0 {
            outln!("{} files will be removed at the swap", r.removed);
        }
        if !r.modified.is_empty() {
            outln!(
                "{} locally modified files (kept as NAME.bak unless --keep-modified):",
                r.modified.len()
            );
            for m in r.modified.iter().take(30) {
                outln!("  {m}");
            }
        }
        outln!("next: upkeep update --root {}", root.display());
    }
    Ok(0)
}

/// `upkeep update`: show the plan with its digest, then apply it after a yes (or with `--yes`,
/// and with `--plan DIGEST` only that plan).
pub fn update(
    root: &Path,
    (yes, approved): (bool, Option<&str>),
    keep_modified: bool,
    allow_task: &[String],
    json: bool,
) -> Result<u8> {
    let inst = super::site_instance(root)?;
    let allow_tasks = allow_task
        .iter()
        .map(|t| RelPath::parse(t.trim_start_matches("./")))
        .collect::<Result<Vec<_>>>()?;
    let progress = Progress::default();
    let interactive = std::io::stdin().is_terminal();
    let confirm = |plan: &Plan| {
        if json {
            errln!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "digest": plan.digest(),
                    "plan": plan,
                }))
                .expect("serialises")
            );
        } else {
            print_plan(&inst, plan);
        }
        if yes {
            return true;
        }
        if !interactive {
            errln!(
                "not applied: no terminal to confirm on; to apply exactly this plan, run\n  upkeep update --root {} --yes --plan {}",
                root.display(),
                plan.digest()
            );
            return false;
        }
        err!(
            "apply plan {}? the site will be closed during the swap [y/N] ",
            plan.digest()
        );
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        matches!(answer.trim(), "y" | "Y" | "yes")
    };
    let on_step = |step: Step, ms: Option<u64>| step_line(json, step, ms);
    let opts = update::Options {
        keep_modified,
        approved,
        confirm: &confirm,
        on_step: &on_step,
        decision: Decision::Ask,
        allow_tasks: &allow_tasks,
        // The answer on a terminal comes after a while: the plan is computed again after it.
        recheck: interactive && !yes,
        progress: &progress,
    };
    let r = reported(&inst, json, || update::update(&inst, &opts));
    if let Err(Error::PlanChanged { .. }) = &r {
        // The refusal is only useful with the plan of now beside it.
        let mut state = State::open(&inst.state_db())?;
        if let Ok((now, _)) = update::prepare(&inst, &mut state, keep_modified, &allow_tasks) {
            print_plan(&inst, &now);
        }
    }
    match r? {
        None => Err(Error::refused(
            "update not applied",
            "run it again and answer y, or pass --yes (with --plan DIGEST for exactly the plan shown)",
        )),
        Some(run) => {
            finished_run(json, &run);
            if !json {
                still_closed(&inst);
            }
            Ok(0)
        }
    }
}

/// Do `work` and tell the reference (enrolled sites) how the run it touched stands.
pub fn reported<T>(inst: &Instance, json: bool, work: impl FnOnce() -> Result<T>) -> Result<T> {
    let (r, line) = upkeep::site::fleet::report::around_run(inst, work);
    if let Some(l) = line.filter(|_| !json) {
        errln!("{l}");
    }
    r
}
