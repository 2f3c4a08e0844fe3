//! The last words of a daemon killed by a fatal signal (SIGSEGV, SIGBUS,
//! SIGILL, SIGFPE, SIGABRT): one line on stderr (the log) naming the signal,
//! the plugin version that was current and, when the signal came from a
//! process's poll (a plugin that faults), that process's pid, so heart's
//! restart is not the only trace of a crash in native code.
//!
//! The handler may only do what is async-signal-safe: it reads a line
//! formatted in advance (an atomic pointer to a leaked string), calls
//! write(2), and raises the signal again with its default action. It must
//! never allocate, lock or format.

use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use nix::libc;

/// The current code, formatted when it changed (leaked: one small string per load).
static CODE: AtomicPtr<String> = AtomicPtr::new(ptr::null_mut());

const SIGNALS: [(libc::c_int, &str); 5] = [
    (libc::SIGSEGV, "SIGSEGV"),
    (libc::SIGBUS, "SIGBUS"),
    (libc::SIGILL, "SIGILL"),
    (libc::SIGFPE, "SIGFPE"),
    (libc::SIGABRT, "SIGABRT"),
];

/// Records what the handler will name as the current code.
pub fn set_code(description: String) {
    CODE.store(Box::into_raw(Box::new(description)), Ordering::Release);
}

/// Installs the handler for the fatal signals (on the threads' alternate
/// stacks where Rust set them up, so a stack overflow is reported too).
pub fn install() {
    for (signal, _) in SIGNALS {
        // SAFETY: a zeroed sigaction is valid; the handler below only calls
        // async-signal-safe functions.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_fatal_signal as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_ONSTACK | libc::SA_RESETHAND;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, ptr::null_mut());
        }
    }
}

extern "C" fn on_fatal_signal(signal: libc::c_int) {
    let name = SIGNALS
        .iter()
        .find(|(number, _)| *number == signal)
        .map_or("a fatal signal", |(_, name)| name);
    write_stderr(b"FATAL system: killed by ");
    write_stderr(name.as_bytes());
    let code = CODE.load(Ordering::Acquire);
    if !code.is_null() {
        write_stderr(b"; current code: ");
        // SAFETY: every pointer stored in CODE comes from a leaked Box and
        // is never freed.
        write_stderr(unsafe { (*code).as_bytes() });
    }
    if let Some(pid) = system_runtime::watch::polled_on_this_thread() {
        write_stderr(b"; in process #PID<0.");
        let mut digits = [0u8; 20];
        write_stderr(decimal(pid, &mut digits));
        write_stderr(b".0>");
    }
    write_stderr(b"\n");
    // SA_RESETHAND restored the default action: raised again, the signal
    // ends the process once this handler returns (a fault would also recur).
    // SAFETY: raise is async-signal-safe.
    unsafe {
        libc::raise(signal);
    }
}

/// `n` in decimal, in `buffer`, without allocating.
fn decimal(mut n: u64, buffer: &mut [u8; 20]) -> &[u8] {
    let mut start = buffer.len();
    loop {
        start -= 1;
        buffer[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buffer[start..];
        }
    }
}

fn write_stderr(bytes: &[u8]) {
    // SAFETY: write(2) on stderr with a valid buffer is async-signal-safe.
    unsafe {
        libc::write(libc::STDERR_FILENO, bytes.as_ptr().cast(), bytes.len());
    }
}

#[cfg(test)]
mod tests {
    use super::decimal;

    #[test]
    fn writes_decimals_without_allocating() {
        let mut buffer = [0u8; 20];
        assert_eq!(decimal(0, &mut buffer), b"0");
        assert_eq!(decimal(10_111, &mut buffer), b"10111");
        assert_eq!(decimal(u64::MAX, &mut buffer), b"18446744073709551615");
    }
}
