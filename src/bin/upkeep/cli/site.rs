//! An instance's commands (every panel action is also one of them).

use std::path::PathBuf;

use clap::Subcommand;

use super::RootArg;

/// The site's commands.
#[derive(Subcommand, Debug)]
pub enum SiteCommand {
    /// Enrol this site with its reference, using a token the publisher made.
    ///
    /// The site presents its id and its public key; from then on, after every run and every
    /// unattended pass, it sends the reference a report signed with its site key. Reports that
    /// cannot be sent wait in state.db and go with the next contact.
    Enroll {
        #[command(flatten)]
        root: RootArg,
        /// The token from `upkeep fleet token`.
        token: String,
    },

    /// Make DIR an instance and find which published release its live tree is.
    ///
    /// Creates upkeep.toml, staging/, inbox/, run_once/ and .upkeep/state.db; no application
    /// file is touched. An empty DIR becomes a fresh install of the latest release.
    Init {
        /// The instance root.
        #[arg(long, value_name = "DIR")]
        root: PathBuf,
        /// URL of the reference repository.
        #[arg(long, value_name = "URL")]
        reference: String,
        /// The publisher's public key file (FILE.pub from keygen).
        #[arg(long, value_name = "FILE")]
        public_key: PathBuf,
        /// The installed release, when you know it (skips the identification).
        #[arg(long, value_name = "V")]
        installed: Option<String>,
        /// Read the password of the first administrator (`admin`) from FILE's first line
        /// instead of generating one.
        #[arg(long, value_name = "FILE")]
        admin_password_file: Option<PathBuf>,
        /// Leave the installed release's run_once tasks pending, to run at the next update (by
        /// default they are marked done: they ran when the site was installed).
        #[arg(long)]
        pending_tasks: bool,
        /// The site's name in reports (default: host name and root).
        #[arg(long)]
        name: Option<String>,
        /// A fleet group this site belongs to (rollout waves target groups); repeatable.
        #[arg(long = "group", value_name = "G")]
        groups: Vec<String>,
        /// The release channel to follow (default: stable).
        #[arg(long, value_name = "NAME")]
        channel: Option<String>,
        /// Enrol with the reference using this token from `upkeep fleet token`.
        #[arg(long, value_name = "TOKEN")]
        enroll: Option<String>,
        /// This site's address, where `upkeep serve` takes triggers (for `upkeep push`).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// The application's database: `mysql://USER@HOST:PORT/NAME` (MariaDB, MySQL),
        /// `postgresql://USER@HOST:PORT/NAME` (`?sslmode=require`, `?host=/run/postgresql`
        /// for a socket), or an SQLite file (default `.upkeep/site.db`). Reached now, to check it.
        #[arg(long, value_name = "URL")]
        database: Option<String>,
        /// The file holding the database server's password (mode 0600, readable by the
        /// site's user); else the environment's UPKEEP_DATABASE_PASSWORD. Never in the URL.
        #[arg(long, value_name = "FILE")]
        database_password_file: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },

    /// Print the manifest of any folder (unsigned): MD5, size and path; --json adds SHA-256.
    ///
    /// MD5s are computed on all cores; in an instance root the stat cache in state.db makes a
    /// second run cost little more than `stat`.
    Fingerprint {
        /// The folder.
        dir: PathBuf,
        /// Print JSON (path, size, MD5 and SHA-256) instead of `md5  size  path` lines; the text
        /// form computes only MD5, like md5sum.
        #[arg(long)]
        json: bool,
    },

    /// Compare the live tree with the latest signed release.
    ///
    /// Exit 0 when up to date, 10 when an update is available.
    Check {
        #[command(flatten)]
        root: RootArg,
        /// One JSON object: installed, latest, new, changed, removed, modified, unchanged.
        #[arg(long)]
        json: bool,
    },

    /// Fill staging/ with exactly the files the update needs, each verified.
    ///
    /// Choose one source. Rerunning resumes: verified files are kept, partial downloads continue.
    #[command(group(clap::ArgGroup::new("source").required(true)))]
    Stage {
        #[command(flatten)]
        root: RootArg,
        /// From the reference server: only new and changed files.
        #[arg(long, group = "source")]
        network: bool,
        /// From a release zip.
        #[arg(long, value_name = "ZIP", group = "source")]
        archive: Option<PathBuf>,
        /// From a zip in inbox/: without NAME, list the archives there.
        #[arg(long, value_name = "NAME", group = "source", num_args = 0..=1, default_missing_value = "")]
        inbox: Option<String>,
        /// Files copied into staging/ by hand: verify them and report what is missing or wrong.
        #[arg(long, group = "source")]
        manual: bool,
        /// Accept a release older than the installed one.
        #[arg(long)]
        allow_downgrade: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },

