//! The site database on a real MariaDB (issue 23): the release's `schema.mysql.sql` planned on
//! the server (a scratch database, dropped after), each ALTER with the algorithm and lock the
//! server takes, the additive ones run before the site closes; SQL tasks; the dump before;
//! a lock held by another connection; `kill -9` anywhere in the database steps, then resume or
//! rollback; a visitor's row kept by a rollback.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;

use common::mariadb::{Mariadb, installed};
use common::*;

const V1: &[(&str, &[u8])] = &[
    ("index.html", b"<h1>v1</h1>"),
    (
        "schema.mysql.sql",
        b"CREATE TABLE pages (id INT AUTO_INCREMENT PRIMARY KEY, title VARCHAR(100) NOT NULL, body TEXT) ENGINE=InnoDB;\n",
    ),
];

const V2: &[(&str, &[u8])] = &[
    ("index.html", b"<h1>v2</h1>"),
    (
        "schema.mysql.sql",
        b"CREATE TABLE pages (id INT AUTO_INCREMENT PRIMARY KEY, title VARCHAR(100) NOT NULL, body TEXT,\n  slug VARCHAR(100) NOT NULL DEFAULT '', KEY pages_title (title), FULLTEXT KEY pages_body (body)) ENGINE=InnoDB;\nCREATE TABLE tags (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(50) NOT NULL) ENGINE=InnoDB;\n",
    ),
    (
        "run_once/001-fill.sql",
        b"UPDATE pages SET slug = LOWER(title);\nINSERT INTO tags(name) VALUES ('hello');\n",
    ),
    // DDL in a task: MySQL commits it statement by statement, so each is journalled; the
    // INSERT between them must take effect once whatever the crash.
    (
        "run_once/002-approve.sql",
        b"ALTER TABLE comments ADD COLUMN approved TINYINT NOT NULL DEFAULT 0;\nINSERT INTO tags(name) VALUES ('world');\nCREATE INDEX comments_approved ON comments(approved);\n",
    ),
];

/// The site's tables as 1.0.0 left them: pages, and the visitors' comments (which no release
/// declares: the application's own, never touched by an update).
const BASELINE: &str = "CREATE TABLE pages (id INT AUTO_INCREMENT PRIMARY KEY, title VARCHAR(100) NOT NULL, body TEXT) ENGINE=InnoDB; INSERT INTO pages(title, body) VALUES ('Home', 'Welcome'), ('About', 'Us'); CREATE TABLE comments (id INT AUTO_INCREMENT PRIMARY KEY, body TEXT) ENGINE=InnoDB;";

struct Setup {
    db: Mariadb,
    w: World,
    _srv: Server,
    template: std::path::PathBuf,
    baseline: String,
}

const PASSWORD: &str = "p\"w' s\\ëcret";

fn setup(tmp_name: &str) -> Setup {
    let w = World::new();
    let db = Mariadb::start(&w.path(tmp_name));
    db.site_database("site", PASSWORD);
    db.sql("site", BASELINE);
    let d1 = w.publish("1.0.0", V1);
    w.publish("1.1.0", V2);
    let srv = w.reference();
    let template = w.server_db_template(
        &d1,
        &srv.url,
        &format!("mysql://site@127.0.0.1:{}/site", db.port),
        PASSWORD,
        "1.1.0",
    );
    let baseline = schema_and_rows(&db);
    Setup {
        db,
        w,
        _srv: srv,
        template,
        baseline,
    }
}

/// Tables, columns, indexes and rows of the site database, as text (readable on failure).
fn schema_and_rows(db: &Mariadb) -> String {
    let mut out = db.sql(
        "information_schema",
        "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE FROM COLUMNS WHERE TABLE_SCHEMA = 'site' AND TABLE_NAME <> 'upkeep_run_once' ORDER BY TABLE_NAME, ORDINAL_POSITION",
    );
    out += &db.sql(
        "information_schema",
        "SELECT TABLE_NAME, INDEX_NAME FROM STATISTICS WHERE TABLE_SCHEMA = 'site' AND TABLE_NAME <> 'upkeep_run_once' ORDER BY TABLE_NAME, INDEX_NAME",
    );
    out += &db.sql("site", "SELECT * FROM pages ORDER BY id");
    out += &db.sql("site", "SELECT * FROM comments ORDER BY id");
    if out.contains("tags\t") {
        out += &db.sql("site", "SELECT * FROM tags ORDER BY id");
    }
    out
}

