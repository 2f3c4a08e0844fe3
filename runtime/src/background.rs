//! Work off the schedulers that walks the whole process table (a page's
//! census and selection, the tree, `top`'s snapshots, the metrics' memory
//! by name): each on a thread of its own at nice [`NICE`], so it takes a
//! core's idle time but never a scheduler's turn.
//!
//! Why not tokio's blocking pool: a busy scheduler gives its core away
//! once per 0.5 ms (`scheduler`'s `GIVE_WAY_AFTER`, for the I/O driver's
//! wake-ups); a walk at the same priority on the same core took each of
//! those turns for a whole kernel slice, and a million load workers on
//! one core fell to 64–81 % while pages were read (99–100 % at nice 10).
//!
//! It must not run anything a caller needs by a deadline (on a core held
//! by other programs at normal priority it gets a tenth of their share);
//! and its threads are not pooled: a walk of the table costs far more
//! than starting a thread.

/// The nice value of a background thread (10: a tenth of a normal
/// thread's weight; raising a thread's nice needs no privilege).
pub const NICE: i32 = 10;

/// Runs `work` on a new thread at [`NICE`]; `None` if no thread could be
/// started or `work` panicked.
pub async fn run<T: Send + 'static>(
    name: &'static str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            lower_this_threads_priority();
            let _ = done.send(work());
        })
        .ok()?;
    result.await.ok()
}

#[cfg(not(miri))]
fn lower_this_threads_priority() {
    use nix::libc;
    // SAFETY: `setpriority` on this thread's own id reads and writes no
    // memory of ours; a failure (it cannot fail for a thread raising its
    // own nice) only leaves the thread at its priority.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, NICE);
    }
}

/// Miri cannot call `setpriority`; priority changes nothing it checks.
#[cfg(miri)]
fn lower_this_threads_priority() {}

// Not under loom: its tokio cannot start a runtime with drivers.
#[cfg(all(test, not(loom)))]
mod tests {
    #[tokio::test]
    #[cfg_attr(miri, ignore = "Miri cannot call getpriority")]
    async fn work_runs_on_a_thread_of_its_own_at_nice_10() {
        use nix::libc;
        let here = std::thread::current().id();
        let (nice, there) = super::run("test", || {
            // SAFETY: reads this thread's own nice value; touches no memory.
            let nice =
                unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
            (nice, std::thread::current().id())
        })
        .await
        .expect("the work ran");
        assert_eq!(nice, super::NICE);
        assert_ne!(there, here);
    }
}
