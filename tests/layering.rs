//! The map of the house, kept by a test (DESIGN.md, "Where things live"). The library's folders
//! are faces, and every `crate::` or `super::` path in its code is an arrow from one module to
//! another. Two rules:
//!
//! - a face uses only itself and the faces [`FACES`] lists under it: the documents never use a
//!   face, and site and publisher meet only in the documents and the client;
//! - no circle between modules (a module may use its own folders' front doors, their `mod.rs`).
//!
//! When this fails, the message names the arrow; move the shared piece down a layer (into the
//! documents, the client or base) rather than adding a face to the list.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each face and the faces it may use.
const FACES: &[(&str, &[&str])] = &[
    ("base", &[]),
    ("documents", &["base"]),
    ("client", &["documents", "base"]),
    ("site", &["client", "documents", "base"]),
    ("publisher", &["client", "documents", "base"]),
];

/// A module's path below the crate (`["site", "update", "swap"]`).
type Module = Vec<String>;

/// The arrows between the modules of `sources` (module, its code).
fn arrows(sources: &BTreeMap<Module, String>) -> BTreeSet<(Module, Module)> {
    let mut out = BTreeSet::new();
    for (from, code) in sources {
        for path in paths(&code_only(code)) {
            let Some(to) = resolve(from, &path, sources) else {
                continue;
            };
            // A module may use itself and its own ancestors (a folder's `mod.rs`).
            if !from.starts_with(&to) {
                out.insert((from.clone(), to));
            }
        }
    }
    out
}

