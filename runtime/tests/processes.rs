//! The process runtime in a real tokio runtime: spawn, monitor, DOWN
//! reasons, kill of a busy process, panics, supervision, tracing.

use std::sync::Arc;
use std::time::Duration;

use system_runtime::supervisor::{self, Child, Intensity, Restart};
use system_runtime::{ExitReason, Pid, ProcessRegistry, Spec, install_panic_hook};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

fn spec(name: &'static str) -> Spec {
    Spec::new(name, format!("Test.{name}()"))
}

/// A process that works forever in small slices, yielding between them.
async fn busy(ctx: system_runtime::ProcessContext) {
    loop {
        ctx.enter(&"Test.busy/0");
        ctx.add_reductions(100);
        ctx.yield_now().await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn normal_exit_gives_one_normal_down_and_removes_the_entry() {
    let registry = ProcessRegistry::new();
    let monitor = registry.spawn_monitor(spec("short"), |_| async {});
    let pid = monitor.pid();
    let down = monitor.await;
    assert_eq!(down.pid, pid);
    assert_eq!(down.reason, ExitReason::Normal);
    assert!(!registry.is_alive(pid));
    assert!(registry.info(pid).is_none());
}

#[tokio::test(flavor = "current_thread")]
async fn a_panic_becomes_a_down_with_its_message_and_others_keep_running() {
    install_panic_hook();
    let registry = ProcessRegistry::new();
    let survivor = registry.spawn(spec("survivor"), busy);
    let monitor = registry.spawn_monitor(spec("crasher"), |_| async {
        panic!("error");
    });
    assert_eq!(monitor.await.reason, ExitReason::Panic("error".into()));
    assert!(registry.is_alive(survivor));
    let extra = registry.monitor(survivor);
    assert!(registry.kill(survivor));
    assert_eq!(extra.await.reason, ExitReason::Killed);
}

#[tokio::test(flavor = "current_thread")]
async fn kill_stops_a_busy_process_at_its_next_yield() {
    let registry = ProcessRegistry::new();
    let pid = registry.spawn(spec("busy"), busy);
    let first = registry.monitor(pid);
    let second = registry.monitor(pid);
    // Let it run a little so it has reductions.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let info = registry.info(pid).expect("alive");
    assert!(info.reductions > 0, "{info:?}");
    assert_eq!(info.current_function, "Test.busy/0");
    assert!(registry.kill(pid));
    assert!(!registry.kill(pid), "a second kill finds it already dying");
    assert_eq!(first.await.reason, ExitReason::Killed);
    assert_eq!(second.await.reason, ExitReason::Killed);
    assert!(!registry.is_alive(pid));
    assert!(!registry.kill(pid));
}

/// Erlang's `exit(Pid, Reason)` for a process that does not trap exits,
/// one reason at a time.
#[tokio::test(flavor = "current_thread")]
async fn exit_signals_follow_erlang_for_each_reason() {
    let registry = ProcessRegistry::new();
    // `normal`: nothing happens; true while it is alive.
    let pid = registry.spawn(spec("busy"), busy);
    let monitor = registry.monitor(pid);
    assert!(registry.exit_signal(pid, "normal"));
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(registry.is_alive(pid), "`normal` leaves it running");
    // Any other reason ends it with that reason, for every monitor.
    let second = registry.monitor(pid);
    assert!(registry.exit_signal(pid, "oops"));
    assert!(!registry.exit_signal(pid, "again"), "already dying");
    assert_eq!(monitor.await.reason, ExitReason::Exit("oops".into()));
    assert_eq!(second.await.reason, ExitReason::Exit("oops".into()));
    assert_eq!(ExitReason::Exit("oops".into()).to_string(), "oops");
    assert!(!registry.exit_signal(pid, "normal"), "not alive any more");
    assert!(!registry.exit_signal(pid, "oops"));
    // `kill`: killed, unconditionally.
    let pid = registry.spawn(spec("busy"), busy);
    let monitor = registry.monitor(pid);
    assert!(registry.exit_signal(pid, "kill"));
    assert_eq!(monitor.await.reason, ExitReason::Killed);
    // A plain kill after a reasoned one does not replace the reason.
    let pid = registry.spawn(spec("busy"), busy);
    let monitor = registry.monitor(pid);
    assert!(registry.exit_signal(pid, "shutdown_requested"));
    assert!(!registry.kill(pid));
    assert_eq!(
        monitor.await.reason,
        ExitReason::Exit("shutdown_requested".into())
    );
    // A reason given before the first poll is kept too.
    let monitor = registry.spawn_monitor(spec("busy"), busy);
    assert!(registry.exit_signal(monitor.pid(), "early"));
    assert_eq!(monitor.await.reason, ExitReason::Exit("early".into()));
}

#[tokio::test(flavor = "current_thread")]
async fn monitoring_a_dead_or_unknown_pid_gives_noproc() {
    let registry = ProcessRegistry::new();
    assert_eq!(registry.monitor(Pid(42)).await.reason, ExitReason::NoProc);
    let monitor = registry.spawn_monitor(spec("short"), |_| async {});
    let pid = monitor.pid();
    monitor.await;
    assert_eq!(registry.monitor(pid).await.reason, ExitReason::NoProc);
}

#[tokio::test(flavor = "current_thread")]
async fn pids_are_unique_and_listed() {
    let registry = ProcessRegistry::new();
    // Fewer under Miri, which runs each spawn thousands of times slower.
    let count = if cfg!(miri) { 20 } else { 1000 };
    let pids: Vec<Pid> = (0..count)
        .map(|_| registry.spawn(spec("idle"), busy))
        .collect();
    let listed = registry.list();
    assert_eq!(listed, pids, "every pid listed once, in order");
    for pid in pids {
        registry.kill(pid);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_supervisor_restarts_a_killed_child_and_logs_nothing_else() {
    let registry = ProcessRegistry::new();
    let shutdown = CancellationToken::new();
    let supervisor = supervisor::start(
        &registry,
        spec("supervisor"),
        vec![Child::new(spec("worker"), busy)],
        Intensity::default(),
        shutdown.clone(),
    );
    let find_worker = |registry: &Arc<ProcessRegistry>| {
        registry
            .list()
            .into_iter()
            .find(|pid| registry.name(*pid).as_deref() == Some("worker"))
    };
    let first = loop {
        if let Some(pid) = find_worker(&registry) {
            break pid;
        }
        tokio::task::yield_now().await;
    };
    let down = registry.monitor(first);
    registry.kill(first);
    down.await;
    let second = loop {
        match find_worker(&registry) {
            Some(pid) if pid != first => break pid,
            _ => tokio::task::yield_now().await,
        }
    };
    assert!(second > first);
    shutdown.cancel();
    supervisor.await;
    // The supervisor kills its children when it ends.
    assert_eq!(registry.monitor(second).await.reason, ExitReason::NoProc);
}

#[tokio::test(flavor = "current_thread")]
async fn the_supervisor_gives_up_beyond_its_restart_intensity() {
    install_panic_hook();
    let registry = ProcessRegistry::new();
    let supervisor = supervisor::start(
        &registry,
        spec("supervisor"),
        vec![Child::new(spec("crasher"), |_| async { panic!("boom") })],
        Intensity {
            max_restarts: 3,
            within: Duration::from_secs(60),
        },
        CancellationToken::new(),
    );
    let down = supervisor.await;
    assert_eq!(down.reason, ExitReason::Exit(supervisor::GAVE_UP.into()));
}

#[tokio::test(flavor = "current_thread")]
async fn each_child_is_restarted_as_its_restart_type_says() {
    let registry = ProcessRegistry::new();
    let shutdown = CancellationToken::new();
    let (started, mut starts) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
    // Each child reports its start, then ends normally (the "normal" ones)
    // or crashes: which of them come back says which restart type was applied.
    let child = |name: &'static str, restart: Restart, crash: bool| {
        let started = started.clone();
        Child::new(spec(name), move |_| {
            let _ = started.send(name);
            async move {
                if crash {
                    panic!("crash of {name}");
                }
            }
        })
        .restart(restart)
    };
    install_panic_hook();
    let supervisor = supervisor::start(
        &registry,
        spec("supervisor"),
        vec![
            child("temporary", Restart::Temporary, true),
            child("transient_normal", Restart::Transient, false),
            child("transient_crash", Restart::Transient, true),
            child("permanent_normal", Restart::Permanent, false),
        ],
        Intensity {
            max_restarts: 1_000,
            within: Duration::from_secs(60),
        },
        shutdown.clone(),
    );
    let mut counts = std::collections::HashMap::new();
    // The two that restart each start at least three times; the others once.
    while counts.get("transient_crash").copied().unwrap_or(0) < 3
        || counts.get("permanent_normal").copied().unwrap_or(0) < 3
    {
        let name = starts.recv().await.expect("the supervisor runs");
        *counts.entry(name).or_insert(0) += 1;
    }
    shutdown.cancel();
    supervisor.await;
    while let Ok(name) = starts.try_recv() {
        *counts.entry(name).or_insert(0) += 1;
    }
    assert_eq!(counts.get("temporary"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("transient_normal"), Some(&1), "{counts:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_supervisor_of_children_that_all_ended_for_good_ends_normally() {
    let registry = ProcessRegistry::new();
    let supervisor = supervisor::start(
        &registry,
        spec("supervisor"),
        vec![Child::new(spec("once"), |_| async {}).restart(Restart::Transient)],
        Intensity::default(),
        CancellationToken::new(),
    );
    assert_eq!(supervisor.await.reason, ExitReason::Normal);
}

// Not under Miri: 50 calls within a 1-s window of real time.
#[tokio::test(flavor = "current_thread")]
#[cfg_attr(miri, ignore)]
async fn trace_records_calls_and_stacktrace_names_the_current_function() {
    let registry = ProcessRegistry::new();
    let pid = registry.spawn(spec("busy"), busy);
    let calls = registry
        .trace(pid, 50, Duration::from_secs(1))
        .await
        .expect("alive");
    assert_eq!(calls.len(), 50);
    assert!(calls.iter().all(|call| call == "Test.busy/0"), "{calls:?}");
    let stack = registry.stacktrace(pid).expect("alive");
    assert_eq!(
        stack,
        vec!["Test.busy/0".to_owned(), "Test.busy()".to_owned()]
    );
    registry.kill(pid);

    let idle = registry.spawn(spec("idle"), |_| async {
        let (_keep, never) = oneshot::channel::<()>();
        let _ = never.await;
    });
    let calls = registry.trace(idle, 50, Duration::from_millis(200)).await;
    assert_eq!(calls, Some(vec![]));
    assert_eq!(
        registry.trace(Pid(7), 50, Duration::from_millis(10)).await,
        None
    );
}

/// Two traces of one process (two /top tabs, or a tab and the console) are
/// independent: both receive its calls, and the one that ends first leaves
/// the other receiving.
// Not under Miri: hundreds of traced polls on two threads (minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(miri, ignore)]
async fn concurrent_traces_of_one_process_do_not_clobber_each_other() {
    let registry = ProcessRegistry::new();
    let pid = registry.spawn(spec("busy"), busy);
    // Long windows: each trace ends by its call count, unless calls stop
    // reaching it, which then shows as a short list.
    let window = Duration::from_secs(20);
    let (short, long) = tokio::join!(
        registry.trace(pid, 5, window),
        registry.trace(pid, 500, window),
    );
    let (short, long) = (short.expect("alive"), long.expect("alive"));
    assert_eq!(short.len(), 5);
    assert_eq!(
        long.len(),
        500,
        "calls after the short trace ended still arrive"
    );
    assert!(long.iter().all(|call| call == "Test.busy/0"));
    // A third trace after both ended still receives.
    let again = registry.trace(pid, 5, window).await.expect("alive");
    assert_eq!(again.len(), 5);
    registry.kill(pid);
}

// Not under Miri: 2,000 spawns on two threads (the loom model
// `kill_races_spawn` covers the race).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(miri, ignore)]
async fn a_kill_before_the_first_poll_gives_killed() {
    let registry = ProcessRegistry::new();
    for _ in 0..2_000 {
        let monitor = registry.spawn_monitor(spec("busy"), busy);
        assert!(registry.kill(monitor.pid()));
        assert_eq!(monitor.await.reason, ExitReason::Killed);
    }
}

/// Observers read a process's counters out of its task; they must never see
/// freed memory, however quickly processes come and go.
// Not under Miri: a stress test (the loom model `publish_read_retire` and
// Miri's `a_reader_racing_the_exit_never_reads_freed_memory` cover the race).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(miri, ignore)]
async fn observers_read_counters_while_processes_come_and_go() {
    let registry = ProcessRegistry::new();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let observer = {
        let (registry, stop) = (registry.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seen = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for (pid, reductions) in registry.reductions() {
                    assert!(reductions < 1_000_000, "garbage reductions {reductions}");
                    if let Some(info) = registry.info(pid) {
                        assert!(info.current_function.starts_with("Test."));
                        seen += 1;
                    }
                }
            }
            seen
        })
    };
    let mut monitors = Vec::new();
    for round in 0..20_000u64 {
        monitors.push(
            registry.spawn_monitor(spec("brief"), move |ctx| async move {
                ctx.enter(&"Test.brief/0");
                for _ in 0..round % 4 {
                    ctx.add_reductions(10);
                    ctx.yield_now().await;
                }
            }),
        );
        if monitors.len() == 100 {
            for monitor in monitors.drain(..) {
                assert_eq!(monitor.await.reason, ExitReason::Normal);
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = observer.join().expect("the observer thread");
    assert!(seen > 0, "the observer saw no live process");
}

// Not under Miri: it measures real CPU time.
#[tokio::test(flavor = "current_thread")]
#[cfg_attr(miri, ignore)]
async fn cpu_time_counts_the_time_spent_in_polls() {
    let registry = ProcessRegistry::new();
    let (spun, done) = oneshot::channel();
    let pid = registry.spawn(spec("spinner"), |_| async move {
        // 3 ms on the scheduler in one poll, then waits forever.
        let began = std::time::Instant::now();
        while began.elapsed() < Duration::from_millis(3) {
            std::hint::spin_loop();
        }
        let _ = spun.send(());
        std::future::pending::<()>().await;
    });
    let began = std::time::Instant::now();
    done.await.expect("the spinner ran");
    let wall = began.elapsed();
    let info = registry.info(pid).expect("alive");
    let cpu = Duration::from_micros(info.cpu_time_us);
    assert!(cpu >= Duration::from_millis(3), "cpu {cpu:?}");
    assert!(cpu <= wall, "cpu {cpu:?} > wall {wall:?}");
    assert_eq!(info.status, system_runtime::Status::Waiting);
}

/// Sets its flag when dropped, slowly, so that a DOWN sent before the drop
/// ended would be seen while the flag is still unset.
struct SlowCleanup(Arc<std::sync::atomic::AtomicBool>);

impl Drop for SlowCleanup {
    fn drop(&mut self) {
        // Widens the window a wrong drop order would leave open; not a wait for an event.
        std::thread::sleep(Duration::from_millis(50));
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_comes_after_the_process_cleaned_up() {
    let registry = ProcessRegistry::new();
    let cleaned = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let guard = SlowCleanup(cleaned.clone());
    let monitor = registry.spawn_monitor(spec("guarded"), move |ctx| async move {
        let _guard = guard;
        busy(ctx).await;
    });
    assert!(registry.kill(monitor.pid()));
    assert_eq!(monitor.await.reason, ExitReason::Killed);
    assert!(
        cleaned.load(std::sync::atomic::Ordering::SeqCst),
        "DOWN arrived before the process's drop guards ran"
    );
}
