//! A reference repository seen from a site or a mirror: the signed pointer, channels and
//! manifests, fetched with bounded retries and verified before anything else is read from them
//! (`fetch` brings the objects).

pub mod fetch;
pub mod webhook;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::base::error::{Error, IoContext, Result};
use crate::documents::channel::{
    self, ChannelPointer, DEFAULT_CHANNEL, DELEGATION, DELEGATION_SIG, Delegation,
    FORMAT as CHANNEL_FORMAT, Offer, SiteView, channel_path, channel_sig_path, check_channel_name,
};
use crate::documents::manifest::{self, Pointer, PublicKey, VerifiedManifest, digest};
use crate::documents::repo;

/// Largest manifest accepted when the pointer does not give its size.
const MAX_DOC: u64 = 256 << 20;
/// Largest pointer or signature accepted (they are a few hundred bytes).
const MAX_SMALL: u64 = 1 << 20;

/// The first line of an error page's text, tags stripped, at most 120 characters: enough to
/// recognise a message without pasting a whole HTML page into the operator's terminal.
fn gist(body: &str) -> String {
    let mut text = String::new();
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                text.push(' ');
            }
            _ if !in_tag => text.push(c),
            _ => {}
        }
    }
    let line = text
        .split(['\n', '\r'])
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    // A server's words reach the operator's terminal: no escape sequences.
    let line = crate::base::text::one_line(&line).into_owned();
    match line.chars().count() {
        0 => String::new(),
        n if n > 120 => format!(": {}...", line.chars().take(120).collect::<String>()),
        _ => format!(": {line}"),
    }
}

/// How a site (`[network]` in upkeep.toml) or a mirror talks to a repository.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Network {
    /// Concurrent GETs against a static repository.
    pub concurrency: usize,
    /// Seconds without a byte before a transfer counts as stalled.
    pub io_timeout_secs: u64,
    /// Seconds the whole staging may take.
    pub deadline_secs: u64,
    /// Seconds the small documents of one command (pointers, channels, manifests, their
    /// signatures) may take in all, retries included, however slowly their bytes trickle in.
    pub doc_timeout_secs: u64,
    /// Attempts after the first failure.
    pub retries: u32,
    /// An HTTP proxy for every request to the reference (`proxy` in upkeep.toml; the usual
    /// HTTPS_PROXY / HTTP_PROXY / NO_PROXY variables work too).
    #[serde(skip)]
    pub proxy: Option<String>,
}

impl Default for Network {
    fn default() -> Self {
        Network {
            concurrency: 16,
            io_timeout_secs: 30,
            deadline_secs: 3600,
            doc_timeout_secs: 120,
            retries: 5,
            proxy: None,
        }
    }
}

/// What a site keeps between requests (its state.db): small documents with their ETags, for
/// conditional requests, and the manifests it verified before.
pub trait Kept: Send + Sync {
    /// The copy kept of the document `rel`, and its ETag.
    fn document(&self, rel: &str) -> Option<(String, Vec<u8>)>;
    /// Keep the document `rel` (text) and its ETag.
    fn keep(&self, rel: &str, etag: &str, body: &str);
    /// The bytes and signature of the manifest of `version`, when kept.
    fn manifest(&self, version: &str) -> Option<(Vec<u8>, String)>;
}

/// Why one GET did not bring a document.
enum Miss {
    /// The server does not have it (404, 410).
    Gone,
    /// 304: the copy kept is current.
    NotModified,
    /// It failed: whether to try again, and why.
    Fail(bool, String),
}

/// A reference repository reached over HTTP.
#[derive(Clone)]
pub struct Remote {
    base: String,
    /// The HTTP client (keep-alive pool shared by every request).
    pub client: reqwest::Client,
    key: PublicKey,
    /// Network settings.
    pub net: Network,
    /// What the site keeps between requests (its state.db), when it does.
    cache: Option<Arc<dyn Kept>>,
    /// When the command began and how long its documents may take in all: one deadline for
    /// the command, not one per document and attempt.
    docs: (std::time::Instant, Duration),
}

