//! Building the math plugin for an upgrade: finds the source workspace
//! (refusing one another user could have planted or changed), runs
//! `cargo build --release` on `math-plugin` in it, and returns the built
//! library, or the compiler's message if the build fails.
//!
//! It only builds; it must not load anything or talk to the daemon.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};
use nix::unistd::Uid;

/// The workspace to build the plugin from when no `--source` is given: the
/// nearest directory, from the current one upwards, with a
/// `math-plugin/Cargo.toml`, provided nobody else could have put it there
/// or changed it ([`check_trusted`]): building it runs its build scripts as
/// this user.
pub fn find_source() -> anyhow::Result<PathBuf> {
    let start = std::env::current_dir().context("reading the current directory")?;
    let tree = start
        .ancestors()
        .find(|dir| dir.join("math-plugin/Cargo.toml").is_file())
        .map(Path::to_path_buf)
        .with_context(|| {
            format!(
                "no math-plugin source found in {} or above; pass --source DIR",
                start.display()
            )
        })?;
    if let Err(reason) = check_trusted(&tree) {
        bail!(
            "refusing to build math-plugin found in {}: {reason:#}; its build scripts \
             would run as {}. Pass --source DIR to build a tree you trust",
            tree.display(),
            crate::os::home::user(Uid::effective().as_raw())
        );
    }
    Ok(tree)
}

/// The rule for a source tree found by searching (an explicit `--source` is
/// the user's choice and is not checked): the tree and its `math-plugin/`
/// are owned by the effective uid and not writable by group or others; every
/// directory above the tree, up to `/`, is owned by this user or root and
/// not writable by others unless it is sticky (like `/tmp`: others may not
/// rename or replace what is ours in it).
pub fn check_trusted(tree: &Path) -> anyhow::Result<()> {
    let me = Uid::effective().as_raw();
    let inspect = |dir: &Path| {
        std::fs::metadata(dir)
            .map(|m| (m.uid(), m.mode() & 0o7777))
            .with_context(|| format!("reading {}", dir.display()))
    };
    for dir in [tree.join("math-plugin"), tree.to_path_buf()] {
        let (owner, mode) = inspect(&dir)?;
        if owner != me {
            bail!(
                "{} is owned by {}, not by this user",
                dir.display(),
                crate::os::home::user(owner)
            );
        }
        if mode & 0o022 != 0 {
            bail!(
                "{} is writable by group or others (mode {mode:04o})",
                dir.display()
            );
        }
    }
    for dir in tree.ancestors().skip(1) {
        let (owner, mode) = inspect(dir)?;
        if owner != me && owner != 0 {
            bail!(
                "{} (above the tree) is owned by {}, who could replace the tree",
                dir.display(),
                crate::os::home::user(owner)
            );
        }
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            bail!(
                "{} (above the tree) is writable by group or others and not sticky (mode {mode:04o})",
                dir.display()
            );
        }
    }
    Ok(())
}

/// What every plugin build adds to the source tree's own rustflags (cargo
/// reads `.cargo/config.toml` from the directory it runs in, which is the
/// tree's): frame pointers, so that native stack samples can walk the
/// plugin's frames (docs/architecture.md, "Native stacks").
pub const PLUGIN_RUSTFLAGS: &str = "build.rustflags=[\"-C\", \"force-frame-pointers=yes\"]";

/// Builds `math-plugin` in release mode from the workspace at `source` and
/// returns the built library. A build error carries the compiler's message.
pub fn build_plugin(source: &Path) -> anyhow::Result<PathBuf> {
    let manifest = source.join("math-plugin/Cargo.toml");
    if !manifest.is_file() {
        bail!("{} does not exist", manifest.display());
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut child = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--message-format=json-render-diagnostics",
            "--config",
            PLUGIN_RUSTFLAGS,
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .current_dir(source)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running cargo")?;
    let stdout = child.stdout.take().context("cargo's output")?;
    let stderr = child.stderr.take().context("cargo's diagnostics")?;
    let diagnostics =
        std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let mut library = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo's output")?;
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if message["reason"] == "compiler-artifact" && message["target"]["name"] == "math_plugin" {
            library = message["filenames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|name| name.as_str())
                .find(|name| name.ends_with(std::env::consts::DLL_SUFFIX))
                .map(PathBuf::from);
        }
    }
    let status = child.wait().context("waiting for cargo")?;
    let diagnostics = diagnostics.join().unwrap_or_default();
    if !status.success() {
        bail!("building math-plugin failed:\n{diagnostics}");
    }
    library.context("cargo built math-plugin but reported no library")
}
