//! Checking a plugin library before the daemon loads it, in a short-lived
//! child process: `system plugin-check PATH` (hidden) contains itself
//! (`contain`: a seccomp allow-list), opens the library, checks ABI,
//! symbols and version string, runs the self-test, then the yield and
//! memory check (300 production slices of each adversarial input, each
//! timed, and the memory they keep), and prints a one-line JSON verdict. The daemon side
//! ([`ChildCheck::run`]) runs that child with a deadline and turns whatever
//! happened to it (a verdict, a signal, a missed deadline, an exit status)
//! into a one-line reason.
//!
//! The child side may crash, hang or be killed: that is what it is for. The
//! daemon side must never load anything itself, never wait past its
//! deadline, and never run on a scheduler thread (it blocks).

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use wait_timeout::ChildExt as _;

use super::{CodeError, PluginVersion, SLICE_BUDGET, SumStep, contain, self_test};
use crate::log::thousands;
use crate::{lock, node::memory};
use system_runtime::watch::ThreadClock;

/// How long the daemon waits for a check before killing it.
pub const CHECK_DEADLINE: Duration = Duration::from_secs(5);

/// The longest a single production slice may run, as CPU time of the thread
/// running it (so a busy machine does not fail a good plugin). A slice of
/// the shipped naive loop takes ~0.11 ms in a debug build and 0.02–0.04 ms
/// in release (docs/reliability.md): this leaves 18× the debug figure, and
/// keeps a slice within the 1-ms sum round trip the load aims for.
pub const SLICE_CPU_CAP: Duration = Duration::from_millis(2);
/// Slices of one input that may run over [`SLICE_CPU_CAP`] (1 % of
/// [`CHECKED_SLICES`]): a slice preempted on a busy machine, or one that
/// took a page fault, may; a plugin that does not yield overruns most.
pub const SLICES_OVER_CAP_ALLOWED: u32 = 3;
/// No slice may run longer than this at all (ten times the cap): what the
/// watchdog ends a slice that never returns at.
pub const SLICE_CPU_HARD_CAP: Duration = Duration::from_millis(20);
/// The longest a slice may take in wall-clock time (a plugin that sleeps or
/// blocks uses no CPU but still holds the scheduler).
pub const SLICE_WALL_CAP: Duration = Duration::from_secs(1);

/// Exit status of a check that refused the library (its verdict says why).
const REFUSED: i32 = 2;

/// The child's one-line answer on stdout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "lowercase")]
pub enum Verdict {
    /// Passed every check. `slices`: what each adversarial slice took.
    Passed {
        version: String,
        slices: Vec<SliceTiming>,
    },
    /// Refused; `kind` as `CodeError::kind` names it.
    Refused { kind: String, message: String },
}

/// The slices of one input in the yield check: how many ran, the slowest
/// CPU and wall time and the most reductions of one, and the bytes they
/// kept together (`None` if the allocator could not say).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SliceTiming {
    pub n: i64,
    pub slices: u32,
    pub cpu_us: u64,
    pub wall_us: u64,
    pub reductions: u64,
    pub kept_bytes: Option<i64>,
}

/// Runs `system plugin-check` as a child process with a deadline.
#[derive(Clone, Debug)]
pub struct ChildCheck {
    /// The daemon's own binary, resolved at start (shown in messages; the
    /// child is started from `/proc/self/exe`, the very file the daemon
    /// runs, even if a build has replaced the one at this path since).
    exe: PathBuf,
    deadline: Duration,
}

impl ChildCheck {
    /// A checker running this very binary; call at daemon start.
    pub fn of_this_binary() -> std::io::Result<ChildCheck> {
        Ok(ChildCheck {
            exe: std::env::current_exe()?,
            deadline: CHECK_DEADLINE,
        })
    }

    fn program(&self) -> PathBuf {
        let own = Path::new("/proc/self/exe");
        if own.exists() {
            own.to_path_buf()
        } else {
            self.exe.clone()
        }
    }

