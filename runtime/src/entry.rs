//! One process's entry in the registry: identity, counters and the places
//! where other processes can observe it (current function, monitors, tracers).
//!
//! Nothing here is written on every poll (that is the task's `Activity`);
//! nothing here may block or allocate per poll.
//!
//! # Protocol
//!
//! | field | writers | readers | ordering |
//! |---|---|---|---|
//! | `pid`, `spec` (its `spawned_by`: the parent), `spawned_at` | `new` only | anyone holding the entry | immutable |
//! | `relations` | created once on first use (`OnceLock`); then see `relations`' table | `info`, the exit, monitors | `OnceLock`'s own synchronisation |
//! | `activity` | the process's task | observers | see `activity`'s table |
//! | `kill` | `ProcessRegistry::kill` (any thread), `start` (arms it once) | the exit guard | see `kill`'s table |
//! | `code_version` | the process, through its context | `info`, `code_users` | `Relaxed` both sides (a label guarding nothing) |
//! | `frame` | the process (`enter_frame`, `enter`) | `stacktrace`, `info` | its mutex |
//! | `monitors` | `add_monitor` (any thread); `take_monitors` (the exit guard, once, leaving `None`) | `info` (`monitored_by`) | its mutex: a monitor added after the take is refused, so none is lost |
//! | `tracers` | `trace` and its guard's drop, each under the lock | the process's `enter`/`enter_frame` (sends under the lock) | its mutex |
//! | `traces` (hint) | `trace` / its guard, under `tracers`' lock | the process's `enter`, without the lock | `Relaxed` both sides |
//! | `TRACES` (global hint) | `trace` / its guard | every `enter` | `Relaxed` both sides |
//!
//! **Trace on/off.** A trace starts when its tracer is in `tracers`; the
//! counts are hints that let `enter` skip the lock while no trace runs: a
//! call made after the process observed the start (ordered after the
//! lock's release) is sent to it; a call racing the start may be missed
//! (a trace runs "from about now"). A trace ends when its guard removes
//! its own tracer, by id, under the lock: after that it gets no call, and
//! no other trace of the same process is touched. loom checks it: model
//! `traces_of_one_process_are_independent`.

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime};

use crate::activity::{Activity, Published, Status};
use crate::current::with_current;
use crate::kill::KillSwitch;
use crate::pid::Pid;
use crate::relations::{Relations, Watch};
use crate::sync::{AtomicU32, AtomicUsize, Mutex, lock};
use crate::trace::{Sent, Tracer};

/// What a process is running in code the runtime does not see (a plugin
/// function and its arguments, say): opaque here, shown as text.
pub type Frame = Box<dyn fmt::Display + Send + Sync>;

/// How a process is scheduled against others (Erlang's priorities).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Priority {
    /// On the runtime's schedulers: polled ahead of every `normal` process
    /// of its scheduler (each turn takes the `high` queue first). As a
    /// tokio task (no schedulers): as `normal`, tokio has one run queue.
    High,
    /// A task on the runtime's schedulers (or a tokio task).
    #[default]
    Normal,
    /// Polled by the runtime's own low-priority runners, a batch at a time,
    /// behind whatever normal work is queued (see `low_priority`).
    Low,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Priority {
    type Err = String;

    fn from_str(text: &str) -> Result<Priority, String> {
        match text {
            "high" => Ok(Priority::High),
            "normal" => Ok(Priority::Normal),
            "low" => Ok(Priority::Low),
            other => Err(format!("not a priority: {other:?} (high, normal or low)")),
        }
    }
}

