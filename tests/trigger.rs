//! Signed triggers: `POST /trigger` on a real `upkeep serve` starts the site's own unattended
//! pass; unknown keys, missing signatures, stale, replayed, oversized and too frequent triggers
//! are refused and change nothing; the SSH forced command refuses anything but its words.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use upkeep::documents::manifest::SecretKey;

fn post(url: &str, body: &[u8], sig: Option<&str>) -> (u16, String) {
    let c = reqwest::blocking::Client::new();
    let mut r = c
        .post(format!("{}/trigger", url.trim_end_matches('/')))
        .body(body.to_vec());
    if let Some(s) = sig {
        r = r.header("x-upkeep-signature", s.trim());
    }
    let r = r.send().unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

#[test]
fn a_signed_trigger_starts_the_sites_own_pass_and_nothing_else_gets_through() {
    let (w, _srv, site) = unattended_site(&["--name", "blog"]);
    let key_path = w.path("trigger.key");
    ok(upkeep(&["keygen", "--out", key_path.to_str().unwrap()]));
    let key = SecretKey::load(&key_path).unwrap();
    let web = spawn_server(&["serve", "--root", site.root.to_str().unwrap()]);

    // No trigger_keys: nothing is accepted.
    let (body, sig) = upkeep::documents::trigger::make(&key, "blog").unwrap();
    let (s, text) = post(&web.url, &body, Some(&sig));
    assert_eq!(s, 401, "{text}");
    assert!(text.contains("trigger_keys is empty"), "{text}");
    set_config(
        &site.root,
        "",
        "trigger_keys",
        &format!("[\"{}\"]", key.public().to_text()),
    );

    // Refusals, cheapest first; none of them starts a pass.
    let stranger = SecretKey::generate().unwrap();
    let (b, s2) = upkeep::documents::trigger::make(&stranger, "blog").unwrap();
    assert_eq!(post(&web.url, &b, Some(&s2)).0, 401, "unknown key");
    assert_eq!(post(&web.url, &body, None).0, 401, "unsigned");
    let (b, s2) = upkeep::documents::trigger::make_at(
        &key,
        "blog",
        SystemTime::now() - Duration::from_secs(900),
    )
    .unwrap();
    let (s, text) = post(&web.url, &b, Some(&s2));
    assert_eq!(s, 409, "stale: {text}");
    let (b, s2) = upkeep::documents::trigger::make(&key, "another-site").unwrap();
    assert_eq!(post(&web.url, &b, Some(&s2)).0, 409, "for another site");
    let big = vec![b' '; 64 << 10];
    assert_eq!(
        post(&web.url, &big, Some(&key.sign(&big))).0,
        413,
        "oversized"
    );
    assert_eq!(site.status_json()["last_auto"], serde_json::Value::Null);

    // The sender, with a key the site does not trust: told, exit 1.
    let stranger_path = w.path("stranger.key");
    std::fs::write(&stranger_path, stranger.to_text()).unwrap();
    let o = upkeep(&[
        "trigger",
        "--url",
        &web.url,
        "--key",
        stranger_path.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("401 Unauthorized"), "{}", stdout(&o));

    // The real one: 202, and the site runs its own pass.
    let (body, sig) = upkeep::documents::trigger::make(&key, "blog").unwrap();
    let (s, text) = post(&web.url, &body, Some(&sig));
    assert_eq!(s, 202, "{text}");
    assert!(text.contains("started upkeep auto"), "{text}");
    let mut passes = serde_json::Value::Null;
    for _ in 0..600 {
        passes = site.status_json()["last_auto"].clone();
        if !passes.is_null() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(passes["decision"], "updated", "{passes}");
    assert_eq!(
        std::fs::read_to_string(site.root.join("index.html")).unwrap(),
        "v2"
    );
    // Replayed: refused. Another genuine one within 10 s: rate limited.
    let (s, text) = post(&web.url, &body, Some(&sig));
    assert_eq!(s, 409, "a replay: {text}");
    assert!(text.contains("already received"), "{text}");
    let (b, s2) = upkeep::documents::trigger::make(&key, "*").unwrap();
    let c = reqwest::blocking::Client::new();
    let r = c
        .post(format!("{}/trigger", web.url.trim_end_matches('/')))
        .header("x-upkeep-signature", s2.trim())
        .body(b)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().get("retry-after").is_some());
}

#[test]
fn the_ssh_forced_command_runs_a_pass_and_refuses_anything_else() {
    let (_w, _srv, site) = unattended_site(&[]);
    let r = site.root.to_str().unwrap();
    for evil in [
        "check; rm -rf /",
        "auto && cat /etc/passwd",
        "$(reboot)",
        "status --root /",
        "update\nrm -rf ~",
    ] {
        let o = upkeep_env(&["trigger", "--root", r], &[("SSH_ORIGINAL_COMMAND", evil)]);
        assert_eq!(o.status.code(), Some(2), "{evil:?}");
        assert!(
            stderr(&o).contains("may only trigger an update pass"),
            "{}",
            stderr(&o)
        );
    }
    assert_eq!(
        std::fs::read_to_string(site.root.join("index.html")).unwrap(),
        "v1"
    );
    let o = upkeep_env(
        &["trigger", "--root", r],
        &[("SSH_ORIGINAL_COMMAND", "check")],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("UPDATED"), "{}", stdout(&o));
    assert_eq!(
        std::fs::read_to_string(site.root.join("index.html")).unwrap(),
        "v2"
    );
}