    /// Checks `library` (the versioned copy) in a child; `shown_as` is the
    /// path the operator gave, used in messages. Blocks up to the deadline:
    /// never call it on a scheduler thread. Returns the timings of the
    /// yield check's slices.
    pub fn run(&self, library: &Path, shown_as: &Path) -> Result<Vec<SliceTiming>, CodeError> {
        let failed = |reason: String| CodeError::Check {
            path: shown_as.to_path_buf(),
            reason,
        };
        let mut child = Command::new(self.program())
            .arg("plugin-check")
            .arg(library)
            .arg("--shown-as")
            .arg(shown_as)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("RUST_BACKTRACE")
            .spawn()
            .map_err(|error| {
                failed(format!(
                    "could not start the check ({} plugin-check): {error}",
                    self.exe.display()
                ))
            })?;
        let status = match child.wait_timeout(self.deadline) {
            Ok(Some(status)) => status,
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failed(format!(
                    "the check did not return within {} s (killed); a plugin call hangs",
                    self.deadline.as_secs()
                )));
            }
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failed(format!("waiting for the check failed: {error}")));
            }
        };
        let mut stdout = String::new();
        let mut stderr = String::new();
        if let Some(mut out) = child.stdout.take() {
            let _ = out.read_to_string(&mut stdout);
        }
        if let Some(mut err) = child.stderr.take() {
            let _ = err.read_to_string(&mut stderr);
        }
        let verdict = stdout
            .lines()
            .rev()
            .find_map(|line| serde_json::from_str::<Verdict>(line).ok());
        match (verdict, status.success()) {
            (Some(Verdict::Passed { slices, .. }), true) => Ok(slices),
            (Some(Verdict::Refused { kind, message }), _) if status.code() == Some(REFUSED) => {
                Err(CodeError::Refused { kind, message })
            }
            _ => Err(failed(died(status, &stderr))),
        }
    }
}

/// Why a child ended without a verdict, in one line.
fn died(status: ExitStatus, stderr: &str) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    let last_words = stderr
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .map(|line| format!(" (it said: {})", line.trim()))
        .unwrap_or_default();
    match (status.signal(), status.code()) {
        (Some(signal), _) if signal == nix::libc::SIGSYS => format!(
            "the plugin made a system call the check does not allow: killed by SIGSYS{last_words}"
        ),
        (Some(signal), _) => {
            let name = nix::sys::signal::Signal::try_from(signal)
                .map_or_else(|_| format!("signal {signal}"), |s| s.as_str().to_owned());
            format!("the plugin crashed the check process: killed by {name}{last_words}")
        }
        (None, Some(code)) => format!("the check exited with status {code}{last_words}"),
        (None, None) => format!("the check ended abnormally{last_words}"),
    }
}

/// `system plugin-check PATH`: the child side. Contains itself
/// (`contain`), then prints one verdict line and returns the exit status
/// (0 passed, 2 refused).
pub fn child_main(library: &Path, shown_as: &Path) -> i32 {
    let forbidden = Verdict::Refused {
        kind: "contained".to_owned(),
        message: format!(
            "{} was refused: the plugin made a system call the check does not allow ({})",
            shown_as.display(),
            contain::CALL
        ),
    };
    let verdict = match contain::lock_down(&line(&forbidden), REFUSED)
        .map_err(|error| CodeError::Check {
            path: shown_as.to_path_buf(),
            reason: error.to_string(),
        })
        .and_then(|()| check(library, shown_as))
    {
        Ok((version, slices)) => Verdict::Passed { version, slices },
        Err(error) => Verdict::Refused {
            kind: error.kind().to_owned(),
            message: error.to_string(),
        },
    };
    let code = match verdict {
        Verdict::Passed { .. } => 0,
        Verdict::Refused { .. } => REFUSED,
    };
    say(&verdict);
    code
}

fn line(verdict: &Verdict) -> String {
    serde_json::to_string(verdict).unwrap_or_default()
}

fn say(verdict: &Verdict) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{}", line(verdict));
    let _ = stdout.flush();
}

/// Everything the child checks, in order; the library's own path is not
/// removed (it is the daemon's versioned copy).
fn check(library: &Path, shown_as: &Path) -> Result<(String, Vec<SliceTiming>), CodeError> {
    let version = Arc::new(PluginVersion::open_for_check(library, shown_as)?);
    self_test(&version).map_err(|reason| CodeError::SelfTest {
        path: shown_as.to_path_buf(),
        reason,
    })?;
    let slices = yield_check(&version, shown_as)?;
    Ok((version.version().to_owned(), slices))
}

/// The inputs a slice is timed on: a very large n, and -1 if validation
/// accepts it (the shipped plugin does: it loops forever, in slices).
pub const ADVERSARIAL: [i64; 2] = [1_000_000_000_000_000, -1];

/// Production slices run of each adversarial input (fewer if it ends).
pub const CHECKED_SLICES: u32 = 300;

/// Bytes a slice may keep on average, in each half of the slices, before
/// the version is refused: allocator noise is a few bytes, the leak the
/// check exists for is a KiB or more. Memory kept once (a cache filled in
/// one slice) grows one half only and passes.
pub const KEPT_PER_SLICE_LIMIT: u64 = 256;

