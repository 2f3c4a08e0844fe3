//! Runs the daemon: builds the runtime with N schedulers, binds the
//! listening socket, loads the plugin, starts the supervision tree, reports
//! readiness, and waits for a stop (signal, admin request or a dead tree);
//! SIGHUP reopens the log instead of stopping.
//!
//! It wires parts together; each part's behaviour lives in its own module.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::signal::unix::{SignalKind, signal};

use crate::node::Node;
use crate::node::code::Check;
use crate::node::code::check::ChildCheck;
use crate::os::home::{DaemonState, Home};
use system_runtime::supervisor::{self, Child, Intensity};
use system_runtime::{Spec, install_panic_hook};

/// How long `stop` waits for open connections to close before exiting anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// What `start` and `foreground` are given.
#[derive(Clone, Debug)]
pub struct Config {
    pub home: Home,
    pub http: SocketAddr,
    /// Schedulers online at start (unless a restart restores another count).
    pub schedulers: usize,
    /// The most schedulers that can be online (threads started).
    pub max_schedulers: usize,
    /// The math plugin to load at start; by default the one next to the binary.
    pub plugin: Option<PathBuf>,
    /// Serve tokio-console's API on this address (and name every task).
    pub tokio_console: Option<SocketAddr>,
    /// The most load workers a client may ask for.
    pub max_load: u64,
    /// The heart this daemon runs under, if any.
    pub heart_pid: Option<u32>,
    /// Started again by heart: load the kept current plugin version and
    /// restore the load setting, instead of starting afresh.
    pub restart: bool,
    /// How big the log file may grow (`start` only; `foreground` logs to stdout).
    pub log_rotation: crate::log::Rotation,
    /// Require the access token on every HTTP request.
    pub access_token: bool,
    /// Serve beyond loopback without a token, knowingly.
    pub insecure_http: bool,
    /// Host names (with or without a port) the pages may be reached by,
    /// besides the bound address and the loopback names.
    pub allow_hosts: Vec<String>,
    /// Report polls longer than this (zero: no long-schedule monitor).
    pub long_schedule: Duration,
    /// The most bytes a sum may hold (0: no limit).
    pub max_process_memory: u64,
    /// The node's high watermark (0: none): above it the biggest user
    /// process is killed.
    pub max_memory: u64,
}

