//! An instance: its root, its working folders and `upkeep.toml`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::base::error::{Error, IoContext, Result};
pub use crate::client::Network;
pub use crate::documents::archive::Limits;
use crate::documents::manifest::{PublicKey, RelPath};
use crate::documents::tree::is_excluded;

/// Where the previous version of a replaced or removed file is kept until the next run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backups {
    /// `NAME.bak` beside the file, as YACS does (never served); a release file of that name
    /// sends its neighbour's backup aside.
    #[default]
    Beside,
    /// Under `.upkeep/aside/run-N/backup/`: nothing of upkeep's in the web root.
    Aside,
}

/// How upkeep treats the site's files (`[files]` in upkeep.toml).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Files {
    /// Where backups go: `"beside"` or `"aside"`.
    pub backups: Backups,
    /// Who new files and folders belong to (a user name); unset: the owner of the folder
    /// they land in. A replaced file always keeps its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Their group; unset: the group of the folder they land in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The permission bits new files and folders go without (octal, as umask(1)): "022" makes
    /// 0644 files and 0755 folders, "002" group-writable ones.
    pub umask: String,
}

impl Default for Files {
    fn default() -> Self {
        Files {
            backups: Backups::Beside,
            owner: None,
            group: None,
            umask: "022".into(),
        }
    }
}

impl Files {
    /// The umask as bits.
    pub fn umask_bits(&self) -> u32 {
        u32::from_str_radix(self.umask.trim(), 8).unwrap_or(0o022) & 0o777
    }
}

/// run_once task settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Tasks {
    /// Seconds a shell task may run.
    pub timeout_secs: u64,
}

impl Default for Tasks {
    fn default() -> Self {
        Tasks { timeout_secs: 600 }
    }
}

/// The largest version step an unattended pass may take.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Allow {
    /// 1.2.3 -> 1.2.4.
    #[default]
    Patch,
    /// 1.2.3 -> 1.3.0.
    Minor,
    /// 1.2.3 -> 2.0.0.
    Major,
}

impl Allow {
    /// The word used in upkeep.toml.
    pub fn word(self) -> &'static str {
        match self {
            Allow::Patch => "patch",
            Allow::Minor => "minor",
            Allow::Major => "major",
        }
    }
}

/// What an unattended pass does with locally modified files (the conffile question).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OnModified {
    /// Stop before anything live changes; the report lists the files.
    #[default]
    Hold,
    /// Leave the site's version in place.
    KeepMine,
    /// Install the release's version, the site's kept as NAME.bak.
    TakeRelease,
}

/// A length of time in upkeep.toml: a number of seconds, or text such as "90s", "5m", "3d".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span(pub Duration);

impl Span {
    /// `n` seconds.
    pub const fn secs(n: u64) -> Span {
        Span(Duration::from_secs(n))
    }
}

impl Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(n) => Ok(Span::secs(n)),
            Raw::Text(t) => humantime::parse_duration(&t).map(Span).map_err(|e| {
                serde::de::Error::custom(format!(
                    "{t:?} is not a length of time ({e}): write for example \"90s\", \"5m\", \"3d\" or a number of seconds"
                ))
            }),
        }
    }
}

/// One address or a list of them (`to = "ops@example.org"` or `to = ["a@x", "b@x"]`).
fn one_or_many<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::One(s) => vec![s],
        Raw::Many(v) => v,
    })
}

/// `[auto.busy]`: signals that visitors are active, so an unattended pass postpones closing the
/// site. Any one signal saying "busy" is enough.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Busy {
    /// A shell command whose exit status 0 means busy (as for a running video call).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// A URL answering JSON `{"active": N}`; N > 0 means busy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A web server access log (nginx or Apache combined format): busy when a request was
    /// logged in the last `idle_seconds`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_log: Option<PathBuf>,
    /// Seconds without a logged request before the site counts as idle.
    pub idle_seconds: u64,
    /// After being postponed this long for one release, the pass goes ahead anyway.
    pub max_postpone: Span,
    /// How long the command or the URL may take to answer.
    pub timeout: Span,
}

