//! Site reports, end to end: sites enrol with a publisher's token and report every run and pass,
//! signed with their site key, to a real `upkeep reference`; the deployment table and counters
//! follow; forged, replayed, unsigned, oversized and strangers' reports are refused; a report
//! that cannot be sent waits and goes later; a site that goes silent counts as failed.

mod common;

use common::fleet::{post, report_body, token};
use common::smtp::free_port;
use common::*;

fn fleet_status(w: &World, extra: &[&str]) -> serde_json::Value {
    let mut a = vec![
        "fleet",
        "status",
        "--repo",
        w.repo.to_str().unwrap(),
        "--json",
    ];
    a.extend_from_slice(extra);
    serde_json::from_str(&ok(upkeep(&a))).unwrap()
}

fn row<'a>(st: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    st["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {st}"))
}

fn auto_site(w: &World, srv: &str, name: &str, allow: &str, extra: &[&str]) -> Site {
    let mut args = vec!["--name", name];
    args.extend_from_slice(extra);
    let site = Site::new(w.instance(name, Some(&w.path("release-1.0.0")), srv, &args));
    set_config(&site.root, "auto", "enabled", "true");
    set_config(&site.root, "auto", "allow", &format!("\"{allow}\""));
    site
}

#[test]
fn enrolled_sites_report_every_pass_and_run_and_the_table_follows() {
    let w = World::new();
    w.publish("1.0.0", &[("index.html", b"v1")]);
    w.publish(
        "1.1.0",
        &[("index.html", b"v2"), ("run_once/001.sh", b"exit 0\n")],
    );
    let srv = w.reference();
    let t = token(&w, "3");
    let a = auto_site(
        &w,
        &srv.url,
        "alpha",
        "minor",
        &["--group", "eu", "--enroll", &t],
    );
    let b = auto_site(&w, &srv.url, "beta", "patch", &["--enroll", &t]);
    let st = fleet_status(&w, &[]);
    assert_eq!(st["sites"].as_array().unwrap().len(), 2);
    assert!(
        row(&st, "alpha")["last"].is_null(),
        "enrolled, nothing reported yet"
    );
    assert_eq!(
        row(&st, "alpha")["version"],
        "1.0.0",
        "the release init identified, from the enrolment on"
    );
    assert!(row(&st, "alpha")["last_seen_secs"].is_i64());

    let out = stdout(&a.run(&["auto"]));
    assert!(out.contains("report: 1 sent to the reference"), "{out}");
    let o = b.run(&["auto"]);
    assert_eq!(o.status.code(), Some(3));
    let st = fleet_status(&w, &[]);
    let ra = row(&st, "alpha");
    assert_eq!(ra["version"], "1.1.0");
    assert_eq!(ra["groups"], serde_json::json!(["eu"]));
    assert_eq!(ra["last"]["outcome"], "success");
    assert_eq!(ra["last"]["from"], "1.0.0");
    assert!(ra["last"]["closed_ms"].as_i64().unwrap() >= 0);
    assert_eq!(ra["last"]["seq"], 2, "an installing report came first");
    assert_eq!(
        ra["last"]["bytes_fetched"], 9,
        "index.html and run_once/001.sh, whole"
    );
    let rb = row(&st, "beta");
    assert_eq!(rb["version"], "1.0.0");
    assert_eq!(rb["last"]["outcome"], "held");
    let c = &st["releases"][0];
    assert_eq!(c["release"], "1.1.0");
    assert_eq!(c["counters"]["success"], 1);
    assert_eq!(c["counters"]["held"], 1);
    assert_eq!(c["counters"]["pending"], 0);
    // Filters.
    let eu = fleet_status(&w, &["--group", "eu"]);
    assert_eq!(eu["sites"].as_array().unwrap().len(), 1);
    // The text table.
    let text = ok(upkeep(&[
        "fleet",
        "status",
        "--repo",
        w.repo.to_str().unwrap(),
    ]));
    assert!(text.contains("alpha") && text.contains("updated"), "{text}");

    // A manual run is reported too: beta updates by hand.
    ok(b.run(&["stage", "--network"]));
    let o = b.run(&["update", "--yes"]);
    assert!(stderr(&o).contains("report: 1 sent"), "{}", stderr(&o));
    let st = fleet_status(&w, &[]);
    assert_eq!(row(&st, "beta")["last"]["outcome"], "success");
    assert_eq!(st["releases"][0]["counters"]["success"], 2);
    // And a rollback.
    ok(b.run(&["rollback", "--yes"]));
    let st = fleet_status(&w, &[]);
    assert_eq!(row(&st, "beta")["last"]["outcome"], "rolled_back");
    assert_eq!(row(&st, "beta")["version"], "1.0.0");
    assert_eq!(st["releases"][0]["counters"]["rolled_back"], 1);

    // Its next pass is held by its policy: the rollback stays counted, and in its history.
    assert_eq!(b.run(&["auto"]).status.code(), Some(3));
    let st = fleet_status(&w, &[]);
    assert_eq!(row(&st, "beta")["last"]["outcome"], "held");
    let c = &st["releases"][0];
    assert_eq!(c["counters"]["rolled_back"], 1, "{c}");
    assert_eq!(c["counters"]["held"], 0, "{c}");
    assert_eq!(c["failures"][0]["site"], "beta", "{c}");
    let text = ok(upkeep(&[
        "fleet",
        "status",
        "--repo",
        w.repo.to_str().unwrap(),
    ]));
    assert!(
        text.contains("channel stable: release 1.1.0")
            && text.contains("1 on it, 1 rolled back")
            && text.contains("beta rolled back at"),
        "{text}"
    );
    assert!(
        !text.contains('{') && !text.contains("rolled_back"),
        "{text}"
    );
    let history: serde_json::Value = serde_json::from_str(&ok(upkeep(&[
        "fleet",
        "status",
        "--repo",
        w.repo.to_str().unwrap(),
        "--site",
        "beta",
        "--json",
    ])))
    .unwrap();
    let outcomes: Vec<&str> = history["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["report"]["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        ["held", "rolled_back", "success", "held"],
        "{history}"
    );
    let text = ok(upkeep(&[
        "fleet",
        "status",
        "--repo",
        w.repo.to_str().unwrap(),
        "--site",
        "beta",
    ]));
    assert!(
        text.contains("beta (") && text.contains("rolled back") && text.contains("1.0.0 -> 1.1.0"),
        "{text}"
    );
}

