//! The node's memory: the allocator every byte of the daemon goes through
//! (jemalloc, with its unprefixed `malloc`, so a plugin's own Rust
//! allocator, which calls `malloc`, lands here too), its per-thread
//! counters, which the runtime reads at every poll to charge each process
//! (docs/architecture.md, "Memory"), the allocator's totals, and what the
//! node holds per kind of process.
//!
//! It must not decide anything per process: the runtime charges and
//! limits each one; `watermark` guards the node as a whole.

pub mod watermark;

use std::collections::BTreeMap;

use system_runtime::ProcessRegistry;
use system_runtime::memory::ThreadCounters;
use tikv_jemalloc_ctl::{epoch, raw, stats, thread};

pub use watermark::Watermark;

/// The allocator of the `system` binary (and so of the plugin it loads and
/// of the `plugin-check` child).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Bytes this thread has allocated and freed since it started, as the
/// allocator counts them (usable sizes). `None` if the allocator cannot say.
pub fn this_thread() -> Option<(u64, u64)> {
    let allocated = thread::allocatedp::read().ok()?;
    let deallocated = thread::deallocatedp::read().ok()?;
    Some((allocated.get(), deallocated.get()))
}

/// Where this thread's counters are, for the runtime.
fn thread_counters() -> Option<ThreadCounters> {
    // SAFETY: both names are jemalloc's documented `uint64_t *` controls
    // (`thread.allocatedp`, `thread.deallocatedp`, built with stats), read
    // into a value of exactly that type.
    let (allocated, deallocated) = unsafe {
        (
            raw::read::<*const u64>(b"thread.allocatedp\0").ok()?,
            raw::read::<*const u64>(b"thread.deallocatedp\0").ok()?,
        )
    };
    Some(ThreadCounters {
        allocated,
        deallocated,
    })
}

/// Has the runtime charge each process what its polls allocate and free,
/// from this allocator's per-thread counters. Call once, before the
/// schedulers start.
pub fn account_per_process() {
    // SAFETY: jemalloc documents `thread.allocatedp`/`deallocatedp` as
    // pointers to the calling thread's own counters, valid for the
    // thread's life and changed only by that thread's allocations: what
    // `install_allocator_counters` asks of the source.
    unsafe { system_runtime::memory::install_allocator_counters(thread_counters) };
}

/// Bytes the daemon's code holds right now (live allocations), refreshed
/// from the allocator's statistics; `None` if they cannot be read.
pub fn allocated() -> Option<u64> {
    epoch::advance().ok()?;
    stats::allocated::read().ok().map(|bytes| bytes as u64)
}

/// Returns the pages freed memory still occupies to the system at once
/// (instead of over the allocator's decay time), so the node's resident
/// size falls right after a big holder ended. Takes milliseconds: call it
/// off the schedulers.
pub fn release_freed_pages() {
    // `MALLCTL_ARENAS_ALL`: every arena.
    const PURGE_ALL: &[u8] = b"arena.4096.purge\0";
    // SAFETY: a void control: no old or new value, as jemalloc documents
    // `arena.<i>.purge`; the name is NUL-terminated.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            PURGE_ALL.as_ptr().cast(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
    }
}

/// What the node holds, by kind of process and apart from them.
#[derive(Debug, Default, Clone)]
pub struct Breakdown {
    /// Bytes per process name (`sum`, `load_worker`, …).
    pub by_name: BTreeMap<String, u64>,
    /// All processes together.
    pub processes: u64,
    /// Everything the daemon's code holds (the allocator's live bytes).
    pub allocated: Option<u64>,
    /// The daemon's resident set size.
    pub resident: Option<u64>,
}

impl Breakdown {
    /// Walks the whole registry: call it off the schedulers.
    pub fn of(registry: &ProcessRegistry) -> Breakdown {
        let mut breakdown = Breakdown::default();
        for holder in registry.memory() {
            // A name is allocated once per kind, not once per process.
            match breakdown.by_name.get_mut(&*holder.name) {
                Some(bytes) => *bytes += holder.memory,
                None => {
                    breakdown
                        .by_name
                        .insert(holder.name.into_owned(), holder.memory);
                }
            }
            breakdown.processes += holder.memory;
        }
        breakdown.allocated = allocated();
        breakdown.resident = crate::node::metrics::resident_bytes();
        breakdown
    }

    /// What the daemon holds outside every process: runtime, buffers,
    /// caches, the console (allocated less all processes).
    pub fn outside_processes(&self) -> Option<u64> {
        self.allocated
            .map(|allocated| allocated.saturating_sub(self.processes))
    }
}

/// Bytes for people: `1.5 MiB`.
pub use system_runtime::memory::bytes;
