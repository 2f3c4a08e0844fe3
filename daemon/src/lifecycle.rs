//! The daemon's lifecycle commands: `start` (daemonize and wait until it
//! serves), `foreground`, `stop`, `status`, `pid` and `log`.
//!
//! These run in the short-lived command process, never in the daemon,
//! except for the daemonized child that `start` becomes.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use daemonize::{Daemonize, Outcome};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid as OsPid;

use crate::home::Home;
use crate::server::{self, Config};

/// How long `stop` waits for the daemon to exit before giving up.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Daemonizes the server; returns once it serves (or could not start).
pub fn start(config: Config) -> anyhow::Result<()> {
    if let Some(state) = config.home.running() {
        bail!(
            "system is already running (pid {}, {})",
            state.pid,
            state.url
        );
    }
    let log_path = config.home.log_file();
    let (log, log_failure) = match OpenOptions::new().create(true).append(true).open(&log_path) {
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
            crate::log::init(false, config.tokio_console);
            if let Some(reason) = log_failure {
                crate::log::record_failure(reason);
            }
            let mut pipe = File::from(write_end);
            let result = server::run(config, |ready| {
                let line = match ready {
                    Ok(state) => format!("ready {} {}\n", state.pid, state.url),
                    Err(reason) => format!("error {reason}\n"),
                };
                let _ = pipe.write_all(line.as_bytes());
            });
            if let Err(error) = result {
                tracing::error!("daemon ended: {error:#}");
                std::process::exit(1);
            }
            std::process::exit(0);
        }
        Outcome::Child(Err(error)) => {
            let _ = writeln!(File::from(write_end), "error cannot daemonize: {error}");
            std::process::exit(1);
        }
    }
}

fn wait_until_ready(read_end: OwnedFd) -> anyhow::Result<()> {
    let mut line = String::new();
    BufReader::new(File::from(read_end))
        .read_line(&mut line)
        .context("waiting for the daemon")?;
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
    crate::log::init(true, config.tokio_console);
    server::run(config, |ready| match ready {
        Ok(state) => println!("system running (pid {}), serving {}", state.pid, state.url),
        Err(reason) => eprintln!("system could not start: {reason}"),
    })
}

/// Stops the running daemon gracefully and waits for it to exit.
pub fn stop(home: &Home) -> anyhow::Result<()> {
    let Some(state) = home.running() else {
        bail!("system is not running (home {})", home.dir().display());
    };
    let pid = OsPid::from_raw(state.pid as i32);
    kill(pid, Signal::SIGTERM).with_context(|| format!("signalling pid {}", state.pid))?;
    let deadline = Instant::now() + STOP_TIMEOUT;
    while home.is_locked() || is_alive(state.pid) {
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

/// Prints whether the daemon runs; an error (exit 1) when it does not.
pub fn status(home: &Home) -> anyhow::Result<()> {
    let Some(state) = home.running() else {
        bail!("system is not running (home {})", home.dir().display());
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
    if let Some(token) = crate::http::token::read(home) {
        println!("access token required: open {}/?token={token}", state.url);
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

/// Prints the log; with `follow`, keeps printing what is appended.
pub fn log(home: &Home, follow: bool) -> anyhow::Result<()> {
    let path = home.log_file();
    let mut file = File::open(&path).with_context(|| format!("no log at {}", path.display()))?;
    let mut stdout = std::io::stdout().lock();
    let mut position = std::io::copy(&mut file, &mut stdout)?;
    if !follow {
        return Ok(());
    }
    loop {
        stdout.flush()?;
        std::thread::sleep(Duration::from_millis(200));
        let length = std::fs::metadata(&path).map_or(0, |m| m.len());
        if length < position {
            position = 0; // truncated or replaced
        }
        if length > position {
            let mut file = File::open(&path)?;
            file.seek(SeekFrom::Start(position))?;
            position += std::io::copy(&mut file, &mut stdout)?;
        }
    }
}
