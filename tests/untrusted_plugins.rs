//! Plugin code is untrusted: every candidate is checked in a child process
//! before the daemon loads it, and code that holds a scheduler is reported
//! while it runs (docs/reliability.md).
//!
//! Fixtures are edited copies of the real plugin source (one change each,
//! see tests/plugin_copies/). The real daemon, its admin socket, its
//! WebSocket, its log and /metrics; no mocks. It must not edit the
//! repository's sources.

mod plugin_copies;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Client, Daemon, text};

/// `system rpc --json SCRIPT`: the script's value.
fn rpc(daemon: &Daemon, script: &str) -> Value {
    let output = daemon.system(&["rpc", "--json", script]);
    assert!(output.status.success(), "{script}: {}", text(&output));
    serde_json::from_slice(&output.stdout).expect("rpc --json prints JSON")
}

/// One value of `/metrics`.
fn metric(daemon: &Daemon, name: &str) -> f64 {
    let (status, body) = daemon.get("/metrics");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{body}"))
}

/// Waits (at most `patience`) until `done` holds; panics with `what` otherwise.
fn eventually(patience: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Builds the fixtures in parallel (each is a small cdylib of its own).
fn build(fixtures: &[(&'static str, &'static [(&'static str, &'static str)])]) {
    let builds: Vec<_> = fixtures
        .iter()
        .map(|&(name, edits)| {
            let source = plugin_copies::plugin_copy(name, edits);
            std::thread::spawn(move || plugin_copies::prebuild(name, &source))
        })
        .collect();
    for build in builds {
        build.join().expect("a fixture build");
    }
}

fn path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// (fixture, edits, the reason the refusal must give)
const REFUSED: [(&str, &[(&str, &str)], &str); 5] = [
    (
        "one-step",
        plugin_copies::NAIVE_ONE_STEP,
        "failed the yield check: a slice of sum(1000000000000000) was still running after",
    ),
    (
        "ignores-budget",
        plugin_copies::IGNORES_BUDGET,
        "for a budget of 20,000 reductions; plugin code must yield",
    ),
    (
        "null-write",
        plugin_copies::NULL_WRITE_IN_VALIDATION,
        "the plugin crashed the check process: killed by SIGSEGV",
    ),
    (
        "aborts",
        plugin_copies::ABORTS_IN_SUM,
        "the plugin crashed the check process: killed by SIGABRT",
    ),
    (
        "loops",
        plugin_copies::LOOPS_IN_VALIDATION,
        "the check did not return within 5 s (killed)",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulty_plugins_are_refused_by_a_child_and_the_daemon_carries_on() {
    let fixtures: Vec<_> = REFUSED
        .iter()
        .map(|&(name, edits, _)| (name, edits))
        .collect();
    build(&fixtures);
    let daemon = Daemon::start();
    let load = rpc(&daemon, "Load.set(10000)");
    assert_eq!(load["jobs"], 10000, "{load}");
    let mut browser = Client::connect(&daemon).await;

    for (index, (name, _, reason)) in REFUSED.into_iter().enumerate() {
        let jobs_before = metric(&daemon, "system_jobs_succeeded_total");
        let library = plugin_copies::copy_library(name);
        let output = daemon.system(&["upgrade", "--plugin", path(&library)]);
        let said = text(&output);
        assert!(
            !output.status.success(),
            "{name}: the upgrade should fail: {said}"
        );
        assert!(said.contains(reason), "{name}: {reason:?} not in {said:?}");

        // The same daemon, the same WebSocket, the same code, the load going on.
        assert!(daemon.is_alive(), "{name} took the daemon down");
        let pid = daemon.system(&["pid"]);
        assert_eq!(
            String::from_utf8_lossy(&pid.stdout).trim(),
            daemon.pid.to_string(),
            "{name}"
        );
        let id = index as i64 + 1;
        browser.sum(id, "5").await;
        assert_eq!(browser.answer(id).await["result"], "15", "{name}");
        let versions = rpc(&daemon, "Code.versions()");
        let versions = versions.as_array().expect("a list");
        assert_eq!(versions.len(), 1, "{name}: {versions:?}");
        assert_eq!(versions[0]["version"], "1.0.0", "{name}");
        assert_eq!(versions[0]["current"], true, "{name}");
        eventually(Duration::from_secs(10), "the load to carry on", || {
            metric(&daemon, "system_jobs_succeeded_total") > jobs_before
        });
        let log = daemon.log();
        assert!(
            log.contains("upgrade refused, still serving v1 (1.0.0)") && log.contains(reason),
            "{name}: the log says why:\n{log}"
        );
    }
    // Nothing of the refused libraries was left behind.
    let copies = std::fs::read_dir(daemon.home().join("plugins"))
        .expect("the plugins directory")
        .count();
    assert_eq!(copies, 1);
}

#[test]
fn plugin_check_passes_the_shipped_plugin_and_reports_its_slices() {
    let library = tempfile::tempdir().expect("a temporary directory");
    let copy = library.path().join("plugin.so");
    std::fs::copy(support::plugin(), &copy).expect("copy the plugin");
    let output = std::process::Command::new(support::binary())
        .args(["plugin-check", path(&copy)])
        .output()
        .expect("the system binary runs");
    assert!(output.status.success(), "{}", text(&output));
    let verdict: Value = serde_json::from_slice(&output.stdout).expect("one JSON line on stdout");
    assert_eq!(verdict["verdict"], "passed", "{verdict}");
    assert_eq!(verdict["version"], "1.0.0", "{verdict}");
    let slices = verdict["slices"].as_array().expect("slices");
    let inputs: Vec<i64> = slices.iter().filter_map(|s| s["n"].as_i64()).collect();
    assert_eq!(inputs, [1_000_000_000_000_000, -1], "{verdict}");
    for slice in slices {
        assert_eq!(slice["reductions"], 20_000, "{verdict}");
    }
    assert!(copy.exists(), "the check leaves the file alone");
}
