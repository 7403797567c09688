//! PostgreSQL. The declared schema (`schema.postgresql.sql`) is loaded into a scratch schema
//! inside a transaction that is rolled back (nothing of it survives, not even a crash), and
//! compared with the site's schema through the catalogue. New indexes are built with
//! `CREATE INDEX CONCURRENTLY` outside any transaction, columns added with a constant default
//! (metadata only since PostgreSQL 11) before the site closes; every statement waits at most
//! `lock_timeout` for its lock and is tried again with a growing pause.
//!
//! Copies are `pg_dump -Fc`, put back with `pg_restore --single-transaction`. A write since a
//! mark is told by transaction ids: a mark holds the cluster's next one, and each row carries
//! the id of the transaction that wrote it (`xmin`), so the rows written between two marks are
//! found at rollback time, whoever wrote them; deleted rows by the statistics' counters.

use std::path::Path;
use std::process::Command;

use postgres::{Client, GenericClient};
use serde::{Deserialize, Serialize};

use super::{
    Fragment, Journal, Phase, Progress, SchemaPlan, Settings, SiteDatabase, SqlTask, Statement,
    Try, Written, ddl, tools,
};
use crate::base::clock::now_text;
use crate::base::dburl::{Address, Engine, Server, Tls};
use crate::base::error::{Error, Result};

/// upkeep's table in the site database (the README documents it).
const OWN_TABLE: &str = "upkeep_run_once";

/// SQLSTATEs upkeep acts on.
const LOCK_NOT_AVAILABLE: &str = "55P03";
const GONE: [&str; 3] = ["42P01", "42703", "42704"];

/// A PostgreSQL site database.
pub struct Postgres {
    server: Server,
    settings: Settings,
    /// The connection, made once: a login costs thousands of hash rounds.
    client: Option<Client>,
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn state(e: &postgres::Error) -> Option<&str> {
    e.code().map(|c| c.code())
}

/// Defaults that make `ADD COLUMN` write every row (a volatile function is evaluated once per
/// row): such a column runs with the site closed.
const VOLATILE: &[&str] = &[
    "nextval(",
    "random(",
    "gen_random_uuid(",
    "uuid_generate",
    "clock_timestamp(",
    "timeofday(",
];

impl Postgres {
    /// The database `server` names.
    pub fn new(server: Server, settings: Settings) -> Self {
        Postgres {
            server,
            settings,
            client: None,
        }
    }

    /// The connection, made on first use and kept (taken out while used; one that failed is
    /// dropped, and the next use connects again).
    fn connect(&mut self) -> Result<Client> {
        match self.client.take() {
            Some(c) if !c.is_closed() => Ok(c),
            _ => self.login(),
        }
    }

    fn keep(&mut self, c: Client) {
        self.client = Some(c);
    }

    /// Run `f` on the connection, kept for the next call.
    fn with<T>(&mut self, f: impl FnOnce(&Self, &mut Client) -> Result<T>) -> Result<T> {
        let mut c = self.connect()?;
        let r = f(self, &mut c);
        self.keep(c);
        r
    }

    fn login(&self) -> Result<Client> {
        let mut client = crate::base::pg::login(
            &self.server,
            "the site database",
            "check `database` in upkeep.toml, the password (password_file or UPKEEP_DATABASE_PASSWORD), pg_hba.conf and that the server runs",
        )?;
        client
            .batch_execute(&format!(
                "SET lock_timeout = '{}s'",
                self.settings.lock_timeout.as_secs().max(1)
            ))
            .map_err(|e| self.err("set lock_timeout", e))?;
        Ok(client)
    }

    fn err(&self, what: &str, e: postgres::Error) -> Error {
        Error::msg(format!(
            "{} ({what}): {}",
            self.server.display(),
            crate::base::pg::detail(&e)
        ))
    }