impl Remote {
    /// Whether requests go through a proxy or cache (upkeep.toml or the environment): then
    /// objects are fetched one cacheable GET each rather than in one batch POST no cache keeps.
    pub fn behind_cache(&self) -> bool {
        self.net.proxy.is_some()
            || [
                "HTTPS_PROXY",
                "https_proxy",
                "HTTP_PROXY",
                "http_proxy",
                "ALL_PROXY",
                "all_proxy",
            ]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
    }
}

/// The start of every HTTP client a site uses towards its reference (repository reads,
/// enrolment, reports): its user agent and the proxy of upkeep.toml (else the environment's
/// HTTPS_PROXY and the like, which reqwest reads itself).
pub fn http_client(net: &Network) -> Result<reqwest::ClientBuilder> {
    let mut builder =
        reqwest::Client::builder().user_agent(concat!("upkeep/", env!("CARGO_PKG_VERSION")));
    if let Some(p) = &net.proxy {
        builder = builder.proxy(reqwest::Proxy::all(p).map_err(|e| {
            Error::refused(
                format!("proxy = {p:?} is not a proxy URL ({e})"),
                "write it as http://host:port in upkeep.toml",
            )
        })?);
    }
    Ok(builder)
}

/// Run a future to completion on a runtime of its own (the library API is synchronous).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    current_runtime().block_on(f)
}

/// A runtime on the calling thread, for a command's requests (its connections live as long as
/// it does).
pub fn current_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime can always be built")
}

