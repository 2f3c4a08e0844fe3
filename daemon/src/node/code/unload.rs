//! Unloading old plugin versions off the caller's thread. The last `Arc` of
//! an old version usually drops inside a `sum` process, on a scheduler:
//! closing the library (`dlclose`), removing its versioned copy and logging
//! it would then run there. Instead the version hands its library to the
//! code server's `code-unloader` thread, which does all three.
//!
//! It must never run plugin code (closing runs no plugin function beyond the
//! library's finalisers) and never block the thread that hands a library over
//! (the queue is unbounded: at most one entry per loaded version).

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use libloading::Library;

use super::copies;

/// The name of the thread that unloads old versions.
const THREAD_NAME: &str = "code-unloader";

/// A library to close, the copy it was loaded from, and how the log names it.
pub(super) struct Unload {
    pub(super) library: Library,
    /// The versioned copy to remove; `None` for a library opened only to be checked.
    pub(super) copy: Option<PathBuf>,
    /// E.g. `math_plugin v1 (1.0.0)`.
    pub(super) name: String,
}

impl Unload {
    /// Closes the library, removes its copy and says so in the log, naming
    /// the thread it runs on.
    pub(super) fn run(self) {
        if let Err(error) = self.library.close() {
            tracing::warn!(%error, "could not unload {}", self.name);
        }
        let Some(copy) = self.copy else {
            return;
        };
        copies::remove(&copy);
        let thread = std::thread::current();
        tracing::info!(
            "code purged: {} (unloaded on thread {})",
            self.name,
            thread.name().unwrap_or("unnamed")
        );
    }
}

enum Job {
    Unload(Unload),
    /// Answered once every unload queued before it is done.
    Barrier(mpsc::SyncSender<()>),
}

/// The handle versions use to have their library unloaded on the
/// `code-unloader` thread. The thread ends when the last handle is dropped.
#[derive(Clone)]
pub struct Unloader {
    jobs: mpsc::Sender<Job>,
}

impl Unloader {
    /// Starts the `code-unloader` thread. If it cannot be started, libraries
    /// are unloaded on the thread that drops them, as before there was one.
    pub fn start() -> Unloader {
        let (jobs, queue) = mpsc::channel::<Job>();
        let started = std::thread::Builder::new()
            .name(THREAD_NAME.to_owned())
            .spawn(move || {
                for job in queue {
                    match job {
                        Job::Unload(unload) => unload.run(),
                        Job::Barrier(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            });
        if let Err(error) = started {
            tracing::warn!(%error, "cannot start the {THREAD_NAME} thread; unloading inline");
        }
        Unloader { jobs }
    }

    /// Hands `unload` to the thread (or runs it here if the thread is gone).
    pub(super) fn unload(&self, unload: Unload) {
        if let Err(mpsc::SendError(Job::Unload(unload))) = self.jobs.send(Job::Unload(unload)) {
            unload.run();
        }
    }

    /// Waits until every unload handed over before this call is done.
    pub fn settle(&self) {
        let (done, finished) = mpsc::sync_channel(1);
        if self.jobs.send(Job::Barrier(done)).is_ok() {
            let _ = finished.recv();
        }
    }

    /// [`Unloader::settle`], waiting at most `patience` (at exit: a library
    /// whose finalisers hang must not keep the daemon from ending). False if
    /// unloads were still running when it gave up.
    pub fn settle_within(&self, patience: Duration) -> bool {
        let (done, finished) = mpsc::sync_channel(1);
        self.jobs.send(Job::Barrier(done)).is_err() || finished.recv_timeout(patience).is_ok()
    }
}
