//! Fetching objects from the reference: one streamed `POST /batch` when the server is
//! `upkeep reference` (which chooses each object's form), concurrent keep-alive GETs when it is
//! a plain static server (the site chooses from the release's forms list). Each object comes
//! raw, compressed, or as a delta against the live file (see [`crate::documents::forms`]); a form that is
//! missing or does not decode to the signed SHA-256 is dropped for the next one, down to the raw
//! object. Transfers up to 1 MiB are received in memory and asked again whole after
//! a cut; larger ones live in `.upkeep/partial/KEY.part` and are continued (all but a
//! compressed form or delta the server chose, whose size the site does not know). A finished
//! object is written to `.upkeep/partial/SHA256` only after its SHA-256 matched.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;

use crate::base::error::{Error, IoContext, Result};
use crate::base::progress::Progress;
use crate::client::{Remote, backoff, describe};
use crate::documents::manifest::{Sha256, digest};

pub use crate::documents::forms::Form;

/// One object to fetch.
#[derive(Clone, Debug)]
pub struct Wanted {
    /// Its SHA-256, from the signed manifest.
    pub sha: Sha256,
    /// Its size, from the signed manifest.
    pub size: u64,
    /// How it comes.
    pub form: Form,
    /// The bytes of that form on the wire (for [`Form::Best`], the object's size: the most it
    /// can be).
    pub transfer: u64,
    /// The size of its compressed form, when there is one (what a failed delta falls back on).
    pub zst: Option<u64>,
    /// The file a delta applies to.
    pub base: Option<PathBuf>,
    /// Every live file holding content a delta could start from (its SHA-256 and path): what
    /// [`Wanted::choose`] picks from with a forms list.
    pub candidates: Vec<(Sha256, PathBuf)>,
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
            candidates: Vec::new(),
        }
    }

    /// The smallest form the server holds, a delta from the first of `candidates` if it has
    /// one (see [`Form::Best`]).
    pub fn best(sha: Sha256, size: u64, candidates: Vec<(Sha256, PathBuf)>) -> Wanted {
        let first = candidates.first().cloned();
        Wanted {
            form: Form::Best(first.as_ref().map(|(b, _)| *b)),
            base: first.map(|(_, p)| p),
            candidates,
            ..Wanted::raw(sha, size)
        }
    }

    /// For a server that cannot choose (a static one): the form the release's forms list
    /// offers, a delta from the candidate with the smallest one, else the compressed object,
    /// else the object itself.
    pub fn choose(&mut self, forms: &crate::documents::forms::Forms) {
        if !matches!(self.form, Form::Best(_)) {
            return;
        }
        self.form = Form::Raw;
        self.transfer = self.size;
        self.base = None;
        self.zst = forms.zst_of(&self.sha);
        if let Some(z) = self.zst {
            self.form = Form::Zst;
            self.transfer = z;
        }
        let delta = self
            .candidates
            .iter()
            .filter_map(|(b, p)| Some((forms.delta_of(&self.sha, b)?, b, p)))
            .min_by_key(|(n, _, _)| *n);
        if let Some((n, b, p)) = delta
            && n < self.transfer
        {
            self.form = Form::Delta(*b);
            self.transfer = n;
            self.base = Some(p.clone());
        }
    }

    /// The same object as the server sends it: in `form`, `transfer` bytes in all.
    fn serving(&self, form: Form, transfer: u64) -> Wanted {
        let base = match form {
            Form::Delta(_) => self.base.clone(),
            _ => None,
        };
        Wanted {
            form,
            transfer,
            base,
            ..self.clone()
        }
    }

    /// The repository path of its form.
    fn rel(&self) -> String {
        self.form.path(&self.sha)
    }

    /// The name of its partial file (raw objects keep the name of earlier versions).
    fn key(&self) -> String {
        match &self.form {
            Form::Raw | Form::Best(_) => self.sha.to_hex(),
            Form::Zst => format!("{}.zst", self.sha),
            Form::Delta(b) => format!("{}.from-{b}", self.sha),
        }
    }

    /// How a batch request names the form.
    fn token(&self) -> String {
        self.form.token()
    }

    /// The next form to try after `failed` (the form this object came in) was given up.
    fn fall_back(&mut self, failed: &Form) {
        let (form, transfer) = match (&self.form, failed, self.zst) {
            // The server chose: it is asked again without the base (compressed or whole).
            (Form::Best(Some(_)), Form::Delta(_), _) => (Form::Best(None), self.size),
            (Form::Delta(_), _, Some(z)) => (Form::Zst, z),
            _ => (Form::Raw, self.size),
        };
        self.form = form;
        self.transfer = transfer;
        if !matches!(self.form, Form::Best(Some(_))) {
            self.base = None;
        }
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
            Form::Raw | Form::Best(_) => self.raw += n,
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
    /// The server does not choose forms (`*`): they are chosen from the forms list.
    NoChoice,
    /// Worth another attempt.
    Retry(String),
    /// An object arrived whole but does not match the signed manifest: worth another attempt
    /// (a cache may serve a stale copy once), reported as damaged content if it persists.
    Damaged(String),
    /// A local failure (a full disk, a read-only folder) or the operator's cancel: another
    /// attempt would fail the same way, and it is not the network's fault.
    Local(Error),
}

