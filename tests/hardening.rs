//! What an adversarial test of the single-site spine broke, class by class (issue 10): each
//! test here failed before its fix.

mod common;

use std::path::Path;

use common::*;

/// Release 1.0.0 installed from `v1`, release 1.1.0 (`v2`) published, a reference serving both.
struct Story {
    w: World,
    srv: Server,
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
        srv,
        site: Site::new(root),
    }
}

impl Story {
    fn stage_next(&self) {
        self.site.stage_archive(&self.w.zip("1.1.0"));
    }
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
    ok(s.site.run(&["rollback", "--yes"]));
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
    ok(s.site.run(&["rollback", "--yes"]));
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
    assert!(
        out.contains("the site stays closed, as you closed it"),
        "{out}"
    );
    let st = s.site.status_json();
    assert_eq!(st["gate"]["message"], "Closed for the audit");
    assert!(st["gate"]["run"].is_null());
    assert_eq!(read(&s.site.root.join("index.html")), "v2");
    ok(s.site.run(&["rollback", "--yes"]));
    assert_eq!(
        s.site.status_json()["gate"]["message"],
        "Closed for the audit"
    );
    ok(s.site.run(&["open"]));
    assert!(s.site.status_json()["gate"].is_null());
}

// Class 8: a version, once published, is immutable; check and stage agree.

/// Sign `bytes` with the world's publisher key, as `publish` does.
fn sign(w: &World, bytes: &[u8]) -> String {
    upkeep::documents::manifest::SecretKey::load(&w.key)
        .unwrap()
        .sign(bytes)
}

fn write_pointer(w: &World, repo: &Path, latest: &str, manifest: &[u8]) {
    let ptr = upkeep::documents::manifest::Pointer {
        format: upkeep::documents::manifest::FORMAT,
        latest: latest.into(),
        manifest_sha256: upkeep::documents::manifest::digest::sha256_bytes(manifest),
        manifest_size: Some(manifest.len() as u64),
        date: "2026-01-01T00:00:00Z".into(),
        expires: "2099-01-01T00:00:00Z".into(),
        releases: vec![latest.into()],
        manifest_deltas: Vec::new(),
    };
    let bytes = upkeep::documents::manifest::to_bytes(&ptr);
    std::fs::write(repo.join("latest.sig"), sign(w, &bytes)).unwrap();
    std::fs::write(repo.join("latest.json"), bytes).unwrap();
}

#[test]
fn check_and_stage_agree_that_an_older_release_is_no_update() {
    let s = story(&[("index.html", b"v1")], &[("index.html", b"v2")]);
    s.stage_next();
    s.site.update_yes();
    // The site's reference now offers only 1.0.0 (a mirror left behind, say).
    let old = s.w.path("old-repo");
    copy_tree(&s.w.repo, &old);
    let m = std::fs::read(old.join("releases/1.0.0/manifest.json")).unwrap();
    write_pointer(&s.w, &old, "1.0.0", &m);
    let srv = spawn_server(&["reference", "--repo", old.to_str().unwrap()]);
    set_config(&s.site.root, "", "reference", &format!("\"{}\"", srv.url));
    let o = s.site.run(&["check"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("older than the installed 1.1.0: nothing to update"),
        "{}",
        stdout(&o)
    );
    let err = fails(s.site.run(&["stage", "--network"]), 1);
    assert!(
        err.contains("release 1.0.0 is older than the installed release 1.1.0"),
        "{err}"
    );
    assert!(err.contains("--allow-downgrade"), "{err}");
}

#[test]
fn a_pointer_naming_one_version_with_another_versions_manifest_is_refused() {
    let s = story(&[("index.html", b"v1")], &[("index.html", b"v2")]);
    // 1.1.0's genuine signed manifest, replayed as "1.2.0".
    let m = std::fs::read(s.w.repo.join("releases/1.1.0/manifest.json")).unwrap();
    let sig = std::fs::read(s.w.repo.join("releases/1.1.0/manifest.sig")).unwrap();
    let dir = s.w.repo.join("releases/1.2.0");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("manifest.json"), &m).unwrap();
    std::fs::write(dir.join("manifest.sig"), &sig).unwrap();
    write_pointer(&s.w, &s.w.repo, "1.2.0", &m);
    let err = fails(s.site.run(&["check"]), 1);
    assert!(
        err.contains("signed as release 1.1.0 but was published as 1.2.0"),
        "{err}"
    );
    fails(s.site.run(&["stage", "--network"]), 1);
    assert!(s.site.status_json()["staged"].is_null());
}