impl Remote {
    /// A client for `base` trusting `key`.
    pub fn new(base: &str, key: &PublicKey, net: &Network) -> Result<Self> {
        let mut base = base.trim().to_string();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            return Err(Error::refused(
                format!("reference URL {base:?} must start with http:// or https://"),
                "fix `reference` in upkeep.toml",
            ));
        }
        if !base.ends_with('/') {
            base.push('/');
        }
        let client = http_client(net)?
            .connect_timeout(Duration::from_secs(net.io_timeout_secs.max(1)))
            .read_timeout(Duration::from_secs(net.io_timeout_secs.max(1)))
            .pool_max_idle_per_host(net.concurrency.max(1))
            .build()
            .map_err(|e| Error::msg(format!("cannot build HTTP client: {e}")))?;
        Ok(Remote {
            base,
            client,
            key: key.clone(),
            net: net.clone(),
            cache: None,
            docs: (
                std::time::Instant::now(),
                Duration::from_secs(net.doc_timeout_secs.max(1)),
            ),
        })
    }

    /// Full URL of a repository path.
    pub fn url(&self, rel: &str) -> String {
        format!("{}{}", self.base, rel)
    }

    /// GET a small document whole (at most `max` bytes), retrying transient failures with
    /// backoff; each attempt has a total deadline.
    pub async fn get_doc(&self, rel: &str, max: u64) -> Result<Vec<u8>> {
        let url = self.url(rel);
        match self.get_doc_opt(rel, max).await? {
            Some(b) => Ok(b),
            None => Err(Error::Network {
                url,
                reason: "server answered 404 Not Found".into(),
            }),
        }
    }

    /// [`Remote::get_doc`], with `None` for a document the server does not have (404 or 410).
    /// Small mutable documents (pointers, channels, their signatures) are asked conditionally
    /// when the site keeps a copy (see [`Remote::with_cache`]): an idle poll then costs a 304
    /// without a body.
    pub async fn get_doc_opt(&self, rel: &str, max: u64) -> Result<Option<Vec<u8>>> {
        let url = self.url(rel);
        let kept = self.kept(rel);
        let mut last = String::new();
        for attempt in 0..=self.net.retries {
            if attempt > 0 {
                tokio::time::sleep(backoff(attempt)).await;
            }
            match self
                .get_once(&url, max, kept.as_ref().map(|(e, _)| e.as_str()))
                .await
            {
                Ok((b, etag)) => {
                    self.keep(rel, etag.as_deref(), &b);
                    return Ok(Some(b));
                }
                Err(Miss::NotModified) => {
                    if let Some((_, body)) = kept {
                        return Ok(Some(body));
                    }
                    last = "server answered 304 to a request that was not conditional".into();
                    break;
                }
                Err(Miss::Gone) => return Ok(None),
                Err(Miss::Fail(retry, msg)) => {
                    last = msg;
                    if !retry {
                        break;
                    }
                }
            }
        }
        Err(Error::Network { url, reason: last })
    }

    /// A signed document and its detached signature (`None`: the repository has no such
    /// document). With kept copies, only the signature is asked, conditionally: signatures are
    /// deterministic, so an unchanged signature means an unchanged document, and an idle poll
    /// costs one 304 per document instead of two. Without, both at once.
    pub async fn signed_pair(
        &self,
        doc: &str,
        sig: &str,
        max: u64,
    ) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        if self.cache.is_none() {
            let (d, s) = tokio::join!(self.get_doc_opt(doc, max), self.get_doc_opt(sig, MAX_SMALL));
            return Ok(match (d?, s?) {
                (Some(d), Some(s)) => Some((d, s)),
                (Some(_), None) => return Err(missing_sig(self.url(doc))),
                (None, _) => None,
            });
        }
        let kept_doc = self.kept(doc);
        let kept_sig = self.kept(sig);
        let Some(new_sig) = self.get_doc_opt(sig, MAX_SMALL).await? else {
            return Ok(None);
        };
        if let (Some((_, d)), Some((_, s))) = (kept_doc, kept_sig)
            && s == new_sig
        {
            return Ok(Some((d, new_sig)));
        }
        match self.get_doc_opt(doc, max).await? {
            Some(d) => Ok(Some((d, new_sig))),
            None => Ok(None),
        }
    }

    /// The copy kept of `rel` and its ETag, for a conditional request.
    fn kept(&self, rel: &str) -> Option<(String, Vec<u8>)> {
        self.cache
            .as_ref()
            .filter(|_| !rel.starts_with("releases/"))?
            .document(rel)
    }

    /// Keep `body` and its ETag for the next conditional request (text documents only).
    fn keep(&self, rel: &str, etag: Option<&str>, body: &[u8]) {
        let (Some(kept), Some(etag)) = (self.cache.as_ref(), etag) else {
            return;
        };
        if rel.starts_with("releases/") || body.len() > MAX_SMALL as usize {
            return;
        }
        if let Ok(text) = std::str::from_utf8(body) {
            kept.keep(rel, etag, text);
        }
    }

    /// Give the documents of this command `budget` in all from now (a mirror reads the
    /// manifests of every release).
    pub fn with_doc_budget(mut self, budget: Duration) -> Self {
        self.docs = (std::time::Instant::now(), budget);
        self
    }

    /// The time left for documents, or the refusal that says the budget is spent.
    fn doc_time_left(&self) -> std::result::Result<Duration, String> {
        let (start, budget) = self.docs;
        match budget.checked_sub(start.elapsed()) {
            Some(left) if !left.is_zero() => Ok(left),
            _ => Err(format!(
                "not received: the reference's documents took {} s in all, past the {} s a command may spend on them (network.doc_timeout_secs): the server is too slow or stalled",
                start.elapsed().as_secs(),
                budget.as_secs()
            )),
        }
    }

    /// Keep pointers and channels in `kept` between polls, to ask for them conditionally, and
    /// use the manifests it holds.
    pub fn with_cache(mut self, kept: Arc<dyn Kept>) -> Self {
        self.cache = Some(kept);
        self
    }

    async fn get_once(
        &self,
        url: &str,
        max: u64,
        etag: Option<&str>,
    ) -> Result<(Vec<u8>, Option<String>), Miss> {
        let deadline = self.doc_time_left().map_err(|e| Miss::Fail(false, e))?;
        let too_long = || {
            Miss::Fail(
                false,
                format!("the document is longer than the {max} bytes expected"),
            )
        };
        let work = async {
            let mut req = self.client.get(url);
            if let Some(e) = etag {
                req = req.header(reqwest::header::IF_NONE_MATCH, e);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| Miss::Fail(true, describe(&e)))?;
            let status = resp.status();
            if status == reqwest::StatusCode::NOT_MODIFIED {
                return Err(Miss::NotModified);
            }
            let got_etag = resp
                .headers()
                .get(reqwest::header::ETAG)
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            if status.is_server_error() {
                return Err(Miss::Fail(true, format!("server answered {status}")));
            }
            if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::GONE {
                return Err(Miss::Gone);
            }
            if !status.is_success() {
                let body = resp.text().await.unwrap_or_default();
                return Err(Miss::Fail(
                    false,
                    format!("server answered {status}{}", gist(&body)),
                ));
            }
            let declared = resp.content_length();
            if declared.is_some_and(|n| n > max) {
                return Err(too_long());
            }
            let mut resp = resp;
            let mut out = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| {
                Miss::Fail(
                    true,
                    format!(
                        "the transfer was cut after {} bytes{} ({})",
                        out.len(),
                        declared.map(|n| format!(" of {n}")).unwrap_or_default(),
                        describe(&e)
                    ),
                )
            })? {
                out.extend_from_slice(&chunk);
                if out.len() as u64 > max {
                    return Err(too_long());
                }
            }
            // A body cut short is a broken transfer, not a document that fails its signature.
            if let Some(n) = declared
                && out.len() as u64 != n
            {
                return Err(Miss::Fail(
                    true,
                    format!("the transfer was cut after {} of {n} bytes", out.len()),
                ));
            }
            Ok((out, got_etag))
        };
        match tokio::time::timeout(deadline, work).await {
            Ok(r) => r,
            Err(_) => Err(Miss::Fail(
                false,
                self.doc_time_left()
                    .err()
                    .unwrap_or_else(|| "not received in time".into()),
            )),
        }
    }

    /// Download a large file (a release zip) into `dest`, at most `max` bytes, continuing what a
    /// cut transfer left there (a Range request; a server that ignores it sends the whole
    /// again). `Ok(false)` when the server does not have it. Retried with backoff.
    pub async fn download(&self, rel: &str, dest: &std::path::Path, max: u64) -> Result<bool> {
        use std::io::Write;
        let url = self.url(rel);
        let io_timeout = Duration::from_secs(self.net.io_timeout_secs.max(1));
        let mut last = String::new();
        for attempt in 0..=self.net.retries {
            if attempt > 0 {
                tokio::time::sleep(backoff(attempt)).await;
            }
            let have = std::fs::metadata(dest).map(|m| m.len()).unwrap_or(0);
            let mut req = self.client.get(&url);
            if have > 0 {
                req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
            }
            let mut resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    last = describe(&e);
                    continue;
                }
            };
            let status = resp.status();
            if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::GONE {
                return Ok(false);
            }
            if status == reqwest::StatusCode::RANGE_NOT_SATISFIABLE {
                // What is here is already whole (or longer than the file): start again.
                let _ = std::fs::remove_file(dest);
                last = format!("server answered {status}");
                continue;
            }
            if !status.is_success() {
                last = format!("server answered {status}");
                if status.is_server_error() {
                    continue;
                }
                break;
            }
            let append = status == reqwest::StatusCode::PARTIAL_CONTENT;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(append)
                .write(true)
                .truncate(!append)
                .open(dest)
                .ctx("open", dest)?;
            let mut got = if append { have } else { 0 };
            let cut = loop {
                match tokio::time::timeout(io_timeout, resp.chunk()).await {
                    Ok(Ok(Some(c))) => {
                        got += c.len() as u64;
                        if got > max {
                            let _ = std::fs::remove_file(dest);
                            return Err(Error::Network {
                                url,
                                reason: format!("longer than the {max} bytes expected"),
                            });
                        }
                        file.write_all(&c).ctx("write", dest)?;
                    }
                    Ok(Ok(None)) => break None,
                    Ok(Err(e)) => break Some(describe(&e)),
                    Err(_) => break Some(format!("no data for {} s", io_timeout.as_secs())),
                }
            };
            file.sync_all().ctx("sync", dest)?;
            match cut {
                None => return Ok(true),
                Some(m) => last = format!("the transfer was cut after {got} bytes ({m})"),
            }
        }
        Err(Error::Network { url, reason: last })
    }

    /// The signed pointer, verified and fresh.
    pub async fn pointer(&self) -> Result<Pointer> {
        // Document and signature in parallel: one round trip instead of two on a slow link.
        let what = self.url(repo::POINTER);
        let (bytes, sig) = self
            .signed_pair(repo::POINTER, repo::POINTER_SIG, MAX_SMALL)
            .await?
            .ok_or_else(|| Error::Network {
                url: what.clone(),
                reason: "server answered 404 Not Found: is this a reference repository?".into(),
            })?;
        let sig = String::from_utf8_lossy(&sig).into_owned();
        let ptr: Pointer = manifest::verify_signed(&bytes, &sig, &self.key, &what)?;
        manifest::check_fresh(&ptr.expires, &what, SystemTime::now())?;
        Ok(ptr)
    }

    /// A release's manifest, verified; when `expect` is given (from the signed pointer) its bytes
    /// must hash to it, and no more than its size is read.
    pub async fn manifest(
        &self,
        version: &str,
        expect: Option<(&manifest::Sha256, Option<u64>)>,
    ) -> Result<VerifiedManifest> {
        manifest::parse_version(version)?;
        let what = self.url(&repo::manifest_path(version));
        let (mpath, spath) = (
            repo::manifest_path(version),
            repo::manifest_sig_path(version),
        );
        // Manifests are immutable: one the site already keeps, with the digest the signed
        // pointer names, is not fetched again (an idle poll costs no manifest).
        if let (Some(kept), Some((expect, _))) = (&self.cache, expect)
            && let Some((bytes, sig)) = kept.manifest(version)
            && digest::sha256_bytes(&bytes) == *expect
            && let Ok(m) = VerifiedManifest::verify(bytes, sig, &self.key, &what)
            && m.version() == version
        {
            return Ok(m);
        }
        let max = expect.and_then(|(_, n)| n).unwrap_or(MAX_DOC);
        let (bytes, sig) = tokio::join!(self.get_doc(&mpath, max), self.get_doc(&spath, MAX_SMALL));
        let bytes = bytes?;
        let sig = match sig {
            Ok(s) => String::from_utf8_lossy(&s).into_owned(),
            Err(e) => {
                return Err(Error::Signature {
                    what,
                    reason: format!("its signature could not be fetched ({e})"),
                });
            }
        };
        if let Some((expect, _)) = expect
            && digest::sha256_bytes(&bytes) != *expect
        {
            return Err(Error::Signature {
                what,
                reason: "the manifest does not match the one the signed pointer names".into(),
            });
        }
        let m = VerifiedManifest::verify(bytes, sig, &self.key, &what)?;
        // A signed manifest of another version under this version's name is a replay.
        if m.version() != version {
            return Err(Error::BadManifest {
                what,
                reason: format!(
                    "it is signed as release {} but was published as {version}",
                    m.version()
                ),
            });
        }
        Ok(m)
    }

    /// The latest release's manifest, through the pointer.
    pub async fn latest(&self) -> Result<(Pointer, VerifiedManifest)> {
        let ptr = self.pointer().await?;
        let m = self.manifest_of(&ptr).await?;
        Ok((ptr, m))
    }

    /// The manifest a signed pointer names, verified and fresh.
    async fn manifest_of(&self, ptr: &Pointer) -> Result<VerifiedManifest> {
        let m = self
            .named_manifest(
                &ptr.latest,
                &ptr.manifest_sha256,
                ptr.manifest_size,
                &ptr.manifest_deltas,
            )
            .await?;
        manifest::check_fresh(
            &m.manifest().expires,
            &format!("manifest of {}", m.version()),
            SystemTime::now(),
        )?;
        Ok(m)
    }
}

