//! The versioned C ABI shared by the daemon (host) and the math plugin.
//!
//! This crate only *describes* the boundary: plain `#[repr(C)]` data, the
//! exported symbol names and the function pointer types. It must not contain
//! any behaviour of the plugin or of the host, must not allocate across the
//! boundary, and must not depend on anything. Changing a layout or a
//! signature here means bumping [`ABI_VERSION`].
//!
//! Ownership rules of the boundary:
//! - Every out-parameter (`*mut SumStep`, `*mut Validation`) is owned by the
//!   caller; the plugin only writes into it.
//! - The opaque state returned by `math_sum_start` is owned by the plugin and
//!   must be released with `math_sum_free` of the *same* library. It may be
//!   used from any thread, but by one thread at a time.
//! - Exports never unwind: a panic inside the plugin becomes a `Crashed`
//!   step or a rejected `Validation`.
//!
//! `i128` crosses the boundary: that is fine because host and plugin are two
//! Rust builds by the same compiler, never foreign C code.

use std::ffi::{c_char, c_void};
use std::fmt;

/// The ABI version this crate describes; `math_abi_version` must return it.
pub const ABI_VERSION: u32 = 1;

/// The module name shown in front of plugin functions, as in Erlang's `{module, function, args}`.
pub const MODULE: &str = "math_plugin";

/// Symbol: `fn() -> u32`, the ABI version the plugin was built against.
pub const SYM_ABI_VERSION: &[u8] = b"math_abi_version\0";
/// Symbol: `fn() -> *const c_char`, a static NUL-terminated version string such as `1.0.0`.
pub const SYM_PLUGIN_VERSION: &[u8] = b"math_plugin_version\0";
/// Symbol: `fn(n: i64, out: *mut Validation)`, decides whether `n` may be summed.
pub const SYM_VALIDATE: &[u8] = b"math_validate\0";
/// Symbol: `fn(n: i64) -> *mut c_void`, creates the opaque state of `sum(n)` (null on failure).
pub const SYM_SUM_START: &[u8] = b"math_sum_start\0";
/// Symbol: `fn(state, budget: u64, out: *mut SumStep)`, runs at most `budget` reductions.
pub const SYM_SUM_RUN: &[u8] = b"math_sum_run\0";
/// Symbol: `fn(state)`, releases the state made by `math_sum_start` (null is ignored).
pub const SYM_SUM_FREE: &[u8] = b"math_sum_free\0";

/// Every symbol a plugin must export, for checks and error messages.
pub const ALL_SYMBOLS: [&[u8]; 6] = [
    SYM_ABI_VERSION,
    SYM_PLUGIN_VERSION,
    SYM_VALIDATE,
    SYM_SUM_START,
    SYM_SUM_RUN,
    SYM_SUM_FREE,
];

/// Type of `math_abi_version`.
pub type AbiVersionFn = unsafe extern "C" fn() -> u32;
/// Type of `math_plugin_version`.
pub type PluginVersionFn = unsafe extern "C" fn() -> *const c_char;
/// Type of `math_validate`.
pub type ValidateFn = unsafe extern "C" fn(n: i64, out: *mut Validation);
/// Type of `math_sum_start`.
pub type SumStartFn = unsafe extern "C" fn(n: i64) -> *mut c_void;
/// Type of `math_sum_run`.
pub type SumRunFn = unsafe extern "C" fn(state: *mut c_void, budget: u64, out: *mut SumStep);
/// Type of `math_sum_free`.
pub type SumFreeFn = unsafe extern "C" fn(state: *mut c_void);

/// A symbol name without its trailing NUL, for messages.
pub fn symbol_name(symbol: &[u8]) -> &str {
    let without_nul = symbol.strip_suffix(b"\0").unwrap_or(symbol);
    std::str::from_utf8(without_nul).unwrap_or("<non-UTF-8 symbol>")
}

