//! The `system` daemon as a library: every module the binary uses, so that
//! tests and benchmarks can reach them too.

pub mod code;
pub mod connection;
pub mod home;
pub mod http;
pub mod lifecycle;
pub mod load;
pub mod node;
pub mod process;
pub mod scheduler;
pub mod server;
pub mod sum;
pub mod top;

/// Sends `tracing` output to stdout (foreground) or stderr (which a daemon
/// has redirected to its log file). Level from `SYSTEM_LOG` (default `info`).
pub fn init_logging(to_stdout: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SYSTEM_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = if to_stdout {
        builder.with_writer(std::io::stdout).try_init()
    } else {
        builder
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .try_init()
    };
}
