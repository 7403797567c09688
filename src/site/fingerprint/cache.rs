//! The fingerprint cache's stored form: one blob of entries sorted by path, read in place.

use crate::documents::manifest::{Md5, Sha256};
use crate::documents::tree::CachedStat;

/// A cached fingerprint: valid while the stat matches.
#[derive(Clone, Copy, Debug)]
pub struct CachedPrint {
    /// The stat it was computed for.
    pub stat: CachedStat,
    /// MD5 of the contents.
    pub md5: Md5,
    /// SHA-256, when it was computed.
    pub sha256: Option<Sha256>,
}

const PRINTS_MAGIC: &[u8; 6] = b"UPKC1\n";
/// Bytes of one entry after its path: size, mtime, ctime, inode, MD5, SHA-256 flag.
const FIXED: usize = 8 * 4 + 16 + 1;

/// The fingerprint cache as stored: one blob of entries sorted by path, read in place.
///
/// Per entry: the path (u16 length + bytes), size, mtime, ctime, inode, MD5, a flag and the
/// SHA-256 when known; little-endian fixed-width fields. Loading indexes where each entry starts
/// and nothing more: on a warm check of 100,000 files, building a map of owned paths (an
/// allocation and a SipHash per entry) cost as much as the `stat` walk the cache is there to beat.
#[derive(Default)]
pub struct PrintCache {
    data: Vec<u8>,
    /// Offsets of the entries, in path order.
    starts: Vec<usize>,
    /// The blob was not in path order (an older upkeep wrote it): worth writing again.
    resorted: bool,
}

impl PrintCache {
    /// Read a stored blob; anything malformed yields what was read so far (a cache may always
    /// be incomplete). A blob written unsorted (by an older upkeep) is put in order here.
    pub fn decode(data: Vec<u8>) -> Self {
        let mut starts = Vec::new();
        if data.starts_with(PRINTS_MAGIC) {
            let mut at = PRINTS_MAGIC.len();
            while let Some(len) = data.get(at..at + 2) {
                let start = at;
                let path_end = at + 2 + u16::from_le_bytes([len[0], len[1]]) as usize;
                let Some(&flag) = data.get(path_end + FIXED - 1) else {
                    break;
                };
                let end = path_end + FIXED + if flag == 1 { 32 } else { 0 };
                if end > data.len() || std::str::from_utf8(&data[at + 2..path_end]).is_err() {
                    break;
                }
                starts.push(start);
                at = end;
            }
        }
        let mut cache = PrintCache {
            data,
            starts,
            resorted: false,
        };
        if !cache
            .starts
            .is_sorted_by(|a, b| cache.path_at(*a) < cache.path_at(*b))
        {
            cache.resorted = true;
            let mut starts = std::mem::take(&mut cache.starts);
            starts.sort_by(|a, b| cache.path_at(*a).cmp(cache.path_at(*b)));
            starts.dedup_by(|a, b| cache.path_at(*a) == cache.path_at(*b));
            cache.starts = starts;
        }
        cache
    }

    /// Serialise entries given in path order.
    pub fn encode<'a, P: std::borrow::Borrow<CachedPrint>>(
        entries: impl Iterator<Item = (&'a str, P)>,
    ) -> Vec<u8> {
        // Sized up front: doubling a buffer of 10 MB holds 24 MB for a moment.
        let guess = PRINTS_MAGIC.len() + entries.size_hint().0 * (FIXED + 2 + 64);
        Self::encode_into(Vec::with_capacity(guess), entries)
    }