impl Remote {
    /// The manifest of `version` that a signed pointer names by digest (and size), rebuilt
    /// from one of the `deltas` the pointer lists when the site keeps its base, else fetched
    /// whole.
    pub async fn named_manifest(
        &self,
        version: &str,
        sha: &manifest::Sha256,
        size: Option<u64>,
        deltas: &[String],
    ) -> Result<VerifiedManifest> {
        if let Some(m) = self.manifest_by_delta(version, sha, size, deltas).await {
            return Ok(m);
        }
        self.manifest(version, Some((sha, size))).await
    }

    /// The manifest rebuilt from a delta against a manifest the site keeps: a few kilobytes
    /// instead of the whole list. `None` (the caller fetches it whole) when there is no such
    /// delta, or it is missing or does not rebuild the manifest the pointer names.
    async fn manifest_by_delta(
        &self,
        version: &str,
        sha: &manifest::Sha256,
        size: Option<u64>,
        deltas: &[String],
    ) -> Option<VerifiedManifest> {
        let kept = self.cache.as_ref()?;
        // A manifest already kept is used as it is (see `manifest`).
        if kept.manifest(version).is_some() {
            return None;
        }
        let (old, base) = deltas.iter().find_map(|v| Some((v, kept.manifest(v)?.0)))?;
        let size = size?;
        let (dpath, spath) = (
            crate::documents::forms::manifest_delta_path(version, old),
            repo::manifest_sig_path(version),
        );
        let (delta, sig) = tokio::join!(
            self.get_doc_opt(&dpath, size),
            self.get_doc(&spath, MAX_SMALL)
        );
        let (delta, sig) = (delta.ok()??, sig.ok()?);
        let mut out = Vec::new();
        let h = crate::documents::forms::apply_delta(
            &delta,
            &base,
            &mut out,
            std::path::Path::new("-"),
            size,
        )
        .ok()?
        .ok()?;
        if h.sha256 != *sha {
            return None;
        }
        let what = self.url(&repo::manifest_path(version));
        let m = VerifiedManifest::verify(
            out,
            String::from_utf8_lossy(&sig).into_owned(),
            &self.key,
            &what,
        )
        .ok()?;
        (m.version() == version).then_some(m)
    }
}

