//! Fetching objects from the reference: one streamed `POST /batch` when the server is
//! `upkeep reference`, concurrent keep-alive GETs when it is a plain static server. Partial files
//! live in `.upkeep/partial/SHA256.part` and are continued, never restarted; a finished object is
//! renamed to `.upkeep/partial/SHA256` only after its SHA-256 matched.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use crate::error::{Error, IoContext, Result};
use crate::manifest::{Sha256, digest};
use crate::progress::Progress;
use crate::reference::client::{Remote, backoff, describe};
use crate::reference::repo;

/// One object to fetch.
#[derive(Clone, Debug)]
pub struct Wanted {
    /// Its SHA-256, from the signed manifest.
    pub sha: Sha256,
    /// Its size, from the signed manifest.
    pub size: u64,
}

/// Where a verified object waits to be placed into staging.
pub fn done_path(dir: &Path, sha: &Sha256) -> PathBuf {
    dir.join(sha.to_hex())
}

fn part_path(dir: &Path, sha: &Sha256) -> PathBuf {
    dir.join(format!("{}.part", sha.to_hex()))
}

enum Failure {
    /// The server has no batch endpoint: fall back to GETs.
    NoBatch,
    /// Worth another attempt.
    Retry(String),
    /// An object arrived whole but does not match the signed manifest: worth another attempt
    /// (a cache may serve a stale copy once), reported as damaged content if it persists.
    Damaged(String),
    /// A local failure (a full disk, a read-only folder) or the operator's cancel: another
    /// attempt would fail the same way, and it is not the network's fault.
    Local(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Local(e)
    }
}

/// Slowest transfer accepted over a whole object (bytes per second), on top of the idle
/// timeout: a server that trickles a byte every few seconds never trips the idle timeout.
const MIN_RATE: u64 = 10_000;

/// The total time one request for `bytes` may take.
fn request_deadline(remote: &Remote, bytes: u64) -> Duration {
    Duration::from_secs(remote.net.io_timeout_secs.max(1) * 2 + bytes / MIN_RATE)
}

/// Fetch every wanted object into `dir`, verified. Bounded retries with backoff and an overall
/// deadline; what was received before a failure is kept for the next attempt or the next run.
pub async fn fetch(
    remote: &Remote,
    wanted: &[Wanted],
    dir: &Path,
    progress: &Arc<Progress>,
) -> Result<()> {
    std::fs::create_dir_all(dir).ctx("create folder", dir)?;
    let deadline = Duration::from_secs(remote.net.deadline_secs.max(1));
    match tokio::time::timeout(deadline, fetch_inner(remote, wanted, dir, progress)).await {
        Ok(r) => r,
        Err(_) => Err(Error::Network {
            url: remote.url(""),
            reason: format!(
                "staging did not finish within {} s (network.deadline_secs); the files received so far are kept",
                deadline.as_secs()
            ),
        }),
    }
}

async fn fetch_inner(
    remote: &Remote,
    wanted: &[Wanted],
    dir: &Path,
    progress: &Arc<Progress>,
) -> Result<()> {
    let mut use_batch = !remote.behind_cache();
    let mut failures = 0u32;
    loop {
        let pending: Vec<&Wanted> = wanted
            .iter()
            .filter(|w| !done_path(dir, &w.sha).exists())
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        progress.check_cancelled()?;
        let bytes: u64 = pending.iter().map(|w| w.size).sum();
        let r = if use_batch {
            match tokio::time::timeout(
                request_deadline(remote, bytes),
                batch(remote, &pending, dir, progress),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(Failure::Retry(format!(
                    "the transfer was slower than {} KB/s: stalled",
                    MIN_RATE / 1000
                ))),
            }
        } else {
            per_file(remote, &pending, dir, progress).await
        };
        let (msg, damaged) = match r {
            Ok(()) => continue,
            Err(Failure::NoBatch) => {
                use_batch = false;
                continue;
            }
            Err(Failure::Local(e)) => return Err(e),
            Err(Failure::Retry(m)) => (m, false),
            Err(Failure::Damaged(m)) => (m, true),
        };
        failures += 1;
        if failures > remote.net.retries {
            let url = remote.url("");
            let reason = format!(
                "{msg} (gave up after {failures} attempts; the files received so far are kept)"
            );
            // Content that arrives whole but wrong is not a connection problem.
            return Err(if damaged {
                Error::Damaged { url, reason }
            } else {
                Error::Network { url, reason }
            });
        }
        progress.set_phase(format!("retrying after: {msg}"));
        tokio::time::sleep(backoff(failures)).await;
    }
}

