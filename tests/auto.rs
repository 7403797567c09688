//! `upkeep auto`: each decision of the [auto] policy, with the tree exactly old or new.

mod common;

use common::*;

struct Case {
    w: World,
    srv: Server,
    site: Site,
}

/// 1.0.0 installed, 1.1.0 (a minor step) published.
fn case() -> Case {
    let w = World::new();
    let d1 = w.publish("1.0.0", &[("index.html", b"v1"), ("conf.php", b"c1")]);
    w.publish("1.1.0", &[("index.html", b"v2"), ("conf.php", b"c2")]);
    let srv = w.reference();
    let site = Site::new(w.instance("site", Some(&d1), &srv.url, &[]));
    set_config(&site.root, "auto", "enabled", "true");
    set_config(&site.root, "auto", "allow", "\"minor\"");
    Case { w, srv, site }
}

fn auto(site: &Site, code: i32) -> String {
    let o = site.run(&["auto"]);
    assert_eq!(o.status.code(), Some(code), "{}{}", stdout(&o), stderr(&o));
    format!("{}{}", stdout(&o), stderr(&o))
}

fn index(site: &Site) -> String {
    std::fs::read_to_string(site.root.join("index.html")).unwrap()
}

#[test]
fn an_allowed_release_is_staged_and_applied_and_the_pass_recorded() {
    let c = case();
    let out = auto(&c.site, 0);
    assert!(out.contains("UPDATED: updated to release 1.1.0"), "{out}");
    assert_eq!(index(&c.site), "v2");
    let st = c.site.status_json();
    assert_eq!(st["installed"], "1.1.0");
    assert_eq!(st["last_auto"]["decision"], "updated");
    // The next pass has nothing to do.
    let out = auto(&c.site, 0);
    assert!(
        out.contains("NOTHING: up to date with release 1.1.0"),
        "{out}"
    );
}

#[test]
fn off_beyond_allow_and_outside_the_window_change_nothing() {
    let c = case();
    let before = snapshot(&c.site.root);
    set_config(&c.site.root, "auto", "enabled", "false");
    assert!(auto(&c.site, 3).contains("automatic updates are off"));
    set_config(&c.site.root, "auto", "enabled", "true");
    set_config(&c.site.root, "auto", "allow", "\"patch\"");
    let out = auto(&c.site, 3);
    assert!(
        out.contains("HELD: release 1.1.0 is a minor step from 1.0.0"),
        "{out}"
    );
    assert!(c.site.status_json()["staged"].is_null());
    set_config(&c.site.root, "auto", "allow", "\"minor\"");
    // A window that is not now: two hours ahead, one hour long.
    let hour: u32 = String::from_utf8(
        std::process::Command::new("date")
            .arg("+%H")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    let window = format!("\"{:02}:00-{:02}:00\"", (hour + 2) % 24, (hour + 3) % 24);
    set_config(&c.site.root, "auto", "window", &window);
    set_config(&c.site.root, "auto", "stage_ahead", "true");
    let out = auto(&c.site, 3);
    assert!(out.contains("POSTPONED: outside the window"), "{out}");
    // Staged ahead, so the window is spent on the swap; the live tree is untouched.
    assert_eq!(c.site.status_json()["staged"]["version"], "1.1.0");
    let live = |m: std::collections::BTreeMap<String, String>| {
        m.into_iter()
            .filter(|(k, _)| {
                !k.starts_with(".upkeep") && !k.starts_with("staging") && k != "upkeep.toml"
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(live(snapshot(&c.site.root)), live(before));
}

#[test]
fn locally_modified_files_under_each_on_modified() {
    let c = case();
    std::fs::write(c.site.root.join("conf.php"), "mine").unwrap();
    let out = auto(&c.site, 3);
    assert!(out.contains("1 locally modified files"), "{out}");
    assert!(out.contains("modified: conf.php"), "{out}");
    assert!(
        out.contains("upkeep update --root"),
        "the command to run by hand: {out}"
    );
    assert_eq!(index(&c.site), "v1");

    let keep = Site::new(c.w.instance("keep", Some(&c.w.path("release-1.0.0")), &c.srv.url, &[]));
    std::fs::write(keep.root.join("conf.php"), "mine").unwrap();
    set_config(&keep.root, "auto", "enabled", "true");
    set_config(&keep.root, "auto", "allow", "\"minor\"");
    set_config(&keep.root, "auto", "on_modified", "\"keep-mine\"");
    auto(&keep, 0);
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
}

#[test]
fn a_typo_in_the_policy_is_named_and_changes_nothing() {
    let c = case();
    set_config(&c.site.root, "auto", "enabeld", "true");
    let e = auto(&c.site, 2);
    assert!(e.contains("unknown field `enabeld`"), "{e}");
    assert_eq!(index(&c.site), "v1");
    let c = case();
    set_config(&c.site.root, "auto", "window", "\"2am-5am\"");
    let e = auto(&c.site, 2);
    assert!(
        e.contains("auto.window = \"2am-5am\" is not a window"),
        "{e}"
    );
    assert_eq!(index(&c.site), "v1");
}

#[test]
fn a_dry_run_decides_and_changes_nothing_and_a_dead_reference_fails() {
    let c = case();
    let before = snapshot(&c.site.root);
    let o = c.site.run(&["auto", "--dry-run", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let p: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(p["decision"], "updated");
    assert_eq!(p["dry_run"], true);
    assert!(c.site.status_json()["staged"].is_null());
    assert!(c.site.status_json()["last_auto"].is_null());
    drop(c.srv);
    let e = auto(&c.site, 1);
    assert!(e.contains("hint:"), "{e}");
    let after = snapshot(&c.site.root);
    let live = |m: &std::collections::BTreeMap<String, String>| {
        m.iter()
            .filter(|(k, _)| !k.starts_with(".upkeep"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(live(&after), live(&before));
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
    set_config(&site.root, "auto", "enabled", "true");
    set_config(&site.root, "auto", "allow", "\"minor\"");
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
    assert_eq!(index(&site), "v1");
    assert!(site.status_json()["gate"].is_null());
    drop(srv);
}
