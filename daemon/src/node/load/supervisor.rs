//! The load supervisor: one process that starts the workers the setting asks
//! for (in batches, yielding between them), restarts the ones that crash,
//! and forgets the ones that stopped because the load went down.
//!
//! It learns of worker exits from one channel of exit notices instead of a
//! monitor per worker, so a worker costs only its task and registry entry.
//! It never runs a job and never waits on one worker.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::Load;
use super::pool::{Exit, Pool};
use super::slots::Slots;
use super::{memory, worker};
use system_runtime::{Pid, ProcessContext, ProcessRegistry, Spec};

/// Workers started, or exit notices handled, before the supervisor yields.
const BATCH: usize = 1_000;

/// Slots looked at per batch when most of them already hold a worker.
const SCAN: usize = 64 * BATCH;

/// Runs the load supervisor for `load`, starting workers in `registry`,
/// until `shutdown` is cancelled.
pub async fn run(
    ctx: ProcessContext,
    load: Arc<Load>,
    registry: Arc<ProcessRegistry>,
    shutdown: CancellationToken,
) {
    ctx.enter(&"Load.Supervisor.loop/1");
    let (pool, mut notices) = Pool::new(load.clone());
    let slots = Arc::new(Slots::default());
    // Its workers appear under it in the supervision tree while it runs.
    let _supervising = registry.supervising(ctx.pid(), slots.clone());
    let mut workers = Workers {
        pool,
        registry,
        slots,
        running: 0,
        cursor: 0,
    };
    workers.publish();
    let mut received = Vec::with_capacity(BATCH);
    // When the setting last changed (or this supervisor started), and how
    // many workers ran then: for one log line once they are all started.
    let mut ramp: Option<(Instant, u64)> = Some((Instant::now(), 0));
    loop {
        let target = load.target();
        let spawning = (workers.cursor as u64) < target;
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            count = notices.recv_many(&mut received, BATCH) => {
                if count == 0 {
                    return;
                }
                for exit in received.drain(..) {
                    workers.handle(exit, target);
                }
                workers.compact();
                workers.publish();
                ctx.yield_now().await;
            }
            _ = load.changed.notified() => {
                workers.cursor = 0;
                ramp = Some((Instant::now(), workers.running));
            }
            _ = std::future::ready(()), if spawning => {
                workers.start_batch(target);
                workers.publish();
                if (workers.cursor as u64) >= target
                    && let Some((since, before)) = ramp.take()
                {
                    tracing::info!(
                        "load: {} workers running ({} started in {:?})",
                        workers.running,
                        workers.running.saturating_sub(before),
                        since.elapsed()
                    );
                }
                ctx.yield_now().await;
            }
        }
    }
}

/// The supervisor's view of its workers: slot `i` holds the pid of worker
/// `i`, or 0 if none runs.
struct Workers {
    pool: Arc<Pool>,
    registry: Arc<ProcessRegistry>,
    slots: Arc<Slots>,
    running: u64,
    /// Slots below it have been filled since the setting last changed.
    cursor: usize,
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.pool.close();
    }
}

impl Workers {
    /// Starts up to [`BATCH`] missing workers below `target`.
    fn start_batch(&mut self, target: u64) {
        let target = usize::try_from(target).unwrap_or(usize::MAX);
        let end = target.min(self.cursor.saturating_add(SCAN));
        let slots = self.slots.clone();
        let mut slots = slots.lock();
        if slots.len() < end {
            slots.resize(end, 0);
        }
        let mut started = 0;
        while self.cursor < end && started < BATCH {
            if slots[self.cursor] == 0 {
                slots[self.cursor] = self.start(self.cursor).0;
                self.running += 1;
                started += 1;
            }
            self.cursor += 1;
        }
    }

    /// Handles one exit notice: restarts the worker if it is still wanted.
    fn handle(&mut self, exit: Exit, target: u64) {
        let index = exit.index as usize;
        let slots = self.slots.clone();
        let mut slots = slots.lock();
        if slots.get(index) != Some(&exit.pid.0) {
            return;
        }
        if exit.crashed {
            self.pool.load.restarts.fetch_add(1, Relaxed);
        }
        if u64::from(exit.index) < target {
            slots[index] = self.start(index).0;
        } else {
            slots[index] = 0;
            self.running -= 1;
        }
    }

    /// Starts worker `index`; the caller puts its pid in the slot.
    fn start(&self, index: usize) -> Pid {
        let pool = self.pool.clone();
        // Indices stay below the cap, which is at most u32::MAX.
        let index_u32 = u32::try_from(index).unwrap_or(u32::MAX);
        let priority = self.pool.load.priority();
        let spec = Spec::new("load_worker", "Load.Worker.start_link()")
            .quiet()
            .killable_from_web()
            // Low by default: requests and sums answer ahead of the load.
            .priority(priority);
        self.registry
            .spawn(spec, move |ctx| worker::run(ctx, pool, index_u32, priority))
    }

    /// Gives back the memory of slots no worker uses any more.
    fn compact(&mut self) {
        let mut slots = self.slots.lock();
        if self.running == 0 {
            if slots.capacity() > 0 {
                *slots = Vec::new();
                self.cursor = 0;
                drop(slots);
                memory::give_back();
            }
            return;
        }
        while slots.last() == Some(&0) {
            slots.pop();
        }
        if slots.capacity() > 2 * slots.len() + 4 * BATCH {
            slots.shrink_to_fit();
        }
    }

    fn publish(&self) {
        self.pool.load.workers.store(self.running, Relaxed);
    }
}
