//! Live metrics: the `metrics_sampler` process takes a [`Sample`] every
//! 100 ms (job rates, workers, scheduler usage, processes, memory), keeps
//! the last 60 s of them and broadcasts each to subscribers; `/metrics`
//! renders the same figures in Prometheus text format.
//!
//! It only reads counters; it never changes the load or the runtime.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::node::Node;
use system_runtime::ProcessContext;
use system_runtime::usage::UsageMeter;

/// Time between two samples.
pub const PERIOD: Duration = Duration::from_millis(100);

/// Samples kept: 60 s of history.
pub const HISTORY: usize = 600;

/// Samples a slow subscriber may fall behind before it skips some.
const FEED_CAPACITY: usize = 64;

/// One reading, as the `metrics` WebSocket message carries it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Sample {
    /// Milliseconds since the daemon started.
    pub t_ms: u64,
    /// Successful jobs per second over the last interval.
    pub jobs_per_sec: f64,
    /// Failed jobs per second over the last interval.
    pub failed_per_sec: f64,
    /// Load workers running.
    pub workers: u64,
    /// The failure rate setting, in percent.
    pub failure_rate: f64,
    /// Busy fraction (0.0–1.0) of all schedulers over the last interval.
    pub scheduler_usage: f64,
    pub schedulers: usize,
    /// Processes in the registry.
    pub processes: usize,
    /// Resident memory of the daemon, in MB (10^6 bytes).
    pub memory_mb: f64,
    /// Successful jobs since the daemon started.
    pub jobs_total: u64,
    /// Failed jobs since the daemon started.
    pub failed_total: u64,
}

/// A subscriber's stream of samples.
pub type Feed = broadcast::Receiver<Sample>;

/// The history of samples and the feed of new ones; one per node.
pub struct Metrics {
    history: Mutex<VecDeque<Sample>>,
    feed: broadcast::Sender<Sample>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            history: Mutex::new(VecDeque::with_capacity(HISTORY)),
            feed: broadcast::channel(FEED_CAPACITY).0,
        }
    }

    fn history(&self) -> MutexGuard<'_, VecDeque<Sample>> {
        crate::lock(&self.history)
    }

    /// Adds a sample to the history and sends it to every subscriber.
    pub fn record(&self, sample: Sample) {
        let mut history = self.history();
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(sample);
        // Sent under the lock, so a subscriber sees each sample exactly once.
        let _ = self.feed.send(sample);
    }

    /// The history (oldest first) and a feed that continues it without a gap.
    pub fn subscribe(&self) -> (Vec<Sample>, Feed) {
        let history = self.history();
        (history.iter().copied().collect(), self.feed.subscribe())
    }

    pub fn latest(&self) -> Option<Sample> {
        self.history().back().copied()
    }

    /// Forgets the history (the reset button).
    pub fn clear(&self) {
        self.history().clear();
    }
}

/// The next sample of `feed`; `None` if the subscriber fell behind (the
/// missed samples are skipped) or the feed closed (then `feed` becomes
/// `None`). Never resolves without a feed.
pub async fn next_sample(feed: &mut Option<Feed>) -> Option<Sample> {
    match feed {
        Some(rx) => match rx.recv().await {
            Ok(sample) => Some(sample),
            Err(broadcast::error::RecvError::Lagged(_)) => None,
            Err(broadcast::error::RecvError::Closed) => {
                *feed = None;
                None
            }
        },
        None => std::future::pending().await,
    }
}

/// The `metrics_sampler` process: one sample every [`PERIOD`] until the daemon stops.
pub async fn sample_forever(ctx: ProcessContext, node: Arc<Node>) {
    ctx.enter(&"Metrics.Sampler.loop/1");
    let mut meter = UsageMeter::new(node.scheduler.clone());
    // On the runtime's timer wheel; a late tick moves the next one back.
    let mut next = tokio::time::Instant::now() + PERIOD;
    let mut previous = Totals::read(&node);
    loop {
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = ctx.sleep_until(next) => {}
        }
        next += PERIOD;
        let now = tokio::time::Instant::now();
        if next <= now {
            next = now + PERIOD;
        }
        ctx.enter(&"Metrics.Sampler.sample/1");
        let totals = Totals::read(&node);
        node.metrics
            .record(sample(&node, &previous, &totals, meter.sample()));
        previous = totals;
        ctx.enter(&"Metrics.Sampler.loop/1");
    }
}

/// Counters read at one instant.
struct Totals {
    at: Instant,
    succeeded: u64,
    failed: u64,
}

