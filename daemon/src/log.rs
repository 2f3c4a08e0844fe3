//! The daemon's log: `tracing` output to stdout (foreground) or stderr (which
//! a daemon has redirected to its log file), and whether writing it works.
//!
//! A log that cannot be written (disk full, unwritable directory) must never
//! stop the daemon: failed writes are dropped and remembered, and `/health`
//! reports them. Nothing here decides what is logged.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Mutex;

/// The last write error, cleared by the next successful write.
static FAILURE: Mutex<Option<String>> = Mutex::new(None);

/// `None` while the log is written fine; otherwise why it is not.
pub fn failure() -> Option<String> {
    crate::lock(&FAILURE).clone()
}

/// Remembers that the log cannot be written, and why.
pub fn record_failure(reason: String) {
    *crate::lock(&FAILURE) = Some(reason);
}

fn record(result: io::Result<()>) {
    let mut failure = crate::lock(&FAILURE);
    match result {
        Ok(()) if failure.is_some() => *failure = None,
        Ok(()) => {}
        Err(error) => *failure = Some(error.to_string()),
    }
}

/// Writes whole lines to stderr, dropping (and recording) what cannot be written.
struct CheckedStderr;

impl Write for CheckedStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        record(io::stderr().write_all(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Installs the subscriber. Level from `SYSTEM_LOG` (default `info`, less
/// hyper's per-connection warnings: a client could cause one line per
/// connection; the HTTP listener logs what matters, throttled). With
/// `console`, also serves tokio-console's gRPC API on that address.
pub fn init(to_stdout: bool, console: Option<SocketAddr>) {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_env("SYSTEM_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,hyper=error"));
    let log = if to_stdout {
        fmt::layer().with_writer(io::stdout).boxed()
    } else {
        fmt::layer()
            .with_ansi(false)
            .with_writer(|| CheckedStderr)
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
