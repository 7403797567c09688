//! MariaDB and MySQL. The declared schema (`schema.mysql.sql`) is loaded into a scratch
//! database upkeep creates and drops on the same server, and compared with the site's through
//! `information_schema`: the server is the parser. Each `ALTER TABLE` of the plan is tried
//! first on an empty copy of the live table in the scratch database with `ALGORITHM=INSTANT`,
//! then `ALGORITHM=INPLACE, LOCK=NONE`: the one the server takes is written into the statement,
//! so at run time it refuses rather than silently copying the table; a statement that must
//! copy runs with the site closed and says so ("rebuilds wp_posts, blocks writes").
//!
//! MySQL commits every DDL statement on its own: each is journalled before and after. Copies
//! are `mariadb-dump --single-transaction` (or `mysqldump`); a write since a mark is told by
//! the server's InnoDB row counters and each table's `UPDATE_TIME`.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mysql::prelude::Queryable;
use mysql::{Conn, OptsBuilder};
use serde::{Deserialize, Serialize};

use super::{
    Fragment, Journal, Phase, Progress, SchemaPlan, Settings, SiteDatabase, SqlTask, Statement,
    Try, Written, ddl, tools,
};
use crate::base::clock::now_text;
use crate::base::dburl::{Address, Engine, Server};
use crate::base::error::{Error, Result};

/// upkeep's table in the site database (the README documents it).
const OWN_TABLE: &str = "upkeep_run_once";

/// Server error codes upkeep acts on.
const LOCK_WAIT_TIMEOUT: u16 = 1205;
const ALGORITHM_NOT_SUPPORTED: [u16; 2] = [1845, 1846];
/// "Already there" answers that tell a begun DDL statement took effect.
const ALREADY: [u16; 4] = [1050, 1060, 1061, 1091];

/// A MariaDB/MySQL site database.
pub struct Mysql {
    server: Server,
    settings: Settings,
}

