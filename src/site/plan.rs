//! The diff of a live tree against the installed release and a target release.

use std::collections::HashMap;

pub use crate::site::database::SchemaPlan;
use serde::{Deserialize, Serialize};

use std::path::Path;

use crate::base::error::Result;
use crate::documents::manifest::{Md5, RelPath, Sha256, VerifiedManifest};

/// What a live file looks like: enough to compare with a manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Live {
    /// Size in bytes.
    pub size: u64,
    /// MD5 of its contents.
    pub md5: Md5,
}

/// The lists `upkeep check` prints and `upkeep update` acts on.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Diff {
    /// The installed release, if known.
    pub installed: Option<String>,
    /// The release compared against.
    pub latest: String,
    /// In the latest release, absent from the live tree and the installed release.
    pub new: Vec<RelPath>,
    /// In the latest release and in the live tree (or the installed release), with other contents.
    pub changed: Vec<RelPath>,
    /// In the installed release and the live tree, not in the latest release.
    pub removed: Vec<RelPath>,
    /// Live files that already match the latest release.
    pub unchanged: usize,
    /// Files that match neither the installed release nor the latest: the operator changed them
    /// (or deleted them). Each also appears in `changed`, `new` or `removed`.
    pub modified: Vec<RelPath>,
    /// The latest release is older than the installed one: nothing to update (a downgrade is
    /// staged only with `--allow-downgrade`).
    #[serde(default)]
    pub older: bool,
    /// Release paths the instance excludes (`exclude` in upkeep.toml): never compared, fetched,
    /// swapped or rolled back, whatever the release ships there.
    #[serde(default)]
    pub excluded: Vec<RelPath>,
    /// Files the operator changed that the release does not change (the same content in the
    /// installed release and this one): left as they are, without a word or a `.bak`, the
    /// way dpkg treats a configuration file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub yours: Vec<RelPath>,
    /// Files upkeep.toml's `keep` names that this release would replace or remove: left as
    /// they are (the release's version of them is not installed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<RelPath>,
    /// Why this release is the one offered, when the site follows a channel with a rollout
    /// ("channel beta: release 1.2.0, in wave 1 of 3 (test), reached: ...").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer: Option<String>,
}

impl Diff {
    /// Compare. `live` holds the files that exist, keyed by path, for at least every path of both
    /// manifests.
    pub fn compute(
        installed: Option<&VerifiedManifest>,
        latest: &VerifiedManifest,
        live: &HashMap<&RelPath, Live>,
        excluded: &dyn Fn(&RelPath) -> bool,
    ) -> Diff {
        Self::compute_keeping(installed, latest, live, excluded, &|_| false)
    }

    /// [`Diff::compute`], with the files `kept` names (upkeep.toml's `keep`) never replaced
    /// nor removed when they exist live.
    pub fn compute_keeping(
        installed: Option<&VerifiedManifest>,
        latest: &VerifiedManifest,
        live: &HashMap<&RelPath, Live>,
        excluded: &dyn Fn(&RelPath) -> bool,
        kept: &dyn Fn(&RelPath) -> bool,
    ) -> Diff {
        let mut d = Diff {
            installed: installed.map(|m| m.version().to_string()),
            latest: latest.version().to_string(),
            ..Diff::default()
        };
        for f in latest.files() {
            if excluded(&f.path) {
                d.excluded.push(f.path.clone());
                continue;
            }
            let here = live.get(&f.path);
            let before = installed.and_then(|m| m.entry(&f.path));
            match (here, before) {
                (Some(l), _) if l.md5 == f.md5 && l.size == f.size => d.unchanged += 1,
                (None, None) => d.new.push(f.path.clone()),
                (Some(_), _) if kept(&f.path) => d.kept.push(f.path.clone()),
                // Changed here, and the release does not change it: the operator's to keep.
                (Some(_), Some(b))
                    if b.sha256 == f.sha256 && b.md5 == f.md5 && b.size == f.size =>
                {
                    d.yours.push(f.path.clone());
                }
                (Some(l), Some(b)) => {
                    if l.md5 != b.md5 || l.size != b.size {
                        d.modified.push(f.path.clone());
                    }
                    d.changed.push(f.path.clone());
                }
                (Some(_), None) | (None, Some(_)) => {
                    // A local file the installed release does not know, or a release file the
                    // operator deleted: either way the operator's intent is at stake.
                    d.modified.push(f.path.clone());
                    d.changed.push(f.path.clone());
                }
            }
        }
        if let Some(inst) = installed {
            for f in inst.files() {
                if latest.entry(&f.path).is_some() {
                    continue;
                }
                if excluded(&f.path) {
                    d.excluded.push(f.path.clone());
                    continue;
                }
                if let Some(l) = live.get(&f.path) {
                    if kept(&f.path) {
                        d.kept.push(f.path.clone());
                        continue;
                    }
                    if l.md5 != f.md5 || l.size != f.size {
                        d.modified.push(f.path.clone());
                    }
                    d.removed.push(f.path.clone());
                }
            }
        }
        d.modified.sort();
        d
    }

