//! How cheap the process registry is at scale, measured in-process:
//!
//! ```text
//! cargo run --release -p system-runtime --example registry
//! ```
//!
//! Spawns 1,000,000 idle processes on one scheduler and prints the CPU time
//! it took, then times `list` at 10k and 1M, `info`, and killing them all.
//! It prints numbers; it asserts nothing.

use std::time::{Duration, Instant};

use nix::time::{ClockId, clock_gettime};
use system_runtime::{Pid, ProcessRegistry, Spec};

/// CPU time of this thread (the runtime's only thread here).
fn thread_cpu() -> Duration {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(Duration::ZERO, Duration::from)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let registry = ProcessRegistry::new();
        let spec = Spec::new("idle", "Example.idle()");
        for count in [10_000usize, 1_000_000] {
            let cpu = thread_cpu();
            let wall = Instant::now();
            let pids: Vec<Pid> = (0..count)
                .map(|_| {
                    registry.spawn(spec.clone(), |_| async {
                        std::future::pending::<()>().await;
                    })
                })
                .collect();
            let spawn_cpu = thread_cpu() - cpu;
            let spawn_wall = wall.elapsed();
            tokio::task::yield_now().await; // let each process run its first poll
            let listed = Instant::now();
            let all = registry.list();
            let list = listed.elapsed();
            let asked = Instant::now();
            let info = registry.info(pids[count / 2]);
            let info_time = asked.elapsed();
            assert_eq!(all.len(), count);
            assert!(info.is_some());
            let killing = Instant::now();
            for pid in &pids {
                registry.kill(*pid);
            }
            while registry.count() > 0 {
                tokio::task::yield_now().await;
            }
            println!(
                "{count:>9} processes: spawn {spawn_cpu:?} CPU ({spawn_wall:?} wall, {:.0} ns each), list {list:?}, info {info_time:?}, kill all and reap {:?}",
                spawn_cpu.as_nanos() as f64 / count as f64,
                killing.elapsed()
            );
        }
    });
}
