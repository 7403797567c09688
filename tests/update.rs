//! Applying an update: the plan, the steps, .bak and .done files, the database, the gate, the
//! lock; failures that must end in a clean state.

mod common;
use common::scenario::*;
use common::*;

fn root_arg(root: &std::path::Path) -> String {
    root.to_str().unwrap().to_string()
}

#[test]
fn update_applies_everything_and_rollback_restores_exactly() {
    let s = Scenario::new();
    let root = s.site("site");
    let out = upkeep(&["update", "--root", &root_arg(&root), "--yes"]);
    let text = ok(out);
    assert!(
        text.contains("updated 1.0.0 -> 1.1.0; the site was closed for"),
        "{text}"
    );
    assert_new(&root);
    let st: serde_json::Value = serde_json::from_str(&ok(upkeep(&[
        "status",
        "--root",
        &root_arg(&root),
        "--json",
    ])))
    .unwrap();
    let run = &st["history"][0];
    assert_eq!(run["status"], "done");
    assert!(run["closed_ms"].as_i64().unwrap() >= 0);
    let steps: Vec<&str> = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "backup", "schema", "close", "swap", "scan", "migrate", "run_once", "hooks", "reopen",
            "health"
        ]
    );
    let task = run["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "run_once/002-count.sh")
        .unwrap();
    assert_eq!(
        task["output"], "task output line\n",
        "shell output kept in state.db"
    );
    assert!(
        list_files(&root.join("staging")).is_empty(),
        "staging emptied"
    );

    ok(upkeep(&["rollback", "--yes", "--root", &root_arg(&root)]));
    assert_old(&root);
}

#[test]
fn the_plan_lists_modified_files_first_and_needs_a_yes() {
    let s = Scenario::new();
    let root = s.site("site");
    std::fs::write(root.join("lib/x.php"), b"<?php // my hotfix").unwrap();
    // The staged copy of lib/x.php still matches; the live one is now locally modified.
    let o = upkeep(&["update", "--root", &root_arg(&root)]);
    let out = stdout(&o);
    let err = fails(o, 1);
    assert!(err.contains("pass --yes"), "{err}");
    let modified = out.find("locally modified (1):").expect("modified section");
    assert!(
        modified < out.find("add (").unwrap(),
        "modified files come first:\n{out}"
    );
    assert!(
        out.contains("lib/x.php (your version kept as lib/x.php.bak)"),
        "{out}"
    );
    assert!(
        out.contains("ALTER TABLE \"pages\" ADD COLUMN \"slug\" TEXT DEFAULT ''"),
        "{out}"
    );
    assert!(out.contains("run_once/002-count.sh"), "{out}");
    assert_eq!(
        std::fs::read(root.join("index.html")).unwrap(),
        b"<h1>v1</h1>",
        "nothing applied without a yes"
    );
    assert!(!root.join(".upkeep/gate-closed").exists());

    ok(upkeep(&["update", "--root", &root_arg(&root), "--yes"]));
    assert_eq!(
        std::fs::read(root.join("lib/x.php.bak")).unwrap(),
        b"<?php // my hotfix",
        "the operator's version kept"
    );
    assert_eq!(
        std::fs::read(root.join("lib/x.php")).unwrap(),
        b"<?php // x v2"
    );
}

#[test]
fn keep_modified_leaves_the_operators_file() {
    let s = Scenario::new();
    let root = s.site("site");
    std::fs::write(root.join("lib/x.php"), b"<?php // my hotfix").unwrap();
    let j: serde_json::Value = serde_json::from_str(&ok(upkeep(&[
        "update",
        "--root",
        &root_arg(&root),
        "--yes",
        "--keep-modified",
        "--json",
    ])))
    .unwrap();
    assert_eq!(j["status"], "done");
    assert_eq!(
        std::fs::read(root.join("lib/x.php")).unwrap(),
        b"<?php // my hotfix"
    );
    assert!(!root.join("lib/x.php.bak").exists());
    assert_eq!(
        std::fs::read(root.join("index.html")).unwrap(),
        b"<h1>v2</h1>"
    );
}

#[test]
fn a_staged_file_changed_after_staging_is_refused_before_closing() {
    let s = Scenario::new();
    let root = s.site("site");
    // Make the shell task fail until the operator creates a file.
    let script = root.join("staging/run_once/002-count.sh");
    std::fs::write(&script, b"[ -f fixed ] || { echo 'missing fixed' >&2; exit 3; }\necho ran >> counter.txt\necho 'task output line'\n").unwrap();
    // The staged copy no longer matches the signed manifest: update refuses before closing.
    let e = fails(upkeep(&["update", "--root", &root_arg(&root), "--yes"]), 1);
    assert!(
        e.contains("staging no longer matches") && e.contains("002-count.sh"),
        "{e}"
    );
    assert!(!root.join(".upkeep/gate-closed").exists());
}

