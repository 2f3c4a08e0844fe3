//! The scenario's phases, in order: baseline, naive sum, rogues, kill,
//! upgrade, scale, console, processes, overhead, bare-scale; then, always,
//! stop. Each drives the daemon over its public interfaces and emits one
//! JSON line.
//!
//! A phase measures; it never judges (targets are `report`'s job).

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::admin::Admin;
use crate::bare::Bare;
use crate::daemon::{self, text};
use crate::os;
use crate::run::{Run, merged};
use crate::stats::{self, Reading, round};
use crate::ws::is_final_sum;

/// The load of the talk's demo.
pub const DEMO_LOAD: u64 = 10_000;
/// The load `system stop` is timed under (the faults test's).
const STOP_LOAD: u64 = 50_000;

pub async fn baseline(run: &mut Run) -> anyhow::Result<()> {
    run.ensure_load(DEMO_LOAD).await?;
    run.mark("baseline");
    let window = run.measure(run.options.window()).await;
    let result = merged(json!({"phase": "baseline"}), run.load_fields(&window));
    run.emit(result);
    Ok(())
}

pub async fn naive(run: &mut Run) -> anyhow::Result<()> {
    run.ensure_load(DEMO_LOAD).await?;
    run.mark("naive sum");
    run.probe.resume();
    let from_ms = run.feed.now_ms();
    let id = run.next_id();
    let sent = Instant::now();
    let answer = run
        .control
        .sum(id, "999999999", Duration::from_secs(300))
        .await?;
    let took = answer.at.duration_since(sent);
    let window = run.finish(from_ms).await;
    let result = merged(
        json!({
            "phase": "naive",
            "sum_seconds": round(took.as_secs_f64(), 3),
            "sum_status": answer.message["status"],
            "sum_correct": answer.message["result"] == "499999999500000000",
        }),
        run.load_fields(&window),
    );
    run.emit(result);
    Ok(())
}

pub async fn rogues(run: &mut Run) -> anyhow::Result<()> {
    run.ensure_load(DEMO_LOAD).await?;
    for count in [1, 4] {
        while run.rogues.len() < count {
            run.start_rogue().await?;
        }
        run.mark(&format!("{count} endless"));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let window = run.measure(run.options.window()).await;
        let result = merged(
            json!({"phase": format!("rogues-{count}"), "rogues": count}),
            run.load_fields(&window),
        );
        run.emit(result);
    }
    Ok(())
}

