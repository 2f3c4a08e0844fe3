//! What the load supervisor and its workers share: the load's setting and
//! counters, the channel of exit notices, and whether the supervisor is
//! still there. The supervisor makes one [`Pool`]; each worker holds an `Arc`.
//!
//! It holds and passes on; it never starts, stops or restarts a worker
//! (`supervisor` does) and never runs a job (`worker` does).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use tokio::sync::mpsc;

use super::Load;
use system_runtime::{Pid, Priority};

/// What the workers of one load supervisor share with it.
pub(super) struct Pool {
    pub(super) load: Arc<Load>,
    exits: mpsc::UnboundedSender<Exit>,
    /// Set when the supervisor ends: its workers stop at their next tick.
    closed: AtomicBool,
}

/// A worker's exit notice.
pub(super) struct Exit {
    pub(super) index: u32,
    pub(super) pid: Pid,
    pub(super) crashed: bool,
}

impl Pool {
    /// A pool for `load`, and the receiving end of its workers' exit notices.
    pub(super) fn new(load: Arc<Load>) -> (Arc<Pool>, mpsc::UnboundedReceiver<Exit>) {
        let (exits, notices) = mpsc::unbounded_channel();
        let pool = Pool {
            load,
            exits,
            closed: AtomicBool::new(false),
        };
        (Arc::new(pool), notices)
    }

    /// True if worker `index` should stop (the load went below it).
    pub(super) fn is_surplus(&self, index: u32) -> bool {
        self.closed.load(Relaxed) || u64::from(index) >= self.load.target()
    }

    /// True if a worker running at `priority` should make way for one at
    /// the load's priority now.
    pub(super) fn is_outdated(&self, priority: Priority) -> bool {
        priority != self.load.priority()
    }

    /// Tells the supervisor that worker `index` (`pid`) ended.
    pub(super) fn exited(&self, index: u32, pid: Pid, crashed: bool) {
        // Fails only if the supervisor is gone; then nobody needs to know.
        let _ = self.exits.send(Exit {
            index,
            pid,
            crashed,
        });
    }

    /// The supervisor is gone: every worker stops at its next tick.
    pub(super) fn close(&self) {
        self.closed.store(true, Relaxed);
    }
}
