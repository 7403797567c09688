//! `upkeep auto`: each decision of the [auto] policy, with the tree exactly old or new and the
//! report received by a real SMTP server on loopback.

mod common;

use std::collections::BTreeMap;

use common::smtp::{Mail, Smtp};
use common::*;

struct Case {
    w: World,
    srv: Option<Server>,
    site: Site,
    smtp: Option<Smtp>,
}

/// 1.0.0 installed, 1.1.0 (a minor step) published; reports go to a real SMTP server.
fn case() -> Case {
    let w = World::new();
    let d1 = w.publish("1.0.0", &[("index.html", b"v1"), ("conf.php", b"c1")]);
    w.publish("1.1.0", &[("index.html", b"v2"), ("conf.php", b"c2")]);
    let srv = w.reference();
    let site = Site::new(w.instance("site", Some(&d1), &srv.url, &[]));
    let smtp = Smtp::start();
    policy(&site, smtp.as_ref());
    Case {
        w,
        srv: Some(srv),
        site,
        smtp,
    }
}

/// Automatic minor updates, reported to ops@example.org.
fn policy(site: &Site, smtp: Option<&Smtp>) {
    set_config(&site.root, "", "name", "\"shop\"");
    set_config(&site.root, "auto", "enabled", "true");
    set_config(&site.root, "auto", "allow", "\"minor\"");
    if let Some(s) = smtp {
        set_config(&site.root, "mail", "to", "\"ops@example.org\"");
        set_config(&site.root, "mail", "from", "\"upkeep@shop.example.org\"");
        set_config(&site.root, "mail", "smtp", &format!("\"{}\"", s.url()));
    }
}

impl Case {
    /// The messages received so far (none when no SMTP server is installed here).
    fn mails(&self) -> Vec<Mail> {
        self.smtp.as_ref().map(|s| s.messages()).unwrap_or_default()
    }

    /// The one message whose subject starts with `subject`, checked for the common lines.
    fn mail(&self, subject: &str) -> Option<Mail> {
        self.smtp.as_ref()?;
        let mut found: Vec<Mail> = self
            .mails()
            .into_iter()
            .filter(|m| m.subject.starts_with(subject))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "one mail {subject:?} in {:#?}",
            self.mails()
        );
        let m = found.remove(0);
        assert_eq!(m.to, "ops@example.org");
        assert_eq!(m.from, "upkeep@shop.example.org");
        assert!(m.body.contains("site:    shop"), "{}", m.body);
        assert!(
            m.body.lines().all(|l| l.chars().count() < 400),
            "short lines"
        );
        Some(m)
    }
}

fn auto(site: &Site, code: i32) -> String {
    let o = site.run(&["auto"]);
    assert_eq!(o.status.code(), Some(code), "{}{}", stdout(&o), stderr(&o));
    format!("{}{}", stdout(&o), stderr(&o))
}

fn index(site: &Site) -> String {
    std::fs::read_to_string(site.root.join("index.html")).unwrap()
}

/// The live tree: everything but upkeep's own folders and its configuration.
fn live(root: &std::path::Path) -> BTreeMap<String, String> {
    snapshot(root)
        .into_iter()
        .filter(|(k, _)| !k.starts_with("staging") && k != "upkeep.toml")
        .collect()
}

#[test]
fn an_allowed_release_is_staged_and_applied_and_reported() {
    let c = case();
    let out = auto(&c.site, 0);
    assert!(out.contains("UPDATED: updated to release 1.1.0"), "{out}");
    assert_eq!(index(&c.site), "v2");
    let st = c.site.status_json();
    assert_eq!(st["installed"], "1.1.0");
    assert_eq!(st["last_auto"]["decision"], "updated");
    assert!(
        st["policy"]
            .as_str()
            .unwrap()
            .starts_with("on: minor steps")
    );
    if let Some(m) = c.mail("[upkeep] SUCCESS shop: 1.0.0 -> 1.1.0") {
        assert!(
            out.contains("mail: 1 report sent to ops@example.org"),
            "{out}"
        );
        for line in [
            "SUCCESS: updated to release 1.1.0",
            "files: 0 added, 2 replaced, 0 removed",
            "closed: ",
            "to undo: upkeep rollback --root",
        ] {
            assert!(m.body.contains(line), "{line:?} in\n{}", m.body);
        }
    }
    // The next pass has nothing to do, and on-change sends nothing about it.
    let out = auto(&c.site, 0);
    assert!(
        out.contains("NOTHING TO DO: up to date with release 1.1.0"),
        "{out}"
    );
    assert!(c.mails().len() <= 1);
    // report = "always" reports it too.
    set_config(&c.site.root, "mail", "report", "\"always\"");
    auto(&c.site, 0);
    c.mail("[upkeep] UP TO DATE shop: 1.1.0");
}