impl Default for Busy {
    fn default() -> Self {
        Busy {
            command: None,
            url: None,
            access_log: None,
            idle_seconds: 300,
            max_postpone: Span::secs(3 * 86_400),
            timeout: Span::secs(10),
        }
    }
}

impl Busy {
    /// Whether any signal is configured.
    pub fn any(&self) -> bool {
        self.command.is_some() || self.url.is_some() || self.access_log.is_some()
    }
}

/// `[auto.health]`: the check made after every run reopens the site (unattended or not). A run
/// that fails it is rolled back.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Health {
    /// The page to fetch; no check when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The HTTP status it must answer.
    pub expect_status: u16,
    /// Text the answer must contain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    /// How long one attempt may take.
    pub timeout: Span,
    /// Attempts before the check counts as failed (an application may need a moment after a
    /// restart hook); one second apart.
    pub attempts: u32,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            url: None,
            expect_status: 200,
            contains: None,
            timeout: Span::secs(10),
            attempts: 3,
        }
    }
}

/// `[auto]`: what an unattended pass (`upkeep auto`) may do. Unknown keys are refused, so a
/// typo never silently widens or narrows the policy.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Auto {
    /// Unattended updates happen at all.
    pub enabled: bool,
    /// The largest semver step taken unattended.
    pub allow: Allow,
    /// Local time window for closing the site, `HH:MM-HH:MM` (may cross midnight).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// Days the window applies (`mon` ... `sun`); every day when empty.
    pub days: Vec<String>,
    /// Locally modified files.
    pub on_modified: OnModified,
    /// Stage a held or postponed release ahead, so the window is spent on the swap only.
    pub stage_ahead: bool,
    /// Restart hooks: shell commands run after every change of code (an update's tasks, a
    /// rollback's files), the site still closed, then the site reopens and the health check
    /// runs; each within `after_timeout`.
    pub after: Vec<String>,
    /// How long one restart hook may run before it is killed.
    pub after_timeout: Span,
    /// Signals that visitors are active.
    pub busy: Busy,
    /// The check after reopening.
    pub health: Health,
}

impl Default for Auto {
    fn default() -> Self {
        Auto {
            enabled: false,
            allow: Allow::default(),
            window: None,
            days: Vec::new(),
            on_modified: OnModified::default(),
            stage_ahead: false,
            after: Vec::new(),
            after_timeout: Span::secs(120),
            busy: Busy::default(),
            health: Health::default(),
        }
    }
}

/// Which passes send a report (unattended-upgrades' three choices).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Report {
    /// Every pass, even one with nothing to do.
    Always,
    /// Passes that changed something or need the operator: updated, failed, rolled back, and a
    /// hold or postponement the first time it is seen for a release.
    #[default]
    OnChange,
    /// Failures only: failed or rolled-back passes, failed restart hooks.
    OnlyOnError,
}

/// `[mail]`: where reports of unattended passes go. No mail when `to` is empty.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Mail {
    /// Recipients.
    #[serde(deserialize_with = "one_or_many")]
    pub to: Vec<String>,
    /// The sender; `upkeep@<host name>` when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// `smtp://host:port` (STARTTLS when offered; `?tls=required` to insist) or
    /// `smtps://host:port`; a user as `smtp://user@host`.
    pub smtp: String,
    /// A file holding the SMTP password (kept out of upkeep.toml).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Which passes are reported.
    pub report: Report,
    /// How long talking to the SMTP server may take.
    pub timeout: Span,
}

impl Default for Mail {
    fn default() -> Self {
        Mail {
            to: Vec::new(),
            from: None,
            smtp: "smtp://localhost:25".into(),
            password_file: None,
            report: Report::default(),
            timeout: Span::secs(30),
        }
    }
}

