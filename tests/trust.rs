//! Trust boundaries (issue 21): what the updater trusts locally, and the edges of its I/O. Each
//! test failed before its fix, with a real file, link, pipe, process or server.

mod common;

use std::path::Path;

use common::scenario::*;
use common::*;

fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

// Class 1: only the release's code runs.

#[test]
fn a_task_the_release_does_not_ship_is_listed_and_never_run() {
    let s = Scenario::new();
    let root = s.site("site");
    // Written by an upload form or a plugin: a task name in run_once/, no signature behind it.
    std::fs::write(root.join("run_once/000-evil.sh"), "touch pwned\n").unwrap();
    std::fs::write(
        root.join("run_once/000-evil.sql"),
        "CREATE TABLE pwned(x);\n",
    )
    .unwrap();
    let o = upkeep(&["update", "--root", arg(&root)]);
    let plan = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        plan.contains("not from the release: NOT run")
            && plan.contains("run_once/000-evil.sh")
            && plan.contains("run_once/000-evil.sql"),
        "{plan}"
    );
    ok(upkeep(&["update", "--root", arg(&root), "--yes"]));
    assert_eq!(read(&root.join("index.html")), "<h1>v2</h1>");
    assert_eq!(
        read(&root.join("counter.txt")),
        "ran\n",
        "the release's task ran"
    );
    assert!(!root.join("pwned").exists(), "the shell task did not run");
    assert!(
        root.join("run_once/000-evil.sh").exists(),
        "nor was it marked done"
    );
    let tables: i64 = rusqlite::Connection::open(site_db(&root))
        .unwrap()
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'pwned'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0, "the SQL task did not run");
    // Nor is it pending: only the release's tasks ever are.
    assert_eq!(
        Site::new(&root).status_json()["pending_tasks"],
        serde_json::json!([])
    );
}

#[test]
fn the_operator_may_allow_one_local_task_by_name_and_only_as_reviewed() {
    let s = Scenario::new();
    let root = s.site("site");
    std::fs::write(root.join("run_once/000-mine.sh"), "echo mine > mine.txt\n").unwrap();
    let site = Site::new(&root);
    let (plain, _) = site.plan();
    let allow = ["update", "--allow-task", "run_once/000-mine.sh"];
    let out = stdout(&site.run(&allow));
    let digest = out
        .lines()
        .find_map(|l| l.strip_prefix("plan "))
        .and_then(|l| l.split(':').next())
        .unwrap()
        .to_string();
    assert_ne!(
        digest, plain,
        "allowing a task is part of the plan's digest"
    );
    assert!(out.contains("allowed by --allow-task"), "{out}");
    // A name that is no local task is refused, naming the list to choose from.
    let e = fails(site.run(&["update", "--allow-task", "run_once/nope.sh"]), 1);
    assert!(e.contains("no such task outside the release"), "{e}");
    // Changed after review: the plan is not the one approved.
    std::fs::write(root.join("run_once/000-mine.sh"), "echo other > mine.txt\n").unwrap();
    let mut a = allow.to_vec();
    a.extend(["--yes", "--plan", &digest]);
    let e = fails(site.run(&a), 4);
    assert!(e.contains("plan changed") || e.contains("changed"), "{e}");
    assert!(!root.join("mine.txt").exists());
    std::fs::write(root.join("run_once/000-mine.sh"), "echo mine > mine.txt\n").unwrap();
    ok(site.run(&a));
    assert_eq!(read(&root.join("mine.txt")), "mine\n");
    assert!(root.join("run_once/000-mine.sh.done").exists());
}

#[test]
fn an_unattended_pass_never_runs_a_local_task() {
    let (_w, _srv, site) = unattended_site(&[]);
    std::fs::write(site.root.join("run_once/001-evil.sh"), "touch pwned\n").unwrap();
    ok(site.run(&["auto"]));
    assert_eq!(read(&site.root.join("index.html")), "v2");
    assert!(!site.root.join("pwned").exists());
    assert!(site.root.join("run_once/001-evil.sh").exists());
}

