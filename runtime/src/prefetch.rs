//! The one cache prefetch of the runtime: a hint that brings the line at an
//! address closer before a walk reads it (the timer wheel's wakers, the
//! low-priority runners' tasks, a page of the process table).
//!
//! It reads nothing and never faults, whatever the address, a freed one
//! included; under Miri (which has no `_mm_prefetch`) and off x86_64 it is
//! nothing.

/// Asks the CPU to bring the cache line at `data` closer; reads nothing.
#[inline]
pub(crate) fn prefetch_line(data: *const u8) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: SSE is part of every x86_64 CPU; a prefetch is a hint that
    // never faults and reads nothing, whatever the address (a freed one
    // included).
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(data.cast());
    }
    #[cfg(any(not(target_arch = "x86_64"), miri))]
    let _ = data;
}