    fn strings(
        &self,
        c: &mut impl GenericClient,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<String>> {
        Ok(c.query(sql, params)
            .map_err(|e| self.err("read the catalogue", e))?
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect())
    }

    fn tables(&self, c: &mut impl GenericClient, schema: &str) -> Result<Vec<String>> {
        self.strings(
            c,
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') ORDER BY c.oid",
            &[&schema],
        )
    }

    fn columns(
        &self,
        c: &mut impl GenericClient,
        schema: &str,
        table: &str,
    ) -> Result<Vec<Column>> {
        let rows = c
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attidentity::text, a.attgenerated::text
                 FROM pg_attribute a JOIN pg_class t ON t.oid = a.attrelid JOIN pg_namespace n ON n.oid = t.relnamespace
                 LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                 WHERE n.nspname = $1 AND t.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                &[&schema, &table],
            )
            .map_err(|e| self.err("read columns", e))?;
        Ok(rows
            .iter()
            .map(|r| Column {
                name: r.get(0),
                ty: r.get(1),
                not_null: r.get(2),
                default: r.get(3),
                identity: r.get(4),
                generated: r.get(5),
            })
            .collect())
    }

    /// Indexes of `table`.
    fn indexes(&self, c: &mut impl GenericClient, schema: &str, table: &str) -> Result<Vec<Index>> {
        let rows = c
            .query(
                "SELECT i.relname::text, pg_get_indexdef(i.oid), ix.indisvalid,
                        EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.oid)
                 FROM pg_index ix
                 JOIN pg_class i ON i.oid = ix.indexrelid JOIN pg_class t ON t.oid = ix.indrelid
                 JOIN pg_namespace n ON n.oid = t.relnamespace WHERE n.nspname = $1 AND t.relname = $2 ORDER BY i.oid",
                &[&schema, &table],
            )
            .map_err(|e| self.err("read indexes", e))?;
        Ok(rows
            .iter()
            .map(|r| Index {
                name: r.get(0),
                def: r.get(1),
                valid: r.get(2),
                constraint: r.get(3),
            })
            .collect())
    }

    /// `ALTER TABLE ... ADD COLUMN` for `col` of the declared `table`, with its phase: a
    /// column whose default is volatile (evaluated per row) rewrites the table, closed.
    fn add_column(&self, table: &str, col: &Column, has_rows: bool) -> Result<Statement> {
        let mut def = format!("{} {}", quote(&col.name), col.ty);
        let mut volatile = false;
        if let Some(d) = &col.default {
            if d.starts_with("nextval(") {
                // A serial: its sequence lives in the scratch schema; the type makes its own.
                let serial = match col.ty.as_str() {
                    "bigint" => "bigserial",
                    "smallint" => "smallserial",
                    _ => "serial",
                };
                def = format!("{} {serial}", quote(&col.name));
                volatile = true;
            } else if col.generated == "s" {
                def.push_str(&format!(" GENERATED ALWAYS AS ({d}) STORED"));
                volatile = true;
            } else {
                def.push_str(&format!(" DEFAULT {d}"));
                volatile = VOLATILE.iter().any(|v| d.contains(v));
            }
        }
        match col.identity.as_str() {
            "a" => {
                def.push_str(" GENERATED ALWAYS AS IDENTITY");
                volatile = true;
            }
            "d" => {
                def.push_str(" GENERATED BY DEFAULT AS IDENTITY");
                volatile = true;
            }
            _ => {}
        }
        if col.not_null {
            if col.default.is_none() && col.identity.is_empty() && has_rows {
                return Err(Error::refused(
                    format!(
                        "the schema adds {table}.{} NOT NULL without a default, and {table} has rows: PostgreSQL cannot fill them",
                        col.name
                    ),
                    "the release must give the column a default (or let it be NULL): ask the publisher",
                ));
            }
            def.push_str(" NOT NULL");
        }
        let (holds, phase) = if volatile && has_rows {
            (
                format!(
                    "ACCESS EXCLUSIVE: rewrites {table} (its default is computed per row), blocks reads and writes"
                ),
                Phase::Closed,
            )
        } else {
            (
                format!(
                    "ACCESS EXCLUSIVE on {table} for an instant (metadata only; lock_timeout {} s, tried again)",
                    self.settings.lock_timeout.as_secs()
                ),
                Phase::Open,
            )
        };
        Ok(Statement {
            sql: format!("ALTER TABLE {} ADD COLUMN {def};", quote(table)),
            holds,
            phase,
            undo: format!(
                "ALTER TABLE {} DROP COLUMN IF EXISTS {};",
                quote(table),
                quote(&col.name)
            ),
        })
    }

