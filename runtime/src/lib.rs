//! The process runtime: the daemon's answer to BEAM processes, as a crate
//! of its own that knows nothing of its host (no plugin ABI, no JSON, no
//! web server, no console).
//!
//! A process is a tokio task registered under a [`Pid`], measured on every
//! poll, killable at its next yield, and observable by monitors that get
//! exactly one [`Down`]. What a process runs is opaque here: a host labels
//! it with a displayable [`Frame`] and a code version number. The runtime
//! owns no policy beyond what a [`supervisor`] child's [`supervisor::Restart`]
//! says.

mod activity;
pub mod burst;
mod context;
mod entry;
mod exit;
pub mod long_schedule;
mod low_priority;
mod pid;
mod registry;
pub mod supervisor;
pub mod top;
pub mod usage;
pub mod watch;

pub use activity::{clock_ticks, ticks_to_nanos};
pub use context::ProcessContext;
pub use entry::{Frame, Priority, ProcessInfo, Spec, Status};
pub use exit::{Down, ExitReason};
pub use low_priority::BATCH as LOW_PRIORITY_BATCH;
pub use pid::{ParsePidError, Pid};
pub use registry::{CRASH_REPORTS, Monitor, ProcessRegistry, install_panic_hook};

/// Locks a mutex whose data stays valid even if a holder panicked (a
/// process's panic must never take the runtime's locks down with it).
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
