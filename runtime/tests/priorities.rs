//! Process priorities: a low-priority process is a process like any other
//! (info, kill, monitors, panics, shutdown), and a normal one never waits
//! behind more than a batch of low ones.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use system_runtime::{
    ExitReason, LOW_PRIORITY_BATCH, Priority, ProcessContext, ProcessRegistry, Spec, Status,
    install_panic_hook,
};

fn low(name: &'static str) -> Spec {
    Spec::new(name, format!("Test.{name}()")).priority(Priority::Low)
}

/// One scheduler, as the daemon runs by default.
fn one_scheduler() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime")
}

async fn busy(ctx: ProcessContext) {
    loop {
        ctx.enter(&"Test.busy/0");
        ctx.add_reductions(100);
        ctx.yield_now().await;
    }
}

#[test]
fn a_low_priority_process_is_observed_killed_and_monitored_like_any_other() {
    install_panic_hook();
    let runtime = one_scheduler();
    runtime.block_on(async {
        let registry = ProcessRegistry::new();
        let pid = registry.spawn(low("busy"), busy);
        let down = registry.monitor(pid);
        while registry.info(pid).expect("alive").reductions < 1_000 {
            tokio::task::yield_now().await;
        }
        let info = registry.info(pid).expect("alive");
        assert_eq!(info.priority, Priority::Low);
        assert_ne!(info.status, Status::Exiting);
        assert_eq!(
            registry.stacktrace(pid).expect("alive")[0],
            "Test.busy/0",
            "its current function is recorded"
        );
        assert!(registry.kill(pid));
        assert_eq!(down.await.reason, ExitReason::Killed);
        assert!(!registry.is_alive(pid));

        let crasher = registry.spawn_monitor(low("crasher"), |_| async { panic!("low boom") });
        assert_eq!(crasher.await.reason, ExitReason::Panic("low boom".into()));
        let short = registry.spawn_monitor(low("short"), |_| async {});
        assert_eq!(short.await.reason, ExitReason::Normal);

        // Killed before its first poll: the kill is delivered once, at once.
        let early = registry.spawn_monitor(low("early"), busy);
        registry.kill(early.pid());
        assert_eq!(early.await.reason, ExitReason::Killed);
    });
}

/// Workers that are always runnable (a saturated scheduler), and one
/// normal probe that yields 20 times: how many worker polls ran between two
/// polls of the probe, at most.
fn longest_wait(workers: usize, worker_priority: Priority) -> u64 {
    let runtime = one_scheduler();
    runtime.block_on(async {
        let registry = ProcessRegistry::new();
        let polls = Arc::new(AtomicU64::new(0));
        for _ in 0..workers {
            let polls = polls.clone();
            registry.spawn(
                Spec::new("worker", "Test.worker()").priority(worker_priority),
                move |ctx| async move {
                    loop {
                        polls.fetch_add(1, Relaxed);
                        ctx.yield_now().await;
                    }
                },
            );
        }
        let longest = Arc::new(AtomicU64::new(0));
        let probe = {
            let (polls, longest) = (polls.clone(), longest.clone());
            registry.spawn_monitor(Spec::new("probe", "Test.probe()"), move |ctx| async move {
                // Once every worker has run at least once.
                while polls.load(Relaxed) < 2 * workers as u64 {
                    ctx.yield_now().await;
                }
                for _ in 0..20 {
                    let before = polls.load(Relaxed);
                    ctx.yield_now().await;
                    longest.fetch_max(polls.load(Relaxed) - before, Relaxed);
                }
            })
        };
        probe.await;
        for pid in registry.list() {
            registry.kill(pid);
        }
        longest.load(Relaxed)
    })
}

#[test]
#[cfg_attr(miri, ignore = "40,000 processes: many minutes under Miri")]
fn a_normal_process_waits_for_at_most_two_batches_of_low_ones() {
    let workers = 20_000;
    let behind_low = longest_wait(workers, Priority::Low);
    // For comparison only: tokio's own fairness decides this one.
    let behind_normal = longest_wait(workers, Priority::Normal);
    eprintln!(
        "between two polls of the probe: {behind_low} low / {behind_normal} normal worker polls"
    );
    // At most two batches: the runner's turn can come once before the
    // probe yields and once after, both ahead of the probe's next turn.
    assert!(
        behind_low <= 2 * LOW_PRIORITY_BATCH as u64,
        "the probe waited for {behind_low} low-priority polls"
    );
}

#[test]
fn low_priority_processes_end_with_the_runtime_and_their_monitors_hear_of_it() {
    let dropped = Arc::new(AtomicUsize::new(0));
    struct CountDrop(Arc<AtomicUsize>);
    impl Drop for CountDrop {
        fn drop(&mut self) {
            self.0.fetch_add(1, Relaxed);
        }
    }
    let registry = ProcessRegistry::new();
    let runtime = one_scheduler();
    let monitors: Vec<_> = runtime.block_on(async {
        (0..100)
            .map(|_| {
                let guard = CountDrop(dropped.clone());
                registry.spawn_monitor(low("sleeper"), move |_| async move {
                    let _guard = guard;
                    std::future::pending::<()>().await;
                })
            })
            .collect()
    });
    drop(runtime);
    assert_eq!(dropped.load(Relaxed), 100, "every future was dropped");
    assert_eq!(registry.count(), 0, "every entry was removed");
    let downs = futures::executor::block_on(futures::future::join_all(monitors));
    assert!(downs.iter().all(|down| down.reason == ExitReason::Shutdown));
}

#[test]
#[cfg_attr(miri, ignore = "10,000 wakes across threads: many minutes under Miri")]
fn no_wake_of_a_low_priority_process_is_lost_across_threads() {
    // Two schedulers (two runners), woken from outside the runtime while
    // the runners go idle and busy again: every process must hear its wakes.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let registry = ProcessRegistry::new();
    let rounds = 50;
    let (senders, monitors): (Vec<_>, Vec<_>) = runtime.block_on(async {
        (0..200)
            .map(|_| {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
                let monitor = registry.spawn_monitor(low("waiter"), move |_| async move {
                    for _ in 0..rounds {
                        rx.recv().await.expect("a wake");
                    }
                });
                (tx, monitor)
            })
            .unzip()
    });
    let wakers: Vec<_> = senders
        .chunks(50)
        .map(|chunk| {
            let chunk = chunk.to_vec();
            std::thread::spawn(move || {
                for _ in 0..rounds {
                    for tx in &chunk {
                        tx.send(()).expect("the waiter lives");
                    }
                    std::thread::yield_now();
                }
            })
        })
        .collect();
    for waker in wakers {
        waker.join().expect("a waker thread");
    }
    runtime.block_on(async {
        let downs = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            futures::future::join_all(monitors),
        )
        .await
        .expect("every waiter heard every wake");
        assert!(downs.iter().all(|down| down.reason == ExitReason::Normal));
    });
}
