//! The `system` command: starts, stops and inspects the daemon, opens its
//! remote console and hot-upgrades its code. Errors end here, printed once, with a non-zero exit.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use system::home::Home;
use system::lifecycle;
use system::server::Config;

#[derive(Parser)]
#[command(
    name = "system",
    version,
    about = "A Rust daemon with the soul of Erlang"
)]
struct Cli {
    /// The daemon's home: pid file, admin socket, logs, plugin copies.
    #[arg(long, global = true, env = "SYSTEM_HOME")]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the daemon in the background; returns once it serves.
    Start(ServerArgs),
    /// Run the daemon in this terminal, logging to stdout.
    Foreground(ServerArgs),
    /// Stop the running daemon gracefully.
    Stop,
    /// Say whether the daemon runs, with its pid, URL and uptime.
    Status,
    /// Print the daemon's OS pid.
    Pid,
    /// Print the daemon's log.
    Log {
        /// Keep printing what is appended.
        #[arg(long, short)]
        follow: bool,
    },
    /// Open a shell (Rhai) attached to the running daemon.
    #[command(name = "remote_console")]
    RemoteConsole,
    /// Evaluate one script on the running daemon and print its result.
    Rpc {
        /// The Rhai script, e.g. 'Process.list()'.
        script: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Build the math plugin (release) and hot-load it into the running daemon.
    Upgrade(UpgradeArgs),
    /// (Internal) Check a plugin library in this short-lived process and
    /// print a one-line verdict; the daemon runs it before every load.
    #[command(name = "plugin-check", hide = true)]
    PluginCheck {
        library: PathBuf,
        /// The path to name in messages (the operator's, not the copy's).
        #[arg(long)]
        shown_as: Option<PathBuf>,
    },
}

#[derive(Args)]
struct UpgradeArgs {
    /// The workspace holding math-plugin/ (default: the current directory or above).
    #[arg(long, conflicts_with_all = ["plugin", "rollback"])]
    source: Option<PathBuf>,
    /// Load this prebuilt library instead of building.
    #[arg(long, conflicts_with = "rollback")]
    plugin: Option<PathBuf>,
    /// Return to the version that was current before this one.
    #[arg(long)]
    rollback: bool,
}

#[derive(Args)]
struct ServerArgs {
    /// Address for the web UI and HTTP API.
    #[arg(long, default_value = "127.0.0.1:4000")]
    http: SocketAddr,
    /// Scheduler (worker) threads; 1 shows a single-core machine.
    #[arg(long, default_value_t = 1)]
    schedulers: usize,
    /// The math plugin library to load (default: next to this binary).
    #[arg(long, env = "SYSTEM_PLUGIN")]
    plugin: Option<PathBuf>,
    /// Serve tokio-console's API (default address 127.0.0.1:6669).
    #[arg(long, num_args = 0..=1, default_missing_value = "127.0.0.1:6669")]
    tokio_console: Option<SocketAddr>,
    /// The most load workers a client may ask for (at most 4294967295).
    #[arg(long, default_value_t = system::load::DEFAULT_MAX_LOAD,
          value_parser = clap::value_parser!(u64).range(0..=system::load::HIGHEST_CAP))]
    max_load: u64,
    /// Warn about any process holding a scheduler longer than MS
    /// milliseconds in one poll (0 turns the monitor off).
    #[arg(long, value_name = "MS", default_value_t = 10)]
    long_schedule: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::PluginCheck { library, shown_as } = &cli.command {
        // No home, no log: a verdict on stdout and an exit status.
        let shown_as = shown_as.as_ref().unwrap_or(library);
        let status = system::plugin_check::child_main(library, shown_as);
        return ExitCode::from(u8::try_from(status).unwrap_or(1));
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("system: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let dir = cli.home.unwrap_or_else(Home::default_dir);
    let home = Home::open(&dir).with_context(|| format!("opening home {}", dir.display()))?;
    let config = |args: ServerArgs| Config {
        home: home.clone(),
        http: args.http,
        schedulers: args.schedulers,
        plugin: args.plugin,
        tokio_console: args.tokio_console,
        max_load: args.max_load,
        long_schedule: std::time::Duration::from_millis(args.long_schedule),
    };
    match cli.command {
        Command::Start(args) => lifecycle::start(config(args)),
        Command::Foreground(args) => lifecycle::foreground(config(args)),
        Command::Stop => lifecycle::stop(&home),
        Command::Status => lifecycle::status(&home),
        Command::Pid => lifecycle::pid(&home),
        Command::Log { follow } => lifecycle::log(&home, follow),
        Command::RemoteConsole => {
            let history = home.dir().join("console_history");
            Ok(shell::console::run(&home.admin_socket(), &history)?)
        }
        Command::Rpc { script, json } => Ok(shell::rpc::run(&home.admin_socket(), &script, json)?),
        Command::Upgrade(args) => system::upgrade::command::run(
            &home,
            system::upgrade::command::Options {
                source: args.source,
                plugin: args.plugin,
                rollback: args.rollback,
            },
        ),
        Command::PluginCheck { .. } => {
            anyhow::bail!("plugin-check is handled before the home is opened")
        }
    }
}