/// The code of a file without comments and without its unit tests (`mod tests` at the end).
fn code_only(src: &str) -> String {
    let src = src
        .find("#[cfg(test)]\nmod tests")
        .map_or(src, |i| &src[..i]);
    src.lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::`, `super::` or `self::` path in `code`, `use` groups expanded.
fn paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("use ") {
        let before = rest[..i].chars().last();
        rest = &rest[i + 4..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let end = rest.find(';').unwrap_or(rest.len());
        let stmt = rest[..end].split_whitespace().collect::<Vec<_>>().join(" ");
        if ["crate::", "super::", "self::"]
            .iter()
            .any(|p| stmt.starts_with(p))
        {
            expand("", &stmt, &mut out);
        }
    }
    // Paths written in place (`crate::site::state::State::open(..)`).
    let chars: Vec<char> = code.chars().collect();
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let mut i = 0;
    while i < chars.len() {
        if (i == 0 || !word(chars[i - 1])) && word(chars[i]) {
            let mut j = i;
            while j < chars.len()
                && (word(chars[j]) || (chars[j] == ':' && chars.get(j + 1) == Some(&':')))
            {
                j += if chars[j] == ':' { 2 } else { 1 };
            }
            let p: String = chars[i..j].iter().collect();
            if p.starts_with("crate::") || p.starts_with("super::") {
                out.push(p.trim_end_matches("::").to_string());
            }
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

/// `a::{b, c::{d, e}}` -> `a::b`, `a::c::d`, `a::c::e`.
fn expand(prefix: &str, s: &str, out: &mut Vec<String>) {
    let s = s.trim();
    let Some(open) = s.find('{') else {
        let s = s.split(" as ").next().unwrap_or(s);
        out.push(format!("{prefix}{s}"));
        return;
    };
    let head = format!("{prefix}{}", s[..open].trim());
    let inner = &s[open + 1..s.rfind('}').unwrap_or(s.len())];
    let (mut depth, mut start) = (0, 0);
    for (k, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                expand(&head, &inner[start..k], out);
                start = k + 1;
            }
            _ => {}
        }
    }
    if !inner[start..].is_empty() {
        expand(&head, &inner[start..], out);
    }
}

/// The module a path from `from` lands in: the longest prefix that is a module.
fn resolve(from: &Module, path: &str, modules: &BTreeMap<Module, String>) -> Option<Module> {
    let mut segs = path.split("::").filter(|s| !s.is_empty()).peekable();
    let mut full: Module = match segs.peek().copied() {
        Some("crate") => {
            segs.next();
            Vec::new()
        }
        Some("super" | "self") => from.clone(),
        _ => return None,
    };
    for s in segs {
        match s {
            "super" => {
                full.pop();
            }
            "self" | "*" => {}
            s => full.push(s.to_string()),
        }
    }
    (0..=full.len())
        .rev()
        .map(|n| full[..n].to_vec())
        .find(|m| modules.contains_key(m))
}

/// The arrows that break the faces' rule, as sentences.
fn wrong_faces(arrows: &BTreeSet<(Module, Module)>) -> Vec<String> {
    let allowed = |from: &str, to: &str| {
        from == to
            || FACES
                .iter()
                .any(|(f, below)| *f == from && below.contains(&to))
    };
    arrows
        .iter()
        .filter(|(from, to)| !from.is_empty() && !to.is_empty())
        .filter(|(from, to)| !allowed(&from[0], &to[0]))
        .map(|(from, to)| {
            let may = FACES
                .iter()
                .find(|(f, _)| *f == from[0])
                .map_or("nothing listed".to_string(), |(_, b)| b.join(", "));
            format!(
                "{} uses {} ({} may use only: {may})",
                from.join("::"),
                to.join("::"),
                from[0]
            )
        })
        .collect()
}

/// A circle of modules, when there is one.
fn circle(arrows: &BTreeSet<(Module, Module)>) -> Option<Vec<Module>> {
    let mut next: BTreeMap<&Module, Vec<&Module>> = BTreeMap::new();
    for (a, b) in arrows {
        next.entry(a).or_default().push(b);
    }
    fn visit<'a>(
        m: &'a Module,
        next: &BTreeMap<&'a Module, Vec<&'a Module>>,
        path: &mut Vec<&'a Module>,
        done: &mut BTreeSet<&'a Module>,
    ) -> Option<Vec<Module>> {
        if let Some(i) = path.iter().position(|p| *p == m) {
            return Some(path[i..].iter().map(|m| (*m).clone()).collect());
        }
        if !done.insert(m) {
            return None;
        }
        path.push(m);
        for n in next.get(m).into_iter().flatten() {
            if let Some(c) = visit(n, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    next.keys()
        .find_map(|m| visit(m, &next, &mut Vec::new(), &mut done))
}

/// The library's modules and their code, from `src/` (the binary's folder `src/bin/` is not
/// part of the library).
fn library() -> BTreeMap<Module, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(&src) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(&src).unwrap();
        if rel.starts_with("bin") || rel.extension().is_none_or(|x| x != "rs") {
            continue;
        }
        let mut m: Module = rel
            .with_extension("")
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        if matches!(m.last().map(String::as_str), Some("mod" | "lib")) {
            m.pop();
        }
        out.insert(m, std::fs::read_to_string(e.path()).unwrap());
    }
    out
}

#[test]
fn the_faces_use_only_what_lies_below_them() {
    let lib = library();
    let arrows = arrows(&lib);
    // The reading itself works: arrows that must be there are seen.
    for (from, to) in [
        ("site::stage", "client::fetch"),
        ("site::update::swap", "documents::manifest"),
    ] {
        let m = |s: &str| s.split("::").map(String::from).collect::<Module>();
        assert!(
            arrows.contains(&(m(from), m(to))),
            "{from} -> {to} not seen"
        );
    }
    let wrong = wrong_faces(&arrows);
    assert!(
        wrong.is_empty(),
        "arrows against the map:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_circle_between_modules() {
    let arrows = arrows(&library());
    if let Some(c) = circle(&arrows) {
        let names: Vec<String> = c.iter().map(|m| m.join("::")).collect();
        panic!("a circle: {} -> {}", names.join(" -> "), names[0]);
    }
}

#[test]
fn the_crate_root_declares_the_faces_and_nothing_else() {
    let lib = library();
    let declared: BTreeSet<&str> = lib[&Vec::new()]
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod ")?.strip_suffix(';'))
        .collect();
    let faces: BTreeSet<&str> = FACES.iter().map(|(f, _)| *f).collect();
    assert_eq!(declared, faces);
    assert!(!lib[&Vec::new()].lines().any(|l| l.starts_with("mod ")));
}

/// The rules catch what they are for: a back arrow, a crossing, a circle.
#[test]
fn a_back_arrow_a_crossing_and_a_circle_are_caught() {
    let lib = |files: &[(&str, &str)]| -> BTreeMap<Module, String> {
        files
            .iter()
            .map(|(m, code)| (m.split("::").map(String::from).collect(), code.to_string()))
            .collect()
    };
    let back = lib(&[
        (
            "documents::channel",
            "use crate::{base::error::Result, site::state::State};",
        ),
        ("site::state", "use crate::documents::channel;"),
        ("base::error", ""),
    ]);
    let wrong = wrong_faces(&arrows(&back));
    assert_eq!(
        wrong,
        ["documents::channel uses site::state (documents may use only: base)"]
    );
    let crossing = lib(&[
        (
            "publisher::mirror",
            "let s = crate::site::stage::stage(inst);",
        ),
        ("site::stage", ""),
    ]);
    assert_eq!(wrong_faces(&arrows(&crossing)).len(), 1);
    let circle_of_two = lib(&[
        ("publisher::fleet", ""),
        ("publisher::fleet::db", "use super::report::Outcome;"),
        (
            "publisher::fleet::report",
            "fn f(db: &super::db::FleetDb) {}",
        ),
    ]);
    assert_eq!(circle(&arrows(&circle_of_two)).map(|c| c.len()), Some(2));
    // A child using its folder's front door is no circle; comments and tests are no arrows.
    let fine = lib(&[
        ("site::update", "mod swap;\nfn f() { swap::run() }"),
        (
            "site::update::swap",
            "use super::Run; // crate::publisher::x\n#[cfg(test)]\nmod tests { use crate::publisher::y; }",
        ),
        ("publisher::x", ""),
    ]);
    assert_eq!(circle(&arrows(&fine)), None);
    assert!(wrong_faces(&arrows(&fine)).is_empty());
}
