//! `upkeep reference`: serves a repository with what static hosting gives (ETag, conditional GET,
//! Range) plus one dynamic convenience, `POST /batch`, which streams many objects in one response
//! so that a site never pays one round trip per file. Nothing a site needs for safety lives only
//! here: every object is also a plain static file.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix_files::NamedFile;
use actix_web::http::header::{self, CacheControl, CacheDirective};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use bytes::Bytes;

use crate::documents::manifest::{RelPath, Sha256};
use crate::documents::repo;

/// Largest number of objects one batch request may ask for.
pub const MAX_BATCH: usize = 200_000;

struct Repo {
    dir: PathBuf,
    cache: MemCache,
}

/// Routes a caller adds to the repository server (a mirror's `/trigger`).
pub type ExtraRoutes = std::sync::Arc<dyn Fn(&mut web::ServiceConfig) + Send + Sync>;

/// Start serving `dir` on `listen`, with the fleet endpoints when a fleet database is given;
/// returns the running server and the bound address.
pub fn start(
    dir: &Path,
    listen: &str,
    fleet: Option<(
        crate::publisher::fleet::db::FleetDb,
        Option<crate::publisher::fleet::pilot::Pilot>,
        crate::publisher::fleet::Notify,
    )>,
    tick: std::time::Duration,
    extra: Option<ExtraRoutes>,
) -> std::io::Result<(actix_web::dev::Server, std::net::SocketAddr)> {
    let data = web::Data::new(Repo {
        dir: dir.to_path_buf(),
        cache: MemCache::default(),
    });
    let fleet = fleet.map(|(db, pilot, notify)| {
        web::Data::new(crate::publisher::fleet::Fleet {
            db: std::sync::Mutex::new(db),
            pilot,
            repo: dir.to_path_buf(),
            last_steer: Default::default(),
            notify,
        })
    });
    // With an online key, rollouts are steered at start and then on a timer (time-based
    // advances, silent sites, pointer refreshes), besides after each report; the webhooks due
    // go on the same timer, and on a shared fleet the channel pointers the others wrote.
    let shared = |f: &crate::publisher::fleet::Fleet| {
        let db = f.db.lock().unwrap_or_else(|e| e.into_inner());
        crate::base::sql::Sql::is_postgres(&*db)
    };
    if let Some(f) = fleet
        .clone()
        .filter(|f| f.pilot.is_some() || !f.notify.urls.is_empty() || shared(f))
    {
        actix_web::rt::spawn(async move {
            let mut every =
                actix_web::rt::time::interval(tick.max(std::time::Duration::from_secs(1)));
            loop {
                every.tick().await;
                let f = f.clone();
                let _ = web::block(move || {
                    f.steer_all();
                    f.deliver_due();
                })
                .await;
            }
        });
    }
    let server = HttpServer::new(move || {
        let fleet = fleet.clone();
        let extra = extra.clone();
        App::new()
            .configure(move |cfg| {
                if let Some(f) = fleet {
                    crate::publisher::fleet::server::configure(cfg, f);
                }
                // Routes the caller adds (a mirror's /trigger).
                if let Some(x) = extra {
                    x(cfg);
                }
            })
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(64 << 20))
            .route("/", web::get().to(index))
            .route("/batch", web::post().to(batch))
            .route("/{tail:.*}", web::get().to(file))
            .route("/{tail:.*}", web::head().to(file))
    })
    .on_connect(crate::base::http::nodelay)
    .bind(listen)?;
    let addr = server.addrs()[0];
    Ok((server.run(), addr))
}

async fn index(repo: web::Data<Repo>) -> HttpResponse {
    let ptr = std::fs::read_to_string(repo.dir.join(repo::POINTER)).ok();
    let releases: Vec<String> = ptr
        .as_deref()
        .and_then(|t| serde_json::from_str::<crate::documents::manifest::Pointer>(t).ok())
        .map(|p| p.releases)
        .unwrap_or_default();
    let page = maud::html! {
        (maud::DOCTYPE)
        html lang="en" { head { meta charset="utf-8"; title { "upkeep reference repository" } }
        body {
            h1 { "upkeep reference repository" }
            @if releases.is_empty() { p { "No release published yet. Publish one with " code { "upkeep publish" } "." } }
            @else {
                p { "Latest pointer: " a href="latest.json" { "latest.json" } " (signature " a href="latest.sig" { "latest.sig" } ")" }
                ul { @for v in releases.iter().rev() {
                    li { (v) ": " a href={ "releases/" (v) "/manifest.json" } { "manifest" } ", "
                         a href={ "releases/" (v) "/upkeep-" (v) ".zip" } { "zip" } }
                } }
            }
        } }
    };
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(page.into_string())
}

