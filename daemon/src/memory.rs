//! The node's memory: the allocator every byte of the daemon goes through
//! (jemalloc, with its unprefixed `malloc`, so a plugin's own Rust
//! allocator, which calls `malloc`, lands here too), its per-thread
//! counters, which the runtime reads at every poll to charge each process
//! (docs/architecture.md, "Memory"), and the allocator's totals.
//!
//! It must not decide anything per process (the runtime charges and
//! limits; the node's watermark is `watermark`).

use tikv_jemalloc_ctl::{epoch, stats, thread};

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

/// Bytes the daemon's code holds right now (live allocations), refreshed
/// from the allocator's statistics; `None` if they cannot be read.
pub fn allocated() -> Option<u64> {
    epoch::advance().ok()?;
    stats::allocated::read().ok().map(|bytes| bytes as u64)
}