#[test]
fn forged_replayed_unsigned_oversized_and_unknown_reports_and_bad_tokens_are_refused() {
    let w = World::new();
    w.publish("1.0.0", &[("index.html", b"v1")]);
    let srv = w.reference();
    let t = token(&w, "1");
    let a = auto_site(&w, &srv.url, "alpha", "minor", &["--enroll", &t]);
    ok(a.run(&["auto"]));
    let id = a.status_json()["site"]["id"].as_str().unwrap().to_string();
    let site_key =
        upkeep::documents::manifest::SecretKey::load(&a.root.join(".upkeep/site.key")).unwrap();
    let stranger = upkeep::documents::manifest::SecretKey::generate().unwrap();
    let url = format!("{}/", srv.url.trim_end_matches('/'));

    let body = report_body(&id, 100);
    let (s, text) = post(&url, &body, Some(&stranger.sign(&body)));
    assert_eq!(s, 401, "forged: {text}");
    assert!(text.contains("not signed by this site's key"), "{text}");
    let (s, _) = post(&url, &body, None);
    assert_eq!(s, 401, "unsigned");
    let other = report_body(&"ab".repeat(16), 1);
    let (s, text) = post(&url, &other, Some(&stranger.sign(&other)));
    assert_eq!(s, 401, "{text}");
    assert!(text.contains("unknown site"), "{text}");
    // Replayed: a number the reference has seen (the site sent 1 already).
    let old = report_body(&id, 1);
    let (s, text) = post(&url, &old, Some(&site_key.sign(&old)));
    assert_eq!(s, 409, "{text}");
    let mut big = report_body(&id, 101);
    big.extend(std::iter::repeat_n(b' ', 70 << 10));
    let (s, _) = post(&url, &big, Some(&site_key.sign(&big)));
    assert_eq!(s, 413, "oversized");
    let (s, text) = post(&url, b"{not json", Some(&site_key.sign(b"{not json")));
    assert_eq!(s, 400, "{text}");
    // None of them changed the table.
    let st = fleet_status(&w, &[]);
    assert_eq!(row(&st, "alpha")["version"], "1.0.0");
    assert_eq!(
        row(&st, "alpha")["last"]["reason"],
        "up to date with release 1.0.0"
    );

    // Tokens: a used-up one, an unknown one; a site id taken by another key.
    let b = Site::new(w.instance("beta", Some(&w.path("release-1.0.0")), &srv.url, &[]));
    let e = fails(b.run(&["enroll", &t]), 1);
    assert!(e.contains("used up or expired"), "{e}");
    let e = fails(b.run(&["enroll", "upkeep-enrol-0000"]), 1);
    assert!(e.contains("unknown enrolment token"), "{e}");
    let t2 = token(&w, "2");
    let c = reqwest::blocking::Client::new();
    let r = c
        .post(format!("{url}fleet/enroll"))
        .header("content-type", "application/json")
        .body(
            serde_json::to_vec(&serde_json::json!({
                "token": t2, "site_id": id, "public_key": stranger.public().to_text(),
                "name": "impostor", "groups": [], "channel": "stable"
            }))
            .unwrap(),
        )
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 409);
    assert!(
        r.text()
            .unwrap()
            .contains("already enrolled with another key")
    );
    ok(b.run(&["enroll", &t2]));
    // The fleet database is beside the repository, never inside (nothing of it is served).
    assert!(!list_files(&w.repo).iter().any(|f| f.contains("fleet")));
    let e = fails(
        upkeep(&[
            "fleet",
            "status",
            "--repo",
            w.repo.to_str().unwrap(),
            "--fleet-db",
            w.repo.join("f.db").to_str().unwrap(),
        ]),
        1,
    );
    assert!(e.contains("would be inside the repository"), "{e}");
}