#[test]
fn an_extension_outside_the_release_is_never_read_and_a_review_has_no_side_effect() {
    let s = Scenario::new();
    let root = s.site("site");
    let elsewhere = s.w.path("elsewhere.db");
    std::fs::create_dir_all(root.join("uploads/x")).unwrap();
    std::fs::write(
        root.join("uploads/x/extension.toml"),
        "name = \"x\"\nversion = \"1\"\nschema = \"schema.sql\"\n",
    )
    .unwrap();
    let attach = format!(
        "ATTACH DATABASE '{}' AS e;\nCREATE TABLE e.t(a);\nCREATE TABLE uploaded(a);\n",
        elsewhere.display()
    );
    std::fs::write(root.join("uploads/x/schema.sql"), &attach).unwrap();
    let plan = stdout(&upkeep(&["update", "--root", arg(&root)]));
    assert!(!plan.contains("uploaded"), "{plan}");
    assert!(!elsewhere.exists(), "reviewing the plan created a file");
    ok(upkeep(&["update", "--root", arg(&root), "--yes"]));
    assert!(!elsewhere.exists());
    let n: i64 = rusqlite::Connection::open(site_db(&root))
        .unwrap()
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'uploaded'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 0);

    // Listed by the operator, the same folder counts, but its schema may only create tables
    // and indexes: the review refuses it before anything closes.
    let root = s.site("site2");
    std::fs::create_dir_all(root.join("uploads/x")).unwrap();
    std::fs::write(
        root.join("uploads/x/extension.toml"),
        "name = \"x\"\nversion = \"1\"\nschema = \"schema.sql\"\n",
    )
    .unwrap();
    std::fs::write(root.join("uploads/x/schema.sql"), &attach).unwrap();
    let toml = std::fs::read_to_string(root.join("upkeep.toml")).unwrap();
    std::fs::write(
        root.join("upkeep.toml"),
        format!("extensions = [\"uploads/x\"]\n{toml}"),
    )
    .unwrap();
    let e = fails(upkeep(&["update", "--root", arg(&root), "--yes"]), 1);
    assert!(e.contains("not authorized") && e.contains("Attach"), "{e}");
    assert!(!elsewhere.exists());
    assert_eq!(
        read(&root.join("index.html")),
        "<h1>v1</h1>",
        "nothing changed"
    );
    assert!(
        Site::new(&root).status_json()["gate"].is_null(),
        "the site stayed open"
    );
}

