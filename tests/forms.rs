//! Smaller forms on the wire, with real servers: `publish` stores compressed objects and deltas;
//! sites stage through `upkeep reference` (one batch) and through a real nginx (one GET per
//! object) with deltas against their live files, compressed objects and raw ones, each result
//! checked against the signed manifest; every bad form (damaged, cut, missing, a bomb, against
//! a base the site does not have) falls back and is counted; a repository without forms works.

mod common;

use std::path::Path;

use common::*;

/// A text file of `lines` lines, with line `edit` changed when given.
fn text(lines: usize, edit: Option<usize>) -> Vec<u8> {
    (0..lines)
        .map(|i| {
            if Some(i) == edit {
                format!("line {i}: this line was edited in the new release\n")
            } else {
                format!("line {i}: function f{i}() {{ return {i} * 2; }}\n")
            }
        })
        .collect::<String>()
        .into_bytes()
}

/// Bytes that do not compress.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

struct Case {
    w: World,
    d1: std::path::PathBuf,
    v2: Vec<(String, Vec<u8>)>,
}

/// Release 1.0.0, then 1.1.0: app.js edited by a line (a delta), style.css rewritten (new
/// content that compresses; its delta is smaller still), logo.bin replaced by other noise
/// (raw), new.txt added.
fn case(extra: &[&str]) -> (Case, serde_json::Value) {
    let w = World::new();
    let d1 = w.publish(
        "1.0.0",
        &[
            ("app.js", &text(5000, None)),
            ("style.css", &text(300, None)),
            ("logo.bin", &noise(50_000, 1)),
            ("same.txt", b"unchanged"),
        ],
    );
    let v2: Vec<(String, Vec<u8>)> = vec![
        ("app.js".into(), text(5000, Some(2500))),
        ("style.css".into(), b"body { color: red; }\n".repeat(400)),
        ("logo.bin".into(), noise(50_000, 2)),
        ("same.txt".into(), b"unchanged".to_vec()),
        ("new.txt".into(), text(200, None)),
    ];
    let d2 = w.path("release-1.1.0");
    let files: Vec<(&str, &[u8])> = v2.iter().map(|(p, b)| (p.as_str(), b.as_slice())).collect();
    write_tree(&d2, &files);
    let mut a = vec![
        "publish",
        d2.to_str().unwrap(),
        "--version",
        "1.1.0",
        "--repo",
        w.repo.to_str().unwrap(),
        "--key",
        w.key.to_str().unwrap(),
        "--json",
    ];
    a.extend_from_slice(extra);
    let published: serde_json::Value = serde_json::from_str(&ok(upkeep(&a))).unwrap();
    (Case { w, d1, v2 }, published)
}

/// How the forms list names an object: the first 16 hex digits of its SHA-256.
fn key(content: &[u8]) -> String {
    sha256_hex(content)[..16].to_string()
}

fn key_hex(sha: &str) -> &str {
    &sha[..16]
}

fn object(repo: &Path, content: &[u8]) -> std::path::PathBuf {
    let h = sha256_hex(content);
    repo.join(format!("objects/{}/{h}", &h[..2]))
}

impl Case {
    /// A site at 1.0.0 staging 1.1.0 from `url`; its stage report, after checking every staged
    /// file and the update against the release.
    fn stage_and_update(&self, name: &str, url: &str) -> serde_json::Value {
        let site = Site::new(self.w.instance(name, Some(&self.d1), url, &[]));
        self.stage_and_update_site(&site)
    }

    fn stage_and_update_site(&self, site: &Site) -> serde_json::Value {
        let r: serde_json::Value =
            serde_json::from_str(&ok(site.run(&["stage", "--network", "--json"]))).unwrap();
        site.update_yes();
        for (p, b) in &self.v2 {
            assert_eq!(
                sha256_hex(&std::fs::read(site.root.join(p)).unwrap()),
                sha256_hex(b),
                "{p}"
            );
        }
        r["forms"].clone()
    }
}

