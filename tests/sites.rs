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
    ok(site.run(&["rollback"]));
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
    ok(site.run(&["rollback"]));
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
    ok(site.run(&["rollback"]));
    assert_eq!(read(&site.root.join("index.php")), "v1");
    assert_eq!(read(&site.root.join("old.php")), "old");
}
