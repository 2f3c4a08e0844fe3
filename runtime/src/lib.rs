//! The process runtime: the daemon's answer to BEAM processes, as a crate
//! of its own that knows nothing of its host (no plugin ABI, no JSON, no
//! web server, no console).
//!
//! A process is a task on the runtime's own [`scheduler`]s (or a tokio task,
//! if the host gives none) registered under a [`Pid`], measured on every
//! poll, killable at its next yield, and observable by monitors that get
//! exactly one [`Down`]. What a process runs is opaque here: a host labels
//! it with a displayable [`Frame`] and a code version number. The runtime
//! owns no policy beyond what a [`supervisor`] child's [`supervisor::Restart`]
//! says.

mod activity;
pub mod background;
pub mod burst;
mod context;
mod current;
mod entry;
mod exit;
mod kill;
pub mod long_schedule;
mod low_priority;
pub mod memory;
mod pid;
mod prefetch;
pub mod processes;
mod registry;
mod relations;
pub mod scheduler;
pub mod stack;
pub mod supervision;
pub mod supervisor;
pub mod symbols;
mod sync;
mod timer;
pub mod top;
mod trace;
pub mod tree;
pub mod usage;
pub mod watch;

pub use activity::{Status, clock_ticks, ticks_to_nanos};
pub use context::ProcessContext;
pub use entry::{Frame, Priority, ProcessInfo, Spec};
pub use exit::{Down, ExitReason};
pub use low_priority::BATCH as LOW_PRIORITY_BATCH;
pub use pid::{ParsePidError, Pid};
pub use registry::{CRASH_REPORTS, Holder, Monitor, ProcessRegistry, install_panic_hook};
pub use timer::{SLOTS as TIMER_SLOTS, Sleep};
pub use trace::{
    MAX_CALLS as TRACE_MAX_CALLS, MAX_WINDOW as TRACE_MAX_WINDOW, TraceEnd, TraceEvent,
    TraceLimits, TraceReport, TraceTarget,
};

/// The bounds every loom model of the runtime runs under: few enough
/// preemptions that all models run in well under a minute on two cores.
#[cfg(all(test, loom))]
fn loom_builder() -> loom::model::Builder {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder
}
