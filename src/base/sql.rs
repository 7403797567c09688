//! The two engines upkeep keeps its own tables in, behind one small interface: an SQLite file
//! (a site's state.db, a fleet database by default) and PostgreSQL (a fleet database shared by
//! several reference servers). A statement is written once, in the SQL both take, with `?1`
//! parameters (PostgreSQL is handed `$1`); values are integers and text, nothing else, so
//! that the same code reads the same rows from either.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::Connection;
use rusqlite::types::ValueRef;

use crate::base::dburl::Server;
use crate::base::error::{DbContext, Error, Result};

/// A value bound to a statement's parameter.
#[derive(Clone, Copy, Debug)]
pub enum Arg<'a> {
    /// An integer, or NULL.
    Int(Option<i64>),
    /// Text, or NULL.
    Text(Option<&'a str>),
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}
impl From<Option<i64>> for Arg<'_> {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}
impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(Some(v))
    }
}
impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Arg::Text(Some(v))
    }
}
impl<'a> From<&'a Option<String>> for Arg<'a> {
    fn from(v: &'a Option<String>) -> Self {
        Arg::Text(v.as_deref())
    }
}
impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Arg::Text(v)
    }
}

/// The arguments of a statement, each turned into an [`Arg`].
#[macro_export]
macro_rules! args {
    ($($v:expr),* $(,)?) => { &[$($crate::base::sql::Arg::from($v)),*] };
}

/// A value read from a row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cell {
    /// NULL.
    Null,
    /// An integer (PostgreSQL's booleans read as 0 and 1).
    Int(i64),
    /// Text.
    Text(String),
}

impl Cell {
    /// The integer, if it is one.
    pub fn opt_int(&self) -> Option<i64> {
        match self {
            Cell::Int(i) => Some(*i),
            _ => None,
        }
    }
    /// The integer (0 for NULL or text).
    pub fn int(&self) -> i64 {
        self.opt_int().unwrap_or(0)
    }
    /// The text, if it is some.
    pub fn opt_text(&mut self) -> Option<String> {
        match std::mem::replace(self, Cell::Null) {
            Cell::Text(t) => Some(t),
            Cell::Int(i) => Some(i.to_string()),
            Cell::Null => None,
        }
    }
    /// The text ("" for NULL).
    pub fn text(&mut self) -> String {
        self.opt_text().unwrap_or_default()
    }
}

/// A row read.
pub type Row = Vec<Cell>;

/// A database upkeep keeps tables in.
pub trait Sql {
    /// Run a statement; the number of rows it changed.
    fn run(&self, sql: &str, args: &[Arg]) -> Result<u64>;
    /// The rows of a query.
    fn rows(&self, sql: &str, args: &[Arg]) -> Result<Vec<Row>>;
    /// Several statements without parameters (schemas, BEGIN, COMMIT).
    fn batch(&self, sql: &str) -> Result<()>;
    /// Whether it is PostgreSQL (for the few statements the engines spell differently).
    fn is_postgres(&self) -> bool {
        false
    }

    /// The first row of a query.
    fn row(&self, sql: &str, args: &[Arg]) -> Result<Option<Row>> {
        Ok(self.rows(sql, args)?.into_iter().next())
    }

    /// Run `f` in a transaction: committed when it returns Ok, rolled back otherwise.
    fn tx<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T>
    where
        Self: Sized,
    {
        self.batch("BEGIN")?;
        match f() {
            Ok(v) => {
                self.batch("COMMIT")?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.batch("ROLLBACK");
                Err(e)
            }
        }
    }
}

/// [`Sql::run`] on an SQLite connection.
fn lite_run(conn: &Connection, path: &Path, sql: &str, args: &[Arg]) -> Result<u64> {
    let mut st = conn.prepare_cached(sql).db(path)?;
    Ok(st
        .execute(rusqlite::params_from_iter(args.iter().map(lite_arg)))
        .db(path)? as u64)
}

/// [`Sql::rows`] on an SQLite connection.
fn lite_rows(conn: &Connection, path: &Path, sql: &str, args: &[Arg]) -> Result<Vec<Row>> {
    let mut st = conn.prepare_cached(sql).db(path)?;
    let n = st.column_count();
    let rows = st
        .query_map(rusqlite::params_from_iter(args.iter().map(lite_arg)), |r| {
            (0..n)
                .map(|i| {
                    Ok(match r.get_ref(i)? {
                        ValueRef::Null => Cell::Null,
                        ValueRef::Integer(i) => Cell::Int(i),
                        ValueRef::Real(f) => Cell::Int(f as i64),
                        ValueRef::Text(t) | ValueRef::Blob(t) => {
                            Cell::Text(String::from_utf8_lossy(t).into_owned())
                        }
                    })
                })
                .collect::<rusqlite::Result<Row>>()
        })
        .db(path)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().db(path)
}

