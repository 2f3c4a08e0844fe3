//! `Runtime.top()`: the busiest processes over a window, by reductions, with
//! CPU as the BEAM reports it (scheduler usage × the process's share of all
//! reductions in the window).
//!
//! Also [`by_memory`]: the biggest holders of memory right now.
//!
//! Snapshots of the whole registry are taken off the scheduler (in the
//! background, at nice 10), so a registry of a million processes does not
//! stall it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;

use crate::long_schedule::LongSchedules;
use crate::usage::UsageMeter;
use crate::{Pid, ProcessRegistry};

/// One line of `Runtime.top()`.
#[derive(Clone, Debug)]
pub struct TopRow {
    pub pid: String,
    pub name: String,
    /// Percent of all schedulers.
    pub cpu: f64,
    /// Reductions in the window (`by_memory`: since it started).
    pub reductions: u64,
    /// Bytes it holds now (see the runtime's `memory` model).
    pub memory: u64,
    /// Set while the process holds a scheduler in one poll longer than the
    /// long-schedule threshold: for how long so far, in ms.
    pub stuck_ms: Option<u64>,
    /// For a stuck process: its native stack when first seen stuck,
    /// innermost first (the long-schedule event's sample).
    pub stuck_stack: Vec<String>,
}

/// Every process's reductions now, by pid: in the background.
async fn snapshot(registry: &Arc<ProcessRegistry>) -> HashMap<Pid, u64> {
    let registry = registry.clone();
    crate::background::run("top", move || registry.reductions().into_iter().collect())
        .await
        .unwrap_or_default()
}

/// Each process's reductions since `before`, and their total: in the
/// background too (a million entries to diff and select from).
async fn deltas_since(
    registry: &Arc<ProcessRegistry>,
    before: HashMap<Pid, u64>,
    count: usize,
) -> (Vec<(Pid, u64)>, u64) {
    let registry = registry.clone();
    let diff = move || {
        let mut deltas: Vec<(Pid, u64)> = registry
            .reductions()
            .into_iter()
            .map(|(pid, now)| {
                let then = before.get(&pid).copied().unwrap_or(0);
                (pid, now.saturating_sub(then))
            })
            .collect();
        let total = deltas.iter().map(|(_, delta)| delta).sum();
        let count = count.min(deltas.len());
        if count > 0 {
            deltas.select_nth_unstable_by(count - 1, |a, b| b.1.cmp(&a.1));
            deltas.truncate(count);
        }
        (deltas, total)
    };
    crate::background::run("top", diff)
        .await
        .unwrap_or_default()
}

/// What `top` looks at: the processes, the polls that hold a scheduler,
/// and the schedulers' runtime (for their usage).
pub struct Sources<'a> {
    pub registry: &'a Arc<ProcessRegistry>,
    pub long_schedules: &'a LongSchedules,
    pub schedulers: &'a Handle,
}

/// The `count` processes with the most reductions over `window`.
pub async fn top(sources: Sources<'_>, window: Duration, count: usize) -> Vec<TopRow> {
    let Sources {
        registry,
        long_schedules,
        schedulers,
    } = sources;
    let mut usage = match registry.schedulers() {
        Some(own) => UsageMeter::of_schedulers(own.clone()),
        None => UsageMeter::new(schedulers.clone()),
    };
    let stuck_before = long_schedules.running();
    let before = snapshot(registry).await;
    tokio::time::sleep(window).await;
    // The busiest `count` besides any stuck ones (at most `count` shown).
    let (mut deltas, total) = deltas_since(registry, before, count * 2).await;
    let scheduler_usage = usage.sample();
    // A process stuck in one poll (at the start of the window or its end)
    // has counted nothing yet: it comes first, with how long it held on.
    let events = long_schedules.events();
    let mut stuck = long_schedules.running();
    for before in stuck_before {
        if !stuck.iter().any(|event| event.pid == before.pid) {
            let latest = events
                .iter()
                .rev()
                .find(|event| event.pid == before.pid && event.started_at == before.started_at);
            stuck.push(latest.cloned().unwrap_or(before));
        }
    }
    // A stuck process holds one whole scheduler of those online.
    let online = match registry.schedulers() {
        Some(own) => own.online(),
        None => schedulers.metrics().num_workers(),
    }
    .max(1);
    let mut rows: Vec<TopRow> = stuck
        .iter()
        .map(|event| TopRow {
            pid: event.pid.clone(),
            name: event.name.clone(),
            cpu: (1000.0 / online as f64).round() / 10.0,
            reductions: 0,
            memory: 0,
            stuck_ms: Some(event.ms),
            stuck_stack: event.stack.clone(),
        })
        .collect();
    deltas.retain(|(pid, _)| !stuck.iter().any(|event| event.pid == pid.to_string()));
    let count = count.saturating_sub(rows.len()).min(deltas.len());
    if count == 0 {
        return rows;
    }
    deltas.select_nth_unstable_by(count - 1, |a, b| b.1.cmp(&a.1));
    deltas.truncate(count);
    deltas.sort_unstable_by_key(|(_, delta)| std::cmp::Reverse(*delta));
    rows.extend(deltas.into_iter().filter_map(|(pid, reductions)| {
        let info = registry.info(pid)?;
        let share = reductions as f64 / total.max(1) as f64;
        Some(TopRow {
            pid: pid.to_string(),
            name: info.name,
            cpu: (scheduler_usage * share * 1000.0).round() / 10.0,
            reductions,
            memory: info.memory,
            stuck_ms: None,
            stuck_stack: Vec::new(),
        })
    }));
    for row in &mut rows {
        if row.stuck_ms.is_some()
            && let Some(info) = row.pid.parse().ok().and_then(|pid| registry.info(pid))
        {
            row.memory = info.memory;
        }
    }
    rows
}

/// The `count` processes that hold the most memory now, biggest first
/// (`Runtime.top(:memory)`); `cpu` is 0, `reductions` their total.
pub async fn by_memory(registry: &Arc<ProcessRegistry>, count: usize) -> Vec<TopRow> {
    let snapshot = {
        let registry = registry.clone();
        crate::background::run("top", move || registry.memory())
    };
    let mut holders = snapshot.await.unwrap_or_default();
    let count = count.min(holders.len());
    if count == 0 {
        return Vec::new();
    }
    holders.select_nth_unstable_by(count - 1, |a, b| b.memory.cmp(&a.memory));
    holders.truncate(count);
    holders.sort_unstable_by_key(|holder| std::cmp::Reverse(holder.memory));
    holders
        .into_iter()
        .map(|holder| TopRow {
            pid: holder.pid.to_string(),
            reductions: registry.info(holder.pid).map_or(0, |info| info.reductions),
            name: holder.name.into_owned(),
            cpu: 0.0,
            memory: holder.memory,
            stuck_ms: None,
            stuck_stack: Vec::new(),
        })
        .collect()
}
