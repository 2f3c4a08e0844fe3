//! The state one scenario run shares between its phases: the daemon, the
//! metrics feed, the round-trip probe, the two control WebSockets, the
//! results so far and the phase marks for the chart; plus the helpers
//! every phase uses (set the load and let it settle, measure a window).
//!
//! It does not decide what a phase measures; `phases` does.

use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{Value, json};

use crate::daemon::Daemon;
use crate::feed::Feed;
use crate::options::Options;
use crate::os;
use crate::probe::Probe;
use crate::stats::{self, round};
use crate::ws::Client;

pub struct Run {
    pub options: Options,
    pub daemon: Daemon,
    pub feed: Feed,
    pub probe: Probe,
    /// Starts the sums (socket A).
    pub control: Client,
    /// Sends the kills (socket B).
    pub other: Client,
    pub results: Vec<Value>,
    /// (daemon ms, label) where each phase began, for the chart.
    pub marks: Vec<(f64, String)>,
    /// Resident memory (MB) before any load.
    pub idle_memory_mb: f64,
    pub load: u64,
    /// Endless sums running: (sum id, pid).
    pub rogues: Vec<(u64, String)>,
    pub next_id: u64,
}

/// What one measurement window saw.
pub struct Window {
    pub rates: Vec<f64>,
    pub rtts: Vec<f64>,
    pub from_ms: f64,
    pub to_ms: f64,
}

impl Run {
    pub fn mark(&mut self, label: &str) {
        eprintln!("scenario: {label} (load average {})", os::loadavg());
        let at = self.feed.now_ms();
        self.marks.push((at, label.to_owned()));
    }

    /// Prints a phase's JSON line and keeps it.
    pub fn emit(&mut self, mut result: Value) {
        if let Some(object) = result.as_object_mut() {
            object.insert("loadavg".into(), Value::String(os::loadavg()));
        }
        println!("{result}");
        self.results.push(result);
    }

    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Sets the load to `jobs` and waits until that many workers run and
    /// one settle period has passed. Returns how long the ramp took.
    pub async fn ensure_load(&mut self, jobs: u64) -> anyhow::Result<Duration> {
        if self.load == jobs && self.feed.latest().is_some_and(|s| s.workers == jobs) {
            return Ok(Duration::ZERO);
        }
        let began = Instant::now();
        self.control.set_load(jobs).await?;
        self.load = jobs;
        let timeout = Duration::from_secs(120);
        if !self.feed.wait_until(timeout, |s| s.workers == jobs).await {
            bail!("{jobs} workers were not running after {timeout:?}");
        }
        let ramp = began.elapsed();
        tokio::time::sleep(self.options.settle()).await;
        Ok(ramp)
    }

    /// Measures jobs/s windows and probe round trips for `length`.
    pub async fn measure(&mut self, length: Duration) -> Window {
        self.probe.resume();
        let from_ms = self.feed.now_ms();
        tokio::time::sleep(length).await;
        self.finish(from_ms).await
    }

    /// Ends a window started at `from_ms` (at least 1.1 s long).
    pub async fn finish(&mut self, from_ms: f64) -> Window {
        self.feed
            .wait_until(Duration::from_secs(5), |s| s.t_ms >= from_ms + 1100.0)
            .await;
        let to_ms = self.feed.now_ms();
        Window {
            rates: stats::one_second_rates(&self.feed.readings(), from_ms, to_ms),
            rtts: self.probe.take(),
            from_ms,
            to_ms,
        }
    }

    /// The usual fields of a phase under load: rates against `self.load`
    /// and the probe's round trips.
    pub fn load_fields(&self, window: &Window) -> Value {
        let target = self.load.max(1) as f64;
        let min = stats::min(&window.rates);
        let median = stats::median(&window.rates);
        let usage: Vec<f64> = self
            .feed
            .all()
            .iter()
            .filter(|s| s.t_ms >= window.from_ms && s.t_ms <= window.to_ms)
            .map(|s| s.scheduler_usage)
            .collect();
        json!({
            "workers": self.load,
            "windows": window.rates.len(),
            "seconds": round((window.to_ms - window.from_ms) / 1000.0, 1),
            "jobs_per_sec_min": round(min, 0),
            "jobs_per_sec_median": round(median, 0),
            "min_pct": round(100.0 * min / target, 2),
            "median_pct": round(100.0 * median / target, 2),
            "scheduler_usage_median": round(stats::median(&usage), 3),
            "probes": window.rtts.len(),
            "probe_failures_total": self.probe.failures(),
            "rtt_p50_ms": round(stats::percentile(&window.rtts, 50.0), 3),
            "rtt_p99_ms": round(stats::percentile(&window.rtts, 99.0), 3),
            "rtt_max_ms": round(stats::max(&window.rtts), 3),
        })
    }

    /// Starts one endless `sum(-1)` on the control socket and remembers its
    /// id and pid in `rogues`.
    pub async fn start_rogue(&mut self) -> anyhow::Result<()> {
        let id = self.next_id();
        self.control
            .send(&json!({"type": "sum", "id": id, "input": "-1"}))
            .await?;
        let reply = self
            .control
            .wait_for(Duration::from_secs(10), |m| {
                m["type"] == "sum" && m["id"] == id
            })
            .await?;
        match reply.message["pid"].as_str() {
            Some(pid) if reply.message["status"] == "calculating" => {
                self.rogues.push((id, pid.to_owned()));
                Ok(())
            }
            _ => bail!("sum(-1) did not start: {}", reply.message),
        }
    }
}

/// Merges the fields of `extra` into `base` (both objects).
pub fn merged(mut base: Value, extra: Value) -> Value {
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        base.extend(extra);
    }
    base
}