/// Memory kept beyond which the check stops early (the child must not take
/// the machine's memory): 1 GiB, over 3 MiB a slice for 300 slices.
const KEPT_AT_MOST: i64 = 1 << 30;

/// The slice in progress, for the watchdog: (n, its number, thread CPU and
/// wall time at its start).
type InProgress = Option<(i64, u32, Duration, Instant)>;

/// Runs [`CHECKED_SLICES`] production slices of each adversarial input the
/// plugin accepts and refuses the plugin if more than
/// [`SLICES_OVER_CAP_ALLOWED`] of them overrun [`SLICE_CPU_CAP`], any
/// overruns [`SLICE_CPU_HARD_CAP`] or [`SLICE_WALL_CAP`], or any claims
/// more reductions than its budget, or if the memory the slices keep grows with them
/// ([`KEPT_PER_SLICE_LIMIT`], counted by the allocator on this thread, the
/// plugin's allocations included). A slice that never returns is caught by
/// a watchdog thread, which prints the refusal and ends the process.
fn yield_check(
    version: &Arc<PluginVersion>,
    shown_as: &Path,
) -> Result<Vec<SliceTiming>, CodeError> {
    let refuse = |reason: String| CodeError::YieldCheck {
        path: shown_as.to_path_buf(),
        reason,
    };
    let clock = ThreadClock::of_this_thread();
    let in_progress: Arc<Mutex<InProgress>> = Arc::default();
    let finished = Arc::new(AtomicBool::new(false));
    let watchdog = watchdog(clock, in_progress.clone(), finished.clone(), shown_as);
    let result = (|| {
        let mut timings = Vec::new();
        for n in ADVERSARIAL {
            if version.validate(n).is_err() {
                continue;
            }
            let mut computation = version.start_sum(n);
            let mut timing = SliceTiming {
                n,
                ..SliceTiming::default()
            };
            let (mut kept, mut kept_first_half) = (Some(0i64), 0);
            let (mut over_cap, mut slowest) = (0, Duration::ZERO);
            for slice in 1..=CHECKED_SLICES {
                let (cpu_start, wall_start) = (clock.now(), Instant::now());
                *lock(&in_progress) = Some((n, slice, cpu_start, wall_start));
                let before = memory::this_thread();
                let step = computation.run(SLICE_BUDGET);
                let after = memory::this_thread();
                let (cpu, wall) = (clock.now().saturating_sub(cpu_start), wall_start.elapsed());
                *lock(&in_progress) = None;
                if let SumStep::Crashed { message, .. } = &step
                    && message.starts_with("plugin broke the ABI")
                {
                    return Err(refuse(format!("slice {slice} of sum({n}): {message}")));
                }
                if cpu > SLICE_CPU_HARD_CAP || wall > SLICE_WALL_CAP {
                    return Err(refuse(format!(
                        "slice {slice} of sum({n}) ran {} ms for a budget of {} reductions; plugin code must yield",
                        thousands(cpu.max(wall).as_millis() as u64),
                        thousands(SLICE_BUDGET)
                    )));
                }
                if cpu > SLICE_CPU_CAP {
                    over_cap += 1;
                    slowest = slowest.max(cpu);
                }
                timing.slices = slice;
                timing.cpu_us = timing.cpu_us.max(cpu.as_micros() as u64);
                timing.wall_us = timing.wall_us.max(wall.as_micros() as u64);
                timing.reductions = timing.reductions.max(step.reductions());
                kept = match (kept, before, after) {
                    (Some(kept), Some((a0, d0)), Some((a1, d1))) => {
                        Some(kept + a1.wrapping_sub(a0) as i64 - d1.wrapping_sub(d0) as i64)
                    }
                    _ => None,
                };
                if slice == CHECKED_SLICES / 2 {
                    kept_first_half = kept.unwrap_or(0);
                }
                if !matches!(step, SumStep::Yielded { .. }) || kept.unwrap_or(0) > KEPT_AT_MOST {
                    break;
                }
            }
            if over_cap > SLICES_OVER_CAP_ALLOWED {
                return Err(refuse(format!(
                    "{over_cap} of {} slices of sum({n}) ran over {} ms of CPU (the slowest {} ms) for a budget of {} reductions; plugin code must yield",
                    timing.slices,
                    SLICE_CPU_CAP.as_millis(),
                    slowest.as_millis(),
                    thousands(SLICE_BUDGET)
                )));
            }
            timing.kept_bytes = kept;
            if let Some(kept) = kept
                && keeps_memory(kept_first_half, kept, timing.slices)
            {
                return Err(CodeError::MemoryCheck {
                    path: shown_as.to_path_buf(),
                    reason: format!(
                        "sum({n}) kept {} per slice over {} slices; a slice must not keep memory",
                        bytes(kept as f64 / f64::from(timing.slices)),
                        timing.slices
                    ),
                });
            }
            timings.push(timing);
        }
        Ok(timings)
    })();
    finished.store(true, SeqCst);
    let _ = watchdog.join();
    result
}

