//! One process's entry in the registry: identity, counters and the places
//! where other processes can observe it (current function, monitors, tracer).
//!
//! Everything written on the poll path is an atomic or an uncontended lock;
//! nothing here may block or allocate per poll.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use super::{Down, Pid};

/// What a process is doing, as `Process.info` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
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
    fn from_u8(value: u8) -> Status {
        match value {
            0 => Status::Runnable,
            1 => Status::Running,
            2 => Status::Waiting,
            _ => Status::Exiting,
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
        }
    }

    pub fn quiet(mut self) -> Spec {
        self.quiet = true;
        self
    }
}

/// A snapshot of one process, as `Process.info` returns it.
#[derive(Clone, Debug, Serialize)]
pub struct ProcessInfo {
    pub pid: String,
    pub name: String,
    pub initial_call: String,
    pub status: Status,
    pub reductions: u64,
    pub cpu_time_us: u64,
    pub current_function: String,
    pub monitors: usize,
    pub spawned_at_ms: u64,
    pub plugin_version: Option<u32>,
}

/// Hot fields first, in one cache line with the `Arc`'s counts: a poll
/// touches only this line (`repr(C)` keeps the order).
#[repr(C)]
pub(crate) struct ProcessEntry {
    reductions: AtomicU64,
    cpu_ns: AtomicU64,
    /// The host function the process is in: a pointer to a `'static` label
    /// (null before the first `enter`).
    location: AtomicPtr<&'static str>,
    status: AtomicU8,
    pub(crate) killed: AtomicBool,
    tracing: AtomicBool,
    plugin_version: AtomicU32,
    /// The plugin function it is in, for processes that run plugin code.
    plugin_frame: OnceLock<Box<Mutex<Option<plugin_abi::Frame>>>>,
    // Cold: read by observers, written at spawn and exit.
    pub(crate) pid: Pid,
    pub(crate) spec: Spec,
    spawned_at: SystemTime,
    pub(crate) abort: OnceLock<AbortHandle>,
    /// `None` once the process has ended: no monitor can be added after that.
    monitors: Mutex<Option<Vec<oneshot::Sender<Down>>>>,
    tracer: Mutex<Option<mpsc::Sender<String>>>,
}

/// Locks a mutex whose data stays valid even if a holder panicked.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ProcessEntry {
    pub(crate) fn new(pid: Pid, spec: Spec) -> ProcessEntry {
        ProcessEntry {
            pid,
            spec,
            spawned_at: SystemTime::now(),
            status: AtomicU8::new(Status::Runnable as u8),
            killed: AtomicBool::new(false),
            tracing: AtomicBool::new(false),
            plugin_version: AtomicU32::new(0),
            reductions: AtomicU64::new(0),
            cpu_ns: AtomicU64::new(0),
            location: AtomicPtr::new(std::ptr::null_mut()),
            plugin_frame: OnceLock::new(),
            abort: OnceLock::new(),
            monitors: Mutex::new(Some(Vec::new())),
            tracer: Mutex::new(None),
        }
    }

    pub(crate) fn status(&self) -> Status {
        Status::from_u8(self.status.load(Relaxed))
    }

    pub(crate) fn set_status(&self, status: Status) {
        self.status.store(status as u8, Relaxed);
    }

    // Status, reductions and CPU time are written only by the process's own
    // task (one poll at a time), so plain loads and stores suffice: others
    // only read them. No locked read-modify-write on the poll path.

    /// Running → Waiting, unless the process marked itself runnable.
    pub(crate) fn park(&self) {
        if self.status.load(Relaxed) == Status::Running as u8 {
            self.status.store(Status::Waiting as u8, Relaxed);
        }
    }

    pub(crate) fn account_poll(&self, cpu: Duration) {
        self.add_reductions(1);
        let cpu_ns = self.cpu_ns.load(Relaxed) + cpu.as_nanos() as u64;
        self.cpu_ns.store(cpu_ns, Relaxed);
    }

    pub(crate) fn add_reductions(&self, n: u64) {
        self.reductions
            .store(self.reductions.load(Relaxed) + n, Relaxed);
    }

    pub(crate) fn reductions(&self) -> u64 {
        self.reductions.load(Relaxed)
    }

    pub(crate) fn set_plugin_version(&self, id: u32) {
        self.plugin_version.store(id, Relaxed);
    }

    pub(crate) fn plugin_version(&self) -> Option<u32> {
        Some(self.plugin_version.load(Relaxed)).filter(|id| *id != 0)
    }

    /// Records that the process entered a host function (and left any plugin code).
    pub(crate) fn enter(&self, location: &'static &'static str) {
        // The pointer comes from a `'static` reference; it is only ever read back as one.
        self.location
            .store(std::ptr::from_ref(location).cast_mut(), Relaxed);
        if let Some(frame) = self.plugin_frame.get() {
            *lock(frame) = None;
        }
        if self.tracing.load(Relaxed) {
            self.trace_call(|| (*location).to_owned());
        }
    }

    /// The host function the process is in, if it said.
    fn location(&self) -> Option<&'static str> {
        let location = self.location.load(Relaxed);
        // SAFETY: non-null values are stored only by `enter`, from a
        // `&'static &'static str`, which stays valid forever.
        (!location.is_null()).then(|| unsafe { *location })
    }

    /// Records that the process is inside plugin code, in `frame`.
    pub(crate) fn enter_plugin(&self, frame: plugin_abi::Frame) {
        let slot = self.plugin_frame.get_or_init(|| Box::new(Mutex::new(None)));
        *lock(slot) = Some(frame);
        if self.tracing.load(Relaxed) {
            self.trace_call(|| frame.to_string());
        }
    }

    fn trace_call(&self, call: impl FnOnce() -> String) {
        if let Some(tracer) = lock(&self.tracer).as_ref() {
            let _ = tracer.try_send(call());
        }
    }

    pub(crate) fn start_trace(&self, tracer: mpsc::Sender<String>) {
        *lock(&self.tracer) = Some(tracer);
        self.tracing.store(true, Relaxed);
    }

    pub(crate) fn stop_trace(&self) {
        self.tracing.store(false, Relaxed);
        *lock(&self.tracer) = None;
    }

    /// The innermost function first, the initial call last.
    pub(crate) fn stacktrace(&self) -> Vec<String> {
        let mut frames = Vec::with_capacity(3);
        if let Some(frame) = self.plugin_frame.get().and_then(|slot| *lock(slot)) {
            frames.push(frame.to_string());
        }
        if let Some(location) = self.location() {
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
        ProcessInfo {
            pid: self.pid.to_string(),
            name: self.spec.name.to_string(),
            initial_call: self.spec.initial_call.to_string(),
            status: self.status(),
            reductions: self.reductions(),
            cpu_time_us: self.cpu_ns.load(Relaxed) / 1_000,
            current_function: self.stacktrace().swap_remove(0),
            monitors: lock(&self.monitors).as_ref().map_or(0, Vec::len),
            spawned_at_ms: self
                .spawned_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            plugin_version: self.plugin_version(),
        }
    }
}
