//! `SumTask`: one sum computation as its own short-lived process, running the
//! plugin's budgeted loop in slices and yielding to the scheduler between
//! them, so a naive or endless sum never holds the scheduler.
//!
//! It computes and reports; deciding what a result means to a client is the
//! connection's job.

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::node::code::{PluginVersion, SLICE_BUDGET, SumStep};
use system_runtime::{Monitor, ProcessContext, ProcessRegistry, Spec};

/// Longest text accepted as a number; longer is invalid without parsing.
pub const MAX_INPUT_LEN: usize = 100;

/// Why a submitted text is not a number to sum.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidInput {
    #[error("not a whole integer")]
    NotAnInteger,
    #[error("too large")]
    TooLarge,
    #[error("longer than {MAX_INPUT_LEN} characters")]
    TooLong,
}

/// Parses the text typed in the sum box: a whole integer that fits in i64.
pub fn parse_input(text: &str) -> Result<i64, InvalidInput> {
    if text.len() > MAX_INPUT_LEN {
        return Err(InvalidInput::TooLong);
    }
    let text = text.trim();
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(InvalidInput::NotAnInteger);
    }
    text.parse().map_err(|_| InvalidInput::TooLarge)
}

/// Starts `sum(n)` on `version` as a process linked to and monitored by
/// the calling process. The result is sent on `result` just before the
/// process ends normally; a crash or a kill shows only in the monitor's DOWN.
/// It holds at most `memory_limit` bytes (0: no limit).
pub fn spawn(
    registry: &Arc<ProcessRegistry>,
    memory_limit: u64,
    version: Arc<PluginVersion>,
    n: i64,
    result: oneshot::Sender<i128>,
) -> Monitor {
    // Linked to the connection that starts it: it ends when that ends.
    registry.spawn_link_monitor(
        Spec::new("sum", format!("Math.sum({n})"))
            .killable_from_web()
            .memory_limit(memory_limit),
        move |ctx| run(ctx, version, n, result),
    )
}

async fn run(
    ctx: ProcessContext,
    version: Arc<PluginVersion>,
    n: i64,
    result: oneshot::Sender<i128>,
) {
    ctx.set_code_version(version.id());
    ctx.enter(&"system::sum::SumTask::run/2");
    let mut computation = version.start_sum(n);
    drop(version);
    // Until the first slice returns a frame, the plugin's entry point is
    // where it is (what a long-schedule report names if it never returns).
    ctx.enter(&"math_plugin::math_sum_run/3");
    loop {
        match computation.run(SLICE_BUDGET) {
            SumStep::Yielded { reductions, frame } => {
                ctx.add_reductions(reductions);
                ctx.enter_frame(frame);
                ctx.yield_now().await;
            }
            SumStep::Done {
                result: sum,
                reductions,
            } => {
                ctx.add_reductions(reductions);
                ctx.enter(&"system::sum::SumTask::reply/2");
                ctx.returned(&format_args!("Math.sum({n})"), &sum);
                let _ = result.send(sum);
                return;
            }
            SumStep::Crashed {
                message,
                reductions,
            } => {
                ctx.add_reductions(reductions);
                // Ends the process with the plugin's reason, as a crash report.
                std::panic::panic_any(message);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_text_parses_or_is_refused_without_panicking(text in any::<String>()) {
            if let Ok(n) = parse_input(&text) {
                prop_assert_eq!(text.trim().parse::<i64>().ok(), Some(n));
            }
        }

        #[test]
        fn every_i64_round_trips(n in any::<i64>()) {
            prop_assert_eq!(parse_input(&n.to_string()), Ok(n));
        }
    }

    #[test]
    fn parses_whole_integers_only() {
        assert_eq!(parse_input("5"), Ok(5));
        assert_eq!(parse_input(" 999999999 "), Ok(999_999_999));
        assert_eq!(parse_input("-1"), Ok(-1));
        assert_eq!(parse_input("+7"), Ok(7));
        for bad in [
            "", " ", "abc", "12abc", "1.5", "1e5", "--1", "-", "0x10", "١٢",
        ] {
            assert_eq!(parse_input(bad), Err(InvalidInput::NotAnInteger), "{bad:?}");
        }
        assert_eq!(
            parse_input("99999999999999999999"),
            Err(InvalidInput::TooLarge)
        );
        assert_eq!(parse_input(&"9".repeat(101)), Err(InvalidInput::TooLong));
    }
}
