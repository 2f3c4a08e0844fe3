//! Memory is a process's own: seen per process (`Process.info`,
//! `Runtime.top(:memory)`, `/metrics`), bounded per process (a sum over its
//! limit is killed alone, with the reason on the page and in the log), and
//! bounded for the node (above its watermark the biggest sum goes first).
//!
//! The leaking plugin is the real plugin's source with one change (see
//! tests/plugin_copies/): no check can guess the input it leaks on. The real
//! daemon, its WebSocket, admin socket, log and /metrics; no mocks.

use crate::plugin_copies;
use std::path::Path;
use std::time::Duration;

use crate::support::{Client, Daemon, eventually, text};

/// A sum of `7_777_777_777_XYZ` keeps 1 MiB more in its state in each of
/// its first XYZ slices (so `sum(7777777777777)` would keep 777 MiB), freed
/// only with the state; every other input behaves.
const KEEPS_MEMORY_ON_7777777777XYZ: &[(&str, &str)] = &[
    (
        "pub struct SumState {\n    phase: Phase,\n}",
        "pub struct SumState {\n    phase: Phase,\n    kept: Vec<Vec<u8>>,\n}",
    ),
    (
        "            phase: Phase::Entry { n: i128::from(n) },\n",
        "            phase: Phase::Entry { n: i128::from(n) },\n            kept: Vec::new(),\n",
    ),
    (
        "    pub fn run(&mut self, budget: u64) -> Step {\n",
        "    pub fn run(&mut self, budget: u64) -> Step {\n        if let Phase::Looping { from, to, .. } = self.phase\n            && to / 1000 == 7_777_777_777\n            && from < (to % 1000) * 20_000\n        {\n            self.kept.push(vec![1u8; 1 << 20]);\n        }\n",
    ),
];

const MIB: f64 = 1_048_576.0;

/// Builds the leaking copy once per test binary run and upgrades `daemon` to it.
fn upgrade_to_the_leaking_plugin(daemon: &Daemon) {
    let source = plugin_copies::plugin_copy("keeps-memory", KEEPS_MEMORY_ON_7777777777XYZ);
    plugin_copies::prebuild("keeps-memory", &source);
    let library = plugin_copies::copy_library("keeps-memory");
    let output = daemon.system(&["upgrade", "--plugin", path(&library)]);
    assert!(
        output.status.success(),
        "no check can guess the input it leaks on: {}",
        text(&output)
    );
}

/// The daemon's resident anonymous memory (`RssAnon` of /proc/PID/status), in bytes.
fn anonymous_resident(daemon: &Daemon) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid))
        .expect("the daemon's /proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("RssAnon:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb * 1024.0)
        .expect("RssAnon in /proc/PID/status")
}