fn lite_arg(a: &Arg) -> rusqlite::types::Value {
    use rusqlite::types::Value;
    match *a {
        Arg::Int(Some(i)) => Value::Integer(i),
        Arg::Text(Some(t)) => Value::Text(t.to_string()),
        Arg::Int(None) | Arg::Text(None) => Value::Null,
    }
}

/// An SQLite file of upkeep's own.
pub struct Lite {
    /// The connection.
    pub conn: Connection,
    /// The file, for messages.
    pub path: PathBuf,
}

impl Lite {
    /// Open (and create) `path`.
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Lite {
            conn: Connection::open(path).db(path)?,
            path: path.to_path_buf(),
        })
    }
}

/// Anything holding an SQLite connection (a [`Lite`], a site's state.db) is an [`Sql`].
pub trait LiteConn {
    /// The connection and its file (for messages).
    fn lite(&self) -> (&Connection, &Path);
}

impl LiteConn for Lite {
    fn lite(&self) -> (&Connection, &Path) {
        (&self.conn, &self.path)
    }
}

impl<T: LiteConn> Sql for T {
    fn run(&self, sql: &str, args: &[Arg]) -> Result<u64> {
        let (c, p) = self.lite();
        lite_run(c, p, sql, args)
    }
    fn rows(&self, sql: &str, args: &[Arg]) -> Result<Vec<Row>> {
        let (c, p) = self.lite();
        lite_rows(c, p, sql, args)
    }
    fn batch(&self, sql: &str) -> Result<()> {
        let (c, p) = self.lite();
        c.execute_batch(sql).db(p)
    }
}

