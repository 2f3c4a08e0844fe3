//! Tests of the math plugin, through its Rust API and through its C exports.
//!
//! Several tests pin the shipped bugs (13 crashes, -1 loops forever, every
//! number is accepted): they must change together with the DEMO FIX edits,
//! and must not be "fixed" on their own.

use super::*;
use proptest::prelude::*;

/// Runs `state` in slices of `budget` until it stops yielding (or `max_slices`
/// pass); returns the last step and the total reductions.
fn run_to_end(state: &mut SumState, budget: u64, max_slices: usize) -> (Step, u64) {
    let mut total = 0;
    for _ in 0..max_slices {
        let step = state.run(budget);
        assert!(
            step.reductions() <= budget,
            "slice overran its budget: {step:?}"
        );
        total += step.reductions();
        if !matches!(step, Step::Yielded { .. }) {
            return (step, total);
        }
    }
    panic!("sum did not finish within {max_slices} slices of {budget}");
}

/// One slice through the C exports.
fn run_via_ffi(state: *mut c_void, budget: u64) -> SumStep {
    let mut out = SumStep::UNWRITTEN;
    // SAFETY: `state` comes from `math_sum_start` and `out` is a live local.
    unsafe { math_sum_run(state, budget, &mut out) };
    out
}

fn closed_form(n: i64) -> i128 {
    let n = i128::from(n);
    n * (n + 1) / 2
}

proptest! {
    #[test]
    fn sum_equals_closed_form(n in 1i64..=100_000, budget in 1u64..=50_000) {
        prop_assume!(n != 13);
        let mut state = SumState::new(n);
        let (step, total) = run_to_end(&mut state, budget, 1_000_000);
        let Step::Done { result, .. } = step else {
            return Err(TestCaseError::fail(format!("sum({n}) ended with {step:?}")));
        };
        prop_assert_eq!(result, closed_form(n));
        // One reduction for calc_sum(n), then one per number.
        prop_assert_eq!(total, n as u64 + 1);
    }

    #[test]
    fn slices_respect_random_budgets(n in 1i64..=20_000, budgets in proptest::collection::vec(0u64..=5_000, 1..200)) {
        prop_assume!(n != 13);
        let mut state = SumState::new(n);
        for budget in budgets {
            let step = state.run(budget);
            prop_assert!(step.reductions() <= budget);
            if let Step::Done { result, .. } = step {
                prop_assert_eq!(result, closed_form(n));
            }
        }
    }

    #[test]
    fn sum_through_ffi_equals_closed_form(n in 1i64..=100_000) {
        prop_assume!(n != 13);
        let state = math_sum_start(n);
        prop_assert!(!state.is_null());
        let mut total = 0;
        let result = loop {
            let step = run_via_ffi(state, 10_000);
            prop_assert!(step.reductions <= 10_000);
            total += step.reductions;
            match step.status {
                plugin_abi::SUM_YIELDED => continue,
                plugin_abi::SUM_DONE => break step.result,
                other => prop_assert!(false, "unexpected status {other}: {}", step.message()),
            }
        };
        // SAFETY: `state` came from `math_sum_start` and is freed once.
        unsafe { math_sum_free(state) };
        prop_assert_eq!(result, closed_form(n));
        prop_assert_eq!(total, n as u64 + 1);
    }
}

#[test]
fn thirteen_crashes_with_error() {
    // Pins DEMO bug 2.
    let mut state = SumState::new(13);
    let step = state.run(100);
    assert_eq!(
        step,
        Step::Crashed {
            message: "error".to_string(),
            frame: Frame::new("calc_sum", &[13]),
            reductions: 1, // the call to calc_sum(13) itself
        }
    );
    // A crashed computation stays crashed.
    assert!(matches!(
        state.run(100),
        Step::Crashed { reductions: 0, .. }
    ));
}

#[test]
fn thirteen_crashes_through_ffi() {
    let state = math_sum_start(13);
    let step = run_via_ffi(state, 100);
    // SAFETY: `state` came from `math_sum_start` and is freed once.
    unsafe { math_sum_free(state) };
    assert_eq!(step.status, plugin_abi::SUM_CRASHED);
    assert_eq!(step.message(), "error");
    assert_eq!(step.frame.to_string(), "math_plugin::calc_sum(13)");
}

