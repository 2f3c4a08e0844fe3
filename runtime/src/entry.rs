//! One process's entry in the registry: identity, counters and the places
//! where other processes can observe it (current function, monitors, tracer).
//!
//! Nothing here is written on every poll (that is the task's `Activity`);
//! nothing here may block or allocate per poll.

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use crate::activity::{Activity, Published, with_current};
use crate::low_priority::Cancel;
use crate::{Down, Pid, lock};

/// What a process is doing, as `Process.info` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// Ready to run, waiting for the scheduler (e.g. between two slices).
    Runnable = 0,
    /// Being polled right now.
    Running = 1,
    /// Waiting for an event (a message, a timer, I/O).
    Waiting = 2,
    /// Ended; its entry is being removed.
    Exiting = 3,
}

impl Status {
    /// `runnable`, `running`, `waiting` or `exiting`, as the BEAM says it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Runnable => "runnable",
            Status::Running => "running",
            Status::Waiting => "waiting",
            Status::Exiting => "exiting",
        }
    }

    pub(crate) fn from_u8(value: u8) -> Status {
        match value {
            0 => Status::Runnable,
            1 => Status::Running,
            2 => Status::Waiting,
            _ => Status::Exiting,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a process is running in code the runtime does not see (a plugin
/// function and its arguments, say): opaque here, shown as text.
pub type Frame = Box<dyn fmt::Display + Send + Sync>;

/// How a process is scheduled against others (Erlang's priorities).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Priority {
    /// A tokio task, as `normal`: tokio has one run queue, so `high` cannot
    /// overtake `normal`; both go ahead of every `low` process.
    High,
    /// A tokio task.
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
        }
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
    pub current_function: String,
    pub monitors: usize,
    pub spawned_at_ms: u64,
    /// The host's code version the process runs (see
    /// [`ProcessContext::set_code_version`](crate::ProcessContext::set_code_version)).
    pub code_version: Option<u32>,
}

/// Ends a process at its next yield: its tokio task's abort handle, or its
/// low-priority task's cancel.
pub(crate) enum Abort {
    Task(AbortHandle),
    Low(Cancel),
}

impl Abort {
    pub(crate) fn abort(&self) {
        match self {
            Abort::Task(handle) => handle.abort(),
            Abort::Low(cancel) => cancel.cancel(),
        }
    }
}

/// What the registry keeps of a live process. The counters a poll writes
/// are not here but in the task (see `activity`); a poll touches no entry.
pub(crate) struct ProcessEntry {
    pub(crate) pid: Pid,
    pub(crate) spec: Spec,
    spawned_at: SystemTime,
    pub(crate) activity: Published,
    pub(crate) killed: AtomicBool,
    pub(crate) abort: OnceLock<Abort>,
    code_version: AtomicU32,
    /// The foreign frame it is in, for processes that run code the runtime
    /// does not see (allocated at the first one).
    frame: OnceLock<Box<Mutex<Option<Frame>>>>,
    /// `None` once the process has ended: no monitor can be added after that.
    monitors: Mutex<Option<Vec<oneshot::Sender<Down>>>>,
    tracing: AtomicBool,
    tracer: Mutex<Option<mpsc::Sender<String>>>,
}

/// Live traces in the whole registry: while zero, `enter` need not look at
/// any entry's tracer.
static TRACES: AtomicUsize = AtomicUsize::new(0);

impl ProcessEntry {
    pub(crate) fn new(pid: Pid, spec: Spec) -> ProcessEntry {
        ProcessEntry {
            pid,
            spec,
            spawned_at: SystemTime::now(),
            activity: Published::default(),
            killed: AtomicBool::new(false),
            abort: OnceLock::new(),
            code_version: AtomicU32::new(0),
            frame: OnceLock::new(),
            monitors: Mutex::new(Some(Vec::new())),
            tracing: AtomicBool::new(false),
            tracer: Mutex::new(None),
        }
    }

    pub(crate) fn reductions(&self) -> u64 {
        self.activity.read().reductions
    }

    pub(crate) fn set_code_version(&self, id: u32) {
        self.code_version.store(id, Relaxed);
    }

    pub(crate) fn code_version(&self) -> Option<u32> {
        Some(self.code_version.load(Relaxed)).filter(|id| *id != 0)
    }

    /// Records that the process entered a host function (and left any
    /// foreign frame). Only effective inside the process's own poll.
    pub(crate) fn enter(&self, location: &'static &'static str) {
        let left_frame = with_current(self, |activity| activity.enter(location));
        if left_frame == Some(true)
            && let Some(frame) = self.frame.get()
        {
            *lock(frame) = None;
        }
        if self.traced() {
            self.trace_call(|| (*location).to_owned());
        }
    }

    /// Records that the process is inside foreign code, in `frame`.
    pub(crate) fn enter_frame(&self, frame: Frame) {
        with_current(self, Activity::enter_frame);
        if self.traced() {
            self.trace_call(|| frame.to_string());
        }
        let slot = self.frame.get_or_init(|| Box::new(Mutex::new(None)));
        *lock(slot) = Some(frame);
    }

    /// True while a trace of this process runs; reads no entry while no
    /// trace runs anywhere.
    fn traced(&self) -> bool {
        TRACES.load(Relaxed) != 0 && self.tracing.load(Relaxed)
    }

    fn trace_call(&self, call: impl FnOnce() -> String) {
        if let Some(tracer) = lock(&self.tracer).as_ref() {
            let _ = tracer.try_send(call());
        }
    }

    /// Sends every call to `tracer` until the returned guard drops.
    pub(crate) fn trace(self: &Arc<Self>, tracer: mpsc::Sender<String>) -> Tracing {
        *lock(&self.tracer) = Some(tracer);
        self.tracing.store(true, Relaxed);
        TRACES.fetch_add(1, Relaxed);
        Tracing(self.clone())
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
    pub(crate) fn add_monitor(
        &self,
        monitor: oneshot::Sender<Down>,
    ) -> Result<(), oneshot::Sender<Down>> {
        match lock(&self.monitors).as_mut() {
            Some(monitors) => {
                monitors.push(monitor);
                Ok(())
            }
            None => Err(monitor),
        }
    }

    /// Takes the monitors, closing the list for good.
    pub(crate) fn take_monitors(&self) -> Vec<oneshot::Sender<Down>> {
        lock(&self.monitors).take().unwrap_or_default()
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
            current_function: self.stacktrace_at(activity.location).swap_remove(0),
            monitors: lock(&self.monitors).as_ref().map_or(0, Vec::len),
            spawned_at_ms: self
                .spawned_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            code_version: self.code_version(),
        }
    }
}

/// A trace in progress; dropping it (however the tracer ends) stops it.
pub(crate) struct Tracing(Arc<ProcessEntry>);

impl Drop for Tracing {
    fn drop(&mut self) {
        self.0.tracing.store(false, Relaxed);
        *lock(&self.0.tracer) = None;
        TRACES.fetch_sub(1, Relaxed);
    }
}
