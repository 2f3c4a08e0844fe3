//! The runtime knows nothing of its hosts: no plugin ABI, no JSON, no web
//! server, no console, no daemon. Checked on its manifest (what it may
//! link) and its sources (what it names).

const FORBIDDEN: [&str; 8] = [
    "plugin-abi",
    "plugin_abi",
    "serde",
    "warp",
    "rhai",
    "hyper",
    "libloading",
    "system::",
];

#[test]
#[cfg_attr(
    miri,
    ignore = "reads and scans text only: no unsafe, and slow under Miri"
)]
fn the_runtime_depends_on_no_part_of_its_host() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("runtime/Cargo.toml");
    let mut texts = vec![("Cargo.toml".to_owned(), manifest)];
    // Every source file, those of directory modules (`registry/`) too.
    let mut directories = vec![root.join("src")];
    while let Some(directory) = directories.pop() {
        for entry in std::fs::read_dir(&directory)
            .expect("runtime/src")
            .flatten()
        {
            let path = entry.path();
            if path.is_dir() {
                directories.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("a source file");
            let name = path.strip_prefix(root.join("src")).unwrap_or(&path);
            texts.push((name.to_string_lossy().into_owned(), text));
        }
    }
    for (file, text) in &texts {
        let comment = if file.ends_with(".toml") { "#" } else { "//" };
        for line in text.lines().filter(|line| {
            let code = line.trim_start();
            !code.starts_with(comment) && !code.starts_with("description")
        }) {
            for name in FORBIDDEN {
                assert!(!line.contains(name), "runtime/{file} names {name}: {line}");
            }
        }
    }
    assert!(texts.len() > 10, "read only {} files", texts.len());
}
