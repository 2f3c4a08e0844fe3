//! The per-poll harness every process runs in: `Instrumented` measures each
//! poll (CPU ticks, reductions' clock, the bytes the poll's thread allocated
//! and freed, the watch slot of its scheduler), checks the memory limit and
//! turns a panic into an exit reason; `ExitGuard` ends the process exactly
//! once, however its task ends.
//!
//! It is the poll path: it must not block, lock or allocate, and it reads
//! no entry field but the immutable ones.

use std::marker::PhantomPinned;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use super::{ProcessRegistry, panic_message};
use crate::activity::{self, Activity, Status};
use crate::entry::ProcessEntry;
use crate::{ExitReason, current, memory, watch};

/// How [`Instrumented`]'s poll shows in a symbolised native stack: the
/// sampler folds the frames below it away (`symbols`). A test checks it
/// against the type's real name, so a move or rename cannot go unseen.
pub(crate) const POLL_FRAME: &str = "system_runtime::registry::harness::Instrumented<";

/// Ends the process exactly once, however its task ends (return, panic, abort, runtime drop).
pub(super) struct ExitGuard {
    pub(super) entry: Arc<ProcessEntry>,
    pub(super) registry: Arc<ProcessRegistry>,
    pub(super) reason: Option<ExitReason>,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let reason = self.reason.take().unwrap_or_else(|| {
            if self.entry.kill.is_killed() {
                match self.registry.exit_reasons.remove(&self.entry.pid.0) {
                    Some((_, reason)) => ExitReason::Exit(reason.into()),
                    None => ExitReason::Killed,
                }
            } else {
                ExitReason::Shutdown
            }
        });
        self.registry.exit(&self.entry, reason);
    }
}

pin_project! {
    /// A process's future: measures every poll into its own `activity`
    /// (published to the entry on the first poll) and turns a panic into an
    /// exit reason.
    // `repr(C)`, counters first: what every poll writes sits right after
    // tokio's task header instead of after the (large) inner future.
    // Fields drop in this order: `inner` before `exit`, so the process's own
    // cleanup (its drop guards) is done before its DOWN is sent. `activity`
    // drops first but has no drop glue (asserted in `activity`): observers
    // may still read it until `exit` retires it; tokio frees the memory after.
    #[repr(C)]
    pub(super) struct Instrumented<F> {
        pub(super) activity: Activity,
        // A copy of the pid, for the scheduler's watch slot (see `watch`).
        pub(super) pid: u64,
        // A copy of the spec's limit (0: none), so a poll reads no entry.
        pub(super) memory_limit: u64,
        pub(super) published: bool,
        #[pin]
        pub(super) inner: F,
        pub(super) exit: ExitGuard,
        // Observers read `activity` through a pointer while the task runs:
        // the future must never move, and `&mut` to it must not claim
        // exclusive access (the `!Unpin` exemption).
        #[pin]
        pub(super) _pinned: PhantomPinned,
    }
}

impl<F: Future<Output: Into<ExitReason>>> Future for Instrumented<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let activity: &Activity = this.activity;
        let process = this.exit.entry.identity();
        if !*this.published {
            this.exit.entry.activity.publish(activity);
            *this.published = true;
        }
        activity.set_status(Status::Running);
        let started = activity::clock_ticks();
        let watched = watch::enter_poll(*this.pid, started);
        let (allocated, freed) = memory::thread_bytes();
        let inner = this.inner;
        let polled = {
            let _polling = current::polling(activity, process);
            catch_unwind(AssertUnwindSafe(|| inner.poll(cx)))
        };
        let (allocated_after, freed_after) = memory::thread_bytes();
        let ended = activity::clock_ticks();
        if let Some(slot) = watched {
            slot.leave(ended);
        }
        activity.account_poll(ended.wrapping_sub(started));
        let held = activity.account_memory(
            allocated_after.wrapping_sub(allocated),
            freed_after.wrapping_sub(freed),
        );
        let limit = *this.memory_limit;
        let reason = match polled {
            Ok(Poll::Pending) if limit != 0 && held > limit => ExitReason::MemoryLimit {
                limit,
                reached: held,
            },
            Ok(Poll::Pending) => {
                activity.park();
                return Poll::Pending;
            }
            Ok(Poll::Ready(ended)) => ended.into(),
            Err(payload) => ExitReason::Panic(panic_message(payload.as_ref())),
        };
        // (tokio never polls a finished task again.)
        this.exit.reason = Some(reason);
        Poll::Ready(())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn the_poll_frame_is_the_harness_types_name() {
        let name = std::any::type_name::<Instrumented<std::future::Ready<ExitReason>>>();
        assert!(name.starts_with(POLL_FRAME), "{name}");
    }
}
