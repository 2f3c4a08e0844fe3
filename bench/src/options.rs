//! The command line of `scenario`: which phases, how long, which CPU,
//! where the binaries are and where the chart goes.
//!
//! It parses and validates only; running is `phases`' job.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Every phase, in the order they run.
pub const PHASES: [&str; 11] = [
    "baseline",
    "naive",
    "rogues",
    "kill",
    "upgrade",
    "scale",
    "console",
    "processes",
    "overhead",
    "bare-scale",
    "cores",
];

#[derive(Parser, Clone, Debug)]
#[command(
    name = "scenario",
    about = "Runs the seed's workload against the real daemon (one scheduler) and measures it: \
             one JSON line per phase on stdout, then a summary table with each target met or missed"
)]
pub struct Options {
    /// The `system` binary (default: the one next to this program).
    #[arg(long)]
    pub system: Option<PathBuf>,
    /// The plugin for the upgrade phase (default: libmath_plugin.so next to `system`).
    #[arg(long)]
    pub plugin: Option<PathBuf>,
    /// Pin the daemon (and the bare runtime) to this CPU.
    #[arg(long)]
    pub cpu: Option<usize>,
    /// Pin the benchmark's own threads to this CPU (default: another CPU than --cpu, if any).
    #[arg(long)]
    pub bench_cpu: Option<usize>,
    /// Comma-separated phases to run (default: all): baseline, naive,
    /// rogues, kill, upgrade, scale, console, processes, overhead, bare-scale, cores.
    #[arg(long, value_delimiter = ',')]
    pub phases: Vec<String>,
    /// Shorter windows (5 s instead of 10 s, 2 s settling instead of 3 s).
    #[arg(long)]
    pub quick: bool,
    /// Worker counts for the scale and bare-scale phases.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "100000,300000,1000000,2000000"
    )]
    pub scale_loads: Vec<u64>,
    /// Worker counts for the overhead phase.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    pub overhead_loads: Vec<u64>,
    /// Worker counts the cores phase raises through at each count of
    /// schedulers online (it stops at a count once a window's min < 90 %).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "500000,1000000,1500000,2000000,2500000,3000000,3500000,4000000"
    )]
    pub cores_loads: Vec<u64>,
    /// Schedulers of the daemon every phase but `cores` runs on (more than
    /// one: spread over the first that many CPUs, `--cpu` ignored).
    #[arg(long, default_value_t = 1)]
    pub schedulers: usize,
    /// The cores phase's `--max-schedulers` (default: the CPUs this
    /// benchmark may use); it measures 1..=this many online.
    #[arg(long)]
    pub max_schedulers: Option<usize>,
    /// Where to write the chart of jobs/s over the run (SVG).
    #[arg(long, default_value = "docs/performance-scenario.svg")]
    pub chart: PathBuf,
    /// The upgrade command's arguments after `system --home H`; `{plugin}` is replaced.
    #[arg(long, default_value = "upgrade --plugin {plugin}")]
    pub upgrade_args: String,
}

impl Options {
    pub fn window(&self) -> Duration {
        Duration::from_secs(if self.quick { 5 } else { 10 })
    }

    pub fn settle(&self) -> Duration {
        Duration::from_secs(if self.quick { 2 } else { 3 })
    }

    pub fn wants(&self, phase: &str) -> bool {
        self.phases.is_empty() || self.phases.iter().any(|p| p == phase)
    }

    /// Refuses unknown phase names.
    pub fn check(&self) -> anyhow::Result<()> {
        for phase in &self.phases {
            if !PHASES.contains(&phase.as_str()) {
                anyhow::bail!("unknown phase {phase:?}; known: {}", PHASES.join(", "));
            }
        }
        Ok(())
    }
}
