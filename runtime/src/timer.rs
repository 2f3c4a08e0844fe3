//! The runtime's own timers for process sleeps ([`ProcessContext::sleep_until`]),
//! as the BEAM has them: hashed timer wheels with 1-ms slots, one per
//! scheduler thread (a shard picked by the thread that registers), each
//! driven by one tokio task that sleeps on a single tokio timer until the
//! wheel's next occupied slot, then wakes that slot's sleepers in one batch.
//!
//! Why not `tokio::time::sleep`: tokio's wheel keeps an intrusive list node
//! in every sleeping task, cascades a 1-s sleep through two levels, and
//! locks the wheel again when a fired sleep is dropped; at 100k sleepers its
//! `Wheel::poll` alone was 37 % of the load's CPU (docs/performance.md,
//! issue 19). Here a slot is a vector of wakers (16 bytes each, contiguous),
//! registering pushes one under the shard's own (uncontended) mutex, and a
//! fired sleep costs nothing when dropped.
//!
//! Precision: a deadline is rounded *up* to the next whole millisecond since
//! the wheel's epoch, and a slot fires only once the clock has reached it, so
//! a sleep never ends early; it ends when the driver's tokio timer (itself
//! 1-ms grained) fires, i.e. normally within 1–2 ms after the deadline.
//!
//! Cancellation is lazy: a sleep dropped before it fired (its process was
//! killed, or lost a `select!`) leaves its waker in the wheel until the slot
//! comes (at most [`SLOTS`] ms), where waking a finished task is a no-op that
//! frees it. Sleeps longer than the wheel's span wait in an overflow map and
//! are removed from it when dropped, so a killed long sleeper holds no memory.
//!
//! A wheel is driven by the runtime's scheduler thread (`scheduler`'s
//! `Ticker`) that first sleeps on it, or else by a tokio task spawned on
//! the runtime of the thread that first sleeps on it, and restarted by the next sleep if that runtime ends; a
//! registry whose threads (over `SHARDS`) share wheels across runtimes
//! relies on that.
//!
//! This module must not block (the lock is held for a few pushes or one
//! slot's swap, never across a wake) and knows nothing of processes beyond
//! the waker it is given.
//!
//! # Protocol
//!
//! | field | writer | readers | ordering | why it is enough |
//! |---|---|---|---|---|
//! | `Shard::fired_through` | the wheel's driver (`take_due`), under the wheel's lock, after taking the due slots and before waking them | `register` (under the lock), `Sleep::poll` (no lock), `Sleep`'s drop (no lock) | `Release` store; `Acquire` in `poll`; `Relaxed` under the lock and in drop | A sleep that reads its millisecond as fired returns `Ready`: the `Acquire` pairs with the `Release`, so it ends after its slot was taken, never before its deadline (a slot fires only once the clock reached it). A stale, smaller value only makes a sleep register, and `register` looks again under the lock, where the driver's store is ordered by the lock itself. Drop's read only decides whether to remove an overflow entry at once; a stale value leaves it to the slot, which cleans it lazily. It ends with the `Timers` (nothing reads it after). |
//! | `NEXT` (a thread's shard) | each thread once, `fetch_add` | — | `Relaxed` | Only a number per thread is needed, not an order. |
//!
//! The wheels themselves (`Wheel`) are only touched under their shard's
//! mutex; the driver's `Notify` and the scheduler's nudge carry no data.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::task::{Context, Poll, Waker};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::prefetch::prefetch_line;
use crate::sync::{Mutex, lock};

/// Slots of one wheel, 1 ms each: a span of 2.048 s holds the load
/// workers' 1-s sleeps without overflow. A power of two.
pub const SLOTS: u64 = 2048;

/// Wheels per [`Timers`]: threads map onto them by the order they first
/// slept in, so each scheduler thread of a runtime has its own.
const SHARDS: usize = 32;

/// The process's timers: one wheel per scheduler thread.
pub(crate) struct Timers {
    /// Millisecond 0 of every wheel.
    epoch: Instant,
    shards: Box<[Shard]>,
}

/// One wheel and what its driver needs.
struct Shard {
    wheel: Mutex<Wheel>,
    /// Every slot up to this millisecond has been woken. Written under the
    /// wheel's lock before the batch is woken; read without it by sleeps.
    fired_through: AtomicU64,
    /// Tells the driver an earlier slot was filled than the one it waits for.
    earlier: Notify,
    /// Rings the scheduler thread driving this wheel, if one does.
    nudge: Mutex<Option<crate::scheduler::Nudge>>,
}

