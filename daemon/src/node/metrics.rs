//! Live metrics: the `metrics_sampler` process takes a [`Sample`] every
//! 100 ms (job rates, workers, scheduler usage, processes, memory), keeps
//! the last 60 s of them and broadcasts each to subscribers.
//!
//! It only reads counters; it never changes the load or the runtime. It
//! hands out plain values: the WebSocket's JSON and `/metrics`' Prometheus
//! text are made at those edges (`connection`, `http::prometheus`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::node::load::Load;
use system_runtime::usage::Usage;
use system_runtime::{ProcessContext, ProcessRegistry};

/// Time between two samples.
pub const PERIOD: Duration = Duration::from_millis(100);

/// Samples kept: 60 s of history.
pub const HISTORY: usize = 600;

/// Samples a slow subscriber may fall behind before it skips some.
const FEED_CAPACITY: usize = 64;

/// One reading, as the `metrics` WebSocket message carries it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
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
    /// On-CPU fraction (0.0–1.0) of all schedulers online over the last
    /// interval (their threads' CPU time over wall time: see `usage`).
    pub scheduler_usage: f64,
    /// Schedulers online.
    pub schedulers: usize,
    /// On-CPU fraction (0.0–1.0 of one core) of each scheduler online, in
    /// scheduler order.
    pub scheduler_usages: Vec<f64>,
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
        history.push_back(sample.clone());
        // Sent under the lock, so a subscriber sees each sample exactly once.
        let _ = self.feed.send(sample);
    }

    /// The history (oldest first) and a feed that continues it without a gap.
    pub fn subscribe(&self) -> (Vec<Sample>, Feed) {
        let history = self.history();
        (history.iter().cloned().collect(), self.feed.subscribe())
    }

    pub fn latest(&self) -> Option<Sample> {
        self.history().back().cloned()
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

/// What the sampler reads, and where it records.
pub struct Sources {
    /// Where the samples go.
    pub metrics: Arc<Metrics>,
    pub load: Arc<Load>,
    pub registry: Arc<ProcessRegistry>,
    /// The schedulers, whose usage is sampled.
    pub schedulers: Arc<crate::node::online::SchedulersOnline>,
    /// When the daemon started (a sample's `t_ms` counts from it).
    pub started: Instant,
    /// Cancelled when the daemon stops.
    pub shutdown: CancellationToken,
}

/// The `metrics_sampler` process: one sample every [`PERIOD`] until the daemon stops.
pub async fn sample_forever(ctx: ProcessContext, sources: Sources) {
    ctx.enter(&"Metrics.Sampler.loop/1");
    let mut meter = sources.schedulers.usage_meter();
    // On the runtime's timer wheel; a late tick moves the next one back.
    let mut next = tokio::time::Instant::now() + PERIOD;
    let mut previous = Totals::read(&sources.load);
    loop {
        tokio::select! {
            _ = sources.shutdown.cancelled() => return,
            _ = ctx.sleep_until(next) => {}
        }
        next += PERIOD;
        let now = tokio::time::Instant::now();
        if next <= now {
            next = now + PERIOD;
        }
        ctx.enter(&"Metrics.Sampler.sample/1");
        let totals = Totals::read(&sources.load);
        sources
            .metrics
            .record(sample(&sources, &previous, &totals, meter.sample_each()));
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
    fn read(load: &Load) -> Totals {
        Totals {
            at: Instant::now(),
            succeeded: load.succeeded(),
            failed: load.failed(),
        }
    }
}

fn sample(sources: &Sources, previous: &Totals, now: &Totals, usage: Usage) -> Sample {
    let seconds = now.at.duration_since(previous.at).as_secs_f64();
    let rate = |before: u64, after: u64| {
        if seconds > 0.0 {
            after.saturating_sub(before) as f64 / seconds
        } else {
            0.0
        }
    };
    Sample {
        t_ms: now.at.duration_since(sources.started).as_millis() as u64,
        jobs_per_sec: rate(previous.succeeded, now.succeeded),
        failed_per_sec: rate(previous.failed, now.failed),
        workers: sources.load.workers(),
        failure_rate: sources.load.failure_rate(),
        scheduler_usage: usage.total,
        schedulers: usage.online,
        scheduler_usages: usage.each.into_iter().take(usage.online).collect(),
        processes: sources.registry.count(),
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
