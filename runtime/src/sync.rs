//! The synchronisation primitives the runtime's lock-free parts are built
//! on: std's normally, loom's when built with `--cfg loom`, so that the loom
//! models (`activity`, `kill`, `entry`, `low_priority`) check the very code the runtime
//! runs. See docs/architecture.md ("The runtime's protocol") for the command.
//!
//! Only re-exports and thin helpers: no protocol lives here. Parts that are
//! not model-checked (the watch slots, counters for /metrics) use std's
//! atomics directly, since loom's cannot be built in a `static`.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, fence,
};
#[cfg(loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};
#[cfg(loom)]
pub(crate) use loom::thread::yield_now;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, fence,
};
#[cfg(not(loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::thread::yield_now;

/// A busy-wait hint; under loom, a yield to the model's other threads (a
/// spin loop that does not yield never ends in a model).
#[inline]
pub(crate) fn spin_loop() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}

/// Locks a mutex whose data stays valid even if a holder panicked (a
/// process's panic must never take the runtime's locks down with it).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Under loom, the memory of a value that observers read through a raw
/// pointer: each read goes through [`Memory::read`], and the owner calls
/// [`Memory::free`] where the real value's memory goes. loom reports any
/// read not ordered before the free (a use after free in the real code).
#[cfg(loom)]
pub(crate) struct Memory(loom::cell::UnsafeCell<bool>);

#[cfg(loom)]
impl Memory {
    pub(crate) fn new() -> Memory {
        Memory(loom::cell::UnsafeCell::new(true))
    }

    pub(crate) fn read(&self) {
        // SAFETY: loom checks this read against `free`'s write: it panics
        // on any pair not ordered by happens-before.
        let live = self.0.with(|live| unsafe { *live });
        assert!(live, "read through a pointer to freed memory");
    }

    pub(crate) fn free(&self) {
        // SAFETY: as for `read`: loom checks every access for races.
        self.0.with_mut(|live| unsafe { *live = false });
    }
}
