//! The handle a process's own code gets: its pid and the few ways it reports
//! what it is doing (reductions, current function, plugin version).
//!
//! Only the process itself holds its context; it is not a way to reach
//! others. What it records takes effect only inside the process's own poll.

use std::sync::Arc;

use super::entry::{ProcessEntry, Status};
use super::{Pid, activity};

/// Given to a process's body when it is spawned. Not `Clone`: only the
/// process's own task writes its counters (see `activity`).
pub struct ProcessContext {
    pub(crate) entry: Arc<ProcessEntry>,
}

impl ProcessContext {
    pub fn pid(&self) -> Pid {
        self.entry.pid
    }

    /// Counts work done beyond the one reduction every poll already counts.
    pub fn add_reductions(&self, n: u64) {
        activity::with_current(Arc::as_ptr(&self.entry), |activity| {
            activity.add_reductions(n)
        });
    }

    /// Records the host function the process is now in (traced if tracing
    /// is on): a store into the task's own memory. Call it as
    /// `ctx.enter(&"Module.function/1")`.
    pub fn enter(&self, function: &'static &'static str) {
        self.entry.enter(function);
    }

    /// Records the plugin function (and arguments) the process is now in.
    pub fn enter_plugin(&self, frame: plugin_abi::Frame) {
        self.entry.enter_plugin(frame);
    }

    /// Records which loaded plugin version this process runs.
    pub fn set_plugin_version(&self, id: u32) {
        self.entry.set_plugin_version(id);
    }

    /// Gives the scheduler to other processes; resumes after them. Also the
    /// point at which a kill takes effect.
    pub async fn yield_now(&self) {
        activity::with_current(Arc::as_ptr(&self.entry), |activity| {
            activity.set_status(Status::Runnable)
        });
        tokio::task::yield_now().await;
    }
}
