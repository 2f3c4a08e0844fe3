//! Native stacks (issue 25): where a stuck process is (`Process.info(pid,
//! :current_stacktrace)` and the long-schedule report name the function it
//! spins in, which no recorded frame names), where a busy one spends its
//! time (`Runtime.profile`), and that sampling many times under load leaves
//! the daemon serving.
//!
//! The real daemon, its admin socket (`system rpc`), its WebSocket and its
//! log; the misbehaving plugin is an edited copy of the real source (one
//! change, below). It must not edit the repository's sources.

use crate::plugin_copies;
use std::time::Duration;

use crate::support::{Client, Daemon, eventually, text};
use serde_json::Value;

/// For 4242, spins 4 s in a helper of its own before the sum's first yield
/// (checking the clock every few thousand pauses, so that nearly every
/// moment of the spin is in the helper itself). No recorded frame names
/// `hold_the_scheduler`: only a native stack can.
const SPINS_IN_A_HELPER: &[(&str, &str)] = &[
    (
        "    if n == 13 {\n        panic!(\"error\");\n    }\n",
        "    if n == 4242 {\n        hold_the_scheduler();\n    }\n",
    ),
    (
        "/// `calc_sum(n)`: the entry of the computation (one reduction).\n",
        "#[inline(never)]\nfn hold_the_scheduler() {\n    let start = std::time::Instant::now();\n    while start.elapsed() < std::time::Duration::from_secs(4) {\n        for _ in 0..5_000 {\n            std::hint::spin_loop();\n        }\n    }\n}\n\n/// `calc_sum(n)`: the entry of the computation (one reduction).\n",
    ),
    ("        \"1.0.0\"\n", "        \"1.1.0-spins-in-helper\"\n"),
];

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
        .iter()
        .map(|item| item.as_str().unwrap_or_default().to_owned())
        .collect()
}

