//! docs/SEMANTICS.md names, for each claim, the test that backs it: every
//! such name must be a test that exists, so a renamed or removed test
//! cannot leave a claim without evidence.

use std::path::Path;

/// Backticked names that look like test names (four words or more, snake
/// case): field names and options are shorter.
fn cited_tests(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|word| word.matches('_').count() >= 3)
        .filter(|word| word.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
        .map(str::to_string)
        .collect()
}

fn sources(dir: &Path, found: &mut String) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() && !path.ends_with("target") {
            sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
        }
    }
}

#[test]
fn every_test_semantics_md_cites_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/SEMANTICS.md")).expect("docs/SEMANTICS.md");
    let mut code = String::new();
    for dir in ["src", "tests", "backends", "frontends"] {
        sources(&root.join(dir), &mut code);
    }
    let cited = cited_tests(&doc);
    assert!(cited.len() > 50, "only {} test names found: the filter is wrong", cited.len());
    let missing: Vec<&String> = cited.iter().filter(|name| !code.contains(&format!("fn {name}("))).collect();
    assert!(missing.is_empty(), "docs/SEMANTICS.md cites tests that do not exist: {missing:?}");
}
