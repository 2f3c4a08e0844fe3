//! The `system` command: starts, stops and inspects the daemon, opens its
//! remote console and hot-upgrades its code. Errors end here, printed once, with a non-zero exit.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, CommandFactory as _, Parser, Subcommand};
use system::lifecycle;
use system::os::home::Home;
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
    /// Start the daemon in the background (under heart); returns once it serves.
    Start(StartArgs),
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
    /// Print a completion script for a shell, e.g. `system completions bash`.
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff), e.g. `system man | man -l -`.
    Man,
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
struct StartArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Rotate the log file when it would grow past this many bytes.
    #[arg(long, default_value_t = system::log::Rotation::default().max_bytes,
          value_parser = clap::value_parser!(u64).range(1..))]
    log_max_bytes: u64,
    /// Log files kept, the current one included (system.log, system.log.1 …).
    #[arg(long, default_value_t = system::log::Rotation::default().files,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    log_files: u32,
    /// Run without heart: nothing restarts the daemon if it dies.
    #[arg(long)]
    no_heart: bool,
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
    /// Schedulers online at start; 1 shows a single-core machine. The
    /// console and the /load page change it while the node runs.
    #[arg(long, default_value_t = 1)]
    schedulers: usize,
    /// The most schedulers that can be online (default: the machine's CPUs).
    #[arg(long)]
    max_schedulers: Option<usize>,
    /// The math plugin library to load (default: next to this binary).
    #[arg(long, env = "SYSTEM_PLUGIN")]
    plugin: Option<PathBuf>,
    /// Serve tokio-console's API (default address 127.0.0.1:6669).
    #[arg(long, num_args = 0..=1, default_missing_value = "127.0.0.1:6669")]
    tokio_console: Option<SocketAddr>,
    /// The most load workers a client may ask for (at most 4294967295).
    #[arg(long, default_value_t = system::node::load::DEFAULT_MAX_LOAD,
          value_parser = clap::value_parser!(u64).range(0..=system::node::load::HIGHEST_CAP))]
    max_load: u64,
    /// Require a random access token (shown by `system status`) on every
    /// HTTP request; needed to serve beyond loopback.
    #[arg(long)]
    access_token: bool,
    /// Serve beyond loopback without an access token: anyone who reaches
    /// the port may drive the load and kill sums.
    #[arg(long)]
    insecure_http: bool,
    /// Another host name the pages may be reached by (e.g. behind a proxy);
    /// NAME or NAME:PORT. Repeatable.
    #[arg(long = "allow-host", value_name = "NAME")]
    allow_hosts: Vec<String>,
    /// Warn about any process holding a scheduler longer than MS
    /// milliseconds in one poll (0 turns the monitor off).
    #[arg(long, value_name = "MS", default_value_t = 10)]
    long_schedule: u64,
    /// The most memory one sum may hold, e.g. `256MiB` (0: no limit); a
    /// sum over it is killed alone, with the reason `memory_limit`.
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = parse_size)]
    max_process_memory: u64,
    /// The node's high watermark, e.g. `4GiB` (0: none): above it the
    /// biggest user process is killed (`memory_pressure`). Default: 80 %
    /// of the cgroup's memory.max if set, else of physical memory.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_memory: Option<u64>,
}

/// A size in bytes: `1048576`, `256MiB`, `4 GiB`, `1.5GB`.
fn parse_size(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|error| format!("not a size ({error}); e.g. 256MiB, 4GiB or a number of bytes"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::PluginCheck { library, shown_as } = &cli.command {
        // No home, no log: a verdict on stdout and an exit status.
        let shown_as = shown_as.as_ref().unwrap_or(library);
        let status = system::node::code::check::child_main(library, shown_as);
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
    match cli.command {
        Command::Completions { shell } => {
            use clap_complete::Generator as _;
            let mut command = Cli::command().bin_name("system");
            command.build();
            return Ok(shell.try_generate(&command, &mut std::io::stdout())?);
        }
        Command::Man => {
            return Ok(clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?);
        }
        _ => {}
    }
    let dir = cli.home.unwrap_or_else(Home::default_dir);
    // Only the commands that start a daemon create its home; the others
    // read an existing one and create nothing.
    let home = match &cli.command {
        Command::Start { .. } | Command::Foreground(_) => {
            Home::create(&dir).with_context(|| format!("opening home {}", dir.display()))?
        }
        _ => {
            match Home::existing(&dir).with_context(|| format!("opening home {}", dir.display()))? {
                Some(home) => home,
                None => anyhow::bail!(
                    "system is not running (home {} does not exist)",
                    dir.display()
                ),
            }
        }
    };
    let config = |args: ServerArgs, log_rotation| Config {
        home: home.clone(),
        http: args.http,
        schedulers: args.schedulers,
        max_schedulers: args.max_schedulers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(1, std::num::NonZeroUsize::get)
                .max(args.schedulers)
        }),
        plugin: args.plugin,
        tokio_console: args.tokio_console,
        max_load: args.max_load,
        log_rotation,
        heart_pid: None,
        restart: false,
        access_token: args.access_token,
        insecure_http: args.insecure_http,
        allow_hosts: args.allow_hosts,
        long_schedule: std::time::Duration::from_millis(args.long_schedule),
        max_process_memory: args.max_process_memory,
        max_memory: args
            .max_memory
            .unwrap_or_else(system::node::memory::watermark::default_limit),
    };
    match cli.command {
        Command::Start(args) => lifecycle::start(
            config(
                args.server,
                system::log::Rotation {
                    max_bytes: args.log_max_bytes,
                    files: args.log_files,
                },
            ),
            !args.no_heart,
        ),
        Command::Foreground(args) => lifecycle::foreground(config(args, Default::default())),
        Command::Stop => lifecycle::stop(&home),
        Command::Status => lifecycle::status(&home),
        Command::Pid => lifecycle::pid(&home),
        Command::Log { follow } => lifecycle::log(&home, follow),
        Command::RemoteConsole => {
            let history = home.dir().join("console_history");
            Ok(shell::console::run(&home.admin_socket(), &history)?)
        }
        Command::Rpc { script, json } => Ok(shell::rpc::run(&home.admin_socket(), &script, json)?),
        Command::Upgrade(args) => system::node::upgrade::command::run(
            &home,
            system::node::upgrade::command::Options {
                source: args.source,
                plugin: args.plugin,
                rollback: args.rollback,
            },
        ),
        Command::Completions { .. } | Command::Man => Ok(()),
        Command::PluginCheck { .. } => {
            anyhow::bail!("plugin-check is handled before the home is opened")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("4 GiB"), Ok(4 << 30));
        assert!(parse_size("lots").is_err());
    }
}
