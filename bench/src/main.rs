//! `scenario`: the benchmark of issue 8. Starts the real `system` daemon
//! (one scheduler, optionally pinned), runs the seed's workload through its
//! public interfaces phase by phase, prints one JSON line per phase and a
//! summary table with each target met or missed, and draws a chart.
//!
//! It never edits the daemon's files or signals it directly; it stops the
//! daemon with `system stop` when done.

mod admin;
mod bare;
mod chart;
mod cores;
mod daemon;
mod feed;
mod http;
mod options;
mod os;
mod phases;
mod probe;
mod report;
mod run;
mod stats;
mod ws;

use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use serde_json::json;

use crate::daemon::Daemon;
use crate::feed::Feed;
use crate::options::{Options, PHASES};
use crate::probe::Probe;
use crate::run::Run;
use crate::ws::Client;

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    options.check()?;
    let bench_cpu = options.bench_cpu.or_else(|| {
        options
            .cpu
            .and_then(|cpu| (0..os::cpus()).find(|c| *c != cpu))
    });
    if let Some(cpu) = bench_cpu {
        // Threads spawned later (tokio's) inherit the main thread's affinity.
        os::pin_current_thread(cpu)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the benchmark's runtime")?;
    runtime.block_on(scenario(options, bench_cpu))
}

async fn scenario(options: Options, bench_cpu: Option<usize>) -> anyhow::Result<()> {
    let binary = daemon::find_binary(options.system.clone())?;
    let machine = json!({
        "phase": "machine",
        "cpus": os::cpus(),
        "cpu_model": os::cpu_model(),
        "daemon_cpu": options.cpu,
        "schedulers": options.schedulers,
        "bench_cpu": bench_cpu,
        "system": binary.display().to_string(),
        "quick": options.quick,
        "loadavg": os::loadavg(),
    });
    println!("{machine}");
    let daemon = Daemon::start(&binary, options.cpu, options.schedulers)?;
    eprintln!("scenario: daemon {} at {}", daemon.pid, daemon.url);
    let url = daemon.ws_url();
    let feed = Feed::start(url.clone()).await?;
    let probe = Probe::start(url.clone()).await?;
    let control = Client::connect(&url).await?;
    let other = Client::connect(&url).await?;
    feed.wait_until(Duration::from_secs(10), |_| true).await;
    // Let the daemon's start-up settle before taking the idle memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_memory_mb = feed.latest().map_or(0.0, |s| s.memory_mb);
    let mut run = Run {
        options,
        daemon,
        feed,
        probe,
        control,
        other,
        results: Vec::new(),
        marks: Vec::new(),
        idle_memory_mb,
        load: 0,
        rogues: Vec::new(),
        next_id: 1_000,
    };
    let outcome = phases_in_order(&mut run).await;
    if let Err(error) = &outcome {
        eprintln!("scenario: stopped early: {error:#}");
    }
    let _ = run.control.set_load(0).await;
    let chart = run.options.chart.clone();
    match chart::draw(&chart, &run.feed.all(), &run.marks) {
        Ok(()) => eprintln!("scenario: chart written to {}", chart.display()),
        Err(error) => eprintln!("scenario: no chart: {error:#}"),
    }
    if outcome.is_ok() {
        phases::stop(&mut run).await?;
    }
    run.daemon.stop()?;
    let verdicts = report::verdicts(&run.results);
    println!("\n{}", report::table(&run.results, &verdicts));
    outcome
}

async fn phases_in_order(run: &mut Run) -> anyhow::Result<()> {
    for phase in PHASES {
        if !run.options.wants(phase) {
            continue;
        }
        match phase {
            "baseline" => phases::baseline(run).await?,
            "naive" => phases::naive(run).await?,
            "rogues" => phases::rogues(run).await?,
            "kill" => phases::kill(run).await?,
            "upgrade" => phases::upgrade(run).await?,
            "scale" => phases::scale(run).await?,
            "console" => phases::console(run).await?,
            "processes" => phases::processes(run).await?,
            "overhead" => phases::overhead(run).await?,
            "bare-scale" => phases::bare_scale(run).await?,
            "cores" => cores::cores(run).await?,
            other => unreachable!("phase {other} is in PHASES but has no code"),
        }
    }
    Ok(())
}
