//! Building the math plugin for an upgrade: finds the source workspace and
//! runs `cargo build --release` on `math-plugin` in it, returning the built
//! library, or the compiler's message if the build fails.
//!
//! It only builds; it must not load anything or talk to the daemon.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

/// The workspace to build the plugin from: the nearest directory, from the
/// current one upwards, with a `math-plugin/Cargo.toml`.
pub fn find_source() -> anyhow::Result<PathBuf> {
    let start = std::env::current_dir().context("reading the current directory")?;
    start
        .ancestors()
        .find(|dir| dir.join("math-plugin/Cargo.toml").is_file())
        .map(Path::to_path_buf)
        .with_context(|| {
            format!(
                "no math-plugin source found in {} or above; pass --source DIR",
                start.display()
            )
        })
}

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
        ])
        .arg("--manifest-path")
        .arg(&manifest)
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
