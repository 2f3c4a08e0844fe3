//! The hot-upgradable math plugin: `sum(n)` as a resumable, budgeted
//! computation, exported through the C ABI of `plugin-abi`.
//!
//! This is the "before" code of the talk and ships with the demo's bugs ON
//! PURPOSE: `calc_sum(13)` panics with `error`, the loop is naive (one
//! reduction per number), and the check for negatives/zero is commented out,
//! so `-1` and `0` loop forever. The three edits of Part 4 are marked
//! `DEMO FIX 1/2/3`. Do not fix them here outside the demo.
//!
//! It must never let a panic unwind across the FFI boundary, never run more
//! reductions than a slice's budget, and never let LLVM turn the naive loop
//! into a closed form (that would spoil Part 2).

use std::any::Any;
use std::ffi::{c_char, c_void};
use std::hint::black_box;
use std::panic::{AssertUnwindSafe, catch_unwind};

use plugin_abi::{ABI_VERSION, Frame, SumStep, Validation};

/// The version string, one literal for both the Rust and the C view.
/// Bump it when shipping the Part 4 fix (e.g. to `1.1.0`).
macro_rules! plugin_version {
    () => {
        "1.0.0"
    };
}

/// The plugin's version, as returned by `math_plugin_version`.
pub const VERSION: &str = plugin_version!();
const VERSION_NUL: &str = concat!(plugin_version!(), "\0");

/// The plugin function name shown in frames.
const CALC_SUM: &str = "calc_sum";

/// Decides whether `n` may be summed; `Err(reason)` rejects it.
pub fn validate(n: i64) -> Result<(), String> {
    // DEMO FIX 1: uncomment this check so negative numbers and zero are
    // rejected instead of looping forever (and drop the `let _ = n;` below).
    // if n <= 0 {
    //     return Err("must be a positive integer".to_string());
    // }
    let _ = n;
    Ok(())
}

/// Where a sum computation stands between slices.
// `Looping` is never constructed once DEMO FIX 3 is applied; keep it compiling.
#[allow(dead_code)]
#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// About to call `calc_sum(n)`.
    Entry {
        n: i128,
    },
    /// About to call `calc_sum(from, to, acc)`.
    Looping {
        from: i128,
        to: i128,
        acc: i128,
    },
    Finished {
        result: i128,
    },
    Crashed {
        message: String,
        frame: Frame,
    },
}

/// `calc_sum(n)`: the entry of the computation (one reduction).
fn calc_sum(n: i128) -> Phase {
    // DEMO FIX 2: delete this `if` (the number 13 error).
    if n == 13 {
        panic!("error");
    }
    // DEMO FIX 3: replace the naive loop with the closed form:
    //     Phase::Finished { result: n * (n + 1) / 2 }
    Phase::Looping {
        from: 1,
        to: n,
        acc: 0,
    }
}

/// The naive loop `calc_sum(from, to, acc)`: `if from == to { acc + from }`
/// else `calc_sum(from + 1, to, acc + from)`, one reduction per call, at most
/// until `*used` reaches `budget`. Because the end test is `from == to`, a
/// `to` below 1 is never reached: the loop runs forever (the bug).
// Unused once DEMO FIX 3 is applied; keep it compiling.
#[allow(dead_code)]
fn calc_sum_loop(mut from: i128, to: i128, mut acc: i128, budget: u64, used: &mut u64) -> Phase {
    while *used < budget {
        *used += 1;
        if from == to {
            return Phase::Finished { result: acc + from };
        }
        // black_box keeps every step real: no closed form, even in release builds.
        (from, acc) = black_box((from + 1, acc + from));
    }
    Phase::Looping { from, to, acc }
}

/// What one slice of a sum did (the Rust view of `plugin_abi::SumStep`).
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Done {
        result: i128,
        reductions: u64,
    },
    Yielded {
        frame: Frame,
        reductions: u64,
    },
    Crashed {
        message: String,
        frame: Frame,
        reductions: u64,
    },
}

impl Step {
    /// Reductions used in the slice.
    pub fn reductions(&self) -> u64 {
        match self {
            Step::Done { reductions, .. }
            | Step::Yielded { reductions, .. }
            | Step::Crashed { reductions, .. } => *reductions,
        }
    }

    /// The same step as C ABI data.
    pub fn to_abi(&self) -> SumStep {
        match self {
            Step::Done { result, reductions } => SumStep::done(*result, *reductions),
            Step::Yielded { frame, reductions } => SumStep::yielded(*frame, *reductions),
            Step::Crashed {
                message,
                frame,
                reductions,
            } => SumStep::crashed(message, *frame, *reductions),
        }
    }
}

/// A resumable `sum(n)`: each [`SumState::run`] does at most `budget` reductions.
#[derive(Debug, Clone, PartialEq)]
pub struct SumState {
    phase: Phase,
}

impl SumState {
    /// A computation of `sum(n)` that has not started yet.
    pub fn new(n: i64) -> SumState {
        SumState {
            phase: Phase::Entry { n: i128::from(n) },
        }
    }

    /// The call about to be made (`calc_sum(n)` or `calc_sum(from, to, acc)`),
    /// or the one that crashed; [`Frame::EMPTY`] once finished.
    pub fn frame(&self) -> Frame {
        match &self.phase {
            Phase::Entry { n } => Frame::new(CALC_SUM, &[*n]),
            Phase::Looping { from, to, acc } => Frame::new(CALC_SUM, &[*from, *to, *acc]),
            Phase::Finished { .. } => Frame::EMPTY,
            Phase::Crashed { frame, .. } => *frame,
        }
    }

