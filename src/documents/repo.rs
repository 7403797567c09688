//! The reference repository layout: static files any HTTP server can serve and mirror.
//!
//! ```text
//! latest.json, latest.sig                  signed pointer to the latest release
//! releases/V/manifest.json, manifest.sig   one signed manifest per release
//! releases/V/upkeep-V.zip                  the full release zip (manifest inside)
//! objects/ab/abcdef...                     file contents by SHA-256, immutable
//! objects/ab/abcdef....zst                 the same, compressed (when it saves)
//! deltas/OLD/NEW.zst                       object NEW as a delta against object OLD
//! releases/V/forms.json                    the compressed objects and deltas of release V
//! releases/V/*.json.gz                     those documents gzipped, for Accept-Encoding
//! keys/online.json, online.sig             the online keys, delegated by the release key
//! channels/NAME.json, NAME.sig             a channel's rollout, signed by an online key
//! ```

use crate::documents::manifest::Sha256;

/// The pointer file.
pub const POINTER: &str = "latest.json";
/// The pointer's signature.
pub const POINTER_SIG: &str = "latest.sig";

/// A release's manifest, relative to the repository.
pub fn manifest_path(version: &str) -> String {
    format!("releases/{version}/manifest.json")
}
/// A release's manifest signature.
pub fn manifest_sig_path(version: &str) -> String {
    format!("releases/{version}/manifest.sig")
}
/// A release's full zip.
pub fn zip_path(version: &str) -> String {
    format!("releases/{version}/upkeep-{version}.zip")
}
/// A content-addressed object.
pub fn object_path(sha: &Sha256) -> String {
    let h = sha.to_hex();
    format!("objects/{}/{}", &h[..2], h)
}

/// Whether `rel` is a file of the repository layout: only those are served (a key, a note or a
/// link someone left in the folder is not).
pub fn is_layout_path(rel: &crate::documents::manifest::RelPath) -> bool {
    let parts: Vec<&str> = rel.as_str().split('/').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    match parts.as_slice() {
        [POINTER] | [POINTER_SIG] => true,
        ["releases", v, f] => {
            crate::documents::manifest::parse_version(v).is_ok()
                && (*f == "manifest.json"
                    || *f == "manifest.sig"
                    || *f == "forms.json"
                    || *f == "manifest.json.gz"
                    || *f == "forms.json.gz"
                    || f.strip_prefix("manifest.from-")
                        .and_then(|x| x.strip_suffix(".zst"))
                        .is_some_and(|old| crate::documents::manifest::parse_version(old).is_ok())
                    || *f == format!("upkeep-{v}.zip"))
        }
        ["objects", d, h] => {
            let h = h.strip_suffix(".zst").unwrap_or(h);
            hex(d, 2) && hex(h, 64) && h.starts_with(d)
        }
        ["deltas", old, new] => {
            hex(old, 64) && new.strip_suffix(".zst").is_some_and(|n| hex(n, 64))
        }
        ["keys", "online.json" | "online.sig"] | ["channels", "index.json"] => true,
        ["channels", f] => f
            .strip_suffix(".json")
            .or_else(|| f.strip_suffix(".sig"))
            .is_some_and(crate::documents::channel::valid_name),
        _ => false,
    }
}

/// The request header by which a client asks for numbered frames, and the answer's header that
/// says it gets them (a server that predates them ignores the header and sends named frames).
pub const NUMBERED_FRAMES: &str = "upkeep-batch-frames";