#[test]
fn publish_stores_deltas_and_compressed_objects_and_sites_fetch_the_smallest() {
    let (c, published) = case(&[]);
    let f = &published["forms"];
    // app.js: a delta; style.css rewritten compresses better whole than as a delta.
    assert!(f["deltas"].as_u64().unwrap() >= 1, "{published}");
    assert!(f["compressed"].as_u64().unwrap() >= 3, "{published}");
    let app2 = &c.v2[0].1;
    let (old, new) = (sha256_hex(&text(5000, None)), sha256_hex(app2));
    let delta = c.w.repo.join(format!("deltas/{old}/{new}.zst"));
    assert!(std::fs::metadata(&delta).unwrap().len() < 1000);
    let forms: serde_json::Value =
        serde_json::from_slice(&std::fs::read(c.w.repo.join("releases/1.1.0/forms.json")).unwrap())
            .unwrap();
    assert!(
        forms["deltas"][key_hex(&new)][key_hex(&old)]
            .as_u64()
            .is_some(),
        "{forms}"
    );
    // Noise is not stored compressed: it would not be smaller.
    let logo = object(&c.w.repo, &c.v2[2].1);
    assert!(!logo.with_extension("zst").exists());
    assert!(forms["zst"][key(&c.v2[2].1)].is_null());

    // Through `upkeep reference`: one batch with every form.
    let srv = c.w.reference();
    let r = c.stage_and_update("via-batch", &srv.url);
    let (delta, comp, raw, whole) = (
        r["delta"].as_u64().unwrap(),
        r["compressed"].as_u64().unwrap(),
        r["raw"].as_u64().unwrap(),
        r["whole"].as_u64().unwrap(),
    );
    assert!(delta > 0 && delta < 1000, "{r}");
    assert!(comp > 0, "{r}");
    assert_eq!(raw, 50_000, "only the noise comes raw: {r}");
    assert_eq!(r["fell_back"], 0, "{r}");
    let app_whole = app2.len() as u64;
    assert!(
        delta + comp + raw < whole - app_whole,
        "the edited file costs almost nothing: {r}"
    );

    // Through nginx, one GET per object: the same forms.
    let nginx = common::nginx::Nginx::serve_mirror(&c.w.repo, &c.w.path("nginx"));
    let r2 = c.stage_and_update("via-nginx", &nginx.url);
    assert_eq!(
        (&r2["delta"], &r2["compressed"], &r2["raw"]),
        (&r["delta"], &r["compressed"], &r["raw"])
    );
}

