//! The load supervisor's workers as one slot per worker index (the
//! worker's pid, 0 for none), shared between the supervisor, which fills
//! and empties them, and the supervision tree, which reads them
//! (`Runtime.tree()`, `/api/tree`) a chunk at a time, so a million slots
//! never hold the supervisor up for long.
//!
//! It only holds pids; it never starts or stops a worker.

use std::sync::{Mutex, MutexGuard, PoisonError};

use system_runtime::Pid;
use system_runtime::supervision::{Policy, Restart, Strategy, SupervisedChild, Supervises};

/// Slots copied per hold of the lock when the tree reads them.
const CHUNK: usize = 16 * 1024;

#[derive(Default)]
pub(super) struct Slots {
    pids: Mutex<Vec<u64>>,
}

impl Slots {
    pub(super) fn lock(&self) -> MutexGuard<'_, Vec<u64>> {
        self.pids.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Supervises for Slots {
    /// One for one, without a restart limit: a crashed worker is started
    /// again at once, however often (the failure rate is the point).
    fn policy(&self) -> Policy {
        Policy {
            strategy: Strategy::OneForOne,
            intensity: None,
        }
    }

    /// Workers are transient: one that crashed is restarted, one that ended
    /// normally (the load went down) is not.
    fn children(&self, into: &mut Vec<SupervisedChild>) {
        let mut from = 0;
        loop {
            let pids = self.lock();
            let chunk = pids
                .get(from..(from + CHUNK).min(pids.len()))
                .unwrap_or(&[]);
            if chunk.is_empty() {
                return;
            }
            into.extend(
                chunk
                    .iter()
                    .filter(|pid| **pid != 0)
                    .map(|pid| SupervisedChild {
                        pid: Pid(*pid),
                        restart: Restart::Transient,
                    }),
            );
            from += chunk.len();
        }
    }
}
