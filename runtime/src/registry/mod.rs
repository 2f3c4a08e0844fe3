//! The process registry: spawns processes (on the runtime's own schedulers,
//! or as tokio tasks if the host gave none), keeps one entry per
//! live process, and delivers kills and DOWN messages.
//!
//! The table is sharded (no global lock); the poll path touches no entry,
//! only the task's own memory (see `activity`). Nothing here may await
//! while holding a lock.
//!
//! # Protocol: spawn, kill, exit
//!
//! | state | writers | readers | ordering |
//! |---|---|---|---|
//! | `table` | `start` inserts (before the task exists); the exit guard removes | `kill`, `lookup`, `list`, … | dashmap's shard locks |
//! | an entry's `kill` switch | `kill`/`exit_signal` (any thread) and `start` (arms it with the abort handle, once) | the exit guard | see `kill`'s table: exactly one of kill and arm aborts |
//! | `exit_reasons` | `exit_signal` inserts a reason *before* killing; the exit guard removes it | the exit guard, after `is_killed` | its shard locks; the kill's `AcqRel` RMW and `is_killed`'s `Acquire` load order the insert before the read |
//! | the activity pointer | the task (`Instrumented::poll` publishes, the exit guard retires) | `info`, `reductions`, `stacktrace` | see `activity`'s table |
//! | `name_traces` | a trace of a name (registers, and removes on drop) | `start` (attaches a new process of that name) | its mutex; `name_trace_hint` (`Relaxed`) lets `start` skip it while none runs (see `trace`) |
//!
//! **Links.** A spawn that links (`spawn_link_monitor`) runs inside its
//! parent's poll, so the parent has not ended: it adds the child to the
//! parent's links, then creates the child with the parent in its own,
//! before the child's task exists. The exit of either closes its own list
//! (so nothing links to it after), removes itself from each peer's list,
//! and sends each peer that does not trap exits an exit signal naming it
//! and its reason.
//!
//! A kill may find the pid in the table before its task is spawned: the
//! kill switch then holds the kill until `start` arms it, and `start`
//! aborts the task itself (loom model `kill_races_spawn`; test
//! `a_kill_before_the_first_poll_gives_killed`). The exit guard runs
//! exactly once, however the task ends, and retires the activity before
//! the entry leaves the table.

use std::any::Any;
use std::cell::Cell;
use std::future::Future;
use std::marker::PhantomPinned;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::task::{Context, Poll};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::oneshot;

use crate::activity::Activity;
use crate::burst::Burst;
use crate::current;
use crate::entry::{Priority, ProcessEntry, ProcessInfo, Spec};
use crate::kill::Handle;
use crate::low_priority::LowPriority;
use crate::memory;
use crate::relations::{Relations, Watch, Watcher};
use crate::scheduler::Schedulers;
use crate::supervision::{Supervises, Supervising, Supervisors};
use crate::timer::Timers;
use crate::{Down, ExitReason, Pid, ProcessContext};

/// Shards of the process table. A walk of the whole table (a page of
/// `processes`, `tree`, `top`) holds one shard's read lock at a time, and
/// a spawn or an exit on a scheduler waits for the shard it needs: with a
/// million processes in 1,024 shards a shard holds ~1,000, read in well
/// under a millisecond, where the default (4 × the CPUs) made it hundreds
/// of thousands and a spawn could wait tens of ms (measured in
/// docs/performance.md, issue 26).
const SHARDS: usize = 1024;
mod harness;
mod read;
mod traces;
pub(crate) use self::harness::POLL_FRAME;
use self::harness::{ExitGuard, Instrumented};
use self::traces::NameTrace;

/// Crash reports of processes: at most 500 a second are logged; the host's
/// log says how many it suppressed.
pub static CRASH_REPORTS: Burst = Burst::new("crash reports", crate::burst::DEFAULT_LIMIT);

