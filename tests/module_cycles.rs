//! No two modules import each other, directly or through others: for every
//! crate of the workspace, the `use`/path edges between its modules are read
//! from the sources and checked for cycles.
//!
//! Run: `cargo test -p system --test e2e cycle` (no daemon; it reads
//! `*/src/**/*.rs` of the workspace).
//! `cargo test --workspace -- cycle` runs it with every other check.
//!
//! What counts as an edge: a path in module `a` that names module `b`
//! (`crate::b::…`, `super::…`, `self::…`, or a child module's name), grouped
//! imports expanded (`use crate::{b, c::D}`), comments, strings and char
//! literals skipped; inline `#[cfg(test)]` modules skipped too (a module's
//! unit tests may drive it through any other module, as a dev-dependency
//! may depend on its dependant); test modules in files of their own count. What counts as a cycle:
//! at each level of the module tree, the children of one module (each
//! together with everything under it) form a graph, and that graph must have
//! no cycle. A parent's own file and its children are not compared (a
//! `mod.rs` declares and re-exports its children, and they use its types:
//! that is nesting, not a cycle). A path through a re-export or an import
//! (`crate::Down`, where the crate root has `pub use exit::Down`) is followed
//! to the module that defines the item, so a cycle cannot hide behind one;
//! `a_cycle_through_a_re_export_is_seen` proves it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type ModPath = Vec<String>;

#[test]
fn no_import_cycles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut found: BTreeSet<(String, Vec<String>)> = BTreeSet::new();
    let mut report = String::new();
    let mut crates = 0;
    for entry in std::fs::read_dir(&root)
        .expect("the workspace root")
        .flatten()
    {
        let src = entry.path().join("src");
        if !entry.path().join("Cargo.toml").is_file() || !src.is_dir() {
            continue;
        }
        crates += 1;
        let name = entry.file_name().to_string_lossy().into_owned();
        let modules = read_modules(&src);
        let edges = edges(&modules);
        for (cycle, why) in cycles(&modules, &edges) {
            let members: Vec<String> = cycle.iter().map(|m| m.join("::")).collect();
            report.push_str(&format!("{name}: {}\n{why}", members.join(" <-> ")));
            found.insert((name.clone(), members));
        }
    }
    assert!(
        crates >= 5,
        "found only {crates} crates under {}",
        root.display()
    );
    assert!(found.is_empty(), "module cycles:\n{report}");
}

/// Every `.rs` file under `src` as a module path (`lib.rs` is the root;
/// `main.rs` too when there is no `lib.rs`; `src/bin/` is skipped).
fn read_modules(src: &Path) -> BTreeMap<ModPath, String> {
    let has_lib = src.join("lib.rs").is_file();
    let mut modules = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)
            .expect("a source directory")
            .flatten()
        {
            let path = entry.path();
            if path.is_dir() {
                if path != src.join("bin") {
                    stack.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|ext| ext != "rs") {
                continue;
            }
            let relative: PathBuf = path
                .strip_prefix(src)
                .expect("under src")
                .with_extension("");
            let mut parts: ModPath = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|last| last == "mod") {
                parts.pop();
            }
            if parts == ["lib"] || parts == ["main"] {
                if parts == ["main"] && has_lib {
                    continue;
                }
                parts.clear();
            }
            let text = std::fs::read_to_string(&path).expect("a readable source file");
            modules.insert(parts, text);
        }
    }
    modules
}

