//! The node: the one value every part of the running daemon shares — the
//! process registry, the loaded code, the shutdown signal, and the facts a
//! console reports about the node itself.
//!
//! It holds state; it runs nothing by itself.

pub mod code;
pub mod load;
pub mod memory;
pub(crate) mod metrics;
pub mod online;
pub(crate) mod sum;
pub mod upgrade;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::node::code::{Check, CodeServer};
use crate::node::load::Load;
use crate::node::metrics::Metrics;
use crate::node::online::SchedulersOnline;
use crate::os::home::Home;
use system_runtime::long_schedule::LongSchedules;
use system_runtime::processes::ProcessPages;
use system_runtime::{ProcessRegistry, top};

/// The running daemon.
pub struct Node {
    /// `system@<hostname>`, shown in the console's prompt.
    pub name: String,
    pub version: &'static str,
    pub home: Home,
    /// The runtime's schedulers (where processes run, whose usage is
    /// charted) and how many are online.
    pub schedulers: Arc<SchedulersOnline>,
    /// The tokio runtime whose drivers serve the processes' I/O and timers.
    pub scheduler: Handle,
    /// A small runtime of its own for the admin socket and console sessions,
    /// so the system stays inspectable while the schedulers are saturated.
    pub console: Handle,
    pub started: Instant,
    /// When the node started, in milliseconds since the Unix epoch: tells a
    /// page that reconnects whether it reached the same node.
    pub started_at: u64,
    pub registry: Arc<ProcessRegistry>,
    /// Pages of the registry's processes (the console's and the web's).
    pub pages: ProcessPages,
    pub code: CodeServer,
    /// Cancelled once, when the daemon starts to stop.
    pub shutdown: CancellationToken,
    /// Client connections (WebSocket, console sessions) that must be closed
    /// properly before the daemon exits.
    pub connections: TaskTracker,
    /// The synthetic load's setting and counters.
    pub load: Arc<Load>,
    /// The metrics history and feed.
    pub metrics: Arc<Metrics>,
    /// Polls that held a scheduler too long (the watchdog's findings).
    pub long_schedules: Arc<LongSchedules>,
    /// How much memory a sum and the node may hold.
    pub memory: MemoryLimits,
}

/// The memory limits of the node: a sum's own, and the node's watermark.
pub struct MemoryLimits {
    /// The most bytes a sum may hold (0: no limit).
    pub per_sum: u64,
    pub watermark: Arc<crate::node::memory::Watermark>,
}

impl Node {
    /// What `Runtime.top()` and /top look at.
    pub fn top_sources(&self) -> top::Sources<'_> {
        top::Sources {
            registry: &self.registry,
            long_schedules: &self.long_schedules,
            schedulers: &self.scheduler,
        }
    }

    pub fn new(
        home: Home,
        schedulers: SchedulersOnline,
        scheduler: Handle,
        console: Handle,
        check: Check,
        long_schedule: std::time::Duration,
        memory: MemoryLimits,
    ) -> Arc<Node> {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|name| name.into_string().ok())
            .unwrap_or_else(|| "localhost".to_owned());
        let registry = ProcessRegistry::new();
        if let Some(own) = schedulers.own_schedulers() {
            // A fresh registry: it has no schedulers yet.
            let _ = registry.run_on(own.clone());
        }
        Arc::new(Node {
            name: format!("system@{host}"),
            version: env!("CARGO_PKG_VERSION"),
            code: CodeServer::new(home.plugins_dir(), check),
            home,
            schedulers: Arc::new(schedulers),
            scheduler,
            console,
            started: Instant::now(),
            started_at: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            pages: ProcessPages::new(registry.clone()),
            registry,
            shutdown: CancellationToken::new(),
            connections: TaskTracker::new(),
            load: Arc::new(Load::new()),
            metrics: Arc::new(Metrics::new()),
            long_schedules: Arc::new(LongSchedules::new(long_schedule)),
            memory,
        })
    }
}
