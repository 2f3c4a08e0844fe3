//! The self-test every new plugin version passes before it serves: it
//! validates and sums known inputs, in small slices, through the same
//! `SumComputation` the daemon's sums use.
//!
//! It runs plugin code, so it runs where a crash costs nothing: in the
//! check's child process (`code::check`), or in unit tests of trusted builds.

use std::sync::Arc;

use super::{PluginVersion, SumStep};

/// Budget of each slice in the self-test (small, so several slices are exercised).
const SELF_TEST_BUDGET: u64 = 7;
/// Slices after which a self-test sum counts as hanging.
const SELF_TEST_MAX_SLICES: usize = 1_000;
/// Sums every new version must get right before it becomes current.
const SELF_TEST_SUMS: [(i64, i128); 2] = [(5, 15), (100, 5050)];

/// Checks that a freshly opened version computes and validates correctly.
pub(crate) fn self_test(version: &Arc<PluginVersion>) -> Result<(), String> {
    version
        .validate(5)
        .map_err(|reason| format!("validate(5) was rejected: {reason}"))?;
    for (n, expected) in SELF_TEST_SUMS {
        let mut computation = version.start_sum(n);
        let mut slices = 0;
        loop {
            if slices == SELF_TEST_MAX_SLICES {
                return Err(format!(
                    "sum({n}) did not finish within {SELF_TEST_MAX_SLICES} slices of {SELF_TEST_BUDGET} reductions"
                ));
            }
            slices += 1;
            match computation.run(SELF_TEST_BUDGET) {
                SumStep::Yielded { .. } => {}
                SumStep::Done { result, .. } if result == expected => break,
                SumStep::Done { result, .. } => {
                    return Err(format!("sum({n}) returned {result}, expected {expected}"));
                }
                SumStep::Crashed { message, .. } => {
                    return Err(format!("sum({n}) crashed: {message}"));
                }
            }
        }
    }
    Ok(())
}
