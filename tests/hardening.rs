//! What an adversarial test of the single-site spine broke, class by class (issue 10): each
//! test here failed before its fix.

mod common;

use std::path::Path;

use common::*;

/// Release 1.0.0 installed from `v1`, release 1.1.0 (`v2`) published, a reference serving both.
struct Story {
    w: World,
    _srv: Server,
    site: Site,
}

fn story(v1: &[(&str, &[u8])], v2: &[(&str, &[u8])]) -> Story {
    let w = World::new();
    let d1 = w.publish("1.0.0", v1);
    w.publish("1.1.0", v2);
    let srv = w.reference();
    let root = w.instance("site", Some(&d1), &srv.url, &[]);
    Story {
        w,
        _srv: srv,
        site: Site::new(root),
    }
}

impl Story {
    fn stage_next(&self) {
        self.site.stage_archive(&self.w.zip("1.1.0"));
    }
}

/// A process that still runs (a zombie waiting for init to reap it has stopped running).
fn alive(pid: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) else {
        return false;
    };
    // The state letter follows the command name in parentheses.
    let state = stat.rsplit(')').next().unwrap_or("").trim_start();
    !(state.starts_with('Z') || state.starts_with('X'))
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

// Class 3: a task's timeout bounds the task and everything it started.

#[test]
fn a_background_child_of_a_task_is_stopped_when_the_task_ends() {
    let s = story(
        &[("index.html", b"v1")],
        &[
            ("index.html", b"v2"),
            (
                "run_once/001-bg.sh",
                b"(sleep 30) &\necho $! > bg.pid\necho started\n",
            ),
        ],
    );
    set_config(&s.site.root, "tasks", "timeout_secs", "20");
    s.stage_next();
    s.site.update_yes();
    let pid = read(&s.site.root.join("bg.pid"));
    assert!(!alive(&pid), "the task's background child {pid} still runs");
    let st = s.site.status_json();
    assert!(st["gate"].is_null(), "the site is open again");
    let out = st["history"][0]["tasks"][0]["output"].as_str().unwrap();
    assert!(out.contains("started"), "{out}");
    assert!(
        out.contains("left processes running; they were stopped"),
        "{out}"
    );
}

#[test]
fn a_task_past_its_timeout_is_stopped_with_its_children_and_rollback_reopens() {
    let s = story(
        &[("index.html", b"v1")],
        &[
            ("index.html", b"v2"),
            (
                "run_once/001-hang.sh",
                b"sleep 30 &\necho $! > child.pid\nwait\n",
            ),
        ],
    );
    set_config(&s.site.root, "tasks", "timeout_secs", "1");
    s.stage_next();
    let err = fails(s.site.run(&["update", "--yes"]), 1);
    assert!(err.contains("was stopped after 1 s"), "{err}");
    let pid = read(&s.site.root.join("child.pid"));
    assert!(!alive(&pid), "the task's child {pid} outlived the timeout");
    // The site is closed, but a command moves it back.
    assert!(!s.site.status_json()["gate"].is_null());
    ok(s.site.run(&["rollback"]));
    assert!(s.site.status_json()["gate"].is_null());
    assert_eq!(read(&s.site.root.join("index.html")), "v1");
}

// Class 5: an excluded path is never fingerprinted, planned, swapped or rolled back.

#[test]
fn excluded_paths_are_never_touched_whatever_the_release_ships() {
    let s = story(
        &[
            ("index.html", b"v1"),
            ("uploads/old.jpg", b"release 1 file"),
        ],
        &[
            ("index.html", b"v2"),
            ("uploads/photo.jpg", b"release 2 photo"),
        ],
    );
    set_config(&s.site.root, "", "exclude", r#"["uploads/"]"#);
    // The site's own upload, with the name the release also uses.
    std::fs::write(
        s.site.root.join("uploads/photo.jpg"),
        "the site's own photo",
    )
    .unwrap();
    let out = String::from_utf8_lossy(&s.site.run(&["check"]).stdout).into_owned();
    assert!(!out.contains("new: "), "{out}");
    assert!(
        out.contains("excluded by upkeep.toml (never touched): 2 files"),
        "{out}"
    );
    s.stage_next();
    assert!(
        !s.site.root.join("staging/uploads").exists(),
        "nothing fetched for it"
    );
    let (_, plan) = s.site.plan();
    let paths: Vec<&str> = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["index.html"]);
    s.site.update_yes();
    assert_eq!(
        read(&s.site.root.join("uploads/photo.jpg")),
        "the site's own photo"
    );
    assert_eq!(read(&s.site.root.join("uploads/old.jpg")), "release 1 file");
    assert!(!s.site.root.join("uploads/photo.jpg.bak").exists());
    assert!(!s.site.root.join("uploads/old.jpg.bak").exists());
    ok(s.site.run(&["rollback"]));
    assert_eq!(
        read(&s.site.root.join("uploads/photo.jpg")),
        "the site's own photo"
    );
    assert_eq!(read(&s.site.root.join("index.html")), "v1");
}

// Class 10: the operator's word outlasts the run.

#[test]
fn a_site_closed_by_the_operator_stays_closed_after_the_update_and_after_rollback() {
    let s = story(&[("index.html", b"v1")], &[("index.html", b"v2")]);
    ok(s.site.run(&["close", "--message", "Closed for the audit"]));
    s.stage_next();
    let out = s.site.update_yes();
    assert!(out.contains("the site stays closed, as you closed it"), "{out}");
    let st = s.site.status_json();
    assert_eq!(st["gate"]["message"], "Closed for the audit");
    assert!(st["gate"]["run"].is_null());
    assert_eq!(read(&s.site.root.join("index.html")), "v2");
    ok(s.site.run(&["rollback"]));
    assert_eq!(s.site.status_json()["gate"]["message"], "Closed for the audit");
    ok(s.site.run(&["open"]));
    assert!(s.site.status_json()["gate"].is_null());
}
