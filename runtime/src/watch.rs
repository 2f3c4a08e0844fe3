//! One slot per scheduler thread saying which process that thread is
//! polling and since when, the thread's CPU clock, its OS thread id and
//! its stack's bounds: what the long-schedule monitor
//! (`crate::long_schedule`), the scheduler usage (`crate::usage`) and the
//! native stack sampler (`crate::stack`) read from other threads.
//!
//! The poll path writes its own thread's slot only (three `Release` stores
//! per poll, plain moves on x86, on a cache line no other scheduler
//! writes); readers never write a slot. The thread id and stack bounds are
//! written once, when the thread registers (before `live` is published), and
//! never again. Nothing here may block, allocate or take a lock on the poll
//! path.
//!
//! # Protocol
//!
//! | field | writer | readers | ordering | why it is enough |
//! |---|---|---|---|---|
//! | `Slot::pid`, `started`, `ended` | the slot's own thread, at each poll's start (`pid`, then `started`) and end (`ended`) | the long-schedule monitor, usage, the stack sampler, a fatal handler on the same thread | `Release` stores, `Acquire` loads | `polling` loads `started`, `pid`, `ended`, then `started` again: it reports a poll only if `started` did not change across its reads and `ended < started`. The writer stores `pid` before `started`, and the next poll's `pid` only after this poll's `ended`, so the pid read belongs to the poll reported. A racing reader at worst reports no poll, or one that just ended; never a wrong pid for it. |
//! | `Slot::clock`, `tid`, `stack_low`, `stack_high` | the slot's thread, once, in `register` | readers, after `live` | `Relaxed`, published by `live` | Written before `live`'s `Release` store; read only after an `Acquire` load of `live` sees `true`. Never written again. |
//! | `Slot::live` | `register`, once | `schedulers()` walkers | `Release` / `Acquire` | Publishes the fields above. A slot is never unregistered: a thread's slot lives as long as the process (the `SLOTS` array is static). |
//! | `REGISTERED` | `register` (`fetch_add`) | `schedulers()` | `Relaxed` write, `Acquire` read; `live` decides | The count only bounds the walk; a slot counted but not yet `live` is skipped. |
//! | `SLOT` (thread-local) | its thread | its thread (and a signal handler on it) | — | A marker or an index into `SLOTS`, never an address: `slot()` is a bounds-checked lookup. |

use std::cell::Cell;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU64, AtomicUsize};
use std::time::Duration;

use crate::activity;

/// The most scheduler threads watched (more are run but not watched).
pub const MAX_SCHEDULERS: usize = 256;

/// What one scheduler thread is doing, written only by that thread.
#[repr(align(64))]
pub struct Slot {
    /// The pid being polled (or last polled).
    pid: AtomicU64,
    /// Clock ticks when the current (or last) poll started; 0 before the first.
    started: AtomicU64,
    /// Clock ticks when the last poll ended.
    ended: AtomicU64,
    /// The thread's CPU-time clock id (`pthread_getcpuclockid`).
    clock: AtomicI64,
    /// The thread's OS id (`gettid`), for `tgkill`; 0 if unknown.
    tid: AtomicI32,
    /// The thread's stack, `[stack_low, stack_high)` (`pthread_getattr_np`);
    /// both 0 if unknown.
    stack_low: AtomicUsize,
    stack_high: AtomicUsize,
    live: AtomicBool,
}

impl Slot {
    const fn idle() -> Slot {
        Slot {
            pid: AtomicU64::new(0),
            started: AtomicU64::new(0),
            ended: AtomicU64::new(0),
            clock: AtomicI64::new(0),
            tid: AtomicI32::new(0),
            stack_low: AtomicUsize::new(0),
            stack_high: AtomicUsize::new(0),
            live: AtomicBool::new(false),
        }
    }

    /// The poll that was running when read: `(pid, started ticks)`, or
    /// `None` if the thread is between polls.
    pub fn polling(&self) -> Option<(u64, u64)> {
        let started = self.started.load(Acquire);
        let pid = self.pid.load(Acquire);
        let ended = self.ended.load(Acquire);
        // A pid of the next poll is stored after this poll's end: seeing it
        // means seeing `ended >= started` too (both Release/Acquire).
        (started != 0 && ended < started && self.started.load(Acquire) == started)
            .then_some((pid, started))
    }

    /// When the poll that started at `started` ended, in ticks, once it has:
    /// exact if no other poll started since, else an upper bound (the next
    /// poll's start, microseconds later).
    pub fn ended_since(&self, started: u64) -> Option<u64> {
        let now_started = self.started.load(Acquire);
        let ended = self.ended.load(Acquire);
        if now_started == started {
            (ended >= started).then_some(ended)
        } else {
            Some(now_started)
        }
    }

