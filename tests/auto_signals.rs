//! `upkeep auto` around the edges: each busy signal (a command, a real HTTP endpoint, a real
//! combined-format access log) and `max_postpone`; an SMTP server down, refusing or silent
//! (the update goes on, the report waits and goes later); two passes at once; `upkeep schedule`
//! checked by systemd's own verifier.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};

use common::smtp::{Silent, Smtp, free_port};
use common::*;

/// 1.0.0 installed, 1.1.0 published, automatic minor updates.
fn setup() -> (World, Server, Site) {
    let w = World::new();
    let d1 = w.publish("1.0.0", &[("index.html", b"v1")]);
    w.publish("1.1.0", &[("index.html", b"v2")]);
    let srv = w.reference();
    let site = Site::new(w.instance("site", Some(&d1), &srv.url, &[]));
    set_config(&site.root, "", "name", "\"blog\"");
    set_config(&site.root, "auto", "enabled", "true");
    set_config(&site.root, "auto", "allow", "\"minor\"");
    (w, srv, site)
}

fn auto(site: &Site, code: i32) -> String {
    let o = site.run(&["auto"]);
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(code), "{out}");
    out
}

fn index(site: &Site) -> String {
    std::fs::read_to_string(site.root.join("index.html")).unwrap()
}

fn live(root: &std::path::Path) -> BTreeMap<String, String> {
    snapshot(root)
        .into_iter()
        .filter(|(k, _)| !k.starts_with("staging") && k != "upkeep.toml")
        .collect()
}

fn mail_to(site: &Site, url: &str) {
    set_config(&site.root, "mail", "to", "\"ops@example.org\"");
    set_config(&site.root, "mail", "smtp", &format!("\"{url}\""));
}

#[test]
fn a_busy_command_postpones_until_it_says_idle() {
    let (w, _srv, site) = setup();
    let smtp = Smtp::start();
    if let Some(s) = &smtp {
        mail_to(&site, &s.url());
    }
    let call = w.path("video-call-running");
    std::fs::write(&call, "").unwrap();
    set_config(
        &site.root,
        "auto.busy",
        "command",
        &format!("\"test -e {}\"", call.display()),
    );
    let before = live(&site.root);
    let out = auto(&site, 3);
    assert!(
        out.contains("POSTPONED: the site is busy (`test -e "),
        "{out}"
    );
    assert!(out.contains("exited 0: busy"), "{out}");
    assert_eq!(live(&site.root), before);
    if let Some(s) = &smtp {
        let m = s.messages();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].subject, "[upkeep] POSTPONED blog: 1.0.0 -> 1.1.0");
        assert!(m[0].body.contains("exited 0: busy"), "{}", m[0].body);
    }
    std::fs::remove_file(&call).unwrap();
    let out = auto(&site, 0);
    assert!(out.contains("busy signal: `test -e "), "{out}");
    assert!(out.contains("exited 1: idle"), "{out}");
    assert_eq!(index(&site), "v2");
    if let Some(s) = &smtp {
        let m = s.messages();
        assert_eq!(m.len(), 2);
        assert!(
            m.iter()
                .any(|m| m.subject == "[upkeep] SUCCESS blog: 1.0.0 -> 1.1.0")
        );
    }
}

/// Python's http.server over a folder: a real endpoint whose answer the test changes.
struct Http(Child, u16);

impl Drop for Http {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_server(dir: &std::path::Path) -> Http {
    let port = free_port();
    let h = Http(
        Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
            ])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        port,
    );
    assert!(wait_port(port), "http.server did not listen");
    h
}