fn not_found(repo: &Repo, tail: &str) -> HttpResponse {
    let msg = if let Some(rest) = tail.strip_prefix("releases/") {
        let v = rest.split('/').next().unwrap_or_default();
        let known = std::fs::read_dir(repo.dir.join("releases"))
            .map(|rd| {
                rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if known.iter().any(|k| k == v) {
            format!(
                "release {v} has no file {tail:?}: a release holds manifest.json, manifest.sig and upkeep-{v}.zip\n"
            )
        } else {
            format!(
                "no release {v:?} in this repository; published: {}\n",
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            )
        }
    } else if tail.starts_with("objects/") {
        format!("no object {tail:?}: objects are named objects/XX/SHA256 after their contents\n")
    } else {
        format!(
            "{tail:?} is not part of an upkeep repository: it serves latest.json, latest.sig, releases/V/... and objects/XX/SHA256\n"
        )
    };
    HttpResponse::NotFound()
        .content_type("text/plain; charset=utf-8")
        .body(msg)
}

/// Files at most this large are answered from memory.
const CACHE_FILE_MAX: u64 = 32 << 20;
/// Total bytes the memory cache may hold.
const CACHE_TOTAL_MAX: u64 = 256 << 20;

/// A repository file held in memory. Repository files never change in place (objects are named
/// by their contents, manifests are immutable, the pointer is replaced by rename), so an entry
/// stays valid while the file's size, mtime and inode are the same.
struct Cached {
    key: (u64, i64, i64, u64),
    bytes: Bytes,
    etag: String,
}

/// Memory cache of small repository files: serving them skips the blocking-pool round trips
/// of open and read, which otherwise dominate a request for a few kilobytes.
#[derive(Default)]
struct MemCache {
    map: std::sync::RwLock<std::collections::HashMap<PathBuf, Arc<Cached>>>,
    total: std::sync::atomic::AtomicU64,
}

impl MemCache {
    fn get(&self, path: &Path, rel: &RelPath) -> Option<Arc<Cached>> {
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(path).ok()?;
        if !md.is_file() || md.len() > CACHE_FILE_MAX {
            return None;
        }
        let key = (md.len(), md.mtime(), md.mtime_nsec(), md.ino());
        if let Some(c) = self.map.read().unwrap_or_else(|e| e.into_inner()).get(path)
            && c.key == key
        {
            return Some(c.clone());
        }
        let bytes = Bytes::from(std::fs::read(path).ok()?);
        let etag = etag(rel, path, &md);
        let c = Arc::new(Cached { key, bytes, etag });
        use std::sync::atomic::Ordering::Relaxed;
        if self.total.load(Relaxed) + key.0 <= CACHE_TOTAL_MAX {
            self.total.fetch_add(key.0, Relaxed);
            self.map
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(path.to_path_buf(), c.clone());
        }
        Some(c)
    }
}

/// The ETag of a repository file, the same whether it is served from memory or from disk (a
/// HEAD, a range): a client's validator must not depend on how the server happened to read it.
fn etag(rel: &RelPath, path: &Path, md: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    match path.file_name() {
        // Objects are named by their SHA-256: that is the strongest possible validator.
        Some(name) if rel.top() == "objects" => format!("\"{}\"", name.to_string_lossy()),
        // deltas/OLD/NEW.zst: both names make it unique.
        Some(_) if rel.top() == "deltas" => format!("\"{}\"", rel.as_str().replace('/', "-")),
        _ => format!("\"{:x}-{:x}-{:x}\"", md.len(), md.mtime(), md.mtime_nsec()),
    }
}

/// Whether an `If-None-Match` header names `etag`.
fn none_match(req: &HttpRequest, etag: &str) -> bool {
    req.headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == etag || t.trim() == "*")
        })
}

fn headers_for(rel: &RelPath, tail: &str) -> (CacheControl, &'static str) {
    let cache = if rel.top() == "objects" || rel.top() == "deltas" {
        // Content-addressed: the same name always means the same bytes.
        CacheControl(vec![
            CacheDirective::Public,
            CacheDirective::MaxAge(31_536_000),
            CacheDirective::Extension("immutable".into(), None),
        ])
    } else if rel.top() == "releases" {
        CacheControl(vec![CacheDirective::Public, CacheDirective::MaxAge(3600)])
    } else {
        CacheControl(vec![CacheDirective::NoCache])
    };
    let ct = if tail.ends_with(".json") {
        "application/json"
    } else if tail.ends_with(".zip") {
        "application/zip"
    } else {
        "application/octet-stream"
    };
    (cache, ct)
}

