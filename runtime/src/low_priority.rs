//! The run queue of low-priority processes (Erlang's `low`): they are not
//! tokio tasks but futures that a few runner tasks poll, at most [`BATCH`]
//! per turn, yielding to the scheduler between turns. However many of them
//! wake at once (a million load workers on one timer tick), a normal
//! process that wakes meanwhile waits for one batch, not for all of them.
//! A wake is one flag swap and one queue push: no tokio task to schedule.
//!
//! Each process is bound to one runner for life (round robin at spawn);
//! a runner is one tokio task, so a process's future is only ever touched
//! by its runner: polled, dropped when it ends or is cancelled, or dropped
//! when the runner itself is dropped (the runtime shutting down).
//!
//! It runs futures; it knows nothing of pids, monitors or exit reasons
//! (the future given to it carries its own exit guard).
//!
//! # Protocol
//!
//! | field | writer | readers | ordering | why it is enough |
//! |---|---|---|---|---|
//! | `LowPriority::next` | each spawn, `fetch_add` | — | `Relaxed` | Round robin needs a number, not an order. |
//! | `LowTask::key` | the spawner, once, before the task is first queued | the runner (`run`, `end`) | `Relaxed` | The runner only sees the task after popping it from `ready`, whose push/pop synchronise (crossbeam's `SegQueue`): the store happens-before the pop. Never written again; it ends with the task. |
//! | `LowTask::scheduled` | a waker (`swap(true)`), the runner (`swap(false)` before the poll) | both | `AcqRel` | At most one queue entry per task: only the waker that flips it to `true` pushes. The runner clears it *before* polling, so a wake during the poll queues the task again (no lost wake-up); `AcqRel` makes what a waker published before waking visible to that poll. |
//! | `LowTask::cancelled` | `cancel`, once | the runner, before each poll | `Release` / `Acquire` | Set before the wake that queues the task; the runner that pops it sees it and drops the future instead of polling it. |
//! | `Doorbell::idle` | the runner going idle (`true`), a queuer (`swap(false)`) | both | `SeqCst` with a `SeqCst` fence each side (Dekker) | Below, on `Doorbell`: the runner sees the work or the queuer sees it idle and wakes it; `loom_models::a_queued_task_never_waits_for_an_idle_runner` checks it. |
//! | `Runner::waker` | the runner (registers before it parks) | queuers (`wake`) | `AtomicWaker`'s own | futures' `AtomicWaker` protocol: a wake after a register is never lost. |
//!
//! A task's future sits under its own mutex, taken only by its runner
//! (`run`, `end`) and by the runner's drop: never by two threads at once in
//! practice, so never contended.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};

use crossbeam_queue::SegQueue;
use futures::task::AtomicWaker;
use slab::Slab;

use crate::sync::{Mutex, lock};

/// Processes a runner polls before it yields to the scheduler.
pub const BATCH: usize = 64;

/// How far ahead of the task it runs a runner prefetches.
const AHEAD: usize = 4;

/// The runners of one registry, started on the current runtime at the
/// first low-priority spawn.
#[derive(Default)]
pub(crate) struct LowPriority {
    runners: OnceLock<Vec<Arc<Runner>>>,
    next: AtomicUsize,
}

/// What a kill calls to end a low-priority process at its next turn.
pub(crate) struct Cancel(Arc<dyn Task>);

impl Cancel {
    pub(crate) fn cancel(&self) {
        self.0.clone().cancel();
    }
}

impl LowPriority {
    /// Queues `future` to run on one of the runners; the returned handle
    /// cancels it. The first call starts `count` runners, each by
    /// `start_runner` (a tokio task on the current runtime, or a task on the
    /// host's schedulers: see `registry`).
    pub(crate) fn spawn<F>(
        &self,
        future: F,
        count: impl FnOnce() -> usize,
        start_runner: impl Fn(Pin<Box<dyn Future<Output = ()> + Send>>),
    ) -> Cancel
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let runners = self.runners.get_or_init(|| {
            (0..count().max(1))
                .map(|_| {
                    let runner = Arc::new(Runner::default());
                    start_runner(Box::pin(run(CloseOnDrop(runner.clone()))));
                    runner
                })
                .collect()
        });
        let runner = &runners[self.next.fetch_add(1, Relaxed) % runners.len()];
        let task = Arc::new(LowTask {
            runner: runner.clone(),
            key: AtomicUsize::new(usize::MAX),
            scheduled: AtomicBool::new(true),
            cancelled: AtomicBool::new(false),
            future: Mutex::new(Some(future)),
        });
        {
            let mut tasks = lock(&runner.tasks);
            if tasks.closed {
                // The runner is gone (the runtime is shutting down): the
                // future ends here, unpolled, as a tokio task would.
                drop(tasks);
                task.end();
                return Cancel(task);
            }
            let key = tasks.live.insert(task.clone());
            task.key.store(key, Relaxed);
        }
        runner.schedule(task.clone());
        Cancel(task)
    }
}

