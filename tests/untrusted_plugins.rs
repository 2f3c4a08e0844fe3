//! Plugin code is untrusted: every candidate is checked in a child process
//! before the daemon loads it, and code that holds a scheduler is reported
//! while it runs (docs/reliability.md).
//!
//! Fixtures are edited copies of the real plugin source (one change each,
//! see tests/plugin_copies/). The real daemon, its admin socket, its
//! WebSocket, its log and /metrics; no mocks. It must not edit the
//! repository's sources.

use crate::plugin_copies;
use crate::support;
use std::path::Path;
use std::time::Duration;

use crate::support::{Client, Daemon, eventually, text};
use serde_json::Value;

/// Builds the fixtures in parallel (each is a small cdylib of its own).
fn build(fixtures: &[(&'static str, Edits)]) {
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

/// Text replacements in the plugin's source (see tests/plugin_copies/).
type Edits = &'static [(&'static str, &'static str)];

/// (fixture, edits, the reason the refusal must give)
const REFUSED: [(&str, Edits, &str); 8] = [
    (
        "one-step",
        plugin_copies::NAIVE_ONE_STEP,
        "failed the yield check: slice 1 of sum(1000000000000000) was still running after",
    ),
    (
        "spins-later",
        plugin_copies::SPINS_AFTER_THE_FIRST_SLICE,
        "failed the yield check: slice 2 of sum(1000000000000000) ",
    ),
    (
        "leaks",
        plugin_copies::LEAKS_A_MIB_PER_SLICE,
        "failed the memory check: sum(1000000000000000) kept 1.0 MiB per slice over 300 slices; a slice must not keep memory",
    ),
    (
        "kills-parent",
        plugin_copies::KILLS_ITS_PARENT_IN_THE_CHECK,
        "was refused: the plugin made a system call the check does not allow (kill)",
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
    let load = daemon.rpc("Load.set(10000)");
    assert_eq!(load["jobs"], 10000, "{load}");
    let mut browser = Client::connect(&daemon).await;

    for (index, (name, _, reason)) in REFUSED.into_iter().enumerate() {
        let jobs_before = daemon.metric("system_jobs_succeeded_total");
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
        let versions = daemon.rpc("Code.versions()");
        let versions = versions.as_array().expect("a list");
        assert_eq!(versions.len(), 1, "{name}: {versions:?}");
        assert_eq!(versions[0]["version"], "1.0.0", "{name}");
        assert_eq!(versions[0]["current"], true, "{name}");
        eventually(Duration::from_secs(10), "the load to carry on", || {
            daemon.metric("system_jobs_succeeded_total") > jobs_before
        });
        let log = daemon.log_containing(reason);
        assert!(
            log.contains("upgrade refused, still serving v1 (1.0.0)"),
            "{name}: the log says why:\n{log}"
        );
    }
    // Nothing of the refused libraries was left behind.
    assert_eq!(support::versioned_copies(daemon.home()), 1);
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
    for input in slices {
        // Every one of the 300 slices timed and its memory watched.
        assert_eq!(input["slices"], 300, "{verdict}");
        assert_eq!(input["reductions"], 20_000, "{verdict}");
        assert_eq!(input["kept_bytes"], 0, "{verdict}");
    }
    assert!(copy.exists(), "the check leaves the file alone");
}

/// The pid in a long-schedule line of the log: `… process sum <0.123.0> …`.
fn log_lines_of(log: &str, needle: &str) -> Vec<String> {
    log.lines()
        .filter(|line| line.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// `… for 1,503 ms …` → 1503.
fn ms_in(line: &str) -> u64 {
    let before_ms = line
        .split(" ms")
        .next()
        .unwrap_or_else(|| panic!("no ms in {line:?}"));
    let number = before_ms.rsplit(' ').next().unwrap_or("");
    number
        .replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("no number before ms in {line:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_holding_the_only_scheduler_is_reported_while_it_runs_and_when_it_ends() {
    build(&[("spins", plugin_copies::SPINS_ON_4242)]);
    let daemon = Daemon::start();
    let library = plugin_copies::copy_library("spins");
    let output = daemon.system(&["upgrade", "--plugin", path(&library)]);
    assert!(
        output.status.success(),
        "it passes every check: {}",
        text(&output)
    );
    let counted_before = daemon.metric("system_long_schedules_total");

    let mut browser = Client::connect(&daemon).await;
    browser.sum(1, "4242").await;

    // While it spins: the log names it, and the console still answers.
    let mut warning = String::new();
    eventually(Duration::from_secs(5), "the long-schedule warning", || {
        warning = log_lines_of(&daemon.log(), "long schedule: process sum ")
            .pop()
            .unwrap_or_default();
        !warning.is_empty()
    });
    assert!(warning.contains("started as Math.sum(4242)"), "{warning}");
    assert!(warning.contains("code v2 (1.1.0-spins)"), "{warning}");
    assert!(warning.contains("without yielding"), "{warning}");
    let top = {
        let home = daemon.home().to_path_buf();
        std::thread::spawn(move || support::system(&home, &["rpc", "--json", "Runtime.top()"]))
    };
    let events = daemon.rpc("Runtime.long_schedules()");
    let event = events
        .as_array()
        .and_then(|events| events.iter().rev().find(|e| e["name"] == "sum"))
        .unwrap_or_else(|| panic!("no sum in {events}"))
        .clone();
    assert_eq!(event["running"], true, "{event}");
    assert_eq!(event["plugin"], "v2 (1.1.0-spins)", "{event}");
    let pid = event["pid"].as_str().expect("a pid").to_owned();
    assert!(warning.contains(&pid), "{warning} names {pid}");
    let info = daemon.rpc(&format!("Process.info(pid(\"{pid}\"))"));
    assert_eq!(info["status"], "running", "{info}");
    assert_eq!(info["initial_call"], "Math.sum(4242)", "{info}");
    // Both forms, the talk's `Process.kill(pid, :kill)` too, say it waits.
    for script in [
        format!("Process.kill(pid(\"{pid}\"))"),
        format!("Process.kill(pid(\"{pid}\"), :kill)"),
    ] {
        let kill = daemon.rpc(&script);
        let kill = kill
            .as_str()
            .unwrap_or_else(|| panic!("{script}: not a sentence: {kill}"));
        assert!(
            kill.starts_with(&format!(
                "kill pending: {pid} has been inside one poll for "
            )),
            "{script}: {kill}"
        );
    }
    let top = top.join().expect("the top thread");
    assert!(top.status.success(), "{}", text(&top));
    let top: Value = serde_json::from_slice(&top.stdout).expect("JSON");
    assert_eq!(top[0]["pid"], pid, "the stuck process comes first: {top}");
    assert!(top[0]["stuck_ms"].as_i64().unwrap_or(0) >= 10, "{top}");

    // The poll finishes the whole sum (4242 reductions fit in one slice),
    // so the process ends normally before the kill could take effect; the
    // event closes with its total.
    let answer = browser.answer(1).await;
    assert_eq!(answer["status"], "done", "{answer}");
    assert_eq!(answer["result"], "8999403", "{answer}");
    let mut ended = String::new();
    eventually(Duration::from_secs(5), "the long schedule's end", || {
        ended = log_lines_of(
            &daemon.log(),
            &format!("long schedule ended: process sum {pid}"),
        )
        .pop()
        .unwrap_or_default();
        !ended.is_empty()
    });
    let total = ms_in(&ended);
    assert!((3_000..15_000).contains(&total), "{ended}");
    let events = daemon.rpc("Runtime.long_schedules()");
    let closed = events
        .as_array()
        .and_then(|events| events.iter().find(|e| e["pid"] == pid))
        .unwrap_or_else(|| panic!("{pid} not in {events}"));
    assert_eq!(closed["running"], false, "{closed}");
    assert_eq!(closed["ms"].as_u64(), Some(total), "{closed}");
    assert!(daemon.metric("system_long_schedules_total") > counted_before);

    // And the daemon serves as before.
    browser.sum(2, "5").await;
    assert_eq!(browser.answer(2).await["result"], "15");
    assert!(daemon.is_alive());
}

#[test]
fn a_faulty_plugin_given_at_start_is_refused_before_the_daemon_serves() {
    build(&[("null-write", plugin_copies::NULL_WRITE_IN_VALIDATION)]);
    let home = support::home();
    let library = plugin_copies::copy_library("null-write");
    let output = std::process::Command::new(support::binary())
        .arg("--home")
        .arg(home.path())
        .args(["start", "--http", "127.0.0.1:0", "--plugin", path(&library)])
        .env_remove("SYSTEM_HOME")
        .env_remove("SYSTEM_PLUGIN")
        .output()
        .expect("the system binary runs");
    let said = text(&output);
    assert!(!output.status.success(), "it must not start: {said}");
    assert!(said.contains("cannot load the math plugin"), "{said}");
    assert!(said.contains("killed by SIGSEGV"), "{said}");
    assert!(
        !home.path().join("system.pid").exists(),
        "no daemon left behind: {said}"
    );
}
