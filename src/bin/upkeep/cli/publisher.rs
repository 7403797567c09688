//! The publisher's commands: keys, publishing, serving, mirrors, rollouts, triggers, the fleet.

use std::path::PathBuf;

use clap::Subcommand;

/// The publisher's commands.
#[derive(Subcommand, Debug)]
pub enum PublisherCommand {
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
        /// Where sites enrol and report: the base URL of the `upkeep reference` that keeps the
        /// fleet. Signed into the delegation, which mirrors copy, so that sites fetching from
        /// any mirror (nginx, a leaf) report to the publisher.
        #[arg(long, value_name = "URL")]
        reports: Option<String>,
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
        waves: upkeep::documents::channel::Waves,
        /// Least time in a wave before the next.
        #[arg(long, value_name = "SPAN", default_value = "24h", value_parser = humantime::parse_duration)]
        every: std::time::Duration,
        /// Failures that halt the rollout: a share of a wave's reports (5%) or a count (3).
        #[arg(long, value_name = "N|P%", default_value = "5%")]
        halt_on_failure: upkeep::documents::channel::Threshold,
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
        /// The fleet database: a file, or postgresql://USER@HOST:PORT/NAME [default:
        /// REPO.fleet.db, beside REPO].
        ///
        /// Site enrolments, reports, webhooks and the fleet page's accounts. A file stays
        /// outside the repository. A PostgreSQL database is shared by several reference servers
        /// (behind one address, each with a copy of the repository): all take enrolments and
        /// reports, one at a time steers the rollouts (another at once when it stops), and the
        /// channel pointers they sign reach every server's folder within one --tick. Its password comes from the file UPKEEP_FLEET_DB_PASSWORD_FILE names
        /// (mode 0600), or from UPKEEP_FLEET_DB_PASSWORD.
        #[arg(long, value_name = "FILE|URL")]
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
        /// A webhook told of rollout moves (halted, wave advanced, complete) and of each site
        /// that fails or rolls back (repeatable): signed JSON, queued in the fleet database and
        /// tried again with a growing pause until it is taken.
        #[arg(long = "notify", value_name = "URL")]
        notify: Vec<String>,
        /// The shared secret the webhooks' bodies are signed with (mode 0600):
        /// `X-Upkeep-Signature-256: sha256=HMAC`.
        #[arg(long, value_name = "FILE", requires = "notify")]
        notify_secret_file: Option<PathBuf>,
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
        /// The fleet database: a file, or postgresql://USER@HOST:PORT/NAME [default:
        /// REPO.fleet.db].
        #[arg(long, value_name = "FILE|URL")]
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
}

/// The fleet commands.
#[derive(Subcommand, Debug)]
pub enum FleetAction {
    /// Make an enrolment token for sites (`upkeep enroll TOKEN` or `init --enroll TOKEN`).
    Token {
        /// The repository folder.
        #[arg(long, value_name = "REPO")]
        repo: PathBuf,
        /// The fleet database: a file, or postgresql://USER@HOST:PORT/NAME [default:
        /// REPO.fleet.db].
        #[arg(long, value_name = "FILE|URL")]
        fleet_db: Option<PathBuf>,
        /// How many sites may enrol with it.
        #[arg(long, value_name = "N", default_value_t = 1)]
        uses: u32,
        /// How long it is valid.
        #[arg(long, value_name = "SPAN", default_value = "7d", value_parser = humantime::parse_duration)]
        expires: std::time::Duration,
    },
    /// Accounts of the fleet page (`/fleet` on the reference), as `upkeep user` manages the
    /// panel's.
    ///
    /// The password is asked twice on a terminal, or read from standard input
    /// (`echo "$PW" | upkeep fleet user add alice --repo /srv/repo`).
    #[command(subcommand)]
    User(FleetUserCommand),
    /// One row per enrolled site, and per-release counters for each channel; with --site, one
    /// site's history.
    ///
    /// A release's counters count what each site last did with it: a site that rolled it back
    /// stays counted "rolled back" after its next pass, until it installs the release.
    Status {
        /// The repository folder.
        #[arg(long, value_name = "REPO")]
        repo: PathBuf,
        /// The fleet database: a file, or postgresql://USER@HOST:PORT/NAME [default:
        /// REPO.fleet.db].
        #[arg(long, value_name = "FILE|URL")]
        fleet_db: Option<PathBuf>,
        /// One site's timeline instead (its name or id): every report kept, newest first, with
        /// the outcome, releases, failed step, closed window, bytes and reason.
        #[arg(long, value_name = "NAME")]
        site: Option<String>,
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

/// `upkeep fleet user ...`.
#[derive(Subcommand, Debug)]
pub enum FleetUserCommand {
    /// Create an account.
    Add {
        /// Account name.
        name: String,
        #[command(flatten)]
        db: FleetDbArgs,
    },
    /// Change an account's password (its sessions end).
    Passwd {
        /// Account name.
        name: String,
        #[command(flatten)]
        db: FleetDbArgs,
    },
}

/// Where the fleet database is.
#[derive(clap::Args, Debug)]
pub struct FleetDbArgs {
    /// The repository folder.
    #[arg(long, value_name = "REPO")]
    pub repo: PathBuf,
    /// The fleet database: a file, or postgresql://USER@HOST:PORT/NAME [default:
    /// REPO.fleet.db].
    #[arg(long, value_name = "FILE|URL")]
    pub fleet_db: Option<PathBuf>,
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
