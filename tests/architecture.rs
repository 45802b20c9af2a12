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

/// The layers of `src/`, bottom to top (docs/architecture.md): a module may import only
/// from layers below its own, or from its peers in the same layer one way round.
const LAYERS: &[&[&str]] = &[
    &["rt", "secret", "error"],
    &["net", "store"],
    &["config"],
    &["llm", "mcp"],
    &["quota", "balancer", "observe"],
    &["plugins"],
    &["gateway"],
    &["proxy"],
    &["admin", "server", "cli"],
    &["main", "lib"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// Every `crate::<module>` a file names, with its line number; a grouped
/// `use crate::{a::x, b}` counts each member. Comments are skipped.
fn crate_refs(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                for member in group.split([',', '}']) {
                    let name: String = member
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        out.push((n + 1, name));
                    }
                }
                continue;
            }
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            out.push((n + 1, name));
        }
    }
    out
}

/// The top-level module a source file belongs to (`src/llm/x.rs` → `llm`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

#[test]
fn crate_refs_reads_paths_and_groups_but_not_comments() {
    let text = "use crate::llm::x;\nuse crate::{proxy::y, gateway};\n// crate::admin\nlet a = crate::rt::clock::now(); // crate::server";
    let names: Vec<(usize, String)> = crate_refs(text);
    let expected: Vec<(usize, String)> = [(1, "llm"), (2, "proxy"), (2, "gateway"), (4, "rt")]
        .into_iter()
        .map(|(n, s)| (n, s.to_string()))
        .collect();
    assert_eq!(names, expected);
    assert_eq!(layer_of("proxy"), Some(7));
    assert!(layer_of("gateway") < layer_of("proxy"));
}

#[test]
fn imports_point_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut wrong = Vec::new();
    let mut peers = std::collections::BTreeSet::new();
    for f in &files {
        let from = module_of(&src, f);
        let Some(own) = layer_of(&from) else {
            wrong.push(format!("{}: module '{from}' has no layer", f.display()));
            continue;
        };
        let text = std::fs::read_to_string(f).unwrap();
        for (line, to) in crate_refs(&text) {
            // The crate root's constants (VERSION, SERVER_TOKEN…) are facts every layer may name.
            if to == from || to.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
                continue;
            }
            let Some(theirs) = layer_of(&to) else {
                wrong.push(format!("{}:{line}: crate::{to} has no layer", f.display()));
                continue;
            };
            if theirs > own {
                wrong.push(format!(
                    "{}:{line}: {from} imports crate::{to}",
                    f.display()
                ));
            } else if theirs == own {
                peers.insert((from.clone(), to));
            }
        }
    }
    for (a, b) in &peers {
        if peers.contains(&(b.clone(), a.clone())) {
            wrong.push(format!("{a} and {b} import each other"));
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

/// The three checks issue 21 gives as greps, kept as they were written.
#[test]
fn the_issue_greps_find_nothing() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let checks: [(&[&str], &[&str]); 3] = [
        (
            &["config", "llm", "net", "rt", "store"],
            &[
                "plugins", "proxy", "observe", "server", "admin", "gateway", "balancer", "quota",
            ],
        ),
        (
            &["plugins", "observe", "balancer", "quota"],
            &["proxy", "server", "admin", "gateway"],
        ),
        (&["proxy"], &["admin", "server"]),
    ];
    let mut found = Vec::new();
    for (dirs, banned) in checks {
        for d in dirs {
            let mut files = Vec::new();
            sources(&root.join(d), &mut files);
            for f in files {
                let text = std::fs::read_to_string(&f).unwrap();
                for (n, line) in text.lines().enumerate() {
                    for b in banned {
                        if line.contains(&format!("crate::{b}")) {
                            found.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
                        }
                    }
                }
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}
