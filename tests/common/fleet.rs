//! Fleet helpers: enrolment tokens and reports posted by hand to a reference.

use super::*;

/// A token from `upkeep fleet token --uses USES`.
pub fn token(w: &World, uses: &str) -> String {
    let o = upkeep(&[
        "fleet",
        "token",
        "--repo",
        w.repo.to_str().unwrap(),
        "--uses",
        uses,
    ]);
    let t = ok(o).trim().to_string();
    assert!(t.starts_with("upkeep-enrol-"), "{t}");
    t
}

/// POST a report body with a signature header.
pub fn post(url: &str, body: &[u8], sig: Option<&str>) -> (u16, String) {
    let c = reqwest::blocking::Client::new();
    let mut r = c
        .post(format!("{url}fleet/report"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(s) = sig {
        r = r.header("x-upkeep-signature", s.trim());
    }
    let r = r.send().unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

pub fn report_body(site_id: &str, seq: u64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "format": 1, "site_id": site_id, "seq": seq, "at": "2026-11-23T00:00:00Z",
        "name": "alpha", "groups": [], "channel": "stable", "installed": "9.9.9",
        "from": "1.0.0", "to": "9.9.9", "outcome": "success", "failed_step": null,
        "reason": "forged", "closed_ms": 1, "bytes_fetched": null, "modified": 0, "health": null
    }))
    .unwrap()
}
