//! Fetching objects from the reference: one streamed `POST /batch` when the server is
//! `upkeep reference`, concurrent keep-alive GETs when it is a plain static server. Each object
//! comes in the form chosen for it (raw, compressed, or a delta against the live file; see
//! [`crate::forms`]); a form that is missing or does not decode to the signed SHA-256 is
//! dropped for the next one, down to the raw object. Partial transfers live in
//! `.upkeep/partial/KEY.part` and are continued, never restarted; a finished object is renamed
//! to `.upkeep/partial/SHA256` only after its SHA-256 matched.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;

use crate::error::{Error, IoContext, Result};
use crate::manifest::{Sha256, digest};
use crate::progress::Progress;
use crate::reference::client::{Remote, backoff, describe};

pub use crate::forms::Form;

/// One object to fetch.
#[derive(Clone, Debug)]
pub struct Wanted {
    /// Its SHA-256, from the signed manifest.
    pub sha: Sha256,
    /// Its size, from the signed manifest.
    pub size: u64,
    /// How it comes.
    pub form: Form,
    /// The bytes of that form on the wire.
    pub transfer: u64,
    /// The size of its compressed form, when there is one (what a failed delta falls back on).
    pub zst: Option<u64>,
    /// The file a delta applies to.
    pub base: Option<PathBuf>,
}

impl Wanted {
    /// The object itself, whole.
    pub fn raw(sha: Sha256, size: u64) -> Wanted {
        Wanted {
            sha,
            size,
            form: Form::Raw,
            transfer: size,
            zst: None,
            base: None,
        }
    }

    /// The repository path of its form.
    fn rel(&self) -> String {
        self.form.path(&self.sha)
    }

    /// The name of its partial file (raw objects keep the name of earlier versions).
    fn key(&self) -> String {
        match &self.form {
            Form::Raw => self.sha.to_hex(),
            Form::Zst => format!("{}.zst", self.sha),
            Form::Delta(b) => format!("{}.from-{b}", self.sha),
        }
    }

    /// How a batch request names the form.
    fn token(&self) -> String {
        self.form.token()
    }

    /// The next form to try after this one failed.
    fn fall_back(&mut self) {
        let (form, transfer) = match (&self.form, self.zst) {
            (Form::Delta(_), Some(z)) => (Form::Zst, z),
            _ => (Form::Raw, self.size),
        };
        self.form = form;
        self.transfer = transfer;
        self.base = None;
    }
}

/// The bytes that came in each form, and the forms given up.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Fetched {
    /// Bytes of raw objects.
    pub raw: u64,
    /// Bytes of compressed objects.
    pub compressed: u64,
    /// Bytes of deltas.
    pub delta: u64,
    /// What the same objects weigh whole.
    pub whole: u64,
    /// Forms that were missing or did not decode to the signed content, each replaced by the
    /// next form (down to the raw object).
    pub fell_back: usize,
    /// Why, for the first few.
    pub reasons: Vec<String>,
}

impl Fetched {
    /// Bytes on the wire, every form together.
    pub fn wire(&self) -> u64 {
        self.raw + self.compressed + self.delta
    }

    fn count(&mut self, form: &Form, n: u64) {
        match form {
            Form::Raw => self.raw += n,
            Form::Zst => self.compressed += n,
            Form::Delta(_) => self.delta += n,
        }
    }
}

/// Where a verified object waits to be placed into staging.
pub fn done_path(dir: &Path, sha: &Sha256) -> PathBuf {
    dir.join(sha.to_hex())
}

fn part_path(dir: &Path, w: &Wanted) -> PathBuf {
    dir.join(format!("{}.part", w.key()))
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

/// Forms given up during an attempt: (the form's key, its object, why).
type Fallen = Mutex<Vec<(String, Sha256, String)>>;

/// The state shared by the transfers of one staging.
struct Run<'a> {
    dir: &'a Path,
    progress: &'a Progress,
    fallen: Fallen,
    stats: Mutex<Fetched>,
    /// A mirror's fetch: forms are kept as they came (after decoding them to check them), and
    /// a bad form is dropped, not replaced.
    keep_forms: bool,
}

