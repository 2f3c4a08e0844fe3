//! Memory per process: the bytes a process's polls allocate are charged to
//! it and the bytes they free are credited, read from the allocator's own
//! per-thread counters at the start and end of every poll.
//!
//! The runtime knows no allocator: the host installs, once, where a
//! thread's counters are ([`install_allocator_counters`]); without it every
//! process reads as holding nothing. Nothing here may allocate, lock or
//! call the allocator on the poll path: it reads two words and adds.
//!
//! # Model
//!
//! - A process *holds* what its polls allocated minus what they freed
//!   (never below zero), plus what its spawn allocated (its task, i.e. its
//!   own state, and its registry entry), which is charged to it rather than
//!   to the process that spawned it ([`hand_over`]).
//! - Exact for memory a process allocates and frees itself, in its own
//!   polls — a computation's state, its buffers, what a plugin allocates in
//!   a slice.
//! - Memory it allocates and another frees (a message it sends) stays
//!   charged to it until it ends; memory it frees that another allocated
//!   (a message it receives) lowers its count, not below zero; a shared
//!   structure that grows in its poll (a channel's buffer, a timer's slab)
//!   is charged to it. So the error of one process's figure is bounded by
//!   what crossed between processes, and nothing outside polls (tokio's I/O
//!   driver, the console's threads) is charged to any process.
//! - Sizes are the allocator's usable sizes (its size classes), as its
//!   counters say.
//!
//! # Protocol
//!
//! | state | writer | readers | ordering |
//! |---|---|---|---|
//! | `SOURCE` | the host, once, before processes run | each thread, once, on its first poll | `OnceLock` |
//! | `THREAD` (per thread) | this thread only: its first poll resolves the counters; `hand_over` adds | this thread only | none needed: thread-local |
//! | the allocator's counters | the allocator, on this thread's own allocations | this thread's polls | same thread: program order |
//! | an `Activity`'s `allocated`, `freed` | the process's task, at the end of its own poll | observers | see `activity`'s table |

use std::cell::Cell;
use std::ptr;
use std::sync::OnceLock;

/// Where one thread's allocator counts its bytes: two monotonic counters
/// (allocated, freed) that only allocations made on this thread change.
#[derive(Clone, Copy, Debug)]
pub struct ThreadCounters {
    pub allocated: *const u64,
    pub deallocated: *const u64,
}

/// Called on each thread, once, to find that thread's counters.
pub type CounterSource = fn() -> Option<ThreadCounters>;

static SOURCE: OnceLock<CounterSource> = OnceLock::new();

/// Tells the runtime where each thread's allocator counters are (e.g.
/// jemalloc's `thread.allocatedp` and `thread.deallocatedp`). Only the
/// first call counts; call it before processes run.
///
/// # Safety
///
/// The pointers `source` returns on a thread must be valid for reads on
/// that thread for the rest of the thread's life, aligned, and changed
/// only by allocations made on that thread.
pub unsafe fn install_allocator_counters(source: CounterSource) {
    let _ = SOURCE.set(source);
}

/// Counted for a thread without counters: reads as zero forever.
static NONE: u64 = 0;

struct Thread {
    allocated: Cell<*const u64>,
    deallocated: Cell<*const u64>,
    /// Bytes allocated on this thread for other processes (their spawns):
    /// not charged to the process being polled.
    handed_over: Cell<u64>,
}

thread_local! {
    static THREAD: Thread = const {
        Thread {
            allocated: Cell::new(ptr::null()),
            deallocated: Cell::new(ptr::null()),
            handed_over: Cell::new(0),
        }
    };
}

#[cold]
fn resolve(thread: &Thread) {
    let counters = SOURCE.get().and_then(|source| source());
    let (allocated, deallocated) = match counters {
        Some(c) if !c.allocated.is_null() && !c.deallocated.is_null() => {
            (c.allocated, c.deallocated)
        }
        _ => (ptr::from_ref(&NONE), ptr::from_ref(&NONE)),
    };
    thread.allocated.set(allocated);
    thread.deallocated.set(deallocated);
}

/// This thread's bytes so far: (allocated for the process being polled,
/// freed). Only differences mean anything.
#[inline]
pub(crate) fn thread_bytes() -> (u64, u64) {
    THREAD.with(|thread| {
        if thread.allocated.get().is_null() {
            resolve(thread);
        }
        // SAFETY: non-null pointers are either `NONE` (a static) or came
        // from the host's source on this very thread, which promised they
        // stay valid for reads on it for the thread's life
        // (`install_allocator_counters`); only this thread's allocations
        // write them, so reading them here races with nothing.
        let (allocated, deallocated) =
            unsafe { (*thread.allocated.get(), *thread.deallocated.get()) };
        (
            allocated.wrapping_sub(thread.handed_over.get()),
            deallocated,
        )
    })
}

/// Bytes allocated on this thread from now until the guard drops belong to
/// another process (a spawn's entry and task, charged to the new process
/// as its own size instead): they are not charged to the process being
/// polled.
pub(crate) fn hand_over() -> HandOver {
    HandOver {
        from: thread_bytes().0,
    }
}

pub(crate) struct HandOver {
    from: u64,
}

impl Drop for HandOver {
    fn drop(&mut self) {
        let bytes = thread_bytes().0.wrapping_sub(self.from);
        THREAD.with(|thread| {
            thread
                .handed_over
                .set(thread.handed_over.get().wrapping_add(bytes))
        });
    }
}

/// Bytes for people: `1.5 MiB`, `256 MiB`, `812 B`.
pub fn bytes(n: u64) -> String {
    humansize::format_size(n, humansize::BINARY)
}
