//! The commands and their options. Every panel action is also a command here.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Keep a web application's files up to date from a signed reference server.
///
/// Publisher: `keygen`, `publish`, `reference`. Site operator: `init`, `check`, `stage`,
/// `update`, `status`, `resume`, `rollback`, `serve`. Try `upkeep demo` for a local tour.
#[derive(Parser, Debug)]
#[command(name = "upkeep", version, about, long_about, after_help = EXIT_CODES)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 success (check: up to date), 10 check: an update is available, \
1 error, 2 bad usage or a mistake in upkeep.toml, 3 auto: held or postponed, 4 update: the plan changed \
since it was approved (--plan), 75 busy (another \
run holds the instance lock).";

/// Where an instance lives.
#[derive(clap::Args, Debug, Clone)]
pub struct RootArg {
    /// The instance root (the folder holding upkeep.toml).
    #[arg(long, value_name = "DIR", default_value = ".", env = "UPKEEP_ROOT")]
    pub root: PathBuf,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Make an ed25519 key pair: FILE (secret, mode 0600) and FILE.pub (public).
    ///
    /// Both are one line of text. The release key (the default role) signs manifests: keep it
    /// offline with the publisher and give FILE.pub to each site's `upkeep init --public-key`.
    /// An online key (--role online) signs channel pointers on the reference server, once the
    /// release key delegated it (`upkeep delegate`).
    Keygen {
        /// Where to write the secret key.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// What the key is for: release (signs manifests) or online (signs channel pointers).
        #[arg(long, value_enum, default_value = "release")]
        role: KeyRole,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },

    /// Name, with the release key, the online keys that may sign channel pointers.
    ///
    /// Writes keys/online.json and keys/online.sig into the repository. Sites trust a channel
    /// pointer only when an online key listed there signed it; a channel still names manifests
    /// the release key signed, so an online key can delay or halt updates, never install
    /// anything. Sign it again before --expires (a yearly ceremony) or to rotate keys.
    Delegate {
        /// The repository folder.
        #[arg(long, value_name = "REPO")]
        repo: PathBuf,
        /// The release key (secret).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// An online public key (FILE.pub from `keygen --role online`); repeat for several.
        #[arg(long = "online-key-pub", value_name = "FILE", required = true)]
        online_key_pub: Vec<PathBuf>,
        /// How long sites accept the delegation.
        #[arg(long, value_name = "SPAN", default_value = "365d", value_parser = humantime::parse_duration)]
        expires: std::time::Duration,
    },

    /// Start rolling a published release out on a channel, wave by wave.
    ///
    /// Writes channels/NAME.json, signed by a delegated online key. Sites following the channel
    /// (`channel = "NAME"` in upkeep.toml; `stable` by default) are offered the release when
    /// they are in a wave reached so far, and otherwise stay on the channel's release before.
    /// A wave is a group (sites with `groups = ["test"]`) or a share of all sites (10%): a site
    /// falls in a share by a hash of its id and the release, so every mirror gives the same
    /// answer and the first sites differ from one release to the next.
    ///
    /// Example: upkeep promote 1.4.0 --channel stable --repo /srv/repo --key online.key
    ///          --waves test,10%,50%,100%
    Promote {
        /// The release (published already).
        version: String,
        /// The channel.
        #[arg(long, value_name = "NAME")]
        channel: String,
        /// The repository folder.
        #[arg(long, value_name = "REPO")]
        repo: PathBuf,
        /// A delegated online key (secret).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The waves, in order: group names and rising shares, ending at 100%.
        #[arg(long, value_name = "LIST", default_value = "100%")]
        waves: upkeep::fleet::channel::Waves,
        /// Least time in a wave before the next.
        #[arg(long, value_name = "SPAN", default_value = "24h", value_parser = humantime::parse_duration)]
        every: std::time::Duration,
        /// Failures that halt the rollout: a share of a wave's reports (5%) or a count (3).
        #[arg(long, value_name = "N|P%", default_value = "5%")]
        halt_on_failure: upkeep::fleet::channel::Threshold,
        /// Successful reports a wave needs before the next.
        #[arg(long, value_name = "N", default_value_t = 1)]
        min_reports: u32,
        /// How long each signature of the pointer is valid (refreshed by `rollout refresh`).
        #[arg(long, value_name = "SPAN", default_value = "1d", value_parser = humantime::parse_duration)]
        expires: std::time::Duration,
        /// Print the pointer as JSON.
        #[arg(long)]
        json: bool,
    },

    /// See or move a channel's rollout: status, advance, pause, resume, halt, refresh.
    Rollout {
        #[command(subcommand)]
        action: RolloutAction,
    },