#[derive(Default)]
struct Wheel {
    /// `SLOTS` vectors once the wheel is first used; slot `ms % SLOTS`
    /// holds the wakers due at `ms`, for `ms` in
    /// `(fired_through, fired_through + SLOTS]`.
    slots: Vec<Vec<Waker>>,
    /// One bit per slot: set while the slot holds a waker.
    occupied: Vec<u64>,
    /// Deadlines beyond the ring's span, by millisecond.
    overflow: BTreeMap<u64, Vec<Waker>>,
    /// The millisecond the driver's tokio timer is set for (`u64::MAX`
    /// while it waits for a registration).
    driver_target: u64,
    driver_running: bool,
    /// Sleepers registered and not yet woken (killed ones included until
    /// their slot comes, or their overflow entry is removed).
    entries: usize,
}

/// Which thread registered: an index into the shards, fixed per thread.
fn shard_of_this_thread() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Relaxed) % SHARDS;
    }
    SHARD.with(|shard| *shard)
}

impl Timers {
    pub(crate) fn new() -> Arc<Timers> {
        Arc::new(Timers {
            epoch: Instant::now(),
            shards: (0..SHARDS)
                .map(|_| Shard {
                    wheel: Mutex::new(Wheel {
                        driver_target: u64::MAX,
                        ..Wheel::default()
                    }),
                    fired_through: AtomicU64::new(0),
                    earlier: Notify::new(),
                    nudge: Mutex::new(None),
                })
                .collect(),
        })
    }

    /// Sleepers in every wheel that have not been woken yet, killed ones
    /// included until their slot has passed.
    pub(crate) fn pending(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| lock(&shard.wheel).entries)
            .sum()
    }

    /// The first whole millisecond (since the epoch) at or after `deadline`.
    fn slot_of(&self, deadline: Instant) -> u64 {
        // In u64 (a u128 division is a library call on every sleep).
        let since = deadline.saturating_duration_since(self.epoch);
        let part = u64::from(since.subsec_nanos().div_ceil(1_000_000));
        since
            .as_secs()
            .saturating_mul(1_000)
            .saturating_add(part)
            .min(u64::MAX - 1)
    }

    /// The whole milliseconds since the epoch that have fully passed.
    fn elapsed_ms(&self) -> u64 {
        let nanos = Instant::now()
            .saturating_duration_since(self.epoch)
            .as_nanos();
        u64::try_from(nanos / 1_000_000).unwrap_or(u64::MAX - 1)
    }

    /// Registers `waker` for `ms` on `shard`; false if that millisecond has
    /// already been woken (the sleep is over).
    fn register(self: &Arc<Self>, shard_index: usize, ms: u64, waker: &Waker) -> bool {
        let shard = &self.shards[shard_index];
        let mut wheel = lock(&shard.wheel);
        let fired_through = shard.fired_through.load(Relaxed);
        if ms <= fired_through {
            return false;
        }
        if wheel.slots.is_empty() {
            wheel.slots = (0..SLOTS).map(|_| Vec::new()).collect();
            wheel.occupied = vec![0; (SLOTS / 64) as usize];
        }
        if ms - fired_through <= SLOTS {
            let index = (ms % SLOTS) as usize;
            wheel.slots[index].push(waker.clone());
            wheel.occupied[index / 64] |= 1 << (index % 64);
        } else {
            wheel.overflow.entry(ms).or_default().push(waker.clone());
        }
        wheel.entries += 1;
        let start_driver = !wheel.driver_running;
        let wake_driver = !start_driver && ms < wheel.driver_target;
        if start_driver {
            wheel.driver_running = true;
            wheel.driver_target = 0;
        }
        drop(wheel);
        if start_driver {
            // On a scheduler thread, that thread drives the wheel itself
            // (at each turn, and parking until just past its next slot):
            // its wakes are pushes onto the same thread's queue, and no
            // other thread wakes it for them. Elsewhere, a tokio task.
            let ticker = Box::new(WheelTicker {
                timers: self.clone(),
                shard: shard_index,
                batch: std::cell::RefCell::new(Vec::new()),
            });
            match crate::scheduler::add_ticker(ticker) {
                Ok(nudge) => *lock(&shard.nudge) = Some(nudge),
                Err(_) => {
                    *lock(&shard.nudge) = None;
                    tokio::spawn(drive(self.clone(), shard_index));
                }
            }
        } else if wake_driver {
            shard.earlier.notify_one();
            if let Some(nudge) = lock(&shard.nudge).as_ref() {
                nudge.nudge();
            }
        }
        true
    }

    /// Removes one registration of `waker` at `ms` if it waits in the
    /// overflow map (ring entries are left to their slot: see the top).
    fn cancel(&self, shard_index: usize, ms: u64, waker_id: WakerId) {
        let shard = &self.shards[shard_index];
        let mut wheel = lock(&shard.wheel);
        let wheel = &mut *wheel;
        let Some(wakers) = wheel.overflow.get_mut(&ms) else {
            return;
        };
        if let Some(at) = wakers.iter().position(|w| WakerId::of(w) == waker_id) {
            wakers.swap_remove(at);
            wheel.entries -= 1;
            if wakers.is_empty() {
                wheel.overflow.remove(&ms);
            }
        }
    }
}

