//! The soak test (ignored by default; bounded in time):
//!
//! ```text
//! SOAK_SECS=600 cargo test --release -p system --test e2e soak:: -- --ignored --nocapture
//! ```
//!
//! 10k workers run while cycles of crash, endless loop + kill, upgrade +
//! rollback, and clients connecting and disconnecting repeat. Afterwards
//! the process count is back at its baseline, RSS and open file
//! descriptors are flat, and every request got exactly one answer.

use crate::support;
use std::time::{Duration, Instant};

use crate::support::{Client, Daemon, text};
use serde_json::json;

fn process_count(daemon: &Daemon) -> u64 {
    let output = daemon.system(&["rpc", "Process.count()"]);
    assert!(output.status.success(), "{}", text(&output));
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap()
}

fn rss_kb(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
        .unwrap()
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[tokio::test]
#[ignore = "a 10-minute soak; run it by hand (see the file's doc comment)"]
async fn soak() {
    let seconds: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let daemon = Daemon::start();
    let plugin = support::plugin();
    let (status, body) = daemon.post("/api/load", r#"{"jobs":10000}"#);
    assert_eq!(status, 200, "{body}");
    let mut observer = Client::connect(&daemon).await;
    observer
        .send(json!({"type": "subscribe", "topic": "metrics"}))
        .await;
    // Let the workers start and memory settle, then take the baseline.
    observer
        .expect(|m| m["type"] == "metrics" && m["sample"]["workers"] == 10000)
        .await;
    let base_processes = process_count(&daemon);
    // Memory is measured against its level after a warm-up (a fifth of the
    // run): allocator arenas and the first plugin copies settle by then.
    let started = Instant::now();
    let warm_up = Duration::from_secs(seconds / 5);
    let mut warm: Option<(u64, usize)> = None;

    let deadline = started + Duration::from_secs(seconds);
    let (mut cycles, mut requests, mut answers) = (0u64, 0u64, 0u64);
    while Instant::now() < deadline {
        if warm.is_none() && started.elapsed() >= warm_up {
            warm = Some((rss_kb(daemon.pid), open_fds(daemon.pid)));
        }
        cycles += 1;
        let mut client = Client::connect(&daemon).await;
        // Crash, success and invalid input: one answer each.
        for (id, input, status) in [
            (1, "13", "error"),
            (2, "1000", "done"),
            (3, "abc", "invalid"),
        ] {
            client.sum(id, input).await;
            requests += 1;
            assert_eq!(client.answer(id).await["status"], status);
            answers += 1;
        }
        // An endless loop, killed from another connection.
        client.sum(4, "-1").await;
        requests += 1;
        let pid = client.calculating(4).await["pid"]
            .as_str()
            .unwrap()
            .to_owned();
        observer.send(json!({"type": "kill", "pid": pid})).await;
        observer.expect(|m| m["type"] == "kill").await;
        assert_eq!(client.answer(4).await["reason"], "killed");
        answers += 1;
        // Upgrade and roll back every tenth cycle.
        if cycles % 10 == 0 {
            let upgrade = daemon.system(&["upgrade", "--plugin", plugin.to_str().unwrap()]);
            assert!(upgrade.status.success(), "{}", text(&upgrade));
            let rollback = daemon.system(&["upgrade", "--rollback"]);
            assert!(rollback.status.success(), "{}", text(&rollback));
        }
        // No second final answer for any request.
        assert!(
            client
                .seen
                .iter()
                .all(|m| m["type"] != "sum" || m["status"] == "calculating"),
            "{:?}",
            client.seen
        );
        drop(client);
    }
    let metrics = observer.expect(|m| m["type"] == "metrics").await;
    assert_eq!(requests, answers);

    // Disconnected clients and killed tasks are gone: back to the baseline.
    let settle = Instant::now() + support::PATIENCE;
    let processes = loop {
        let now = process_count(&daemon);
        if now <= base_processes || Instant::now() > settle {
            break now;
        }
        tokio::task::yield_now().await;
    };
    let (rss, fds) = (rss_kb(daemon.pid), open_fds(daemon.pid));
    let (base_rss, base_fds) = warm.expect("the run outlasts its warm-up");
    println!(
        "soak: {seconds} s, {cycles} cycles, {requests} requests, {answers} answers; processes {base_processes} -> {processes}; RSS {base_rss} -> {rss} kB; fds {base_fds} -> {fds}; last jobs/s {}",
        metrics["sample"]["jobs_per_sec"]
    );
    assert!(
        processes <= base_processes,
        "processes {base_processes} -> {processes}"
    );
    assert!(fds <= base_fds + 5, "fds {base_fds} -> {fds}");
    assert!(rss < base_rss + base_rss / 5, "RSS {base_rss} -> {rss} kB");
}
