//! The runtime's own schedulers: processes run on the schedulers online,
//! move when that count changes (none lost, none stuck on an offline
//! scheduler), can still be killed, `high` goes ahead of `normal`, and a
//! shutdown ends every process once.
//!
//! Real threads and time: none of these run under Miri (the loom model of
//! the doorbell covers the handshake; these check the whole).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use system_runtime::scheduler::{OutOfRange, Schedulers};
use system_runtime::{ExitReason, Priority, ProcessContext, ProcessRegistry, Spec};

/// The host's tokio runtime: drivers only (one worker, for its timers).
fn drivers() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Which scheduler thread polls, counted per thread name, by many processes.
type Seen = Arc<Mutex<HashMap<String, u64>>>;

async fn counting(ctx: ProcessContext, seen: Seen, polls: Arc<AtomicU64>) {
    loop {
        let name = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_owned();
        *seen
            .lock()
            .expect("the test's map")
            .entry(name)
            .or_default() += 1;
        polls.fetch_add(1, Relaxed);
        ctx.sleep(Duration::from_millis(2)).await;
    }
}

/// Waits (polling, bounded) until `done` holds.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
#[cfg_attr(miri, ignore)]
fn processes_move_to_the_schedulers_online_and_nothing_is_lost() {
    let runtime = drivers();
    let schedulers = Schedulers::start(runtime.handle().clone(), 1, 2).expect("schedulers");
    let registry = ProcessRegistry::new();
    assert!(registry.run_on(schedulers.clone()).is_ok());
    let seen: Seen = Arc::default();
    let polls = Arc::new(AtomicU64::new(0));
    let pids: Vec<_> = (0..200)
        .map(|_| {
            let (seen, polls) = (seen.clone(), polls.clone());
            registry.spawn(Spec::new("counting", "Test.counting()"), move |ctx| {
                counting(ctx, seen, polls)
            })
        })
        .collect();
    let scheduler = |n: u64| format!("scheduler {n}");
    let seen_on = |name: &str| seen.lock().expect("map").get(name).copied().unwrap_or(0);
    wait_until("the processes run", || polls.load(Relaxed) > 2_000);
    assert_eq!(seen_on(&scheduler(2)), 0, "scheduler 2 is offline");

    // 1 -> 2: about half the processes move to scheduler 2.
    assert_eq!(schedulers.set_online(2), Ok(1));
    wait_until("scheduler 2 polls", || seen_on(&scheduler(2)) > 2_000);
    let both = (seen_on(&scheduler(1)), seen_on(&scheduler(2)));

    // 2 -> 1: scheduler 2 stops polling; every process still runs.
    assert_eq!(schedulers.set_online(1), Ok(2));
    // What was queued on scheduler 2 when it went offline is forwarded, not polled.
    std::thread::sleep(Duration::from_millis(50));
    let on_two = seen_on(&scheduler(2));
    let before = polls.load(Relaxed);
    wait_until("the processes keep running", || {
        polls.load(Relaxed) > before + 20_000
    });
    assert_eq!(
        seen_on(&scheduler(2)),
        on_two,
        "an offline scheduler polled"
    );
    assert!(seen_on(&scheduler(1)) > both.0 + 10_000);
    for pid in &pids {
        assert!(registry.is_alive(*pid), "{pid} was lost");
    }
    assert!(registry.kill(pids[0]));
    wait_until("the killed process ends", || !registry.is_alive(pids[0]));

    // Outside 1..=max: refused, and nothing changes.
    assert_eq!(
        schedulers.set_online(0),
        Err(OutOfRange { asked: 0, max: 2 })
    );
    assert_eq!(
        schedulers.set_online(3),
        Err(OutOfRange { asked: 3, max: 2 })
    );
    assert_eq!(schedulers.online(), 1);

    // A shutdown ends every process, each with a DOWN.
    let monitor = registry.monitor(pids[1]);
    schedulers.shutdown(Duration::from_secs(1));
    assert_eq!(registry.count(), 0);
    let down = runtime.block_on(monitor);
    assert_eq!(down.reason, ExitReason::Shutdown);
}

#[test]
#[cfg_attr(miri, ignore)]
fn an_endless_process_moves_and_can_still_be_killed() {
    let runtime = drivers();
    let schedulers = Schedulers::start(runtime.handle().clone(), 2, 2).expect("schedulers");
    let registry = ProcessRegistry::new();
    assert!(registry.run_on(schedulers.clone()).is_ok());
    let last_thread = Arc::new(Mutex::new(String::new()));
    let spins = Arc::new(AtomicU64::new(0));
    // Placed second: on scheduler 2 while two are online.
    let _first = registry.spawn(Spec::new("idle", "Test.idle()"), |_ctx| {
        std::future::pending::<()>()
    });
    let monitor = {
        let (last_thread, spins) = (last_thread.clone(), spins.clone());
        registry.spawn_monitor(
            Spec::new("endless", "Test.endless()"),
            move |ctx| async move {
                loop {
                    ctx.add_reductions(4_000);
                    *last_thread.lock().expect("name") =
                        std::thread::current().name().unwrap_or("").to_owned();
                    spins.fetch_add(1, Relaxed);
                    ctx.yield_now().await;
                }
            },
        )
    };
    wait_until("it runs on scheduler 2", || {
        *last_thread.lock().expect("name") == "scheduler 2"
    });
    assert_eq!(schedulers.set_online(1), Ok(2));
    wait_until("it runs on scheduler 1", || {
        *last_thread.lock().expect("name") == "scheduler 1"
    });
    let now = spins.load(Relaxed);
    wait_until("it keeps running", || spins.load(Relaxed) > now + 1_000);
    assert!(registry.kill(monitor.pid()));
    assert_eq!(runtime.block_on(monitor).reason, ExitReason::Killed);
    schedulers.shutdown(Duration::from_secs(1));
}

#[test]
#[cfg_attr(miri, ignore)]
fn a_high_priority_process_goes_ahead_of_normal_ones() {
    let runtime = drivers();
    let schedulers = Schedulers::start(runtime.handle().clone(), 1, 1).expect("schedulers");
    let registry = ProcessRegistry::new();
    assert!(registry.run_on(schedulers.clone()).is_ok());
    // 2,000 normal processes that always yield: one scheduler's queue is
    // never empty. A high one that yields as often is polled once a turn.
    let normal_polls = Arc::new(AtomicU64::new(0));
    for _ in 0..2_000 {
        let polls = normal_polls.clone();
        registry.spawn(Spec::new("busy", "Test.busy()"), move |ctx| async move {
            loop {
                polls.fetch_add(1, Relaxed);
                ctx.yield_now().await;
            }
        });
    }
    let high_polls = Arc::new(AtomicU64::new(0));
    {
        let polls = high_polls.clone();
        registry.spawn(
            Spec::new("urgent", "Test.urgent()").priority(Priority::High),
            move |ctx| async move {
                loop {
                    polls.fetch_add(1, Relaxed);
                    ctx.yield_now().await;
                }
            },
        );
    }
    wait_until("the normal ones ran 100 rounds", || {
        normal_polls.load(Relaxed) > 200_000
    });
    // A normal process is polled once per 2,000 polls; the high one once
    // per batch of normal ones (64), so tens of times more often.
    let normal_each = normal_polls.load(Relaxed) / 2_000;
    let high = high_polls.load(Relaxed);
    assert!(
        high > normal_each * 10,
        "high polled {high} times, each normal one {normal_each}"
    );
    schedulers.shutdown(Duration::from_secs(1));
}