/// A window's bounds in minutes since midnight, or `None` when `w` is not `HH:MM-HH:MM`.
pub fn parse_window(w: &str) -> Option<(u32, u32)> {
    let minutes = |t: &str| -> Option<u32> {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some(h * 60 + m)
    };
    let (a, b) = w.split_once('-')?;
    Some((minutes(a)?, minutes(b)?))
}

/// A day's number (0 = Sunday) from its three-letter name.
pub fn day_number(d: &str) -> Option<u32> {
    ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
        .iter()
        .position(|x| x.eq_ignore_ascii_case(d.trim()))
        .map(|i| i as u32)
}

/// The contents of `upkeep.toml`. Unknown keys are refused: a misspelt section would otherwise
/// be ignored without a word.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The site's name in reports; the host name and root when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The fleet groups this site belongs to (rollout waves and pushes target them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The release channel this site follows (`stable` when unset: the repository's channel of
    /// that name if it has one, else its latest release).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// This site's own address, where `upkeep serve` takes triggers (`upkeep push` uses it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// An HTTP proxy or cache (squid) between this site and its reference:
    /// `proxy = "http://cache.example.org:3128"`. Objects are then fetched one GET each, which a
    /// cache can serve to the next site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// Addresses of the proxies in front of the panel whose `X-Forwarded-Host`,
    /// `X-Forwarded-Proto` and `X-Forwarded-For` count (`["127.0.0.1"]` for nginx or Apache on
    /// the same machine); none by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Public keys whose signed triggers ("check now") start an unattended pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trigger_keys: Vec<String>,
    /// Base URL of the reference repository.
    pub reference: String,
    /// The publisher's public key (one line from `upkeep keygen`).
    pub public_key: String,
    /// The site database: `database = "PATH"` (SQLite, relative to the root or absolute), or
    /// a `[database]` table (`url`, `keep_backups`).
    #[serde(default)]
    pub database: Database,
    /// Paths (relative, `dir/` for a folder) never fingerprinted nor touched.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Files upkeep never replaces nor removes, as globs on paths relative to the root
    /// (`keep = ["wp-config.php", "sites/*/settings.php"]`: `*` stays within a folder, `**`
    /// crosses folders). A missing one is still added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep: Vec<String>,
    /// The user the site's work runs as when upkeep is started as root (its files, its tasks
    /// and hooks); unset: the owner of the instance root (see `site::owner`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as: Option<String>,
    /// Folders of the operator's own extensions (each holding an `extension.toml`), counted
    /// beside those the release ships: `extensions = ["plugins/local-shop"]`. An
    /// `extension.toml` anywhere else is not the release's and is never read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<String>,
    /// Archive and upload limits.
    #[serde(default)]
    pub limits: Limits,
    /// Network settings.
    #[serde(default)]
    pub network: Network,
    /// Task settings.
    #[serde(default)]
    pub tasks: Tasks,
    /// How the site's files are treated.
    #[serde(default)]
    pub files: Files,
    /// Unattended updates.
    #[serde(default)]
    pub auto: Auto,
    /// Mail reports.
    #[serde(default)]
    pub mail: Mail,
    /// Webhooks: each pass's report, as signed JSON, to chat and incident tools
    /// (`[[notify]] url = "https://..." secret_file = "/etc/upkeep/hook.secret"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<Notify>,
}

/// `[[notify]]`: one webhook.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    /// Where the report is POSTed (http:// or https://).
    pub url: String,
    /// A file holding the shared secret (mode 0600) the body is signed with
    /// (`X-Upkeep-Signature-256: sha256=HMAC`); unsigned without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// Which passes are sent, as for mail.
    #[serde(default)]
    pub report: Report,
    /// How long one delivery may take.
    #[serde(default = "default_notify_timeout")]
    pub timeout: Span,
}

fn default_notify_timeout() -> Span {
    Span(std::time::Duration::from_secs(10))
}

fn default_db() -> String {
    ".upkeep/site.db".into()
}

fn default_keep_backups() -> usize {
    3
}

