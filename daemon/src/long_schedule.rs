//! The long-schedule monitor (Erlang's `system_monitor` `long_schedule`): a
//! watchdog on its own OS thread reads every scheduler's watch slot (which
//! process it polls, since when) every few milliseconds, and reports any
//! poll that has held a scheduler longer than the threshold — in the log
//! while it still runs and once more with the total when it ends, in
//! `system_long_schedules_total`, in `Runtime.long_schedules()` and on /top.
//!
//! It only observes: it never touches a scheduler, never blocks the poll
//! path (it reads slots, writes none), and cannot stop a stuck poll (nothing
//! can, short of the plugin returning).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::lock;
use crate::log::thousands;
use crate::node::Node;
use crate::process::Pid;
use crate::process::watch;

/// The threshold when `--long-schedule` is not given.
pub const DEFAULT_THRESHOLD: Duration = Duration::from_millis(10);
/// The longest time between two looks at the slots.
pub const PERIOD: Duration = Duration::from_millis(10);
/// While a poll still runs, the log says so again this often.
pub const REMINDER: Duration = Duration::from_secs(10);
/// Events `Runtime.long_schedules()` keeps (the newest).
pub const KEPT: usize = 100;

/// One poll that held a scheduler longer than the threshold.
#[derive(Clone, Debug, Serialize)]
pub struct LongSchedule {
    pub pid: String,
    pub name: String,
    pub initial_call: String,
    /// The function it was in when first seen stuck.
    pub function: String,
    /// The plugin version it runs, e.g. `v2 (1.1.0)`.
    pub plugin: Option<String>,
    /// Which scheduler thread (0-based, in order of first use).
    pub scheduler: usize,
    /// When the poll started, RFC 3339 UTC.
    pub started_at: String,
    /// How long the poll has held the scheduler (so far, while running).
    pub ms: u64,
    pub running: bool,
}

/// The monitor's setting, counter and last events; one per node.
pub struct LongSchedules {
    threshold: Duration,
    total: AtomicU64,
    events: Mutex<VecDeque<LongSchedule>>,
}

impl LongSchedules {
    /// A monitor with `threshold` (zero turns it off).
    pub fn new(threshold: Duration) -> LongSchedules {
        LongSchedules {
            threshold,
            total: AtomicU64::new(0),
            events: Mutex::new(VecDeque::with_capacity(KEPT)),
        }
    }

    pub fn threshold(&self) -> Duration {
        self.threshold
    }

    /// Long schedules seen since the daemon started.
    pub fn total(&self) -> u64 {
        self.total.load(Relaxed)
    }

    /// The last [`KEPT`] events, oldest first.
    pub fn events(&self) -> Vec<LongSchedule> {
        lock(&self.events).iter().cloned().collect()
    }

    /// The polls holding a scheduler right now.
    pub fn running(&self) -> Vec<LongSchedule> {
        lock(&self.events)
            .iter()
            .filter(|event| event.running)
            .cloned()
            .collect()
    }

    fn push(&self, event: LongSchedule) {
        let mut events = lock(&self.events);
        if events.len() == KEPT {
            events.pop_front();
        }
        events.push_back(event);
    }

    /// Updates the newest event of `scheduler` that is still running.
    fn update(&self, scheduler: usize, ms: u64, running: bool) {
        if let Some(event) = lock(&self.events)
            .iter_mut()
            .rev()
            .find(|event| event.scheduler == scheduler && event.running)
        {
            event.ms = ms;
            event.running = running;
        }
    }
}

/// Starts the watchdog thread (unless the threshold is zero); it ends when
/// the node is gone.
pub fn start(node: &Arc<Node>) -> std::io::Result<()> {
    let threshold = node.long_schedules.threshold;
    if threshold.is_zero() {
        return Ok(());
    }
    // A report comes at most one period late; each wake-up costs a few µs.
    let period = threshold.clamp(Duration::from_millis(1), PERIOD);
    let node = Arc::downgrade(node);
    std::thread::Builder::new()
        .name("long-schedule-monitor".to_owned())
        .spawn(move || watch_forever(&node, threshold, period))?;
    Ok(())
}

