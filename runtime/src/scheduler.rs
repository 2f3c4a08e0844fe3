//! The runtime's own schedulers (Erlang's schedulers, `schedulers_online`
//! included): up to `max` OS threads, each with its own run queues (`high`
//! ahead of `normal`), polling the processes placed on it, a batch at a
//! time. How many of them are *online* changes while they run
//! ([`Schedulers::set_online`]); an offline scheduler polls no process, so
//! its thread's CPU falls to nothing and the load spreads over, or
//! squeezes onto, the online ones.
//!
//! Placement: every task gets a placement number at spawn (round robin)
//! and runs on scheduler `placement % online`. A wake computes that
//! scheduler and queues the task there; a scheduler that pops a task that
//! is no longer its own (`online` changed since it was queued) forwards it
//! to the right one instead of polling it. So a change of `online` moves
//! every process at its next wake (or at once, if it was queued), nothing
//! is lost, and no scheduler steals from another (one queue per scheduler,
//! written by wakers, read by its thread only: no global queue to contend
//! on at a million timer-driven processes).
//!
//! What tokio still does: the I/O and time drivers, `spawn_blocking`, and
//! any plain tokio task, all on the host's tokio runtime, whose handle
//! every scheduler thread enters: a process's sockets and tokio timers
//! register with that runtime's drivers, which wake the process through
//! its waker, i.e. onto its scheduler's queue. A wheel of the runtime's own
//! timer (`timer`) is driven by the scheduler thread that first slept on
//! it (a `Ticker`: ticked at every turn, and the thread parks until just
//! past its next slot), so a million sleepers' wakes are pushes onto the
//! same thread's queue and no other thread wakes it for them.
//!
//! # Protocol
//!
//! | state | writers | readers | ordering |
//! |---|---|---|---|
//! | `online` | [`Schedulers::set_online`] | wakers, every scheduler at each pop | `Release` store / `Acquire` loads; a stale read only costs a forward |
//! | a task's `scheduled` | a wake (false → true, the waker then queues it); its scheduler (true → false, before the poll) | the same | `AcqRel` swaps: a task is in at most one queue, and a poll sees what its waker published |
//! | a task's `cancelled` | `Cancel::cancel` (then wakes it) | the scheduler that pops it | `Release` / `Acquire` |
//! | a task's `future` | polled or dropped under its mutex (a scheduler, or shutdown) | — | the mutex: never two polls at once, even across a forward |
//! | a scheduler's queues | pushed by wakers (any thread) | popped by its own thread only | crossbeam's `SegQueue` |
//! | a scheduler's `doorbell` | `low_priority::Doorbell`: the queuer rings, the thread goes idle | — | its `SeqCst` handshake (loom model `a_queued_task_never_waits_for_an_idle_runner`); a queuer on the target's own thread skips it (that thread looks at its queue before it sleeps) |
//! | `shutdown` | [`Schedulers::shutdown`] | each thread at each turn; spawns | `Release` / `Acquire`; spawns after it end the future unpolled |
//! | a scheduler's `nudged` | `Nudge::nudge` (another thread moved a ticker's deadline earlier), then it rings | the thread, as it goes idle (swap to false) | `Relaxed`, ordered by the doorbell's `SeqCst` fences as a queue push is: the thread sees it, or is unparked |
//! | a thread's tickers (`TICKERS`) | that thread only (thread-local) | that thread, at each turn | — |
//!
//! Why nothing is lost: a task whose `scheduled` is true is in exactly one
//! queue (or being forwarded between two by the thread that popped it), and
//! every queue's thread keeps running whether online or not, so every
//! queued task is popped; a popped task is polled only by the scheduler
//! `placement % online` read at that pop, else forwarded; `online` only
//! takes values in `1..=max`, so a forward always has a target.
//!
//! This module knows nothing of pids, monitors or exit reasons (the future
//! given to it carries its own exit guard); it must not block a scheduler
//! thread anywhere but its idle park.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Wake, Waker};
use std::time::Duration;

use crossbeam_queue::SegQueue;
use slab::Slab;

