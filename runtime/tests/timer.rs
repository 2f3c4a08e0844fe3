//! The runtime's own timer (`ProcessContext::sleep_until`): order, precision,
//! cancellation on kill, and no lost wake-ups across scheduler threads.
//!
//! Precision is asserted on tokio's paused clock (exact, so the assertion
//! cannot flake); on the real clock only "never early" and "all wake" are.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use system_runtime::{ExitReason, Priority, ProcessRegistry, Spec, Status, TIMER_SLOTS};
use tokio::sync::oneshot;
use tokio::time::Instant;

fn spec(name: &'static str) -> Spec {
    Spec::new(name, format!("Test.{name}()"))
}

/// Sleepers started in shuffled order wake in the order of their deadlines,
/// within the wheel's span and beyond it (the overflow).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn sleepers_wake_in_the_order_of_their_deadlines() {
    let registry = ProcessRegistry::new();
    let start = Instant::now();
    let mut delays_ms: Vec<u64> = (0..40).map(|k| 1 + 3 * k).collect();
    let span = TIMER_SLOTS;
    delays_ms.extend([span - 1, span, span + 1, span + 50, 3 * span, 10_000]);
    let mut shuffled = delays_ms.clone();
    // A fixed shuffle: reverse, then interleave halves.
    shuffled.reverse();
    let (a, b) = shuffled.split_at(shuffled.len() / 2);
    let shuffled: Vec<u64> = a.iter().zip(b).flat_map(|(x, y)| [*y, *x]).collect();
    assert_eq!(shuffled.len(), delays_ms.len());

    let woke = Arc::new(Mutex::new(Vec::new()));
    let mut monitors = Vec::new();
    for delay in shuffled {
        let woke = woke.clone();
        monitors.push(
            registry.spawn_monitor(spec("sleeper"), move |ctx| async move {
                ctx.sleep_until(start + Duration::from_millis(delay)).await;
                woke.lock().unwrap().push(delay);
            }),
        );
    }
    for monitor in monitors {
        assert_eq!(monitor.await.reason, ExitReason::Normal);
    }
    assert_eq!(*woke.lock().unwrap(), delays_ms);
    assert_eq!(registry.pending_timers(), 0);
}

/// On an exact clock a sleep ends at the first whole millisecond at or
/// after its deadline: never before, and less than 1 ms after.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_sleep_never_ends_early_and_ends_within_a_millisecond() {
    let registry = ProcessRegistry::new();
    let micros = [
        0, 300, 1_000, 1_500, 7_250, 999_999, 2_047_000, 2_049_500, 3_000_001,
    ];
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    registry.spawn(spec("sleeper"), move |ctx| async move {
        for micros in micros {
            let asked = Duration::from_micros(micros);
            let began = Instant::now();
            ctx.sleep(asked).await;
            let _ = tx.send((asked, began.elapsed()));
        }
    });
    let mut checked = 0;
    while let Some((asked, slept)) = rx.recv().await {
        assert!(slept >= asked, "slept {slept:?}, asked {asked:?}: early");
        assert!(
            slept < asked + Duration::from_millis(1),
            "slept {slept:?}, asked {asked:?}: a millisecond late or more"
        );
        checked += 1;
    }
    assert_eq!(checked, micros.len());
}

/// A sleep whose deadline has passed is over at once; one at this very
/// instant ends at the next millisecond at the latest.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_deadline_in_the_past_ends_the_sleep_at_once() {
    let registry = ProcessRegistry::new();
    let monitor = registry.spawn_monitor(spec("sleeper"), |ctx| async move {
        tokio::time::advance(Duration::from_millis(10)).await;
        let began = Instant::now();
        ctx.sleep_until(began - Duration::from_millis(5)).await;
        assert_eq!(began.elapsed(), Duration::ZERO);
        ctx.sleep_until(Instant::now()).await;
        assert!(began.elapsed() <= Duration::from_millis(1));
    });
    assert_eq!(monitor.await.reason, ExitReason::Normal);
}

/// A sleeping process reads as waiting; a kill ends it at once (not at its
/// deadline), and its wheel entry is gone once its slot has passed.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_killed_sleeper_ends_at_once_and_leaves_no_entry_behind() {
    let registry = ProcessRegistry::new();
    let (asleep, is_asleep) = oneshot::channel();
    let monitor = registry.spawn_monitor(spec("sleeper"), |ctx| async move {
        let _ = asleep.send(());
        ctx.sleep(Duration::from_millis(50)).await;
        unreachable!("killed before its deadline");
    });
    let pid = monitor.pid();
    is_asleep.await.unwrap();
    assert_eq!(registry.info(pid).unwrap().status, Status::Waiting);
    assert_eq!(registry.pending_timers(), 1);

    let killed_at = Instant::now();
    assert!(registry.kill(pid));
    assert_eq!(monitor.await.reason, ExitReason::Killed);
    // The paused clock only moves when every task waits for a timer: the
    // DOWN came before the sleeper's deadline.
    assert!(killed_at.elapsed() < Duration::from_millis(50));
    // Cleaned lazily: the entry stays until its slot comes, and not longer.
    assert_eq!(registry.pending_timers(), 1);
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(registry.pending_timers(), 0);
}