#[test]
fn a_failing_task_stops_the_run_closed_then_resume_finishes() {
    // A release whose shell task fails until the operator fixes the cause.
    let w = World::new();
    let d1 = w.publish("1.0.0", &[("index.html", b"v1")]);
    w.publish(
        "1.1.0",
        &[
            ("index.html", b"v2"),
            (
                "run_once/01.sh",
                b"[ -f fixed ] || { echo 'need the fixed file' >&2; exit 3; }\necho fine\n",
            ),
        ],
    );
    let srv = w.reference();
    let root = w.instance("site", Some(&d1), &srv.url, &[]);
    ok(upkeep(&["stage", "--root", &root_arg(&root), "--network"]));
    let e = fails(upkeep(&["update", "--root", &root_arg(&root), "--yes"]), 1);
    assert!(
        e.contains("run_once/01.sh exited with status 3")
            && e.contains("need the fixed file")
            && e.contains("upkeep resume"),
        "{e}"
    );
    assert!(
        root.join(".upkeep/gate-closed").exists(),
        "the site stays closed"
    );
    let c = reqwest::blocking::Client::new();
    let site = spawn_server(&["serve", "--root", &root_arg(&root)]);
    let r = c.get(&site.url).send().unwrap();
    assert_eq!(r.status(), 503);
    let busy = fails(upkeep(&["update", "--root", &root_arg(&root), "--yes"]), 1);
    assert!(busy.contains("run 1 stopped at step run_once"), "{busy}");
    std::fs::write(root.join("fixed"), b"").unwrap();
    ok(upkeep(&["resume", "--root", &root_arg(&root)]));
    assert_eq!(std::fs::read(root.join("index.html")).unwrap(), b"v2");
    assert!(root.join("run_once/01.sh.done").exists());
    let r = c.get(&site.url).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), "v2");
}

#[test]
fn a_failing_migration_stops_with_the_statement_and_rollback_restores() {
    let w = World::new();
    let d1 = w.publish("1.0.0", &[("index.html", b"v1")]);
    w.publish("1.1.0", &[("index.html", b"v2"), ("schema.sql", b"CREATE TABLE pages(id INTEGER PRIMARY KEY, title TEXT NOT NULL);\nCREATE TABLE z(a);\n")]);
    let srv = w.reference();
    let root = w.instance("site", Some(&d1), &srv.url, &[]);
    rusqlite::Connection::open(site_db(&root))
        .unwrap()
        .execute_batch("CREATE TABLE pages(id INTEGER PRIMARY KEY); INSERT INTO pages VALUES (7);")
        .unwrap();
    ok(upkeep(&["stage", "--root", &root_arg(&root), "--network"]));
    let e = fails(upkeep(&["update", "--root", &root_arg(&root), "--yes"]), 1);
    assert!(
        e.contains("migration failed on") && e.contains("ADD COLUMN \"title\" TEXT NOT NULL"),
        "{e}"
    );
    ok(upkeep(&["rollback", "--yes", "--root", &root_arg(&root)]));
    assert_eq!(std::fs::read(root.join("index.html")).unwrap(), b"v1");
    let db = rusqlite::Connection::open(site_db(&root)).unwrap();
    let n: i64 = db
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'z'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 0);
    assert_eq!(
        db.query_row("SELECT id FROM pages", [], |r| r.get::<_, i64>(0))
            .unwrap(),
        7
    );
    assert_settled(&root, "1.0.0");
}

#[test]
fn disk_full_during_the_swap_ends_in_a_clean_rollback() {
    let s = Scenario::new();
    let root = s.site("site");
    // A rename never allocates space, so disk full inside the swap is injected (ENOSPC).
    let e = fails(
        upkeep_env(
            &["update", "--root", &root_arg(&root), "--yes"],
            &[("UPKEEP_FAIL_AT", "swap:4:bak")],
        ),
        1,
    );
    assert!(
        e.contains("No space left on device")
            && e.contains("the run was undone")
            && e.contains("free disk space"),
        "{e}"
    );
    assert_old(&root);
}