/// The source without comments, and with string and char literals emptied.
fn strip(source: &str) -> Vec<char> {
    let chars: Vec<char> = source.chars().collect();
    let mut out = Vec::with_capacity(chars.len());
    let mut i = 0;
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    while i < chars.len() {
        let c = chars[i];
        if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == 'r'
            && (at(i + 1) == '"' || (at(i + 1) == '#' && matches!(at(i + 2), '"' | '#')))
            && !at(i.wrapping_sub(1)).is_alphanumeric()
        {
            // A raw string: r"…", r#"…"#, …
            let mut hashes = 0;
            i += 1;
            while at(i) == '#' {
                hashes += 1;
                i += 1;
            }
            i += 1; // the opening quote
            loop {
                if i >= chars.len() {
                    break;
                }
                if chars[i] == '"' && (1..=hashes).all(|k| at(i + k) == '#') {
                    i += 1 + hashes;
                    break;
                }
                i += 1;
            }
            out.extend(['"', '"']);
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.extend(['"', '"']);
        } else if c == '\'' && at(i + 1) == '\\' {
            // An escaped char literal: '\n', '\'', '\u{…}'.
            i += 2;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.extend(['\'', '\'']);
        } else if c == '\'' && at(i + 2) == '\'' {
            i += 3;
            out.extend(['\'', '\'']);
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

#[derive(Debug, PartialEq)]
enum Token {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Star,
    Other(char),
}

fn tokens(chars: &[char]) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let ident: String = chars[start..i].iter().collect();
            tokens.push(Token::Ident(ident.trim_start_matches("r#").to_owned()));
            continue;
        }
        if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push(Token::Other('0'));
            continue;
        }
        i += 1;
        match c {
            ':' if chars.get(i) == Some(&':') => {
                i += 1;
                tokens.push(Token::PathSep);
            }
            '{' => tokens.push(Token::Open),
            '}' => tokens.push(Token::Close),
            ',' => tokens.push(Token::Comma),
            '*' => tokens.push(Token::Star),
            c if c.is_whitespace() => {}
            c => tokens.push(Token::Other(c)),
        }
    }
    tokens
}

/// The names each module's own `use` declarations bring in (re-exports and
/// private imports alike: a child may name its ancestors' private imports),
/// as the full paths they stand for; and the modules each glob-imports.
#[derive(Default)]
struct Imports {
    names: BTreeMap<ModPath, BTreeMap<String, ModPath>>,
    globs: BTreeMap<ModPath, Vec<ModPath>>,
    defined: BTreeMap<ModPath, BTreeSet<String>>,
}

fn imports(modules: &BTreeMap<ModPath, String>) -> Imports {
    let mut imports = Imports::default();
    for (module, source) in modules {
        imports.defined.insert(module.clone(), defined(source));
        let children = children(modules, module);
        let tokens = tokens(&strip(source));
        let mut depth = 0;
        let mut i = 0;
        while i < tokens.len() {
            match &tokens[i] {
                Token::Open => depth += 1,
                Token::Close => depth -= 1,
                Token::Ident(word) if word == "use" && depth == 0 => {
                    let base = match tokens.get(i + 1) {
                        Some(Token::Ident(first)) if first == "crate" => Some((Vec::new(), i + 3)),
                        Some(Token::Ident(first)) if first == "super" || first == "self" => {
                            Some((module.clone(), i + 1))
                        }
                        Some(Token::Ident(first)) if children.contains(first.as_str()) => {
                            Some((module.clone(), i + 1))
                        }
                        _ => None,
                    };
                    if let Some((base, start)) = base {
                        let mut bound = Vec::new();
                        i = bindings(&tokens, start, base, &mut bound).max(i + 1);
                        for (name, path) in bound {
                            match name {
                                Some(name) => {
                                    imports
                                        .names
                                        .entry(module.clone())
                                        .or_default()
                                        .insert(name, path);
                                }
                                None => imports.globs.entry(module.clone()).or_default().push(path),
                            }
                        }
                        continue;
                    }
                }
                _ => {}
            }
            i += 1;
        }
    }
    imports
}

/// Reads one path (tree) from `tokens[i]` on, relative to `base` (a `use`
/// tree or a path in code): pushes, for each leaf, the name it binds (its
/// last segment or its `as` alias; `None` for a glob) and the full path;
/// returns the index after it.
fn bindings(
    tokens: &[Token],
    mut i: usize,
    base: ModPath,
    out: &mut Vec<(Option<String>, ModPath)>,
) -> usize {
    let mut path = base;
    loop {
        match tokens.get(i) {
            Some(Token::Ident(word)) => {
                match word.as_str() {
                    "super" => {
                        path.pop();
                    }
                    "self" => {}
                    _ => path.push(word.clone()),
                }
                i += 1;
                if tokens.get(i) == Some(&Token::PathSep) {
                    i += 1;
                    continue;
                }
                let mut name = path.last().cloned().unwrap_or_default();
                if tokens.get(i) == Some(&Token::Ident("as".to_owned())) {
                    if let Some(Token::Ident(alias)) = tokens.get(i + 1) {
                        name = alias.clone();
                    }
                    i += 2;
                }
                if name != "_" {
                    out.push((Some(name), path));
                }
                return i;
            }
            Some(Token::Star) => {
                out.push((None, path));
                return i + 1;
            }
            Some(Token::Open) => {
                i += 1;
                loop {
                    match tokens.get(i) {
                        None => return i,
                        Some(Token::Close) => return i + 1,
                        Some(Token::Comma) => i += 1,
                        Some(_) => {
                            let next = bindings(tokens, i, path.clone(), out);
                            i = next.max(i + 1);
                        }
                    }
                }
            }
            _ => return i,
        }
    }
}

