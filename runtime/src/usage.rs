//! Scheduler usage: the on-CPU time of the schedulers' worker threads (each
//! thread's own CPU clock, `pthread_getcpuclockid`, registered by
//! `watch`) over wall-clock time × the number of schedulers. It
//! counts everything those threads do — polling processes, tokio's timer
//! wheel and I/O driver, run-queue work — so a saturated core reads 100 %
//! (tokio's own busy time leaves the drivers out and read 68 % there).
//!
//! It only measures; it never changes how the runtime schedules.

use std::time::{Duration, Instant};

use tokio::runtime::Handle;

use crate::watch;

/// Turns two readings of the schedulers' CPU time into a usage over the interval.
pub struct UsageMeter {
    handle: Handle,
    cpu: Duration,
    at: Instant,
}

impl UsageMeter {
    pub fn new(handle: Handle) -> UsageMeter {
        UsageMeter {
            cpu: watch::schedulers_cpu_time(),
            at: Instant::now(),
            handle,
        }
    }

    /// Usage (0.0–1.0 of all schedulers) since the previous call.
    pub fn sample(&mut self) -> f64 {
        let cpu = watch::schedulers_cpu_time();
        let now = Instant::now();
        let workers = self.handle.metrics().num_workers().max(1) as f64;
        let wall = now.duration_since(self.at).as_secs_f64() * workers;
        let used = cpu.saturating_sub(self.cpu).as_secs_f64();
        self.cpu = cpu;
        self.at = now;
        if wall <= 0.0 {
            0.0
        } else {
            (used / wall).clamp(0.0, 1.0)
        }
    }
}