async fn file(req: HttpRequest, repo: web::Data<Repo>) -> actix_web::Result<HttpResponse> {
    let tail = req
        .match_info()
        .query("tail")
        .trim_start_matches('/')
        .to_string();
    let Ok(rel) = RelPath::parse(&tail) else {
        return Ok(HttpResponse::BadRequest()
            .content_type("text/plain")
            .body(format!("refused path {tail:?}\n")));
    };
    if !repo::is_layout_path(&rel) || !rel.no_links_under(&repo.dir) {
        return Ok(not_found(&repo, &tail));
    }
    let mut path = rel.under(&repo.dir);
    let (cache, ct) = headers_for(&rel, &tail);
    // A document with a gzip form beside (manifests, forms lists) goes gzipped to a client that
    // accepts it, whole (ranges are of the document itself).
    let negotiable = tail.ends_with(".json") && rel.top() == "releases";
    let gz = path.with_file_name(format!(
        "{}{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        crate::documents::forms::GZ_SUFFIX
    ));
    let gzipped = negotiable
        && !req.headers().contains_key(header::RANGE)
        && req
            .headers()
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim().starts_with("gzip")))
        && gz.is_file();
    if gzipped {
        path = gz;
    }
    let encoding = |h: &mut actix_web::http::header::HeaderMap| {
        if negotiable {
            h.insert(
                header::VARY,
                header::HeaderValue::from_static("Accept-Encoding"),
            );
        }
        if gzipped {
            h.insert(
                header::CONTENT_ENCODING,
                header::HeaderValue::from_static("gzip"),
            );
        }
    };
    // Plain GETs of small files come from memory; ranges, HEAD and large files go through
    // actix-files, which implements them fully.
    if req.method() == actix_web::http::Method::GET
        && !req.headers().contains_key(header::RANGE)
        && let Some(c) = repo.cache.get(&path, &rel)
    {
        let matches = none_match(&req, &c.etag);
        let mut b = if matches {
            HttpResponse::NotModified()
        } else {
            HttpResponse::Ok()
        };
        b.insert_header((header::ETAG, c.etag.clone()))
            .insert_header((header::CACHE_CONTROL, cache.to_string()))
            .insert_header((header::ACCEPT_RANGES, "bytes"));
        let mut resp = if matches {
            b.finish()
        } else {
            b.content_type(ct).body(c.bytes.clone())
        };
        encoding(resp.headers_mut());
        return Ok(resp);
    }
    let Ok(f) = NamedFile::open_async(&path).await else {
        return Ok(not_found(&repo, &tail));
    };
    let tag = etag(&rel, &path, f.metadata());
    if none_match(&req, &tag) {
        let mut resp = HttpResponse::NotModified()
            .insert_header((header::ETAG, tag))
            .insert_header((header::CACHE_CONTROL, cache.to_string()))
            .finish();
        encoding(resp.headers_mut());
        return Ok(resp);
    }
    let mut resp = f
        .use_etag(false)
        .set_content_type(ct.parse().expect("static mime"))
        .into_response(&req);
    let h = resp.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        cache.to_string().parse().expect("valid header"),
    );
    h.insert(header::ETAG, tag.parse().expect("a quoted hex ETag"));
    encoding(h);
    Ok(resp)
}

/// One requested object: its SHA-256, the offset to start from (for resumed transfers), and
/// the form it is asked in.
struct Asked {
    sha: Sha256,
    offset: u64,
    form: crate::documents::forms::Form,
}

/// A repository file opened for sending, with its length; not found through a link.
fn open_held(dir: &Path, rel: &str) -> std::io::Result<(std::fs::File, u64)> {
    let rel = RelPath::parse(rel).expect("object paths are relative");
    let f = rel.open_under(dir)?;
    let len = f.metadata()?.len();
    Ok((f, len))
}

impl Asked {
    /// How a frame names the form (after the length).
    fn token(&self) -> String {
        self.form.token()
    }
}

fn parse_batch(body: &[u8]) -> Result<Vec<Asked>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the batch body is not UTF-8".to_string())?;
    let mut out = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let mut parts = line.split_whitespace();
        let sha = parts
            .next()
            .and_then(Sha256::from_hex)
            .ok_or_else(|| format!("line {}: expected a SHA-256 in hex", n + 1))?;
        let offset = match parts.next() {
            Some(o) => o
                .parse()
                .map_err(|_| format!("line {}: bad offset", n + 1))?,
            None => 0,
        };
        let word = parts.next();
        let form = crate::documents::forms::Form::parse_token(word)
            .ok_or_else(|| format!("line {}: unknown form {:?}", n + 1, word.unwrap_or("")))?;
        out.push(Asked { sha, offset, form });
        if out.len() > MAX_BATCH {
            return Err(format!("more than {MAX_BATCH} objects in one batch"));
        }
    }
    Ok(out)
}

