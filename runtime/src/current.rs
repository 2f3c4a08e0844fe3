//! The process this thread is polling right now: its activity, and an
//! opaque identity of its entry (so that a context records only inside its
//! own process's poll).
//!
//! A thread-local only; it knows the activity but not the entry (the entry
//! is an address to compare, never dereferenced here; the registry reads
//! the caller's pid through it, inside that poll), so neither `activity`
//! nor `entry` depends on the other through it.

use std::cell::Cell;
use std::ptr;

use crate::activity::Activity;

/// Who a process is, for [`with_current`]: the address of its registry
/// entry, compared and never dereferenced.
pub(crate) type Identity = *const ();

thread_local! {
    /// The process this thread is polling: its activity and its identity.
    static CURRENT: Cell<(*const Activity, Identity)> =
        const { Cell::new((ptr::null(), ptr::null())) };
}

/// Marks `activity` as the one being polled on this thread until the guard
/// drops. `activity` must stay where it is until then (it is pinned in the
/// task being polled, and the guard lives inside that poll).
pub(crate) fn polling(activity: &Activity, process: Identity) -> Polling {
    Polling(CURRENT.replace((activity, process)))
}

/// Restores the previous current process when the poll ends.
pub(crate) struct Polling((*const Activity, Identity));

impl Drop for Polling {
    fn drop(&mut self) {
        CURRENT.set(self.0);
    }
}

/// The identity of the process this thread polls now, if any.
pub(crate) fn identity() -> Option<Identity> {
    let (_, current) = CURRENT.get();
    (!current.is_null()).then_some(current)
}

/// True while this thread polls a process.
pub(crate) fn in_process() -> bool {
    !CURRENT.get().0.is_null()
}

/// Runs `f` on the activity of the process `process`, if this thread is
/// polling it right now (a context used outside its own poll, e.g. in a
/// destructor, records nothing).
pub(crate) fn with_current<R>(process: Identity, f: impl FnOnce(&Activity) -> R) -> Option<R> {
    let (activity, current) = CURRENT.get();
    // SAFETY: a non-null CURRENT was set by `polling` from a `&Activity`
    // pinned in the task being polled on this thread; the `Polling` guard
    // restores the previous value before that poll returns, so the activity
    // is alive for as long as this call (made inside the poll) lasts.
    (current == process && !activity.is_null()).then(|| f(unsafe { &*activity }))
}
