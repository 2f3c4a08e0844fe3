//! The daemon's home directory: where its pid file, lock, state, admin
//! socket, logs and plugin copies live, and how to tell whether a daemon is
//! running there.
//!
//! Paths and liveness only; it never starts or stops anything.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

/// A daemon's home directory (mode 0700).
#[derive(Clone, Debug)]
pub struct Home {
    dir: PathBuf,
}

/// What a running daemon writes about itself once it serves.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DaemonState {
    pub pid: u32,
    pub url: String,
    pub started_at_unix: u64,
    pub schedulers: usize,
    pub version: String,
}

/// Held by the running daemon for its whole life: the truth about "running".
pub struct HomeLock {
    _lock: Flock<File>,
}

impl Home {
    /// `SYSTEM_HOME`, else `$XDG_STATE_HOME/system`, else `~/.local/state/system`.
    pub fn default_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir).join("system");
        }
        let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
        PathBuf::from(home).join(".local/state/system")
    }

    /// Creates the directory (0700) if needed and refuses one others can enter.
    pub fn open(dir: &Path) -> io::Result<Home> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let dir = dir.canonicalize()?;
        let mode = fs::metadata(&dir)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir.join("log"))?;
        Ok(Home { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("system.pid")
    }
    pub fn state_file(&self) -> PathBuf {
        self.dir.join("system.json")
    }
    pub fn lock_file(&self) -> PathBuf {
        self.dir.join("system.lock")
    }
    pub fn admin_socket(&self) -> PathBuf {
        self.dir.join("admin.sock")
    }
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("log/system.log")
    }
    /// The access token (0600), while a daemon that requires one runs.
    pub fn token_file(&self) -> PathBuf {
        self.dir.join("access_token")
    }
    pub fn plugins_dir(&self) -> PathBuf {
        self.dir.join("plugins")
    }

    /// Takes the home's lock; fails with `WouldBlock` if a daemon holds it.
    pub fn lock(&self) -> io::Result<HomeLock> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.lock_file())?;
        Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map(|lock| HomeLock { _lock: lock })
            .map_err(|(_, errno)| io::Error::from(errno))
    }

    /// The running daemon's state, or `None` if no daemon holds the lock.
    /// Files a dead daemon left behind are removed on the way.
    pub fn running(&self) -> Option<DaemonState> {
        match self.lock() {
            Ok(_free) => {
                self.remove_runtime_files();
                None
            }
            Err(_) => {
                let text = fs::read_to_string(self.state_file()).ok()?;
                serde_json::from_str(&text).ok()
            }
        }
    }

    /// True if a daemon holds the lock (it may still be starting).
    pub fn is_locked(&self) -> bool {
        self.lock().is_err()
    }

    /// Writes the pid and state files of the daemon that holds the lock.
    pub fn write_runtime_files(&self, state: &DaemonState) -> io::Result<()> {
        fs::write(self.pid_file(), format!("{}\n", state.pid))?;
        let json = serde_json::to_string_pretty(state).map_err(io::Error::other)?;
        let temporary = self.dir.join("system.json.tmp");
        fs::write(&temporary, json)?;
        fs::rename(temporary, self.state_file())
    }

    /// Removes the pid file, state file and admin socket (stale or at exit).
    pub fn remove_runtime_files(&self) {
        for path in [self.pid_file(), self.state_file(), self.admin_socket()] {
            let _ = fs::remove_file(path);
        }
    }
}
