//! The update wizard in real headless Chromium, driven through WebDriver (Debian's chromium and
//! chromium-driver, installed by .ci/run): log in, check, stage, review, apply, see the site
//! serve the new release; then the same through an interruption. A screenshot of each page is
//! saved under target/screenshots/.

mod common;
use common::panel::*;
use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use std::time::Duration;

struct Driver {
    child: std::process::Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromedriver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect(
            "chromedriver is installed (apt-get install chromium chromium-driver; .ci/run does it)",
        );
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Driver {
                child,
                url: format!("http://127.0.0.1:{port}"),
            };
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("chromedriver did not start");
}

async fn browser(d: &Driver, profile: &std::path::Path) -> Client {
    let caps = serde_json::json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1100,900",
                     format!("--user-data-dir={}", profile.display())]
        }
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&d.url)
        .await
        .expect("a WebDriver session")
}

struct Shots {
    dir: std::path::PathBuf,
    n: usize,
}

impl Shots {
    fn new(name: &str) -> Shots {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/screenshots")
            .join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Shots { dir, n: 0 }
    }
    async fn take(&mut self, c: &Client, name: &str) {
        self.n += 1;
        let png = c.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        std::fs::write(self.dir.join(format!("{:02}-{name}.png", self.n)), png).unwrap();
    }
}

const WAIT: Duration = Duration::from_secs(30);

async fn click_text(c: &Client, tag: &str, text: &str) {
    let x = format!("//{tag}[normalize-space(text())='{text}']");
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::XPath(&x))
        .await
        .unwrap_or_else(|e| panic!("no {tag} {text:?}: {e}"))
        .click()
        .await
        .unwrap();
}

async fn wait_text(c: &Client, text: &str) {
    let x = format!(
        "//*[contains(normalize-space(.), \"{text}\") and not(self::html) and not(self::body) and not(self::main)]"
    );
    if let Err(e) = c.wait().at_most(WAIT).for_element(Locator::XPath(&x)).await {
        panic!(
            "{text:?} did not appear: {e}\n{}",
            c.source().await.unwrap_or_default()
        );
    }
}

async fn login(c: &Client, url: &str, password: &str) {
    c.goto(&format!("{url}control")).await.unwrap();
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Id("name"))
        .await
        .unwrap()
        .send_keys("admin")
        .await
        .unwrap();
    c.find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(password)
        .await
        .unwrap();
    click_text(c, "button", "Log in").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_update_in_chromium() {
    let driver = chromedriver();
    let d = Demo::start(&[]);
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, profile.path()).await;
    let mut shots = Shots::new("update");
    c.goto(&format!("{}control", d.url)).await.unwrap();
    shots.take(&c, "login").await;
    login(&c, &d.url, &d.password).await;
    wait_text(&c, "Installed").await;
    shots.take(&c, "dashboard").await;
    click_text(&c, "button", "Check now").await;
    click_text(&c, "a", "See what changed").await;
    wait_text(&c, "locally modified").await;
    shots.take(&c, "check").await;
    click_text(&c, "a", "Next: stage the files").await;
    wait_text(&c, "From the reference server").await;
    shots.take(&c, "stage").await;
    click_text(&c, "button", "Download").await;
    wait_text(&c, "Release 1.1.0 is staged").await;
    shots.take(&c, "staged").await;
    click_text(&c, "a", "Next: review the update").await;
    wait_text(&c, "2 to add, 4 to replace, 1 to remove").await;
    shots.take(&c, "review").await;
    click_text(&c, "button", "Apply the update").await;
    wait_text(&c, "The update is done").await;
    shots.take(&c, "done").await;
    click_text(&c, "a", "Open the site").await;
    wait_text(&c, "Release 1.1.0").await;
    shots.take(&c, "site").await;
    assert!(c.source().await.unwrap().contains("now pastries all day"));
    c.close().await.unwrap();
    assert_eq!(
        std::fs::read_dir(&shots.dir).unwrap().count(),
        8,
        "one screenshot per page"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staging_interrupted_then_resumed_in_a_new_browser() {
    let driver = chromedriver();
    // The server dies once every file is downloaded, before the staging is recorded.
    let mut d = Demo::start(&[("UPKEEP_CRASH_AT", "stage:filled")]);
    let mut shots = Shots::new("interrupted");
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, profile.path()).await;
    login(&c, &d.url, &d.password).await;
    wait_text(&c, "Installed").await;
    c.goto(&format!("{}control/stage", d.url)).await.unwrap();
    click_text(&c, "button", "Download").await;
    assert!(
        !d.server.child.wait().unwrap().success(),
        "the server died while staging"
    );
    // The operator closes the browser.
    c.close().await.unwrap();

    // The server comes back (and its reference server with it, on the same address).
    let site = d.site();
    let cfg: toml::Table =
        toml::from_str(&std::fs::read_to_string(site.join("upkeep.toml")).unwrap()).unwrap();
    let ref_addr = cfg["reference"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let (_reference, _) = spawn_with_banner({
        let mut c = std::process::Command::new(BIN);
        c.args([
            "reference",
            "--repo",
            d.dir.path().join("repo").to_str().unwrap(),
            "--listen",
            &ref_addr,
        ]);
        c
    });
    let (server, _) = spawn_with_banner({
        let mut c = std::process::Command::new(BIN);
        c.args([
            "serve",
            "--root",
            site.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ]);
        c
    });
    d.url = server.url.clone();
    d.server = server;

    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, profile.path()).await;
    login(&c, &d.url, &d.password).await;
    wait_text(&c, "Installed").await;
    shots.take(&c, "back").await;
    c.goto(&format!("{}control/stage", d.url)).await.unwrap();
    click_text(&c, "button", "Download").await;
    wait_text(&c, "(6 already there)").await;
    shots.take(&c, "resumed").await;
    click_text(&c, "a", "Next: review the update").await;
    click_text(&c, "button", "Apply the update").await;
    wait_text(&c, "The update is done").await;
    shots.take(&c, "done").await;
    c.goto(&d.url).await.unwrap();
    wait_text(&c, "Release 1.1.0").await;
    c.close().await.unwrap();
}

