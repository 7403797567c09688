//! Helpers that make a scenario test read as the story of an update: a world with a key, a
//! repository, release trees, a reference server on an ephemeral port, and instances.
#![allow(dead_code)]

pub mod fault;
pub mod fleet;
pub mod mariadb;
pub mod nginx;
pub mod panel;
pub mod php;
pub mod postgres;
pub mod scenario;
pub mod smtp;
pub mod webhook;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_upkeep");

/// Run the binary; returns the output.
pub fn upkeep(args: &[&str]) -> Output {
    upkeep_env(args, &[])
}

/// Run the binary with extra environment variables.
pub fn upkeep_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args).stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run upkeep")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Assert success and return stdout.
#[track_caller]
pub fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "expected success, got {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Assert failure with the given exit code and return stderr.
#[track_caller]
pub fn fails(o: Output, code: i32) -> String {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(&o),
        stderr(&o)
    );
    stderr(&o)
}

/// A server child process killed on drop.
pub struct Server {
    pub child: Child,
    pub url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `upkeep ARGS --listen 127.0.0.1:0` and read the URL it prints.
pub fn spawn_server(args: &[&str]) -> Server {
    spawn_server_on(args, "127.0.0.1:0")
}

/// Start `upkeep ARGS --listen ADDR` (a fixed port: a server coming back where sites expect
/// it) and read the URL it prints.
pub fn spawn_server_on(args: &[&str], listen: &str) -> Server {
    spawn_server_env(args, listen, &[])
}

/// [`spawn_server_on`] with extra environment variables.
pub fn spawn_server_env(args: &[&str], listen: &str, env: &[(&str, &str)]) -> Server {
    let mut child = Command::new(BIN)
        .args(args)
        .args(["--listen", listen])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn server");
    let mut line = String::new();
    let mut r = BufReader::new(child.stdout.take().expect("piped"));
    r.read_line(&mut line).expect("read server banner");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_string();
    // Keep draining stdout so that the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in r.lines() {});
    Server { child, url }
}

/// Bounded wait until something listens on a loopback port.
pub fn wait_port(port: u16) -> bool {
    for _ in 0..500 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    false
}

/// Write files (path, contents) below `dir`.
pub fn write_tree(dir: &Path, files: &[(&str, &[u8])]) {
    for (p, c) in files {
        let path = dir.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, c).unwrap();
    }
}

/// Regular files below `dir` as (relative path, full path), those `keep` accepts.
fn files_below(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(dir).min_depth(1) {
        let e = e.unwrap();
        let rel = e
            .path()
            .strip_prefix(dir)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if e.file_type().is_file() && keep(&rel) {
            out.push((rel, e.path().to_path_buf()));
        }
    }
    out
}

/// Every regular file below `dir` (relative path -> contents), leaving out the instance's own
/// folders so that two live trees can be compared.
pub fn read_tree(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let own = |rel: &str| {
        ["staging", "inbox", ".upkeep", "upkeep.toml"].contains(&rel.split('/').next().unwrap())
    };
    files_below(dir, |rel| !own(rel))
        .into_iter()
        .map(|(rel, p)| (rel, std::fs::read(p).unwrap()))
        .collect()
}

/// A publisher, its repository and some sites, all in one temporary folder.
pub struct World {
    pub tmp: tempfile::TempDir,
    pub key: PathBuf,
    pub repo: PathBuf,
}

impl World {
    pub fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let key = tmp.path().join("publisher.key");
        ok(upkeep(&["keygen", "--out", key.to_str().unwrap()]));
        let repo = tmp.path().join("repo");
        World { tmp, key, repo }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    pub fn pubkey(&self) -> String {
        format!("{}.pub", self.key.display())
    }

    /// Write a release tree and publish it.
    pub fn publish(&self, version: &str, files: &[(&str, &[u8])]) -> PathBuf {
        let dir = self.path(&format!("release-{version}"));
        write_tree(&dir, files);
        self.publish_dir(&dir, version, &[]);
        dir
    }