/// Whether memory grew with the slices: in each half of a full run by more
/// than [`KEPT_PER_SLICE_LIMIT`] a slice, or, in a run cut short by
/// [`KEPT_AT_MOST`], by that much overall.
fn keeps_memory(first_half: i64, total: i64, slices: u32) -> bool {
    let limit = |slices: u32| i64::from(slices) * KEPT_PER_SLICE_LIMIT as i64;
    if total > KEPT_AT_MOST {
        return true;
    }
    slices == CHECKED_SLICES
        && first_half > limit(CHECKED_SLICES / 2)
        && total - first_half > limit(CHECKED_SLICES - CHECKED_SLICES / 2)
}

/// A watchdog thread that refuses the plugin and ends the process when the
/// slice in progress runs past its caps, until `finished`.
fn watchdog(
    clock: ThreadClock,
    in_progress: Arc<Mutex<InProgress>>,
    finished: Arc<AtomicBool>,
    shown_as: &Path,
) -> std::thread::JoinHandle<()> {
    let shown_as = shown_as.to_path_buf();
    std::thread::spawn(move || {
        while !finished.load(SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
            let running = lock(&in_progress);
            let Some((n, slice, cpu_start, wall_start)) = *running else {
                continue;
            };
            let (cpu, wall) = (clock.now().saturating_sub(cpu_start), wall_start.elapsed());
            if cpu > SLICE_CPU_HARD_CAP || wall > SLICE_WALL_CAP {
                let message = CodeError::YieldCheck {
                    path: shown_as,
                    reason: format!(
                        "slice {slice} of sum({n}) was still running after {} ms for a budget of {} reductions; plugin code must yield",
                        thousands(cpu.max(wall).as_millis() as u64),
                        thousands(SLICE_BUDGET)
                    ),
                };
                say(&Verdict::Refused {
                    kind: "yield".to_owned(),
                    message: message.to_string(),
                });
                std::process::exit(REFUSED);
            }
        }
    })
}

/// `1.0 MiB`, `3.2 KiB`, `12 bytes`.
fn bytes(count: f64) -> String {
    match count {
        c if c >= 1024.0 * 1024.0 => format!("{:.1} MiB", c / (1024.0 * 1024.0)),
        c if c >= 1024.0 => format!("{:.1} KiB", c / 1024.0),
        c => format!("{c:.0} bytes"),
    }
}

/// The slices of a passed yield check, for the log.
pub fn describe(slices: &[SliceTiming]) -> String {
    slices
        .iter()
        .map(|s| {
            format!(
                "sum({}) {} slices, the slowest {} µs CPU, {} µs wall, at most {} reductions, {} bytes kept",
                s.n,
                s.slices,
                s.cpu_us,
                s.wall_us,
                s.reductions,
                s.kept_bytes.map_or_else(|| "unknown".to_owned(), |b| b.to_string())
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_kept_in_both_halves_is_a_leak_and_kept_once_is_not() {
        let half = CHECKED_SLICES / 2;
        let per_slice = |bytes: i64| bytes * i64::from(half);
        // 1 KiB every slice: refused; nothing, or a few bytes of noise: passed.
        assert!(keeps_memory(
            per_slice(1024),
            2 * per_slice(1024),
            CHECKED_SLICES
        ));
        assert!(!keeps_memory(0, 0, CHECKED_SLICES));
        assert!(!keeps_memory(
            per_slice(8),
            2 * per_slice(8),
            CHECKED_SLICES
        ));
        // 10 MiB once, in either half: a cache, not a leak.
        assert!(!keeps_memory(10 << 20, 10 << 20, CHECKED_SLICES));
        assert!(!keeps_memory(0, 10 << 20, CHECKED_SLICES));
        // A sum that ended early has no halves to compare; past the bound is a leak.
        assert!(!keeps_memory(0, 1 << 20, 1));
        assert!(keeps_memory(0, KEPT_AT_MOST + 1, 100));
    }

    #[test]
    fn kept_bytes_read_as_people_write_them() {
        assert_eq!(bytes(1_048_576.0), "1.0 MiB");
        assert_eq!(bytes(1536.0), "1.5 KiB");
        assert_eq!(bytes(12.0), "12 bytes");
    }
}