#[test]
fn every_bad_form_falls_back_and_the_result_is_still_the_signed_one() {
    let (c, _) = case(&[]);
    let srv = c.w.reference();
    let app2 = &c.v2[0].1;
    let (old, new) = (sha256_hex(&text(5000, None)), sha256_hex(app2));
    let delta = c.w.repo.join(format!("deltas/{old}/{new}.zst"));
    let css = object(&c.w.repo, &c.v2[1].1).with_extension("zst");
    let new_txt = object(&c.w.repo, &c.v2[4].1).with_extension("zst");
    let (good_delta, good_css) = (std::fs::read(&delta).unwrap(), std::fs::read(&css).unwrap());
    let good_txt = std::fs::read(&new_txt).unwrap();
    let forms_path = c.w.repo.join("releases/1.1.0/forms.json");
    // The delta bytes of a clean staging, app.js's included.
    let all_deltas = c.stage_and_update("baseline", &srv.url)["delta"]
        .as_u64()
        .unwrap();
    let others = all_deltas - good_delta.len() as u64;
    let good_forms = std::fs::read(&forms_path).unwrap();

    // A delta whose bytes are damaged, a compressed object cut short, and one that is a
    // decompression bomb (a valid zstd frame of far more than the object's size, listed with
    // its own size so that it arrives whole).
    let mut bad = good_delta.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x55;
    std::fs::write(&delta, &bad).unwrap();
    // (style.css also has a delta, smaller still: set aside so that its compressed form is
    // what the server sends.)
    let css_delta = c.w.repo.join(format!(
        "deltas/{}/{}.zst",
        sha256_hex(&text(300, None)),
        sha256_hex(&c.v2[1].1)
    ));
    let good_css_delta = std::fs::read(&css_delta).unwrap();
    std::fs::remove_file(&css_delta).unwrap();
    std::fs::write(&css, &good_css[..good_css.len() / 2]).unwrap();
    let bomb = zstd_frame_of_zeros(64 << 20);
    std::fs::write(&new_txt, &bomb).unwrap();
    let mut forms: serde_json::Value = serde_json::from_slice(&good_forms).unwrap();
    forms["zst"][key(&c.v2[1].1)] = (good_css.len() / 2).into();
    forms["zst"][key(&c.v2[4].1)] = bomb.len().into();
    write_forms(&forms_path, serde_json::to_vec(&forms).unwrap());
    let r = c.stage_and_update("damaged", &srv.url);
    assert!(r["fell_back"].as_u64().unwrap() >= 3, "{r}");
    let reasons = r["reasons"].to_string();
    assert!(
        reasons.contains("more than"),
        "the bomb stops at the size: {r}"
    );
    assert!(reasons.contains("cut short"), "{r}");
    std::fs::write(&css_delta, &good_css_delta).unwrap();

    // A delta the server does not have (404 through nginx), and a base the site does not
    // have (its app.js is modified): the compressed object instead, nothing counted as failed.
    std::fs::remove_file(&delta).unwrap();
    std::fs::write(&css, &good_css).unwrap();
    std::fs::write(&new_txt, &good_txt).unwrap();
    write_forms(&forms_path, &good_forms);
    let nginx = common::nginx::Nginx::serve_mirror(&c.w.repo, &c.w.path("nginx"));
    let r = c.stage_and_update("missing-delta", &nginx.url);
    assert_eq!(r["fell_back"], 1, "{r}");
    assert!(r["reasons"].to_string().contains("404"), "{r}");
    assert_eq!(r["delta"], others, "app.js came another way: {r}");
    std::fs::write(&delta, &good_delta).unwrap();
    let site = Site::new(c.w.instance("modified", Some(&c.d1), &srv.url, &[]));
    std::fs::write(site.root.join("app.js"), b"my own change").unwrap();
    let o: serde_json::Value =
        serde_json::from_str(&ok(site.run(&["stage", "--network", "--json"]))).unwrap();
    assert_eq!(
        o["forms"]["delta"], others,
        "no delta against a base it lacks: {o}"
    );
    assert_eq!(o["forms"]["fell_back"], 0, "{o}");

    // A listing that names the wrong size (stale, or tampered), read by a site staging from a
    // static server: read past it, fetched raw.
    let mut forms: serde_json::Value = serde_json::from_slice(&good_forms).unwrap();
    forms["zst"][key(&c.v2[1].1)] = 7.into();
    write_forms(&forms_path, serde_json::to_vec(&forms).unwrap());
    let r = c.stage_and_update("wrong-size", &nginx.url);
    assert_eq!(r["fell_back"], 1, "{r}");
    assert!(r["reasons"].to_string().contains("not the 7 listed"), "{r}");
    assert!(o["forms"]["compressed"].as_u64().unwrap() > 0, "{o}");
}

