//! The control panel over HTTP: login, logout, rate limit, CSRF, GETs that change nothing, every
//! wizard step, an upload, and resuming after the server died mid-run.

mod common;
use common::panel::*;
use common::*;

fn count(db: &std::path::Path, sql: &str) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

#[test]
fn pages_need_a_session_and_carry_security_headers() {
    let d = Demo::start(&[]);
    let c = d.client();
    for p in [
        "control",
        "control/check",
        "control/stage",
        "control/review",
        "control/run",
        "control/job/1",
        "control/diff?path=index.html",
    ] {
        let r = d.get(&c, p);
        assert_eq!(r.status(), 303, "{p}");
        assert_eq!(location(&r), "/control/login", "{p}");
    }
    let r = d.get(&c, "control/login");
    assert_eq!(r.status(), 200);
    let h = r.headers();
    assert!(
        h["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "same-origin");
    let r = d.post(&c, "control/gate/close", &[("csrf", "x"), ("message", "m")]);
    assert_eq!(
        location(&r),
        "/control/login",
        "a POST without a session is refused too"
    );
    assert!(!d.site().join(".upkeep/gate-closed").exists());
}

#[test]
fn login_cookie_logout_and_password_change() {
    let d = Demo::start(&[]);
    let c = d.client();
    let r = d.login(&c);
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
            && cookie.contains("Path=/control"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "plain http on loopback");
    let sid = cookie.split(';').next().unwrap().to_string();
    assert_eq!(d.get(&c, "control").status(), 200);

    // A stolen cookie stops working at logout.
    let thief = d.client();
    let with_cookie = |path: &str| {
        thief
            .get(format!("{}{path}", d.url))
            .header("cookie", &sid)
            .send()
            .unwrap()
    };
    assert_eq!(with_cookie("control").status(), 200);
    let t = d.csrf(&c);
    assert_eq!(
        location(&d.post(&c, "control/logout", &[("csrf", &t)])),
        "/control/login"
    );
    assert_eq!(with_cookie("control").status(), 303);

    // A password change ends every session of the account.
    let c2 = d.client();
    d.login(&c2);
    assert_eq!(d.get(&c2, "control").status(), 200);
    let mut p = std::process::Command::new(BIN)
        .args([
            "user",
            "passwd",
            "admin",
            "--root",
            d.site().to_str().unwrap(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(p.stdin.as_mut().unwrap(), b"a much longer new password\n").unwrap();
    assert!(p.wait().unwrap().success());
    assert_eq!(d.get(&c2, "control").status(), 303);
    let c3 = d.client();
    assert_eq!(
        d.post(
            &c3,
            "control/login",
            &[
                ("name", "admin"),
                ("password", "a much longer new password")
            ]
        )
        .status(),
        303
    );
    // No password, cookie or token lands in the state store's text or the logs.
    let db = std::fs::read(d.site().join(".upkeep/state.db")).unwrap();
    assert!(!String::from_utf8_lossy(&db).contains("a much longer new password"));
}

#[test]
fn wrong_password_and_unknown_user_look_the_same_and_are_rate_limited() {
    let d = Demo::start(&[]);
    let c = d.client();
    let a = d.post(
        &c,
        "control/login",
        &[("name", "admin"), ("password", "not the password")],
    );
    let b = d.post(
        &c,
        "control/login",
        &[("name", "nobody"), ("password", "not the password")],
    );
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (401, 401));
    assert_eq!(a.text().unwrap(), b.text().unwrap(), "same answer for both");
    assert_eq!(
        d.post(
            &c,
            "control/login",
            &[("name", "admin"), ("password", "still wrong!")]
        )
        .status(),
        401
    );
    // Three failures: the next attempt must wait, whatever its password (no free guesses),
    // and the page says for how long and that the right password then works.
    let r = d.login(&c);
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=5).contains(&wait), "{wait}");
    let text = r.text().unwrap();
    assert!(text.contains("Too many failed logins"), "{text}");
    assert!(
        text.contains("right password works after the wait"),
        "{text}"
    );
    let db = d.site().join(".upkeep/state.db");
    assert_eq!(count(&db, "SELECT count(*) FROM sessions"), 0);
}

#[test]
fn csrf_and_origin_are_checked_and_gets_change_nothing() {
    let d = Demo::start(&[]);
    let c = d.client();
    d.login(&c);
    let t = d.csrf(&c);
    assert_eq!(
        d.post(&c, "control/gate/close", &[("message", "x")])
            .status(),
        403,
        "no token"
    );
    assert_eq!(
        d.post(
            &c,
            "control/gate/close",
            &[("csrf", "0000"), ("message", "x")]
        )
        .status(),
        403,
        "wrong token"
    );
    let evil = c
        .post(format!("{}control/gate/close", d.url))
        .header("origin", "http://evil.example")
        .form(&[("csrf", t.as_str()), ("message", "x")])
        .send()
        .unwrap();
    assert_eq!(evil.status(), 403, "another origin");
    assert!(!d.site().join(".upkeep/gate-closed").exists());

    // Every page visited with GET: nothing changes.
    let db = d.site().join(".upkeep/state.db");
    let before = snapshot(&d.site());
    for p in [
        "control",
        "control/check",
        "control/stage",
        "control/review",
        "control/run",
        "control/apply",
        "control/rollback",
        "control/gate/close",
        "control/check?csrf=x",
    ] {
        let s = d.get(&c, p).status().as_u16();
        assert!(s < 500, "{p}: {s}");
    }
    assert_eq!(count(&db, "SELECT count(*) FROM jobs"), 0);
    assert_eq!(count(&db, "SELECT count(*) FROM runs"), 0);
    assert_eq!(count(&db, "SELECT count(*) FROM staged"), 0);
    assert_eq!(snapshot(&d.site()), before);

    assert_eq!(
        location(&d.post(
            &c,
            "control/gate/close",
            &[("csrf", &t), ("message", "back soon")]
        )),
        "/control"
    );
    assert!(d.site().join(".upkeep/gate-closed").exists());
    assert_eq!(reqwest::blocking::get(&d.url).unwrap().status(), 503);
    assert_eq!(
        d.get(&c, "control").status(),
        200,
        "the panel stays reachable while the site is closed"
    );
    d.post(&c, "control/gate/open", &[("csrf", &t)]);
    assert_eq!(reqwest::blocking::get(&d.url).unwrap().status(), 200);
}

#[test]
fn the_wizard_end_to_end() {
    let d = Demo::start(&[]);
    let c = d.client();
    d.login(&c);
    let t = d.csrf(&c);
    let r = d.post(&c, "control/check", &[("csrf", &t)]);
    let page = d.wait_job(&c, &location(&r));
    assert!(
        page.contains("Release 1.1.0 is available: 2 new, 4 changed, 1 removed"),
        "{page}"
    );
    let page = d.get(&c, "control/check").text().unwrap();
    assert!(page.contains("menu.html") && page.contains("promo.html"));

    let r = d.post(&c, "control/stage", &[("csrf", &t), ("source", "network")]);
    let page = d.wait_job(&c, &location(&r));
    assert!(page.contains("Release 1.1.0 is staged: 6 files"), "{page}");
    assert_eq!(
        std::fs::read_to_string(d.site().join("staging/menu.html")).unwrap(),
        std::fs::read_to_string("demo/v2/menu.html").unwrap()
    );

    let page = d.get(&c, "control/review").text().unwrap();
    assert!(
        page.contains("2 to add, 4 to replace, 1 to remove"),
        "{page}"
    );
    assert!(page.contains("CREATE TABLE menu_items"));
    let diff = d.get(&c, "control/diff?path=index.html").text().unwrap();
    assert!(
        diff.contains("class=\"del\"") && diff.contains("now pastries all day"),
        "{diff}"
    );

    assert_eq!(location(&d.apply_reviewed(&c, &t)), "/control/run");
    let page = d.wait_run(&c);
    assert!(page.contains("The update is done"), "{page}");
    let site = reqwest::blocking::get(&d.url).unwrap().text().unwrap();
    assert!(site.contains("Release 1.1.0"));
    let db = d.site().join(".upkeep/site.db");
    assert_eq!(count(&db, "SELECT count(*) FROM menu_items"), 3);
    let dash = d.get(&c, "control").text().unwrap();
    assert!(
        dash.contains("newsletter 1.1.0"),
        "dashboard shows the version and the extension"
    );
}

#[test]
fn upload_a_release_zip() {
    let d = Demo::start(&[]);
    let c = d.client();
    d.login(&c);
    let t = d.csrf(&c);
    let zip = d.dir.path().join("repo/releases/1.1.0/upkeep-1.1.0.zip");
    let upload = |csrf: &str| {
        // The token first, as the panel's form sends it: nothing is stored before it is checked.
        let form = reqwest::blocking::multipart::Form::new()
            .text("csrf", csrf.to_string())
            .file("zip", &zip)
            .unwrap();
        c.post(format!("{}control/upload", d.url))
            .multipart(form)
            .send()
            .unwrap()
    };
    let r = upload(&t);
    assert_eq!(r.status(), 303);
    let page = d.wait_job(&c, &location(&r));
    assert!(page.contains("Release 1.1.0 is staged"), "{page}");
    assert_eq!(upload("bad").status(), 403);
    // Refused before a byte was stored: nothing new in the inbox but the first upload.
    let inbox: Vec<_> = std::fs::read_dir(d.site().join("inbox"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("upload-"))
        .collect();
    assert_eq!(inbox.len(), 1, "{inbox:?}");

    // Not a zip: refused at the first bytes and nothing left in inbox/.
    let junk = reqwest::blocking::multipart::Form::new()
        .text("csrf", t.clone())
        .part(
            "zip",
            reqwest::blocking::multipart::Part::bytes(b"<html>not a zip</html>".to_vec())
                .file_name("release.zip"),
        );
    let r = c
        .post(format!("{}control/upload", d.url))
        .multipart(junk)
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().unwrap().contains("not a zip archive"));
    assert!(
        std::fs::read_dir(d.site().join("inbox"))
            .unwrap()
            .all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".part")),
        "no .part left behind"
    );
}