#[test]
fn a_read_only_file_during_the_swap_ends_in_a_clean_rollback() {
    let s = Scenario::new();
    let root = s.site("site");
    let target = root.join("lib/x.php");
    // An immutable file cannot be renamed, even by root: a real EPERM in the middle of the swap.
    let st = std::process::Command::new("chattr")
        .arg("+i")
        .arg(&target)
        .status()
        .expect("chattr");
    assert!(
        st.success(),
        "chattr +i needs CAP_LINUX_IMMUTABLE (CI runs as root)"
    );
    let o = upkeep(&["update", "--root", &root_arg(&root), "--yes"]);
    let _ = std::process::Command::new("chattr")
        .arg("-i")
        .arg(&target)
        .status();
    let e = fails(o, 1);
    assert!(
        e.contains("lib/x.php") && e.contains("the run was undone"),
        "{e}"
    );
    assert_old(&root);
}

#[test]
fn preflight_refuses_when_the_disk_cannot_hold_the_database_copy() {
    let s = Scenario::new();
    let mnt = Tmpfs::mount("4m");
    let root = mnt.path().join("site");
    copy_tree(&s.template, &root);
    let e = fails(upkeep(&["update", "--root", &root_arg(&root), "--yes"]), 1);
    assert!(
        e.contains("not enough free disk") && e.contains("hint: free"),
        "{e}"
    );
    assert_eq!(live(&root), live(&s.template), "nothing changed");
    assert!(!root.join(".upkeep/gate-closed").exists());
}

#[test]
fn one_run_at_a_time() {
    let w = World::new();
    let d1 = w.publish("1.0.0", &[("index.html", b"v1")]);
    // The task waits (bounded) for the test to let it go, so the run holds the lock meanwhile.
    w.publish(
        "1.1.0",
        &[
            ("index.html", b"v2"),
            (
                "run_once/01.sh",
                b"i=0; while [ ! -f go ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done\n",
            ),
        ],
    );
    let srv = w.reference();
    let root = w.instance("site", Some(&d1), &srv.url, &[]);
    ok(upkeep(&["stage", "--root", &root_arg(&root), "--network"]));
    let mut first = std::process::Command::new(BIN)
        .args(["update", "--root", &root_arg(&root), "--yes"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let db = rusqlite::Connection::open(root.join(".upkeep/state.db")).unwrap();
    let mut started = false;
    for _ in 0..400 {
        let n: i64 = db
            .query_row(
                "SELECT count(*) FROM tasks WHERE state = 'started'",
                [],
                |r| r.get(0),
            )
            .unwrap_or(0);
        if n == 1 {
            started = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    assert!(started, "the first run reached its task");
    for args in [
        vec!["update", "--yes"],
        vec!["stage", "--network"],
        vec!["rollback"],
    ] {
        let mut a = args.clone();
        a.extend(["--root", root.to_str().unwrap()]);
        let e = fails(upkeep(&a), 75);
        assert!(e.contains("busy: run 1 at step run_once"), "{e}");
    }
    std::fs::write(root.join("go"), b"").unwrap();
    assert!(first.wait().unwrap().success());
    assert_settled(&root, "1.1.0");
}

#[test]
fn serve_honours_the_gate_and_never_serves_upkeeps_files() {
    let s = Scenario::new();
    let root = s.site("site");
    std::fs::write(root.join("index.html.bak"), b"old").unwrap();
    let site = spawn_server(&["serve", "--root", &root_arg(&root)]);
    let c = reqwest::blocking::Client::new();
    assert_eq!(
        c.get(&site.url).send().unwrap().text().unwrap(),
        "<h1>v1</h1>"
    );
    for p in [
        "index.html.bak",
        "upkeep.toml",
        ".upkeep/state.db",
        "staging/index.html",
        "inbox/",
        "run_once/001-tags.sql",
        "staging/upkeep-manifest.json",
    ] {
        assert_eq!(
            c.get(format!("{}{p}", site.url)).send().unwrap().status(),
            404,
            "{p}"
        );
    }
    ok(upkeep(&[
        "close",
        "--root",
        &root_arg(&root),
        "--message",
        "Back at 5 <b>pm</b>",
    ]));
    let r = c.get(format!("{}keep.css", site.url)).send().unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "120");
    let body = r.text().unwrap();
    assert!(
        body.contains("Back at 5 &lt;b&gt;pm&lt;/b&gt;"),
        "message shown, escaped: {body}"
    );
    assert_eq!(
        c.get(format!("{}upkeep.toml", site.url))
            .send()
            .unwrap()
            .status(),
        404,
        "refusals hold while closed"
    );
    ok(upkeep(&["open", "--root", &root_arg(&root)]));
    assert_eq!(
        c.get(format!("{}keep.css", site.url))
            .send()
            .unwrap()
            .status(),
        200
    );
}
