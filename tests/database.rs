//! The site database through an update and its rollback: a write made after the update is
//! never discarded silently (kept by default, discarded only with `--restore-database` and
//! saved first), the copies are pruned, and upkeep adds nothing of its own but what the README
//! says.

mod common;
use common::scenario::*;
use common::*;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;

fn titles(root: &std::path::Path) -> Vec<String> {
    let c = rusqlite::Connection::open(site_db(root)).unwrap();
    let mut q = c.prepare("SELECT title FROM pages ORDER BY id").unwrap();
    q.query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

fn tables(db: &std::path::Path) -> Vec<String> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut q = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap();
    q.query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

/// A visitor's write, as the application would make it, after the site reopened.
fn visitor_writes(root: &std::path::Path, title: &str) {
    rusqlite::Connection::open(site_db(root))
        .unwrap()
        .execute("INSERT INTO pages(title) VALUES (?1)", [title])
        .unwrap();
}

#[test]
fn a_row_written_after_the_update_survives_the_rollback() {
    let s = Scenario::new();
    let site = Site::new(s.site("site"));
    site.update_yes();
    // upkeep's migrate added the release's schema and nothing of its own to the application.
    assert_eq!(
        tables(&site_db(&site.root)),
        ["pages", "tags", "upkeep_run_once"]
    );
    visitor_writes(&site.root, "Written after the update");

    // No terminal, no --yes: the plan is shown, nothing is done.
    let o = site.run(&["rollback"]);
    let said = format!("{}{}", stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(1), "{said}");
    assert!(
        said.contains("rollback of run 1 (1.0.0 -> 1.1.0)"),
        "{said}"
    );
    assert!(
        said.contains("kept as it is, because it was written since the site reopened"),
        "{said}"
    );
    assert!(said.contains("reopened (last at "), "{said}");
    assert!(said.contains("): pages: 1 row added."), "{said}");
    assert!(said.contains("--restore-database"), "{said}");
    assert!(said.contains("no terminal to confirm on"), "{said}");
    assert_eq!(
        std::fs::read_to_string(site.root.join("index.html")).unwrap(),
        "<h1>v2</h1>",
        "nothing rolled back without a yes"
    );

    let said = ok(site.run(&["rollback", "--yes"]));
    assert!(said.contains("rolled back run 1: release 1.0.0"), "{said}");
    let old: std::collections::BTreeMap<String, String> = V1
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    assert_eq!(live(&site.root), old, "the files of 1.0.0, exactly");
    assert_eq!(titles(&site.root), ["Home", "Written after the update"]);
    // The superset stays: the old code runs on it, and the SQL task's work and mark with it.
    assert_eq!(
        tables(&site_db(&site.root)),
        ["pages", "tags", "upkeep_run_once"]
    );
    let backups = ok(site.run(&["backup"]));
    assert!(backups.contains("run-1.db"), "{backups}");
    assert!(
        backups.contains("before run 1 migrated (1.0.0 -> 1.1.0)"),
        "{backups}"
    );
    assert!(backups.contains(".restore"), "{backups}");

    // Updating again does not run the SQL task a second time on the kept database.
    site.stage_archive(&s.w.zip("1.1.0"));
    site.update_yes();
    let c = rusqlite::Connection::open(site_db(&site.root)).unwrap();
    let tags: i64 = c
        .query_row("SELECT count(*) FROM tags", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tags, 1, "the task's insert happened once");
}

#[test]
fn restore_database_discards_the_writes_only_after_saving_them() {
    let s = Scenario::new();
    let site = Site::new(s.site("site"));
    site.update_yes();
    visitor_writes(&site.root, "Written after the update");
    let said = ok(site.run(&["rollback", "--yes", "--restore-database"]));
    assert!(said.contains("DISCARDING what was written"), "{said}");
    assert_old(&site.root);
    let saved: Vec<_> = std::fs::read_dir(site.root.join(".upkeep/backups"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("run-1-discarded-"))
        .collect();
    assert_eq!(saved.len(), 1, "{saved:?}");
    let mode = std::fs::metadata(&saved[0]).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let c = rusqlite::Connection::open(&saved[0]).unwrap();
    let kept: String = c
        .query_row("SELECT title FROM pages WHERE id = 2", [], |r| r.get(0))
        .unwrap();
    assert_eq!(kept, "Written after the update");
    let backups = ok(site.run(&["backup"]));
    assert!(
        backups.contains("what the rollback of run 1 (1.0.0 -> 1.1.0) discarded"),
        "{backups}"
    );
}

#[test]
fn a_database_only_read_since_the_update_is_restored_exactly() {
    let s = Scenario::new();
    let site = Site::new(s.site("site"));
    site.update_yes();
    assert_eq!(titles(&site.root), ["Home"], "a visitor reads");
    let said = ok(site.run(&["rollback", "--yes"]));
    assert!(
        said.contains("nothing was written since the update; the copy taken before it goes back"),
        "{said}"
    );
    assert_old(&site.root);
}

/// A health check whose page is served by a visitor's request that writes to the database,
/// then fails: the unattended rollback keeps the write and says so.
#[test]
fn an_unattended_rollback_keeps_a_write_made_during_the_health_check() {
    let s = Scenario::new();
    let site = Site::new(s.site("site"));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let root = site.root.clone();
    let server = std::thread::spawn(move || {
        // One request, answered after the write: the check then fails (attempts = 1).
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 1024];
        let _ = conn.read(&mut buf);
        visitor_writes(&root, "A comment during the check");
        let _ = conn.write_all(
            b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 5\r\nconnection: close\r\n\r\nfatal",
        );
    });
    set_config(
        &site.root,
        "auto.health",
        "url",
        &format!("\"http://127.0.0.1:{port}/\""),
    );
    set_config(&site.root, "auto.health", "attempts", "1");
    let err = fails(site.run(&["update", "--yes"]), 1);
    server.join().unwrap();
    assert!(err.contains("the run was undone"), "{err}");
    assert!(err.contains("kept as it is"), "{err}");
    assert_eq!(
        std::fs::read_to_string(site.root.join("index.html")).unwrap(),
        "<h1>v1</h1>"
    );
    assert_eq!(titles(&site.root), ["Home", "A comment during the check"]);
}

#[test]
fn old_copies_are_pruned_to_keep_backups_which_is_at_least_one() {
    let w = World::new();
    let schema: &[u8] = b"CREATE TABLE pages(id INTEGER PRIMARY KEY, title TEXT);\n";
    let d1 = w.publish("1.0.0", &[("index.html", b"v1"), ("schema.sql", schema)]);
    for v in ["1.1.0", "1.2.0", "1.3.0"] {
        w.publish(v, &[("index.html", v.as_bytes()), ("schema.sql", schema)]);
    }
    let srv = w.reference();
    let site = Site::new(w.instance("site", Some(&d1), &srv.url, &[]));
    rusqlite::Connection::open(site.root.join(".upkeep/site.db"))
        .unwrap()
        .execute_batch("CREATE TABLE pages(id INTEGER PRIMARY KEY, title TEXT);")
        .unwrap();
    let toml = site.root.join("upkeep.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    let text = text.replace("database = \".upkeep/site.db\"\n", "")
        + "\n[database]\nurl = \".upkeep/site.db\"\nkeep_backups = 2\n";
    std::fs::write(&toml, text).unwrap();
    for v in ["1.1.0", "1.2.0", "1.3.0"] {
        site.stage_archive(&w.zip(v));
        site.update_yes();
    }
    let mut names: Vec<String> = std::fs::read_dir(site.root.join(".upkeep/backups"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["run-2.db", "run-3.db"]);
    for n in &names {
        let mode = std::fs::metadata(site.root.join(".upkeep/backups").join(n))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{n}");
    }
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(&toml, text.replace("keep_backups = 2", "keep_backups = 0")).unwrap();
    let err = fails(site.run(&["status"]), 2);
    assert!(err.contains("keep_backups = 0"), "{err}");
}

/// `kill -9` at each point of a rollback that discards writes: resumed, it saves them once and
/// restores the copy, whatever point it died at.
#[test]
fn a_rollback_killed_while_discarding_finishes_with_the_writes_saved() {
    use std::os::unix::process::ExitStatusExt;
    let s = Scenario::new();
    for point in ["rollback:saved", "rollback:files", "rollback:database"] {
        let site = Site::new(s.site(&point.replace(':', "-")));
        site.update_yes();
        visitor_writes(&site.root, "Written after the update");
        let r = site.root.to_str().unwrap();
        let o = upkeep_env(
            &["rollback", "--yes", "--restore-database", "--root", r],
            &[("UPKEEP_CRASH_AT", point)],
        );
        assert_eq!(o.status.signal(), Some(9), "{point}: {}", stderr(&o));
        // Resumed without the flag: the decision recorded with the site closed holds.
        ok(site.run(&["resume"]));
        assert_old(&site.root);
        let saved: Vec<_> = std::fs::read_dir(site.root.join(".upkeep/backups"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("-discarded-"))
            .collect();
        assert_eq!(saved.len(), 1, "{point}: {saved:?}");
        let c =
            rusqlite::Connection::open(site.root.join(".upkeep/backups").join(&saved[0])).unwrap();
        let n: i64 = c
            .query_row("SELECT count(*) FROM pages", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2, "{point}: the discarded database holds the write");
    }
}
