//! One load worker: sleeps a random 0–1000 ms, then once a second runs a
//! tiny job (the sum of 1..50) and counts it; a job fails (panics) as often
//! as the failure rate says. It stops at its next tick once the load falls
//! below its index.
//!
//! A worker must stay small (the benchmark runs a million of them): its
//! state is a context, a pool pointer, an index, a deadline and a sleep on
//! the runtime's own timer wheel (`ProcessContext::sleep_until`).
//! It never logs and never restarts itself; its supervisor does that.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Load;
use super::pool::Pool;
use system_runtime::{Priority, ProcessContext};

/// Time between two jobs of one worker.
const PERIOD: Duration = Duration::from_secs(1);

/// The worker's body, started by the load supervisor.
pub(super) async fn run(ctx: ProcessContext, pool: Arc<Pool>, index: u32, priority: Priority) {
    let mut life = Life {
        ctx,
        pool,
        index,
        ended_normally: false,
    };
    life.ctx.enter(&"Load.Worker.loop/1");
    let mut next = Instant::now() + Duration::from_millis(rand::random_range(0..1000));
    loop {
        life.ctx.sleep_until(next).await;
        // Surplus, or started at a priority the load no longer has: ends
        // normally (a worker at the new priority takes its place).
        if life.pool.is_surplus(life.index) || life.pool.is_outdated(priority) {
            life.ended_normally = true;
            return;
        }
        job(&life.ctx, &life.pool.load);
        next += PERIOD;
        // Overdue (an overloaded scheduler): run the next job now, but never
        // more than one to catch up.
        let now = Instant::now();
        if next < now {
            next = now;
        }
    }
}

/// The tiny job; panics with the failure rate's probability.
fn job(ctx: &ProcessContext, load: &Load) {
    ctx.enter(&"Load.Worker.job/1");
    let sum: u64 = (1..=50u64).map(std::hint::black_box).sum();
    std::hint::black_box(sum);
    ctx.add_reductions(50);
    let failure_rate = load.failure_rate();
    if failure_rate > 0.0 && rand::random::<f64>() * 100.0 < failure_rate {
        load.failed.add_one();
        panic!("synthetic failure in Load.Worker.job/1");
    }
    load.succeeded.add_one();
    ctx.enter(&"Load.Worker.loop/1");
}

/// Sends the worker's exit notice exactly once, however it ends (return,
/// panic, kill, daemon stop).
struct Life {
    ctx: ProcessContext,
    pool: Arc<Pool>,
    index: u32,
    ended_normally: bool,
}

impl Drop for Life {
    fn drop(&mut self) {
        self.pool
            .exited(self.index, self.ctx.pid(), !self.ended_normally);
    }
}