/// A sleep beyond the wheel's span waits in the overflow, from which a kill
/// removes it at once: a killed long sleeper holds nothing.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_killed_long_sleeper_is_removed_at_once() {
    let registry = ProcessRegistry::new();
    let (asleep, is_asleep) = oneshot::channel();
    let monitor = registry.spawn_monitor(spec("sleeper"), |ctx| async move {
        let _ = asleep.send(());
        ctx.sleep(Duration::from_secs(3600)).await;
    });
    is_asleep.await.unwrap();
    assert_eq!(registry.pending_timers(), 1);
    assert!(registry.kill(monitor.pid()));
    assert_eq!(monitor.await.reason, ExitReason::Killed);
    assert_eq!(registry.pending_timers(), 0);
}

/// A sleep that loses a `select!` is dropped; the process goes on and its
/// next sleeps work.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_sleep_dropped_unfinished_does_not_disturb_the_next() {
    let registry = ProcessRegistry::new();
    let monitor = registry.spawn_monitor(spec("sleeper"), |ctx| async move {
        for _ in 0..3 {
            tokio::select! {
                () = ctx.sleep(Duration::from_secs(5)) => unreachable!("the shorter one wins"),
                () = tokio::time::sleep(Duration::from_millis(2)) => {}
            }
        }
        let began = Instant::now();
        ctx.sleep(Duration::from_millis(20)).await;
        assert_eq!(began.elapsed(), Duration::from_millis(20));
    });
    assert_eq!(monitor.await.reason, ExitReason::Normal);
    assert_eq!(registry.pending_timers(), 0);
}

/// Many sleepers, normal and low priority, spawned from both scheduler
/// threads of a multi-thread runtime, each sleeping several times: every
/// one wakes, never early, and no entry is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    miri,
    ignore = "10,000 processes in real time: many minutes under Miri"
)]
async fn no_wake_up_is_lost_across_scheduler_threads() {
    const SPAWNERS: usize = 4;
    const PER_SPAWNER: usize = 2_500;
    let registry = ProcessRegistry::new();
    let early = Arc::new(Mutex::new(Vec::new()));
    let mut spawners = Vec::new();
    for spawner in 0..SPAWNERS {
        let registry = registry.clone();
        let early = early.clone();
        spawners.push(tokio::spawn(async move {
            let mut monitors = Vec::with_capacity(PER_SPAWNER);
            for index in 0..PER_SPAWNER {
                let early = early.clone();
                // Half of them low priority (run by the low-priority runners).
                let spec = if index % 2 == 0 {
                    spec("sleeper")
                } else {
                    spec("sleeper").priority(Priority::Low)
                };
                monitors.push(registry.spawn_monitor(spec, move |ctx| async move {
                    for round in 0..3u64 {
                        let deadline = Instant::now()
                            + Duration::from_micros(
                                ((index * 7 + spawner) as u64 * 13 + round * 311) % 30_000,
                            );
                        ctx.sleep_until(deadline).await;
                        let now = Instant::now();
                        if now < deadline {
                            early.lock().unwrap().push(deadline - now);
                        }
                    }
                }));
                if index % 100 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            let mut normal = 0;
            for monitor in monitors {
                if monitor.await.reason == ExitReason::Normal {
                    normal += 1;
                }
            }
            normal
        }));
    }
    let mut normal = 0;
    for spawner in spawners {
        normal += tokio::time::timeout(Duration::from_secs(120), spawner)
            .await
            .expect("every sleeper wakes (a lost wake-up would hang here)")
            .unwrap();
    }
    assert_eq!(normal, SPAWNERS * PER_SPAWNER);
    assert!(
        early.lock().unwrap().is_empty(),
        "woke early: {:?}",
        early.lock().unwrap()
    );
    assert_eq!(registry.pending_timers(), 0);
}

/// A low-priority sleeper (as load workers are) is killed as promptly as a
/// normal one, and reads as waiting while asleep.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_killed_low_priority_sleeper_ends_at_once() {
    let registry = ProcessRegistry::new();
    let (asleep, is_asleep) = oneshot::channel();
    let monitor =
        registry.spawn_monitor(spec("sleeper").priority(Priority::Low), |ctx| async move {
            let _ = asleep.send(());
            ctx.sleep(Duration::from_millis(500)).await;
            unreachable!("killed before its deadline");
        });
    is_asleep.await.unwrap();
    tokio::task::yield_now().await;
    assert_eq!(
        registry.info(monitor.pid()).unwrap().status,
        Status::Waiting
    );
    let killed_at = Instant::now();
    assert!(registry.kill(monitor.pid()));
    assert_eq!(monitor.await.reason, ExitReason::Killed);
    assert!(killed_at.elapsed() < Duration::from_millis(500));
}