    /// Runs at most `budget` reductions. A panic becomes [`Step::Crashed`] and
    /// the computation stays crashed; a finished one keeps answering `Done`
    /// with 0 reductions.
    pub fn run(&mut self, budget: u64) -> Step {
        let mut used = 0;
        let phase = &mut self.phase;
        let outcome = catch_unwind(AssertUnwindSafe(|| advance(phase, budget, &mut used)));
        if let Err(payload) = outcome {
            // The phase only changes after a call returns, so it still shows
            // the call that panicked, e.g. `calc_sum(13)`.
            self.phase = Phase::Crashed {
                message: panic_message(payload.as_ref()),
                frame: self.frame(),
            };
        }
        match &self.phase {
            Phase::Entry { .. } | Phase::Looping { .. } => Step::Yielded {
                frame: self.frame(),
                reductions: used,
            },
            Phase::Finished { result } => Step::Done {
                result: *result,
                reductions: used,
            },
            Phase::Crashed { message, frame } => Step::Crashed {
                message: message.clone(),
                frame: *frame,
                reductions: used,
            },
        }
    }
}

/// Moves `phase` forward until the budget is used up or it ends.
fn advance(phase: &mut Phase, budget: u64, used: &mut u64) {
    while *used < budget {
        match *phase {
            Phase::Entry { n } => {
                *used += 1;
                *phase = calc_sum(n);
            }
            Phase::Looping { from, to, acc } => {
                *phase = calc_sum_loop(from, to, acc, budget, used);
            }
            Phase::Finished { .. } | Phase::Crashed { .. } => return,
        }
    }
}

/// The text of a panic payload (`panic!("error")` gives `error`).
fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&'static str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "panic with a non-text payload".to_string()
    }
}

// ---- C ABI exports (see plugin-abi for the contract) ----

/// Replaces this library's panic hook (its own copy of std has its own
/// hook) with a silent one: the panic's message already reaches the host as
/// the crash's reason (and so its log, once, in the crash report); the
/// default hook would print it a second time on stderr and capture a
/// backtrace when `RUST_BACKTRACE` is set, about a megabyte per panic in a
/// dlopen'd library.
fn silence_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::panic::set_hook(Box::new(|_| {})));
}

/// The ABI version this plugin was built against.
#[unsafe(no_mangle)]
pub extern "C" fn math_abi_version() -> u32 {
    ABI_VERSION
}

/// The plugin version as a static NUL-terminated string.
#[unsafe(no_mangle)]
pub extern "C" fn math_plugin_version() -> *const c_char {
    VERSION_NUL.as_ptr().cast()
}

/// Writes the verdict on `n` into `out`; a panic becomes a rejection.
///
/// # Safety
/// `out` must be null (nothing is written) or valid for writing one `Validation`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn math_validate(n: i64, out: *mut Validation) {
    silence_panics();
    let validation = match catch_unwind(|| validate(n)) {
        Ok(Ok(())) => Validation::accepted(),
        Ok(Err(reason)) => Validation::rejected(&reason),
        Err(payload) => Validation::rejected(&panic_message(payload.as_ref())),
    };
    if !out.is_null() {
        // SAFETY: the caller promises `out` is valid for one write.
        unsafe { out.write(validation) };
    }
}

/// Creates the state of `sum(n)`; null if that failed. Free it with `math_sum_free`.
#[unsafe(no_mangle)]
pub extern "C" fn math_sum_start(n: i64) -> *mut c_void {
    silence_panics();
    catch_unwind(|| Box::into_raw(Box::new(SumState::new(n))).cast::<c_void>())
        .unwrap_or(std::ptr::null_mut())
}

/// Runs at most `budget` reductions of the computation and writes what happened into `out`.
///
/// # Safety
/// `state` must be null or a live pointer from `math_sum_start` of this
/// library, not used by another thread at the same time; `out` must be null
/// (nothing is written) or valid for writing one `SumStep`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn math_sum_run(state: *mut c_void, budget: u64, out: *mut SumStep) {
    if out.is_null() {
        return;
    }
    let step = if state.is_null() {
        SumStep::crashed("no computation state", Frame::EMPTY, 0)
    } else {
        // SAFETY: the caller promises `state` came from `math_sum_start` and is used exclusively.
        let state = unsafe { &mut *state.cast::<SumState>() };
        catch_unwind(AssertUnwindSafe(|| state.run(budget).to_abi())).unwrap_or_else(|payload| {
            SumStep::crashed(&panic_message(payload.as_ref()), Frame::EMPTY, 0)
        })
    };
    // SAFETY: checked non-null above; the caller promises it is valid for one write.
    unsafe { out.write(step) };
}

/// Releases a state made by `math_sum_start`; null is ignored.
///
/// # Safety
/// `state` must be null or a pointer from `math_sum_start` of this library
/// that has not been freed yet and is not in use.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn math_sum_free(state: *mut c_void) {
    if state.is_null() {
        return;
    }
    // SAFETY: the caller promises `state` came from `math_sum_start` and is freed once.
    let state = unsafe { Box::from_raw(state.cast::<SumState>()) };
    // Dropping integers and a String cannot panic; guard anyway so nothing unwinds.
    let _ = catch_unwind(AssertUnwindSafe(move || drop(state)));
}

// Compile-time proof that the exports match the ABI's function types.
const _: plugin_abi::AbiVersionFn = math_abi_version;
const _: plugin_abi::PluginVersionFn = math_plugin_version;
const _: plugin_abi::ValidateFn = math_validate;
const _: plugin_abi::SumStartFn = math_sum_start;
const _: plugin_abi::SumRunFn = math_sum_run;
const _: plugin_abi::SumFreeFn = math_sum_free;

#[cfg(test)]
mod tests;