/// The site database, as upkeep.toml names it: a path alone, or a table with its settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Database {
    /// `database = ".upkeep/site.db"`.
    Path(String),
    /// `[database]`.
    Table(DatabaseTable),
}

/// `[database]` in upkeep.toml.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseTable {
    /// The database: an SQLite path (relative to the root or absolute),
    /// `mysql://USER@HOST:PORT/NAME` or `postgresql://USER@HOST:PORT/NAME`.
    #[serde(default = "default_db")]
    pub url: String,
    /// A file holding the server's password (mode 0600); else `UPKEEP_DATABASE_PASSWORD`.
    #[serde(default)]
    pub password_file: Option<String>,
    /// Copies taken before migrations kept in `.upkeep/backups/`, the newest; older ones are
    /// removed when a run reopens.
    #[serde(default = "default_keep_backups")]
    pub keep_backups: usize,
    /// How long one schema statement waits for a lock another connection holds, in seconds.
    #[serde(default = "default_lock_timeout")]
    pub lock_timeout_secs: u64,
    /// How many times such a statement is tried again (with a growing pause) before the run
    /// stops, the site still open.
    #[serde(default = "default_lock_retries")]
    pub lock_retries: u32,
}

fn default_lock_timeout() -> u64 {
    5
}

fn default_lock_retries() -> u32 {
    4
}

impl Default for Database {
    fn default() -> Self {
        Database::Path(default_db())
    }
}

impl Database {
    /// The settings, the defaults filled in for a bare path.
    pub fn settings(&self) -> DatabaseTable {
        match self {
            Database::Path(p) => DatabaseTable {
                url: p.clone(),
                password_file: None,
                keep_backups: default_keep_backups(),
                lock_timeout_secs: default_lock_timeout(),
                lock_retries: default_lock_retries(),
            },
            Database::Table(t) => t.clone(),
        }
    }
    /// Where it is, as written.
    pub fn url(&self) -> &str {
        match self {
            Database::Path(p) => p,
            Database::Table(t) => &t.url,
        }
    }
    /// How many pre-migration copies are kept.
    pub fn keep_backups(&self) -> usize {
        self.settings().keep_backups
    }
}

