//! `Runtime.profile(pid)` and the native frames of
//! `Process.info(pid, :current_stacktrace)`: native stack samples of a
//! process while a scheduler polls it, symbolised on the session's thread.
//!
//! It never runs on a scheduler thread.

use super::*;

/// `Runtime.profile(pid)`: the window when none is given, and the longest.
pub const PROFILE_WINDOW: Duration = Duration::from_secs(1);
pub const PROFILE_MAX_WINDOW: Duration = Duration::from_secs(60);
/// The functions `Runtime.profile(pid)` lists.
pub const PROFILE_FUNCTIONS: usize = 10;

/// A process inside a poll: one native sample of it (innermost first, the
/// runtime's frames folded away), then `recorded`; between polls (or if no
/// sample can be taken) `recorded` alone.
pub(super) fn native_frames(pid: Pid, recorded: Vec<String>) -> Vec<String> {
    if system_runtime::watch::in_poll(pid.0).is_none() {
        return recorded;
    }
    match system_runtime::symbols::native_stacktrace(pid.0) {
        Ok(mut native) => {
            native.extend(recorded);
            native
        }
        Err(error) => {
            tracing::debug!(%pid, %error, "no native stack");
            recorded
        }
    }
}

impl Api {
    pub(super) fn register_profile(&self, engine: &mut Engine) {
        let api = self.clone();
        engine.register_fn("profile", move |_: RuntimeModule, pid: Pid| {
            api.profile(pid, PROFILE_WINDOW, false)
        });
        let api = self.clone();
        engine.register_fn("profile", move |_: RuntimeModule, pid: Pid, ms: i64| {
            api.profile(pid, window(ms)?, false)
        });
        let api = self.clone();
        engine.register_fn(
            "profile",
            move |_: RuntimeModule, pid: Pid, options: Map| -> Fallible<Dynamic> {
                let mut ms = PROFILE_WINDOW;
                let mut folded = false;
                for (key, value) in options {
                    match (key.as_str(), value.as_int(), value.as_bool()) {
                        ("ms", Ok(n), _) => ms = window(n)?,
                        ("folded", _, Ok(on)) => folded = on,
                        (key, _, _) => {
                            return Err(format!(
                                "unknown profile option {key:?}; known: ms (an integer), folded (a bool)"
                            )
                            .into());
                        }
                    }
                }
                api.profile(pid, ms, folded)
            },
        );
    }

    /// Samples `pid`'s native stack ~1,000 times a second of its time on a
    /// scheduler, for `window`; the hottest functions with their share, or
    /// with `folded` the folded stacks (`outermost;…;innermost count`).
    /// `()` if it is not alive. Runs on the session's thread (it sleeps
    /// between samples), never on a scheduler.
    pub(super) fn profile(&self, pid: Pid, window: Duration, folded: bool) -> Fallible<Dynamic> {
        if !self.node.registry.is_alive(pid) {
            return Ok(Dynamic::UNIT);
        }
        let registry = self.node.registry.clone();
        let interrupt = self.interrupt.clone();
        let mut checks = 0u32;
        let (samples, _idle) = system_runtime::stack::profile(pid.0, window, || {
            checks += 1;
            !interrupt.load(Relaxed) && (!checks.is_multiple_of(64) || registry.is_alive(pid))
        });
        if self.interrupt.load(Relaxed) {
            return Err(interrupted());
        }
        let report = system_runtime::symbols::Report::of(&samples);
        if folded {
            return Ok(Dynamic::from(report.folded_text()));
        }
        let mut text = format!(
            "{} samples of {pid} in {} ms",
            crate::log::thousands(report.samples as u64),
            crate::log::thousands(window.as_millis() as u64)
        );
        if report.samples == 0 {
            text.push_str(": it was never inside a poll");
        }
        for (function, count) in report.functions.iter().take(PROFILE_FUNCTIONS) {
            let share = *count as f64 * 100.0 / report.samples as f64;
            text.push_str(&format!("\n{share:5.1} % {function} ({count})"));
        }
        Ok(Dynamic::from(text))
    }
}

pub(super) fn window(ms: i64) -> Fallible<Duration> {
    let max = PROFILE_MAX_WINDOW.as_millis() as i64;
    if !(1..=max).contains(&ms) {
        return Err(format!("a profile lasts 1 to {max} ms").into());
    }
    Ok(Duration::from_millis(ms as u64))
}