impl Shard {
    /// Takes every waker due by `now_ms` into `batch`, moves overflow
    /// entries that came within the ring's span into it, and returns the
    /// next millisecond with a sleeper, if any. Sets `fired_through`.
    fn take_due(&self, now_ms: u64, batch: &mut Vec<Waker>) -> Option<u64> {
        let mut wheel = lock(&self.wheel);
        let wheel = &mut *wheel;
        let already = batch.len();
        let fired_through = self.fired_through.load(Relaxed);
        if now_ms > fired_through && !wheel.slots.is_empty() {
            let last = now_ms.min(fired_through + SLOTS);
            let mut ms = fired_through + 1;
            while let Some(due) = wheel.next_occupied(ms, last) {
                let index = (due % SLOTS) as usize;
                batch.append(&mut wheel.slots[index]);
                wheel.occupied[index / 64] &= !(1 << (index % 64));
                ms = due + 1;
            }
        }
        let fired_through = fired_through.max(now_ms);
        // Overflow entries now due, or now within the ring's span.
        while let Some(entry) = wheel.overflow.first_entry() {
            let ms = *entry.key();
            if ms <= fired_through {
                batch.append(&mut entry.remove());
            } else if ms - fired_through <= SLOTS {
                let index = (ms % SLOTS) as usize;
                wheel.slots[index].append(&mut entry.remove());
                wheel.occupied[index / 64] |= 1 << (index % 64);
            } else {
                break;
            }
        }
        self.fired_through.store(fired_through, Release);
        wheel.entries -= batch.len() - already;
        let next = if wheel.slots.is_empty() {
            None
        } else {
            wheel.next_occupied(fired_through + 1, fired_through + SLOTS)
        }
        .or_else(|| wheel.overflow.keys().next().copied());
        wheel.driver_target = next.unwrap_or(u64::MAX);
        next
    }
}

impl Wheel {
    /// The first millisecond in `from..=to` (at most `SLOTS` apart) whose
    /// slot holds a waker.
    fn next_occupied(&self, from: u64, to: u64) -> Option<u64> {
        let mut ms = from;
        while ms <= to {
            let index = (ms % SLOTS) as usize;
            let bits = self.occupied[index / 64] >> (index % 64);
            if bits != 0 {
                let due = ms + u64::from(bits.trailing_zeros());
                return (due <= to).then_some(due);
            }
            // Nothing in the rest of this word: on to the next word's start.
            ms += 64 - (index % 64) as u64;
        }
        None
    }
}

/// The driver of one wheel: sleeps (on one tokio timer) until the next
/// occupied slot, wakes everything due in one batch, and again. Ends with
/// its runtime; the next registration starts another.
async fn drive(timers: Arc<Timers>, shard_index: usize) {
    struct Stopped<'a>(&'a Shard);
    impl Drop for Stopped<'_> {
        fn drop(&mut self) {
            let mut wheel = lock(&self.0.wheel);
            wheel.driver_running = false;
            wheel.driver_target = u64::MAX;
        }
    }
    let shard = &timers.shards[shard_index];
    let _stopped = Stopped(shard);
    let mut batch = Vec::new();
    let timer = tokio::time::sleep_until(timers.epoch);
    tokio::pin!(timer);
    loop {
        let next = shard.take_due(timers.elapsed_ms(), &mut batch);
        wake_all(&mut batch);
        match next {
            Some(ms) => {
                let Some(at) = timers
                    .epoch
                    .checked_add(std::time::Duration::from_millis(ms))
                else {
                    // Beyond what the clock can say: only a nearer sleep matters.
                    shard.earlier.notified().await;
                    continue;
                };
                timer.as_mut().reset(at);
                tokio::select! {
                    biased;
                    () = shard.earlier.notified() => {}
                    () = timer.as_mut() => {}
                }
            }
            None => shard.earlier.notified().await,
        }
    }
}