impl Totals {
    fn read(node: &Node) -> Totals {
        Totals {
            at: Instant::now(),
            succeeded: node.load.succeeded(),
            failed: node.load.failed(),
        }
    }
}

fn sample(node: &Node, previous: &Totals, now: &Totals, scheduler_usage: f64) -> Sample {
    let seconds = now.at.duration_since(previous.at).as_secs_f64();
    let rate = |before: u64, after: u64| {
        if seconds > 0.0 {
            after.saturating_sub(before) as f64 / seconds
        } else {
            0.0
        }
    };
    Sample {
        t_ms: now.at.duration_since(node.started).as_millis() as u64,
        jobs_per_sec: rate(previous.succeeded, now.succeeded),
        failed_per_sec: rate(previous.failed, now.failed),
        workers: node.load.workers(),
        failure_rate: node.load.failure_rate(),
        scheduler_usage,
        schedulers: node.schedulers,
        processes: node.registry.count(),
        memory_mb: resident_bytes().unwrap_or(0) as f64 / 1e6,
        jobs_total: now.succeeded,
        failed_total: now.failed,
    }
}

/// The daemon's resident set size, from `/proc/self/statm` (resident pages
/// × page size). The file stays open and is re-read from its start: the
/// sampler asks ten times a second, and opening `/proc/self/status` each
/// time was most of an idle daemon's CPU.
pub fn resident_bytes() -> Option<u64> {
    use std::os::unix::fs::FileExt;
    static STATM: OnceLock<Option<(std::fs::File, u64)>> = OnceLock::new();
    let (statm, page_size) = STATM
        .get_or_init(|| {
            let file = std::fs::File::open("/proc/self/statm").ok()?;
            let page_size = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok()??;
            Some((file, u64::try_from(page_size).ok()?))
        })
        .as_ref()?;
    let mut buffer = [0u8; 128];
    let length = statm.read_at(&mut buffer, 0).ok()?;
    let text = std::str::from_utf8(&buffer[..length]).ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size)
}

/// `/metrics`: counters for jobs, gauges for the rest, in Prometheus text format.
pub fn prometheus(node: &Node) -> String {
    let latest = node.metrics.latest().unwrap_or_default();
    let load = &node.load;
    let metrics: [(&str, &str, &str, f64); 15] = [
        (
            "system_jobs_succeeded_total",
            "counter",
            "Synthetic jobs that succeeded.",
            load.succeeded() as f64,
        ),
        (
            "system_jobs_failed_total",
            "counter",
            "Synthetic jobs that failed (panicked).",
            load.failed() as f64,
        ),
        (
            "system_load_worker_restarts_total",
            "counter",
            "Load workers restarted after a crash.",
            load.restarts() as f64,
        ),
        (
            "system_load_jobs",
            "gauge",
            "Load setting: workers wanted.",
            load.target() as f64,
        ),
        (
            "system_load_max_jobs",
            "gauge",
            "The cap on the load setting.",
            load.cap() as f64,
        ),
        (
            "system_load_failure_rate_percent",
            "gauge",
            "Load setting: percent of jobs that fail.",
            load.failure_rate(),
        ),
        (
            "system_load_workers",
            "gauge",
            "Load workers running.",
            load.workers() as f64,
        ),
        (
            "system_jobs_per_second",
            "gauge",
            "Successful jobs per second (last 100 ms sample).",
            latest.jobs_per_sec,
        ),
        (
            "system_failed_jobs_per_second",
            "gauge",
            "Failed jobs per second (last 100 ms sample).",
            latest.failed_per_sec,
        ),
        (
            "system_scheduler_usage_ratio",
            "gauge",
            "On-CPU time of the scheduler threads over wall time, all schedulers (last 100 ms sample).",
            latest.scheduler_usage,
        ),
        (
            "system_long_schedules_total",
            "counter",
            "Polls that held a scheduler longer than the long-schedule threshold.",
            node.long_schedules.total() as f64,
        ),
        (
            "system_schedulers",
            "gauge",
            "Scheduler (worker) threads.",
            node.schedulers as f64,
        ),
        (
            "system_processes",
            "gauge",
            "Processes in the registry.",
            node.registry.count() as f64,
        ),
        (
            "system_crash_reports_total",
            "counter",
            "Processes that crashed (load workers excepted), logged or not.",
            node.registry.crash_reports() as f64,
        ),
        (
            "system_memory_resident_bytes",
            "gauge",
            "Resident memory of the daemon.",
            resident_bytes().unwrap_or(0) as f64,
        ),
    ];
    let mut text = String::with_capacity(2048);
    for (name, kind, help, value) in metrics {
        let _ = writeln!(
            text,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    text
}
