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
//! its threads are not pooled (a walk of the table costs far more than
//! starting a thread), but at most [`AT_ONCE`] run in the whole process:
//! however many requests ask (`/metrics` from many clients at once), the
//! others wait as futures, not as threads each walking the table.

use tokio::sync::Semaphore;

/// The nice value of a background thread (10: a tenth of a normal
/// thread's weight; raising a thread's nice needs no privilege).
pub const NICE: i32 = 10;

/// Background threads that may run at once, process-wide.
pub const AT_ONCE: usize = 4;

static RUNNING: Semaphore = Semaphore::const_new(AT_ONCE);

/// Runs `work` on a new thread at [`NICE`], once fewer than [`AT_ONCE`]
/// run; `None` if no thread could be started or `work` panicked.
pub async fn run<T: Send + 'static>(
    name: &'static str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    // Never closed, so acquiring cannot fail. The thread holds the turn
    // until `work` returns, even if this future is dropped meanwhile (a
    // client that went away must not free a turn its walk still takes).
    let turn = RUNNING.acquire().await.ok()?;
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            lower_this_threads_priority();
            let _ = done.send(work());
            drop(turn);
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(miri, ignore = "starts 40 threads that sleep")]
    async fn no_more_than_at_once_run_however_many_ask() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let asks = (0..40).map(|_| {
            let (running, most) = (running.clone(), most.clone());
            super::run("test", move || {
                let now = running.fetch_add(1, SeqCst) + 1;
                most.fetch_max(now, SeqCst);
                // Long enough for unbounded threads to overlap.
                std::thread::sleep(std::time::Duration::from_millis(20));
                running.fetch_sub(1, SeqCst);
            })
        });
        let done = futures::future::join_all(asks).await;
        assert!(done.iter().all(Option::is_some));
        assert!(most.load(SeqCst) <= super::AT_ONCE, "{most:?} at once");
    }
}