/// Runs the daemon until it is told to stop. `ready` is called once: with
/// the daemon's state when it serves, or with the reason it cannot start.
pub fn run(config: Config, ready: impl FnOnce(Result<&DaemonState, String>)) -> anyhow::Result<()> {
    install_panic_hook();
    crate::os::fatal::install();
    crate::node::memory::account_per_process();
    // A restart tries for a moment: the dead daemon's files may still be
    // closing, or a command may be testing the lock.
    let patience = if config.restart {
        Duration::from_secs(2)
    } else {
        Duration::ZERO
    };
    let lock = match config.home.lock_within(patience) {
        Ok(lock) => lock,
        Err(error) => {
            let message = if error.kind() == std::io::ErrorKind::WouldBlock {
                format!("already running in {}", config.home.dir().display())
            } else {
                format!("cannot lock the home: {error}")
            };
            ready(Err(message.clone()));
            anyhow::bail!(message);
        }
    };
    if let Err(error) = crate::os::fatal::record_verdicts_in(&config.home.fault_file()) {
        tracing::warn!(
            "cannot open {}: {error}",
            config.home.fault_file().display()
        );
    }
    crate::os::service::raise_open_files_limit();
    // Resolved now: a build may replace the binary on disk while we run.
    let check = match ChildCheck::of_this_binary() {
        Ok(check) => check,
        Err(error) => {
            let message = format!("cannot locate this binary to check plugins with: {error}");
            ready(Err(message.clone()));
            anyhow::bail!(message);
        }
    };
    // Processes run on the runtime's own schedulers; tokio's runtime keeps
    // the I/O and time drivers (and plain tokio tasks: hyper's connections).
    // With --tokio-console they are tokio tasks (the console names them),
    // on N workers fixed at start, as before issue 27.
    let runtime = if config.tokio_console.is_some() {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.schedulers.max(1))
            .thread_name("scheduler")
            .on_thread_start(system_runtime::watch::scheduler_thread_started)
            .on_thread_park(system_runtime::watch::scheduler_thread_parks)
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("io")
            .enable_all()
            .build()
    }
    .context("building the runtime")?;
    let schedulers = if config.tokio_console.is_some() {
        None
    } else {
        match system_runtime::scheduler::Schedulers::start(
            runtime.handle().clone(),
            config.schedulers,
            config.max_schedulers.max(1),
        ) {
            Ok(schedulers) => Some(schedulers),
            Err(error) => {
                let message = format!("{error}");
                ready(Err(message.clone()));
                anyhow::bail!(message);
            }
        }
    };
    let online = match &schedulers {
        Some(own) => crate::node::online::SchedulersOnline::own(own.clone()),
        None => crate::node::online::SchedulersOnline::tokio(
            runtime.handle().clone(),
            config.schedulers,
        ),
    };
    let console = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("console")
        .enable_all()
        .build()
        .context("building the console's runtime")?;
    let handles = (runtime.handle().clone(), console.handle().clone());
    let mut unloader = None;
    let result = runtime.block_on(serve(
        config.clone(),
        (handles, online),
        check,
        ready,
        &mut unloader,
    ));
    console.shutdown_timeout(Duration::from_secs(1));
    // Every process ends (its DOWN sent) while the drivers still run.
    if let Some(schedulers) = schedulers {
        schedulers.shutdown(Duration::from_secs(1));
    }
    runtime.shutdown_timeout(Duration::from_secs(1));
    // The versions the dropped processes held are closed and their copies
    // removed (on the code server's thread) before the daemon says it stopped.
    if let Some(unloader) = unloader
        && !unloader.settle_within(Duration::from_secs(1))
    {
        tracing::warn!("old plugin versions still unloading at exit");
    }
    config.home.remove_runtime_files();
    crate::http::token::remove(&config.home);
    tracing::info!("stopped");
    drop(lock);
    result
}

async fn serve(
    config: Config,
    (handles, schedulers): ((Handle, Handle), crate::node::online::SchedulersOnline),
    check: ChildCheck,
    ready: impl FnOnce(Result<&DaemonState, String>),
    unloader: &mut Option<crate::node::code::Unloader>,
) -> anyhow::Result<()> {
    // Signals are installed before readiness is told: a signal sent as soon
    // as `start` returns must find its handler (SIGHUP would otherwise kill).
    let started = async {
        let signals = Signals::install()?;
        Ok::<_, anyhow::Error>((start(&config, handles, schedulers, check).await?, signals))
    }
    .await;
    let (started, mut signals) = match started {
        Ok(started) => started,
        Err(error) => {
            let message = format!("{error:#}");
            ready(Err(message.clone()));
            anyhow::bail!(message);
        }
    };
    let (node, state, root) = started;
    *unloader = Some(node.code.unloader());
    tracing::info!(
        "serving {} with {} scheduler(s) online (at most {})",
        state.url,
        node.schedulers.online(),
        node.schedulers.max()
    );
    // The start-up lines are in the log before anyone is told it serves.
    crate::log::flush(Duration::from_secs(1)); // (on the main thread, not a scheduler)
    ready(Ok(&state));
    crate::os::service::notify_ready();

    let mut ended = None;
    let mut root = std::pin::pin!(root);
    loop {
        tokio::select! {
            _ = signals.hangup.recv() => {
                tracing::info!("SIGHUP: reopening the log");
                // What was logged before goes to the file being rotated away.
                crate::log::flush(Duration::from_secs(1)); // (main thread, not a scheduler)
                crate::log::reopen();
                continue;
            }
            _ = signals.terminate.recv() => tracing::info!("SIGTERM: stopping"),
            _ = signals.interrupt.recv() => tracing::info!("SIGINT: stopping"),
            _ = node.shutdown.cancelled() => tracing::info!("stop requested"),
            down = root.as_mut() => {
                tracing::error!("the supervision tree ended ({}): stopping", down.reason);
                ended = Some(down.reason);
            }
        }
        break;
    }
    crate::os::service::notify_stopping();
    node.shutdown.cancel();
    node.connections.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, node.connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; exiting anyway");
    }
    match ended {
        // Not a stop: heart (if any) starts the node again.
        Some(reason) => anyhow::bail!("the supervision tree ended ({reason})"),
        None => Ok(()),
    }
}

