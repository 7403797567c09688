//! The site database on a real PostgreSQL (issue 23): `schema.postgresql.sql` planned in a
//! scratch schema inside a rolled-back transaction, indexes built CONCURRENTLY and constant
//! defaults added before the site closes, a lock held by another connection retried then
//! refused with the site open, SQL tasks committed with their mark, `pg_dump` before, `kill -9`
//! anywhere in the database steps then resume or rollback, a visitor's row kept.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;

use common::postgres::{Postgres, installed};
use common::*;

const V1: &[(&str, &[u8])] = &[
    ("index.html", b"<h1>v1</h1>"),
    (
        "schema.postgresql.sql",
        b"CREATE TABLE pages (id serial PRIMARY KEY, title text NOT NULL, body text);\nCREATE TABLE comments (id serial PRIMARY KEY, body text);\n",
    ),
];

const V2: &[(&str, &[u8])] = &[
    ("index.html", b"<h1>v2</h1>"),
    (
        "schema.postgresql.sql",
        b"CREATE TABLE pages (id serial PRIMARY KEY, title text NOT NULL, body text, slug text NOT NULL DEFAULT '', hits bigint DEFAULT (random() * 10)::bigint);\nCREATE INDEX pages_title ON pages (title);\nCREATE TABLE comments (id serial PRIMARY KEY, body text);\nCREATE TABLE tags (id serial PRIMARY KEY, name text NOT NULL);\nCREATE UNIQUE INDEX tags_name ON tags (name);\n",
    ),
    (
        "run_once/001-fill.sql",
        b"UPDATE pages SET slug = lower(title);\nINSERT INTO tags(name) VALUES ('hello');\n",
    ),
];

const BASELINE: &str = "CREATE TABLE pages (id serial PRIMARY KEY, title text NOT NULL, body text); INSERT INTO pages(title, body) VALUES ('Home', 'Welcome'), ('About', 'Us'); CREATE TABLE comments (id serial PRIMARY KEY, body text);";

const PASSWORD: &str = "p:w' s\\ëcret";

struct Setup {
    db: Postgres,
    w: World,
    _srv: Server,
    template: std::path::PathBuf,
    baseline: String,
}

fn setup() -> Setup {
    let w = World::new();
    let db = Postgres::start();
    db.site_database("site", PASSWORD);
    let d1 = w.publish("1.0.0", V1);
    w.publish("1.1.0", V2);
    let srv = w.reference();
    let template = w.server_db_template(
        &d1,
        &srv.url,
        &format!(
            "postgresql://site@127.0.0.1:{}/site?sslmode=disable",
            db.port
        ),
        PASSWORD,
        "1.1.0",
    );
    let mut s = Setup {
        db,
        w,
        _srv: srv,
        template,
        baseline: String::new(),
    };
    reset(&s, "baseline");
    s.baseline = schema_and_rows(&s.db);
    s
}

fn schema_and_rows(db: &Postgres) -> String {
    let mut out = db.sql(
        "site",
        "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = 'public' AND table_name <> 'upkeep_run_once' ORDER BY table_name, ordinal_position",
    );
    out += &db.sql(
        "site",
        "SELECT tablename, indexname FROM pg_indexes WHERE schemaname = 'public' AND tablename <> 'upkeep_run_once' ORDER BY 1, 2",
    );
    out += &db.sql("site", "SELECT id, title, body FROM pages ORDER BY id");
    out += &db.sql("site", "SELECT * FROM comments ORDER BY id");
    out
}

fn reset(s: &Setup, name: &str) -> Site {
    s.db.sql(
        "site",
        &format!("DROP SCHEMA public CASCADE; CREATE SCHEMA public AUTHORIZATION site; SET ROLE site; {BASELINE}"),
    );
    if !s.baseline.is_empty() {
        assert_eq!(schema_and_rows(&s.db), s.baseline);
    }
    let root = s.w.path(name);
    let _ = std::fs::remove_dir_all(&root);
    copy_tree(&s.template, &root);
    Site::new(root)
}