use crate::low_priority::Doorbell;
use crate::watch;

/// Tasks a scheduler polls per turn before it looks at its `high` queue again.
pub const BATCH: usize = 64;

/// Shards of the table of live tasks (kept only so that a shutdown can
/// drop them all).
const LIVE_SHARDS: usize = 64;

/// A count of schedulers online outside `1..=max`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "schedulers online must be between 1 and {max} (the maximum this node started with), not {asked}"
)]
pub struct OutOfRange {
    pub asked: usize,
    pub max: usize,
}

/// Why the schedulers could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Online(#[from] OutOfRange),
    #[error("cannot start a scheduler thread: {0}")]
    Thread(std::io::Error),
}

/// The schedulers of one node.
pub struct Schedulers {
    shared: Arc<Shared>,
    /// One message from each thread as it stops; taken by the shutdown.
    stopped: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

struct Shared {
    schedulers: Box<[Scheduler]>,
    online: AtomicUsize,
    next_placement: AtomicUsize,
    shutdown: std::sync::atomic::AtomicBool,
    live: Box<[LiveShard]>,
    /// The host's runtime: its drivers serve the processes' I/O and timers.
    tokio: tokio::runtime::Handle,
}

/// One shard of the live tasks, by placement.
type LiveShard = Mutex<Slab<Arc<dyn Task>>>;

/// One scheduler's queues and thread.
struct Scheduler {
    high: SegQueue<Arc<dyn Task>>,
    normal: SegQueue<Arc<dyn Task>>,
    doorbell: Doorbell,
    /// A ticker's deadline moved earlier (`Nudge`): tick before parking.
    nudged: std::sync::atomic::AtomicBool,
    thread: OnceLock<std::thread::Thread>,
    /// Its watch slot (its CPU clock), once its thread registered.
    slot: OnceLock<&'static watch::Slot>,
}

thread_local! {
    /// The scheduler this thread is: `(its schedulers, its index)`.
    static HERE: std::cell::RefCell<Option<(std::sync::Weak<Shared>, usize)>> =
        const { std::cell::RefCell::new(None) };
    /// What this scheduler thread does besides polling (its timer wheels).
    static TICKERS: std::cell::RefCell<Vec<Box<dyn Ticker>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Work a scheduler thread does itself at every turn and when it wakes:
/// a timer wheel fires what is due. The thread parks no longer than until
/// the earliest instant its tickers name (plus `TICK_SLACK`), so no other
/// thread has to wake it for its own timers.
pub(crate) trait Ticker {
    /// Does what is due now; when it next has something to do, if ever.
    fn tick(&self) -> Option<std::time::Instant>;
}

/// Rings one scheduler thread, so that it ticks again (a ticker's deadline
/// moved earlier from another thread).
pub(crate) struct Nudge {
    shared: std::sync::Weak<Shared>,
    index: usize,
}

impl Nudge {
    pub(crate) fn nudge(&self) {
        let on_it = HERE.with_borrow(|here| {
            here.as_ref()
                .is_some_and(|(shared, index)| *index == self.index && shared.ptr_eq(&self.shared))
        });
        if on_it {
            // The thread is running: it ticks before it parks.
            return;
        }
        if let Some(shared) = self.shared.upgrade() {
            let scheduler = &shared.schedulers[self.index];
            // Before the ring's fence: a thread going idle sees the flag,
            // or the ring sees it idle and unparks it (the doorbell's
            // handshake, as for a queued task).
            scheduler.nudged.store(true, Relaxed);
            scheduler.ring();
        }
    }
}

/// Makes `ticker` part of the calling scheduler thread's turns (until the
/// thread ends, when it is dropped); `None` (and the ticker back) if this
/// is not a scheduler thread.
pub(crate) fn add_ticker<T: Ticker + 'static>(ticker: Box<T>) -> Result<Nudge, Box<T>> {
    let here = HERE.with_borrow(|here| here.clone());
    match here {
        Some((shared, index)) => {
            TICKERS.with_borrow_mut(|tickers| tickers.push(ticker));
            Ok(Nudge { shared, index })
        }
        None => Err(ticker),
    }
}

/// Runs every ticker of this thread; the earliest instant one names.
fn tick_all() -> Option<std::time::Instant> {
    // Taken out while they tick (no allocation): a tick only wakes, but
    // should one add a ticker, it is kept.
    let tickers = TICKERS.with_borrow_mut(std::mem::take);
    let next = tickers.iter().filter_map(|ticker| ticker.tick()).min();
    TICKERS.with_borrow_mut(|now| {
        let added = std::mem::replace(now, tickers);
        now.extend(added);
    });
    next
}

/// How long past a ticker's instant an idle scheduler parks: the slot
/// after it comes due meanwhile and fires in the same wake-up (as tokio's
/// millisecond timer did for the wheel: one wake-up per ~2 ms, not per
/// ms). A sleep still never ends early; it ends within 1–2 ms after its
/// deadline, as `timer` says.
const TICK_SLACK: Duration = Duration::from_millis(1);

/// How long a scheduler thread runs without parking before it gives its
/// core to whatever else waits for it. Linux's scheduler (EEVDF, with
/// `RUN_TO_PARITY`) lets a busy thread finish its slice, ~3 ms, before a
/// thread woken on its core runs: with every core held by a busy
/// scheduler, a request's I/O wake-up, or the other scheduler, waited
/// that long (a `sum(5)` round trip's p99 3.4–4 ms with two schedulers
/// and four endless sums, against 0.4 ms with one scheduler and a free
/// core). Costs one `sched_yield` per this much busy time. The node's
/// own CPU-bound work must then run at a lower priority (`background`),
/// or it takes every turn given away.
const GIVE_WAY_AFTER: Duration = Duration::from_micros(500);

impl Schedulers {
    /// Starts `max` scheduler threads, `online` of them online, serving
    /// processes with the drivers of the runtime `tokio`.
    pub fn start(
        tokio: tokio::runtime::Handle,
        online: usize,
        max: usize,
    ) -> Result<Arc<Schedulers>, StartError> {
        let max = max.max(1);
        if !(1..=max).contains(&online) {
            return Err(StartError::Online(OutOfRange { asked: online, max }));
        }
        let shared = Arc::new(Shared {
            schedulers: (0..max)
                .map(|_| Scheduler {
                    high: SegQueue::new(),
                    normal: SegQueue::new(),
                    doorbell: Doorbell::default(),
                    nudged: std::sync::atomic::AtomicBool::new(false),
                    thread: OnceLock::new(),
                    slot: OnceLock::new(),
                })
                .collect(),
            online: AtomicUsize::new(online),
            next_placement: AtomicUsize::new(0),
            shutdown: std::sync::atomic::AtomicBool::new(false),
            live: (0..LIVE_SHARDS).map(|_| Mutex::new(Slab::new())).collect(),
            tokio,
        });
        let (started, all_started) = std::sync::mpsc::channel();
        let (stopping, stopped) = std::sync::mpsc::channel();
        for index in 0..max {
            let (thread_shared, started, stopping) =
                (shared.clone(), started.clone(), stopping.clone());
            // Detached: a shutdown waits for each thread's message, for a
            // while (a poll that never yields would hold a join forever).
            let spawned = std::thread::Builder::new()
                .name(format!("scheduler {}", index + 1))
                .spawn(move || {
                    run(&thread_shared, index, &started);
                    let _ = stopping.send(());
                });
            if let Err(error) = spawned {
                shared.shutdown.store(true, Release);
                return Err(StartError::Thread(error));
            }
            // Each thread registers its watch slot before it reports:
            // slots are in scheduler order, and usage can be read at once.
            let _ = all_started.recv();
        }
        Ok(Arc::new(Schedulers {
            shared,
            stopped: Mutex::new(Some(stopped)),
        }))
    }

