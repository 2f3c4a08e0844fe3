//! The `system` daemon as a library: every module the binary uses, so that
//! tests and benchmarks can reach them too.

pub mod admin;
pub mod code;
pub mod connection;
pub mod daemonized;
pub mod fatal;
pub mod heart;
pub mod home;
pub mod http;
pub mod kept;
pub mod lifecycle;
pub mod load;
pub mod log;
pub mod memory;
pub mod metrics;
pub mod node;
pub mod online;
pub mod server;
pub mod service;
pub mod sum;
pub mod throttle;
pub mod upgrade;

/// Locks a mutex whose data stays valid even if a holder panicked (the
/// daemon never dies from a process's panic, so neither may its locks).
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