fn updated(db: &Postgres) {
    let t = schema_and_rows(db);
    assert!(t.contains("pages\tslug\ttext"), "{t}");
    assert!(t.contains("pages\tpages_title"), "{t}");
    assert!(t.contains("tags\ttags_name"), "{t}");
    assert_eq!(
        db.sql("site", "SELECT slug FROM pages ORDER BY id"),
        "home\nabout\n"
    );
    assert_eq!(db.sql("site", "SELECT name FROM tags"), "hello\n");
    assert_eq!(
        db.sql("site", "SELECT name FROM upkeep_run_once"),
        "run_once/001-fill.sql\n"
    );
}

fn no_scratch(db: &Postgres) {
    assert_eq!(
        db.sql(
            "site",
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'upkeep%'"
        ),
        ""
    );
}

#[test]
fn postgres_plan_update_rollback_lock_and_kill_anywhere() {
    if !installed() {
        return;
    }
    let s = setup();
    let site = reset(&s, "site");
    let (_, plan) = site.plan();
    let st = plan["schema"]["statements"].as_array().unwrap();
    let find = |needle: &str| {
        st.iter()
            .find(|x| x["sql"].as_str().unwrap().contains(needle))
            .unwrap_or_else(|| panic!("{needle} in {st:?}"))
    };
    let slug = find("ADD COLUMN \"slug\" text DEFAULT ''::text NOT NULL");
    assert_eq!(slug["phase"], "open", "{slug}");
    let hits = find("ADD COLUMN \"hits\"");
    assert_eq!(
        hits["phase"], "closed",
        "a volatile default rewrites: {hits}"
    );
    assert!(hits["holds"].as_str().unwrap().contains("rewrites pages"));
    let idx = find("CREATE INDEX CONCURRENTLY pages_title ON pages");
    assert_eq!(idx["phase"], "open");
    assert_eq!(
        idx["undo"],
        "DROP INDEX CONCURRENTLY IF EXISTS \"pages_title\";"
    );
    find("CREATE TABLE tags");
    find("CREATE UNIQUE INDEX CONCURRENTLY tags_name ON tags");
    no_scratch(&s.db);
    assert_eq!(
        schema_and_rows(&s.db),
        s.baseline,
        "reviewing changes nothing"
    );

    site.update_yes();
    updated(&s.db);
    let copy = site.root.join(".upkeep/backups/run-1.pgdump");
    assert_eq!(
        std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let said = ok(site.run(&["rollback", "--yes"]));
    assert!(
        said.contains("the copy taken before it goes back"),
        "{said}"
    );
    assert_eq!(schema_and_rows(&s.db), s.baseline);

    // A visitor writes after the update: kept, and named.
    site.stage_archive(&s.w.zip("1.1.0"));
    site.update_yes();
    s.db.sql("site", "INSERT INTO comments(body) VALUES ('First!')");
    let said = ok(site.run(&["rollback", "--yes"]));
    assert!(said.contains("kept as it is"), "{said}");
    assert!(said.contains("comments: 1 row written"), "{said}");
    assert!(schema_and_rows(&s.db).contains("First!"));

    // Rows taken away with no row left to tell, and not counted as deletes (TRUNCATE): kept.
    let site = reset(&s, "truncate");
    site.update_yes();
    s.db.sql("site", "TRUNCATE pages");
    let said = ok(site.run(&["rollback", "--yes"]));
    assert!(said.contains("kept as it is"), "{said}");
    assert!(said.contains("pages: emptied or rewritten"), "{said}");
    assert_eq!(s.db.sql("site", "SELECT count(*) FROM pages"), "0\n");

    // Another connection holds a lock on pages: retried, then refused with the site open.
    let site = reset(&s, "lock");
    let mut holder = ::postgres::Client::connect(
        &format!(
            "host={} port={} user=postgres dbname=site",
            s.db.socket_dir.display(),
            s.db.port
        ),
        ::postgres::NoTls,
    )
    .unwrap();
    let mut tx = holder.transaction().unwrap();
    tx.batch_execute("LOCK TABLE pages IN ACCESS SHARE MODE")
        .unwrap();
    let err = fails(site.run(&["update", "--yes"]), 1);
    assert!(err.contains("waited 2 times 1 s (lock_timeout)"), "{err}");
    assert!(
        !site.root.join(".upkeep/gate-closed").exists(),
        "never closed"
    );
    tx.commit().unwrap();
    ok(site.run(&["resume"]));
    updated(&s.db);

    // kill -9 at every point of the database steps, then resume or rollback, in turn.
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
            ["backup:", "schema:", "migrate:", "run_once:", "reopen:"]
                .iter()
                .any(|k| p.starts_with(k))
        })
        .map(String::from)
        .collect();
    assert!(
        points.iter().any(|p| p == "schema:open:2:started"),
        "{points:?}"
    );
    for (i, point) in points.iter().enumerate() {
        let then = if i % 2 == 0 { "resume" } else { "rollback" };
        eprintln!("kill -9 at {point}, then {then}");
        let site = reset(&s, &format!("crash-{i}"));
        let r = site.root.to_str().unwrap();
        let o = upkeep_env(
            &["update", "--root", r, "--yes"],
            &[("UPKEEP_CRASH_AT", point)],
        );
        assert_eq!(o.status.signal(), Some(9), "{point}: {}", stderr(&o));
        if then == "resume" {
            ok(site.run(&["resume"]));
            updated(&s.db);
        } else {
            ok(site.run(&["rollback", "--yes"]));
            assert_eq!(schema_and_rows(&s.db), s.baseline, "{point} then rollback");
        }
        no_scratch(&s.db);
    }
}