impl Config {
    /// The rules serde cannot express, each message naming the key and the fix.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for n in &self.notify {
            if !(n.url.starts_with("http://") || n.url.starts_with("https://")) {
                return Err(format!(
                    "[[notify]] url = {:?}: a webhook is an http:// or https:// URL",
                    n.url
                ));
            }
        }
        crate::site::database::target::parse(self.database.url(), Path::new("/"))?;
        if self.database.keep_backups() == 0 {
            return Err(
                "[database] keep_backups = 0: the copy of the last run is what its rollback puts back; keep at least 1".into(),
            );
        }
        let name_ok = |n: &str| crate::documents::channel::valid_name(n);
        if let Some(g) = self.groups.iter().find(|g| !name_ok(g)) {
            return Err(format!(
                "groups: {g:?} is not a group name (lowercase letters, digits, - and _)"
            ));
        }
        if let Some(c) = self.channel.as_ref().filter(|c| !name_ok(c)) {
            return Err(format!(
                "channel = {c:?} is not a channel name (lowercase letters, digits, - and _)"
            ));
        }
        if let Some(k) = self
            .trigger_keys
            .iter()
            .find(|k| PublicKey::parse(k).is_err())
        {
            return Err(format!(
                "trigger_keys: {k:?} is not a public key (one line from `upkeep keygen`, upkeep-public-key-v1:...)"
            ));
        }
        let f = &self.files;
        if u32::from_str_radix(f.umask.trim(), 8).map_or(true, |m| m > 0o777) {
            return Err(format!(
                "files.umask = {:?} is not a umask: write three octal digits, for example \"022\"",
                f.umask
            ));
        }
        if let Some(o) = f
            .owner
            .as_ref()
            .filter(|o| crate::base::users::user(o).is_none())
        {
            return Err(format!("files.owner = {o:?}: no such user on this machine"));
        }
        if let Some(g) = f
            .group
            .as_ref()
            .filter(|g| crate::base::users::group_id(g).is_none())
        {
            return Err(format!(
                "files.group = {g:?}: no such group on this machine"
            ));
        }
        let a = &self.auto;
        if let Some(w) = a.window.as_ref().filter(|w| parse_window(w).is_none()) {
            return Err(format!(
                "auto.window = {w:?} is not a window: write \"HH:MM-HH:MM\", for example \"02:00-05:00\""
            ));
        }
        if let Some(d) = a.days.iter().find(|d| day_number(d).is_none()) {
            return Err(format!(
                "auto.days: {d:?} is not a day: use mon, tue, wed, thu, fri, sat, sun"
            ));
        }
        let http = |key: &str, url: &Option<String>| match url {
            Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) => {
                Err(format!("{key} = {u:?} is not an http:// or https:// URL"))
            }
            _ => Ok(()),
        };
        http("auto.busy.url", &a.busy.url)?;
        http("url", &self.url)?;
        http("proxy", &self.proxy)?;
        http("auto.health.url", &a.health.url)?;
        if a.health.attempts == 0 {
            return Err("auto.health.attempts must be at least 1".into());
        }
        if !(100..600).contains(&a.health.expect_status) {
            return Err(format!(
                "auto.health.expect_status = {} is not an HTTP status",
                a.health.expect_status
            ));
        }
        let m = &self.mail;
        if !m.to.is_empty() {
            for addr in m.to.iter().chain(m.from.iter()) {
                if addr.parse::<lettre::message::Mailbox>().is_err() {
                    return Err(format!(
                        "mail: {addr:?} is not a mail address (write user@example.org or \"Name <user@example.org>\")"
                    ));
                }
            }
            if !(m.smtp.starts_with("smtp://") || m.smtp.starts_with("smtps://")) {
                return Err(format!(
                    "mail.smtp = {:?} must start with smtp:// or smtps://, for example \"smtp://localhost:25\"",
                    m.smtp
                ));
            }
        }
        Ok(())
    }

    /// The text written by `upkeep init`, with comments an operator can follow.
    pub fn render(&self) -> String {
        let mut s =
            String::from("# upkeep instance configuration. See `upkeep --help` and the README.\n");
        s.push_str(&toml::to_string_pretty(self).expect("config always serialises"));
        s.push_str(
            "\n# Keys left unset above (see the README, \"Unattended updates\"):\n\
             # [auto]        window = \"02:00-05:00\"  days = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"]\n\
             #               after = [\"systemctl reload php8.2-fpm\"]\n\
             # [auto.busy]   command = \"pgrep -x jitsi-videobridge\"  url = \"http://127.0.0.1/active.json\"\n\
             #               access_log = \"/var/log/nginx/access.log\"\n\
             # [auto.health] url = \"https://example.org/\"  contains = \"Welcome\"\n\
             # [mail]        to = [\"ops@example.org\"]  from = \"upkeep@example.org\"\n\
             #               smtp = \"smtps://user@mail.example.org\"  password_file = \"/etc/upkeep/smtp.pass\"\n\
             # name = \"shop\"  (at the top: the site's name in reports)\n",
        );
        s
    }
}

/// One installed web application.
pub struct Instance {
    /// The instance root (the live tree plus upkeep's folders).
    pub root: PathBuf,
    /// Parsed `upkeep.toml`.
    pub config: Config,
    /// The trusted publisher key.
    pub key: PublicKey,
    /// `keep`, compiled.
    keep: globset::GlobSet,
}

impl Instance {
    /// The root of an instance made by `upkeep init` (a folder with an upkeep.toml), absolute.
    pub fn root_of(root: &Path) -> Result<PathBuf> {
        let root = root.canonicalize().ctx("open instance root", root)?;
        if !root.join("upkeep.toml").exists() {
            return Err(Error::refused(
                format!(
                    "{} is not an upkeep instance (no upkeep.toml)",
                    root.display()
                ),
                format!(
                    "run `upkeep init --root {} --reference URL --public-key FILE` first",
                    root.display()
                ),
            ));
        }
        Ok(root)
    }

