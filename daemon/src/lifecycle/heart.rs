//! heart (Erlang's `heart`): the small process `system start` leaves behind,
//! which starts the daemon as its child and starts it again when it dies by
//! anything other than a stop: a signal, an escaped panic, the supervision
//! tree giving up. It logs every death, waits before each restart (from
//! [`FIRST_BACKOFF`], doubling up to [`MAX_BACKOFF`]; `stop` ends it while it
//! waits), limits restarts (at most [`MAX_RESTARTS`] in [`PERIOD`]), and
//! rolls the plugin back to the kept previous version when plugin code
//! faulted twice within [`ROLLBACK_WINDOW`] (the dying daemon's verdict in
//! the home's `fault` file, see `fatal`: a death anywhere else, such as the
//! console, never counts against the plugin).
//!
//! It stays single-threaded (it forks) and runs no runtime, no logger and no
//! plugin code: nothing that could kill it with the daemon.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid as OsPid, fork, getpid, pipe};
use serde::{Deserialize, Serialize};

use crate::os::home::Home;
use crate::server::Config;

/// Restarts allowed within [`PERIOD`]; one more death and heart gives up.
pub const MAX_RESTARTS: usize = 5;
/// The window of the restart limit.
pub const PERIOD: Duration = Duration::from_secs(60);
/// Two deaths within this window, with an upgraded plugin current, roll it back.
pub const ROLLBACK_WINDOW: Duration = Duration::from_secs(60);
/// How long a restart waits for the dead daemon's lock to be released.
const PATIENCE: Duration = Duration::from_secs(5);
/// The wait before the first restart in [`PERIOD`]; each further death doubles it.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait before a restart.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What heart writes about itself in the home (`heart.json`), for `status`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HeartState {
    pub pid: u32,
    /// Restarts since `start`.
    pub restarts: u32,
    /// How the daemon last died, e.g. `killed by SIGSEGV`.
    pub last_cause: Option<String>,
    pub last_death_unix: Option<u64>,
    /// Set when heart stopped restarting, and why.
    pub gave_up: Option<String>,
}

/// Runs heart in this (daemonized, single-threaded) process: starts the
/// daemon, tells `caller` whether its first start worked, and keeps it
/// alive. Never returns.
pub fn run(mut config: Config, caller: File) -> ! {
    let watched = signals();
    // Blocked here, taken with sigwait below; the daemon unblocks them.
    let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&watched), None);
    let home = config.home.clone();
    let mut state = HeartState {
        pid: getpid().as_raw() as u32,
        ..HeartState::default()
    };
    let _ = write_state(&home, &state);
    let mut caller = Some(caller);
    let mut deaths: VecDeque<Instant> = VecDeque::new();
    // Deaths by a fault in plugin code, for the rollback.
    let mut plugin_faults: VecDeque<Instant> = VecDeque::new();
    let mut restart = false;
    loop {
        if restart {
            if stop_requested(backoff(deaths.len()), &watched) {
                note(&home, "INFO", "stopped while waiting to restart the daemon");
                finish(&home, 0);
            }
            wait_until_unlocked(&home);
        }
        let _ = std::fs::remove_file(home.fault_file());
        let (child, ready) = spawn(Config {
            heart_pid: Some(state.pid),
            restart,
            ..config.clone()
        });
        if let Some(mut caller) = caller.take() {
            let _ = caller.write_all(ready.as_bytes());
            if !ready.starts_with("ready ") {
                let _ = waitpid(child, None);
                finish(&home, 1);
            }
            // Restarts serve where the first start did (`--http 127.0.0.1:0` too).
            if let Some(address) = served_address(&ready) {
                config.http = address;
            }
        } else if ready.starts_with("ready ") {
            note(
                &home,
                "INFO",
                &format!("the daemon serves again (pid {child})"),
            );
        } else if ready.starts_with("error already running") {
            // Someone started another daemon in this home meanwhile: it serves.
            note(&home, "WARN", "another daemon took the home; heart ends");
            let _ = waitpid(child, None);
            finish_keeping_state(0);
        }
        let (status, stopping) = wait_for(child, &watched);
        if stopping || matches!(status, WaitStatus::Exited(_, 0)) {
            finish(&home, 0);
        }
        let cause = describe(status);
        note(
            &home,
            "ERROR",
            &format!("the daemon (pid {child}) died: {cause}"),
        );
        let now = Instant::now();
        deaths.push_back(now);
        while deaths.front().is_some_and(|at| now - *at > PERIOD) {
            deaths.pop_front();
        }
        if matches!(status, WaitStatus::Signaled(..)) {
            match plugin_fault(&home) {
                Some(id) => {
                    note(
                        &home,
                        "WARN",
                        &format!("the fault was in the code of math_plugin v{id}"),
                    );
                    plugin_faults.push_back(now);
                }
                None => note(
                    &home,
                    "INFO",
                    "the fault was not in plugin code; not counted against the plugin",
                ),
            }
        }
        state.last_cause = Some(cause.clone());
        state.last_death_unix = Some(unix_now());
        if deaths.len() > MAX_RESTARTS {
            let reason = format!(
                "{} deaths in {} s (at most {MAX_RESTARTS} restarts in {} s); last: {cause}",
                deaths.len(),
                deaths.front().map_or(0, |first| (now - *first).as_secs()),
                PERIOD.as_secs()
            );
            note(&home, "ERROR", &format!("giving up: {reason}"));
            state.gave_up = Some(reason);
            let _ = write_state(&home, &state);
            finish_keeping_state(1);
        }
        roll_back_if_crashing(&config, &mut plugin_faults, now);
        state.restarts += 1;
        let _ = write_state(&home, &state);
        note(
            &home,
            "INFO",
            &format!("restarting the daemon (restart {})", state.restarts),
        );
        restart = true;
    }
}

