//! Native stack samples of the thread polling a process: the requester
//! signals that scheduler thread (a real-time signal, `tgkill`), whose
//! handler walks its own stack by frame pointers into a buffer prepared in
//! advance and hands it back; the addresses are symbolised afterwards,
//! outside the handler (`crate::symbols`). One sample for
//! `Process.info(pid, :current_stacktrace)` and the long-schedule report,
//! many for a profile ([`profile`]).
//!
//! Off by default: no handler is installed, no timer or signal runs until a
//! sample is asked for, and the poll path does nothing for it (the watch
//! slot it already writes says which pid its thread polls; the thread's id
//! and stack bounds are recorded once, when it registers). The handler must
//! never allocate, lock, touch a thread-local or call anything that is not
//! async-signal-safe; every frame-pointer step is bounded by the thread's
//! stack so that a bad frame pointer ends the walk instead of faulting.
//!
//! # Protocol
//!
//! One request at a time (`REQUESTER`, a mutex held by the requester, never
//! by the handler). The shared fields are all in the static `REQUEST`:
//!
//! | field | writers | readers | writer's ordering | readers' ordering |
//! |---|---|---|---|---|
//! | `tid`, `slot`, `low`, `high` | the requester, while `state` is `IDLE` | the handler, after winning `ARMED → WALKING` | `Relaxed`, published by the `Release` store of `ARMED` | `Relaxed`, after the `Acquire` CAS |
//! | `frames`, `depth`, `seen_pid`, `seen_started` | the handler, while `state` is `WALKING` | the requester, after seeing `DONE` | `Relaxed`, published by the `Release` store of `DONE` | `Relaxed`, after the `Acquire` load of `DONE` |
//! | `state` | requester: `IDLE → ARMED` (`Release` store), `ARMED → IDLE` on timeout (CAS), `DONE → IDLE` (`Relaxed` store); handler: `ARMED → WALKING` (`Acquire` CAS), `WALKING → DONE` or back `→ ARMED` (`Release` stores) | both | as said | `Acquire` |
//!
//! **Exactly one owner of the buffer at a time.** Only the handler that wins
//! `ARMED → WALKING` writes `frames`; the requester reads them only in
//! `DONE` and re-arms only after it stored `IDLE` itself. A signal that
//! comes late (after its requester gave up: `ARMED → IDLE` won by the
//! requester) finds `IDLE` or a newer request: with `IDLE` it returns at
//! once; with a request for another thread it puts `ARMED` back untouched
//! (the tid check), and the requester, which cancels only by a CAS from
//! `ARMED`, waits out that short `WALKING`. So the requester never reuses
//! the buffer while a handler writes it.
//!
//! **The sample is of the process asked for.** The handler reads the watch
//! slot of its own thread (`slot`, checked to be that thread's by the tid)
//! before it walks: the slot's fields are written only by this thread, so
//! it sees its own latest stores, in program order, exactly what the
//! interrupted code had done: the pid and start of the poll it is inside,
//! or none (between polls, or mid-way through storing a new poll's start:
//! `Slot::polling` then says none). It walks only inside a poll, and hands
//! back `seen_pid`/`seen_started` with the frames; the requester keeps the
//! sample only if that is the process it asked for (and, for the
//! long-schedule report, the very poll it saw stuck). Else the answer is
//! [`SampleError::NotInPoll`]: "no longer in a poll".
//!
//! **The handler cannot fault.** It walks only if the interrupted stack
//! pointer is inside the stack recorded for its thread, and reads only
//! stack words at `fp` and `fp + 8` with `fp` 8-aligned, at or above that
//! stack pointer and 16 bytes or more below the stack's top (`[sp, high)`
//! is mapped: it is the thread's own stack, between its current top and
//! its base), and
//! each step must go strictly up the stack, so the walk ends within
//! [`MAX_FRAMES`] steps whatever the frame pointers hold. It calls only
//! `gettid` (a system call that cannot fail, so `errno` is untouched) and
//! lock-free atomics on statics (the request, its thread's watch slot).

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicUsize};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::watch::{self, Slot};

/// The deepest stack a sample records (innermost frames first).
pub const MAX_FRAMES: usize = 128;
/// How long a requester waits for the handler before giving up (the thread
/// may be preempted by the OS; a running thread answers in microseconds).
pub const PATIENCE: Duration = Duration::from_millis(250);
/// A profile's sampling period: ~1 kHz of the process's time on a CPU.
pub const PROFILE_PERIOD: Duration = Duration::from_millis(1);

