//! Faults the daemon survives: every kind of system process killed and
//! restarted, a log it cannot write, a plugin file changed on disk after
//! loading, and a stop under load with many connections open.

use crate::support;
use std::time::Instant;

use crate::support::{Client, Daemon, text};

/// `system rpc SCRIPT` against the daemon; its printed result.
fn rpc(daemon: &Daemon, script: &str) -> String {
    let output = daemon.system(&["rpc", script]);
    assert!(output.status.success(), "{script}: {}", text(&output));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[test]
fn every_system_process_is_restarted_after_a_kill() {
    let daemon = Daemon::start();
    for name in [
        "http_listener",
        "admin_server",
        "metrics_sampler",
        "load_supervisor",
    ] {
        let before = rpc(&daemon, &format!("whereis(\"{name}\")"));
        assert!(before.starts_with("#PID<0."), "{name}: {before}");
        assert_eq!(rpc(&daemon, &format!("kill(whereis(\"{name}\"))")), "true");
        // The supervisor restarts it under a new pid; the service comes back.
        let deadline = Instant::now() + support::PATIENCE;
        let after = loop {
            let now = daemon.system(&["rpc", &format!("whereis(\"{name}\")")]);
            let now = String::from_utf8_lossy(&now.stdout).trim().to_owned();
            if now.starts_with("#PID<0.") && now != before {
                break now;
            }
            assert!(Instant::now() < deadline, "{name} was not restarted");
            std::thread::yield_now();
        };
        assert_ne!(before, after);
    }
    assert_eq!(daemon.get("/health").0, 200);
    let (status, body) = daemon.post("/api/load", r#"{"jobs":100}"#);
    assert_eq!(status, 200, "{body}");
    for name in [
        "http_listener",
        "admin_server",
        "metrics_sampler",
        "load_supervisor",
    ] {
        daemon.log_containing(&format!("child {name}"));
    }
}

#[tokio::test]
async fn a_full_disk_under_the_log_does_not_stop_the_daemon() {
    let home = support::home();
    std::fs::create_dir_all(home.path().join("log")).unwrap();
    // /dev/full's device node in place of the log (a symlink would not be followed).
    nix::sys::stat::mknod(
        &home.path().join("log/system.log"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(1, 7),
    )
    .expect("mknod /dev/full (needs root)");
    let output = support::system(home.path(), &["start", "--http", "127.0.0.1:0"]);
    assert!(output.status.success(), "{}", text(&output));
    let daemon = Daemon::adopt(home);
    let (status, body) = daemon.get("/health");
    assert_eq!(status, 200);
    assert!(body.contains("failing: No space left on device"), "{body}");
    let mut client = Client::connect(&daemon).await;
    client.sum(1, "13").await; // a crash report the log cannot take
    assert_eq!(client.answer(1).await["status"], "error");
    client.sum(2, "5").await;
    assert_eq!(client.answer(2).await["result"], "15");
}

#[tokio::test]
async fn the_plugin_file_changed_on_disk_after_loading_changes_nothing() {
    let plugin_dir = tempfile::tempdir().unwrap();
    let plugin = plugin_dir.path().join("libmath_plugin.so");
    let built = support::plugin();
    std::fs::copy(&built, &plugin).unwrap();
    let daemon = Daemon::start_with(&["--plugin", plugin.to_str().unwrap()]);
    let mut client = Client::connect(&daemon).await;
    client.sum(1, "-1").await;
    client.calculating(1).await;
    // Truncate, then overwrite, the file the daemon loaded from.
    std::fs::write(&plugin, b"").unwrap();
    client.sum(2, "10").await;
    assert_eq!(client.answer(2).await["result"], "55");
    std::fs::write(&plugin, b"not a library at all").unwrap();
    client.sum(3, "100").await;
    assert_eq!(client.answer(3).await["result"], "5050");
    assert_eq!(daemon.get("/health").0, 200);
}

#[tokio::test]
async fn stop_under_load_with_many_connections_is_clean_and_quick() {
    let daemon = Daemon::start();
    let (status, body) = daemon.post("/api/load", r#"{"jobs":50000}"#);
    assert_eq!(status, 200, "{body}");
    let mut clients = Vec::new();
    for _ in 0..50 {
        clients.push(Client::connect(&daemon).await);
    }
    clients[0].sum(1, "-1").await;
    clients[0].calculating(1).await;
    let home = daemon.home().to_owned();
    let started = Instant::now();
    let stop = tokio::task::spawn_blocking(move || support::system(&home, &["stop"]));
    for client in &mut clients {
        let code = tokio::time::timeout(support::PATIENCE, client.close_code())
            .await
            .expect("closed");
        assert_eq!(code, Some(1001));
    }
    let output = stop.await.unwrap();
    let took = started.elapsed();
    assert!(output.status.success(), "{}", text(&output));
    assert!(!daemon.is_alive());
    // How long it takes is the benchmark's (its `stop` phase, same load).
    println!("stop with 50,000 workers and 50 connections took {took:?}");
}
