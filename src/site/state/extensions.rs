//! The extensions found by the last scan: the table `extensions`.

use super::State;
use crate::base::error::{DbContext, Result};
use crate::documents::manifest::RelPath;
use crate::site::plan::Extension;

impl State {
    /// Replace the recorded extensions.
    pub fn record_extensions(&self, exts: &[Extension]) -> Result<()> {
        let tx = self.conn.unchecked_transaction().db(&self.path)?;
        tx.execute("DELETE FROM extensions", []).db(&self.path)?;
        for e in exts {
            tx.execute(
                "INSERT INTO extensions(path, name, version, schema, run_once) VALUES(?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![e.folder(), e.name, e.version, e.schema, e.run_once],
            )
            .db(&self.path)?;
        }
        tx.commit().db(&self.path)
    }

    /// The recorded extensions, by folder.
    pub fn extensions(&self) -> Result<Vec<Extension>> {
        let mut st = self
            .conn
            .prepare("SELECT path, name, version, schema, run_once FROM extensions ORDER BY path")
            .db(&self.path)?;
        let rows = st
            .query_map([], |r| {
                let folder: String = r.get(0)?;
                Ok(Extension {
                    // A folder that no longer parses is treated as the root's: the scan after
                    // the next update writes it again.
                    path: RelPath::parse(&folder).ok(),
                    name: r.get(1)?,
                    version: r.get(2)?,
                    schema: r.get(3)?,
                    // Shown by status only; a run reads its extensions from its plan.
                    schema_mysql: None,
                    schema_postgresql: None,
                    run_once: r.get(4)?,
                    local: false,
                })
            })
            .db(&self.path)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().db(&self.path)
    }
}
