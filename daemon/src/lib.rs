//! The `system` daemon as a library: every module the binary uses, so that
//! tests and benchmarks can reach them too.
//!
//! By part: `os` (the home, kept files, the fatal handler, the service
//! manager), `lifecycle` (the commands that start, daemonize, watch and stop
//! the daemon, heart included), `node` (what the running daemon is: the
//! registry's host, sums, load, metrics, memory, code and upgrade), the
//! edges `http` (pages and their WebSocket connections) and `admin` (the
//! console), `log`, and `server`, which assembles a node and its edges.

pub(crate) mod admin;
pub mod http;
pub mod lifecycle;
pub mod log;
pub mod node;
pub mod os;
pub mod server;

/// Locks a mutex whose data stays valid even if a holder panicked (the
/// daemon never dies from a process's panic, so neither may its locks).
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