/// Waits (up to [`PATIENCE`]) until the dead daemon's home lock is free: a
/// killed process is reaped a moment before the kernel has closed its files.
fn wait_until_unlocked(home: &Home) {
    let deadline = Instant::now() + PATIENCE;
    while home.is_locked() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The wait before the restart after the `deaths`-th death in [`PERIOD`].
pub fn backoff(deaths: usize) -> Duration {
    let doublings = u32::try_from(deaths.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(16);
    (FIRST_BACKOFF * 2_u32.pow(doublings)).min(MAX_BACKOFF)
}

/// Waits `wait` for a stop (SIGTERM, SIGINT); true if one came.
fn stop_requested(wait: Duration, watched: &SigSet) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let timeout = nix::libc::timespec {
            tv_sec: left.as_secs() as nix::libc::time_t,
            tv_nsec: nix::libc::c_long::from(left.subsec_nanos() as i32),
        };
        // SAFETY: a valid signal set (blocked in this thread), no siginfo
        // wanted, and a valid timeout.
        let signal =
            unsafe { nix::libc::sigtimedwait(watched.as_ref(), std::ptr::null_mut(), &timeout) };
        if signal == Signal::SIGTERM as i32 || signal == Signal::SIGINT as i32 {
            return true;
        }
    }
}

/// The plugin version whose code the dead daemon faulted in, from its
/// fatal handler's verdict (`plugin N`); `None` for any other death.
fn plugin_fault(home: &Home) -> Option<u32> {
    let verdict = std::fs::read_to_string(home.fault_file()).ok()?;
    verdict.trim().strip_prefix("plugin ")?.parse().ok()
}

/// Two faults in plugin code within [`ROLLBACK_WINDOW`] while a kept
/// previous version exists: make it current again, so the next start loads it.
fn roll_back_if_crashing(config: &Config, deaths: &mut VecDeque<Instant>, now: Instant) {
    let recent: Vec<Instant> = deaths
        .iter()
        .copied()
        .filter(|at| now - *at <= ROLLBACK_WINDOW)
        .collect();
    let [.., first, last] = recent[..] else {
        return;
    };
    let kept = crate::os::kept::KeptPlugins::new(config.home.plugins_dir().join("kept"));
    match kept.roll_back() {
        Ok(Some((from, to))) => note(
            &config.home,
            "WARN",
            &format!(
                "rolled back math_plugin v{} ({}) → v{} ({}) after 2 crashes in {} s",
                from.id,
                from.version,
                to.id,
                to.version,
                (last - first).as_secs()
            ),
        ),
        Ok(None) => {}
        Err(error) => note(
            &config.home,
            "ERROR",
            &format!("cannot roll back the plugin: {error}"),
        ),
    }
}