    /// Add a release, built from folder DIR, to a reference repository.
    ///
    /// Writes a manifest of every file (path, size, MD5, SHA-256) signed with --key, the file
    /// contents content-addressed under objects/, a full zip, and moves the signed latest pointer.
    /// The version must be semver and newer than the latest release.
    ///
    /// Beside each object it stores a compressed form and, for files changed since the last
    /// --deltas releases, a delta against the old file (listed in releases/V/forms.json): sites
    /// fetch the smallest form they can use and check the result against the signed manifest.
    Publish {
        /// The release folder (regular files only; no symlinks).
        dir: PathBuf,
        /// The new version, e.g. 1.4.0.
        #[arg(long)]
        version: String,
        /// The repository folder (created if missing).
        #[arg(long, value_name = "REPO")]
        repo: PathBuf,
        /// The secret key from `upkeep keygen`.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Release notes shown to operators.
        #[arg(long, default_value = "")]
        notes: String,
        /// Days until sites refuse this release as stale.
        #[arg(long, value_name = "DAYS", default_value_t = 365)]
        expires: u64,
        /// A security release: unattended sites take it through every rollout wave at once and
        /// inside any window; their reports and mails say it was urgent.
        #[arg(long)]
        urgent: bool,
        /// Store a delta for each file changed since each of the last K releases, so that a
        /// site holding the old file fetches only the difference (0: no deltas).
        #[arg(long, value_name = "K", default_value_t = 3)]
        deltas: usize,
        /// Do not store compressed objects (sites then fetch them raw, or as deltas).
        #[arg(long)]
        no_compress: bool,
        /// zstd level of compressed objects and deltas (1-22); sites decode any level as fast.
        /// 12 compresses a typical tree at about 12 MB/s per core; 19 saves about a tenth more
        /// at a fifteenth of the speed, which only small releases can afford.
        #[arg(long, value_name = "N", default_value_t = 12, value_parser = clap::value_parser!(i32).range(1..=22))]
        level: i32,
        /// No delta for a file larger than this (MiB): publishing and the sites hold the old
        /// and the new file in memory to build and apply one.
        #[arg(long, value_name = "MIB", default_value_t = 64)]
        delta_max: u64,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },

    /// Serve a reference repository over HTTP.
    ///
    /// Adds to static serving: ETag and conditional GET, Range requests, immutable cache headers
    /// on objects, helpful 404s, and POST /batch (many objects in one streamed response). With
    /// its fleet database (beside REPO): site enrolment and reports (/fleet/enroll, /fleet/report)
    /// and the fleet page (/fleet); with --online-key, rollouts steered by the reports; with
    /// --mirror-from, a leaf mirror that syncs when triggered (POST /trigger).
    Reference {
        /// The repository folder.
        #[arg(long, value_name = "REPO")]
        repo: PathBuf,
        /// Address to listen on (port 0 picks a free port; the URL is printed).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
        listen: String,
        /// The fleet database (site enrolment and reports), kept outside the repository.
        #[arg(
            long,
            value_name = "FILE",
            help = "The fleet database [default: REPO.fleet.db, beside REPO]"
        )]
        fleet_db: Option<PathBuf>,
        /// A delegated online key: the server then steers rollouts by the sites' reports
        /// (advance, halt past the threshold) and refreshes channel pointers before they expire.
        #[arg(long, value_name = "FILE")]
        online_key: Option<PathBuf>,
        /// A site that said it was installing, then nothing for this long, counts as failed.
        #[arg(long, value_name = "SPAN", default_value = "1h", value_parser = humantime::parse_duration)]
        silent_after: std::time::Duration,
        /// How often rollouts are looked at besides after each report.
        #[arg(long, value_name = "SPAN", default_value = "5s", value_parser = humantime::parse_duration)]
        tick: std::time::Duration,
        /// Be a mirror of this upstream: sync from it at start and whenever a signed trigger
        /// comes (POST /trigger), then trigger --downstream.
        #[arg(long, value_name = "URL", requires_all = ["public_key", "trigger_key"])]
        mirror_from: Option<String>,
        /// The release key (FILE.pub) the mirrored documents are checked against.
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
        /// A public key whose triggers start a sync (repeatable).
        #[arg(long, value_name = "FILE")]
        trigger_key: Vec<PathBuf>,
        /// Leaves to trigger after a sync that changed something: one base URL per line.
        #[arg(long, value_name = "FILE")]
        downstream: Option<PathBuf>,
        /// The trigger key (secret) that signs for the leaves.
        #[arg(long, value_name = "FILE")]
        downstream_key: Option<PathBuf>,
        /// Mirror the release zips too (see `upkeep mirror --zips`).
        #[arg(long, requires = "mirror_from")]
        mirror_zips: bool,
    },

    /// Make or refresh a mirror of a repository (from `upkeep reference` or any static server).
    ///
    /// Two stages, as Debian's ftpsync: every object the kept releases need first, each checked
    /// against its signed SHA-256, then the signed manifests, delegation and channels, and the
    /// latest pointer last, each by an atomic rename: the mirror never serves a pointer naming an
    /// object it lacks. A cut sync resumes from what it has; an upstream that does not verify
    /// or goes backwards is refused and the old copy stays. Serve the folder with
    /// `upkeep reference` or any static web server.
    Mirror {
        /// The upstream repository's URL.
        #[arg(long, value_name = "URL")]
        from: String,
        /// The mirror folder.
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        /// The publisher's release key (FILE.pub): every document is checked against it.
        #[arg(long, value_name = "FILE")]
        public_key: PathBuf,
        /// Keep only the newest N releases (0: all); older objects are pruned after the sync.
        #[arg(long, value_name = "N", default_value_t = 0)]
        keep: usize,
        /// Copy the release zips too, for operators who stage from a downloaded zip. Each is
        /// checked entry by entry against its signed manifest before it is served. Off by
        /// default: sites stage objects, and a zip is a second whole copy of every release.
        #[arg(long)]
        zips: bool,
        /// Leaves to trigger after a sync that changed something: one base URL per line.
        #[arg(long, value_name = "FILE", requires = "downstream_key")]
        downstream: Option<PathBuf>,
        /// The trigger key (secret) that signs for the leaves.
        #[arg(long, value_name = "FILE")]
        downstream_key: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },

    /// "Check now": send a signed trigger to a site, or be the SSH forced command that takes one.
    ///
    /// Sending: `upkeep trigger --url https://site.example/ --key trigger.key [--target NAME]`
    /// POSTs a signed trigger to the site's `upkeep serve` (`/trigger`); the site runs its own
    /// unattended pass if the key is in its `trigger_keys` (202), and refuses anything else.
    ///
    /// As an SSH forced command, in the site user's ~/.ssh/authorized_keys:
    ///   command="upkeep trigger --root /var/www/site",no-pty,no-port-forwarding,no-agent-forwarding,no-X11-forwarding ssh-ed25519 AAAA... hub
    /// it runs one unattended pass and prints it; SSH_ORIGINAL_COMMAND may be empty or one of
    /// check, auto, update, trigger; anything else is refused (exit 2).
    Trigger {
        /// Be the forced command for this instance.
        #[arg(long, value_name = "DIR", conflicts_with_all = ["url", "key"])]
        root: Option<PathBuf>,
        /// Send a trigger to this site URL.
        #[arg(long, value_name = "URL", requires = "key")]
        url: Option<String>,
        /// The trigger key (secret) that signs it.
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// Whom it is for: the site's name or id, or * (any site that trusts the key).
        #[arg(long, value_name = "NAME", default_value = "*")]
        target: String,
    },

    /// The big red button: trigger every enrolled site of a group, a channel or one name at once.
    ///
    /// Each site gets a signed "check now" at its `url` (upkeep.toml; sent with its reports) and
    /// runs its own unattended pass: its policy decides. With --wait, shows the sites' reports as
    /// they come until each has reported, failed or timed out, and ends with the table.
    Push {
        /// The repository folder (its fleet database lists the sites).
        #[arg(long, value_name = "REPO")]
        repo: PathBuf,
        /// The fleet database [default: REPO.fleet.db].
        #[arg(long, value_name = "FILE")]
        fleet_db: Option<PathBuf>,
        /// Sites in this group.
        #[arg(long, value_name = "G")]
        group: Option<String>,
        /// Sites on this channel.
        #[arg(long, value_name = "C")]
        channel: Option<String>,
        /// The site with this name.
        #[arg(long, value_name = "NAME")]
        site: Option<String>,
        /// The trigger key (secret); sites list its public half in `trigger_keys`.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Wait for the sites' reports.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits.
        #[arg(long, value_name = "SPAN", default_value = "15m", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },

    /// The publisher's view of the fleet: enrolment tokens and the deployment table.
    Fleet {
        #[command(subcommand)]
        action: FleetAction,
    },

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

    /// Put back exactly the release before the last run (files from NAME.bak, added files
    /// removed, the database from the copy taken before migrate); the site is closed meanwhile.
    Rollback {
        #[command(flatten)]
        root: RootArg,
        /// Print the run as JSON.
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

    /// Manage control-panel accounts.
    #[command(subcommand)]
    User(UserCommand),

    /// A local tour: two releases of a sample site, a reference server and an instance at the
    /// first release, all on loopback. Prints the panel URL and a one-time password.
    Demo {
        /// Address for the site and its panel (port 0 picks a free port).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8000")]
        listen: String,
        /// Where to build the demo (default: a new temporary folder, removed on exit).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
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

/// The fleet commands.
#[derive(Subcommand, Debug)]
pub enum FleetAction {
    /// Make an enrolment token for sites (`upkeep enroll TOKEN` or `init --enroll TOKEN`).
    Token {
        /// The repository folder.
        #[arg(long, value_name = "REPO")]
        repo: PathBuf,
        /// The fleet database [default: REPO.fleet.db].
        #[arg(long, value_name = "FILE")]
        fleet_db: Option<PathBuf>,
        /// How many sites may enrol with it.
        #[arg(long, value_name = "N", default_value_t = 1)]
        uses: u32,
        /// How long it is valid.
        #[arg(long, value_name = "SPAN", default_value = "7d", value_parser = humantime::parse_duration)]
        expires: std::time::Duration,
    },
    /// Create an account for the fleet page (`/fleet` on the reference), or change its password.
    ///
    /// The password is asked twice on a terminal, or read from standard input.
    User {
        /// Account name.
        name: String,
        /// The repository folder.
        #[arg(long, value_name = "REPO")]
        repo: PathBuf,
        /// The fleet database [default: REPO.fleet.db].
        #[arg(long, value_name = "FILE")]
        fleet_db: Option<PathBuf>,
        /// Change the password of an existing account (its sessions end).
        #[arg(long)]
        passwd: bool,
    },
    /// One row per enrolled site, and per-release counters for each channel.
    Status {
        /// The repository folder.
        #[arg(long, value_name = "REPO")]
        repo: PathBuf,
        /// The fleet database [default: REPO.fleet.db].
        #[arg(long, value_name = "FILE")]
        fleet_db: Option<PathBuf>,
        /// Only sites of this group.
        #[arg(long, value_name = "G")]
        group: Option<String>,
        /// Only sites on this channel.
        #[arg(long, value_name = "C")]
        channel: Option<String>,
        /// A site that said it started and then nothing for this long counts as failed.
        #[arg(long, value_name = "SPAN", default_value = "1h", value_parser = humantime::parse_duration)]
        silent_after: std::time::Duration,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// What a key signs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRole {
    /// Manifests and the delegation; kept offline.
    Release,
    /// Channel pointers, on the reference server.
    Online,
}

/// The channel a rollout command works on.
#[derive(clap::Args, Debug)]
pub struct ChannelArgs {
    /// The channel.
    #[arg(long, value_name = "NAME")]
    pub channel: String,
    /// The repository folder.
    #[arg(long, value_name = "REPO")]
    pub repo: PathBuf,
}

/// The rollout commands.
#[derive(Subcommand, Debug)]
pub enum RolloutAction {
    /// Where the rollout stands: release, waves, the current one, state.
    Status {
        #[command(flatten)]
        ch: ChannelArgs,
        /// Print the pointer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Move to the next wave (after the last: complete).
    Advance {
        #[command(flatten)]
        ch: ChannelArgs,
        /// A delegated online key.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
    /// Hold at the current wave (its sites keep the release).
    Pause {
        #[command(flatten)]
        ch: ChannelArgs,
        /// A delegated online key.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Why, shown to sites and in status.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Go on after a pause or a halt, from the current wave.
    Resume {
        #[command(flatten)]
        ch: ChannelArgs,
        /// A delegated online key.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
    /// Stop: every site not yet updated is offered the channel's release before.
    Halt {
        #[command(flatten)]
        ch: ChannelArgs,
        /// A delegated online key.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Why, shown to sites and in status.
        #[arg(long)]
        reason: String,
    },
    /// Sign the pointer again with a fresh expiry (daily, from cron, while no server does it).
    Refresh {
        #[command(flatten)]
        ch: ChannelArgs,
        /// A delegated online key.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// A new validity for this and later signatures (default: the one given at promote).
        #[arg(long, value_name = "SPAN", value_parser = humantime::parse_duration)]
        expires: Option<std::time::Duration>,
    },
}

/// `--at`: a time of day, HH:MM.
fn time_of_day(s: &str) -> Result<String, String> {
    upkeep::config::parse_window(&format!("{s}-{s}"))
        .map(|_| s.to_string())
        .ok_or_else(|| format!("{s:?} is not a time of day: write HH:MM, for example 03:00"))
}