    fn site_schema(&self, c: &mut impl GenericClient) -> Result<String> {
        let r = c
            .query_one("SELECT current_schema()::text", &[])
            .map_err(|e| self.err("read the schema", e))?;
        Ok(r.get(0))
    }

    fn run_with_retries(&self, c: &mut Client, sql: &str) -> Result<()> {
        self.settings.with_lock_retries(
            sql,
            "pg_stat_activity: a long transaction, an idle one in transaction",
            || match c.batch_execute(sql) {
                Ok(()) => Try::Done,
                Err(e) if state(&e) == Some(LOCK_NOT_AVAILABLE) => Try::Locked(
                    "(lock_timeout) for a lock another connection holds on the table".into(),
                ),
                Err(e) => Try::Failed(self.err("run", e).to_string()),
            },
        )
    }

    fn pgpass(&self) -> Result<tempfile::NamedTempFile> {
        use std::io::Write;
        let mut f = tempfile::Builder::new()
            .prefix("upkeep-pgpass")
            .tempfile()
            .map_err(|e| Error::msg(format!("a temporary file: {e}")))?;
        let esc = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
        let line = format!(
            "*:*:*:{}:{}\n",
            esc(&self.server.user),
            esc(self.server.password.as_deref().unwrap_or(""))
        );
        f.write_all(line.as_bytes())
            .map_err(|e| Error::msg(format!("a temporary file: {e}")))?;
        Ok(f)
    }

    /// A client tool's command with where to connect and how, the password in a file.
    fn tool(&self, tool: &Path, pass: &tempfile::NamedTempFile) -> Command {
        let s = &self.server;
        let mut cmd = Command::new(tool);
        match &s.address {
            Address::Tcp(h, p) => cmd.env("PGHOST", h).env("PGPORT", p.to_string()),
            Address::Socket(d, p) => cmd.env("PGHOST", d).env("PGPORT", p.to_string()),
        };
        cmd.env("PGUSER", &s.user)
            .env("PGDATABASE", &s.name)
            .env("PGPASSFILE", pass.path())
            .env_remove("PGPASSWORD")
            .env(
                "PGSSLMODE",
                match s.tls {
                    Tls::Off => "disable",
                    Tls::On => "verify-full",
                },
            );
        if let Some(r) = &s.root_cert {
            cmd.env("PGSSLROOTCERT", r);
        }
        cmd
    }

    fn snapshot(&self, c: &mut Client) -> Result<Mark> {
        let r = c
            .query_one(
                "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint, now()::text",
                &[],
            )
            .map_err(|e| self.err("read the transaction ids", e))?;
        let schema = self.site_schema(c)?;
        let rows = c
            .query(
                "SELECT s.relname::text, s.n_tup_del, c.relfilenode::text::bigint FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid WHERE s.schemaname = $1",
                &[&schema],
            )
            .map_err(|e| self.err("read the statistics", e))?;
        Ok(Mark {
            next_xid: r.get(0),
            at: r.get(1),
            deleted: rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
            files: rows.iter().map(|r| (r.get(0), r.get(2))).collect(),
        })
    }

