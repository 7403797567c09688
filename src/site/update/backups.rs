//! The database copies in `.upkeep/backups/`: `run-N.db` (SQLite), `run-N.sql` (mysqldump) or
//! `run-N.pgdump` (pg_dump), taken before run N changed the database, and
//! `run-N-discarded-TIME.*`, the database as it was when a rollback of run N put a copy back
//! over writes (`--restore-database`). The first are pruned to `[database] keep_backups`
//! after each run; the second only ever by the operator.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::base::error::Result;
use crate::site::config::Instance;

/// One copy.
#[derive(Clone, Debug, Serialize)]
pub struct Backup {
    /// Where it is.
    pub path: PathBuf,
    /// The run it belongs to.
    pub run: i64,
    /// Saved by a rollback that discarded it, rather than taken before a migration.
    pub discarded: bool,
    /// Its size in bytes.
    pub bytes: u64,
    /// When it was written (RFC 3339).
    pub written: String,
}

fn parse(name: &str) -> Option<(i64, bool)> {
    let rest = name.strip_prefix("run-")?;
    let rest = [".db", ".sql", ".pgdump"]
        .iter()
        .find_map(|ext| rest.strip_suffix(ext))?;
    match rest.split_once("-discarded-") {
        Some((n, _)) => Some((n.parse().ok()?, true)),
        None => Some((rest.parse().ok()?, false)),
    }
}

/// The copies, oldest run first.
pub fn list(inst: &Instance) -> Result<Vec<Backup>> {
    let dir = inst.root.join(".upkeep/backups");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut out: Vec<Backup> = rd
        .flatten()
        .filter_map(|e| {
            let (run, discarded) = parse(e.file_name().to_str()?)?;
            let m = e.metadata().ok()?;
            Some(Backup {
                path: e.path(),
                run,
                discarded,
                bytes: m.len(),
                written: m
                    .modified()
                    .map(|t| humantime::format_rfc3339_seconds(t).to_string())
                    .unwrap_or_default(),
            })
        })
        .collect();
    out.sort_by(|a, b| (a.run, a.discarded, &a.path).cmp(&(b.run, b.discarded, &b.path)));
    Ok(out)
}

/// Remove the pre-migration copies beyond the newest `keep` (never that of run `current`,
/// which its rollback needs). Returns what it removed.
pub fn prune(inst: &Instance, keep: usize, current: i64) -> Result<Vec<PathBuf>> {
    let taken: Vec<Backup> = list(inst)?.into_iter().filter(|b| !b.discarded).collect();
    let mut removed = Vec::new();
    let excess = taken.len().saturating_sub(keep.max(1));
    for b in taken.iter().take(excess).filter(|b| b.run != current) {
        if std::fs::remove_file(&b.path).is_ok() {
            removed.push(b.path.clone());
        }
    }
    Ok(removed)
}

/// How to put copy `b` back by hand, in the commands an operator types.
pub fn restore_hint(inst: &Instance, b: &Path) -> Vec<String> {
    use crate::base::dburl::{Address, Server};
    use crate::site::database::Target;
    let root = inst.root.display();
    let copy = b.display();
    let client = |s: &Server, tool: &str, socket_flag: &str| -> String {
        match &s.address {
            Address::Tcp(h, p) => format!("{tool} -h {h} -p {p} -U {}", s.user),
            Address::Socket(d, p) => {
                format!("{tool} {socket_flag} {} -p {p} -U {}", d.display(), s.user)
            }
        }
    };
    let middle = match inst.database_target() {
        Ok(Target::Sqlite(db)) => vec![
            format!(
                "sqlite3 {} \".backup '{}.before-restore'\"   # keep what is there now",
                db.display(),
                db.display()
            ),
            format!("sqlite3 {} \".restore '{copy}'\"", db.display()),
        ],
        Ok(Target::Mysql(s)) => {
            let who = match &s.address {
                Address::Tcp(h, p) => format!("-h {h} -P {p} -u {}", s.user),
                Address::Socket(d, _) => format!("-S {} -u {}", d.display(), s.user),
            };
            vec![
                format!(
                    "mariadb-dump {who} -p --single-transaction --routines --triggers {} > before-restore.sql   # keep what is there now",
                    s.name
                ),
                format!("mariadb {who} -p {} < {copy}", s.name),
            ]
        }
        Ok(Target::Postgres(s)) => vec![
            format!(
                "{} -Fc -d {} -f before-restore.pgdump   # keep what is there now",
                client(&s, "pg_dump", "-h"),
                s.name
            ),
            format!(
                "{} --clean --if-exists --single-transaction -d {} {copy}",
                client(&s, "pg_restore", "-h"),
                s.name
            ),
        ],
        Err(e) => vec![format!("(upkeep.toml's database: {e})")],
    };
    let mut out = vec![format!("upkeep close --root {root}")];
    out.extend(middle);
    out.push(format!("upkeep open --root {root}"));
    out
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn names() {
        assert_eq!(parse("run-12.db"), Some((12, false)));
        assert_eq!(
            parse("run-3-discarded-20261201T101010Z.db"),
            Some((3, true))
        );
        assert_eq!(parse("run-4.sql"), Some((4, false)));
        assert_eq!(
            parse("run-5-discarded-20261201T101010Z.pgdump"),
            Some((5, true))
        );
        assert_eq!(parse("run-6.sql.partial"), None);
        assert_eq!(parse("run-x.db"), None);
        assert_eq!(parse("notes.txt"), None);
    }
}