/// The names of `module`'s child modules.
fn children<'a>(modules: &'a BTreeMap<ModPath, String>, module: &ModPath) -> BTreeSet<&'a str> {
    modules
        .keys()
        .filter(|other| other.len() == module.len() + 1 && other.starts_with(module))
        .map(|child| child[module.len()].as_str())
        .collect()
}

/// The edges of each module: the other modules its paths name.
fn edges(modules: &BTreeMap<ModPath, String>) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let imports = imports(modules);
    let mut edges: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
    for (module, source) in modules {
        let children = children(modules, module);
        let tokens = tokens(&strip(source));
        // Inline modules (`mod tests { … }`) being read: name and brace depth.
        let mut inline: Vec<(String, usize)> = Vec::new();
        let mut depth = 0;
        let mut i = 0;
        while i < tokens.len() {
            match &tokens[i] {
                Token::Open => depth += 1,
                Token::Close => {
                    depth -= 1;
                    if inline.last().is_some_and(|(_, at)| *at == depth) {
                        inline.pop();
                    }
                }
                Token::Ident(word) if word == "mod" => {
                    if let (Some(Token::Ident(name)), Some(Token::Open)) =
                        (tokens.get(i + 1), tokens.get(i + 2))
                    {
                        if test_only(&tokens, i) {
                            i = closing(&tokens, i + 2) + 1;
                            continue;
                        }
                        inline.push((name.clone(), depth));
                    }
                }
                Token::Ident(word) => {
                    let after_sep = i > 0 && tokens[i - 1] == Token::PathSep;
                    let starts_path = tokens.get(i + 1) == Some(&Token::PathSep);
                    let here: ModPath = module
                        .iter()
                        .cloned()
                        .chain(inline.iter().map(|(name, _)| name.clone()))
                        .collect();
                    let base = match word.as_str() {
                        "crate" => Some((Vec::new(), i + 2)),
                        "super" | "self" => Some((here.clone(), i)),
                        child if inline.is_empty() && children.contains(child) => {
                            Some((here.clone(), i))
                        }
                        _ => None,
                    };
                    if let (false, true, Some((base, start))) = (after_sep, starts_path, base) {
                        let mut paths = Vec::new();
                        let end = bindings(&tokens, start, base, &mut paths);
                        for (_, path) in paths {
                            if let Some(target) = resolve(modules, &imports, &path, 0)
                                && &target != module
                            {
                                edges.entry(module.clone()).or_default().insert(target);
                            }
                        }
                        i = end.max(i + 1);
                        continue;
                    }
                }
                _ => {}
            }
            i += 1;
        }
    }
    edges
}

/// Whether the item starting at `tokens[at]` carries a `#[cfg(…test…)]`
/// attribute: a module's inline tests, which may use any module of the
/// crate (as a dev-dependency may depend on its dependant).
fn test_only(tokens: &[Token], at: usize) -> bool {
    let mut end = at;
    while end > 0 && tokens[end - 1] == Token::Other(']') {
        let Some(open) = tokens[..end - 1]
            .iter()
            .rposition(|t| *t == Token::Other('['))
        else {
            return false;
        };
        let attribute = &tokens[open..end];
        // `cfg(test)`, `cfg(all(test, …))`: `test` not under a `not(…)`.
        let needs_test = attribute.iter().enumerate().any(|(k, t)| {
            *t == Token::Ident("test".to_owned())
                && !(k >= 2 && attribute[k - 2] == Token::Ident("not".to_owned()))
        });
        if attribute.first() == Some(&Token::Other('['))
            && attribute.get(1) == Some(&Token::Ident("cfg".to_owned()))
            && needs_test
        {
            return true;
        }
        end = open.saturating_sub(1); // before the `#`
    }
    false
}

