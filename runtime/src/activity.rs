//! What a process is doing right now — status, reductions, CPU time, the
//! host function it is in — kept inside the process's own task, so that a
//! poll writes only memory the poll touches anyway (at 100k processes a
//! second allocation per poll is a cache miss per job).
//!
//! Observers reach it through the registry entry's [`Published`] pointer,
//! which the task clears (and waits out any reader) before its memory goes.
//! Only the process's own task writes an `Activity`; nothing here may block
//! the poll path, and nothing here knows the entry (see `current` for the
//! thread's current process).
//!
//! # Protocol
//!
//! Every shared field, who writes it, who reads it, and with which ordering
//! (tokio's `runtime/task` states its task fields the same way).
//!
//! | field | single writer | readers | writer's ordering | readers' ordering |
//! |---|---|---|---|---|
//! | `Activity::reductions`, `cpu_ticks`, `location`, `status`, `allocated`, `freed` | the process's task, inside its own poll (`allocated` also once before its first poll, by its spawn) | observers, in [`Published::read`] | `Relaxed` load + `Relaxed` store (one writer: no RMW needed) | `Relaxed` |
//! | `Activity::in_frame` | the process's task | the process's task only | `Relaxed` | `Relaxed` |
//! | `Published::live` | the task: [`Published::publish`] at its first poll, [`Published::retire`] in its exit guard | observers, in `read` | `Release` (publish: the activity's initial values; retire: the `retired` flag) | `Acquire` |
//! | `Published::retired` | `retire`, once, before clearing `live` | observers that load a null `live` | `Relaxed` (ordered by `live`) | `Relaxed` |
//! | `Published::readers` | observers: +1 before loading `live`, −1 after their last read through it | `retire` | `AcqRel` add, `Release` sub | `retire`: one `AcqRel` RMW (`fetch_add(0)`), then `Acquire` loads |
//!
//! The activity's counters are independent values: an observer may see one
//! poll's reductions with the previous poll's CPU time; none of them guards
//! other data (`location` points at a `'static` label).
//!
//! **No read through a retired pointer.** `read` counts itself in with an
//! RMW on `readers` and then loads `live`; `retire` nulls `live` and then
//! does an RMW on `readers`. Both RMWs are in `readers`' single modification
//! order: if the reader's comes first, `retire` sees it counted in and waits
//! for its `Release` decrement (which its `Acquire` load then synchronises
//! with, so the copy happens before the memory goes); if `retire`'s comes
//! first, the reader's `AcqRel` add reads from it, so the null store
//! happens before the reader's load of `live`, which sees null. No `SeqCst`
//! is needed, and loom checks exactly this (model `publish_read_retire`;
//! the RMW replaces a `SeqCst` store-then-load, which loom, modelling
//! `SeqCst` as `AcqRel`, reports as a race).
//!
//! **Why the retire wait ends.** A reader counted in does nothing but copy
//! seven words (no lock, allocation, await or system call; turning ticks into
//! nanoseconds happens after it counted out), so each read in flight ends
//! within nanoseconds of running. A reader first loads `live` without
//! counting in and returns at once if it is null, so once the null store is
//! visible no new reader touches the count: only readers that loaded the
//! pointer just before (at most one per observer thread) can still count
//! in, and they see null and count out. The wait spins [`RETIRE_SPINS`]
//! times (a few microseconds, many copies' worth) and then yields its
//! thread between looks, so a reader preempted while counted in gets a CPU.
//!
//! **`&mut` to the activity is not exclusive.** Each poll projects the
//! pinned task future to its fields, which makes a `&mut Activity` while
//! observers hold the published pointer; `Activity` is `!Unpin` (asserted
//! below) so that this `&mut` does not claim exclusive access, as the
//! `!Unpin` future itself does not (Miri's test
//! `a_real_task_publishes_and_retires_its_activity` fails without it).
//!
//! **The activity outlives its drop.** `Instrumented` (in `registry`) drops
//! its fields in order, the activity before the exit guard that retires it;
//! soundness relies on the activity having no drop glue (asserted below),
//! so its memory stays valid until tokio frees the task, after the guard.