fn quote(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

fn code(e: &mysql::Error) -> Option<u16> {
    match e {
        mysql::Error::MySqlError(m) => Some(m.code),
        _ => None,
    }
}

impl Mysql {
    /// The database `server` names.
    pub fn new(server: Server, settings: Settings) -> Self {
        Mysql { server, settings }
    }

    fn connect(&self, db: Option<&str>) -> Result<Conn> {
        let s = &self.server;
        let mut o = OptsBuilder::new()
            .user(Some(&s.user))
            .pass(s.password.clone())
            .db_name(db)
            .tcp_connect_timeout(Some(Duration::from_secs(10)))
            .init(vec![format!(
                "SET SESSION lock_wait_timeout = {0}, innodb_lock_wait_timeout = {0}",
                self.settings.lock_timeout.as_secs().max(1)
            )]);
        o = match &s.address {
            Address::Tcp(h, p) => o
                .ip_or_hostname(Some(h.clone()))
                .tcp_port(*p)
                .prefer_socket(false),
            Address::Socket(p, _) => o.socket(Some(p.display().to_string())),
        };
        Conn::new(o).map_err(|e| {
            Error::refused(
                format!("cannot reach the site database {}: {e}", s.display()),
                "check `database` in upkeep.toml, the password (password_file or UPKEEP_DATABASE_PASSWORD) and that the server runs",
            )
        })
    }

    fn site(&self) -> Result<Conn> {
        self.connect(Some(&self.server.name))
    }

    fn err(&self, what: &str, e: mysql::Error) -> Error {
        Error::msg(format!("{} ({what}): {e}", self.server.display()))
    }

    fn tables(&self, c: &mut Conn, schema: &str) -> Result<Vec<String>> {
        c.exec(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
            (schema,),
        )
        .map_err(|e| self.err("list tables", e))
    }

    fn columns(&self, c: &mut Conn, schema: &str, table: &str) -> Result<Vec<String>> {
        c.exec(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (schema, table),
        )
        .map_err(|e| self.err("list columns", e))
    }

    fn indexes(&self, c: &mut Conn, schema: &str, table: &str) -> Result<Vec<String>> {
        c.exec(
            "SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY INDEX_NAME",
            (schema, table),
        )
        .map_err(|e| self.err("list indexes", e))
    }

    fn show_create(&self, c: &mut Conn, schema: &str, table: &str) -> Result<String> {
        let row: Option<(String, String)> = c
            .query_first(format!(
                "SHOW CREATE TABLE {}.{}",
                quote(schema),
                quote(table)
            ))
            .map_err(|e| self.err("show create table", e))?;
        Ok(row.map(|r| r.1).unwrap_or_default())
    }

    /// The state `mark` and `written_*` compare.
    fn snapshot(&self, c: &mut Conn) -> Result<Mark> {
        let status: Vec<(String, String)> = c
            .query("SHOW GLOBAL STATUS WHERE Variable_name IN ('Uptime', 'Innodb_rows_inserted', 'Innodb_rows_updated', 'Innodb_rows_deleted', 'Handler_write', 'Handler_update', 'Handler_delete', 'Com_truncate', 'Com_drop_table', 'Com_rename_table')")
            .map_err(|e| self.err("read status", e))?;
        let find = |k: &str| {
            status
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .and_then(|(_, v)| v.parse::<u64>().ok())
        };
        let get = |k: &str| find(k).unwrap_or(0);
        // MySQL counts InnoDB's rows; MariaDB dropped those and counts its handlers' writes
        // (internal temporary tables apart, in Handler_tmp_*).
        let rows = match find("Innodb_rows_inserted") {
            Some(_) => {
                get("Innodb_rows_inserted")
                    + get("Innodb_rows_updated")
                    + get("Innodb_rows_deleted")
            }
            None => get("Handler_write") + get("Handler_update") + get("Handler_delete"),
        };
        let tables: Vec<(String, Option<String>)> = c
            .exec(
                "SELECT TABLE_NAME, CAST(UPDATE_TIME AS CHAR) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE'",
                (&self.server.name,),
            )
            .map_err(|e| self.err("read tables", e))?;
        let now: Option<String> = c
            .query_first("SELECT CAST(NOW() AS CHAR)")
            .map_err(|e| self.err("read the time", e))?;
        Ok(Mark {
            uptime: get("Uptime"),
            rows,
            // upkeep's own table is written by upkeep only, never a visitor's write.
            tables: tables.into_iter().filter(|(t, _)| t != OWN_TABLE).collect(),
            now: now.unwrap_or_default(),
            emptied: Some(get("Com_truncate") + get("Com_drop_table") + get("Com_rename_table")),
            ids: self.table_ids(c),
        })
    }

    /// InnoDB's id of each table of the site database (a TRUNCATE makes a new one); `None`
    /// when the account may not read them (they need the PROCESS privilege).
    fn table_ids(&self, c: &mut Conn) -> Option<BTreeMap<String, u64>> {
        // MariaDB and MySQL 5.7 name the view INNODB_SYS_TABLES, MySQL 8 INNODB_TABLES; NAME is
        // `database/table`, filtered exactly here since LIKE would take `_` as a wildcard.
        let prefix = format!("{}/", self.server.name);
        for view in ["INNODB_SYS_TABLES", "INNODB_TABLES"] {
            let sql = format!(
                "SELECT NAME, CAST(TABLE_ID AS UNSIGNED) FROM information_schema.{view} WHERE NAME LIKE CONCAT(?, '%')"
            );
            if let Ok(rows) = c.exec::<(String, u64), _, _>(sql, (&prefix,)) {
                return Some(
                    rows.into_iter()
                        .filter_map(|(n, id)| Some((n.strip_prefix(&prefix)?.to_string(), id)))
                        .collect(),
                );
            }
        }
        None
    }

    /// Try an `ALTER TABLE` body on `probe` (an empty copy of the live table), strongest
    /// guarantee first; returns the clause the server took, its lock words and the phase.
    fn probe(
        &self,
        c: &mut Conn,
        probe: &str,
        table: &str,
        body: &str,
    ) -> Result<(&'static str, String, Phase)> {
        let tries: [(&str, String, Phase); 3] = [
            (
                ", ALGORITHM=INSTANT",
                format!(
                    "ALGORITHM=INSTANT: only {table}'s definition changes, a metadata lock for an instant"
                ),
                Phase::Open,
            ),
            (
                ", ALGORITHM=INPLACE, LOCK=NONE",
                format!(
                    "ALGORITHM=INPLACE, LOCK=NONE: {table} is built in place, reads and writes go on"
                ),
                Phase::Open,
            ),
            (
                ", ALGORITHM=INPLACE, LOCK=SHARED",
                format!(
                    "ALGORITHM=INPLACE, LOCK=SHARED: {table} is built in place, reads go on, writes wait"
                ),
                Phase::Closed,
            ),
        ];
        for (clause, holds, phase) in tries {
            match c.query_drop(format!("ALTER TABLE {probe} {body}{clause}")) {
                Ok(()) => return Ok((clause, holds, phase)),
                Err(e) if code(&e).is_some_and(|c| ALGORITHM_NOT_SUPPORTED.contains(&c)) => {}
                Err(e) => return Err(self.err("try the statement on a copy", e)),
            }
        }
        c.query_drop(format!("ALTER TABLE {probe} {body}"))
            .map_err(|e| self.err("try the statement on a copy", e))?;
        Ok((
            "",
            format!("ALGORITHM=COPY: rebuilds {table}, blocks writes"),
            Phase::Closed,
        ))
    }

    fn execute(&self, c: &mut Conn, sql: &str) -> Result<()> {
        self.settings.with_lock_retries(
            sql,
            "SHOW PROCESSLIST: a long transaction, a backup",
            || match c.query_drop(sql) {
                Ok(()) => Try::Done,
                Err(e) if code(&e) == Some(LOCK_WAIT_TIMEOUT) => Try::Locked(format!(
                    "for a lock another connection holds on the table: {e}"
                )),
                Err(e) => Try::Failed(e.to_string()),
            },
        )
    }
}

/// What a mark holds: the server's row-write counters (a write anywhere moves them), its
/// uptime (counters start again at a restart), each table's `UPDATE_TIME` (to tell which
/// tables), and the server's time then.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Mark {
    uptime: u64,
    rows: u64,
    tables: BTreeMap<String, Option<String>>,
    now: String,
    /// The server's count of TRUNCATE, DROP TABLE and RENAME TABLE statements: they take rows
    /// away without moving the row counters or UPDATE_TIME. Absent from older marks.
    #[serde(default)]
    emptied: Option<u64>,
    /// InnoDB's table ids, to tell which table such a statement emptied.
    #[serde(default)]
    ids: Option<BTreeMap<String, u64>>,
}

