//! The floor plan, checked: facts that must live in one place stay there (issue 21).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Kong's PRIORITY numbers are written in exactly one source file (the plugin registry);
/// comments may quote them.
#[test]
fn kong_priorities_live_in_one_file() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    // The small ones (9, 12…) are too common to search for; the AI plugins' are not.
    let numbers: Vec<String> = tollgate::plugins::KONG_PLUGINS
        .iter()
        .filter(|(_, p)| *p >= 100)
        .map(|(_, p)| p.to_string())
        .collect();
    assert!(numbers.len() >= 10);
    let mut holders: Vec<String> = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let code_words = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .flat_map(|l| l.split(|c: char| !c.is_ascii_digit()));
        let mut hit = false;
        for w in code_words {
            hit |= numbers.iter().any(|n| n == w);
        }
        if hit {
            holders.push(f.strip_prefix(&src).unwrap().display().to_string());
        }
    }
    assert_eq!(
        holders,
        ["plugins/registry.rs"],
        "PRIORITY numbers written in {holders:?}"
    );
}
