//! Crash safety: the process is killed (SIGKILL) at every named point of a run; `resume` must then
//! give exactly the new release and `rollback` exactly the old one, with each task run once, the
//! gate open and the lock free. Also a second crash inside resume, and one inside rollback.

mod common;
use common::scenario::*;
use common::*;

fn killed(o: &std::process::Output) -> bool {
    use std::os::unix::process::ExitStatusExt;
    o.status.signal() == Some(9)
}

fn crash_points(s: &Scenario) -> Vec<String> {
    let root = s.site("trace");
    let trace = s.w.path("trace.txt");
    ok(upkeep_env(
        &["update", "--root", root.to_str().unwrap(), "--yes"],
        &[("UPKEEP_CRASH_TRACE", trace.to_str().unwrap())],
    ));
    let text = std::fs::read_to_string(trace).unwrap();
    let points: Vec<String> = text.lines().map(String::from).collect();
    for must in [
        "close:before",
        "swap:1:done",
        "swap:2:moved-live",
        "swap:synced",
        "scan:after",
        "migrate:backup",
        "migrate:tx",
        "run_once:1:ran",
        "run_once:2:started",
        "reopen:opened",
    ] {
        assert!(
            points.iter().any(|p| p == must),
            "{must} missing from {points:?}"
        );
    }
    points
}

fn resume_until_done(root: &std::path::Path, point: &str) {
    let o = upkeep(&["resume", "--root", root.to_str().unwrap()]);
    if point.starts_with("run_once:2:started") {
        // A shell task found started but unconfirmed is never re-run silently.
        let e = fails(o, 1);
        assert!(
            e.contains("started but never confirmed") && e.contains("--rerun-task"),
            "{e}"
        );
        ok(upkeep(&[
            "resume",
            "--root",
            root.to_str().unwrap(),
            "--rerun-task",
        ]));
    } else {
        ok(o);
    }
}

#[test]
fn crash_anywhere_then_resume_or_rollback() {
    let s = Scenario::new();
    let points = crash_points(&s);
    assert!(points.len() >= 30, "{} points", points.len());
    for (i, point) in points.iter().enumerate() {
        let root = s.site(&format!("r{i}"));
        let o = upkeep_env(
            &["update", "--root", root.to_str().unwrap(), "--yes"],
            &[("UPKEEP_CRASH_AT", point)],
        );
        assert!(
            killed(&o),
            "{point}: the process should have died: {}",
            stderr(&o)
        );
        resume_until_done(&root, point);
        assert_new(&root);

        let root = s.site(&format!("b{i}"));
        let o = upkeep_env(
            &["update", "--root", root.to_str().unwrap(), "--yes"],
            &[("UPKEEP_CRASH_AT", point)],
        );
        assert!(killed(&o), "{point}");
        ok(upkeep(&[
            "rollback",
            "--yes",
            "--root",
            root.to_str().unwrap(),
        ]));
        assert_old(&root);
    }
}

#[test]
fn a_second_crash_inside_resume() {
    let s = Scenario::new();
    let root = s.site("twice");
    let r = root.to_str().unwrap();
    assert!(killed(&upkeep_env(
        &["update", "--root", r, "--yes"],
        &[("UPKEEP_CRASH_AT", "swap:2:moved-live")]
    )));
    assert!(killed(&upkeep_env(
        &["resume", "--root", r],
        &[("UPKEEP_CRASH_AT", "migrate:tx")]
    )));
    assert!(killed(&upkeep_env(
        &["resume", "--root", r],
        &[("UPKEEP_CRASH_AT", "run_once:1:ran")]
    )));
    ok(upkeep(&["resume", "--root", r]));
    assert_new(&root);
}

#[test]
fn a_crash_inside_rollback() {
    let s = Scenario::new();
    let root = s.site("rb");
    let r = root.to_str().unwrap();
    assert!(killed(&upkeep_env(
        &["update", "--root", r, "--yes"],
        &[("UPKEEP_CRASH_AT", "run_once:2:done")]
    )));
    for p in ["rollback:begin", "rollback:files", "rollback:database"] {
        assert!(
            killed(&upkeep_env(
                &["rollback", "--yes", "--root", r],
                &[("UPKEEP_CRASH_AT", p)]
            )),
            "{p}"
        );
    }
    // `resume` of a run caught rolling back finishes the rollback.
    ok(upkeep(&["resume", "--root", r]));
    assert_old(&root);
}

#[test]
fn rollback_after_a_finished_run_and_a_new_staging() {
    let s = Scenario::new();
    let root = s.site("done");
    let r = root.to_str().unwrap();
    ok(upkeep(&["update", "--root", r, "--yes"]));
    assert_new(&root);
    ok(upkeep(&["rollback", "--yes", "--root", r]));
    assert_old(&root);
    // And forward again from the rolled-back state.
    ok(upkeep(&["stage", "--root", r, "--network"]));
    ok(upkeep(&["update", "--root", r, "--yes"]));
    let st: serde_json::Value =
        serde_json::from_str(&ok(upkeep(&["status", "--root", r, "--json"]))).unwrap();
    assert_eq!(st["installed"], "1.1.0");
}