#[test]
fn a_report_that_cannot_be_sent_waits_and_a_silent_site_counts_as_failed() {
    use std::os::unix::process::ExitStatusExt;
    let w = World::new();
    w.publish("1.0.0", &[("index.html", b"v1")]);
    w.publish("1.1.0", &[("index.html", b"v2")]);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let args = ["reference", "--repo", w.repo.to_str().unwrap()];
    let srv = spawn_server_on(&args, &listen);
    let t = token(&w, "2");
    let a = auto_site(&w, &srv.url, "alpha", "minor", &["--enroll", &t]);
    let b = auto_site(&w, &srv.url, "beta", "minor", &["--enroll", &t]);

    // A pass killed in the middle of its run: "installing" was reported, then nothing.
    let o = upkeep_env(
        &["auto", "--root", b.root.to_str().unwrap()],
        &[("UPKEEP_CRASH_AT", "swap:1:done")],
    );
    assert_eq!(o.status.signal(), Some(9));
    let st = fleet_status(&w, &[]);
    assert_eq!(row(&st, "beta")["last"]["outcome"], "installing");
    assert_eq!(st["releases"][0]["counters"]["installing"], 1);
    let st = fleet_status(&w, &["--silent-after", "0s"]);
    assert_eq!(st["releases"][0]["counters"]["silent"], 1);

    // The reference goes down: the pass fails (it cannot check), its report waits.
    drop(srv);
    let o = a.run(&["auto"]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.contains("report: 1 waiting"), "{out}");
    // Back: the next contact sends the waiting report first, then the new ones, in order.
    let srv = spawn_server_on(&args, &listen);
    let out = stdout(&a.run(&["auto"]));
    assert!(out.contains("UPDATED"), "{out}");
    assert!(out.contains("report: 1 sent to the reference"), "{out}");
    let st = fleet_status(&w, &[]);
    let ra = row(&st, "alpha");
    assert_eq!(ra["version"], "1.1.0");
    assert_eq!(ra["last"]["outcome"], "success");
    assert_eq!(
        ra["last"]["seq"], 3,
        "failure, installing, success: none lost"
    );
    drop(srv);
}
