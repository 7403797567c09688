//! After reopening: restart hooks (output, exit codes, a hang killed at its timeout) and the
//! health check against the site's real servers; a failed check rolls the run back, files and
//! database, to the exact old tree.

mod common;

use std::process::{Child, Command, Stdio};

use common::*;

/// 1.0.0 installed (with a database), 1.1.0 published by `v2`.
fn site_with(w: &World, v2: &[(&str, &[u8])]) -> (Server, Site) {
    let d1 = w.publish(
        "1.0.0",
        &[
            ("index.html", b"<h1>Welcome</h1> v1"),
            ("index.php", b"<?php echo 'Welcome v1';"),
            (
                "schema.sql",
                b"CREATE TABLE pages(id INTEGER PRIMARY KEY);\n",
            ),
        ],
    );
    w.publish("1.1.0", v2);
    let srv = w.reference();
    let site = Site::new(w.instance("site", Some(&d1), &srv.url, &[]));
    // The site's database as the application left it: the 1.0.0 schema and a visitor's row.
    let c = rusqlite::Connection::open(site.root.join(".upkeep/site.db")).unwrap();
    c.execute_batch("CREATE TABLE pages(id INTEGER PRIMARY KEY); INSERT INTO pages VALUES(7);")
        .unwrap();
    (srv, site)
}

/// The site database's tables and its rows of `pages`.
fn db_tables(site: &Site) -> (Vec<String>, i64) {
    let c = rusqlite::Connection::open(site.root.join(".upkeep/site.db")).unwrap();
    let mut st = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap();
    let tables = st
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let rows = c
        .query_row("SELECT count(*) FROM pages", [], |r| r.get(0))
        .unwrap();
    (tables, rows)
}

#[test]
fn a_release_that_fails_the_health_check_on_upkeep_serve_is_rolled_back_exactly() {
    let w = World::new();
    let (_srv, site) = site_with(
        &w,
        &[
            ("index.html", b"<h1>Fatal error</h1>"),
            ("index.php", b"<?php echo 'Welcome v2';"),
            (
                "schema.sql",
                b"CREATE TABLE pages(id INTEGER PRIMARY KEY);\nCREATE TABLE comments(id INTEGER PRIMARY KEY);\n",
            ),
        ],
    );
    let web = spawn_server(&["serve", "--root", site.root.to_str().unwrap()]);
    set_config(
        &site.root,
        "auto.health",
        "url",
        &format!("\"{}/\"", web.url),
    );
    set_config(&site.root, "auto.health", "contains", "\"Welcome\"");
    set_config(&site.root, "auto.health", "attempts", "2");
    let before = snapshot(&site.root);
    let tables_before = db_tables(&site);
    assert!(
        site.run(&["check"]).status.code() == Some(10),
        "1.1.0 is on offer"
    );

    ok(site.run(&["stage", "--network"]));
    let o = site.run(&["update", "--yes"]);
    let err = fails(o, 1);
    assert!(
        err.contains("the health check failed: GET ")
            && err.contains("without the text \"Welcome\""),
        "{err}"
    );
    assert!(
        err.contains("the previous release is back in place"),
        "{err}"
    );
    assert_eq!(snapshot(&site.root), before, "the exact old tree");
    assert_eq!(db_tables(&site), tables_before, "the old database");
    let st = site.status_json();
    assert_eq!(st["installed"], "1.0.0");
    let run = &st["history"][0];
    assert_eq!(run["status"], "rolled_back");
    assert_eq!(run["health"]["ok"], false);
    assert_eq!(run["health"]["status"], 200);
    // The site is open and serves the old release.
    let body = reqwest::blocking::get(format!("{}/", web.url))
        .unwrap()
        .text()
        .unwrap();
    assert!(body.contains("Welcome</h1> v1"), "{body}");
}

/// PHP's built-in server over the live tree: a real application runtime, whose fatal error
/// answers 500.
struct Php(Child);

