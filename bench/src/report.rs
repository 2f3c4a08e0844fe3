//! Judges the phases' results against the issue's targets and prints the
//! summary table (phases, then targets met/missed/skipped).
//!
//! It reads results only; it never measures.

use serde_json::Value;

/// One target and what the run says about it.
pub struct Verdict {
    pub target: &'static str,
    pub measured: String,
    /// None: not measured in this run.
    pub met: Option<bool>,
}

fn phase<'a>(results: &'a [Value], name: &str) -> Option<&'a Value> {
    results.iter().find(|r| r["phase"] == name)
}

fn phases_starting<'a>(results: &'a [Value], prefix: &str) -> Vec<&'a Value> {
    results
        .iter()
        .filter(|r| r["phase"].as_str().is_some_and(|p| p.starts_with(prefix)))
        .collect()
}

fn num(value: &Value, key: &str) -> Option<f64> {
    value[key].as_f64()
}

pub fn verdicts(results: &[Value]) -> Vec<Verdict> {
    let mut verdicts = Vec::new();
    // 10k with a naive sum and 4 endless loops.
    let busy: Vec<&Value> = ["naive", "rogues-1", "rogues-4"]
        .iter()
        .filter_map(|name| phase(results, name))
        .collect();
    let worst_min = busy
        .iter()
        .filter_map(|r| num(r, "min_pct"))
        .reduce(f64::min);
    verdicts.push(Verdict {
        target: "10k + naive sum + 4 loops: min jobs/s >= 99.5 %",
        measured: worst_min.map_or("-".into(), |v| format!("{v:.2} %")),
        met: worst_min.map(|v| v >= 99.5),
    });
    let worst_p99 = busy
        .iter()
        .filter_map(|r| num(r, "rtt_p99_ms"))
        .reduce(f64::max);
    verdicts.push(Verdict {
        target: "sum(5) round trip p99 <= 1 ms (naive, loops)",
        measured: worst_p99.map_or("-".into(), |v| format!("{v:.3} ms")),
        met: worst_p99.map(|v| v <= 1.0),
    });
    let kill = phase(results, "kill").and_then(|r| num(r, "kill_to_down_max_ms"));
    verdicts.push(Verdict {
        target: "kill -> DOWN <= 1 ms (max of 4)",
        measured: kill.map_or("-".into(), |v| format!("{v:.3} ms")),
        met: kill.map(|v| v <= 1.0),
    });
    let upgrade = phase(results, "upgrade").filter(|r| r["skipped"].is_null());
    let drops = upgrade.and_then(|r| r["disconnects"].as_u64());
    verdicts.push(Verdict {
        target: "upgrade: 0 WebSocket disconnects",
        measured: drops.map_or("-".into(), |v| v.to_string()),
        met: drops.map(|v| v == 0 && upgrade.is_some_and(|r| r["command_ok"] == true)),
    });
    let upgrade_min = upgrade.and_then(|r| num(r, "min_pct"));
    verdicts.push(Verdict {
        target: "upgrade: min jobs/s >= 99 %",
        measured: upgrade_min.map_or("-".into(), |v| format!("{v:.2} %")),
        met: upgrade_min.map(|v| v >= 99.0),
    });
    let million = phase(results, "scale-1000000");
    let million_min = million.and_then(|r| num(r, "min_pct"));
    // The physical reference: the bare runtime at the same load, same core.
    let bare = phase(results, "bare-scale-1000000").map_or(String::new(), |r| {
        format!(
            "; bare tokio {:.2} % at {:.0} % CPU",
            num(r, "min_pct").unwrap_or(0.0),
            num(r, "cpu_pct").unwrap_or(0.0)
        )
    });
    verdicts.push(Verdict {
        target: "1M workers: min jobs/s >= 99 %",
        measured: million_min.map_or("-".into(), |v| {
            format!(
                "{v:.2} % (median {:.2} %){bare}",
                million.and_then(|r| num(r, "median_pct")).unwrap_or(0.0)
            )
        }),
        met: million_min.map(|v| v >= 99.0),
    });
    let bytes = million.and_then(|r| num(r, "bytes_per_worker"));
    verdicts.push(Verdict {
        target: "1M workers: <= 1 KB per worker",
        measured: bytes.map_or("-".into(), |v| format!("{v:.0} B")),
        met: bytes.map(|v| v <= 1024.0),
    });
    let ratio = phases_starting(results, "overhead-")
        .iter()
        .filter_map(|r| num(r, "ratio"))
        .reduce(f64::max);
    verdicts.push(Verdict {
        target: "CPU per job <= 1.2x bare tokio (each alone, worst load)",
        measured: ratio.map_or("-".into(), |v| format!("{v:.2}x")),
        met: ratio.map(|v| v <= 1.2),
    });
    let console = phase(results, "console-1000000");
    let list = console.and_then(|r| r["list_ms"]["median"].as_f64());
    let list_ok = console.is_some_and(|r| {
        r["errors"].as_array().is_none_or(|e| {
            !e.iter()
                .any(|e| e.as_str().is_some_and(|e| e.starts_with("Process.list()")))
        })
    });
    verdicts.push(Verdict {
        target: "Process.list() with 1M <= 500 ms",
        measured: list.map_or("-".into(), |v| {
            format!("{v:.1} ms{}", if list_ok { "" } else { " (error)" })
        }),
        met: list.map(|v| v <= 500.0 && list_ok),
    });
    let info = console.and_then(|r| r["info_ms"]["median"].as_f64());
    verdicts.push(Verdict {
        target: "Process.info with 1M <= 1 ms (median)",
        measured: info.map_or("-".into(), |v| {
            format!(
                "{v:.3} ms (max {:.3})",
                console
                    .and_then(|r| r["info_ms"]["max"].as_f64())
                    .unwrap_or(0.0)
            )
        }),
        met: info.map(|v| v <= 1.0),
    });
    verdicts.extend(issue_19(results));
    verdicts.extend(issue_26(results));
    verdicts
}