/// Copies as much of `text` into `dst` as fits, cut on a char boundary; returns the bytes written.
pub fn write_truncated(dst: &mut [u8], text: &str) -> u32 {
    let mut end = text.len().min(dst.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    dst[..end].copy_from_slice(&text.as_bytes()[..end]);
    dst[end..].fill(0);
    u32::try_from(end).unwrap_or(u32::MAX)
}

/// Reads the text written by [`write_truncated`], never trusting `len` or the bytes:
/// the length is clamped to the buffer and only the valid UTF-8 prefix is returned.
pub fn read_truncated(bytes: &[u8], len: u32) -> &str {
    let len = usize::try_from(len).map_or(bytes.len(), |len| len.min(bytes.len()));
    let bytes = &bytes[..len];
    match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(error) => std::str::from_utf8(&bytes[..error.valid_up_to()]).unwrap_or_default(),
    }
}

/// A plugin function and its current arguments, e.g. `calc_sum(from, to, acc)`.
///
/// [`Frame::EMPTY`] (no function name) means "no frame".
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Frame {
    /// UTF-8 function name, `function_len` bytes used, the rest zero.
    pub function: [u8; 32],
    pub function_len: u32,
    /// How many of `args` are used (at most 4).
    pub argc: u32,
    pub args: [i128; 4],
}

impl Frame {
    /// The "no frame" value.
    pub const EMPTY: Frame = Frame {
        function: [0; 32],
        function_len: 0,
        argc: 0,
        args: [0; 4],
    };

    /// A frame for `function(args…)`; the name is truncated to 32 bytes and only
    /// the first 4 arguments are kept.
    pub fn new(function: &str, args: &[i128]) -> Frame {
        let mut frame = Frame::EMPTY;
        frame.function_len = write_truncated(&mut frame.function, function);
        let kept = args.len().min(frame.args.len());
        frame.args[..kept].copy_from_slice(&args[..kept]);
        frame.argc = u32::try_from(kept).unwrap_or(0);
        frame
    }

    /// Whether this is [`Frame::EMPTY`] (no function).
    pub fn is_empty(&self) -> bool {
        self.function().is_empty()
    }

    /// The function name (without module).
    pub fn function(&self) -> &str {
        read_truncated(&self.function, self.function_len)
    }

    /// The arguments actually used.
    pub fn args(&self) -> &[i128] {
        let argc = usize::try_from(self.argc).map_or(0, |argc| argc.min(self.args.len()));
        &self.args[..argc]
    }
}

impl fmt::Display for Frame {
    /// `math_plugin::calc_sum(123456, -1, 7622)`, or `(no frame)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("(no frame)");
        }
        write!(f, "{MODULE}::{}(", self.function())?;
        for (index, arg) in self.args().iter().enumerate() {
            if index > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{arg}")?;
        }
        f.write_str(")")
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Frame({self})")
    }
}

/// [`SumStep::status`]: the computation finished, `result` holds the sum.
pub const SUM_DONE: u32 = 0;
/// [`SumStep::status`]: the budget ran out, `frame` shows where it stands.
pub const SUM_YIELDED: u32 = 1;
/// [`SumStep::status`]: the computation crashed, `message` says why.
pub const SUM_CRASHED: u32 = 2;

/// What one budgeted slice of a sum did (written by `math_sum_run`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SumStep {
    /// [`SUM_DONE`], [`SUM_YIELDED`] or [`SUM_CRASHED`]; anything else is a broken plugin.
    pub status: u32,
    /// Reductions actually used in this slice, never more than the budget.
    pub reductions: u64,
    /// The sum, when `status == SUM_DONE`.
    pub result: i128,
    /// The current function and arguments after the slice ([`Frame::EMPTY`] when done).
    pub frame: Frame,
    /// UTF-8 crash message, `message_len` bytes used.
    pub message: [u8; 256],
    pub message_len: u32,
}

impl SumStep {
    /// A step the plugin has not written yet (reads as a crash, so an
    /// unwritten out-parameter is never mistaken for success).
    pub const UNWRITTEN: SumStep = SumStep {
        status: SUM_CRASHED,
        reductions: 0,
        result: 0,
        frame: Frame::EMPTY,
        message: [0; 256],
        message_len: 0,
    };