fn reset(s: &Setup, name: &str) -> Site {
    s.db.sql(
        "",
        &format!("DROP DATABASE site; CREATE DATABASE site; USE site; {BASELINE}"),
    );
    assert_eq!(schema_and_rows(&s.db), s.baseline);
    let root = s.w.path(name);
    let _ = std::fs::remove_dir_all(&root);
    copy_tree(&s.template, &root);
    Site::new(root)
}

fn updated(db: &Mariadb) {
    let t = schema_and_rows(db);
    assert!(t.contains("pages\tslug\tvarchar(100)"), "{t}");
    assert!(t.contains("pages\tpages_body"), "{t}");
    assert!(t.contains("1\tHome\tWelcome\thome"), "{t}");
    assert!(t.contains("comments\tapproved\ttinyint"), "{t}");
    assert!(t.contains("comments\tcomments_approved"), "{t}");
    assert_eq!(
        db.sql("site", "SELECT name FROM tags ORDER BY id"),
        "hello\nworld\n"
    );
    assert_eq!(
        db.sql("site", "SELECT name FROM upkeep_run_once ORDER BY name"),
        "run_once/001-fill.sql\nrun_once/002-approve.sql\n"
    );
}

fn scratch_left(db: &Mariadb) -> String {
    db.sql("", "SHOW DATABASES LIKE 'upkeep%'")
}

