//! Smaller forms of objects: each object compressed whole (zstd), and per-file deltas against
//! the same path's content in earlier releases (zstd with the old file as a reference prefix,
//! zstd's "patch from"). Static, content-addressed, immutable files any server or mirror can
//! hold, listed per release in `releases/V/forms.json` so a site never guesses (a 404 costs a
//! round trip).
//!
//! The list is not signed and need not be: a form is only a way to carry an object's bytes,
//! and what it decodes to is checked against the signed manifest's SHA-256 before it counts.
//! A form that is missing, damaged or decodes to anything else is dropped for the next smaller
//! form that works, down to the raw object.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::base::error::{IoContext, Result};
use crate::documents::manifest::Sha256;

/// The list's format.
pub const FORMS_FORMAT: u32 = 1;
/// Largest forms list a site reads.
pub const MAX_FORMS_DOC: u64 = 64 << 20;
/// Largest window a site accepts for a compressed object (zstd's own default limit, 128 MiB):
/// what decoding may allocate, whatever the frame asks.
const ZST_WINDOW_LOG_MAX: u32 = 27;
/// Largest old + new size a delta is built or applied for: both are held in memory.
pub const DELTA_MAX_DEFAULT: u64 = 64 << 20;

/// The forms of a release's objects. Objects are named by [`key`], the first 16 hex digits of
/// their SHA-256: a site looks up the objects its signed manifests name, and the full names
/// would make the list three times larger for no safety (a form is checked by what it decodes
/// to, and a clash would only cost a fall back).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forms {
    /// [`FORMS_FORMAT`].
    pub format: u32,
    /// Objects stored compressed, with the compressed size.
    #[serde(default)]
    pub zst: BTreeMap<String, u64>,
    /// Per object, deltas by the base they apply to, with their size.
    #[serde(default)]
    pub deltas: BTreeMap<String, BTreeMap<String, u64>>,
}

/// How the forms list names an object.
pub fn key(sha: &Sha256) -> String {
    let mut s = sha.to_hex();
    s.truncate(16);
    s
}

impl Forms {
    /// The compressed size of an object, if it is stored compressed.
    pub fn zst_of(&self, sha: &Sha256) -> Option<u64> {
        self.zst.get(&key(sha)).copied()
    }
    /// The size of the delta that rebuilds `sha` from `base`, if there is one.
    pub fn delta_of(&self, sha: &Sha256, base: &Sha256) -> Option<u64> {
        self.deltas.get(&key(sha))?.get(&key(base)).copied()
    }
}

/// The form an object travels in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Form {
    /// The object itself.
    Raw,
    /// Compressed whole.
    Zst,
    /// A delta against the object with this SHA-256 (the live file).
    Delta(Sha256),
    /// Whichever the server holds that is smallest: a delta from this base if given and held,
    /// else the compressed object if held, else the object itself. Only `upkeep reference`
    /// answers it (in a batch, whose frame names the form sent): a site needs no forms list.
    Best(Option<Sha256>),
}

impl Form {
    /// The repository file that holds object `sha` in this form.
    pub fn path(&self, sha: &Sha256) -> String {
        match self {
            Form::Raw | Form::Best(_) => crate::documents::repo::object_path(sha),
            Form::Zst => zst_path(sha),
            Form::Delta(b) => delta_path(b, sha),
        }
    }

    /// The forms a server may send for this one, to be tried in order: for [`Form::Best`],
    /// the delta from its base, the compressed object and the object itself (the first held is
    /// the smallest: a form is only stored when smaller than the next); any other form alone.
    pub fn choices(&self) -> Vec<Form> {
        match self {
            Form::Best(base) => base
                .map(Form::Delta)
                .into_iter()
                .chain([Form::Zst, Form::Raw])
                .collect(),
            f => vec![f.clone()],
        }
    }

    /// How a batch line and frame name it, after the offset or length: ` z`, ` d:BASE`, or
    /// nothing for the object itself.
    pub fn token(&self) -> String {
        match self {
            Form::Raw => String::new(),
            Form::Zst => " z".into(),
            Form::Delta(b) => format!(" d:{b}"),
            Form::Best(None) => " *".into(),
            Form::Best(Some(b)) => format!(" *:{b}"),
        }
    }