    /// CPU time the thread has used.
    pub fn cpu_time(&self) -> Duration {
        ThreadClock(self.clock.load(Relaxed) as nix::libc::clockid_t).now()
    }

    /// The thread's OS id and its stack's bounds `[low, high)`, written once
    /// at its registration; `None` if they could not be read.
    pub fn thread(&self) -> Option<(i32, usize, usize)> {
        let tid = self.tid.load(Relaxed);
        let low = self.stack_low.load(Relaxed);
        let high = self.stack_high.load(Relaxed);
        (tid > 0 && low < high).then_some((tid, low, high))
    }

    #[inline]
    fn enter(&self, pid: u64, started: u64) {
        self.pid.store(pid, Release);
        self.started.store(started, Release);
    }

    #[inline]
    pub(crate) fn leave(&self, ended: u64) {
        self.ended.store(ended, Release);
    }
}

// Each slot fills one cache line of its own (no two schedulers write the
// same line).
const _: () = assert!(std::mem::align_of::<Slot>() == 64);
const _: () = assert!(std::mem::size_of::<Slot>() == 64);

static SLOTS: [Slot; MAX_SCHEDULERS] = [const { Slot::idle() }; MAX_SCHEDULERS];
static REGISTERED: AtomicUsize = AtomicUsize::new(0);

/// 0: not a scheduler thread; 1: a scheduler thread without a slot yet;
/// otherwise its slot's index in `SLOTS` plus [`FIRST_INDEX`] (an index,
/// not an address: turning it back into a slot is a bounds-checked lookup,
/// no `unsafe`).
const NOT_A_SCHEDULER: usize = 0;
const UNREGISTERED: usize = 1;
const FIRST_INDEX: usize = 2;

thread_local! {
    static SLOT: Cell<usize> = const { Cell::new(NOT_A_SCHEDULER) };
}

/// Marks the calling thread as one of the schedulers' runtime (tokio's
/// `on_thread_start`). It gets a slot at its first poll or park: the
/// runtime's blocking threads start the same way but never poll a process
/// nor park as workers do.
pub fn scheduler_thread_started() {
    SLOT.set(UNREGISTERED);
}

/// A worker of the schedulers' runtime parks (tokio's `on_thread_park`).
pub fn scheduler_thread_parks() {
    let _ = slot();
}

/// The calling thread's slot, registering it on first use.
#[inline]
fn slot() -> Option<&'static Slot> {
    match SLOT.get() {
        NOT_A_SCHEDULER => None,
        UNREGISTERED => register(),
        marker => SLOTS.get(marker - FIRST_INDEX),
    }
}

#[cold]
fn register() -> Option<&'static Slot> {
    let index = REGISTERED.fetch_add(1, Relaxed);
    let Some(slot) = SLOTS.get(index) else {
        REGISTERED.store(MAX_SCHEDULERS, Relaxed);
        SLOT.set(NOT_A_SCHEDULER);
        return None;
    };
    slot.clock
        .store(i64::from(ThreadClock::of_this_thread().0), Relaxed);
    // SAFETY: gettid has no preconditions and always succeeds.
    slot.tid.store(unsafe { nix::libc::gettid() }, Relaxed);
    if let Some((low, high)) = this_thread_stack() {
        slot.stack_low.store(low, Relaxed);
        slot.stack_high.store(high, Relaxed);
    }
    slot.live.store(true, Release);
    SLOT.set(index + FIRST_INDEX);
    Some(slot)
}

/// The calling thread's slot, registering it if it was marked a scheduler
/// thread ([`scheduler_thread_started`]); `None` for other threads.
pub fn this_thread_slot() -> Option<&'static Slot> {
    slot()
}

/// A process's poll starts on this thread: records it if this is a
/// scheduler thread; the caller calls [`Slot::leave`] when it ends.
#[inline]
pub(crate) fn enter_poll(pid: u64, started: u64) -> Option<&'static Slot> {
    let slot = slot()?;
    slot.enter(pid, started);
    Some(slot)
}

/// The pid whose poll is running on the calling thread, if it is a watched
/// scheduler thread inside a process's poll. Async-signal-safe (for a
/// fatal-signal handler): a constant-initialised thread-local and atomic
/// loads; it never allocates, locks or registers anything.
pub fn polled_on_this_thread() -> Option<u64> {
    match SLOT.get() {
        NOT_A_SCHEDULER | UNREGISTERED => None,
        marker => SLOTS
            .get(marker - FIRST_INDEX)
            .and_then(Slot::polling)
            .map(|(pid, _)| pid),
    }
}