/// A poll the watchdog has reported and not yet seen end.
struct Open {
    started: u64,
    pid: u64,
    name: String,
    /// The next reminder in the log, in ms held.
    remind_at: u64,
}

fn watch_forever(node: &Weak<Node>, threshold: Duration, period: Duration) {
    let mut open: Vec<Option<Open>> = Vec::new();
    let threshold_ns = threshold.as_nanos() as u64;
    loop {
        std::thread::sleep(period);
        let Some(node) = node.upgrade() else { return };
        let now = crate::process::clock_ticks();
        for (index, slot) in watch::schedulers() {
            if open.len() <= index {
                open.resize_with(index + 1, || None);
            }
            if let Some(stuck) = &open[index] {
                match slot.ended_since(stuck.started) {
                    Some(ended) => {
                        let ms = crate::process::ticks_to_nanos(stuck.started, ended) / 1_000_000;
                        tracing::warn!(
                            pid = stuck.pid,
                            ms,
                            "long schedule ended: process {} {} held scheduler {index} for {} ms in one poll",
                            stuck.name,
                            Pid(stuck.pid),
                            thousands(ms)
                        );
                        node.long_schedules.update(index, ms, false);
                        open[index] = None;
                    }
                    None => {
                        let ms = crate::process::ticks_to_nanos(stuck.started, now) / 1_000_000;
                        node.long_schedules.update(index, ms, true);
                        if ms >= stuck.remind_at {
                            tracing::warn!(
                                pid = stuck.pid,
                                ms,
                                "long schedule continues: process {} {} has held scheduler {index} for {} ms",
                                stuck.name,
                                Pid(stuck.pid),
                                thousands(ms)
                            );
                        }
                        if let Some(stuck) = &mut open[index] {
                            while stuck.remind_at <= ms {
                                stuck.remind_at += REMINDER.as_millis() as u64;
                            }
                        }
                        continue;
                    }
                }
            }
            let Some((pid, started)) = slot.polling() else {
                continue;
            };
            let held = crate::process::ticks_to_nanos(started, now);
            if held < threshold_ns {
                continue;
            }
            let event = describe(&node, index, Pid(pid), Duration::from_nanos(held));
            tracing::warn!(
                pid,
                ms = event.ms,
                "long schedule: process {} {} (started as {}) has held scheduler {index} for {} ms without yielding, in {}{}",
                event.name,
                event.pid,
                event.initial_call,
                thousands(event.ms),
                event.function,
                event
                    .plugin
                    .as_ref()
                    .map(|plugin| format!(", plugin {plugin}"))
                    .unwrap_or_default()
            );
            node.long_schedules.total.fetch_add(1, Relaxed);
            open[index] = Some(Open {
                started,
                pid,
                name: event.name.clone(),
                remind_at: REMINDER.as_millis() as u64,
            });
            node.long_schedules.push(event);
        }
    }
}

/// What the registry knows of the stuck process (read from this thread:
/// the entry's counters are readable while its task is polled).
fn describe(node: &Node, scheduler: usize, pid: Pid, held: Duration) -> LongSchedule {
    let info = node.registry.info(pid);
    let plugin = info
        .as_ref()
        .and_then(|info| info.plugin_version)
        .map(|id| {
            node.code
                .versions()
                .into_iter()
                .find(|version| version.id == id)
                .map_or_else(|| format!("v{id}"), |v| format!("v{id} ({})", v.version))
        });
    let started_at = SystemTime::now()
        .checked_sub(held)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    LongSchedule {
        pid: pid.to_string(),
        name: info
            .as_ref()
            .map_or_else(|| "?".to_owned(), |i| i.name.clone()),
        initial_call: info
            .as_ref()
            .map_or_else(String::new, |i| i.initial_call.clone()),
        function: info
            .as_ref()
            .map_or_else(String::new, |i| i.current_function.clone()),
        plugin,
        scheduler,
        started_at: humantime::format_rfc3339_millis(started_at).to_string(),
        ms: held.as_millis() as u64,
        running: true,
    }
}