    /// `upkeep publish DIR --version V` into the world's repository, plus `extra`.
    pub fn publish_dir(&self, dir: &Path, version: &str, extra: &[&str]) {
        let mut a = vec![
            "publish",
            dir.to_str().unwrap(),
            "--version",
            version,
            "--repo",
            self.repo.to_str().unwrap(),
            "--key",
            self.key.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        ok(upkeep(&a));
    }

    /// An instance of `installed` whose site database is on a server (`url`, its password in a
    /// 0600 file), giving up on a held lock after one retry of 1 s, with release `staged` staged.
    pub fn server_db_template(
        &self,
        installed: &Path,
        reference: &str,
        url: &str,
        password: &str,
        staged: &str,
    ) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let template = self.instance("template", Some(installed), reference, &[]);
        let pass = self.path("db.pass");
        std::fs::write(&pass, password).unwrap();
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
        let toml = template.join("upkeep.toml");
        let text = std::fs::read_to_string(&toml)
            .unwrap()
            .replace("database = \".upkeep/site.db\"\n", "");
        std::fs::write(
            &toml,
            format!(
                "{text}\n[database]\nurl = \"{url}\"\npassword_file = \"{}\"\nlock_timeout_secs = 1\nlock_retries = 1\n",
                pass.display()
            ),
        )
        .unwrap();
        ok(upkeep(&[
            "stage",
            "--root",
            template.to_str().unwrap(),
            "--archive",
            self.zip(staged).to_str().unwrap(),
        ]));
        template
    }

    /// `upkeep init --root ROOT --reference URL --public-key KEY.pub EXTRA...`.
    pub fn init_at(&self, root: &Path, url: &str, extra: &[&str]) {
        let pk = self.pubkey();
        let mut a = vec![
            "init",
            "--root",
            root.to_str().unwrap(),
            "--reference",
            url,
            "--public-key",
            &pk,
        ];
        a.extend_from_slice(extra);
        ok(upkeep(&a));
    }

    /// `upkeep mirror --from FROM --to TO --public-key KEY.pub EXTRA...`.
    pub fn mirror(&self, from: &str, to: &Path, extra: &[&str]) -> Output {
        let pubkey = self.pubkey();
        let mut a = vec![
            "mirror",
            "--from",
            from,
            "--to",
            to.to_str().unwrap(),
            "--public-key",
            &pubkey,
        ];
        a.extend_from_slice(extra);
        upkeep(&a)
    }

    /// Remove the manifest deltas publish stored (sites then fetch manifests whole, after a
    /// 404 for the delta the pointer lists): for tests about the whole manifest's transfer.
    pub fn drop_manifest_deltas(&self) {
        for e in walkdir::WalkDir::new(self.repo.join("releases"))
            .into_iter()
            .flatten()
        {
            if e.file_name()
                .to_string_lossy()
                .starts_with("manifest.from-")
            {
                std::fs::remove_file(e.path()).unwrap();
            }
        }
    }

    pub fn zip(&self, version: &str) -> PathBuf {
        self.repo
            .join(format!("releases/{version}/upkeep-{version}.zip"))
    }

    /// The online key (made and delegated by the release key on first use).
    pub fn online_key(&self) -> String {
        let online = self.path("online.key");
        if !online.exists() {
            let out = ok(upkeep(&[
                "keygen",
                "--role",
                "online",
                "--out",
                online.to_str().unwrap(),
            ]));
            assert!(out.contains("this is an online key"), "{out}");
            let out = ok(upkeep(&[
                "delegate",
                "--repo",
                self.repo.to_str().unwrap(),
                "--key",
                self.key.to_str().unwrap(),
                "--online-key-pub",
                &format!("{}.pub", online.display()),
            ]));
            assert!(out.contains("delegated 1 online key(s)"), "{out}");
        }
        online.to_str().unwrap().to_string()
    }

    /// `upkeep promote VERSION --channel CHANNEL` with the online key, plus `extra`.
    pub fn promote(&self, version: &str, channel: &str, extra: &[&str]) -> Output {
        let key = self.online_key();
        let repo = self.repo.to_str().unwrap().to_string();
        let mut a = vec![
            "promote",
            version,
            "--channel",
            channel,
            "--repo",
            &repo,
            "--key",
            &key,
        ];
        a.extend_from_slice(extra);
        upkeep(&a)
    }

    pub fn reference(&self) -> Server {
        spawn_server(&["reference", "--repo", self.repo.to_str().unwrap()])
    }

    /// An instance whose live tree is a copy of `from` (or empty), initialised against `url`.
    pub fn instance(&self, name: &str, from: Option<&Path>, url: &str, extra: &[&str]) -> PathBuf {
        let root = self.path(name);
        std::fs::create_dir_all(&root).unwrap();
        if let Some(src) = from {
            copy_tree(src, &root);
        }
        self.init_at(&root, url, extra);
        root
    }
}

