//! Real sites (issue 22): the operator's configuration kept the dpkg way, any file name a
//! release ships, owners and modes kept, tasks and hooks as the site's owner.

mod common;

use std::path::Path;

use common::*;

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A site at `v1` with `v2` staged, from a world that published both.
fn staged_site(v1: &[(&str, &[u8])], v2: &[(&str, &[u8])]) -> (World, Server, Site) {
    let w = World::new();
    let d1 = w.publish("1.0.0", v1);
    w.publish("1.1.0", v2);
    let srv = w.reference();
    let site = Site::new(w.instance("site", Some(&d1), &srv.url, &[]));
    (w, srv, site)
}

#[test]
fn the_operators_configuration_is_kept_the_dpkg_way() {
    let (w, _srv, site) = staged_site(
        &[
            ("index.php", b"v1"),
            ("config.php", b"<?php $db = 'release';"),
            ("sites/a/settings.php", b"release 1"),
        ],
        &[
            ("index.php", b"v2"),
            ("config.php", b"<?php $db = 'release';"),
            ("sites/a/settings.php", b"release 2"),
        ],
    );
    let root = &site.root;
    std::fs::write(root.join("config.php"), "<?php $db = 'mine';").unwrap();
    std::fs::write(root.join("sites/a/settings.php"), "mine too").unwrap();
    let toml = read(&root.join("upkeep.toml"));
    std::fs::write(
        root.join("upkeep.toml"),
        format!("keep = [\"sites/*/settings.php\"]\n{toml}"),
    )
    .unwrap();
    site.stage_archive(&w.zip("1.1.0"));
    let plan = stdout(&site.run(&["update"]));
    assert!(
        plan.contains("changed here, and not by the release: left as they are (1):\n  config.php"),
        "{plan}"
    );
    assert!(
        plan.contains("kept as they are (upkeep.toml keep)")
            && plan.contains("sites/a/settings.php"),
        "{plan}"
    );
    assert!(
        !plan.contains("locally modified"),
        "nothing to decide: {plan}"
    );
    site.update_yes();
    assert_eq!(read(&root.join("index.php")), "v2");
    assert_eq!(read(&root.join("config.php")), "<?php $db = 'mine';");
    assert_eq!(read(&root.join("sites/a/settings.php")), "mine too");
    assert!(
        !root.join("config.php.bak").exists(),
        "no backup of a file left alone"
    );
    assert!(!root.join("sites/a/settings.php.bak").exists());
    // And the next check does not offer them again.
    let o = site.run(&["check"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    ok(site.run(&["rollback", "--yes"]));
    assert_eq!(read(&root.join("config.php")), "<?php $db = 'mine';");
    assert_eq!(read(&root.join("index.php")), "v1");
}

#[test]
fn a_release_shipping_bak_and_done_files_publishes_installs_and_rolls_back_exactly() {
    let v1: &[(&str, &[u8])] = &[
        ("a.module", b"module 1"),
        ("a.module.bak", b"fixture 1"),
        ("x/bar.done", b"done 1"),
    ];
    let v2: &[(&str, &[u8])] = &[
        ("a.module", b"module 2"),
        ("a.module.bak", b"fixture 2"),
        ("x/bar.done", b"done 2"),
        ("new.bak", b"new"),
    ];
    let (w, _srv, site) = staged_site(v1, v2);
    let root = &site.root;
    let before = read_tree(root);
    assert_eq!(before.len(), 3, "{before:?}");
    site.stage_archive(&w.zip("1.1.0"));
    site.update_yes();
    let after = read_tree(root);
    for (p, c) in v2 {
        assert_eq!(after[*p], c.to_vec(), "{p}: the release's own file");
    }
    // Replaced files keep their previous version beside them, NAME.bak (the fixture's own is
    // a.module.bak.bak), except where that name is a release file's: a.module's waits aside.
    assert_eq!(after["a.module.bak.bak"], b"fixture 1");
    assert_eq!(after["x/bar.done.bak"], b"done 1");
    assert_eq!(after.len(), v2.len() + 2, "{:?}", after.keys());
    let aside = list_files(&root.join(".upkeep/aside"));
    assert!(
        aside.contains(&"run-1/backup/a.module.bak".to_string()),
        "{aside:?}"
    );
    assert_eq!(
        read(&root.join(".upkeep/aside/run-1/backup/a.module.bak")),
        "module 1"
    );
    ok(site.run(&["rollback", "--yes"]));
    assert_eq!(read_tree(root), before);
}

#[test]
fn backups_aside_leave_nothing_of_upkeeps_in_the_web_root() {
    let (w, _srv, site) = staged_site(
        &[("index.php", b"v1"), ("old.php", b"old")],
        &[("index.php", b"v2")],
    );
    set_config(&site.root, "files", "backups", "\"aside\"");
    site.stage_archive(&w.zip("1.1.0"));
    site.update_yes();
    let live = read_tree(&site.root);
    assert_eq!(live.keys().collect::<Vec<_>>(), ["index.php"], "{live:?}");
    let aside = list_files(&site.root.join(".upkeep/aside/run-1/backup"));
    assert_eq!(aside, ["index.php.bak", "old.php.bak"]);
    ok(site.run(&["rollback", "--yes"]));
    assert_eq!(read(&site.root.join("index.php")), "v1");
    assert_eq!(read(&site.root.join("old.php")), "old");
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn owner(p: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(p).unwrap();
    (m.uid(), m.gid())
}

/// Publish release `v` from `files`, the paths in `exec` executable.
fn publish_with_modes(
    w: &World,
    v: &str,
    files: &[(&str, &[u8])],
    exec: &[&str],
) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = w.path(&format!("release-{v}"));
    write_tree(&dir, files);
    for e in exec {
        std::fs::set_permissions(dir.join(e), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    w.publish_dir(&dir, v, &[]);
    dir
}

#[test]
fn owners_and_modes_are_kept_never_loosened_and_put_back_by_rollback() {
    if upkeep::base::users::euid() != 0 {
        eprintln!("skipped: owners can only be tested as root (CI runs as root)");
        return;
    }
    let web = upkeep::base::users::user("www-data").expect("Debian's www-data user");
    let w = World::new();
    let d1 = publish_with_modes(
        &w,
        "1.0.0",
        &[
            ("index.php", b"v1"),
            ("secret.php", b"s1"),
            ("bin/cron.sh", b"echo 1"),
        ],
        &["bin/cron.sh"],
    );
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(w.repo.join("releases/1.0.0/manifest.json")).unwrap(),
    )
    .unwrap();
    let entry = |p: &str| {
        manifest["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == p)
            .unwrap()
            .clone()
    };
    assert_eq!(
        entry("bin/cron.sh")["exec"],
        true,
        "the manifest records the execute bit"
    );
    assert!(
        entry("index.php").get("exec").is_none(),
        "and only where it is set"
    );
    publish_with_modes(
        &w,
        "1.1.0",
        &[
            ("index.php", b"v2"),
            ("secret.php", b"s2"),
            ("bin/cron.sh", b"echo 2"),
            ("bin/new.sh", b"echo new"),
            ("lib/deep/new.php", b"new"),
        ],
        &["bin/cron.sh", "bin/new.sh"],
    );
    let srv = w.reference();
    let site = Site::new(w.instance("site", Some(&d1), &srv.url, &[]));
    let root = &site.root;
    // The site as a web server's user has it: files www-data's, a secret kept private.
    give_to(root, &web);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        root.join("secret.php"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::set_permissions(
        root.join("index.php"),
        std::fs::Permissions::from_mode(0o664),
    )
    .unwrap();
    site.stage_archive(&w.zip("1.1.0"));
    site.update_yes();
    let ids = (web.uid, web.gid);
    assert_eq!(read(&root.join("secret.php")), "s2");
    assert_eq!(
        (
            mode(&root.join("secret.php")),
            owner(&root.join("secret.php"))
        ),
        (0o600, ids),
        "0600 stays 0600"
    );
    assert_eq!(
        (
            mode(&root.join("index.php")),
            owner(&root.join("index.php"))
        ),
        (0o664, ids)
    );
    assert_eq!(
        mode(&root.join("bin/cron.sh")),
        0o755,
        "an executable stays executable"
    );
    assert_eq!(
        (
            mode(&root.join("bin/new.sh")),
            owner(&root.join("bin/new.sh"))
        ),
        (0o755, ids)
    );
    assert_eq!(
        (
            mode(&root.join("lib/deep/new.php")),
            owner(&root.join("lib/deep/new.php"))
        ),
        (0o644, ids)
    );
    assert_eq!(
        (mode(&root.join("lib/deep")), owner(&root.join("lib/deep"))),
        (0o755, ids),
        "new folders too"
    );
    assert_eq!(owner(&root.join("lib")), ids);
    ok(site.run(&["rollback", "--yes"]));
    assert_eq!(read(&root.join("secret.php")), "s1");
    assert_eq!(
        (
            mode(&root.join("secret.php")),
            owner(&root.join("secret.php"))
        ),
        (0o600, ids)
    );
    assert_eq!(
        (
            mode(&root.join("bin/cron.sh")),
            owner(&root.join("bin/cron.sh"))
        ),
        (0o755, ids)
    );
    assert!(!root.join("lib").exists());
}

#[test]
fn started_as_root_upkeep_works_as_the_sites_user_and_leaves_it_a_site_it_can_update() {
    if upkeep::base::users::euid() != 0 {
        eprintln!("skipped: needs root (CI runs as root)");
        return;
    }
    let web = upkeep::base::users::user("www-data").expect("Debian's www-data user");
    let w = World::new();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(w.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let d1 = w.publish("1.0.0", &[("index.php", b"v1")]);
    let task =
        b"id -u > who.txt\necho \"$UPKEEP_FROM->$UPKEEP_TO $UPKEEP_EVENT $USER $HOME\" > env.txt\n";
    w.publish(
        "1.1.0",
        &[("index.php", b"v2"), ("run_once/01-who.sh", task)],
    );
    let srv = w.reference();
    let root = w.path("site");
    std::fs::create_dir_all(&root).unwrap();
    copy_tree(&d1, &root);
    give_to(&root, &web);
    // Everything below as root, the way an operator's sudo runs it.
    w.init_at(&root, &srv.url, &[]);
    let site = Site::new(&root);
    set_config(
        &root,
        "auto",
        "after",
        "[\"id -u >> hooks.txt; echo $UPKEEP_EVENT >> hooks.txt\"]",
    );
    site.stage_archive(&w.zip("1.1.0"));
    site.update_yes();
    assert_eq!(
        read(&root.join("who.txt")).trim(),
        web.uid.to_string(),
        "the task ran as the site's user"
    );
    assert_eq!(
        read(&root.join("env.txt")).trim(),
        format!("1.0.0->1.1.0 update {} {}", web.name, web.home)
    );
    assert_eq!(
        read(&root.join("hooks.txt")),
        format!("{}\nupdate\n", web.uid)
    );
    // upkeep's own files are the site's user's: it can run its own passes.
    for e in walkdir::WalkDir::new(root.join(".upkeep"))
        .into_iter()
        .chain(walkdir::WalkDir::new(root.join("staging")))
    {
        let e = e.unwrap();
        assert_eq!(owner(e.path()).0, web.uid, "{}", e.path().display());
    }
    assert_eq!(owner(&root.join("upkeep.toml")).0, web.uid);
    let o = std::process::Command::new("runuser")
        .args([
            "-u",
            "www-data",
            "--",
            BIN,
            "status",
            "--root",
            root.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // A rollback tells the caches too (PHP's opcache would serve the undone release).
    ok(site.run(&["rollback", "--yes"]));
    assert_eq!(
        read(&root.join("hooks.txt")),
        format!("{0}\nupdate\n{0}\nrollback\n", web.uid)
    );
}

#[test]
fn root_never_hands_the_sites_user_what_a_link_in_its_folders_points_to() {
    if upkeep::base::users::euid() != 0 {
        eprintln!("skipped: needs root (CI runs as root)");
        return;
    }
    let web = upkeep::base::users::user("www-data").expect("Debian's www-data user");
    let w = World::new();
    let d1 = w.publish("1.0.0", &[("index.php", b"v1")]);
    let srv = w.reference();
    let root = w.instance("site", Some(&d1), &srv.url, &[]);
    // The site's user (compromised, say) plants a link where upkeep's inbox is.
    let precious = w.path("precious");
    std::fs::create_dir_all(&precious).unwrap();
    std::fs::write(precious.join("root-only"), "secret").unwrap();
    std::fs::remove_dir_all(root.join("inbox")).unwrap();
    std::os::unix::fs::symlink(&precious, root.join("inbox")).unwrap();
    give_to(&root, &web);
    let e = fails(upkeep(&["status", "--root", root.to_str().unwrap()]), 1);
    assert!(e.contains("symbolic link"), "{e}");
    assert_eq!(owner(&precious.join("root-only")).0, 0, "still root's");
}
