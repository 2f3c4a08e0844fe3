//! Ctrl-C while a script runs: a SIGINT handler that only raises a flag,
//! which the client turns into an interrupt frame.
//!
//! The handler must stay async-signal-safe: it stores an atomic, nothing else.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

/// Set by SIGINT; taken by the client while it waits for a result.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: nix::libc::c_int) {
    INTERRUPTED.store(true, SeqCst);
}

/// Makes SIGINT raise [`INTERRUPTED`] instead of ending the shell.
pub fn catch_sigint() -> std::io::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_sigint),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe { sigaction(Signal::SIGINT, &action) }
        .map(|_| ())
        .map_err(std::io::Error::from)
}
