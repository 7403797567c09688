//! The big red button: `upkeep push --group eu --wait` triggers exactly the enrolled sites of
//! that group, each running its own pass behind its real `upkeep serve`, waits for their
//! reports, and says which site could not be reached; the others are triggered all the same.

mod common;

use common::smtp::free_port;
use common::*;

#[test]
fn a_push_to_a_group_updates_exactly_that_group_and_names_the_unreachable() {
    let w = World::new();
    w.publish("1.0.0", &[("index.html", b"v1")]);
    w.publish("1.1.0", &[("index.html", b"v2")]);
    let srv = w.reference();
    let repo = w.repo.to_str().unwrap().to_string();
    let token = ok(upkeep(&["fleet", "token", "--repo", &repo, "--uses", "4"]))
        .trim()
        .to_string();
    let key = w.path("trigger.key");
    ok(upkeep(&["keygen", "--out", key.to_str().unwrap()]));
    let public = std::fs::read_to_string(format!("{}.pub", key.display())).unwrap();

    let mut servers = Vec::new();
    let mut site = |name: &str, group: &str, serve: bool| {
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}/");
        let s = Site::new(w.instance(
            name,
            Some(&w.path("release-1.0.0")),
            &srv.url,
            &[
                "--name", name, "--group", group, "--enroll", &token, "--url", &url,
            ],
        ));
        set_config(
            &s.root,
            "",
            "trigger_keys",
            &format!("[\"{}\"]", public.trim()),
        );
        set_config(&s.root, "auto", "enabled", "true");
        set_config(&s.root, "auto", "allow", "\"minor\"");
        if serve {
            servers.push(spawn_server_on(
                &["serve", "--root", s.root.to_str().unwrap()],
                &format!("127.0.0.1:{port}"),
            ));
        }
        s
    };
    let eu1 = site("eu1", "eu", true);
    let eu2 = site("eu2", "eu", true);
    let eu3 = site("eu3", "eu", false); // enrolled, its server down
    let us1 = site("us1", "us", true);

    let o = upkeep(&[
        "push",
        "--repo",
        &repo,
        "--group",
        "eu",
        "--key",
        key.to_str().unwrap(),
        "--wait",
        "--timeout",
        "2m",
        "--json",
    ]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "eu3 was not reached: {}",
        stderr(&o)
    );
    let r: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let answers = r["answers"].as_array().unwrap();
    assert_eq!(answers.len(), 3, "exactly the group: {r}");
    let status = |n: &str| {
        answers
            .iter()
            .find(|a| a["site"] == n)
            .map(|a| a["status"].clone())
            .unwrap()
    };
    assert_eq!(status("eu1"), 202);
    assert_eq!(status("eu2"), 202);
    assert!(status("eu3").is_null(), "not reached");
    let reports = r["reports"].as_array().unwrap();
    assert_eq!(reports.len(), 2);
    for rep in reports {
        assert_eq!(rep["report"]["outcome"], "success", "{rep}");
        assert_eq!(rep["report"]["installed"], "1.1.0");
    }
    let index = |s: &Site| std::fs::read_to_string(s.root.join("index.html")).unwrap();
    assert_eq!(index(&eu1), "v2");
    assert_eq!(index(&eu2), "v2");
    assert_eq!(index(&eu3), "v1");
    assert_eq!(index(&us1), "v1", "another group is not touched");

    // The text form names the unreachable site; an empty class is refused.
    let o = upkeep(&[
        "push",
        "--repo",
        &repo,
        "--site",
        "eu3",
        "--key",
        key.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("eu3") && stdout(&o).contains("not reached"),
        "{}",
        stdout(&o)
    );
    let e = fails(
        upkeep(&[
            "push",
            "--repo",
            &repo,
            "--group",
            "nobody",
            "--key",
            key.to_str().unwrap(),
        ]),
        1,
    );
    assert!(e.contains("no enrolled site is in that class"), "{e}");
    drop(servers);
}
