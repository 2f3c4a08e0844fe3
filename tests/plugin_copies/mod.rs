//! Test support for hot upgrades: edited copies of the plugin's source
//! (`plugin-abi/` and `math-plugin/` in a minimal workspace) under
//! `target/plugin-copies/<name>/`, each with its own target directory, so
//! repeated runs build incrementally and two copies never overwrite each
//! other's library. The edits are plain text replacements, as a person
//! giving the demo would make them.
//!
//! It must never touch the repository's own sources: it only reads them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

/// The repository's root (the workspace).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("daemon/ has a parent")
        .to_path_buf()
}

/// The cargo target directory the tests were built in.
pub fn target_dir() -> PathBuf {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_system"));
    binary
        .parent()
        .and_then(Path::parent)
        .expect("the binary is in <target>/<profile>/")
        .to_path_buf()
}

/// The three edits of docs/demo.md's Part 4, exactly as shown there:
/// uncomment the validation, delete the 13 error, replace the loop with the
/// closed form, and bump the version to 1.1.0.
pub const DEMO_FIX: &[(&str, &str)] = &[
    (
        "    // if n <= 0 {\n    //     return Err(\"must be a positive integer\".to_string());\n    // }\n    let _ = n;\n",
        "    if n <= 0 {\n        return Err(\"must be a positive integer\".to_string());\n    }\n",
    ),
    ("    if n == 13 {\n        panic!(\"error\");\n    }\n", ""),
    (
        "    Phase::Looping {\n        from: 1,\n        to: n,\n        acc: 0,\n    }\n}",
        "    Phase::Finished { result: n * (n + 1) / 2 }\n}",
    ),
    ("        \"1.0.0\"\n", "        \"1.1.0\"\n"),
];

/// The demo's fix with a wrong closed form: the self-test must refuse it.
pub const WRONG_SUM: &[(&str, &str)] = &[
    (
        "    Phase::Looping {\n        from: 1,\n        to: n,\n        acc: 0,\n    }\n}",
        "    Phase::Finished { result: n * (n - 1) / 2 }\n}",
    ),
    ("        \"1.0.0\"\n", "        \"1.2.0-wrong\"\n"),
];

/// A plugin that passes every check but writes through a null pointer in
/// `calc_sum(4242)`: it kills the whole node (heart must roll it back).
pub const FAULTS_ON_4242: &[(&str, &str)] = &[
    (
        "    if n == 13 {\n        panic!(\"error\");\n    }\n",
        "    if n == 13 {\n        panic!(\"error\");\n    }\n    if n == 4242 {\n        // SAFETY: none; this copy faults on purpose.\n        unsafe { std::ptr::null_mut::<u8>().write_volatile(1) };\n    }\n",
    ),
    ("        \"1.0.0\"\n", "        \"1.3.0-faults\"\n"),
];

/// A plugin whose validation panics for 7 (its self-test validates 5 only).
pub const PANICS_IN_VALIDATION: &[(&str, &str)] = &[
    (
        "pub fn validate(n: i64) -> Result<(), String> {\n",
        "pub fn validate(n: i64) -> Result<(), String> {\n    if n == 7 {\n        panic!(\"boom in validate\");\n    }\n",
    ),
    ("        \"1.0.0\"\n", "        \"1.3.0-panics\"\n"),
];

/// A plugin whose sum panics for 5: its self-test must refuse it.
pub const PANICS_IN_SUM: &[(&str, &str)] = &[(
    "    if n == 13 {\n        panic!(\"error\");\n    }\n",
    "    if n == 5 {\n        panic!(\"boom in calc_sum\");\n    }\n",
)];

/// A syntax error: the build must fail with the compiler's message.
pub const SYNTAX_ERROR: &[(&str, &str)] = &[(
    "pub fn validate(n: i64) -> Result<(), String> {\n",
    "pub fn validate(n: i64) -> Result<(), String> {\n    let broken = ;\n",
)];

/// A plugin built against another ABI version.
pub const OTHER_ABI: &[(&str, &str)] = &[(
    "pub extern \"C\" fn math_abi_version() -> u32 {\n    ABI_VERSION\n}",
    "pub extern \"C\" fn math_abi_version() -> u32 {\n    ABI_VERSION + 1\n}",
)];