    pub fn done(result: i128, reductions: u64) -> SumStep {
        SumStep {
            status: SUM_DONE,
            reductions,
            result,
            ..SumStep::UNWRITTEN
        }
    }

    pub fn yielded(frame: Frame, reductions: u64) -> SumStep {
        SumStep {
            status: SUM_YIELDED,
            reductions,
            frame,
            ..SumStep::UNWRITTEN
        }
    }

    /// A crash; the message is truncated to 256 bytes on a char boundary.
    pub fn crashed(message: &str, frame: Frame, reductions: u64) -> SumStep {
        let mut step = SumStep {
            status: SUM_CRASHED,
            reductions,
            frame,
            ..SumStep::UNWRITTEN
        };
        step.message_len = write_truncated(&mut step.message, message);
        step
    }

    /// The crash message (empty unless crashed).
    pub fn message(&self) -> &str {
        read_truncated(&self.message, self.message_len)
    }
}

/// The plugin's verdict on an input (written by `math_validate`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Validation {
    /// 1 when accepted, 0 when rejected.
    pub accepted: u32,
    /// UTF-8 reason for a rejection, `reason_len` bytes used.
    pub reason: [u8; 128],
    pub reason_len: u32,
}

impl Validation {
    /// A validation the plugin has not written yet (reads as rejected).
    pub const UNWRITTEN: Validation = Validation {
        accepted: 0,
        reason: [0; 128],
        reason_len: 0,
    };

    pub fn accepted() -> Validation {
        Validation {
            accepted: 1,
            ..Validation::UNWRITTEN
        }
    }

    /// A rejection; the reason is truncated to 128 bytes on a char boundary.
    pub fn rejected(reason: &str) -> Validation {
        let mut validation = Validation::UNWRITTEN;
        validation.reason_len = write_truncated(&mut validation.reason, reason);
        validation
    }

    pub fn is_accepted(&self) -> bool {
        self.accepted != 0
    }

    /// The rejection reason (empty when accepted).
    pub fn reason(&self) -> &str {
        read_truncated(&self.reason, self.reason_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_displays_like_an_erlang_call() {
        let frame = Frame::new("calc_sum", &[123_456, -1, 7622]);
        assert_eq!(frame.to_string(), "math_plugin::calc_sum(123456, -1, 7622)");
        assert_eq!(frame.function(), "calc_sum");
        assert_eq!(frame.args(), &[123_456, -1, 7622]);
        assert_eq!(Frame::EMPTY.to_string(), "(no frame)");
        assert!(Frame::EMPTY.is_empty());
    }

    #[test]
    fn frame_keeps_at_most_four_args_and_32_bytes_of_name() {
        let frame = Frame::new(&"f".repeat(40), &[1, 2, 3, 4, 5]);
        assert_eq!(frame.function().len(), 32);
        assert_eq!(frame.args(), &[1, 2, 3, 4]);
    }

    #[test]
    fn crash_message_is_cut_on_a_char_boundary() {
        let message = "é".repeat(200); // 400 bytes, 2 per char
        let step = SumStep::crashed(&message, Frame::EMPTY, 3);
        assert_eq!(step.message().len(), 256);
        assert!(message.starts_with(step.message()));
        let odd = format!("x{message}"); // boundary falls mid-char at 256
        let step = SumStep::crashed(&odd, Frame::EMPTY, 3);
        assert_eq!(step.message().len(), 255);
    }

    #[test]
    fn reading_never_trusts_length_or_bytes() {
        assert_eq!(read_truncated(b"abc", 99), "abc");
        assert_eq!(read_truncated(&[b'a', 0xff, b'b'], 3), "a");
    }

    #[test]
    fn validation_round_trips() {
        assert!(Validation::accepted().is_accepted());
        let rejected = Validation::rejected("must be a positive integer");
        assert!(!rejected.is_accepted());
        assert_eq!(rejected.reason(), "must be a positive integer");
    }

    #[test]
    fn symbol_names_read_without_nul() {
        assert_eq!(symbol_name(SYM_SUM_RUN), "math_sum_run");
        assert!(ALL_SYMBOLS.iter().all(|symbol| symbol.ends_with(b"\0")));
    }
}
