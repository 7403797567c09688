//! A small HTTP/1.1 static server over a repository folder that injects faults on object
//! requests: resets mid-file, 5xx answers, trickled bytes, bodies longer than declared. It has no
//! batch endpoint, so the client falls back to per-file GETs, like with any plain static server.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug)]
pub enum Fault {
    /// Send the headers and this many body bytes, then drop the connection.
    ResetAfter(usize),
    /// Answer with this status.
    Status(u16),
    /// Send one byte per interval (the test's deadline cuts it).
    Trickle(Duration),
    /// Declare the object's length but send extra bytes.
    Overlong,
}

#[derive(Default)]
pub struct Log {
    /// Every request line with its Range header, if any.
    pub requests: Vec<(String, Option<String>)>,
}

pub struct FaultServer {
    pub url: String,
    pub faults: Arc<Mutex<VecDeque<Fault>>>,
    /// Faults for release manifests (`releases/V/manifest.json`), one per request.
    pub doc_faults: Arc<Mutex<VecDeque<Fault>>>,
    pub log: Arc<Mutex<Log>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.url.trim_start_matches("http://").trim_end_matches('/'));
    }
}

impl FaultServer {
    pub fn start(root: PathBuf, faults: Vec<Fault>) -> FaultServer {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", l.local_addr().unwrap());
        let faults = Arc::new(Mutex::new(VecDeque::from(faults)));
        let doc_faults = Arc::new(Mutex::new(VecDeque::new()));
        let log = Arc::new(Mutex::new(Log::default()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (f2, l2, s2, d2) = (
            faults.clone(),
            log.clone(),
            stop.clone(),
            doc_faults.clone(),
        );
        std::thread::spawn(move || {
            for conn in l.incoming() {
                if s2.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (root, f3, l3, d3) = (root.clone(), f2.clone(), l2.clone(), d2.clone());
                std::thread::spawn(move || {
                    let _ = handle(conn, &root, &f3, &d3, &l3);
                });
            }
        });
        FaultServer {
            url,
            faults,
            doc_faults,
            log,
            stop,
        }
    }

    pub fn object_requests(&self) -> Vec<(String, Option<String>)> {
        self.log
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|(p, _)| p.contains("/objects/"))
            .cloned()
            .collect()
    }
}

fn handle(
    mut conn: TcpStream,
    root: &std::path::Path,
    faults: &Mutex<VecDeque<Fault>>,
    doc_faults: &Mutex<VecDeque<Fault>>,
    log: &Mutex<Log>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut r = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut range = None;
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        if h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("range:") {
            range = Some(v.trim().to_string());
        }
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    log.lock()
        .unwrap()
        .requests
        .push((format!("{method} {path}"), range.clone()));
    if method != "GET" {
        return conn.write_all(
            b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }
    let rel = path.trim_start_matches('/');
    if rel.contains("..") {
        return conn.write_all(
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }
    let Ok(mut body) = std::fs::read(root.join(rel)) else {
        return conn.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    };
    // Faults hit only large objects, so a test knows which transfer they interrupt.
    let fault = if rel.starts_with("objects/") && body.len() > 4096 {
        faults.lock().unwrap().pop_front()
    } else if rel.ends_with("/manifest.json") {
        doc_faults.lock().unwrap().pop_front()
    } else {
        None
    };
    let mut status = "200 OK".to_string();
    if let Some(from) = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.trim_end_matches('-').parse::<usize>().ok())
    {
        body = body.split_off(from.min(body.len()));
        status = "206 Partial Content".into();
    }
    match fault {
        Some(Fault::Status(code)) => {
            write!(
                conn,
                "HTTP/1.1 {code} Injected\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
        }
        Some(Fault::ResetAfter(n)) => {
            write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            conn.write_all(&body[..n.min(body.len())])?;
            conn.flush()?;
            // End the body early with a FIN, then wait for the client to hang up, so that what
            // was sent is what it receives (closing with unread data would reset instead).
            let _ = conn.shutdown(std::net::Shutdown::Write);
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut sink = [0u8; 512];
            while matches!(conn.read(&mut sink), Ok(n) if n > 0) {}
            Ok(())
        }
        Some(Fault::Trickle(every)) => {
            write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            for b in body.iter().take(600) {
                conn.write_all(&[*b])?;
                conn.flush()?;
                std::thread::sleep(every);
            }
            Ok(())
        }
        Some(Fault::Overlong) => {
            let mut extra = body.clone();
            extra.extend_from_slice(&[b'X'; 4096]);
            write!(conn, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")?;
            conn.write_all(&extra)
        }
        None => {
            write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            conn.write_all(&body)
        }
    }
    .map(|_| {
        let mut sink = [0u8; 1];
        let _ = conn.set_read_timeout(Some(Duration::from_millis(50)));
        let _ = conn.read(&mut sink);
    })
}