impl Mark {
    /// A mark as state.db keeps it; those of an older upkeep also list upkeep's own table.
    fn parse(v: &serde_json::Value) -> Result<Mark> {
        let mut m: Mark = serde_json::from_value(v.clone())
            .map_err(|e| Error::msg(format!("a database mark in state.db: {e}")))?;
        m.tables.remove(OWN_TABLE);
        Ok(m)
    }
}

/// The tables of the site database that lost their rows between `a` and `b` without a row
/// write to tell: dropped or renamed away, emptied or rebuilt (a new InnoDB table id); or
/// why it may have happened in it when the server cannot say which database.
fn emptied(a: &Mark, b: &Mark) -> (Vec<String>, Option<String>) {
    let mut out: Vec<String> = a
        .tables
        .keys()
        .filter(|t| !b.tables.contains_key(*t))
        .map(|t| format!("{t}: dropped or renamed"))
        .collect();
    let (Some(x), Some(y)) = (a.emptied, b.emptied) else {
        return (out, None);
    };
    if x == y {
        return (out, None);
    }
    let unsure = Some(format!(
        "perhaps: the server ran {} TRUNCATE, DROP or RENAME TABLE statement(s) since, and upkeep cannot read which tables they emptied (the account needs PROCESS to tell)",
        y.saturating_sub(x)
    ));
    let (Some(ia), Some(ib)) = (&a.ids, &b.ids) else {
        return (out, unsure);
    };
    for t in a.tables.keys().filter(|t| b.tables.contains_key(*t)) {
        match (ia.get(t), ib.get(t)) {
            (Some(x), Some(y)) if x == y => {}
            (Some(_), Some(_)) => out.push(format!(
                "{t}: emptied or rebuilt (TRUNCATE, or a table copy)"
            )),
            // InnoDB names a table by its file name (`my@002ddb/t` for `my-db`), or it is no
            // InnoDB table: its id says nothing.
            _ => return (out, unsure),
        }
    }
    (out, None)
}