#[test]
fn server_dies_mid_run_then_a_fresh_login_lands_on_the_run_and_resumes() {
    let d = Demo::start(&[("UPKEEP_CRASH_AT", "migrate:before")]);
    let c = d.client();
    d.login(&c);
    let t = d.csrf(&c);
    let r = d.post(&c, "control/stage", &[("csrf", &t), ("source", "network")]);
    d.wait_job(&c, &location(&r));
    d.apply_reviewed(&c, &t);
    // The crash point kills the whole server in the middle of the run.
    let mut demo = d;
    let status = demo.server.child.wait().unwrap();
    assert!(!status.success());
    assert!(
        demo.site().join(".upkeep/gate-closed").exists(),
        "closed mid-run"
    );

    let (server, _) = spawn_with_banner({
        let mut c = std::process::Command::new(BIN);
        c.args([
            "serve",
            "--root",
            demo.site().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ]);
        c
    });
    demo.url = server.url.clone();
    demo.server = server;
    let c = demo.client();
    let r = demo.login(&c);
    assert_eq!(location(&r), "/control/run", "lands on the run");
    let page = demo.get(&c, "control/run").text().unwrap();
    assert!(
        page.contains("interrupted") && page.contains("Resume"),
        "{page}"
    );
    let t = demo.csrf(&c);
    assert_eq!(
        location(&demo.post(&c, "control/resume", &[("csrf", &t)])),
        "/control/run"
    );
    let page = demo.wait_run(&c);
    assert!(page.contains("The update is done"), "{page}");
    assert!(
        reqwest::blocking::get(&demo.url)
            .unwrap()
            .text()
            .unwrap()
            .contains("Release 1.1.0")
    );
}

