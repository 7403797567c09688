//! The README's nginx lines, run by a real nginx: the same gate marker and the same refusals as
//! `upkeep serve`. The snippet is read from README.md, so the documentation cannot drift.

mod common;
use common::*;

#[test]
fn the_readme_nginx_snippet_honours_the_gate_and_the_refusals() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("```nginx\n")
        .expect("an nginx block in the README")
        + 9;
    let block = &readme[start..start + readme[start..].find("```").unwrap()];

    let w = World::new();
    let d1 = w.publish(
        "1.0.0",
        &[("index.html", b"hello"), ("run_once/a.sql", b"SELECT 1;")],
    );
    let srv = w.reference();
    let root = w.instance("site", Some(&d1), &srv.url, &[]);
    std::fs::write(root.join("index.html.bak"), b"old").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tmp = w.path("nginx");
    std::fs::create_dir_all(&tmp).unwrap();
    let t = tmp.display();
    let server = block
        .replace("listen 80;", &format!("listen 127.0.0.1:{port};"))
        .replace("/var/www/site", root.to_str().unwrap());
    let conf = format!(
        "worker_processes 1; daemon off; pid {t}/nginx.pid; error_log {t}/error.log; events {{}} http {{ access_log off; \
         client_body_temp_path {t}; proxy_temp_path {t}; fastcgi_temp_path {t}; uwsgi_temp_path {t}; scgi_temp_path {t}; {server} }}"
    );
    std::fs::write(tmp.join("nginx.conf"), conf).unwrap();
    /// SIGTERM lets the master stop its workers; SIGKILL would orphan them.
    struct Nginx(std::process::Child);
    impl Drop for Nginx {
        fn drop(&mut self) {
            unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
            let _ = self.0.wait();
        }
    }
    let _nginx = Nginx(
        std::process::Command::new("nginx")
            .args(["-c", tmp.join("nginx.conf").to_str().unwrap()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nginx is installed (.ci/run installs nginx-light)"),
    );
    let url = format!("http://127.0.0.1:{port}/");
    let mut up = false;
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    assert!(up, "nginx did not start");
    let c = reqwest::blocking::Client::new();
    let get = |p: &str| c.get(format!("{url}{p}")).send().unwrap();
    assert_eq!(get("").text().unwrap(), "hello");
    for p in [
        "index.html.bak",
        "upkeep.toml",
        "run_once/a.sql",
        ".upkeep/state.db",
        "staging/x",
        "inbox/a.zip",
    ] {
        assert_eq!(get(p).status(), 404, "{p}");
    }
    ok(upkeep(&[
        "close",
        "--root",
        root.to_str().unwrap(),
        "--message",
        "Back soon",
    ]));
    let r = get("index.html");
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "120");
    assert!(r.text().unwrap().contains("Back soon"));
    ok(upkeep(&["open", "--root", root.to_str().unwrap()]));
    assert_eq!(get("index.html").status(), 200);
}