/// Length of a partial file, reset when it is somehow longer than the object.
fn resume_offset(dir: &Path, w: &Wanted) -> u64 {
    let p = part_path(dir, &w.sha);
    match std::fs::metadata(&p) {
        Ok(md) if md.len() <= w.size => md.len(),
        Ok(_) => {
            let _ = std::fs::remove_file(&p);
            0
        }
        Err(_) => 0,
    }
}

/// Append bytes at `offset` to the partial file.
fn append(dir: &Path, sha: &Sha256, offset: u64, bytes: &[u8]) -> Result<()> {
    let p = part_path(dir, sha);
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&p)
        .ctx("open", &p)?;
    f.set_len(offset).ctx("truncate", &p)?;
    use std::io::Seek;
    f.seek(std::io::SeekFrom::Start(offset)).ctx("seek", &p)?;
    f.write_all(bytes).ctx("write", &p)
}

/// A partial file reached its size: check it and promote it.
fn finish(dir: &Path, w: &Wanted, progress: &Progress) -> Result<(), Failure> {
    let p = part_path(dir, &w.sha);
    let h = digest::hash_file(&p)?;
    if h.sha256 != w.sha || h.size != w.size {
        let _ = std::fs::remove_file(&p);
        return Err(Failure::Damaged(format!(
            "object {} arrived complete but did not match the signed manifest (discarded): the reference or a proxy serves damaged or tampered content",
            w.sha
        )));
    }
    std::fs::rename(&p, done_path(dir, &w.sha)).ctx("rename", &p)?;
    progress.add_file();
    Ok(())
}

async fn next_chunk(
    resp: &mut reqwest::Response,
    io_timeout: Duration,
) -> Result<Option<bytes::Bytes>, Failure> {
    match tokio::time::timeout(io_timeout, resp.chunk()).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(Failure::Retry(describe(&e))),
        Err(_) => Err(Failure::Retry(format!(
            "no data for {} s",
            io_timeout.as_secs()
        ))),
    }
}

async fn batch(
    remote: &Remote,
    pending: &[&Wanted],
    dir: &Path,
    progress: &Progress,
) -> Result<(), Failure> {
    let mut body = String::with_capacity(pending.len() * 70);
    let mut by_sha = std::collections::HashMap::new();
    for w in pending {
        let off = resume_offset(dir, w);
        body.push_str(&format!("{} {}\n", w.sha, off));
        by_sha.insert(w.sha, (*w, off));
    }
    let url = remote.url("batch");
    let io_timeout = Duration::from_secs(remote.net.io_timeout_secs.max(1));
    let mut resp = remote
        .client
        .post(&url)
        .body(body)
        .send()
        .await
        .map_err(|e| Failure::Retry(describe(&e)))?;
    let status = resp.status();
    if matches!(status.as_u16(), 404 | 405 | 501) {
        return Err(Failure::NoBatch);
    }
    if !status.is_success() {
        return Err(Failure::Retry(format!("{url}: server answered {status}")));
    }
    let mut buf: Vec<u8> = Vec::new();
    // (object, offset of the next byte, bytes left in this frame)
    let mut current: Option<(&Wanted, u64, u64)> = None;
    loop {
        if current.is_none() {
            if let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                let line = String::from_utf8_lossy(&buf[..nl]).into_owned();
                buf.drain(..=nl);
                if line == "end" {
                    return Ok(());
                }
                let parts: Vec<&str> = line.split(' ').collect();
                let sha = parts
                    .first()
                    .and_then(|s| Sha256::from_hex(s))
                    .ok_or_else(|| Failure::Retry(format!("bad batch frame {line:?}")))?;
                let Some(&(w, asked)) = by_sha.get(&sha) else {
                    return Err(Failure::Retry(format!(
                        "server sent an object that was not asked for: {sha}"
                    )));
                };
                if parts.get(1) == Some(&"missing") {
                    return Err(Failure::Retry(format!(
                        "the reference has no object {sha}; is the repository complete?"
                    )));
                }
                let off: u64 = parts
                    .get(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| Failure::Retry(format!("bad frame {line:?}")))?;
                let len: u64 = parts
                    .get(2)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| Failure::Retry(format!("bad frame {line:?}")))?;
                if off != asked || off + len != w.size {
                    return Err(Failure::Retry(format!(
                        "server declared {len} bytes from {off} for {sha}, the signed manifest says {} in all",
                        w.size
                    )));
                }
                current = Some((w, off, len));
                if len == 0 {
                    append(dir, &w.sha, off, &[])?;
                    finish(dir, w, progress)?;
                    current = None;
                }
                continue;
            }
        } else if let Some((w, off, left)) = current
            && !buf.is_empty()
        {
            let take = (left as usize).min(buf.len());
            append(dir, &w.sha, off, &buf[..take])?;
            progress.check_cancelled()?;
            progress.add_bytes(take as u64);
            buf.drain(..take);
            let left = left - take as u64;
            if left == 0 {
                finish(dir, w, progress)?;
                current = None;
            } else {
                current = Some((w, off + take as u64, left));
            }
            continue;
        }
        match next_chunk(&mut resp, io_timeout).await? {
            Some(c) => buf.extend_from_slice(&c),
            None => {
                return Err(Failure::Retry(
                    "the connection closed in the middle of the batch".into(),
                ));
            }
        }
    }
}

