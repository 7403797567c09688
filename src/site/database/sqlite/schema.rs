//! SQLite's schema plan: the schema the release declares in `schema.sql` (plus extensions'
//! fragments) is loaded into an in-memory SQLite and compared with the site database through
//! SQLite's own catalogue, so no SQL is parsed by hand. Missing tables, columns and indexes are
//! created in one transaction; nothing is ever dropped.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::{Connection, OpenFlags};

use crate::base::crash;
use crate::base::error::{DbContext, Error, Result};

/// Tables upkeep itself keeps in the site database.
const OWN_TABLE: &str = "upkeep_run_once";

use crate::site::database::{Fragment, Phase, SchemaPlan, Statement};

/// What every SQLite statement holds: SQLite has no online schema change, and one writer.
const HOLDS: &str = "the database, for writing (SQLite has no online schema change): runs closed";

fn statement(sql: String, undo: String) -> Statement {
    Statement {
        sql,
        holds: HOLDS.into(),
        phase: Phase::Closed,
        undo,
    }
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn objects(c: &Connection, kind: &str) -> rusqlite::Result<Vec<(String, String, String)>> {
    let mut st = c.prepare("SELECT name, tbl_name, sql FROM sqlite_master WHERE type = ?1 AND sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY rowid")?;
    st.query_map([kind], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect()
}

struct Column {
    name: String,
    ty: String,
    notnull: bool,
    default: Option<String>,
}

fn columns(c: &Connection, table: &str) -> rusqlite::Result<Vec<Column>> {
    let mut st = c.prepare(&format!("PRAGMA table_info({})", quote(table)))?;
    st.query_map([], |r| {
        Ok(Column {
            name: r.get(1)?,
            ty: r.get(2)?,
            notnull: r.get::<_, i64>(3)? != 0,
            default: r.get(4)?,
        })
    })?
    .collect()
}

/// What a declared schema may do while it is loaded: create tables and indexes (and what
/// SQLite does to its catalogue for that), inside transactions. Everything else is refused and
/// named: ATTACH (which creates files anywhere), PRAGMA, data, triggers, views, extensions.
fn schema_only(
    refused: &Arc<Mutex<Option<String>>>,
) -> impl FnMut(AuthContext<'_>) -> Authorization + Send + 'static {
    let refused = refused.clone();
    move |ctx: AuthContext<'_>| {
        let catalogue = |t: &str| matches!(t, "sqlite_master" | "sqlite_schema");
        match ctx.action {
            AuthAction::CreateTable { .. }
            | AuthAction::CreateIndex { .. }
            | AuthAction::Transaction { .. }
            | AuthAction::Savepoint { .. }
            // SQLite asks this of every CREATE INDEX; on the scratch database it is harmless.
            | AuthAction::Reindex { .. } => Authorization::Allow,
            AuthAction::Insert { table_name } | AuthAction::Update { table_name, .. }
                if catalogue(table_name) =>
            {
                Authorization::Allow
            }
            // An index reads its columns; a statement that reads data also needs Select,
            // which is refused.
            AuthAction::Read { .. } => Authorization::Allow,
            AuthAction::Function { function_name } if function_name != "load_extension" => {
                Authorization::Allow
            }
            other => {
                let mut r = refused.lock().unwrap_or_else(|e| e.into_inner());
                r.get_or_insert_with(|| format!("{other:?}"));
                Authorization::Deny
            }
        }
    }
}

/// The declared schema, loaded into an in-memory database with [`schema_only`] in force.
fn load_declared(fragments: &[Fragment]) -> Result<Connection> {
    let declared = Connection::open_in_memory().db(Path::new(":memory:"))?;
    let refused = Arc::new(Mutex::new(None));
    declared.authorizer(Some(schema_only(&refused)));
    for f in fragments {
        declared.execute_batch(&f.sql).map_err(|e| {
            let what = refused
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .map(|a| format!(" (refused: {a})"))
                .unwrap_or_default();
            Error::refused(
                format!("{}: the schema does not load: {e}{what}", f.source),
                "a declared schema holds CREATE TABLE and CREATE INDEX statements only: fix the release's schema file",
            )
        })?;
    }
    declared.authorizer(None::<fn(AuthContext<'_>) -> Authorization>);
    Ok(declared)
}

/// The site database read-only (a review has no side effect: a missing database is not
/// created, it reads as empty).
fn open_site(db: &Path) -> Result<Connection> {
    if !db.exists() {
        return Connection::open_in_memory().db(db);
    }
    Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .db(db)
}

/// Compare the declared schema with the database at `db`.
pub fn plan(db: &Path, fragments: &[Fragment]) -> Result<SchemaPlan> {
    let declared = load_declared(fragments)?;
    let site = open_site(db)?;
    let mut plan = SchemaPlan::default();
    let site_tables: Vec<String> = objects(&site, "table")
        .db(db)?
        .into_iter()
        .map(|t| t.0)
        .collect();
    let declared_tables = objects(&declared, "table").db(db)?;
    for (name, _, sql) in &declared_tables {
        if !site_tables.iter().any(|t| t.eq_ignore_ascii_case(name)) {
            plan.statements.push(statement(
                format!("{sql};"),
                format!("DROP TABLE IF EXISTS {};", quote(name)),
            ));
            continue;
        }
        let have = columns(&site, name).db(db)?;
        for col in columns(&declared, name).db(db)? {
            if have.iter().any(|h| h.name.eq_ignore_ascii_case(&col.name)) {
                continue;
            }
            let mut s = format!(
                "ALTER TABLE {} ADD COLUMN {}",
                quote(name),
                quote(&col.name)
            );
            if !col.ty.is_empty() {
                s.push_str(&format!(" {}", col.ty));
            }
            if col.notnull {
                s.push_str(" NOT NULL");
            }
            if let Some(d) = &col.default {
                s.push_str(&format!(" DEFAULT {d}"));
            }
            s.push(';');
            plan.statements.push(statement(
                s,
                format!(
                    "ALTER TABLE {} DROP COLUMN {};",
                    quote(name),
                    quote(&col.name)
                ),
            ));
        }
        for h in &have {
            if !columns(&declared, name)
                .db(db)?
                .iter()
                .any(|c| c.name.eq_ignore_ascii_case(&h.name))
            {
                plan.extra.push(format!(
                    "column {name}.{} (not in the schema; kept)",
                    h.name
                ));
            }
        }
    }
    for t in &site_tables {
        if t != OWN_TABLE
            && !declared_tables
                .iter()
                .any(|(n, _, _)| n.eq_ignore_ascii_case(t))
        {
            plan.extra
                .push(format!("table {t} (not in the schema; kept)"));
        }
    }
    let site_indexes: Vec<String> = objects(&site, "index")
        .db(db)?
        .into_iter()
        .map(|i| i.0)
        .collect();
    for (name, _, sql) in objects(&declared, "index").db(db)? {
        if !site_indexes.iter().any(|i| i.eq_ignore_ascii_case(&name)) {
            plan.statements.push(statement(
                format!("{sql};"),
                format!("DROP INDEX IF EXISTS {};", quote(&name)),
            ));
        }
    }
    Ok(plan)
}

/// Apply the plan in one transaction. A failing statement rolls everything back and is named
/// in the error. Nothing else is done to the database: no REINDEX (its cost grows with the
/// data, in the closed window, for indexes that CREATE INDEX builds whole anyway), no ANALYZE
/// (its `sqlite_stat` tables would change the application's query plans behind its back).
pub fn apply(db: &Path, statements: &[Statement]) -> Result<()> {
    let mut c = Connection::open(db).db(db)?;
    let tx = c.transaction().db(db)?;
    for s in statements.iter().map(|s| &s.sql) {
        tx.execute_batch(s).map_err(|e| {
            Error::refused(
                format!("migration failed on\n  {s}\n  {e}\nthe database was left as it was before the migration"),
                "run `upkeep rollback` to restore the previous release, or fix the database and run `upkeep resume`",
            )
        })?;
    }
    crash::point("migrate:tx");
    tx.commit().db(db)
}

/// Copy the database with SQLite's backup API (a consistent copy even while it is in use).
pub fn backup(db: &Path, to: &Path) -> Result<()> {
    let c = Connection::open(db).db(db)?;
    let _ = std::fs::remove_file(to);
    c.backup(rusqlite::DatabaseName::Main, to, None).db(to)
}

/// Restore a copy made by [`backup`] over the database, page by page.
pub fn restore(copy: &Path, db: &Path) -> Result<()> {
    let c = Connection::open(copy).db(copy)?;
    c.backup(rusqlite::DatabaseName::Main, db, None).db(db)
}

/// Check the database with `PRAGMA integrity_check`.
pub fn integrity(db: &Path) -> Result<()> {
    if !db.exists() {
        return Ok(());
    }
    let c = Connection::open(db).db(db)?;
    let r: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .db(db)?;
    if r != "ok" {
        return Err(Error::refused(
            format!(
                "the site database {} fails its integrity check: {r}",
                db.display()
            ),
            "repair or restore the database before updating",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frag(sql: &str) -> Vec<Fragment> {
        vec![Fragment {
            source: "schema.sql".into(),
            sql: sql.into(),
        }]
    }

    #[test]
    fn a_declared_schema_may_only_create_tables_and_indexes() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("s.db");
        let elsewhere = d.path().join("elsewhere.db");
        let ok = "BEGIN; CREATE TABLE a(id INTEGER PRIMARY KEY, t TEXT DEFAULT (datetime('now')) CHECK (length(t) < 99)); CREATE INDEX a_t ON a(t); COMMIT;";
        assert_eq!(plan(&db, &frag(ok)).unwrap().statements.len(), 2);
        assert!(!db.exists());
        for (bad, word) in [
            (
                format!(
                    "ATTACH DATABASE '{}' AS e; CREATE TABLE e.t(a);",
                    elsewhere.display()
                ),
                "Attach",
            ),
            (
                "PRAGMA journal_mode = WAL; CREATE TABLE t(a);".to_string(),
                "Pragma",
            ),
            (
                "CREATE TABLE t(a); INSERT INTO t VALUES(1);".to_string(),
                "Insert",
            ),
            (
                "CREATE TABLE t(a); CREATE VIEW v AS SELECT a FROM t;".to_string(),
                "View",
            ),
            (
                "CREATE TABLE t(a); CREATE TRIGGER g AFTER INSERT ON t BEGIN DELETE FROM t; END;"
                    .to_string(),
                "Trigger",
            ),
            ("SELECT load_extension('/tmp/x.so');".to_string(), "Select"),
            ("CREATE TEMP TABLE t(a);".to_string(), "temp"),
        ] {
            let e = plan(&db, &frag(&bad)).unwrap_err().to_string();
            assert!(
                e.contains("not authorized") && e.contains(word),
                "{bad}: {e}"
            );
        }
        // Reviewing has no side effect: no file made by ATTACH, no site database created.
        assert!(!elsewhere.exists());
        assert!(!db.exists());
    }

    #[test]
    fn adds_tables_columns_indexes_and_reports_extra() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("s.db");
        Connection::open(&db)
            .unwrap()
            .execute_batch(
                "CREATE TABLE a(id INTEGER PRIMARY KEY, x TEXT, legacy TEXT); CREATE TABLE old(z);",
            )
            .unwrap();
        let p = plan(&db, &frag("CREATE TABLE a(id INTEGER PRIMARY KEY, x TEXT, y INTEGER NOT NULL DEFAULT 0); CREATE TABLE b(k TEXT); CREATE INDEX a_y ON a(y);")).unwrap();
        assert_eq!(
            p.statements
                .iter()
                .map(|s| s.sql.as_str())
                .collect::<Vec<_>>(),
            [
                "ALTER TABLE \"a\" ADD COLUMN \"y\" INTEGER NOT NULL DEFAULT 0;",
                "CREATE TABLE b(k TEXT);",
                "CREATE INDEX a_y ON a(y);"
            ]
        );
        assert_eq!(
            p.extra,
            [
                "column a.legacy (not in the schema; kept)",
                "table old (not in the schema; kept)"
            ]
        );
        apply(&db, &p.statements).unwrap();
        // Each undo takes its statement back: the database is as before.
        let c = Connection::open(&db).unwrap();
        for st in p.statements.iter().rev() {
            c.execute_batch(&st.undo).unwrap();
        }
        let t: Vec<String> = c
            .prepare("SELECT name FROM sqlite_master ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(t, ["a", "old"]);
        assert!(columns(&c, "a").unwrap().iter().all(|c| c.name != "y"));
        drop(c);
        apply(&db, &p.statements).unwrap();
        assert!(plan(&db, &frag("CREATE TABLE a(id INTEGER PRIMARY KEY, x TEXT, y INTEGER NOT NULL DEFAULT 0); CREATE TABLE b(k TEXT); CREATE INDEX a_y ON a(y);")).unwrap().statements.is_empty());
    }

    #[test]
    fn bad_statement_rolls_back() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("s.db");
        Connection::open(&db)
            .unwrap()
            .execute_batch("CREATE TABLE a(id INTEGER PRIMARY KEY); INSERT INTO a VALUES (1);")
            .unwrap();
        let p = plan(
            &db,
            &frag("CREATE TABLE c(k); CREATE TABLE a(id INTEGER PRIMARY KEY, n TEXT NOT NULL);"),
        )
        .unwrap();
        assert_eq!(
            p.statements.len(),
            2,
            "c is created before the failing ALTER"
        );
        let e = apply(&db, &p.statements).unwrap_err().to_string();
        assert!(e.contains("ADD COLUMN \"n\" TEXT NOT NULL"), "{e}");
        let c = Connection::open(&db).unwrap();
        let n: i64 = c
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'c'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 0, "rolled back");
    }

    #[test]
    fn bad_schema_is_refused() {
        let d = tempfile::tempdir().unwrap();
        assert!(plan(&d.path().join("s.db"), &frag("CREATE TABLE (")).is_err());
    }
}