    /// The rows of the site's tables written by transactions from `from` (inclusive) to `to`
    /// (exclusive; `None`: to now), and rows deleted meanwhile as far as the statistics tell.
    fn rows_between(&self, c: &mut Client, from: &Mark, to: Option<&Mark>) -> Result<Vec<String>> {
        let now = self.snapshot(c)?;
        let to = to.unwrap_or(&now);
        if to.next_xid == from.next_xid {
            return Ok(Vec::new());
        }
        let schema = self.site_schema(c)?;
        let span = to.next_xid - from.next_xid;
        let lo = from.next_xid.rem_euclid(1 << 32);
        // What no row tells: a table dropped, or emptied or rewritten in a new file (TRUNCATE,
        // VACUUM FULL, CLUSTER). Neither leaves a row behind nor counts as a delete.
        let mut out = files_changed(from, to);
        for t in self.tables(c, &schema)? {
            if t == OWN_TABLE || out.iter().any(|o| o.starts_with(&format!("{t}: "))) {
                continue;
            }
            // xmin is the 32-bit id; the span is short, so the distance from `lo` modulo 2^32
            // tells whether it falls inside (frozen rows are far outside).
            let sql = format!(
                "SELECT count(*) FROM {}.{} WHERE ((xmin::text::bigint - $1) % 4294967296 + 4294967296) % 4294967296 < $2",
                quote(&schema),
                quote(&t)
            );
            let n: i64 = c
                .query_one(sql.as_str(), &[&lo, &span])
                .map_err(|e| self.err("find written rows", e))?
                .get(0);
            let del = |m: &Mark| {
                m.deleted
                    .iter()
                    .find(|(n, _)| *n == t)
                    .map(|d| d.1)
                    .unwrap_or(0)
            };
            let deleted = del(to) - del(from);
            match (n, deleted) {
                (0, d) if d <= 0 => {}
                (n, d) if d <= 0 => out.push(format!("{t}: {} written", rows(n))),
                (0, d) => out.push(format!("{t}: {} deleted", rows(d))),
                (n, d) => out.push(format!("{t}: {} written, {} deleted", rows(n), rows(d))),
            }
        }
        Ok(out)
    }
}

fn rows(n: i64) -> String {
    match n {
        1 => "1 row".into(),
        n => format!("{n} rows"),
    }
}

struct Index {
    name: String,
    def: String,
    valid: bool,
    constraint: bool,
}

struct Column {
    name: String,
    ty: String,
    not_null: bool,
    default: Option<String>,
    identity: String,
    generated: String,
}

/// What a mark holds: the cluster's next transaction id, the time, and each table's count of
/// deleted rows (the statistics' `n_tup_del`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Mark {
    next_xid: i64,
    at: String,
    deleted: Vec<(String, i64)>,
    /// Each table's file (`relfilenode`); absent from marks taken by an older upkeep.
    #[serde(default)]
    files: Vec<(String, i64)>,
}

/// The tables of `from` that `to` no longer has, or has in another file.
fn files_changed(from: &Mark, to: &Mark) -> Vec<String> {
    if from.files.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (t, file) in from.files.iter().filter(|(t, _)| t != OWN_TABLE) {
        match to.files.iter().find(|(n, _)| n == t) {
            None => out.push(format!("{t}: dropped")),
            Some((_, f)) if f != file => out.push(format!(
                "{t}: emptied or rewritten (TRUNCATE, VACUUM FULL or CLUSTER)"
            )),
            Some(_) => {}
        }
    }
    out
}

/// `CREATE INDEX CONCURRENTLY` for the definition `def` of index `name` on `table`.
fn concurrent_index(def: &str, table: &str, name: &str) -> Statement {
    Statement {
        sql: format!("{};", def.replacen(" INDEX ", " INDEX CONCURRENTLY ", 1)),
        holds: format!("CREATE INDEX CONCURRENTLY: built beside {table}, reads and writes go on"),
        phase: Phase::Open,
        undo: format!("DROP INDEX CONCURRENTLY IF EXISTS {};", quote(name)),
    }
}

/// The index name in `CREATE [UNIQUE] INDEX name ON ...`.
fn index_name(def: &str) -> Option<&str> {
    let rest = def.split_once(" INDEX ")?.1;
    rest.split_once(" ON ").map(|(n, _)| n.trim())
}

impl SiteDatabase for Postgres {
    fn describe(&self) -> String {
        format!("PostgreSQL {}", self.server.display())
    }
    fn engine(&self) -> Engine {
        Engine::Postgres
    }
    fn exists(&mut self) -> Result<bool> {
        // Connecting names the database: it exists if the connection is made.
        Ok(match self.connect() {
            Ok(c) => {
                self.keep(c);
                true
            }
            Err(_) => false,
        })
    }

