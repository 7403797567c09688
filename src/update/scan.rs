//! Extensions: folders of the live tree holding an `extension.toml` (name, version, an optional
//! schema fragment, an optional run_once folder).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::Instance;
use crate::error::{DbContext, Error, IoContext, Result};
use crate::fingerprint::{self, Walk};
use crate::manifest::RelPath;
use crate::state::State;
use crate::update::swap::{Action, Kind};

/// What an `extension.toml` declares.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Extension {
    /// The folder, relative to the root.
    #[serde(default)]
    pub path: String,
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// SQL DDL fragment, relative to the folder.
    #[serde(default)]
    pub schema: Option<String>,
    /// Folder of run_once tasks, relative to the folder.
    #[serde(default)]
    pub run_once: Option<String>,
}

impl Extension {
    /// The extension's folder.
    pub fn dir(&self, root: &Path) -> Result<std::path::PathBuf> {
        Ok(if self.path.is_empty() {
            root.to_path_buf()
        } else {
            RelPath::parse(&self.path)?.under(root)
        })
    }
    /// A path the extension names, checked to stay inside the instance.
    pub fn resolve(&self, root: &Path, rel: &str) -> Result<std::path::PathBuf> {
        let joined = if self.path.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{}", self.path, rel.trim_end_matches('/'))
        };
        Ok(RelPath::parse(&joined)?.under(root))
    }
}

/// Read the `extension.toml` at `rel` (a path below the root).
fn parse(rel: &RelPath, path: &Path) -> Result<Extension> {
    let text = std::fs::read_to_string(path).ctx("read", path)?;
    let mut ext: Extension = toml::from_str(&text).map_err(|e| {
        Error::refused(
            format!("{rel}: {e}"),
            "fix the extension's manifest (name, version, schema, run_once)",
        )
    })?;
    ext.path = rel
        .as_str()
        .strip_suffix("extension.toml")
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_string();
    Ok(ext)
}

fn is_manifest(rel: &RelPath) -> bool {
    rel.as_str() == "extension.toml" || rel.as_str().ends_with("/extension.toml")
}

/// Find the extensions of the live tree (a walk of the whole tree: done before the site closes).
pub fn find(inst: &Instance) -> Result<Vec<Extension>> {
    let (files, _) = fingerprint::walk(
        &inst.root,
        &Walk {
            instance: true,
            excludes: inst.config.exclude.clone(),
            strict: false,
        },
    )?;
    files
        .iter()
        .filter(|f| is_manifest(&f.rel))
        .map(|f| parse(&f.rel, &f.path(&inst.root)))
        .collect()
}

/// The extensions after a swap: those found before the site closed, with the plan's changes to
/// `extension.toml` files applied. Only the swapped manifests are read, so the scan step costs
/// nothing like a walk of the tree while visitors wait.
pub fn after_swap(
    inst: &Instance,
    before: &[Extension],
    actions: &[Action],
) -> Result<Vec<Extension>> {
    let mut by_path: std::collections::BTreeMap<String, Extension> =
        before.iter().map(|e| (e.path.clone(), e.clone())).collect();
    for a in actions.iter().filter(|a| is_manifest(&a.path)) {
        let folder = a
            .path
            .as_str()
            .strip_suffix("extension.toml")
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_string();
        match a.kind {
            Kind::Remove => {
                by_path.remove(&folder);
            }
            Kind::Add | Kind::Replace => {
                let e = parse(&a.path, &a.path.under(&inst.root))?;
                by_path.insert(folder, e);
            }
            Kind::Keep => {}
        }
    }
    Ok(by_path.into_values().collect())
}

/// Record the extensions found.
pub fn record(state: &State, exts: &[Extension]) -> Result<()> {
    state
        .conn
        .execute("DELETE FROM extensions", [])
        .db(state.path())?;
    for e in exts {
        state
            .conn
            .execute(
                "INSERT INTO extensions(path, name, version, schema, run_once) VALUES(?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![e.path, e.name, e.version, e.schema, e.run_once],
            )
            .db(state.path())?;
    }
    Ok(())
}

/// The recorded extensions.
pub fn recorded(state: &State) -> Result<Vec<Extension>> {
    let mut st = state
        .conn
        .prepare("SELECT path, name, version, schema, run_once FROM extensions ORDER BY path")
        .db(state.path())?;
    let rows = st
        .query_map([], |r| {
            Ok(Extension {
                path: r.get(0)?,
                name: r.get(1)?,
                version: r.get(2)?,
                schema: r.get(3)?,
                run_once: r.get(4)?,
            })
        })
        .db(state.path())?;
    rows.collect::<rusqlite::Result<Vec<_>>>().db(state.path())
}
