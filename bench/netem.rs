//! A delaying, counting TCP proxy for the benchmarks (this kernel has no netem): forwards
//! 127.0.0.1:port to an upstream port, holding every chunk `one_way` before passing it on in
//! both directions (a round trip costs twice that), optionally at a limited rate (a token
//! bucket per direction, shared by every connection through the proxy, as a link of that
//! speed serialises bytes), counting the bytes each way and the HTTP requests and answers that
//! go through. Every proxy shares one runtime.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// What went through a proxy.
#[derive(Default)]
pub struct Counters {
    /// Bytes from the client to the server.
    pub up: AtomicU64,
    /// Bytes from the server to the client.
    pub down: AtomicU64,
    /// HTTP requests (one `Host:` header each).
    pub requests: AtomicU64,
    /// Answers `304 Not Modified`.
    pub not_modified: AtomicU64,
}

impl Counters {
    /// Both directions.
    pub fn bytes(&self) -> u64 {
        self.up.load(Ordering::Relaxed) + self.down.load(Ordering::Relaxed)
    }
    /// Back to zero.
    pub fn reset(&self) {
        for c in [&self.up, &self.down, &self.requests, &self.not_modified] {
            c.store(0, Ordering::Relaxed);
        }
    }
    /// (up, down, requests, 304s) now.
    pub fn get(&self) -> (u64, u64, u64, u64) {
        (
            self.up.load(Ordering::Relaxed),
            self.down.load(Ordering::Relaxed),
            self.requests.load(Ordering::Relaxed),
            self.not_modified.load(Ordering::Relaxed),
        )
    }
}

/// A running proxy.
pub struct Proxy {
    /// Where clients connect.
    pub port: u16,
    /// What went through.
    pub count: Arc<Counters>,
}

impl Proxy {
    /// `http://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// A proxy to `upstream` with `one_way` delay and no rate limit.
pub fn proxy(upstream: u16, one_way: Duration) -> Proxy {
    limited(upstream, one_way, None)
}

/// A proxy to `upstream` with `one_way` delay and, with `rate` (bytes per second), a link of
/// that speed each way.
pub fn limited(upstream: u16, one_way: Duration, rate: Option<u64>) -> Proxy {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(Counters::default());
    let c2 = count.clone();
    // One link per direction, shared by every connection through this proxy.
    let links = Arc::new([
        std::sync::Mutex::new(tokio::time::Instant::now()),
        std::sync::Mutex::new(tokio::time::Instant::now()),
    ]);
    listener.set_nonblocking(true).unwrap();
    runtime().spawn(async move {
        let l = tokio::net::TcpListener::from_std(listener).unwrap();
        loop {
            let Ok((down, _)) = l.accept().await else {
                continue;
            };
            let c3 = c2.clone();
            let links = links.clone();
            tokio::spawn(async move {
                let Ok(up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
                    return;
                };
                let _ = down.set_nodelay(true);
                let _ = up.set_nodelay(true);
                let (dr, dw) = down.into_split();
                let (ur, uw) = up.into_split();
                tokio::spawn(pipe(dr, uw, one_way, rate, c3.clone(), links.clone(), true));
                tokio::spawn(pipe(ur, dw, one_way, rate, c3, links, false));
            });
        }
    });
    Proxy { port, count }
}

fn count_in(hay: &[u8], needle: &[u8]) -> u64 {
    hay.windows(needle.len())
        .filter(|w| w.eq_ignore_ascii_case(needle))
        .count() as u64
}

async fn pipe(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    rate: Option<u64>,
    count: Arc<Counters>,
    links: Arc<[std::sync::Mutex<tokio::time::Instant>; 2]>,
    upward: bool,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((at, buf)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if w.write_all(&buf).await.is_err() {
                return;
            }
        }
        let _ = w.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    // When the link is free again: bytes leave one after another at the rate, whichever
    // connection they belong to.
    let link = &links[usize::from(upward)];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let chunk = &buf[..n];
                if upward {
                    count.up.fetch_add(n as u64, Ordering::Relaxed);
                    count
                        .requests
                        .fetch_add(count_in(chunk, b"\r\nhost:"), Ordering::Relaxed);
                } else {
                    count.down.fetch_add(n as u64, Ordering::Relaxed);
                    count
                        .not_modified
                        .fetch_add(count_in(chunk, b"HTTP/1.1 304"), Ordering::Relaxed);
                }
                let now = tokio::time::Instant::now();
                let sent = match rate {
                    Some(r) => {
                        let mut free_at = link.lock().unwrap();
                        *free_at =
                            (*free_at).max(now) + Duration::from_secs_f64(n as f64 / r as f64);
                        *free_at
                    }
                    None => now,
                };
                if tx.send((sent + delay, chunk.to_vec())).is_err() {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}