/// The targets of issue 26: a page of the process table at 1M in
/// <= 500 ms, and reading 20 of them keeps the load (min >= 99 %).
fn issue_26(results: &[Value]) -> Vec<Verdict> {
    let Some(r) = phase(results, "processes") else {
        return Vec::new();
    };
    let errors = r["errors"].as_array().is_some_and(|e| !e.is_empty());
    let page = r["page_ms"]["max"].as_f64();
    let min = num(r, "min_pct");
    vec![
        Verdict {
            target: "1M: a page of /api/processes <= 500 ms (slowest of 20)",
            measured: page.map_or("-".into(), |v| {
                format!(
                    "{v:.0} ms (median {}){}",
                    r["page_ms"]["median"],
                    if errors { " (errors)" } else { "" }
                )
            }),
            met: page.map(|v| v <= 500.0 && !errors),
        },
        Verdict {
            target: "1M: load kept while 20 pages are read (min >= 99 %)",
            measured: min.map_or("-".into(), |v| {
                format!(
                    "min {v:.2} %, median {:.2} %",
                    num(r, "median_pct").unwrap_or(0.0)
                )
            }),
            met: min.map(|v| v >= 99.0),
        },
    ]
}

/// The targets of issue 19 (a million processes on one core, a node that
/// still answers at once); bare tokio's figures beside the daemon's.
fn issue_19(results: &[Value]) -> Vec<Verdict> {
    let mut verdicts = Vec::new();
    for (jobs, target) in [
        (100_000, "issue 19: CPU per job <= 0.4x bare tokio at 100k"),
        (1_000_000, "issue 19: CPU per job <= 0.4x bare tokio at 1M"),
    ] {
        let overhead = phase(results, &format!("overhead-{jobs}"));
        let ratio = overhead.and_then(|r| num(r, "ratio"));
        verdicts.push(Verdict {
            target,
            measured: ratio.map_or("-".into(), |v| {
                format!(
                    "{v:.2}x (daemon {:.0} ns/job, bare {:.0}; side by side {:.2}x)",
                    overhead
                        .and_then(|r| num(r, "daemon_ns_per_job"))
                        .unwrap_or(0.0),
                    overhead
                        .and_then(|r| num(r, "bare_ns_per_job"))
                        .unwrap_or(0.0),
                    overhead
                        .and_then(|r| num(r, "side_by_side_ratio"))
                        .unwrap_or(0.0),
                )
            }),
            met: ratio.map(|v| v <= 0.4),
        });
    }
    let bare_beside = |jobs: u64| {
        phase(results, &format!("bare-scale-{jobs}")).map_or(String::new(), |r| {
            format!(
                "; bare tokio min {:.2} % / median {:.2} % at {:.0} % CPU",
                num(r, "min_pct").unwrap_or(0.0),
                num(r, "median_pct").unwrap_or(0.0),
                num(r, "cpu_pct").unwrap_or(0.0)
            )
        })
    };
    let million = phase(results, "scale-1000000");
    let min = million.and_then(|r| num(r, "min_pct"));
    let cpu = million.and_then(|r| num(r, "scheduler_threads_cpu"));
    verdicts.push(Verdict {
        target: "issue 19: 1M workers: min >= 99 % with scheduler CPU <= 50 %",
        measured: match (min, cpu) {
            (Some(min), Some(cpu)) => format!(
                "min {min:.2} %, scheduler threads' CPU {:.0} %{}",
                100.0 * cpu,
                bare_beside(1_000_000)
            ),
            _ => "-".into(),
        },
        met: min.zip(cpu).map(|(min, cpu)| min >= 99.0 && cpu <= 0.5),
    });
    let two = phase(results, "scale-2000000");
    let (min, median) = (
        two.and_then(|r| num(r, "min_pct")),
        two.and_then(|r| num(r, "median_pct")),
    );
    verdicts.push(Verdict {
        target: "issue 19: 2M workers: median >= 99 %, min >= 95 %",
        measured: match (min, median) {
            (Some(min), Some(median)) => format!(
                "min {min:.2} %, median {median:.2} %, scheduler threads' CPU {:.0} %{}",
                100.0
                    * two
                        .and_then(|r| num(r, "scheduler_threads_cpu"))
                        .unwrap_or(0.0),
                bare_beside(2_000_000)
            ),
            _ => "-".into(),
        },
        met: min
            .zip(median)
            .map(|(min, median)| min >= 95.0 && median >= 99.0),
    });
    for (jobs, limit, target) in [
        (
            300_000,
            5.0,
            "issue 19: sum(5) round trip p99 <= 5 ms at 300k",
        ),
        (
            1_000_000,
            10.0,
            "issue 19: sum(5) round trip p99 <= 10 ms at 1M",
        ),
    ] {
        let scale = phase(results, &format!("scale-{jobs}"));
        let p99 = scale
            .filter(|r| r["probes"].as_u64().unwrap_or(0) > 0)
            .and_then(|r| num(r, "rtt_p99_ms"));
        verdicts.push(Verdict {
            target,
            measured: p99.map_or("-".into(), |v| {
                format!(
                    "{v:.3} ms (p50 {:.3}, load at min {:.2} %)",
                    scale.and_then(|r| num(r, "rtt_p50_ms")).unwrap_or(0.0),
                    scale.and_then(|r| num(r, "min_pct")).unwrap_or(0.0)
                )
            }),
            met: p99.map(|v| v <= limit),
        });
    }
    // The round trip at every scale, for the record (no target below 300k).
    for scale in phases_starting(results, "scale-") {
        if let (Some(name), Some(p99)) = (scale["phase"].as_str(), num(scale, "rtt_p99_ms")) {
            eprintln!("scenario: {name}: sum(5) round trip p99 {p99:.3} ms");
        }
    }
    let worst_bytes = phases_starting(results, "scale-")
        .iter()
        .filter_map(|r| num(r, "bytes_per_worker"))
        .reduce(f64::max);
    verdicts.push(Verdict {
        target: "issue 19: memory per worker <= 1 KB (worst scale)",
        measured: worst_bytes.map_or("-".into(), |v| format!("{v:.0} B")),
        met: worst_bytes.map(|v| v <= 1024.0),
    });
    verdicts
}