    /// Schedulers online now.
    pub fn online(&self) -> usize {
        self.shared.online.load(Acquire)
    }

    /// True if the calling thread is inside a tokio runtime other than the
    /// one whose drivers these schedulers use (the host's console runtime):
    /// a process spawned there stays there, off the schedulers.
    pub(crate) fn called_from_another_runtime(&self) -> bool {
        tokio::runtime::Handle::try_current()
            .is_ok_and(|current| current.id() != self.shared.tokio.id())
    }

    /// The most schedulers that can be online.
    pub fn max(&self) -> usize {
        self.shared.schedulers.len()
    }

    /// Sets how many schedulers are online; processes move at their next
    /// wake (queued ones at once). Returns the count before.
    pub fn set_online(&self, online: usize) -> Result<usize, OutOfRange> {
        let max = self.max();
        if !(1..=max).contains(&online) {
            return Err(OutOfRange { asked: online, max });
        }
        let before = self.shared.online.swap(online, AcqRel);
        // Every thread looks at its queues again: an offline one forwards
        // what it holds, an online one picks up what is forwarded.
        for scheduler in self.shared.schedulers.iter() {
            scheduler.ring();
        }
        Ok(before)
    }

    /// The CPU time each scheduler's thread has used, in scheduler order.
    pub fn cpu_times(&self) -> Vec<Duration> {
        self.shared
            .schedulers
            .iter()
            .map(|scheduler| {
                scheduler
                    .slot
                    .get()
                    .map_or(Duration::ZERO, |slot| slot.cpu_time())
            })
            .collect()
    }