    /// Open an instance made by `upkeep init`.
    pub fn open(root: &Path) -> Result<Self> {
        let root = Self::root_of(root)?;
        let cfg_path = root.join("upkeep.toml");
        let text = std::fs::read_to_string(&cfg_path).ctx("read", &cfg_path)?;
        let config: Config = toml::from_str(&text).map_err(|e| Error::Config {
            file: cfg_path.clone(),
            reason: e.to_string(),
        })?;
        Self::with_config(root, config)
    }

    /// An instance at `root` with this configuration, checked as [`Instance::open`] checks it.
    pub(crate) fn with_config(root: PathBuf, mut config: Config) -> Result<Self> {
        let cfg_path = root.join("upkeep.toml");
        config.network.proxy = config.proxy.clone();
        config.validate().map_err(|reason| Error::Config {
            file: cfg_path,
            reason,
        })?;
        let key = PublicKey::parse(&config.public_key)?;
        let keep = keep_set(&config.keep).map_err(|reason| Error::Config {
            file: root.join("upkeep.toml"),
            reason,
        })?;
        Ok(Instance {
            root,
            config,
            key,
            keep,
        })
    }

    /// [`Instance::open`] for the commands an emergency needs (`rollback`): a mistake in
    /// upkeep.toml outside what they use (the reference, the key, the database, the excluded
    /// paths, the extensions) does not stop them. It comes back as a sentence to print, and
    /// the rest of the file counts as its defaults for this command.
    pub fn open_lenient(root: &Path) -> Result<(Self, Option<String>)> {
        let strict = match Self::open(root) {
            Err(e @ Error::Config { .. }) => e,
            r => return r.map(|i| (i, None)),
        };
        let root = Self::root_of(root)?;
        let cfg_path = root.join("upkeep.toml");
        let text = std::fs::read_to_string(&cfg_path).ctx("read", &cfg_path)?;
        let Ok(table) = toml::from_str::<toml::Table>(&text) else {
            return Err(strict);
        };
        let core: toml::Table = table
            .into_iter()
            .filter(|(k, _)| {
                [
                    "reference",
                    "public_key",
                    "database",
                    "exclude",
                    "keep",
                    "extensions",
                    "name",
                ]
                .contains(&k.as_str())
            })
            .collect();
        let Ok(config) = core.try_into::<Config>() else {
            return Err(strict);
        };
        let why = format!(
            "{strict}; going on with the defaults for the rest (fix it before the next update)"
        );
        match Self::with_config(root, config) {
            Ok(inst) => Ok((inst, Some(why))),
            Err(_) => Err(strict),
        }
    }

