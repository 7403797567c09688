//! Verified manifests kept by version, and which one is installed.

use rusqlite::{OptionalExtension, params};

use super::State;
use crate::base::error::{DbContext, Error, Result};
use crate::documents::manifest::{PublicKey, VerifiedManifest};

impl State {
    /// Keep a verified manifest so that later commands need not fetch it again.
    pub fn save_release(&self, m: &VerifiedManifest) -> Result<()> {
        // Without its bytes, the manifest was read from this store and is still in it.
        let Some(bytes) = m.bytes() else {
            return Ok(());
        };
        // The signature identifies the signed bytes: the stored manifest is read only when it
        // differs (reopen saves the installed release inside the closed window, and a manifest
        // of 100,000 files is 20 MB).
        let stored_sig: Option<String> = self
            .conn
            .query_row(
                "SELECT sig FROM manifests WHERE version = ?1",
                [m.version()],
                |r| r.get(0),
            )
            .optional()
            .db(&self.path)?;
        if let Some(sig) = stored_sig {
            if sig.trim() == m.sig().trim()
                || self
                    .release_bytes(m.version())?
                    .is_some_and(|(stored, _)| stored == bytes)
            {
                return Ok(());
            }
            return Err(Error::VersionReused {
                version: m.version().to_string(),
            });
        }
        self.put_blob(
            |c| {
                c.execute(
                    "INSERT OR REPLACE INTO manifests(version, sig, manifest) VALUES(?1, ?2, zeroblob(?3))",
                    params![m.version(), m.sig(), bytes.len() as i64],
                )
            },
            "manifests",
            "manifest",
            bytes,
        )
    }

    /// A stored manifest, verified again against the configured key.
    pub fn load_release(&self, version: &str, key: &PublicKey) -> Result<Option<VerifiedManifest>> {
        let Some((bytes, sig)) = self.release_bytes(version)? else {
            return Ok(None);
        };
        VerifiedManifest::verify(bytes, sig, key, &format!("stored manifest of {version}"))
            .map(Some)
    }

    /// A stored manifest's signed bytes and signature, not verified: the caller checks them.
    pub fn release_bytes(&self, version: &str) -> Result<Option<(Vec<u8>, String)>> {
        let row: Option<(i64, usize, String)> = self
            .conn
            .query_row(
                "SELECT rowid, length(manifest), sig FROM manifests WHERE version = ?1",
                [version],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .db(&self.path)?;
        let Some((row, len, sig)) = row else {
            return Ok(None);
        };
        let bytes = self.get_blob("manifests", "manifest", row, len)?;
        Ok(Some((bytes, sig)))
    }

    /// The installed release version, if known.
    pub fn installed_version(&self) -> Result<Option<String>> {
        self.meta("installed_version")
    }

    /// The installed release's manifest, if known.
    pub fn installed(&self, key: &PublicKey) -> Result<Option<VerifiedManifest>> {
        match self.installed_version()? {
            Some(v) => self.load_release(&v, key),
            None => Ok(None),
        }
    }

    /// The installed release's verified list of files, without the signed bytes (they stay
    /// here): for comparing with the live tree or another release.
    pub fn installed_list(&self, key: &PublicKey) -> Result<Option<VerifiedManifest>> {
        let mut m = self.installed(key)?;
        if let Some(m) = m.as_mut() {
            m.drop_bytes();
        }
        Ok(m)
    }

    /// Record the installed release.
    pub fn set_installed(&self, m: &VerifiedManifest) -> Result<()> {
        self.save_release(m)?;
        self.set_meta("installed_version", m.version())
    }
}
