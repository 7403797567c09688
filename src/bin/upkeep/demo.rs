//! `upkeep demo`: two releases of a small sample site (shipped in `demo/`), a reference server
//! and an instance at the first release, all on loopback, so that a newcomer clicks through a
//! whole update in a minute.

use std::path::Path;
use upkeep::outln;

use upkeep::base::error::{Error, IoContext, Result};
use upkeep::documents::manifest::SecretKey;
use upkeep::publisher::publish::{Publish, publish};
use upkeep::site::config::Instance;

macro_rules! tree {
    ($v:literal: $($p:literal),* $(,)?) => {
        &[$(($p, include_bytes!(concat!("../../../demo/", $v, "/", $p)) as &[u8])),*]
    };
}

const V1: &[(&str, &[u8])] = tree!("v1": "index.html", "about.html", "promo.html", "css/site.css", "schema.sql",
    "extensions/newsletter/extension.toml", "extensions/newsletter/schema.sql");
const V2: &[(&str, &[u8])] = tree!("v2": "index.html", "about.html", "menu.html", "css/site.css", "schema.sql",
    "run_once/001-seed-menu.sql", "extensions/newsletter/extension.toml", "extensions/newsletter/schema.sql");

fn write_tree(dir: &Path, files: &[(&str, &[u8])]) -> Result<()> {
    for (p, c) in files {
        let path = dir.join(p);
        let parent = path.parent().expect("demo paths have a parent");
        std::fs::create_dir_all(parent).ctx("create folder", parent)?;
        std::fs::write(&path, c).ctx("write", &path)?;
    }
    Ok(())
}

/// Build the demo in `dir` (or a temporary folder) and serve it on `listen` until stopped.
pub fn run(listen: &str, dir: Option<&Path>) -> Result<()> {
    let tmp;
    let base = match dir {
        Some(d) => {
            std::fs::create_dir_all(d).ctx("create folder", d)?;
            d.to_path_buf()
        }
        None => {
            tmp = tempfile::Builder::new()
                .prefix("upkeep-demo-")
                .tempdir()
                .ctx("create a temporary folder in", &std::env::temp_dir())?;
            tmp.path().to_path_buf()
        }
    };
    let (v1, v2, repo, site) = (
        base.join("release-1.0.0"),
        base.join("release-1.1.0"),
        base.join("repo"),
        base.join("site"),
    );
    if site.exists() {
        return Err(Error::refused(
            format!("{} already holds a demo", base.display()),
            "pass another --dir, or remove that folder",
        ));
    }
    write_tree(&v1, V1)?;
    write_tree(&v2, V2)?;
    let key = SecretKey::generate()?;
    let pub_path = base.join("publisher.key.pub");
    std::fs::write(&pub_path, key.public().to_text()).ctx("write", &pub_path)?;
    for (dir, version, notes) in [
        (&v1, "1.0.0", "First release."),
        (
            &v2,
            "1.1.0",
            "A menu page, a fresher style, menu items in the database.",
        ),
    ] {
        publish(&Publish {
            dir,
            version,
            repo: &repo,
            key: &key,
            notes,
            expires_days: 30,
            urgent: false,
            shrink: Default::default(),
        })?;
    }

    // The reference server lives on a thread of its own for the whole demo.
    let (tx, rx) = std::sync::mpsc::channel();
    let repo2 = repo.clone();
    std::thread::spawn(move || {
        let sys = actix_web::rt::System::new();
        sys.block_on(async move {
            match upkeep::publisher::serve::start(
                &repo2,
                "127.0.0.1:0",
                None,
                std::time::Duration::from_secs(60),
                None,
            ) {
                Ok((server, addr)) => {
                    let _ = tx.send(Ok(addr));
                    let _ = server.await;
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
    });
    let addr = rx
        .recv()
        .map_err(|_| Error::msg("the demo reference server did not start"))?
        .ctx("listen on", Path::new("127.0.0.1:0"))?;
    let reference = format!("http://{addr}/");

    write_tree(&site, V1)?;
    let db = site.join(".upkeep/site.db");
    std::fs::create_dir_all(site.join(".upkeep")).ctx("create folder", &site)?;
    let conn = rusqlite::Connection::open(&db).map_err(|e| Error::Db {
        path: db.clone(),
        source: e,
    })?;
    conn.execute_batch(
        "CREATE TABLE pages(id INTEGER PRIMARY KEY, slug TEXT NOT NULL, title TEXT);
         INSERT INTO pages(slug, title) VALUES ('index', 'Home'), ('about', 'About us');
         CREATE TABLE newsletter_subscribers(email TEXT PRIMARY KEY);",
    )
    .map_err(|e| Error::Db {
        path: db.clone(),
        source: e,
    })?;
    drop(conn);
    let r = upkeep::site::init::init(&upkeep::site::init::InitOptions {
        root: &site,
        reference: &reference,
        public_key: &key.public().to_text(),
        installed: None,
        admin_password: None,
        pending_tasks: false,
        name: Some("demo"),
        groups: &[],
        channel: None,
        url: None,
        database: None,
        database_password_file: None,
    })?;
    let password = r.admin_password.unwrap_or_default();
    let inst = Instance::open(&site)?;
    let sys = actix_web::rt::System::new();
    sys.block_on(async move {
        let (server, addr) = upkeep::site::panel::start(inst, listen).map_err(|e| {
            Error::refused(format!("cannot listen on {listen}: {e}"), "pass a free address, e.g. `upkeep demo --listen 127.0.0.1:0`")
        })?;
        outln!("serving the demo site on http://{addr}/ (control panel: http://{addr}/control, account admin, password {password})");
        outln!();
        outln!("  1. open http://{addr}/control and log in as admin with the password above");
        outln!("  2. Check now -> Stage (download) -> Review -> Apply the update");
        outln!("  3. open http://{addr}/ to see release 1.1.0 (the menu page is new)");
        outln!();
        outln!("reference server: {reference}  files: {}", base.display());
        outln!("the same steps from a shell: upkeep check --root {0}; upkeep stage --root {0} --network; upkeep update --root {0}", site.display());
        outln!("press Ctrl-C to stop (the demo folder is removed unless --dir was given)");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        server.await.ctx("serve", &site)
    })
}
