//! Containment of the plugin check's child (`system plugin-check`): before
//! the library is opened (its constructors run inside `dlopen`), a seccomp
//! filter limits the child, for the rest of its life and in every thread,
//! to the system calls the check itself makes (measured with `strace -f`,
//! docs/reliability.md): memory, threads of its own, reading files, writing
//! its verdict to the pipes it was given, its own clocks and signals to
//! itself. Anything else (a signal to another process, `ptrace`, another
//! process's memory, a file opened for writing, a new process, a socket)
//! is not made: the child prints a refusal naming the call and exits, so a
//! refused plugin cannot reach the daemon or the home on its way out.
//!
//! It must never be called in the daemon itself (the filter cannot be
//! lifted), and it must not let the plugin keep going after a forbidden
//! call: the trap's handler cannot be replaced (`rt_sigaction` on SIGSYS is
//! itself forbidden) and exits at once. `clone3` answers ENOSYS so that
//! glibc falls back to `clone`, whose flags the filter can read (threads
//! only, no `fork`).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use nix::libc;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

/// Why the child could not be contained (the check then refuses to run).
#[derive(Debug, thiserror::Error)]
pub enum ContainError {
    #[error("cannot build the check's system-call filter: {0}")]
    Build(#[from] seccompiler::BackendError),
    #[error("cannot install the check's system-call filter: {0}")]
    Install(#[from] seccompiler::Error),
    #[error("cannot catch the filter's signal (SIGSYS): {0}")]
    Handler(#[from] nix::Error),
}

/// Where the name of the forbidden call goes in the refusal line.
pub const CALL: &str = "{call}";

/// The refusal line around the call's name, and the exit status.
static REFUSAL: OnceLock<(Vec<u8>, Vec<u8>, i32)> = OnceLock::new();

/// `(libc::SYS_x, "x")` for each name.
macro_rules! calls {
    ($($name:ident),* $(,)?) => {
        &[$((libc::$name, stringify!($name))),*]
    };
}

/// Allowed whatever their arguments: they act on this process only.
#[rustfmt::skip]
const ALLOWED: &[(i64, &str)] = calls![
    SYS_read, SYS_pread64, SYS_readv, SYS_write, SYS_writev, SYS_close, SYS_lseek, SYS_newfstatat,
    SYS_fstat, SYS_statx, SYS_getcwd, SYS_readlinkat, SYS_mmap, SYS_munmap, SYS_mprotect,
    SYS_madvise, SYS_mremap, SYS_brk, SYS_futex, SYS_set_robust_list, SYS_rseq, SYS_set_tid_address,
    SYS_rt_sigprocmask, SYS_rt_sigreturn, SYS_sigaltstack, SYS_restart_syscall,
    SYS_sched_yield, SYS_sched_getaffinity, SYS_getcpu, SYS_clock_gettime, SYS_clock_getres,
    SYS_clock_nanosleep, SYS_nanosleep, SYS_gettimeofday, SYS_getpid, SYS_gettid, SYS_getppid,
    SYS_getuid, SYS_geteuid, SYS_getgid, SYS_getegid, SYS_getrandom, SYS_getrusage, SYS_uname,
    SYS_exit, SYS_exit_group,
    // Answered ENOSYS by the second filter (glibc then uses `clone`).
    SYS_clone3,
];

/// The same, for calls only x86_64 has.
#[cfg(target_arch = "x86_64")]
const ALLOWED_X86_64: &[(i64, &str)] = calls![SYS_stat, SYS_lstat, SYS_readlink, SYS_access];
#[cfg(not(target_arch = "x86_64"))]
const ALLOWED_X86_64: &[(i64, &str)] = &[];

/// Calls allowed with some arguments only, named in refusals.
#[rustfmt::skip]
const GUARDED: &[(i64, &str)] = calls![
    SYS_openat, SYS_kill, SYS_tgkill, SYS_clone, SYS_rt_sigaction, SYS_prctl,
];

/// Other calls a refusal names (any call not allowed is refused; these are
/// the ones a plugin would make to reach another process or the home).
#[rustfmt::skip]
const NAMED: &[(i64, &str)] = calls![
    SYS_tkill, SYS_rt_sigqueueinfo, SYS_rt_tgsigqueueinfo, SYS_pidfd_open, SYS_pidfd_send_signal,
    SYS_pidfd_getfd, SYS_ptrace, SYS_process_vm_readv, SYS_process_vm_writev, SYS_process_madvise,
    SYS_kcmp, SYS_execve, SYS_execveat, SYS_socket, SYS_connect, SYS_unlinkat, SYS_renameat2,
    SYS_mkdirat, SYS_fchmodat, SYS_fchownat, SYS_ftruncate, SYS_fcntl, SYS_ioctl, SYS_prlimit64,
    SYS_setpriority, SYS_sched_setaffinity, SYS_openat2, SYS_seccomp, SYS_bpf, SYS_perf_event_open,
];

/// Installs the filter on the calling process (all its threads). From then
/// on a forbidden call writes `refusal` (a verdict line, [`CALL`] replaced
/// by the call's name) to stdout and exits with `status`. Call it before
/// opening the library.
pub fn lock_down(refusal: &str, status: i32) -> Result<(), ContainError> {
    let (before, after) = refusal.rsplit_once(CALL).unwrap_or((refusal, ""));
    let _ = REFUSAL.set((
        before.as_bytes().to_vec(),
        format!("{after}\n").into_bytes(),
        status,
    ));
    let handler = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::SigAction(on_forbidden_call),
        nix::sys::signal::SaFlags::SA_SIGINFO,
        nix::sys::signal::SigSet::empty(),
    );
    // SAFETY: the handler only reads its siginfo and a value set above,
    // writes with write(2) and ends with _exit(2): async-signal-safe.
    unsafe { nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGSYS, &handler) }?;

    let arch = std::env::consts::ARCH.try_into()?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = ALLOWED
        .iter()
        .chain(ALLOWED_X86_64)
        .map(|&(call, _)| (call, Vec::new()))
        .collect();
    // The rule "argument `index` compares to `value` by `op`".
    let when = |index, op, value| -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
        let condition = SeccompCondition::new(index, SeccompCmpArgLen::Dword, op, value)?;
        Ok(vec![SeccompRule::new(vec![condition])?])
    };
    let writes = libc::O_ACCMODE | libc::O_CREAT | libc::O_TRUNC | libc::O_TMPFILE;
    let writes = (writes & !libc::O_DIRECTORY) as u64;
    let me = u64::from(std::process::id());
    let thread = libc::CLONE_THREAD as u64;
    let mut thread_names = when(0, SeccompCmpOp::Eq, libc::PR_SET_NAME as u64)?;
    thread_names.extend(when(0, SeccompCmpOp::Eq, libc::PR_GET_NAME as u64)?);
    let guarded = [
        // Reading only: nothing created, truncated or written.
        (
            libc::SYS_openat,
            when(2, SeccompCmpOp::MaskedEq(writes), 0)?,
        ),
        // Signals to this process only (`abort` is `tgkill(getpid(), …)`).
        (libc::SYS_kill, when(0, SeccompCmpOp::Eq, me)?),
        (libc::SYS_tgkill, when(0, SeccompCmpOp::Eq, me)?),
        // Threads only: no fork, so nothing outlives the check.
        (
            libc::SYS_clone,
            when(0, SeccompCmpOp::MaskedEq(thread), thread)?,
        ),
        // Any handler but for SIGSYS (this module's stays).
        (
            libc::SYS_rt_sigaction,
            when(0, SeccompCmpOp::Ne, libc::SIGSYS as u64)?,
        ),
        // Thread names (std names its threads).
        (libc::SYS_prctl, thread_names),
    ];
    rules.extend(guarded);
    let allow_list = SeccompFilter::new(rules, SeccompAction::Trap, SeccompAction::Allow, arch)?;
    let no_clone3 = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )?;
    // Each also sets no-new-privs (needed without CAP_SYS_ADMIN) with a
    // prctl the allow-list forbids: it goes last.
    for filter in [no_clone3, allow_list] {
        seccompiler::apply_filter_all_threads(&BpfProgram::try_from(filter)?)?;
    }
    Ok(())
}

