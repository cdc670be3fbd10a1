//! The workspace's shape, checked from its sources (no stack needed):
//!
//! - no crate has a loop between its top-level modules (`crate::a` in `a.rs`'s code naming `b`,
//!   and `b`'s naming `a`, directly or through others);
//! - README.md's crate graph is the one the Cargo.toml files declare.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Module loops that are known and not ours to untangle yet, by package and the modules in the
/// loop. The test fails when one of them is gone, so the entry does not outlive it.
const KNOWN_LOOPS: &[(&str, &[&str])] = &[];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the tests crate is in the workspace").to_path_buf()
}

/// `cargo metadata` of the workspace's own packages.
fn metadata() -> Value {
    let manifest = workspace_root().join("Cargo.toml");
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps", "--locked", "--manifest-path"])
        .arg(&manifest)
        .output()
        .expect("running cargo metadata");
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

fn packages(metadata: &Value) -> &Vec<Value> {
    metadata["packages"].as_array().expect("packages")
}

// ----------------------------------------------------------------------------------- module loops

/// The code of a Rust file without its comments (doc comments included: a link is not a
/// dependency) and without the contents of string and character literals.
fn code_of(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    while i < c.len() {
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c[i] == 'r' && (i == 0 || !ident(c[i - 1]) || c[i - 1] == 'b') && matches!(next, Some('"' | '#')) {
            // A raw string, r"..." or r#"..."#, or an identifier that starts with r.
            let mut j = i + 1;
            while c.get(j) == Some(&'#') {
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            let hashes = j - i - 1;
            j += 1;
            while j < c.len() && !(c[j] == '"' && (1..=hashes).all(|k| c.get(j + k) == Some(&'#'))) {
                j += 1;
            }
            out.push_str("\"\"");
            i = j + 1 + hashes;
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            out.push_str("\"\"");
            i += 1;
        } else if c[i] == '\'' && (next == Some('\\') || c.get(i + 2) == Some(&'\'')) {
            // A character literal; a lifetime ('a) has no closing quote.
            i += 1;
            while i < c.len() && c[i] != '\'' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            out.push_str("' '");
            i += 1;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// The identifier at the start of `s`.
fn ident_at(s: &str) -> &str {
    let end = s.find(|ch: char| !(ch.is_alphanumeric() || ch == '_')).unwrap_or(s.len());
    &s[..end]
}

/// `mod name;` declarations of a crate root (inline `mod name { ... }` are part of the root).
fn declared_modules(root_code: &str) -> Vec<String> {
    let mut mods = Vec::new();
    for (at, _) in root_code.match_indices("mod") {
        let before = root_code[..at].chars().next_back();
        if before.is_some_and(|ch| ch.is_alphanumeric() || ch == '_') {
            continue;
        }
        let rest = &root_code[at + 3..];
        if !rest.starts_with(char::is_whitespace) {
            continue;
        }
        let rest = rest.trim_start();
        let name = ident_at(rest);
        if !name.is_empty() && rest[name.len()..].trim_start().starts_with(';') {
            mods.push(name.to_owned());
        }
    }
    mods
}

/// Every `.rs` file of top-level module `name` of the crate whose root is in `dir`.
fn module_files(dir: &Path, name: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, files);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let mut files = Vec::new();
    let file = dir.join(format!("{name}.rs"));
    if file.is_file() {
        files.push(file);
    }
    walk(&dir.join(name), &mut files);
    files
}

/// The top-level modules `code` names with `crate::module` or `crate::{module, ...}`.
fn crate_references(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|ch| ch.is_alphanumeric() || ch == '_' || ch == '$') {
            continue;
        }
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // The first segment of every path at the group's top level.
            let (mut depth, mut start) = (0, true);
            for (k, ch) in group.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    ch if start && !ch.is_whitespace() => {
                        names.insert(ident_at(&group[k..]).to_owned());
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            names.insert(ident_at(rest).to_owned());
        }
    }
    names
}

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The module graph of the crate rooted at `root`: an edge a -> b when a's code names b.
fn module_graph(root: &Path) -> Graph {
    let dir = root.parent().expect("a crate root is in a directory");
    let root_code = code_of(&std::fs::read_to_string(root).expect("reading the crate root"));
    let modules = declared_modules(&root_code);
    let mut graph = Graph::new();
    for module in &modules {
        let mut targets = BTreeSet::new();
        for file in module_files(dir, module) {
            let code = code_of(&std::fs::read_to_string(&file).expect("reading a module"));
            targets.extend(crate_references(&code).into_iter().filter(|t| t != module && modules.contains(t)));
        }
        graph.insert(module.clone(), targets);
    }
    graph
}

/// The strongly connected components of more than one module, each as one of its loops.
fn loops(graph: &Graph) -> Vec<Vec<String>> {
    let reaches = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_owned()];
        while let Some(n) = todo.pop() {
            for t in graph.get(&n).into_iter().flatten() {
                if seen.insert(t.clone()) {
                    todo.push(t.clone());
                }
            }
        }
        seen
    };
    let reach: BTreeMap<&String, BTreeSet<String>> = graph.keys().map(|n| (n, reaches(n))).collect();
    let mut done = BTreeSet::new();
    let mut found = Vec::new();
    for n in graph.keys() {
        if done.contains(n) || !reach[n].contains(n) {
            continue;
        }
        let component: BTreeSet<&String> = reach[n].iter().filter(|m| reach[*m].contains(n)).collect();
        done.extend(component.iter().map(|m| (*m).clone()));
        // One loop through `n`: breadth-first within the component, back to `n`.
        let mut parent: BTreeMap<&String, &String> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([n]);
        'search: while let Some(m) = queue.pop_front() {
            for t in &graph[m] {
                if t == n {
                    let mut path = vec![n.clone()];
                    let mut at = m;
                    while at != n {
                        path.push(at.clone());
                        at = parent[at];
                    }
                    path[1..].reverse();
                    path.push(n.clone());
                    found.push(path);
                    break 'search;
                }
                if component.contains(t) && !parent.contains_key(t) && t != n {
                    parent.insert(t, m);
                    queue.push_back(t);
                }
            }
        }
    }
    found
}

