//! What observers read of the registry: the list and count of processes,
//! walks of the table (a shard's lock at a time), one process's info,
//! stack trace and name, and the per-process figures `top`, `memory` and
//! the code server use.
//!
//! It only reads: nothing here spawns, kills or changes a process.

use super::*;

impl ProcessRegistry {
    /// Every live pid, in ascending order.
    pub fn list(&self) -> Vec<Pid> {
        let mut pids: Vec<Pid> = self.table.iter().map(|entry| Pid(*entry.key())).collect();
        pids.sort_unstable();
        pids
    }

    pub fn count(&self) -> usize {
        self.table.len()
    }

    /// Calls `visit` with every live entry (the whole table: off the
    /// schedulers; `visit` must not touch the table).
    pub(crate) fn for_each_entry(&self, mut visit: impl FnMut(&ProcessEntry)) {
        for entry in self.table.iter() {
            visit(entry.value());
        }
    }

    /// Calls `visit` with the live entries a batch at a time (up to 64), so
    /// a walk can ask for a batch's memory before it reads it (the whole
    /// table: off the schedulers; `visit` must not touch the table).
    pub(crate) fn for_each_batch(&self, mut visit: impl FnMut(&[&ProcessEntry])) {
        const BATCH: usize = 64;
        let mut iter = self.table.iter();
        let mut held = Vec::with_capacity(BATCH);
        loop {
            held.clear();
            held.extend(iter.by_ref().take(BATCH));
            if held.is_empty() {
                return;
            }
            let batch: Vec<&ProcessEntry> = held.iter().map(|entry| &**entry.value()).collect();
            visit(&batch);
        }
    }

    /// `read` of `pid`'s entry while it is alive, without taking a
    /// reference to it (for walks that look up many pids).
    pub(crate) fn with_entry<R>(
        &self,
        pid: Pid,
        read: impl FnOnce(&ProcessEntry) -> R,
    ) -> Option<R> {
        self.table.get(&pid.0).map(|entry| read(entry.value()))
    }

    /// Records that `pid` supervises what `view` lists, until the returned
    /// registration drops (held by the supervisor's own body, so it ends
    /// with it): what `Runtime.tree()` draws.
    pub fn supervising(&self, pid: Pid, view: Arc<dyn Supervises>) -> Supervising {
        self.supervisors.insert(pid, view)
    }

    /// The supervisors registered now, by ascending pid.
    pub(crate) fn supervisors(&self) -> Vec<(Pid, Arc<dyn Supervises>)> {
        self.supervisors.all()
    }

    /// Process sleeps registered on the runtime's timer wheels and not yet
    /// woken; a killed sleeper's stays counted until its slot has passed
    /// (at most `TIMER_SLOTS` ms).
    pub fn pending_timers(&self) -> usize {
        self.timers.pending()
    }

    /// Crash reports since start, logged or suppressed by the burst limit.
    pub fn crash_reports(&self) -> u64 {
        self.crash_reports.load(Relaxed)
    }

    pub fn info(&self, pid: Pid) -> Option<ProcessInfo> {
        self.lookup(pid).map(|entry| entry.info())
    }

    pub fn stacktrace(&self, pid: Pid) -> Option<Vec<String>> {
        self.lookup(pid).map(|entry| entry.stacktrace())
    }

    /// Reductions of every live process, for `Runtime.top()`.
    pub fn reductions(&self) -> Vec<(Pid, u64)> {
        self.table
            .iter()
            .map(|entry| (Pid(*entry.key()), entry.reductions()))
            .collect()
    }

    /// Processes killed for holding more than their memory limit, since start.
    pub fn memory_limit_kills(&self) -> u64 {
        self.memory_limit_kills.load(Relaxed)
    }

    /// What every live process holds now (see the runtime's `memory`
    /// model), with its name and whether it is user work (killable from
    /// the web). Walks the whole table: call it off the schedulers.
    pub fn memory(&self) -> Vec<Holder> {
        self.table
            .iter()
            .map(|entry| Holder {
                pid: entry.pid,
                name: entry.spec.name.clone(),
                user: entry.spec.killable_from_web,
                memory: entry.memory(),
            })
            .collect()
    }

    /// Processes that said which code version they run, with that version.
    pub fn code_users(&self) -> Vec<(Pid, u32)> {
        self.table
            .iter()
            .filter_map(|entry| Some((Pid(*entry.key()), entry.code_version()?)))
            .collect()
    }

    /// The process's name, e.g. `sum`.
    pub fn name(&self, pid: Pid) -> Option<String> {
        self.lookup(pid).map(|entry| entry.spec.name.to_string())
    }

    /// Records the calls `pid` makes for `window` or `max_calls`, whichever
    /// comes first. `None` if it is not alive. (See [`Self::trace_with`].)
    pub async fn trace(
        self: &Arc<Self>,
        pid: Pid,
        max_calls: usize,
        window: Duration,
    ) -> Option<Vec<String>> {
        let limits = crate::TraceLimits {
            calls: max_calls,
            window,
            per_second: None,
        };
        let report = self
            .trace_with(crate::TraceTarget::Pid(pid), limits)
            .await?;
        Some(report.events.into_iter().map(|event| event.call).collect())
    }
}
