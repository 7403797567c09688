//! Making the smaller forms a repository holds beside its objects (the forms themselves, and
//! how a site reads them, are [`crate::documents::forms`]): objects compressed whole, deltas
//! against earlier releases' files, documents with their gzip form.

use std::io::Write;
use std::path::Path;

use crate::base::error::{Error, IoContext, Result};
use crate::documents::forms::{GZ_SUFFIX, gzip, window_log};

/// The releases that release `version` has manifest deltas from in the repository at
/// `repo_dir`, newest first (what a channel pointer lists, as the latest pointer does).
pub fn manifest_deltas_in(repo_dir: &Path, version: &str) -> Vec<String> {
    let dir = repo_dir.join("releases").join(version);
    let mut olds: Vec<String> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let old = name.strip_prefix("manifest.from-")?.strip_suffix(".zst")?;
            crate::documents::manifest::parse_version(old).ok()?;
            Some(old.to_string())
        })
        .collect();
    olds.sort_by_key(|v| std::cmp::Reverse(crate::documents::manifest::parse_version(v).ok()));
    olds
}

/// Write `bytes` to `path` and its gzip form beside, each atomically (the gzip form first: the
/// document is what a site asks for).
pub fn write_with_gzip(path: &Path, bytes: &[u8]) -> Result<()> {
    let gz = path.with_file_name(format!(
        "{}{GZ_SUFFIX}",
        path.file_name().expect("a document path").to_string_lossy()
    ));
    crate::base::fsutil::write_atomic(&gz, &gzip(bytes))?;
    crate::base::fsutil::write_atomic(path, bytes)
}

/// Files up to this size are compressed in one call from memory, by a compressor each thread
/// keeps: zstd then sizes its tables to the file (a fresh context sized for any input costs
/// more in zeroed pages than compressing a small file does). Larger ones are streamed.
const IN_MEMORY_MAX: u64 = 32 << 20;

/// Compress `src` into `dst` (bounded memory whatever the size).
pub fn compress_file(src: &Path, dst: &mut impl Write, level: i32) -> Result<()> {
    let size = std::fs::metadata(src).ctx("stat", src)?.len();
    if size <= IN_MEMORY_MAX {
        thread_local! {
            static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
                const { std::cell::RefCell::new(None) };
        }
        let data = std::fs::read(src).ctx("read", src)?;
        let out = COMPRESSOR.with(|c| {
            let mut c = c.borrow_mut();
            if c.as_ref().is_none_or(|(l, _)| *l != level) {
                *c = Some((level, zstd::bulk::Compressor::new(level)?));
            }
            let (_, z) = c.as_mut().expect("set above");
            z.compress(&data)
        });
        return dst.write_all(&out.ctx("compress", src)?).ctx("write", src);
    }
    let f = std::fs::File::open(src).ctx("open", src)?;
    let mut enc = zstd::stream::write::Encoder::new(dst, level).ctx("compress", src)?;
    enc.set_pledged_src_size(Some(size)).ctx("compress", src)?;
    std::io::copy(
        &mut std::io::BufReader::with_capacity(256 << 10, f),
        &mut enc,
    )
    .ctx("compress", src)?;
    enc.finish().ctx("compress", src)?;
    Ok(())
}

/// A delta that rebuilds `new` from `old`.
pub fn make_delta(old: &[u8], new: &[u8], level: i32) -> Result<Vec<u8>> {
    use zstd::zstd_safe::{CCtx, CParameter};
    let fail = |what: &str, code: usize| {
        Error::msg(format!(
            "zstd {what}: {}",
            zstd::zstd_safe::get_error_name(code)
        ))
    };
    let mut cx = CCtx::create();
    cx.set_parameter(CParameter::CompressionLevel(level))
        .map_err(|c| fail("level", c))?;
    cx.set_parameter(CParameter::WindowLog(window_log(
        (old.len() + new.len()) as u64,
    )))
    .map_err(|c| fail("window", c))?;
    cx.set_parameter(CParameter::EnableLongDistanceMatching(true))
        .map_err(|c| fail("long distance", c))?;
    cx.ref_prefix(old).map_err(|c| fail("prefix", c))?;
    let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(new.len()));
    cx.compress2(&mut out, new)
        .map_err(|c| fail("compress", c))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::documents::forms::apply_delta;
    use crate::documents::manifest::digest;

    #[test]
    fn a_delta_rebuilds_the_new_file_from_the_old_and_is_small() {
        let old: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let mut new = old.clone();
        new.splice(1000..1010, b"an edit".iter().copied());
        let d = make_delta(&old, &new, 19).unwrap();
        assert!(d.len() < 1000, "{} bytes for a 1.9 MB file", d.len());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d");
        std::fs::write(&p, &d).unwrap();
        let mut out = Vec::new();
        let h = apply_delta(&d, &old, &mut out, &p, new.len() as u64)
            .unwrap()
            .unwrap();
        assert_eq!(out, new);
        assert_eq!(h.sha256, digest::sha256_bytes(&new));
        // Against another base it does not rebuild the file.
        let mut other = old.clone();
        other[5] ^= 1;
        let mut out = Vec::new();
        let r = apply_delta(&d, &other, &mut out, &p, new.len() as u64).unwrap();
        assert!(
            r.map(|h| h.sha256 != digest::sha256_bytes(&new))
                .unwrap_or(true)
        );
        // A bound below the true size stops the output there.
        let mut out = Vec::new();
        assert!(apply_delta(&d, &old, &mut out, &p, 100).unwrap().is_err());
        assert!(out.len() <= 128 << 10);
    }
}