impl Drop for Php {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn php(root: &std::path::Path) -> Option<(Php, String)> {
    if Command::new("php").arg("-v").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "php-cli is missing on CI");
        eprintln!("skipped: php-cli is not installed (apt-get install php-cli)");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Php(Command::new("php")
        .args(["-S", &format!("127.0.0.1:{port}"), "-t"])
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    let url = format!("http://127.0.0.1:{port}/index.php");
    assert!(wait_port(port), "php -S did not listen");
    Some((child, url))
}

#[test]
fn a_release_whose_index_answers_500_is_rolled_back_by_an_unattended_pass() {
    let w = World::new();
    let (_srv, site) = site_with(
        &w,
        &[
            ("index.html", b"<h1>Welcome</h1> v2"),
            ("index.php", b"<?php undefined_function_of_release_2();"),
            (
                "schema.sql",
                b"CREATE TABLE pages(id INTEGER PRIMARY KEY);\nCREATE TABLE comments(id INTEGER PRIMARY KEY);\n",
            ),
        ],
    );
    let Some((_php, url)) = php(&site.root) else {
        return;
    };
    set_config(&site.root, "auto", "enabled", "true");
    set_config(&site.root, "auto", "allow", "\"minor\"");
    let smtp = common::smtp::Smtp::start();
    if let Some(s) = &smtp {
        set_config(&site.root, "mail", "to", "\"ops@example.org\"");
        set_config(&site.root, "mail", "smtp", &format!("\"{}\"", s.url()));
    }
    set_config(&site.root, "auto.health", "url", &format!("\"{url}\""));
    set_config(&site.root, "auto.health", "attempts", "1");
    assert_eq!(
        reqwest::blocking::get(&url).unwrap().status().as_u16(),
        200,
        "release 1.0.0 answers"
    );
    let before = snapshot(&site.root);
    let tables_before = db_tables(&site);

    let o = site.run(&["auto"]);
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("ROLLED BACK: run 1 was rolled back: release 1.0.0 is live again"),
        "{out}"
    );
    assert!(
        out.contains("answered 500 Internal Server Error, expected 200"),
        "{out}"
    );
    assert_eq!(snapshot(&site.root), before, "the exact old tree");
    assert_eq!(db_tables(&site), tables_before);
    assert_eq!(reqwest::blocking::get(&url).unwrap().status().as_u16(), 200);
    let st = site.status_json();
    assert_eq!(st["installed"], "1.0.0");
    assert_eq!(st["history"][0]["status"], "rolled_back");
    assert_eq!(st["last_auto"]["decision"], "rolled_back");
    if let Some(s) = smtp {
        let mails = s.messages();
        assert_eq!(mails.len(), 1, "{mails:#?}");
        assert!(
            mails[0].subject.starts_with("[upkeep] FAILURE "),
            "{}",
            mails[0].subject
        );
        assert!(
            mails[0].subject.ends_with(": 1.0.0 -> 1.1.0"),
            "{}",
            mails[0].subject
        );
        assert!(
            mails[0].body.contains("health check: FAILED, GET ")
                && mails[0].body.contains("answered 500"),
            "{}",
            mails[0].body
        );
    }
}

#[test]
fn restart_hooks_run_before_reopen_and_a_hanging_one_is_stopped_and_reported() {
    let w = World::new();
    let (_srv, site) = site_with(
        &w,
        &[
            ("index.html", b"<h1>Welcome</h1> v2"),
            ("index.php", b"<?php echo 'Welcome v2';"),
            (
                "schema.sql",
                b"CREATE TABLE pages(id INTEGER PRIMARY KEY);\n",
            ),
        ],
    );
    let marker = w.path("reloaded");
    set_config(
        &site.root,
        "auto",
        "after",
        &format!(
            "[\"echo reloading; cat index.html .upkeep/gate-closed > {}\", \"echo oops >&2; exit 3\", \"sleep 30\"]",
            marker.display()
        ),
    );
    set_config(&site.root, "auto", "after_timeout", "\"1s\"");
    ok(site.run(&["stage", "--network"]));
    let out = site.update_yes();
    // The hook saw the new tree, the site still closed: it ran after the swap, before the
    // first visitor could meet a cache of the old code.
    let seen = std::fs::read_to_string(&marker).unwrap();
    assert!(seen.starts_with("<h1>Welcome</h1> v2{"), "{seen}");
    assert!(seen.contains("\"run\":1"), "the run's closure: {seen}");
    assert!(
        upkeep::site::update::gate::closed(&site.root).is_none(),
        "open after"
    );
    assert!(out.contains("hook"), "{out}");
    let st = site.status_json();
    let run = &st["history"][0];
    assert_eq!(
        run["status"], "done",
        "a failing hook does not undo the run"
    );
    let hooks = run["hooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 3);
    assert_eq!(hooks[0]["exit_code"], 0);
    assert_eq!(hooks[0]["output"], "reloading\n");
    assert_eq!(hooks[1]["exit_code"], 3);
    assert_eq!(hooks[1]["output"], "oops\n");
    assert!(hooks[2]["exit_code"].is_null(), "killed: {}", hooks[2]);
    assert!(
        hooks[2]["output"]
            .as_str()
            .unwrap()
            .contains("stopped after 1 s"),
        "{}",
        hooks[2]
    );
    assert!(hooks[2]["ms"].as_u64().unwrap() < 20_000);
}
