//! A two-tier mirror chain synced by push: origin -> hub (`upkeep mirror --downstream`, served by
//! a real nginx, unchanged) -> leaf 1 (`upkeep reference --mirror-from` the nginx, triggered) ->
//! leaf 2 (triggered by leaf 1). Each tier ends byte-for-byte equal to the origin, release zips
//! included; a site stages through the last leaf; an unreachable leaf is named and the others
//! are triggered all the same.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::smtp::free_port;
use common::*;

fn mirrored(dir: &Path) -> BTreeMap<String, String> {
    snapshot(dir)
        .into_iter()
        .filter(|(k, _)| !k.contains(".mirror-partial") && !k.contains("fleet.db"))
        .collect()
}

/// Bounded wait until the mirror at `dir` serves `version`.
fn serves(dir: &Path, version: &str) -> bool {
    for _ in 0..300 {
        let latest = std::fs::read(dir.join("latest.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["latest"].as_str().map(String::from));
        if latest.as_deref() == Some(version) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn a_release_pushed_through_a_hub_and_two_leaves_reaches_a_site() {
    let w = World::new();
    let d1 = w.publish("1.0.0", &[("index.html", b"v1"), ("app.js", b"js1")]);
    let origin = w.reference();
    let rel_pub = format!("{}.pub", w.key.display());
    let (hub_key, l1_key) = (w.path("hub-trigger.key"), w.path("leaf1-trigger.key"));
    for k in [&hub_key, &l1_key] {
        ok(upkeep(&["keygen", "--out", k.to_str().unwrap()]));
    }
    let (hub, leaf1, leaf2) = (w.path("hub"), w.path("leaf1"), w.path("leaf2"));
    std::fs::create_dir_all(&hub).unwrap();
    let (p1, p2) = (free_port(), free_port());
    let leaves = w.path("leaves.txt");
    let dead = free_port();
    std::fs::write(
        &leaves,
        format!(
            "# the leaves of this hub\nhttp://127.0.0.1:{p1}/\nhttp://127.0.0.1:{dead}/  # down\n"
        ),
    )
    .unwrap();
    let leaves2 = w.path("leaves2.txt");
    std::fs::write(&leaves2, format!("http://127.0.0.1:{p2}/\n")).unwrap();

    let hub_srv = common::nginx::Nginx::serve_mirror(&hub, &w.path("nginx"));
    let _l1 = spawn_server_on(
        &[
            "reference",
            "--repo",
            leaf1.to_str().unwrap(),
            "--mirror-from",
            &hub_srv.url,
            "--public-key",
            &rel_pub,
            "--trigger-key",
            &format!("{}.pub", hub_key.display()),
            "--downstream",
            leaves2.to_str().unwrap(),
            "--downstream-key",
            l1_key.to_str().unwrap(),
            "--mirror-zips",
        ],
        &format!("127.0.0.1:{p1}"),
    );
    let l2 = spawn_server_on(
        &[
            "reference",
            "--repo",
            leaf2.to_str().unwrap(),
            "--mirror-from",
            &format!("http://127.0.0.1:{p1}/"),
            "--public-key",
            &rel_pub,
            "--trigger-key",
            &format!("{}.pub", l1_key.display()),
            "--mirror-zips",
        ],
        &format!("127.0.0.1:{p2}"),
    );

    let hub_sync = |expect_code: i32| {
        let o = upkeep(&[
            "mirror",
            "--from",
            &origin.url,
            "--to",
            hub.to_str().unwrap(),
            "--public-key",
            &rel_pub,
            "--downstream",
            leaves.to_str().unwrap(),
            "--downstream-key",
            hub_key.to_str().unwrap(),
            "--zips",
            "--json",
        ]);
        assert_eq!(o.status.code(), Some(expect_code), "{}", stderr(&o));
        serde_json::from_str::<serde_json::Value>(&stdout(&o)).unwrap()
    };
    // The hub syncs and pushes: leaf 1 takes the trigger, the dead leaf is named.
    let r = hub_sync(1);
    let answers = r["downstream"].as_array().unwrap();
    assert_eq!(answers.len(), 2);
    assert_eq!(answers[0]["status"], 202, "{r}");
    assert!(answers[1]["status"].is_null(), "the dead leaf: {r}");
    assert!(serves(&leaf1, "1.0.0"), "leaf 1 synced");
    assert!(
        serves(&leaf2, "1.0.0"),
        "leaf 2 synced, triggered by leaf 1"
    );
    let origin_files: BTreeMap<String, String> = mirrored(&w.repo);
    assert!(origin_files.contains_key("releases/1.0.0/upkeep-1.0.0.zip"));
    assert_eq!(r["sync"]["zips"], 1);
    assert_eq!(mirrored(&hub), origin_files);
    // nginx serves the hub with the README's lines: objects immutable for caches.
    let obj = origin_files
        .keys()
        .find(|k| k.starts_with("objects/"))
        .unwrap();
    let r = reqwest::blocking::get(format!("{}{obj}", hub_srv.url)).unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    assert_eq!(mirrored(&leaf1), origin_files);
    assert_eq!(mirrored(&leaf2), origin_files);

    // A new release travels the whole chain by push alone.
    w.publish("1.1.0", &[("index.html", b"v2"), ("app.js", b"js1")]);
    let r = hub_sync(1);
    assert_eq!(r["sync"]["new_objects"], 1);
    assert_eq!(r["sync"]["zips"], 1, "only the new release's zip: {r}");
    assert!(serves(&leaf2, "1.1.0"), "the second push reached leaf 2");
    // The leaf's pointer is written last: wait for it, then every file is there.
    assert_eq!(mirrored(&leaf2), mirrored(&w.repo));

    // The zip a leaf serves is the origin's, byte for byte.
    let body = reqwest::blocking::get(format!("{}releases/1.1.0/upkeep-1.1.0.zip", l2.url))
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(
        sha256_hex(&body),
        sha256_hex(&std::fs::read(w.zip("1.1.0")).unwrap())
    );

    // A site whose reference is the last leaf stages and updates through it.
    let site = Site::new(w.instance("site", Some(&d1), &l2.url, &[]));
    ok(site.run(&["stage", "--network"]));
    site.update_yes();
    assert_eq!(
        std::fs::read_to_string(site.root.join("index.html")).unwrap(),
        "v2"
    );
}
