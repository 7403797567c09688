//! ed25519 keys and detached signatures, each one line of text so that they can be pasted into a
//! config file or a README.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};

use crate::base::error::{Error, IoContext, Result};
use crate::documents::manifest::digest::sha256_bytes;

const SECRET_PREFIX: &str = "upkeep-secret-key-v1:";
const PUBLIC_PREFIX: &str = "upkeep-public-key-v1:";
const SIG_PREFIX: &str = "upkeep-signature-v1";

/// The publisher's signing key.
pub struct SecretKey(SigningKey);

/// The key a site trusts, from `upkeep.toml`.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl SecretKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<Self> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed)
            .map_err(|e| Error::msg(format!("no random source: {e}")))?;
        Ok(SecretKey(SigningKey::from_bytes(&seed)))
    }

    /// One line of text: prefix and base64 seed.
    pub fn to_text(&self) -> String {
        format!("{SECRET_PREFIX}{}", B64.encode(self.0.to_bytes()))
    }

    /// Parse [`SecretKey::to_text`] output.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || {
            Error::refused(
                "that file is not an upkeep secret key",
                "make one with `upkeep keygen --out FILE`",
            )
        };
        let b64 = text.trim().strip_prefix(SECRET_PREFIX).ok_or_else(bad)?;
        let bytes: [u8; 32] = B64
            .decode(b64)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(bad)?;
        Ok(SecretKey(SigningKey::from_bytes(&bytes)))
    }

    /// Read a key file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).ctx("read secret key", path)?;
        Self::parse(&text)
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// A detached signature of `bytes`, as one line of text.
    pub fn sign(&self, bytes: &[u8]) -> String {
        let sig = self.0.sign(bytes);
        format!(
            "{SIG_PREFIX} {} {}\n",
            self.public().key_id(),
            B64.encode(sig.to_bytes())
        )
    }
}

impl PublicKey {
    /// One line of text: prefix and base64 key.
    pub fn to_text(&self) -> String {
        format!("{PUBLIC_PREFIX}{}", B64.encode(self.0.to_bytes()))
    }

    /// Parse [`PublicKey::to_text`] output.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || {
            Error::refused(
                "not an upkeep public key (expected one line starting with `upkeep-public-key-v1:`)",
                "copy the FILE.pub written by `upkeep keygen`",
            )
        };
        let b64 = text.trim().strip_prefix(PUBLIC_PREFIX).ok_or_else(bad)?;
        let bytes: [u8; 32] = B64
            .decode(b64)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(bad)?;
        VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|_| bad())
    }

    /// Short identifier shown in messages: the first 8 bytes of the key's SHA-256, in hex.
    pub fn key_id(&self) -> String {
        sha256_bytes(&self.0.to_bytes()).to_hex()[..16].to_string()
    }

    /// Check a detached signature made by [`SecretKey::sign`]. `what` names the signed file in
    /// the error.
    pub fn verify(&self, bytes: &[u8], sig_text: &str, what: &str) -> Result<()> {
        let fail = |reason: String| Error::Signature {
            what: what.to_string(),
            reason,
        };
        let mut parts = sig_text.split_whitespace();
        if parts.next() != Some(SIG_PREFIX) {
            return Err(fail(
                "the signature file is missing or not an upkeep signature".into(),
            ));
        }
        let key_id = parts.next().unwrap_or_default();
        if key_id != self.key_id() {
            return Err(fail(format!(
                "signed by another key (key id {key_id}; this instance trusts key id {})",
                self.key_id()
            )));
        }
        let raw: [u8; 64] = parts
            .next()
            .and_then(|b| B64.decode(b).ok())
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| fail("the signature is malformed".into()))?;
        let sig = ed25519_dalek::Signature::from_bytes(&raw);
        self.0.verify(bytes, &sig).map_err(|_| {
            fail("the contents were changed after signing, or the signature is forged".into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_1() {
        let k = SecretKey::generate().unwrap();
        let s = k.sign(b"hello");
        k.public().verify(b"hello", &s, "x").unwrap();
    }
    #[test]
    fn text_round_trip_2() {
        let k = SecretKey::generate().unwrap();
        let k2 = SecretKey::parse(&k.to_text()).unwrap();
        assert!(k.public() == k2.public());
        assert!(PublicKey::parse(&k.public().to_text()).unwrap() == k.public());
    }
    #[test]
    fn bad_edited() {
        let k = SecretKey::generate().unwrap();
        let s = k.sign(b"hello");
        assert!(k.public().verify(b"hellO", &s, "x").is_err());
    }
    #[test]
    fn bad_other_key() {
        let k = SecretKey::generate().unwrap();
        let other = SecretKey::generate().unwrap();
        let err = other
            .public()
            .verify(b"hello", &k.sign(b"hello"), "x")
            .unwrap_err();
        assert!(err.to_string().contains("another key"), "{err}");
    }
    #[test]
    fn bad_missing_or_garbage() {
        let k = SecretKey::generate().unwrap();
        assert!(k.public().verify(b"hello", "", "x").is_err());
        assert!(
            k.public()
                .verify(b"hello", "upkeep-signature-v1 abc !!!", "x")
                .is_err()
        );
        assert!(PublicKey::parse("ssh-ed25519 AAAA").is_err());
    }
}
