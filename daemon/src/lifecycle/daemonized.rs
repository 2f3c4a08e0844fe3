//! The daemonized process's own start: what the child that `start` (or
//! heart) forks runs before and around the server — it closes every
//! descriptor it inherited but the readiness pipe, starts the log, runs the
//! server and tells readiness (`ready PID URL` or `error REASON`) on the
//! pipe, then closes it.
//!
//! It is shared by `lifecycle` (no heart) and `heart` (which forks the
//! daemon itself); it must not know either of them.

use std::fs::File;
use std::io::Write as _;
use std::os::fd::{OwnedFd, RawFd};

use crate::server::{self, Config};

/// Runs the daemon in this (daemonized) process, writing its readiness line
/// (`ready PID URL` or `error REASON`) to `ready` and closing it; exits with
/// 0 after a stop, 1 when it could not start or its supervision tree ended.
pub fn run(config: Config, ready: OwnedFd) -> ! {
    let destination = crate::log::Destination::File {
        path: config.home.log_file(),
        rotation: config.log_rotation,
    };
    let log = crate::log::init(destination, config.tokio_console);
    let mut pipe = File::from(ready);
    // Moved in: the pipe closes once readiness is told, so the starter sees
    // its end and nothing of it stays in the daemon.
    let result = server::run(config, move |ready| {
        let line = match ready {
            Ok(state) => format!("ready {} {}\n", state.pid, state.url),
            Err(reason) => format!("error {reason}\n"),
        };
        let _ = pipe.write_all(line.as_bytes());
    });
    if let Err(error) = &result {
        tracing::error!("daemon ended: {error:#}");
    }
    drop(log); // flushes: `exit` runs no destructors
    std::process::exit(i32::from(result.is_err()));
}

/// Closes every descriptor above stderr except `keep`, in the daemonized
/// child before it starts anything: whatever the starter had open (a pipe
/// to `cat`, a terminal, a file) must not stay open for the daemon's life.
pub fn close_inherited(keep: RawFd) {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let inherited: Vec<RawFd> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2 && fd != keep)
        .collect();
    for fd in inherited {
        // SAFETY: nothing in this process owns these descriptors (the child
        // has just been forked and holds only `keep` and stdio); the one
        // `read_dir` used is already closed, so closing it again is EBADF.
        unsafe { nix::libc::close(fd) };
    }
}