/// Which tables of the site database were written between `a` and `b`, by `UPDATE_TIME`
/// (kept in memory, to the second). `Err` with the reason when it cannot be told.
fn compare(a: &Mark, b: &Mark) -> Option<Written> {
    if b.uptime < a.uptime {
        return Some(Written {
            when: "perhaps: the server restarted since, which resets what tells".into(),
            changes: Vec::new(),
        });
    }
    let (mut changes, unsure_why) = emptied(a, b);
    if let Some(why) = unsure_why {
        return Some(Written { when: why, changes });
    }
    if b.rows == a.rows {
        return (!changes.is_empty()).then(|| Written {
            when: format!("since {}", a.now),
            changes,
        });
    }
    let mut when = String::new();
    let mut unsure = Vec::new();
    for (t, now) in &b.tables {
        let then = a.tables.get(t).cloned().flatten();
        match (now, &then) {
            (Some(n), Some(p)) if n == p => {
                // Written in the second of the mark too: a later write in that second does
                // not move UPDATE_TIME.
                if *p >= a.now {
                    unsure.push(t.clone());
                }
            }
            (Some(n), _) => {
                if changes.iter().any(|c| c.starts_with(&format!("{t}: "))) {
                    continue;
                }
                changes.push(format!("{t}: written at {n}"));
                if *n > when {
                    when = n.clone();
                }
            }
            (None, _) => {}
        }
    }
    if !changes.is_empty() {
        return Some(Written {
            when: match when.as_str() {
                "" => format!("since {}", a.now),
                _ => format!("last at {when}"),
            },
            changes,
        });
    }
    if !unsure.is_empty() {
        return Some(Written {
            when: "perhaps: the server counted writes, and these tables were last written in the very second of the mark, which it cannot split".into(),
            changes: unsure.iter().map(|t| format!("{t}: perhaps")).collect(),
        });
    }
    // The counters moved for another database on the same server.
    None
}

/// The tables a dump creates.
fn dumped_tables(dump: &Path) -> Result<Vec<String>> {
    let f =
        std::fs::File::open(dump).map_err(|e| Error::msg(format!("{}: {e}", dump.display())))?;
    let mut out = Vec::new();
    for line in std::io::BufReader::new(f).split(b'\n') {
        let line = line.map_err(|e| Error::msg(format!("{}: {e}", dump.display())))?;
        if let Some(rest) = line.strip_prefix(b"CREATE TABLE `")
            && let Some(end) = rest.windows(3).position(|w| w == b"` (")
        {
            out.push(String::from_utf8_lossy(&rest[..end]).replace("``", "`"));
        }
    }
    Ok(out)
}

/// The lines of `SHOW CREATE TABLE` that define column `col` and index `index`.
fn column_line(create: &str, col: &str) -> Option<String> {
    let head = format!("{} ", quote(col));
    create
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(&head))
        .map(|l| l.trim_end_matches(',').to_string())
}

fn index_line(create: &str, index: &str) -> Option<String> {
    let named = format!("KEY {} (", quote(index));
    create
        .lines()
        .map(str::trim)
        .find(|l| {
            if index == "PRIMARY" {
                l.starts_with("PRIMARY KEY (")
            } else {
                l.contains(&named) && !l.starts_with("CONSTRAINT")
            }
        })
        .map(|l| l.trim_end_matches(',').to_string())
}

/// Drops a scratch database when done, whatever happened.
struct Scratch<'a> {
    conn: &'a mut Conn,
    name: String,
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        let _ = self
            .conn
            .query_drop(format!("DROP DATABASE IF EXISTS {}", quote(&self.name)));
    }
}

impl SiteDatabase for Mysql {
    fn describe(&self) -> String {
        format!("MariaDB/MySQL {}", self.server.display())
    }
    fn engine(&self) -> Engine {
        Engine::Mysql
    }
    fn exists(&mut self) -> Result<bool> {
        let mut c = self.connect(None)?;
        let n: Option<String> = c
            .exec_first(
                "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
                (&self.server.name,),
            )
            .map_err(|e| self.err("find the database", e))?;
        Ok(n.is_some())
    }