/// Kills each rogue from socket B; the time until socket A (which started
/// it) gets its `error` line is the kill → DOWN time as a client sees it.
pub async fn kill(run: &mut Run) -> anyhow::Result<()> {
    run.ensure_load(DEMO_LOAD).await?;
    while run.rogues.len() < 4 {
        run.start_rogue().await?;
    }
    run.mark("kill");
    let mut to_down = Vec::new();
    let mut to_reply = Vec::new();
    let mut reasons = Vec::new();
    for (id, pid) in std::mem::take(&mut run.rogues) {
        let sent = Instant::now();
        run.other.send(&json!({"type": "kill", "pid": pid})).await?;
        let down = run
            .control
            .wait_for(Duration::from_secs(10), |m| is_final_sum(m, id))
            .await
            .with_context(|| format!("waiting for the DOWN of {pid}"))?;
        let reply = run
            .other
            .wait_for(Duration::from_secs(10), |m| m["type"] == "kill")
            .await?;
        if reply.message["killed"] != true {
            bail!("kill {pid} said {}", reply.message);
        }
        to_down.push(stats::ms(down.at.duration_since(sent)));
        to_reply.push(stats::ms(reply.at.duration_since(sent)));
        reasons.push(down.message["reason"].clone());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    run.emit(json!({
        "phase": "kill",
        "workers": run.load,
        "kill_to_down_ms": stats::round_all(&to_down, 3),
        "kill_to_down_max_ms": round(stats::max(&to_down), 3),
        "kill_reply_rtt_ms": stats::round_all(&to_reply, 3),
        "reasons": reasons,
    }));
    Ok(())
}

pub async fn upgrade(run: &mut Run) -> anyhow::Result<()> {
    if !run.daemon.has_upgrade() {
        run.emit(json!({"phase": "upgrade", "skipped": "this system binary has no `upgrade` command yet"}));
        return Ok(());
    }
    let binary = daemon::find_binary(run.options.system.clone())?;
    let plugin = run
        .options
        .plugin
        .clone()
        .unwrap_or_else(|| daemon::plugin_beside(&binary));
    let plugin = plugin.display().to_string();
    let args: Vec<String> = run
        .options
        .upgrade_args
        .split_whitespace()
        .map(|arg| arg.replace("{plugin}", &plugin))
        .collect();
    run.ensure_load(DEMO_LOAD).await?;
    run.mark("upgrade");
    let drops_before = run.feed.disconnects() + run.probe.disconnects();
    run.probe.resume();
    let from_ms = run.feed.now_ms();
    let window = run.options.window();
    tokio::time::sleep(window / 2).await;
    let began = Instant::now();
    let daemon_home_args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = run.daemon.system(&daemon_home_args)?;
    let took = began.elapsed();
    tokio::time::sleep(window / 2).await;
    let measured = run.finish(from_ms).await;
    // The control socket must still answer.
    let id = run.next_id();
    let control_alive = run
        .control
        .sum(id, "5", Duration::from_secs(5))
        .await
        .is_ok();
    let disconnects =
        run.feed.disconnects() + run.probe.disconnects() - drops_before + u64::from(!control_alive);
    let said = text(&output);
    let result = merged(
        json!({
            "phase": "upgrade",
            "command_ok": output.status.success(),
            "command_seconds": round(took.as_secs_f64(), 3),
            "command_output": said.trim(),
            "disconnects": disconnects,
        }),
        run.load_fields(&measured),
    );
    run.emit(result);
    Ok(())
}

pub async fn scale(run: &mut Run) -> anyhow::Result<()> {
    for jobs in run.options.scale_loads.clone() {
        let ramp = run.ensure_load(jobs).await?;
        run.mark(&format!("{}k", jobs / 1000));
        // What /metrics calls scheduler usage, against the OS's own count of
        // the scheduler threads' CPU time over the same window.
        let threads_before = (
            os::named_threads_cpu_ns(run.daemon.pid, "scheduler")?,
            std::time::Instant::now(),
        );
        let window = run.measure(run.options.window()).await;
        let threads_cpu = os::named_threads_cpu_ns(run.daemon.pid, "scheduler")?
            .saturating_sub(threads_before.0) as f64
            / threads_before.1.elapsed().as_nanos().max(1) as f64;
        let memory_mb = run.feed.latest().map_or(0.0, |s| s.memory_mb);
        let per_worker = (memory_mb - run.idle_memory_mb) * 1e6 / jobs.max(1) as f64;
        let result = merged(
            json!({
                "phase": format!("scale-{jobs}"),
                "ramp_seconds": round(ramp.as_secs_f64(), 2),
                "memory_mb": round(memory_mb, 1),
                "idle_memory_mb": round(run.idle_memory_mb, 1),
                "bytes_per_worker": round(per_worker, 0),
                "scheduler_threads_cpu": round(threads_cpu, 3),
            }),
            run.load_fields(&window),
        );
        run.emit(result);
    }
    Ok(())
}

pub async fn console(run: &mut Run) -> anyhow::Result<()> {
    // The console's targets are at 1M (2M is a scale phase only).
    let largest = run
        .options
        .scale_loads
        .iter()
        .copied()
        .filter(|jobs| *jobs <= 1_000_000)
        .max()
        .unwrap_or(DEMO_LOAD);
    let mut sizes = vec![DEMO_LOAD, largest];
    sizes.dedup();
    if run.load >= largest {
        sizes.reverse();
    }
    for jobs in sizes {
        run.ensure_load(jobs).await?;
        run.mark(&format!("console {}k", jobs / 1000));
        let result = console_at(run, jobs).await?;
        run.emit(result);
    }
    Ok(())
}

async fn console_at(run: &mut Run, jobs: u64) -> anyhow::Result<Value> {
    let mut admin = Admin::connect(&run.daemon.admin_socket()).await?;
    let times = |label: &'static str| (label, Vec::<f64>::new());
    let (mut floor, mut list, mut list_len, mut info) =
        (times("1"), times("list"), times("len"), times("info"));
    let mut errors = Vec::new();
    let mut list_bytes = 0;
    let mut processes = 0;
    for _ in 0..5 {
        let one = admin.eval("1").await?;
        floor.1.push(stats::ms(one.took));
        // As a console user sees it: the list made, printed (its head) and sent.
        let listed = admin.eval_text("Process.list()").await?;
        list.1.push(stats::ms(listed.took));
        list_bytes = listed.bytes;
        if let Err(error) = &listed.value {
            errors.push(format!("Process.list(): {error}"));
        }
        let counted = admin.eval("Process.list().len()").await?;
        list_len.1.push(stats::ms(counted.took));
        match &counted.value {
            Ok(value) => processes = value.as_u64().unwrap_or(0) as usize,
            Err(error) => errors.push(format!("Process.list().len(): {error}")),
        }
    }
    let worker = admin.eval("Process.whereis(\"load_worker\")").await?;
    let pid = match worker.value {
        Ok(Value::String(pid)) => pid,
        other => bail!("no load worker found: {other:?}"),
    };
    let script = format!("Process.info(pid(\"{pid}\"))");
    for _ in 0..20 {
        let answer = admin.eval(&script).await?;
        info.1.push(stats::ms(answer.took));
        if let Err(error) = answer.value {
            errors.push(format!("Process.info: {error}"));
        }
    }
    errors.sort();
    errors.dedup();
    let summary = |values: &[f64]| json!({"median": round(stats::median(values), 3), "max": round(stats::max(values), 3)});
    Ok(json!({
        "phase": format!("console-{jobs}"),
        "workers": jobs,
        "processes_listed": processes,
        "list_frame_bytes": list_bytes,
        "eval_floor_ms": summary(&floor.1),
        "list_ms": summary(&list.1),
        "list_len_ms": summary(&list_len.1),
        "info_ms": summary(&info.1),
        "info_p99_ms": round(stats::percentile(&info.1, 99.0), 3),
        "errors": errors,
    }))
}

/// Rounds per load of the daemon alone, then the bare runtime alone, on the
/// core: one pair of windows on this VM varies by ±15 %, so the verdict
/// takes the median of the rounds' ratios.
const OVERHEAD_ROUNDS: usize = 5;

/// Windows per load with both loaded at once, side by side on the core.
const SIDE_BY_SIDE_WINDOWS: usize = 3;

/// CPU per job of the daemon and of a bare tokio runtime under the same
/// load: each alone on the core in alternating rounds (the verdict), then
/// both at once (the same host conditions for both, but sharing the core's
/// caches, which costs the one that touches more memory more).
pub async fn overhead(run: &mut Run) -> anyhow::Result<()> {
    for jobs in run.options.overhead_loads.clone() {
        run.mark(&format!("overhead {}k", jobs / 1000));
        let mut rounds = Vec::with_capacity(OVERHEAD_ROUNDS);
        for _ in 0..OVERHEAD_ROUNDS {
            run.ensure_load(jobs).await?;
            run.probe.pause();
            let daemon = daemon_cost(run).await?;
            run.ensure_load(0).await?;
            let bare = bare_cost(run, jobs).await?;
            rounds.push((daemon, bare));
        }
        run.ensure_load(jobs).await?;
        run.probe.pause();
        let bare = settled_bare(run, jobs).await?;
        let mut side_by_side = Vec::with_capacity(SIDE_BY_SIDE_WINDOWS);
        for _ in 0..SIDE_BY_SIDE_WINDOWS {
            let (daemon, bare) = both_at_once(run, &bare).await?;
            side_by_side.push(daemon.ns_per_job / bare.ns_per_job.max(1e-9));
        }
        drop(bare);
        let ratios: Vec<f64> = rounds
            .iter()
            .map(|(daemon, bare)| daemon.ns_per_job / bare.ns_per_job.max(1e-9))
            .collect();
        let median_of = |values: Vec<f64>| stats::median(&values);
        let daemon_rates: Vec<f64> = rounds.iter().flat_map(|(d, _)| d.rates.clone()).collect();
        let bare_rates: Vec<f64> = rounds.iter().flat_map(|(_, b)| b.rates.clone()).collect();
        run.emit(json!({
            "phase": format!("overhead-{jobs}"),
            "workers": jobs,
            "rounds": OVERHEAD_ROUNDS,
            "daemon_ns_per_job": round(median_of(rounds.iter().map(|(d, _)| d.ns_per_job).collect()), 0),
            "daemon_stat_ns_per_job": round(median_of(rounds.iter().map(|(d, _)| d.stat_ns_per_job).collect()), 0),
            "daemon_cpu_pct": round(median_of(rounds.iter().map(|(d, _)| d.cpu_pct).collect()), 1),
            "daemon_min_pct": round(100.0 * stats::min(&daemon_rates) / jobs as f64, 2),
            "bare_ns_per_job": round(median_of(rounds.iter().map(|(_, b)| b.ns_per_job).collect()), 0),
            "bare_cpu_pct": round(median_of(rounds.iter().map(|(_, b)| b.cpu_pct).collect()), 1),
            "bare_min_pct": round(100.0 * stats::min(&bare_rates) / jobs as f64, 2),
            "bare_median_pct": round(100.0 * stats::median(&bare_rates) / jobs as f64, 2),
            "ratios": stats::round_all(&ratios, 3),
            "ratio": round(stats::median(&ratios), 3),
            "side_by_side_ratios": stats::round_all(&side_by_side, 3),
            "side_by_side_ratio": round(stats::median(&side_by_side), 3),
        }));
    }
    Ok(())
}

/// Runs the bare runtime alone (daemon idle) at each scale load.
pub async fn bare_scale(run: &mut Run) -> anyhow::Result<()> {
    run.ensure_load(0).await?;
    run.probe.pause();
    for jobs in run.options.scale_loads.clone() {
        eprintln!(
            "scenario: bare tokio at {jobs} (load average {})",
            os::loadavg()
        );
        trim_heap();
        let rss_before = own_rss_bytes();
        let cost = bare_cost(run, jobs).await?;
        run.emit(json!({
            "phase": format!("bare-scale-{jobs}"),
            "workers": jobs,
            "jobs_per_sec_min": round(stats::min(&cost.rates), 0),
            "jobs_per_sec_median": round(stats::median(&cost.rates), 0),
            "min_pct": round(100.0 * stats::min(&cost.rates) / jobs as f64, 2),
            "median_pct": round(100.0 * stats::median(&cost.rates) / jobs as f64, 2),
            "ns_per_job": round(cost.ns_per_job, 0),
            "cpu_pct": round(cost.cpu_pct, 1),
            "bytes_per_worker": round(cost.rss_bytes.saturating_sub(rss_before) as f64 / jobs as f64, 0),
        }));
    }
    Ok(())
}

struct Cost {
    rates: Vec<f64>,
    ns_per_job: f64,
    stat_ns_per_job: f64,
    cpu_pct: f64,
    rss_bytes: u64,
}

/// The daemon's CPU (all its threads) per job over one window.
async fn daemon_cost(run: &mut Run) -> anyhow::Result<Cost> {
    let began = on_next_sample(run).await?;
    tokio::time::sleep(run.options.window()).await;
    let ended = on_next_sample(run).await?;
    Ok(daemon_cost_between(run, began, ended))
}

/// One window over which both the daemon (all its threads) and the bare
/// runtime (its worker thread) are measured: CPU per job of each.
async fn both_at_once(run: &mut Run, bare: &Bare) -> anyhow::Result<(Cost, Cost)> {
    let began = on_next_sample(run).await?;
    let bare = bare_window(bare, run.options.window()).await?;
    let ended = on_next_sample(run).await?;
    Ok((daemon_cost_between(run, began, ended), bare))
}

/// The daemon's side of a window, from two readings of [`on_next_sample`].
fn daemon_cost_between(run: &Run, began: DaemonReading, ended: DaemonReading) -> Cost {
    let jobs = ended.jobs.saturating_sub(began.jobs).max(1) as f64;
    let cpu = ended.cpu_ns.saturating_sub(began.cpu_ns) as f64;
    let wall = (ended.t_ms - began.t_ms).max(1.0) * 1e6;
    Cost {
        rates: stats::one_second_rates(&run.feed.readings(), began.t_ms, ended.t_ms),
        ns_per_job: cpu / jobs,
        stat_ns_per_job: ended.stat_ns.saturating_sub(began.stat_ns) as f64 / jobs,
        cpu_pct: 100.0 * cpu / wall,
        rss_bytes: 0,
    }
}

/// The daemon's clock, CPU (schedstat and utime+stime) and jobs at one instant.
struct DaemonReading {
    t_ms: f64,
    cpu_ns: u64,
    stat_ns: u64,
    jobs: u64,
}

/// Waits for a fresh metrics sample, then reads the daemon's CPU at once.
async fn on_next_sample(run: &Run) -> anyhow::Result<DaemonReading> {
    let last = run.feed.now_ms();
    run.feed
        .wait_until(Duration::from_secs(5), |s| s.t_ms > last)
        .await;
    let cpu_ns = os::process_cpu_ns(run.daemon.pid)?;
    let stat_ns = os::process_stat_ns(run.daemon.pid)?;
    let sample = run.feed.latest().unwrap_or_default();
    Ok(DaemonReading {
        t_ms: sample.t_ms,
        cpu_ns,
        stat_ns,
        jobs: sample.jobs_total,
    })
}

/// A bare runtime running `jobs` workers, started and settled like the daemon's load.
async fn settled_bare(run: &Run, jobs: u64) -> anyhow::Result<Bare> {
    let bare = Bare::start(jobs, run.options.cpu).await?;
    tokio::time::sleep(run.options.settle()).await;
    Ok(bare)
}

/// The bare runtime's thread CPU per job over one window, after settling.
async fn bare_cost(run: &Run, jobs: u64) -> anyhow::Result<Cost> {
    let bare = settled_bare(run, jobs).await?;
    let rss_bytes = own_rss_bytes();
    let cost = bare_window(&bare, run.options.window()).await?;
    Ok(Cost { rss_bytes, ..cost })
}

/// The bare runtime's side of a window: its jobs every 100 ms and its
/// worker thread's CPU.
async fn bare_window(bare: &Bare, window: Duration) -> anyhow::Result<Cost> {
    let began = Instant::now();
    let (cpu0, jobs0) = (bare.cpu_ns()?, bare.jobs());
    let mut readings = vec![Reading {
        t_ms: 0.0,
        total: jobs0,
    }];
    let mut ticks = tokio::time::interval(Duration::from_millis(100));
    ticks.tick().await;
    while began.elapsed() < window {
        ticks.tick().await;
        readings.push(Reading {
            t_ms: stats::ms(began.elapsed()),
            total: bare.jobs(),
        });
    }
    let spent = bare.cpu_ns()?.saturating_sub(cpu0) as f64;
    let wall = began.elapsed().as_nanos() as f64;
    let total = readings.last().map_or(jobs0, |r| r.total);
    let done = total.saturating_sub(jobs0).max(1) as f64;
    Ok(Cost {
        rates: stats::one_second_rates(&readings, 0.0, f64::MAX),
        ns_per_job: spent / done,
        stat_ns_per_job: spent / done,
        cpu_pct: 100.0 * spent / wall,
        rss_bytes: 0,
    })
}

/// Gives freed heap back to the OS, so the next RSS reading starts clean.
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory the allocator holds as free.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn own_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// The page reads of the processes phase: each sort key in turn, at
/// offsets spread over the million (as a user paging and re-sorting would).
const PAGE_READS: usize = 20;

/// `/api/processes` and `/api/tree` at 1M workers (issue 26): the load in
/// a window with nothing read, then how long a page of 20 takes while 20
/// are read back to back, and the load kept meanwhile (the window covers
/// the reads and lasts at least the usual window); then the tree, three
/// times.
pub async fn processes(run: &mut Run) -> anyhow::Result<()> {
    let jobs = 1_000_000;
    run.ensure_load(jobs).await?;
    // The same load with nothing read, just before: what the reads are
    // compared with (this machine's own dents show in both).
    let cpu_before_quiet = os::process_stat_ns(run.daemon.pid)?;
    let quiet_began = Instant::now();
    let quiet = run.measure(run.options.window()).await;
    let quiet_cpu_per_sec = (os::process_stat_ns(run.daemon.pid)? - cpu_before_quiet) as f64
        / quiet_began.elapsed().as_secs_f64();
    let quiet = run.load_fields(&quiet);
    run.mark("processes 1000k");
    run.probe.resume();
    let from_ms = run.feed.now_ms();
    let cpu_before_reads = os::process_stat_ns(run.daemon.pid)?;
    let began = Instant::now();
    let sorts = ["reductions", "memory", "cpu", "age", "name"];
    let mut page_ms = Vec::new();
    let mut errors = Vec::new();
    let mut total = 0;
    for read in 0..PAGE_READS {
        let sort = sorts[read % sorts.len()];
        let offset = (read / sorts.len()) * 250_000;
        let path = format!("/api/processes?sort={sort}&limit=20&offset={offset}");
        let answer = crate::http::get(&run.daemon.url, &path).await?;
        page_ms.push(stats::ms(answer.took));
        match serde_json::from_str::<Value>(&answer.body) {
            Ok(page) if answer.status == 200 => {
                total = page["total"].as_u64().unwrap_or(0);
                let rows = page["processes"].as_array().map_or(0, Vec::len);
                if rows != 20 {
                    errors.push(format!("{path}: {rows} rows"));
                }
            }
            _ => errors.push(format!("{path}: {} {}", answer.status, answer.body)),
        }
    }
    let reading = began.elapsed();
    // The daemon's CPU for the reads: what it used while they ran, less
    // what it used in as long with nothing read (the load's own). From
    // /proc/PID/stat: its walks run on threads that end (`background`),
    // which the threads' schedstat no longer lists.
    let reads_cpu_ns = (os::process_stat_ns(run.daemon.pid)? - cpu_before_reads) as f64
        - quiet_cpu_per_sec * reading.as_secs_f64();
    let rest = run.options.window().saturating_sub(reading);
    tokio::time::sleep(rest).await;
    let window = run.finish(from_ms).await;
    let mut tree_ms = Vec::new();
    let mut tree_bytes = 0;
    for _ in 0..3 {
        let answer = crate::http::get(&run.daemon.url, "/api/tree").await?;
        tree_ms.push(stats::ms(answer.took));
        tree_bytes = answer.body.len();
        if answer.status != 200 {
            errors.push(format!("/api/tree: {} {}", answer.status, answer.body));
        }
    }
    let summary = |values: &[f64]| {
        json!({
            "median": round(stats::median(values), 1),
            "p90": round(stats::percentile(values, 90.0), 1),
            "max": round(stats::max(values), 1),
        })
    };
    let result = merged(
        json!({
            "phase": "processes",
            "processes_total": total,
            "page_reads": page_ms.len(),
            "page_ms": summary(&page_ms),
            "reading_seconds": round(reading.as_secs_f64(), 2),
            "page_cpu_ms": round(reads_cpu_ns / 1e6 / PAGE_READS as f64, 1),
            "tree_ms": summary(&tree_ms),
            "tree_bytes": tree_bytes,
            "quiet_min_pct": quiet["min_pct"],
            "quiet_median_pct": quiet["median_pct"],
            "errors": errors,
        }),
        run.load_fields(&window),
    );
    run.emit(result);
    Ok(())
}

/// How long `system stop` takes with [`STOP_LOAD`] workers (the last step
/// of every run: it stops the daemon).
pub async fn stop(run: &mut Run) -> anyhow::Result<()> {
    run.ensure_load(STOP_LOAD).await?;
    let began = Instant::now();
    run.daemon.stop()?;
    let took = began.elapsed();
    run.emit(json!({
        "phase": "stop",
        "workers": STOP_LOAD,
        "seconds": round(took.as_secs_f64(), 3),
    }));
    Ok(())
}