    /// Runs `future` on the scheduler its placement picks (`high`: ahead of
    /// normal tasks there); the returned handle cancels it at its next turn.
    pub(crate) fn spawn<F>(&self, future: F, high: bool) -> Cancel
    where
        F: Future<Output = ()> + Send + 'static,
    {
        spawn_on(&self.shared, future, high)
    }

    /// Stops every scheduler thread (waiting up to `patience` for polls in
    /// progress to return) and drops every task still live (their exit
    /// guards run here, on the caller's thread, inside the host's runtime);
    /// a task still inside a poll then is left, as a tokio runtime's
    /// shutdown leaves it. Spawns after this end their future unpolled.
    pub fn shutdown(&self, patience: Duration) {
        self.shared.shutdown.store(true, Release);
        for scheduler in self.shared.schedulers.iter() {
            if let Some(thread) = scheduler.thread.get() {
                thread.unpark();
            }
        }
        let Some(stopped) = lock(&self.stopped).take() else {
            return;
        };
        let deadline = std::time::Instant::now() + patience;
        for _ in 0..self.max() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if stopped.recv_timeout(left).is_err() {
                tracing::warn!("a scheduler is still inside a poll at shutdown");
                break;
            }
        }
        let _entered = self.shared.tokio.enter();
        // A dropped future may spawn or end others: until nothing is left.
        loop {
            let mut ended = Vec::new();
            for shard in self.shared.live.iter() {
                ended.extend(
                    std::mem::take(&mut *lock(shard))
                        .into_iter()
                        .map(|(_, task)| task),
                );
            }
            if ended.is_empty() {
                break;
            }
            for task in ended {
                task.end_unless_polled();
            }
        }
        for scheduler in self.shared.schedulers.iter() {
            while scheduler.high.pop().is_some() {}
            while scheduler.normal.pop().is_some() {}
        }
    }
}

impl Drop for Schedulers {
    fn drop(&mut self) {
        self.shutdown(Duration::from_secs(1));
    }
}

fn spawn_on<F>(shared: &Arc<Shared>, future: F, high: bool) -> Cancel
where
    F: Future<Output = ()> + Send + 'static,
{
    let placement = shared.next_placement.fetch_add(1, Relaxed);
    let task = Arc::new(Job {
        shared: shared.clone(),
        placement,
        high,
        key: AtomicUsize::new(usize::MAX),
        scheduled: std::sync::atomic::AtomicBool::new(true),
        cancelled: std::sync::atomic::AtomicBool::new(false),
        future: Mutex::new(Some(future)),
    });
    {
        let mut live = lock(&shared.live[placement % LIVE_SHARDS]);
        if shared.shutdown.load(Acquire) {
            // The schedulers are gone: the future ends here, unpolled, as a
            // tokio task spawned on a runtime shutting down would.
            drop(live);
            task.end();
            return Cancel(task);
        }
        let key = live.insert(task.clone());
        task.key.store(key, Relaxed);
    }
    shared.schedule(task.clone());
    Cancel(task)
}