/// The signals the daemon handles: SIGTERM and SIGINT stop it, SIGHUP reopens the log.
struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        Ok(Signals {
            terminate: signal(SignalKind::terminate()).context("installing SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("installing SIGINT")?,
            hangup: signal(SignalKind::hangup()).context("installing SIGHUP")?,
        })
    }
}

async fn start(
    config: &Config,
    (scheduler, console): (Handle, Handle),
    schedulers: crate::node::online::SchedulersOnline,
    check: ChildCheck,
) -> anyhow::Result<(Arc<Node>, DaemonState, system_runtime::Monitor)> {
    if !config.http.ip().is_loopback() && !config.access_token && !config.insecure_http {
        anyhow::bail!(
            "{} is reachable from other machines: add --access-token (pages then need the URL \
             `system status` shows) or, knowingly, --insecure-http (anyone who reaches it may \
             drive the load and kill sums)",
            config.http
        );
    }
    let socket = TcpListener::bind(config.http)
        .await
        .with_context(|| format!("cannot listen on {}", config.http))?;
    let address = socket.local_addr().context("reading the bound address")?;
    if !address.ip().is_loopback() && !config.access_token {
        tracing::warn!("listening on {address} without an access token (--insecure-http)");
    }
    // A daemon heart restarted keeps its token: open pages keep working.
    let kept = config
        .restart
        .then(|| crate::http::token::Token::kept(&config.home))
        .flatten();
    let token = match kept {
        Some(token) if config.access_token => Some(token),
        _ if config.access_token => Some(
            crate::http::token::Token::create(&config.home).context("writing the access token")?,
        ),
        _ => {
            crate::http::token::remove(&config.home);
            None
        }
    };
    let limits = crate::http::limits::Limits::from_open_files_limit();
    tracing::info!(
        "at most {} HTTP connections (open-files limit less a reserve)",
        limits.cap()
    );
    let listener = Arc::new(crate::http::Listener {
        socket,
        guard: crate::http::guard::Guard::new(address, &config.allow_hosts, token),
        limits,
        feeds: Default::default(),
    });
    let node = Node::new(
        config.home.clone(),
        schedulers,
        scheduler,
        console,
        Check::Child(check),
        config.long_schedule,
        crate::node::MemoryLimits {
            per_sum: config.max_process_memory,
            watermark: crate::node::memory::Watermark::new(config.max_memory),
        },
    );
    node.memory
        .watermark
        .watch(&node.registry)
        .context("starting the memory watermark's thread")?;
    tracing::info!(
        "memory: a sum may hold {}, the node {} (then the biggest user process is killed)",
        limit_text(config.max_process_memory),
        limit_text(config.max_memory)
    );
    system_runtime::long_schedule::start(
        &node.registry,
        &node.long_schedules,
        version_names(Arc::downgrade(&node)),
    )
    .context("starting the long-schedule monitor")?;
    if !config.restart {
        node.code
            .kept()
            .clear()
            .context("clearing the kept plugin versions")?;
    }
    node.registry.set_task_names(config.tokio_console.is_some());
    node.load.set_cap(config.max_load);
    node.load
        .remember_in(config.home.load_file(), config.restart);
    node.schedulers
        .remember_in(config.home.schedulers_file(), config.restart);
    // A restart resumes the kept current version; a start loads the one asked for.
    let kept = config
        .restart
        .then(|| node.code.kept().read().current)
        .flatten();
    let plugin = match (&kept, &config.plugin) {
        (Some(current), _) => node.code.kept().path(current),
        (None, Some(path)) => path.clone(),
        (None, None) => default_plugin_path()?,
    };
    // The check runs a child process and waits for it: off the schedulers.
    let version = {
        let (node, plugin, kept) = (node.clone(), plugin.clone(), kept.clone());
        let shipped = config.plugin.clone().or_else(|| default_plugin_path().ok());
        tokio::task::spawn_blocking(move || match (&kept, &shipped) {
            // A kept copy that cannot be loaded: the plugin `start` was given.
            (Some(current), Some(shipped)) => node.code.restore(current).or_else(|error| {
                tracing::error!(
                    "cannot load the kept math_plugin v{}: {error}; loading {} instead",
                    current.id,
                    shipped.display()
                );
                node.code.load(shipped)
            }),
            (Some(current), None) => node.code.restore(current),
            (None, _) => node.code.load(&plugin),
        })
        .await
        .context("the plugin load was cancelled")?
    }
    .with_context(|| format!("cannot load the math plugin {}", plugin.display()))?;
    tracing::info!(
        "math plugin {} loaded from {}",
        version.version(),
        plugin.display()
    );

    let admin = Arc::new(crate::admin::bind(&config.home.admin_socket())?);
    let root = supervisor::start(
        &node.registry,
        Spec::new("supervisor", "System.Supervisor.start_link()"),
        children(&node, &listener, &admin),
        Intensity::default(),
        node.shutdown.clone(),
    );
    let state = DaemonState {
        pid: std::process::id(),
        url: format!("http://{address}"),
        started_at_unix: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        schedulers: node.schedulers.online(),
        version: node.version.to_owned(),
        heart_pid: config.heart_pid,
    };
    config
        .home
        .write_runtime_files(&state)
        .context("writing the pid and state files")?;
    Ok((node, state, root))
}