#[test]
fn apply_runs_the_reviewed_plan_or_nothing() {
    let d = Demo::start(&[]);
    let c = d.client();
    d.login(&c);
    let t = d.csrf(&c);
    let r = d.post(&c, "control/stage", &[("csrf", &t), ("source", "network")]);
    d.wait_job(&c, &location(&r));
    let reviewed = d.reviewed_plan(&c, false);
    assert_ne!(
        reviewed,
        d.reviewed_plan(&c, true),
        "keeping is another plan"
    );

    // Between the review and the click, someone edits a file the release replaces.
    std::fs::write(
        d.site().join("index.html"),
        "<h1>edited after the review</h1>",
    )
    .unwrap();
    let before = snapshot(&d.site());
    let r = d.post(&c, "control/apply", &[("csrf", &t), ("plan", &reviewed)]);
    assert_eq!(location(&r), "/control/run");
    // The job refuses before any run begins; the run page it led to says why.
    let page = d.wait_run(&c);
    assert!(page.contains("The update did not start"), "{page}");
    assert!(
        page.contains("the plan changed since it was reviewed"),
        "{page}"
    );
    assert!(page.contains("/control/review"), "{page}");
    let db = d.site().join(".upkeep/state.db");
    assert_eq!(count(&db, "SELECT count(*) FROM runs"), 0);
    assert!(!d.site().join(".upkeep/gate-closed").exists());
    assert_eq!(snapshot(&d.site()), before);

    // The review now lists the edit; approving that plan applies it.
    let review = d.get(&c, "control/review").text().unwrap();
    assert!(review.contains("Locally modified (1)"), "{review}");
    let r = d.apply_reviewed(&c, &t);
    assert_eq!(location(&r), "/control/run");
    assert!(d.wait_run(&c).contains("The update is done"));
    assert_eq!(count(&db, "SELECT count(*) FROM runs"), 1);
}