use std::marker::PhantomPinned;
use std::ptr;
use std::sync::LazyLock;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

use crate::sync::{AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64};

/// The clock polls are timed with: the CPU's time-stamp counter where it is
/// reliable (two reads cost ~20 ns here, against ~50 ns for two
/// `Instant::now()`), calibrated once; the OS's monotonic clock otherwise.
#[cfg(not(miri))]
static CLOCK: LazyLock<quanta::Clock> = LazyLock::new(quanta::Clock::new);
/// Under Miri, which cannot run the `cpuid` the TSC's calibration needs, a
/// clock that never moves.
#[cfg(miri)]
static CLOCK: LazyLock<quanta::Clock> = LazyLock::new(|| quanta::Clock::mock().0);

/// Now, in the clock's raw ticks; only differences mean anything.
pub fn clock_ticks() -> u64 {
    CLOCK.raw()
}

/// Nanoseconds between two readings of [`clock_ticks`].
pub fn ticks_to_nanos(from: u64, to: u64) -> u64 {
    CLOCK.delta_as_nanos(from, to)
}

/// What a process is doing, as `Process.info` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// Ready to run, waiting for the scheduler (e.g. between two slices).
    Runnable = 0,
    /// Being polled right now.
    Running = 1,
    /// Waiting for an event (a message, a timer, I/O).
    Waiting = 2,
    /// Ended; its entry is being removed.
    Exiting = 3,
}