    /// True when there is nothing to update: the live tree already is the latest release, or
    /// the latest release is older than the installed one.
    pub fn up_to_date(&self) -> bool {
        self.older || (self.new.is_empty() && self.changed.is_empty() && self.removed.is_empty())
    }

    /// Files to fetch into staging: new and changed.
    pub fn needed(&self) -> impl Iterator<Item = &RelPath> {
        self.new.iter().chain(self.changed.iter())
    }
}

/// What happens to one path.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A new file.
    Add,
    /// The live file becomes NAME.bak; the staged one takes its place.
    Replace,
    /// The live file becomes NAME.bak.
    Remove,
    /// A locally modified file left as it is (`--keep-modified`).
    Keep,
    /// Something in the way of a new file (a folder that becomes a file, a local file where
    /// the release needs a folder): moved whole into `.upkeep/aside/`, put back by rollback.
    Displace,
}

/// One planned change.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Action {
    /// The path.
    pub path: RelPath,
    /// What happens.
    pub kind: Kind,
    /// The live file matched neither release.
    pub modified: bool,
    /// The SHA-256 of the file that goes live (added or replaced), from the signed manifest.
    #[serde(default)]
    pub sha256: Option<Sha256>,
    /// For a modified file kept as it is: what the release would have done with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo_keep: Option<Kind>,
    /// The release marks the file executable (installed with the execute bits).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exec: bool,
    /// The live file's backup goes under `.upkeep/aside/run-N/backup/` instead of beside it:
    /// `[files] backups = "aside"`, or `NAME.bak` is itself a release file.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub backup_aside: bool,
}

/// What an `extension.toml` declares.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Extension {
    /// The folder, relative to the root; `None` for the root itself (written "" in JSON).
    #[serde(default, with = "folder_text")]
    pub path: Option<RelPath>,
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// SQL DDL fragment for SQLite, relative to the folder.
    #[serde(default)]
    pub schema: Option<String>,
    /// The same for MariaDB/MySQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_mysql: Option<String>,
    /// The same for PostgreSQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_postgresql: Option<String>,
    /// Folder of run_once tasks, relative to the folder.
    #[serde(default)]
    pub run_once: Option<String>,
    /// The operator's own (listed in upkeep.toml), not the release's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub local: bool,
}

impl Extension {
    /// Its schema fragment for `engine`, as extension.toml names it.
    pub fn schema_for(&self, engine: crate::site::database::Engine) -> Option<&String> {
        use crate::site::database::Engine;
        match engine {
            Engine::Sqlite => self.schema.as_ref(),
            Engine::Mysql => self.schema_mysql.as_ref(),
            Engine::Postgres => self.schema_postgresql.as_ref(),
        }
    }
    /// The folder as text: "" for the root.
    pub fn folder(&self) -> &str {
        self.path.as_ref().map(RelPath::as_str).unwrap_or_default()
    }
    /// A path the extension names (its schema, its run_once folder), checked to stay inside
    /// the instance.
    pub fn resolve_rel(&self, rel: &str) -> Result<RelPath> {
        let rel = rel.trim_end_matches('/');
        RelPath::parse(&match &self.path {
            None => rel.to_string(),
            Some(dir) => format!("{dir}/{rel}"),
        })
    }
    /// [`Extension::resolve_rel`] below `root`.
    pub fn resolve(&self, root: &Path, rel: &str) -> Result<std::path::PathBuf> {
        Ok(self.resolve_rel(rel)?.under(root))
    }
}

/// An extension folder in JSON: "" for the root, as written before it was typed.
mod folder_text {
    use crate::documents::manifest::RelPath;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &Option<RelPath>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(p.as_ref().map(RelPath::as_str).unwrap_or_default())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RelPath>, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Ok(None);
        }
        RelPath::parse(&s)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

/// A task that is not from the release but that the operator allowed by name, with the
/// SHA-256 of the content that was reviewed (another content under that name does not run).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AllowedTask {
    /// Path relative to the root.
    pub path: RelPath,
    /// What its content hashed to at review.
    pub sha256: Sha256,
}