#[test]
fn the_dashboard_offers_finish_for_a_release_copied_by_hand() {
    let d = Demo::start(&[]);
    let c = d.client();
    d.login(&c);
    let t = d.csrf(&c);
    copy_tree(&d.dir.path().join("release-1.1.0"), &d.site());
    let r = d.post(&c, "control/check", &[("csrf", &t)]);
    d.wait_job(&c, &location(&r));
    let dash = d.get(&c, "control").text().unwrap();
    assert!(
        dash.contains("Release 1.1.0 was copied over the site"),
        "{dash}"
    );
    let r = d.post(&c, "control/finish", &[("csrf", &t)]);
    assert_eq!(location(&r), "/control/run");
    let page = d.wait_run(&c);
    assert!(page.contains("The update is done"), "{page}");
    let db = d.site().join(".upkeep/site.db");
    assert_eq!(count(&db, "SELECT count(*) FROM menu_items"), 3);
    let dash = d.get(&c, "control").text().unwrap();
    assert!(!dash.contains("was copied over the site"), "{dash}");
}

#[test]
fn the_login_page_obeys_its_own_content_security_policy() {
    let d = Demo::start(&[]);
    let r = d.get(&d.client(), "control/login");
    assert!(
        r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("style-src 'self'")
    );
    let body = r.text().unwrap();
    assert!(!body.contains(" style="), "inline style: {body}");
    assert!(!body.contains("<style"), "{body}");
}

#[test]
fn the_dashboard_shows_the_policy_and_the_last_unattended_passes() {
    let d = Demo::start(&[]);
    let c = d.client();
    d.login(&c);
    let dash = d.get(&c, "control").text().unwrap();
    assert!(
        dash.contains("Policy: off ([auto] enabled = false)"),
        "{dash}"
    );
    assert!(dash.contains("No unattended pass has run yet"), "{dash}");
    set_config(&d.site(), "auto", "enabled", "true");
    set_config(&d.site(), "auto", "allow", "\"major\"");
    let site = Site::new(d.site());
    let o = site.run(&["auto"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let dash = d.get(&c, "control").text().unwrap();
    assert!(dash.contains("Policy: on: major steps"), "{dash}");
    assert!(dash.contains("updated to release 1.1.0"), "{dash}");
    assert!(dash.contains("1.0.0 → 1.1.0"), "{dash}");
}