/// A window that is not now: two hours ahead, one hour long.
fn window_not_now() -> String {
    use std::process::Command;
    let hour: u32 = String::from_utf8(Command::new("date").arg("+%H").output().unwrap().stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    format!("\"{:02}:00-{:02}:00\"", (hour + 2) % 24, (hour + 3) % 24)
}

#[test]
fn off_beyond_allow_and_outside_the_window_change_nothing_and_are_reported_once() {
    let c = case();
    let before = live(&c.site.root);
    set_config(&c.site.root, "auto", "enabled", "false");
    assert!(auto(&c.site, 3).contains("automatic updates are off"));
    c.mail("[upkeep] HELD shop: 1.0.0");
    set_config(&c.site.root, "auto", "enabled", "true");
    set_config(&c.site.root, "auto", "allow", "\"patch\"");
    let out = auto(&c.site, 3);
    assert!(
        out.contains("HELD: release 1.1.0 is a minor step from 1.0.0"),
        "{out}"
    );
    assert!(c.site.status_json()["staged"].is_null());
    if let Some(m) = c.mail("[upkeep] HELD shop: 1.0.0 -> 1.1.0") {
        assert!(
            m.body.contains("beyond auto.allow = \"patch\""),
            "{}",
            m.body
        );
        assert!(m.body.contains("upkeep update --root"), "{}", m.body);
    }
    set_config(&c.site.root, "auto", "allow", "\"minor\"");
    set_config(&c.site.root, "auto", "window", &window_not_now());
    set_config(&c.site.root, "auto", "stage_ahead", "true");
    let out = auto(&c.site, 3);
    assert!(out.contains("POSTPONED: outside the window"), "{out}");
    assert!(out.contains("release 1.1.0 staged ahead"), "{out}");
    // Staged ahead, so the window is spent on the swap; the live tree is untouched.
    assert_eq!(c.site.status_json()["staged"]["version"], "1.1.0");
    assert_eq!(live(&c.site.root), before);
    c.mail("[upkeep] POSTPONED shop: 1.0.0 -> 1.1.0");
    // The same postponement the next night is not news.
    let n = c.mails().len();
    auto(&c.site, 3);
    assert_eq!(c.mails().len(), n);
    assert_eq!(c.site.status_json()["passes"].as_array().unwrap().len(), 4);
}

#[test]
fn locally_modified_files_under_each_on_modified() {
    let c = case();
    std::fs::write(c.site.root.join("conf.php"), "mine").unwrap();
    let before = live(&c.site.root);
    let out = auto(&c.site, 3);
    assert!(out.contains("1 locally modified files"), "{out}");
    assert!(out.contains("modified: conf.php"), "{out}");
    assert!(
        out.contains("upkeep update --root"),
        "the command to run by hand: {out}"
    );
    assert_eq!(live(&c.site.root), before);
    if let Some(m) = c.mail("[upkeep] HELD shop: 1.0.0 -> 1.1.0") {
        assert!(
            m.body.contains("Locally modified files (1):\n  conf.php"),
            "{}",
            m.body
        );
        assert!(m.body.contains("upkeep update --root"), "{}", m.body);
    }

    let keep = Site::new(c.w.instance(
        "keep",
        Some(&c.w.path("release-1.0.0")),
        &c.srv.as_ref().unwrap().url,
        &[],
    ));
    std::fs::write(keep.root.join("conf.php"), "mine").unwrap();
    policy(&keep, None);
    set_config(&keep.root, "auto", "on_modified", "\"keep-mine\"");
    let out = auto(&keep, 0);
    assert!(
        out.contains("1 locally modified files kept as they were"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(keep.root.join("conf.php")).unwrap(),
        "mine"
    );
    assert_eq!(index(&keep), "v2");

    set_config(&c.site.root, "auto", "on_modified", "\"take-release\"");
    auto(&c.site, 0);
    assert_eq!(
        std::fs::read_to_string(c.site.root.join("conf.php")).unwrap(),
        "c2"
    );
    assert_eq!(
        std::fs::read_to_string(c.site.root.join("conf.php.bak")).unwrap(),
        "mine"
    );
    if let Some(m) = c.mail("[upkeep] SUCCESS shop: 1.0.0 -> 1.1.0") {
        assert!(
            m.body.contains("replaced, each kept as NAME.bak"),
            "{}",
            m.body
        );
    }
}

#[test]
fn a_typo_in_the_policy_is_named_and_changes_nothing() {
    let c = case();
    set_config(&c.site.root, "auto", "enabeld", "true");
    let e = auto(&c.site, 2);
    assert!(e.contains("unknown field `enabeld`"), "{e}");
    assert_eq!(index(&c.site), "v1");
    let c = case();
    for (section, key, value, says) in [
        (
            "auto",
            "window",
            "\"2am-5am\"",
            "auto.window = \"2am-5am\" is not a window",
        ),
        ("auto", "allow", "\"huge\"", "unknown variant `huge`"),
        (
            "auto.busy",
            "max_postpone",
            "\"3 weeks-ish\"",
            "is not a length of time",
        ),
        ("mail", "to", "\"ops at example\"", "is not a mail address"),
        (
            "mail",
            "smtp",
            "\"mail.example.org\"",
            "must start with smtp://",
        ),
        ("mial", "to", "\"ops@example.org\"", "unknown field `mial`"),
    ] {
        let saved = std::fs::read_to_string(c.site.root.join("upkeep.toml")).unwrap();
        set_config(&c.site.root, section, key, value);
        let e = auto(&c.site, 2);
        assert!(e.contains(says), "{section}.{key}: {e}");
        assert!(e.contains("upkeep.toml"), "names the file: {e}");
        std::fs::write(c.site.root.join("upkeep.toml"), saved).unwrap();
    }
    assert_eq!(index(&c.site), "v1");
    assert!(c.mails().is_empty(), "a broken policy sends nothing");
}

#[test]
fn a_dry_run_decides_and_changes_nothing_and_a_dead_reference_fails() {
    let mut c = case();
    let before = live(&c.site.root);
    let o = c.site.run(&["auto", "--dry-run", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let p: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(p["decision"], "updated");
    assert_eq!(p["dry_run"], true);
    assert!(c.site.status_json()["staged"].is_null());
    assert!(c.site.status_json()["last_auto"].is_null());
    assert!(c.mails().is_empty());
    drop(c.srv.take());
    let e = auto(&c.site, 1);
    assert!(e.contains("FAILED: nothing live was changed"), "{e}");
    assert!(e.contains("could not connect"), "{e}");
    assert_eq!(live(&c.site.root), before);
    assert_eq!(c.site.status_json()["last_auto"]["decision"], "failed");
    if let Some(m) = c.mail("[upkeep] FAILURE shop: 1.0.0") {
        assert!(m.body.contains("could not connect"), "{}", m.body);
        assert!(
            m.body.contains("check `reference` in upkeep.toml"),
            "{}",
            m.body
        );
    }
}

#[test]
fn a_pass_killed_mid_run_is_finished_by_the_next_pass() {
    use std::os::unix::process::ExitStatusExt;
    let c = case();
    let r = c.site.root.to_str().unwrap();
    let o = upkeep_env(
        &["auto", "--root", r],
        &[("UPKEEP_CRASH_AT", "swap:1:done")],
    );
    assert_eq!(o.status.signal(), Some(9), "{}", stderr(&o));
    assert!(
        !c.site.status_json()["current"].is_null(),
        "the run is unfinished"
    );
    let out = auto(&c.site, 0);
    assert!(
        out.contains("resumed interrupted run 1 and finished it"),
        "{out}"
    );
    assert_eq!(index(&c.site), "v2");
    assert!(c.site.status_json()["gate"].is_null());
    if let Some(m) = c.mail("[upkeep] SUCCESS shop: 1.0.0 -> 1.1.0") {
        assert!(m.body.contains("resumed interrupted run 1"), "{}", m.body);
    }
}

#[test]
fn an_interrupted_task_that_needs_an_operator_is_rolled_back_by_the_next_pass() {
    use std::os::unix::process::ExitStatusExt;
    let w = World::new();
    let d1 = w.publish("1.0.0", &[("index.html", b"v1")]);
    w.publish(
        "1.1.0",
        &[
            ("index.html", b"v2"),
            ("run_once/001-mail.sh", b"echo sent\n"),
        ],
    );
    let srv = w.reference();
    let site = Site::new(w.instance("site", Some(&d1), &srv.url, &[]));
    let smtp = Smtp::start();
    policy(&site, smtp.as_ref());
    let before = live(&site.root);
    let r = site.root.to_str().unwrap().to_string();
    // Killed after the shell task started: nobody knows whether it ran, so the next pass does
    // not run it again unattended; it rolls back and says so (exit 1).
    let o = upkeep_env(
        &["auto", "--root", &r],
        &[("UPKEEP_CRASH_AT", "run_once:1:started")],
    );
    assert_eq!(o.status.signal(), Some(9), "{}", stderr(&o));
    let out = auto(&site, 1);
    assert!(out.contains("could not be finished unattended"), "{out}");
    assert!(
        out.contains("rolled back: release 1.0.0 is live again"),
        "{out}"
    );
    assert_eq!(live(&site.root), before);
    assert!(site.status_json()["gate"].is_null());
    let c = Case {
        w,
        srv: Some(srv),
        site,
        smtp,
    };
    c.mail("[upkeep] FAILURE shop: 1.0.0 -> 1.1.0");
}

#[test]
fn a_failing_task_is_rolled_back_in_the_same_pass() {
    let w = World::new();
    let d1 = w.publish("1.0.0", &[("index.html", b"v1")]);
    w.publish(
        "1.1.0",
        &[
            ("index.html", b"v2"),
            (
                "run_once/001-migrate.sh",
                b"echo cannot migrate >&2; exit 4\n",
            ),
        ],
    );
    let srv = w.reference();
    let site = Site::new(w.instance("site", Some(&d1), &srv.url, &[]));
    let smtp = Smtp::start();
    policy(&site, smtp.as_ref());
    let before = live(&site.root);
    let out = auto(&site, 1);
    assert!(
        out.contains("ROLLED BACK: run 1 failed at step run_once"),
        "{out}"
    );
    assert_eq!(live(&site.root), before, "not left closed and half updated");
    assert!(site.status_json()["gate"].is_null());
    let c = Case {
        w,
        srv: Some(srv),
        site,
        smtp,
    };
    if let Some(m) = c.mail("[upkeep] FAILURE shop: 1.0.0 -> 1.1.0") {
        assert!(m.body.contains("cannot migrate"), "{}", m.body);
    }
}

#[test]
fn webhooks_get_the_pass_signed_and_one_refused_goes_with_the_next_pass() {
    let c = case();
    // A receiver down for its first request, and a second hook that takes everything.
    let (down, up) = (
        common::webhook::Receiver::start(1),
        common::webhook::Receiver::start(0),
    );
    let secret = c.w.path("hook.secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let toml = c.site.root.join("upkeep.toml");
    let mut text = std::fs::read_to_string(&toml).unwrap();
    text.push_str(&format!(
        "\n[[notify]]\nurl = \"{}\"\nsecret_file = \"{}\"\n\n[[notify]]\nurl = \"{}\"\nreport = \"always\"\n",
        down.url,
        secret.display(),
        up.url
    ));
    std::fs::write(&toml, text).unwrap();

    let out = auto(&c.site, 0);
    assert!(out.contains("UPDATED"), "{out}");
    assert!(
        out.contains("webhooks: 1 sent;")
            && out.contains(&format!("{}: the receiver answered 503", down.url))
            && out.contains("waiting in state.db for the next pass"),
        "{out}"
    );
    assert_eq!(down.received().len(), 0);
    assert_eq!(up.received().len(), 1);

    // The next pass has nothing to do: on-change queues nothing, but the waiting one goes.
    let out = auto(&c.site, 0);
    assert!(out.contains("NOTHING TO DO"), "{out}");
    let got = down.received();
    assert_eq!(got.len(), 1, "{out}");
    let body = got[0]["body"].as_str().unwrap();
    let event: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(event["event"], "pass");
    assert_eq!(event["site"], "shop");
    assert_eq!(event["pass"]["decision"], "updated");
    assert_eq!(event["pass"]["to"], "1.1.0");
    assert_eq!(event["text"], "[upkeep] SUCCESS shop: 1.0.0 -> 1.1.0");
    assert_eq!(
        got[0]["headers"]["x-upkeep-signature-256"],
        upkeep::client::webhook::sign(b"s3cret", body.as_bytes()),
        "signed with the secret, over the exact body"
    );
    // report = "always": the second hook had both passes, unsigned.
    let all = up.received();
    assert_eq!(all.len(), 2);
    assert!(all[1]["headers"]["x-upkeep-signature-256"].is_null());
    let second: serde_json::Value = serde_json::from_str(all[1]["body"].as_str().unwrap()).unwrap();
    assert_eq!(second["pass"]["decision"], "nothing");

    // A secret others can read is refused, and the delivery waits.
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = std::fs::read_to_string(&toml)
        .unwrap()
        .replace("hook.secret\"\n", "hook.secret\"\nreport = \"always\"\n");
    std::fs::write(&toml, text).unwrap();
    let out = auto(&c.site, 0);
    assert!(
        out.contains("hook.secret: the webhook secret is readable by others"),
        "{out}"
    );
    assert_eq!(down.received().len(), 1, "nothing unsigned went out");
}