    fn plan(&mut self, fragments: &[Fragment]) -> Result<SchemaPlan> {
        let mut plan = SchemaPlan::default();
        if fragments.is_empty() {
            return Ok(plan);
        }
        let mut declared = Vec::new();
        for f in fragments {
            let statements = ddl::check_declared(&f.sql, Engine::Mysql).map_err(|e| {
                Error::refused(
                    format!("{}: {e}", f.source),
                    "a declared schema holds CREATE TABLE and CREATE INDEX statements only: fix the release's schema file",
                )
            })?;
            declared.extend(statements.into_iter().map(|s| (f.source.clone(), s)));
        }
        let live = self.server.name.clone();
        let mut raw = [0u8; 6];
        getrandom::getrandom(&mut raw).map_err(|e| Error::msg(format!("no random source: {e}")))?;
        let name = format!("upkeep_scratch_{}", hex::encode(raw));
        let mut conn = self.site()?;
        conn.query_drop(format!("CREATE DATABASE {}", quote(&name)))
            .map_err(|e| {
                Error::refused(
                    format!(
                        "upkeep compares the release's schema by loading it into a scratch database on the same server, and {} may not create one: {e}",
                        self.server.user
                    ),
                    format!(
                        "grant it, once: GRANT ALL ON `upkeep\\_scratch\\_%`.* TO '{}'@'...'; (upkeep drops each scratch database when done)",
                        self.server.user
                    ),
                )
            })?;
        let scratch = Scratch {
            conn: &mut conn,
            name: name.clone(),
        };
        let c = &mut *scratch.conn;
        c.query_drop(format!("USE {}", quote(&name)))
            .map_err(|e| self.err("use the scratch database", e))?;
        let mut order = Vec::new();
        for (source, st) in &declared {
            c.query_drop(st).map_err(|e| {
                Error::refused(
                    format!("{source}: the schema does not load on the server: {e}\n  {st}"),
                    "fix the release's schema file",
                )
            })?;
            // The order tables are declared in (a table before those that refer to it).
            for t in self.tables(c, &name)? {
                if !order.contains(&t) {
                    order.push(t);
                }
            }
        }
        let live_tables = self.tables(c, &live)?;
        let mut probes = 0;
        for t in &order {
            let create = self.show_create(c, &name, t)?;
            if !live_tables.iter().any(|l| l.eq_ignore_ascii_case(t)) {
                plan.statements.push(Statement {
                    sql: format!("{create};"),
                    holds: format!("creates {t}: no lock on existing tables"),
                    phase: Phase::Open,
                    undo: format!("DROP TABLE IF EXISTS {};", quote(t)),
                });
                continue;
            }
            let have = self.columns(c, &live, t)?;
            let want = self.columns(c, &name, t)?;
            let have_idx = self.indexes(c, &live, t)?;
            let want_idx = self.indexes(c, &name, t)?;
            for h in &have {
                if !want.iter().any(|w| w.eq_ignore_ascii_case(h)) {
                    plan.extra
                        .push(format!("column {t}.{h} (not in the schema; kept)"));
                }
            }
            let mut bodies = Vec::new();
            for col in want
                .iter()
                .filter(|w| !have.iter().any(|h| h.eq_ignore_ascii_case(w)))
            {
                let line = column_line(&create, col).ok_or_else(|| {
                    Error::msg(format!(
                        "the server's definition of {t}.{col} was not found"
                    ))
                })?;
                bodies.push((
                    format!("ADD COLUMN {line}"),
                    format!("DROP COLUMN {}", quote(col)),
                ));
            }
            for idx in want_idx
                .iter()
                .filter(|w| !have_idx.iter().any(|h| h.eq_ignore_ascii_case(w)))
            {
                let Some(line) = index_line(&create, idx) else {
                    continue;
                };
                let undo = match idx.as_str() {
                    "PRIMARY" => "DROP PRIMARY KEY".to_string(),
                    i => format!("DROP INDEX {}", quote(i)),
                };
                bodies.push((format!("ADD {line}"), undo));
            }
            if bodies.is_empty() {
                continue;
            }
            // An empty copy of the live table, changed statement after statement as the live
            // one will be: what the server accepts there it accepts on the live table.
            probes += 1;
            let probe = format!(
                "{}.{}",
                quote(&name),
                quote(&format!("upkeep_probe_{probes}"))
            );
            c.query_drop(format!(
                "CREATE TABLE {probe} LIKE {}.{}",
                quote(&live),
                quote(t)
            ))
            .map_err(|e| self.err("copy a table's definition", e))?;
            for (body, undo) in bodies {
                let (clause, holds, phase) = self.probe(c, &probe, t, &body)?;
                plan.statements.push(Statement {
                    sql: format!("ALTER TABLE {} {body}{clause};", quote(t)),
                    holds,
                    phase,
                    undo: format!("ALTER TABLE {} {undo};", quote(t)),
                });
            }
        }
        for t in &live_tables {
            if t != OWN_TABLE && !order.iter().any(|o| o.eq_ignore_ascii_case(t)) {
                plan.extra
                    .push(format!("table {t} (not in the schema; kept)"));
            }
        }
        drop(scratch);
        Ok(plan)
    }

    fn apply(&mut self, statements: &[Statement], journal: &mut dyn Journal) -> Result<()> {
        let mut c = self.site()?;
        for (i, s) in statements.iter().enumerate() {
            if journal.get(i)? == Some(Progress::Done) {
                continue;
            }
            journal.set(i, &s.sql, Progress::Started)?;
            self.execute(&mut c, &s.sql)?;
            journal.set(i, &s.sql, Progress::Done)?;
        }
        Ok(())
    }

