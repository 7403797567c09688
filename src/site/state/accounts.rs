//! The panel's accounts, sessions and failed logins live in state.db (the tables are
//! [`crate::base::accounts::ACCOUNT_TABLES`]).

use std::path::Path;

use rusqlite::Connection;

use super::State;
use crate::base::accounts::AccountStore;
use crate::base::sql::LiteConn;

impl LiteConn for State {
    fn lite(&self) -> (&Connection, &Path) {
        (&self.conn, &self.path)
    }
}

impl AccountStore for State {}