/// A byte limit for the log: `256 MiB`, or `no limit`.
fn limit_text(bytes: u64) -> String {
    if bytes == 0 {
        "no limit".to_owned()
    } else {
        crate::node::memory::bytes(bytes)
    }
}

/// The system processes, each restarted by the root supervisor if it ends.
fn children(
    node: &Arc<Node>,
    listener: &Arc<crate::http::Listener>,
    admin: &Arc<std::os::unix::net::UnixListener>,
) -> Vec<Child> {
    let http = {
        let (node, listener) = (node.clone(), listener.clone());
        Child::new(
            Spec::new("http_listener", "Http.Listener.start_link()"),
            move |ctx| crate::http::serve(ctx, node.clone(), listener.clone()),
        )
    };
    let admin = {
        let (node, admin) = (node.clone(), admin.clone());
        Child::new(
            Spec::new("admin_server", "Admin.Server.start_link()"),
            move |ctx| crate::admin::serve(ctx, node.clone(), admin.clone()),
        )
    };
    let load = {
        let node = node.clone();
        Child::new(
            Spec::new("load_supervisor", "Load.Supervisor.start_link()"),
            move |ctx| {
                let (load, registry) = (node.load.clone(), node.registry.clone());
                crate::node::load::supervise(ctx, load, registry, node.shutdown.clone())
            },
        )
    };
    let metrics = {
        let node = node.clone();
        Child::new(
            Spec::new("metrics_sampler", "Metrics.Sampler.start_link()"),
            move |ctx| {
                let sources = crate::node::metrics::Sources {
                    metrics: node.metrics.clone(),
                    load: node.load.clone(),
                    registry: node.registry.clone(),
                    schedulers: node.schedulers.clone(),
                    started: node.started,
                    shutdown: node.shutdown.clone(),
                };
                crate::node::metrics::sample_forever(ctx, sources)
            },
        )
    };
    vec![http, admin, load, metrics]
}

/// `libmath_plugin.so` next to the `system` binary (where cargo puts both).
fn default_plugin_path() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the system binary")?;
    let dir = exe.parent().context("the system binary has no directory")?;
    Ok(dir.join(format!(
        "{}math_plugin{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )))
}

/// Names a loaded plugin version for the long-schedule monitor: `v2 (1.1.0)`.
fn version_names(node: std::sync::Weak<Node>) -> system_runtime::long_schedule::CodeNames {
    Box::new(move |id| {
        node.upgrade()
            .and_then(|node| {
                let versions = node.code.versions();
                let version = versions.into_iter().find(|version| version.id == id)?;
                Some(format!("v{id} ({})", version.version))
            })
            .unwrap_or_else(|| format!("v{id}"))
    })
}