#[test]
fn minus_one_keeps_yielding_with_growing_from() {
    // Pins DEMO bug 1 + 3: the end test `from == to` is never true.
    for n in [-1, 0] {
        let mut state = SumState::new(n);
        let mut last_from = 0;
        for _ in 0..100 {
            let Step::Yielded { frame, reductions } = state.run(1_000) else {
                panic!("sum({n}) stopped yielding");
            };
            assert_eq!(reductions, 1_000);
            assert_eq!(frame.function(), "calc_sum");
            let &[from, to, _acc] = frame.args() else {
                panic!("unexpected frame {frame}");
            };
            assert_eq!(to, i128::from(n));
            assert!(from > last_from, "from did not grow: {frame}");
            last_from = from;
        }
    }
}

#[test]
fn minus_one_keeps_yielding_through_ffi() {
    let state = math_sum_start(-1);
    let first = run_via_ffi(state, 500);
    let second = run_via_ffi(state, 500);
    // SAFETY: `state` came from `math_sum_start` and is freed once.
    unsafe { math_sum_free(state) };
    assert_eq!(first.status, plugin_abi::SUM_YIELDED);
    assert_eq!(second.status, plugin_abi::SUM_YIELDED);
    assert_eq!(
        first.frame.to_string(),
        "math_plugin::calc_sum(500, -1, 124750)"
    );
    assert!(second.frame.args()[0] > first.frame.args()[0]);
}

#[test]
fn frames_show_the_current_call() {
    let mut state = SumState::new(10);
    assert_eq!(state.frame().to_string(), "math_plugin::calc_sum(10)");
    assert!(matches!(state.run(0), Step::Yielded { reductions: 0, .. }));
    let Step::Yielded { frame, .. } = state.run(1) else {
        panic!("expected a yield");
    };
    assert_eq!(frame.to_string(), "math_plugin::calc_sum(1, 10, 0)");
    let (step, _) = run_to_end(&mut state, 3, 100);
    assert!(matches!(step, Step::Done { result: 55, .. }));
    // Finished computations keep answering Done without work.
    assert_eq!(
        state.run(10),
        Step::Done {
            result: 55,
            reductions: 0
        }
    );
}

#[test]
fn every_number_is_accepted_for_now() {
    // Pins DEMO bug 1: the positive-number check ships commented out.
    for n in [i64::MIN, -1, 0, 1, 13, i64::MAX] {
        assert_eq!(validate(n), Ok(()));
        let mut out = Validation::rejected("unwritten");
        // SAFETY: `out` is a live local.
        unsafe { math_validate(n, &mut out) };
        assert!(out.is_accepted());
        assert_eq!(out.reason(), "");
    }
}

#[test]
fn exports_tolerate_null_pointers() {
    let mut out = SumStep::UNWRITTEN;
    // SAFETY: null state and null outs are documented as allowed.
    unsafe {
        math_sum_run(std::ptr::null_mut(), 10, &mut out);
        math_sum_run(std::ptr::null_mut(), 10, std::ptr::null_mut());
        math_validate(5, std::ptr::null_mut());
        math_sum_free(std::ptr::null_mut());
    }
    assert_eq!(out.status, plugin_abi::SUM_CRASHED);
    assert_eq!(out.message(), "no computation state");
}

#[test]
fn versions_are_reported() {
    assert_eq!(math_abi_version(), plugin_abi::ABI_VERSION);
    // SAFETY: the export returns a static NUL-terminated string.
    let version = unsafe { std::ffi::CStr::from_ptr(math_plugin_version()) };
    assert_eq!(version.to_str(), Ok(VERSION));
    assert_eq!(VERSION, "1.0.0");
}

/// The release-build check that the loop stays naive (Part 2 needs it slow):
/// `cargo test --release -p math-plugin -- --ignored naive_loop_is_not_folded`.
#[test]
#[ignore = "timing check; run in release mode"]
fn naive_loop_is_not_folded() {
    let started = std::time::Instant::now();
    let mut state = SumState::new(100_000_000);
    let (step, _) = run_to_end(&mut state, 10_000, 100_000);
    let elapsed = started.elapsed();
    assert!(matches!(step, Step::Done { result, .. } if result == closed_form(100_000_000)));
    // 1e8 real steps cannot take under 10 ms; a folded loop would take microseconds.
    assert!(elapsed.as_millis() >= 10, "loop looks folded: {elapsed:?}");
}
