//! Links, parents, monitor lists, the inbox gauge and traces with limits,
//! in a real tokio runtime (issue 26): what `info` says of a process's
//! relations, that a link ends the peer that does not trap exits, and that
//! each limit of a trace ends it.

use std::sync::Arc;
use std::time::Duration;

use system_runtime::{
    ExitReason, Pid, ProcessContext, ProcessRegistry, Spec, TraceEnd, TraceLimits, TraceTarget,
};
use tokio::sync::oneshot;

fn spec(name: &'static str) -> Spec {
    Spec::new(name, format!("Test.{name}()"))
}

/// Works forever in small slices, yielding between them.
async fn busy(ctx: ProcessContext) {
    loop {
        ctx.enter(&"Test.busy/0");
        ctx.yield_now().await;
    }
}

/// A parent (trapping exits or not) that starts one busy child linked to
/// it, tells its pid, then waits for the child's DOWN or forever.
fn parent_of_one_child(
    registry: &Arc<ProcessRegistry>,
    parent_spec: Spec,
) -> (Pid, oneshot::Receiver<Pid>) {
    let (told, child) = oneshot::channel();
    let inner = registry.clone();
    let pid = registry.spawn(parent_spec, move |_ctx| async move {
        let monitor = inner.spawn_link_monitor(spec("child"), busy);
        let _ = told.send(monitor.pid());
        monitor.await;
        std::future::pending::<()>().await;
    });
    (pid, child)
}

#[tokio::test(flavor = "current_thread")]
async fn info_names_parent_links_and_monitors_both_ways() {
    let registry = ProcessRegistry::new();
    let (parent, child) = parent_of_one_child(&registry, spec("parent").trap_exits());
    let child = child.await.expect("the child's pid");
    let of_child = registry.info(child).expect("alive");
    assert_eq!(of_child.parent, Some(parent));
    assert_eq!(of_child.links, vec![parent]);
    assert_eq!(of_child.monitored_by, vec![parent]);
    assert!(of_child.monitors.is_empty());
    assert_eq!(of_child.message_queue_len, 0);
    let of_parent = registry.info(parent).expect("alive");
    assert_eq!(of_parent.parent, None, "started outside any process");
    assert_eq!(of_parent.links, vec![child]);
    assert_eq!(of_parent.monitors, vec![child]);
    assert!(of_parent.monitored_by.is_empty());

    // The child ends: the parent traps exits, so it only loses the link.
    let down = registry.monitor(child);
    assert!(registry.kill(child));
    assert_eq!(down.await.reason, ExitReason::Killed);
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let of_parent = registry.info(parent).expect("a trapping parent lives on");
    assert!(of_parent.links.is_empty(), "{of_parent:?}");
    assert!(of_parent.monitors.is_empty(), "{of_parent:?}");
    registry.kill(parent);
}

