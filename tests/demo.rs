//! The talk's whole demo (docs/demo.md) as one unattended end-to-end test
//! against the real daemon with one scheduler: load 10,000; three browser
//! WebSockets open throughout; Part 1 (13 crashes), Part 2 (a long naive
//! sum), Part 3 (-1 found, traced and killed from the console), Part 4 (the
//! fix built from an edited copy of the plugin and hot-upgraded). Across the
//! run: no disconnects, exactly one final answer per submission, and the
//! successful-jobs rate in every 1-s window (the minimum is printed).
//!
//! It drives only the daemon's public surfaces (WebSocket, `system rpc`,
//! `system upgrade`, the log); it must not edit the repository's sources.

use crate::plugin_copies;
use crate::support;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{Client, Daemon, PATIENCE, text};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// The demo's synthetic load.
const JOBS: u64 = 10_000;
/// The lowest successful-jobs rate this test accepts in any 1-s window, as a
/// fraction of [`JOBS`]: a collapse (a runaway or a long sum holding the
/// scheduler stops the jobs), not a dip. The talk's 99 % is a speed target:
/// the release benchmark measures it (`scenario`, phases rogues and kill);
/// this test runs a debug daemon on a shared machine, and prints the minimum.
const MIN_RATE: f64 = 0.5;
/// How long the sum of 999,999,999 may take with the naive (release) loop.
const LONG_SUM: Duration = Duration::from_secs(120);

/// What one browser tab saw.
#[derive(Default)]
struct Seen {
    /// Every `sum` message per submission id, in order.
    sums: HashMap<i64, Vec<Value>>,
    /// Metrics samples, oldest first (the load page only).
    samples: Vec<Value>,

    /// Other messages, oldest first.
    other: Vec<Value>,
    /// The connection ended (it never should).
    closed: bool,
}

/// A browser tab: a WebSocket read all the time by a task, so nothing is
/// missed while the test waits elsewhere.
struct Tab {
    name: &'static str,
    send: mpsc::UnboundedSender<Value>,
    seen: Arc<Mutex<Seen>>,
    submitted: Vec<i64>,
    next_id: i64,
}

