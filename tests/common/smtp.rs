//! A real SMTP server on loopback for the mail reports: Debian's python3-aiosmtpd, storing
//! what it receives in a Maildir the tests read back with Python's own mail parser.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// The Python that has Debian's aiosmtpd (not a pyenv one on PATH).
const PY: &str = "/usr/bin/python3";

/// A received message.
#[derive(Debug)]
pub struct Mail {
    pub subject: String,
    pub from: String,
    pub to: String,
    pub body: String,
}

pub struct Smtp {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn have_aiosmtpd() -> bool {
    let ok = Command::new(PY)
        .args(["-c", "import aiosmtpd"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3-aiosmtpd is missing on CI"
        );
        eprintln!("skipped: no SMTP server (apt-get install python3-aiosmtpd)");
    }
    ok
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Smtp {
    /// A server that accepts every message; `None` (skip) when aiosmtpd is not installed here.
    pub fn start() -> Option<Smtp> {
        Self::start_on(free_port(), false)
    }

    /// A server that refuses every recipient with 550.
    pub fn start_refusing() -> Option<Smtp> {
        Self::start_on(free_port(), true)
    }

    /// On a given port (to bring a server "back" where a site expects it).
    pub fn start_on(port: u16, refuse: bool) -> Option<Smtp> {
        if !have_aiosmtpd() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let maildir = dir.path().join("Maildir");
        std::fs::write(
            dir.path().join("refuse.py"),
            "class Refuse:\n    async def handle_RCPT(self, server, session, envelope, address, options):\n        return '550 5.7.1 relaying denied (upkeep test)'\n",
        )
        .unwrap();
        let mut cmd = Command::new(PY);
        cmd.args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .env("PYTHONPATH", dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if refuse {
            cmd.args(["-c", "refuse.Refuse"]);
        } else {
            cmd.args(["-c", "aiosmtpd.handlers.Mailbox"]).arg(&maildir);
        }
        let child = cmd.spawn().unwrap();
        let s = Smtp { child, port, dir };
        assert!(super::wait_port(port), "aiosmtpd did not listen on {port}");
        Some(s)
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    fn maildir(&self) -> PathBuf {
        self.dir.path().join("Maildir")
    }

    /// Every message received, oldest first.
    pub fn messages(&self) -> Vec<Mail> {
        if !self.maildir().exists() {
            return Vec::new();
        }
        let script = r#"
import mailbox, json, sys
box = mailbox.Maildir(sys.argv[1], create=False)
out = []
for key, m in box.iteritems():
    body = m.get_payload(decode=True).decode("utf-8")
    out.append({"subject": str(m["subject"]), "from": str(m["from"]), "to": str(m["to"]),
                "body": body, "date": m["date"], "t": box.get_file(key)._file.name})
import os
out.sort(key=lambda x: os.path.getmtime(x["t"]) if os.path.exists(x["t"]) else 0)
print(json.dumps(out))
"#;
        let o = Command::new(PY)
            .args(["-c", script])
            .arg(self.maildir())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
        v.into_iter()
            .map(|m| Mail {
                subject: m["subject"].as_str().unwrap().to_string(),
                from: m["from"].as_str().unwrap().to_string(),
                to: m["to"].as_str().unwrap().to_string(),
                body: m["body"].as_str().unwrap().to_string(),
            })
            .collect()
    }
}

/// A server that accepts connections and never says a word: a hung SMTP server.
pub struct Silent {
    pub port: u16,
    _listener: std::net::TcpListener,
}

impl Silent {
    pub fn start() -> Silent {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        Silent {
            port: l.local_addr().unwrap().port(),
            // The kernel completes the handshake from the backlog; nobody ever answers.
            _listener: l,
        }
    }
}
