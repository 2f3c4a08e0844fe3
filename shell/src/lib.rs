//! The remote console's client side: `system remote_console` (an
//! interactive rustyline shell) and `system rpc '<script>'` (one
//! evaluation), both speaking the admin protocol (docs/admin-protocol.md)
//! over the daemon's Unix socket.
//!
//! It is a client only: it evaluates nothing itself and never touches the
//! daemon's files other than its socket and the history file it is given.

pub mod client;
pub mod console;
mod input;
mod interrupt;
pub mod rpc;

use std::path::PathBuf;

/// Why the shell or rpc could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    #[error("the daemon is not running (no admin socket at {}); start it with `system start`", socket.display())]
    NotRunning { socket: PathBuf },
    #[error("cannot connect to the admin socket {}: {source}", socket.display())]
    Connect {
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("the daemon refused the console: {0}")]
    Refused(String),
    #[error("the connection to the daemon was lost")]
    Disconnected,
    #[error("the daemon is stopping")]
    Stopping,
    #[error("talking to the daemon: {0}")]
    Io(#[from] std::io::Error),
    #[error("the daemon sent something this shell does not understand: {0}")]
    Protocol(String),
    #[error("{0}")]
    Script(String),
    #[error("the line editor failed: {0}")]
    Editor(#[from] rustyline::error::ReadlineError),
}