async fn per_file(
    remote: &Remote,
    pending: &[&Wanted],
    dir: &Path,
    progress: &Progress,
) -> Result<(), Failure> {
    let results: Vec<Result<(), Failure>> = futures_util::stream::iter(
        pending
            .iter()
            .map(|w| get_one_in_time(remote, w, dir, progress)),
    )
    .buffer_unordered(remote.net.concurrency.max(1))
    .collect()
    .await;
    results.into_iter().find(|r| r.is_err()).unwrap_or(Ok(()))
}

async fn get_one_in_time(
    remote: &Remote,
    w: &Wanted,
    dir: &Path,
    progress: &Progress,
) -> Result<(), Failure> {
    let deadline = request_deadline(remote, w.size);
    match tokio::time::timeout(deadline, get_one(remote, w, dir, progress)).await {
        Ok(r) => r,
        Err(_) => Err(Failure::Retry(format!(
            "object {} came slower than {} KB/s: stalled",
            w.sha,
            MIN_RATE / 1000
        ))),
    }
}

async fn get_one(
    remote: &Remote,
    w: &Wanted,
    dir: &Path,
    progress: &Progress,
) -> Result<(), Failure> {
    let url = remote.url(&repo::object_path(&w.sha));
    let mut off = resume_offset(dir, w);
    let io_timeout = Duration::from_secs(remote.net.io_timeout_secs.max(1));
    let mut req = remote.client.get(&url);
    if off > 0 && off < w.size {
        req = req.header("Range", format!("bytes={off}-"));
    }
    let mut resp = req.send().await.map_err(|e| Failure::Retry(describe(&e)))?;
    let status = resp.status();
    if status.as_u16() == 200 {
        off = 0;
    } else if status.as_u16() != 206 {
        return Err(Failure::Retry(format!("{url}: server answered {status}")));
    }
    append(dir, &w.sha, off, &[])?;
    while let Some(c) = next_chunk(&mut resp, io_timeout).await? {
        if off + c.len() as u64 > w.size {
            let _ = std::fs::remove_file(part_path(dir, &w.sha));
            return Err(Failure::Retry(format!(
                "{url}: the server sent more than the {} bytes the signed manifest declares",
                w.size
            )));
        }
        append(dir, &w.sha, off, &c)?;
        progress.check_cancelled()?;
        off += c.len() as u64;
        progress.add_bytes(c.len() as u64);
    }
    if off != w.size {
        return Err(Failure::Retry(format!(
            "{url}: the connection closed after {off} of {} bytes",
            w.size
        )));
    }
    finish(dir, w, progress)
}
