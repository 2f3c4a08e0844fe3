//! Scheduler usage: the on-CPU time of the scheduler threads (each
//! thread's own CPU clock, `pthread_getcpuclockid`, registered by
//! `watch`) over wall-clock time, per scheduler and in total (over the
//! schedulers online). It counts everything those threads do — polling
//! processes, driving the runtime's timer wheels, run-queue work — so a
//! saturated core reads 100 %. It is thread CPU, not busy time: on a
//! machine whose cores are shared with other programs, a scheduler that
//! has work but waits for a core reads less than 100 %.
//!
//! It only measures; it never changes how the runtime schedules.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;

use crate::scheduler::Schedulers;
use crate::watch;

/// Whose threads are measured.
enum Source {
    /// The workers of a tokio runtime (processes as tokio tasks).
    Tokio(Handle),
    /// The runtime's own schedulers.
    Schedulers(Arc<Schedulers>),
}

/// Turns two readings of the schedulers' CPU time into a usage over the interval.
pub struct UsageMeter {
    source: Source,
    cpu: Vec<Duration>,
    at: Instant,
}

/// One reading of [`UsageMeter::sample_each`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Usage {
    /// 0.0–1.0 of all schedulers online.
    pub total: f64,
    /// 0.0–1.0 of one core, per scheduler (all of them, online or not, in
    /// scheduler order); empty for a tokio runtime's workers.
    pub each: Vec<f64>,
    /// Schedulers online when read.
    pub online: usize,
}

impl UsageMeter {
    /// The usage of a tokio runtime's (watched) worker threads.
    pub fn new(handle: Handle) -> UsageMeter {
        UsageMeter::of(Source::Tokio(handle))
    }

    /// The usage of the runtime's own schedulers.
    pub fn of_schedulers(schedulers: Arc<Schedulers>) -> UsageMeter {
        UsageMeter::of(Source::Schedulers(schedulers))
    }

    fn of(source: Source) -> UsageMeter {
        UsageMeter {
            cpu: read(&source),
            at: Instant::now(),
            source,
        }
    }

    /// Usage (0.0–1.0 of all schedulers) since the previous call.
    pub fn sample(&mut self) -> f64 {
        self.sample_each().total
    }

    /// Usage in total and per scheduler since the previous call.
    pub fn sample_each(&mut self) -> Usage {
        let cpu = read(&self.source);
        let now = Instant::now();
        let wall = now.duration_since(self.at).as_secs_f64();
        let online = match &self.source {
            Source::Tokio(handle) => handle.metrics().num_workers().max(1),
            Source::Schedulers(schedulers) => schedulers.online(),
        };
        let used: Vec<f64> = cpu
            .iter()
            .zip(self.cpu.iter().chain(std::iter::repeat(&Duration::ZERO)))
            .map(|(after, before)| after.saturating_sub(*before).as_secs_f64())
            .collect();
        self.cpu = cpu;
        self.at = now;
        let fraction = |used: f64, of: f64| {
            if of <= 0.0 {
                0.0
            } else {
                (used / of).clamp(0.0, 1.0)
            }
        };
        Usage {
            total: fraction(used.iter().sum(), wall * online as f64),
            each: match self.source {
                Source::Tokio(_) => Vec::new(),
                Source::Schedulers(_) => used.iter().map(|used| fraction(*used, wall)).collect(),
            },
            online,
        }
    }
}

fn read(source: &Source) -> Vec<Duration> {
    match source {
        Source::Tokio(_) => vec![watch::schedulers_cpu_time()],
        Source::Schedulers(schedulers) => schedulers.cpu_times(),
    }
}
