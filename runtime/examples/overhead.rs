//! What the process runtime costs per job, measured in-process with nothing
//! else running: the load's worker loop (sleep to the next 1-s tick, sum
//! 1..50, count) as bare tokio tasks and as registered processes, on the
//! same kind of runtime as the daemon's (multi-thread, one worker).
//!
//! ```text
//! cargo run --release -p system-runtime --example overhead [WORKERS] [SECONDS] [ROUNDS] [bare|processes]
//! ```
//!
//! It prints CPU time per job for both and their ratio in alternating
//! rounds, then the median ratio; it asserts nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use nix::time::{ClockId, clock_gettime};
use system_runtime::{ProcessContext, ProcessRegistry, Spec};
use tokio::time::{Instant, sleep_until};

/// CPU time of the whole process so far.
fn process_cpu() -> Duration {
    clock_gettime(ClockId::CLOCK_PROCESS_CPUTIME_ID).map_or(Duration::ZERO, Duration::from)
}

/// The load worker's loop on bare tokio (its `sleep_until`).
async fn bare_worker(jobs: Arc<AtomicU64>) {
    let mut next = Instant::now() + Duration::from_millis(rand::random_range(0..1000));
    loop {
        sleep_until(next).await;
        job(&jobs);
        next += Duration::from_secs(1);
    }
}

/// The load worker's loop as a process: the runtime's own timer, and the
/// bookkeeping the daemon's worker does around each job.
async fn process_worker(ctx: ProcessContext, jobs: Arc<AtomicU64>) {
    let mut next = Instant::now() + Duration::from_millis(rand::random_range(0..1000));
    loop {
        ctx.sleep_until(next).await;
        ctx.enter(&"Load.Worker.job/1");
        ctx.add_reductions(50);
        job(&jobs);
        next += Duration::from_secs(1);
    }
}

fn job(jobs: &AtomicU64) {
    let sum: u64 = (1..=50u64).map(std::hint::black_box).sum();
    std::hint::black_box(sum);
    jobs.fetch_add(1, Relaxed);
}

/// CPU nanoseconds per job over `seconds`, after the workers settled.
fn measure(workers: u64, seconds: u64, instrumented: bool) -> f64 {
    // As the daemon's: each poll also writes its scheduler's watch slot.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .on_thread_start(system_runtime::watch::scheduler_thread_started)
        .on_thread_park(system_runtime::watch::scheduler_thread_parks)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let jobs = Arc::new(AtomicU64::new(0));
        let registry = ProcessRegistry::new();
        for index in 0..workers {
            let jobs = jobs.clone();
            if instrumented {
                registry.spawn(
                    Spec::new("load_worker", "Load.Worker.start_link()"),
                    |ctx| process_worker(ctx, jobs),
                );
            } else {
                tokio::spawn(bare_worker(jobs));
            }
            if index % 1_000 == 999 {
                tokio::task::yield_now().await;
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (cpu, done) = (process_cpu(), jobs.load(Relaxed));
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let (cpu, done) = (process_cpu() - cpu, jobs.load(Relaxed) - done);
        cpu.as_nanos() as f64 / done.max(1) as f64
    })
}

fn main() {
    let mut args = std::env::args().skip(1);
    let workers = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let seconds = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let rounds = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    // `bare` or `processes`: only that side, once (e.g. under `perf record`).
    if let Some(only) = args.next() {
        let cost = measure(workers, seconds, only == "processes");
        println!("{workers} workers, {seconds} s: {only} {cost:.0} ns/job");
        return;
    }
    let mut ratios = Vec::new();
    for round in 0..rounds {
        // Alternate which goes first, so a drifting machine favours neither.
        let (bare, processes) = if round % 2 == 0 {
            let bare = measure(workers, seconds, false);
            (bare, measure(workers, seconds, true))
        } else {
            let processes = measure(workers, seconds, true);
            (measure(workers, seconds, false), processes)
        };
        println!(
            "{workers} workers, {seconds} s: bare tokio {bare:.0} ns/job, processes {processes:.0} ns/job, ratio {:.2}",
            processes / bare
        );
        ratios.push(processes / bare);
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "median ratio over {rounds} rounds: {:.2}",
        ratios[ratios.len() / 2]
    );
}
