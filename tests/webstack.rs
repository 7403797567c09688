//! The README's web server lines, run by real servers in front of a PHP site: nginx and Apache
//! 2.4 with php-fpm (issue 22). The lines are read from README.md, and `upkeep web-config`
//! must print the same, so neither can drift.

mod common;

use std::path::{Path, PathBuf};

use common::php::{apache, php_fpm, stack_installed};
use common::*;

/// A PHP site at release 1.0.0 with what a site holds beside its PHP: a stylesheet, an
/// include file, a backup, hidden files. Returns the world, its reference, the root and the
/// panel's admin password.
fn php_site() -> (World, Server, PathBuf, String) {
    let w = World::new();
    // The servers' workers (nginx's nobody, Apache's www-data) must reach the files.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(w.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let d1 = w.publish(
        "1.0.0",
        &[
            ("index.php", b"<?php echo 'php ok ', 1 + 1;"),
            ("wp-login.php", b"<?php echo 'login page';"),
            (
                "config.php",
                b"<?php $secret = 's3cret-value'; echo 'config';",
            ),
            ("style.css", b"body { color: black }"),
            ("lib/x.inc", b"<?php $inc = 'inc-source';"),
        ],
    );
    let srv = w.reference();
    let pw = w.path("admin.pw");
    std::fs::write(&pw, "a-long-enough-password\n").unwrap();
    let root = w.instance(
        "site",
        Some(&d1),
        &srv.url,
        &["--admin-password-file", pw.to_str().unwrap()],
    );
    std::fs::write(root.join("config.php.bak"), "<?php $old = 'bak-source';").unwrap();
    std::fs::write(root.join(".htaccess"), "# hidden").unwrap();
    std::fs::create_dir_all(root.join(".git")).unwrap();
    std::fs::write(root.join(".git/config"), "[core]").unwrap();
    (w, srv, root, "a-long-enough-password".into())
}

/// The README's block for `lang`, made for this site.
fn lines(lang: &str, root: &Path, sock: &Path, panel: &str) -> String {
    let block = common::nginx::readme_block("## Behind nginx or Apache", lang);
    // What `web-config` prints is the README's block, for this root.
    let printed = ok(upkeep(&[
        "web-config",
        lang,
        "--root",
        root.to_str().unwrap(),
        "--server-name",
        "example.org",
        "--php-fpm",
        "/run/php/php8.2-fpm.sock",
    ]));
    assert_eq!(
        printed,
        block.replace("/var/www/site", root.to_str().unwrap()),
        "README and web-config differ"
    );
    block
        .replace("/var/www/site", root.to_str().unwrap())
        .replace("/run/php/php8.2-fpm.sock", sock.to_str().unwrap())
        .replace(
            "127.0.0.1:8000",
            panel.trim_start_matches("http://").trim_end_matches('/'),
        )
}

/// What every server in front of the site must do, open and closed, and the panel's login
/// through it on its (non-default) port.
fn assert_the_guarantees(url: &str, root: &Path, password: &str) {
    let c = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |p: &str| c.get(format!("{url}{p}")).send().unwrap();
    let body = |p: &str| get(p).text().unwrap();
    // Open: PHP runs, and no source is served anywhere.
    assert_eq!(body(""), "php ok 2");
    assert_eq!(body("wp-login.php"), "login page");
    assert_eq!(body("config.php"), "config");
    assert_eq!(get("style.css").status(), 200);
    for p in [
        "config.php.bak",
        "lib/x.inc",
        ".htaccess",
        ".git/config",
        "upkeep.toml",
        ".upkeep/state.db",
        "staging/x",
        "inbox/a.zip",
        "run_once/a.sql",
    ] {
        let r = get(p);
        let status = r.status();
        let text = r.text().unwrap();
        assert_eq!(status, 404, "{p}");
        assert!(
            !text.contains("<?php") && !text.contains("source"),
            "{p}: {text}"
        );
    }
    // Closed: every PHP and static URL is 503 with Retry-After, the panel is not.
    ok(upkeep(&[
        "close",
        "--root",
        root.to_str().unwrap(),
        "--message",
        "Back soon",
    ]));
    for p in [
        "",
        "index.php",
        "wp-login.php",
        "xmlrpc.php",
        "wp-cron.php",
        "style.css",
        "missing.html",
    ] {
        let r = get(p);
        assert_eq!(r.status(), 503, "{p} while closed");
        assert_eq!(r.headers()["retry-after"], "120", "{p}");
        assert!(
            r.text().unwrap().contains("Back soon"),
            "{p}: the maintenance page"
        );
    }
    assert_eq!(
        get("control/login").status(),
        200,
        "the panel stays reachable"
    );
    // The login through the proxy, on its own port: the browser's origin is the proxy's.
    let origin = url.trim_end_matches('/');
    let r = c
        .post(format!("{url}control/login"))
        .header("origin", origin)
        .form(&[("name", "admin"), ("password", password)])
        .send()
        .unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().unwrap_or_default());
    assert!(r.headers().get("set-cookie").is_some());
    ok(upkeep(&["open", "--root", root.to_str().unwrap()]));
    assert_eq!(body(""), "php ok 2");
}

#[test]
fn nginx_with_php_fpm_gates_every_request_and_serves_no_source() {
    if !stack_installed(false) {
        return;
    }
    let (w, _srv, root, password) = php_site();
    let (_fpm, sock) = php_fpm(&w.path("php"), None);
    let panel = spawn_server(&["serve", "--root", root.to_str().unwrap()]);
    let server = lines("nginx", &root, &sock, &panel.url).replace("listen 80;", "listen {listen};");
    let tmp = w.path("nginx");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::copy("/etc/nginx/fastcgi_params", tmp.join("fastcgi_params")).unwrap();
    let nginx = common::nginx::Nginx::start(&server, &tmp);
    assert_the_guarantees(&nginx.url, &root, &password);
}

#[test]
fn apache_with_php_fpm_gates_every_request_and_serves_no_source() {
    if !stack_installed(true) {
        return;
    }
    let (w, _srv, root, password) = php_site();
    let (_fpm, sock) = php_fpm(&w.path("php"), None);
    let panel = spawn_server(&["serve", "--root", root.to_str().unwrap()]);
    let vhost = lines("apache", &root, &sock, &panel.url)
        .replace("<VirtualHost *:80>", "<VirtualHost *:{port}>");
    let (_apache, url) = apache(&vhost, &w.path("apache"));
    assert_the_guarantees(&url, &root, &password);
}