impl Status {
    /// `runnable`, `running`, `waiting` or `exiting`, as the BEAM says it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Runnable => "runnable",
            Status::Running => "running",
            Status::Waiting => "waiting",
            Status::Exiting => "exiting",
        }
    }

    fn from_u8(value: u8) -> Status {
        match value {
            0 => Status::Runnable,
            1 => Status::Running,
            2 => Status::Waiting,
            _ => Status::Exiting,
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many times `retire` spins on the reader count before it starts
/// yielding its thread between looks.
pub(crate) const RETIRE_SPINS: u32 = 64;

/// The counters a process's poll writes. Single writer (the process's own
/// task, one poll at a time), so plain loads and stores suffice.
pub(crate) struct Activity {
    reductions: AtomicU64,
    /// Time on the scheduler, in clock ticks (see `clock_ticks`).
    cpu_ticks: AtomicU64,
    /// Bytes charged to the process so far: its spawn's, and what its polls
    /// allocated (see `memory`).
    allocated: AtomicU64,
    /// Bytes its polls freed.
    freed: AtomicU64,
    /// A pointer to a `'static` label (null before the first `enter`).
    location: AtomicPtr<&'static str>,
    status: AtomicU8,
    /// Set while the entry holds a foreign frame that `enter` must clear.
    in_frame: AtomicBool,
    /// Observers read the activity through a pointer while its task holds
    /// `&mut` to it (every poll projects the pinned future to its fields):
    /// being `!Unpin` exempts that `&mut` from claiming exclusive access,
    /// as for the future itself (Miri's aliasing model checks exactly this).
    _pinned: PhantomPinned,
    /// Under loom, stands for this memory: the models free it where the
    /// task's memory goes, and loom reports a read not ordered before that.
    #[cfg(loom)]
    pub(crate) memory: crate::sync::Memory,
}

// Soundness of `Published` relies on these (see the module's protocol):
// the activity is dropped before its exit guard retires it, so it must
// have nothing to drop; and a `location` read back as `&&'static str` must
// have been stored from one.
#[cfg(not(loom))]
const _: () = assert!(!std::mem::needs_drop::<Activity>());
const _: () = assert!(!std::mem::needs_drop::<&'static str>());
static_assertions::assert_not_impl_any!(Activity: Unpin);

impl Default for Activity {
    fn default() -> Activity {
        Activity {
            reductions: AtomicU64::new(0),
            cpu_ticks: AtomicU64::new(0),
            allocated: AtomicU64::new(0),
            freed: AtomicU64::new(0),
            location: AtomicPtr::new(ptr::null_mut()),
            status: AtomicU8::new(Status::Runnable as u8),
            in_frame: AtomicBool::new(false),
            _pinned: PhantomPinned,
            #[cfg(loom)]
            memory: crate::sync::Memory::new(),
        }
    }
}

/// A copy of an [`Activity`], as observers see it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Snapshot {
    pub reductions: u64,
    pub cpu_ns: u64,
    /// Bytes charged to the process since it started.
    pub allocated: u64,
    /// Bytes its polls freed.
    pub freed: u64,
    pub location: Option<&'static str>,
    pub status: Status,
}

impl Snapshot {
    /// Bytes the process holds now (see `memory`'s model).
    pub fn memory(&self) -> u64 {
        self.allocated.saturating_sub(self.freed)
    }
}

impl Default for Snapshot {
    fn default() -> Snapshot {
        Snapshot {
            reductions: 0,
            cpu_ns: 0,
            allocated: 0,
            freed: 0,
            location: None,
            status: Status::Runnable,
        }
    }
}

/// The raw words a reader copies while counted in (ticks not yet converted).
struct Copied {
    reductions: u64,
    cpu_ticks: u64,
    allocated: u64,
    freed: u64,
    location: Option<&'static str>,
    status: Status,
}

impl Activity {
    /// A new process's activity, charged `bytes` for its own task and entry.
    pub(crate) fn with_allocated(bytes: u64) -> Activity {
        let activity = Activity::default();
        activity.allocated.store(bytes, Relaxed);
        activity
    }

    pub(crate) fn set_status(&self, status: Status) {
        self.status.store(status as u8, Relaxed);
    }

    /// Running → Waiting, unless the process marked itself runnable.
    pub(crate) fn park(&self) {
        if self.status.load(Relaxed) == Status::Running as u8 {
            self.set_status(Status::Waiting);
        }
    }

    /// One poll: one reduction and the clock ticks it took.
    pub(crate) fn account_poll(&self, ticks: u64) {
        self.add_reductions(1);
        let cpu_ticks = self.cpu_ticks.load(Relaxed).wrapping_add(ticks);
        self.cpu_ticks.store(cpu_ticks, Relaxed);
    }

    /// Charges `allocated` bytes and credits `freed` ones; returns what the
    /// process holds now.
    #[inline]
    pub(crate) fn account_memory(&self, allocated: u64, freed: u64) -> u64 {
        let allocated = self.allocated.load(Relaxed).wrapping_add(allocated);
        let freed = self.freed.load(Relaxed).wrapping_add(freed);
        self.allocated.store(allocated, Relaxed);
        self.freed.store(freed, Relaxed);
        allocated.saturating_sub(freed)
    }

    pub(crate) fn add_reductions(&self, n: u64) {
        self.reductions
            .store(self.reductions.load(Relaxed) + n, Relaxed);
    }

    /// Records the host function; true if the process just left a foreign frame.
    pub(crate) fn enter(&self, location: &'static &'static str) -> bool {
        // The pointer comes from a `'static` reference; it is only read back as one.
        self.location
            .store(ptr::from_ref(location).cast_mut(), Relaxed);
        let left_frame = self.in_frame.load(Relaxed);
        if left_frame {
            self.in_frame.store(false, Relaxed);
        }
        left_frame
    }

    pub(crate) fn enter_frame(&self) {
        self.in_frame.store(true, Relaxed);
    }

    /// Copies the counters: loads only, nothing that could block.
    fn copy(&self) -> Copied {
        #[cfg(loom)]
        self.memory.read();
        let location = self.location.load(Relaxed);
        Copied {
            reductions: self.reductions.load(Relaxed),
            cpu_ticks: self.cpu_ticks.load(Relaxed),
            allocated: self.allocated.load(Relaxed),
            freed: self.freed.load(Relaxed),
            // SAFETY: non-null values are stored only by `enter`, from a
            // `&'static &'static str`, which stays valid forever.
            location: (!location.is_null()).then(|| unsafe { *location }),
            status: Status::from_u8(self.status.load(Relaxed)),
        }
    }
}

/// The entry's view of its process's [`Activity`]: a pointer into the task
/// while it lives. Before the first poll a process reads as runnable with
/// nothing counted; after it ended, as exiting. See the module's protocol.
pub(crate) struct Published {
    live: AtomicPtr<Activity>,
    /// Observers between counting in and their last read through `live`.
    readers: AtomicU32,
    retired: AtomicBool,
}

impl Default for Published {
    fn default() -> Published {
        Published {
            live: AtomicPtr::new(ptr::null_mut()),
            readers: AtomicU32::new(0),
            retired: AtomicBool::new(false),
        }
    }
}

impl Published {
    /// Points observers at the task's activity. The task must call
    /// [`Published::retire`] before that memory is freed or moved (it is
    /// pinned in the task, and retired by the task's exit guard).
    pub(crate) fn publish(&self, activity: &Activity) {
        self.live.store(ptr::from_ref(activity).cast_mut(), Release);
    }

    /// Asks the CPU for the task's counters ahead of a [`read`](Self::read)
    /// (a walk of many processes overlaps their cache misses); reads
    /// nothing through the pointer, so it needs no counting in.
    #[inline]
    pub(crate) fn prefetch(&self) {
        let live = self.live.load(Relaxed);
        if !live.is_null() {
            crate::prefetch::prefetch_line(live.cast());
        }
    }

    pub(crate) fn read(&self) -> Snapshot {
        let copied = if self.live.load(Acquire).is_null() {
            // Not yet published, or retired: no need to count in.
            None
        } else {
            self.readers.fetch_add(1, AcqRel);
            let live = self.live.load(Acquire);
            let copied = (!live.is_null()).then(|| {
                // SAFETY: `retire` nulls `live` and then waits, after an RMW
                // on `readers`, until no reader is counted in; we counted in
                // (an RMW on the same counter) before loading `live`, so
                // either `retire` waits for us or we saw its null (see the
                // module's protocol). `live` came from `publish`, from a
                // live `&Activity` pinned in the task.
                unsafe { (*live).copy() }
            });
            self.readers.fetch_sub(1, Release);
            copied
        };
        match copied {
            Some(copied) => Snapshot {
                reductions: copied.reductions,
                cpu_ns: ticks_to_nanos(0, copied.cpu_ticks),
                allocated: copied.allocated,
                freed: copied.freed,
                location: copied.location,
                status: copied.status,
            },
            None => Snapshot {
                status: if self.retired.load(Relaxed) {
                    Status::Exiting
                } else {
                    Status::Runnable
                },
                ..Snapshot::default()
            },
        }
    }

    /// Stops observers from reaching the task, and waits out any reader
    /// still copying. Called once, by the task's exit guard, while its
    /// activity is still in memory; after it returns the memory may go.
    pub(crate) fn retire(&self) {
        self.retired.store(true, Relaxed);
        self.live.store(ptr::null_mut(), Release);
        // The RMW that orders us against every reader's count-in.
        if self.readers.fetch_add(0, AcqRel) == 0 {
            return;
        }
        let mut spins = 0;
        while self.readers.load(Acquire) != 0 {
            // A reader is copying seven words: spin briefly, then let a
            // preempted reader have the CPU.
            if spins < RETIRE_SPINS {
                spins += 1;
                crate::sync::spin_loop();
            } else {
                crate::sync::yield_now();
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

    use super::*;

    #[test]
    fn a_published_activity_reads_through_until_retired() {
        let published = Published::default();
        assert_eq!(published.read().status, Status::Runnable);
        let activity = Box::new(Activity::default());
        published.publish(&activity);
        activity.set_status(Status::Running);
        activity.add_reductions(5);
        assert!(!activity.enter(&"Test.f/0"));
        let seen = published.read();
        assert_eq!(seen.reductions, 5);
        assert_eq!(seen.location, Some("Test.f/0"));
        assert_eq!(seen.status, Status::Running);
        published.retire();
        // The task's memory goes; Miri reports any later read through it.
        drop(activity);
        let seen = published.read();
        assert_eq!(seen.status, Status::Exiting);
        assert_eq!(seen.reductions, 0);
    }

    /// The real thing: a process's task publishes the activity pinned in
    /// it, observers read it between polls, and its exit retires it before
    /// tokio frees the task (under Miri: no aliasing or lifetime error).
    #[test]
    fn a_real_task_publishes_and_retires_its_activity() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let registry = crate::ProcessRegistry::new();
        runtime.block_on(async {
            let (go, wait) = tokio::sync::oneshot::channel::<()>();
            let monitor =
                registry.spawn_monitor(crate::Spec::new("t", "Test.t()"), |ctx| async move {
                    for _ in 0..3 {
                        ctx.enter(&"Test.work/0");
                        ctx.add_reductions(10);
                        ctx.yield_now().await;
                    }
                    let _ = wait.await;
                });
            let pid = monitor.pid();
            assert_eq!(registry.info(pid).expect("alive").status, Status::Runnable);
            // Read between polls: each later poll reborrows the task's
            // future (`&mut`), which must not invalidate the published pointer.
            // One reduction per poll, ten per slice; the fourth poll only waits.
            for reductions in [11, 22, 33, 34] {
                tokio::task::yield_now().await;
                let info = registry.info(pid).expect("alive");
                assert_eq!(info.reductions, reductions);
                assert_eq!(info.current_function, "Test.work/0");
            }
            assert_eq!(registry.info(pid).expect("alive").status, Status::Waiting);
            go.send(()).expect("the process waits");
            assert_eq!(monitor.await.reason, crate::ExitReason::Normal);
            assert!(registry.info(pid).is_none());
        });
    }

    /// A reader thread racing the task's exit: under Miri (which checks
    /// every access for use after free and data races) as well as natively.
    #[test]
    fn a_reader_racing_the_exit_never_reads_freed_memory() {
        let rounds = if cfg!(miri) { 4 } else { 200 };
        for _ in 0..rounds {
            let published = Arc::new(Published::default());
            let done = Arc::new(AtomicBool::new(false));
            let reader = {
                let published = published.clone();
                let done = done.clone();
                std::thread::spawn(move || {
                    let mut reads = 0_u32;
                    let mut most = 0;
                    loop {
                        let seen = published.read();
                        if seen.status == Status::Exiting {
                            // Retired: reads as ended, with nothing counted.
                            assert_eq!(seen.reductions, 0);
                            return most;
                        }
                        assert!(seen.reductions >= most, "counters never go back");
                        most = seen.reductions;
                        reads += 1;
                        if done.load(Relaxed) && reads > 2 {
                            return most;
                        }
                    }
                })
            };
            let activity = Box::new(Activity::default());
            published.publish(&activity);
            for _ in 0..10 {
                activity.add_reductions(1);
                std::thread::yield_now();
            }
            published.retire();
            drop(activity);
            done.store(true, Relaxed);
            let most = reader.join().expect("the reader");
            assert!(most <= 10);
        }
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    use loom::sync::Arc;

    use super::*;

    /// Observers racing a task's publish, poll and exit never read its
    /// activity after its memory is freed (`Memory` stands for it), and see
    /// only values it wrote.
    #[test]
    fn publish_read_retire() {
        crate::loom_builder().check(|| {
            let published = Arc::new(Published::default());
            let observers: Vec<_> = (0..2)
                .map(|_| {
                    let published = published.clone();
                    loom::thread::spawn(move || published.read())
                })
                .collect();
            // The task: first poll, one more reduction, exit, memory freed.
            let activity = Box::new(Activity::default());
            published.publish(&activity);
            activity.add_reductions(1);
            published.retire();
            // Where the task's memory goes. The box itself outlives the
            // observers, so that loom reports a late read as a race on
            // `memory` rather than the model reading freed memory itself.
            activity.memory.free();
            for observer in observers {
                let seen = observer.join().expect("an observer");
                assert!(seen.reductions <= 1);
            }
            drop(activity);
            assert_eq!(published.read().status, Status::Exiting);
        });
    }
}