/// `?1` parameters as PostgreSQL's `$1` (upkeep's statements hold no `?` in literals).
fn dollars(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut it = sql.chars().peekable();
    while let Some(c) = it.next() {
        if c == '?' && it.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

/// A PostgreSQL database of upkeep's own, on one connection that is made again when it
/// breaks (the statement that found it broken fails; the next one reconnects).
pub struct Pg {
    server: Server,
    client: RefCell<Option<postgres::Client>>,
    prepared: RefCell<HashMap<String, postgres::Statement>>,
    /// What it is, for messages ("the fleet database").
    what: String,
    hint: String,
    /// Run on every new connection (settings of the session).
    init: String,
    /// A transaction is open on the connection: if it breaks now, the statements that follow
    /// must fail, not run on a new connection outside the transaction.
    in_tx: std::cell::Cell<bool>,
}

impl Pg {
    /// Connect to `server` (`what` it is, for messages; `hint` says where its URL and password
    /// come from), running `init` on this connection and on every one made again.
    pub fn connect(server: Server, what: &str, hint: &str, init: &str) -> Result<Self> {
        let pg = Pg {
            server,
            client: RefCell::new(None),
            prepared: RefCell::new(HashMap::new()),
            what: what.to_string(),
            hint: hint.to_string(),
            init: init.to_string(),
            in_tx: std::cell::Cell::new(false),
        };
        pg.with(|_| Ok(()))?;
        Ok(pg)
    }

    /// Where, for messages.
    pub fn display(&self) -> String {
        self.server.display()
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut postgres::Client) -> std::result::Result<T, postgres::Error>,
    ) -> Result<T> {
        let mut slot = self.client.borrow_mut();
        if self.in_tx.get() && slot.as_ref().is_none_or(|c| c.is_closed()) {
            // The server rolled the transaction back when the connection went.
            self.in_tx.set(false);
            return Err(Error::msg(format!(
                "{} {}: the connection was lost in the middle of a transaction; nothing of it was kept",
                self.what,
                self.server.display()
            )));
        }
        if slot.as_ref().is_none_or(|c| c.is_closed()) {
            self.prepared.borrow_mut().clear();
            let mut c = crate::base::pg::login(&self.server, &self.what, &self.hint)?;
            if !self.init.is_empty() {
                c.batch_execute(&self.init).map_err(|e| {
                    Error::msg(format!(
                        "{} {}: {}",
                        self.what,
                        self.server.display(),
                        crate::base::pg::detail(&e)
                    ))
                })?;
            }
            *slot = Some(c);
        }
        let c = slot.as_mut().expect("connected above");
        f(c).map_err(|e| {
            Error::msg(format!(
                "{} {}: {}",
                self.what,
                self.server.display(),
                crate::base::pg::detail(&e)
            ))
        })
    }

    fn statement(
        &self,
        c: &mut postgres::Client,
        sql: &str,
    ) -> std::result::Result<postgres::Statement, postgres::Error> {
        if let Some(s) = self.prepared.borrow().get(sql) {
            return Ok(s.clone());
        }
        let s = c.prepare(&dollars(sql))?;
        self.prepared
            .borrow_mut()
            .insert(sql.to_string(), s.clone());
        Ok(s)
    }
}

fn pg_args<'a>(args: &'a [Arg<'a>]) -> Vec<Box<dyn postgres::types::ToSql + Sync + 'a>> {
    args.iter()
        .map(|a| -> Box<dyn postgres::types::ToSql + Sync> {
            match *a {
                Arg::Int(i) => Box::new(i),
                Arg::Text(t) => Box::new(t),
            }
        })
        .collect()
}

fn pg_cell(r: &postgres::Row, i: usize) -> std::result::Result<Cell, postgres::Error> {
    use postgres::types::Type;
    let t = r.columns()[i].type_();
    Ok(if *t == Type::INT8 {
        r.try_get::<_, Option<i64>>(i)?
            .map_or(Cell::Null, Cell::Int)
    } else if *t == Type::INT4 {
        r.try_get::<_, Option<i32>>(i)?
            .map_or(Cell::Null, |v| Cell::Int(v.into()))
    } else if *t == Type::INT2 {
        r.try_get::<_, Option<i16>>(i)?
            .map_or(Cell::Null, |v| Cell::Int(v.into()))
    } else if *t == Type::BOOL {
        r.try_get::<_, Option<bool>>(i)?
            .map_or(Cell::Null, |v| Cell::Int(v.into()))
    } else {
        r.try_get::<_, Option<String>>(i)?
            .map_or(Cell::Null, Cell::Text)
    })
}

impl Sql for Pg {
    fn run(&self, sql: &str, args: &[Arg]) -> Result<u64> {
        self.with(|c| {
            let st = self.statement(c, sql)?;
            let a = pg_args(args);
            let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                a.iter().map(|b| b.as_ref()).collect();
            c.execute(&st, &refs)
        })
    }
    fn rows(&self, sql: &str, args: &[Arg]) -> Result<Vec<Row>> {
        self.with(|c| {
            let st = self.statement(c, sql)?;
            let a = pg_args(args);
            let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                a.iter().map(|b| b.as_ref()).collect();
            c.query(&st, &refs)?
                .iter()
                .map(|r| (0..r.len()).map(|i| pg_cell(r, i)).collect())
                .collect()
        })
    }
    fn batch(&self, sql: &str) -> Result<()> {
        let r = self.with(|c| c.batch_execute(sql));
        match sql {
            "BEGIN" => self.in_tx.set(r.is_ok()),
            "COMMIT" | "ROLLBACK" => self.in_tx.set(false),
            _ => {}
        }
        r
    }
    fn is_postgres(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_numbered_for_postgresql() {
        assert_eq!(
            dollars("UPDATE t SET a = ?2 WHERE id = ?1 AND b = '?'"),
            "UPDATE t SET a = $2 WHERE id = $1 AND b = '?'"
        );
    }

    #[test]
    fn sqlite_reads_integers_text_and_null() {
        let d = tempfile::tempdir().unwrap();
        let db = Lite::open(&d.path().join("x.db")).unwrap();
        db.batch("CREATE TABLE t(a INTEGER, b TEXT)").unwrap();
        db.tx(|| {
            db.run("INSERT INTO t VALUES(?1, ?2)", args![7, "x"])?;
            db.run(
                "INSERT INTO t VALUES(?1, ?2)",
                args![None::<i64>, None::<&str>],
            )
        })
        .unwrap();
        let rows = db.rows("SELECT a, b FROM t ORDER BY a", &[]).unwrap();
        assert_eq!(rows[0], vec![Cell::Null, Cell::Null]);
        assert_eq!(rows[1], vec![Cell::Int(7), Cell::Text("x".into())]);
        // A failing transaction leaves nothing.
        let r = db.tx(|| {
            db.run("INSERT INTO t VALUES(?1, ?2)", args![8, "y"])?;
            Err::<(), _>(Error::msg("no"))
        });
        assert!(r.is_err());
        assert_eq!(db.rows("SELECT a FROM t", &[]).unwrap().len(), 2);
    }
}