/// A wheel driven by the scheduler thread that first slept on it
/// (`scheduler::Ticker`): each tick wakes what is due and names the next
/// slot's instant. Dropped with its thread: the wheel is then free for
/// the next registration to start another driver.
struct WheelTicker {
    timers: Arc<Timers>,
    shard: usize,
    /// The batch's buffer, kept between ticks (its thread's only).
    batch: std::cell::RefCell<Vec<Waker>>,
}

impl crate::scheduler::Ticker for WheelTicker {
    fn tick(&self) -> Option<std::time::Instant> {
        let shard = &self.timers.shards[self.shard];
        let mut batch = self.batch.take();
        let next = shard.take_due(self.timers.elapsed_ms(), &mut batch);
        wake_all(&mut batch);
        self.batch.replace(batch);
        let at = self
            .timers
            .epoch
            .checked_add(std::time::Duration::from_millis(next?))?;
        Some(at.into_std())
    }
}

impl Drop for WheelTicker {
    fn drop(&mut self) {
        let shard = &self.timers.shards[self.shard];
        let mut wheel = lock(&shard.wheel);
        wheel.driver_running = false;
        wheel.driver_target = u64::MAX;
    }
}

/// Wakes every waker in `batch`, emptying it. Waking a task first touches
/// its header, which with many sleepers is a cache miss each; asking for
/// the header a few wakers ahead overlaps those misses.
fn wake_all(batch: &mut Vec<Waker>) {
    const AHEAD: usize = 8;
    for waker in batch.iter().take(AHEAD) {
        prefetch_line(waker.data().cast());
    }
    let mut wakers = batch.drain(..);
    while let Some(waker) = wakers.next() {
        if let Some(ahead) = wakers.as_slice().get(AHEAD - 1) {
            prefetch_line(ahead.data().cast());
        }
        waker.wake();
    }
}

/// A waker's identity (what `Waker::will_wake` compares), kept without a
/// reference count.
#[derive(Clone, Copy, PartialEq, Eq)]
struct WakerId(usize, usize);

impl WakerId {
    fn of(waker: &Waker) -> WakerId {
        WakerId(
            waker.data() as usize,
            std::ptr::from_ref(waker.vtable()) as usize,
        )
    }
}

/// A process's sleep until a deadline; see [`ProcessContext::sleep_until`]
/// (crate::ProcessContext::sleep_until).
#[must_use = "a sleep does nothing unless awaited"]
pub struct Sleep<'a> {
    timers: &'a Arc<Timers>,
    deadline: Instant,
    registered: Option<Registered>,
}

#[derive(Clone, Copy)]
struct Registered {
    shard: usize,
    ms: u64,
    waker: WakerId,
}

impl<'a> Sleep<'a> {
    pub(crate) fn new(timers: &'a Arc<Timers>, deadline: Instant) -> Sleep<'a> {
        Sleep {
            timers,
            deadline,
            registered: None,
        }
    }

    /// When it ends.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

impl Future for Sleep<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let timers = self.timers;
        let waker = WakerId::of(cx.waker());
        let (shard, ms) = match self.registered {
            Some(registered) => {
                let fired = timers.shards[registered.shard].fired_through.load(Acquire);
                if registered.ms <= fired {
                    self.registered = None;
                    return Poll::Ready(());
                }
                if registered.waker == waker {
                    // Woken by something else; the registration still stands.
                    return Poll::Pending;
                }
                // Moved to another task: register that one too (the old
                // entry wakes the old task once, harmlessly).
                (registered.shard, registered.ms)
            }
            None => {
                let shard = shard_of_this_thread();
                let ms = timers.slot_of(self.deadline);
                if ms <= timers.shards[shard].fired_through.load(Acquire) {
                    return Poll::Ready(());
                }
                (shard, ms)
            }
        };
        if !timers.register(shard, ms, cx.waker()) {
            self.registered = None;
            return Poll::Ready(());
        }
        self.registered = Some(Registered { shard, ms, waker });
        Poll::Pending
    }
}

impl Drop for Sleep<'_> {
    fn drop(&mut self) {
        if let Some(registered) = self.registered
            && registered.ms
                > self.timers.shards[registered.shard]
                    .fired_through
                    .load(Relaxed)
                    + SLOTS
        {
            self.timers
                .cancel(registered.shard, registered.ms, registered.waker);
        }
    }
}
