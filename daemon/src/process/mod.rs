//! The process runtime: the daemon's answer to BEAM processes.
//!
//! A process is a tokio task registered under a [`Pid`], measured on every
//! poll, killable at its next yield, and observable by monitors that get
//! exactly one [`Down`]. This module owns no policy (what to restart, when):
//! that is the supervisor's.

mod activity;
mod context;
mod entry;
mod exit;
mod pid;
mod registry;
pub mod supervisor;
pub mod watch;

pub(crate) use activity::{clock_ticks, ticks_to_nanos};
pub use context::ProcessContext;
pub use entry::{ProcessInfo, Spec, Status};
pub use exit::{Down, ExitReason};
pub use pid::{ParsePidError, Pid};
pub use registry::{Monitor, ProcessRegistry, install_panic_hook};