#[test]
fn postgres_over_tls_with_the_servers_certificate_verified() {
    if !installed() {
        return;
    }
    let w = World::new();
    let db = Postgres::start_tls();
    db.site_database("site", PASSWORD);
    db.sql(
        "site",
        &format!("DROP SCHEMA public CASCADE; CREATE SCHEMA public AUTHORIZATION site; SET ROLE site; {BASELINE}"),
    );
    let baseline = schema_and_rows(&db);
    let d1 = w.publish("1.0.0", V1);
    w.publish("1.1.0", V2);
    let srv = w.reference();
    // verify-full: the driver and pg_dump/pg_restore both refuse a connection without TLS or
    // with a certificate the CA did not sign for this host.
    let ca = db.tls_ca();
    let url = format!(
        "postgresql://site@localhost:{}/site?sslmode=verify-full&sslrootcert={}",
        db.port,
        ca.display()
    );
    let site = Site::new(w.server_db_template(&d1, &srv.url, &url, PASSWORD, "1.1.0"));
    site.update_yes();
    updated(&db);
    assert!(site.root.join(".upkeep/backups/run-1.pgdump").exists());

    // Another CA named: refused with the reason, nothing changed.
    common::postgres::make_ca(&w.path(""), "other-ca", "not the CA");
    let other = w.path("other-ca.pem");
    let toml = site.root.join("upkeep.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    let ca_text = ca.display().to_string();
    std::fs::write(&toml, text.replace(&ca_text, &other.display().to_string())).unwrap();
    let err = fails(site.run(&["rollback", "--yes"]), 1);
    assert!(
        err.contains("cannot reach") && err.contains("certificate"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(site.root.join("index.html")).unwrap(),
        "<h1>v2</h1>"
    );
    updated(&db);
    std::fs::write(&toml, text).unwrap();
    let said = ok(site.run(&["rollback", "--yes"]));
    assert!(
        said.contains("the copy taken before it goes back"),
        "{said}"
    );
    assert_eq!(schema_and_rows(&db), baseline);
}