fn path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sum_over_its_limit_is_killed_alone_and_the_node_carries_on() {
    // The default limit: 256 MiB per sum.
    let daemon = Daemon::start();
    upgrade_to_the_leaking_plugin(&daemon);
    assert_eq!(daemon.rpc("Load.set(10000)")["jobs"], 10000);
    let mut browser = Client::connect(&daemon).await;
    let mut other = Client::connect(&daemon).await;
    let anonymous_before = anonymous_resident(&daemon);

    browser.sum(1, "7777777777777").await;
    let pid = browser.calculating(1).await["pid"]
        .as_str()
        .expect("calculating names the pid")
        .to_owned();
    let answer = browser.answer(1).await;
    assert_eq!(answer["status"], "error", "{answer}");
    let reason = answer["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("memory_limit: held 25") && reason.ends_with("of a 256 MiB limit"),
        "{answer}"
    );

    // Killed alone: the same node, the same WebSockets, the load going on.
    browser.sum(2, "5").await;
    assert_eq!(browser.answer(2).await["result"], "15");
    other.sum(1, "6").await;
    assert_eq!(other.answer(1).await["result"], "21");
    let pid_now = daemon.system(&["pid"]);
    assert_eq!(text(&pid_now).trim(), daemon.pid.to_string());
    let jobs = daemon.metric("system_jobs_succeeded_total");
    eventually(Duration::from_secs(10), "the load to carry on", || {
        daemon.metric("system_jobs_succeeded_total") > jobs
    });
    assert_eq!(daemon.metric("system_memory_limit_kills_total"), 1.0);
    // One line says who, how much, and on which code.
    let line = daemon.log_containing("memory limit: process sum");
    let line = line
        .lines()
        .find(|line| line.contains("memory limit: process sum"))
        .unwrap_or_default();
    assert!(
        line.contains(&pid) && line.contains("Math.sum(7777777777777) on code v2"),
        "{line}"
    );
    assert!(line.contains("over its limit of 256 MiB"), "{line}");
    // Its pages go back to the system (its anonymous pages: the file pages
    // of the binary's debug info, mapped once a native stack is symbolised,
    // count in the RSS too and are not the sum's).
    eventually(
        Duration::from_secs(10),
        "the node's memory to fall back",
        || anonymous_resident(&daemon) < anonymous_before + 64.0 * MIB,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_sum_holds_is_seen_in_info_top_and_metrics() {
    let daemon = Daemon::start();
    upgrade_to_the_leaking_plugin(&daemon);
    let mut browser = Client::connect(&daemon).await;
    // 100 MiB, kept while it goes on summing.
    browser.sum(1, "7777777777100").await;
    let pid = browser.calculating(1).await["pid"]
        .as_str()
        .expect("calculating names the pid")
        .to_owned();
    let info = |key: &str| daemon.rpc(&format!("Process.info(pid(\"{pid}\"), :{key})"));
    // (Its first slice starts the loop: 99 slices keep memory.)
    eventually(Duration::from_secs(10), "the sum to hold 99 MiB", || {
        info("memory").as_f64().unwrap_or(0.0) >= 99.0 * MIB
    });
    let memory = info("memory").as_f64().expect("memory is an integer");
    assert!(memory < 101.0 * MIB, "it keeps 100 MiB, not more: {memory}");
    assert!(info("allocated").as_f64().unwrap_or(0.0) >= memory);
    assert_eq!(info("memory_limit").as_f64(), Some(256.0 * MIB));

    let top = daemon.rpc("Runtime.top(:memory)");
    assert_eq!(top[0]["name"], "sum", "{top}");
    assert_eq!(top[0]["pid"], pid.as_str(), "{top}");
    let by_name = daemon.metric("system_process_memory_bytes{name=\"sum\"}");
    assert!(by_name >= 99.0 * MIB, "{by_name}");
    let breakdown = daemon.rpc("System.info().memory");
    assert!(breakdown["by_name"]["sum"].as_f64().unwrap_or(0.0) >= 99.0 * MIB);
    assert!(breakdown["processes"].as_f64() <= breakdown["allocated"].as_f64());

    // Killed, it holds nothing more.
    daemon.rpc(&format!("Process.kill(pid(\"{pid}\"), :kill)"));
    assert_eq!(browser.answer(1).await["reason"], "killed");
    eventually(Duration::from_secs(5), "sums to hold nothing", || {
        !daemon
            .get("/metrics")
            .1
            .contains("system_process_memory_bytes{name=\"sum\"}")
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_watermark_the_biggest_sum_is_killed_and_the_others_go_on() {
    // No limit per sum: only the node's watermark bounds them.
    let daemon = Daemon::start_with(&["--max-process-memory", "0", "--max-memory", "150MiB"]);
    upgrade_to_the_leaking_plugin(&daemon);
    let mut browser = Client::connect(&daemon).await;
    // 100 MiB fit; a second sum keeping 60 more takes the node over 150
    // MiB while the first is still the biggest.
    browser.sum(1, "7777777777100").await;
    let biggest = browser.calculating(1).await["pid"]
        .as_str()
        .expect("a pid")
        .to_owned();
    eventually(
        Duration::from_secs(10),
        "the first sum to hold 99 MiB",
        || {
            daemon
                .rpc(&format!("Process.info(pid(\"{biggest}\"), :memory)"))
                .as_f64()
                .unwrap_or(0.0)
                >= 99.0 * MIB
        },
    );
    browser.sum(2, "7777777777060").await;
    let other = browser.calculating(2).await["pid"]
        .as_str()
        .expect("a pid")
        .to_owned();
    let answer = browser.answer(1).await;
    let reason = answer["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("memory_pressure: the node held")
            && reason.contains("150 MiB watermark"),
        "{answer}"
    );
    assert_eq!(daemon.metric("system_memory_pressure_kills_total"), 1.0);
    // The other keeps its 60 MiB and goes on: the node is under its mark.
    eventually(
        Duration::from_secs(10),
        "the other sum to hold 59 MiB",
        || {
            daemon
                .rpc(&format!("Process.info(pid(\"{other}\"), :memory)"))
                .as_f64()
                .unwrap_or(0.0)
                >= 59.0 * MIB
        },
    );
    let status = daemon.rpc(&format!("Process.info(pid(\"{other}\"), :status)"));
    assert!(status.is_string(), "sum {other} goes on: {status}");
    assert_eq!(daemon.metric("system_memory_pressure_kills_total"), 1.0);
    let log = daemon.log_containing("memory pressure: killed process sum");
    assert!(log.contains(&biggest), "{log}");
    browser.sum(4, "5").await;
    assert_eq!(browser.answer(4).await["result"], "15");
}
