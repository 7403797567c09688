//! Webhooks, for sites (`[[notify]]`) and for the publisher (`upkeep reference --notify`): a
//! JSON body POSTed to a receiver, signed with a shared secret (`X-Upkeep-Signature-256:
//! sha256=HEX`, an HMAC-SHA256 of the exact body, as GitHub signs its hooks) so that the
//! receiver can tell who sent it. Queueing and retries belong to each side's store.

use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{block_on, describe};
use crate::base::error::{Error, IoContext, Result};

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "x-upkeep-signature-256";

/// `sha256=HEX` of `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The shared secret in `path` (its first line), refused when others can read the file.
pub fn read_secret(path: &Path) -> Result<Vec<u8>> {
    use std::os::unix::fs::PermissionsExt;
    let m = std::fs::metadata(path).ctx("read", path)?;
    if m.permissions().mode() & 0o077 != 0 {
        return Err(Error::refused(
            format!(
                "{}: the webhook secret is readable by others (mode {:o})",
                path.display(),
                m.permissions().mode() & 0o777
            ),
            format!("chmod 600 {}", path.display()),
        ));
    }
    let text = std::fs::read_to_string(path).ctx("read", path)?;
    Ok(text.trim_end_matches(['\n', '\r']).as_bytes().to_vec())
}

/// POST `body` to `url`, signed with `secret` when there is one; `Err` says why it was not
/// taken (no answer, or a status other than 2xx).
pub fn deliver(
    client: &reqwest::Client,
    url: &str,
    secret: Option<&[u8]>,
    body: &str,
) -> std::result::Result<(), String> {
    block_on(async {
        let mut r = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::USER_AGENT, "upkeep-webhook");
        if let Some(s) = secret {
            r = r.header(SIGNATURE_HEADER, sign(s, body.as_bytes()));
        }
        let r = r
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| describe(&e))?;
        match r.status() {
            s if s.is_success() => Ok(()),
            s => Err(format!("the receiver answered {s}")),
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_signature_is_an_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            super::sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
