//! A count every scheduler thread adds to at once (the load's jobs: up to
//! millions a second, from each scheduler online): a shard per cache line,
//! each thread adding to its own, a read summing them. One shared counter
//! would bounce its cache line between the cores at every job, and so
//! would every setting a worker reads beside it.
//!
//! It must not be used where a read must be one instant: a sum reads the
//! shards one after another (each only grows, so a later sum is never
//! smaller than an earlier one).

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use crossbeam_utils::CachePadded;

/// Shards: more than the schedulers a machine of this kind runs; threads
/// beyond share one, which is correct, only slower.
const SHARDS: usize = 16;

/// A count added to from many threads.
pub struct Tally([CachePadded<AtomicU64>; SHARDS]);

impl Tally {
    pub fn new() -> Tally {
        Tally(std::array::from_fn(|_| CachePadded::new(AtomicU64::new(0))))
    }

    pub fn add_one(&self) {
        self.0[shard()].fetch_add(1, Relaxed);
    }

    pub fn sum(&self) -> u64 {
        self.0.iter().map(|shard| shard.load(Relaxed)).sum()
    }
}

impl Default for Tally {
    fn default() -> Tally {
        Tally::new()
    }
}

/// This thread's shard, handed out round robin at its first add.
fn shard() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Relaxed) % SHARDS;
    }
    SHARD.with(|shard| *shard)
}

#[cfg(test)]
mod tests {
    use super::Tally;

    #[test]
    fn adds_from_many_threads_are_all_counted() {
        let tally = Tally::new();
        std::thread::scope(|scope| {
            for _ in 0..40 {
                scope.spawn(|| (0..1000).for_each(|_| tally.add_one()));
            }
        });
        assert_eq!(tally.sum(), 40_000);
    }
}
