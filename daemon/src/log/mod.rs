//! The daemon's log: `tracing` output, written off the schedulers by one
//! writer thread through a bounded, lossy queue, to stdout (foreground) or
//! to the home's log file rotated by size; and whether writing it works.
//!
//! The log never stops or slows the daemon: an event that finds the queue
//! full is dropped and counted, a burst of one kind of event (crash reports)
//! is cut at [`system_runtime::burst::DEFAULT_LIMIT`] per second, and once a second a line
//! says how many were dropped or suppressed (written past the queue, so it
//! is never lost itself). Failed writes (disk full) are remembered and
//! `/health` reports them. On SIGHUP the daemon's log file is reopened by its
//! path (after an external rotation), never through a symlink. Nothing here
//! decides what is logged.

pub mod rotating;

use std::io::{self, IsTerminal as _, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};

pub use rotating::Rotation;
use system_runtime::burst::Burst;

/// Events waiting for the writer thread, at most; beyond, they are dropped.
const QUEUE_LINES: usize = 16_384;

/// Every kind of event with a burst limit, for the summary lines.
static BURSTS: [&Burst; 1] = [&system_runtime::CRASH_REPORTS];

/// The last write error, cleared by the next successful write.
static FAILURE: Mutex<Option<String>> = Mutex::new(None);

/// Where the writer thread writes; shared with the summary thread and [`reopen`].
static SINK: OnceLock<SharedSink> = OnceLock::new();

/// A second handle on the queue, for [`flush`]'s barriers.
static QUEUE: OnceLock<Mutex<NonBlocking>> = OnceLock::new();

/// What [`flush`] queues: a message no event can be (events end with a newline).
const BARRIER: &[u8] = b"\0";

/// Barriers the writer thread has reached (it writes in queue order).
static BARRIERS: (Mutex<u64>, Condvar) = (Mutex::new(0), Condvar::new());

/// `None` while the log is written fine; otherwise why it is not.
pub fn failure() -> Option<String> {
    crate::lock(&FAILURE).clone()
}

/// Remembers that the log cannot be written, and why.
pub fn record_failure(reason: String) {
    *crate::lock(&FAILURE) = Some(reason);
}

fn record(result: io::Result<()>) {
    let mut failure = crate::lock(&FAILURE);
    match result {
        Ok(()) if failure.is_some() => *failure = None,
        Ok(()) => {}
        Err(error) => *failure = Some(error.to_string()),
    }
}

/// Where the log goes.
pub enum Destination {
    /// This process's stdout (`system foreground`, journald under systemd).
    Stdout,
    /// A file rotated by size; a daemon's stdout and stderr follow it.
    File { path: PathBuf, rotation: Rotation },
}

enum Sink {
    Stdout,
    File(rotating::RotatingFile),
}

impl Sink {
    fn write_line(&mut self, line: &[u8]) {
        record(match self {
            Sink::Stdout => io::stdout().write_all(line),
            Sink::File(file) => file.write_line(line),
        });
    }
}

/// The sink as the writer thread's `Write` (one call per event).
#[derive(Clone)]
struct SharedSink(Arc<Mutex<Sink>>);