/// `POST /batch`: body lines `SHA256 [OFFSET [FORM]]` (FORM: `z` for the compressed object,
/// `d:BASE` for the delta against object BASE, `*` or `*:BASE` for the smallest form held; the
/// body may be gzipped, with `Content-Encoding`); response frames `SHA256 OFFSET LEN [FORM]\n`
/// and the bytes (or `SHA256 missing [FORM]\n`), FORM being the form sent, then `end\n`. With the
/// request header `upkeep-batch-frames: numbered`, frames name the request's line by its number
/// instead (`#N OFFSET LEN [FORM]\n`, `#N missing\n`, a delta's FORM being `d`: its base is
/// the line's): a thousand small objects otherwise spend 90 KB on frames naming what the client
/// already knows.
async fn batch(req: HttpRequest, repo: web::Data<Repo>, body: web::Bytes) -> HttpResponse {
    let numbered = req
        .headers()
        .get(repo::NUMBERED_FRAMES)
        .is_some_and(|v| v.as_bytes() == b"numbered");
    let wanted = match parse_batch(&body) {
        Ok(w) => w,
        Err(e) => {
            return HttpResponse::BadRequest()
                .content_type("text/plain")
                .body(format!("{e}\n"));
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let dir = repo.dir.clone();
    // Reading files is blocking work: keep it off the server's event loop.
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 256 * 1024];
        for (i, mut asked) in wanted.into_iter().enumerate() {
            let (sha, offset) = (asked.sha, asked.offset);
            // The first form held of those the line accepts: the one it names, or for `*` the
            // smallest first. What is sent is named in the frame.
            let mut opened = Err(std::io::ErrorKind::NotFound.into());
            for form in asked.form.choices() {
                opened = open_held(&dir, &form.path(&sha));
                asked.form = form;
                if opened.is_ok() {
                    break;
                }
            }
            let name = |rest: &str| {
                if numbered {
                    // The base of a delta is the one the line named: `d` alone.
                    let form = match &asked.form {
                        crate::documents::forms::Form::Delta(_) => " d".to_string(),
                        f => f.token(),
                    };
                    Bytes::from(format!("#{i} {rest}{form}\n"))
                } else {
                    Bytes::from(format!("{sha} {rest}{}\n", asked.token()))
                }
            };
            let Ok((mut f, len)) = opened else {
                if tx.blocking_send(Ok(name("missing"))).is_err() {
                    return;
                }
                continue;
            };
            let offset = offset.min(len);
            if offset > 0 {
                use std::io::Seek;
                if f.seek(std::io::SeekFrom::Start(offset)).is_err() {
                    return;
                }
            }
            if tx
                .blocking_send(Ok(name(&format!("{offset} {}", len - offset))))
                .is_err()
            {
                return;
            }
            let mut left = len - offset;
            while left > 0 {
                let want = buf.len().min(left as usize);
                match f.read(&mut buf[..want]) {
                    Ok(0) | Err(_) => {
                        let _ = tx.blocking_send(Err(std::io::Error::other(
                            "object shrank while being sent",
                        )));
                        return;
                    }
                    Ok(n) => {
                        left -= n as u64;
                        if tx
                            .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        }
        let _ = tx.blocking_send(Ok(Bytes::from_static(b"end\n")));
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut ok = HttpResponse::Ok();
    if numbered {
        ok.insert_header((repo::NUMBERED_FRAMES, "numbered"));
    }
    ok.content_type("application/x-upkeep-batch")
        .streaming(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_parse_1() {
        let h = "a".repeat(64);
        let b = "b".repeat(64);
        let v = parse_batch(format!("{h}\n{h} 10\n\n{h} 0 z\n{h} 5 d:{b}\n").as_bytes()).unwrap();
        assert_eq!(v.len(), 4);
        assert_eq!(v[1].offset, 10);
        assert_eq!(v[2].form.path(&v[2].sha), format!("objects/aa/{h}.zst"));
        assert_eq!(
            (v[3].offset, v[3].form.path(&v[3].sha)),
            (5, format!("deltas/{b}/{h}.zst"))
        );
        assert_eq!(v[3].token(), format!(" d:{b}"));
    }
    #[test]
    fn batch_bad_1() {
        assert!(parse_batch(b"../../etc/passwd 0\n").is_err());
        assert!(parse_batch(format!("{} x\n", "a".repeat(64)).as_bytes()).is_err());
        assert!(parse_batch(format!("{} 0 d:../x\n", "a".repeat(64)).as_bytes()).is_err());
        assert!(parse_batch(format!("{} 0 q\n", "a".repeat(64)).as_bytes()).is_err());
    }
}
