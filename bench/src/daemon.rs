//! Starts the real `system` daemon in a temporary home on an ephemeral
//! port with one scheduler (pinned to one CPU when asked) or more, and
//! stops it (removing the home) when dropped.
//!
//! It runs the binary's public commands only (`start`, `stop`, `upgrade`);
//! it never signals the daemon itself.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context as _, anyhow, bail};

use crate::os;

pub struct Daemon {
    binary: PathBuf,
    home: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// The daemon's OS pid.
    pub pid: i32,
    stopped: bool,
}

impl Daemon {
    /// `system --home TMP start --http 127.0.0.1:0 --schedulers 1`, pinned
    /// to `cpu` if given; or, for more than one scheduler, `--schedulers N
    /// --max-schedulers N` spread over the first N CPUs.
    pub fn start(binary: &Path, cpu: Option<usize>, schedulers: usize) -> anyhow::Result<Daemon> {
        if schedulers <= 1 {
            return Daemon::start_with(
                binary,
                cpu.map_or(Cpus::Any, Cpus::One),
                &["--schedulers", "1"],
            );
        }
        let count = schedulers.to_string();
        Daemon::start_with(
            binary,
            Cpus::First(schedulers),
            &["--schedulers", &count, "--max-schedulers", &count],
        )
    }

    /// [`Daemon::start`] on `cpus`, with more `start` arguments.
    pub fn start_with(binary: &Path, cpus: Cpus, extra: &[&str]) -> anyhow::Result<Daemon> {
        let home = tempfile::Builder::new()
            .prefix("system-bench-")
            .tempdir()
            .context("creating a temporary home")?;
        // A home must be private to its user (the daemon refuses others).
        std::fs::set_permissions(
            home.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .context("making the temporary home private")?;
        let mut command = Command::new(binary);
        command
            .arg("--home")
            .arg(home.path())
            .args(["start", "--http", "127.0.0.1:0"])
            .args(extra)
            .env_remove("SYSTEM_HOME");
        match cpus {
            Cpus::Any => {}
            Cpus::One(cpu) => os::pin_command(&mut command, cpu),
            Cpus::First(count) => os::spread_command(&mut command, count),
        }
        let output = command
            .output()
            .with_context(|| format!("running {}", binary.display()))?;
        let said = text(&output);
        if !output.status.success() {
            bail!("system start failed: {said}");
        }
        // "system started (pid 123), serving http://127.0.0.1:4567"
        let pid = said
            .split("(pid ")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .and_then(|pid| pid.trim().parse().ok())
            .ok_or_else(|| anyhow!("no pid in {said:?}"))?;
        let url = said
            .split_whitespace()
            .find(|word| word.starts_with("http://"))
            .ok_or_else(|| anyhow!("no URL in {said:?}"))?
            .trim_end_matches([',', '.'])
            .to_owned();
        Ok(Daemon {
            binary: binary.to_owned(),
            home,
            url,
            pid,
            stopped: false,
        })
    }

    pub fn ws_url(&self) -> String {
        format!("{}/ws", self.url.replacen("http://", "ws://", 1))
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    pub fn admin_socket(&self) -> PathBuf {
        self.home.path().join("admin.sock")
    }

    /// Runs `system --home HOME args…`.
    pub fn system(&self, args: &[&str]) -> anyhow::Result<Output> {
        Command::new(&self.binary)
            .arg("--home")
            .arg(self.home.path())
            .args(args)
            .env_remove("SYSTEM_HOME")
            .output()
            .with_context(|| format!("running system {}", args.join(" ")))
    }

    /// Does this binary have `system upgrade`?
    pub fn has_upgrade(&self) -> bool {
        self.system(&["upgrade", "--help"])
            .is_ok_and(|output| output.status.success())
    }

    pub fn stop(&mut self) -> anyhow::Result<()> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        let output = self.system(&["stop"])?;
        if !output.status.success() {
            bail!("system stop failed: {}", text(&output));
        }
        Ok(())
    }
}

/// Where a daemon may run.
#[derive(Clone, Copy, Debug)]
pub enum Cpus {
    /// Wherever the benchmark's spawning thread may.
    Any,
    /// On this CPU only.
    One(usize),
    /// On CPUs 0..N.
    First(usize),
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            eprintln!("scenario: {error:#}");
        }
    }
}

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The `system` binary: `--system PATH`, else the one next to this program.
pub fn find_binary(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path);
    }
    let me = std::env::current_exe().context("locating this program")?;
    let beside = me.with_file_name("system");
    if beside.exists() {
        Ok(beside)
    } else {
        bail!(
            "no system binary at {} (build it with `cargo build --release --workspace` or pass --system PATH)",
            beside.display()
        )
    }
}

/// The math plugin built next to the `system` binary.
pub fn plugin_beside(binary: &Path) -> PathBuf {
    binary.with_file_name("libmath_plugin.so")
}