impl Run<'_> {
    fn give_up(&self, w: &Wanted, why: String) {
        let _ = std::fs::remove_file(part_path(self.dir, w));
        self.fallen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((w.key(), w.sha, why));
    }

    fn received(&self, w: &Wanted, n: u64) {
        self.stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .count(&w.form, n);
        self.progress.add_bytes(n);
    }
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
/// Returns the bytes that came in each form.
pub async fn fetch(
    remote: &Remote,
    wanted: &[Wanted],
    dir: &Path,
    progress: &Arc<Progress>,
) -> Result<Fetched> {
    fetch_with(remote, wanted, dir, progress, false).await
}

/// Where a mirror's checked form waits to be placed.
pub fn form_done_path(dir: &Path, w: &Wanted) -> PathBuf {
    dir.join(format!("{}.form", w.key()))
}

/// The repository path of a wanted form.
pub fn form_rel(w: &Wanted) -> String {
    w.rel()
}

/// For a mirror: fetch the given forms (compressed objects, deltas with their base in
/// `base`), each decoded and checked against its object's signed SHA-256, and kept as they came
/// in [`form_done_path`]. A form that is missing upstream or does not check out is left out
/// (its reason in the result).
pub async fn fetch_forms(
    remote: &Remote,
    wanted: &[Wanted],
    dir: &Path,
    progress: &Arc<Progress>,
) -> Result<Fetched> {
    fetch_with(remote, wanted, dir, progress, true).await
}

async fn fetch_with(
    remote: &Remote,
    wanted: &[Wanted],
    dir: &Path,
    progress: &Arc<Progress>,
    keep_forms: bool,
) -> Result<Fetched> {
    std::fs::create_dir_all(dir).ctx("create folder", dir)?;
    let deadline = Duration::from_secs(remote.net.deadline_secs.max(1));
    let run = Run {
        dir,
        progress,
        fallen: Mutex::new(Vec::new()),
        stats: Mutex::new(Fetched {
            whole: wanted.iter().map(|w| w.size).sum(),
            ..Fetched::default()
        }),
        keep_forms,
    };
    match tokio::time::timeout(deadline, fetch_inner(remote, wanted.to_vec(), &run)).await {
        Ok(r) => r.map(|()| run.stats.into_inner().unwrap_or_else(|e| e.into_inner())),
        Err(_) => Err(Error::Network {
            url: remote.url(""),
            reason: format!(
                "staging did not finish within {} s (network.deadline_secs); the files received so far are kept",
                deadline.as_secs()
            ),
        }),
    }
}

