//! The long-schedule monitor (Erlang's `system_monitor` `long_schedule`): a
//! watchdog on its own OS thread reads every scheduler's watch slot (which
//! process it polls, since when) every few milliseconds, and reports any
//! poll that has held a scheduler longer than the threshold — in the log
//! while it still runs and once more with the total when it ends, in
//! the host's views (a metric, a console call, a page).
//!
//! When it first sees a poll past the threshold it takes one native stack
//! sample of that poll (`crate::stack`: a signal to that scheduler thread,
//! which walks its own stack and goes on) and puts its top frames into the
//! log line and the event.
//!
//! It only observes: it never blocks the poll path (it reads slots, writes
//! none; the sample interrupts the thread for microseconds), and cannot
//! stop a stuck poll (nothing can, short of the plugin returning).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use crate::sync::{Mutex, lock};
use crate::{Pid, ProcessRegistry, stack, symbols, watch};

/// The threshold when `--long-schedule` is not given.
pub const DEFAULT_THRESHOLD: Duration = Duration::from_millis(10);
/// The longest time between two looks at the slots.
pub const PERIOD: Duration = Duration::from_millis(10);
/// While a poll still runs, the log says so again this often.
pub const REMINDER: Duration = Duration::from_secs(10);
/// Events `Runtime.long_schedules()` keeps (the newest).
pub const KEPT: usize = 100;
/// The native frames of the sample a report carries (the innermost).
pub const STACK_FRAMES: usize = 8;

/// One poll that held a scheduler longer than the threshold.
#[derive(Clone, Debug)]
pub struct LongSchedule {
    pub pid: String,
    pub name: String,
    pub initial_call: String,
    /// The function it was in when first seen stuck.
    pub function: String,
    /// The code version it runs, as the host names it (e.g. `v2 (1.1.0)`).
    pub code: Option<String>,
    /// Which scheduler thread (0-based, in order of first use).
    pub scheduler: usize,
    /// When the poll started, RFC 3339 UTC.
    pub started_at: String,
    /// How long the poll has held the scheduler (so far, while running).
    pub ms: u64,
    pub running: bool,
    /// Its native stack when first seen stuck, innermost first (the top
    /// [`STACK_FRAMES`], the runtime's frames folded away); empty if no
    /// sample could be taken (the reason is in `stack_error`).
    pub stack: Vec<String>,
    pub stack_error: Option<String>,
}

/// Names a code version (see [`crate::ProcessContext::set_code_version`])
/// for the log and the events.
pub type CodeNames = Box<dyn Fn(u32) -> String + Send>;

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
/// `monitor` or `registry` is gone.
pub fn start(
    registry: &Arc<ProcessRegistry>,
    monitor: &Arc<LongSchedules>,
    code_names: CodeNames,
) -> std::io::Result<()> {
    let threshold = monitor.threshold;
    if threshold.is_zero() {
        return Ok(());
    }
    // A report comes at most one period late; each wake-up costs a few µs.
    let period = threshold.clamp(Duration::from_millis(1), PERIOD);
    let watched = Watched {
        registry: Arc::downgrade(registry),
        monitor: Arc::downgrade(monitor),
        code_names,
    };
    std::thread::Builder::new()
        .name("long-schedule-monitor".to_owned())
        .spawn(move || watch_forever(&watched, threshold, period))?;
    Ok(())
}

/// What the watchdog thread watches, held weakly so that it ends with them.
struct Watched {
    registry: Weak<ProcessRegistry>,
    monitor: Weak<LongSchedules>,
    code_names: CodeNames,
}

/// A poll the watchdog has reported and not yet seen end.
struct Open {
    started: u64,
    pid: u64,
    name: String,
    /// The next reminder in the log, in ms held.
    remind_at: u64,
}

fn watch_forever(watched: &Watched, threshold: Duration, period: Duration) {
    let mut open: Vec<Option<Open>> = Vec::new();
    let threshold_ns = threshold.as_nanos() as u64;
    loop {
        std::thread::sleep(period);
        let (Some(registry), Some(monitor)) =
            (watched.registry.upgrade(), watched.monitor.upgrade())
        else {
            return;
        };
        let now = crate::clock_ticks();
        for (index, slot) in watch::schedulers() {
            if open.len() <= index {
                open.resize_with(index + 1, || None);
            }
            if let Some(stuck) = &open[index] {
                match slot.ended_since(stuck.started) {
                    Some(ended) => {
                        let ms = crate::ticks_to_nanos(stuck.started, ended) / 1_000_000;
                        tracing::warn!(
                            pid = stuck.pid,
                            ms,
                            "long schedule ended: process {} {} held scheduler {index} for {} ms in one poll",
                            stuck.name,
                            Pid(stuck.pid),
                            ms
                        );
                        monitor.update(index, ms, false);
                        open[index] = None;
                    }
                    None => {
                        let ms = crate::ticks_to_nanos(stuck.started, now) / 1_000_000;
                        monitor.update(index, ms, true);
                        if ms >= stuck.remind_at {
                            tracing::warn!(
                                pid = stuck.pid,
                                ms,
                                "long schedule continues: process {} {} has held scheduler {index} for {} ms",
                                stuck.name,
                                Pid(stuck.pid),
                                ms
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
            let held = crate::ticks_to_nanos(started, now);
            if held < threshold_ns {
                continue;
            }
            let mut event = describe(
                &registry,
                &watched.code_names,
                index,
                Pid(pid),
                Duration::from_nanos(held),
            );
            match stack::sample_poll(slot, pid, Some(started)) {
                Ok(sample) => {
                    let frames = symbols::fold(symbols::Symbolizer::new().frames(&sample));
                    event.stack = frames
                        .iter()
                        .take(STACK_FRAMES)
                        .map(ToString::to_string)
                        .collect();
                }
                Err(error) => event.stack_error = Some(error.to_string()),
            }
            let native: String = event
                .stack
                .iter()
                .map(|frame| format!("\n    native: {frame}"))
                .collect();
            tracing::warn!(
                pid,
                ms = event.ms,
                "long schedule: process {} {} (started as {}) has held scheduler {index} for {} ms without yielding, in {}{}{native}",
                event.name,
                event.pid,
                event.initial_call,
                event.ms,
                event.function,
                event
                    .code
                    .as_ref()
                    .map(|code| format!(", code {code}"))
                    .unwrap_or_default()
            );
            monitor.total.fetch_add(1, Relaxed);
            open[index] = Some(Open {
                started,
                pid,
                name: event.name.clone(),
                remind_at: REMINDER.as_millis() as u64,
            });
            monitor.push(event);
        }
    }
}

/// What the registry knows of the stuck process (read from this thread:
/// the entry's counters are readable while its task is polled).
fn describe(
    registry: &ProcessRegistry,
    code_names: &CodeNames,
    scheduler: usize,
    pid: Pid,
    held: Duration,
) -> LongSchedule {
    let info = registry.info(pid);
    let code = info
        .as_ref()
        .and_then(|info| info.code_version)
        .map(code_names);
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
        code,
        scheduler,
        started_at: humantime::format_rfc3339_millis(started_at).to_string(),
        ms: held.as_millis() as u64,
        running: true,
        stack: Vec::new(),
        stack_error: None,
    }
}
