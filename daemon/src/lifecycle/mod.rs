//! The daemon's lifecycle commands: `start` (daemonize and wait until it
//! serves), `foreground`, `stop`, `status`, `pid` and `log`.
//!
//! These run in the short-lived command process, never in the daemon,
//! except for the daemonized child that `start` becomes: it keeps none of
//! its starter's descriptors, closes the readiness pipe once it has said it
//! serves, and asks for its log to be reopened on SIGHUP. `stop` signals
//! only the process that holds the home's lock.

pub(crate) mod daemonized;
pub mod heart;

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use daemonize::{Daemonize, Outcome};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid as OsPid;

use crate::os::home::{self, DaemonState, Home};
use crate::server::{self, Config};

/// How long `stop` waits for the daemon to exit before giving up.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Daemonizes the server; returns once it serves (or could not start).
/// With `heart`, the daemonized process becomes heart, which runs the
/// daemon as its child and restarts it when it dies (see [`crate::lifecycle::heart`]).
pub fn start(config: Config, heart: bool) -> anyhow::Result<()> {
    if let Some(state) = config.home.running() {
        bail!(
            "system is already running (pid {}, {})",
            state.pid,
            state.url
        );
    }
    let log_path = config.home.log_file();
    let (log, log_failure) = match home::open_append(&log_path) {
        Ok(log) => (log, None),
        Err(error) => {
            let reason = format!("cannot open {}: {error}", log_path.display());
            eprintln!("warning: {reason}; the daemon will run without a log");
            let null = File::create("/dev/null").context("opening /dev/null")?;
            (null, Some(reason))
        }
    };
    let (read_end, write_end) = nix::unistd::pipe().context("creating the readiness pipe")?;
    let daemon = Daemonize::new()
        .working_directory(config.home.dir())
        .umask(0o077)
        .stdout(log.try_clone().context("duplicating the log file")?)
        .stderr(log);
    match daemon.execute() {
        Outcome::Parent(Ok(_)) => {
            drop(write_end);
            wait_until_ready(read_end)
        }
        Outcome::Parent(Err(error)) => bail!("cannot daemonize: {error}"),
        Outcome::Child(Ok(_)) => {
            drop(read_end);
            daemonized::close_inherited(write_end.as_raw_fd());
            if let Some(reason) = log_failure {
                crate::log::record_failure(reason);
            }
            if heart {
                crate::lifecycle::heart::run(config, File::from(write_end))
            }
            // No heart: nothing may report on a former one's behalf.
            let _ = std::fs::remove_file(config.home.heart_file());
            daemonized::run(config, write_end)
        }
        Outcome::Child(Err(error)) => {
            let _ = writeln!(File::from(write_end), "error cannot daemonize: {error}");
            std::process::exit(1);
        }
    }
}

fn wait_until_ready(read_end: OwnedFd) -> anyhow::Result<()> {
    let mut line = String::new();
    let mut pipe = BufReader::new(File::from(read_end));
    pipe.read_line(&mut line)
        .context("waiting for the daemon")?;
    // The daemon closes its end right after telling: waiting for that EOF
    // means `start` returns only once the daemon holds nothing of the pipe.
    let _ = std::io::copy(&mut pipe, &mut std::io::sink());
    let line = line.trim_end();
    if let Some(ready) = line.strip_prefix("ready ") {
        let (pid, url) = ready.split_once(' ').unwrap_or((ready, ""));
        println!("system started (pid {pid}), serving {url}");
        Ok(())
    } else if let Some(reason) = line.strip_prefix("error ") {
        bail!("system could not start: {reason}")
    } else {
        bail!("system could not start: the daemon exited early; see `system log`")
    }
}

/// Runs the server in this process, logging to stdout.
pub fn foreground(config: Config) -> anyhow::Result<()> {
    let _log = crate::log::init(crate::log::Destination::Stdout, config.tokio_console);
    server::run(config, |ready| match ready {
        Ok(state) => println!("system running (pid {}), serving {}", state.pid, state.url),
        Err(reason) => eprintln!("system could not start: {reason}"),
    })
}