impl Tab {
    async fn open(daemon: &Daemon, name: &'static str) -> Tab {
        let mut client = Client::connect(daemon).await;
        let (send, mut outbox) = mpsc::unbounded_channel::<Value>();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let record = seen.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    message = outbox.recv() => match message {
                        Some(message) => client.send(message).await,
                        None => return,
                    },
                    message = client.next() => {
                        let mut seen = record.lock().expect("seen");
                        let Some(message) = message else {
                            seen.closed = true;
                            return;
                        };
                        match message["type"].as_str() {
                            Some("sum") => {
                                let id = message["id"].as_i64().unwrap_or(-1);
                                seen.sums.entry(id).or_default().push(message);
                            }
                            Some("metrics") => seen.samples.push(message["sample"].clone()),
                            Some("history") => {}
                            _ => seen.other.push(message),
                        }
                    }
                }
            }
        });
        Tab {
            name,
            send,
            seen,
            submitted: Vec::new(),
            next_id: 1,
        }
    }

    fn send(&self, message: Value) {
        self.send.send(message).expect("the tab's task runs");
    }

    /// Types `input` in the sum box; returns the submission's id.
    fn submit(&mut self, input: &str) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        self.submitted.push(id);
        self.send(json!({"type": "sum", "id": id, "input": input}));
        id
    }

    /// Waits (at most `patience`) until `found` finds something in what the tab saw.
    async fn wait_for<T>(
        &self,
        patience: Duration,
        what: &str,
        found: impl Fn(&Seen) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + patience;
        loop {
            {
                let seen = self.seen.lock().expect("seen");
                if let Some(value) = found(&seen) {
                    return value;
                }
                assert!(!seen.closed, "{}: the WebSocket closed", self.name);
            }
            assert!(
                Instant::now() < deadline,
                "{}: no {what} within {patience:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The final answer (done, error or invalid) to submission `id`.
    async fn answer(&self, id: i64, patience: Duration) -> Value {
        self.wait_for(patience, &format!("answer to sum {id}"), |seen| {
            seen.sums
                .get(&id)?
                .iter()
                .find(|m| m["status"] != "calculating")
                .cloned()
        })
        .await
    }

    /// The pid of submission `id`, from its `calculating` message.
    async fn pid(&self, id: i64) -> String {
        self.wait_for(PATIENCE, &format!("calculating for sum {id}"), |seen| {
            seen.sums
                .get(&id)?
                .iter()
                .find(|m| m["status"] == "calculating")
                .and_then(|m| m["pid"].as_str().map(str::to_owned))
        })
        .await
    }

    fn samples(&self) -> Vec<Value> {
        self.seen.lock().expect("seen").samples.clone()
    }

    /// Metrics samples from time `from_ms` (daemon time) on.
    fn samples_since(&self, from_ms: f64) -> Vec<Value> {
        self.samples()
            .into_iter()
            .filter(|s| number(s, "t_ms") >= from_ms)
            .collect()
    }

    fn latest_t_ms(&self) -> f64 {
        self.samples().last().map_or(0.0, |s| number(s, "t_ms"))
    }

    /// Every submission got exactly one final answer, after at most one
    /// `calculating`, and nothing arrived for ids never submitted.
    fn assert_one_answer_each(&self) {
        let seen = self.seen.lock().expect("seen");
        assert!(!seen.closed, "{}: the WebSocket closed", self.name);
        for id in seen.sums.keys() {
            assert!(
                self.submitted.contains(id),
                "{}: sum {id} was never submitted",
                self.name
            );
        }
        for id in &self.submitted {
            let messages = seen.sums.get(id).map(Vec::as_slice).unwrap_or_default();
            let finals = messages
                .iter()
                .filter(|m| m["status"] != "calculating")
                .count();
            let calculating = messages.len() - finals;
            assert_eq!(finals, 1, "{}: sum {id} got {messages:?}", self.name);
            assert!(calculating <= 1, "{}: sum {id} got {messages:?}", self.name);
            assert_ne!(
                messages.last().map(|m| m["status"].clone()),
                Some(json!("calculating")),
                "{}: sum {id}'s final answer came first: {messages:?}",
                self.name
            );
        }
    }
}

fn number(sample: &Value, field: &str) -> f64 {
    sample[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is a number in {sample}"))
}

/// The successful-jobs rate of every 1-s window of `samples` (from each
/// sample to the first one at least 1 s later), per second.
fn one_second_rates(samples: &[Value]) -> Vec<(f64, f64)> {
    let succeeded = |s: &Value| number(s, "jobs_total");
    let mut rates = Vec::new();
    let mut end = 0;
    for (start, first) in samples.iter().enumerate() {
        let t0 = number(first, "t_ms");
        end = end.max(start);
        while end < samples.len() && number(&samples[end], "t_ms") - t0 < 1000.0 {
            end += 1;
        }
        let Some(last) = samples.get(end) else {
            break;
        };
        let seconds = (number(last, "t_ms") - t0) / 1000.0;
        rates.push((t0, (succeeded(last) - succeeded(first)) / seconds));
    }
    rates
}

fn mean_usage(samples: &[Value]) -> f64 {
    samples
        .iter()
        .map(|s| number(s, "scheduler_usage"))
        .sum::<f64>()
        / samples.len().max(1) as f64
}

fn median_usage(samples: &[Value]) -> f64 {
    let mut usages: Vec<f64> = samples
        .iter()
        .map(|s| number(s, "scheduler_usage"))
        .collect();
    usages.sort_by(f64::total_cmp);
    usages.get(usages.len() / 2).copied().unwrap_or(0.0)
}

/// `system rpc --json SCRIPT` (off the test's runtime threads): its value.
async fn rpc(home: &Path, script: &str) -> Value {
    let home = home.to_path_buf();
    let script = script.to_owned();
    tokio::task::spawn_blocking(move || {
        let output = support::system(&home, &["rpc", "--json", &script]);
        assert!(output.status.success(), "{script}: {}", text(&output));
        serde_json::from_slice::<Value>(&output.stdout).expect("rpc --json prints JSON")
    })
    .await
    .expect("the rpc thread")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_demo() {
    // Daemon-independent work first, so it does not disturb the measured run:
    // the plugin as shipped (with its bugs) and the fixed one, release builds.
    let original = plugin_copies::plugin_copy("original", &[]);
    let fixed = plugin_copies::plugin_copy("fixed", plugin_copies::DEMO_FIX);
    plugin_copies::prebuild("original", &original);
    plugin_copies::prebuild("fixed", &fixed);

    // Setup: the daemon with one scheduler and the release plugin as shipped.
    let shipped = plugin_copies::copy_library("original");
    let shipped = shipped.to_str().expect("a UTF-8 path");
    let daemon = Daemon::start_with(&["--schedulers", "1", "--plugin", shipped]);
    let home = daemon.home().to_path_buf();
    let info = rpc(&home, "System.info()").await;
    assert_eq!(info["schedulers"], 1, "{info}");
    assert_eq!(info["plugin_version"], "1.0.0", "{info}");

    // Three tabs: /load (metrics), / (the sum page) and /top.
    let load = Tab::open(&daemon, "load page").await;
    let mut page = Tab::open(&daemon, "sum page").await;
    let top = Tab::open(&daemon, "top page").await;
    load.send(json!({"type": "subscribe", "topic": "metrics"}));
    top.send(json!({"type": "subscribe", "topic": "top"}));

    // Introduction: 10,000 jobs; wait until the rate has settled at 10k/s.
    load.send(json!({"type": "load", "jobs": JOBS}));
    let settled_at = load
        .wait_for(Duration::from_secs(30), "a settled 10k jobs/s", |seen| {
            let rates = one_second_rates(&seen.samples);
            let (t, _) = rates.iter().find(|(t, rate)| {
                *rate >= 0.99 * JOBS as f64
                    && seen
                        .samples
                        .iter()
                        .any(|s| number(s, "t_ms") <= *t && number(s, "workers") == JOBS as f64)
            })?;
            Some(*t)
        })
        .await;
    let five = page.submit("5");
    assert_eq!(page.answer(five, PATIENCE).await["result"], "15");

    // Part 1: 13 crashes; the log has the crash report; the tab lives on.
    let thirteen = page.submit("13");
    let crashed = page.answer(thirteen, PATIENCE).await;
    assert_eq!(crashed["status"], "error", "{crashed}");
    assert_eq!(crashed["reason"], "error", "{crashed}");
    let log = daemon.log_containing("Math.sum(13)");
    assert!(
        log.lines()
            .any(|l| l.contains("crash report") && l.contains("Math.sum(13)")),
        "no crash report for Math.sum(13) in the log:\n{log}"
    );

    // Part 2: a long naive sum pegs the scheduler; the system still answers.
    let started_ms = load.latest_t_ms();
    let long = page.submit("999999999");
    page.pid(long).await;
    let meanwhile = page.submit("5");
    let quick = page.answer(meanwhile, PATIENCE).await;
    assert_eq!(quick["result"], "15", "{quick}");
    // Answered while the long sum still runs (it takes seconds of a core):
    // the scheduler was shared, not held.
    assert!(
        page.seen.lock().expect("seen").sums[&long]
            .iter()
            .all(|m| m["status"] == "calculating"),
        "the long sum ended before sum(5) was answered"
    );
    let answer = page.answer(long, LONG_SUM).await;
    assert_eq!(answer["result"], "499999999500000000", "{answer}");
    // Samples are taken every 100 ms; wait for the one covering the end.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let during = load.samples_since(started_ms);
    let busiest = during
        .iter()
        .map(|s| number(s, "scheduler_usage"))
        .fold(0.0, f64::max);
    println!(
        "Part 2: busiest scheduler sample {busiest:.3} over {} samples",
        during.len()
    );
    // The long sum shows as a busy scheduler (the figure itself, ~100 %, is
    // the benchmark's naive phase: here the machine may be shared).
    assert!(
        busiest >= 0.5,
        "scheduler usage during the long sum peaked at {busiest}"
    );

    // Part 3: -1 runs away; the console finds it, traces it and kills it.
    let runaway = page.submit("-1");
    let runaway_pid = page.pid(runaway).await;
    let runaway_ms = load.latest_t_ms();
    let top_rows = rpc(&home, "Runtime.top()").await;
    assert_eq!(top_rows[0]["pid"], runaway_pid.as_str(), "{top_rows}");
    assert_eq!(top_rows[0]["name"], "sum", "{top_rows}");
    let pid = format!("pid(\"{runaway_pid}\")");
    let stack = rpc(&home, &format!("Process.info({pid}, :current_stacktrace)")).await;
    // Inside a poll its native frames come first (issue 25); the frame the
    // plugin recorded follows them, or comes first between polls.
    let frames: Vec<&str> = stack
        .as_array()
        .map(|frames| frames.iter().filter_map(|f| f.as_str()).collect())
        .unwrap_or_default();
    assert!(
        frames
            .iter()
            .any(|f| f.starts_with("math_plugin::calc_sum(")),
        "{stack}"
    );
    assert_eq!(frames.last(), Some(&"Math.sum(-1)"), "{stack}");
    let trace = rpc(&home, &format!("Runtime.trace({pid})")).await;
    let calls = trace.as_array().expect("a list of calls");
    assert!(!calls.is_empty(), "{trace}");
    assert!(
        calls.iter().all(|c| c
            .as_str()
            .is_some_and(|c| c.starts_with("math_plugin::calc_sum("))),
        "{trace}"
    );
    let looping_samples = load.samples_since(runaway_ms);
    let looping = median_usage(&looping_samples);
    let usages: Vec<String> = looping_samples
        .iter()
        .map(|s| format!("{:.2}", number(s, "scheduler_usage")))
        .collect();
    println!(
        "Part 3: scheduler usage samples while -1 ran: {}",
        usages.join(" ")
    );
    assert_eq!(
        rpc(&home, &format!("Process.kill({pid}, :kill)")).await,
        true
    );
    let killed = page.answer(runaway, PATIENCE).await;
    assert_eq!(killed["status"], "error", "{killed}");
    assert_eq!(killed["reason"], "killed", "{killed}");
    let killed_ms = load.latest_t_ms();
    let after = load
        .wait_for(
            Duration::from_secs(20),
            "CPU dropping after the kill",
            |seen| {
                let window: Vec<Value> = seen
                    .samples
                    .iter()
                    .filter(|s| number(s, "t_ms") > killed_ms + 200.0)
                    .take(10)
                    .cloned()
                    .collect();
                (window.len() == 10).then(|| mean_usage(&window))
            },
        )
        .await;
    println!(
        "Part 3: scheduler usage {looping:.3} (median) while -1 ran, {after:.3} (mean of 1 s) after the kill"
    );
    // A runaway shows, and its kill shows: relative, since how much of a
    // core the scheduler gets depends on the machine (the figures are the
    // benchmark's, phases rogues and kill).
    assert!(
        after < looping / 2.0,
        "CPU did not drop: {looping} -> {after}"
    );

    // Part 4: the fix, built from an edited copy (docs/demo.md's edit), hot-upgraded.
    let home_for_upgrade = home.clone();
    let upgrade = tokio::task::spawn_blocking(move || {
        plugin_copies::upgrade_from_copy(&home_for_upgrade, "fixed", &fixed)
    })
    .await
    .expect("the upgrade thread");
    let said = text(&upgrade);
    assert!(upgrade.status.success(), "{said}");
    assert!(said.contains("Upgrade finished successfully."), "{said}");
    assert!(said.contains("v1 (1.0.0) -> v2 (1.1.0)"), "{said}");
    let switch = said
        .lines()
        .find(|l| l.starts_with("switch took"))
        .unwrap_or("no switch time");
    println!("Part 4: {switch}");
    let fixed_13 = page.submit("13");
    assert_eq!(page.answer(fixed_13, PATIENCE).await["result"], "91");
    let negative = page.submit("-1");
    let refused = page.answer(negative, PATIENCE).await;
    assert_eq!(refused["status"], "invalid", "{refused}");
    let asked = Instant::now();
    let big = page.submit("999999999");
    let fast = page.answer(big, PATIENCE).await;
    let took = asked.elapsed();
    assert_eq!(fast["result"], "499999999500000000", "{fast}");
    println!("Part 4: 999999999 answered in {took:?}");
    // The fix is the formula, not a faster loop: a sum the naive loop would
    // take many minutes over answers within the test's patience.
    let huge = page.submit("1000000000000");
    let formula = page.answer(huge, PATIENCE).await;
    assert_eq!(formula["result"], "500000000000500000000000", "{formula}");
    daemon.log_containing("code upgrade: math_plugin v1 (1.0.0) -> v2 (1.1.0), sha256 ");

    // Across the run: every tab still connected, one answer per submission,
    // and the jobs rate held in every 1-s window since it settled.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for tab in [&load, &page, &top] {
        tab.assert_one_answer_each();
    }
    assert!(
        top.seen
            .lock()
            .expect("seen")
            .other
            .iter()
            .any(|m| m["type"] == "top"),
        "the top page got its rows"
    );
    let rates: Vec<(f64, f64)> = one_second_rates(&load.samples())
        .into_iter()
        .filter(|(t, _)| *t >= settled_at)
        .collect();
    assert!(rates.len() > 40, "too few windows: {}", rates.len());
    let (worst_at, worst) = rates
        .iter()
        .copied()
        .fold((0.0, f64::INFINITY), |a, b| if b.1 < a.1 { b } else { a });
    println!(
        "jobs rate: minimum {worst:.0} jobs/s ({:.1} % of {JOBS}) in a 1-s window (at t={:.1} s) over {} windows; bound {:.0}",
        worst / JOBS as f64 * 100.0,
        worst_at / 1000.0,
        rates.len(),
        MIN_RATE * JOBS as f64
    );
    if worst < MIN_RATE * JOBS as f64 {
        let table: Vec<String> = rates
            .iter()
            .map(|(t, rate)| format!("{:.1}s:{rate:.0}", t / 1000.0))
            .collect();
        panic!(
            "the jobs rate fell to {worst:.0}/s at t={worst_at} ms; per window: {}",
            table.join(" ")
        );
    }
    let failed = load
        .samples()
        .last()
        .map_or(0.0, |s| number(s, "failed_total"));
    assert_eq!(failed, 0.0, "load jobs failed");
}
