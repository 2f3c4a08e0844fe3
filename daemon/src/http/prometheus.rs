//! `/metrics` in Prometheus text format: the load's counters and setting,
//! the latest metrics sample, and the runtime's figures, read from the node,
//! and the WebSocket peers `connection` closed.
//!
//! It only reads and formats; what the figures mean is owned by `load`,
//! `metrics` and the registry.

use std::fmt::Write as _;

use crate::node::Node;

/// `/metrics`: counters for jobs, gauges for the rest, in Prometheus text
/// format. Walks the registry for memory by process name: call it off the
/// schedulers.
pub fn render(node: &Node) -> String {
    let latest = node.metrics.latest().unwrap_or_default();
    let load = &node.load;
    let memory = crate::node::memory::Breakdown::of(&node.registry);
    let metrics: [(&str, &str, &str, f64); 20] = [
        (
            "system_jobs_succeeded_total",
            "counter",
            "Synthetic jobs that succeeded.",
            load.succeeded() as f64,
        ),
        (
            "system_jobs_failed_total",
            "counter",
            "Synthetic jobs that failed (panicked).",
            load.failed() as f64,
        ),
        (
            "system_load_worker_restarts_total",
            "counter",
            "Load workers restarted after a crash.",
            load.restarts() as f64,
        ),
        (
            "system_load_jobs",
            "gauge",
            "Load setting: workers wanted.",
            load.target() as f64,
        ),
        (
            "system_load_max_jobs",
            "gauge",
            "The cap on the load setting.",
            load.cap() as f64,
        ),
        (
            "system_load_failure_rate_percent",
            "gauge",
            "Load setting: percent of jobs that fail.",
            load.failure_rate(),
        ),
        (
            "system_load_workers",
            "gauge",
            "Load workers running.",
            load.workers() as f64,
        ),
        (
            "system_jobs_per_second",
            "gauge",
            "Successful jobs per second (last 100 ms sample).",
            latest.jobs_per_sec,
        ),
        (
            "system_failed_jobs_per_second",
            "gauge",
            "Failed jobs per second (last 100 ms sample).",
            latest.failed_per_sec,
        ),
        (
            "system_scheduler_usage_ratio",
            "gauge",
            "On-CPU time of the scheduler threads over wall time, all schedulers (last 100 ms sample).",
            latest.scheduler_usage,
        ),
        (
            "system_long_schedules_total",
            "counter",
            "Polls that held a scheduler longer than the long-schedule threshold.",
            node.long_schedules.total() as f64,
        ),
        (
            "system_schedulers",
            "gauge",
            "Schedulers online.",
            node.schedulers.online() as f64,
        ),
        (
            "system_schedulers_max",
            "gauge",
            "The most schedulers that can be online (--max-schedulers).",
            node.schedulers.max() as f64,
        ),
        (
            "system_processes",
            "gauge",
            "Processes in the registry.",
            node.registry.count() as f64,
        ),
        (
            "system_crash_reports_total",
            "counter",
            "Processes that crashed (load workers excepted), logged or not.",
            node.registry.crash_reports() as f64,
        ),
        (
            "system_memory_resident_bytes",
            "gauge",
            "Resident memory of the daemon.",
            memory.resident.unwrap_or(0) as f64,
        ),
        (
            "system_memory_outside_processes_bytes",
            "gauge",
            "Memory the daemon holds outside every process (runtime, buffers, console): allocated less all processes.",
            memory.outside_processes().unwrap_or(0) as f64,
        ),
        (
            "system_memory_max_bytes",
            "gauge",
            "The node's high watermark (0: none): above it the biggest user process is killed.",
            node.memory.watermark.limit() as f64,
        ),
        (
            "system_memory_limit_kills_total",
            "counter",
            "Processes killed for holding more than their memory limit.",
            node.registry.memory_limit_kills() as f64,
        ),
        (
            "system_memory_pressure_kills_total",
            "counter",
            "User processes killed because the node was over its high watermark.",
            node.memory.watermark.kills() as f64,
        ),
    ];
    let mut text = String::with_capacity(4096);
    for (name, kind, help, value) in metrics {
        let _ = writeln!(
            text,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    let name = "system_scheduler_usage_ratio";
    let _ = writeln!(
        text,
        "# HELP {name}_by_scheduler On-CPU time of each online scheduler's thread over wall time (last 100 ms sample).\n# TYPE {name}_by_scheduler gauge"
    );
    for (index, usage) in latest.scheduler_usages.iter().enumerate() {
        let _ = writeln!(
            text,
            "{name}_by_scheduler{{scheduler=\"{}\"}} {usage}",
            index + 1
        );
    }
    let name = "system_process_memory_bytes";
    let _ = writeln!(
        text,
        "# HELP {name} Memory the processes of each name hold.\n# TYPE {name} gauge"
    );
    for (process, bytes) in &memory.by_name {
        // Process names are the daemon's own identifiers: nothing to escape.
        let _ = writeln!(text, "{name}{{name=\"{process}\"}} {bytes}");
    }
    let closed = crate::http::connection::PEERS_CLOSED.load(std::sync::atomic::Ordering::Relaxed);
    let _ = writeln!(
        text,
        "# HELP system_websocket_peers_closed_total WebSockets closed because their peer flooded pings or did not read.\n\
         # TYPE system_websocket_peers_closed_total counter\nsystem_websocket_peers_closed_total {closed}"
    );
    text
}
