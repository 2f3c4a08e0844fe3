//! Hot upgrade end to end: `system upgrade` against the real daemon — a
//! fixed plugin built from an edited copy of the source, prebuilt libraries,
//! rollback, purge, two upgrades at once, and every way an upgrade can fail
//! (each must leave the daemon serving the version it had, and say why).
//!
//! No mocks: the real binary, its admin socket, its WebSocket and its log.
//! It must not edit the repository's sources: edited copies live under
//! `target/plugin-copies/`.

use crate::plugin_copies;
use crate::support;
use std::path::Path;

use crate::support::{Client, Daemon, text};
use serde_json::Value;

/// `system rpc --json SCRIPT`: the script's value.
fn rpc(daemon: &Daemon, script: &str) -> Value {
    let output = daemon.system(&["rpc", "--json", script]);
    assert!(output.status.success(), "{script}: {}", text(&output));
    serde_json::from_slice(&output.stdout).expect("rpc --json prints JSON")
}

/// The current plugin version's id, as `System.info()` reports it.
fn current_id(daemon: &Daemon) -> i64 {
    rpc(daemon, "System.info().plugin_id")
        .as_i64()
        .expect("a plugin is loaded")
}

/// The switch time the command printed, in microseconds.
fn switch_us(said: &str) -> u64 {
    let line = said
        .lines()
        .find_map(|line| line.strip_prefix("switch took "))
        .unwrap_or_else(|| panic!("no switch time in {said:?}"));
    let us = match line.split_once('(') {
        Some((_, rest)) => rest.trim_end_matches(')'),
        None => line,
    };
    us.trim_end_matches(" µs")
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("unreadable switch time {line:?}"))
}

