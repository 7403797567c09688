//! A site's identity in a fleet: a random site id and a site key pair, made at `init` (or the
//! first time they are needed, for instances made before fleets), kept in `.upkeep/`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use crate::base::error::{Error, IoContext, Result};
use crate::client::{Remote, Target};
use crate::documents::channel::{DEFAULT_CHANNEL, SiteView};
use crate::documents::manifest::SecretKey;
use crate::site::config::Instance;
use crate::site::state::State;

/// Who a site is.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Identity {
    /// The random site id (32 hex digits).
    pub id: String,
    /// Its groups, from upkeep.toml.
    pub groups: Vec<String>,
    /// The channel it follows.
    pub channel: String,
}

impl Identity {
    /// What the wave rule needs.
    pub fn view(&self) -> SiteView<'_> {
        SiteView {
            id: &self.id,
            groups: &self.groups,
        }
    }
}

/// The site key's file.
pub fn key_path(inst: &Instance) -> std::path::PathBuf {
    inst.state_dir().join("site.key")
}

/// The site's identity, made on first use.
pub fn identity(inst: &Instance) -> Result<Identity> {
    let state = State::open(&inst.state_db())?;
    let id = match state.meta("site_id")? {
        Some(id) => id,
        None => {
            let mut raw = [0u8; 16];
            getrandom::getrandom(&mut raw)
                .map_err(|e| Error::msg(format!("no random source: {e}")))?;
            let id = hex::encode(raw);
            write_key(inst)?;
            state.set_meta("site_id", &id)?;
            id
        }
    };
    Ok(Identity {
        id,
        groups: inst.config.groups.clone(),
        channel: inst
            .config
            .channel
            .clone()
            .unwrap_or_else(|| DEFAULT_CHANNEL.to_string()),
    })
}

/// Write a fresh site key (owner-only), unless one is there.
fn write_key(inst: &Instance) -> Result<()> {
    let p = key_path(inst);
    if p.exists() {
        return Ok(());
    }
    let key = SecretKey::generate()?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&p)
        .ctx("create", &p)?;
    writeln!(f, "{}", key.to_text()).ctx("write", &p)?;
    f.sync_all().ctx("sync", &p)
}

/// What the reference offers this site now (its channel, its waves), verified. Pointers are
/// asked conditionally against the copies kept in state.db (an idle poll costs 304s).
pub fn offered(inst: &Instance, remote: &Remote) -> Result<Target> {
    offered_on(inst, remote, &crate::client::current_runtime())
}

/// [`offered`] on the caller's runtime: the connections it opens stay open for the caller's
/// next requests (a staging's objects come over them).
pub fn offered_on(
    inst: &Instance,
    remote: &Remote,
    rt: &tokio::runtime::Runtime,
) -> Result<Target> {
    let me = identity(inst)?;
    let cached = remote
        .clone()
        .with_cache(std::sync::Arc::new(crate::site::state::KeptIn(
            inst.state_db(),
        )));
    match rt.block_on(cached.offered(&me.view(), &me.channel)) {
        // A kept copy answered by 304 that does not verify (a damaged state.db): forget the
        // copies and ask again in full, rather than fail until the reference changes.
        Err(e @ (Error::Signature { .. } | Error::BadManifest { .. })) => {
            let state = State::open(&inst.state_db())?;
            if state.clear_http_cache()? == 0 {
                return Err(e);
            }
            crate::errln!(
                "note: a kept copy of the reference's pointers did not verify ({e}); asked again in full"
            );
            rt.block_on(cached.offered(&me.view(), &me.channel))
        }
        r => r,
    }
}

/// The site's name in reports: `name` from upkeep.toml, else host name and root.
pub fn site_name(inst: &Instance) -> String {
    inst.config
        .name
        .clone()
        .unwrap_or_else(|| format!("{}:{}", host_name(), inst.root.display()))
}

/// This machine's host name (`localhost` when it cannot be read).
pub fn host_name() -> String {
    hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into())
}
