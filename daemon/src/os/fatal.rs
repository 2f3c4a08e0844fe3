//! The last words of a daemon killed by a fatal signal (SIGSEGV, SIGBUS,
//! SIGILL, SIGFPE, SIGABRT): one line on stderr (the log) naming the signal,
//! where it happened (the faulting instruction's address, and whether it
//! lies in a loaded plugin's code), the plugin version that was current
//! and, when the signal came from a process's poll, that process's pid; and
//! a verdict for heart in the home's `fault` file: `plugin N` only when the
//! kernel raised the signal for an instruction inside plugin version N's
//! code (so heart counts the death against that code), else `other`.
//!
//! The handler may only do what is async-signal-safe: it reads a line
//! formatted in advance (an atomic pointer to a leaked string) and the
//! loaded plugins' address ranges (atomics, recorded when a version loads),
//! calls write(2), and raises the signal again with its default action. It
//! must never allocate, lock or format.

use std::ptr;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, AtomicUsize, Ordering};

use nix::libc;

/// The current code, formatted when it changed (leaked: one small string per load).
static CODE: AtomicPtr<String> = AtomicPtr::new(ptr::null_mut());

/// Where the verdict goes (the home's `fault` file, opened at start); -1: nowhere.
static VERDICT: AtomicI32 = AtomicI32::new(-1);

/// The code of one loaded plugin version: `[start, end)`, `id` 0 when free.
struct Range {
    id: AtomicU32,
    start: AtomicUsize,
    end: AtomicUsize,
}

/// Versions loaded at once (current, previous, old ones still running).
const RANGES: usize = 16;

static LOADED: [Range; RANGES] = [const {
    Range {
        id: AtomicU32::new(0),
        start: AtomicUsize::new(0),
        end: AtomicUsize::new(0),
    }
}; RANGES];

/// Records that plugin version `id` has its code at `[start, end)`.
pub fn plugin_loaded(id: u32, start: usize, end: usize) {
    let free = LOADED
        .iter()
        .find(|slot| slot.id.load(Ordering::Acquire) == id)
        .or_else(|| {
            LOADED.iter().find(|slot| {
                slot.id
                    .compare_exchange(0, u32::MAX, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            })
        });
    if let Some(slot) = free {
        slot.start.store(start, Ordering::Release);
        slot.end.store(end, Ordering::Release);
        slot.id.store(id, Ordering::Release);
    } else {
        tracing::warn!(
            "more than {RANGES} plugin versions loaded; v{id}'s faults are not told apart"
        );
    }
}

/// Forgets version `id`'s code (it is being unloaded).
pub fn plugin_unloaded(id: u32) {
    for slot in LOADED.iter() {
        if slot.id.load(Ordering::Acquire) == id {
            slot.end.store(0, Ordering::Release);
            slot.start.store(0, Ordering::Release);
            slot.id.store(0, Ordering::Release);
        }
    }
}

/// The plugin version whose code holds `address`, if any.
fn plugin_at(address: usize) -> Option<u32> {
    LOADED.iter().find_map(|slot| {
        let id = slot.id.load(Ordering::Acquire);
        let (start, end) = (
            slot.start.load(Ordering::Acquire),
            slot.end.load(Ordering::Acquire),
        );
        (id != 0 && id != u32::MAX && start <= address && address < end).then_some(id)
    })
}

/// Opens (truncating) the file the handler writes its verdict to.
pub fn record_verdicts_in(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::fd::IntoRawFd;
    let _ = std::fs::remove_file(path);
    let file = crate::os::home::open_append(path)?;
    // Kept open for the daemon's life; the handler writes through it.
    VERDICT.store(file.into_raw_fd(), Ordering::Release);
    Ok(())
}

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
            action.sa_flags = libc::SA_ONSTACK | libc::SA_RESETHAND | libc::SA_SIGINFO;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, ptr::null_mut());
        }
    }
}