    fn undo(&mut self, statement: &Statement) -> Result<()> {
        let mut c = self.site()?;
        match c.query_drop(&statement.undo) {
            Ok(()) => Ok(()),
            // What it would drop is not there: the statement never took effect.
            Err(e) if code(&e).is_some_and(|c| ALREADY.contains(&c)) => Ok(()),
            Err(e) => Err(self.err("take back a statement", e)),
        }
    }

    fn backup(&mut self, to: &Path) -> Result<()> {
        let tool = tools::need(&["mariadb-dump", "mysqldump"], "mariadb-client")?;
        let opts = tools::OptionFile::new(self.server.password.as_deref())?;
        let mut cmd = Command::new(tool);
        cmd.arg(opts.arg()).args(client_args(&self.server)).args([
            "--single-transaction",
            "--routines",
            "--triggers",
            "--no-tablespaces",
            "--hex-blob",
            &self.server.name,
        ]);
        tools::run(
            cmd,
            None,
            Some(tools::private_file(to)?),
            "the database dump",
        )
    }

    fn restore(&mut self, from: &Path) -> Result<()> {
        let tool = tools::need(&["mariadb", "mysql"], "mariadb-client")?;
        // The dump drops and creates the tables it holds; a table the update created is not
        // in it and goes first.
        let keep = dumped_tables(from)?;
        let mut c = self.site()?;
        let live = self.tables(&mut c, &self.server.name.clone())?;
        c.query_drop("SET FOREIGN_KEY_CHECKS = 0")
            .map_err(|e| self.err("drop a table the update created", e))?;
        for t in live.iter().filter(|t| !keep.contains(t)) {
            c.query_drop(format!("DROP TABLE IF EXISTS {}", quote(t)))
                .map_err(|e| self.err("drop a table the update created", e))?;
        }
        drop(c);
        let opts = tools::OptionFile::new(self.server.password.as_deref())?;
        let mut cmd = Command::new(tool);
        cmd.arg(opts.arg())
            .args(client_args(&self.server))
            .arg(&self.server.name);
        let input = std::fs::File::open(from)
            .map_err(|e| Error::msg(format!("{}: {e}", from.display())))?;
        tools::run(cmd, Some(input), None, "loading the database copy")
    }

    fn mark(&mut self) -> Result<serde_json::Value> {
        let mut c = self.site()?;
        let m = self.snapshot(&mut c)?;
        Ok(serde_json::to_value(m).expect("serialises"))
    }

    fn written_since(&mut self, mark: &serde_json::Value) -> Result<Option<Written>> {
        let a = Mark::parse(mark)?;
        let mut c = self.site()?;
        let b = self.snapshot(&mut c)?;
        Ok(compare(&a, &b))
    }

    fn written_between(
        &mut self,
        from: &serde_json::Value,
        to: &serde_json::Value,
    ) -> Result<bool> {
        Ok(compare(&Mark::parse(from)?, &Mark::parse(to)?).is_some())
    }

    fn task_done(&mut self, name: &str) -> Result<Option<String>> {
        let mut c = self.site()?;
        let has: Option<String> = c
            .exec_first(
                "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (&self.server.name, OWN_TABLE),
            )
            .map_err(|e| self.err("find upkeep's table", e))?;
        if has.is_none() {
            return Ok(None);
        }
        c.exec_first(
            format!("SELECT sha256 FROM {OWN_TABLE} WHERE name = ?"),
            (name,),
        )
        .map_err(|e| self.err("read a task's mark", e))
    }