fn signals() -> SigSet {
    let mut set = SigSet::empty();
    for signal in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        set.add(signal);
    }
    set
}

/// Forks the daemon; returns its pid and its readiness line (`ready …`,
/// `error …`, or empty if it died before saying anything).
fn spawn(config: Config) -> (OsPid, String) {
    let (read_end, write_end) = match pipe() {
        Ok(ends) => ends,
        Err(error) => {
            note(
                &config.home,
                "ERROR",
                &format!("cannot create a pipe: {error}"),
            );
            finish(&config.home, 1);
        }
    };
    // SAFETY: heart is single-threaded (it never starts a thread or a
    // runtime), so the child may run anything after the fork.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(read_end);
            // Nothing of heart's stays open in the daemon (`start`'s pipe).
            crate::lifecycle::daemonized::close_inherited(write_end.as_raw_fd());
            let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
            crate::lifecycle::daemonized::run(config, write_end)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(write_end);
            (child, read_line(read_end))
        }
        Err(error) => {
            note(
                &config.home,
                "ERROR",
                &format!("cannot fork the daemon: {error}"),
            );
            finish(&config.home, 1);
        }
    }
}

/// The address in a readiness line `ready PID http://ADDRESS`.
fn served_address(ready: &str) -> Option<std::net::SocketAddr> {
    ready
        .trim_end()
        .rsplit_once("http://")
        .and_then(|(_, address)| address.parse().ok())
}

fn read_line(read_end: OwnedFd) -> String {
    let mut line = String::new();
    let _ = BufReader::new(File::from(read_end)).read_line(&mut line);
    line
}

/// Waits until `child` ends; a stop signal is passed on to it first.
/// Returns how it ended and whether heart was told to stop.
fn wait_for(child: OsPid, watched: &SigSet) -> (WaitStatus, bool) {
    let mut stopping = false;
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                return (status, stopping);
            }
            Ok(_) => {}
            Err(error) => return (WaitStatus::Exited(child, error as i32), stopping),
        }
        match watched.wait() {
            Ok(Signal::SIGTERM | Signal::SIGINT) => {
                stopping = true;
                let _ = kill(child, Signal::SIGTERM);
            }
            Ok(Signal::SIGHUP) => {
                let _ = kill(child, Signal::SIGHUP);
            }
            _ => {}
        }
    }
}

/// `killed by SIGSEGV (core dumped)`, `exited with status 1`.
fn describe(status: WaitStatus) -> String {
    match status {
        WaitStatus::Signaled(_, signal, core) => format!(
            "killed by {}{}",
            signal.as_str(),
            if core { " (core dumped)" } else { "" }
        ),
        WaitStatus::Exited(_, code) => format!("exited with status {code}"),
        other => format!("{other:?}"),
    }
}

/// Appends one line to the daemon's log, in the daemon's own format.
fn note(home: &Home, level: &str, message: &str) {
    let now = humantime::format_rfc3339_micros(SystemTime::now());
    if let Ok(mut log) = crate::os::home::open_append(&home.log_file()) {
        let _ = writeln!(log, "{now} {level:>5} heart: {message}");
    }
}

fn write_state(home: &Home, state: &HeartState) -> std::io::Result<()> {
    let json = serde_json::to_string_pretty(state).map_err(std::io::Error::other)?;
    crate::os::home::replace(&home.heart_file(), json.as_bytes())
}

/// What heart last wrote, if a heart ran in this home since the last start.
pub fn read_state(home: &Home) -> Option<HeartState> {
    let text = std::fs::read_to_string(home.heart_file()).ok()?;
    serde_json::from_str(&text).ok()
}

/// Ends heart after a stop: nothing left to report.
fn finish(home: &Home, code: i32) -> ! {
    let _ = std::fs::remove_file(home.heart_file());
    std::process::exit(code)
}

/// Ends heart, leaving `heart.json` to say why.
fn finish_keeping_state(code: i32) -> ! {
    std::process::exit(code)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
