//! Hot upgrade of the math plugin: the command side builds the plugin from a
//! source tree; the daemon side loads a new version (or rolls back), reports
//! what changed and how long the switch took, and purges old versions.
//!
//! Loading itself (copies, ABI checks, self-test) is the code server's job;
//! running computations are never touched except by an explicit purge.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::code::{CodeError, PluginVersion};
use crate::node::Node;

/// What an upgrade or rollback did.
#[derive(Clone, Debug, Serialize)]
pub struct UpgradeReport {
    pub from: Option<String>,
    pub to: String,
    pub id: u32,
    pub sha256: String,
    /// From receiving the request to the new version serving.
    pub took_us: u64,
}

/// Loads the library at `path` as the new current version.
pub fn upgrade(node: &Node, path: &Path) -> Result<UpgradeReport, CodeError> {
    switch(node, |node| node.code.load(path))
}

/// Returns to the version that was current before this one.
pub fn rollback(node: &Node) -> Result<UpgradeReport, CodeError> {
    switch(node, |node| node.code.rollback())
}

fn switch(
    node: &Node,
    load: impl FnOnce(&Node) -> Result<Arc<PluginVersion>, CodeError>,
) -> Result<UpgradeReport, CodeError> {
    let started = Instant::now();
    let from = node
        .code
        .current()
        .map(|v| format!("v{} ({})", v.id(), v.version()));
    let to = load(node)?;
    let took_us = started.elapsed().as_micros() as u64;
    tracing::info!(
        "upgrade finished in {took_us} µs: {} -> v{} ({})",
        from.as_deref().unwrap_or("none"),
        to.id(),
        to.version()
    );
    Ok(UpgradeReport {
        from,
        to: format!("v{} ({})", to.id(), to.version()),
        id: to.id(),
        sha256: to.sha256().to_owned(),
        took_us,
    })
}

/// Kills every process still running a version other than the current one
/// (Erlang's code purge); their libraries unload as they end. Returns how
/// many were killed.
pub fn purge(node: &Node) -> usize {
    let current = node.code.current().map(|v| v.id());
    let killed = node
        .registry
        .plugin_users()
        .into_iter()
        .filter(|(_, id)| Some(*id) != current)
        .filter(|(pid, _)| node.registry.kill(*pid))
        .count();
    tracing::info!("code purge: killed {killed} process(es) running old code");
    killed
}

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