/// What a run will do; shown for review and kept with the run. Its [`Plan::digest`] names
/// exactly this plan: the operator approves a digest, and a run starts only if the plan it
/// would run now has the same one.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Plan {
    /// Installed release.
    pub from: Option<String>,
    /// Staged release.
    pub to: String,
    /// The identity of the staged release's signed manifest (see
    /// [`VerifiedManifest::id`]): two manifests of one version never share it.
    #[serde(default)]
    pub release: String,
    /// Locally modified files are left as they are.
    #[serde(default)]
    pub keep_modified: bool,
    /// Every file change, in swap order.
    pub actions: Vec<Action>,
    /// Locally modified files (also among the actions).
    pub modified: Vec<RelPath>,
    /// Files changed here that the release does not change: left as they are ([`Diff::yours`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub yours: Vec<RelPath>,
    /// Files upkeep.toml's `keep` names that the release would change: left as they are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<RelPath>,
    /// run_once tasks that will run: those the release ships, and those the operator allowed.
    pub tasks: Vec<RelPath>,
    /// Task files in the run_once folders that the release does not ship: not run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub foreign_tasks: Vec<RelPath>,
    /// Tasks not from the release that the operator allowed by name (`--allow-task`), with
    /// the hash of the content reviewed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_tasks: Vec<AllowedTask>,
    /// Schema changes.
    pub schema: SchemaPlan,
    /// What the operator should know of a task before approving ("run_once/002.sql holds
    /// DDL, which MySQL cannot undo by a transaction").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub task_notes: Vec<String>,
    /// SQL tasks whose done-mark the site database already holds (a rollback kept the database
    /// with their work): listed apart, not run again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub done_in_database: Vec<RelPath>,
    /// Bytes of the files to install.
    pub bytes: u64,
    /// Files in run_once folders that are not tasks (neither `.sh` nor `.sql`): never run.
    #[serde(default)]
    pub not_tasks: Vec<RelPath>,
    /// A run that finishes an update made by copying the release over the tree (`upkeep
    /// finish`): no files to swap, and a rollback can restore only the database.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub finish: bool,
    /// Existing `NAME.bak` files beside files the release replaces or removes. Those the swap
    /// would overwrite ([`Plan::moved_aside`]: not beside a kept file) are moved into
    /// `.upkeep/aside/` first; a rollback puts them back, after a successful run they stay.
    #[serde(default)]
    pub kept_aside: Vec<RelPath>,
    /// Extensions of the live tree, found before the site closes (the scan step applies the
    /// plan's changes to them instead of walking the tree while closed).
    #[serde(default)]
    pub extensions: Vec<Extension>,
}

impl Plan {
    /// The tasks the run will run: those of `tasks` whose work the database does not already
    /// hold.
    pub fn tasks_to_run(&self) -> impl Iterator<Item = &RelPath> {
        self.tasks
            .iter()
            .filter(|t| !self.done_in_database.contains(t))
    }

    /// The plan's identity: a SHA-256 of everything it will do (the release, the installed
    /// version, every file action with the hash it installs, the tasks, the schema changes, the
    /// keep-modified choice), shown to the operator as 16 hex digits.
    pub fn digest(&self) -> String {
        let bytes = serde_json::to_vec(self).expect("a plan serialises");
        crate::documents::manifest::digest::sha256_bytes(&bytes).to_hex()[..16].to_string()
    }

    /// The same plan with locally modified files kept as they are (or not): the review shows
    /// one plan and offers both choices, each with its own digest. What is in the way of a new
    /// file cannot be kept: it is displaced either way.
    pub fn with_keep_modified(&self, keep: bool) -> Plan {
        let mut p = self.clone();
        p.keep_modified = keep;
        for a in p
            .actions
            .iter_mut()
            .filter(|a| a.modified && a.kind != Kind::Displace)
        {
            match (keep, a.kind) {
                (true, Kind::Add | Kind::Replace | Kind::Remove) => {
                    a.undo_keep = Some(a.kind);
                    a.kind = Kind::Keep;
                }
                (false, Kind::Keep) => {
                    if let Some(k) = a.undo_keep.take() {
                        a.kind = k;
                    }
                }
                _ => {}
            }
        }
        p
    }

    /// The existing backups the swap moves aside: those of files it backs up (a locally
    /// modified file kept as it is keeps its `NAME.bak` in place).
    pub fn moved_aside(&self) -> Vec<&RelPath> {
        let kept: std::collections::HashSet<RelPath> = self
            .actions
            .iter()
            .filter(|a| a.kind == Kind::Keep)
            .map(|a| a.path.with_suffix(crate::documents::manifest::relpath::BAK))
            .collect();
        self.kept_aside
            .iter()
            .filter(|b| !kept.contains(*b))
            .collect()
    }

