//! End to end, against the real daemon: the synthetic load gives one job
//! per worker per second, stops, fails and restarts as set; the cap holds;
//! `/metrics` is Prometheus text whose counters grow; scheduler usage reads
//! full while a naive sum runs and near zero when idle.
//!
//! Every wait reads the daemon's own metrics samples until a condition
//! holds or a deadline passes; nothing sleeps for a guessed time.

use crate::support;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::support::{Client, Daemon};
use serde_json::{Value, json};

/// Reads metrics samples (skipping other messages) until `done` returns
/// true for the samples so far, or `within` passes. Returns the samples
/// read, oldest first; panics with `what` and the last samples on timeout.
async fn read_samples_until(
    client: &mut Client,
    within: Duration,
    what: &str,
    mut done: impl FnMut(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + within;
    let mut samples = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = match tokio::time::timeout(left, client.next()).await {
            Ok(Some(message)) => message,
            Ok(None) => panic!("the connection closed while waiting for {what}"),
            Err(_) => {
                let last: Vec<_> = samples.iter().rev().take(5).collect();
                panic!("no {what} within {within:?}; last samples: {last:#?}");
            }
        };
        if message["type"] != "metrics" {
            client.seen.push(message);
            continue;
        }
        samples.push(message["sample"].clone());
        if done(&samples) {
            return samples;
        }
    }
}

