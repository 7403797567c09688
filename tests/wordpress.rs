//! A real CMS (issue 22): Debian's WordPress on a real MariaDB, php-fpm and nginx (the
//! README's lines) with Apache beside it, the site owned by www-data, installed through its own
//! wp-admin/install.php. A release made from it is published, and the update is run as the
//! README says while a bounded request loop hits the site: only 200, 302 and 503 are answered,
//! no PHP while closed, no source ever; owners and modes are kept; the operator's wp-config.php
//! stays; the admin works after the update and after the rollback. The site database is the
//! MariaDB WordPress uses, named in upkeep.toml as `mysql://`: release 1.1.0 raises WordPress's
//! database version and ships the database upgrade as a shell task, so the rollback's plan
//! says the task changed it and `--restore-database` brings back a database 1.0.0 runs on.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::mariadb::Mariadb;
use common::php::{apache, php_fpm, stack_installed};
use common::*;

const WORDPRESS: &str = "/usr/share/wordpress";
const PASSWORD: &str = "wp's pass";

/// WordPress's own database upgrade, as wp-admin/upgrade.php runs it.
const UPGRADE_TASK: &str = r#"#!/bin/sh
exec php -d display_errors=stderr -r '$_SERVER["HTTP_HOST"] = "localhost"; define("WP_INSTALLING", true); require "./wp-load.php"; require_once ABSPATH . "wp-admin/includes/upgrade.php"; wp_upgrade(); echo "db_version ", get_option("db_version"), "\n";'
"#;

fn installed() -> bool {
    if !stack_installed(true) {
        return false;
    }
    if Path::new(WORDPRESS).is_dir() && common::mariadb::installed() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "wordpress or mariadb-server is missing on CI"
    );
    eprintln!("skipped: Debian's wordpress or mariadb-server is not installed");
    false
}

