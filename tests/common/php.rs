//! Real web stacks on loopback: php-fpm (Debian's php-fpm package) on a socket, and Apache 2.4
//! (Debian's apache2) with only the modules the README's lines need, each run by the test with
//! every path in a scratch folder and stopped on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The first php-fpm binary of the machine (`php-fpm8.2` on Debian 12), if any.
pub fn php_fpm_binary() -> Option<PathBuf> {
    std::fs::read_dir("/usr/sbin")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("php-fpm"))
        })
}

/// Whether the stack's servers are installed; when not, the test says so and skips (CI
/// installs them: it never skips).
pub fn stack_installed(apache: bool) -> bool {
    let nginx = Command::new("nginx").arg("-v").output().is_ok();
    let apache2 = !apache || Path::new("/usr/sbin/apache2").exists();
    if nginx && apache2 && php_fpm_binary().is_some() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "nginx, php-fpm or apache2 is missing on CI"
    );
    eprintln!(
        "skipped: nginx, php-fpm or apache2 is not installed (apt-get install nginx-light php-fpm apache2)"
    );
    false
}

/// A process stopped with SIGTERM on drop (a master stops its workers).
pub struct Daemon(Child);

impl Daemon {
    /// Stop `c` when dropped.
    pub fn new(c: Child) -> Daemon {
        Daemon(c)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// php-fpm with one pool on `tmp/php.sock`: with `user`, the whole daemon runs as that user
/// (a site's own pool, which the site's restart hook can reload with `kill -USR2` on
/// `tmp/php-fpm.pid`); with `None`, as root with `-R` (the test's files are root's). Returns
/// the daemon and the socket.
pub fn php_fpm(tmp: &Path, user: Option<&str>) -> (Daemon, PathBuf) {
    std::fs::create_dir_all(tmp).unwrap();
    let sock = tmp.join("php.sock");
    let t = tmp.display();
    // A reload lets the workers finish what they serve (the README's advice).
    let conf = format!(
        "[global]\npid = {t}/php-fpm.pid\nerror_log = {t}/php-fpm.log\ndaemonize = no\n\
         process_control_timeout = 10s\n\
         [site]\nlisten = {}\nlisten.mode = 0666\npm = static\npm.max_children = 4\n\
         catch_workers_output = yes\nclear_env = no\n",
        sock.display()
    );
    std::fs::write(tmp.join("php-fpm.conf"), conf).unwrap();
    let fpm = php_fpm_binary().expect("php-fpm is installed");
    let mut cmd = match user {
        Some(u) => {
            let who = upkeep::base::users::user(u).unwrap();
            std::os::unix::fs::chown(tmp, Some(who.uid), Some(who.gid)).unwrap();
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={u}"))
                .arg(format!("--regid={u}"))
                .args(["--init-groups", "--"])
                .arg(fpm);
            c
        }
        None => {
            let mut c = Command::new(fpm);
            c.arg("-R");
            c
        }
    };
    let child = cmd
        .args(["-F", "-y"])
        .arg(tmp.join("php-fpm.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..500 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(sock.exists(), "php-fpm did not open its socket");
    (Daemon(child), sock)
}

/// Apache 2.4 on a free loopback port with `vhost` (where `{port}` stands for the port), its
/// workers as www-data. Returns the daemon and `http://127.0.0.1:PORT/`.
pub fn apache(vhost: &str, tmp: &Path) -> (Daemon, String) {
    std::fs::create_dir_all(tmp).unwrap();
    let port = super::smtp::free_port();
    let t = tmp.display();
    let modules = [
        "mpm_event",
        "authz_core",
        "authz_host",
        "dir",
        "alias",
        "mime",
        "rewrite",
        "headers",
        "proxy",
        "proxy_fcgi",
        "proxy_http",
    ]
    .iter()
    .map(|m| format!("LoadModule {m}_module /usr/lib/apache2/modules/mod_{m}.so\n"))
    .collect::<String>();
    let conf = format!(
        "ServerRoot {t}\nPidFile {t}/apache.pid\nErrorLog {t}/error.log\nListen 127.0.0.1:{port}\n\
         {modules}User www-data\nGroup www-data\nServerName localhost\nTypesConfig /etc/mime.types\n\
         Mutex file:{t}\n{}",
        vhost.replace("{port}", &port.to_string())
    );
    std::fs::write(tmp.join("apache.conf"), conf).unwrap();
    let child = Command::new("/usr/sbin/apache2")
        .args(["-DFOREGROUND", "-f"])
        .arg(tmp.join("apache.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        super::wait_port(port),
        "apache did not start: {}",
        std::fs::read_to_string(tmp.join("error.log")).unwrap_or_default()
    );
    (Daemon(child), format!("http://127.0.0.1:{port}/"))
}