#[test]
fn the_same_version_signed_again_with_other_content_is_refused() {
    let s = story(&[("index.html", b"v1")], &[("index.html", b"v2")]);
    assert_eq!(
        s.site.run(&["check"]).status.code(),
        Some(10),
        "1.1.0 seen once"
    );
    // The publisher re-signs 1.1.0 with other content under the same version.
    let other = s.w.path("other");
    write_tree(&other, &[("index.html", b"v2, silently changed")]);
    let repo2 = s.w.path("repo2");
    ok(upkeep(&[
        "publish",
        other.to_str().unwrap(),
        "--version",
        "1.1.0",
        "--repo",
        repo2.to_str().unwrap(),
        "--key",
        s.w.key.to_str().unwrap(),
    ]));
    let srv = spawn_server(&["reference", "--repo", repo2.to_str().unwrap()]);
    set_config(&s.site.root, "", "reference", &format!("\"{}\"", srv.url));
    let err = fails(s.site.run(&["check"]), 1);
    assert!(
        err.contains("release 1.1.0 is already known here with other content"),
        "{err}"
    );
    assert!(err.contains("new version number"), "{err}");
    let err = fails(s.site.run(&["stage", "--network"]), 1);
    assert!(
        err.contains("already known here with other content"),
        "{err}"
    );
}

// Class 1: a folder that becomes a file, and a file that becomes a folder.