/// Every live process of the daemon.
pub struct ProcessRegistry {
    next_pid: AtomicU64,
    table: DashMap<u64, Arc<ProcessEntry>>,
    /// Reasons of exit signals other than `kill` and `normal`, by pid, until
    /// the process's exit reads them: rare, so kept here rather than in
    /// every entry.
    exit_reasons: DashMap<u64, Box<str>>,
    /// Name each task `kind #PID<…>` for tokio-console (costs a format per spawn).
    task_names: AtomicBool,
    /// Crash reports since start (processes that panicked, quiet ones
    /// excepted), whether the log's burst limit let them be written or not.
    crash_reports: AtomicU64,
    /// Processes killed for holding more than their memory limit.
    memory_limit_kills: AtomicU64,
    /// The runners of low-priority processes.
    low_priority: LowPriority,
    /// The wheels processes sleep on (`ProcessContext::sleep_until`).
    timers: Arc<Timers>,
    /// The supervisors running now and their views of their children.
    supervisors: Arc<Supervisors>,
    /// Traces of every process of a name: a new process of that name is
    /// attached to them at its spawn.
    name_traces: std::sync::Mutex<Vec<NameTrace>>,
    /// How many name traces run: while 0, a spawn looks at none.
    name_trace_hint: AtomicUsize,
    /// Traces running now (of a pid or a name).
    traces_running: AtomicUsize,
    /// The runtime's own schedulers, once the host gave them
    /// ([`ProcessRegistry::run_on`]); until then processes are tokio tasks
    /// of the current runtime.
    schedulers: std::sync::OnceLock<Arc<Schedulers>>,
}

/// One process and the bytes it holds, from [`ProcessRegistry::memory`].
#[derive(Clone, Debug)]
pub struct Holder {
    pub pid: Pid,
    pub name: std::borrow::Cow<'static, str>,
    /// User work (a web page may kill it): sums, load workers.
    pub user: bool,
    pub memory: u64,
}

/// Resolves to the DOWN message of the monitored process.
pub struct Monitor {
    pid: Pid,
    down: oneshot::Receiver<Down>,
    /// The relations of the process that monitors, if a process does: it
    /// lists the pid among its `monitors` and counts the DOWN in its inbox
    /// until this takes it.
    watcher: Option<Arc<Relations>>,
    /// The DOWN was taken (or never will be): the watcher was told.
    done: bool,
}

impl Future for Monitor {
    type Output = Down;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Down> {
        let pid = self.pid;
        let polled = Pin::new(&mut self.down).poll(cx);
        if let Poll::Ready(down) = &polled
            && !self.done
        {
            self.done = true;
            if let Some(watcher) = &self.watcher {
                watcher.stop_monitoring(pid);
                if down.is_ok() {
                    watcher.down_taken();
                }
            }
        }
        polled.map(|down| {
            // The sender is only dropped unsent if the runtime is going away.
            down.unwrap_or(Down {
                pid,
                reason: ExitReason::Shutdown,
            })
        })
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Some(watcher) = &self.watcher {
            watcher.stop_monitoring(self.pid);
            // A DOWN sent and never taken leaves the inbox with the monitor.
            if self.down.try_recv().is_ok() {
                watcher.down_taken();
            }
        }
    }
}

impl Monitor {
    pub fn pid(&self) -> Pid {
        self.pid
    }
}

impl ProcessRegistry {
    pub fn new() -> Arc<ProcessRegistry> {
        Arc::new(ProcessRegistry {
            // Low pids are the BEAM's own; start where a fresh node's user processes do.
            next_pid: AtomicU64::new(100),
            table: DashMap::with_shard_amount(SHARDS),
            exit_reasons: DashMap::new(),
            task_names: AtomicBool::new(false),
            crash_reports: AtomicU64::new(0),
            memory_limit_kills: AtomicU64::new(0),
            low_priority: LowPriority::default(),
            timers: Timers::new(),
            supervisors: Arc::default(),
            name_traces: std::sync::Mutex::new(Vec::new()),
            name_trace_hint: AtomicUsize::new(0),
            traces_running: AtomicUsize::new(0),
            schedulers: std::sync::OnceLock::new(),
        })
    }

    /// Runs every process spawned from now on on `schedulers` (their
    /// number online can then change while they run). Once: a second call
    /// is refused and gives them back.
    pub fn run_on(&self, schedulers: Arc<Schedulers>) -> Result<(), Arc<Schedulers>> {
        self.schedulers.set(schedulers)
    }