/// Why there is no sample.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SampleError {
    /// The process is not inside a poll (between polls, or it ended).
    #[error("no longer in a poll")]
    NotInPoll,
    /// This platform or thread cannot be sampled (no stack bounds, an
    /// architecture without a walker, no free real-time signal).
    #[error("native stacks unavailable: {0}")]
    Unsupported(&'static str),
    /// The signal could not be sent.
    #[error("signalling the scheduler thread failed: {0}")]
    Signal(nix::errno::Errno),
    /// The thread did not run the handler within [`PATIENCE`].
    #[error("the scheduler thread did not answer within {} ms", PATIENCE.as_millis())]
    NoAnswer,
}

/// The native stack of one moment of a poll: code addresses, innermost
/// first; the first is the interrupted instruction, the others return
/// addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub addresses: Vec<usize>,
}

const IDLE: u32 = 0;
const ARMED: u32 = 1;
const WALKING: u32 = 2;
const DONE: u32 = 3;

/// The one request in flight and the buffer its handler fills (see the
/// protocol above). Atomics throughout, so that handler and requester never
/// race on plain memory.
struct Request {
    state: AtomicU32,
    tid: AtomicI32,
    /// The address of the thread's `&'static Slot`.
    slot: AtomicUsize,
    low: AtomicUsize,
    high: AtomicUsize,
    depth: AtomicUsize,
    /// The poll the handler found its thread in (0, 0: none).
    seen_pid: AtomicU64,
    seen_started: AtomicU64,
    frames: [AtomicUsize; MAX_FRAMES],
}

static REQUEST: Request = Request {
    state: AtomicU32::new(IDLE),
    tid: AtomicI32::new(0),
    slot: AtomicUsize::new(0),
    low: AtomicUsize::new(0),
    high: AtomicUsize::new(0),
    depth: AtomicUsize::new(0),
    seen_pid: AtomicU64::new(0),
    seen_started: AtomicU64::new(0),
    frames: [const { AtomicUsize::new(0) }; MAX_FRAMES],
};

// The handler relies on these being lock-free (a lock in a handler could
// deadlock against the interrupted code).
static_assertions::const_assert!(cfg!(target_has_atomic = "32"));
static_assertions::const_assert!(cfg!(target_has_atomic = "ptr"));
static_assertions::const_assert!(cfg!(target_has_atomic = "64"));

/// Serialises requesters; never taken by the handler.
static REQUESTER: Mutex<()> = Mutex::new(());

/// The signal the sampler uses, once installed: the first real-time signal
/// above `SIGRTMIN` that nobody handles.
static SIGNAL: OnceLock<Result<nix::libc::c_int, &'static str>> = OnceLock::new();

/// Samples the native stack of the thread polling `pid` right now (in any
/// poll of `pid`: it may have yielded and been polled again meanwhile).
pub fn sample(pid: u64) -> Result<Sample, SampleError> {
    let slot = watch::schedulers()
        .find_map(|(_, slot)| {
            let (polled, _) = slot.polling()?;
            (polled == pid).then_some(slot)
        })
        .ok_or(SampleError::NotInPoll)?;
    sample_poll(slot, pid, None)
}

/// Samples the thread of `slot` if, when the handler runs, that thread is
/// inside a poll of `pid` (that started at `started`, if given).
pub fn sample_poll(
    slot: &'static Slot,
    pid: u64,
    started: Option<u64>,
) -> Result<Sample, SampleError> {
    let signal = installed()?;
    let (tid, low, high) = slot.thread().ok_or(SampleError::Unsupported(
        "the thread's stack bounds are unknown",
    ))?;
    let _one_at_a_time = REQUESTER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let wanted = |polled: Option<(u64, u64)>| {
        polled.is_some_and(|(polled, from)| polled == pid && started.is_none_or(|s| s == from))
    };
    if !wanted(slot.polling()) {
        return Err(SampleError::NotInPoll);
    }
    REQUEST.tid.store(tid, Relaxed);
    REQUEST
        .slot
        .store(std::ptr::from_ref(slot) as usize, Relaxed);
    REQUEST.low.store(low, Relaxed);
    REQUEST.high.store(high, Relaxed);
    REQUEST.state.store(ARMED, Release);
    // SAFETY: tgkill has no memory preconditions; a stale tid (the thread
    // ended) fails with ESRCH, and the thread ids of this process are only
    // reused by this process's own new threads, whose handler checks the
    // tid and puts the request back.
    let sent = unsafe { nix::libc::tgkill(nix::libc::getpid(), tid, signal) };
    if sent != 0 {
        let error = nix::errno::Errno::last();
        // A late signal of an earlier request may hold the request for a
        // moment (`WALKING`): wait it out, leaving the buffer `IDLE`.
        while !cancel() {
            if REQUEST.state.load(Acquire) == DONE {
                REQUEST.state.store(IDLE, Relaxed);
                break;
            }
            std::hint::spin_loop();
        }
        return Err(SampleError::Signal(error));
    }
    let deadline = Instant::now() + PATIENCE;
    let mut spins = 0u32;
    loop {
        if REQUEST.state.load(Acquire) == DONE {
            break;
        }
        if Instant::now() >= deadline && cancel() {
            return Err(SampleError::NoAnswer);
        }
        spins += 1;
        if spins < 200 {
            std::hint::spin_loop();
        } else {
            std::thread::sleep(Duration::from_micros(20));
        }
    }
    let seen = (
        REQUEST.seen_pid.load(Relaxed),
        REQUEST.seen_started.load(Relaxed),
    );
    let depth = REQUEST.depth.load(Relaxed).min(MAX_FRAMES);
    let addresses = REQUEST.frames[..depth]
        .iter()
        .map(|frame| frame.load(Relaxed))
        .collect();
    REQUEST.state.store(IDLE, Relaxed);
    if seen.0 == 0 || !wanted(Some(seen)) {
        return Err(SampleError::NotInPoll);
    }
    Ok(Sample { addresses })
}

