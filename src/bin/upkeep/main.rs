//! Command-line entry: parse (`cli/`), dispatch to one function per command (`cmd/`), map errors
//! to exit codes. What the commands print is `print.rs`.

// Output goes through upkeep::{outln, errln}, which never fail a run on a closed pipe.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod cli;
mod cmd;
mod demo;
mod print;

use std::process::ExitCode;
use upkeep::errln;

use clap::Parser;
use cli::{Cli, Command, PublisherCommand, SiteCommand, UserCommand};
use upkeep::base::error::Result;

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
            errln!("error: {e}");
            if let Some(h) = e.hint() {
                errln!("hint: {h}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(cmd: Command) -> Result<u8> {
    match cmd {
        Command::Publisher(c) => publisher(c),
        Command::Site(c) => site(c),
        Command::Demo { listen, dir } => cmd::run::demo(&listen, dir.as_deref()),
    }
}

fn publisher(cmd: PublisherCommand) -> Result<u8> {
    match cmd {
        PublisherCommand::Keygen { out, role, force } => cmd::publisher::keygen(&out, role, force),
        PublisherCommand::Publish {
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
        } => cmd::publisher::publish(
            &dir,
            &version,
            &repo,
            &key,
            &notes,
            (
                expires,
                urgent,
                upkeep::publisher::publish::Shrink {
                    compress: !no_compress,
                    deltas,
                    level,
                    delta_max: delta_max << 20,
                },
            ),
            json,
        ),
        PublisherCommand::Reference {
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
            notify,
            notify_secret_file,
        } => cmd::publisher::reference(
            &repo,
            &listen,
            fleet_db.as_deref(),
            (
                online_key.as_deref(),
                &notify,
                notify_secret_file.as_deref(),
            ),
            (silent_after, tick),
            mirror_from.as_deref().map(|from| cmd::publisher::LeafArgs {
                from,
                public_key: public_key.as_deref().unwrap_or(std::path::Path::new("")),
                trigger_keys: &trigger_key,
                downstream: downstream.as_deref(),
                downstream_key: downstream_key.as_deref(),
                zips: mirror_zips,
            }),
        ),
        PublisherCommand::Fleet { action } => cmd::fleet::fleet(action),
        PublisherCommand::Push {
            repo,
            fleet_db,
            group,
            channel,
            site,
            key,
            wait,
            timeout,
            json,
        } => cmd::fleet::push(
            &repo,
            fleet_db.as_deref(),
            upkeep::publisher::fleet::push::Class {
                group,
                channel,
                site,
            },
            &key,
            (wait, timeout),
            json,
        ),
        PublisherCommand::Trigger {
            root,
            url,
            key,
            target,
        } => cmd::fleet::trigger(root.as_deref(), url.as_deref(), key.as_deref(), &target),
        PublisherCommand::Mirror {
            from,
            to,
            public_key,
            keep,
            zips,
            downstream,
            downstream_key,
            json,
        } => cmd::publisher::mirror(
            &from,
            &to,
            &public_key,
            (keep, zips),
            (downstream.as_deref(), downstream_key.as_deref()),
            json,
        ),
        PublisherCommand::Delegate {
            repo,
            key,
            online_key_pub,
            expires,
            reports,
        } => cmd::fleet::delegate(&repo, &key, &online_key_pub, expires, reports.as_deref()),
        PublisherCommand::Promote {
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
        } => cmd::fleet::promote(
            &upkeep::publisher::fleet::rollout::Promote {
                repo: &repo,
                channel: &channel,
                version: &version,
                key: &upkeep::documents::manifest::SecretKey::load(&key)?,
                waves: waves.0,
                every,
                halt_on_failure,
                min_reports,
                ttl: expires,
            },
            json,
        ),
        PublisherCommand::Rollout { action } => cmd::fleet::rollout(action),
    }
}

fn site(cmd: SiteCommand) -> Result<u8> {
    match cmd {
        SiteCommand::Enroll { root, token } => cmd::fleet::enroll(&root.root, &token),
        SiteCommand::Init {
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
        } => cmd::site::init(&cmd::site::InitArgs {
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
            database: database.as_deref(),
            database_password_file: database_password_file.as_deref(),
            json,
        }),
        SiteCommand::Fingerprint { dir, json } => cmd::site::fingerprint(&dir, json),
        SiteCommand::Check { root, json } => cmd::site::check(&root.root, json),
        SiteCommand::Stage {
            root,
            network,
            archive,
            inbox,
            manual,
            allow_downgrade,
            json,
        } => {
            let source = if network {
                Some(upkeep::site::stage::Source::Network)
            } else if let Some(a) = archive {
                Some(upkeep::site::stage::Source::Archive(a))
            } else if manual {
                Some(upkeep::site::stage::Source::Manual)
            } else {
                match inbox.as_deref() {
                    Some("") | None => None,
                    Some(name) => Some(upkeep::site::stage::Source::Inbox(name.to_string())),
                }
            };
            cmd::site::stage(&root.root, source, allow_downgrade, json)
        }
        SiteCommand::Update {
            root,
            yes,
            plan,
            keep_modified,
            allow_task,
            json,
        } => cmd::site::update(
            &root.root,
            (yes, plan.as_deref()),
            keep_modified,
            &allow_task,
            json,
        ),
        SiteCommand::Auto {
            root,
            dry_run,
            retry,
            json,
        } => cmd::run::auto(&root.root, dry_run, retry, json),
        SiteCommand::Schedule {
            root,
            at,
            random_delay,
            install,
            unit_dir,
            json,
        } => cmd::run::schedule(
            &root.root,
            at.as_deref(),
            random_delay,
            install,
            &unit_dir,
            json,
        ),
        SiteCommand::Finish {
            root,
            installed,
            yes,
            json,
        } => cmd::run::finish(&root.root, installed.as_deref(), yes, json),
        SiteCommand::Status { root, json } => cmd::run::status(&root.root, json),
        SiteCommand::Backup { root, json } => cmd::run::backup(&root.root, json),
        SiteCommand::Resume {
            root,
            rerun_task,
            skip_task,
            json,
        } => cmd::run::resume(&root.root, rerun_task, skip_task, json),
        SiteCommand::Rollback {
            root,
            yes,
            restore_database,
            json,
        } => cmd::run::rollback(&root.root, yes, restore_database, json),
        SiteCommand::Close { root, message } => cmd::run::close(&root.root, &message),
        SiteCommand::Open { root } => cmd::run::open(&root.root),
        SiteCommand::WebConfig {
            server,
            root,
            server_name,
            port,
            php_fpm,
            panel,
        } => cmd::run::web_config(
            server,
            &root.root,
            (server_name.as_deref(), port),
            (php_fpm.as_deref(), &panel),
        ),
        SiteCommand::Serve { root, listen } => cmd::run::serve(&root.root, &listen),
        SiteCommand::User(UserCommand::Add { name, root }) => cmd::run::user_add(&root.root, &name),
        SiteCommand::User(UserCommand::Passwd { name, root }) => {
            cmd::run::user_passwd(&root.root, &name)
        }
    }
}