/// One runner's queues.
#[derive(Default)]
struct Runner {
    /// Tasks woken and not yet polled; each at most once (`scheduled`).
    ready: SegQueue<Arc<dyn Task>>,
    /// The runner's own tokio task, woken when `ready` gets work while idle.
    waker: AtomicWaker,
    /// Whether the runner waits for work, and the handshake about it.
    doorbell: Doorbell,
    tasks: Mutex<Tasks>,
}

/// The handshake between a runner going idle and whoever queues work for
/// it (Dekker's, with a `SeqCst` fence on each side): the queuer pushes,
/// fences, then takes the idle flag; the runner sets the flag, fences, then
/// looks at the queue once more. Each side's fence orders its write before
/// its read, so at least one of them sees the other's write: the runner
/// sees the work, or the queuer sees it idle and wakes it. A wake is never
/// lost; at worst a runner that saw the work is woken once more for nothing.
/// `loom_models::a_queued_task_never_waits_for_an_idle_runner` checks it.
#[derive(Default)]
pub(crate) struct Doorbell {
    idle: crate::sync::AtomicBool,
}

impl Doorbell {
    /// After queueing work: true if the runner is idle and must be woken
    /// (the flag is taken, so one queuer wakes it).
    pub(crate) fn ring(&self) -> bool {
        crate::sync::fence(SeqCst);
        self.idle.swap(false, SeqCst)
    }

    /// The runner found no work: true if it may wait for a wake, having
    /// looked at the queue (`is_empty`) again after saying it is idle.
    pub(crate) fn may_sleep(&self, is_empty: impl FnOnce() -> bool) -> bool {
        self.idle.store(true, SeqCst);
        crate::sync::fence(SeqCst);
        if is_empty() {
            return true;
        }
        // Work came in between: take it (if a queuer did not already).
        self.idle.store(false, SeqCst);
        false
    }
}

/// Every live task of a runner, so that they can be dropped if the runner is.
#[derive(Default)]
struct Tasks {
    live: Slab<Arc<dyn Task>>,
    /// Set when the runner is dropped: nothing may be added after that.
    closed: bool,
}

impl Runner {
    fn schedule(&self, task: Arc<dyn Task>) {
        self.ready.push(task);
        if self.doorbell.ring() {
            self.waker.wake();
        }
    }

    /// Polls up to a batch of ready tasks, taken into `batch` (the runner's
    /// own buffer, empty between turns); `Ready` if there may be more.
    fn run_batch(&self, cx: &mut Context<'_>, batch: &mut Vec<Arc<dyn Task>>) -> Poll<()> {
        while batch.len() < BATCH {
            match self.ready.pop() {
                Some(task) => batch.push(task),
                None => break,
            }
        }
        let full = batch.len() == BATCH;
        // A task woke a while ago and its memory has left the cache: ask
        // for the next few while this one runs, so the misses overlap.
        for task in batch.iter().take(AHEAD) {
            task.prefetch();
        }
        let mut tasks = batch.drain(..);
        while let Some(task) = tasks.next() {
            if let Some(ahead) = tasks.as_slice().get(AHEAD - 1) {
                ahead.prefetch();
            }
            task.run();
        }
        if full {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        if self.doorbell.may_sleep(|| self.ready.is_empty()) {
            return Poll::Pending;
        }
        Poll::Ready(())
    }

    fn remove(&self, key: usize) {
        let mut tasks = lock(&self.tasks);
        if tasks.live.contains(key) {
            tasks.live.remove(key);
        }
    }
}

/// The runner's tokio task: a batch, then a yield, forever. When the
/// runtime drops it, every task it still holds is dropped with it.
/// (The guard is an argument so that it drops even if the task never ran.)
async fn run(close: CloseOnDrop) {
    let runner = &close.0;
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        std::future::poll_fn(|cx| runner.run_batch(cx, &mut batch)).await;
        tokio::task::yield_now().await;
    }
}

