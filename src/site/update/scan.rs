//! Extensions: folders holding an `extension.toml` (name, version, an optional schema fragment,
//! an optional run_once folder). Only two kinds count: those the signed release ships (the
//! `extension.toml` is a manifest entry and its content matches), and those in the folders the
//! operator lists in upkeep.toml (`extensions`). An `extension.toml` anywhere else, written by
//! an upload form or a plugin, is never read: nothing but the release and the operator decides
//! what schema or task a run applies.

use crate::base::error::{Error, IoContext, Result};
use crate::documents::manifest::{RelPath, VerifiedManifest, digest};
use crate::site::config::Instance;

pub use crate::site::plan::Extension;

const MANIFEST: &str = "extension.toml";

/// Parse the `extension.toml` at `rel` from its text.
fn parse(rel: &RelPath, text: &str, local: bool) -> Result<Extension> {
    let mut ext: Extension = toml::from_str(text).map_err(|e| {
        Error::refused(
            format!("{rel}: {e}"),
            "fix the extension's manifest (name, version, schema, run_once)",
        )
    })?;
    ext.path = rel.parent();
    ext.local = local;
    Ok(ext)
}

/// Read `rel` from `dir` without following a link.
pub(crate) fn read_beneath(dir: &std::path::Path, rel: &RelPath) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    rel.open_under(dir)
        .and_then(|mut f| std::io::Read::read_to_end(&mut f, &mut bytes))
        .ctx("read", &rel.under(dir))?;
    Ok(bytes)
}

/// The extensions of `release`, read from staging for the files `staged` says the run is
/// about to install (else from the live tree), each checked against the signed manifest; then
/// the operator's own. A release's `extension.toml` that was changed locally does not count
/// (it is listed among the locally modified files).
pub fn find(
    inst: &Instance,
    release: &VerifiedManifest,
    staged: &dyn Fn(&RelPath) -> bool,
) -> Result<Vec<Extension>> {
    let mut out = Vec::new();
    for e in release.files() {
        if e.path.as_str() != MANIFEST && !e.path.as_str().ends_with("/extension.toml") {
            continue;
        }
        let dir = if staged(&e.path) {
            inst.staging()
        } else {
            inst.root.clone()
        };
        let Ok(bytes) = read_beneath(&dir, &e.path) else {
            continue;
        };
        if digest::sha256_bytes(&bytes) != e.sha256 {
            continue;
        }
        out.push(parse(&e.path, &String::from_utf8_lossy(&bytes), false)?);
    }
    for folder in &inst.config.extensions {
        let folder = folder.trim_matches('/');
        let rel = RelPath::parse(&if folder.is_empty() {
            MANIFEST.to_string()
        } else {
            format!("{folder}/{MANIFEST}")
        })?;
        if out.iter().any(|x| x.path == rel.parent()) {
            continue;
        }
        let bytes = read_beneath(&inst.root, &rel).map_err(|e| {
            Error::refused(
                format!("extensions in upkeep.toml lists {folder:?}: {e}"),
                "put the extension's extension.toml there, or remove the folder from `extensions`",
            )
        })?;
        out.push(parse(&rel, &String::from_utf8_lossy(&bytes), true)?);
    }
    Ok(out)
}