#[test]
fn a_folder_that_becomes_a_file_installs_and_rolls_back_exactly() {
    let s = story(
        &[
            ("index.html", b"v1"),
            ("a/x.txt", b"x1"),
            ("a/y.txt", b"y1"),
        ],
        &[("index.html", b"v2"), ("a", b"a is a file now")],
    );
    // The operator keeps a file of their own in that folder: it must not be lost.
    std::fs::write(s.site.root.join("a/notes.txt"), "mine").unwrap();
    let before = snapshot(&s.site.root);
    s.stage_next();
    let out = stdout(&s.site.run(&["update"]));
    assert!(
        out.contains("a (in the way of the release's files"),
        "{out}"
    );
    s.site.update_yes();
    assert_eq!(read(&s.site.root.join("a")), "a is a file now");
    ok(s.site.run(&["rollback", "--yes"]));
    assert_eq!(read(&s.site.root.join("a/x.txt")), "x1");
    assert_eq!(read(&s.site.root.join("a/notes.txt")), "mine");
    let after = snapshot(&s.site.root);
    let live = |m: &std::collections::BTreeMap<String, String>| {
        m.iter()
            .filter(|(k, _)| !k.starts_with(".upkeep") && !k.starts_with("staging"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(live(&after), live(&before));
    assert!(s.site.status_json()["gate"].is_null());
}

#[test]
fn a_file_that_becomes_a_folder_installs_and_rolls_back_exactly() {
    let s = story(
        &[("index.html", b"v1"), ("x", b"x was a file")],
        &[("index.html", b"v2"), ("x/y.txt", b"inside the new folder")],
    );
    s.stage_next();
    s.site.update_yes();
    assert_eq!(read(&s.site.root.join("x/y.txt")), "inside the new folder");
    ok(s.site.run(&["rollback", "--yes"]));
    assert_eq!(read(&s.site.root.join("x")), "x was a file");
    assert_eq!(read(&s.site.root.join("index.html")), "v1");
}

#[test]
fn a_local_file_where_the_release_needs_a_folder_is_moved_aside_and_back() {
    let s = story(
        &[("index.html", b"v1")],
        &[("index.html", b"v2"), ("docs/guide.html", b"guide")],
    );
    std::fs::write(s.site.root.join("docs"), "the operator's file named docs").unwrap();
    s.stage_next();
    s.site.update_yes();
    assert_eq!(read(&s.site.root.join("docs/guide.html")), "guide");
    let aside = s.site.root.join(".upkeep/aside/run-1/displaced/docs");
    assert_eq!(read(&aside), "the operator's file named docs");
    ok(s.site.run(&["rollback", "--yes"]));
    assert_eq!(
        read(&s.site.root.join("docs")),
        "the operator's file named docs"
    );
}

// Class 2: nothing the operator wrote is lost or silently replaced.

#[test]
fn an_existing_bak_is_moved_aside_and_put_back_by_rollback() {
    let s = story(&[("index.html", b"v1")], &[("index.html", b"v2")]);
    std::fs::write(
        s.site.root.join("index.html.bak"),
        "the operator's own backup",
    )
    .unwrap();
    s.stage_next();
    let out = stdout(&s.site.run(&["update"]));
    assert!(
        out.contains("existing backups moved into .upkeep/aside/"),
        "{out}"
    );
    assert!(out.contains("index.html.bak"), "{out}");
    s.site.update_yes();
    assert_eq!(read(&s.site.root.join("index.html.bak")), "v1");
    assert_eq!(
        read(&s.site.root.join(".upkeep/aside/run-1/bak/index.html.bak")),
        "the operator's own backup"
    );
    ok(s.site.run(&["rollback", "--yes"]));
    assert_eq!(read(&s.site.root.join("index.html")), "v1");
    assert_eq!(
        read(&s.site.root.join("index.html.bak")),
        "the operator's own backup"
    );
}

#[test]
fn a_local_edit_kept_as_bak_survives_the_next_update_and_a_second_rollback_is_refused() {
    let w = World::new();
    let d1 = w.publish("1.0.0", &[("index.html", b"v1")]);
    w.publish("1.1.0", &[("index.html", b"v2")]);
    w.publish("1.2.0", &[("index.html", b"v3")]);
    let srv = w.reference();
    let site = Site::new(w.instance("site", Some(&d1), &srv.url, &[]));
    std::fs::write(site.root.join("index.html"), "my local edit").unwrap();
    site.stage_archive(&w.zip("1.1.0"));
    site.update_yes();
    assert_eq!(read(&site.root.join("index.html.bak")), "my local edit");
    site.stage_archive(&w.zip("1.2.0"));
    let out = stdout(&site.run(&["update"]));
    assert!(out.contains("index.html.bak"), "the plan says so: {out}");
    site.update_yes();
    // The edit is not overwritten: it waits in the aside folder of run 2.
    assert_eq!(read(&site.root.join("index.html.bak")), "v2");
    assert_eq!(
        read(&site.root.join(".upkeep/aside/run-2/bak/index.html.bak")),
        "my local edit"
    );
    ok(site.run(&["rollback", "--yes"]));
    assert_eq!(read(&site.root.join("index.html")), "v2");
    assert_eq!(read(&site.root.join("index.html.bak")), "my local edit");
    // Run 1 cannot be undone exactly any more: refused, and nothing changes.
    let before = snapshot(&site.root);
    let err = fails(site.run(&["rollback", "--yes"]), 1);
    assert!(err.contains("run 2 was already rolled back"), "{err}");
    assert!(err.contains("--allow-downgrade"), "{err}");
    assert_eq!(snapshot(&site.root), before);
    assert_eq!(site.status_json()["installed"], "1.1.0");
}

// Class 9: tasks run once, list what is not a task, and move with the database.

#[test]
fn init_marks_the_installed_releases_tasks_done_unless_asked_to_leave_them_pending() {
    let v1: &[(&str, &[u8])] = &[
        ("index.html", b"v1"),
        ("run_once/001-setup.sh", b"echo ran >> counter.txt\n"),
    ];
    let s = story(
        v1,
        &[
            ("index.html", b"v2"),
            ("run_once/001-setup.sh", b"echo ran >> counter.txt\n"),
        ],
    );
    assert!(s.site.root.join("run_once/001-setup.sh.done").exists());
    s.stage_next();
    s.site.update_yes();
    assert!(
        !s.site.root.join("counter.txt").exists(),
        "ran again at the first update"
    );

    // The same copy with --pending-tasks: the task runs at the next update.
    let d1 = s.w.path("release-1.0.0");
    let root =
        s.w.instance("pending", Some(&d1), &s.srv.url, &["--pending-tasks"]);
    let site = Site::new(root);
    assert!(site.root.join("run_once/001-setup.sh").exists());
    site.stage_archive(&s.w.zip("1.1.0"));
    site.update_yes();
    assert_eq!(read(&site.root.join("counter.txt")), "ran\n");
}

#[test]
fn files_in_run_once_that_are_no_tasks_are_listed_in_the_plan() {
    let s = story(
        &[("index.html", b"v1")],
        &[
            ("index.html", b"v2"),
            ("run_once/002-fix.php", b"<?php // never run"),
        ],
    );
    s.stage_next();
    let out = stdout(&s.site.run(&["update"]));
    assert!(
        out.contains("in run_once/ but not tasks") && out.contains("run_once/002-fix.php"),
        "{out}"
    );
}

#[test]
fn a_sql_task_and_its_done_mark_roll_back_with_the_database() {
    let v1: &[(&str, &[u8])] = &[
        ("index.html", b"v1"),
        ("schema.sql", b"CREATE TABLE notes(t TEXT);\n"),
        (
            "run_once/001-seed.sql",
            b"INSERT INTO notes VALUES ('seeded');\n",
        ),
    ];
    let w = World::new();
    let d1 = w.publish("1.0.0", v1);
    let mut v2 = v1.to_vec();
    v2[0] = ("index.html", b"v2");
    w.publish("1.1.0", &v2);
    let srv = w.reference();
    // Installed by hand, its task never ran: pending.
    let site = Site::new(w.instance("site", Some(&d1), &srv.url, &["--pending-tasks"]));
    site.stage_archive(&w.zip("1.1.0"));
    site.update_yes();
    let db = site.root.join(".upkeep/site.db");
    let rows = |db: &Path| -> i64 {
        rusqlite::Connection::open(db)
            .unwrap()
            .query_row("SELECT count(*) FROM notes", [], |r| r.get(0))
            .unwrap_or(0)
    };
    assert_eq!(rows(&db), 1);
    assert!(site.root.join("run_once/001-seed.sql.done").exists());
    ok(site.run(&["rollback", "--yes"]));
    assert_eq!(rows(&db), 0, "the database is back before the task");
    assert!(
        site.root.join("run_once/001-seed.sql").exists(),
        "so the task is pending again"
    );
    assert!(!site.root.join("run_once/001-seed.sql.done").exists());
    assert_eq!(
        site.status_json()["pending_tasks"][0],
        "run_once/001-seed.sql"
    );
}

// Class 7: disk space is checked before downloading, and a full disk is named as such.

#[test]
fn staging_a_release_larger_than_the_free_disk_is_refused_before_a_byte_is_written() {
    let w = World::new();
    let d1 = w.publish("1.0.0", &[("index.html", b"v1")]);
    let big: Vec<u8> = (0..24_000_000u32).map(|i| (i % 251) as u8).collect();
    w.publish("1.1.0", &[("index.html", b"v2"), ("media/big.bin", &big)]);
    let srv = w.reference();
    let mnt = Tmpfs::mount("20m");
    let root = mnt.path().join("site");
    std::fs::create_dir_all(&root).unwrap();
    copy_tree(&d1, &root);
    ok(upkeep(&[
        "init",
        "--root",
        root.to_str().unwrap(),
        "--reference",
        &srv.url,
        "--public-key",
        &w.pubkey(),
    ]));
    let site = Site::new(&root);
    let e = fails(site.run(&["stage", "--network"]), 1);
    assert!(e.contains("not enough free disk in"), "{e}");
    assert!(e.contains("staging"), "names the folder: {e}");
    assert!(e.contains("hint: free"), "{e}");
    assert!(!e.contains("connection"), "not blamed on the network: {e}");
    assert!(list_files(&root.join("staging")).is_empty());
    assert!(list_files(&root.join(".upkeep/partial")).is_empty());
}

// Class 6: invariant 3 holds for the filesystem too: no write, delete or read through a link.

#[test]
fn a_live_folder_that_links_outside_is_never_written_through() {
    let s = story(
        &[("index.html", b"v1"), ("lib/a.php", b"a1")],
        &[
            ("index.html", b"v2"),
            ("lib/a.php", b"a2"),
            ("lib/b.php", b"b2"),
        ],
    );
    let outside = s.w.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("a.php"), "a1").unwrap();
    std::fs::remove_dir_all(s.site.root.join("lib")).unwrap();
    std::os::unix::fs::symlink(&outside, s.site.root.join("lib")).unwrap();
    s.stage_next();
    let e = fails(s.site.run(&["update", "--yes"]), 1);
    assert!(
        e.contains("is a symbolic link: upkeep never writes through links"),
        "{e}"
    );
    assert!(e.contains("exclude"), "{e}");
    assert_eq!(list_files(&outside), ["a.php"], "nothing written outside");
    assert!(
        s.site.status_json()["gate"].is_null(),
        "refused before closing"
    );
}

#[test]
fn staging_moves_unknown_files_aside_and_refuses_a_linked_staging_folder() {
    let s = story(&[("index.html", b"v1")], &[("index.html", b"v2")]);
    std::fs::write(s.site.root.join("staging/my-notes.txt"), "keep me").unwrap();
    let out = ok(s
        .site
        .run(&["stage", "--archive", s.w.zip("1.1.0").to_str().unwrap()]));
    assert!(
        out.contains("1 files in staging/ that this release does not need"),
        "{out}"
    );
    let aside: Vec<String> = list_files(&s.site.root.join(".upkeep/aside"));
    assert!(
        aside.iter().any(|f| f.ends_with("my-notes.txt")),
        "{aside:?}"
    );

    // staging/ as a link to the operator's files: refused, the files untouched.
    let theirs = s.w.path("theirs");
    std::fs::create_dir_all(&theirs).unwrap();
    std::fs::write(theirs.join("precious.txt"), "do not delete").unwrap();
    std::fs::remove_dir_all(s.site.root.join("staging")).unwrap();
    std::os::unix::fs::symlink(&theirs, s.site.root.join("staging")).unwrap();
    let e = fails(
        s.site
            .run(&["stage", "--archive", s.w.zip("1.1.0").to_str().unwrap()]),
        1,
    );
    assert!(e.contains("is a symbolic link"), "{e}");
    assert_eq!(read(&theirs.join("precious.txt")), "do not delete");
    assert_eq!(list_files(&theirs), ["precious.txt"]);
}

#[test]
fn serve_never_follows_links_nor_serves_hidden_files() {
    let s = story(&[("index.html", b"v1")], &[("index.html", b"v2")]);
    std::os::unix::fs::symlink("/etc/passwd", s.site.root.join("passwd.txt")).unwrap();
    std::os::unix::fs::symlink("/etc", s.site.root.join("etc")).unwrap();
    std::fs::write(s.site.root.join(".env"), "SECRET=1").unwrap();
    std::fs::create_dir_all(s.site.root.join(".well-known")).unwrap();
    std::fs::write(s.site.root.join(".well-known/security.txt"), "Contact: x").unwrap();
    let srv = spawn_server(&["serve", "--root", s.site.root.to_str().unwrap()]);
    let get = |p: &str| reqwest::blocking::get(format!("{}{p}", srv.url)).unwrap();
    assert_eq!(get("index.html").status(), 200);
    for p in [
        "passwd.txt",
        "etc/passwd",
        "etc/hostname",
        ".env",
        ".git/config",
    ] {
        let r = get(p);
        assert_eq!(r.status(), 404, "{p}");
        assert!(!r.text().unwrap().contains("root:"), "{p}");
    }
    assert_eq!(get(".well-known/security.txt").status(), 200);
}

#[test]
fn the_reference_serves_only_its_layout_and_no_links() {
    let s = story(&[("index.html", b"v1")], &[("index.html", b"v2")]);
    std::fs::write(s.w.repo.join("publisher.key"), "secret").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", s.w.repo.join("releases/passwd")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", s.w.repo.join("latest.sig.old")).unwrap();
    let get = |p: &str| reqwest::blocking::get(format!("{}{p}", s.srv.url)).unwrap();
    assert_eq!(get("latest.json").status(), 200);
    assert_eq!(get("releases/1.1.0/manifest.json").status(), 200);
    for p in ["publisher.key", "releases/passwd", "latest.sig.old"] {
        let r = get(p);
        assert_eq!(r.status(), 404, "{p}");
        assert!(!r.text().unwrap().contains("root:"), "{p}");
    }
    // An object replaced by a link is not served either (nor by POST /batch).
    let obj = std::fs::read_dir(s.w.repo.join("objects"))
        .unwrap()
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
        .next()
        .unwrap()
        .path();
    let rel = obj
        .strip_prefix(&s.w.repo)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    std::fs::remove_file(&obj).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", &obj).unwrap();
    assert_eq!(get(&rel).status(), 404);
}

// YACS's emergency path: the release copied over the tree by hand, then `upkeep finish`.

#[test]
fn finish_completes_an_update_copied_by_hand() {
    let v2: &[(&str, &[u8])] = &[
        ("index.html", b"v2"),
        (
            "schema.sql",
            b"CREATE TABLE posts(id INTEGER PRIMARY KEY, title TEXT);\n",
        ),
        (
            "run_once/001-seed.sql",
            b"INSERT INTO posts(title) VALUES ('hello');\n",
        ),
    ];
    let s = story(&[("index.html", b"v1")], v2);
    // The operator copies release 1.1.0 over the live tree (FTP).
    copy_tree(&s.w.path("release-1.1.0"), &s.site.root);
    let o = s.site.run(&["finish", "--yes"]);
    let out = ok(o);
    assert!(
        out.contains("the live tree is release 1.1.0 (installed: 1.0.0)"),
        "{out}"
    );
    let st = s.site.status_json();
    assert_eq!(st["installed"], "1.1.0");
    assert!(st["gate"].is_null());
    assert_eq!(st["history"][0]["to"], "1.1.0");
    assert_eq!(st["history"][0]["status"], "done");
    let db = rusqlite::Connection::open(s.site.root.join(".upkeep/site.db")).unwrap();
    let n: i64 = db
        .query_row("SELECT count(*) FROM posts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1, "schema migrated and the task ran once");
    assert!(s.site.root.join("run_once/001-seed.sql.done").exists());
    // Nothing left to finish, and a check agrees the site is up to date.
    fails(s.site.run(&["finish", "--yes"]), 1);
    assert_eq!(s.site.run(&["check"]).status.code(), Some(0));
}

#[test]
fn finish_refuses_a_tree_that_is_no_release_and_changes_nothing() {
    let s = story(
        &[("index.html", b"v1")],
        &[("index.html", b"v2"), ("new.html", b"n")],
    );
    // Half a copy: index.html only.
    std::fs::write(s.site.root.join("index.html"), "v2").unwrap();
    let before = snapshot(&s.site.root);
    let e = fails(s.site.run(&["finish", "--yes"]), 1);
    assert!(
        e.contains("the closest is 1.1.0, with 1 files missing or different"),
        "{e}"
    );
    assert!(e.contains("--installed V"), "{e}");
    assert_eq!(snapshot(&s.site.root), before);
    assert_eq!(s.site.status_json()["installed"], "1.0.0");
}

// Class 4: staging can be cancelled; what was verified is kept, nothing is recorded as staged.

#[test]
fn a_cancelled_staging_stops_between_files_and_records_nothing() {
    let v2: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| (format!("f/{i:02}.txt"), format!("file {i}").into_bytes()))
        .collect();
    let v2: Vec<(&str, &[u8])> = v2.iter().map(|(p, c)| (p.as_str(), c.as_slice())).collect();
    let s = story(&[("index.html", b"v1")], &v2);
    let inst = upkeep::site::config::Instance::open(&s.site.root).unwrap();
    let progress = std::sync::Arc::new(upkeep::base::progress::Progress::default());
    progress.cancel();
    let e = upkeep::site::stage::stage(
        &inst,
        &upkeep::site::stage::Source::Archive(s.w.zip("1.1.0")),
        &upkeep::site::stage::StageOptions {
            allow_downgrade: false,
            progress,
        },
    )
    .unwrap_err();
    assert!(matches!(e, upkeep::Error::Cancelled(_)), "{e}");
    assert!(e.to_string().contains("stopped by the operator"), "{e}");
    assert!(list_files(&s.site.root.join("staging")).len() <= 1);
    assert!(s.site.status_json()["staged"].is_null());
    // Staging again finishes the job.
    s.stage_next();
    assert_eq!(s.site.status_json()["staged"]["version"], "1.1.0");
}

// Class 11: each error class says what it is.

#[test]
fn a_wrong_reference_url_is_one_line_with_its_own_hint() {
    let s = story(&[("index.html", b"v1")], &[("index.html", b"v2")]);
    set_config(
        &s.site.root,
        "",
        "reference",
        &format!("\"{}no-such-repo/\"", s.srv.url),
    );
    let e = fails(s.site.run(&["check"]), 1);
    let first = e.lines().next().unwrap();
    assert!(first.contains("404"), "{e}");
    assert!(first.len() < 300, "one short line: {first}");
    assert!(!e.contains("<html") && !e.contains("<!DOCTYPE"), "{e}");
    assert!(e.contains("hint: check `reference` in upkeep.toml"), "{e}");
    assert!(!e.contains("finished files are kept"), "{e}");
}

// Invariant 4 through the new swap actions: a crash at any point of a swap that displaces a
// folder and moves an old backup aside ends, after resume, exactly new; after rollback,
// exactly old.

#[test]
fn a_crash_anywhere_in_a_displacing_swap_resumes_or_rolls_back_exactly() {
    use std::os::unix::process::ExitStatusExt;
    let s = story(
        &[
            ("index.html", b"v1"),
            ("a/x.txt", b"x1"),
            ("x", b"x was a file"),
        ],
        &[
            ("index.html", b"v2"),
            ("a", b"a is a file now"),
            ("x/y.txt", b"y"),
        ],
    );
    std::fs::write(s.site.root.join("index.html.bak"), "the operator's backup").unwrap();
    s.stage_next();
    let live = |root: &Path| {
        snapshot(root)
            .into_iter()
            .filter(|(k, _)| !k.starts_with(".upkeep") && !k.starts_with("staging"))
            .collect::<Vec<_>>()
    };
    let old = live(&s.site.root);
    // The new tree, from a run that was not interrupted.
    let clean = s.w.path("clean");
    copy_tree(&s.site.root, &clean);
    let trace = s.w.path("trace.txt");
    ok(upkeep_env(
        &["update", "--root", clean.to_str().unwrap(), "--yes"],
        &[("UPKEEP_CRASH_TRACE", trace.to_str().unwrap())],
    ));
    let new = live(&clean);
    let points: Vec<String> = read(&trace)
        .lines()
        .filter(|p| p.starts_with("swap:"))
        .map(String::from)
        .collect();
    assert!(
        points.iter().any(|p| p.ends_with(":old-bak-aside")),
        "{points:?}"
    );
    for (i, point) in points.iter().enumerate() {
        for then in ["resume", "rollback"] {
            let root = s.w.path(&format!("crash-{i}-{then}"));
            copy_tree(&s.site.root, &root);
            let r = root.to_str().unwrap();
            let o = upkeep_env(
                &["update", "--root", r, "--yes"],
                &[("UPKEEP_CRASH_AT", point)],
            );
            assert_eq!(o.status.signal(), Some(9), "{point}: {}", stderr(&o));
            let yes: &[&str] = if then == "rollback" { &["--yes"] } else { &[] };
            ok(upkeep(&[&[then, "--root", r], yes].concat()));
            let want = if then == "resume" { &new } else { &old };
            assert_eq!(&live(&root), want, "{point} then {then}");
        }
    }
}

#[test]
fn a_shell_task_keeps_its_done_mark_through_a_rollback_and_never_runs_twice() {
    let v1: &[(&str, &[u8])] = &[
        ("index.html", b"v1"),
        ("run_once/001-notify.sh", b"echo ran >> counter.txt\n"),
    ];
    let w = World::new();
    let d1 = w.publish("1.0.0", v1);
    let mut v2 = v1.to_vec();
    v2[0] = ("index.html", b"v2");
    w.publish("1.1.0", &v2);
    w.publish("1.1.1", &[("index.html", b"v3"), v1[1]]);
    let srv = w.reference();
    let site = Site::new(w.instance("site", Some(&d1), &srv.url, &["--pending-tasks"]));
    site.stage_archive(&w.zip("1.1.0"));
    site.update_yes();
    ok(site.run(&["rollback", "--yes"]));
    // What the task did outside the database is not undone, so it stays done.
    assert!(site.root.join("run_once/001-notify.sh.done").exists());
    site.stage_archive(&w.zip("1.1.1"));
    site.update_yes();
    assert_eq!(read(&site.root.join("counter.txt")), "ran\n", "ran once");
}
