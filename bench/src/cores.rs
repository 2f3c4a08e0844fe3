//! The `cores` phase (issue 27): the same workload with 1, 2, … M
//! schedulers online, each count in a daemon started for it (not pinned to
//! one CPU: `--max-schedulers M`, M = the CPUs this benchmark may use, or
//! `--max-schedulers`; the count set from the console before any load).
//! At each count it raises the load through `--cores-loads` and records
//! each window's min/median against the load, the daemon's CPU (all its
//! threads, schedstat) in cores and per job; the ceiling at a count is the
//! largest load held at min ≥ 99 %.
//!
//! It measures; the targets (0.9·N× the one-scheduler ceiling, per-job CPU
//! within 1.2×) are read from its lines, not judged here.

use std::time::Instant;

use anyhow::bail;
use serde_json::json;

use crate::admin::Admin;
use crate::daemon::{Cpus, Daemon};
use crate::feed::Feed;
use crate::os;
use crate::probe::Probe;
use crate::run::{Run, merged};
use crate::stats::round;
use crate::ws::Client;

pub async fn cores(run: &mut Run) -> anyhow::Result<()> {
    let max = run.options.max_schedulers.unwrap_or_else(os::cpus).max(1);
    for online in 1..=max {
        // A daemon of its own for each count: a load raised and lowered
        // before leaves its workers scattered over more memory, which
        // costs the next count's jobs cache misses the first did not pay.
        let daemon = start(run, max).await?;
        let mut saved = daemon.swap_into(run);
        let outcome = steps(run, online).await;
        let _ = run.control.set_load(0).await;
        saved = saved.swap_into(run);
        let mut ours = saved;
        if let Err(error) = ours.daemon.stop() {
            eprintln!("scenario: the cores daemon did not stop: {error:#}");
        }
        outcome?;
    }
    Ok(())
}

/// A daemon spread over the first CPUs, `max` schedulers at most.
async fn start(run: &Run, max: usize) -> anyhow::Result<Swapped> {
    let binary = run.daemon.binary().to_owned();
    // The load cap must not be the ceiling.
    let highest = run.options.cores_loads.iter().max().copied().unwrap_or(0);
    let daemon = Daemon::start_with(
        &binary,
        Cpus::First(os::cpus()),
        &[
            "--max-schedulers",
            &max.to_string(),
            "--max-load",
            &highest.to_string(),
        ],
    )?;
    let url = daemon.ws_url();
    Ok(Swapped {
        daemon,
        feed: Feed::start(url.clone()).await?,
        probe: Probe::start(url.clone()).await?,
        control: Client::connect(&url).await?,
        load: 0,
    })
}

async fn steps(run: &mut Run, online: usize) -> anyhow::Result<()> {
    run.feed
        .wait_until(std::time::Duration::from_secs(10), |_| true)
        .await;
    let mut admin = Admin::connect(&run.daemon.admin_socket()).await?;
    let set = admin
        .eval(&format!("System.schedulers_online({online})"))
        .await?;
    if let Err(error) = set.value {
        bail!("System.schedulers_online({online}): {error}");
    }
    run.mark(&format!("cores {online}"));
    let mut ceiling = 0;
    for jobs in run.options.cores_loads.clone() {
        run.ensure_load(jobs).await?;
        let (cpu_before, at) = (os::process_cpu_ns(run.daemon.pid)?, Instant::now());
        let jobs_before = run.feed.latest().map_or(0, |s| s.jobs_total);
        let window = run.measure(run.options.window()).await;
        let cpu = os::process_cpu_ns(run.daemon.pid)?.saturating_sub(cpu_before) as f64;
        let wall = at.elapsed().as_nanos().max(1) as f64;
        let done = run
            .feed
            .latest()
            .map_or(0, |s| s.jobs_total)
            .saturating_sub(jobs_before)
            .max(1);
        let fields = run.load_fields(&window);
        let min_pct = fields["min_pct"].as_f64().unwrap_or(0.0);
        if min_pct >= 99.0 {
            ceiling = jobs;
        }
        let result = merged(
            json!({
                "phase": format!("cores-{online}-{jobs}"),
                "schedulers": online,
                "daemon_cores": round(cpu / wall, 3),
                "daemon_ns_per_job": round(cpu / done as f64, 0),
            }),
            fields,
        );
        run.emit(result);
        if min_pct < 90.0 {
            // Saturated: a larger load only takes longer to say so.
            break;
        }
    }
    run.emit(json!({
        "phase": format!("cores-{online}"),
        "schedulers": online,
        "ceiling": ceiling,
    }));
    Ok(())
}

/// The parts of a run that belong to one daemon.
struct Swapped {
    daemon: Daemon,
    feed: Feed,
    probe: Probe,
    control: Client,
    load: u64,
}

impl Swapped {
    /// Puts these parts into `run`; returns the ones they replaced.
    fn swap_into(self, run: &mut Run) -> Swapped {
        Swapped {
            daemon: std::mem::replace(&mut run.daemon, self.daemon),
            feed: std::mem::replace(&mut run.feed, self.feed),
            probe: std::mem::replace(&mut run.probe, self.probe),
            control: std::mem::replace(&mut run.control, self.control),
            load: std::mem::replace(&mut run.load, self.load),
        }
    }
}