/// Forms given up during an attempt: (the form, its object, why).
type Fallen = Mutex<Vec<(Form, Sha256, String)>>;

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
            .push((w.form.clone(), w.sha, why));
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
    list: Option<&str>,
) -> Result<Fetched> {
    fetch_with(remote, wanted, dir, progress, false, list).await
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
    fetch_with(remote, wanted, dir, progress, true, None).await
}

async fn fetch_with(
    remote: &Remote,
    wanted: &[Wanted],
    dir: &Path,
    progress: &Arc<Progress>,
    keep_forms: bool,
    list: Option<&str>,
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
    match tokio::time::timeout(deadline, fetch_inner(remote, wanted.to_vec(), &run, list)).await {
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

async fn fetch_inner(
    remote: &Remote,
    mut wanted: Vec<Wanted>,
    run: &Run<'_>,
    list: Option<&str>,
) -> Result<()> {
    let (dir, progress) = (run.dir, run.progress);
    let mut use_batch = !remote.behind_cache();
    // Until a batch is refused a `*` form (an `upkeep reference` older than them).
    let mut server_chooses = true;
    let mut failures = 0u32;
    loop {
        // Forms given up in the last attempt: the next form for those objects.
        for (form, sha, why) in
            std::mem::take(&mut *run.fallen.lock().unwrap_or_else(|e| e.into_inner()))
        {
            let mut stats = run.stats.lock().unwrap_or_else(|e| e.into_inner());
            stats.fell_back += 1;
            if stats.reasons.len() < 10 {
                stats.reasons.push(format!("{sha}: {why}"));
            }
            if run.keep_forms {
                wanted.retain(|w| !(w.sha == sha && w.form == form));
            }
            for w in wanted
                .iter_mut()
                .filter(|w| w.sha == sha && (w.form == form || matches!(w.form, Form::Best(_))))
            {
                w.fall_back(&form);
            }
        }
        // A server that cannot choose forms: they are chosen here, from the release's list.
        if (!use_batch || !server_chooses) && wanted.iter().any(|w| matches!(w.form, Form::Best(_)))
        {
            let forms: crate::documents::forms::Forms = match list {
                Some(path) => remote
                    .get_doc_opt(path, crate::documents::forms::MAX_FORMS_DOC)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or_default(),
                None => Default::default(),
            };
            for w in &mut wanted {
                w.choose(&forms);
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
            Err(Failure::NoChoice) => {
                server_chooses = false;
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
    // (A form the server chose arrives as the form it sent: `Best` is only ever asked.)
    if matches!(w.form, Form::Raw | Form::Best(_)) {
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
        (Form::Zst, Some(b)) => {
            crate::documents::forms::decode_zst_bytes(b, &mut out, &out_path, w.size)?
        }
        (Form::Zst, None) => {
            let f = std::fs::File::open(&p).ctx("open", &p)?;
            crate::documents::forms::decode_zst(
                std::io::BufReader::new(f),
                &mut out,
                &out_path,
                w.size,
            )?
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
                crate::documents::forms::apply_delta(delta, &b, &mut out, &out_path, w.size)?
            }
            None => Err(crate::documents::forms::Unusable(
                "the live file it applies to cannot be read".into(),
            )),
        },
        (Form::Raw | Form::Best(_), _) => unreachable!("handled above"),
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

/// How a batch line asks for `w`: a transfer cut before is continued in the form it had (for
/// an object the server chooses the form of, only a raw one is: the size of another form is
/// not known here).
fn resume_as(dir: &Path, w: &Wanted) -> (Wanted, u64) {
    if matches!(w.form, Form::Best(_)) {
        let raw = w.serving(Form::Raw, w.size);
        let off = resume_offset(dir, &raw);
        return if off > 0 { (raw, off) } else { (w.clone(), 0) };
    }
    (w.clone(), resume_offset(dir, w))
}

async fn batch(remote: &Remote, pending: &[&Wanted], run: &Run<'_>) -> Result<(), Failure> {
    let (dir, progress) = (run.dir, run.progress);
    let mut body = String::with_capacity(pending.len() * 70);
    // What each line asked, by line number (numbered frames) and by object and form (frames
    // that name them, from a server that predates numbers).
    let lines: Vec<(Wanted, u64)> = pending.iter().map(|w| resume_as(dir, w)).collect();
    let mut by_sha = std::collections::HashMap::new();
    for (i, (w, off)) in lines.iter().enumerate() {
        body.push_str(&format!("{} {}{}\n", w.sha, off, w.token()));
        by_sha.insert((w.sha, w.token().trim().to_string()), i);
    }
    let asks_choice = lines.iter().any(|(w, _)| matches!(w.form, Form::Best(_)));
    let url = remote.url("batch");
    let io_timeout = Duration::from_secs(remote.net.io_timeout_secs.max(1));
    // Hex names halve under gzip, which every `upkeep reference` decodes (a thousand lines
    // naming deltas are 130 KB plain).
    let mut resp = remote
        .client
        .post(&url)
        .header(reqwest::header::CONTENT_ENCODING, "gzip")
        .header(crate::documents::repo::NUMBERED_FRAMES, "numbered")
        .body(crate::documents::forms::gzip(body.as_bytes()))
        .send()
        .await
        .map_err(|e| Failure::Retry(describe(&e)))?;
    let status = resp.status();
    if matches!(status.as_u16(), 404 | 405 | 501) {
        return Err(Failure::NoBatch);
    }
    if status.as_u16() == 400 && asks_choice {
        return Err(Failure::NoChoice);
    }
    if !status.is_success() {
        return Err(Failure::Retry(format!("{url}: server answered {status}")));
    }
    let numbered = resp
        .headers()
        .get(crate::documents::repo::NUMBERED_FRAMES)
        .is_some_and(|v| v.as_bytes() == b"numbered");
    let mut buf: Vec<u8> = Vec::new();
    // (object as it is sent, where its bytes go, bytes left in this frame)
    let mut current: Option<(Wanted, Sink, u64)> = None;
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
                let bad = || Failure::Retry(format!("bad batch frame {line:?}"));
                let parts: Vec<&str> = line.split(' ').collect();
                let missing = parts.get(1) == Some(&"missing");
                // The form sent follows the length (or `missing`); none for a raw object.
                let word = parts.get(if missing { 2 } else { 3 }).copied();
                let found = if numbered {
                    parts
                        .first()
                        .and_then(|n| n.strip_prefix('#')?.parse::<usize>().ok())
                } else {
                    let sha = parts
                        .first()
                        .and_then(|s| Sha256::from_hex(s))
                        .ok_or_else(bad)?;
                    by_sha.get(&(sha, word.unwrap_or("").to_string())).copied()
                };
                // In numbered frames a delta is `d`: from the base the line named.
                let sent = match (word, found.and_then(|i| lines.get(i))) {
                    (Some("d"), Some((asked, _))) => match &asked.form {
                        Form::Best(Some(b)) | Form::Delta(b) => Some(Form::Delta(*b)),
                        _ => None,
                    },
                    _ => Form::parse_token(word),
                };
                let Some(((asked, at), sent)) = found.and_then(|i| lines.get(i)).zip(sent) else {
                    return Err(Failure::Retry(format!(
                        "server sent an object that was not asked for, or in another form: {line:?}"
                    )));
                };
                let fits = match (&asked.form, &sent) {
                    (Form::Best(b), Form::Delta(d)) => b.as_ref() == Some(d),
                    (Form::Best(_), f) => matches!(f, Form::Raw | Form::Zst),
                    (a, f) => a == f,
                };
                if !fits {
                    return Err(Failure::Retry(format!(
                        "server sent another form than the one asked: {line:?}"
                    )));
                }
                let sha = asked.sha;
                if missing {
                    if sent != Form::Raw {
                        run.give_up(
                            &asked.serving(sent, 0),
                            "the reference does not have it".into(),
                        );
                        continue;
                    }
                    return Err(Failure::Retry(format!(
                        "the reference has no object {sha}; is the repository complete?"
                    )));
                }
                let off: u64 = parts.get(1).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
                let len: u64 = parts.get(2).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
                // A form the server chose is as long as it says; a raw object is as long as the
                // signed manifest says, and a listed form as its list says.
                let w = match (&asked.form, &sent) {
                    (Form::Best(_), Form::Raw) => asked.serving(sent, asked.size),
                    (Form::Best(_), _) => asked.serving(sent, off + len),
                    _ => asked.clone(),
                };
                if off == *at && off + len != w.transfer && w.form != Form::Raw {
                    run.give_up(
                        &w,
                        format!(
                            "the reference has {} bytes, not the {} listed",
                            off + len,
                            w.transfer
                        ),
                    );
                    skip = len;
                    continue;
                }
                if off != *at || off + len != w.transfer {
                    return Err(Failure::Retry(format!(
                        "server declared {len} bytes from {off} for {sha}, expected {} in all",
                        w.transfer
                    )));
                }
                let sink = Sink::open(run, &w, off)?;
                if len == 0 {
                    sink.finish(run, &w)?;
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
                sink.finish(run, &w)?;
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
        // A listed form of another length (a stale or tampered list): read past it.
        if let Some(n) = resp.content_length()
            && n != w.transfer
            && w.form != Form::Raw
        {
            run.give_up(
                w,
                format!("the server has {n} bytes, not the {} listed", w.transfer),
            );
            return Ok(());
        }
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