/// Withdraws an armed request; false if a handler has taken it (then the
/// caller waits for `DONE` or for it to be put back).
fn cancel() -> bool {
    REQUEST
        .state
        .compare_exchange(ARMED, IDLE, Relaxed, Relaxed)
        .is_ok()
}

/// Samples `pid` about every [`PROFILE_PERIOD`] for `window`, whenever it
/// is inside a poll (other processes and the schedulers' other work are
/// never kept), while `go_on` says so. Returns the samples and how many
/// attempts found it in no poll.
pub fn profile(pid: u64, window: Duration, mut go_on: impl FnMut() -> bool) -> (Vec<Sample>, u64) {
    let mut samples = Vec::with_capacity(window.as_millis().min(100_000) as usize);
    let mut idle = 0;
    let start = Instant::now();
    let mut next = start;
    while start.elapsed() < window && go_on() {
        match sample(pid) {
            Ok(sample) => samples.push(sample),
            Err(SampleError::NotInPoll) => idle += 1,
            Err(SampleError::NoAnswer) => {}
            Err(_) => break,
        }
        next += PROFILE_PERIOD;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    (samples, idle)
}

/// Installs the handler on first use (never before: off by default).
fn installed() -> Result<nix::libc::c_int, SampleError> {
    (*SIGNAL.get_or_init(install)).map_err(SampleError::Unsupported)
}

fn install() -> Result<nix::libc::c_int, &'static str> {
    if !cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
        return Err("no frame-pointer walker for this architecture");
    }
    // glibc keeps the first real-time signals for itself; SIGRTMIN() is the
    // first one left to applications.
    let first = nix::libc::SIGRTMIN() + 1;
    for signal in first..=nix::libc::SIGRTMAX() {
        let mut old = std::mem::MaybeUninit::<nix::libc::sigaction>::zeroed();
        // SAFETY: a query (null new action) writing into a zeroed local.
        if unsafe { nix::libc::sigaction(signal, std::ptr::null(), old.as_mut_ptr()) } != 0 {
            continue;
        }
        // SAFETY: zero-initialised and written by the successful query.
        let old = unsafe { old.assume_init() };
        if old.sa_sigaction != nix::libc::SIG_DFL {
            continue; // someone else's
        }
        // SAFETY: a zeroed sigaction is a valid value to fill in.
        let mut action: nix::libc::sigaction = unsafe { std::mem::zeroed() };
        let handler: extern "C" fn(
            nix::libc::c_int,
            *mut nix::libc::siginfo_t,
            *mut nix::libc::c_void,
        ) = on_sample_signal;
        action.sa_sigaction = handler as nix::libc::sighandler_t;
        // SA_ONSTACK: on a thread near its stack's end, the kernel's signal
        // frame goes on the alternate stack (Rust's threads have one).
        action.sa_flags = nix::libc::SA_SIGINFO | nix::libc::SA_RESTART | nix::libc::SA_ONSTACK;
        // SAFETY: `sa_mask` is a live field of a local; emptying it is
        // always valid.
        unsafe { nix::libc::sigemptyset(&mut action.sa_mask) };
        // SAFETY: the handler is async-signal-safe (see the module's
        // protocol and `on_sample_signal`) and stays installed for the
        // process's life; the action is fully initialised.
        if unsafe { nix::libc::sigaction(signal, &action, std::ptr::null_mut()) } == 0 {
            tracing::debug!(signal, "native stack sampler installed");
            return Ok(signal);
        }
    }
    Err("no free real-time signal")
}

