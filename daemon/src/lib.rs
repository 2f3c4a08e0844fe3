//! The `system` daemon as a library: every module the binary uses, so that
//! tests and benchmarks can reach them too.

pub mod admin;
pub mod code;
pub mod connection;
pub mod home;
pub mod http;
pub mod lifecycle;
pub mod load;
pub mod metrics;
pub mod node;
pub mod process;
pub mod scheduler;
pub mod server;
pub mod sum;
pub mod top;
pub mod upgrade;

/// Sends `tracing` output to stdout (foreground) or stderr (which a daemon
/// has redirected to its log file). Level from `SYSTEM_LOG` (default `info`).
/// With `console`, also serves tokio-console's gRPC API on that address.
pub fn init_logging(to_stdout: bool, console: Option<std::net::SocketAddr>) {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_env("SYSTEM_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let log = if to_stdout {
        fmt::layer().with_writer(std::io::stdout).boxed()
    } else {
        fmt::layer()
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .boxed()
    };
    let console = console.map(|address| {
        console_subscriber::ConsoleLayer::builder()
            .server_addr(address)
            .spawn()
    });
    let _ = tracing_subscriber::registry()
        .with(console)
        .with(log.with_filter(filter))
        .try_init();
}