    fn encode_into<'a, P: std::borrow::Borrow<CachedPrint>>(
        mut out: Vec<u8>,
        entries: impl Iterator<Item = (&'a str, P)>,
    ) -> Vec<u8> {
        out.extend_from_slice(PRINTS_MAGIC);
        for (path, p) in entries {
            let p = p.borrow();
            let Ok(len) = u16::try_from(path.len()) else {
                continue;
            };
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(path.as_bytes());
            for v in [
                p.stat.size,
                p.stat.mtime_ns as u64,
                p.stat.ctime_ns as u64,
                p.stat.ino,
            ] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&p.md5.0);
            match &p.sha256 {
                Some(s) => {
                    out.push(1);
                    out.extend_from_slice(&s.0);
                }
                None => out.push(0),
            }
        }
        out
    }

    /// The path of the entry at `start`, as bytes: they sort like the text (UTF-8 keeps the
    /// order), and checking them again on every comparison of a lookup cost a sixth of a warm
    /// check.
    fn path_at(&self, start: usize) -> &[u8] {
        let len = u16::from_le_bytes([self.data[start], self.data[start + 1]]) as usize;
        &self.data[start + 2..start + 2 + len]
    }

    fn print_at(&self, start: usize) -> CachedPrint {
        let len = u16::from_le_bytes([self.data[start], self.data[start + 1]]) as usize;
        let f = &self.data[start + 2 + len..];
        let u = |i: usize| u64::from_le_bytes(f[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        CachedPrint {
            stat: CachedStat {
                size: u(0),
                mtime_ns: u(1) as i64,
                ctime_ns: u(2) as i64,
                ino: u(3),
            },
            md5: Md5(f[32..48].try_into().expect("16 bytes")),
            sha256: (f[48] == 1).then(|| Sha256(f[49..81].try_into().expect("32 bytes"))),
        }
    }

    /// The entry for a path, by binary search.
    pub fn get(&self, path: &str) -> Option<CachedPrint> {
        let i = self
            .starts
            .binary_search_by(|s| self.path_at(*s).cmp(path.as_bytes()))
            .ok()?;
        Some(self.print_at(self.starts[i]))
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Whether the stored blob should be written again (it was not in path order).
    pub fn stale(&self) -> bool {
        self.resorted
    }

    /// Every entry, in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, CachedPrint)> + '_ {
        self.starts.iter().map(|s| {
            // Checked to be UTF-8 in `decode`.
            let path = std::str::from_utf8(self.path_at(*s)).unwrap_or_default();
            (path, self.print_at(*s))
        })
    }

    /// This cache with `fresh` entries added or replacing those of the same path, serialised.
    /// The two sorted lists are merged straight into the blob.
    pub fn merged(&self, mut fresh: Vec<(std::borrow::Cow<'_, str>, CachedPrint)>) -> Vec<u8> {
        fresh.sort_by(|a, b| a.0.cmp(&b.0));
        fresh.dedup_by(|a, b| a.0 == b.0);
        let mut old = self.iter().peekable();
        let mut new = fresh.iter().map(|(p, c)| (p.as_ref(), *c)).peekable();
        let merged = std::iter::from_fn(move || match (old.peek(), new.peek()) {
            (Some(o), Some(n)) if o.0 < n.0 => old.next(),
            (Some(o), Some(n)) if o.0 == n.0 => {
                old.next();
                new.next()
            }
            (Some(_), None) => old.next(),
            (_, Some(_)) => new.next(),
            (None, None) => None,
        });
        let size = |(p, c): &(std::borrow::Cow<str>, CachedPrint)| {
            2 + p.len() + FIXED + 32 * c.sha256.is_some() as usize
        };
        let bound = PRINTS_MAGIC.len() + self.data.len() + fresh.iter().map(size).sum::<usize>();
        Self::encode_into(Vec::with_capacity(bound), merged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn print(n: u64, sha: bool) -> CachedPrint {
        CachedPrint {
            stat: CachedStat {
                size: n,
                mtime_ns: -(n as i64),
                ctime_ns: n as i64 * 7,
                ino: n + 1,
            },
            md5: Md5([n as u8; 16]),
            sha256: sha.then_some(Sha256([n as u8 + 1; 32])),
        }
    }

    fn blob(entries: &[(&str, CachedPrint)]) -> Vec<u8> {
        PrintCache::encode(entries.iter().map(|(p, c)| (*p, c)))
    }

    fn same(a: CachedPrint, b: CachedPrint) -> bool {
        a.stat == b.stat && a.md5 == b.md5 && a.sha256.map(|s| s.0) == b.sha256.map(|s| s.0)
    }

    #[test]
    fn print_cache_round_trip_and_lookup() {
        let entries = [
            ("a", print(1, false)),
            ("a.txt", print(2, true)),
            ("a/b", print(3, false)),
        ];
        let cache = PrintCache::decode(blob(&entries));
        assert_eq!(cache.len(), 3);
        assert!(!cache.stale());
        for (p, c) in &entries {
            assert!(same(cache.get(p).unwrap(), *c), "{p}");
        }
        assert!(cache.get("a/c").is_none());
        assert!(cache.get("").is_none());
    }

    #[test]
    fn print_cache_sorts_an_unsorted_blob_and_says_so() {
        let entries = [
            ("z", print(1, false)),
            ("b", print(2, false)),
            ("m/n", print(3, true)),
        ];
        let cache = PrintCache::decode(blob(&entries));
        assert!(cache.stale());
        let order: Vec<&str> = cache.iter().map(|(p, _)| p).collect();
        assert_eq!(order, ["b", "m/n", "z"]);
        assert!(same(cache.get("z").unwrap(), print(1, false)));
    }

    #[test]
    fn print_cache_keeps_what_precedes_a_damaged_tail() {
        let entries = [("a", print(1, true)), ("b", print(2, false))];
        let mut damaged = blob(&entries);
        damaged.truncate(damaged.len() - 3);
        let cache = PrintCache::decode(damaged);
        assert_eq!(cache.len(), 1);
        assert!(same(cache.get("a").unwrap(), print(1, true)));
        assert_eq!(PrintCache::decode(b"not a cache".to_vec()).len(), 0);
    }

    #[test]
    fn print_cache_merge_replaces_and_adds_in_order() {
        let entries = [("a", print(1, false)), ("c", print(3, false))];
        let cache = PrintCache::decode(blob(&entries));
        let merged = PrintCache::decode(cache.merged(vec![
            ("d".into(), print(4, false)),
            (String::from("a").into(), print(9, true)),
            ("b".into(), print(2, false)),
        ]));
        assert!(!merged.stale());
        let got: Vec<(&str, u64)> = merged.iter().map(|(p, c)| (p, c.stat.size)).collect();
        assert_eq!(got, [("a", 9), ("b", 2), ("c", 3), ("d", 4)]);
    }
}
