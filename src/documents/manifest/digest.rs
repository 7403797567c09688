//! Fixed-size digests with hex text forms, and the one function that hashes file contents.

use std::fmt;
use std::io::Read;
use std::path::Path;

use md5::Digest as _;

use crate::base::error::{IoContext, Result};

macro_rules! digest_type {
    ($name:ident, $len:expr, $doc:expr) => {
        #[doc = $doc]
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Parse lowercase or uppercase hex.
            pub fn from_hex(s: &str) -> Option<Self> {
                let mut out = [0u8; $len];
                hex::decode_to_slice(s, &mut out).ok()?;
                Some($name(out))
            }
            /// Lowercase hex.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
            /// Append lowercase hex to `out` without allocating.
            pub fn push_hex(&self, out: &mut String) {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                for b in self.0 {
                    out.push(HEX[(b >> 4) as usize] as char);
                    out.push(HEX[(b & 15) as usize] as char);
                }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(
                d: D,
            ) -> std::result::Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::from_hex(&s).ok_or_else(|| {
                    serde::de::Error::custom(concat!("bad hex for ", stringify!($name)))
                })
            }
        }
    };
}

digest_type!(
    Md5,
    16,
    "An MD5 digest: the fingerprint used to compare trees, never a proof."
);
digest_type!(
    Sha256,
    32,
    "A SHA-256 digest: what a file must match before it enters the live tree."
);

/// Size and both digests of some bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hashes {
    /// Byte count.
    pub size: u64,
    /// MD5 of the contents.
    pub md5: Md5,
    /// SHA-256 of the contents.
    pub sha256: Sha256,
}

/// Incremental hashing of both digests at once.
#[derive(Default, Clone)]
pub struct Hasher {
    md5: md5::Md5,
    sha: sha2::Sha256,
    size: u64,
}

impl Hasher {
    /// Feed bytes.
    pub fn update(&mut self, buf: &[u8]) {
        self.md5.update(buf);
        self.sha.update(buf);
        self.size += buf.len() as u64;
    }
    /// Finish.
    pub fn finish(self) -> Hashes {
        Hashes {
            size: self.size,
            md5: Md5(self.md5.finalize().into()),
            sha256: Sha256(self.sha.finalize().into()),
        }
    }
}

/// SHA-256 of a byte slice.
pub fn sha256_bytes(b: &[u8]) -> Sha256 {
    Sha256(sha2::Sha256::digest(b).into())
}

/// Hash a whole file, reading it in large blocks.
pub fn hash_file(path: &Path) -> Result<Hashes> {
    let mut f = std::fs::File::open(path).ctx("open", path)?;
    hash_reader(&mut f).ctx("read", path)
}

/// Hash everything a reader yields.
pub fn hash_reader(r: &mut impl Read) -> std::io::Result<Hashes> {
    with_buffer(|buf| {
        let mut h = Hasher::default();
        loop {
            let n = r.read(buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(h.finish())
    })
}

/// Run `f` with this thread's read buffer. Allocating (and zeroing) 256 KiB per file cost more
/// than hashing the small files of a large tree.
fn with_buffer<T>(f: impl FnOnce(&mut [u8]) -> T) -> T {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 256 * 1024]);
    }
    BUF.with(|b| f(&mut b.borrow_mut()))
}

/// Only the MD5 of a file: the cheap fingerprint used by `check` when SHA-256 is not needed.
pub fn md5_file(path: &Path) -> Result<(u64, Md5)> {
    let mut f = std::fs::File::open(path).ctx("open", path)?;
    md5_open(&mut f, path)
}

/// [`md5_file`] of a file already open (`path` names it in messages).
pub fn md5_open(f: &mut std::fs::File, path: &Path) -> Result<(u64, Md5)> {
    with_buffer(|buf| {
        let mut h = md5::Md5::new();
        let mut size = 0u64;
        loop {
            let n = f.read(buf).ctx("read", path)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            size += n as u64;
        }
        Ok((size, Md5(h.finalize().into())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        let mut h = Hasher::default();
        h.update(b"abc");
        let x = h.finish();
        assert_eq!(x.md5.to_hex(), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            x.sha256.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(x.size, 3);
    }
    #[test]
    fn hex_round_trip_and_bad() {
        let s = sha256_bytes(b"");
        assert_eq!(Sha256::from_hex(&s.to_hex()), Some(s));
        assert_eq!(Sha256::from_hex("zz"), None);
        assert_eq!(Md5::from_hex("00"), None);
    }
}