struct CloseOnDrop(Arc<Runner>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        let live = {
            let mut tasks = lock(&self.0.tasks);
            tasks.closed = true;
            std::mem::take(&mut tasks.live)
        };
        // Outside the lock: a future's drop may spawn or kill.
        for (_, task) in live {
            task.end();
        }
        while self.0.ready.pop().is_some() {}
    }
}

/// A low-priority task, type-erased for the queues.
trait Task: Send + Sync {
    /// Polls it once (its runner only), or ends it if it was cancelled.
    fn run(self: Arc<Self>);
    /// Ends it at its next turn.
    fn cancel(self: Arc<Self>);
    /// Drops its future now (its runner only, or before it was queued).
    fn end(&self);
    /// Asks the CPU for the first lines of its memory (reads nothing).
    fn prefetch(&self);
}

struct LowTask<F> {
    runner: Arc<Runner>,
    /// Its place in the runner's `tasks`.
    key: AtomicUsize,
    /// In the runner's `ready` queue (or being queued): a wake then is a no-op.
    scheduled: AtomicBool,
    cancelled: AtomicBool,
    /// `None` once it ended. Pinned: never moved out, only dropped in place.
    future: Mutex<Option<F>>,
}

impl<F: Future<Output = ()> + Send + 'static> Task for LowTask<F> {
    fn run(self: Arc<Self>) {
        // Cleared before the poll: a wake during it queues the task again.
        // AcqRel: this reads the flag a waker set (or a later value), so
        // the poll sees what that waker published before waking.
        self.scheduled.swap(false, AcqRel);
        if self.cancelled.load(Acquire) {
            self.end();
            return;
        }
        let mut slot = lock(&self.future);
        let Some(future) = slot.as_mut() else { return };
        let waker = Waker::from(self.clone());
        let mut cx = Context::from_waker(&waker);
        // SAFETY: the future lives in this `Arc`'s allocation, which does
        // not move, and is never moved out of its slot: it is only dropped
        // in place (`end`), so it stays pinned until dropped.
        let future = unsafe { Pin::new_unchecked(future) };
        if future.poll(&mut cx).is_ready() {
            // Dropped in place, outside the runner's table lock.
            *slot = None;
            drop(slot);
            self.runner.remove(self.key.load(Relaxed));
        }
    }

    fn cancel(self: Arc<Self>) {
        self.cancelled.store(true, Release);
        self.wake();
    }

    fn prefetch(&self) {
        let start = std::ptr::from_ref(self).cast::<u8>();
        let lines = std::mem::size_of::<Self>()
            .div_ceil(64)
            .min(PREFETCHED_LINES);
        for line in 0..lines {
            crate::prefetch::prefetch_line(start.wrapping_add(64 * line));
        }
    }

    fn end(&self) {
        let mut slot = lock(&self.future);
        if slot.is_none() {
            // Ended already; its key may belong to another task by now.
            return;
        }
        // Dropped in place: a pinned future must not move before its drop
        // (a process's future publishes pointers into itself).
        *slot = None;
        drop(slot);
        self.runner.remove(self.key.load(Relaxed));
    }
}

/// The cache lines of a task a poll touches first: its flags, its lock and
/// the start of its future (a process's counters, then its body's state).
const PREFETCHED_LINES: usize = 3;

impl<F: Future<Output = ()> + Send + 'static> Wake for LowTask<F> {
    fn wake(self: Arc<Self>) {
        if !self.scheduled.swap(true, AcqRel) {
            let runner = self.runner.clone();
            runner.schedule(self);
        }
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    use loom::sync::Arc;
    use loom::sync::atomic::AtomicUsize;
    use loom::sync::atomic::Ordering::Relaxed;

    use super::Doorbell;

    /// A queuer pushes one task (a counter stands for the queue: the
    /// handshake must hold whatever ordering the queue itself gives) while
    /// the runner, having found the queue empty, goes idle: if the runner
    /// waits, the queuer woke it, or the task was seen.
    #[test]
    fn a_queued_task_never_waits_for_an_idle_runner() {
        crate::loom_builder().check(|| {
            let doorbell = Arc::new(Doorbell::default());
            let queued = Arc::new(AtomicUsize::new(0));
            let queuer = {
                let (doorbell, queued) = (doorbell.clone(), queued.clone());
                loom::thread::spawn(move || {
                    queued.store(1, Relaxed);
                    doorbell.ring()
                })
            };
            let sleeps = doorbell.may_sleep(|| queued.load(Relaxed) == 0);
            let woke = queuer.join().expect("the queuer");
            assert!(
                !sleeps || woke,
                "the runner waits with a task queued and nobody woke it"
            );
        });
    }
}