#[tokio::test(flavor = "current_thread")]
async fn a_linked_process_ends_with_its_peer_unless_it_traps_exits() {
    let registry = ProcessRegistry::new();
    // The parent ends: its child, which does not trap exits, ends too.
    let (parent, child) = parent_of_one_child(&registry, spec("parent").trap_exits());
    let child = child.await.expect("the child's pid");
    let child_down = registry.monitor(child);
    assert!(registry.exit_signal(parent, "oops"));
    assert_eq!(
        child_down.await.reason,
        ExitReason::Exit(format!("linked {parent} exited: oops"))
    );
    // The child ends: a parent that does not trap exits ends too.
    let (parent, child) = parent_of_one_child(&registry, spec("parent"));
    let child = child.await.expect("the child's pid");
    let parent_down = registry.monitor(parent);
    assert!(registry.kill(child));
    assert_eq!(
        parent_down.await.reason,
        ExitReason::Exit(format!("linked {child} exited: killed"))
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_down_not_yet_taken_counts_in_the_watchers_queue() {
    let registry = ProcessRegistry::new();
    let (target_pid, target) = oneshot::channel();
    let (take, taken) = oneshot::channel::<()>();
    let (done, finished) = oneshot::channel();
    let inner = registry.clone();
    let watcher = registry.spawn(spec("watcher"), move |ctx| async move {
        ctx.set_message_queue_len(2);
        let monitor = inner.monitor(inner.spawn(spec("target"), busy));
        let _ = target_pid.send(monitor.pid());
        let _ = taken.await;
        let _ = done.send(monitor.await);
        std::future::pending::<()>().await;
    });
    let target = target.await.expect("the target's pid");
    assert_eq!(registry.info(watcher).expect("alive").message_queue_len, 2);
    assert_eq!(
        registry.info(watcher).expect("alive").monitors,
        vec![target]
    );
    let ended = registry.monitor(target);
    registry.kill(target);
    ended.await;
    // Sent, not yet taken: one more in its inbox.
    assert_eq!(registry.info(watcher).expect("alive").message_queue_len, 3);
    take.send(()).expect("the watcher waits");
    assert_eq!(finished.await.expect("taken").reason, ExitReason::Killed);
    assert_eq!(registry.info(watcher).expect("alive").message_queue_len, 2);
    assert!(registry.info(watcher).expect("alive").monitors.is_empty());
    registry.kill(watcher);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    miri,
    ignore = "real-time windows and a rate per second: under Miri's slowness they measure nothing"
)]
async fn each_limit_ends_a_trace() {
    let registry = ProcessRegistry::new();
    let first = registry.spawn(spec("worker"), busy);
    let second = registry.spawn(spec("worker"), busy);
    let limits = |calls, ms, per_second| TraceLimits {
        calls,
        window: Duration::from_millis(ms),
        per_second,
    };
    // Calls, over every process of the name (enough of them that the first
    // worker, attached first, cannot spend them all before the second is
    // attached: 200 once could).
    let report = registry
        .trace_with(
            TraceTarget::Name("worker".into()),
            limits(20_000, 10_000, None),
        )
        .await
        .expect("a name trace always runs");
    assert_eq!(report.ended, TraceEnd::Calls);
    assert_eq!(report.events.len(), 20_000);
    assert!(report.events.iter().any(|e| e.pid == first));
    assert!(report.events.iter().any(|e| e.pid == second));
    // Rate.
    let report = registry
        .trace_with(TraceTarget::Pid(first), limits(100_000, 10_000, Some(5)))
        .await
        .expect("alive");
    assert_eq!(report.ended, TraceEnd::Rate);
    assert!(report.events.len() <= 5);
    // Time: a name nobody has.
    let report = registry
        .trace_with(TraceTarget::Name("nobody".into()), limits(10, 50, None))
        .await
        .expect("a name trace always runs");
    assert_eq!(report.ended, TraceEnd::Time);
    assert!(report.events.is_empty());
    // Exit.
    let killer = registry.clone();
    let trace = tokio::spawn(async move {
        killer
            .trace_with(TraceTarget::Pid(second), limits(100_000, 10_000, None))
            .await
    });
    while registry.traces_running() == 0 {
        tokio::task::yield_now().await;
    }
    registry.kill(second);
    let report = trace.await.expect("joins").expect("was alive");
    assert_eq!(report.ended, TraceEnd::Exit);
    // Dropping a trace ends it.
    let dropped = registry.clone();
    let trace = tokio::spawn(async move {
        dropped
            .trace_with(
                TraceTarget::Name("worker".into()),
                limits(100_000, 600_000, None),
            )
            .await
    });
    while registry.traces_running() == 0 {
        tokio::task::yield_now().await;
    }
    trace.abort();
    let _ = trace.await;
    assert_eq!(registry.traces_running(), 0);
    registry.kill(first);
}

#[tokio::test(flavor = "current_thread")]
async fn a_name_trace_follows_processes_started_while_it_runs_and_their_returns() {
    let registry = ProcessRegistry::new();
    let tracer = registry.clone();
    let trace = tokio::spawn(async move {
        tracer
            .trace_with(
                TraceTarget::Name("adder".into()),
                TraceLimits {
                    calls: 2,
                    window: Duration::from_secs(10),
                    per_second: None,
                },
            )
            .await
    });
    while registry.traces_running() == 0 {
        tokio::task::yield_now().await;
    }
    let adder = registry.spawn(spec("adder"), |ctx| async move {
        ctx.enter(&"Test.add/2");
        ctx.returned(&"Test.add(2, 3)", &5);
    });
    let report = trace.await.expect("joins").expect("runs");
    assert_eq!(report.ended, TraceEnd::Calls);
    assert_eq!(report.events[0].pid, adder);
    assert_eq!(report.events[0].call, "Test.add/2");
    assert_eq!(report.events[0].result, None);
    assert_eq!(report.events[1].call, "Test.add(2, 3)");
    assert_eq!(report.events[1].result.as_deref(), Some("5"));
}
