//! Computations on a plugin version: a `sum(n)` run in budgeted slices, each
//! slice's outcome checked against the ABI and told as a [`SumStep`].
//!
//! It owns what a slice *means* (done, yielded at a frame, crashed, or a
//! plugin that broke the ABI); it must not call the plugin itself (that is
//! `code::version`, the only module with `unsafe`), nor decide when a slice
//! runs (the scheduler's job).

use std::fmt;
use std::sync::Arc;

use plugin_abi as abi;

use super::version::{PluginVersion, RawSum};

/// Reductions per slice of a sum, in the daemon's `sum` processes and in the
/// check's yield check: with the naive loop (about 1 ns per number) a slice
/// takes tens of microseconds, then the process yields.
pub const SLICE_BUDGET: u64 = 20_000;

/// What one slice of a sum did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SumStep {
    Done {
        result: i128,
        reductions: u64,
    },
    Yielded {
        reductions: u64,
        /// The call about to be made, e.g. `math_plugin::calc_sum(501, -1, 125250)`.
        frame: abi::Frame,
    },
    Crashed {
        message: String,
        reductions: u64,
    },
}

impl SumStep {
    /// Reductions used in the slice.
    pub fn reductions(&self) -> u64 {
        match self {
            SumStep::Done { reductions, .. }
            | SumStep::Yielded { reductions, .. }
            | SumStep::Crashed { reductions, .. } => *reductions,
        }
    }
}

impl PluginVersion {
    /// Starts `sum(n)` on this version; the computation keeps the version loaded.
    pub fn start_sum(self: &Arc<Self>, n: i64) -> SumComputation {
        SumComputation {
            sum: RawSum::start(self, n),
        }
    }
}

/// A running `sum(n)` on one plugin version. Dropping it frees the plugin's
/// state; it keeps its version loaded until then.
pub struct SumComputation {
    sum: RawSum,
}

impl SumComputation {
    /// The version this computation runs on (even after newer loads).
    pub fn version(&self) -> &Arc<PluginVersion> {
        self.sum.version()
    }

    /// Runs at most `budget` reductions. A plugin that breaks the ABI
    /// (overruns the budget, unknown status) is reported as a crash.
    pub fn run(&mut self, budget: u64) -> SumStep {
        let Some(out) = self.sum.run(budget) else {
            return SumStep::Crashed {
                message: "the plugin could not start the computation".to_string(),
                reductions: 0,
            };
        };
        if out.reductions > budget {
            return SumStep::Crashed {
                message: format!(
                    "plugin broke the ABI: used {} reductions of a budget of {budget}",
                    out.reductions
                ),
                reductions: budget,
            };
        }
        match out.status {
            abi::SUM_DONE => SumStep::Done {
                result: out.result,
                reductions: out.reductions,
            },
            abi::SUM_YIELDED => SumStep::Yielded {
                reductions: out.reductions,
                frame: out.frame,
            },
            abi::SUM_CRASHED => SumStep::Crashed {
                message: out.message().to_string(),
                reductions: out.reductions,
            },
            other => SumStep::Crashed {
                message: format!("plugin broke the ABI: unknown status {other}"),
                reductions: out.reductions,
            },
        }
    }
}

impl fmt::Debug for SumComputation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SumComputation")
            .field("version", &self.sum.version().id())
            .field("started", &self.sum.started())
            .finish()
    }
}