    /// `staging/`.
    pub fn staging(&self) -> PathBuf {
        self.root.join("staging")
    }
    /// `staging/` must be a real folder of the instance: a link would let staging's clean-up
    /// and the swap work on files elsewhere.
    pub fn check_staging_folder(&self) -> Result<()> {
        let st = self.staging();
        if std::fs::symlink_metadata(&st).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(Error::refused(
                format!(
                    "{} is a symbolic link: upkeep works only in a real staging folder inside the instance",
                    st.display()
                ),
                format!(
                    "replace the link with a folder (`rm {0} && mkdir {0}`), then stage again",
                    st.display()
                ),
            ));
        }
        Ok(())
    }
    /// `inbox/`.
    pub fn inbox(&self) -> PathBuf {
        self.root.join("inbox")
    }
    /// `.upkeep/`.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join(".upkeep")
    }
    /// `.upkeep/state.db`.
    pub fn state_db(&self) -> PathBuf {
        Self::state_db_of(&self.root)
    }
    /// `.upkeep/state.db` of the instance at `root`, for code that has only the root.
    pub fn state_db_of(root: &Path) -> PathBuf {
        root.join(".upkeep").join("state.db")
    }
    /// Partial downloads, keyed by SHA-256, on the same filesystem as staging.
    pub fn partial_dir(&self) -> PathBuf {
        self.state_dir().join("partial")
    }
    /// Refuse to read one of upkeep's own folders through a link (see [`Instance::own_dir`]);
    /// a missing folder is fine (it holds nothing).
    pub fn check_own_dir(&self, rel: &str) -> Result<()> {
        crate::base::beneath::no_links(&self.root, Path::new(rel)).map_err(|e| {
            Error::refused(
                format!("upkeep's folder {rel}: {e}"),
                format!(
                    "replace the link with a real folder inside the instance (`rm LINK && mkdir LINK` in {}); move what it held into it",
                    self.root.display()
                ),
            )
        })
    }
    /// One of upkeep's own folders (`.upkeep/partial`, `.upkeep/backups`, `.upkeep/aside/...`,
    /// `inbox`, `staging`), made when missing and refused when it, or a folder on the way to it
    /// below the root, is a symbolic link: upkeep never writes out of the instance by a link.
    pub fn own_dir(&self, rel: &str) -> Result<PathBuf> {
        crate::base::beneath::create_dir_all(&self.root, Path::new(rel)).map_err(|e| {
            Error::refused(
                format!("upkeep's folder {rel}: {e}"),
                format!(
                    "replace the link with a real folder inside the instance (`rm LINK && mkdir LINK` in {}); move what it held into it",
                    self.root.display()
                ),
            )
        })?;
        Ok(self.root.join(rel))
    }
    /// The site database: its engine and address, with its password read (from
    /// `password_file`, else `UPKEEP_DATABASE_PASSWORD`).
    pub fn database_target(&self) -> Result<crate::site::database::Target> {
        use crate::site::database::{Target, target};
        let settings = self.config.database.settings();
        let mut t = target::parse(&settings.url, &self.root).map_err(|reason| Error::Config {
            file: self.root.join("upkeep.toml"),
            reason,
        })?;
        if let Target::Mysql(s) | Target::Postgres(s) = &mut t {
            let file = settings.password_file.as_ref().map(|f| {
                let p = Path::new(f);
                if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    self.root.join(p)
                }
            });
            s.password = target::password(file.as_deref())?;
        }
        Ok(t)
    }
    /// The site database, ready to be asked (see [`crate::site::database`]).
    pub fn database(&self) -> Result<Box<dyn crate::site::database::SiteDatabase>> {
        let s = self.config.database.settings();
        crate::site::database::open(
            self.database_target()?,
            crate::site::database::Settings {
                lock_timeout: std::time::Duration::from_secs(s.lock_timeout_secs),
                lock_retries: s.lock_retries,
            },
        )
    }
    /// The SQLite file, when the site database is one.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        match crate::site::database::target::parse(self.config.database.url(), &self.root) {
            Ok(crate::site::database::Target::Sqlite(p)) => Some(p),
            _ => None,
        }
    }
    /// True when a path is excluded by `upkeep.toml`.
    pub fn excluded(&self, p: &RelPath) -> bool {
        is_excluded(&self.config.exclude, p)
    }
    /// True when upkeep.toml's `keep` names a path: never replaced nor removed.
    pub fn kept(&self, p: &RelPath) -> bool {
        self.keep.is_match(p.as_str())
    }
}

/// upkeep.toml's `keep`, compiled; the message names a bad glob.
fn keep_set(globs: &[String]) -> std::result::Result<globset::GlobSet, String> {
    let mut b = globset::GlobSetBuilder::new();
    for g in globs {
        let glob = globset::GlobBuilder::new(g.trim_start_matches('/'))
            .literal_separator(true)
            .build()
            .map_err(|e| format!("keep: {g:?} is not a glob ({e})"))?;
        b.add(glob);
    }
    b.build().map_err(|e| format!("keep: {e}"))
}