fn number(sample: &Value, field: &str) -> f64 {
    sample[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is a number in {sample}"))
}

/// Jobs per second over the last ≥ 1 s of `samples`, from the job counter.
fn rate_over_last_second(samples: &[Value], counter: &str) -> Option<f64> {
    let last = samples.last()?;
    let t = number(last, "t_ms");
    let first = samples
        .iter()
        .rev()
        .find(|s| t - number(s, "t_ms") >= 1000.0)?;
    let seconds = (t - number(first, "t_ms")) / 1000.0;
    Some((number(last, counter) - number(first, counter)) / seconds)
}

async fn subscribed(daemon: &Daemon) -> Client {
    let mut client = Client::connect(daemon).await;
    client
        .send(json!({"type": "subscribe", "topic": "metrics"}))
        .await;
    client.expect(|m| m["type"] == "history").await;
    client
}

async fn set_load(client: &mut Client, request: Value) -> Value {
    let mut message = request;
    message["type"] = json!("load");
    client.send(message).await;
    client
        .expect(|m| m["type"] == "load" || m["type"] == "error")
        .await
}

#[tokio::test]
async fn ten_thousand_workers_do_ten_thousand_jobs_a_second_and_zero_stops_them() {
    let daemon = Daemon::start();
    let mut client = subscribed(&daemon).await;
    let reply = set_load(&mut client, json!({"jobs": 10_000})).await;
    assert_eq!(reply["type"], "load", "{reply}");
    assert_eq!(reply["jobs"], 10_000);

    let samples = read_samples_until(
        &mut client,
        Duration::from_secs(3),
        "10,000 workers doing 9,500–10,500 jobs/s over 1 s",
        |samples| {
            let workers = number(samples.last().expect("a sample"), "workers");
            let rate = rate_over_last_second(samples, "jobs_total");
            workers == 10_000.0 && rate.is_some_and(|r| (9_500.0..=10_500.0).contains(&r))
        },
    )
    .await;
    let rate = rate_over_last_second(&samples, "jobs_total").unwrap_or_default();
    eprintln!("10,000 workers: {rate:.0} jobs/s over the last 1 s");
    let window = &samples[samples.len().saturating_sub(10)..];
    let reported = window
        .iter()
        .map(|s| number(s, "jobs_per_sec"))
        .sum::<f64>()
        / window.len() as f64;
    assert!(
        (9_000.0..=11_000.0).contains(&reported),
        "the reported jobs_per_sec average {reported} over the last 1 s"
    );

    let reply = set_load(&mut client, json!({"jobs": 0})).await;
    assert_eq!(reply["jobs"], 0, "{reply}");
    let samples = read_samples_until(
        &mut client,
        Duration::from_secs(2),
        "0 workers",
        |samples| number(samples.last().expect("a sample"), "workers") == 0.0,
    )
    .await;
    assert!(number(samples.last().expect("a sample"), "processes") < 100.0);
    let (_, body) = daemon.get("/api/load");
    let load: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(load["workers"], 0, "{load}");
}

#[tokio::test]
async fn failing_jobs_are_counted_and_their_workers_restarted() {
    const N: f64 = 2_000.0;
    let daemon = Daemon::start();
    let mut client = subscribed(&daemon).await;
    let reply = set_load(&mut client, json!({"jobs": 2_000, "failure_rate": 50})).await;
    assert_eq!(reply["failure_rate"], 50.0, "{reply}");

    let mut reached = false;
    let samples = read_samples_until(
        &mut client,
        Duration::from_secs(10),
        "more failures than workers, with jobs still succeeding",
        |samples| {
            let last = samples.last().expect("a sample");
            let workers = number(last, "workers");
            if reached {
                assert_eq!(workers, N, "the worker count stays at N: {last}");
            }
            reached |= workers == N;
            // Each worker fails at most once per life: more failures than
            // workers means crashed workers were restarted (and failed again).
            reached
                && number(last, "failed_total") > 2.0 * N
                && number(last, "failed_per_sec") > 0.0
                && rate_over_last_second(samples, "jobs_total").is_some_and(|r| r > N / 4.0)
        },
    )
    .await;
    let last = samples.last().expect("a sample");
    assert_eq!(number(last, "failure_rate"), 50.0);

    let (_, body) = daemon.get("/api/load");
    let load: Value = serde_json::from_str(&body).expect("JSON");
    assert!(
        load["restarts_total"].as_u64().unwrap_or(0) > 2_000,
        "{load}"
    );
    assert!(
        !daemon.log().contains("crash report: process load_worker"),
        "worker crashes are counted, not logged one by one"
    );
}

#[tokio::test]
async fn the_default_cap_refuses_more_than_two_million_workers() {
    let daemon = Daemon::start();
    let (status, body) = daemon.post("/api/load", r#"{"jobs":2000001}"#);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("cap of 2000000"), "{body}");

    let mut client = Client::connect(&daemon).await;
    let reply = set_load(&mut client, json!({"jobs": 2_000_001})).await;
    assert_eq!(reply["type"], "error", "{reply}");
    let message = reply["message"].as_str().unwrap_or_default();
    assert!(message.contains("above the cap of 2000000"), "{message}");

    let (status, body) = daemon.post("/api/load", r#"{"failure_rate":150}"#);
    assert_eq!(status, 400, "{body}");
    let (status, body) = daemon.post("/api/load", "{not json");
    assert_eq!(status, 400, "{body}");

    let (_, body) = daemon.get("/api/load");
    let load: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(load["jobs"], 0, "a refused setting changes nothing: {load}");
    assert_eq!(load["max_load"], 2_000_000);
}

#[tokio::test]
async fn max_load_sets_the_cap() {
    let daemon = Daemon::start_with(&["--max-load", "1000"]);
    let (status, body) = daemon.post("/api/load", r#"{"jobs":1001}"#);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("cap of 1000"), "{body}");
    let (status, body) = daemon.post("/api/load", r#"{"jobs":1000}"#);
    assert_eq!(status, 200, "{body}");
    let setting: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(setting["jobs"], 1000);
}

/// Parses Prometheus text format: every sample line's metric has a TYPE.
fn parse_prometheus(text: &str) -> HashMap<String, (String, f64)> {
    let mut types = HashMap::new();
    let mut values = HashMap::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(["counter", "gauge"].contains(&kind), "{line}");
            types.insert(name.to_owned(), kind.to_owned());
        } else if line.starts_with("# HELP ") {
            continue;
        } else {
            assert!(!line.starts_with('#'), "unknown comment {line:?}");
            let (series, value) = line.rsplit_once(' ').expect("name value");
            // `name` or `name{label="value",…}`.
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                    && !name.starts_with(|c: char| c.is_ascii_digit()),
                "metric name {name:?}"
            );
            if !labels.is_empty() {
                let labels = labels.strip_suffix('}').expect("labels end with }");
                for label in labels.split(',') {
                    let (key, quoted) = label.split_once('=').expect("label=\"value\"");
                    assert!(
                        key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                        "{line}"
                    );
                    assert!(
                        quoted.len() >= 2 && quoted.starts_with('"') && quoted.ends_with('"'),
                        "{line}"
                    );
                }
            }
            let value: f64 = value.trim().parse().expect("a float value");
            let kind = types
                .get(name)
                .unwrap_or_else(|| panic!("no TYPE for {name}"));
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter {name}");
            }
            values.insert(series.to_owned(), (kind.clone(), value));
        }
    }
    values
}

#[tokio::test]
async fn metrics_endpoint_is_prometheus_text_and_its_counters_grow() {
    let daemon = Daemon::start();
    let (status, body) = daemon.post("/api/load", r#"{"jobs":1000}"#);
    assert_eq!(status, 200, "{body}");
    let read = || {
        let (status, body) = daemon.get("/metrics");
        assert_eq!(status, 200, "{body}");
        parse_prometheus(&body)
    };
    let first = read();
    for (name, kind) in [
        ("system_jobs_succeeded_total", "counter"),
        ("system_jobs_failed_total", "counter"),
        ("system_load_workers", "gauge"),
        ("system_jobs_per_second", "gauge"),
        ("system_scheduler_usage_ratio", "gauge"),
        ("system_processes", "gauge"),
        ("system_memory_resident_bytes", "gauge"),
    ] {
        assert_eq!(
            first.get(name).map(|(k, _)| k.as_str()),
            Some(kind),
            "{name}"
        );
    }
    assert!(first["system_memory_resident_bytes"].1 > 0.0);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = read();
        let (before, after) = (
            first["system_jobs_succeeded_total"].1,
            now["system_jobs_succeeded_total"].1,
        );
        if after > before + 500.0 && now["system_load_workers"].1 == 1000.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the job counter did not grow: {before} → {after}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn mean_usage(samples: &[Value]) -> f64 {
    samples
        .iter()
        .map(|s| number(s, "scheduler_usage"))
        .sum::<f64>()
        / samples.len() as f64
}

#[tokio::test]
async fn scheduler_usage_is_full_during_a_naive_sum_and_near_zero_when_idle() {
    let daemon = Daemon::start();
    let mut client = subscribed(&daemon).await;
    let idle =
        |samples: &[Value]| samples.len() >= 10 && mean_usage(&samples[samples.len() - 10..]) < 0.1;
    read_samples_until(&mut client, Duration::from_secs(10), "an idle second", idle).await;

    client.sum(1, "999999999").await;
    client.calculating(1).await;
    let started = Instant::now();
    let mut answered = None;
    let mut busiest: f64 = 0.0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while answered.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, client.next())
            .await
            .expect("the sum ends within 60 s")
            .expect("the connection stays open");
        match message["type"].as_str() {
            Some("metrics") => busiest = busiest.max(number(&message["sample"], "scheduler_usage")),
            Some("sum") if message["id"] == 1 => answered = Some(message),
            _ => {}
        }
    }
    let answer = answered.expect("answered");
    eprintln!(
        "sum took {:?}; busiest sample {busiest:.3}",
        started.elapsed()
    );
    assert_eq!(answer["status"], "done", "{answer}");
    // How much of a core the scheduler gets depends on the machine (the
    // figure, ~100 %, is the benchmark's naive phase); an idle second reads
    // under 0.1 (below), so this tells a busy scheduler from an idle one.
    assert!(
        busiest >= 0.3,
        "the busiest sample during the sum read {busiest}"
    );

    read_samples_until(
        &mut client,
        Duration::from_secs(5),
        "an idle second after the sum",
        idle,
    )
    .await;
}

/// `rpc --json` on the admin socket.
fn rpc(daemon: &Daemon, script: &str) -> Value {
    let output = daemon.system(&["rpc", "--json", script]);
    assert!(
        output.status.success(),
        "{script}: {}",
        support::text(&output)
    );
    serde_json::from_slice(&output.stdout).expect("rpc --json prints JSON")
}

/// The priority of every load worker, as `Process.info` reports it.
fn worker_priorities(daemon: &Daemon) -> Vec<Value> {
    let priorities = rpc(
        daemon,
        r#"Process.list().filter(|pid| Process.info(pid, :name) == "load_worker").map(|pid| Process.info(pid, :priority)).filter(|p| p != ())"#,
    );
    priorities.as_array().expect("a list").clone()
}

#[test]
fn the_console_sets_the_workers_priority_and_they_make_way_within_a_second() {
    let daemon = Daemon::start();
    let state = rpc(&daemon, "Load.set(300)");
    assert_eq!(state["priority"], "low", "{state}");
    support::eventually(Duration::from_secs(10), "300 low workers", || {
        let priorities = worker_priorities(&daemon);
        priorities.len() == 300 && priorities.iter().all(|p| p == "low")
    });

    let state = rpc(&daemon, "Load.priority(:normal)");
    assert_eq!(state["priority"], "normal", "{state}");
    support::eventually(Duration::from_secs(10), "300 normal workers", || {
        let priorities = worker_priorities(&daemon);
        priorities.len() == 300 && priorities.iter().all(|p| p == "normal")
    });
    let state = rpc(&daemon, "Load.get()");
    assert_eq!(state["restarts"], 0, "making way is not a restart: {state}");
    let saved = std::fs::read_to_string(daemon.home().join("load.json")).expect("load.json");
    assert!(saved.contains(r#""priority":"normal""#), "{saved}");

    let output = daemon.system(&["rpc", "Load.priority(:urgent)"]);
    assert!(!output.status.success());
    assert!(
        support::text(&output).contains("not a priority: \"urgent\" (high, normal or low)"),
        "{}",
        support::text(&output)
    );
    assert_eq!(rpc(&daemon, "Load.get()")["priority"], "normal");
}
