//! The daemon's log: `tracing` output to stdout (foreground) or stderr (which
//! a daemon has redirected to its log file), and whether writing it works.
//!
//! A log that cannot be written (disk full, unwritable directory) must never
//! stop the daemon: failed writes are dropped and remembered, and `/health`
//! reports them. On SIGHUP the daemon's log file is reopened by its path
//! (after a rotation), never through a symlink. Nothing here decides what is logged.

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

/// Installs the subscriber. Level from `SYSTEM_LOG` (default `info`). With
/// `console`, also serves tokio-console's gRPC API on that address.
pub fn init(to_stdout: bool, console: Option<SocketAddr>) {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_env("SYSTEM_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
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

/// The file a daemon's stdout and stderr write to, once `start` has opened it.
static FILE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Remembers the file the daemon logs to (its stdout and stderr), for [`reopen`].
pub fn remember_file(path: std::path::PathBuf) {
    let _ = FILE.set(path);
}

/// Reopens the log file by its path (after it was moved away or removed,
/// e.g. by a rotation) and points stdout and stderr at the new file, never
/// through a symlink. Asked for by SIGHUP; without a log file (foreground)
/// it does nothing. A failure is recorded as a log failure, never fatal.
pub fn reopen() {
    let Some(path) = FILE.get() else {
        return;
    };
    let reopened = crate::home::open_append(path).and_then(|file| {
        nix::unistd::dup2_stdout(&file)?;
        nix::unistd::dup2_stderr(&file)?;
        Ok(())
    });
    match reopened {
        Ok(()) => {
            record(Ok(()));
            tracing::info!("log reopened: {}", path.display());
        }
        Err(error) => {
            record_failure(format!("cannot reopen {}: {error}", path.display()));
            tracing::warn!("cannot reopen {}: {error}", path.display());
        }
    }
}