    fn plan(&mut self, fragments: &[Fragment]) -> Result<SchemaPlan> {
        let mut plan = SchemaPlan::default();
        if fragments.is_empty() {
            return Ok(plan);
        }
        let mut declared = Vec::new();
        for f in fragments {
            let statements = ddl::check_declared(&f.sql, Engine::Postgres).map_err(|e| {
                Error::refused(
                    format!("{}: {e}", f.source),
                    "a declared schema holds CREATE TABLE and CREATE INDEX statements only: fix the release's schema file",
                )
            })?;
            let names = ddl::tables_created(&statements, Engine::Postgres);
            declared.extend(
                statements
                    .into_iter()
                    .zip(names)
                    .map(|(s, n)| (f.source.clone(), s, n)),
            );
        }
        self.with(|me, c| {
            let live = me.site_schema(c)?;
            let mut raw = [0u8; 6];
            getrandom::getrandom(&mut raw)
                .map_err(|e| Error::msg(format!("no random source: {e}")))?;
            let scratch = format!("upkeep_scratch_{}", hex::encode(raw));
            // Everything below runs in one transaction that is rolled back: the scratch schema
            // never exists for anyone else, and a crash leaves nothing.
            let mut tx = c.transaction().map_err(|e| me.err("begin", e))?;
            tx.batch_execute(&format!(
                "CREATE SCHEMA {0}; SET LOCAL search_path = {0}",
                quote(&scratch)
            ))
            .map_err(|e| {
                Error::refused(
                    format!(
                        "upkeep compares the release's schema by loading it into a scratch schema of the site database, and {} may not create one: {}",
                        me.server.user,
                        me.err("create schema", e)
                    ),
                    format!(
                        "grant it, once: GRANT CREATE ON DATABASE {} TO {}; (the scratch schema lives inside a transaction that is rolled back)",
                        me.server.name, me.server.user
                    ),
                )
            })?;
            let mut created = Vec::new();
            for (source, st, table) in &declared {
                tx.batch_execute(st).map_err(|e| {
                    Error::refused(
                        format!(
                            "{source}: the schema does not load on the server: {}\n  {st}",
                            me.err("load", e)
                        ),
                        "fix the release's schema file",
                    )
                })?;
                if let Some(t) = table {
                    created.push((t.clone(), st.clone()));
                }
            }
            let result = (|| -> Result<SchemaPlan> {
                let t_live = me.tables(&mut tx, &live)?;
                let t_scratch = me.tables(&mut tx, &scratch)?;
                let unqualified = |def: &str| {
                    def.replace(&format!(" ON {}.", quote(&scratch)), " ON ")
                        .replace(&format!(" ON {scratch}."), " ON ")
                };
                for t in &t_scratch {
                    let new = !t_live.iter().any(|l| l == t);
                    if new {
                        let Some((_, st)) = created.iter().find(|(n, _)| n == t) else {
                            continue;
                        };
                        plan.statements.push(Statement {
                            sql: format!("{};", st.trim_end_matches(';')),
                            holds: format!("creates {t}: no lock on existing tables"),
                            phase: Phase::Open,
                            undo: format!("DROP TABLE IF EXISTS {};", quote(t)),
                        });
                        // Its indexes declared apart (those of its constraints come with it),
                        // as for a table that exists: the statement is the same whether or not
                        // the table was there, which a resumed run relies on to tell what ran.
                        for i in me.indexes(&mut tx, &scratch, t)? {
                            if !i.constraint {
                                plan.statements.push(concurrent_index(
                                    &unqualified(&i.def),
                                    t,
                                    &i.name,
                                ));
                            }
                        }
                        continue;
                    }
                    let have = me.columns(&mut tx, &live, t)?;
                    let want = me.columns(&mut tx, &scratch, t)?;
                    for h in &have {
                        if !want.iter().any(|w| w.name == h.name) {
                            plan.extra
                                .push(format!("column {t}.{} (not in the schema; kept)", h.name));
                        }
                    }
                    let q = format!(
                        "SELECT EXISTS (SELECT 1 FROM {}.{})",
                        quote(&live),
                        quote(t)
                    );
                    let has_rows: bool = tx
                        .query_one(q.as_str(), &[])
                        .map_err(|e| me.err("look into a table", e))?
                        .get(0);
                    for col in want
                        .iter()
                        .filter(|w| !have.iter().any(|h| h.name == w.name))
                    {
                        plan.statements.push(me.add_column(t, col, has_rows)?);
                    }
                    let live_idx = me.indexes(&mut tx, &live, t)?;
                    for i in me.indexes(&mut tx, &scratch, t)? {
                        if live_idx.iter().any(|l| l.name == i.name && l.valid) {
                            continue;
                        }
                        plan.statements
                            .push(concurrent_index(&unqualified(&i.def), t, &i.name));
                    }
                }
                for t in &t_live {
                    if t != OWN_TABLE && !t_scratch.iter().any(|s| s == t) {
                        plan.extra
                            .push(format!("table {t} (not in the schema; kept)"));
                    }
                }
                Ok(plan)
            })();
            let _ = tx.rollback();
            result
        })
    }

