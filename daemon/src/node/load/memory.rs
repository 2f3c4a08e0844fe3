//! Gives the heap memory freed by stopped workers back to the OS, so the
//! daemon's resident memory goes down when the load goes to zero (glibc's
//! allocator otherwise keeps it for reuse).
//!
//! It runs off the schedulers (a blocking thread) and frees nothing itself.

/// Asks the allocator to return its free memory to the OS, in the background.
pub(super) fn give_back() {
    drop(tokio::task::spawn_blocking(trim));
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: malloc_trim takes no pointers and only releases memory that
    // glibc's allocator already holds as free; it is thread-safe.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
