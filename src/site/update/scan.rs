//! Extensions: folders of the live tree holding an `extension.toml` (name, version, an optional
//! schema fragment, an optional run_once folder).

use std::path::Path;

use crate::base::error::{Error, IoContext, Result};
use crate::documents::manifest::RelPath;
use crate::documents::tree::{self, Walk};
use crate::site::config::Instance;
use crate::site::update::swap::{Action, Kind};

pub use crate::site::plan::Extension;

/// Read the `extension.toml` at `rel` (a path below the root).
fn parse(rel: &RelPath, path: &Path) -> Result<Extension> {
    let text = std::fs::read_to_string(path).ctx("read", path)?;
    let mut ext: Extension = toml::from_str(&text).map_err(|e| {
        Error::refused(
            format!("{rel}: {e}"),
            "fix the extension's manifest (name, version, schema, run_once)",
        )
    })?;
    ext.path = rel.parent();
    Ok(ext)
}

fn is_manifest(rel: &RelPath) -> bool {
    rel.as_str() == "extension.toml" || rel.as_str().ends_with("/extension.toml")
}

/// Find the extensions of the live tree (a walk of the whole tree: done before the site closes).
pub fn find(inst: &Instance) -> Result<Vec<Extension>> {
    let (files, _) = tree::walk(
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
    let mut by_path: std::collections::BTreeMap<Option<RelPath>, Extension> =
        before.iter().map(|e| (e.path.clone(), e.clone())).collect();
    for a in actions.iter().filter(|a| is_manifest(&a.path)) {
        let folder = a.path.parent();
        match a.kind {
            Kind::Remove => {
                by_path.remove(&folder);
            }
            Kind::Add | Kind::Replace => {
                let e = parse(&a.path, &a.path.under(&inst.root))?;
                by_path.insert(folder, e);
            }
            Kind::Keep | Kind::Displace => {}
        }
    }
    Ok(by_path.into_values().collect())
}
