//! The plan approved is the plan applied, or nothing: a digest names the plan the operator
//! reviewed, and `update` refuses (changing nothing) when the plan of now differs.

mod common;

use common::scenario::{Scenario, V2, assert_new, live};
use common::*;

#[test]
fn a_script_applies_exactly_the_plan_it_was_shown() {
    let sc = Scenario::new();
    let site = Site::new(sc.site("digest"));
    // Without a terminal and without --yes: the plan and its digest, nothing applied.
    let o = site.run(&["update"]);
    let out = stdout(&o);
    let (digest, plan) = site.plan();
    assert!(out.contains(&format!("plan {digest}:")), "{out}");
    assert!(
        stderr(&o).contains(&format!("--yes --plan {digest}")),
        "{}",
        stderr(&o)
    );
    assert_eq!(plan["to"], "1.1.0");
    // The same plan twice has the same digest (nothing random in it).
    assert_eq!(site.plan().0, digest);

    ok(site.run(&["update", "--yes", "--plan", &digest]));
    assert_new(&site.root);
}

#[test]
fn staging_changed_after_review_is_refused_and_shows_the_new_plan() {
    let sc = Scenario::new();
    let mut v3: Vec<(&str, &[u8])> = V2.to_vec();
    v3.push(("extra-in-1.2.0.txt", b"three"));
    sc.w.publish("1.2.0", &v3);
    let site = Site::new(sc.site("restaged"));
    let (reviewed, _) = site.plan();

    // A cron job (or a second operator) stages another release after the review.
    site.stage_archive(&sc.w.zip("1.2.0"));
    let before = snapshot(&site.root);
    let err = fails(site.run(&["update", "--yes", "--plan", &reviewed]), 4);
    assert!(
        err.contains("the plan changed since it was reviewed"),
        "{err}"
    );
    assert!(err.contains("nothing was changed"), "{err}");
    assert!(err.contains("review the new plan"), "{err}");

    // Nothing changed: the tree, the gate, the history.
    assert_eq!(snapshot(&site.root), before);
    let st = site.status_json();
    assert!(st["gate"].is_null());
    assert_eq!(st["history"].as_array().unwrap().len(), 0);
    assert_eq!(st["installed"], "1.0.0");

    // The operator sees the new plan, with its digest, and can approve that one.
    let (now, plan) = site.plan();
    assert_ne!(now, reviewed);
    assert_eq!(plan["to"], "1.2.0");
    let o = site.run(&["update", "--yes", "--plan", &reviewed]);
    assert!(
        stdout(&o).contains(&format!("plan {now}:")),
        "{}",
        stdout(&o)
    );
    ok(site.run(&["update", "--yes", "--plan", &now]));
    assert_eq!(live(&site.root)["extra-in-1.2.0.txt"], "three");
}

#[test]
fn a_live_file_edited_after_review_changes_the_plan() {
    let sc = Scenario::new();
    let site = Site::new(sc.site("edited"));
    let (reviewed, plan) = site.plan();
    assert!(plan["modified"].as_array().unwrap().is_empty());
    // The operator's colleague edits a file the release replaces: it becomes a local edit,
    // which the reviewed plan did not mention.
    std::fs::write(site.root.join("index.html"), "<h1>edited live</h1>").unwrap();
    fails(site.run(&["update", "--yes", "--plan", &reviewed]), 4);
    assert_eq!(
        std::fs::read_to_string(site.root.join("index.html")).unwrap(),
        "<h1>edited live</h1>"
    );
    let (_, plan) = site.plan();
    assert_eq!(plan["modified"][0], "index.html");
}

#[test]
fn keeping_modified_files_is_a_plan_of_its_own() {
    let sc = Scenario::new();
    let site = Site::new(sc.site("keep"));
    std::fs::write(site.root.join("index.html"), "<h1>mine</h1>").unwrap();
    let (take, _) = site.plan();
    let o = site.run(&["update", "--json", "--keep-modified"]);
    let keep = {
        let e = stderr(&o);
        let v: serde_json::Value =
            serde_json::from_str(&e[..e.find("\n}\n").unwrap() + 2]).unwrap();
        v["digest"].as_str().unwrap().to_string()
    };
    assert_ne!(take, keep);
    // Approving "take the release's version" does not run "keep mine", nor the reverse.
    fails(
        site.run(&["update", "--yes", "--keep-modified", "--plan", &take]),
        4,
    );
    ok(site.run(&["update", "--yes", "--keep-modified", "--plan", &keep]));
    assert_eq!(
        std::fs::read_to_string(site.root.join("index.html")).unwrap(),
        "<h1>mine</h1>"
    );
}