/// The summary table, in Markdown.
pub fn table(results: &[Value], verdicts: &[Verdict]) -> String {
    let mut out = String::new();
    out.push_str("| phase | workers | jobs/s min (%) | jobs/s median (%) | sum(5) rtt p50 / p99 / max ms | notes |\n");
    out.push_str("|---|---:|---:|---:|---:|---|\n");
    for r in results {
        let name = r["phase"].as_str().unwrap_or("?");
        let cell = |rate: &str, pct: &str| match (num(r, rate), num(r, pct)) {
            (Some(rate), Some(pct)) => format!("{rate:.0} ({pct:.2} %)"),
            _ => "-".into(),
        };
        let rtt = match (
            num(r, "rtt_p50_ms"),
            num(r, "rtt_p99_ms"),
            num(r, "rtt_max_ms"),
        ) {
            (Some(a), Some(b), Some(c)) if r["probes"].as_u64().unwrap_or(0) > 0 => {
                format!("{a:.3} / {b:.3} / {c:.3}")
            }
            _ => "-".into(),
        };
        out.push_str(&format!(
            "| {name} | {} | {} | {} | {rtt} | {} |\n",
            r["workers"].as_u64().map_or("-".into(), |w| w.to_string()),
            cell("jobs_per_sec_min", "min_pct"),
            cell("jobs_per_sec_median", "median_pct"),
            notes(name, r),
        ));
    }
    out.push_str("\n| target | measured | verdict |\n|---|---|---|\n");
    for v in verdicts {
        let verdict = match v.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not measured",
        };
        out.push_str(&format!("| {} | {} | {verdict} |\n", v.target, v.measured));
    }
    out
}