/// What a kill calls to end a task at its next turn.
pub(crate) struct Cancel(Arc<dyn Task>);

impl Cancel {
    pub(crate) fn cancel(&self) {
        self.0.clone().cancel();
    }
}

impl Shared {
    /// Queues a task (its `scheduled` just set) on the scheduler its
    /// placement picks now.
    fn schedule(&self, task: Arc<dyn Task>) {
        let online = self.online.load(Acquire).max(1);
        let target = task.placement() % online;
        self.push(target, task);
    }

    fn push(&self, target: usize, task: Arc<dyn Task>) {
        let scheduler = &self.schedulers[target];
        if task.is_high() {
            scheduler.high.push(task);
        } else {
            scheduler.normal.push(task);
        }
        // On the target's own thread no ring is needed: that thread is
        // running and looks at its queues before it sleeps.
        let on_target = HERE.with_borrow(|here| {
            here.as_ref().is_some_and(|(shared, index)| {
                *index == target && std::ptr::eq(shared.as_ptr(), self)
            })
        });
        if !on_target {
            scheduler.ring();
        }
    }
}

impl Scheduler {
    fn ring(&self) {
        if self.doorbell.ring()
            && let Some(thread) = self.thread.get()
        {
            thread.unpark();
        }
    }

    fn is_empty(&self) -> bool {
        self.high.is_empty() && self.normal.is_empty()
    }
}

/// A scheduler thread: turns until shutdown. A turn takes what `high`
/// holds (up to a batch), then up to a batch of `normal`; each task is
/// polled if it is this scheduler's, else forwarded.
fn run(shared: &Arc<Shared>, index: usize, started: &std::sync::mpsc::Sender<()>) {
    let me = &shared.schedulers[index];
    let _ = me.thread.set(std::thread::current());
    watch::scheduler_thread_started();
    watch::scheduler_thread_parks();
    if let Some(slot) = watch::this_thread_slot() {
        let _ = me.slot.set(slot);
    }
    HERE.set(Some((Arc::downgrade(shared), index)));
    let _entered = shared.tokio.enter();
    let _ = started.send(());
    let mut batch: Vec<Arc<dyn Task>> = Vec::with_capacity(BATCH);
    let mut on_cpu_since = std::time::Instant::now();
    while !shared.shutdown.load(Acquire) {
        let next_tick = tick_all();
        while batch.len() < BATCH {
            match me.high.pop() {
                Some(task) => batch.push(task),
                None => break,
            }
        }
        let high = batch.len();
        while batch.len() < high + BATCH {
            match me.normal.pop() {
                Some(task) => batch.push(task),
                None => break,
            }
        }
        if batch.is_empty() {
            let nothing_to_do = || {
                !shared.shutdown.load(Acquire) && me.is_empty() && !me.nudged.swap(false, Relaxed)
            };
            if me.doorbell.may_sleep(nothing_to_do) {
                match next_tick {
                    Some(at) => std::thread::park_timeout(
                        at.saturating_duration_since(std::time::Instant::now()) + TICK_SLACK,
                    ),
                    None => std::thread::park(),
                }
                on_cpu_since = std::time::Instant::now();
            }
            continue;
        }
        for task in batch.drain(..) {
            let online = shared.online.load(Acquire).max(1);
            let target = task.placement() % online;
            if target == index {
                task.run();
            } else {
                shared.push(target, task);
            }
        }
        if on_cpu_since.elapsed() >= GIVE_WAY_AFTER {
            // Lets a thread waiting for this core in (the I/O driver with a
            // request, the other scheduler, the benchmark's client); if none
            // waits, the kernel returns at once.
            std::thread::yield_now();
            on_cpu_since = std::time::Instant::now();
        }
    }
    HERE.set(None);
    // The wheels this thread drove are free for another driver.
    TICKERS.with_borrow_mut(std::mem::take);
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A task, type-erased for the queues.
trait Task: Send + Sync {
    /// Polls it once (the scheduler that popped it), or ends it if cancelled.
    fn run(self: Arc<Self>);
    /// Ends it at its next turn.
    fn cancel(self: Arc<Self>);
    /// Drops its future now.
    fn end(&self);
    /// Drops its future now unless a poll of it is in progress.
    fn end_unless_polled(&self);
    fn placement(&self) -> usize;
    fn is_high(&self) -> bool;
}

struct Job<F> {
    shared: Arc<Shared>,
    placement: usize,
    high: bool,
    /// Its place in its shard of `live`.
    key: AtomicUsize,
    /// In a queue (or being queued or forwarded): a wake then is a no-op.
    scheduled: std::sync::atomic::AtomicBool,
    cancelled: std::sync::atomic::AtomicBool,
    /// `None` once it ended. Pinned: never moved out, only dropped in place.
    future: Mutex<Option<F>>,
}

impl<F: Future<Output = ()> + Send + 'static> Job<F> {
    fn remove(&self) {
        let mut live = lock(&self.shared.live[self.placement % LIVE_SHARDS]);
        let key = self.key.load(Relaxed);
        if live
            .get(key)
            .is_some_and(|task| std::ptr::addr_eq(Arc::as_ptr(task), std::ptr::from_ref(self)))
        {
            live.remove(key);
        }
    }
}