/// `upkeep fleet user add NAME` with the password on standard input.
fn fleet_user(repo: &std::path::Path, name: &str, password: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new(BIN)
        .args([
            "fleet",
            "user",
            "add",
            name,
            "--repo",
            repo.to_str().unwrap(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_page_shows_the_rollout_and_halts_it_in_chromium() {
    let w = World::new();
    w.publish("1.0.0", &[("index.html", b"v1")]);
    w.publish("1.1.0", &[("index.html", b"v2")]);
    let repo = w.repo.to_str().unwrap().to_string();
    let online = w.online_key();
    let srv = spawn_server(&["reference", "--repo", &repo, "--online-key", &online]);
    let token = ok(upkeep(&["fleet", "token", "--repo", &repo, "--uses", "2"]))
        .trim()
        .to_string();
    let mk = |name: &str, group: &[&str]| {
        let mut extra = vec!["--name", name, "--enroll", &token];
        extra.extend_from_slice(group);
        let s = Site::new(w.instance(name, Some(&w.path("release-1.0.0")), &srv.url, &extra));
        set_config(&s.root, "auto", "enabled", "true");
        set_config(&s.root, "auto", "allow", "\"minor\"");
        s
    };
    let tester = mk("tester", &["--group", "test"]);
    let shop = mk("shop", &[]);
    ok(w.promote(
        "1.1.0",
        "stable",
        &["--waves", "test,100%", "--every", "24h"],
    ));
    assert!(stdout(&tester.run(&["auto"])).contains("UPDATED"));
    assert!(stdout(&shop.run(&["auto"])).contains("NOTHING"));
    fleet_user(&w.repo, "publisher", "correct horse battery");

    // Without a session, with a wrong password, or without the form's token, nothing changes.
    let base = srv.url.trim_end_matches('/').to_string();
    tokio::task::block_in_place(|| {
        let http = reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let r = http.get(format!("{base}/fleet")).send().unwrap();
        assert_eq!(r.status().as_u16(), 303);
        let r = http
            .post(format!("{base}/fleet/login"))
            .header("origin", &base)
            .form(&[("name", "publisher"), ("password", "wrong password!")])
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
        let r = http
            .post(format!("{base}/fleet/rollout"))
            .header("origin", &base)
            .form(&[("channel", "stable"), ("action", "halt")])
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 303, "no session: to the login page");
    });

    let d = chromedriver();
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&d, profile.path()).await;
    let mut shots = Shots::new("fleet");
    c.goto(&format!("{base}/fleet")).await.unwrap();
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Id("name"))
        .await
        .unwrap()
        .send_keys("publisher")
        .await
        .unwrap();
    c.find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys("correct horse battery")
        .await
        .unwrap();
    click_text(&c, "button", "Log in").await;
    wait_text(&c, "Channel stable: release 1.1.0").await;
    wait_text(&c, "2 enrolled sites").await;
    let src = c.source().await.unwrap();
    assert!(src.contains("wave 1 of 2"), "{src}");
    assert!(
        src.contains(">tester</a></td>") && src.contains(">shop</a></td>"),
        "{src}"
    );
    assert!(
        src.contains("value=\"1\" max=\"1\""),
        "the test wave is done: {src}"
    );
    shots.take(&c, "rollout").await;

    c.find(Locator::Id("reason-stable"))
        .await
        .unwrap()
        .send_keys("checkout broken on 1.1.0")
        .await
        .unwrap();
    click_text(&c, "button", "Halt").await;
    wait_text(&c, "checkout broken on 1.1.0 (halted by publisher)").await;
    shots.take(&c, "halted").await;
    // A site's timeline: every report it sent, newest first.
    c.find(Locator::LinkText("tester"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&c, "History (2 reports)").await;
    let src = c.source().await.unwrap();
    assert!(
        src.contains("updated") && src.contains("installing") && src.contains("1.0.0 → 1.1.0"),
        "{src}"
    );
    shots.take(&c, "site").await;
    // A new channel promoted from the page, as `upkeep promote` would.
    c.goto(&format!("{base}/fleet")).await.unwrap();
    for (id, value) in [("promote-channel", "beta"), ("promote-waves", "100%")] {
        let e = c.find(Locator::Id(id)).await.unwrap();
        e.clear().await.unwrap();
        e.send_keys(value).await.unwrap();
    }
    click_text(&c, "button", "Promote").await;
    wait_text(&c, "Channel beta: release 1.1.0").await;
    c.close().await.unwrap();
    let st: serde_json::Value = serde_json::from_str(&ok(upkeep(&[
        "rollout",
        "status",
        "--channel",
        "stable",
        "--repo",
        &repo,
        "--json",
    ])))
    .unwrap();
    assert_eq!(st["state"], "halted");
    // The halt reaches the sites: the shop is held on 1.0.0 and says why.
    let out = stdout(&shop.run(&["check"]));
    assert!(
        out.contains("halted (checkout broken on 1.1.0 (halted by publisher))"),
        "{out}"
    );
}