    fn run_task(&mut self, task: &SqlTask<'_>, journal: &mut dyn Journal) -> Result<()> {
        let statements = ddl::split(task.sql, Engine::Mysql).map_err(|e| {
            Error::refused(format!("run_once task {}: {e}", task.name), "fix the task")
        })?;
        let mut c = self.site()?;
        c.query_drop(format!("CREATE TABLE IF NOT EXISTS {OWN_TABLE}(name VARCHAR(255) PRIMARY KEY, sha256 CHAR(64) NOT NULL, run_id BIGINT, done_at VARCHAR(40) NOT NULL) ENGINE=InnoDB"))
            .map_err(|e| self.err("create upkeep's table", e))?;
        let mark = format!(
            "INSERT INTO {OWN_TABLE}(name, sha256, run_id, done_at) VALUES(?, ?, ?, ?) ON DUPLICATE KEY UPDATE sha256 = VALUES(sha256), run_id = VALUES(run_id), done_at = VALUES(done_at)"
        );
        let failed = |e: &dyn std::fmt::Display, undone: bool| {
            Error::refused(
                format!(
                    "run_once task {} failed: {e}\n{}",
                    task.name,
                    if undone {
                        "its changes to the database were undone"
                    } else {
                        "it holds DDL, which MySQL commits statement by statement: the statements before this one stay applied (the journal in state.db knows which)"
                    }
                ),
                "the site stays closed: fix the cause, then `upkeep resume` runs it again from there (or `upkeep rollback`)",
            )
        };
        if !statements.iter().any(|s| ddl::is_ddl(s, Engine::Mysql)) {
            // Data only: the task and its done-mark commit together.
            let mut tx = c
                .start_transaction(mysql::TxOpts::default())
                .map_err(|e| self.err("begin", e))?;
            for s in &statements {
                tx.query_drop(s).map_err(|e| failed(&e, true))?;
            }
            tx.exec_drop(&mark, (task.name, task.sha256, task.run, now_text()))
                .map_err(|e| self.err("mark the task done", e))?;
            return tx.commit().map_err(|e| self.err("commit", e));
        }
        // DDL commits on its own, so each statement is journalled. A data statement among
        // them commits in one transaction with a mark of its own in upkeep's table: found
        // begun after a crash, the mark says whether it took effect (an INSERT run twice
        // would add its rows twice).
        let step_mark = |i: usize| format!("{}#{}", task.name, i + 1);
        for (i, s) in statements.iter().enumerate() {
            let progress = journal.get(i)?;
            if progress == Some(Progress::Done) {
                continue;
            }
            if progress.is_none() {
                journal.set(i, s, Progress::Started)?;
            }
            if ddl::is_ddl(s, Engine::Mysql) {
                match c.query_drop(s) {
                    Ok(()) => {}
                    // Begun by a runner that died: "already there" means it took effect.
                    Err(e)
                        if progress.is_some() && code(&e).is_some_and(|c| ALREADY.contains(&c)) => {
                    }
                    Err(e) => return Err(failed(&e, false)),
                }
            } else {
                let done: Option<String> = c
                    .exec_first(
                        format!("SELECT sha256 FROM {OWN_TABLE} WHERE name = ?"),
                        (step_mark(i),),
                    )
                    .map_err(|e| self.err("read a task's mark", e))?;
                if done.is_none() {
                    let mut tx = c
                        .start_transaction(mysql::TxOpts::default())
                        .map_err(|e| self.err("begin", e))?;
                    tx.query_drop(s).map_err(|e| failed(&e, false))?;
                    tx.exec_drop(&mark, (step_mark(i), task.sha256, task.run, now_text()))
                        .map_err(|e| self.err("mark the statement done", e))?;
                    tx.commit().map_err(|e| self.err("commit", e))?;
                }
            }
            journal.set(i, s, Progress::Done)?;
        }
        let mut tx = c
            .start_transaction(mysql::TxOpts::default())
            .map_err(|e| self.err("begin", e))?;
        tx.exec_drop(&mark, (task.name, task.sha256, task.run, now_text()))
            .map_err(|e| self.err("mark the task done", e))?;
        for i in 0..statements.len() {
            tx.exec_drop(
                format!("DELETE FROM {OWN_TABLE} WHERE name = ?"),
                (step_mark(i),),
            )
            .map_err(|e| self.err("clear the statements' marks", e))?;
        }
        tx.commit().map_err(|e| self.err("commit", e))
    }

    fn check(&mut self, backups: &Path) -> Result<()> {
        tools::need(&["mariadb-dump", "mysqldump"], "mariadb-client")?;
        tools::need(&["mariadb", "mysql"], "mariadb-client")?;
        if !self.exists()? {
            return Err(Error::refused(
                format!("the site database {} does not exist", self.server.display()),
                "check `database` in upkeep.toml (upkeep never creates the site's database)",
            ));
        }
        let mut c = self.site()?;
        let bytes: Option<u64> = c
            .exec_first(
                "SELECT CAST(COALESCE(SUM(DATA_LENGTH + INDEX_LENGTH), 0) AS UNSIGNED) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?",
                (&self.server.name,),
            )
            .map_err(|e| self.err("measure the database", e))?;
        let bytes = bytes.unwrap_or(0);
        super::room_for(
            backups,
            bytes,
            &format!("{} of tables", crate::base::fsutil::human_bytes(bytes)),
        )
    }

    fn backup_name(&self, run: i64) -> String {
        format!("run-{run}.sql")
    }
    fn copied_how(&self) -> &'static str {
        "with mariadb-dump (or mysqldump) --single-transaction while the site is open"
    }
}