/// How a process is described when it is spawned.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The kind of process, e.g. `sum`, `load_worker`, `http_listener`.
    pub name: Cow<'static, str>,
    /// The call it was started with, e.g. `Math.sum(13)`.
    pub initial_call: Cow<'static, str>,
    /// Do not log a crash report when it panics (its supervisor counts them).
    pub quiet: bool,
    /// A web page may kill it (user work: sums, load workers). Everything
    /// else is a system process only the console may kill.
    pub killable_from_web: bool,
    pub priority: Priority,
    /// A process linked to it that ends does not end it: it only loses
    /// the link (Erlang's `trap_exit`; it learns of the end by a monitor).
    pub trap_exits: bool,
    /// Its parent: the spawn sets it to the process whose poll spawns it;
    /// given (`Spec::spawned_by`), it names the parent of a process spawned
    /// outside any poll on a process's behalf (by a task that process
    /// started). `Process.info`'s `parent`.
    pub spawned_by: Option<Pid>,
    /// The most bytes it may hold (Erlang's `max_heap_size`); 0: no limit.
    /// One over it is killed at the end of the poll that crossed it, with
    /// [`ExitReason::MemoryLimit`](crate::ExitReason::MemoryLimit).
    pub memory_limit: u64,
}

impl Spec {
    pub fn new(
        name: impl Into<Cow<'static, str>>,
        initial_call: impl Into<Cow<'static, str>>,
    ) -> Spec {
        Spec {
            name: name.into(),
            initial_call: initial_call.into(),
            quiet: false,
            killable_from_web: false,
            priority: Priority::Normal,
            trap_exits: false,
            spawned_by: None,
            memory_limit: 0,
        }
    }

    /// Names `pid` as its parent if it is spawned outside any process's
    /// poll (see [`Spec::spawned_by`]).
    pub fn spawned_by(mut self, pid: Pid) -> Spec {
        self.spawned_by = Some(pid);
        self
    }

    /// Survives the end of the processes linked to it (see [`Spec::trap_exits`]).
    pub fn trap_exits(mut self) -> Spec {
        self.trap_exits = true;
        self
    }

    /// Sets the most bytes it may hold (0: no limit).
    pub fn memory_limit(mut self, bytes: u64) -> Spec {
        self.memory_limit = bytes;
        self
    }

    /// Sets how it is scheduled (normal by default).
    pub fn priority(mut self, priority: Priority) -> Spec {
        self.priority = priority;
        self
    }

    pub fn quiet(mut self) -> Spec {
        self.quiet = true;
        self
    }

    /// Marks it as user work that a web page may kill.
    pub fn killable_from_web(mut self) -> Spec {
        self.killable_from_web = true;
        self
    }
}

/// A snapshot of one process, as `Process.info` returns it.
#[derive(Clone, Debug)]
pub struct ProcessInfo {
    pub pid: String,
    pub name: String,
    pub initial_call: String,
    pub status: Status,
    pub priority: Priority,
    pub reductions: u64,
    pub cpu_time_us: u64,
    /// Bytes it holds now (see the runtime's `memory` model).
    pub memory: u64,
    /// Bytes charged to it since it started.
    pub allocated: u64,
    /// Its limit (0: none).
    pub memory_limit: u64,
    pub current_function: String,
    /// The process that spawned it (none for one started outside any process).
    pub parent: Option<Pid>,
    /// The processes linked to it: when one of two linked processes ends,
    /// the other ends too unless it traps exits.
    pub links: Vec<Pid>,
    /// The processes it monitors.
    pub monitors: Vec<Pid>,
    /// The processes that monitor it (monitors held outside any process,
    /// e.g. by the console, are not listed).
    pub monitored_by: Vec<Pid>,
    /// DOWNs sent to it and not yet taken, plus what its host reports as
    /// waiting in its inbox (0 for a process with none).
    pub message_queue_len: usize,
    pub spawned_at_ms: u64,
    /// The host's code version the process runs (see
    /// [`ProcessContext::set_code_version`](crate::ProcessContext::set_code_version)).
    pub code_version: Option<u32>,
}

/// What the registry keeps of a live process. The counters a poll writes
/// are not here but in the task (see `activity`); a poll touches no entry.
pub(crate) struct ProcessEntry {
    pub(crate) pid: Pid,
    pub(crate) spec: Spec,
    spawned_at: SystemTime,
    pub(crate) activity: Published,
    pub(crate) kill: KillSwitch,
    code_version: AtomicU32,
    /// The foreign frame it is in, for processes that run code the runtime
    /// does not see (allocated at the first one).
    frame: OnceLock<Box<Mutex<Option<Frame>>>>,
    /// `None` once the process has ended: no monitor can be added after that.
    monitors: Mutex<Option<Vec<Watch>>>,
    /// Links, monitors it holds, its inbox gauge (allocated on first use).
    relations: OnceLock<Arc<Relations>>,
    /// How many traces of this process run (see the protocol).
    traces: AtomicUsize,
    tracers: Mutex<Tracers>,
}

