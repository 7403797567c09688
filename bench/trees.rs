//! The benchmarks' deterministic trees: CMS-like release folders (log-normal sizes, PHP-like
//! text, incompressible images) and the next releases made from them.
#![allow(dead_code)]

use std::path::Path;

/// `cp -a A/. B/`.
pub fn copy_tree(a: &Path, b: &Path) {
    std::fs::create_dir_all(b).unwrap();
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", a.display()))
        .arg(format!("{}/", b.display()))
        .status()
        .unwrap();
    assert!(st.success(), "cp -a {} {}", a.display(), b.display());
}

/// splitmix64: a tiny, well-known generator; the trees only need to be reproducible.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit().max(1e-12), self.unit());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

pub const EXT: &[(&str, u64)] = &[
    ("php", 45),
    ("js", 15),
    ("css", 8),
    ("html", 7),
    ("png", 9),
    ("jpg", 6),
    ("svg", 5),
    ("txt", 5),
];
pub const WORDS: &[&str] = &[
    "function", "return", "$this", "->", "array(", ");", "if", "else", "foreach", "echo", "class",
    "public", "static", "null", "true", "{", "}", "\n", "    ", "'value'", "=>", "$item", "render",
    "query",
];

pub fn ext(r: &mut Rng) -> &'static str {
    let mut x = r.below(100);
    for (e, w) in EXT {
        if x < *w {
            return e;
        }
        x -= w;
    }
    "php"
}

pub fn content(r: &mut Rng, ext: &str, size: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(size);
    if matches!(ext, "png" | "jpg") {
        while v.len() < size {
            v.extend_from_slice(&r.next().to_le_bytes());
        }
    } else {
        while v.len() < size {
            v.extend_from_slice(WORDS[r.below(WORDS.len() as u64) as usize].as_bytes());
            v.push(b' ');
        }
    }
    v.truncate(size);
    v
}

