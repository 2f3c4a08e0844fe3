//! What a process is doing right now — status, reductions, CPU time, the
//! host function it is in — kept inside the process's own task, so that a
//! poll writes only memory the poll touches anyway (at 100k processes a
//! second allocation per poll is a cache miss per job).
//!
//! Observers reach it through the registry entry's [`Published`] pointer,
//! which the task clears (and waits out any reader) before its memory goes.
//! Only the process's own task writes an `Activity`; nothing here may block
//! the poll path.

use std::cell::Cell;
use std::ptr;
use std::sync::LazyLock;
use std::sync::atomic::Ordering::{Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64};

use crate::Status;
use crate::entry::ProcessEntry;

/// The clock polls are timed with: the CPU's time-stamp counter where it is
/// reliable (two reads cost ~20 ns here, against ~50 ns for two
/// `Instant::now()`), calibrated once; the OS's monotonic clock otherwise.
static CLOCK: LazyLock<quanta::Clock> = LazyLock::new(quanta::Clock::new);

/// Now, in the clock's raw ticks; only differences mean anything.
pub fn clock_ticks() -> u64 {
    CLOCK.raw()
}

/// Nanoseconds between two readings of [`clock_ticks`].
pub fn ticks_to_nanos(from: u64, to: u64) -> u64 {
    CLOCK.delta_as_nanos(from, to)
}

/// The counters a process's poll writes. Single writer (the process's own
/// task, one poll at a time), so plain loads and stores suffice.
#[derive(Default)]
pub(crate) struct Activity {
    reductions: AtomicU64,
    /// Time on the scheduler, in clock ticks (see `clock_ticks`).
    cpu_ticks: AtomicU64,
    /// A pointer to a `'static` label (null before the first `enter`).
    location: AtomicPtr<&'static str>,
    status: AtomicU8,
    /// Set while the entry holds a foreign frame that `enter` must clear.
    in_frame: AtomicBool,
}

/// A copy of an [`Activity`], as observers see it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Snapshot {
    pub reductions: u64,
    pub cpu_ns: u64,
    pub location: Option<&'static str>,
    pub status: Status,
}

impl Default for Snapshot {
    fn default() -> Snapshot {
        Snapshot {
            reductions: 0,
            cpu_ns: 0,
            location: None,
            status: Status::Runnable,
        }
    }
}

impl Activity {
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

    fn snapshot(&self) -> Snapshot {
        let location = self.location.load(Relaxed);
        Snapshot {
            reductions: self.reductions.load(Relaxed),
            cpu_ns: CLOCK.delta_as_nanos(0, self.cpu_ticks.load(Relaxed)),
            // SAFETY: non-null values are stored only by `enter`, from a
            // `&'static &'static str`, which stays valid forever.
            location: (!location.is_null()).then(|| unsafe { *location }),
            status: Status::from_u8(self.status.load(Relaxed)),
        }
    }
}

/// The entry's view of its process's [`Activity`]: a pointer into the task
/// while it lives. Before the first poll a process reads as runnable with
/// nothing counted; after it ended, as exiting.
#[derive(Default)]
pub(crate) struct Published {
    live: AtomicPtr<Activity>,
    /// Observers between loading `live` and their last read through it.
    readers: AtomicU32,
    retired: AtomicBool,
}

impl Published {
    /// Points observers at the task's activity. The task must call
    /// [`Published::retire`] before that memory is freed or moved (it is
    /// pinned in the task, and retired by the task's exit guard).
    pub(crate) fn publish(&self, activity: &Activity) {
        self.live.store(ptr::from_ref(activity).cast_mut(), Release);
    }

    pub(crate) fn read(&self) -> Snapshot {
        self.readers.fetch_add(1, SeqCst);
        let live = self.live.load(SeqCst);
        let snapshot = if live.is_null() {
            Snapshot {
                status: if self.retired.load(Relaxed) {
                    Status::Exiting
                } else {
                    Status::Runnable
                },
                ..Snapshot::default()
            }
        } else {
            // SAFETY: `retire` clears `live` and then waits until `readers`
            // is zero before the activity can go; we counted ourselves in
            // before loading it (both SeqCst), so it is still there.
            unsafe { (*live).snapshot() }
        };
        self.readers.fetch_sub(1, Release);
        snapshot
    }

    /// Stops observers from reaching the task. Called once, by the task's
    /// exit guard, while its activity is still in memory.
    pub(crate) fn retire(&self) {
        self.retired.store(true, Relaxed);
        self.live.store(ptr::null_mut(), SeqCst);
        while self.readers.load(SeqCst) != 0 {
            // An observer is copying a few counters; let it finish.
            std::thread::yield_now();
        }
    }
}

thread_local! {
    /// The process this thread is polling: its activity and its entry.
    static CURRENT: Cell<(*const Activity, *const ProcessEntry)> =
        const { Cell::new((ptr::null(), ptr::null())) };
}

/// Marks `activity` as the one being polled on this thread until the guard drops.
pub(crate) fn polling(activity: &Activity, entry: *const ProcessEntry) -> Polling {
    Polling(CURRENT.replace((activity, entry)))
}

pub(crate) struct Polling((*const Activity, *const ProcessEntry));

impl Drop for Polling {
    fn drop(&mut self) {
        CURRENT.set(self.0);
    }
}

/// True while this thread polls a process.
pub(crate) fn in_process() -> bool {
    !CURRENT.get().0.is_null()
}

/// Runs `f` on the activity of the process whose entry is `entry`, if this
/// thread is polling it right now (a context used outside its own poll,
/// e.g. in a destructor, records nothing).
pub(crate) fn with_current<R>(
    entry: *const ProcessEntry,
    f: impl FnOnce(&Activity) -> R,
) -> Option<R> {
    let (activity, current) = CURRENT.get();
    // SAFETY: CURRENT points at the activity of the task being polled on
    // this thread, pinned and alive until the poll (and so this call) ends.
    (current == entry && !activity.is_null()).then(|| f(unsafe { &*activity }))
}