    fn apply(&mut self, statements: &[Statement], journal: &mut dyn Journal) -> Result<()> {
        self.with(|me, c| {
            for (i, s) in statements.iter().enumerate() {
                if journal.get(i)? == Some(Progress::Done) {
                    continue;
                }
                journal.set(i, &s.sql, Progress::Started)?;
                if s.sql.contains(" INDEX CONCURRENTLY ") {
                    // An interrupted build leaves an invalid index of that name: it goes first.
                    if let Some(name) = index_name(&s.sql) {
                        let invalid: bool = c
                            .query_one(
                                "SELECT EXISTS (SELECT 1 FROM pg_index ix JOIN pg_class i ON i.oid = ix.indexrelid JOIN pg_namespace n ON n.oid = i.relnamespace WHERE n.nspname = current_schema() AND i.relname = $1 AND NOT ix.indisvalid)",
                                &[&name.trim_matches('"')],
                            )
                            .map_err(|e| me.err("look for an interrupted index", e))?
                            .get(0);
                        if invalid {
                            me.run_with_retries(c, &s.undo)?;
                        }
                    }
                }
                me.run_with_retries(c, &s.sql)?;
                journal.set(i, &s.sql, Progress::Done)?;
            }
            Ok(())
        })
    }

    fn undo(&mut self, statement: &Statement) -> Result<()> {
        self.with(|me, c| match c.batch_execute(&statement.undo) {
            Ok(()) => Ok(()),
            Err(e) if state(&e).is_some_and(|s| GONE.contains(&s)) => Ok(()),
            Err(e) => Err(me.err("take back a statement", e)),
        })
    }

    fn backup(&mut self, to: &Path) -> Result<()> {
        let tool = tools::need(&["pg_dump"], "postgresql-client")?;
        let pass = self.pgpass()?;
        let mut cmd = self.tool(&tool, &pass);
        cmd.args(["--format=custom", "--no-owner", "--no-privileges"]);
        tools::run(
            cmd,
            None,
            Some(tools::private_file(to)?),
            "the database dump (pg_dump)",
        )
    }