impl<F: Future<Output = ()> + Send + 'static> Task for Job<F> {
    fn run(self: Arc<Self>) {
        // Cleared before the poll: a wake during it queues the task again.
        // AcqRel: the poll sees what the waker published before waking.
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
        // in place (`end`, or here when it is done), so it stays pinned
        // until dropped.
        let future = unsafe { Pin::new_unchecked(future) };
        if future.poll(&mut cx).is_ready() {
            *slot = None;
            drop(slot);
            self.remove();
        }
    }

    fn cancel(self: Arc<Self>) {
        self.cancelled.store(true, Release);
        self.wake();
    }

    fn end(&self) {
        let mut slot = lock(&self.future);
        if slot.is_none() {
            return;
        }
        // Dropped in place: a pinned future must not move before its drop.
        *slot = None;
        drop(slot);
        self.remove();
    }

    fn end_unless_polled(&self) {
        let Ok(mut slot) = self.future.try_lock() else {
            return;
        };
        *slot = None;
        drop(slot);
        self.remove();
    }

    fn placement(&self) -> usize {
        self.placement
    }

    fn is_high(&self) -> bool {
        self.high
    }
}

impl<F: Future<Output = ()> + Send + 'static> Wake for Job<F> {
    fn wake(self: Arc<Self>) {
        if !self.scheduled.swap(true, AcqRel) {
            let shared = self.shared.clone();
            shared.schedule(self);
        }
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    use loom::sync::Arc;
    use loom::sync::atomic::AtomicBool;
    use loom::sync::atomic::Ordering::Relaxed;

    use crate::low_priority::Doorbell;

    /// Another thread moves a ticker's deadline earlier (`Nudge`: the flag,
    /// then the ring) while the scheduler, having found nothing to do, goes
    /// idle: if it parks, it was unparked, or it saw the flag and ticks
    /// first. (A loom atomic stands for the scheduler's `nudged`.)
    #[test]
    fn a_nudge_is_never_lost_to_a_scheduler_going_idle() {
        crate::loom_builder().check(|| {
            let doorbell = Arc::new(Doorbell::default());
            let nudged = Arc::new(AtomicBool::new(false));
            let nudger = {
                let (doorbell, nudged) = (doorbell.clone(), nudged.clone());
                loom::thread::spawn(move || {
                    nudged.store(true, Relaxed);
                    doorbell.ring()
                })
            };
            let parks = doorbell.may_sleep(|| !nudged.swap(false, Relaxed));
            let unparked = nudger.join().expect("the nudger");
            assert!(
                !parks || unparked,
                "the scheduler parks past an earlier deadline and nobody woke it"
            );
        });
    }
}
