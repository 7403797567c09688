//! Command-line entry: parse, dispatch to one function per command (`cmd.rs`), map errors to
//! exit codes. What the commands print is `print.rs`.

mod cli;
mod cmd;
mod print;

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command, UserCommand};
use upkeep::error::Result;

fn main() -> ExitCode {
    // glibc raises its mmap threshold after each large block is freed, after which blocks of
    // up to 32 MB come from the heap and stay counted against the process once freed. Staging
    // a release of 100,000 files frees several such blocks (manifests, the fingerprint cache)
    // one after another; a fixed threshold of 4 MB gives those back (about 15% of the peak),
    // while buffers below it stay on the heap: at 256 KB, every response of the reference
    // server with a 640 KB manifest paid an mmap and its page faults (half the requests/s).
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; called before any thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            if let Some(h) = e.hint() {
                eprintln!("hint: {h}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(cmd: Command) -> Result<u8> {
    match cmd {
        Command::Keygen { out, role, force } => cmd::keygen(&out, role, force),
        Command::Publish {
            dir,
            version,
            repo,
            key,
            notes,
            expires,
            urgent,
            deltas,
            no_compress,
            level,
            delta_max,
            json,
        } => cmd::publish(
            &dir,
            &version,
            &repo,
            &key,
            &notes,
            (
                expires,
                urgent,
                upkeep::reference::publish::Shrink {
                    compress: !no_compress,
                    deltas,
                    level,
                    delta_max: delta_max << 20,
                },
            ),
            json,
        ),
        Command::Reference {
            repo,
            listen,
            fleet_db,
            online_key,
            silent_after,
            tick,
            mirror_from,
            public_key,
            trigger_key,
            downstream,
            downstream_key,
            mirror_zips,
        } => cmd::reference(
            &repo,
            &listen,
            fleet_db.as_deref(),
            online_key.as_deref(),
            (silent_after, tick),
            mirror_from.as_deref().map(|from| cmd::LeafArgs {
                from,
                public_key: public_key.as_deref().unwrap_or(std::path::Path::new("")),
                trigger_keys: &trigger_key,
                downstream: downstream.as_deref(),
                downstream_key: downstream_key.as_deref(),
                zips: mirror_zips,
            }),
        ),
        Command::Fleet { action } => cmd::fleet(action),
        Command::Push {
            repo,
            fleet_db,
            group,
            channel,
            site,
            key,
            wait,
            timeout,
            json,
        } => cmd::push(
            &repo,
            fleet_db.as_deref(),
            upkeep::fleet::push::Class {
                group,
                channel,
                site,
            },
            &key,
            (wait, timeout),
            json,
        ),
        Command::Trigger {
            root,
            url,
            key,
            target,
        } => cmd::trigger(root.as_deref(), url.as_deref(), key.as_deref(), &target),
        Command::Mirror {
            from,
            to,
            public_key,
            keep,
            zips,
            downstream,
            downstream_key,
            json,
        } => cmd::mirror(
            &from,
            &to,
            &public_key,
            (keep, zips),
            (downstream.as_deref(), downstream_key.as_deref()),
            json,
        ),
        Command::Enroll { root, token } => cmd::enroll(&root.root, &token),
        Command::Init {
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
            json,
        } => cmd::init(&cmd::InitArgs {
            root: &root,
            reference: &reference,
            public_key: &public_key,
            installed: installed.as_deref(),
            admin_password_file: admin_password_file.as_deref(),
            pending_tasks,
            name: name.as_deref(),
            groups: &groups,
            channel: channel.as_deref(),
            enroll: enroll.as_deref(),
            url: url.as_deref(),
            json,
        }),
        Command::Delegate {
            repo,
            key,
            online_key_pub,
            expires,
        } => cmd::delegate(&repo, &key, &online_key_pub, expires),
        Command::Promote {
            version,
            channel,
            repo,
            key,
            waves,
            every,
            halt_on_failure,
            min_reports,
            expires,
            json,
        } => cmd::promote(
            &upkeep::fleet::rollout::Promote {
                repo: &repo,
                channel: &channel,
                version: &version,
                key: &upkeep::manifest::SecretKey::load(&key)?,
                waves: waves.0,
                every,
                halt_on_failure,
                min_reports,
                ttl: expires,
            },
            json,
        ),
        Command::Rollout { action } => cmd::rollout(action),
        Command::Fingerprint { dir, json } => cmd::fingerprint(&dir, json),
        Command::Check { root, json } => cmd::check(&root.root, json),
        Command::Stage {
            root,
            network,
            archive,
            inbox,
            manual,
            allow_downgrade,
            json,
        } => {
            let source = if network {
                Some(upkeep::stage::Source::Network)
            } else if let Some(a) = archive {
                Some(upkeep::stage::Source::Archive(a))
            } else if manual {
                Some(upkeep::stage::Source::Manual)
            } else {
                match inbox.as_deref() {
                    Some("") | None => None,
                    Some(name) => Some(upkeep::stage::Source::Inbox(name.to_string())),
                }
            };
            cmd::stage(&root.root, source, allow_downgrade, json)
        }
        Command::Update {
            root,
            yes,
            plan,
            keep_modified,
            json,
        } => cmd::update(&root.root, yes, plan.as_deref(), keep_modified, json),
        Command::Auto {
            root,
            dry_run,
            json,
        } => cmd::auto(&root.root, dry_run, json),
        Command::Schedule {
            root,
            at,
            random_delay,
            install,
            unit_dir,
            json,
        } => cmd::schedule(
            &root.root,
            at.as_deref(),
            random_delay,
            install,
            &unit_dir,
            json,
        ),
        Command::Finish {
            root,
            installed,
            yes,
            json,
        } => cmd::finish(&root.root, installed.as_deref(), yes, json),
        Command::Status { root, json } => cmd::status(&root.root, json),
        Command::Resume {
            root,
            rerun_task,
            skip_task,
            json,
        } => cmd::resume(&root.root, rerun_task, skip_task, json),
        Command::Rollback { root, json } => cmd::rollback(&root.root, json),
        Command::Close { root, message } => cmd::close(&root.root, &message),
        Command::Open { root } => cmd::open(&root.root),
        Command::Serve { root, listen } => cmd::serve(&root.root, &listen),
        Command::User(UserCommand::Add { name, root }) => cmd::user_add(&root.root, &name),
        Command::User(UserCommand::Passwd { name, root }) => cmd::user_passwd(&root.root, &name),
        Command::Demo { listen, dir } => cmd::demo(&listen, dir.as_deref()),
    }
}