/// The index of the `}` that closes the `{` at `tokens[open]`.
fn closing(tokens: &[Token], open: usize) -> usize {
    let mut depth = 0;
    for (i, token) in tokens.iter().enumerate().skip(open) {
        match token {
            Token::Open => depth += 1,
            Token::Close => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    tokens.len()
}

/// The module that defines what a path names: its longest prefix that is
/// a module file, unless that module only imports the next name (or
/// glob-imports a module that has it), in which case the import is followed.
/// `None` for a path that names nothing of the crate.
fn resolve(
    modules: &BTreeMap<ModPath, String>,
    imports: &Imports,
    path: &[String],
    hops: usize,
) -> Option<ModPath> {
    let module = (0..=path.len())
        .rev()
        .map(|len| path[..len].to_vec())
        .find(|prefix| modules.contains_key(prefix))?;
    let rest = &path[module.len()..];
    let Some(name) = rest.first() else {
        return Some(module);
    };
    if hops > 16 {
        return Some(module);
    }
    let follow = |target: &ModPath| {
        let full: ModPath = target.iter().chain(&rest[1..]).cloned().collect();
        resolve(modules, imports, &full, hops + 1)
    };
    let follow_from = |from: &ModPath| {
        let full: ModPath = from.iter().chain(rest).cloned().collect();
        resolve(modules, imports, &full, hops + 1)
    };
    if let Some(target) = imports.names.get(&module).and_then(|names| names.get(name)) {
        return follow(target).or(Some(module));
    }
    for glob in imports.globs.get(&module).into_iter().flatten() {
        let Some(from) = resolve(modules, imports, glob, hops + 1) else {
            continue;
        };
        let has = |names: Option<&BTreeSet<String>>| names.is_some_and(|n| n.contains(name));
        if has(imports.defined.get(&from))
            || imports
                .names
                .get(&from)
                .is_some_and(|n| n.contains_key(name))
        {
            return follow_from(&from);
        }
    }
    // Defined here (or not in this crate at all: a path into the root that
    // names no module stays the root, which is never compared).
    Some(module)
}

/// The names of the items a module's source defines (at any depth: a
/// close enough reading for following a glob import).
fn defined(source: &str) -> BTreeSet<String> {
    let tokens = tokens(&strip(source));
    tokens
        .windows(2)
        .filter_map(|pair| match (&pair[0], &pair[1]) {
            (Token::Ident(kind), Token::Ident(name))
                if matches!(
                    kind.as_str(),
                    "fn" | "struct"
                        | "enum"
                        | "trait"
                        | "type"
                        | "const"
                        | "static"
                        | "mod"
                        | "union"
                ) =>
            {
                Some(name.clone())
            }
            _ => None,
        })
        .collect()
}

/// Every cycle among the children of one module: the children in it, and
/// the file-level edges that make it.
fn cycles(
    modules: &BTreeMap<ModPath, String>,
    edges: &BTreeMap<ModPath, BTreeSet<ModPath>>,
) -> Vec<(Vec<ModPath>, String)> {
    let parents: BTreeSet<ModPath> = modules
        .keys()
        .filter(|m| !m.is_empty())
        .map(|m| m[..m.len() - 1].to_vec())
        .collect();
    let mut found = Vec::new();
    for parent in parents {
        let level = parent.len() + 1;
        let child_of = |m: &ModPath| -> Option<ModPath> {
            (m.len() >= level && m.starts_with(&parent)).then(|| m[..level].to_vec())
        };
        let mut graph: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
        let mut why: BTreeMap<(ModPath, ModPath), BTreeSet<(ModPath, ModPath)>> = BTreeMap::new();
        for (from, targets) in edges {
            let Some(a) = child_of(from) else { continue };
            for to in targets {
                let Some(b) = child_of(to) else { continue };
                if a != b {
                    graph.entry(a.clone()).or_default().insert(b.clone());
                    why.entry((a.clone(), b.clone()))
                        .or_default()
                        .insert((from.clone(), to.clone()));
                }
            }
        }
        for component in strongly_connected(&graph) {
            if component.len() < 2 {
                continue;
            }
            let mut text = String::new();
            for ((a, b), files) in &why {
                if component.contains(a) && component.contains(b) {
                    let files: Vec<String> = files
                        .iter()
                        .map(|(f, t)| format!("{} uses {}", f.join("::"), t.join("::")))
                        .collect();
                    text.push_str(&format!(
                        "    {} -> {}: {}\n",
                        a.join("::"),
                        b.join("::"),
                        files.join(", ")
                    ));
                }
            }
            found.push((component, text));
        }
    }
    found
}

/// Tarjan's strongly connected components, each sorted.
fn strongly_connected(graph: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<Vec<ModPath>> {
    struct State<'a> {
        graph: &'a BTreeMap<ModPath, BTreeSet<ModPath>>,
        index: BTreeMap<&'a ModPath, usize>,
        low: BTreeMap<&'a ModPath, usize>,
        stack: Vec<&'a ModPath>,
        on_stack: BTreeSet<&'a ModPath>,
        components: Vec<Vec<ModPath>>,
    }
    fn visit<'a>(state: &mut State<'a>, node: &'a ModPath) {
        let n = state.index.len();
        state.index.insert(node, n);
        state.low.insert(node, n);
        state.stack.push(node);
        state.on_stack.insert(node);
        if let Some(targets) = state.graph.get(node) {
            for target in targets {
                let target = state.graph.get_key_value(target).map_or(target, |(k, _)| k);
                if !state.index.contains_key(target) {
                    visit(state, target);
                    let low = state.low[target].min(state.low[node]);
                    state.low.insert(node, low);
                } else if state.on_stack.contains(target) {
                    let low = state.index[target].min(state.low[node]);
                    state.low.insert(node, low);
                }
            }
        }
        if state.low[node] == state.index[node] {
            let mut component = Vec::new();
            while let Some(member) = state.stack.pop() {
                state.on_stack.remove(member);
                component.push(member.clone());
                if member == node {
                    break;
                }
            }
            component.sort();
            state.components.push(component);
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        components: Vec::new(),
    };
    for node in graph.keys() {
        if !state.index.contains_key(node) {
            visit(&mut state, node);
        }
    }
    state.components
}

#[test]
fn the_checker_sees_a_cycle_through_a_third_module_and_grouped_imports() {
    let modules: BTreeMap<ModPath, String> = [
        (vec![], "mod a; mod b; mod c; mod d;".to_owned()),
        (vec!["a".into()], "use crate::{b::Thing, d};".to_owned()),
        (
            vec!["b".into()],
            "fn f() { crate::c::g() } // crate::d::h".to_owned(),
        ),
        (
            vec!["c".into()],
            "use super::a::X; const S: &str = \"crate::d::y\";".to_owned(),
        ),
        (
            vec!["d".into()],
            "use std::fmt; mod tests { use super::*; }".to_owned(),
        ),
    ]
    .into_iter()
    .collect();
    let edges = edges(&modules);
    let found: Vec<Vec<ModPath>> = cycles(&modules, &edges)
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    assert_eq!(
        found,
        [vec![
            vec!["a".to_owned()],
            vec!["b".to_owned()],
            vec!["c".to_owned()]
        ]],
        "{edges:?}"
    );
    assert!(!edges.contains_key(&vec!["d".to_owned()]), "{edges:?}");
}

#[test]
fn a_cycle_through_a_re_export_is_seen() {
    // The issue's case: `exit` uses `crate::Pid`, `pid` uses `crate::Down`,
    // both re-exported by the root; and the same through a `super::` import,
    // an alias and a glob one level down.
    let modules: BTreeMap<ModPath, String> = [
        (vec![], "mod exit; mod pid; mod outer; pub use exit::{Down, ExitReason as Reason}; pub use pid::*;".to_owned()),
        (vec!["exit".into()], "use crate::Pid; pub struct Down; pub enum ExitReason {}".to_owned()),
        (vec!["pid".into()], "pub struct Pid; fn cycle(_: crate::Down) {}".to_owned()),
        (vec!["outer".into()], "mod a; mod b; use self::b::Thing as Other;".to_owned()),
        (vec!["outer".into(), "a".into()], "fn f(_: super::Other) {}".to_owned()),
        (vec!["outer".into(), "b".into()], "pub struct Thing; fn g(_: crate::outer::a::X) {}".to_owned()),
    ]
    .into_iter()
    .collect();
    let edges = edges(&modules);
    let found: Vec<Vec<ModPath>> = cycles(&modules, &edges)
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    assert_eq!(
        found,
        [
            vec![vec!["exit".to_owned()], vec!["pid".to_owned()]],
            vec![
                vec!["outer".to_owned(), "a".to_owned()],
                vec!["outer".to_owned(), "b".to_owned()]
            ],
        ],
        "{edges:?}"
    );
}