    /// The schedulers processes run on, if the host gave them.
    pub fn schedulers(&self) -> Option<&Arc<Schedulers>> {
        self.schedulers.get()
    }

    /// Names every task spawned from now on after its process, so that
    /// tokio-console's task list reads like `Process.list()`.
    pub fn set_task_names(&self, on: bool) {
        self.task_names.store(on, Relaxed);
    }

    /// Starts `body` as a new process on the current runtime.
    pub fn spawn<F, Fut>(self: &Arc<Self>, spec: Spec, body: F) -> Pid
    where
        F: FnOnce(ProcessContext) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.start(spec, None, false, body)
    }

    /// Starts `body` and monitors it, with no window in which it could end unobserved.
    pub fn spawn_monitor<F, Fut>(self: &Arc<Self>, spec: Spec, body: F) -> Monitor
    where
        F: FnOnce(ProcessContext) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.spawn_monitor_ending(spec, false, body)
    }

    /// Starts `body` linked to the calling process and monitored by it
    /// (Erlang's `spawn_opt(…, [link, monitor])`): if either ends, the
    /// other ends too unless it traps exits ([`Spec::trap_exits`]). Called
    /// outside any process's poll, it links nothing.
    pub fn spawn_link_monitor<F, Fut>(self: &Arc<Self>, spec: Spec, body: F) -> Monitor
    where
        F: FnOnce(ProcessContext) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.spawn_monitor_ending(spec, true, body)
    }

    /// [`spawn_monitor`](Self::spawn_monitor) for a body that ends with its
    /// own reason (a supervisor that gives up). Public bodies return `()`:
    /// one that only panics would otherwise have no output type to infer.
    pub(crate) fn spawn_monitor_ending<F, Fut>(
        self: &Arc<Self>,
        spec: Spec,
        link: bool,
        body: F,
    ) -> Monitor
    where
        F: FnOnce(ProcessContext) -> Fut,
        Fut: Future<Output: Into<ExitReason>> + Send + 'static,
    {
        let (tx, down) = oneshot::channel();
        let (watch, watcher) = self.watch(tx);
        let pid = self.start(spec, Some(watch), link, body);
        if let Some(watcher) = &watcher {
            watcher.start_monitoring(pid);
        }
        Monitor {
            pid,
            down,
            watcher,
            done: false,
        }
    }

    /// A monitor's sending side, with the calling process as its watcher
    /// if a process calls.
    fn watch(&self, down: oneshot::Sender<Down>) -> (Watch, Option<Arc<Relations>>) {
        let watcher = self.caller().map(|entry| Watcher {
            pid: entry.pid,
            relations: entry.relations().clone(),
        });
        let relations = watcher.as_ref().map(|w| w.relations.clone());
        (Watch { watcher, down }, relations)
    }

    /// The process whose poll is calling, if any.
    fn caller(&self) -> Option<Arc<ProcessEntry>> {
        self.lookup(caller_pid()?)
    }

    fn start<F, Fut>(
        self: &Arc<Self>,
        spec: Spec,
        monitor: Option<Watch>,
        link: bool,
        body: F,
    ) -> Pid
    where
        F: FnOnce(ProcessContext) -> Fut,
        Fut: Future<Output: Into<ExitReason>> + Send + 'static,
    {
        // What the spawn allocates (the entry, the task) is the new
        // process's, not the one being polled (see `memory`): it is charged
        // to the new one as its own size.
        let _handed = memory::hand_over();
        let pid = Pid(self.next_pid.fetch_add(1, Relaxed));
        let memory_limit = spec.memory_limit;
        let mut spec = spec;
        spec.spawned_by = caller_pid().or(spec.spawned_by);
        let entry = Arc::new(ProcessEntry::new(pid, spec));
        if let Some(monitor) = monitor {
            let _ = entry.add_monitor(monitor);
        }
        if link
            && let Some(parent) = self.caller()
            && parent.relations().add_link(pid)
        {
            entry.relations().add_link(parent.pid);
        }
        self.table.insert(pid.0, entry.clone());
        if self.name_trace_hint.load(Relaxed) != 0 {
            self.attach_name_traces(&entry);
        }
        let inner = body(ProcessContext {
            entry: entry.clone(),
            timers: self.timers.clone(),
        });
        let own_size = size_of::<Instrumented<Fut>>() + size_of::<ProcessEntry>();
        let task = Instrumented {
            inner,
            activity: Activity::with_allocated(own_size as u64),
            pid: pid.0,
            memory_limit,
            published: false,
            exit: ExitGuard {
                entry: entry.clone(),
                registry: self.clone(),
                reason: None,
            },
            _pinned: PhantomPinned,
        };
        // A spawn from inside another tokio runtime (the host's console)
        // stays a tokio task there, off the schedulers, as before them: a
        // console must answer while every scheduler is held.
        let schedulers = self
            .schedulers
            .get()
            .filter(|schedulers| !schedulers.called_from_another_runtime());
        let handle = if entry.spec.priority == Priority::Low {
            let cancel = match schedulers {
                Some(schedulers) => self.low_priority.spawn(
                    task,
                    // Four runners per scheduler: they spread evenly
                    // over any count online that divides them.
                    || schedulers.max() * 4,
                    |runner| drop(schedulers.spawn(runner, false)),
                ),
                None => self.low_priority.spawn(
                    task,
                    || tokio::runtime::Handle::current().metrics().num_workers(),
                    |runner| drop(tokio::spawn(runner)),
                ),
            };
            Handle::Low(cancel)
        } else if let Some(schedulers) = schedulers {
            Handle::Scheduled(schedulers.spawn(task, entry.spec.priority == Priority::High))
        } else if self.task_names.load(Relaxed) {
            let name = format!("{} {pid}", entry.spec.name);
            match tokio::task::Builder::new().name(&name).spawn(task) {
                Ok(handle) => Handle::Task(handle.abort_handle()),
                // The runtime is shutting down; the task was dropped and has exited.
                Err(_) => return pid,
            }
        } else {
            Handle::Task(tokio::spawn(task).abort_handle())
        };
        // A kill that came before this found nothing to abort: arming
        // delivers it (see `kill`: exactly one of the two aborts).
        entry.kill.arm(handle);
        pid
    }

    /// Monitors `pid`: the result resolves once, with its exit reason
    /// (`noproc` at once if no such process is alive).
    pub fn monitor(&self, pid: Pid) -> Monitor {
        let (tx, down) = oneshot::channel();
        let (watch, watcher) = self.watch(tx);
        if let Some(watcher) = &watcher {
            watcher.start_monitoring(pid);
        }
        let refused = match self.lookup(pid) {
            Some(entry) => entry.add_monitor(watch).err(),
            None => Some(watch),
        };
        if let Some(watch) = refused {
            watch.deliver(Down {
                pid,
                reason: ExitReason::NoProc,
            });
        }
        Monitor {
            pid,
            down,
            watcher,
            done: false,
        }
    }

    /// Kills `pid` unconditionally; it ends at its next yield. True if it was alive.
    pub fn kill(&self, pid: Pid) -> bool {
        let Some(entry) = self.lookup(pid) else {
            return false;
        };
        entry.kill.kill()
    }

    /// Sends `pid` an exit signal, as Erlang's `exit(Pid, Reason)` does to a
    /// process that does not trap exits: `kill` kills it unconditionally (its
    /// monitors get `killed`); `normal` leaves it alone; any other reason
    /// ends it at its next yield and its monitors get
    /// [`ExitReason::Exit`] with that reason. True if it was alive (and, but
    /// for `normal`, not already being killed).
    pub fn exit_signal(&self, pid: Pid, reason: &str) -> bool {
        match reason {
            "kill" => self.kill(pid),
            "normal" => self.is_alive(pid),
            reason => {
                let Some(entry) = self.lookup(pid) else {
                    return false;
                };
                // Before the kill: whoever sees the kill sees its reason. If
                // another signal got there first, the process dies of either
                // (as with two concurrent exit signals in Erlang).
                self.exit_reasons
                    .entry(pid.0)
                    .or_insert_with(|| reason.into());
                let delivered = entry.kill.kill();
                if !self.is_alive(pid) {
                    // It had ended already (its exit decided its reason
                    // before leaving the table): nobody will read this one.
                    self.exit_reasons.remove(&pid.0);
                }
                delivered
            }
        }
    }

    /// The spec `pid` was started with, while it is alive.
    pub fn spec(&self, pid: Pid) -> Option<Spec> {
        self.lookup(pid).map(|entry| entry.spec.clone())
    }

    pub(crate) fn lookup(&self, pid: Pid) -> Option<Arc<ProcessEntry>> {
        self.table.get(&pid.0).map(|entry| entry.clone())
    }

    pub fn is_alive(&self, pid: Pid) -> bool {
        self.table.contains_key(&pid.0)
    }

    fn exit(&self, entry: &ProcessEntry, reason: ExitReason) {
        entry.activity.retire();
        self.table.remove(&entry.pid.0);
        let at = PANIC_AT.take().unwrap_or_default();
        if entry.kill.is_killed() {
            // A reason that came as it ended on its own is not read.
            self.exit_reasons.remove(&entry.pid.0);
        }
        if let ExitReason::Panic(message) = &reason
            && !entry.spec.quiet
        {
            // Relaxed: a counter for /metrics, it guards no other data.
            self.crash_reports.fetch_add(1, Relaxed);
            if CRASH_REPORTS.admit() {
                tracing::error!(
                    "crash report: process {} {} started as {} crashed: {message} {at}",
                    entry.spec.name,
                    entry.pid,
                    entry.spec.initial_call,
                );
            }
        }
        if let ExitReason::MemoryLimit { limit, reached } = &reason {
            // Relaxed: a counter for /metrics, it guards no other data.
            self.memory_limit_kills.fetch_add(1, Relaxed);
            if CRASH_REPORTS.admit() {
                let code = entry
                    .code_version()
                    .map(|id| format!(" on code v{id}"))
                    .unwrap_or_default();
                tracing::error!(
                    "memory limit: process {} {} started as {}{code} held {} over its limit of {} ({reached} > {limit} bytes): killed",
                    entry.spec.name,
                    entry.pid,
                    entry.spec.initial_call,
                    memory::bytes(*reached),
                    memory::bytes(*limit),
                );
            }
        }
        for monitor in entry.take_monitors() {
            monitor.deliver(Down {
                pid: entry.pid,
                reason: reason.clone(),
            });
        }
        if let Some(relations) = entry.relations_if_any() {
            self.end_links(entry.pid, relations.close_links(), &reason);
        }
    }

    /// `pid` ended with `reason`: each linked process loses the link, and
    /// one that does not trap exits is sent an exit signal naming it.
    fn end_links(&self, pid: Pid, links: Vec<Pid>, reason: &ExitReason) {
        for peer in links {
            let Some(peer) = self.lookup(peer) else {
                continue;
            };
            if let Some(relations) = peer.relations_if_any() {
                relations.remove_link(pid);
            }
            if !peer.spec.trap_exits {
                self.exit_signal(peer.pid, &format!("linked {pid} exited: {reason}"));
            }
        }
    }
}

/// The pid of the process whose poll is running on this thread (the
/// caller of a spawn or a monitor, inside its own body), if any.
fn caller_pid() -> Option<Pid> {
    let identity = current::identity()?;
    // SAFETY: a non-null identity is the address of the `ProcessEntry` of
    // the process this thread is polling right now (`Instrumented::poll`
    // sets it from `this.exit.entry`, an `Arc` the task holds for its whole
    // life, and `current::polling`'s guard clears it before that poll
    // returns): the entry is alive for as long as this call, made inside
    // that poll, lasts. Only its immutable `pid` is read.
    Some(unsafe { &*identity.cast::<ProcessEntry>() }.pid)
}

thread_local! {
    /// Where the last panic on this thread happened, for the crash report.
    static PANIC_AT: Cell<Option<String>> = const { Cell::new(None) };
}

/// Keeps panics inside processes out of stderr (the crash report says it
/// all, once); other panics go to the default hook.
pub fn install_panic_hook() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if current::in_process() {
            let at = info
                .location()
                .map(|l| format!("at {}:{}", l.file(), l.line()));
            PANIC_AT.set(at);
        } else {
            default_hook(info);
        }
    }));
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "panic with a non-text payload".to_owned()
    }
}