/// How the MySQL client tools reach the server.
fn client_args(s: &Server) -> Vec<String> {
    let mut a = match &s.address {
        // TCP even for "localhost", which the clients would take for the socket.
        Address::Tcp(h, p) => vec![
            "--protocol=TCP".into(),
            format!("--host={h}"),
            format!("--port={p}"),
        ],
        Address::Socket(p, _) => vec![format!("--socket={}", p.display())],
    };
    a.push(format!("--user={}", s.user));
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(rows: u64, tables: &[(&str, Option<&str>)]) -> Mark {
        Mark {
            uptime: 100,
            rows,
            tables: tables
                .iter()
                .map(|(t, u)| (t.to_string(), u.map(String::from)))
                .collect(),
            now: "2026-12-01 10:00:05".into(),
            emptied: Some(0),
            ids: Some(tables.iter().map(|(t, _)| (t.to_string(), 1)).collect()),
        }
    }

    #[test]
    fn writes_are_told_by_counters_then_tables() {
        let a = mark(
            10,
            &[("wp_posts", Some("2026-12-01 09:00:00")), ("wp_new", None)],
        );
        assert_eq!(compare(&a, &a.clone()), None, "nothing moved");
        let other_db = mark(
            11,
            &[("wp_posts", Some("2026-12-01 09:00:00")), ("wp_new", None)],
        );
        assert_eq!(compare(&a, &other_db), None, "another database was written");
        let ours = mark(
            11,
            &[("wp_posts", Some("2026-12-01 10:00:07")), ("wp_new", None)],
        );
        let w = compare(&a, &ours).unwrap();
        assert_eq!(w.changes, ["wp_posts: written at 2026-12-01 10:00:07"]);
        let same_second = mark(10, &[("wp_posts", Some("2026-12-01 10:00:05"))]);
        let later = mark(12, &[("wp_posts", Some("2026-12-01 10:00:05"))]);
        assert!(
            compare(&same_second, &later)
                .unwrap()
                .when
                .starts_with("perhaps")
        );
        // Rows taken away that no counter nor UPDATE_TIME tells: by the table set and ids.
        let mut dropped = a.clone();
        dropped.tables.remove("wp_new");
        assert_eq!(
            compare(&a, &dropped).unwrap().changes,
            ["wp_new: dropped or renamed"]
        );
        let mut truncated = a.clone();
        truncated.emptied = Some(1);
        assert_eq!(compare(&a, &truncated), None, "another database's TRUNCATE");
        truncated.ids.as_mut().unwrap().insert("wp_posts".into(), 2);
        assert_eq!(
            compare(&a, &truncated).unwrap().changes,
            ["wp_posts: emptied or rebuilt (TRUNCATE, or a table copy)"]
        );
        let mut unreadable = truncated.clone();
        unreadable.ids = None;
        assert!(
            compare(&a, &unreadable)
                .unwrap()
                .when
                .contains("needs PROCESS")
        );
        let mut unnamed = truncated.clone();
        unnamed.ids = Some(BTreeMap::new());
        assert!(compare(&a, &unnamed).unwrap().when.starts_with("perhaps"));
        let mut old = a.clone();
        old.emptied = None;
        old.ids = None;
        assert_eq!(compare(&old, &a), None, "a mark from an older upkeep");
        let mut restarted = a.clone();
        restarted.uptime = 3;
        assert!(compare(&a, &restarted).is_some());
    }

    #[test]
    fn definition_lines() {
        let create = "CREATE TABLE `wp_posts` (\n  `ID` bigint(20) unsigned NOT NULL AUTO_INCREMENT,\n  `post_title` text NOT NULL,\n  `slug` varchar(200) NOT NULL DEFAULT '',\n  PRIMARY KEY (`ID`),\n  KEY `slug` (`slug`(191)),\n  UNIQUE KEY `u` (`post_title`(10))\n) ENGINE=InnoDB";
        assert_eq!(
            column_line(create, "slug").as_deref(),
            Some("`slug` varchar(200) NOT NULL DEFAULT ''")
        );
        assert_eq!(
            index_line(create, "slug").as_deref(),
            Some("KEY `slug` (`slug`(191))")
        );
        assert_eq!(
            index_line(create, "u").as_deref(),
            Some("UNIQUE KEY `u` (`post_title`(10))")
        );
        assert_eq!(
            index_line(create, "PRIMARY").as_deref(),
            Some("PRIMARY KEY (`ID`)")
        );
    }
}