/// The address of the instruction that was running, from the ucontext.
fn faulting_pc(context: *mut libc::c_void) -> Option<usize> {
    if context.is_null() {
        return None;
    }
    let context = context.cast::<libc::ucontext_t>();
    // SAFETY: with SA_SIGINFO the kernel passes a valid ucontext_t as the
    // third argument; only a register slot is read.
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    return Some(unsafe { (*context).uc_mcontext.gregs[libc::REG_RIP as usize] } as usize);
    // SAFETY: as above.
    #[cfg(all(target_os = "linux", target_arch = "aarch64"))]
    return Some(unsafe { (*context).uc_mcontext.pc } as usize);
    #[allow(unreachable_code)]
    None
}

extern "C" fn on_fatal_signal(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    let name = SIGNALS
        .iter()
        .find(|(number, _)| *number == signal)
        .map_or("a fatal signal", |(_, name)| name);
    // SAFETY: with SA_SIGINFO the kernel passes a valid siginfo_t (or null).
    let raised_by_kernel = !info.is_null() && unsafe { (*info).si_code } > 0;
    let pc = faulting_pc(context);
    let culprit = pc.filter(|_| raised_by_kernel).and_then(plugin_at);
    write_stderr(b"FATAL system: killed by ");
    write_stderr(name.as_bytes());
    let mut digits = [0u8; 20];
    match (raised_by_kernel, pc) {
        (false, _) => write_stderr(b" sent by a process"),
        (true, Some(pc)) => {
            write_stderr(b" at 0x");
            let mut hex_digits = [0u8; 16];
            write_stderr(hex(pc as u64, &mut hex_digits));
        }
        (true, None) => {}
    }
    match culprit {
        Some(id) => {
            write_stderr(b": in the code of math_plugin v");
            write_stderr(decimal(u64::from(id), &mut digits));
            write_verdict(b"plugin ");
            write_verdict(decimal(u64::from(id), &mut digits));
            write_verdict(b"\n");
        }
        None => {
            write_stderr(b": not in plugin code");
            write_verdict(b"other\n");
        }
    }
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

/// `n` in hexadecimal, in `buffer`, without allocating.
fn hex(mut n: u64, buffer: &mut [u8; 16]) -> &[u8] {
    let mut start = buffer.len();
    loop {
        start -= 1;
        buffer[start] = b"0123456789abcdef"[(n % 16) as usize];
        n /= 16;
        if n == 0 {
            return &buffer[start..];
        }
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

fn write_verdict(bytes: &[u8]) {
    let fd = VERDICT.load(Ordering::Acquire);
    if fd >= 0 {
        // SAFETY: write(2) on a descriptor this module opened and never
        // closes, with a valid buffer, is async-signal-safe.
        unsafe {
            libc::write(fd, bytes.as_ptr().cast(), bytes.len());
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
    use super::{decimal, hex, plugin_at, plugin_loaded, plugin_unloaded};

    #[test]
    fn knows_which_plugin_code_holds_an_address() {
        plugin_loaded(7, 0x1000, 0x2000);
        plugin_loaded(8, 0x5000, 0x6000);
        assert_eq!(plugin_at(0x1000), Some(7));
        assert_eq!(plugin_at(0x5fff), Some(8));
        assert_eq!(plugin_at(0x2000), None);
        plugin_unloaded(7);
        assert_eq!(plugin_at(0x1000), None);
        plugin_unloaded(8);
    }

    #[test]
    fn writes_hex_without_allocating() {
        let mut buffer = [0u8; 16];
        assert_eq!(hex(0, &mut buffer), b"0");
        assert_eq!(hex(0x7f3a_01ff, &mut buffer), b"7f3a01ff");
    }

    #[test]
    fn writes_decimals_without_allocating() {
        let mut buffer = [0u8; 20];
        assert_eq!(decimal(0, &mut buffer), b"0");
        assert_eq!(decimal(10_111, &mut buffer), b"10111");
        assert_eq!(decimal(u64::MAX, &mut buffer), b"18446744073709551615");
    }
}