#[test]
fn the_release_extensions_and_the_operators_listed_ones_count() {
    let ext = |name: &str| {
        format!(
            "name = \"{name}\"\nversion = \"1\"\nschema = \"schema.sql\"\nrun_once = \"tasks\"\n"
        )
    };
    let shop = ext("shop");
    let w = World::new();
    let d1 = w.publish("1.0.0", &[("index.html", b"v1")]);
    w.publish(
        "1.1.0",
        &[
            ("index.html", b"v2"),
            ("ext/shop/extension.toml", shop.as_bytes()),
            (
                "ext/shop/schema.sql",
                b"CREATE TABLE shop_items(id INTEGER PRIMARY KEY);\n",
            ),
            (
                "ext/shop/tasks/01.sql",
                b"INSERT INTO shop_items VALUES (7);\n",
            ),
        ],
    );
    let srv = w.reference();
    let site = Site::new(w.instance("site", Some(&d1), &srv.url, &[]));
    let mine = site.root.join("local/mine");
    std::fs::create_dir_all(mine.join("tasks")).unwrap();
    std::fs::write(mine.join("extension.toml"), ext("mine")).unwrap();
    std::fs::write(mine.join("schema.sql"), "CREATE TABLE mine(a);\n").unwrap();
    // The operator's own extension's tasks are the operator's files, not the release's.
    std::fs::write(mine.join("tasks/01.sh"), "touch pwned\n").unwrap();
    let toml = read(&site.root.join("upkeep.toml"));
    std::fs::write(
        site.root.join("upkeep.toml"),
        format!("extensions = [\"local/mine\"]\n{toml}"),
    )
    .unwrap();
    site.stage_archive(&w.zip("1.1.0"));
    let plan = stdout(&site.run(&["update"]));
    assert!(
        plan.contains("CREATE TABLE shop_items") && plan.contains("CREATE TABLE mine"),
        "{plan}"
    );
    assert!(
        plan.contains("ext/shop/tasks/01.sql") && plan.contains("local/mine/tasks/01.sh"),
        "{plan}"
    );
    site.update_yes();
    let db = rusqlite::Connection::open(site.root.join(".upkeep/site.db")).unwrap();
    let v: i64 = db
        .query_row("SELECT id FROM shop_items", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, 7, "the release extension's schema and task");
    db.query_row("SELECT count(*) FROM mine", [], |r| r.get::<_, i64>(0))
        .unwrap();
    assert!(
        !site.root.join("pwned").exists(),
        "a local task stays unrun"
    );
    let names: Vec<String> = site.status_json()["extensions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["shop", "mine"], "by folder");
}

// Class 2: no link is followed.

#[test]
fn a_link_in_staging_is_never_installed_even_with_the_signed_bytes_behind_it() {
    let s = Scenario::new();
    let root = s.site("site");
    let outside = s.w.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    // The signed bytes, outside the instance, behind a link in staging.
    std::fs::rename(root.join("staging/index.html"), outside.join("index.html")).unwrap();
    std::os::unix::fs::symlink(outside.join("index.html"), root.join("staging/index.html"))
        .unwrap();
    let e = fails(upkeep(&["update", "--root", arg(&root), "--yes"]), 1);
    assert!(
        e.contains("index.html") && e.contains("symbolic link"),
        "{e}"
    );
    assert_eq!(
        read(&root.join("index.html")),
        "<h1>v1</h1>",
        "nothing changed"
    );
    assert!(
        !std::fs::symlink_metadata(root.join("index.html"))
            .unwrap()
            .file_type()
            .is_symlink()
    );

    // A linked folder of staging: the swap would move a file out of a folder outside the root.
    let root = s.site("site2");
    std::fs::rename(root.join("staging/lib"), outside.join("lib")).unwrap();
    std::os::unix::fs::symlink(outside.join("lib"), root.join("staging/lib")).unwrap();
    let e = fails(upkeep(&["update", "--root", arg(&root), "--yes"]), 1);
    assert!(
        e.contains("lib/x.php") && e.contains("symbolic link"),
        "{e}"
    );
    assert_eq!(
        read(&outside.join("lib/x.php")),
        "<?php // x v2",
        "left where it is"
    );
    assert_eq!(read(&root.join("lib/x.php")), "<?php // x v1");
    // Staging again (manual) does not take the link either.
    let e = fails(upkeep(&["stage", "--root", arg(&root), "--manual"]), 1);
    assert!(e.contains("lib/x.php"), "{e}");
}

#[test]
fn upkeeps_own_folders_as_links_are_refused_before_anything_is_written_through_them() {
    let s = Scenario::new();
    let outside = s.w.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    // .upkeep/backups (the database copy) and .upkeep/aside (displaced files): refused before
    // the site closes.
    for own in [".upkeep/backups", ".upkeep/aside"] {
        let root = s.site("site");
        let _ = std::fs::remove_dir_all(root.join(own));
        std::os::unix::fs::symlink(&outside, root.join(own)).unwrap();
        let e = fails(upkeep(&["update", "--root", arg(&root), "--yes"]), 1);
        assert!(e.contains(own) && e.contains("symbolic link"), "{own}: {e}");
        assert!(
            Site::new(&root).status_json()["gate"].is_null(),
            "{own}: the site stayed open"
        );
        assert_eq!(read(&root.join("index.html")), "<h1>v1</h1>");
    }
    // .upkeep/partial (downloads) and inbox/ (archives, uploads).
    let root = s.site("site");
    let _ = std::fs::remove_dir_all(root.join(".upkeep/partial"));
    std::os::unix::fs::symlink(&outside, root.join(".upkeep/partial")).unwrap();
    std::fs::remove_file(root.join("staging/index.html")).unwrap();
    let e = fails(upkeep(&["stage", "--root", arg(&root), "--network"]), 1);
    assert!(
        e.contains(".upkeep/partial") && e.contains("symbolic link"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(root.join("inbox"));
    std::os::unix::fs::symlink(&outside, root.join("inbox")).unwrap();
    std::fs::copy(s.w.zip("1.1.0"), outside.join("r.zip")).unwrap();
    let e = fails(
        upkeep(&["stage", "--root", arg(&root), "--inbox", "r.zip"]),
        1,
    );
    assert!(e.contains("inbox") && e.contains("symbolic link"), "{e}");
    assert_eq!(list_files(&outside), ["r.zip"], "nothing written outside");
}

#[test]
fn the_panels_compare_page_does_not_read_through_a_link() {
    let d = common::panel::Demo::start(&[]);
    let secret = d.dir.path().join("shadow");
    std::fs::write(&secret, "root:$6$secret-hash:19000:0:99999:7:::\n").unwrap();
    let live = d.site().join("index.html");
    std::fs::remove_file(&live).unwrap();
    std::os::unix::fs::symlink(&secret, &live).unwrap();
    std::fs::write(d.site().join("staging/index.html"), "<h1>new</h1>\n").unwrap();
    let c = d.client();
    assert!(d.login(&c).status().is_redirection());
    let page = d.get(&c, "control/diff?path=index.html").text().unwrap();
    assert!(!page.contains("secret-hash"), "{page}");
}

// Class 3: output, processes, the operator's word.

/// `upkeep ARGS` with standard output and standard error a pipe nobody reads any more (as
/// `upkeep ... | head -1` once head has exited): every write fails with EPIPE.
fn with_closed_pipes(args: &[&str]) -> std::process::ExitStatus {
    let (r1, w1) = std::io::pipe().unwrap();
    let (r2, w2) = std::io::pipe().unwrap();
    drop((r1, r2));
    std::process::Command::new(BIN)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(w1)
        .stderr(w2)
        .status()
        .unwrap()
}

#[test]
fn a_closed_pipe_never_stops_a_run_nor_panics_a_command() {
    let s = Scenario::new();
    let root = s.site("site");
    let st = with_closed_pipes(&["update", "--root", arg(&root), "--yes"]);
    assert_eq!(st.code(), Some(0), "{st}");
    assert_new(&root);
    assert!(
        Site::new(&root).status_json()["gate"].is_null(),
        "the site is open"
    );
    for args in [
        vec!["status", "--root", arg(&root)],
        vec!["status", "--root", arg(&root), "--json"],
        vec!["check", "--root", arg(&root)],
        vec!["rollback", "--yes", "--root", arg(&root)],
    ] {
        let st = with_closed_pipes(&args);
        assert_ne!(st.code(), Some(101), "{args:?} panicked");
    }
    assert_old(&root);
}

#[test]
fn the_operators_close_during_an_update_outlasts_the_updates_reopen() {
    let task = format!("'{BIN}' close --root . --message 'Closed by hand for the migration'\n");
    let w = World::new();
    let d1 = w.publish("1.0.0", &[("index.html", b"v1")]);
    w.publish(
        "1.1.0",
        &[
            ("index.html", b"v2"),
            ("run_once/01-close.sh", task.as_bytes()),
        ],
    );
    let srv = w.reference();
    let site = Site::new(w.instance("site", Some(&d1), &srv.url, &[]));
    site.stage_archive(&w.zip("1.1.0"));
    site.update_yes();
    assert_eq!(read(&site.root.join("index.html")), "v2");
    let gate = &site.status_json()["gate"];
    assert_eq!(
        gate["message"], "Closed by hand for the migration",
        "{gate}"
    );
    assert!(
        gate["run"].is_null(),
        "the operator's closure, not the run's: {gate}"
    );
    ok(site.run(&["open"]));
    assert!(site.status_json()["gate"].is_null());
}

#[test]
fn a_mistake_in_upkeep_toml_does_not_stop_close_open_or_rollback() {
    let s = Scenario::new();
    let root = s.site("site");
    ok(upkeep(&["update", "--root", arg(&root), "--yes"]));
    let toml = read(&root.join("upkeep.toml"));
    assert!(toml.contains("\n[mail]\n"), "{toml}");
    let typo = toml.replacen("\n[mail]\n", "\n[mail]\nsmpt = \"mail.example.org\"\n", 1);
    std::fs::write(root.join("upkeep.toml"), typo).unwrap();
    fails(upkeep(&["update", "--root", arg(&root)]), 2);
    let marker = root.join(".upkeep/gate-closed");
    let out = upkeep(&["close", "--root", arg(&root)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning") && stderr(&out).contains("smpt"),
        "{}",
        stderr(&out)
    );
    assert!(marker.exists(), "closed");
    ok(upkeep(&["open", "--root", arg(&root)]));
    assert!(!marker.exists(), "open");
    let out = upkeep(&["rollback", "--yes", "--root", arg(&root)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("smpt"), "the mistake is named");
    std::fs::write(root.join("upkeep.toml"), toml).unwrap();
    assert_old(&root);
}

#[test]
fn a_root_with_a_newline_never_goes_into_a_unit_or_a_crontab_line() {
    let w = World::new();
    let d1 = w.publish("1.0.0", &[("index.html", b"v1")]);
    let srv = w.reference();
    let site = Site::new(w.instance(
        "site\nExecStartPre=/bin/touch /tmp/pwned",
        Some(&d1),
        &srv.url,
        &[],
    ));
    let units = w.path("units");
    let e = fails(site.run(&["schedule"]), 1);
    assert!(e.contains("control character"), "{e}");
    let e = fails(
        site.run(&["schedule", "--install", "--unit-dir", arg(&units)]),
        1,
    );
    assert!(e.contains("control character"), "{e}");
    assert!(!units.exists() || list_files(&units).is_empty());
}

#[test]
fn an_answer_on_a_terminal_applies_only_the_plan_that_was_shown() {
    use std::io::{Read, Write};
    let s = Scenario::new();
    let root = s.site("site");
    // On a terminal (script(1) gives the command one), `update` shows the plan and asks.
    let mut child = std::process::Command::new("script")
        .args([
            "-qfec",
            &format!("'{BIN}' update --root '{}'", root.display()),
            "/dev/null",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    while !seen.contains("[y/N]") {
        match rx.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(b) => seen.push_str(&String::from_utf8_lossy(&b)),
            Err(_) => panic!("no question on the terminal: {seen}"),
        }
    }
    // While the question is on screen, a live file changes: the plan shown is not the plan now.
    std::fs::write(root.join("index.html"), "<h1>edited meanwhile</h1>").unwrap();
    child.stdin.as_mut().unwrap().write_all(b"y\n").unwrap();
    let status = child.wait().unwrap();
    while let Ok(b) = rx.recv_timeout(std::time::Duration::from_secs(5)) {
        seen.push_str(&String::from_utf8_lossy(&b));
    }
    assert_eq!(status.code(), Some(4), "{seen}");
    assert!(seen.contains("plan changed"), "{seen}");
    assert_eq!(
        read(&root.join("index.html")),
        "<h1>edited meanwhile</h1>",
        "nothing applied"
    );
    assert!(!root.join("index.html.bak").exists());
}

/// A publisher with release 1.0.0, its reference, and a site "alpha" enrolled with it: the
/// site's id and key, and the reference's URL, to post reports by hand.
struct Enrolled {
    w: World,
    srv: Server,
    site: Site,
    id: String,
    key: upkeep::documents::manifest::SecretKey,
    url: String,
}

impl Enrolled {
    fn new() -> Enrolled {
        let w = World::new();
        let d1 = w.publish("1.0.0", &[("index.html", b"v1")]);
        let srv = w.reference();
        let t = common::fleet::token(&w, "1");
        let site = Site::new(w.instance(
            "alpha",
            Some(&d1),
            &srv.url,
            &["--name", "alpha", "--enroll", &t],
        ));
        let id = site.status_json()["site"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let key = upkeep::documents::manifest::SecretKey::load(&site.root.join(".upkeep/site.key"))
            .unwrap();
        let url = format!("{}/", srv.url.trim_end_matches('/'));
        Enrolled {
            w,
            srv,
            site,
            id,
            key,
            url,
        }
    }
}

#[test]
fn peer_text_reaches_the_publishers_terminal_without_escape_sequences() {
    use common::fleet::{post, report_body};
    let e = Enrolled::new();
    let (w, site, id, key, url) = (&e.w, &e.site, &e.id, &e.key, &e.url);
    let signed = |v: serde_json::Value| {
        let b = serde_json::to_vec(&v).unwrap();
        let s = key.sign(&b);
        (b, s)
    };
    let with = |seq: u64, field: &str, value: &str| {
        let mut v: serde_json::Value = serde_json::from_slice(&report_body(id, seq)).unwrap();
        v[field] = value.into();
        signed(v)
    };
    // Short fields a person reads must be plain text of their kind: refused otherwise.
    for (seq, field, value) in [
        (10, "name", "alpha\x1b[2J\x1b]0;owned\x07"),
        (11, "installed", "1.0.0\x1b[31m"),
        (12, "to", "not a version"),
        (13, "failed_step", "swap; rm -rf /"),
    ] {
        let (b, s) = with(seq, field, value);
        let (status, text) = post(url, &b, Some(&s));
        assert_eq!(status, 400, "{field}: {text}");
        assert!(text.contains("report refused"), "{text}");
    }
    // Free text is kept, and shown with its control characters replaced.
    let (b, s) = with(
        20,
        "reason",
        "task said \x1b[31mred\x1b[0m and \x1b]0;title\x07",
    );
    assert_eq!(post(url, &b, Some(&s)).0, 200);
    let out = upkeep(&[
        "push",
        "--repo",
        arg(&w.repo),
        "--site",
        "alpha",
        "--key",
        arg(&w.key),
    ]);
    let table = ok(upkeep(&["fleet", "status", "--repo", arg(&w.repo)]));
    assert!(!table.contains('\x1b'), "{table:?}");
    assert!(!stdout(&out).contains('\x1b') && !stderr(&out).contains('\x1b'));
    // A number below the last is not "already received": it was never seen.
    let (b, s) = with(15, "reason", "late");
    let (status, text) = post(url, &b, Some(&s));
    assert_eq!(status, 409);
    assert!(
        text.contains("older than the last one received (20)"),
        "{text}"
    );

    // A server's answer, as `enroll` shows it.
    let hostile = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hostile.local_addr().unwrap().port();
    // It answers whatever it is asked (the site first looks for the fleet's signed address).
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for _ in 0..4 {
            let Ok((mut c, _)) = hostile.accept() else {
                break;
            };
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let body = "no\x1b[2J\x1b]0;owned\x07 way";
            let _ = write!(
                c,
                "HTTP/1.1 401 Unauthorized\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let toml = read(&site.root.join("upkeep.toml"));
    let toml = toml.replace(&e.srv.url, &format!("http://127.0.0.1:{port}/"));
    std::fs::write(site.root.join("upkeep.toml"), toml).unwrap();
    let e = fails(site.run(&["enroll", "upkeep-enrol-x"]), 1);
    assert!(e.contains("no?[2J?]0;owned? way"), "{e:?}");
}

#[test]
fn a_task_left_running_by_a_killed_runner_never_runs_beside_its_rerun() {
    // The first copy records itself, starts a detached child (setsid: out of its process
    // group), and runs long; a rerun finishes at once.
    let task = b"if [ -e runs.txt ]; then echo rerun >> runs.txt; exit 0; fi\n\
echo start >> runs.txt; echo $$ > task.pid\n\
setsid sh -c 'echo $$ > child.pid; sleep 60; echo late >> runs.txt' &\n\
sleep 60; echo end >> runs.txt\n";
    let w = World::new();
    let d1 = w.publish("1.0.0", &[("index.html", b"v1")]);
    w.publish(
        "1.1.0",
        &[("index.html", b"v2"), ("run_once/01-long.sh", task)],
    );
    let srv = w.reference();
    let site = Site::new(w.instance("site", Some(&d1), &srv.url, &[]));
    set_config(&site.root, "tasks", "timeout_secs", "3");
    site.stage_archive(&w.zip("1.1.0"));
    let mut runner = std::process::Command::new(BIN)
        .args(["update", "--yes", "--root", arg(&site.root)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid_of = |f: &str| std::fs::read_to_string(site.root.join(f)).ok();
    for _ in 0..500 {
        if pid_of("child.pid").is_some() && pid_of("task.pid").is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    runner.kill().unwrap(); // SIGKILL
    runner.wait().unwrap();
    let (task_pid, child_pid) = (pid_of("task.pid").unwrap(), pid_of("child.pid").unwrap());
    assert!(
        alive(&task_pid) && alive(&child_pid),
        "the task outlived its runner"
    );
    let out = site.run(&["resume", "--rerun-task"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("still running"), "{}", stderr(&out));
    assert!(
        !alive(&task_pid),
        "the first copy was stopped before the rerun"
    );
    assert!(!alive(&child_pid), "its setsid child too");
    assert_eq!(read(&site.root.join("runs.txt")), "start\nrerun\n");
    assert_eq!(read(&site.root.join("index.html")), "v2");
}

// Class 4: time and networks.

#[test]
fn a_channel_pointer_signed_with_a_clock_ahead_does_not_freeze_mirrors() {
    let w = World::new();
    w.publish("1.0.0", &[("index.html", b"v1")]);
    w.publish("1.1.0", &[("index.html", b"v2")]);
    ok(w.promote("1.0.0", "beta", &[]));
    // Signed as an upkeep before serials did, by a machine whose clock was years ahead.
    let doc = w.repo.join("channels/beta.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&doc).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("serial");
    v["date"] = "2031-01-01T00:00:00Z".into();
    let bytes = serde_json::to_vec(&v).unwrap();
    let key = upkeep::documents::manifest::SecretKey::load(Path::new(&w.online_key())).unwrap();
    std::fs::write(w.repo.join("channels/beta.sig"), key.sign(&bytes)).unwrap();
    std::fs::write(&doc, &bytes).unwrap();
    let srv = w.reference();
    let mirror = w.path("mirror");
    ok(w.mirror(&srv.url, &mirror, &[]));
    // The publisher moves the rollout on a correct clock: warned, and the mirror takes it.
    let key_arg = w.online_key();
    let out = upkeep(&[
        "rollout",
        "pause",
        "--channel",
        "beta",
        "--repo",
        arg(&w.repo),
        "--key",
        &key_arg,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("in the future"), "{}", stderr(&out));
    ok(w.mirror(&srv.url, &mirror, &[]));
    let here: serde_json::Value =
        serde_json::from_slice(&std::fs::read(mirror.join("channels/beta.json")).unwrap()).unwrap();
    assert_eq!(here["state"], "paused", "{here}");
    assert_eq!(here["serial"], 1);
    // A pointer older by serial is still refused, whatever its date says.
    let served = std::fs::read(w.repo.join("channels/beta.json")).unwrap();
    let mut older: serde_json::Value = serde_json::from_slice(&served).unwrap();
    older["serial"] = 0.into();
    older["date"] = "2032-01-01T00:00:00Z".into();
    let bytes = serde_json::to_vec(&older).unwrap();
    std::fs::write(w.repo.join("channels/beta.sig"), key.sign(&bytes)).unwrap();
    std::fs::write(w.repo.join("channels/beta.json"), &bytes).unwrap();
    let e = fails(w.mirror(&srv.url, &mirror, &[]), 1);
    assert!(e.contains("goes backwards"), "{e}");
}

#[test]
fn an_enrolled_site_flooding_reports_is_answered_429_and_the_database_stays_small() {
    use common::fleet::{post, report_body};
    let e = Enrolled::new();
    let (w, id, key, url) = (&e.w, &e.id, &e.key, &e.url);
    let mut statuses = Vec::new();
    for seq in 10..70 {
        let b = report_body(id, seq);
        statuses.push(post(url, &b, Some(&key.sign(&b))).0);
    }
    let accepted = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(accepted, 30, "{statuses:?}");
    assert!(statuses[30..].iter().all(|s| *s == 429), "{statuses:?}");
    let db = rusqlite::Connection::open(w.path("repo.fleet.db")).unwrap();
    let kept: i64 = db
        .query_row("SELECT count(*) FROM reports", [], |r| r.get(0))
        .unwrap();
    assert!(kept <= 31, "{kept}");
}

#[test]
fn a_site_killed_mid_swap_of_a_release_since_halted_rolls_back_at_its_next_pass() {
    use std::os::unix::process::ExitStatusExt;
    let w = World::new();
    let d1 = w.publish("1.0.0", &[("index.html", b"v1")]);
    w.publish("1.1.0", &[("index.html", b"v2"), ("b.html", b"b")]);
    let online = w.online_key();
    let rollout = |args: &[&str]| {
        let mut a = vec!["rollout"];
        a.extend_from_slice(args);
        a.extend([
            "--channel",
            "stable",
            "--repo",
            arg(&w.repo),
            "--key",
            &online,
        ]);
        ok(upkeep(&a))
    };
    ok(w.promote("1.0.0", "stable", &[]));
    rollout(&["advance"]);
    ok(w.promote("1.1.0", "stable", &[]));
    let srv = w.reference();
    let site = Site::new(w.instance("site", Some(&d1), &srv.url, &[]));
    set_config(&site.root, "auto", "enabled", "true");
    set_config(&site.root, "auto", "allow", "\"minor\"");
    let o = upkeep_env(
        &["auto", "--root", arg(&site.root)],
        &[("UPKEEP_CRASH_AT", "swap:1:done")],
    );
    assert_eq!(o.status.signal(), Some(9), "{}", stderr(&o));
    rollout(&["halt", "--reason", "bad release"]);
    let out = site.run(&["auto"]);
    let text = stdout(&out);
    assert!(
        text.contains("no longer offers this site") && text.contains("rolled back"),
        "{text}"
    );
    assert_eq!(read(&site.root.join("index.html")), "v1");
    assert!(!site.root.join("b.html").exists());
    assert_eq!(site.status_json()["installed"], "1.0.0");
}

// Class 5: unattended passes that learn.

#[test]
fn a_release_that_failed_here_is_held_by_later_passes_until_retry() {
    let w = World::new();
    let d1 = w.publish("1.0.0", &[("index.html", b"v1")]);
    w.publish(
        "1.1.0",
        &[
            ("index.html", b"v2"),
            ("run_once/01-migrate.sh", b"echo broken; exit 3\n"),
        ],
    );
    let srv = w.reference();
    let site = Site::new(w.instance("site", Some(&d1), &srv.url, &[]));
    set_config(&site.root, "auto", "enabled", "true");
    set_config(&site.root, "auto", "allow", "\"minor\"");
    let first = stdout(&site.run(&["auto"]));
    assert!(
        first.starts_with("ROLLED_BACK") || first.contains("rolled back"),
        "{first}"
    );
    assert_eq!(read(&site.root.join("index.html")), "v1");
    for args in [vec!["auto"], vec!["auto", "--dry-run"]] {
        let o = site.run(&args);
        assert_eq!(o.status.code(), Some(3), "{args:?}: {}", stdout(&o));
        let text = stdout(&o);
        assert!(
            text.contains("release 1.1.0 failed here at step run_once"),
            "{text}"
        );
        assert!(text.contains("--retry"), "{text}");
    }
    assert_eq!(
        read(&site.root.join("index.html")),
        "v1",
        "not installed again"
    );
    assert_eq!(
        site.status_json()["history"].as_array().unwrap().len(),
        1,
        "no second run"
    );
    let again = stdout(&site.run(&["auto", "--retry"]));
    assert!(!again.contains("held"), "{again}");
    assert_eq!(
        site.status_json()["history"].as_array().unwrap().len(),
        2,
        "taken again"
    );
}

#[test]
fn a_dry_run_takes_the_real_passs_decisions() {
    let (_w, _srv, site) = unattended_site(&[]);
    set_config(&site.root, "auto", "on_modified", "\"hold\"");
    std::fs::write(site.root.join("index.html"), "mine").unwrap();
    let dry = stdout(&site.run(&["auto", "--dry-run"]));
    let real = stdout(&site.run(&["auto"]));
    let word = |s: &str| s.split(':').next().unwrap_or_default().to_string();
    assert_eq!(word(&dry), word(&real), "dry: {dry}\nreal: {real}");
    assert!(real.starts_with("HELD"), "{real}");
}

// Class 6: messages that say what is true, and commands they name that work.

#[test]
fn refusals_say_what_is_true_and_name_commands_that_work() {
    let s = Scenario::new();
    let root = s.site("site");
    // resume with nothing to resume: said so, nothing of the last run reprinted as new.
    ok(upkeep(&["update", "--root", arg(&root), "--yes"]));
    let out = ok(upkeep(&["resume", "--root", arg(&root)]));
    assert!(
        out.starts_with("nothing to resume: the last run (1, release 1.1.0) ended done"),
        "{out}"
    );
    assert!(!out.contains("updated 1.0.0 -> 1.1.0"), "{out}");

    // A mirror has no upkeep.toml: its hints name its options.
    let stranger = s.w.path("stranger.key");
    ok(upkeep(&["keygen", "--out", arg(&stranger)]));
    let e = fails(
        upkeep(&[
            "mirror",
            "--from",
            &s.srv.url,
            "--to",
            arg(&s.w.path("m")),
            "--public-key",
            &format!("{}.pub", stranger.display()),
        ]),
        1,
    );
    assert!(e.contains("hint: check that --public-key"), "{e}");
    assert!(!e.contains("upkeep.toml"), "{e}");
}

#[test]
fn a_file_copied_by_hand_into_staging_is_moved_aside_with_a_word_not_overwritten() {
    let (_w, _srv, site) = unattended_site(&[]);
    std::fs::write(site.root.join("staging/index.html"), "my draft").unwrap();
    let out = ok(site.run(&["stage", "--network"]));
    assert!(
        out.contains("1 files in staging/ at paths this release needs held other contents"),
        "{out}"
    );
    let aside: Vec<String> = list_files(&site.root.join(".upkeep/aside"));
    assert!(
        aside.iter().any(|f| f.ends_with("/index.html")),
        "{aside:?}"
    );
    let kept = aside.iter().find(|f| f.ends_with("/index.html")).unwrap();
    assert_eq!(
        read(&site.root.join(".upkeep/aside").join(kept)),
        "my draft"
    );
    assert_eq!(read(&site.root.join("staging/index.html")), "v2");
}

#[test]
fn a_mirror_prunes_only_objects_and_releases() {
    let w = World::new();
    w.publish("1.0.0", &[("index.html", b"v1")]);
    w.publish("1.1.0", &[("index.html", b"v2")]);
    let srv = w.reference();
    let m = w.path("mirror");
    ok(w.mirror(&srv.url, &m, &[]));
    std::fs::write(m.join("objects/README.txt"), "mine").unwrap();
    std::fs::create_dir_all(m.join("objects/ab")).unwrap();
    std::fs::write(m.join("objects/ab/notes.txt"), "mine").unwrap();
    std::fs::write(m.join("releases/index.html"), "mine").unwrap();
    std::fs::create_dir_all(m.join("releases/drafts")).unwrap();
    ok(w.mirror(&srv.url, &m, &["--keep", "1"]));
    assert!(!m.join("releases/1.0.0").exists(), "the old release went");
    for f in [
        "objects/README.txt",
        "objects/ab/notes.txt",
        "releases/index.html",
    ] {
        assert_eq!(read(&m.join(f)), "mine", "{f}");
    }
    assert!(m.join("releases/drafts").is_dir());
}

#[test]
fn a_signed_channel_pointer_that_does_not_parse_is_not_called_unsigned() {
    let w = World::new();
    let d1 = w.publish("1.0.0", &[("index.html", b"v1")]);
    ok(w.promote("1.0.0", "stable", &[]));
    let bad = b"{\"format\": 1, \"channel\": \"stable\"}\n";
    let key = upkeep::documents::manifest::SecretKey::load(Path::new(&w.online_key())).unwrap();
    std::fs::write(w.repo.join("channels/stable.sig"), key.sign(bad)).unwrap();
    std::fs::write(w.repo.join("channels/stable.json"), bad).unwrap();
    let srv = w.reference();
    let site = Site::new(w.path("site"));
    std::fs::create_dir_all(&site.root).unwrap();
    copy_tree(&d1, &site.root);
    let o = upkeep(&[
        "init",
        "--root",
        arg(&site.root),
        "--reference",
        &srv.url,
        "--public-key",
        &w.pubkey(),
    ]);
    let e = format!("{}{}", stderr(&o), stdout(&o));
    let e = if o.status.success() {
        stderr(&site.run(&["check"]))
    } else {
        e
    };
    assert!(e.contains("not a valid document of its kind"), "{e}");
    assert!(!e.contains("not signed by an online key"), "{e}");
}
