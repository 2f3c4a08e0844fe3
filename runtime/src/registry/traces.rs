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
#[derive(Default)]
struct Attached {
    pids: HashSet<u64>,
    tracings: Vec<Tracing>,
}

impl Attached {
    fn attach(&mut self, entry: &Arc<ProcessEntry>, tracer: &Tracer) {
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
