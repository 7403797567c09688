//! What the reference client keeps in state.db between polls (see [`crate::client::Kept`]):
//! pointers and channels with their ETags in `meta`, and the verified manifests.

use std::path::PathBuf;

use super::State;

/// The client's keep in a state.db, opened for each use (the client may ask from any thread).
pub struct KeptIn(pub PathBuf);

impl crate::client::Kept for KeptIn {
    fn document(&self, rel: &str) -> Option<(String, Vec<u8>)> {
        let st = State::open(&self.0).ok()?;
        let etag = st.meta(&format!("http_etag:{rel}")).ok()??;
        let body = st.meta(&format!("http_body:{rel}")).ok()??;
        Some((etag, body.into_bytes()))
    }

    fn keep(&self, rel: &str, etag: &str, body: &str) {
        if let Ok(st) = State::open(&self.0) {
            let _ = st.set_meta(&format!("http_etag:{rel}"), etag);
            let _ = st.set_meta(&format!("http_body:{rel}"), body);
        }
    }

    fn manifest(&self, version: &str) -> Option<(Vec<u8>, String)> {
        State::open(&self.0).ok()?.release_bytes(version).ok()?
    }
}