/// The traces of one process, each with its own id.
#[derive(Default)]
struct Tracers {
    next_id: u64,
    running: Vec<(u64, Tracer)>,
}

// Live traces in the whole registry: while zero, `enter` need not look at
// any entry's tracers.
#[cfg(not(loom))]
static TRACES: AtomicUsize = AtomicUsize::new(0);
#[cfg(loom)]
loom::lazy_static! {
    static ref TRACES: AtomicUsize = AtomicUsize::new(0);
}

impl ProcessEntry {
    pub(crate) fn new(pid: Pid, spec: Spec) -> ProcessEntry {
        ProcessEntry {
            pid,
            spec,
            spawned_at: SystemTime::now(),
            activity: Published::default(),
            kill: KillSwitch::new(),
            code_version: AtomicU32::new(0),
            frame: OnceLock::new(),
            monitors: Mutex::new(Some(Vec::new())),
            relations: OnceLock::new(),
            traces: AtomicUsize::new(0),
            tracers: Mutex::new(Tracers::default()),
        }
    }

    pub(crate) fn reductions(&self) -> u64 {
        self.activity.read().reductions
    }

    /// Bytes it holds now.
    pub(crate) fn memory(&self) -> u64 {
        self.activity.read().memory()
    }

    pub(crate) fn set_code_version(&self, id: u32) {
        self.code_version.store(id, Relaxed);
    }

    pub(crate) fn code_version(&self) -> Option<u32> {
        Some(self.code_version.load(Relaxed)).filter(|id| *id != 0)
    }

    /// Records that the process entered a host function (and left any
    /// foreign frame). Only effective inside the process's own poll.
    #[inline]
    pub(crate) fn enter(&self, location: &'static &'static str) {
        let left_frame = with_current(self.identity(), |activity| activity.enter(location));
        if left_frame == Some(true)
            && let Some(frame) = self.frame.get()
        {
            *lock(frame) = None;
        }
        if self.traced() {
            self.trace_call(|| (*location).to_owned(), None);
        }
    }

    /// Records that the process is inside foreign code, in `frame`.
    pub(crate) fn enter_frame(&self, frame: Frame) {
        with_current(self.identity(), Activity::enter_frame);
        if self.traced() {
            self.trace_call(|| frame.to_string(), None);
        }
        let slot = self.frame.get_or_init(|| Box::new(Mutex::new(None)));
        *lock(slot) = Some(frame);
    }

    /// Who this process is for `current::with_current`.
    #[inline]
    pub(crate) fn identity(&self) -> crate::current::Identity {
        std::ptr::from_ref(self).cast()
    }

    /// True while a trace of this process runs; reads no entry while no
    /// trace runs anywhere.
    #[inline]
    fn traced(&self) -> bool {
        TRACES.load(Relaxed) != 0 && self.traces.load(Relaxed) != 0
    }

    /// Records that the process returned `result` from `call`, for its
    /// traces (formatted only while one runs).
    pub(crate) fn returned(&self, call: &dyn fmt::Display, result: &dyn fmt::Display) {
        if self.traced() {
            self.trace_call(|| call.to_string(), Some(result.to_string()));
        }
    }

    fn trace_call(&self, call: impl FnOnce() -> String, result: Option<String>) {
        let tracers = lock(&self.tracers);
        if let Some(((_, last), others)) = tracers.running.split_last() {
            let sent = Sent {
                pid: self.pid,
                call: call(),
                result,
                at: Instant::now(),
            };
            for (_, tracer) in others {
                let _ = tracer.try_send(Sent {
                    call: sent.call.clone(),
                    result: sent.result.clone(),
                    ..sent
                });
            }
            let _ = last.try_send(sent);
        }
    }

