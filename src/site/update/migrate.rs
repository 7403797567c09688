//! Migrate: bring the site database to the schema the release declares in `schema.sql` (plus
//! extensions' fragments). The declared schema is loaded into an in-memory SQLite and compared
//! with the site database through SQLite's own catalogue, so no SQL is parsed by hand. Missing
//! tables, columns and indexes are created in one transaction; nothing is ever dropped.

use std::path::Path;

use rusqlite::Connection;

use crate::base::crash;
use crate::base::error::{DbContext, Error, Result};

/// Tables upkeep itself keeps in the site database.
const OWN_TABLE: &str = "upkeep_run_once";

pub use crate::site::plan::SchemaPlan;

/// One piece of declared schema: where it comes from and its SQL.
pub struct Fragment {
    /// `schema.sql`, or an extension's fragment path.
    pub source: String,
    /// The DDL.
    pub sql: String,
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

/// Compare the declared schema with the database at `db`.
pub fn plan(db: &Path, fragments: &[Fragment]) -> Result<SchemaPlan> {
    let declared = Connection::open_in_memory().db(Path::new(":memory:"))?;
    for f in fragments {
        declared.execute_batch(&f.sql).map_err(|e| {
            Error::refused(
                format!("{}: the schema does not load: {e}", f.source),
                "fix the release's schema.sql (CREATE TABLE and CREATE INDEX statements only)",
            )
        })?;
    }
    let site = Connection::open(db).db(db)?;
    let mut plan = SchemaPlan::default();
    let site_tables: Vec<String> = objects(&site, "table")
        .db(db)?
        .into_iter()
        .map(|t| t.0)
        .collect();
    let declared_tables = objects(&declared, "table").db(db)?;
    for (name, _, sql) in &declared_tables {
        if !site_tables.iter().any(|t| t.eq_ignore_ascii_case(name)) {
            plan.statements.push(format!("{sql};"));
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
            plan.statements.push(s);
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
            plan.statements.push(format!("{sql};"));
        }
    }
    Ok(plan)
}

/// Apply the plan in one transaction, then REINDEX, ANALYZE and PRAGMA optimize. A failing
/// statement rolls everything back and is named in the error.
pub fn apply(db: &Path, plan: &SchemaPlan) -> Result<()> {
    let mut c = Connection::open(db).db(db)?;
    let tx = c.transaction().db(db)?;
    for s in &plan.statements {
        tx.execute_batch(s).map_err(|e| {
            Error::refused(
                format!("migration failed on\n  {s}\n  {e}\nthe database was left as it was before the migration"),
                "run `upkeep rollback` to restore the previous release, or fix the database and run `upkeep resume`",
            )
        })?;
    }
    tx.execute_batch("REINDEX; ANALYZE;").db(db)?;
    crash::point("migrate:tx");
    tx.commit().db(db)?;
    c.execute_batch("PRAGMA optimize;").db(db)?;
    Ok(())
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
            p.statements,
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
        apply(&db, &p).unwrap();
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
        let e = apply(&db, &p).unwrap_err().to_string();
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