/// The watched scheduler threads, in registration order (index = the
/// scheduler's number in messages).
pub fn schedulers() -> impl Iterator<Item = (usize, &'static Slot)> {
    let registered = REGISTERED.load(Acquire).min(MAX_SCHEDULERS);
    SLOTS[..registered]
        .iter()
        .enumerate()
        .filter(|(_, slot)| slot.live.load(Acquire))
}

/// How long `pid` has been inside its current poll, if it is in one now.
pub fn in_poll(pid: u64) -> Option<Duration> {
    let now = activity::clock_ticks();
    schedulers().find_map(|(_, slot)| {
        let (polled, started) = slot.polling()?;
        (polled == pid).then(|| Duration::from_nanos(activity::ticks_to_nanos(started, now)))
    })
}

/// The CPU time all watched scheduler threads have used.
pub fn schedulers_cpu_time() -> Duration {
    schedulers().map(|(_, slot)| slot.cpu_time()).sum()
}

/// The calling thread's stack, `[low, high)`, from `pthread_getattr_np`
/// (cold: once per thread; for the main thread glibc reads
/// `/proc/self/maps`, so never call it in a signal handler).
fn this_thread_stack() -> Option<(usize, usize)> {
    let mut attr = std::mem::MaybeUninit::<nix::libc::pthread_attr_t>::uninit();
    // SAFETY: `attr` is written by a successful pthread_getattr_np before
    // it is read, and destroyed exactly once after.
    unsafe {
        if nix::libc::pthread_getattr_np(nix::libc::pthread_self(), attr.as_mut_ptr()) != 0 {
            return None;
        }
        let mut address: *mut nix::libc::c_void = std::ptr::null_mut();
        let mut size: nix::libc::size_t = 0;
        let status = nix::libc::pthread_attr_getstack(attr.as_ptr(), &mut address, &mut size);
        nix::libc::pthread_attr_destroy(attr.as_mut_ptr());
        let low = address as usize;
        (status == 0 && size > 0).then(|| (low, low.saturating_add(size)))
    }
}

/// The CPU-time clock of one thread, readable from any thread of the process.
#[derive(Clone, Copy, Debug)]
pub struct ThreadClock(nix::libc::clockid_t);

impl ThreadClock {
    /// The calling thread's clock.
    pub fn of_this_thread() -> ThreadClock {
        let mut clock: nix::libc::clockid_t = nix::libc::CLOCK_THREAD_CPUTIME_ID;
        // SAFETY: pthread_self is always valid for the calling thread and
        // `clock` is a live local the call writes into.
        let status =
            unsafe { nix::libc::pthread_getcpuclockid(nix::libc::pthread_self(), &mut clock) };
        if status != 0 {
            clock = nix::libc::CLOCK_THREAD_CPUTIME_ID;
        }
        ThreadClock(clock)
    }

    /// CPU time the thread has used; zero if the thread is gone.
    pub fn now(&self) -> Duration {
        nix::time::clock_gettime(nix::time::ClockId::from_raw(self.0))
            .map_or(Duration::ZERO, Duration::from)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::{ProcessRegistry, Spec};

    // Not under Miri: a multi-thread tokio runtime, real time, and the
    // threads' CPU clocks (`pthread_getcpuclockid`, which Miri lacks).
    #[test]
    #[cfg_attr(miri, ignore)]
    fn a_poll_in_progress_is_seen_from_another_thread_until_it_returns() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .on_thread_start(scheduler_thread_started)
            .on_thread_park(scheduler_thread_parks)
            .build()
            .expect("a runtime");
        let registry = ProcessRegistry::new();
        let cpu_before = schedulers_cpu_time();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let pid = runtime.block_on(async {
            registry.spawn(Spec::new("stuck", "Test.stuck()"), move |_ctx| async move {
                // Holds its scheduler, on purpose, until the test lets go.
                let _ = released.recv();
                let spin = Instant::now();
                while spin.elapsed() < Duration::from_millis(20) {
                    std::hint::spin_loop();
                }
            })
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let held = loop {
            if let Some(held) = in_poll(pid.0) {
                break held;
            }
            assert!(Instant::now() < deadline, "the poll was never seen");
            std::thread::sleep(Duration::from_millis(1));
        };
        assert!(held < Duration::from_secs(10), "{held:?}");
        release.send(()).expect("the process waits");
        while registry.is_alive(pid) {
            assert!(Instant::now() < deadline, "the process did not end");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(in_poll(pid.0), None);
        assert!(schedulers_cpu_time() > cpu_before, "its spin counts as CPU");
    }
}
