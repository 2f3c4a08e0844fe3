//! Traces with limits over the registry: one pid, or every process of a
//! name (those spawned while the trace runs attached at their spawn).
//!
//! A trace lives as long as its future: dropping it (its caller ended, a
//! console session closed) detaches it from every process it follows and
//! from the spawn hook. Nothing here is on the poll path; a spawn reads
//! one relaxed counter while no name trace runs.

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::entry::{ProcessEntry, Tracing};
use crate::trace::{self, TraceLimits, TraceReport, TraceTarget, Tracer};

use super::ProcessRegistry;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running trace of a name, as the spawn hook sees it.
pub(super) struct NameTrace {
    id: u64,
    name: String,
    tracer: Tracer,
    attached: Arc<Mutex<Attached>>,
}

/// The processes a name trace follows, each once.
struct Attached {
    pids: HashSet<u64>,
    tracings: Vec<Tracing>,
    /// At this many tracings, those of ended processes are dropped: a name
    /// trace over processes that come and go (load workers restarted a
    /// million times a second) must not hold every one it ever attached
    /// to until its window ends.
    prune_at: usize,
}

/// The first [`Attached::prune_at`]; it then doubles past what is live.
const PRUNE_FIRST: usize = 1024;

impl Default for Attached {
    fn default() -> Attached {
        Attached {
            pids: HashSet::new(),
            tracings: Vec::new(),
            prune_at: PRUNE_FIRST,
        }
    }
}

impl Attached {
    fn attach(&mut self, entry: &Arc<ProcessEntry>, tracer: &Tracer) {
        if self.tracings.len() >= self.prune_at {
            // Amortised: a pass every time the live ones double.
            self.tracings.retain(|tracing| !tracing.ended());
            self.pids = self.tracings.iter().map(Tracing::pid).collect();
            self.prune_at = (self.tracings.len() * 2).max(PRUNE_FIRST);
        }
        if self.pids.insert(entry.pid.0) {
            self.tracings.push(entry.trace(tracer.clone()));
        }
    }
}

/// Counts a running trace; removes a name trace's hook on drop (then its
/// `Attached` drops, detaching it from every process).
struct Running<'a> {
    registry: &'a ProcessRegistry,
    hook: Option<u64>,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.hook {
            let mut hooks = lock(&self.registry.name_traces);
            hooks.retain(|hook| hook.id != id);
            self.registry.name_trace_hint.store(hooks.len(), Relaxed);
        }
        self.registry.traces_running.fetch_sub(1, Relaxed);
    }
}

static NEXT_HOOK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl ProcessRegistry {
    /// Traces `target` until one of `limits` (bounded by
    /// [`trace::MAX_CALLS`] and [`trace::MAX_WINDOW`]) is reached or, for a
    /// pid, the process ends. `None` if the pid is not alive. Dropping the
    /// future ends the trace.
    pub async fn trace_with(
        self: &Arc<Self>,
        target: TraceTarget,
        limits: TraceLimits,
    ) -> Option<TraceReport> {
        let limits = limits.bounded();
        let (tracer, events) = trace::channel(&limits);
        self.traces_running.fetch_add(1, Relaxed);
        let mut running = Running {
            registry: self,
            hook: None,
        };
        match target {
            TraceTarget::Pid(pid) => {
                let Some(entry) = self.lookup(pid) else {
                    drop(running);
                    return None;
                };
                let _tracing = entry.trace(tracer);
                let exit = self.monitor(pid);
                drop(entry);
                let report = trace::collect(events, limits, async move {
                    exit.await;
                })
                .await;
                drop(running);
                Some(report)
            }
            TraceTarget::Name(name) => {
                let attached = Arc::new(Mutex::new(Attached::default()));
                let id = NEXT_HOOK.fetch_add(1, Relaxed);
                {
                    let mut hooks = lock(&self.name_traces);
                    hooks.push(NameTrace {
                        id,
                        name: name.clone(),
                        tracer: tracer.clone(),
                        attached: attached.clone(),
                    });
                    self.name_trace_hint.store(hooks.len(), Relaxed);
                }
                running.hook = Some(id);
                // Those alive now (a spawn racing this is attached by its
                // hook or here, once either way).
                for entry in self.table.iter() {
                    if entry.spec.name == name.as_str() {
                        lock(&attached).attach(entry.value(), &tracer);
                    }
                }
                drop(tracer);
                let report = trace::collect(events, limits, std::future::pending()).await;
                // The hook first (no new process attached), then every tracing.
                drop(running);
                drop(attached);
                Some(report)
            }
        }
    }

    /// Traces running now (each `trace_with` not yet ended).
    pub fn traces_running(&self) -> usize {
        self.traces_running.load(Relaxed)
    }

    /// A new process: attached to every name trace of its name.
    pub(super) fn attach_name_traces(&self, entry: &Arc<ProcessEntry>) {
        let hooks = lock(&self.name_traces);
        for hook in hooks.iter().filter(|hook| hook.name == entry.spec.name) {
            lock(&hook.attached).attach(entry, &hook.tracer);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::time::Duration;

    use crate::{ProcessRegistry, Spec, TraceLimits, TraceTarget};

    /// A name trace over processes that come and go holds the live ones,
    /// not every one it ever attached to (each held its ended entry until
    /// the trace's window ended: a million restarts a second, for ten
    /// minutes, from one console line).
    #[tokio::test(flavor = "current_thread")]
    async fn a_name_trace_lets_go_of_ended_processes() {
        let registry = ProcessRegistry::new();
        let tracing = {
            let registry = registry.clone();
            tokio::spawn(async move {
                let limits = TraceLimits {
                    calls: 10,
                    window: Duration::from_secs(60),
                    per_second: None,
                };
                registry
                    .trace_with(TraceTarget::Name("churn".into()), limits)
                    .await
            })
        };
        while registry.traces_running() == 0 {
            tokio::task::yield_now().await;
        }
        // Under Miri (slow spawns), still past two prunes.
        let (churn, most) = if cfg!(miri) {
            (2_500, 1_800)
        } else {
            (10_000, 3_000)
        };
        for _ in 0..churn {
            let monitor =
                registry.spawn_monitor(Spec::new("churn", "Churn.run()"), |_ctx| async {});
            monitor.await;
        }
        let attached = crate::entry::attachments();
        tracing.abort();
        assert!(attached < most, "{attached} processes still attached");
    }
}
