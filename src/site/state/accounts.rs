//! The panel's accounts, sessions and failed logins live in state.db (the tables are
//! [`crate::base::accounts::ACCOUNT_TABLES`]).

use super::State;
use crate::base::accounts::AccountStore;
use crate::base::error::Result;
use crate::base::sql::{Arg, Row, Sql, lite_rows, lite_run};

impl Sql for State {
    fn run(&self, sql: &str, args: &[Arg]) -> Result<u64> {
        lite_run(&self.conn, &self.path, sql, args)
    }
    fn rows(&self, sql: &str, args: &[Arg]) -> Result<Vec<Row>> {
        lite_rows(&self.conn, &self.path, sql, args)
    }
    fn batch(&self, sql: &str) -> Result<()> {
        use crate::base::error::DbContext;
        self.conn.execute_batch(sql).db(&self.path)
    }
}

impl AccountStore for State {}