/// Stops the running daemon gracefully and waits for it to exit. Only the
/// process that holds the home's lock is signalled (or, under heart, that
/// process's heart, which passes SIGTERM on and restarts nothing), never a
/// pid read from a file alone; both are waited for.
pub fn stop(home: &Home) -> anyhow::Result<()> {
    let state = home.running();
    // Between a death and the restart, or while the restarted daemon
    // starts (the state still names the dead one), heart is the one to stop.
    if state.as_ref().is_none_or(|state| !is_alive(state.pid))
        && let Some(heart) = heart_restarting(home)
    {
        signal_pinned(heart, || heart_restarting(home) == Some(heart))?;
        let deadline = Instant::now() + STOP_TIMEOUT;
        while is_alive(heart) || home.is_locked() {
            if Instant::now() > deadline {
                bail!("heart (pid {heart}) did not stop within {STOP_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        home.remove_runtime_files();
        println!("system stopped (heart pid {heart}, which was restarting the daemon)");
        return Ok(());
    }
    let Some(state) = state else {
        bail!("system is not running (home {})", home.dir().display());
    };
    let heart = heart_of(&state);
    match heart {
        Some(heart) if home.held_by(state.pid) => {
            kill(OsPid::from_raw(heart as i32), Signal::SIGTERM)
                .with_context(|| format!("signalling heart (pid {heart})"))?;
        }
        _ => signal_holder(home, state.pid)?,
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while home.is_locked() || is_alive(state.pid) || heart.is_some_and(is_alive) {
        if Instant::now() > deadline {
            bail!(
                "system (pid {}) did not stop within {STOP_TIMEOUT:?}",
                state.pid
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    home.remove_runtime_files();
    println!("system stopped (pid {})", state.pid);
    Ok(())
}

/// The daemon's heart, if it has one: the pid it was started with, and only
/// while that is still the daemon's parent.
fn heart_of(state: &DaemonState) -> Option<u32> {
    let heart = state.heart_pid?;
    (parent_of(state.pid) == Some(heart)).then_some(heart)
}

/// The pid of this home's heart while it runs without a serving daemon
/// (between a death and the restart): the pid `heart.json` names, only if
/// that process runs this same binary in this home (its working directory)
/// and heart has not given up.
fn heart_restarting(home: &Home) -> Option<u32> {
    use std::os::unix::fs::MetadataExt as _;
    let state = crate::lifecycle::heart::read_state(home)?;
    if state.gave_up.is_some() || !is_alive(state.pid) {
        return None;
    }
    let same =
        |a: std::fs::Metadata, b: std::fs::Metadata| (a.dev(), a.ino()) == (b.dev(), b.ino());
    let proc = format!("/proc/{}", state.pid);
    let exe = std::fs::metadata(format!("{proc}/exe")).ok()?;
    let cwd = std::fs::metadata(format!("{proc}/cwd")).ok()?;
    (same(exe, std::fs::metadata("/proc/self/exe").ok()?)
        && same(cwd, std::fs::metadata(home.dir()).ok()?))
    .then_some(state.pid)
}

/// A process's parent pid, from `/proc/PID/stat`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Sends SIGTERM to `pid` if, and only if, it holds the home's lock.
fn signal_holder(home: &Home, pid: u32) -> anyhow::Result<()> {
    if !home.held_by(pid) {
        bail!(
            "{} names pid {pid}, but that process does not hold the home's lock {}; \
             not signalling it",
            home.state_file().display(),
            home.lock_file().display()
        );
    }
    signal_pinned(pid, || home.held_by(pid))
}

/// Sends SIGTERM to `pid` if `still_it` holds once the process is pinned
/// with a pidfd, so a pid reused between the check and the signal cannot
/// be hit.
fn signal_pinned(pid: u32, still_it: impl FnOnce() -> bool) -> anyhow::Result<()> {
    use nix::libc;
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags; it returns a new descriptor or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    let pidfd = (raw >= 0).then(|| {
        // SAFETY: a descriptor pidfd_open just returned, owned by nobody else.
        unsafe { OwnedFd::from_raw_fd(raw as RawFd) }
    });
    if !still_it() {
        bail!("pid {pid} changed before it could be signalled; not signalling it");
    }
    let sent = match &pidfd {
        // SAFETY: a valid pidfd, a signal number, no siginfo, no flags.
        Some(pidfd) => unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                pidfd.as_raw_fd(),
                libc::SIGTERM,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        },
        // A kernel without pidfds (before 5.3): the check above, then kill.
        None => kill(OsPid::from_raw(pid as i32), Signal::SIGTERM).map_or(-1, |()| 0),
    };
    if sent != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("signalling pid {pid}"));
    }
    Ok(())
}

/// True while the OS process exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Prints whether the daemon runs (with its heart, restarts and the last
/// death's cause); an error (exit 1) when it does not, saying why heart
/// gave up if it did.
pub fn status(home: &Home) -> anyhow::Result<()> {
    let heart = crate::lifecycle::heart::read_state(home);
    let Some(state) = home.running() else {
        match heart.and_then(|heart| heart.gave_up) {
            Some(reason) => bail!(
                "system is not running (home {}): heart gave up after {reason}",
                home.dir().display()
            ),
            None => bail!("system is not running (home {})", home.dir().display()),
        }
    };
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    println!(
        "system is running (pid {}), serving {}, uptime {}s, {} scheduler(s), version {}",
        state.pid,
        state.url,
        now.saturating_sub(state.started_at_unix),
        state.schedulers,
        state.version
    );
    match (heart_of(&state), heart) {
        (Some(pid), Some(heart)) => {
            let last = match (&heart.last_cause, heart.last_death_unix) {
                (Some(cause), Some(at)) => {
                    format!(", last death {}s ago: {cause}", now.saturating_sub(at))
                }
                _ => String::new(),
            };
            println!("heart (pid {pid}): {} restart(s){last}", heart.restarts);
        }
        (Some(pid), None) => println!("heart (pid {pid}): no restarts"),
        (None, _) => println!("heart: off (--no-heart)"),
    }
    if let Some(token) = crate::http::token::read(home) {
        println!("access token required: open {}/#token={token}", state.url);
    }
    Ok(())
}

/// Prints the daemon's OS pid.
pub fn pid(home: &Home) -> anyhow::Result<()> {
    let Some(state) = home.running() else {
        bail!("system is not running (home {})", home.dir().display());
    };
    println!("{}", state.pid);
    Ok(())
}

/// Prints the log; with `follow`, keeps printing what is appended, across
/// rotations: when the path names another file (rotated, or moved by
/// logrotate) or the file shrank, it finishes the old one and reopens by path.
pub fn log(home: &Home, follow: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let path = home.log_file();
    let mut file =
        home::open_read(&path).with_context(|| format!("no log at {}", path.display()))?;
    let mut stdout = std::io::stdout().lock();
    std::io::copy(&mut file, &mut stdout)?;
    if !follow {
        return Ok(());
    }
    loop {
        stdout.flush()?;
        std::thread::sleep(Duration::from_millis(200));
        let Ok(named) = std::fs::metadata(&path) else {
            continue; // between a rotation's rename and the new file
        };
        let open = file.metadata()?;
        if (named.dev(), named.ino()) != (open.dev(), open.ino()) {
            std::io::copy(&mut file, &mut stdout)?; // the old file's last lines
            match home::open_read(&path) {
                Ok(newer) => file = newer,
                Err(_) => continue, // gone again: try at the next turn
            }
        } else if named.len() < file.stream_position()? {
            file.seek(SeekFrom::Start(0))?; // truncated
        }
        std::io::copy(&mut file, &mut stdout)?;
    }
}