/// A repository with releases 1.0.0 and 1.1.0 (index.html "v1", then "v2"), its reference, and
/// a site at 1.0.0 (`init` given `extra`) whose unattended passes take minor updates.
pub fn unattended_site(extra: &[&str]) -> (World, Server, Site) {
    let w = World::new();
    let d1 = w.publish("1.0.0", &[("index.html", b"v1")]);
    w.publish("1.1.0", &[("index.html", b"v2")]);
    let srv = w.reference();
    let site = Site::new(w.instance("site", Some(&d1), &srv.url, extra));
    set_config(&site.root, "auto", "enabled", "true");
    set_config(&site.root, "auto", "allow", "\"minor\"");
    (w, srv, site)
}

pub fn copy_tree(src: &Path, dst: &Path) {
    for e in walkdir::WalkDir::new(src).min_depth(1) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(src).unwrap();
        let to = dst.join(rel);
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&to).unwrap();
        } else {
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

/// Change a setting in an instance's upkeep.toml (`section.key = value`, value as TOML; a
/// section may be nested, "auto.health", and is made when missing).
pub fn set_config(root: &Path, section: &str, key: &str, value: &str) {
    let p = root.join("upkeep.toml");
    let mut doc: toml::Table = toml::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let v: toml::Value =
        toml::from_str::<toml::Table>(&format!("v = {value}")).unwrap()["v"].clone();
    let mut table = &mut doc;
    for part in section.split('.').filter(|s| !s.is_empty()) {
        table = table
            .entry(part)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .expect("a section");
    }
    table.insert(key.into(), v);
    std::fs::write(&p, toml::to_string(&doc).unwrap()).unwrap();
}

/// Files below `dir`, relative.
pub fn list_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_type().is_dir())
        .map(|e| {
            e.path()
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

pub fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// Path -> SHA-256 of every file below `dir`, leaving out any `.upkeep/` folder (upkeep's own
/// state changes with every command). Readable when an assertion fails.
pub fn snapshot(dir: &Path) -> std::collections::BTreeMap<String, String> {
    files_below(dir, |rel| !rel.split('/').any(|c| c == ".upkeep"))
        .into_iter()
        .map(|(rel, p)| (rel, sha256_hex(&std::fs::read(p).unwrap())))
        .collect()
}

/// One instance, driven through the binary: a scenario reads as one line per step.
pub struct Site {
    pub root: PathBuf,
}

impl Site {
    pub fn new(root: impl Into<PathBuf>) -> Site {
        Site { root: root.into() }
    }

    /// `upkeep ARGS --root ROOT`.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut a: Vec<&str> = args.to_vec();
        a.extend(["--root", self.root.to_str().unwrap()]);
        upkeep(&a)
    }

    /// Stage a release zip; panics on failure.
    pub fn stage_archive(&self, zip: &Path) -> String {
        ok(self.run(&["stage", "--archive", zip.to_str().unwrap()]))
    }

    /// `update --yes`; panics on failure.
    pub fn update_yes(&self) -> String {
        ok(self.run(&["update", "--yes"]))
    }

    /// The plan `update` would run now, and its digest, as a script sees them (no terminal:
    /// nothing is applied).
    pub fn plan(&self) -> (String, serde_json::Value) {
        let o = self.run(&["update", "--json"]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        let err = stderr(&o);
        let json_end = err.find("\n}\n").expect("the plan as JSON") + 2;
        let v: serde_json::Value = serde_json::from_str(&err[..json_end]).unwrap();
        (v["digest"].as_str().unwrap().to_string(), v["plan"].clone())
    }

    /// `status --json`.
    pub fn status_json(&self) -> serde_json::Value {
        serde_json::from_str(&ok(self.run(&["status", "--json"]))).unwrap()
    }
}

/// A tmpfs of `size` (as `mount -o size=`), unmounted on drop: a small disk for free-space
/// tests. Needs root, as CI has.
pub struct Tmpfs {
    pub dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount");
        assert!(
            st.success(),
            "mounting a tmpfs needs root (CI runs as root)"
        );
        Tmpfs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// A process that still runs (a zombie waiting for init to reap it has stopped running).
pub fn alive(pid: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) else {
        return false;
    };
    // The state letter follows the command name in parentheses.
    let state = stat.rsplit(')').next().unwrap_or("").trim_start();
    !(state.starts_with('Z') || state.starts_with('X'))
}

/// Every entry below `root` (links themselves, not what they point to) given to `u`, as a
/// site owned by the web server's user is.
pub fn give_to(root: &Path, u: &upkeep::base::users::User) {
    for e in walkdir::WalkDir::new(root) {
        std::os::unix::fs::lchown(e.unwrap().path(), Some(u.uid), Some(u.gid)).unwrap();
    }
}