    /// Paths of one kind.
    pub fn of(&self, kind: Kind) -> Vec<&RelPath> {
        self.actions
            .iter()
            .filter(|a| a.kind == kind)
            .map(|a| &a.path)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::documents::manifest::{
        FORMAT, FileEntry, Manifest, SecretKey, digest::Hasher, to_bytes,
    };

    fn md5_of(s: &str) -> Md5 {
        let mut h = Hasher::default();
        h.update(s.as_bytes());
        h.finish().md5
    }

    fn release(k: &SecretKey, v: &str, files: &[(&str, &str)]) -> VerifiedManifest {
        let m = Manifest {
            format: FORMAT,
            version: v.into(),
            date: "2026-01-01T00:00:00Z".into(),
            expires: "2099-01-01T00:00:00Z".into(),
            previous: None,
            notes: String::new(),
            min_upkeep: "0.1.0".into(),
            urgent: false,
            files: files
                .iter()
                .map(|(p, c)| FileEntry {
                    path: RelPath::parse(p).unwrap(),
                    size: c.len() as u64,
                    md5: md5_of(c),
                    sha256: crate::documents::manifest::digest::sha256_bytes(c.as_bytes()),
                    exec: false,
                })
                .collect(),
        };
        let b = to_bytes(&m);
        VerifiedManifest::verify(b.clone(), k.sign(&b), &k.public(), "t").unwrap()
    }

    fn live(files: &[(&str, &str)]) -> HashMap<&'static RelPath, Live> {
        files
            .iter()
            .map(|(p, c)| {
                (
                    &*Box::leak(Box::new(RelPath::parse(p).unwrap())),
                    Live {
                        size: c.len() as u64,
                        md5: md5_of(c),
                    },
                )
            })
            .collect()
    }

    fn names(v: &[RelPath]) -> Vec<&str> {
        v.iter().map(|p| p.as_str()).collect()
    }

    #[test]
    fn lists_1() {
        let k = SecretKey::generate().unwrap();
        let a = release(
            &k,
            "1.0.0",
            &[("same", "s"), ("chg", "1"), ("gone", "g"), ("mine", "m")],
        );
        let b = release(
            &k,
            "1.1.0",
            &[("same", "s"), ("chg", "2"), ("add", "a"), ("mine", "m2")],
        );
        let d = Diff::compute(
            Some(&a),
            &b,
            &live(&[
                ("same", "s"),
                ("chg", "1"),
                ("gone", "g"),
                ("mine", "edited"),
            ]),
            &|_| false,
        );
        assert_eq!(names(&d.new), ["add"]);
        assert_eq!(names(&d.changed), ["chg", "mine"]);
        assert_eq!(names(&d.removed), ["gone"]);
        assert_eq!(names(&d.modified), ["mine"]);
        assert_eq!(d.unchanged, 1);
        assert!(!d.up_to_date());
    }
    #[test]
    fn fresh_install_2() {
        let k = SecretKey::generate().unwrap();
        let b = release(&k, "1.0.0", &[("x", "1"), ("y", "2")]);
        let d = Diff::compute(None, &b, &HashMap::new(), &|_| false);
        assert_eq!(names(&d.new), ["x", "y"]);
        assert!(d.modified.is_empty());
    }
    #[test]
    fn up_to_date_3() {
        let k = SecretKey::generate().unwrap();
        let b = release(&k, "1.0.0", &[("x", "1")]);
        let d = Diff::compute(Some(&b), &b, &live(&[("x", "1")]), &|_| false);
        assert!(d.up_to_date());
        assert_eq!(d.unchanged, 1);
    }
    #[test]
    fn excluded_paths_are_reported_and_nothing_else() {
        let k = SecretKey::generate().unwrap();
        let a = release(&k, "1.0.0", &[("x", "1"), ("up/old.jpg", "o")]);
        let b = release(&k, "1.1.0", &[("x", "2"), ("up/photo.jpg", "p")]);
        let d = Diff::compute(
            Some(&a),
            &b,
            &live(&[("x", "1"), ("up/photo.jpg", "mine"), ("up/old.jpg", "o")]),
            &|p| p.top() == "up",
        );
        assert_eq!(names(&d.changed), ["x"]);
        assert!(d.new.is_empty() && d.removed.is_empty() && d.modified.is_empty());
        assert_eq!(names(&d.excluded), ["up/photo.jpg", "up/old.jpg"]);
    }

    #[test]
    fn deleted_locally_is_modified() {
        let k = SecretKey::generate().unwrap();
        let a = release(&k, "1.0.0", &[("x", "1")]);
        let d = Diff::compute(Some(&a), &a, &HashMap::new(), &|_| false);
        assert_eq!(names(&d.changed), ["x"]);
        assert_eq!(names(&d.modified), ["x"]);
    }
}
