//! One-for-one supervision: a supervisor process starts its children,
//! monitors them, restarts the one that ended as its [`Restart`] says, and
//! gives up (ending with [`ExitReason::Exit`] `shutdown`, as an OTP
//! supervisor does) when restarts come faster than its intensity allows.
//!
//! While it runs it registers its children with the registry (`supervision`),
//! so the supervision tree shows them.
//!
//! It restarts; it does not decide what a child does or how it shuts down.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio_util::sync::CancellationToken;

use crate::supervision::{ChildList, Policy, Strategy, SupervisedChild};
pub use crate::supervision::{Intensity, Restart};
use crate::{Down, ExitReason, Monitor, ProcessContext, ProcessRegistry, Spec};

type Start = Arc<dyn Fn(ProcessContext) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

fn restarts_after(restart: Restart, reason: &ExitReason) -> bool {
    match restart {
        Restart::Permanent => true,
        Restart::Transient => !matches!(reason, ExitReason::Normal | ExitReason::Shutdown),
        Restart::Temporary => false,
    }
}

/// The reason a supervisor ends with when it gives up.
pub const GAVE_UP: &str = "shutdown";

/// A child the supervisor keeps alive.
#[derive(Clone)]
pub struct Child {
    pub spec: Spec,
    pub restart: Restart,
    start: Start,
}

impl Child {
    pub fn new<F, Fut>(spec: Spec, start: F) -> Child
    where
        F: Fn(ProcessContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Child {
            spec,
            restart: Restart::Permanent,
            start: Arc::new(move |ctx| Box::pin(start(ctx))),
        }
    }

    /// Sets when it is restarted (permanent by default).
    pub fn restart(mut self, restart: Restart) -> Child {
        self.restart = restart;
        self
    }
}

/// Starts a supervisor process for `children`. Children are not restarted
/// once `shutdown` is cancelled; when the supervisor ends, its links end
/// them.
pub fn start(
    registry: &Arc<ProcessRegistry>,
    spec: Spec,
    children: Vec<Child>,
    intensity: Intensity,
    shutdown: CancellationToken,
) -> Monitor {
    let registry_for_body = registry.clone();
    // Its children are linked to it: they end with it (it traps their ends).
    registry.spawn_monitor_ending(spec.trap_exits(), false, move |ctx| {
        supervise(ctx, registry_for_body, children, intensity, shutdown)
    })
}

async fn supervise(
    ctx: ProcessContext,
    registry: Arc<ProcessRegistry>,
    children: Vec<Child>,
    intensity: Intensity,
    shutdown: CancellationToken,
) -> ExitReason {
    ctx.enter(&"supervisor:loop/1");
    let started = Arc::new(ChildList::new(Policy {
        strategy: Strategy::OneForOne,
        intensity: Some(intensity),
    }));
    let _supervising = registry.supervising(ctx.pid(), started.clone());
    let mut running = FuturesUnordered::new();
    for (index, child) in children.iter().enumerate() {
        let monitor = start_child(&registry, child);
        started.set(index, supervised(monitor.pid(), child));
        running.push(tagged(index, monitor));
    }
    let mut restarts: VecDeque<Instant> = VecDeque::new();
    loop {
        if running.is_empty() {
            // Only temporary or transient children, all ended for good.
            return ExitReason::Normal;
        }
        let (index, down) = tokio::select! {
            _ = shutdown.cancelled() => return ExitReason::Normal,
            Some(ended) = running.next() => ended,
        };
        if shutdown.is_cancelled() {
            return ExitReason::Normal;
        }
        let child = &children[index];
        if !restarts_after(child.restart, &down.reason) {
            tracing::info!(
                "supervisor {}: {:?} child {} {} exited ({}); not restarted",
                ctx.pid(),
                child.restart,
                child.spec.name,
                down.pid,
                down.reason
            );
            continue;
        }
        let now = Instant::now();
        restarts.push_back(now);
        while restarts
            .front()
            .is_some_and(|at| now.duration_since(*at) > intensity.within)
        {
            restarts.pop_front();
        }
        if restarts.len() > intensity.max_restarts {
            tracing::error!(
                "supervisor {}: {} restarts within {:?}; giving up",
                ctx.pid(),
                restarts.len(),
                intensity.within
            );
            return ExitReason::Exit(GAVE_UP.to_owned());
        }
        let monitor = start_child(&registry, child);
        tracing::warn!(
            "supervisor {}: child {} {} exited ({}); restarted as {}",
            ctx.pid(),
            child.spec.name,
            down.pid,
            down.reason,
            monitor.pid()
        );
        started.set(index, supervised(monitor.pid(), child));
        running.push(tagged(index, monitor));
    }
}

/// Starts `child` linked to the supervisor (whose poll calls this): when
/// the supervisor ends, however it ends, its children end too.
fn start_child(registry: &Arc<ProcessRegistry>, child: &Child) -> Monitor {
    let start = child.start.clone();
    registry.spawn_link_monitor(child.spec.clone(), move |ctx| start(ctx))
}

fn supervised(pid: crate::Pid, child: &Child) -> SupervisedChild {
    SupervisedChild {
        pid,
        restart: child.restart,
    }
}

async fn tagged(index: usize, monitor: Monitor) -> (usize, Down) {
    (index, monitor.await)
}