    /// The form a batch line names (`None`: a word that names none).
    pub fn parse_token(word: Option<&str>) -> Option<Form> {
        match word {
            None => Some(Form::Raw),
            Some("z") => Some(Form::Zst),
            Some("*") => Some(Form::Best(None)),
            Some(d) => {
                if let Some(b) = d.strip_prefix("*:") {
                    return Sha256::from_hex(b).map(|b| Form::Best(Some(b)));
                }
                d.strip_prefix("d:")
                    .and_then(Sha256::from_hex)
                    .map(Form::Delta)
            }
        }
    }
}

/// `releases/V/forms.json`.
pub fn forms_path(version: &str) -> String {
    format!("releases/{version}/forms.json")
}

/// `releases/V/manifest.from-OLD.zst`: release V's manifest as a delta against release OLD's
/// (most entries of a manifest are the previous one's: a site that has it fetches a few
/// kilobytes instead of the whole list). The signed pointer lists the OLD versions.
pub fn manifest_delta_path(version: &str, old: &str) -> String {
    format!("releases/{version}/manifest.from-{old}.zst")
}

/// `objects/ab/SHA.zst`: an object compressed whole.
pub fn zst_path(sha: &Sha256) -> String {
    format!("{}.zst", crate::documents::repo::object_path(sha))
}

/// `deltas/BASE/SHA.zst`: object SHA as a delta against object BASE.
pub fn delta_path(base: &Sha256, sha: &Sha256) -> String {
    format!("deltas/{base}/{sha}.zst")
}

/// What a compressed document is named beside the document (`manifest.json.gz`): served with
/// `Content-Encoding: gzip` to clients that accept it, by `upkeep reference` and by nginx's
/// `gzip_static`.
pub const GZ_SUFFIX: &str = ".gz";

/// The gzip form of a document, the same bytes for the same document (no time, no name in the
/// header), so that a mirror that makes its own equals the origin's.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(bytes).expect("writing to memory");
    e.finish().expect("writing to memory")
}

/// zstd's window log that covers `n` bytes (a prefix and its successor must both fit): the
/// window a delta is made with and the most its decoder accepts.
pub fn window_log(n: u64) -> u32 {
    (64 - n.max(1).leading_zeros()).clamp(10, 31)
}

/// Why a form could not be used (the object is then fetched in another form).
#[derive(Debug)]
pub struct Unusable(pub String);

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What decoding wrote: the hashes of the result, to be compared with the manifest's.
type Decoded = std::result::Result<Rebuilt, Unusable>;

/// The SHA-256 and size of what a form decoded to (no MD5: only the signed SHA-256 decides).
#[derive(Clone, Copy, Debug)]
pub struct Rebuilt {
    /// SHA-256 of the decoded bytes.
    pub sha256: Sha256,
    /// Their count.
    pub size: u64,
}

/// Where decoded bytes go: written out and hashed, no more than `size` of them (a
/// decompression bomb stops there).
struct Bounded<'a> {
    out: &'a mut dyn Write,
    out_path: &'a Path,
    size: u64,
    seen: u64,
    h: sha2::Sha256,
}

impl<'a> Bounded<'a> {
    fn new(out: &'a mut dyn Write, out_path: &'a Path, size: u64) -> Self {
        Bounded {
            out,
            out_path,
            size,
            seen: 0,
            h: sha2::Sha256::default(),
        }
    }

    /// Take decoded bytes; `Ok(Err(..))` past the size.
    fn take(&mut self, b: &[u8]) -> Result<std::result::Result<(), Unusable>> {
        self.seen += b.len() as u64;
        if self.seen > self.size {
            return Ok(Err(Unusable(format!(
                "it decodes to more than the {} bytes the signed manifest declares",
                self.size
            ))));
        }
        sha2::Digest::update(&mut self.h, b);
        self.out.write_all(b).ctx("write", self.out_path)?;
        Ok(Ok(()))
    }

