//! The bare baseline: the same synthetic load (a worker sleeps a random
//! 0–1000 ms, then once a second sums 1..50 and counts it) on the same kind
//! of tokio runtime as the daemon's (multi-thread, one worker) in this
//! process, with no registry and no instrumentation, so the daemon's cost
//! per job can be compared with it.
//!
//! It runs on its own OS thread (pinned like the daemon when asked) and
//! shares nothing with the daemon.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use tokio::sync::{Notify, oneshot};

use crate::os;

/// A running bare load.
pub struct Bare {
    jobs: Arc<AtomicU64>,
    /// The kernel id of the runtime's thread (for its CPU time).
    tid: i32,
    stop: Arc<Notify>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Bare {
    /// Starts `workers` on a new one-worker runtime on a new thread;
    /// returns once every worker is spawned.
    pub async fn start(workers: u64, cpu: Option<usize>) -> anyhow::Result<Bare> {
        let jobs = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(Notify::new());
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let error_tx = tid_tx.clone();
        let (started_tx, started) = oneshot::channel();
        let counter = jobs.clone();
        let stopper = stop.clone();
        let thread = std::thread::Builder::new()
            .name("bare-runtime".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("bare-worker")
                    .on_thread_start(move || {
                        // The runtime's one worker: pinned like the daemon, measured.
                        let pinned = cpu.map(os::pin_current_thread).transpose();
                        let _ = tid_tx.send(match pinned {
                            Ok(_) => Ok(os::current_tid()),
                            Err(error) => Err(format!("{error:#}")),
                        });
                    })
                    .enable_all()
                    .build();
                let runtime = match runtime {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = error_tx.send(Err(error.to_string()));
                        return;
                    }
                };
                runtime.block_on(async move {
                    for index in 0..workers {
                        tokio::spawn(worker(counter.clone()));
                        if index % 1_000 == 999 {
                            tokio::task::yield_now().await;
                        }
                    }
                    let _ = started_tx.send(());
                    stopper.notified().await;
                });
            })
            .context("starting the bare runtime's thread")?;
        let tid = tid_rx
            .recv()
            .map_err(|_| anyhow!("the bare runtime's thread ended"))?
            .map_err(|error| anyhow!("bare runtime: {error}"))?;
        let bare = Bare {
            jobs,
            tid,
            stop,
            thread: Some(thread),
        };
        started
            .await
            .map_err(|_| anyhow!("the bare runtime ended early"))?;
        Ok(bare)
    }

    /// Jobs done so far.
    pub fn jobs(&self) -> u64 {
        self.jobs.load(Relaxed)
    }

    /// Nanoseconds on CPU of the runtime's thread so far.
    pub fn cpu_ns(&self) -> anyhow::Result<u64> {
        os::thread_cpu_ns(self.tid)
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        self.stop.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The same loop as the daemon's load worker, without a process around it.
async fn worker(jobs: Arc<AtomicU64>) {
    const PERIOD: Duration = Duration::from_secs(1);
    let mut next = tokio::time::Instant::now() + Duration::from_millis(rand::random_range(0..1000));
    loop {
        tokio::time::sleep_until(next).await;
        let sum: u64 = (1..=50u64).map(std::hint::black_box).sum();
        std::hint::black_box(sum);
        jobs.fetch_add(1, Relaxed);
        next += PERIOD;
        let now = tokio::time::Instant::now();
        if next < now {
            next = now;
        }
    }
}