/// Rewrite a release's forms list, and its gzip form beside (what a client accepting gzip gets).
fn write_forms(path: &Path, bytes: impl AsRef<[u8]>) {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes.as_ref()).unwrap();
    std::fs::write(path.with_extension("json.gz"), gz.finish().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// A zstd frame that decodes to `n` zero bytes (a few kilobytes on the wire).
fn zstd_frame_of_zeros(n: usize) -> Vec<u8> {
    zstd::bulk::compress(&vec![0u8; n], 19).unwrap()
}

#[test]
fn a_repository_without_forms_and_a_client_that_asks_raw_objects_work_as_before() {
    let (c, published) = case(&["--deltas", "0", "--no-compress"]);
    assert_eq!(published["forms"]["compressed"], 0);
    assert!(!c.w.repo.join("deltas").exists());
    let srv = c.w.reference();
    let r = c.stage_and_update("plain", &srv.url);
    assert_eq!(
        (&r["delta"], &r["compressed"]),
        (&0.into(), &0.into()),
        "{r}"
    );
    assert_eq!(r["raw"], r["whole"]);

    // A site of an earlier version asks objects without a form: the server answers raw frames.
    let h = sha256_hex(&c.v2[0].1);
    let body = reqwest::blocking::Client::new()
        .post(format!("{}batch", srv.url))
        .body(format!("{h} 0\n"))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    let head = format!("{h} 0 {}\n", c.v2[0].1.len());
    assert!(body.starts_with(head.as_bytes()));
}

#[test]
fn a_mirror_carries_the_forms_it_checked_and_lists_only_those() {
    let (c, _) = case(&[]);
    let origin = c.w.reference();
    // One compressed object damaged upstream (same length: it arrives whole, then fails).
    let css = object(&c.w.repo, &c.v2[1].1).with_extension("zst");
    let mut bad = std::fs::read(&css).unwrap();
    let n = bad.len();
    for b in &mut bad[n / 3..n - 4] {
        *b ^= 0xA5;
    }
    std::fs::write(&css, &bad).unwrap();
    let m = c.w.path("mirror");
    let out = ok(c.w.mirror(&origin.url, &m, &["--json"]));
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(s["sync"]["form_bytes"].as_u64().unwrap() > 0, "{s}");
    let rel = css.strip_prefix(&c.w.repo).unwrap();
    assert!(!m.join(rel).exists(), "the damaged form is not served");
    let (old, new) = (sha256_hex(&text(5000, None)), sha256_hex(&c.v2[0].1));
    let delta = format!("deltas/{old}/{new}.zst");
    assert_eq!(
        std::fs::read(m.join(&delta)).unwrap(),
        std::fs::read(c.w.repo.join(&delta)).unwrap()
    );
    let listed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(m.join("releases/1.1.0/forms.json")).unwrap())
            .unwrap();
    assert!(listed["zst"][key(&c.v2[1].1)].is_null(), "{listed}");
    assert!(
        listed["deltas"][key_hex(&new)][key_hex(&old)].is_u64(),
        "{listed}"
    );

    // A site staging from the mirror gets the delta and asks for nothing the mirror lacks.
    let leaf = spawn_server(&["reference", "--repo", m.to_str().unwrap()]);
    let r = c.stage_and_update("via-mirror", &leaf.url);
    assert!(r["delta"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["fell_back"], 0, "{r}");
}

#[test]
fn manifests_travel_gzipped_from_upkeep_reference_and_from_nginx() {
    let (c, _) = case(&[]);
    let srv = c.w.reference();
    let nginx = common::nginx::Nginx::serve_mirror(&c.w.repo, &c.w.path("nginx"));
    let plain = std::fs::read(c.w.repo.join("releases/1.1.0/manifest.json")).unwrap();
    let client = reqwest::blocking::Client::builder()
        .no_gzip()
        .build()
        .unwrap();
    for base in [&srv.url, &nginx.url] {
        let r = client
            .get(format!("{base}releases/1.1.0/manifest.json"))
            .header("Accept-Encoding", "gzip")
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-encoding"], "gzip", "{base}");
        let etag = r.headers()["etag"].to_str().unwrap().to_string();
        let body = r.bytes().unwrap();
        assert!(
            body.len() * 2 < plain.len(),
            "{} of {}",
            body.len(),
            plain.len()
        );
        let mut out = Vec::new();
        use std::io::Read;
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, plain);
        // Revalidation works on the gzipped form too.
        let r = client
            .get(format!("{base}releases/1.1.0/manifest.json"))
            .header("Accept-Encoding", "gzip")
            .header("If-None-Match", &etag)
            .send()
            .unwrap();
        assert_eq!(r.status(), 304, "{base}");
        // A client that does not ask for gzip gets the document itself.
        let r = client
            .get(format!("{base}releases/1.1.0/manifest.json"))
            .send()
            .unwrap();
        assert!(r.headers().get("content-encoding").is_none());
        assert_eq!(r.bytes().unwrap(), plain);
    }
}

#[test]
fn a_site_that_has_the_previous_manifest_fetches_the_new_one_as_a_delta() {
    let (c, _) = case(&[]);
    let ptr: serde_json::Value =
        serde_json::from_slice(&std::fs::read(c.w.repo.join("latest.json")).unwrap()).unwrap();
    assert_eq!(ptr["manifest_deltas"], serde_json::json!(["1.0.0"]));
    let delta = c.w.repo.join("releases/1.1.0/manifest.from-1.0.0.zst");
    let whole = c.w.repo.join("releases/1.1.0/manifest.json");
    assert!(
        std::fs::metadata(&delta).unwrap().len() * 2 < std::fs::metadata(&whole).unwrap().len()
    );
    ok(c.w.promote("1.1.0", "stable", &["--waves", "100%"]));
    let cp: serde_json::Value =
        serde_json::from_slice(&std::fs::read(c.w.repo.join("channels/stable.json")).unwrap())
            .unwrap();
    assert_eq!(cp["manifest_deltas"], serde_json::json!(["1.0.0"]));
    let srv = c.w.reference();

    // With the whole manifest gone from the server, only the delta can give it.
    let site = Site::new(c.w.instance("by-delta", Some(&c.d1), &srv.url, &[]));
    let on_channel = Site::new(c.w.instance("on-channel", Some(&c.d1), &srv.url, &[]));
    set_config(&on_channel.root, "", "channel", "\"stable\"");
    let aside = c.w.path("manifest-aside");
    std::fs::create_dir_all(&aside).unwrap();
    for f in ["manifest.json", "manifest.json.gz"] {
        std::fs::rename(whole.with_file_name(f), aside.join(f)).unwrap();
    }
    c.stage_and_update_site(&site);

    // A site on a channel: the channel's pointer lists the deltas of its release too.
    c.stage_and_update_site(&on_channel);

    // A delta that does not rebuild the signed manifest: the whole one is fetched instead.
    for f in ["manifest.json", "manifest.json.gz"] {
        std::fs::rename(aside.join(f), whole.with_file_name(f)).unwrap();
    }
    let mut bad = std::fs::read(&delta).unwrap();
    let n = bad.len();
    bad[n / 2] ^= 0xFF;
    std::fs::write(&delta, &bad).unwrap();
    c.stage_and_update("bad-delta", &srv.url);
}

