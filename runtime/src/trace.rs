//! Tracing with limits, recon_trace's model: what a trace follows (one pid,
//! or every process of a name, those started while it runs included), the
//! limits that end it (calls, a window, a rate), the events it collects
//! and why it ended.
//!
//! This module collects; attaching a trace to processes is the registry's
//! and the entry's job. A trace must never make a traced process wait: a
//! tracer that cannot keep up loses events, the process never blocks.
//! Dropping a trace (its future, however its caller ends) ends it.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::pid::Pid;

/// The most calls one trace may collect.
pub const MAX_CALLS: usize = 100_000;
/// The longest window of one trace.
pub const MAX_WINDOW: Duration = Duration::from_secs(600);
/// Events a tracer may have waiting before new ones are dropped.
const BACKLOG: usize = 4_096;

/// What a trace follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TraceTarget {
    Pid(Pid),
    /// Every process of this name (`Spec::name`), now and those started
    /// while the trace runs.
    Name(String),
}

/// Whichever comes first ends a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceLimits {
    /// At most this many events.
    pub calls: usize,
    /// For at most this long.
    pub window: Duration,
    /// More events than this within one second end it (none: no rate limit).
    pub per_second: Option<usize>,
}

impl Default for TraceLimits {
    /// 50 calls or one second.
    fn default() -> Self {
        TraceLimits {
            calls: 50,
            window: Duration::from_secs(1),
            per_second: None,
        }
    }
}

impl TraceLimits {
    /// The limits within [`MAX_CALLS`] and [`MAX_WINDOW`].
    pub fn bounded(self) -> TraceLimits {
        TraceLimits {
            calls: self.calls.min(MAX_CALLS),
            window: self.window.min(MAX_WINDOW),
            per_second: self.per_second,
        }
    }
}

/// One call (or return) of a traced process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceEvent {
    pub pid: Pid,
    /// The function and its arguments, as the process recorded it.
    pub call: String,
    /// What it returned, where its code reports it.
    pub result: Option<String>,
    /// When, since the trace started.
    pub at: Duration,
}

/// An event as a process sends it (stamped with the clock; the trace turns
/// it into a time since its start).
#[derive(Debug)]
pub(crate) struct Sent {
    pub(crate) pid: Pid,
    pub(crate) call: String,
    pub(crate) result: Option<String>,
    pub(crate) at: Instant,
}

pub(crate) type Tracer = mpsc::Sender<Sent>;

/// Why a trace ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceEnd {
    /// It collected its number of calls.
    Calls,
    /// Its window passed.
    Time,
    /// More calls than its rate limit came within one second.
    Rate,
    /// The traced process ended.
    Exit,
}

impl TraceEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            TraceEnd::Calls => "calls",
            TraceEnd::Time => "time",
            TraceEnd::Rate => "rate",
            TraceEnd::Exit => "exit",
        }
    }
}

impl fmt::Display for TraceEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a trace collected, oldest first, and why it ended.
#[derive(Clone, Debug)]
pub struct TraceReport {
    pub events: Vec<TraceEvent>,
    pub ended: TraceEnd,
}

/// A tracer's channel: the sender to attach, the receiver to collect from.
pub(crate) fn channel(limits: &TraceLimits) -> (Tracer, mpsc::Receiver<Sent>) {
    mpsc::channel(limits.calls.clamp(1, BACKLOG))
}

/// Collects events from `events` until a limit is reached or `exit`
/// resolves (the traced process ended: what it sent before is kept).
pub(crate) async fn collect(
    mut events: mpsc::Receiver<Sent>,
    limits: TraceLimits,
    exit: impl std::future::Future<Output = ()>,
) -> TraceReport {
    let started = Instant::now();
    let mut collected = Vec::new();
    let mut last_second: VecDeque<Instant> = VecDeque::new();
    let deadline = tokio::time::sleep(limits.window);
    tokio::pin!(deadline);
    tokio::pin!(exit);
    let mut exited = false;
    let ended = loop {
        if collected.len() >= limits.calls {
            break TraceEnd::Calls;
        }
        let sent = tokio::select! {
            biased;
            sent = events.recv() => sent,
            () = &mut exit, if !exited => {
                exited = true;
                // Whatever it sent before it ended is still to be taken.
                events.close();
                continue;
            }
            () = &mut deadline => break TraceEnd::Time,
        };
        let Some(sent) = sent else {
            break TraceEnd::Exit;
        };
        if let Some(rate) = limits.per_second {
            while last_second
                .front()
                .is_some_and(|at| sent.at.saturating_duration_since(*at) >= Duration::from_secs(1))
            {
                last_second.pop_front();
            }
            if last_second.len() >= rate {
                break TraceEnd::Rate;
            }
            last_second.push_back(sent.at);
        }
        collected.push(TraceEvent {
            pid: sent.pid,
            call: sent.call,
            result: sent.result,
            at: sent.at.saturating_duration_since(started),
        });
    };
    TraceReport {
        events: collected,
        ended,
    }
}