/// A copy of the plugin's workspace under `target/plugin-copies/<name>/src`
/// with `edits` applied to `math-plugin/src/lib.rs`; returns its root (for
/// `system upgrade --source`). Files are rewritten only when they change,
/// so cargo's incremental build still applies.
pub fn plugin_copy(name: &str, edits: &[(&str, &str)]) -> PathBuf {
    let repo = repo();
    let root = copies_dir().join(name).join("src");
    let package = fs::read_to_string(repo.join("Cargo.toml")).expect("the root Cargo.toml");
    let workspace_package = package
        .split("[workspace.package]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .expect("the root Cargo.toml has [workspace.package]");
    // The plugin's crates inherit the workspace's lints.
    let lints: String = package
        .split("\n[")
        .filter(|section| section.starts_with("workspace.lints"))
        .map(|section| format!("\n[{section}\n"))
        .collect();
    // And its release profile (debug info for native stack samples).
    let release: String = package
        .split("\n[")
        .filter(|section| section.starts_with("profile.release]"))
        .map(|section| format!("\n[{section}\n"))
        .collect();
    write_if_changed(
        &root.join("Cargo.toml"),
        &format!(
            "# An edited copy of the plugin for the upgrade tests.\n[workspace]\nresolver = \"3\"\nmembers = [\"plugin-abi\", \"math-plugin\"]\n\n[workspace.package]{workspace_package}\n[workspace.dependencies]\nplugin-abi = {{ path = \"plugin-abi\" }}\n{lints}{release}"
        ),
    );
    for file in ["plugin-abi/Cargo.toml", "plugin-abi/src/lib.rs"] {
        let text = fs::read_to_string(repo.join(file)).expect("plugin-abi's sources");
        write_if_changed(&root.join(file), &text);
    }
    // Only `cargo build` runs on the copy: its tests (and their
    // dev-dependencies, which would need the registry) are left out.
    let manifest =
        fs::read_to_string(repo.join("math-plugin/Cargo.toml")).expect("math-plugin's manifest");
    let manifest = manifest
        .split("[dev-dependencies]")
        .next()
        .unwrap_or(&manifest)
        .to_owned();
    write_if_changed(&root.join("math-plugin/Cargo.toml"), &manifest);
    let mut source =
        fs::read_to_string(repo.join("math-plugin/src/lib.rs")).expect("math-plugin's source");
    for (from, to) in edits {
        assert!(
            source.contains(from),
            "math-plugin/src/lib.rs no longer contains the text to edit:\n{from}"
        );
        source = source.replacen(from, to, 1);
    }
    let source = source.replace("#[cfg(test)]\nmod tests;\n", "");
    write_if_changed(&root.join("math-plugin/src/lib.rs"), &source);
    root
}

/// Where the copies and their target directories live.
pub fn copies_dir() -> PathBuf {
    target_dir().join("plugin-copies")
}

/// The target directory of copy `name` (set as `CARGO_TARGET_DIR` for its builds).
pub fn copy_target(name: &str) -> PathBuf {
    copies_dir().join(name).join("target")
}

/// The library a successful build of copy `name` leaves.
pub fn copy_library(name: &str) -> PathBuf {
    copy_target(name).join("release/libmath_plugin.so")
}

/// `system --home HOME upgrade --source <copy>` with the copy's own target
/// directory, offline.
pub fn upgrade_from_copy(home: &Path, name: &str, source: &Path) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_system"))
        .arg("--home")
        .arg(home)
        .arg("upgrade")
        .arg("--source")
        .arg(source)
        .env("CARGO_TARGET_DIR", copy_target(name))
        .env("CARGO_NET_OFFLINE", "true")
        .env_remove("SYSTEM_HOME")
        .output()
        .expect("the system binary runs")
}

/// Builds copy `name` with cargo directly (no daemon), so a later
/// `system upgrade --source` finds it up to date. Panics with cargo's
/// output if the build fails.
pub fn prebuild(name: &str, source: &Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args(["build", "--release", "-p", "math-plugin", "--config"])
        .arg(system::node::upgrade::build::PLUGIN_RUSTFLAGS)
        .arg("--manifest-path")
        .arg(source.join("Cargo.toml"))
        // As `system upgrade` builds it (same flags: no second build).
        .current_dir(source)
        .env("CARGO_TARGET_DIR", copy_target(name))
        .env("CARGO_NET_OFFLINE", "true")
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "building the plugin copy {name} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn write_if_changed(path: &Path, text: &str) {
    if fs::read_to_string(path).is_ok_and(|old| old == text) {
        return;
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).expect("create the copy's directories");
    }
    // Via a rename: another test (a thread of this binary, or another
    // binary) may be reading or writing the same copy, so each writer has a
    // partial file of its own.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let write = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let partial = path.with_extension(format!("partial-{}-{write}", std::process::id()));
    fs::write(&partial, text).expect("write the copy");
    fs::rename(&partial, path).expect("move the copy into place");
}

// ---- Untrusted plugins: each passes the build, each must be refused (or
// ---- caught while it runs) without touching the daemon. ----

/// The one-step "fix": the naive sum in a single call, no slices.
pub const NAIVE_ONE_STEP: &[(&str, &str)] = &[
    (
        "    Phase::Looping {\n        from: 1,\n        to: n,\n        acc: 0,\n    }\n}",
        "    Phase::Finished { result: (1..=n).map(black_box).sum() }\n}",
    ),
    ("        \"1.0.0\"\n", "        \"1.1.0-one-step\"\n"),
];