/// `1,012 samples of …` → 1012.
fn samples_in(profile: &str) -> u64 {
    profile
        .split(" samples")
        .next()
        .and_then(|count| count.replace(',', "").parse().ok())
        .unwrap_or_else(|| panic!("no sample count in {profile:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_process_shows_the_function_it_spins_in() {
    let source = plugin_copies::plugin_copy("spins-in-helper", SPINS_IN_A_HELPER);
    plugin_copies::prebuild("spins-in-helper", &source);
    // Two schedulers: the page's WebSocket is served while one is held.
    let daemon = Daemon::start_with(&["--schedulers", "2"]);
    let library = plugin_copies::copy_library("spins-in-helper");
    let upgrade = daemon.system(&[
        "upgrade",
        "--plugin",
        library.to_str().expect("a UTF-8 path"),
    ]);
    assert!(upgrade.status.success(), "{}", text(&upgrade));

    let mut browser = Client::connect(&daemon).await;
    let mut page = Client::connect(&daemon).await;
    page.send(serde_json::json!({"type": "subscribe", "topic": "top"}))
        .await;
    browser.sum(1, "4242").await;
    let pid = browser.calculating(1).await["pid"]
        .as_str()
        .expect("a pid")
        .to_owned();

    // The long-schedule report, tens of ms into the spin, carries a sample.
    let log = daemon.log_containing("native: math_plugin::hold_the_scheduler");
    let report = log
        .split("long schedule: process sum ")
        .nth(1)
        .unwrap_or_else(|| panic!("no long-schedule report:\n{log}"));
    assert!(report.starts_with(&pid), "{report}");

    // The console, while it still spins: the native frames, innermost
    // first, then the recorded ones as before.
    let frames = strings(&daemon.rpc(&format!(
        "Process.info(pid(\"{pid}\"), :current_stacktrace)"
    )));
    let helper = frames
        .iter()
        .position(|frame| frame.starts_with("math_plugin::hold_the_scheduler"))
        .unwrap_or_else(|| panic!("the helper is not named: {frames:#?}"));
    assert!(
        frames[helper].contains("math-plugin/src/lib.rs:"),
        "with its file and line: {frames:#?}"
    );
    assert_eq!(
        frames.last().map(String::as_str),
        Some("Math.sum(4242)"),
        "the recorded frames follow: {frames:#?}"
    );
    assert!(
        !frames
            .iter()
            .any(|frame| frame.contains("tokio::") || frame.contains("Instrumented")),
        "the runtime's and tokio's frames below the poll are folded away: {frames:#?}"
    );

    let events = daemon.rpc("Runtime.long_schedules()");
    let event = events
        .as_array()
        .and_then(|events| events.iter().find(|event| event["pid"] == pid.as_str()))
        .unwrap_or_else(|| panic!("{pid} not in {events}"));
    assert!(
        strings(&event["stack"])
            .iter()
            .any(|frame| frame.starts_with("math_plugin::hold_the_scheduler")),
        "{event}"
    );

    // /top's stuck row carries the same sample (the page shows it in the
    // row's tooltip).
    let stuck = page
        .expect(|message| {
            message["type"] == "top"
                && message["rows"].as_array().is_some_and(|rows| {
                    rows.iter()
                        .any(|row| row["pid"] == pid.as_str() && row["stuck_ms"].is_number())
                })
        })
        .await;
    let row = stuck["rows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|row| row["pid"] == pid.as_str()))
        .cloned()
        .unwrap_or_default();
    assert!(
        strings(&row["stuck_stack"])
            .iter()
            .any(|frame| frame.starts_with("math_plugin::hold_the_scheduler")),
        "{row}"
    );

    // Once it has returned, the process is gone and the daemon serves.
    assert_eq!(browser.answer(1).await["status"], "done");
    assert_eq!(
        daemon.rpc(&format!(
            "Process.info(pid(\"{pid}\"), :current_stacktrace)"
        )),
        Value::Null
    );
    browser.sum(2, "5").await;
    assert_eq!(browser.answer(2).await["result"], "15");
}

/// The real-time signals above `SIGRTMIN` (glibc keeps 32 and 33, so 35
/// and up) that the daemon catches, from `/proc/PID/status`'s `SigCgt`.
fn caught_realtime_signals(daemon: &Daemon) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid))
        .expect("the daemon's /proc status");
    let caught = status
        .lines()
        .find_map(|line| line.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .expect("a SigCgt line");
    // Bit n-1 is signal n: signals 35..=64.
    caught & !((1u64 << 34) - 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_names_the_loop_a_sum_spends_its_time_in() {
    let daemon = Daemon::start();
    // Off by default: no handler until a sample is asked for (unless the
    // long-schedule monitor took one, which the log would say).
    if !daemon.log().contains("long schedule:") {
        assert_eq!(caught_realtime_signals(&daemon), 0);
    }
    let mut browser = Client::connect(&daemon).await;
    browser.sum(1, "-1").await;
    let pid = browser.calculating(1).await["pid"]
        .as_str()
        .expect("a pid")
        .to_owned();
    // Load workers run beside it: they must never show in its profile.
    daemon.rpc("Load.set(100)");

    let profile = daemon.rpc(&format!("Runtime.profile(pid(\"{pid}\"))"));
    let profile = profile.as_str().expect("a text");
    eprintln!("{profile}");
    assert_ne!(caught_realtime_signals(&daemon), 0, "installed once asked");
    assert!(samples_in(profile) >= 100, "{profile}");
    let hottest = profile.lines().nth(1).unwrap_or_default();
    assert!(
        hottest.contains("math_plugin::calc_sum_loop") && hottest.contains(" % "),
        "{profile}"
    );

    let folded = daemon.rpc(&format!(
        "Runtime.profile(pid(\"{pid}\"), #{{folded: true, ms: 500}})"
    ));
    let folded = folded.as_str().expect("a text");
    let lines: Vec<&str> = folded.lines().collect();
    assert!(!lines.is_empty(), "{folded}");
    for line in &lines {
        let (stack, count) = line.rsplit_once(' ').expect("`stack count`");
        assert!(count.parse::<u64>().is_ok(), "{line}");
        assert!(!stack.contains("load::"), "only the sum is sampled: {line}");
        // What the sum's own code calls into tokio (a yield) stays; what
        // polls it (the runtime's wrapper, tokio's worker) is folded away.
        assert!(
            !stack.contains("Instrumented") && !stack.contains("tokio::runtime::task::harness"),
            "folded: {line}"
        );
    }
    assert!(folded.contains("math_plugin::calc_sum_loop"), "{folded}");
    assert!(daemon.is_alive());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_samples_under_load_leave_the_daemon_serving() {
    let daemon = Daemon::start();
    daemon.rpc("Load.set(10000)");
    let mut browser = Client::connect(&daemon).await;
    browser.sum(1, "-1").await;
    let pid = browser.calculating(1).await["pid"]
        .as_str()
        .expect("a pid")
        .to_owned();

    let mut taken = 0;
    let mut profiles = 0;
    while taken < 2_000 {
        let profile = daemon.rpc(&format!("Runtime.profile(pid(\"{pid}\"), 2000)"));
        taken += samples_in(profile.as_str().expect("a text"));
        profiles += 1;
        assert!(
            profiles <= 30,
            "only {taken} samples in {profiles} profiles"
        );
    }

    // A process that ends while it is profiled, and one that has ended.
    browser.sum(2, "3000000").await;
    let short = browser.calculating(2).await["pid"]
        .as_str()
        .expect("a pid")
        .to_owned();
    let during = daemon.rpc(&format!("Runtime.profile(pid(\"{short}\"), 30000)"));
    assert!(during.is_string() || during.is_null(), "{during}");
    assert_eq!(browser.answer(2).await["status"], "done");
    assert_eq!(
        daemon.rpc(&format!("Runtime.profile(pid(\"{short}\"))")),
        Value::Null
    );
    assert_eq!(
        daemon.rpc(&format!(
            "Process.info(pid(\"{short}\"), :current_stacktrace)"
        )),
        Value::Null
    );

    // The daemon serves and the load holds.
    browser.sum(3, "5").await;
    assert_eq!(browser.answer(3).await["result"], "15");
    eventually(Duration::from_secs(10), "10,000 workers", || {
        daemon.rpc("Load.get()")["workers"] == 10_000
    });
    assert!(daemon.is_alive());
    daemon.rpc("Load.set(0)");
}