#[test]
fn a_busy_url_postpones_and_an_unreachable_one_counts_as_busy() {
    let (w, _srv, site) = setup();
    let smtp = Smtp::start();
    if let Some(s) = &smtp {
        mail_to(&site, &s.url());
    }
    let before = live(&site.root);
    let dir = w.path("status");
    std::fs::create_dir_all(&dir).unwrap();
    let http = http_server(&dir);
    // Nobody listens here: the signal cannot be read, so it counts as busy.
    let dead = free_port();
    set_config(
        &site.root,
        "auto.busy",
        "url",
        &format!("\"http://127.0.0.1:{dead}/active.json\""),
    );
    let out = auto(&site, 3);
    assert!(out.contains("no answer"), "{out}");
    assert!(out.contains("counted as busy"), "{out}");
    set_config(
        &site.root,
        "auto.busy",
        "url",
        &format!("\"http://127.0.0.1:{}/active.json\"", http.1),
    );
    std::fs::write(dir.join("active.json"), r#"{"active": 2}"#).unwrap();
    let out = auto(&site, 3);
    assert!(out.contains("/active.json: 2 active: busy"), "{out}");
    assert_eq!(live(&site.root), before);
    if let Some(s) = &smtp {
        // Postponed twice, for different reasons: each is news once.
        let m = s.messages();
        assert_eq!(m.len(), 2, "{m:#?}");
        assert!(
            m.iter()
                .all(|m| m.subject == "[upkeep] POSTPONED blog: 1.0.0 -> 1.1.0")
        );
        assert!(m.iter().any(|m| m.body.contains("2 active: busy")));
    }
    std::fs::write(dir.join("active.json"), r#"{"active": 0, "rooms": []}"#).unwrap();
    let out = auto(&site, 0);
    assert!(out.contains("0 active: idle"), "{out}");
    assert_eq!(index(&site), "v2");
}

/// An nginx "combined" log line at `secs_ago`.
fn log_line(secs_ago: u64) -> String {
    let stamp = Command::new("date")
        .env("LC_ALL", "C")
        .args([
            "-d",
            &format!("@{}", now() - secs_ago),
            "+%d/%b/%Y:%H:%M:%S %z",
        ])
        .output()
        .unwrap();
    let stamp = String::from_utf8(stamp.stdout).unwrap();
    format!(
        "203.0.113.9 - - [{}] \"GET /shop/cart HTTP/1.1\" 200 5120 \"https://example.org/\" \"Mozilla/5.0 (X11; Linux x86_64)\"\n",
        stamp.trim()
    )
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn a_recent_request_in_the_access_log_postpones_and_a_quiet_log_lets_it_go() {
    let (w, _srv, site) = setup();
    let smtp = Smtp::start();
    if let Some(s) = &smtp {
        mail_to(&site, &s.url());
    }
    let before = live(&site.root);
    let log = w.path("access.log");
    std::fs::write(&log, format!("{}{}", log_line(3600), log_line(20))).unwrap();
    set_config(
        &site.root,
        "auto.busy",
        "access_log",
        &format!("\"{}\"", log.display()),
    );
    set_config(&site.root, "auto.busy", "idle_seconds", "300");
    let out = auto(&site, 3);
    assert!(out.contains("POSTPONED: the site is busy"), "{out}");
    assert!(out.contains("busy: under 300 s of quiet"), "{out}");
    assert_eq!(live(&site.root), before);
    if let Some(s) = &smtp {
        let m = s.messages();
        assert_eq!(m[0].subject, "[upkeep] POSTPONED blog: 1.0.0 -> 1.1.0");
        assert!(
            m[0].body.contains("access.log: last request"),
            "{}",
            m[0].body
        );
    }
    std::fs::write(&log, format!("{}{}", log_line(3600), log_line(900))).unwrap();
    let out = auto(&site, 0);
    assert!(out.contains("idle: not under 300 s of quiet"), "{out}");
    assert_eq!(index(&site), "v2");
    if let Some(s) = &smtp {
        let m = s.messages();
        assert_eq!(m.len(), 2);
        assert!(
            m.iter()
                .any(|m| m.subject == "[upkeep] SUCCESS blog: 1.0.0 -> 1.1.0")
        );
    }
}

#[test]
fn a_site_busy_beyond_max_postpone_is_updated_anyway_and_says_so() {
    let (_w, _srv, site) = setup();
    set_config(&site.root, "auto.busy", "command", "\"true\"");
    set_config(&site.root, "auto.busy", "max_postpone", "\"1h\"");
    let out = auto(&site, 3);
    assert!(
        out.contains("after 1 h of postponing it goes ahead anyway"),
        "{out}"
    );
    set_config(&site.root, "auto.busy", "max_postpone", "\"0s\"");
    let out = auto(&site, 0);
    assert!(out.contains("UPDATED: updated to release 1.1.0"), "{out}");
    assert!(
        out.contains("visitors are active (`true` exited 0: busy), but release 1.1.0 has waited"),
        "{out}"
    );
    assert!(out.contains("max_postpone = 0 s: going ahead"), "{out}");
    assert_eq!(index(&site), "v2");
}

#[test]
fn an_smtp_server_down_refusing_or_silent_never_stops_the_update_and_the_report_goes_later() {
    let (w, _srv, site) = setup();
    // Down: nobody on the port.
    let port = free_port();
    mail_to(&site, &format!("smtp://127.0.0.1:{port}"));
    let out = auto(&site, 0);
    assert_eq!(index(&site), "v2", "the update does not depend on mail");
    assert!(
        out.contains("mail: 1 of 1 reports not sent") && out.contains("go with the next pass"),
        "{out}"
    );
    assert_eq!(site.status_json()["mail_waiting"], 1);
    // The server comes back: the next pass (nothing to do, nothing new to report) sends it.
    let Some(smtp) = Smtp::start_on(port, false) else {
        return;
    };
    let out = auto(&site, 0);
    assert!(
        out.contains("mail: 1 report sent to ops@example.org"),
        "{out}"
    );
    let m = smtp.messages();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].subject, "[upkeep] SUCCESS blog: 1.0.0 -> 1.1.0");
    assert!(
        m[0].body.starts_with("(This report waited since "),
        "{}",
        m[0].body
    );
    assert_eq!(site.status_json()["mail_waiting"], 0);
    drop(smtp);

    // Refusing: the server's answer is told, and the report waits.
    w.publish("1.1.1", &[("index.html", b"v3")]);
    let refusing = Smtp::start_refusing().unwrap();
    mail_to(&site, &refusing.url());
    let out = auto(&site, 0);
    assert_eq!(index(&site), "v3");
    assert!(out.contains("relaying denied"), "{out}");
    assert_eq!(site.status_json()["mail_waiting"], 1);

    // Silent: a server that never greets is given up after mail.timeout.
    w.publish("1.1.2", &[("index.html", b"v4")]);
    let silent = Silent::start();
    mail_to(&site, &format!("smtp://127.0.0.1:{}", silent.port));
    set_config(&site.root, "mail", "timeout", "\"1s\"");
    let t = std::time::Instant::now();
    let out = auto(&site, 0);
    assert!(t.elapsed().as_secs() < 30, "bounded by the timeout");
    assert_eq!(index(&site), "v4");
    assert!(out.contains("reports not sent"), "{out}");
    assert_eq!(site.status_json()["mail_waiting"], 2);
}

#[test]
fn two_passes_at_once_the_second_exits_75_and_changes_nothing() {
    let (w, _srv, site) = setup();
    // The first pass waits inside its busy probe until the test lets it go.
    let fifo = w.path("gate.fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    set_config(
        &site.root,
        "auto.busy",
        "command",
        &format!("\"read x < {}; exit 1\"", fifo.display()),
    );
    let first = Command::new(BIN)
        .args(["auto", "--root", site.root.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lock = site.root.join(".upkeep/auto.lock");
    let mut held = false;
    for _ in 0..1000 {
        if std::fs::read_to_string(&lock).is_ok_and(|s| s.starts_with("auto pid")) {
            held = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(held, "the first pass took its lock");
    let o = site.run(&["auto"]);
    assert_eq!(o.status.code(), Some(75), "{}", stderr(&o));
    assert!(stderr(&o).contains("auto pid"), "{}", stderr(&o));
    assert_eq!(index(&site), "v1");
    // Let the first pass go on: it updates.
    std::fs::write(&fifo, "go\n").unwrap();
    let o = first.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert_eq!(index(&site), "v2");
}

#[test]
fn schedule_prints_and_installs_units_that_systemd_accepts() {
    let (w, _srv, site) = setup();
    let o = site.run(&["schedule", "--at", "02:30", "--random-delay", "45m"]);
    let out = ok(o);
    for line in [
        "OnCalendar=*-*-* 02:30:00",
        "RandomizedDelaySec=2700",
        "Persistent=true",
        "SuccessExitStatus=3",
        "WantedBy=timers.target",
    ] {
        assert!(out.contains(line), "{line}: {out}");
    }
    let exec = format!("ExecStart={BIN} auto --root {}", site.root.display());
    assert!(out.contains(&exec), "{out}");
    // The crontab line: the same command at 02:30 plus a fixed offset under 45 minutes.
    let cron = out.lines().last().unwrap();
    let f: Vec<&str> = cron.split_whitespace().collect();
    let (m, h): (u32, u32) = (f[0].parse().unwrap(), f[1].parse().unwrap());
    assert!((150..195).contains(&(h * 60 + m)), "{cron}");
    assert!(
        cron.ends_with(&format!("auto --root {}", site.root.display())),
        "{cron}"
    );

    let units = w.path("units");
    let out = ok(site.run(&[
        "schedule",
        "--install",
        "--unit-dir",
        units.to_str().unwrap(),
    ]));
    assert!(out.contains("systemctl daemon-reload"), "{out}");
    let mut files = list_files(&units);
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files[0].ends_with(".service") && files[1].ends_with(".timer"));
    // Without --at, the start of the window.
    set_config(&site.root, "auto", "window", "\"01:15-04:00\"");
    let out = ok(site.run(&["schedule", "--json"]));
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["at"], "01:15");

    let bad = site.run(&["schedule", "--at", "25:00"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("not a time of day"),
        "{}",
        stderr(&bad)
    );

    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is missing on CI"
        );
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    }
    let paths: Vec<_> = files.iter().map(|f| units.join(f)).collect();
    let v = Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .output()
        .unwrap();
    assert!(
        v.status.success(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
}