/// What the reference offers a site: the release its channel gives it, and why.
pub struct Target {
    /// The release's manifest; `None` when the channel offers this site nothing yet.
    pub manifest: Option<VerifiedManifest>,
    /// The channel's decision, when the site's channel exists in the repository (`None`: the
    /// repository's latest release, as before channels).
    pub offer: Option<Offer>,
}

impl Remote {
    /// The delegation of online keys, verified with the release key and fresh.
    async fn delegation(&self) -> Result<Option<Delegation>> {
        let what = self.url(DELEGATION);
        let Some((bytes, sig)) = self
            .signed_pair(DELEGATION, DELEGATION_SIG, MAX_SMALL)
            .await?
        else {
            return Ok(None);
        };
        let d: Delegation =
            manifest::verify_signed(&bytes, &String::from_utf8_lossy(&sig), &self.key, &what)?;
        manifest::check_fresh(&d.expires, &what, SystemTime::now())?;
        Ok(Some(d))
    }

    /// Where the publisher signed that sites enrol and report (`None`: at the reference
    /// itself, as before; or the repository delegates nothing).
    pub async fn reports_url(&self) -> Result<Option<String>> {
        Ok(self.delegation().await?.and_then(|d| d.reports))
    }

    /// The release `site` is offered on `channel`: by the channel's signed pointer and its
    /// waves when the repository has that channel, else (for `stable` only) the latest release.
    pub async fn offered(&self, site: &SiteView<'_>, channel: &str) -> Result<Target> {
        check_channel_name(channel)?;
        let (cpath, spath) = (channel_path(channel), channel_sig_path(channel));
        // The latest pointer is asked at the same time for the default channel, which falls
        // back on it: an idle poll is one round trip whether or not the channel exists.
        let (pair, deleg, ptr) = tokio::join!(
            self.signed_pair(&cpath, &spath, MAX_SMALL),
            self.delegation(),
            async {
                if channel == DEFAULT_CHANNEL {
                    Some(self.pointer().await)
                } else {
                    None
                }
            }
        );
        let what = self.url(&cpath);
        let Some((doc, sig)) = pair? else {
            if let Some(ptr) = ptr {
                let m = self.manifest_of(&ptr?).await?;
                return Ok(Target {
                    manifest: Some(m),
                    offer: None,
                });
            }
            return Err(Error::refused(
                format!("the reference has no channel {channel} ({what} is not there)"),
                "check `channel` in upkeep.toml (the publisher creates channels with `upkeep promote`)",
            ));
        };
        let sig = String::from_utf8_lossy(&sig).into_owned();
        let Some(deleg) = deleg? else {
            return Err(Error::Signature {
                what,
                reason: "the repository delegates no online key (keys/online.json is missing), so no channel pointer can be trusted".into(),
            });
        };
        let keys: Vec<PublicKey> = deleg
            .online_keys
            .iter()
            .filter_map(|k| PublicKey::parse(k).ok())
            .collect();
        let ptr: ChannelPointer = manifest::verify_signed_by_any(&doc, &sig, &keys, &what)?;
        manifest::check_fresh(&ptr.expires, &what, SystemTime::now())?;
        if ptr.channel != channel || ptr.format != CHANNEL_FORMAT {
            return Err(Error::BadManifest {
                what,
                reason: format!(
                    "it is the pointer of channel {:?} (format {}), not of {channel}",
                    ptr.channel, ptr.format
                ),
            });
        }
        let offer = channel::offer(&ptr, site);
        let manifest = match (&offer.release, &offer.manifest) {
            (Some(v), Some((sha, size))) => {
                // The deltas the pointer lists are from its release's manifest (a site held
                // on the previous release fetches that one whole).
                let deltas: &[String] = if v == &ptr.release {
                    &ptr.manifest_deltas
                } else {
                    &[]
                };
                let m = self.named_manifest(v, sha, Some(*size), deltas).await?;
                // Urgency skips the waves: only the release key may say so.
                if ptr.urgent && v == &ptr.release && !m.manifest().urgent {
                    return Err(Error::Signature {
                        what,
                        reason: format!(
                            "it calls release {v} urgent, but the release's signed manifest does not"
                        ),
                    });
                }
                manifest::check_fresh(
                    &m.manifest().expires,
                    &format!("manifest of {}", m.version()),
                    SystemTime::now(),
                )?;
                Some(m)
            }
            _ => None,
        };
        Ok(Target {
            manifest,
            offer: Some(offer),
        })
    }
}

