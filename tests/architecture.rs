//! The dependency rule of docs/ARCHITECTURE.md, checked on the source: the
//! namespace dispatches to the slices (storage, bigquery, pubsub), the
//! slices use core, and nothing imports upward or sideways; no two modules
//! of src/ import each other.
//!
//! It reads every `use` and every `crate::`/`super::`/`self::` path of the
//! non-test files under src/ and resolves each to the module file it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What each part of src/ may import besides itself ("shell": the files at
/// the crate root: main, cli, daemon, lib, fuzzing).
const ALLOWED: [(&str, &[&str]); 7] = [
    ("core", &[]),
    ("storage", &["core"]),
    ("bigquery", &["core"]),
    ("pubsub", &["core"]),
    ("namespace", &["core", "storage", "bigquery", "pubsub"]),
    ("archive", &["core", "storage", "bigquery", "pubsub"]),
    ("shell", &["core", "storage", "bigquery", "pubsub", "namespace", "archive"]),
];

/// A module of src/, as the path of names from the crate root
/// (`["storage", "write"]`; the crate root is `[]`).
type Module = Vec<String>;

/// The modules of the source files under `src` (test files left out).
fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if !name.ends_with(".rs") || name == "tests.rs" || name.ends_with("_tests.rs") {
                continue;
            }
            let relative = path.strip_prefix(src).unwrap().with_extension("");
            let mut module: Module = relative.iter().map(|p| p.to_string_lossy().to_string()).collect();
            if matches!(module.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                module.pop();
            }
            found.insert(module, path);
        }
    }
    found
}

/// The code of a file without its trailing `#[cfg(test)] mod tests { ... }`.
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    match text.find("#[cfg(test)]\nmod tests {") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// Every path the code names through `crate::`, `super::` or `self::`:
/// in `use` items (braces expanded) and inline.
fn paths_in(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let starts_item = at == 0 || rest[..at].ends_with('\n') || rest[..at].ends_with("pub ");
        let Some(end) = rest[at..].find(';') else { break };
        if starts_item {
            expand(rest[at + 4..at + end].trim(), &mut paths);
        }
        rest = &rest[at + end..];
    }
    let inline = code.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'));
    paths.extend(
        inline
            .filter(|word| word.starts_with("crate::") || word.starts_with("super::") || word.starts_with("self::"))
            .map(str::to_string),
    );
    paths
}

/// `a::{b, c::{d, e}}` as `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str, out: &mut Vec<String>) {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(open) = tree.find('{') else {
        out.push(tree.split(" as ").next().unwrap_or_default().to_string());
        return;
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                expand(&format!("{prefix}{}", &inner[start..i]), out);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < inner.len() {
        expand(&format!("{prefix}{}", &inner[start..]), out);
    }
}

/// The module file `path`, named in `from`, resolves to: the longest
/// prefix of its absolute path that is a module of `known`.
fn resolve(from: &Module, path: &str, known: &BTreeMap<Module, PathBuf>) -> Option<Module> {
    let mut segments = path.split("::").filter(|s| !s.is_empty());
    // `super` in `a/b.rs` is `a`; in `a/b/mod.rs` too (that module is
    // `a::b`, its parent `a`).
    let mut absolute: Module = match segments.next()? {
        "crate" => Vec::new(),
        "self" => from.clone(),
        "super" => from[..from.len().saturating_sub(1)].to_vec(),
        _ => return None,
    };
    for segment in segments {
        match segment {
            "super" => {
                absolute.pop();
            }
            "self" | "*" => {}
            name => absolute.push(name.to_string()),
        }
    }
    (0..=absolute.len()).rev().map(|n| absolute[..n].to_vec()).find(|m| known.contains_key(m))
}

/// The part of src/ a module belongs to.
fn part(module: &Module) -> String {
    match module.first().map(String::as_str) {
        Some(top @ ("core" | "storage" | "bigquery" | "pubsub" | "namespace" | "archive")) => top.to_string(),
        _ => "shell".to_string(),
    }
}

/// Which module imports which, among the modules of `src`.
fn imports(src: &Path) -> BTreeSet<(Module, Module)> {
    let known = modules(src);
    let mut edges = BTreeSet::new();
    for (module, path) in &known {
        for named in paths_in(&code_of(path)) {
            if let Some(target) = resolve(module, &named, &known)
                && target != *module
                && !target.is_empty()
            {
                edges.insert((module.clone(), target));
            }
        }
    }
    edges
}

/// Every import that breaks the rule, and every pair of modules that
/// import each other.
fn violations(src: &Path) -> Vec<String> {
    let edges = imports(src);
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.into_iter().collect();
    let mut found = Vec::new();
    for (from, to) in &edges {
        let (a, b) = (part(from), part(to));
        if a != b && !allowed.get(a.as_str()).is_some_and(|ok| ok.contains(&b.as_str())) {
            found.push(format!("{} imports {} ({a} may not import {b})", from.join("::"), to.join("::")));
        }
        if from < to && edges.contains(&(to.clone(), from.clone())) {
            found.push(format!("{} and {} import each other", from.join("::"), to.join("::")));
        }
    }
    found
}

#[test]
fn the_slices_use_only_core_and_no_two_modules_import_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    assert!(found.is_empty(), "the dependency rule is broken:\n{}", found.join("\n"));
    // The scan sees the imports it judges: the namespace's of each slice.
    let edges = imports(&src);
    for slice in ["storage", "bigquery", "pubsub"] {
        let seen = edges.iter().any(|(from, to)| from[0] == "namespace" && to[0] == slice);
        assert!(seen, "no import of {slice} by the namespace was seen: {} imports in all", edges.len());
    }
}

#[test]
fn the_check_finds_a_slice_importing_another_and_a_circle() {
    let dir = tempfile::tempdir().unwrap();
    let write = |path: &str, text: &str| {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("lib.rs", "pub mod core;\npub mod storage;\npub mod pubsub;\n");
    write("core/mod.rs", "pub mod node;\n");
    write("core/node.rs", "pub struct Node;\n");
    write("storage/mod.rs", "pub mod tree;\npub mod write;\n");
    write("storage/tree.rs", "use super::write::Writer;\nuse crate::core::node::Node;\n");
    write("storage/write.rs", "use super::tree::StorageTree;\npub struct Writer;\n");
    write("pubsub/mod.rs", "pub mod tree;\n");
    write("pubsub/tree.rs", "use crate::storage::{tree::StorageTree, write};\nfn f() { crate::core::node::g() }\n");
    let found = violations(dir.path());
    assert!(found.iter().any(|v| v.starts_with("pubsub::tree imports storage::tree")), "{found:?}");
    assert!(found.iter().any(|v| v.starts_with("pubsub::tree imports storage::write")), "{found:?}");
    assert!(found.iter().any(|v| v == "storage::tree and storage::write import each other"), "{found:?}");
    assert!(!found.iter().any(|v| v.contains("import core")), "core may be imported: {found:?}");
}
