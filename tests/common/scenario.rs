//! The update story used by the apply and crash tests: release 1.0.0 installed with a site
//! database holding a row, release 1.1.0 staged, which changes, adds and removes files, adds a
//! column, a table and an index, and ships an SQL task and a shell task.

use super::*;
use std::path::{Path, PathBuf};

pub const V1: &[(&str, &[u8])] = &[
    ("index.html", b"<h1>v1</h1>"),
    ("gone.txt", b"removed in 1.1.0"),
    ("keep.css", b"body{}"),
    ("lib/x.php", b"<?php // x v1"),
    (
        "schema.sql",
        b"CREATE TABLE pages(id INTEGER PRIMARY KEY, title TEXT);\n",
    ),
];

pub const V2: &[(&str, &[u8])] = &[
    ("index.html", b"<h1>v2</h1>"),
    ("keep.css", b"body{}"),
    ("lib/x.php", b"<?php // x v2"),
    ("lib/deep/new/y.php", b"<?php // y"),
    ("schema.sql", b"CREATE TABLE pages(id INTEGER PRIMARY KEY, title TEXT, slug TEXT DEFAULT '');\nCREATE TABLE tags(name TEXT NOT NULL);\nCREATE INDEX pages_slug ON pages(slug);\n"),
    ("run_once/001-tags.sql", b"INSERT INTO tags(name) VALUES ('hello');\nUPDATE pages SET slug = lower(title);\n"),
    ("run_once/002-count.sh", b"echo ran >> counter.txt\necho 'task output line'\n"),
];

/// A staged instance ready for `upkeep update`, plus the server it was staged from.
pub struct Scenario {
    pub w: World,
    pub srv: Server,
    pub template: PathBuf,
}

pub fn site_db(root: &Path) -> PathBuf {
    root.join(".upkeep/site.db")
}

impl Scenario {
    pub fn new() -> Scenario {
        let w = World::new();
        let d1 = w.publish("1.0.0", V1);
        w.publish("1.1.0", V2);
        let srv = w.reference();
        let template = w.instance("template", Some(&d1), &srv.url, &[]);
        let db = rusqlite::Connection::open(site_db(&template)).unwrap();
        db.execute_batch("CREATE TABLE pages(id INTEGER PRIMARY KEY, title TEXT); INSERT INTO pages(title) VALUES ('Home');").unwrap();
        drop(db);
        ok(upkeep(&[
            "stage",
            "--root",
            template.to_str().unwrap(),
            "--archive",
            w.zip("1.1.0").to_str().unwrap(),
        ]));
        Scenario { w, srv, template }
    }

    /// A fresh copy of the staged instance.
    pub fn site(&self, name: &str) -> PathBuf {
        let root = self.w.path(name);
        let _ = std::fs::remove_dir_all(&root);
        copy_tree(&self.template, &root);
        root
    }
}

/// The live tree (without upkeep's folders) as path -> contents, text for readable failures.
pub fn live(root: &Path) -> std::collections::BTreeMap<String, String> {
    read_tree(root)
        .into_iter()
        .filter(|(k, _)| k != "counter.txt")
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect()
}

fn expect(files: &[(&str, &[u8])]) -> std::collections::BTreeMap<String, String> {
    files
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v).into_owned()))
        .collect()
}

/// Exactly release 1.0.0.
pub fn assert_old(root: &Path) {
    assert_eq!(live(root), expect(V1), "the old release, exactly");
    let db = rusqlite::Connection::open(site_db(root)).unwrap();
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(tables, ["pages"], "the old database");
    let cols: i64 = db
        .query_row("SELECT count(*) FROM pragma_table_info('pages')", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(cols, 2);
    let title: String = db
        .query_row("SELECT title FROM pages", [], |r| r.get(0))
        .unwrap();
    assert_eq!(title, "Home");
    assert_settled(root, "1.0.0");
}

/// Exactly release 1.1.0 with its backups and finished tasks, each task run once.
pub fn assert_new(root: &Path) {
    let mut want = expect(V2);
    for t in ["run_once/001-tags.sql", "run_once/002-count.sh"] {
        let v = want.remove(t).unwrap();
        want.insert(format!("{t}.done"), v);
    }
    for (p, v) in V1 {
        if *p != "keep.css" {
            want.insert(format!("{p}.bak"), String::from_utf8_lossy(v).into_owned());
        }
    }
    assert_eq!(
        live(root),
        want,
        "the new release with its .bak and .done files"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("counter.txt")).unwrap(),
        "ran\n",
        "the shell task ran exactly once"
    );
    let db = rusqlite::Connection::open(site_db(root)).unwrap();
    let tags: Vec<String> = db
        .prepare("SELECT name FROM tags")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(tags, ["hello"], "the SQL task ran exactly once");
    let slug: String = db
        .query_row("SELECT slug FROM pages", [], |r| r.get(0))
        .unwrap();
    assert_eq!(slug, "home");
    let idx: i64 = db
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type='index' AND name='pages_slug'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(idx, 1);
    assert_settled(root, "1.1.0");
}

/// Gate open, lock free, no unfinished run, the given release installed.
pub fn assert_settled(root: &Path, installed: &str) {
    assert!(!root.join(".upkeep/gate-closed").exists(), "gate open");
    let f = std::fs::File::options()
        .read(true)
        .write(true)
        .open(root.join(".upkeep/lock"))
        .unwrap();
    f.try_lock().expect("lock free");
    let st: serde_json::Value = serde_json::from_str(&ok(upkeep(&[
        "status",
        "--root",
        root.to_str().unwrap(),
        "--json",
    ])))
    .unwrap();
    assert_eq!(st["installed"], installed);
    assert!(
        st["current"].is_null(),
        "no unfinished run: {}",
        st["current"]
    );
}
