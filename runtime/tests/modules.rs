//! The runtime's modules form no cycle: no two of them import each other,
//! directly or through others (docs/architecture.md, "The runtime's
//! protocol"). Reads the sources; test modules and comments do not count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each module of `src/` and the modules it names through `crate::`.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut sources = BTreeMap::new();
    for file in std::fs::read_dir(&src).expect("runtime/src") {
        let path = file.expect("an entry").path();
        if path.extension().is_some_and(|ext| ext == "rs") {
            let module = path
                .file_stem()
                .expect("a name")
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&path).expect("a source file");
            sources.insert(module, code_only(&text));
        }
    }
    let lib = sources.remove("lib").expect("lib.rs");
    // What the crate root re-exports: `pub use module::{A, B};`.
    let mut exported = BTreeMap::new();
    for line in lib.lines() {
        if let Some(rest) = line.trim().strip_prefix("pub use ")
            && let Some((module, names)) = rest.split_once("::")
        {
            for name in names.trim_matches(|c| "{};".contains(c)).split(',') {
                exported.insert(name.trim().to_owned(), module.to_owned());
            }
        }
    }
    let modules: BTreeSet<String> = sources.keys().cloned().collect();
    sources
        .iter()
        .map(|(module, text)| {
            let mut names = BTreeSet::new();
            for (at, _) in text.match_indices("crate::") {
                let rest = &text[at + "crate::".len()..];
                if let Some(group) = rest.strip_prefix('{') {
                    let group = &group[..group.find('}').expect("a closed group")];
                    names.extend(group.split(',').map(|name| first_segment(name.trim())));
                } else {
                    names.insert(first_segment(rest));
                }
            }
            let deps = names
                .into_iter()
                .filter_map(|name| {
                    if modules.contains(&name) {
                        Some(name)
                    } else {
                        exported.get(&name).cloned()
                    }
                })
                .filter(|dep| dep != module)
                .collect();
            (module.clone(), deps)
        })
        .collect()
}

fn first_segment(path: &str) -> String {
    path.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The source without comments and without its test modules.
fn code_only(text: &str) -> String {
    let mut code = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim();
        if trimmed.starts_with("#[cfg(")
            && trimmed.contains("test")
            && lines
                .peek()
                .is_some_and(|next| next.trim().starts_with("mod "))
        {
            break;
        }
        if !trimmed.starts_with("//") {
            code.push_str(line);
            code.push('\n');
        }
    }
    code
}

/// A cycle through `module`, if there is one: the path back to it.
fn cycle_from(
    module: &str,
    imports: &BTreeMap<String, BTreeSet<String>>,
    path: &mut Vec<String>,
) -> Option<Vec<String>> {
    if let Some(start) = path.iter().position(|seen| seen == module) {
        let mut cycle = path[start..].to_vec();
        cycle.push(module.to_owned());
        return Some(cycle);
    }
    path.push(module.to_owned());
    for dep in imports.get(module).into_iter().flatten() {
        if let Some(cycle) = cycle_from(dep, imports, path) {
            return Some(cycle);
        }
    }
    path.pop();
    None
}

// Not under Miri: no unsafe code to check, and a minute of parsing there.
#[test]
#[cfg_attr(miri, ignore)]
fn no_two_modules_import_each_other() {
    let imports = imports();
    assert!(imports.contains_key("activity") && imports.contains_key("registry"));
    assert!(
        imports["registry"].contains("entry"),
        "the scan sees imports: {imports:?}"
    );
    for module in imports.keys() {
        if let Some(cycle) = cycle_from(module, &imports, &mut Vec::new()) {
            panic!("modules import each other: {}", cycle.join(" → "));
        }
    }
}
