//! A real HTTP receiver on loopback for webhooks: Python's http.server, writing each request it
//! takes (headers and body) to a file the tests read back (renamed into place whole), answering 503 to the first `refuse`
//! requests (a receiver that is down for a while).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

const SCRIPT: &str = r#"
import http.server, json, os, sys
port, out, refuse = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
seen = [0]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get('content-length', 0)))
        seen[0] += 1
        if seen[0] <= refuse:
            self.send_response(503); self.end_headers(); return
        n = len([x for x in os.listdir(out) if x.endswith('.json')])
        path = os.path.join(out, '%04d.json' % n)
        with open(path + '.part', 'w') as f:
            json.dump({'headers': {k.lower(): v for k, v in self.headers.items()}, 'body': body.decode()}, f)
        os.rename(path + '.part', path)
        self.send_response(204); self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(('127.0.0.1', port), H).serve_forever()
"#;

/// A running receiver, stopped on drop.
pub struct Receiver {
    child: Child,
    /// Its URL.
    pub url: String,
    dir: tempfile::TempDir,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    /// Start one that refuses its first `refuse` requests with 503.
    pub fn start(refuse: usize) -> Receiver {
        let dir = tempfile::tempdir().unwrap();
        let port = super::smtp::free_port();
        let child = Command::new("python3")
            .args(["-c", SCRIPT, &port.to_string()])
            .arg(dir.path())
            .arg(refuse.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        assert!(super::wait_port(port), "the receiver did not start");
        Receiver {
            child,
            url: format!("http://127.0.0.1:{port}/hook"),
            dir,
        }
    }

    /// What it took, in order: headers (lowercase names) and body.
    pub fn received(&self) -> Vec<serde_json::Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap())
            .collect()
    }
}