#[test]
fn no_crate_has_a_loop_between_its_modules() {
    let metadata = metadata();
    let mut problems = Vec::new();
    let mut known_seen = BTreeSet::new();
    for package in packages(&metadata) {
        let name = package["name"].as_str().expect("name");
        for target in package["targets"].as_array().expect("targets") {
            let kinds: Vec<&str> = target["kind"].as_array().expect("kind").iter().filter_map(Value::as_str).collect();
            if !kinds.iter().any(|k| matches!(*k, "lib" | "bin" | "rlib" | "proc-macro")) {
                continue; // tests, benches, examples, build scripts
            }
            let root = PathBuf::from(target["src_path"].as_str().expect("src_path"));
            for cycle in loops(&module_graph(&root)) {
                let members: BTreeSet<&str> = cycle.iter().map(String::as_str).collect();
                let known = KNOWN_LOOPS
                    .iter()
                    .position(|(p, modules)| *p == name && modules.iter().copied().collect::<BTreeSet<_>>() == members);
                match known {
                    Some(k) => {
                        known_seen.insert(k);
                    }
                    None => problems.push(format!("{name} ({}): {}", target["name"], cycle.join(" -> "))),
                }
            }
        }
    }
    for (k, (package, modules)) in KNOWN_LOOPS.iter().enumerate() {
        if !known_seen.contains(&k) {
            problems.push(format!("{package}: the known loop {modules:?} is gone; remove it from KNOWN_LOOPS"));
        }
    }
    let problems = problems.join("\n");
    assert!(problems.is_empty(), "module loops (a module's code names one that names it back):\n{problems}");
}

#[test]
fn code_of_drops_comments_and_literals() {
    let src = "use crate::a; // crate::b\n/* crate::c /* crate::d */ */ let s = \"crate::e // \"; \
               let r = r#\"crate::f\"#; let c = '\"'; fn f<'x>(v: &'x str) { crate::{g, h::i}::j(); }";
    let code = code_of(src);
    let refs: Vec<String> = crate_references(&code).into_iter().collect();
    assert_eq!(refs, ["a", "g", "h"]);
    assert_eq!(declared_modules("pub mod x;\nmod y { }\n#[cfg(test)]\nmod z;\nlet module;"), ["x", "z"]);
}

#[test]
fn loops_are_found_and_named() {
    let graph: Graph = [("a", vec!["b"]), ("b", vec!["c"]), ("c", vec!["a"]), ("d", vec!["a"])]
        .into_iter()
        .map(|(n, ts)| (n.to_owned(), ts.into_iter().map(str::to_owned).collect()))
        .collect();
    assert_eq!(loops(&graph), [["a", "b", "c", "a"]]);
}