fn missing_sig(what: String) -> Error {
    Error::Signature {
        what,
        reason: "its signature is missing".into(),
    }
}

/// Refuse a version the pointer does not list as published.
pub fn require_published(ptr: &Pointer, v: &str) -> Result<()> {
    if ptr.releases.iter().any(|r| r == v) {
        return Ok(());
    }
    Err(Error::refused(
        format!(
            "the reference has no release {v}; published: {}",
            ptr.releases.join(", ")
        ),
        "pass one of the published versions to --installed",
    ))
}

/// Exponential backoff: 0.2 s, 0.4 s, 0.8 s ... capped at 5 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((200u64 << attempt.min(5)).min(5000))
}

/// A reqwest error in words an operator can act on.
pub fn describe(e: &reqwest::Error) -> String {
    let mut s = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "could not connect".to_string()
    } else {
        e.to_string()
    };
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// An answer to [`probe`].
pub struct Probe {
    /// The HTTP status.
    pub status: reqwest::StatusCode,
    /// The body, cut at the size asked for.
    pub body: String,
}

impl Probe {
    /// `"500 Internal Server Error: <first line of the page>"`.
    pub fn describe(&self) -> String {
        format!("{}{}", self.status, gist(&self.body))
    }
}

/// GET `url` once, within `timeout` in all, keeping at most `max` bytes of the body: for health
/// checks and busy signals, which talk to the site's own servers, not to the reference.
pub fn probe(url: &str, timeout: Duration, max: usize) -> std::result::Result<Probe, String> {
    block_on(async {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| describe(&e))?;
        let mut resp = client.get(url).send().await.map_err(|e| describe(&e))?;
        let status = resp.status();
        let mut body = Vec::new();
        while body.len() < max {
            match resp.chunk().await.map_err(|e| describe(&e))? {
                Some(c) => body.extend_from_slice(&c),
                None => break,
            }
        }
        body.truncate(max);
        Ok(Probe {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    })
}
