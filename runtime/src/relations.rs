//! What ties one process to others: its links, the processes it monitors,
//! and the length of its inbox (DOWNs delivered but not yet taken, plus
//! what its host reports as queued) — kept apart from the entry because
//! most processes (load workers) never have any, so it is allocated on
//! first use.
//!
//! Plain data under short locks and relaxed counters; nothing here is on
//! the poll path, and nothing here decides what a link does (the
//! registry's exit does).
//!
//! # Protocol
//!
//! | field | writers | readers | ordering |
//! |---|---|---|---|
//! | `links` | a spawn that links (the parent, inside its poll, and the new entry before its task exists); the exit (closes its own, removes itself from its peers') | `info` | its mutex; a closed list refuses new links |
//! | `monitoring` | `Monitor` creation (inside the watcher's poll) and its end (taken or dropped) | `info` | its mutex |
//! | `queue` | the process's host (`ProcessContext::set_message_queue_len`) | `info` | `Relaxed` both sides: a gauge guarding nothing |
//! | `downs` | the exit of a monitored process (+1 after a successful send); the watcher's `Monitor` (−1 when it takes the DOWN or drops it untaken) | `info` | `Relaxed`; signed, since the −1 may come before the +1 (read as at least 0) |

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicIsize, AtomicUsize};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

use crate::exit::Down;
use crate::pid::Pid;

/// std's mutex (nothing here is model-checked), surviving a holder's panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One process's links, monitors and inbox gauge (see the protocol).
#[derive(Default)]
pub(crate) struct Relations {
    links: Mutex<Links>,
    monitoring: Mutex<Vec<Pid>>,
    queue: AtomicUsize,
    downs: AtomicIsize,
}

#[derive(Default)]
struct Links {
    pids: Vec<Pid>,
    /// The process has ended: no link may be added.
    closed: bool,
}

impl Relations {
    /// Links to `pid`; false if this process has ended already.
    pub(crate) fn add_link(&self, pid: Pid) -> bool {
        let mut links = lock(&self.links);
        if links.closed {
            return false;
        }
        links.pids.push(pid);
        true
    }

    pub(crate) fn remove_link(&self, pid: Pid) {
        let mut links = lock(&self.links);
        if let Some(index) = links.pids.iter().position(|p| *p == pid) {
            links.pids.swap_remove(index);
        }
    }

    /// Closes the list for good (the process ended); returns its links.
    pub(crate) fn close_links(&self) -> Vec<Pid> {
        let mut links = lock(&self.links);
        links.closed = true;
        std::mem::take(&mut links.pids)
    }

    pub(crate) fn links(&self) -> Vec<Pid> {
        let mut pids = lock(&self.links).pids.clone();
        pids.sort_unstable();
        pids
    }

    pub(crate) fn start_monitoring(&self, pid: Pid) {
        lock(&self.monitoring).push(pid);
    }

    pub(crate) fn stop_monitoring(&self, pid: Pid) {
        let mut monitoring = lock(&self.monitoring);
        if let Some(index) = monitoring.iter().position(|p| *p == pid) {
            monitoring.swap_remove(index);
        }
    }

    pub(crate) fn monitoring(&self) -> Vec<Pid> {
        let mut pids = lock(&self.monitoring).clone();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    pub(crate) fn set_queue(&self, len: usize) {
        self.queue.store(len, Relaxed);
    }

    /// A DOWN this process had been sent was taken (or dropped untaken).
    pub(crate) fn down_taken(&self) {
        self.downs.fetch_sub(1, Relaxed);
    }

    /// What waits in its inbox: DOWNs not yet taken and what its host reports.
    pub(crate) fn queue_len(&self) -> usize {
        let downs = usize::try_from(self.downs.load(Relaxed)).unwrap_or(0);
        self.queue.load(Relaxed).saturating_add(downs)
    }
}

/// The process a monitor reports to, when a process (not a thread outside
/// the runtime) asked for it.
pub(crate) struct Watcher {
    pub(crate) pid: Pid,
    pub(crate) relations: std::sync::Arc<Relations>,
}

/// One monitor of a process: where its DOWN goes, and who waits for it.
pub(crate) struct Watch {
    pub(crate) watcher: Option<Watcher>,
    pub(crate) down: oneshot::Sender<Down>,
}

impl Watch {
    /// Sends the DOWN; counts it in the watcher's inbox until it is taken.
    pub(crate) fn deliver(self, down: Down) {
        if self.down.send(down).is_ok()
            && let Some(watcher) = self.watcher
        {
            watcher.relations.downs.fetch_add(1, Relaxed);
        }
    }

    /// The watcher's pid, while somebody still waits for the DOWN.
    pub(crate) fn waiting_watcher(&self) -> Option<Pid> {
        if self.down.is_closed() {
            return None;
        }
        self.watcher.as_ref().map(|watcher| watcher.pid)
    }
}
