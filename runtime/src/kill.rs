//! The hand-over between a kill and the spawn of the process it kills: a
//! kill may come before the task's abort handle exists (another thread
//! finds the pid in the table between the insert and the spawn); whichever
//! of the two comes second aborts the task, exactly once.
//!
//! It only decides who aborts; it knows nothing of reasons or exits.
//!
//! # Protocol
//!
//! | field | writers | readers | ordering |
//! |---|---|---|---|
//! | `state` (bits `KILLED`, `ARMED`) | `kill` sets `KILLED`, `arm` sets `ARMED`, each with one `fetch_or` | both, through their own `fetch_or`; `is_killed` | `AcqRel` RMWs; `Acquire` load |
//! | `handle` | `arm`, once, before setting `ARMED` | `kill`, only after seeing `ARMED` | `OnceLock` (its own `Release`/`Acquire`), ordered by `state` too |
//!
//! Both `fetch_or`s are in `state`'s single modification order: the second
//! sees the first's bit, so exactly one of them sees the other's, and that
//! one aborts; a second `kill` sees `KILLED` and does nothing. If `kill` is
//! second, `arm`'s `handle` store happens before (it was set before the
//! `Release` half of `arm`'s RMW, which `kill`'s `Acquire` half reads from).
//! loom checks it: model `kill_races_spawn`.

use std::sync::OnceLock;
use std::sync::atomic::Ordering::{AcqRel, Acquire};

use crate::sync::AtomicU8;

const KILLED: u8 = 1;
const ARMED: u8 = 2;

/// What aborts a task: tokio's abort handle, or a model's stand-in.
pub(crate) trait Abort {
    fn abort(&self);
}

impl Abort for tokio::task::AbortHandle {
    fn abort(&self) {
        tokio::task::AbortHandle::abort(self);
    }
}

/// A process's kill flag and its task's abort handle.
/// A process's handle: its tokio task's, or its low-priority task's.
pub(crate) enum Handle {
    Task(tokio::task::AbortHandle),
    Low(crate::low_priority::Cancel),
    Scheduled(crate::scheduler::Cancel),
}

impl Abort for Handle {
    fn abort(&self) {
        match self {
            Handle::Task(handle) => handle.abort(),
            Handle::Low(cancel) => cancel.cancel(),
            Handle::Scheduled(cancel) => cancel.cancel(),
        }
    }
}

pub(crate) struct KillSwitch<H = Handle> {
    state: AtomicU8,
    handle: OnceLock<H>,
}

impl<H: Abort> KillSwitch<H> {
    pub(crate) fn new() -> KillSwitch<H> {
        KillSwitch {
            state: AtomicU8::new(0),
            handle: OnceLock::new(),
        }
    }

    /// Kills the task now if it is armed, or at `arm` if not. True for the
    /// first kill only.
    pub(crate) fn kill(&self) -> bool {
        let before = self.state.fetch_or(KILLED, AcqRel);
        if before & KILLED != 0 {
            return false;
        }
        if before & ARMED != 0
            && let Some(handle) = self.handle.get()
        {
            handle.abort();
        }
        true
    }

    /// Hands over the task's abort handle (once; later calls are ignored),
    /// aborting at once if a kill came first.
    pub(crate) fn arm(&self, handle: H) {
        if self.handle.set(handle).is_err() {
            return;
        }
        let before = self.state.fetch_or(ARMED, AcqRel);
        if before & KILLED != 0
            && let Some(handle) = self.handle.get()
        {
            handle.abort();
        }
    }

    /// True once the process has been killed. `Acquire`: whoever set the
    /// kill's reason before killing (see `ProcessRegistry::exit_signal`)
    /// is seen by the reader of this flag.
    pub(crate) fn is_killed(&self) -> bool {
        self.state.load(Acquire) & KILLED != 0
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    use loom::sync::Arc;
    use loom::sync::atomic::AtomicUsize;
    use loom::sync::atomic::Ordering::Relaxed;

    use super::*;

    /// Counts the aborts it receives.
    struct Counted(Arc<AtomicUsize>);

    impl Abort for Counted {
        fn abort(&self) {
            self.0.fetch_add(1, Relaxed);
        }
    }

    /// A kill racing the spawn (and a second kill) aborts the task exactly
    /// once, and exactly one kill reports it delivered.
    #[test]
    fn kill_races_spawn() {
        crate::loom_builder().check(|| {
            let switch = Arc::new(KillSwitch::<Counted>::new());
            let aborts = Arc::new(AtomicUsize::new(0));
            let killers: Vec<_> = (0..2)
                .map(|_| {
                    let switch = switch.clone();
                    loom::thread::spawn(move || switch.kill())
                })
                .collect();
            switch.arm(Counted(aborts.clone()));
            let delivered = killers
                .into_iter()
                .map(|killer| killer.join().expect("a killer"))
                .filter(|first| *first)
                .count();
            assert_eq!(delivered, 1, "one kill is the first");
            assert_eq!(aborts.load(Relaxed), 1, "the task is aborted exactly once");
            assert!(switch.is_killed());
        });
    }

    /// Without a kill, arming aborts nothing.
    #[test]
    fn spawn_without_kill_aborts_nothing() {
        crate::loom_builder().check(|| {
            let switch = KillSwitch::<Counted>::new();
            let aborts = Arc::new(AtomicUsize::new(0));
            switch.arm(Counted(aborts.clone()));
            assert_eq!(aborts.load(Relaxed), 0);
            assert!(!switch.is_killed());
        });
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    use super::*;

    struct Counted(Arc<AtomicUsize>);

    impl Abort for Counted {
        fn abort(&self) {
            self.0.fetch_add(1, Relaxed);
        }
    }

    #[test]
    fn a_kill_before_the_handle_exists_aborts_at_arm_once() {
        let aborts = Arc::new(AtomicUsize::new(0));
        let switch = KillSwitch::new();
        assert!(switch.kill());
        assert!(!switch.kill(), "a second kill is not the first");
        assert_eq!(aborts.load(Relaxed), 0);
        switch.arm(Counted(aborts.clone()));
        assert_eq!(aborts.load(Relaxed), 1);
    }

    #[test]
    fn racing_kills_and_arm_abort_exactly_once() {
        // Real threads: a smoke test (the loom model is the proof); few
        // rounds under Miri, which checks each for data races.
        let rounds = if cfg!(miri) { 3 } else { 200 };
        for _ in 0..rounds {
            let aborts = Arc::new(AtomicUsize::new(0));
            let switch = Arc::new(KillSwitch::new());
            let killers: Vec<_> = (0..2)
                .map(|_| {
                    let switch = switch.clone();
                    std::thread::spawn(move || switch.kill())
                })
                .collect();
            switch.arm(Counted(aborts.clone()));
            let firsts = killers
                .into_iter()
                .map(|killer| killer.join().expect("a killer"))
                .filter(|first| *first)
                .count();
            assert_eq!(firsts, 1);
            assert_eq!(aborts.load(Relaxed), 1);
        }
    }
}