fn notes(name: &str, r: &Value) -> String {
    if let Some(skipped) = r["skipped"].as_str() {
        return format!("skipped: {skipped}");
    }
    match name {
        "naive" => format!(
            "sum took {:.2} s, correct: {}",
            num(r, "sum_seconds").unwrap_or(0.0),
            r["sum_correct"]
        ),
        "kill" => format!(
            "kill→DOWN ms {}; kill reply rtt ms {}",
            r["kill_to_down_ms"], r["kill_reply_rtt_ms"]
        ),
        "stop" => format!(
            "`system stop` took {:.2} s",
            num(r, "seconds").unwrap_or(0.0)
        ),
        "upgrade" => format!(
            "disconnects {}, command ok {} in {:.2} s",
            r["disconnects"],
            r["command_ok"],
            num(r, "command_seconds").unwrap_or(0.0)
        ),
        _ if name.starts_with("scale-") => format!(
            "RSS {:.0} MB, {:.0} B/worker, ramp {:.2} s, scheduler {:.0} % (threads' CPU per schedstat {:.0} %)",
            num(r, "memory_mb").unwrap_or(0.0),
            num(r, "bytes_per_worker").unwrap_or(0.0),
            num(r, "ramp_seconds").unwrap_or(0.0),
            100.0 * num(r, "scheduler_usage_median").unwrap_or(0.0),
            100.0 * num(r, "scheduler_threads_cpu").unwrap_or(0.0)
        ),
        _ if name.starts_with("console-") => format!(
            "list {} ms (len() {} ms), info {} ms, eval floor {} ms, {} pids{}",
            r["list_ms"]["median"],
            r["list_len_ms"]["median"],
            r["info_ms"]["median"],
            r["eval_floor_ms"]["median"],
            r["processes_listed"],
            match r["errors"].as_array() {
                Some(errors) if !errors.is_empty() => format!("; errors: {}", r["errors"]),
                _ => String::new(),
            }
        ),
        "processes" => format!(
            "{} processes: page ms median {} max {} (CPU {} ms a page); tree ms median {} ({} bytes); load min {:.2} % (nothing read: {:.2} %)",
            r["processes_total"],
            r["page_ms"]["median"],
            r["page_ms"]["max"],
            r["page_cpu_ms"],
            r["tree_ms"]["median"],
            r["tree_bytes"],
            num(r, "min_pct").unwrap_or(0.0),
            num(r, "quiet_min_pct").unwrap_or(0.0)
        ),
        _ if name.starts_with("overhead-") => format!(
            "alone: daemon {:.0} ns/job ({:.1} % CPU) vs bare {:.0} ns/job ({:.1} % CPU): {:.2}x (rounds {}); side by side: {:.2}x; bare min {:.2} %",
            num(r, "daemon_ns_per_job").unwrap_or(0.0),
            num(r, "daemon_cpu_pct").unwrap_or(0.0),
            num(r, "bare_ns_per_job").unwrap_or(0.0),
            num(r, "bare_cpu_pct").unwrap_or(0.0),
            num(r, "ratio").unwrap_or(0.0),
            r["ratios"],
            num(r, "side_by_side_ratio").unwrap_or(0.0),
            num(r, "bare_min_pct").unwrap_or(0.0),
        ),
        _ if name.starts_with("bare-scale-") => format!(
            "bare tokio: {:.0} ns/job, {:.0} % CPU, {:.0} B/worker",
            num(r, "ns_per_job").unwrap_or(0.0),
            num(r, "cpu_pct").unwrap_or(0.0),
            num(r, "bytes_per_worker").unwrap_or(0.0),
        ),
        _ => format!(
            "scheduler {:.0} %",
            100.0 * num(r, "scheduler_usage_median").unwrap_or(0.0)
        ),
    }
}