    fn done(self) -> Decoded {
        Ok(Rebuilt {
            sha256: Sha256(sha2::Digest::finalize(self.h).into()),
            size: self.seen,
        })
    }
}

/// Copy what `read` yields into `to`.
fn drain(read: &mut dyn Read, mut to: Bounded) -> Result<Decoded> {
    let mut buf = vec![0u8; 128 << 10];
    loop {
        let n = match read.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => return Ok(Err(Unusable(format!("it does not decode ({e})")))),
        };
        if let Err(u) = to.take(&buf[..n])? {
            return Ok(Err(u));
        }
    }
    Ok(to.done())
}

/// Decode a compressed object read from `src` into `out` (at most `size` bytes, a bounded
/// window).
pub fn decode_zst(
    src: impl Read,
    out: &mut dyn Write,
    out_path: &Path,
    size: u64,
) -> Result<Decoded> {
    let mut d = match zstd::stream::read::Decoder::new(src) {
        Ok(d) => d,
        Err(e) => return Ok(Err(Unusable(format!("it does not decode ({e})")))),
    };
    if let Err(e) = d.window_log_max(ZST_WINDOW_LOG_MAX) {
        return Ok(Err(Unusable(format!("it does not decode ({e})"))));
    }
    drain(&mut d, Bounded::new(out, out_path, size))
}

fn unusable(code: usize) -> Result<Decoded> {
    Ok(Err(Unusable(format!(
        "it does not decode ({})",
        zstd::zstd_safe::get_error_name(code)
    ))))
}

/// Decode a compressed object held in memory into `out` (at most `size` bytes, a bounded
/// window). One decoding context per thread: making one per object cost more than decoding a
/// small one.
pub fn decode_zst_bytes(
    src: &[u8],
    out: &mut dyn Write,
    out_path: &Path,
    size: u64,
) -> Result<Decoded> {
    use zstd::zstd_safe::{DCtx, DParameter, ResetDirective};
    thread_local! {
        static DX: std::cell::RefCell<DCtx<'static>> = std::cell::RefCell::new(DCtx::create());
    }
    DX.with(|dx| {
        let mut dx = dx.borrow_mut();
        if let Err(c) = dx.reset(ResetDirective::SessionAndParameters) {
            return unusable(c);
        }
        if let Err(c) = dx.set_parameter(DParameter::WindowLogMax(ZST_WINDOW_LOG_MAX)) {
            return unusable(c);
        }
        stream(&mut dx, src, Bounded::new(out, out_path, size))
    })
}

/// Apply the delta in `src` to `base` (the file it was built against), writing the result to
/// `out` (at most `size` bytes).
pub fn apply_delta(
    delta: &[u8],
    base: &[u8],
    out: &mut dyn Write,
    out_path: &Path,
    size: u64,
) -> Result<Decoded> {
    use zstd::zstd_safe::{DCtx, DParameter};
    let mut dx = DCtx::create();
    if let Err(c) = dx.set_parameter(DParameter::WindowLogMax(window_log(
        base.len() as u64 + size,
    ))) {
        return unusable(c);
    }
    if let Err(c) = dx.ref_prefix(base) {
        return unusable(c);
    }
    stream(&mut dx, delta, Bounded::new(out, out_path, size))
}

/// Decode all of `src` with `dx` into `to`.
fn stream(dx: &mut zstd::zstd_safe::DCtx, src: &[u8], mut to: Bounded) -> Result<Decoded> {
    use zstd::zstd_safe::{InBuffer, OutBuffer};
    let mut input = InBuffer::around(src);
    let mut buf = vec![0u8; 128 << 10];
    loop {
        let mut output = OutBuffer::around(&mut buf[..]);
        let left = match dx.decompress_stream(&mut output, &mut input) {
            Ok(left) => left,
            Err(c) => return unusable(c),
        };
        let n = output.pos();
        if let Err(u) = to.take(&buf[..n])? {
            return Ok(Err(u));
        }
        if left == 0 {
            break;
        }
        if n == 0 && input.pos() == src.len() {
            return Ok(Err(Unusable("it is cut short".into())));
        }
    }
    Ok(to.done())
}
