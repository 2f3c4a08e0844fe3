//! Checking a plugin library before the daemon loads it, in a short-lived
//! child process: `system plugin-check PATH` (hidden) opens the library,
//! checks ABI, symbols and version string, runs the self-test and the yield
//! check, and prints a one-line JSON verdict. The daemon side
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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use wait_timeout::ChildExt as _;

use super::{CodeError, PluginVersion, SLICE_BUDGET, SumStep, self_test};
use crate::log::thousands;
use system_runtime::watch::ThreadClock;

/// How long the daemon waits for a check before killing it.
pub const CHECK_DEADLINE: Duration = Duration::from_secs(5);

/// The longest a single production slice may run, as CPU time of the thread
/// running it (so a busy machine does not fail a good plugin). A slice of
/// the shipped naive loop takes ~0.11 ms in a debug build and 0.02–0.04 ms
/// in release (docs/reliability.md): this leaves 18× the debug figure, and
/// keeps a slice within the 1-ms sum round trip the load aims for.
pub const SLICE_CPU_CAP: Duration = Duration::from_millis(2);
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

/// One timed slice of the yield check.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SliceTiming {
    pub n: i64,
    pub cpu_us: u64,
    pub wall_us: u64,
    pub reductions: u64,
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
        (Some(signal), _) => {
            let name = nix::sys::signal::Signal::try_from(signal)
                .map_or_else(|_| format!("signal {signal}"), |s| s.as_str().to_owned());
            format!("the plugin crashed the check process: killed by {name}{last_words}")
        }
        (None, Some(code)) => format!("the check exited with status {code}{last_words}"),
        (None, None) => format!("the check ended abnormally{last_words}"),
    }
}

/// `system plugin-check PATH`: the child side. Prints one verdict line and
/// returns the exit status (0 passed, 2 refused).
pub fn child_main(library: &Path, shown_as: &Path) -> i32 {
    let verdict = match check(library, shown_as) {
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

fn say(verdict: &Verdict) {
    let line = serde_json::to_string(verdict).unwrap_or_default();
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
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

/// Runs one production slice of each adversarial input the plugin accepts
/// and refuses the plugin if a slice overruns [`SLICE_CPU_CAP`] or
/// [`SLICE_WALL_CAP`], or claims more reductions than its budget. A slice
/// that never returns is caught by a watchdog thread, which prints the
/// refusal and ends the process.
fn yield_check(
    version: &Arc<PluginVersion>,
    shown_as: &Path,
) -> Result<Vec<SliceTiming>, CodeError> {
    let refuse = |reason: String| CodeError::YieldCheck {
        path: shown_as.to_path_buf(),
        reason,
    };
    let mut timings = Vec::new();
    for n in ADVERSARIAL {
        if version.validate(n).is_err() {
            continue;
        }
        let mut computation = version.start_sum(n);
        let clock = ThreadClock::of_this_thread();
        let done = Arc::new(AtomicBool::new(false));
        let watchdog = {
            let (done, shown_as) = (done.clone(), shown_as.to_path_buf());
            let (cpu_start, wall_start) = (clock.now(), Instant::now());
            std::thread::spawn(move || {
                while !done.load(SeqCst) {
                    std::thread::sleep(Duration::from_millis(1));
                    let cpu = clock.now().saturating_sub(cpu_start);
                    let wall = wall_start.elapsed();
                    if (cpu > SLICE_CPU_CAP || wall > SLICE_WALL_CAP) && !done.load(SeqCst) {
                        let message = CodeError::YieldCheck {
                            path: shown_as,
                            reason: format!(
                                "a slice of sum({n}) was still running after {} ms for a budget of {} reductions; plugin code must yield",
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
        };
        let (cpu_start, wall_start) = (clock.now(), Instant::now());
        let step = computation.run(SLICE_BUDGET);
        let (cpu, wall) = (clock.now().saturating_sub(cpu_start), wall_start.elapsed());
        done.store(true, SeqCst);
        let _ = watchdog.join();
        if let SumStep::Crashed { message, .. } = &step
            && message.starts_with("plugin broke the ABI")
        {
            return Err(refuse(format!("a slice of sum({n}): {message}")));
        }
        if cpu > SLICE_CPU_CAP || wall > SLICE_WALL_CAP {
            return Err(refuse(format!(
                "a slice of sum({n}) ran {} ms for a budget of {} reductions; plugin code must yield",
                thousands(cpu.max(wall).as_millis() as u64),
                thousands(SLICE_BUDGET)
            )));
        }
        timings.push(SliceTiming {
            n,
            cpu_us: cpu.as_micros() as u64,
            wall_us: wall.as_micros() as u64,
            reductions: step.reductions(),
        });
    }
    Ok(timings)
}

/// The slices of a passed yield check, for the log.
pub fn describe(slices: &[SliceTiming]) -> String {
    slices
        .iter()
        .map(|s| {
            format!(
                "sum({}) {} µs CPU, {} µs wall, {} reductions",
                s.n, s.cpu_us, s.wall_us, s.reductions
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}
