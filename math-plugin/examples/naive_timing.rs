//! Shows that the shipped loop stays naive in release builds: times
//! `sum(999_999_999)` run in slices of 10_000 reductions, like the daemon does.
//!
//! Run with `cargo run --release -p math-plugin --example naive_timing`.
//! It only measures; it must not change the plugin or assert on timing.

use std::time::Instant;

use math_plugin::{Step, SumState};

const N: i64 = 999_999_999;
const BUDGET: u64 = 10_000;

fn main() {
    let started = Instant::now();
    let mut state = SumState::new(N);
    let mut slices: u64 = 0;
    let outcome = loop {
        slices += 1;
        match state.run(BUDGET) {
            Step::Yielded { .. } => continue,
            other => break other,
        }
    };
    let elapsed = started.elapsed();
    match outcome {
        Step::Done { result, .. } => println!(
            "sum({N}) = {result} in {slices} slices of {BUDGET}: {elapsed:?} ({:.2} ns per reduction)",
            elapsed.as_nanos() as f64 / (N as f64 + 1.0)
        ),
        other => println!("sum({N}) did not finish: {other:?} after {elapsed:?}"),
    }
}