/// The handler: if the armed request is for this thread, walks its stack
/// from the interrupted registers into `REQUEST.frames`.
///
/// Async-signal-safe, line by line: atomics on statics (lock-free, asserted
/// above: the request and the thread's own watch slot, whose `polling`
/// is three loads and compares), `gettid` (a system call that cannot fail: `errno` is unchanged),
/// reads of the interrupted context the kernel passed, and volatile reads
/// of stack words inside the bounds checked in [`walk`]. No allocation, no
/// lock, no thread-local, no panic path (no indexing without a bound check
/// that is known to pass, no arithmetic that can overflow: `checked_*`).
extern "C" fn on_sample_signal(
    _signal: nix::libc::c_int,
    _info: *mut nix::libc::siginfo_t,
    context: *mut nix::libc::c_void,
) {
    if REQUEST
        .state
        .compare_exchange(ARMED, WALKING, Acquire, Relaxed)
        .is_err()
    {
        return; // a late signal of a request already withdrawn
    }
    // SAFETY: gettid has no preconditions and cannot fail.
    if REQUEST.tid.load(Relaxed) != unsafe { nix::libc::gettid() } {
        // A late signal to another thread than the one now asked for.
        REQUEST.state.store(ARMED, Release);
        return;
    }
    let slot = REQUEST.slot.load(Relaxed) as *const Slot;
    // SAFETY: the requester stored the address of a `&'static Slot` (an
    // element of the static `watch::SLOTS`) before arming.
    let polling = unsafe { &*slot }.polling();
    let (pid, started) = polling.unwrap_or((0, 0));
    let depth = match (polling, registers(context)) {
        (Some(_), Some((pc, fp, sp))) => walk(pc, fp, sp),
        _ => 0,
    };
    REQUEST.seen_pid.store(pid, Relaxed);
    REQUEST.seen_started.store(started, Relaxed);
    REQUEST.depth.store(depth, Relaxed);
    REQUEST.state.store(DONE, Release);
}

/// The interrupted `(pc, frame pointer, stack pointer)`.
fn registers(context: *mut nix::libc::c_void) -> Option<(usize, usize, usize)> {
    if context.is_null() {
        return None;
    }
    let context = context.cast::<nix::libc::ucontext_t>();
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: with SA_SIGINFO the kernel passes a valid ucontext_t for
        // the interrupted thread, alive for the handler's duration; only
        // read here.
        let gregs = unsafe { &(*context).uc_mcontext.gregs };
        let register = |index: nix::libc::c_int| {
            usize::try_from(index)
                .ok()
                .and_then(|index| gregs.get(index))
                .map(|&value| value as usize)
        };
        Some((
            register(nix::libc::REG_RIP)?,
            register(nix::libc::REG_RBP)?,
            register(nix::libc::REG_RSP)?,
        ))
    }
    #[cfg(target_arch = "aarch64")]
    {
        // SAFETY: as above; x29 is the frame pointer.
        let mcontext = unsafe { &(*context).uc_mcontext };
        Some((
            mcontext.pc as usize,
            mcontext.regs[29] as usize,
            mcontext.sp as usize,
        ))
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = context;
        None
    }
}

/// Follows the frame records (`[fp]` = the caller's frame pointer,
/// `[fp + 8]` = the return address) from the interrupted frame up the
/// stack; returns how many addresses it stored.
fn walk(pc: usize, mut fp: usize, sp: usize) -> usize {
    let stack_low = REQUEST.low.load(Relaxed);
    let high = REQUEST.high.load(Relaxed);
    let word = size_of::<usize>();
    REQUEST.frames[0].store(pc, Relaxed);
    if sp < stack_low || sp >= high {
        // Not on the stack recorded for this thread (interrupted on an
        // alternate signal stack, or a new thread that got a dead one's
        // tid): walk nothing rather than read memory not known mapped.
        return 1;
    }
    let low = sp;
    let mut depth = 1;
    while depth < MAX_FRAMES {
        let Some(record_end) = fp.checked_add(2 * word) else {
            break;
        };
        if !fp.is_multiple_of(word) || fp < low || record_end > high {
            break;
        }
        // SAFETY: `fp` and `fp + 8` are aligned words inside
        // `[sp, high)`: the interrupted thread's own stack, between its
        // current top and its base, which is mapped (module protocol). The
        // reads are volatile: the compiler must not assume anything of
        // memory the interrupted code owns.
        let (caller_fp, return_address) = unsafe {
            (
                std::ptr::read_volatile(fp as *const usize),
                std::ptr::read_volatile((fp + word) as *const usize),
            )
        };
        if return_address == 0 {
            break;
        }
        if let Some(frame) = REQUEST.frames.get(depth) {
            frame.store(return_address, Relaxed);
        }
        depth += 1;
        // Each step goes strictly up the stack: the walk ends.
        if caller_fp <= fp {
            break;
        }
        fp = caller_fp;
    }
    depth
}

#[cfg(all(test, not(loom), not(miri)))]
mod tests {
    use super::*;

    #[test]
    fn a_thread_that_is_not_in_a_poll_is_not_sampled() {
        assert_eq!(sample(u64::MAX), Err(SampleError::NotInPoll));
    }
}
