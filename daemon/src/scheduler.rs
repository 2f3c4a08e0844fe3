//! Scheduler usage: the busy fraction of the runtime's worker threads, read
//! from tokio's own per-worker busy time (not the OS's CPU figure).
//!
//! It only measures; it never changes how the runtime schedules.

use std::time::{Duration, Instant};

use tokio::runtime::Handle;

/// Total time all worker threads spent running tasks since the runtime started.
fn busy_time(handle: &Handle) -> Duration {
    let metrics = handle.metrics();
    (0..metrics.num_workers())
        .map(|worker| metrics.worker_total_busy_duration(worker))
        .sum()
}

/// Turns two readings of the busy time into a usage over the interval.
pub struct UsageMeter {
    handle: Handle,
    busy: Duration,
    at: Instant,
}

impl UsageMeter {
    pub fn new(handle: Handle) -> UsageMeter {
        UsageMeter {
            busy: busy_time(&handle),
            at: Instant::now(),
            handle,
        }
    }

    /// Usage (0.0–1.0 of all schedulers) since the previous call.
    pub fn sample(&mut self) -> f64 {
        let busy = busy_time(&self.handle);
        let now = Instant::now();
        let workers = self.handle.metrics().num_workers().max(1) as f64;
        let wall = now.duration_since(self.at).as_secs_f64() * workers;
        let used = busy.saturating_sub(self.busy).as_secs_f64();
        self.busy = busy;
        self.at = now;
        if wall <= 0.0 {
            0.0
        } else {
            (used / wall).clamp(0.0, 1.0)
        }
    }
}