#[test]
fn mariadb_plan_update_rollback_and_a_visitors_row() {
    if !installed() {
        return;
    }
    let s = setup("mariadb");
    let site = reset(&s, "site");
    let (_, plan) = site.plan();
    let st = plan["schema"]["statements"].as_array().unwrap();
    let find = |needle: &str| {
        st.iter()
            .find(|x| x["sql"].as_str().unwrap().contains(needle))
            .unwrap_or_else(|| panic!("{needle} in {st:?}"))
    };
    let slug = find("ADD COLUMN `slug`");
    assert!(
        slug["sql"]
            .as_str()
            .unwrap()
            .ends_with("ALGORITHM=INSTANT;"),
        "{slug}"
    );
    assert_eq!(slug["phase"], "open");
    let title = find("ADD KEY `pages_title`");
    assert!(
        title["sql"]
            .as_str()
            .unwrap()
            .contains("ALGORITHM=INPLACE, LOCK=NONE"),
        "{title}"
    );
    assert_eq!(title["phase"], "open");
    let body = find("FULLTEXT KEY `pages_body`");
    assert_eq!(body["phase"], "closed", "{body}");
    assert!(
        body["holds"].as_str().unwrap().contains("writes wait"),
        "{body}"
    );
    let notes = plan["task_notes"].as_array().unwrap();
    assert_eq!(notes.len(), 1, "{notes:?}");
    let note = notes[0].as_str().unwrap();
    assert!(
        note.starts_with("run_once/002-approve.sql holds 2 DDL statement(s)")
            && note.contains("cannot be undone by a transaction"),
        "{note}"
    );
    let tags = find("CREATE TABLE `tags`");
    assert_eq!(tags["undo"], "DROP TABLE IF EXISTS `tags`;");
    assert_eq!(scratch_left(&s.db), "", "the scratch database is dropped");
    assert_eq!(
        schema_and_rows(&s.db),
        s.baseline,
        "reviewing changes nothing"
    );

    let out = site.update_yes();
    assert!(out.contains("updated 1.0.0 -> 1.1.0"), "{out}");
    updated(&s.db);
    let copy = site.root.join(".upkeep/backups/run-1.sql");
    let mode = std::fs::metadata(&copy).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(!std::fs::read_to_string(&copy).unwrap().contains("ëcret"));
    assert_eq!(scratch_left(&s.db), "");

    // Nobody wrote: the task changed data, so the dump goes back, exactly.
    let said = ok(site.run(&["rollback", "--yes"]));
    assert!(
        said.contains("the copy taken before it goes back"),
        "{said}"
    );
    assert_eq!(schema_and_rows(&s.db), s.baseline);
    assert_eq!(
        std::fs::read_to_string(site.root.join("index.html")).unwrap(),
        "<h1>v1</h1>"
    );

    // Updated again, then a visitor writes: the rollback keeps the row, and the columns.
    site.stage_archive(&s.w.zip("1.1.0"));
    site.update_yes();
    s.db.sql(
        "site",
        "INSERT INTO comments(body) VALUES ('First!'); INSERT INTO pages(title, body) VALUES ('After', 'the update')",
    );
    let said = ok(site.run(&["rollback", "--yes"]));
    assert!(said.contains("kept as it is"), "{said}");
    assert!(said.contains("comments: written at"), "{said}");
    let t = schema_and_rows(&s.db);
    assert!(t.contains("After\tthe update"), "{t}");
    assert!(t.contains("First!"), "{t}");
    assert!(t.contains("pages\tslug"), "{t}");
    // And with --restore-database: the dump goes back, what it discards saved first.
    s.db.sql("site", "DELETE FROM comments; DELETE FROM pages WHERE title = 'After'; ALTER TABLE pages DROP COLUMN slug, DROP INDEX pages_title, DROP INDEX pages_body; ALTER TABLE comments DROP INDEX comments_approved, DROP COLUMN approved; DROP TABLE tags; DELETE FROM upkeep_run_once;");
    assert_eq!(schema_and_rows(&s.db), s.baseline);
    site.stage_archive(&s.w.zip("1.1.0"));
    site.update_yes();
    s.db.sql("site", "INSERT INTO comments(body) VALUES ('Second!')");
    let said = ok(site.run(&["rollback", "--yes", "--restore-database"]));
    assert!(said.contains("DISCARDING what was written"), "{said}");
    assert_eq!(schema_and_rows(&s.db), s.baseline);
    let saved: Vec<_> = std::fs::read_dir(site.root.join(".upkeep/backups"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("run-3-discarded-"))
        .collect();
    assert_eq!(saved.len(), 1, "{saved:?}");
    assert!(saved[0].to_string_lossy().ends_with(".sql"));
    assert!(
        std::fs::read_to_string(&saved[0])
            .unwrap()
            .contains("Second!")
    );
    let backups = ok(site.run(&["backup"]));
    assert!(backups.contains("run-2.sql"), "{backups}");
    assert!(
        backups.contains("mariadb -h") || backups.contains("mariadb --"),
        "{backups}"
    );

    // Rows taken away by TRUNCATE move no row counter nor UPDATE_TIME: told by InnoDB's
    // table ids (readable with PROCESS), so the rollback keeps the emptied table empty.
    s.db.sql("", "GRANT PROCESS ON *.* TO 'site'@'127.0.0.1'");
    let site = reset(&s, "truncate");
    site.update_yes();
    s.db.sql("site", "TRUNCATE pages");
    let said = ok(site.run(&["rollback", "--yes"]));
    assert!(said.contains("kept as it is"), "{said}");
    assert!(said.contains("pages: emptied or rebuilt"), "{said}");
    assert_eq!(s.db.sql("site", "SELECT count(*) FROM pages"), "0\n");
    // The kept database kept the tasks' done-marks: updated again, they do not run twice.
    site.stage_archive(&s.w.zip("1.1.0"));
    let (_, plan) = site.plan();
    let text = String::from_utf8_lossy(&site.run(&["update"]).stdout).into_owned();
    assert_eq!(
        plan["done_in_database"],
        serde_json::json!(["run_once/001-fill.sql", "run_once/002-approve.sql"]),
        "{plan}"
    );
    assert!(text.contains("run_once tasks NOT run again"), "{text}");
    assert!(!text.contains("run_once tasks (2)"), "{text}");
    let out = site.update_yes();
    assert_eq!(out.matches("| not run again").count(), 2, "{out}");
    assert_eq!(
        s.db.sql("site", "SELECT name FROM tags ORDER BY id"),
        "hello\nworld\n"
    );
}

#[test]
fn mariadb_a_held_lock_fails_before_the_close_then_resumes() {
    if !installed() {
        return;
    }
    let s = setup("mariadb-lock");
    let site = reset(&s, "site");
    // Without the dump tool nothing is copied, so nothing changes: refused with the package.
    let r = site.root.to_str().unwrap();
    let o = upkeep_env(
        &["update", "--root", r, "--yes"],
        &[("PATH", "/nonexistent")],
    );
    let said = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{said}");
    assert!(
        said.contains("mariadb-dump or mysqldump is not installed")
            && said.contains("apt install mariadb-client"),
        "{said}"
    );
    assert_eq!(schema_and_rows(&s.db), s.baseline);
    assert_eq!(
        std::fs::read_to_string(site.root.join("index.html")).unwrap(),
        "<h1>v1</h1>"
    );
    // Another connection in a transaction that read pages: its metadata lock holds every
    // ALTER of pages until it commits.
    use mysql::prelude::Queryable;
    let mut holder = mysql::Conn::new(
        mysql::OptsBuilder::new()
            .socket(Some(s.db.socket.display().to_string()))
            .user(Some("root"))
            .db_name(Some("site")),
    )
    .unwrap();
    holder.query_drop("START TRANSACTION").unwrap();
    let n: Option<i64> = holder.query_first("SELECT count(*) FROM pages").unwrap();
    assert_eq!(n, Some(2));
    let err = fails(site.run(&["update", "--yes"]), 1);
    assert!(err.contains("waited 2 times 1 s for a lock"), "{err}");
    assert!(
        !site.root.join(".upkeep/gate-closed").exists(),
        "the site never closed"
    );
    assert_eq!(
        std::fs::read_to_string(site.root.join("index.html")).unwrap(),
        "<h1>v1</h1>"
    );
    holder.query_drop("COMMIT").unwrap();
    ok(site.run(&["resume"]));
    updated(&s.db);
}

#[test]
fn mariadb_kill_anywhere_in_the_database_steps_then_resume_or_rollback() {
    if !installed() {
        return;
    }
    let s = setup("mariadb-crash");
    let trace = s.w.path("trace.txt");
    let site = reset(&s, "trace");
    ok(upkeep_env(
        &["update", "--root", site.root.to_str().unwrap(), "--yes"],
        &[("UPKEEP_CRASH_TRACE", trace.to_str().unwrap())],
    ));
    let points: Vec<String> = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .filter(|p| {
            [
                "backup:",
                "schema:",
                "migrate:",
                "run_once:",
                "task:",
                "reopen:",
            ]
            .iter()
            .any(|k| p.starts_with(k))
        })
        .map(String::from)
        .collect();
    for must in [
        "backup:copied",
        "schema:open:0:started",
        "schema:closed:0:done",
        "task:run_once/002-approve.sql:1:started",
    ] {
        assert!(points.iter().any(|p| p == must), "{must} in {points:?}");
    }
    for (i, point) in points.iter().enumerate() {
        // Both ways at every point would double the time: alternate, each point once.
        let then = if i % 2 == 0 { "resume" } else { "rollback" };
        eprintln!("kill -9 at {point}, then {then}");
        let site = reset(&s, &format!("crash-{i}"));
        let r = site.root.to_str().unwrap();
        let o = upkeep_env(
            &["update", "--root", r, "--yes"],
            &[("UPKEEP_CRASH_AT", point)],
        );
        assert_eq!(o.status.signal(), Some(9), "{point}: {}", stderr(&o));
        let args: &[&str] = if then == "resume" {
            &["resume"]
        } else {
            &["rollback", "--yes"]
        };
        ok(site.run(args));
        if then == "resume" {
            updated(&s.db);
        } else {
            assert_eq!(schema_and_rows(&s.db), s.baseline, "{point} then rollback");
        }
        assert_eq!(scratch_left(&s.db), "", "{point}");
    }
}