/// A loop that runs to the end whatever its budget, yet reports at most the budget.
pub const IGNORES_BUDGET: &[(&str, &str)] = &[
    (
        "    while *used < budget {\n        *used += 1;\n",
        "    loop {\n        *used = (*used + 1).min(budget);\n",
    ),
    ("        \"1.0.0\"\n", "        \"1.1.0-ignores-budget\"\n"),
];

/// A write through a null pointer in `validate`.
pub const NULL_WRITE_IN_VALIDATION: &[(&str, &str)] = &[
    (
        "pub fn validate(n: i64) -> Result<(), String> {\n",
        "pub fn validate(n: i64) -> Result<(), String> {\n    unsafe { std::ptr::null_mut::<i64>().write_volatile(n) };\n",
    ),
    ("        \"1.0.0\"\n", "        \"1.1.0-null-write\"\n"),
];

/// `abort()` in the sum.
pub const ABORTS_IN_SUM: &[(&str, &str)] = &[
    (
        "    if n == 13 {\n        panic!(\"error\");\n    }\n",
        "    if n > 0 {\n        std::process::abort();\n    }\n",
    ),
    ("        \"1.0.0\"\n", "        \"1.1.0-aborts\"\n"),
];

/// `loop {}` in `validate`.
pub const LOOPS_IN_VALIDATION: &[(&str, &str)] = &[
    (
        "pub fn validate(n: i64) -> Result<(), String> {\n",
        "pub fn validate(n: i64) -> Result<(), String> {\n    if n > 0 {\n        #[allow(clippy::empty_loop)]\n        loop {}\n    }\n",
    ),
    ("        \"1.0.0\"\n", "        \"1.1.0-loops\"\n"),
];

/// Passes every check, but for 4242 spins 3 s in one call without yielding.
pub const SPINS_ON_4242: &[(&str, &str)] = &[
    (
        "    if n == 13 {\n        panic!(\"error\");\n    }\n",
        "    if n == 4242 {\n        let start = std::time::Instant::now();\n        while start.elapsed() < std::time::Duration::from_millis(3000) {\n            std::hint::spin_loop();\n        }\n    }\n",
    ),
    ("        \"1.0.0\"\n", "        \"1.1.0-spins\"\n"),
];

/// A constructor that, when it runs inside `system plugin-check` (it reads
/// its own command line), kills the check's parent: the daemon.
pub const KILLS_ITS_PARENT_IN_THE_CHECK: &[(&str, &str)] = &[
    (
        "const CALC_SUM: &str = \"calc_sum\";\n",
        "const CALC_SUM: &str = \"calc_sum\";\n\n#[used]\n#[unsafe(link_section = \".init_array\")]\nstatic KILL_THE_CHECKER: extern \"C\" fn() = {\n    extern \"C\" fn kill_the_checker() {\n        unsafe extern \"C\" {\n            fn getppid() -> i32;\n            fn kill(pid: i32, signal: i32) -> i32;\n        }\n        let cmdline = std::fs::read(\"/proc/self/cmdline\").unwrap_or_default();\n        if cmdline.windows(12).any(|word| word == b\"plugin-check\") {\n            // SAFETY: none; this copy attacks its checker on purpose.\n            unsafe { kill(getppid(), 9) };\n        }\n    }\n    kill_the_checker\n};\n",
    ),
    ("        \"1.0.0\"\n", "        \"1.1.0-kills-parent\"\n"),
];

/// Behaves in the first slice of a large sum, then does 200 million steps
/// of work (tens of ms of CPU, however busy the machine) in every later one
/// (only the first slice used to be timed).
pub const SPINS_AFTER_THE_FIRST_SLICE: &[(&str, &str)] = &[
    (
        "fn calc_sum_loop(mut from: i128, to: i128, mut acc: i128, budget: u64, used: &mut u64) -> Phase {\n",
        "fn calc_sum_loop(mut from: i128, to: i128, mut acc: i128, budget: u64, used: &mut u64) -> Phase {\n    if from > 1 && to > 1_000_000 {\n        let mut spun = 0u64;\n        for i in 0..200_000_000u64 {\n            spun = black_box(spun.wrapping_add(i));\n        }\n    }\n",
    ),
    ("        \"1.0.0\"\n", "        \"1.1.0-spins-later\"\n"),
];

/// Every slice of a large sum keeps 1 MiB it never frees (issue 23).
pub const LEAKS_A_MIB_PER_SLICE: &[(&str, &str)] = &[
    (
        "fn calc_sum_loop(mut from: i128, to: i128, mut acc: i128, budget: u64, used: &mut u64) -> Phase {\n",
        "fn calc_sum_loop(mut from: i128, to: i128, mut acc: i128, budget: u64, used: &mut u64) -> Phase {\n    if to > 1_000_000 {\n        std::mem::forget(black_box(Vec::<u8>::with_capacity(1 << 20)));\n    }\n",
    ),
    ("        \"1.0.0\"\n", "        \"1.1.0-leaks\"\n"),
];
