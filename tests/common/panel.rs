//! A running `upkeep demo` and an HTTP client that behaves like a browser (cookies, Origin).

use super::*;
use reqwest::blocking::{Client, Response};

pub struct Demo {
    pub server: Server,
    pub url: String,
    pub password: String,
    pub dir: tempfile::TempDir,
}

impl Demo {
    pub fn start(env: &[(&str, &str)]) -> Demo {
        let dir = tempfile::tempdir().unwrap();
        let mut c = std::process::Command::new(BIN);
        c.args([
            "demo",
            "--dir",
            dir.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ]);
        for (k, v) in env {
            c.env(k, v);
        }
        let (server, line) = spawn_with_banner(c);
        let password = line
            .split("password ")
            .nth(1)
            .unwrap()
            .trim_end_matches(')')
            .trim()
            .trim_end_matches(')')
            .to_string();
        let url = server.url.clone();
        Demo {
            server,
            url,
            password,
            dir,
        }
    }

    pub fn site(&self) -> std::path::PathBuf {
        self.dir.path().join("site")
    }

    /// A fresh browser-like client (own cookie jar, no automatic redirects).
    pub fn client(&self) -> Client {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("origin", self.url.trim_end_matches('/').parse().unwrap());
        Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .default_headers(h)
            .build()
            .unwrap()
    }

    pub fn get(&self, c: &Client, path: &str) -> Response {
        c.get(format!("{}{}", self.url, path.trim_start_matches('/')))
            .send()
            .unwrap()
    }

    pub fn post(&self, c: &Client, path: &str, form: &[(&str, &str)]) -> Response {
        c.post(format!("{}{}", self.url, path.trim_start_matches('/')))
            .form(form)
            .send()
            .unwrap()
    }

    pub fn login(&self, c: &Client) -> Response {
        self.post(
            c,
            "control/login",
            &[("name", "admin"), ("password", &self.password)],
        )
    }

    /// The CSRF token of the logged-in session, read from a page like a browser would.
    pub fn csrf(&self, c: &Client) -> String {
        let body = self.get(c, "control").text().unwrap();
        let i = body
            .find("name=\"csrf\" value=\"")
            .expect("a form with a CSRF token");
        body[i + 19..i + 19 + 64].to_string()
    }

    /// The digest of the plan the review page shows (`keep`: the one keeping modified files),
    /// as the apply form posts it.
    pub fn reviewed_plan(&self, c: &Client, keep: bool) -> String {
        let body = self.get(c, "control/review").text().unwrap();
        let field = if keep { "plan_keep" } else { "plan" };
        let at = format!("name=\"{field}\" value=\"");
        let i = body
            .find(&at)
            .unwrap_or_else(|| panic!("no plan digest on the review page: {body}"));
        body[i + at.len()..i + at.len() + 16].to_string()
    }

    /// Review, then apply the plan shown.
    pub fn apply_reviewed(&self, c: &Client, csrf: &str) -> Response {
        let plan = self.reviewed_plan(c, false);
        self.post(c, "control/apply", &[("csrf", csrf), ("plan", &plan)])
    }

    /// Follow a job page until it has finished (bounded), returning the page.
    pub fn wait_job(&self, c: &Client, location: &str) -> String {
        for _ in 0..600 {
            let page = self.get(c, location).text().unwrap();
            if !page.contains("data-key=\"working\"") {
                return page;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("job at {location} did not finish");
    }

    /// Follow the run page until the run is no longer running (bounded).
    pub fn wait_run(&self, c: &Client) -> String {
        for _ in 0..600 {
            let page = self.get(c, "control/run").text().unwrap();
            if !page.contains("data-poll=\"/control/api/run\"") {
                return page;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("the run did not finish");
    }
}

pub fn location(r: &Response) -> String {
    r.headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// Spawn a server command and return it with its first output line.
pub fn spawn_with_banner(mut c: std::process::Command) -> (Server, String) {
    use std::io::{BufRead, BufReader};
    let mut child = c
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let mut r = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    std::thread::spawn(move || for _ in r.lines() {});
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_string();
    (Server { child, url }, line)
}
