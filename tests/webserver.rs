//! The README's nginx lines, run by a real nginx: the same gate marker and the same refusals as
//! `upkeep serve`. The snippet is read from README.md, so the documentation cannot drift.

mod common;
use common::*;

#[test]
fn the_readme_nginx_snippet_honours_the_gate_and_the_refusals() {
    let block = common::nginx::readme_block("## Behind nginx or Apache", "nginx");

    let w = World::new();
    let d1 = w.publish(
        "1.0.0",
        &[("index.html", b"hello"), ("run_once/a.sql", b"SELECT 1;")],
    );
    let srv = w.reference();
    let root = w.instance("site", Some(&d1), &srv.url, &[]);
    std::fs::write(root.join("index.html.bak"), b"old").unwrap();
    let server = block
        .replace("listen 80;", "listen {listen};")
        .replace("/var/www/site", root.to_str().unwrap());
    // The lines include nginx's fastcgi_params, beside its configuration.
    let tmp = w.path("nginx");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::copy("/etc/nginx/fastcgi_params", tmp.join("fastcgi_params")).unwrap();
    let nginx = common::nginx::Nginx::start(&server, &tmp);
    let url = &nginx.url;
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
