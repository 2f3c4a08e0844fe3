//! Operations, against the real daemon: a crash storm leaves a bounded log
//! that still accounts for every crash; the log rotates by size and `system
//! log` (with `--follow`) keeps up; `system foreground` speaks systemd's
//! notify protocol and stops gracefully on SIGTERM; the daemon raises its
//! soft limit on open files to the hard limit.

use crate::support;
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Client, Daemon, PATIENCE};
use nix::sys::resource::{Resource, getrlimit};

/// The log's burst limit for crash reports (per second).
const CRASH_REPORTS_PER_SECOND: usize = 500;

/// What a storm of crashing sums did.
struct Storm {
    seconds: f64,
    crashes: u64,
    /// sum(5) round trips on another connection during the storm, in ms.
    round_trips: Vec<f64>,
}

/// `connections` WebSockets each keep 16 sums of 13 in flight for `length`.
async fn crash_storm(daemon: &Daemon, connections: usize, length: Duration) -> Storm {
    let started = Instant::now();
    let deadline = started + length;
    let mut storms = Vec::new();
    for _ in 0..connections {
        let mut client = Client::connect(daemon).await;
        storms.push(tokio::spawn(async move {
            let (mut next_id, mut in_flight, mut crashes) = (0, 0, 0u64);
            while in_flight < 16 {
                client.sum(next_id, "13").await;
                (next_id, in_flight) = (next_id + 1, in_flight + 1);
            }
            while in_flight > 0 {
                let message = tokio::time::timeout(PATIENCE, client.next())
                    .await
                    .expect("an answer in time")
                    .expect("the connection stays open");
                if message["type"] != "sum" || message["status"] == "calculating" {
                    continue;
                }
                assert_eq!(message["status"], "error", "{message}");
                (in_flight, crashes) = (in_flight - 1, crashes + 1);
                if Instant::now() < deadline {
                    client.sum(next_id, "13").await;
                    (next_id, in_flight) = (next_id + 1, in_flight + 1);
                }
            }
            crashes
        }));
    }
    let mut probe = Client::connect(daemon).await;
    let mut round_trips = Vec::new();
    let mut id = 0;
    while Instant::now() < deadline {
        let sent = Instant::now();
        probe.sum(id, "5").await;
        assert_eq!(probe.answer(id).await["result"], "15");
        round_trips.push(sent.elapsed().as_secs_f64() * 1000.0);
        probe.seen.clear();
        id += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut crashes = 0;
    for storm in storms {
        crashes += storm.await.expect("a storm connection");
    }
    Storm {
        seconds: started.elapsed().as_secs_f64(),
        crashes,
        round_trips,
    }
}

/// A metric's value from `/metrics`.
fn metric(daemon: &Daemon, name: &str) -> f64 {
    let (status, body) = daemon.get("/metrics");
    assert_eq!(status, 200);
    body.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {body}"))
}

/// The sum of N over the log's lines `… {before} N {after}`.
fn counted(log: &str, before: &str, after: &str) -> u64 {
    log.lines()
        .filter_map(|line| line.split_once(before))
        .filter_map(|(_, rest)| rest.split_once(after))
        .filter_map(|(n, _)| n.replace(',', "").parse::<u64>().ok())
        .sum()
}

/// Crash reports written, and those the summary lines say were suppressed or dropped.
fn accounted(log: &str) -> (u64, u64, u64) {
    let written = log.matches("crash report: ").count() as u64;
    let suppressed = counted(log, "suppressed ", " crash reports in the last second");
    let dropped = counted(log, "dropped ", " log events in the last second");
    (written, suppressed, dropped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_storm_leaves_a_bounded_log_that_accounts_for_every_crash() {
    let daemon = Daemon::start();
    let before = daemon.log().len();
    let storm = crash_storm(&daemon, 8, Duration::from_secs(5)).await;
    assert!(
        storm.crashes as usize > 2 * CRASH_REPORTS_PER_SECOND,
        "the storm is too weak to test the limit: {} crashes",
        storm.crashes
    );

    // Every crash is counted in /metrics, written or not.
    assert_eq!(
        metric(&daemon, "system_crash_reports_total"),
        storm.crashes as f64
    );
    // Every crash is in the log: its report, or a summary line's count.
    let deadline = Instant::now() + PATIENCE;
    let (written, suppressed, dropped) = loop {
        let (written, suppressed, dropped) = accounted(&daemon.log());
        if written + suppressed + dropped >= storm.crashes {
            break (written, suppressed, dropped);
        }
        assert!(
            Instant::now() < deadline,
            "{} crashes, the log accounts for {written} written + {suppressed} suppressed + \
             {dropped} dropped",
            storm.crashes
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(written + suppressed <= storm.crashes);
    assert!(suppressed > 0, "no summary line");

    // The bound: at most 500 crash reports per (started) second, one line each.
    let log = daemon.log();
    let seconds = storm.seconds.ceil() as usize + 1;
    assert!(
        written as usize <= CRASH_REPORTS_PER_SECOND * seconds,
        "{written} crash reports in {:.1} s",
        storm.seconds
    );
    let longest = log
        .lines()
        .filter(|line| line.contains("crash report: "))
        .map(str::len)
        .max()
        .unwrap_or(0);
    assert!(longest < 256, "a crash report of {longest} bytes");
    let grown = log.len() - before;
    assert!(
        grown <= seconds * CRASH_REPORTS_PER_SECOND * 256 + 64 * 1024,
        "the log grew by {grown} bytes in {:.1} s",
        storm.seconds
    );
    // The plugin's panic text is in the crash report only, never a line of its own.
    assert!(!log.contains("panicked"), "{log}");
    eprintln!(
        "{} crashes in {:.1} s: {written} reports written, {suppressed} suppressed, \
         {dropped} events dropped; the log grew by {grown} bytes",
        storm.crashes, storm.seconds
    );
}

/// Measures a crash storm beside the 10k load (run on a release build):
/// `cargo test --release -p system --test e2e ops:: -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_a_crash_storm_beside_the_10k_load() {
    let daemon = std::sync::Arc::new(Daemon::start());
    let (status, body) = daemon.post("/api/load", r#"{"jobs":10000}"#);
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + PATIENCE;
    while metric(&daemon, "system_load_workers") < 10_000.0 {
        assert!(Instant::now() < deadline, "the workers did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // For scale: the probe's round trips beside the load alone.
    let calm = crash_storm(&daemon, 0, Duration::from_secs(5)).await;
    let mut calm = calm.round_trips;
    calm.sort_by(f64::total_cmp);
    eprintln!(
        "without the storm: sum(5) round trip p50 {:.2} ms, p99 {:.2} ms ({} probes)",
        calm[calm.len() / 2],
        calm[(calm.len() - 1) * 99 / 100],
        calm.len()
    );
    // Jobs per second over 1-s windows, from the jobs counter, during the storm.
    let sampler = {
        let daemon = daemon.clone();
        std::thread::spawn(move || {
            let mut rates = Vec::new();
            let mut last = metric(&daemon, "system_jobs_succeeded_total");
            for _ in 0..10 {
                std::thread::sleep(Duration::from_secs(1));
                let now = metric(&daemon, "system_jobs_succeeded_total");
                rates.push(now - last);
                last = now;
            }
            rates
        })
    };
    let before = daemon.log().len();
    let storm = crash_storm(&daemon, 8, Duration::from_secs(10)).await;
    let rates = sampler.join().unwrap();
    let grown = daemon.log().len() - before;
    let mut trips = storm.round_trips.clone();
    trips.sort_by(f64::total_cmp);
    let at = |q: f64| trips[((trips.len() - 1) as f64 * q) as usize];
    eprintln!(
        "{} crashes in {:.1} s ({:.0}/s); 10k load jobs/s per 1-s window: min {:.0}, all {rates:?}; \
         sum(5) round trip p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} probes); log +{grown} bytes \
         ({:.0} bytes/s)",
        storm.crashes,
        storm.seconds,
        storm.crashes as f64 / storm.seconds,
        rates.iter().copied().fold(f64::INFINITY, f64::min),
        at(0.5),
        at(0.99),
        at(1.0),
        trips.len(),
        grown as f64 / storm.seconds
    );
}

/// What the log line of a load setting of `1000 + n` jobs says (unique per `n`).
fn marker(n: u32) -> String {
    format!("load set over HTTP to {} jobs", 1000 + n)
}

/// Sets the load to `1000 + n` jobs (same-origin JSON): a line with
/// [`marker`] and one of the load supervisor's, ~170 bytes.
fn logged_line(daemon: &Daemon, n: u32) {
    let (status, body) = daemon.post("/api/load", &format!("{{\"jobs\":{}}}", 1000 + n));
    assert_eq!(status, 200, "{body}");
}

fn log_files(home: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(home.join("log"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn the_log_rotates_by_size_keeping_its_number_of_files() {
    let daemon = Daemon::start_with(&["--log-max-bytes", "4096", "--log-files", "3"]);
    // About 170 bytes a setting: ~24 a file, so 200 settings rotate ~8 times.
    for n in 0..200 {
        logged_line(&daemon, n);
    }
    daemon.log_containing(&marker(199));
    assert_eq!(
        log_files(daemon.home()),
        ["system.log", "system.log.1", "system.log.2"]
    );
    for name in log_files(daemon.home()) {
        let size = std::fs::metadata(daemon.home().join("log").join(&name))
            .unwrap()
            .len();
        assert!(size <= 4096, "{name} has {size} bytes");
    }
    let oldest = std::fs::read_to_string(daemon.home().join("log/system.log.2")).unwrap();
    assert!(!oldest.contains(&marker(0)), "the oldest lines were kept");
    let shown = support::text(&daemon.system(&["log"]));
    assert!(shown.contains(&marker(199)), "{shown}");
    assert!(!shown.contains(&marker(0)), "{shown}");
    assert_eq!(shown, daemon.log());
}

#[test]
fn log_follow_keeps_printing_across_rotations() {
    let daemon = Daemon::start_with(&["--log-max-bytes", "2048", "--log-files", "2"]);
    let mut follow = Command::new(support::binary())
        .arg("--home")
        .arg(daemon.home())
        .args(["log", "--follow"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("system log --follow runs");
    let (lines, printed) = std::sync::mpsc::channel();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    // It has opened the log once it prints the daemon's first lines: a line
    // logged before, then rotated away before it opened, it never sees.
    let mut seen = vec![
        printed
            .recv_timeout(PATIENCE)
            .expect("the log's first lines"),
    ];
    // ~12 settings a file: batches of 8 rotate at most once between two looks
    // of `--follow`; 48 settings rotate about 4 times.
    for batch in 0..6 {
        for n in batch * 8..batch * 8 + 8 {
            logged_line(&daemon, n);
        }
        let last = marker(batch * 8 + 7);
        while !seen.iter().any(|line: &String| line.contains(&last)) {
            let line = printed
                .recv_timeout(PATIENCE)
                .unwrap_or_else(|_| panic!("{last} was not printed; printed: {seen:#?}"));
            seen.push(line);
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(
        daemon.home().join("log/system.log.1").exists(),
        "the log did not rotate"
    );
    assert!(!daemon.log().contains(&marker(0)));
    // Every line once, in order, across the rotations.
    let markers: Vec<&str> = seen
        .iter()
        .filter_map(|line| line.split("load set over HTTP to ").nth(1))
        .collect();
    let expected: Vec<String> = (0..48)
        .map(|n| format!("{} jobs, 0 % failures", 1000 + n))
        .collect();
    assert_eq!(markers, expected);
}

#[test]
fn foreground_notifies_a_service_manager_and_stops_cleanly_on_sigterm() {
    let home = support::home();
    let sockets = tempfile::tempdir().unwrap();
    let notify_path = sockets.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("a notify socket");
    notify.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut child = Command::new(support::binary())
        .arg("--home")
        .arg(home.path())
        .args(["foreground", "--http", "127.0.0.1:0"])
        .env_remove("SYSTEM_HOME")
        .env("SYSTEM_PLUGIN", support::plugin())
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::null())
        .spawn()
        .expect("system foreground runs");
    let mut buffer = [0; 256];
    let received = |buffer: &mut [u8]| {
        let n = notify.recv(buffer).expect("a notice in time");
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    };
    assert_eq!(received(&mut buffer), "READY=1\n");

    // READY means serving.
    assert_eq!(support::state(home.path()).pid, child.id());
    let daemon = Daemon::adopt(home);
    assert_eq!(daemon.get("/health").0, 200);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(received(&mut buffer), "STOPPING=1\n");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// The soft and hard `Max open files` of a process, from /proc/PID/limits.
fn open_files_limits(pid: i32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("{limits}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[3].to_owned(), fields[4].to_owned())
}

#[test]
fn the_daemon_raises_its_soft_open_files_limit_to_the_hard_limit() {
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let low = hard.min(256);
    let daemon = Daemon::start_with_open_files(low, hard);
    let (soft, daemon_hard) = open_files_limits(daemon.pid);
    assert_eq!(daemon_hard, hard.to_string());
    assert_eq!(soft, daemon_hard);
    if low < hard {
        let said = format!("open files limit: {hard} (raised from {low})");
        daemon.log_containing(&said);
    }
}

#[tokio::test]
async fn connections_beyond_the_open_files_limit_wait_without_affecting_the_others() {
    const LIMIT: u64 = 96;
    let daemon = Daemon::start_with_open_files(LIMIT, LIMIT);
    let mut existing = Client::connect(&daemon).await;
    // Open WebSockets until one is not accepted (the connection cap, kept
    // below the open-files limit: it waits in the backlog).
    let mut flood = Vec::new();
    let refused = loop {
        let connecting = tokio_tungstenite::connect_async(daemon.ws_url());
        match tokio::time::timeout(Duration::from_secs(2), connecting).await {
            Ok(Ok((socket, _))) => flood.push(socket),
            Ok(Err(error)) => break error.to_string(),
            Err(_) => break "not accepted in 2 s".to_owned(),
        }
        assert!(
            flood.len() < LIMIT as usize,
            "more sockets than the limit allows"
        );
    };
    assert!(
        flood.len() > 30,
        "only {} connections: {refused}",
        flood.len()
    );
    eprintln!(
        "{} WebSockets open at the limit of {LIMIT} files; the next: {refused}",
        flood.len()
    );
    // The connections it has are not affected…
    existing.sum(1, "5").await;
    assert_eq!(existing.answer(1).await["result"], "15");
    assert!(daemon.is_alive());
    // …and once some close, new ones are accepted again.
    flood.truncate(flood.len() - 10);
    let mut newcomer = Client::connect(&daemon).await;
    newcomer.sum(2, "13").await;
    assert_eq!(newcomer.answer(2).await["status"], "error");
    daemon.log_containing("HTTP connections open (the cap): new ones wait");
}

#[test]
fn completions_and_the_manual_page_are_printed() {
    let home = tempfile::tempdir().unwrap();
    for (shell, says) in [
        ("bash", "complete -F _system"),
        ("zsh", "#compdef system"),
        ("fish", "complete -c system"),
    ] {
        let output = support::system(home.path(), &["completions", shell]);
        let script = support::text(&output);
        assert!(output.status.success(), "{script}");
        assert!(script.contains(says), "{shell}: {script}");
        assert!(script.contains("log-max-bytes"), "{shell}: {script}");
    }
    let output = support::system(home.path(), &["man"]);
    let page = support::text(&output);
    assert!(output.status.success(), "{page}");
    assert!(page.contains(".TH system 1"), "{page}");
}
