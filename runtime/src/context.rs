//! The handle a process's own code gets: its pid and the few ways it reports
//! what it is doing (reductions, current function, foreign frame, code version).
//!
//! Only the process itself holds its context; it is not a way to reach
//! others. What it records takes effect only inside the process's own poll.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::activity::Status;
use crate::current::with_current;
use crate::entry::{Frame, ProcessEntry};
use crate::pid::Pid;
use crate::timer::{Sleep, Timers};

/// Given to a process's body when it is spawned. Not `Clone`: only the
/// process's own task writes its counters (see `activity`).
pub struct ProcessContext {
    pub(crate) entry: Arc<ProcessEntry>,
    pub(crate) timers: Arc<Timers>,
}

impl ProcessContext {
    #[inline]
    pub fn pid(&self) -> Pid {
        self.entry.pid
    }

    /// Counts work done beyond the one reduction every poll already counts.
    #[inline]
    pub fn add_reductions(&self, n: u64) {
        with_current(self.entry.identity(), |activity| activity.add_reductions(n));
    }

    /// Records the host function the process is now in (traced if tracing
    /// is on): a store into the task's own memory. Call it as
    /// `ctx.enter(&"Module.function/1")`.
    #[inline]
    pub fn enter(&self, function: &'static &'static str) {
        self.entry.enter(function);
    }

    /// Records that the process is now in code the runtime does not see
    /// (e.g. a plugin function and its arguments), until its next `enter`.
    pub fn enter_frame(&self, frame: impl std::fmt::Display + Send + Sync + 'static) {
        self.entry.enter_frame(Box::new(frame) as Frame);
    }

    /// Records, for its traces, that it returned `result` from `call` (e.g.
    /// `Math.sum(5)` returned `15`): nothing is formatted unless a trace
    /// of it runs.
    pub fn returned(&self, call: &dyn std::fmt::Display, result: &dyn std::fmt::Display) {
        self.entry.returned(call, result);
    }

    /// Reports how many messages wait in its inbox that the runtime does
    /// not see (a connection's frames to send, say): `Process.info`'s
    /// `message_queue_len` adds the DOWNs sent to it and not yet taken.
    /// A relaxed store; the first call allocates its relations.
    pub fn set_message_queue_len(&self, len: usize) {
        self.entry.relations().set_queue(len);
    }

    /// Records which version of the host's code this process runs (0: none);
    /// [`ProcessRegistry::code_users`](crate::ProcessRegistry::code_users) lists them.
    pub fn set_code_version(&self, id: u32) {
        self.entry.set_code_version(id);
    }

    /// Sleeps until `deadline` on the runtime's own timer wheel (see
    /// `timer`): never wakes before it, normally within 1–2 ms after it.
    /// The process reads as waiting meanwhile, and a kill ends it at once.
    #[inline]
    pub fn sleep_until(&self, deadline: Instant) -> Sleep<'_> {
        Sleep::new(&self.timers, deadline)
    }

    /// Sleeps for `duration` (see [`ProcessContext::sleep_until`]).
    pub fn sleep(&self, duration: Duration) -> Sleep<'_> {
        let now = Instant::now();
        // An unreachable deadline (e.g. `Duration::MAX`): about 30 years.
        let deadline = now
            .checked_add(duration)
            .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30));
        self.sleep_until(deadline)
    }

    /// Gives the scheduler to other processes; resumes after them. Also the
    /// point at which a kill takes effect.
    pub async fn yield_now(&self) {
        with_current(self.entry.identity(), |activity| {
            activity.set_status(Status::Runnable)
        });
        tokio::task::yield_now().await;
    }
}