    /// Sends every call to `tracer` until the returned guard drops; other
    /// traces of the process, before or after, run on independently.
    pub(crate) fn trace(self: &Arc<Self>, tracer: Tracer) -> Tracing {
        let mut tracers = lock(&self.tracers);
        let id = tracers.next_id;
        tracers.next_id += 1;
        tracers.running.push((id, tracer));
        self.traces.store(tracers.running.len(), Relaxed);
        TRACES.fetch_add(1, Relaxed);
        Tracing {
            entry: self.clone(),
            id,
        }
    }

    /// How many traces of this process run now.
    #[cfg(test)]
    pub(crate) fn trace_count(&self) -> usize {
        lock(&self.tracers).running.len()
    }

    /// The innermost function first, the initial call last.
    pub(crate) fn stacktrace(&self) -> Vec<String> {
        self.stacktrace_at(self.activity.read().location)
    }

    fn stacktrace_at(&self, location: Option<&'static str>) -> Vec<String> {
        let mut frames = Vec::with_capacity(3);
        if let Some(frame) = self
            .frame
            .get()
            .and_then(|slot| lock(slot).as_ref().map(ToString::to_string))
        {
            frames.push(frame);
        }
        if let Some(location) = location {
            frames.push(location.to_owned());
        }
        frames.push(self.spec.initial_call.to_string());
        frames
    }

    /// Adds a monitor; gives it back if the process has already ended.
    pub(crate) fn add_monitor(&self, monitor: Watch) -> Result<(), Watch> {
        match lock(&self.monitors).as_mut() {
            Some(monitors) => {
                monitors.push(monitor);
                Ok(())
            }
            None => Err(monitor),
        }
    }

    /// Takes the monitors, closing the list for good.
    pub(crate) fn take_monitors(&self) -> Vec<Watch> {
        lock(&self.monitors).take().unwrap_or_default()
    }

    /// Its links, monitors and inbox gauge, allocated on first use.
    pub(crate) fn relations(&self) -> &Arc<Relations> {
        self.relations.get_or_init(Arc::default)
    }

    /// Its relations if it ever had any.
    pub(crate) fn relations_if_any(&self) -> Option<&Arc<Relations>> {
        self.relations.get()
    }

    pub(crate) fn info(&self) -> ProcessInfo {
        let activity = self.activity.read();
        ProcessInfo {
            pid: self.pid.to_string(),
            name: self.spec.name.to_string(),
            initial_call: self.spec.initial_call.to_string(),
            status: activity.status,
            priority: self.spec.priority,
            reductions: activity.reductions,
            cpu_time_us: activity.cpu_ns / 1_000,
            memory: activity.memory(),
            allocated: activity.allocated,
            memory_limit: self.spec.memory_limit,
            current_function: self.stacktrace_at(activity.location).swap_remove(0),
            parent: self.spec.spawned_by,
            links: self.relations.get().map(|r| r.links()).unwrap_or_default(),
            monitors: self
                .relations
                .get()
                .map(|r| r.monitoring())
                .unwrap_or_default(),
            monitored_by: self.monitored_by(),
            message_queue_len: self.relations.get().map_or(0, |r| r.queue_len()),
            spawned_at_ms: self
                .spawned_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            code_version: self.code_version(),
        }
    }
}

impl ProcessEntry {
    /// The processes waiting for its DOWN, once each, in pid order.
    fn monitored_by(&self) -> Vec<Pid> {
        let mut pids: Vec<Pid> = lock(&self.monitors)
            .as_ref()
            .map(|watches| watches.iter().filter_map(Watch::waiting_watcher).collect())
            .unwrap_or_default();
        pids.sort_unstable();
        pids.dedup();
        pids
    }
}

/// A trace in progress; dropping it (however the tracer ends) stops it,
/// and only it.
pub(crate) struct Tracing {
    entry: Arc<ProcessEntry>,
    id: u64,
}

/// Processes attached to a trace now, node-wide (the `TRACES` hint).
#[cfg(all(test, not(loom)))]
pub(crate) fn attachments() -> usize {
    TRACES.load(Relaxed)
}

impl Tracing {
    /// The traced process's pid.
    pub(crate) fn pid(&self) -> u64 {
        self.entry.pid.0
    }