// ----------------------------------------------------------------------------------- crate graph

/// Each workspace crate and the workspace crates it depends on (normal dependencies).
fn crate_graph() -> Graph {
    let metadata = metadata();
    let names: BTreeSet<String> =
        packages(&metadata).iter().map(|p| p["name"].as_str().expect("name").to_owned()).collect();
    packages(&metadata)
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .filter(|d| d["kind"].is_null())
                .filter_map(|d| d["name"].as_str())
                .filter(|d| names.contains(*d))
                .map(str::to_owned)
                .collect();
            (p["name"].as_str().expect("name").to_owned(), deps)
        })
        .collect()
}

/// `graph` without the edges another path already implies (its transitive reduction).
fn reduced(graph: &Graph) -> Graph {
    let reaches = |from: &str, to: &str, skip: &str| {
        let mut todo: Vec<&str> = graph[from].iter().map(String::as_str).filter(|t| *t != skip).collect();
        let mut seen = BTreeSet::new();
        while let Some(n) = todo.pop() {
            if n == to {
                return true;
            }
            if seen.insert(n) {
                todo.extend(graph[n].iter().map(String::as_str));
            }
        }
        false
    };
    graph
        .iter()
        .map(|(from, tos)| (from.clone(), tos.iter().filter(|to| !reaches(from, to, to)).cloned().collect()))
        .collect()
}

/// The README's Mermaid flowchart of `graph`.
fn mermaid(graph: &Graph) -> String {
    let id = |name: &str| name.replace('-', "_");
    let mut out = String::from("```mermaid\nflowchart TD\n");
    for name in graph.keys() {
        match id(name) {
            same if same == *name => out.push_str(&format!("    {name}\n")),
            other => out.push_str(&format!("    {other}[{name}]\n")),
        }
    }
    for (from, tos) in graph {
        for to in tos {
            out.push_str(&format!("    {} --> {}\n", id(from), id(to)));
        }
    }
    out.push_str("```\n");
    out
}

#[test]
fn the_readme_shows_the_current_crate_graph() {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    let expected = mermaid(&reduced(&crate_graph()));
    assert!(
        readme.contains(&expected),
        "README.md's crate graph (section Architecture) is stale; the Cargo.toml files say:\n\n{expected}"
    );
}

#[test]
fn the_reduction_keeps_only_what_no_other_path_implies() {
    let graph: Graph = [("app", vec!["kit", "base"]), ("kit", vec!["base"]), ("base", vec![])]
        .into_iter()
        .map(|(n, ts)| (n.to_owned(), ts.into_iter().map(str::to_owned).collect()))
        .collect();
    let r = reduced(&graph);
    assert_eq!(r["app"], BTreeSet::from(["kit".to_owned()]));
    assert_eq!(r["kit"], BTreeSet::from(["base".to_owned()]));
}

// ------------------------------------------------------------------------------------- --help

/// Every binary of the workspace answers `--help` (and exits) without starting its work: it
/// needs no stack, so a binary that connects or serves first would hang or fail here.
#[test]
fn every_binary_answers_help() {
    let root = workspace_root();
    let build = Command::new(env!("CARGO"))
        .args(["build", "--workspace", "--bins", "--quiet", "--manifest-path"])
        .arg(root.join("Cargo.toml"))
        .status()
        .expect("running cargo build");
    assert!(build.success(), "cargo build --workspace --bins failed");
    let metadata = metadata();
    let target = PathBuf::from(metadata["target_directory"].as_str().expect("target_directory")).join("debug");
    let mut problems = Vec::new();
    let mut checked = 0;
    for package in packages(&metadata) {
        for t in package["targets"].as_array().expect("targets") {
            if !t["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "bin")) {
                continue;
            }
            let name = t["name"].as_str().expect("name");
            let mut child = Command::new(target.join(name))
                .arg("--help")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("starting {name}: {e}"));
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let status = loop {
                if let Some(status) = child.try_wait().expect("waiting") {
                    break Some(status);
                }
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    break None;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            };
            let out = child.wait_with_output().expect("output");
            let text = String::from_utf8_lossy(&out.stdout);
            match status {
                Some(s) if s.success() && text.contains("Usage:") => checked += 1,
                Some(s) => problems.push(format!("{name} --help: {s}, printed {text:?}")),
                None => problems.push(format!("{name} --help did not exit within 10 s (it started its work)")),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(checked >= 10, "only {checked} binaries found");
}