#[test]
fn the_reference_sends_the_smallest_form_it_holds_when_asked_to_choose() {
    let (c, _) = case(&[]);
    let srv = c.w.reference();
    let app = (sha256_hex(&text(5000, None)), sha256_hex(&c.v2[0].1));
    let (logo, new_txt) = (sha256_hex(&c.v2[2].1), sha256_hex(&c.v2[4].1));
    let nobody = "0".repeat(64);
    let body = format!(
        "{} 0 *:{}\n{} 0 *:{nobody}\n{logo} 0 *\n{new_txt} 0 *\n",
        app.1, app.0, app.1
    );
    let r = reqwest::blocking::Client::new()
        .post(format!("{}batch", srv.url))
        .header("upkeep-batch-frames", "numbered")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = r.bytes().unwrap();
    // Each frame's line, past its bytes.
    let mut heads = Vec::new();
    let mut at = 0;
    while let Some(nl) = got[at..].iter().position(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(&got[at..at + nl]).into_owned();
        at += nl + 1;
        if line == "end" {
            break;
        }
        at += line.split(' ').nth(2).unwrap().parse::<usize>().unwrap();
        heads.push(line);
    }
    let len = |rel: String| std::fs::metadata(c.w.repo.join(rel)).unwrap().len();
    let zst = |h: &str| len(format!("objects/{}/{h}.zst", &h[..2]));
    assert_eq!(
        heads,
        vec![
            // A delta from the base the site has (named by the line, not again).
            format!("#0 0 {} d", len(format!("deltas/{}/{}.zst", app.0, app.1))),
            // No delta from a base the repository does not know: compressed.
            format!("#1 0 {} z", zst(&app.1)),
            // Noise is not kept compressed: the object itself.
            format!("#2 0 {}", c.v2[2].1.len()),
            format!("#3 0 {} z", zst(&new_txt)),
        ]
    );
}

#[test]
fn a_mirror_copies_the_manifest_deltas_a_channel_lists_for_an_older_release() {
    let (c, _) = case(&[]);
    ok(c.w.promote("1.1.0", "stable", &["--waves", "100%"]));
    // The latest release moves on; the channel still rolls out 1.1.0.
    let v3: Vec<(&str, &[u8])> =
        c.v2.iter()
            .map(|(p, b)| (p.as_str(), b.as_slice()))
            .chain([("extra.txt", b"1.2.0".as_slice())])
            .collect();
    c.w.publish("1.2.0", &v3);
    let srv = c.w.reference();
    let to = c.w.path("mirror");
    ok(c.w.mirror(&srv.url, &to, &[]));
    for rel in [
        "releases/1.1.0/manifest.from-1.0.0.zst",
        "releases/1.2.0/manifest.from-1.1.0.zst",
    ] {
        assert_eq!(
            std::fs::read(to.join(rel)).unwrap(),
            std::fs::read(c.w.repo.join(rel)).unwrap(),
            "{rel}"
        );
    }

    // A site on the channel, staging from the mirror with the whole manifest gone there, gets
    // it from the delta.
    let mirror = common::nginx::Nginx::serve_mirror(&to, &c.w.path("nginx"));
    let site = Site::new(c.w.instance("on-channel", Some(&c.d1), &mirror.url, &[]));
    set_config(&site.root, "", "channel", "\"stable\"");
    for f in ["manifest.json", "manifest.json.gz"] {
        std::fs::remove_file(to.join("releases/1.1.0").join(f)).unwrap();
    }
    c.stage_and_update_site(&site);
}