    /// Apply the staged release: review the plan, then close, swap, scan, migrate, run_once, reopen.
    ///
    /// Prints the plan (locally modified files first) with its digest, and asks before anything
    /// changes. Each step is printed with its duration; the end prints how long the site was
    /// closed.
    ///
    /// Scripts: `upkeep update --root DIR` without a terminal prints the plan and its digest and
    /// changes nothing; `upkeep update --root DIR --yes --plan DIGEST` then applies exactly that
    /// plan, or refuses (exit 4, nothing changed) if staging or the site changed meanwhile.
    Update {
        #[command(flatten)]
        root: RootArg,
        /// Apply without asking (cron, scripts).
        #[arg(long, short = 'y')]
        yes: bool,
        /// Apply only if the plan's digest is this one (as printed with the plan).
        #[arg(long, value_name = "DIGEST")]
        plan: Option<String>,
        /// Leave locally modified files as they are instead of installing the release's version
        /// (by default the operator's version is kept as NAME.bak).
        #[arg(long)]
        keep_modified: bool,
        /// Also run this task, which is not from the release: a *.sh or *.sql file in a
        /// run_once folder that the signed release does not ship (the plan lists them as "not
        /// from the release"; they never run otherwise, and never in `upkeep auto`). Repeat for
        /// several; its content as reviewed is part of the plan's digest.
        #[arg(long = "allow-task", value_name = "PATH")]
        allow_task: Vec<String>,
        /// Print the plan and the run as JSON.
        #[arg(long)]
        json: bool,
    },

    /// One unattended pass, decided by the [auto] policy of upkeep.toml (for cron or a timer).
    ///
    /// A run found interrupted is resumed, or rolled back when it cannot be finished unattended.
    /// Then: check; HELD when automatic updates are off, when the release is a bigger semver
    /// step than `allow`, or (on_modified = "hold") when files were modified locally; POSTPONED
    /// outside `window`/`days` or while [auto.busy] says visitors are active (at most
    /// `max_postpone`); otherwise stage from the network and apply the plan without a prompt
    /// (the policy is the approval). The run's restart hooks (`after`) and health check
    /// ([auto.health]) follow its reopen; a failing check, or any failing step, rolls the run
    /// back at once. Every pass is recorded (`upkeep status`) and reported by mail as [mail]
    /// says; a report that cannot be sent waits and goes with the next pass.
    ///
    /// Exit codes: 0 updated or nothing to do, 1 failed (nothing changed, or the run was rolled
    /// back), 2 a mistake in upkeep.toml (named), 3 held or postponed by policy, 75 busy
    /// (another pass or command holds the instance).
    ///
    /// Schedule it with `upkeep schedule`.
    Auto {
        #[command(flatten)]
        root: RootArg,
        /// Decide and print, change nothing (no staging, no run, nothing recorded, no mail).
        #[arg(long)]
        dry_run: bool,
        /// Take again a release that failed here (passes hold such a release until a newer
        /// one, so that a broken release is not installed and undone every night).
        #[arg(long)]
        retry: bool,
        /// Print the pass as JSON.
        #[arg(long)]
        json: bool,
    },

    /// Print (or install) a systemd service and timer that run `upkeep auto` daily.
    ///
    /// The timer is Persistent (a pass missed while the machine was off runs at boot) and
    /// delayed by a random amount up to --random-delay, so a fleet does not hit its reference
    /// in the same second. Also prints an equivalent crontab line, offset by a fixed amount
    /// drawn from the root, for machines without systemd.
    ///
    /// Examples:
    ///   upkeep schedule --root /srv/site                     # print the units
    ///   upkeep schedule --root /srv/site --at 02:30 --install # write and enable them
    Schedule {
        #[command(flatten)]
        root: RootArg,
        /// Daily time of the pass, HH:MM local time [default: the start of auto.window, else 03:00].
        #[arg(long, value_name = "HH:MM", value_parser = time_of_day)]
        at: Option<String>,
        /// Largest random delay after --at (for example 30m, 1h, 2h).
        #[arg(long, value_name = "SPAN", default_value = "1h", value_parser = humantime::parse_duration)]
        random_delay: std::time::Duration,
        /// Write the units into --unit-dir, then (with systemd running) reload and enable the timer.
        #[arg(long)]
        install: bool,
        /// Where --install writes the units.
        #[arg(long, value_name = "DIR", default_value = "/etc/systemd/system")]
        unit_dir: PathBuf,
        /// Print the units and the crontab line as JSON.
        #[arg(long)]
        json: bool,
    },

    /// Finish an update made by copying the whole release over the live tree (FTP, rsync).
    ///
    /// The emergency path when an incremental update cannot be done: finds which published
    /// release the tree now is (or take --installed V), then closes the site, scans extensions,
    /// migrates the database (with a copy for rollback), runs pending run_once tasks, reopens,
    /// and records the run. A rollback of it restores the database only: the copied files stay.
    Finish {
        #[command(flatten)]
        root: RootArg,
        /// The release the tree now is, when it does not match one exactly.
        #[arg(long, value_name = "V")]
        installed: Option<String>,
        /// Apply without asking.
        #[arg(long, short = 'y')]
        yes: bool,
        /// Print the run as JSON.
        #[arg(long)]
        json: bool,
    },

