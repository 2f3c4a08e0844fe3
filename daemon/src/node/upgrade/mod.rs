//! Hot upgrade of the math plugin. The daemon side (this module) switches to
//! a new library or back to the previous one, reports what changed and how
//! long the switch took, and purges old versions; `build` builds the plugin
//! from a source tree; `command` is `system upgrade`, the client side.
//!
//! Loading itself (copies, ABI checks, self-test) is the code server's job.
//! Running computations are never touched except by an explicit purge, and
//! nothing here runs on a scheduler thread (the admin session's thread calls it).

pub mod build;
pub mod command;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::node::Node;
use crate::node::code::CodeError;

pub use build::{build_plugin, find_source};

/// What an upgrade asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Load this library file as the new current version.
    Plugin(PathBuf),
    /// Load again the version that was current before this one.
    Rollback,
}

/// What an upgrade or rollback did.
#[derive(Clone, Debug)]
pub struct UpgradeReport {
    /// The version replaced, e.g. `v1 (1.0.0)`; `None` if none was loaded.
    pub from: Option<String>,
    /// The new current version, e.g. `v2 (1.1.0)`.
    pub to: String,
    /// The new version's id (1, 2, 3… in load order).
    pub id: u32,
    /// The new library file's SHA-256, lowercase hex.
    pub sha256: String,
    /// From receiving the request to the new version serving, in microseconds.
    pub took_us: u64,
}

/// Switches to `target`. `received` is when the daemon received the request:
/// the reported time runs from there to the new version serving. A failure
/// changes nothing: the current version keeps serving.
pub fn switch(node: &Node, target: &Target, received: Instant) -> Result<UpgradeReport, CodeError> {
    // The code server serialises loads and names the version each one
    // really replaced, so two upgrades at once report consistently.
    let switched = match target {
        Target::Plugin(path) => node.code.switch_to(path),
        Target::Rollback => node.code.switch_back(),
    };
    let (from, to) = match switched {
        Ok(switch) => (switch.replaced, switch.current),
        Err(error) => {
            tracing::warn!(
                "upgrade refused, still serving {}: {error}",
                node.code
                    .current()
                    .map_or_else(|| "no version".to_owned(), |v| v.to_string())
            );
            return Err(error);
        }
    };
    let took_us = u64::try_from(received.elapsed().as_micros()).unwrap_or(u64::MAX);
    tracing::info!(
        "upgrade finished in {took_us} µs: {} -> {}",
        from.as_deref().unwrap_or("none"),
        to
    );
    Ok(UpgradeReport {
        from,
        to: to.to_string(),
        id: to.id(),
        sha256: to.sha256().to_owned(),
        took_us,
    })
}

/// Kills every process still running a version other than the current one
/// (Erlang's code purge); their libraries unload as they end. Returns how
/// many were killed.
fn purge(node: &Node) -> usize {
    let current = node.code.current().map(|v| v.id());
    let killed = node
        .registry
        .code_users()
        .into_iter()
        .filter(|(_, id)| Some(*id) != current)
        .filter(|(pid, _)| node.registry.kill(*pid))
        .count();
    tracing::info!("code purge: killed {killed} process(es) running old code");
    killed
}

/// [`purge`], then waits (at most `patience`, blocking this thread — never
/// call it on a scheduler) until only the current version is loaded and
/// the old ones are unloaded (their copies removed).
/// Returns how many processes were killed and whether old code remains.
pub fn purge_and_wait(node: &Node, patience: Duration) -> (usize, bool) {
    let killed = purge(node);
    let deadline = Instant::now() + patience;
    loop {
        let old_left = node.code.versions().iter().any(|v| !v.current);
        if !old_left {
            node.code.settle();
        }
        if !old_left || Instant::now() >= deadline {
            return (killed, old_left);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