    fn restore(&mut self, from: &Path) -> Result<()> {
        let tool = tools::need(&["pg_restore"], "postgresql-client")?;
        let pass = self.pgpass()?;
        // The tables in the copy; one the update created is not there and goes first.
        let list = {
            let mut cmd = self.tool(&tool, &pass);
            cmd.arg("--list").arg(from);
            let out = cmd
                .output()
                .map_err(|e| Error::msg(format!("run pg_restore: {e}")))?;
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let mut c = self.connect()?;
        let schema = self.site_schema(&mut c)?;
        let in_copy = |t: &str| {
            list.lines().any(|l| {
                l.contains(&format!(" TABLE {schema} {t} "))
                    || l.contains(&format!(" TABLE {schema} \"{t}\" "))
            })
        };
        for t in self.tables(&mut c, &schema)? {
            if !in_copy(&t) {
                c.batch_execute(&format!(
                    "DROP TABLE IF EXISTS {}.{} CASCADE",
                    quote(&schema),
                    quote(&t)
                ))
                .map_err(|e| self.err("drop a table the update created", e))?;
            }
        }
        // pg_restore --clean drops what the copy holds: not while this connection reads it.
        drop(c);
        let mut cmd = self.tool(&tool, &pass);
        cmd.args([
            "--clean",
            "--if-exists",
            "--single-transaction",
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
        ])
        .arg(format!("--dbname={}", self.server.name))
        .arg(from);
        tools::run(
            cmd,
            None,
            None,
            "putting the database copy back (pg_restore)",
        )
    }

    fn mark(&mut self) -> Result<serde_json::Value> {
        self.with(|me, c| Ok(serde_json::to_value(me.snapshot(c)?).expect("serialises")))
    }

    fn written_since(&mut self, mark: &serde_json::Value) -> Result<Option<Written>> {
        let m = parse_mark(mark)?;
        self.with(|me, c| {
            let changes = me.rows_between(c, &m, None)?;
            Ok((!changes.is_empty()).then(|| Written {
                when: format!("since {}", m.at),
                changes,
            }))
        })
    }

    fn written_between(
        &mut self,
        from: &serde_json::Value,
        to: &serde_json::Value,
    ) -> Result<bool> {
        let (a, b) = (parse_mark(from)?, parse_mark(to)?);
        let mut c = self.connect()?;
        let r = (|| -> Result<_> { Ok(!self.rows_between(&mut c, &a, Some(&b))?.is_empty()) })();
        self.keep(c);
        r
    }

    fn task_done(&mut self, name: &str) -> Result<Option<String>> {
        self.with(|me, c| {
            let has: bool = c
                .query_one("SELECT to_regclass($1) IS NOT NULL", &[&OWN_TABLE])
                .map_err(|e| me.err("find upkeep's table", e))?
                .get(0);
            if !has {
                return Ok(None);
            }
            Ok(c.query_opt(
                &format!("SELECT sha256 FROM {OWN_TABLE} WHERE name = $1"),
                &[&name],
            )
            .map_err(|e| me.err("read a task's mark", e))?
            .map(|r| r.get(0)))
        })
    }

    fn run_task(&mut self, task: &SqlTask<'_>, _journal: &mut dyn Journal) -> Result<()> {
        self.with(|me, c| {
            // PostgreSQL's DDL is transactional: the task, its DDL included, and its done-mark
            // commit together or not at all.
            let mut tx = c.transaction().map_err(|e| me.err("begin", e))?;
            tx.batch_execute(&format!("CREATE TABLE IF NOT EXISTS {OWN_TABLE}(name text PRIMARY KEY, sha256 text NOT NULL, run_id bigint, done_at text NOT NULL)"))
                .map_err(|e| me.err("create upkeep's table", e))?;
            if let Err(e) = tx.batch_execute(task.sql) {
                return Err(Error::refused(
                    format!(
                        "run_once task {} failed: {}\nits changes to the database were undone",
                        task.name,
                        me.err("run", e)
                    ),
                    "the site stays closed: fix the cause, then `upkeep resume` runs it again (or `upkeep rollback`)",
                ));
            }
            tx.execute(
                &format!("INSERT INTO {OWN_TABLE}(name, sha256, run_id, done_at) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE SET sha256 = EXCLUDED.sha256, run_id = EXCLUDED.run_id, done_at = EXCLUDED.done_at"),
                &[&task.name, &task.sha256, &task.run, &now_text()],
            )
            .map_err(|e| me.err("mark the task done", e))?;
            tx.commit().map_err(|e| me.err("commit", e))
        })
    }

    fn check(&mut self, backups: &Path) -> Result<()> {
        tools::need(&["pg_dump"], "postgresql-client")?;
        tools::need(&["pg_restore"], "postgresql-client")?;
        self.with(|me, c| {
            let bytes: i64 = c
                .query_one("SELECT pg_database_size(current_database())", &[])
                .map_err(|e| me.err("measure the database", e))?
                .get(0);
            let bytes = bytes.max(0) as u64;
            // A custom-format dump is compressed: its size is well under the database's.
            super::room_for(
                backups,
                bytes / 2,
                &format!("{} database", crate::base::fsutil::human_bytes(bytes)),
            )
        })
    }

    fn backup_name(&self, run: i64) -> String {
        format!("run-{run}.pgdump")
    }
    fn copied_how(&self) -> &'static str {
        "with pg_dump -Fc while the site is open"
    }
}

fn parse_mark(v: &serde_json::Value) -> Result<Mark> {
    serde_json::from_value(v.clone())
        .map_err(|e| Error::msg(format!("a database mark in state.db: {e}")))
}
