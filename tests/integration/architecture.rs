//! The module structure ARCHITECTURE.md describes, checked from the source:
//! no import cycle between the crate's top-level modules, and the kernels
//! (`ops`) independent of everything but the leaves.

use crate::common::repo;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Macros defined in `error` and used as `crate::bail_input!`.
const ERROR_MACROS: [&str; 2] = ["bail_input", "input_error"];

/// Top-level module → the top-level modules its code (tests and comments
/// left out) names with `crate::`.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = repo().join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let modules: Vec<String> = lib
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            l.strip_prefix("pub mod ")
                .or_else(|| l.strip_prefix("pub(crate) mod "))
        })
        .map(|m| m.trim_end_matches(';').to_string())
        .collect();
    assert!(modules.len() > 10, "read the module list of src/lib.rs");
    let mut graph = BTreeMap::new();
    for m in &modules {
        let mut code = String::new();
        let file = src.join(format!("{m}.rs"));
        if file.is_file() {
            code += &strip(&std::fs::read_to_string(&file).unwrap());
        }
        read_dir_into(&src.join(m), &mut code);
        let mut uses = BTreeSet::new();
        for (i, _) in code.match_indices("crate::") {
            let name: String = code[i + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let name = if ERROR_MACROS.contains(&name.as_str()) {
                "error".to_string()
            } else {
                name
            };
            if modules.contains(&name) && name != *m {
                uses.insert(name);
            }
        }
        graph.insert(m.clone(), uses);
    }
    graph
}

/// The code of every `.rs` file under `dir`, without comments and tests.
fn read_dir_into(dir: &Path, out: &mut String) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            read_dir_into(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push_str(&strip(&std::fs::read_to_string(&p).unwrap()));
        }
    }
}

/// A file's code before its test module, without comment lines.
fn strip(text: &str) -> String {
    let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
    code.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A cycle through `start`, if any, as the list of modules.
fn cycle_from(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    fn dfs(
        g: &BTreeMap<String, BTreeSet<String>>,
        at: &str,
        start: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in &g[at] {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if dfs(g, next, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    dfs(graph, start, start, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn no_import_cycle_between_top_level_modules() {
    let graph = imports();
    let cycles: Vec<String> = graph
        .keys()
        .filter_map(|m| cycle_from(&graph, m))
        .map(|c| c.join(" → "))
        .collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_kernels_depend_only_on_the_leaves() {
    let graph = imports();
    let allowed: BTreeSet<String> = ["geometry", "rng", "profile", "error"]
        .map(String::from)
        .into();
    let extra: Vec<&String> = graph["ops"].difference(&allowed).collect();
    assert!(extra.is_empty(), "ops imports {extra:?}");
    for leaf in ["geometry", "rng", "error", "fsutil", "profile", "json"] {
        let uses: Vec<&String> = graph[leaf]
            .iter()
            .filter(|u| u.as_str() != "error")
            .collect();
        assert!(uses.is_empty(), "{leaf} is a leaf but imports {uses:?}");
    }
    assert!(
        !graph["config"].contains("optim") && !graph["config"].contains("schedule"),
        "config checks its own settings: {:?}",
        graph["config"]
    );
}
