//! Native stack samples (`stack`, `symbols`) of real processes on a real
//! multi-thread runtime: a sample names the function a process spins in,
//! with the runtime's frames below its poll folded away; a process between
//! polls or gone is "no longer in a poll"; and frame pointers that point
//! anywhere (garbage, a loop) end the walk instead of faulting.
//!
//! Not under Miri: signals, real threads and real time.

#![cfg(not(miri))]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use system_runtime::stack::{self, SampleError};
use system_runtime::symbols::{self, Report, Symbolizer};
use system_runtime::{Pid, ProcessRegistry, Spec, watch};

/// One test at a time: each makes its own registry, whose pids start at the
/// same number, and the watch slots (which pid each scheduler polls) are
/// the process's; two tests at once would sample each other's processes.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .on_thread_start(watch::scheduler_thread_started)
        .on_thread_park(watch::scheduler_thread_parks)
        .build()
        .expect("a runtime")
}

/// Spins (holding its scheduler) until `stop`.
#[inline(never)]
fn spin_where_the_sampler_can_see(stop: &AtomicBool) {
    while !stop.load(Relaxed) {
        for _ in 0..1_000 {
            std::hint::spin_loop();
        }
    }
}

/// Sets its flag when dropped, so that a failed assertion does not leave a
/// spinner holding the scheduler (the runtime's drop would wait forever).
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Relaxed);
    }
}

fn wait_in_poll(pid: Pid) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while watch::in_poll(pid.0).is_none() {
        assert!(Instant::now() < deadline, "{pid} never entered its poll");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_sample_names_the_function_a_process_spins_in() {
    let _serial = one_at_a_time();
    let runtime = runtime();
    let registry = ProcessRegistry::new();
    let stop = Arc::new(AtomicBool::new(false));
    let _stop = StopOnDrop(stop.clone());
    let spinning = stop.clone();
    let pid = runtime.block_on(async {
        registry.spawn(
            Spec::new("spinner", "Test.spin()"),
            move |_ctx| async move {
                spin_where_the_sampler_can_see(&spinning);
            },
        )
    });
    wait_in_poll(pid);
    let frames = symbols::native_stacktrace(pid.0).expect("a sample");
    stop.store(true, Relaxed);
    // Innermost first: the spinner (or what it inlined, in a debug build,
    // e.g. its range's `next`), then the process's body.
    let spinner = frames
        .iter()
        .position(|frame| frame.starts_with("stack::spin_where_the_sampler_can_see"))
        .unwrap_or_else(|| panic!("{frames:#?}"));
    assert!(frames[spinner].contains("tests/stack.rs:"), "{frames:#?}");
    assert!(
        frames[spinner + 1..]
            .iter()
            .all(|frame| frame.starts_with("stack::a_sample_names")),
        "then only the process's body: {frames:#?}"
    );
    assert!(
        !frames
            .iter()
            .any(|frame| frame.contains("tokio::") || frame.contains("Instrumented")),
        "folded below the poll: {frames:#?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while registry.is_alive(pid) {
        assert!(Instant::now() < deadline, "the spinner did not end");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(stack::sample(pid.0), Err(SampleError::NotInPoll));
}

#[test]
fn a_profile_keeps_only_the_process_asked_for() {
    let _serial = one_at_a_time();
    let runtime = runtime();
    let registry = ProcessRegistry::new();
    let stop = Arc::new(AtomicBool::new(false));
    let _stop = StopOnDrop(stop.clone());
    let spinning = stop.clone();
    // It yields every ~100 µs, so the scheduler also runs the other one.
    let pid = runtime.block_on(async {
        registry.spawn(
            Spec::new("spinner", "Test.spin()"),
            move |_ctx| async move {
                while !spinning.load(Relaxed) {
                    let slice = Instant::now();
                    while slice.elapsed() < Duration::from_micros(100) {
                        std::hint::spin_loop();
                    }
                    tokio::task::yield_now().await;
                }
            },
        )
    });
    let other_stop = stop.clone();
    runtime.block_on(async {
        registry.spawn(Spec::new("other", "Test.other()"), move |_ctx| async move {
            while !other_stop.load(Relaxed) {
                spin_briefly_elsewhere();
                tokio::task::yield_now().await;
            }
        })
    });
    wait_in_poll(pid);
    let (samples, _idle) = stack::profile(pid.0, Duration::from_millis(300), || true);
    stop.store(true, Relaxed);
    let report = Report::of(&samples);
    assert!(report.samples > 0, "{report:?}");
    assert!(
        !report.folded_text().contains("spin_briefly_elsewhere"),
        "{}",
        report.folded_text()
    );
}

#[inline(never)]
fn spin_briefly_elsewhere() {
    let slice = Instant::now();
    while slice.elapsed() < Duration::from_micros(100) {
        std::hint::spin_loop();
    }
}

/// Holds its poll with the frame pointer set to `bad` (or, for `None`, to
/// a frame record on its own stack that points at itself) until `stop`;
/// says `entered` once the frame pointer is bad.
#[cfg(target_arch = "x86_64")]
#[inline(never)]
fn spin_with_frame_pointer(bad: Option<usize>, entered: &AtomicBool, stop: &AtomicBool) {
    let mut record = [0usize; 2];
    let looping = record.as_ptr() as usize;
    record[0] = looping;
    record[1] = 0x1234;
    std::hint::black_box(&mut record);
    // SAFETY: rbp is saved on the stack and restored before the block
    // ends; in between the loop only reads the two flags, which outlive
    // this call.
    unsafe {
        std::arch::asm!(
            "push rbp",
            "mov rbp, {bad}",
            "mov byte ptr [{entered}], 1",
            "2:",
            "pause",
            "cmp byte ptr [{stop}], 0",
            "je 2b",
            "pop rbp",
            bad = in(reg) bad.unwrap_or(looping),
            entered = in(reg) entered.as_ptr(),
            stop = in(reg) stop.as_ptr(),
        );
    }
    std::hint::black_box(&record);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn a_frame_pointer_that_points_anywhere_ends_the_walk() {
    let _serial = one_at_a_time();
    let runtime = runtime();
    let registry = ProcessRegistry::new();
    for bad in [
        Some(0),
        Some(0x8),
        Some(0xdead_beef),
        Some(0xdead_beef_0000),
        Some(usize::MAX - 7),
        // A record that points at itself: a walk that did not insist on
        // going up the stack would never end.
        None,
    ] {
        let entered = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let _stop = StopOnDrop(stop.clone());
        let (inside, spinning) = (entered.clone(), stop.clone());
        let pid = runtime.block_on(async {
            registry.spawn(Spec::new("bad-fp", "Test.bad()"), move |_ctx| async move {
                spin_with_frame_pointer(bad, &inside, &spinning);
            })
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while !entered.load(Relaxed) {
            assert!(Instant::now() < deadline, "{bad:?}: never entered");
            std::thread::yield_now();
        }
        let mut symbolizer = Symbolizer::new();
        for _ in 0..200 {
            let sample = stack::sample(pid.0).unwrap_or_else(|error| panic!("{bad:?}: {error}"));
            // The interrupted pc, and for the loop its one record: nothing
            // past the bad pointer.
            let expected = if bad.is_none() { vec![0x1234] } else { vec![] };
            assert_eq!(sample.addresses[1..], expected, "{bad:?}");
            let _ = symbolizer.frames(&sample);
        }
        stop.store(true, Relaxed);
        while registry.is_alive(pid) {
            assert!(
                Instant::now() < deadline + Duration::from_secs(10),
                "it did not end"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
