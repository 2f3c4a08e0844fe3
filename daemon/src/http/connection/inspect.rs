//! The requests that look at one process for a while: `info` (its info,
//! stack and a one-second trace), `trace` (a trace with limits) and
//! `profile` (native samples for a second, at most two node-wide). Each
//! answers with one reply; the connection queues them.
//!
//! It only reads the registry; it never kills or changes a process.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::reply::{FunctionSamples, ProcessInfo, Reply, TraceEvent};
use crate::node::Node;
use system_runtime::{Pid, TraceLimits, TraceTarget};

pub(super) async fn info(node: Arc<Node>, pid: Pid) -> Reply {
    let info = node.registry.info(pid);
    let mut stacktrace = node.registry.stacktrace(pid).unwrap_or_default();
    let trace = node
        .registry
        .trace(pid, 50, Duration::from_secs(1))
        .await
        .unwrap_or_default();
    // A system process's arguments are not a page's business: a console
    // session's name who opened it (uid and pid), a connection its peer.
    let private = node
        .registry
        .spec(pid)
        .is_some_and(|spec| !spec.killable_from_web);
    let info = info.map(|info| {
        let mut initial_call = info.initial_call;
        if private {
            let call = without_arguments(&initial_call);
            for frame in &mut stacktrace {
                if *frame == initial_call {
                    frame.clone_from(&call);
                }
            }
            initial_call = call;
        }
        Box::new(ProcessInfo {
            pid: info.pid,
            name: info.name,
            initial_call,
            status: info.status.as_str(),
            priority: info.priority.as_str(),
            reductions: info.reductions,
            cpu_time_us: info.cpu_time_us,
            memory: info.memory,
            allocated: info.allocated,
            memory_limit: info.memory_limit,
            current_function: info.current_function,
            parent: info.parent.map(|pid| pid.to_string()),
            links: pids(&info.links),
            monitors: pids(&info.monitors),
            monitored_by: pids(&info.monitored_by),
            message_queue_len: info.message_queue_len,
            spawned_at_ms: info.spawned_at_ms,
            plugin_version: info.code_version,
        })
    });
    Reply::Info {
        pid: pid.to_string(),
        info,
        stacktrace,
        trace,
    }
}

fn pids(pids: &[Pid]) -> Vec<String> {
    pids.iter().map(Pid::to_string).collect()
}

/// The `trace` reply: the calls `pid` makes (with their arguments, and
/// return values where its code reports them) until 50 calls or one second,
/// or its end. A system process's calls are host function names only.
pub(super) async fn trace(node: Arc<Node>, pid: Pid) -> Reply {
    let report = node
        .registry
        .trace_with(TraceTarget::Pid(pid), TraceLimits::default())
        .await;
    let Some(report) = report else {
        return Reply::Trace {
            pid: pid.to_string(),
            events: Vec::new(),
            ended: "exit",
        };
    };
    let events = report
        .events
        .into_iter()
        .map(|event| TraceEvent {
            pid: event.pid.to_string(),
            call: event.call,
            result: event.result,
            at_ms: event.at.as_millis() as u64,
        })
        .collect();
    Reply::Trace {
        pid: pid.to_string(),
        events,
        ended: report.ended.as_str(),
    }
}

/// `Admin.Session.init("uid 0 pid 42")` as `Admin.Session.init(…)`.
fn without_arguments(call: &str) -> String {
    match call.split_once('(') {
        Some((function, _)) => format!("{function}(…)"),
        None => call.to_owned(),
    }
}

/// Profiles pages may run at once, node-wide: each holds a thread of the
/// blocking pool for its window and signals a scheduler ~1,000 times a
/// second.
const MAX_WEB_PROFILES: usize = 2;
static WEB_PROFILES: AtomicUsize = AtomicUsize::new(0);

/// One of the [`MAX_WEB_PROFILES`] profiles that may run; given back on drop.
struct ProfileSlot;

impl ProfileSlot {
    fn take() -> Option<ProfileSlot> {
        WEB_PROFILES
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < MAX_WEB_PROFILES).then_some(n + 1)
            })
            .ok()
            .map(|_| ProfileSlot)
    }
}

impl Drop for ProfileSlot {
    fn drop(&mut self) {
        WEB_PROFILES.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How long a page's profile samples.
const WEB_PROFILE_WINDOW: Duration = Duration::from_secs(1);

/// The `profile` reply: where `pid` spent its time on a scheduler over
/// [`WEB_PROFILE_WINDOW`] (native samples, the innermost function of each),
/// the ten hottest functions first. Sampling and symbolising run on the
/// blocking pool, never on a scheduler.
pub(super) async fn profile(node: Arc<Node>, pid: Pid) -> Reply {
    let Some(slot) = ProfileSlot::take() else {
        return Reply::error_about(
            pid,
            format!("{MAX_WEB_PROFILES} profiles are running already; ask again in a second"),
        );
    };
    let registry = node.registry.clone();
    // The slot goes with the sampling thread: it is given back when the
    // sampling ends, even if the page went away meanwhile.
    let sampled = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let mut checks = 0u32;
        let (samples, _idle) = system_runtime::stack::profile(pid.0, WEB_PROFILE_WINDOW, || {
            checks += 1;
            !checks.is_multiple_of(64) || registry.is_alive(pid)
        });
        system_runtime::symbols::Report::of(&samples)
    })
    .await;
    let report = sampled.unwrap_or_default();
    let functions = report
        .functions
        .into_iter()
        .take(10)
        .map(|(function, samples)| FunctionSamples { function, samples })
        .collect();
    Reply::Profile {
        pid: pid.to_string(),
        ms: WEB_PROFILE_WINDOW.as_millis() as u64,
        samples: report.samples,
        functions,
    }
}
