//! A real nginx on a loopback port, run as the test's user with every path in a scratch folder.

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// An nginx master process, stopped on drop.
pub struct Nginx {
    child: Child,
    /// `http://127.0.0.1:PORT/`.
    pub url: String,
}

impl Drop for Nginx {
    /// SIGTERM lets the master stop its workers; SIGKILL would orphan them.
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Nginx {
    /// Start nginx with one `server { ... }` block, where `{listen}` stands for the address to
    /// listen on; `tmp` holds its configuration, pid and temporary files.
    pub fn start(server: &str, tmp: &Path) -> Nginx {
        let port = super::smtp::free_port();
        std::fs::create_dir_all(tmp).unwrap();
        let t = tmp.display();
        let server = server.replace("{listen}", &format!("127.0.0.1:{port}"));
        let conf = format!(
            "worker_processes 1; daemon off; pid {t}/nginx.pid; error_log {t}/error.log; events {{}} http {{ access_log {t}/access.log; \
             client_body_temp_path {t}; proxy_temp_path {t}; fastcgi_temp_path {t}; uwsgi_temp_path {t}; scgi_temp_path {t}; {server} }}"
        );
        std::fs::write(tmp.join("nginx.conf"), conf).unwrap();
        let child = Command::new("nginx")
            .args(["-c", tmp.join("nginx.conf").to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx is installed (.ci/run installs nginx-light)");
        let n = Nginx {
            child,
            url: format!("http://127.0.0.1:{port}/"),
        };
        assert!(super::wait_port(port), "nginx did not start");
        n
    }

    /// Serve `dir` with the README's mirror lines (so they cannot drift): a mirror served by a
    /// plain web server, unchanged.
    pub fn serve_mirror(dir: &Path, tmp: &Path) -> Nginx {
        let block = readme_block("## Mirrors and push", "nginx")
            .replace("listen 80;", "listen {listen};")
            .replace("/srv/mirror", dir.to_str().unwrap());
        Nginx::start(&block, tmp)
    }
}

/// The first ```LANG block of README.md after the line `heading`.
pub fn readme_block(heading: &str, lang: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let from = readme
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("README has {heading}"));
    let fence = format!("```{lang}\n");
    let start = from + readme[from..].find(&fence).expect("a block") + fence.len();
    readme[start..start + readme[start..].find("```").unwrap()].to_string()
}