    /// True once the process has ended and nothing but this trace holds
    /// its entry (the registry's table and its task let go at its end).
    pub(crate) fn ended(&self) -> bool {
        Arc::strong_count(&self.entry) == 1
    }
}

impl Drop for Tracing {
    fn drop(&mut self) {
        let mut tracers = lock(&self.entry.tracers);
        tracers.running.retain(|(id, _)| *id != self.id);
        self.entry.traces.store(tracers.running.len(), Relaxed);
        TRACES.fetch_sub(1, Relaxed);
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    use std::sync::atomic::Ordering::{Acquire, Release};

    use loom::sync::atomic::AtomicBool;
    use tokio::sync::mpsc;

    use super::*;

    fn wait_for(flag: &AtomicBool) {
        while !flag.load(Acquire) {
            loom::thread::yield_now();
        }
    }

    /// Two traces of one process, one of them starting and ending while the
    /// process makes a call during the other: the other receives the call
    /// exactly once, and nothing is left registered when both end.
    #[test]
    fn traces_of_one_process_are_independent() {
        crate::loom_builder().check(|| {
            let entry = Arc::new(ProcessEntry::new(Pid(100), Spec::new("t", "Test.t()")));
            let (tx_a, mut calls_a) = mpsc::channel(4);
            let (tx_b, mut calls_b) = mpsc::channel(4);
            let a_started = Arc::new(AtomicBool::new(false));
            let a_may_end = Arc::new(AtomicBool::new(false));
            let trace_a = {
                let (entry, started, may_end) =
                    (entry.clone(), a_started.clone(), a_may_end.clone());
                loom::thread::spawn(move || {
                    let tracing = entry.trace(tx_a);
                    started.store(true, Release);
                    wait_for(&may_end);
                    drop(tracing);
                })
            };
            let trace_b = {
                let entry = entry.clone();
                loom::thread::spawn(move || drop(entry.trace(tx_b)))
            };
            // The process: one call once trace A has started.
            wait_for(&a_started);
            entry.enter(&"Test.call/0");
            a_may_end.store(true, Release);
            trace_a.join().expect("trace A");
            trace_b.join().expect("trace B");
            assert_eq!(
                calls_a.try_recv().ok().map(|sent| sent.call).as_deref(),
                Some("Test.call/0")
            );
            assert!(calls_a.try_recv().is_err(), "one call, sent once");
            assert!(calls_b.try_recv().is_err() || calls_b.try_recv().is_err());
            assert_eq!(entry.trace_count(), 0);
            assert_eq!(entry.traces.load(Relaxed), 0);
            assert_eq!(TRACES.load(Relaxed), 0);
        });
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use tokio::sync::mpsc;
    use tokio::sync::mpsc::error::TryRecvError;

    use super::*;

    fn call(received: Result<Sent, TryRecvError>) -> Option<String> {
        received.ok().map(|sent| sent.call)
    }

    #[test]
    fn ending_one_trace_leaves_the_other_running() {
        let entry = Arc::new(ProcessEntry::new(Pid(100), Spec::new("t", "Test.t()")));
        let (tx_a, mut calls_a) = mpsc::channel(4);
        let (tx_b, mut calls_b) = mpsc::channel(4);
        let tracing_a = entry.trace(tx_a);
        let tracing_b = entry.trace(tx_b);
        entry.enter(&"Test.one/0");
        assert_eq!(call(calls_a.try_recv()).as_deref(), Some("Test.one/0"));
        assert_eq!(call(calls_b.try_recv()).as_deref(), Some("Test.one/0"));
        drop(tracing_a);
        entry.enter(&"Test.two/0");
        assert!(matches!(
            calls_a.try_recv(),
            Err(TryRecvError::Disconnected)
        ));
        assert_eq!(call(calls_b.try_recv()).as_deref(), Some("Test.two/0"));
        assert_eq!(entry.trace_count(), 1);
        drop(tracing_b);
        assert_eq!(entry.trace_count(), 0);
        assert_eq!(entry.traces.load(Relaxed), 0);
    }
}