/// The name of system call `number`, if this module knows it.
fn name_of(number: i64) -> Option<&'static str> {
    [ALLOWED, ALLOWED_X86_64, GUARDED, NAMED]
        .into_iter()
        .flatten()
        .find(|&&(call, _)| call == number)
        .map(|&(_, name)| name.trim_start_matches("SYS_"))
}

/// SIGSYS from the filter: print the refusal and exit, whatever the call.
extern "C" fn on_forbidden_call(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler;
    // for a seccomp SIGSYS its sigsys fields are set.
    let number = i64::from(unsafe { (*info).si_syscall() });
    let mut digits = [0u8; 32];
    let name = match name_of(number) {
        Some(name) => name.as_bytes(),
        None => decimal(number, &mut digits),
    };
    let status = match REFUSAL.get() {
        Some((before, after, status)) => {
            for part in [before.as_slice(), name, after] {
                write_all(part);
            }
            *status
        }
        None => 1,
    };
    // SAFETY: _exit is async-signal-safe and ends the process at once.
    unsafe { libc::_exit(status) };
}

/// `system call N`, without allocating.
fn decimal(number: i64, buffer: &mut [u8; 32]) -> &[u8] {
    const PREFIX: &[u8] = b"system call ";
    let mut digits = [0u8; 20];
    let (mut n, mut len) = (number.unsigned_abs(), 0);
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buffer[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut at = PREFIX.len();
    if number < 0 {
        buffer[at] = b'-';
        at += 1;
    }
    for &digit in digits[..len].iter().rev() {
        buffer[at] = digit;
        at += 1;
    }
    &buffer[..at]
}

/// write(2) to stdout until done or failed.
fn write_all(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a live slice; write(2) reads at most its length.
        let written = unsafe { libc::write(1, bytes.as_ptr().cast(), bytes.len()) };
        let Ok(written) = usize::try_from(written) else {
            return;
        };
        if written == 0 {
            return;
        }
        bytes = &bytes[written..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_number_is_spelled_without_allocating() {
        let mut buffer = [0u8; 32];
        assert_eq!(decimal(57, &mut buffer), b"system call 57");
        assert_eq!(decimal(0, &mut buffer), b"system call 0");
        assert_eq!(decimal(-1, &mut buffer), b"system call -1");
        assert_eq!(name_of(libc::SYS_kill), Some("kill"));
        assert_eq!(name_of(libc::SYS_ptrace), Some("ptrace"));
    }
}