async fn fetch_inner(remote: &Remote, mut wanted: Vec<Wanted>, run: &Run<'_>) -> Result<()> {
    let (dir, progress) = (run.dir, run.progress);
    let mut use_batch = !remote.behind_cache();
    let mut failures = 0u32;
    loop {
        // Forms given up in the last attempt: the next form for those objects.
        for (key, sha, why) in
            std::mem::take(&mut *run.fallen.lock().unwrap_or_else(|e| e.into_inner()))
        {
            let mut stats = run.stats.lock().unwrap_or_else(|e| e.into_inner());
            stats.fell_back += 1;
            if stats.reasons.len() < 10 {
                stats.reasons.push(format!("{sha}: {why}"));
            }
            if run.keep_forms {
                wanted.retain(|w| w.key() != key);
            }
            for w in wanted.iter_mut().filter(|w| w.key() == key) {
                w.fall_back();
            }
        }
        let pending: Vec<&Wanted> = wanted
            .iter()
            .filter(|w| {
                if run.keep_forms {
                    !form_done_path(dir, w).exists()
                } else {
                    !done_path(dir, &w.sha).exists()
                }
            })
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        progress.check_cancelled()?;
        let bytes: u64 = pending.iter().map(|w| w.transfer).sum();
        let r = if use_batch {
            match tokio::time::timeout(
                request_deadline(remote, bytes),
                batch(remote, &pending, run),
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
            per_file(remote, &pending, run).await
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

/// Length of a partial file, reset when it is somehow longer than the transfer.
fn resume_offset(dir: &Path, w: &Wanted) -> u64 {
    let p = part_path(dir, w);
    match std::fs::metadata(&p) {
        Ok(md) if md.len() <= w.transfer => md.len(),
        Ok(_) => {
            let _ = std::fs::remove_file(&p);
            0
        }
        Err(_) => 0,
    }
}

/// Transfers up to this size are received in memory and checked there: no partial file is
/// created for them (creating files is the costly part of receiving a thousand small ones, and a
/// cut one is cheap to ask again). Larger ones go to `.part` files that a later attempt
/// continues.
const IN_MEMORY_MAX: u64 = 1 << 20;

/// Where the bytes of one transfer go while it arrives.
enum Sink {
    Memory(Vec<u8>),
    /// The partial file, open for appending.
    File(std::fs::File),
}

impl Sink {
    /// Ready to take `w`'s bytes from `offset` on.
    fn open(run: &Run, w: &Wanted, offset: u64) -> Result<Sink> {
        if offset == 0 && w.transfer <= IN_MEMORY_MAX && !run.keep_forms {
            return Ok(Sink::Memory(Vec::with_capacity(w.transfer as usize)));
        }
        let p = part_path(run.dir, w);
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&p)
            .ctx("open", &p)?;
        f.set_len(offset).ctx("truncate", &p)?;
        use std::io::Seek;
        f.seek(std::io::SeekFrom::Start(offset)).ctx("seek", &p)?;
        Ok(Sink::File(f))
    }

    fn take(&mut self, run: &Run, w: &Wanted, bytes: &[u8]) -> Result<()> {
        match self {
            Sink::Memory(v) => {
                v.extend_from_slice(bytes);
                Ok(())
            }
            Sink::File(f) => f.write_all(bytes).ctx("write", &part_path(run.dir, w)),
        }
    }

    /// The whole transfer arrived: check it and promote it.
    fn finish(self, run: &Run, w: &Wanted) -> Result<(), Failure> {
        match self {
            Sink::Memory(v) => finish(run, w, Some(&v)),
            Sink::File(f) => {
                drop(f);
                finish(run, w, None)
            }
        }
    }
}

/// A transfer is complete, in memory (`mem`) or in its partial file: check it (decoding a form
/// first) and promote it. A form that does not decode to the signed content is given up, not
/// retried.
fn finish(run: &Run, w: &Wanted, mem: Option<&[u8]>) -> Result<(), Failure> {
    let (dir, progress) = (run.dir, run.progress);
    let p = part_path(dir, w);
    if w.form == Form::Raw {
        let (sha, size) = match mem {
            Some(b) => (digest::sha256_bytes(b), b.len() as u64),
            None => {
                let h = digest::hash_file(&p)?;
                (h.sha256, h.size)
            }
        };
        if sha != w.sha || size != w.size {
            let _ = std::fs::remove_file(&p);
            return Err(Failure::Damaged(format!(
                "object {} arrived complete but did not match the signed manifest (discarded): the reference or a proxy serves damaged or tampered content",
                w.sha
            )));
        }
        if let Some(b) = mem {
            // Written whole, then renamed: a done object is never a torn one.
            std::fs::write(&p, b).ctx("write", &p)?;
        }
        std::fs::rename(&p, done_path(dir, &w.sha)).ctx("rename", &p)?;
        progress.add_file();
        return Ok(());
    }
    let out_path = dir.join(format!("{}.decoding", w.sha));
    let mut out: Box<dyn Write> = if run.keep_forms {
        Box::new(std::io::sink())
    } else {
        Box::new(std::fs::File::create(&out_path).ctx("create", &out_path)?)
    };
    let decoded = match (&w.form, mem) {
        (Form::Zst, Some(b)) => crate::forms::decode_zst_bytes(b, &mut out, &out_path, w.size)?,
        (Form::Zst, None) => {
            let f = std::fs::File::open(&p).ctx("open", &p)?;
            crate::forms::decode_zst(std::io::BufReader::new(f), &mut out, &out_path, w.size)?
        }
        // A live file that changed since it was chosen decodes to other content: the check
        // below catches it like any bad delta.
        (Form::Delta(_), _) => match w.base.as_ref().and_then(|b| std::fs::read(b).ok()) {
            Some(b) => {
                let read;
                let delta = match mem {
                    Some(d) => d,
                    None => {
                        read = std::fs::read(&p).ctx("read", &p)?;
                        &read
                    }
                };
                crate::forms::apply_delta(delta, &b, &mut out, &out_path, w.size)?
            }
            None => Err(crate::forms::Unusable(
                "the live file it applies to cannot be read".into(),
            )),
        },
        (Form::Raw, _) => unreachable!("handled above"),
    };
    drop(out);
    let why = match decoded {
        Ok(h) if h.sha256 == w.sha && h.size == w.size => None,
        Ok(_) => Some("it decodes to other content than the signed manifest's".to_string()),
        Err(u) => Some(u.0),
    };
    if let Some(why) = why {
        let _ = std::fs::remove_file(&out_path);
        run.give_up(w, why);
        return Ok(());
    }
    if run.keep_forms {
        let done = form_done_path(dir, w);
        std::fs::rename(&p, &done).ctx("rename", &p)?;
        progress.add_file();
        return Ok(());
    }
    std::fs::rename(&out_path, done_path(dir, &w.sha)).ctx("rename", &out_path)?;
    if mem.is_none() {
        let _ = std::fs::remove_file(&p);
    }
    // Progress counts objects' bytes: the bytes a form saved count as done too.
    progress.add_bytes(w.size.saturating_sub(w.transfer));
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

async fn batch(remote: &Remote, pending: &[&Wanted], run: &Run<'_>) -> Result<(), Failure> {
    let (dir, progress) = (run.dir, run.progress);
    let mut body = String::with_capacity(pending.len() * 70);
    let mut by_sha = std::collections::HashMap::new();
    // The same, by line number, for numbered frames.
    let mut lines = Vec::with_capacity(pending.len());
    for w in pending {
        let off = resume_offset(dir, w);
        body.push_str(&format!("{} {}{}\n", w.sha, off, w.token()));
        by_sha.insert((w.sha, w.token().trim().to_string()), (*w, off));
        lines.push((*w, off));
    }
    let url = remote.url("batch");
    let io_timeout = Duration::from_secs(remote.net.io_timeout_secs.max(1));
    // Hex names halve under gzip, which every `upkeep reference` decodes (a thousand lines
    // naming deltas are 130 KB plain).
    let mut resp = remote
        .client
        .post(&url)
        .header(reqwest::header::CONTENT_ENCODING, "gzip")
        .header(crate::reference::serve::NUMBERED_FRAMES, "numbered")
        .body(crate::forms::gzip(body.as_bytes()))
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
    let numbered = resp
        .headers()
        .get(crate::reference::serve::NUMBERED_FRAMES)
        .is_some_and(|v| v.as_bytes() == b"numbered");
    let mut buf: Vec<u8> = Vec::new();
    // (object, where its bytes go, bytes left in this frame)
    let mut current: Option<(&Wanted, Sink, u64)> = None;
    // Bytes of a frame to read past: a form whose size is not the listed one.
    let mut skip = 0u64;
    loop {
        if skip > 0 {
            if buf.is_empty() {
                match next_chunk(&mut resp, io_timeout).await? {
                    Some(c) => buf.extend_from_slice(&c),
                    None => {
                        return Err(Failure::Retry(
                            "the connection closed in the middle of the batch".into(),
                        ));
                    }
                }
            }
            let n = (skip as usize).min(buf.len());
            buf.drain(..n);
            skip -= n as u64;
            continue;
        }
        if current.is_none() {
            if let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                let line = String::from_utf8_lossy(&buf[..nl]).into_owned();
                buf.drain(..=nl);
                if line == "end" {
                    return Ok(());
                }
                let parts: Vec<&str> = line.split(' ').collect();
                let missing = parts.get(1) == Some(&"missing");
                let found = if numbered {
                    parts
                        .first()
                        .and_then(|n| n.strip_prefix('#')?.parse::<usize>().ok())
                        .and_then(|n| lines.get(n))
                } else {
                    let sha = parts
                        .first()
                        .and_then(|s| Sha256::from_hex(s))
                        .ok_or_else(|| Failure::Retry(format!("bad batch frame {line:?}")))?;
                    // The form follows the length (or `missing`); none for a raw object.
                    let form = parts
                        .get(if missing { 2 } else { 3 })
                        .copied()
                        .unwrap_or("");
                    by_sha.get(&(sha, form.to_string()))
                };
                let Some(&(w, asked)) = found else {
                    return Err(Failure::Retry(format!(
                        "server sent an object that was not asked for, or in another form: {line:?}"
                    )));
                };
                let sha = w.sha;
                if missing {
                    if w.form != Form::Raw {
                        run.give_up(w, "the reference does not have it".into());
                        continue;
                    }
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
                if off == asked && off + len != w.transfer && w.form != Form::Raw {
                    run.give_up(
                        w,
                        format!(
                            "the reference has {} bytes, not the {} listed",
                            off + len,
                            w.transfer
                        ),
                    );
                    skip = len;
                    continue;
                }
                if off != asked || off + len != w.transfer {
                    return Err(Failure::Retry(format!(
                        "server declared {len} bytes from {off} for {sha}, expected {} in all",
                        w.transfer
                    )));
                }
                let sink = Sink::open(run, w, off)?;
                if len == 0 {
                    sink.finish(run, w)?;
                } else {
                    current = Some((w, sink, len));
                }
                continue;
            }
        } else if let Some((w, sink, left)) = current.as_mut()
            && !buf.is_empty()
        {
            let take = (*left as usize).min(buf.len());
            sink.take(run, w, &buf[..take])?;
            progress.check_cancelled()?;
            run.received(w, take as u64);
            buf.drain(..take);
            *left -= take as u64;
            if *left == 0
                && let Some((w, sink, _)) = current.take()
            {
                sink.finish(run, w)?;
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

async fn per_file(remote: &Remote, pending: &[&Wanted], run: &Run<'_>) -> Result<(), Failure> {
    // The futures are made first: a stream over a closure would not be `Send` (a closure
    // taking a reference is not general enough over its lifetime), and the fetch runs spawned.
    let gets: Vec<_> = pending
        .iter()
        .map(|w| get_one_in_time(remote, w, run))
        .collect();
    let results: Vec<Result<(), Failure>> = futures_util::stream::iter(gets)
        .buffer_unordered(remote.net.concurrency.max(1))
        .collect()
        .await;
    results.into_iter().find(|r| r.is_err()).unwrap_or(Ok(()))
}

async fn get_one_in_time(remote: &Remote, w: &Wanted, run: &Run<'_>) -> Result<(), Failure> {
    let deadline = request_deadline(remote, w.transfer);
    match tokio::time::timeout(deadline, get_one(remote, w, run)).await {
        Ok(r) => r,
        Err(_) => Err(Failure::Retry(format!(
            "object {} came slower than {} KB/s: stalled",
            w.sha,
            MIN_RATE / 1000
        ))),
    }
}

async fn get_one(remote: &Remote, w: &Wanted, run: &Run<'_>) -> Result<(), Failure> {
    let (dir, progress) = (run.dir, run.progress);
    let url = remote.url(&w.rel());
    let mut off = resume_offset(dir, w);
    let io_timeout = Duration::from_secs(remote.net.io_timeout_secs.max(1));
    let mut req = remote.client.get(&url);
    if off > 0 && off < w.transfer {
        req = req.header("Range", format!("bytes={off}-"));
    }
    let mut resp = req.send().await.map_err(|e| Failure::Retry(describe(&e)))?;
    let status = resp.status();
    if status.as_u16() == 200 {
        off = 0;
    } else if w.form != Form::Raw && matches!(status.as_u16(), 404 | 410) {
        run.give_up(w, format!("{url}: server answered {status}"));
        return Ok(());
    } else if status.as_u16() != 206 {
        return Err(Failure::Retry(format!("{url}: server answered {status}")));
    }
    let mut sink = Sink::open(run, w, off)?;
    while let Some(c) = next_chunk(&mut resp, io_timeout).await? {
        if off + c.len() as u64 > w.transfer {
            if w.form != Form::Raw {
                run.give_up(
                    w,
                    format!("{url}: longer than the {} bytes listed", w.transfer),
                );
                return Ok(());
            }
            let _ = std::fs::remove_file(part_path(dir, w));
            return Err(Failure::Retry(format!(
                "{url}: the server sent more than the {} bytes the signed manifest declares",
                w.size
            )));
        }
        sink.take(run, w, &c)?;
        progress.check_cancelled()?;
        off += c.len() as u64;
        run.received(w, c.len() as u64);
    }
    if off != w.transfer {
        return Err(Failure::Retry(format!(
            "{url}: the connection closed after {off} of {} bytes",
            w.transfer
        )));
    }
    sink.finish(run, w)
}