/// Asserts a failed upgrade: non-zero exit, `reason` in the message, and the
/// daemon still serving version `serving` and answering sums.
async fn assert_refused(
    daemon: &Daemon,
    output: &std::process::Output,
    reason: &str,
    serving: i64,
) {
    let said = text(output);
    assert!(!output.status.success(), "the upgrade should fail: {said}");
    assert!(said.contains(reason), "{reason:?} not in {said:?}");
    assert!(!said.contains("finished successfully"), "{said}");
    assert_eq!(current_id(daemon), serving, "{said}");
    let mut browser = Client::connect(daemon).await;
    browser.sum(1, "5").await;
    assert_eq!(browser.answer(1).await["result"], "15");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_switches_new_work_while_old_work_finishes_on_old_code() {
    let source = plugin_copies::plugin_copy("fixed", plugin_copies::DEMO_FIX);
    let daemon = Daemon::start();
    let mut browser = Client::connect(&daemon).await;
    // Started on v1 and never finishing: it must keep running v1's code.
    browser.sum(1, "-1").await;
    let old_pid = browser.calculating(1).await["pid"]
        .as_str()
        .expect("a pid")
        .to_owned();

    let output = plugin_copies::upgrade_from_copy(daemon.home(), "fixed", &source);
    let said = text(&output);
    assert!(output.status.success(), "{said}");
    assert!(said.contains("Upgrade finished successfully."), "{said}");
    assert!(said.contains("v1 (1.0.0) -> v2 (1.1.0)"), "{said}");
    let took = switch_us(&said);
    // Reported, not judged: the switch's speed is the benchmark's (upgrade phase).
    println!("switch time (debug daemon, under test load): {took} µs");

    let log = daemon.log_containing("code upgrade: ");
    let upgrade_line = log
        .lines()
        .find(|line| line.contains("code upgrade: math_plugin v1 (1.0.0) -> v2 (1.1.0), sha256 "))
        .unwrap_or_else(|| panic!("no upgrade in the log:\n{log}"));
    let sha = upgrade_line
        .split("sha256 ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or("");
    assert_eq!(sha.len(), 64, "{upgrade_line}");
    assert!(said.contains(sha), "the command shows the hash too: {said}");

    // New work runs the new code at once.
    browser.sum(2, "13").await;
    assert_eq!(browser.answer(2).await["result"], "91");
    browser.sum(3, "-1").await;
    let invalid = browser.answer(3).await;
    assert_eq!(invalid["status"], "invalid", "{invalid}");
    assert_eq!(invalid["reason"], "must be a positive integer", "{invalid}");
    browser.sum(4, "999999999").await;
    assert_eq!(browser.answer(4).await["result"], "499999999500000000");

    // The old computation still runs, on v1.
    let script = format!("Process.info(pid(\"{old_pid}\")).plugin_version");
    assert_eq!(rpc(&daemon, &script), 1);
    let versions = rpc(&daemon, "Code.versions()");
    let summary: Vec<(i64, bool, i64)> = versions
        .as_array()
        .expect("a list")
        .iter()
        .map(|v| {
            (
                v["id"].as_i64().unwrap_or(0),
                v["current"].as_bool().unwrap_or(false),
                v["computations"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(summary, [(1, false, 1), (2, true, 0)], "{versions}");
    assert_eq!(versions[1]["version"], "1.1.0");
    let old_copy = std::path::PathBuf::from(versions[0]["path"].as_str().expect("a path"));
    assert!(old_copy.exists(), "{versions}");

    // Purge kills it; its line becomes an error; v1 unloads.
    let purged = rpc(&daemon, "Code.purge()");
    assert_eq!(purged["killed"], 1, "{purged}");
    assert_eq!(purged["unloaded"], true, "{purged}");
    assert!(!old_copy.exists(), "unloaded means its copy is gone");
    let killed = browser.answer(1).await;
    assert_eq!(killed["status"], "error", "{killed}");
    assert_eq!(killed["reason"], "killed", "{killed}");
    let versions = rpc(&daemon, "Code.versions()");
    assert_eq!(versions.as_array().map(Vec::len), Some(1), "{versions}");
    assert_eq!(versions[0]["id"], 2, "{versions}");
    // The last holder was the killed sum, on a scheduler: the library is
    // closed and its copy removed on the code server's own thread instead.
    let log = daemon.log_containing("code purged: math_plugin v1 (1.0.0)");
    let purged = log
        .lines()
        .find(|line| line.contains("code purged: math_plugin v1 (1.0.0)"))
        .unwrap_or_default();
    assert!(
        purged.ends_with("(unloaded on thread code-unloader)"),
        "{purged}"
    );

    // The WebSocket never noticed.
    browser.sum(5, "10").await;
    assert_eq!(browser.answer(5).await["result"], "55");

    // A stop unloads what is left (v2, a long sum on it) before the
    // daemon says it stopped: no versioned copy stays behind.
    browser.sum(6, "1000000000000000").await;
    browser.calculating(6).await;
    let stop = daemon.system(&["stop"]);
    assert!(stop.status.success(), "{}", text(&stop));
    assert_eq!(support::versioned_copies(daemon.home()), 0);
    let log = daemon.log();
    let purged = log.find("code purged: math_plugin v2 (1.1.0)");
    let stopped = log.find("INFO system::server: stopped");
    assert!(purged.is_some() && purged < stopped, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_returns_to_the_previous_version() {
    let source = plugin_copies::plugin_copy("fixed", plugin_copies::DEMO_FIX);
    let daemon = Daemon::start();
    let nothing = daemon.system(&["upgrade", "--rollback"]);
    assert_refused(&daemon, &nothing, "no previous version", 1).await;

    let output = plugin_copies::upgrade_from_copy(daemon.home(), "fixed", &source);
    assert!(output.status.success(), "{}", text(&output));
    let mut browser = Client::connect(&daemon).await;
    browser.sum(1, "13").await;
    assert_eq!(browser.answer(1).await["result"], "91");

    let back = daemon.system(&["upgrade", "--rollback"]);
    let said = text(&back);
    assert!(back.status.success(), "{said}");
    assert!(said.contains("Rollback finished successfully."), "{said}");
    assert!(said.contains("v2 (1.1.0) -> v3 (1.0.0)"), "{said}");
    switch_us(&said);
    browser.sum(2, "13").await;
    let crashed = browser.answer(2).await;
    assert_eq!(crashed["status"], "error", "the bugs are back: {crashed}");
    assert_eq!(rpc(&daemon, "System.info().plugin_version"), "1.0.0");
    daemon.log_containing("code upgrade: math_plugin v2 (1.1.0) -> v3 (1.0.0)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_error_shows_the_compilers_message_and_changes_nothing() {
    let source = plugin_copies::plugin_copy("syntax-error", plugin_copies::SYNTAX_ERROR);
    let daemon = Daemon::start();
    let output = plugin_copies::upgrade_from_copy(daemon.home(), "syntax-error", &source);
    assert_refused(&daemon, &output, "building math-plugin failed", 1).await;
    let said = text(&output);
    assert!(said.contains("error: expected expression"), "{said}");
    assert!(
        said.contains("let broken = ;"),
        "the compiler points at it: {said}"
    );
    assert!(!daemon.log().contains("code upgrade"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_files_non_libraries_and_foreign_libraries_are_refused() {
    let daemon = Daemon::start();
    let missing = daemon.home().join("no-such-plugin.so");
    let output = daemon.system(&["upgrade", "--plugin", path(&missing)]);
    assert_refused(&daemon, &output, "does not exist", 1).await;

    let text_file = daemon.home().join("notes.so");
    std::fs::write(&text_file, "not a library").expect("write a text file");
    let output = daemon.system(&["upgrade", "--plugin", path(&text_file)]);
    assert_refused(&daemon, &output, "is not a loadable library", 1).await;

    let foreign = foreign_library();
    let output = daemon.system(&["upgrade", "--plugin", path(&foreign)]);
    assert_refused(
        &daemon,
        &output,
        "does not export the symbol `math_abi_version`",
        1,
    )
    .await;

    // Relative paths are the client's: resolved before they are sent.
    let relative = daemon.system(&["upgrade", "--plugin", "surely/not/here.so"]);
    assert_refused(&daemon, &relative, "does not exist", 1).await;
    let log = daemon.log_containing("upgrade refused, still serving v1 (1.0.0)");
    assert!(!log.contains("code upgrade"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_of_another_abi_is_refused() {
    let source = plugin_copies::plugin_copy("other-abi", plugin_copies::OTHER_ABI);
    let daemon = Daemon::start();
    let output = plugin_copies::upgrade_from_copy(daemon.home(), "other-abi", &source);
    assert_refused(&daemon, &output, "speaks plugin ABI version", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_failing_its_self_test_is_refused() {
    let source = plugin_copies::plugin_copy("wrong-sum", plugin_copies::WRONG_SUM);
    let daemon = Daemon::start();
    let output = plugin_copies::upgrade_from_copy(daemon.home(), "wrong-sum", &source);
    assert_refused(&daemon, &output, "failed its self-test", 1).await;
    assert!(
        text(&output).contains("sum(5) returned 10, expected 15"),
        "{}",
        text(&output)
    );
    // The refused library left no versioned copy behind.
    assert_eq!(support::versioned_copies(daemon.home()), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_panicking_in_its_self_test_is_refused() {
    let source = plugin_copies::plugin_copy("panics-in-sum", plugin_copies::PANICS_IN_SUM);
    let daemon = Daemon::start();
    let output = plugin_copies::upgrade_from_copy(daemon.home(), "panics-in-sum", &source);
    assert_refused(&daemon, &output, "sum(5) crashed: boom in calc_sum", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_panicking_in_validation_refuses_that_input_only() {
    let source =
        plugin_copies::plugin_copy("panics-in-validation", plugin_copies::PANICS_IN_VALIDATION);
    let daemon = Daemon::start();
    let output = plugin_copies::upgrade_from_copy(daemon.home(), "panics-in-validation", &source);
    assert!(output.status.success(), "{}", text(&output));
    let mut client = Client::connect(&daemon).await;
    client.sum(1, "7").await;
    let answer = client.answer(1).await;
    assert_eq!(answer["status"], "invalid", "{answer}");
    assert!(
        answer["reason"]
            .as_str()
            .unwrap()
            .contains("boom in validate"),
        "{answer}"
    );
    client.sum(2, "5").await;
    assert_eq!(client.answer(2).await["result"], "15");
    assert_eq!(daemon.get("/health").0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_upgrades_at_once_are_serialised() {
    let daemon = Daemon::start();
    let library = support::plugin();
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let home = daemon.home().to_path_buf();
            let library = library.clone();
            std::thread::spawn(move || {
                support::system(&home, &["upgrade", "--plugin", path(&library)])
            })
        })
        .collect();
    let mut switches: Vec<String> = runs
        .into_iter()
        .map(|run| {
            let output = run.join().expect("the upgrade thread");
            let said = text(&output);
            assert!(output.status.success(), "{said}");
            said.lines()
                .find(|line| line.starts_with("math_plugin "))
                .expect("the switch line")
                .split(", sha256")
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    switches.sort();
    assert_eq!(
        switches,
        [
            "math_plugin v1 (1.0.0) -> v2 (1.0.0)",
            "math_plugin v2 (1.0.0) -> v3 (1.0.0)"
        ]
    );
    assert_eq!(current_id(&daemon), 3);
    let versions = rpc(&daemon, "Code.versions()");
    assert_eq!(versions.as_array().map(Vec::len), Some(1), "{versions}");
}

fn path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// Some shared library that is not a math plugin: a proc-macro of this build.
fn foreign_library() -> std::path::PathBuf {
    let deps = support::binary().with_file_name("deps");
    std::fs::read_dir(&deps)
        .expect("target/debug/deps")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("libthiserror_impl-") && name.ends_with(".so"))
        })
        .expect("thiserror's proc-macro library is built with this crate")
}
