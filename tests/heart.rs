//! heart end to end: the real daemon under its real heart, killed by real
//! signals and by a plugin that faults; it must come back on the same port
//! with its load, roll back code that keeps killing it, give up after too
//! many deaths, and never restart what `stop` stopped.

use crate::plugin_copies;
use std::time::{Duration, Instant};

use crate::support::{Client, Daemon, PATIENCE, is_alive, text};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid as OsPid;
use serde_json::Value;

/// `system rpc --json SCRIPT`: the script's value.
fn rpc(daemon: &Daemon, script: &str) -> Value {
    let output = daemon.system(&["rpc", "--json", script]);
    assert!(output.status.success(), "{script}: {}", text(&output));
    serde_json::from_slice(&output.stdout).expect("rpc --json prints JSON")
}

/// The pid of the daemon serving now, as `system pid` says.
fn serving_pid(daemon: &Daemon) -> Option<i32> {
    let output = daemon.system(&["pid"]);
    output
        .status
        .success()
        .then(|| text(&output).trim().parse().ok())
        .flatten()
}

/// Waits until a daemon other than `old` serves (answers on its admin
/// socket); returns its pid and how long it took from `since`.
fn wait_for_restart(daemon: &Daemon, old: i32, since: Instant) -> (i32, Duration) {
    loop {
        if let Some(pid) = serving_pid(daemon).filter(|pid| *pid != old)
            && daemon.system(&["rpc", "1"]).status.success()
        {
            return (pid, since.elapsed());
        }
        assert!(since.elapsed() < PATIENCE, "no daemon came back");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// heart's pid, from the state file.
fn heart_pid(daemon: &Daemon) -> i32 {
    let heart = daemon
        .state()
        .heart_pid
        .expect("a daemon started under heart");
    i32::try_from(heart).expect("a pid fits in i32")
}

fn signal(pid: i32, signal: Signal) {
    kill(OsPid::from_raw(pid), signal).expect("signal the daemon");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_by_a_signal_comes_back_with_its_load_on_the_same_port() {
    let daemon = Daemon::start();
    let mut page = Client::connect(&daemon).await;
    page.send(serde_json::json!({"type": "load", "jobs": 10000}))
        .await;
    page.expect(|m| m["type"] == "load").await;
    let mut pid = daemon.pid;
    for (round, (sig, cause)) in [
        (Signal::SIGSEGV, "killed by SIGSEGV"),
        (Signal::SIGKILL, "killed by SIGKILL"),
    ]
    .into_iter()
    .enumerate()
    {
        // A sum that never ends is in flight when the node dies.
        page.sum(1, "-1").await;
        page.calculating(1).await;
        let started_at = page.hello["started_at"].clone();
        let killed = Instant::now();
        signal(pid, sig);
        assert_eq!(page.next().await, None, "the page's connection ends");
        let (new, took) = wait_for_restart(&daemon, pid, killed);
        println!("{cause}: serving again after {took:?}");
        pid = new;

        // Same URL; a reconnecting page sees a new node (its lost lines turn
        // to "node restarted") with the load it had.
        page = Client::connect(&daemon).await;
        assert_ne!(page.hello["started_at"], started_at, "a new node");
        assert_eq!(rpc(&daemon, "Load.get().jobs"), 10000);
        let log = daemon.log();
        assert!(log.contains(&format!("died: {cause}")), "{log}");
        assert!(
            log.contains(&format!("restarting the daemon (restart {})", round + 1)),
            "{log}"
        );
        assert!(log.contains("load restored to 10000 jobs"), "{log}");
        assert!(
            text(&daemon.system(&["status"])).contains(&format!("{} restart(s)", round + 1)),
            "{}",
            text(&daemon.system(&["status"]))
        );
    }
    assert!(
        daemon
            .log()
            .contains("FATAL system: killed by SIGSEGV sent by a process: not in plugin code; current code: math_plugin v1 (1.0.0)"),
        "the dying daemon named the signal and its code: {}",
        daemon.log()
    );
    page.sum(2, "5").await;
    assert_eq!(page.answer(2).await["result"], "15");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_that_keeps_killing_the_node_is_rolled_back() {
    let daemon = Daemon::start();
    let source = plugin_copies::plugin_copy("faults-on-4242", plugin_copies::FAULTS_ON_4242);
    let output = plugin_copies::upgrade_from_copy(daemon.home(), "faults-on-4242", &source);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(rpc(&daemon, "System.info().plugin_id"), 2);

    let mut pid = daemon.pid;
    for crash in 1..=2 {
        let mut page = Client::connect(&daemon).await;
        page.sum(1, "4242").await;
        let calculating = page.next().await.expect("a reply");
        assert_eq!(calculating["status"], "calculating", "{calculating}");
        let (new, _) = wait_for_restart(&daemon, pid, Instant::now());
        pid = new;
        // The last line of the dead daemon names the process that faulted.
        let log = daemon.log_containing(&format!(
            "current code: math_plugin v2 (1.3.0-faults); in process {}",
            calculating["pid"].as_str().expect("the sum's pid")
        ));
        assert!(
            log.contains(": in the code of math_plugin v2; current code"),
            "{log}"
        );
        assert!(
            log.contains("heart: the fault was in the code of math_plugin v2"),
            "{log}"
        );
        if crash == 1 {
            // One crash: the upgraded version stays current after the restart.
            assert_eq!(rpc(&daemon, "System.info().plugin_id"), 2);
        }
    }
    // Two crashes within the window: rolled back to the version before.
    let log = daemon.log();
    assert!(
        log.contains("rolled back math_plugin v2 (1.3.0-faults) → v1 (1.0.0) after 2 crashes in"),
        "{log}"
    );
    let versions = rpc(&daemon, "Code.versions()");
    let current: Vec<&Value> = versions
        .as_array()
        .expect("a list")
        .iter()
        .filter(|v| v["current"] == true)
        .collect();
    assert_eq!(current.len(), 1, "{versions}");
    assert_eq!(current[0]["id"], 1, "{versions}");
    assert_eq!(current[0]["version"], "1.0.0", "{versions}");
    let mut page = Client::connect(&daemon).await;
    page.sum(1, "4242").await;
    assert_eq!(page.answer(1).await["result"], "8999403");
}

#[test]
fn heart_gives_up_after_too_many_deaths_and_says_why() {
    let daemon = Daemon::start();
    let heart = heart_pid(&daemon);
    let mut pid = daemon.pid;
    for _ in 0..system::lifecycle::heart::MAX_RESTARTS {
        signal(pid, Signal::SIGKILL);
        pid = wait_for_restart(&daemon, pid, Instant::now()).0;
    }
    signal(pid, Signal::SIGKILL);
    let deadline = Instant::now() + PATIENCE;
    while is_alive(heart) {
        assert!(Instant::now() < deadline, "heart did not give up");
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = daemon.system(&["status"]);
    assert!(!status.status.success());
    let said = text(&status);
    assert!(
        said.contains("heart gave up after 6 deaths in") && said.contains("killed by SIGKILL"),
        "{said}"
    );
    assert!(
        daemon.log().contains("heart: giving up"),
        "{}",
        daemon.log()
    );
}

#[test]
fn stop_ends_heart_and_daemon_and_nothing_restarts() {
    let daemon = Daemon::start();
    let heart = heart_pid(&daemon);
    let status = text(&daemon.system(&["status"]));
    assert!(status.contains(&format!("heart (pid {heart})")), "{status}");
    let stop = daemon.system(&["stop"]);
    assert!(stop.status.success(), "{}", text(&stop));
    assert!(!is_alive(heart), "heart is gone once stop returns");
    assert!(
        !is_alive(daemon.pid),
        "the daemon is gone once stop returns"
    );
    assert!(!daemon.home().join("heart.json").exists());
    let status = daemon.system(&["status"]);
    assert!(text(&status).contains("not running"), "{}", text(&status));
}

#[test]
fn without_heart_a_killed_daemon_stays_dead() {
    let daemon = Daemon::start_with(&["--no-heart"]);
    let said = text(&daemon.system(&["status"]));
    assert!(said.contains("heart: off"), "{said}");
    signal(daemon.pid, Signal::SIGKILL);
    let deadline = Instant::now() + PATIENCE;
    while daemon.is_alive() {
        assert!(Instant::now() < deadline, "the daemon did not die");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Its files close a moment after it dies; then nothing holds the home.
    while daemon.system(&["status"]).status.success() {
        assert!(Instant::now() < deadline, "something still holds the home");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!daemon.log().contains("heart:"), "{}", daemon.log());
}

/// Issue 24, item 7: heart blamed the current plugin for any fatal signal
/// (a console crash rolled back a good plugin). A fault outside plugin code,
/// here SIGSEGV sent by another process, twice, counts against nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_outside_plugin_code_does_not_roll_the_plugin_back() {
    let daemon = Daemon::start();
    let source = plugin_copies::plugin_copy("faults-on-4242", plugin_copies::FAULTS_ON_4242);
    let output = plugin_copies::upgrade_from_copy(daemon.home(), "faults-on-4242", &source);
    assert!(output.status.success(), "{}", text(&output));
    let mut pid = daemon.pid;
    for _ in 0..2 {
        signal(pid, Signal::SIGSEGV);
        pid = wait_for_restart(&daemon, pid, Instant::now()).0;
    }
    assert_eq!(
        rpc(&daemon, "System.info().plugin_id"),
        2,
        "{}",
        daemon.log()
    );
    let log = daemon.log_containing("not counted against the plugin");
    assert!(!log.contains("rolled back"), "{log}");
    assert!(
        log.contains("killed by SIGSEGV sent by a process: not in plugin code"),
        "{log}"
    );
}

/// The timestamps (seconds since the epoch) of heart's log lines with `needle`.
fn times_of(log: &str, needle: &str) -> Vec<f64> {
    log.lines()
        .filter(|line| line.contains(needle))
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|stamp| humantime::parse_rfc3339(stamp).ok())
        .filter_map(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|since| since.as_secs_f64())
        .collect()
}

/// Issue 24, item 7: with restarts that fail at once (here the state file
/// cannot be written), heart made all of them at once ("6 deaths in 0 s").
/// Now each waits twice as long as the one before (0.1 s, 0.2 s, …).
#[test]
fn restarts_that_keep_failing_back_off() {
    let daemon = Daemon::start();
    let heart = heart_pid(&daemon);
    std::fs::create_dir(daemon.home().join("system.json.tmp")).expect("a directory in the way");
    signal(daemon.pid, Signal::SIGKILL);
    let deadline = Instant::now() + PATIENCE;
    while is_alive(heart) {
        assert!(Instant::now() < deadline, "heart did not give up");
        std::thread::sleep(Duration::from_millis(10));
    }
    let log = daemon.log();
    let deaths = times_of(&log, "heart: the daemon (pid");
    assert_eq!(deaths.len(), 6, "{log}");
    for (n, pair) in deaths.windows(2).enumerate() {
        let waited = pair[1] - pair[0];
        // 0.1 s, doubling, at most 5 s.
        let backoff = (0.1 * f64::from(1_u32 << n)).min(5.0);
        assert!(
            waited >= backoff,
            "restart {} after {waited} s, not {backoff} s: {log}",
            n + 1
        );
    }
}

/// Issue 24, item 7: a `kept.json` entry could name any path (`/etc/hostname`)
/// and the restart then failed until heart gave up. Now such an entry is
/// ignored and the restart loads the shipped plugin.
#[test]
fn a_kept_entry_naming_another_path_falls_back_to_the_shipped_plugin() {
    let daemon = Daemon::start();
    let index = r#"{"current":{"id":1,"version":"1.0.0","file":"/etc/hostname"},"previous":null,"last_id":1}"#;
    std::fs::write(daemon.home().join("plugins/kept/kept.json"), index).expect("write kept.json");
    signal(daemon.pid, Signal::SIGKILL);
    wait_for_restart(&daemon, daemon.pid, Instant::now());
    assert_eq!(rpc(&daemon, "System.info().plugin_version"), "1.0.0");
    assert!(!daemon.log().contains("giving up"), "{}", daemon.log());
}

/// Issue 24, item 7: `system stop` right after a crash said "not running"
/// (or "does not hold the home's lock") and heart then brought the daemon
/// back. Now it stops heart: right after the death (heart waits to
/// restart), and while the restarted daemon starts (it holds the lock but
/// has not written its state yet).
#[test]
fn stop_right_after_a_crash_stops_heart_and_nothing_comes_back() {
    for while_restarting in [false, true] {
        let daemon = Daemon::start();
        let heart = heart_pid(&daemon);
        signal(daemon.pid, Signal::SIGKILL);
        if while_restarting {
            let home = system::os::home::Home::existing(daemon.home())
                .expect("the home")
                .expect("it exists");
            let deadline = Instant::now() + PATIENCE;
            // A new child of heart holds the lock; the state file still names the dead one.
            let children = format!("/proc/{heart}/task/{heart}/children");
            let restarting = || {
                std::fs::read_to_string(&children)
                    .unwrap_or_default()
                    .split_whitespace()
                    .filter_map(|pid| pid.parse::<u32>().ok())
                    .any(|child| child != daemon.pid as u32 && home.held_by(child))
            };
            while !(restarting() && daemon.state().pid == daemon.pid as u32) {
                assert!(Instant::now() < deadline, "no restart began");
                std::thread::yield_now();
            }
        }
        let stop = daemon.system(&["stop"]);
        assert!(stop.status.success(), "{}", text(&stop));
        assert!(!is_alive(heart), "heart is gone once stop returns");
        let status = daemon.system(&["status"]);
        assert!(!status.status.success(), "{}", text(&status));
    }
}

/// Issue 24, item 7: `status` tested liveness by taking the home's lock for
/// a moment; a restarting daemon that tried the lock then said "already
/// running" and heart ended, leaving nothing running. A probe that takes
/// the lock (the old `status`'s `flock`, or the daemon's kind of lock) in a
/// loop, half of the time, must not stop restarts.
#[test]
fn a_lock_probe_in_a_loop_does_not_stop_restarts() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let daemon = Daemon::start();
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let lock_file = daemon.home().join("system.lock");
    let probing = {
        let done = done.clone();
        std::thread::spawn(move || {
            let hold = Duration::from_millis(1);
            while !done.load(Ordering::Relaxed) {
                if let Ok(file) = std::fs::File::open(&lock_file)
                    && let Ok(held) =
                        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
                {
                    std::thread::sleep(hold);
                    drop(held);
                }
                std::thread::sleep(hold);
                if let Ok(file) = std::fs::OpenOptions::new().write(true).open(&lock_file) {
                    let mut lock: nix::libc::flock = unsafe_zeroed_lock();
                    lock.l_type = nix::libc::F_WRLCK as nix::libc::c_short;
                    if nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_OFD_SETLK(&lock)).is_ok() {
                        std::thread::sleep(hold);
                    }
                }
                std::thread::sleep(hold);
            }
        })
    };
    let mut pid = daemon.pid;
    for _ in 0..4 {
        signal(pid, Signal::SIGKILL);
        pid = wait_for_restart(&daemon, pid, Instant::now()).0;
    }
    done.store(true, Ordering::Relaxed);
    probing.join().expect("the probe thread");
    assert!(!daemon.log().contains("heart ends"), "{}", daemon.log());
}

/// An all-zero `flock` request (whole file, from the start).
fn unsafe_zeroed_lock() -> nix::libc::flock {
    // SAFETY: `flock` is plain data; all zeroes is a valid value.
    unsafe { std::mem::zeroed() }
}