/// A CMS-like tree: `files` files summing to about `bytes`, log-normal sizes (median a few KB).
pub fn gen_tree(dir: &Path, files: usize, bytes: u64, seed: u64) -> Vec<String> {
    let mut r = Rng(seed);
    let raw: Vec<f64> = (0..files).map(|_| (1.4 * r.normal()).exp()).collect();
    let scale = bytes as f64 / raw.iter().sum::<f64>();
    let dirs: Vec<String> = (0..(files / 25).max(1))
        .map(|i| {
            let depth = 1 + r.below(4);
            (0..depth)
                .map(|d| {
                    format!(
                        "{}{}",
                        ["modules", "lib", "themes", "assets", "include", "admin"]
                            [(r.below(6)) as usize],
                        (i as u64 + d) % 97
                    )
                })
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect();
    let mut paths = Vec::with_capacity(files);
    for (i, w) in raw.iter().enumerate() {
        let e = ext(&mut r);
        let size = ((w * scale) as usize).clamp(16, 8 << 20);
        let p = format!("{}/f{i}.{e}", dirs[r.below(dirs.len() as u64) as usize]);
        let full = dir.join(&p);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(&full, content(&mut r, e, size)).unwrap();
        paths.push(p);
    }
    paths
}

/// Next release: a copy of `a` with `fraction` of the files touched (70% changed, 15% removed,
/// 15% added). Returns the paths that differ (changed and added).
pub fn next_release(a: &Path, paths: &[String], b: &Path, fraction: f64, seed: u64) -> Vec<String> {
    copy_tree(a, b);
    let mut r = Rng(seed);
    let touched = (paths.len() as f64 * fraction) as usize;
    let mut differ = Vec::new();
    for k in 0..touched {
        let p = &paths[r.below(paths.len() as u64) as usize];
        let full = b.join(p);
        match k % 20 {
            0..14 => {
                if let Ok(len) = std::fs::metadata(&full).map(|m| m.len()) {
                    let e = p.rsplit('.').next().unwrap();
                    std::fs::write(&full, content(&mut r, e, len as usize + 10)).unwrap();
                    differ.push(p.clone());
                }
            }
            14..17 => {
                let _ = std::fs::remove_file(&full);
            }
            _ => {
                let np = format!(
                    "{}-new{k}.php",
                    p.trim_end_matches(|c| c != '.').trim_end_matches('.')
                );
                let size = 2000 + r.below(20000) as usize;
                std::fs::write(b.join(&np), content(&mut r, "php", size)).unwrap();
                differ.push(np);
            }
        }
    }
    differ.sort();
    differ.dedup();
    differ
}

/// A realistic next release, as CMS releases are: a copy of `a` where `fraction` of the files
/// changed, most of them text files edited in a few places (1 to 6 lines inserted, removed or
/// changed), some rewritten (5%), a few images replaced whole (a fifth of the images picked:
/// releases change code far more often than artwork), plus new files (7%) and a few removed
/// (3%). Returns the paths that differ (changed and added).
pub fn edited_release(
    a: &Path,
    paths: &[String],
    b: &Path,
    fraction: f64,
    seed: u64,
) -> Vec<String> {
    copy_tree(a, b);
    let mut r = Rng(seed);
    let touched = (paths.len() as f64 * fraction) as usize;
    let mut differ = Vec::new();
    let mut order: Vec<usize> = (0..paths.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, r.below(i as u64 + 1) as usize);
    }
    let mut k = 0;
    for &i in &order {
        if k == touched {
            break;
        }
        let p = &paths[i];
        let full = b.join(p);
        let e = p.rsplit('.').next().unwrap_or("php");
        if matches!(e, "png" | "jpg") && r.below(5) != 0 {
            continue;
        }
        k += 1;
        let Ok(old) = std::fs::read(&full) else {
            continue;
        };
        match k % 100 {
            0..3 => {
                let _ = std::fs::remove_file(&full);
                continue;
            }
            3..10 => {
                let np = format!(
                    "{}-new{k}.{e}",
                    p.trim_end_matches(|c| c != '.').trim_end_matches('.')
                );
                let size = 2000 + r.below(30000) as usize;
                std::fs::write(b.join(&np), content(&mut r, e, size)).unwrap();
                differ.push(np);
                continue;
            }
            _ => {}
        }
        let new = if matches!(e, "png" | "jpg") || k % 100 < 15 {
            // An image replaced, or a file rewritten.
            let size = old.len() + r.below(2000) as usize;
            content(&mut r, e, size)
        } else {
            edit_lines(&mut r, e, &old)
        };
        std::fs::write(&full, new).unwrap();
        differ.push(p.clone());
    }
    differ.sort();
    differ.dedup();
    differ
}

/// A patch release (a security fix): a copy of `a` where `n` text files are edited in a few
/// places and nothing else changes. Returns the paths that differ.
pub fn patched_release(a: &Path, paths: &[String], b: &Path, n: usize, seed: u64) -> Vec<String> {
    copy_tree(a, b);
    let mut r = Rng(seed);
    let mut differ = Vec::new();
    while differ.len() < n {
        let p = &paths[r.below(paths.len() as u64) as usize];
        let e = p.rsplit('.').next().unwrap_or("php");
        if matches!(e, "png" | "jpg") || differ.contains(p) {
            continue;
        }
        let Ok(old) = std::fs::read(b.join(p)) else {
            continue;
        };
        std::fs::write(b.join(p), edit_lines(&mut r, e, &old)).unwrap();
        differ.push(p.clone());
    }
    differ.sort();
    differ
}

/// `old` with 1 to 6 of its lines inserted, removed or changed.
fn edit_lines(r: &mut Rng, e: &str, old: &[u8]) -> Vec<u8> {
    let mut lines: Vec<Vec<u8>> = old
        .split_inclusive(|&c| c == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    for _ in 0..1 + r.below(6) {
        let at = r.below(lines.len() as u64 + 1) as usize;
        let fresh = {
            let size = 20 + r.below(60) as usize;
            let mut l = content(r, e, size);
            l.retain(|&c| c != b'\n');
            l.push(b'\n');
            l
        };
        match r.below(3) {
            0 => lines.insert(at, fresh),
            1 if at < lines.len() && lines.len() > 1 => {
                lines.remove(at);
            }
            _ if at < lines.len() => lines[at] = fresh,
            _ => lines.push(fresh),
        }
    }
    lines.concat()
}
