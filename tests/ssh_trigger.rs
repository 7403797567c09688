//! The SSH trigger through a real `sshd` on loopback, with the README's `authorized_keys` line:
//! the hub's key runs one unattended pass of the site and nothing else, whatever command the
//! client asks for.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use common::smtp::free_port;
use common::*;

const SSHD: &str = "/usr/sbin/sshd";

/// A real sshd, stopped on drop.
struct Sshd {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    let o = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Start sshd on a free port, trusting the client key with `authorized_line` (the README's
/// line, `CLIENT_KEY` standing for the key).
fn sshd(dir: &Path, authorized_line: &str) -> Option<Sshd> {
    if !Path::new(SSHD).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "sshd is missing on CI (.ci/run installs openssh-server)"
        );
        eprintln!("skipped: sshd is not installed (apt-get install openssh-server)");
        return None;
    }
    // sshd running as root insists on its privilege-separation folder.
    let _ = std::fs::create_dir_all("/run/sshd");
    keygen(&dir.join("host_key"));
    keygen(&dir.join("hub_key"));
    let client = std::fs::read_to_string(dir.join("hub_key.pub")).unwrap();
    std::fs::write(
        dir.join("authorized_keys"),
        authorized_line.replace("CLIENT_KEY", client.trim()),
    )
    .unwrap();
    let port = free_port();
    let d = dir.display();
    std::fs::write(
        dir.join("sshd_config"),
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             PermitRootLogin prohibit-password\nLogLevel ERROR\n"
        ),
    )
    .unwrap();
    let child = Command::new(SSHD)
        .args(["-D", "-e", "-f"])
        .arg(dir.join("sshd_config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start sshd");
    assert!(wait_port(port), "sshd did not listen");
    Some(Sshd {
        child,
        port,
        dir: dir.to_path_buf(),
    })
}

impl Sshd {
    /// `ssh -p PORT USER@127.0.0.1 [COMMAND]` with the hub's key.
    fn ssh(&self, command: Option<&str>) -> Output {
        let user = std::env::var("USER").unwrap_or_else(|_| whoami());
        let mut c = Command::new("ssh");
        c.args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=10",
            "-p",
            &self.port.to_string(),
            "-i",
        ])
        .arg(self.dir.join("hub_key"))
        .arg(format!("{user}@127.0.0.1"));
        if let Some(cmd) = command {
            c.arg(cmd);
        }
        c.stdin(Stdio::null()).output().unwrap()
    }
}

fn whoami() -> String {
    String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string()
}

/// The README's `authorized_keys` line for a site.
fn readme_line(root: &Path) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let line = readme
        .lines()
        .find(|l| l.starts_with("command=\"upkeep trigger --root"))
        .expect("the README gives the authorized_keys line");
    line.replace("upkeep trigger", &format!("{BIN} trigger"))
        .replace("/var/www/site", root.to_str().unwrap())
        .replace("ssh-ed25519 AAAA... hub", "CLIENT_KEY")
}

#[test]
fn the_hubs_ssh_key_runs_one_pass_and_nothing_else() {
    let (w, _srv, site) = unattended_site(&[]);
    let ssh_dir = w.path("ssh");
    std::fs::create_dir_all(&ssh_dir).unwrap();
    let line = readme_line(&site.root);
    assert!(line.contains("no-pty") && line.contains("no-port-forwarding"));
    let Some(sshd) = sshd(&ssh_dir, &line) else {
        return;
    };

    // Whatever the client asks to run, the forced command runs instead, and refuses it.
    let marker = w.path("pwned");
    for evil in [
        format!("check; touch {}", marker.display()),
        format!("$(touch {})", marker.display()),
        format!("auto && touch {}", marker.display()),
        "cat /etc/shadow".to_string(),
        "status --root /".to_string(),
    ] {
        let o = sshd.ssh(Some(&evil));
        assert_eq!(o.status.code(), Some(2), "{evil:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("may only trigger an update pass"),
            "{evil:?}: {}",
            stderr(&o)
        );
        assert!(!stdout(&o).contains("root:"), "{evil:?}");
    }
    assert!(!marker.exists(), "no shell ran the client's command");
    assert_eq!(
        std::fs::read_to_string(site.root.join("index.html")).unwrap(),
        "v1",
        "nothing ran"
    );

    // The plain trigger (no command) runs the site's own pass, which updates it.
    let o = sshd.ssh(None);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("UPDATED"), "{}", stdout(&o));
    assert_eq!(
        std::fs::read_to_string(site.root.join("index.html")).unwrap(),
        "v2"
    );
    // A word from the list is a pass too: nothing left to do now.
    let o = sshd.ssh(Some("check"));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(site.status_json()["installed"], "1.1.0");
}