    /// Installed version, gate, current run and step, last runs, extensions, pending tasks.
    Status {
        #[command(flatten)]
        root: RootArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },

    /// Continue an interrupted run from where it stopped.
    Resume {
        #[command(flatten)]
        root: RootArg,
        /// Run again a shell task that was started but never confirmed finished.
        #[arg(long, conflicts_with = "skip_task")]
        rerun_task: bool,
        /// Mark such a task done without running it again.
        #[arg(long)]
        skip_task: bool,
        /// Print the run as JSON.
        #[arg(long)]
        json: bool,
    },

    /// Put back exactly the release before the last run: files from NAME.bak, added files
    /// removed, the database from the copy taken before the update when nothing was written to
    /// it since (or only the update's own schema changes taken back). It shows what it will do
    /// and asks first; the site is closed meanwhile.
    ///
    /// A database written since the site reopened (a post, an order, a visitor's comment, a
    /// TRUNCATE) is kept as it is, with the tables and columns the update added, which the
    /// previous release runs on; the plan names the tables and any task that changed the
    /// database while the site was closed. `--restore-database` puts the copy back anyway,
    /// after saving the database as it is to .upkeep/backups/run-N-discarded-TIME.db (.sql on
    /// MariaDB/MySQL, .pgdump on PostgreSQL). `upkeep backup` lists the copies.
    Rollback {
        #[command(flatten)]
        root: RootArg,
        /// Roll back without asking (needed without a terminal).
        #[arg(long)]
        yes: bool,
        /// Put back the copy of the database taken before the update even if it was written
        /// since; what it discards is saved aside first.
        #[arg(long)]
        restore_database: bool,
        /// Print the run as JSON.
        #[arg(long)]
        json: bool,
    },

    /// List the database copies in .upkeep/backups/ (taken before each migration, and those a
    /// rollback saved before discarding writes) and say how to put one back by hand.
    Backup {
        #[command(flatten)]
        root: RootArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },

    /// Close the site by hand: visitors get 503 and the maintenance page.
    Close {
        #[command(flatten)]
        root: RootArg,
        /// Shown on the maintenance page.
        #[arg(
            long,
            default_value = "This site is under maintenance. Please come back in a few minutes."
        )]
        message: String,
    },

    /// Open the site by hand.
    Open {
        #[command(flatten)]
        root: RootArg,
    },

    /// Serve the live tree behind the gate, and the control panel under /control.
    Serve {
        #[command(flatten)]
        root: RootArg,
        /// Address to listen on (port 0 picks a free port; the URL is printed).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8000")]
        listen: String,
    },

    /// Print the web server's lines for this instance: nginx or Apache 2.4, with php-fpm.
    ///
    /// The gate covers every request the server answers, PHP included (a closed site answers
    /// 503 with Retry-After everywhere but /control); upkeep's files, backups, hidden files and
    /// PHP source are never served; /control goes to `upkeep serve` with the browser's host and
    /// port. Put the lines in /etc/nginx/sites-available/ (or Apache's sites-available/),
    /// enable them, reload the server.
    WebConfig {
        /// nginx or apache.
        #[arg(value_enum)]
        server: WebServer,
        #[command(flatten)]
        root: RootArg,
        /// The site's name (server_name, ServerName) [default: the host of `url` in
        /// upkeep.toml, else this machine's name].
        #[arg(long, value_name = "NAME")]
        server_name: Option<String>,
        /// The port the web server listens on.
        #[arg(long, value_name = "PORT", default_value_t = 80)]
        port: u16,
        /// php-fpm's socket [default: the one in /run/php/].
        #[arg(long, value_name = "SOCKET")]
        php_fpm: Option<String>,
        /// Where `upkeep serve` listens.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8000")]
        panel: String,
    },

    /// Manage control-panel accounts.
    #[command(subcommand)]
    User(UserCommand),
}

/// Account commands. The password is read from the terminal (asked twice), or from standard
/// input when it is not a terminal (`echo "$PW" | upkeep user add bob`).
#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create an account.
    Add {
        /// Account name.
        name: String,
        #[command(flatten)]
        root: RootArg,
    },
    /// Change an account's password (its sessions end).
    Passwd {
        /// Account name.
        name: String,
        #[command(flatten)]
        root: RootArg,
    },
}

/// `--at`: a time of day, HH:MM.
fn time_of_day(s: &str) -> Result<String, String> {
    upkeep::site::config::parse_window(&format!("{s}-{s}"))
        .map(|_| s.to_string())
        .ok_or_else(|| format!("{s:?} is not a time of day: write HH:MM, for example 03:00"))
}

/// The web servers `web-config` writes for.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebServer {
    /// nginx with php-fpm.
    Nginx,
    /// Apache 2.4 with php-fpm (proxy_fcgi).
    Apache,
}
