//! The daemon's lifecycle through the real binary: start, health, status,
//! stop, double start, stop with nothing running, stale pid file, SIGTERM.

use crate::support;
use std::process::Command;

use crate::support::{Daemon, is_alive, system, text};

#[test]
fn start_serves_then_stop_stops() {
    let home = support::home();
    let started = system(home.path(), &["start", "--http", "127.0.0.1:0"]);
    assert!(started.status.success(), "{}", text(&started));
    let daemon = Daemon::adopt(home);
    // What `start` says is what the state file holds.
    let said = text(&started);
    assert!(
        said.contains(&format!(
            "system started (pid {}), serving {}",
            daemon.pid, daemon.url
        )),
        "{said}"
    );
    let (status, body) = daemon.get("/health");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("ok"), "{body}");

    let running = daemon.system(&["status"]);
    assert!(running.status.success());
    assert!(text(&running).contains("is running"), "{}", text(&running));
    assert!(text(&running).contains(&daemon.url), "{}", text(&running));

    let pid = daemon.system(&["pid"]);
    assert_eq!(text(&pid).trim(), daemon.pid.to_string());

    let stop = daemon.system(&["stop"]);
    assert!(stop.status.success(), "{}", text(&stop));
    assert!(!is_alive(daemon.pid), "the daemon still runs after stop");
    assert!(
        !daemon.home().join("system.pid").exists(),
        "pid file left behind"
    );

    let stopped = daemon.system(&["status"]);
    assert!(!stopped.status.success());
    assert!(text(&stopped).contains("not running"), "{}", text(&stopped));
    assert!(daemon.log().contains("stopped"), "{}", daemon.log());
}

#[test]
fn second_start_is_refused_and_the_first_keeps_serving() {
    let daemon = Daemon::start();
    let again = daemon.system(&["start", "--http", "127.0.0.1:0"]);
    assert!(!again.status.success());
    assert!(text(&again).contains("already running"), "{}", text(&again));
    assert_eq!(daemon.get("/health").0, 200);
}

#[test]
fn start_on_a_taken_port_fails_with_the_reason() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let home = support::home();
    let output = system(home.path(), &["start", "--http", &address]);
    assert!(!output.status.success());
    assert!(text(&output).contains("cannot listen"), "{}", text(&output));
    assert!(!home.path().join("system.pid").exists());
}

#[test]
fn stop_with_nothing_running_says_so() {
    let home = support::home();
    let output = system(home.path(), &["stop"]);
    assert!(!output.status.success());
    assert!(text(&output).contains("not running"), "{}", text(&output));
}

#[test]
fn a_stale_pid_file_is_replaced() {
    let home = support::home();
    // A pid file and state left by a daemon that died without cleaning up.
    std::fs::write(home.path().join("system.pid"), "999999\n").unwrap();
    std::fs::write(
        home.path().join("system.json"),
        r#"{"pid":999999,"url":"http://127.0.0.1:1","started_at_unix":0,"schedulers":1,"version":"0"}"#,
    )
    .unwrap();
    let status = system(home.path(), &["status"]);
    assert!(text(&status).contains("not running"), "{}", text(&status));
    let output = system(home.path(), &["start", "--http", "127.0.0.1:0"]);
    assert!(output.status.success(), "{}", text(&output));
    let pid = std::fs::read_to_string(home.path().join("system.pid")).unwrap();
    assert_ne!(pid.trim(), "999999");
    assert!(system(home.path(), &["stop"]).status.success());
}

#[test]
fn sigterm_stops_gracefully() {
    let daemon = Daemon::start();
    let status = Command::new("kill")
        .args(["-TERM", &daemon.pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // `stop` waits on the same lock the daemon releases at exit; with nothing
    // to stop it must say so, which proves the daemon is gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while is_alive(daemon.pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "still alive after SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(daemon.log().contains("SIGTERM"), "{}", daemon.log());
    assert!(!daemon.home().join("system.pid").exists());
}

#[test]
fn the_log_command_prints_the_log() {
    let daemon = Daemon::start();
    let log = daemon.system(&["log"]);
    assert!(log.status.success());
    assert!(text(&log).contains("serving"), "{}", text(&log));
}
