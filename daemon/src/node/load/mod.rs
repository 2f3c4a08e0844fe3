//! Synthetic load: the setting (how many workers, how often a job fails),
//! the counters the workers bump, and the calls the WebSocket connection,
//! the HTTP API and the console use to read and change them (plain values:
//! each of those edges says them in its own format).
//!
//! Changing the setting only records what is wanted and wakes the load
//! supervisor; it never starts or stops a worker itself (that is
//! `supervisor`'s job, in batches, inside its own process). `pool` is what
//! the supervisor shares with its workers, `slots` what it shares with the
//! supervision tree, `worker` one worker's life, `tally` the job counters
//! every scheduler adds to.

mod memory;
mod pool;
mod slots;
mod supervisor;
mod tally;
mod worker;

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};
use system_runtime::Priority;
use tokio::sync::Notify;

use tally::Tally;

pub use supervisor::run as supervise;

/// The most workers one may ask for unless the daemon is started with `--max-load`.
pub const DEFAULT_MAX_LOAD: u64 = 2_000_000;

/// The largest cap `--max-load` accepts (a worker's index is a `u32`).
pub const HIGHEST_CAP: u64 = u32::MAX as u64;

/// Why a load setting was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LoadError {
    #[error(
        "a load of {jobs} jobs is above the cap of {cap} (start the daemon with --max-load N to change the cap)"
    )]
    AboveCap { jobs: u64, cap: u64 },
    #[error("the failure rate must be a number from 0 to 100 (percent), not {0}")]
    FailureRate(f64),
}

/// What the load is set to.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Setting {
    /// Workers wanted (each does one job per second).
    pub jobs: u64,
    /// Percent of jobs that fail (0–100).
    pub failure_rate: f64,
    /// How workers are scheduled: `low` (the default: requests and sums
    /// answer ahead of them) or `normal` (they share the run queue).
    #[serde(default = "background", with = "priority_text")]
    pub priority: Priority,
}

/// The priority load workers run at unless told otherwise.
fn background() -> Priority {
    Priority::Low
}

/// A priority in `load.json`, as its name.
mod priority_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use system_runtime::Priority;

    pub fn serialize<S: Serializer>(priority: &Priority, to: S) -> Result<S::Ok, S::Error> {
        to.serialize_str(priority.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(from: D) -> Result<Priority, D::Error> {
        String::deserialize(from)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The load setting and its counters; one per node.
pub struct Load {
    target: AtomicU64,
    /// The failure rate in percent, as the bits of an `f64`.
    failure_rate: AtomicU64,
    cap: AtomicU64,
    /// The workers' priority (a [`Priority`] as `u8`).
    priority: AtomicU8,
    /// Workers the load supervisor has running (a crashed one counts until
    /// its restart, as in an OTP supervisor's `count_children`).
    workers: AtomicU64,
    succeeded: Tally,
    failed: Tally,
    restarts: AtomicU64,
    /// Wakes the load supervisor when the setting changes.
    changed: Notify,
    /// Where each new setting is saved (for a daemon heart restarts).
    saved_in: Mutex<Option<PathBuf>>,
}

impl Default for Load {
    fn default() -> Self {
        Load::new()
    }
}

impl Load {
    pub fn new() -> Load {
        Load {
            target: AtomicU64::new(0),
            failure_rate: AtomicU64::new(0f64.to_bits()),
            cap: AtomicU64::new(DEFAULT_MAX_LOAD),
            priority: AtomicU8::new(Priority::Low as u8),
            workers: AtomicU64::new(0),
            succeeded: Tally::new(),
            failed: Tally::new(),
            restarts: AtomicU64::new(0),
            changed: Notify::new(),
            saved_in: Mutex::new(None),
        }
    }

    /// Saves every new setting to `file` from now on; with `restore`, first
    /// applies the setting saved there (a restarted daemon resumes its load).
    pub fn remember_in(&self, file: PathBuf, restore: bool) {
        if restore
            && let Some(saved) = std::fs::read_to_string(&file)
                .ok()
                .and_then(|text| serde_json::from_str::<Setting>(&text).ok())
        {
            self.set_priority(saved.priority);
            match self.apply(Some(saved.jobs), Some(saved.failure_rate)) {
                Ok(setting) => tracing::info!(
                    "load restored to {} jobs, {} % failures, {} priority",
                    setting.jobs,
                    setting.failure_rate,
                    setting.priority
                ),
                Err(error) => tracing::warn!("the saved load is not restored: {error}"),
            }
        }
        *crate::lock(&self.saved_in) = Some(file);
        self.save();
    }

    /// Writes the setting where [`Load::remember_in`] said ([`crate::os::home::replace`]).
    fn save(&self) {
        let saved_in = crate::lock(&self.saved_in);
        let Some(file) = saved_in.as_ref() else {
            return;
        };
        let json = serde_json::to_string(&self.setting()).unwrap_or_default();
        if let Err(error) = crate::os::home::replace(file, json.as_bytes()) {
            tracing::warn!(
                "cannot save the load setting to {}: {error}",
                file.display()
            );
        }
    }

    /// Sets the cap on the number of workers (clamped to [`HIGHEST_CAP`]).
    pub fn set_cap(&self, cap: u64) {
        self.cap.store(cap.min(HIGHEST_CAP), Relaxed);
    }

    pub fn cap(&self) -> u64 {
        self.cap.load(Relaxed)
    }

    /// Changes the jobs and/or the failure rate; what is not given is kept.
    pub fn apply(
        &self,
        jobs: Option<u64>,
        failure_rate: Option<f64>,
    ) -> Result<Setting, LoadError> {
        if let Some(jobs) = jobs
            && jobs > self.cap()
        {
            return Err(LoadError::AboveCap {
                jobs,
                cap: self.cap(),
            });
        }
        if let Some(rate) = failure_rate
            && !(0.0..=100.0).contains(&rate)
        {
            return Err(LoadError::FailureRate(rate));
        }
        if let Some(rate) = failure_rate {
            self.failure_rate.store(rate.to_bits(), Relaxed);
        }
        if let Some(jobs) = jobs {
            self.target.store(jobs, Relaxed);
            self.changed.notify_one();
        }
        self.save();
        Ok(self.setting())
    }

    pub fn setting(&self) -> Setting {
        Setting {
            jobs: self.target(),
            failure_rate: self.failure_rate(),
            priority: self.priority(),
        }
    }

    /// Runs the workers at `priority` from now on: new ones start at it,
    /// running ones end at their next tick and are started again at it
    /// (within a second; not counted as restarts).
    pub fn set_priority(&self, priority: Priority) {
        self.priority.store(priority as u8, Relaxed);
        self.save();
    }

    pub fn priority(&self) -> Priority {
        match self.priority.load(Relaxed) {
            p if p == Priority::High as u8 => Priority::High,
            p if p == Priority::Normal as u8 => Priority::Normal,
            _ => Priority::Low,
        }
    }

    pub fn target(&self) -> u64 {
        self.target.load(Relaxed)
    }

    pub fn failure_rate(&self) -> f64 {
        f64::from_bits(self.failure_rate.load(Relaxed))
    }

    pub fn workers(&self) -> u64 {
        self.workers.load(Relaxed)
    }

    /// Jobs that succeeded since the daemon started.
    pub fn succeeded(&self) -> u64 {
        self.succeeded.sum()
    }

    /// Jobs that failed (panicked) since the daemon started.
    pub fn failed(&self) -> u64 {
        self.failed.sum()
    }

    /// Workers restarted after a crash since the daemon started.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Relaxed)
    }
}
