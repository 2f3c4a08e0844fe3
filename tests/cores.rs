//! Schedulers online, changed live (issue 27) on the real daemon: from the
//! console and from a page's WebSocket, under load, with an endless sum
//! running and a page open: no job lost or failed, the page stays
//! connected, the sum keeps running on the schedulers online and can be
//! killed, the second scheduler's thread really runs (its CPU in
//! `/proc/PID/task/*/schedstat`) and stops when it goes offline, each
//! scheduler's usage is in `/metrics`, and heart restores the count.
//!
//! Waits on counters and messages, never on fixed sleeps (the CPU checks
//! compare two readings a bounded while apart, and say so).

use std::time::{Duration, Instant};

use crate::support::{Client, Daemon, PATIENCE, eventually, text};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid as OsPid;
use serde_json::{Value, json};

/// Load workers: 100k in a release build; a debug build on this busy
/// 2-core machine carries 20k with room to spare.
const WORKERS: u64 = if cfg!(debug_assertions) {
    20_000
} else {
    100_000
};

/// CPU time (ns) of the daemon's thread named `name`, from its schedstat.
fn thread_cpu_ns(pid: i32, name: &str) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the daemon's threads");
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            return stat
                .split_whitespace()
                .next()
                .and_then(|ns| ns.parse().ok())
                .unwrap_or(0);
        }
    }
    panic!("no thread named {name:?} in the daemon")
}

/// Waits until the success counter has risen by `by` from now, with no failure.
fn jobs_keep_succeeding(daemon: &Daemon, by: f64) {
    let from = daemon.metric("system_jobs_succeeded_total");
    eventually(PATIENCE, "the load's jobs keep succeeding", || {
        daemon.metric("system_jobs_succeeded_total") > from + by
    });
    assert_eq!(
        daemon.metric("system_jobs_failed_total"),
        0.0,
        "a job failed"
    );
}

/// The sum's reductions, from the console.
fn reductions(daemon: &Daemon, pid: &str) -> i64 {
    daemon
        .rpc(&format!("Process.info(pid(\"{pid}\")).reductions"))
        .as_i64()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedulers_online_change_live_under_load_and_nothing_is_lost() {
    let daemon = Daemon::start_with(&["--schedulers", "1", "--max-schedulers", "2"]);
    let mut page = Client::connect(&daemon).await;
    assert_eq!(page.hello["schedulers"], 1, "{}", page.hello);
    assert_eq!(page.hello["max_schedulers"], 2, "{}", page.hello);
    page.send(json!({"type": "load", "jobs": WORKERS, "failure_rate": 0}))
        .await;
    page.expect(|m| m["type"] == "load").await;
    eventually(PATIENCE, "every worker runs", || {
        daemon.metric("system_load_workers") == WORKERS as f64
    });
    page.sum(1, "-1").await;
    let endless = page.calculating(1).await["pid"]
        .as_str()
        .expect("the sum's pid")
        .to_owned();
    jobs_keep_succeeding(&daemon, WORKERS as f64);

    // 1 -> 2 from the console: the second scheduler's thread takes work.
    let on_two = thread_cpu_ns(daemon.pid, "scheduler 2");
    assert_eq!(daemon.rpc("System.schedulers_online(2)"), 1);
    assert_eq!(daemon.rpc("System.schedulers_online()"), 2);
    jobs_keep_succeeding(&daemon, WORKERS as f64);
    // Half the workers (and maybe the sum) now run there: 100 ms of CPU
    // comes within a few seconds.
    eventually(PATIENCE, "scheduler 2 runs processes", || {
        thread_cpu_ns(daemon.pid, "scheduler 2") > on_two + 100_000_000
    });
    eventually(PATIENCE, "scheduler 2's usage in /metrics", || {
        daemon.metric("system_scheduler_usage_ratio_by_scheduler{scheduler=\"2\"}") > 0.0
    });
    let spun = reductions(&daemon, &endless);
    eventually(PATIENCE, "the endless sum keeps running", || {
        reductions(&daemon, &endless) > spun
    });

    // 2 -> 1 from the page: scheduler 2's thread goes quiet.
    page.send(json!({"type": "schedulers", "online": 1})).await;
    let reply = page.expect(|m| m["type"] == "schedulers").await;
    assert_eq!(reply["online"], 1, "{reply}");
    jobs_keep_succeeding(&daemon, WORKERS as f64);
    // After the moves, it polls nothing: less than 50 ms of CPU in a
    // second (it wakes only to forward what is still queued there).
    let quiet_from = thread_cpu_ns(daemon.pid, "scheduler 2");
    let since = Instant::now();
    jobs_keep_succeeding(&daemon, WORKERS as f64);
    let quiet = thread_cpu_ns(daemon.pid, "scheduler 2") - quiet_from;
    let window = since.elapsed();
    assert!(
        (quiet as f64) < 0.05 * window.as_nanos() as f64,
        "an offline scheduler used {quiet} ns of CPU in {window:?}"
    );
    let spun = reductions(&daemon, &endless);
    eventually(PATIENCE, "the endless sum keeps running", || {
        reductions(&daemon, &endless) > spun
    });

    // The page was connected all along, and can still kill the sum.
    page.send(json!({"type": "kill", "pid": endless})).await;
    assert_eq!(page.expect(|m| m["type"] == "kill").await["killed"], true);
    assert_eq!(page.answer(1).await["reason"], "killed");
    page.sum(2, "5").await;
    assert_eq!(page.answer(2).await["result"], "15");

    // Outside 1..=max: a clear error, and nothing changes.
    for asked in ["0", "3", "-1"] {
        let output = daemon.system(&["rpc", &format!("System.schedulers_online({asked})")]);
        assert!(!output.status.success(), "{asked} was accepted");
        let said = text(&output);
        assert!(
            said.contains("schedulers online must be between 1 and 2"),
            "{said}"
        );
    }
    page.send(json!({"type": "schedulers", "online": 3})).await;
    let refused = page.expect(|m| m["type"] == "error").await;
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|message| message.contains("between 1 and 2")),
        "{refused}"
    );
    assert_eq!(daemon.rpc("System.schedulers_online()"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heart_restores_the_schedulers_online() {
    let daemon = Daemon::start_with(&["--schedulers", "1", "--max-schedulers", "2"]);
    assert_eq!(daemon.rpc("System.schedulers_online(2)"), 1);
    let old = daemon.pid;
    kill(OsPid::from_raw(old), Signal::SIGKILL).expect("kill the daemon");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let output = daemon.system(&["rpc", "--json", "System.schedulers_online()"]);
        let pid = text(&daemon.system(&["pid"])).trim().parse::<i32>().ok();
        if output.status.success() && pid.is_some_and(|pid| pid != old) {
            let online: Value = serde_json::from_slice(&output.stdout).expect("JSON");
            assert_eq!(online, 2, "the restarted daemon's schedulers online");
            break;
        }
        assert!(Instant::now() < deadline, "no daemon came back");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        daemon.log().contains("schedulers online restored to 2"),
        "{}",
        daemon.log()
    );
    let mut page = Client::connect(&daemon).await;
    assert_eq!(page.hello["schedulers"], 2, "{}", page.hello);
    page.sum(1, "5").await;
    assert_eq!(page.answer(1).await["result"], "15");
}