impl Write for SharedSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf == BARRIER {
            *crate::lock(&BARRIERS.0) += 1;
            BARRIERS.1.notify_all();
        } else {
            crate::lock(&self.0).write_line(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Opens the log file again by its path (after an external logrotate moved
/// it, e.g. on SIGHUP). Does nothing when logging to stdout or before [`init`].
pub fn reopen() {
    let Some(sink) = SINK.get() else { return };
    let reopened = match &mut *crate::lock(&sink.0) {
        Sink::File(file) => file.reopen().map(|()| file.path().to_owned()),
        Sink::Stdout => return,
    };
    match reopened {
        Ok(path) => {
            record(Ok(()));
            tracing::info!("log reopened: {}", path.display());
        }
        Err(error) => {
            tracing::warn!("cannot reopen the log: {error}");
            record(Err(error));
        }
    }
}

/// Waits (at most `patience`) until what was logged before the call is
/// written, e.g. the start-up lines before `start` reports that the daemon
/// serves. Never call it on a scheduler.
pub fn flush(patience: Duration) {
    let Some(queue) = QUEUE.get() else { return };
    let reached = *crate::lock(&BARRIERS.0);
    if crate::lock(queue).write_all(BARRIER).is_err() {
        return;
    }
    let deadline = Instant::now() + patience;
    let mut passed = crate::lock(&BARRIERS.0);
    while *passed <= reached {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return; // the barrier was dropped (a full queue) or the disk is slow
        }
        passed = BARRIERS
            .1
            .wait_timeout(passed, left)
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0;
    }
}

/// Keeps the log's threads; dropping it writes the last summary and flushes
/// what is queued (drop it before `process::exit`).
pub struct LogGuard {
    summary: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
    _writer: WorkerGuard,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.summary.take() {
            drop(stop);
            let _ = thread.join();
        }
    }
}

/// Installs the subscriber. Level from `SYSTEM_LOG` (default `info`, less
/// hyper's per-connection warnings: a client could cause one line per
/// connection; the HTTP listener logs what matters, throttled). With
/// `console`, also serves tokio-console's API on that address.
pub fn init(destination: Destination, console: Option<SocketAddr>) -> LogGuard {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, fmt};
    let (sink, ansi) = match destination {
        Destination::Stdout => (Sink::Stdout, io::stdout().is_terminal()),
        Destination::File { path, rotation } => {
            let (file, opened) = rotating::RotatingFile::open(&path, rotation, true);
            if let Err(error) = opened {
                record_failure(format!("cannot open {}: {error}", path.display()));
            }
            (Sink::File(file), false)
        }
    };
    let sink = SharedSink(Arc::new(Mutex::new(sink)));
    let _ = SINK.set(sink.clone());
    let (writer, worker) = NonBlockingBuilder::default()
        .buffered_lines_limit(QUEUE_LINES)
        .lossy(true)
        .thread_name("log-writer")
        .finish(sink.clone());
    let dropped = writer.error_counter();
    let _ = QUEUE.set(Mutex::new(writer.clone()));
    let (stop, stopped) = mpsc::channel();
    let summary = std::thread::Builder::new()
        .name("log-summary".into())
        .spawn(move || summarize(&sink, &dropped, &stopped))
        .ok();
    let filter = EnvFilter::try_from_env("SYSTEM_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,hyper=error"));
    let log = fmt::layer().with_ansi(ansi).with_writer(writer);
    let console = console.map(|address| {
        console_subscriber::ConsoleLayer::builder()
            .server_addr(address)
            .spawn()
    });
    let _ = tracing_subscriber::registry()
        .with(console)
        .with(log.with_filter(filter))
        .try_init();
    LogGuard {
        summary: summary.map(|thread| (stop, thread)),
        _writer: worker,
    }
}

/// Once a second (and once more at the end), writes how many events were
/// dropped or suppressed in it, straight to the sink.
fn summarize(sink: &SharedSink, dropped: &ErrorCounter, stop: &mpsc::Receiver<()>) {
    let mut reported = 0;
    loop {
        let last = matches!(
            stop.recv_timeout(Duration::from_secs(1)),
            Err(RecvTimeoutError::Disconnected) | Ok(())
        );
        let total = dropped.dropped_lines();
        let mut lines = String::new();
        if total > reported {
            lines += &summary_line(&format!(
                "dropped {} log events in the last second",
                thousands((total - reported) as u64)
            ));
            reported = total;
        }
        for burst in BURSTS {
            let suppressed = burst.take_suppressed();
            if suppressed > 0 {
                lines += &summary_line(&format!(
                    "suppressed {} {} in the last second",
                    thousands(suppressed),
                    burst.name
                ));
            }
        }
        if !lines.is_empty() {
            crate::lock(&sink.0).write_line(lines.as_bytes());
        }
        if last {
            return;
        }
    }
}

/// A line formatted as `tracing`'s would be: time, level, target, message.
fn summary_line(message: &str) -> String {
    let now = humantime::format_rfc3339_micros(std::time::SystemTime::now());
    format!("{now}  WARN system::log: {message}\n")
}

/// `11500` → `11,500`: counts in log lines and reports.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut text = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            text.push(',');
        }
        text.push(digit);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_the_queue_cannot_take_are_dropped_counted_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("system.log");
        let (file, opened) = rotating::RotatingFile::open(&path, Rotation::default(), false);
        opened.unwrap();
        let sink = SharedSink(Arc::new(Mutex::new(Sink::File(file))));
        // The writer thread is held up (on the sink) while 100 events are offered.
        let held = crate::lock(&sink.0);
        let (mut writer, _worker) = NonBlockingBuilder::default()
            .buffered_lines_limit(2)
            .lossy(true)
            .finish(sink.clone());
        for n in 0..100 {
            writer.write_all(format!("event {n}\n").as_bytes()).unwrap();
        }
        drop(held);
        let dropped = writer.error_counter();
        assert!(dropped.dropped_lines() >= 97, "{}", dropped.dropped_lines());
        let (stop, stopped) = mpsc::channel();
        drop(stop); // one last summary, then return
        summarize(&sink, &dropped, &stopped);
        let log = std::fs::read_to_string(&path).unwrap();
        let said = format!(
            "dropped {} log events in the last second",
            dropped.dropped_lines()
        );
        assert!(log.contains(&said), "{log}");
    }

    #[test]
    fn counts_are_written_with_thousands_separators() {
        assert_eq!(super::thousands(0), "0");
        assert_eq!(super::thousands(999), "999");
        assert_eq!(super::thousands(11_500), "11,500");
        assert_eq!(super::thousands(1_234_567), "1,234,567");
        assert_eq!(super::thousands(20_000), "20,000");
        assert_eq!(
            super::thousands(1_000_000_000_000_000),
            "1,000,000,000,000,000"
        );
    }
}