/// Debian's WordPress tree, links followed (a release holds regular files only).
fn copy_wordpress(to: &Path) {
    let o = Command::new("cp")
        .args(["-rL", WORDPRESS])
        .arg(to)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// What the loop saw: answers by status, and whether any body was PHP source.
#[derive(Default, Debug)]
struct Seen {
    statuses: std::collections::BTreeMap<u16, usize>,
    source: Vec<String>,
    php_while_closed: usize,
}

/// Do `work` while a client hits `/`, `/wp-login.php` and `/wp-admin/` through `base`, as
/// sent to `host`: from a round before `work` to a round after it (at most a minute in all).
/// Checks that only 200, 302 and 503 were answered, no PHP source, every 503 the gate's page.
fn while_visited(base: &str, host: &str, work: impl FnOnce()) -> Seen {
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (base, host) = (base.to_string(), host.to_string());
    let visitor = {
        let (stop, rounds) = (stop.clone(), rounds.clone());
        std::thread::spawn(move || {
            let c = reqwest::blocking::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .unwrap();
            let mut seen = Seen::default();
            let t = std::time::Instant::now();
            while !stop.load(Ordering::Relaxed) && t.elapsed().as_secs() < 60 {
                for p in ["", "wp-login.php", "wp-admin/"] {
                    let Ok(r) = c.get(format!("{base}{p}")).header("host", &host).send() else {
                        *seen.statuses.entry(0).or_default() += 1;
                        continue;
                    };
                    let status = r.status().as_u16();
                    let body = r.text().unwrap_or_default();
                    *seen.statuses.entry(status).or_default() += 1;
                    if body.contains("<?php") {
                        seen.source.push(p.to_string());
                    }
                    // A 503 is the gate's maintenance page, never WordPress's own answer.
                    if status == 503 && !body.contains("We will be back in a moment") {
                        seen.php_while_closed += 1;
                    }
                }
                rounds.fetch_add(1, Ordering::Relaxed);
            }
            seen
        })
    };
    let wait_round = |after: usize| {
        let t = std::time::Instant::now();
        while rounds.load(Ordering::Relaxed) <= after && t.elapsed().as_secs() < 30 {
            std::thread::yield_now();
        }
    };
    wait_round(0);
    work();
    wait_round(rounds.load(Ordering::Relaxed));
    stop.store(true, Ordering::Relaxed);
    let seen = visitor.join().unwrap();
    assert!(
        seen.statuses.keys().all(|s| [200, 302, 503].contains(s)),
        "{seen:?}"
    );
    assert!(
        seen.source.is_empty() && seen.php_while_closed == 0,
        "{seen:?}"
    );
    seen
}

/// Log into wp-admin and see the dashboard, through the server at `base`, as sent to `host`.
fn admin_works(base: &str, host: &str) {
    let c = reqwest::blocking::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let _ = c
        .get(format!("{base}wp-login.php"))
        .header("host", host)
        .send()
        .unwrap();
    let r = c
        .post(format!("{base}wp-login.php"))
        .header("host", host)
        .form(&[
            ("log", "admin"),
            ("pwd", "a-long-admin-password"),
            ("testcookie", "1"),
        ])
        .send()
        .unwrap();
    assert_eq!(r.status(), 302, "login: {}", r.text().unwrap_or_default());
    let page = c
        .get(format!("{base}wp-admin/"))
        .header("host", host)
        .send()
        .unwrap();
    assert_eq!(
        page.status(),
        200,
        "wp-admin/ answered {:?}",
        page.headers().get("location")
    );
    assert!(page.text().unwrap().contains("Dashboard"));
}

#[test]
fn wordpress_updates_and_rolls_back_behind_nginx_and_apache_with_only_200_302_503() {
    if !installed() {
        return;
    }
    let web = upkeep::base::users::user("www-data").unwrap();
    let w = World::new();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(w.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let db = Mariadb::start(&w.path("mariadb"));
    let db_port = db.port;
    db.site_database("wordpress", PASSWORD);
    // Release 1.0.0 is Debian's WordPress; 1.1.0 bumps the version and changes real files.
    let r1 = w.path("release-1.0.0");
    copy_wordpress(&r1);
    w.publish_dir(&r1, "1.0.0", &["--no-compress", "--deltas", "0"]);
    let r2 = w.path("release-1.1.0");
    copy_wordpress(&r2);
    let version = r2.join("wp-includes/version.php");
    let text = std::fs::read_to_string(&version).unwrap();
    let old = text
        .lines()
        .find(|l| l.starts_with("$wp_version"))
        .unwrap()
        .to_string();
    let old_db = text
        .lines()
        .find(|l| l.starts_with("$wp_db_version"))
        .unwrap()
        .to_string();
    let db_version: u64 = old_db
        .trim_start_matches("$wp_db_version = ")
        .trim_end_matches(';')
        .parse()
        .unwrap();
    let new_text = text
        .replace(&old, "$wp_version = '6.1.99';")
        .replace(&old_db, &format!("$wp_db_version = {};", db_version + 1));
    std::fs::write(&version, new_text).unwrap();
    std::fs::create_dir_all(r2.join("run_once")).unwrap();
    std::fs::write(r2.join("run_once/001-wp-upgrade.sh"), UPGRADE_TASK).unwrap();
    for f in [
        "wp-includes/functions.php",
        "wp-admin/admin-footer.php",
        "wp-login.php",
    ] {
        let mut s = std::fs::read_to_string(r2.join(f)).unwrap();
        s.push_str("\n// upkeep test release 1.1.0\n");
        std::fs::write(r2.join(f), s).unwrap();
    }
    std::fs::write(
        r2.join("wp-includes/upkeep-new.php"),
        "<?php // new in 1.1.0\n",
    )
    .unwrap();
    std::fs::remove_file(r2.join("readme.html")).unwrap();
    w.publish_dir(&r2, "1.1.0", &["--no-compress", "--deltas", "0"]);
    let srv = w.reference();

    // The site: WordPress as installed, with the operator's wp-config.php, www-data's.
    let root = w.path("site");
    copy_wordpress(&root);
    let config = format!(
        "<?php\ndefine('DB_NAME', 'wordpress');\ndefine('DB_USER', 'wordpress');\ndefine('DB_PASSWORD', 'wp\\'s pass');\n\
         define('DB_HOST', '127.0.0.1:{db_port}');\ndefine('DB_CHARSET', 'utf8mb4');\n$table_prefix = 'wp_';\n\
         define('FS_METHOD', 'direct');\n\
         define('WP_HOME', 'http://' . $_SERVER['HTTP_HOST']);\ndefine('WP_SITEURL', WP_HOME);\nif (!defined('ABSPATH')) define('ABSPATH', __DIR__ . '/');\n\
         require_once ABSPATH . 'wp-settings.php';\n"
    );
    std::fs::write(root.join("wp-config.php"), config).unwrap();
    give_to(&root, &web);
    std::fs::set_permissions(
        root.join("wp-config.php"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    // The password file is the site user's, as upkeep reads it acting as that user.
    let pass = w.path("db.pass");
    std::fs::write(&pass, PASSWORD).unwrap();
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&pass, Some(web.uid), Some(web.gid)).unwrap();
    w.init_at(
        &root,
        &srv.url,
        &[
            "--installed",
            "1.0.0",
            "--database",
            &format!("mysql://wordpress@127.0.0.1:{db_port}/wordpress"),
            "--database-password-file",
            pass.to_str().unwrap(),
        ],
    );
    let db_version_now = || {
        db.sql(
            "wordpress",
            "SELECT option_value FROM wp_options WHERE option_name = 'db_version'",
        )
        .trim()
        .parse::<u64>()
        .unwrap()
    };
    let (_fpm, sock) = php_fpm(&w.path("php"), Some("www-data"));
    // The site's restart hook, as the README says: php-fpm reloaded before the reopen, so its
    // opcache serves no old file after the swap (nor a new one after the rollback).
    set_config(
        &root,
        "auto",
        "after",
        &format!(
            "[\"kill -USR2 $(cat {})\"]",
            w.path("php/php-fpm.pid").display()
        ),
    );
    let panel = spawn_server(&["serve", "--root", root.to_str().unwrap()]);
    let lines = |lang: &str| {
        common::nginx::readme_block("## Behind nginx or Apache", lang)
            .replace("/var/www/site", root.to_str().unwrap())
            .replace("/run/php/php8.2-fpm.sock", sock.to_str().unwrap())
            .replace(
                "127.0.0.1:8000",
                panel
                    .url
                    .trim_start_matches("http://")
                    .trim_end_matches('/'),
            )
    };
    let ntmp = w.path("nginx");
    std::fs::create_dir_all(&ntmp).unwrap();
    std::fs::copy("/etc/nginx/fastcgi_params", ntmp.join("fastcgi_params")).unwrap();
    let nginx = common::nginx::Nginx::start(
        &lines("nginx").replace("listen 80;", "listen {listen};"),
        &ntmp,
    );
    let (_apache, apache_url) = apache(
        &lines("apache").replace("<VirtualHost *:80>", "<VirtualHost *:{port}>"),
        &w.path("apache"),
    );
    // WordPress installed through its own installer.
    let c = reqwest::blocking::Client::new();
    let r = c
        .post(format!("{}wp-admin/install.php?step=2", nginx.url))
        .form(&[
            ("weblog_title", "Upkeep test"),
            ("user_name", "admin"),
            ("admin_password", "a-long-admin-password"),
            ("admin_password2", "a-long-admin-password"),
            ("pw_weak", "1"),
            ("admin_email", "admin@example.org"),
            ("blog_public", "0"),
        ])
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().unwrap().contains("Success"), "WordPress installed");
    // WordPress answers at whichever address it is asked (WP_HOME follows the Host header).
    let host_of = |u: &str| {
        u.trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string()
    };
    let (host, apache_host) = (host_of(&nginx.url), host_of(&apache_url));
    admin_works(&nginx.url, &host);

    // The update, as the README says, while visitors come.
    let site = Site::new(&root);
    ok(site.run(&["stage", "--network"]));
    let seen = while_visited(&nginx.url, &host, || {
        site.update_yes();
    });
    eprintln!("during the update: {seen:?}");
    let run = &site.status_json()["history"][0];
    eprintln!(
        "closed window of the WordPress update: {} ms",
        run["closed_ms"]
    );
    assert!(
        read_tree(&root)["wp-includes/version.php"]
            .windows(7)
            .any(|w| w == b"6.1.99'")
    );
    assert!(!root.join("readme.html").exists());
    // The task ran WordPress's own upgrade on the real database.
    assert!(
        root.join("run_once/001-wp-upgrade.sh.done").exists(),
        "{run}"
    );
    assert_eq!(db_version_now(), db_version + 1, "{run}");
    assert!(
        root.join("run_once/001-wp-upgrade.sh.done").exists(),
        "the task is marked done"
    );
    // The operator's wp-config.php, its owner and mode, and www-data's files.
    assert!(
        std::fs::read_to_string(root.join("wp-config.php"))
            .unwrap()
            .contains(&db_port.to_string())
    );
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(root.join("wp-config.php")).unwrap();
    assert_eq!((md.mode() & 0o777, md.uid()), (0o640, web.uid));
    for f in [
        "wp-includes/version.php",
        "wp-includes/upkeep-new.php",
        "wp-login.php",
    ] {
        assert_eq!(
            std::fs::metadata(root.join(f)).unwrap().uid(),
            web.uid,
            "{f}"
        );
    }
    admin_works(&nginx.url, &host);
    admin_works(&apache_url, &apache_host);

    let copy = root.join(".upkeep/backups/run-1.sql");
    let md = std::fs::metadata(&copy).unwrap();
    assert_eq!(
        (md.mode() & 0o777, md.uid()),
        (0o600, web.uid),
        "the dump is the site user's, private"
    );
    assert!(
        std::fs::read_to_string(&copy)
            .unwrap()
            .contains(&format!("'db_version','{db_version}'")),
        "the dump taken before the update holds 1.0.0's database version"
    );

    // The admin logged in since: the database was written, so a rollback would keep it, and
    // its plan says the upgrade task changed it and how to have the copy back instead.
    let o = site.run(&["rollback"]);
    assert_eq!(o.status.code(), Some(1), "no terminal: only the plan");
    let said = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    eprintln!("the rollback's plan:\n{said}");
    assert!(said.contains("kept as it is"), "{said}");
    assert!(said.contains("run_once/001-wp-upgrade.sh"), "{said}");
    assert!(said.contains("--restore-database"), "{said}");
    assert_eq!(db_version_now(), db_version + 1, "the plan changes nothing");

    // The rollback with the copy, through Apache this time.
    let seen = while_visited(&apache_url, &apache_host, || {
        let said = ok(site.run(&["rollback", "--yes", "--restore-database"]));
        assert!(said.contains("DISCARDING what was written"), "{said}");
    });
    eprintln!("during the rollback: {seen:?}");
    assert_eq!(
        read_tree(&root)["wp-includes/version.php"],
        std::fs::read(r1.join("wp-includes/version.php")).unwrap()
    );
    assert!(root.join("readme.html").exists());
    assert_eq!(db_version_now(), db_version, "1.0.0's database is back");
    admin_works(&apache_url, &apache_host);
}
