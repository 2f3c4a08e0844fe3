//! The daemon's home directory: where its pid file, lock, state, admin
//! socket, logs and plugin copies live, and how to tell whether a daemon is
//! running there and which process it is.
//!
//! Who may use a home: only its owner. A home, `log/` or `plugins/` that is a
//! symlink, is owned by another user or is writable by others is refused with
//! the path and its owner; `start` also refuses a home others can enter.
//! Files in it are created and opened without following symlinks, temporary
//! ones exclusively. Only `start`/`foreground` create the home; every other
//! command reads an existing one and creates nothing. It never chmods what
//! it did not create.
//!
//! Paths, checks and liveness only; it never starts or stops anything.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{FcntlArg, fcntl};
use nix::libc;
use nix::unistd::{Uid, User};
use serde::{Deserialize, Serialize};

/// A daemon's home directory (mode 0700, owned by the daemon's user).
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
    /// The pid of the daemon's heart, if it runs under one.
    #[serde(default)]
    pub heart_pid: Option<u32>,
}

/// Held by the running daemon for its whole life: the truth about "running".
/// An open-file-description (OFD) write lock on `system.lock`: others can
/// test it (`F_OFD_GETLK`) without taking it, so a `status` can never make
/// a starting daemon believe another one runs.
pub struct HomeLock {
    _file: File,
}

/// A write lock on the whole file, or (with `F_OFD_GETLK`) the question for one.
fn whole_file_write_lock() -> libc::flock {
    // SAFETY: `flock` is plain data; all zeroes is a valid value.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock
}

/// Why a home (or a directory in it) is refused.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error("{} is a symlink; refusing to follow it (give the real directory)", path.display())]
    Symlink { path: PathBuf },
    #[error("{} is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    #[error("{} is owned by {}, not by {} who runs this; refusing to use it", path.display(), user(*owner), user(*me))]
    Foreign { path: PathBuf, owner: u32, me: u32 },
    #[error("{} is writable by other users (mode {mode:04o}); refusing to use it", path.display())]
    Writable { path: PathBuf, mode: u32 },
    #[error("{} is open to other users (mode {mode:04o}); refusing to use it as a home: `chmod 700` it if it is yours", path.display())]
    Open { path: PathBuf, mode: u32 },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// `nobody (uid 65534)`, or `uid 1234` when the uid has no name.
pub fn user(uid: u32) -> String {
    match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(user)) => format!("{} (uid {uid})", user.name),
        _ => format!("uid {uid}"),
    }
}

/// Options that never follow a symlink in the last component.
fn no_follow() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.custom_flags(nix::libc::O_NOFOLLOW);
    options
}

/// Opens `path` for appending (created 0600), never through a symlink.
pub fn open_append(path: &Path) -> io::Result<File> {
    no_follow().create(true).append(true).mode(0o600).open(path)
}

/// Opens `path` for reading, never through a symlink.
pub fn open_read(path: &Path) -> io::Result<File> {
    no_follow().read(true).open(path)
}

/// Writes `bytes` to a new file at `path` (mode `mode`), replacing what was
/// there (a stale file or a planted symlink is removed, never followed); the
/// file is created exclusively, so nothing can slip in between.
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let mut file = no_follow()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(bytes)
}

/// Replaces the file at `path` with `bytes` (mode 0600) as one step: a new
/// `PATH.tmp` (see [`write_new`]), then a rename, so a reader never sees half
/// a file and a planted link is never followed.
pub fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    write_new(Path::new(&temporary), bytes, 0o600)?;
    fs::rename(&temporary, path)
}

/// How strict [`check_dir`] is about the mode.
#[derive(Clone, Copy, PartialEq)]
enum Privacy {
    /// Others must not be able to write to it.
    NotWritable,
    /// Others must not be able to enter it at all.
    Private,
}

/// Checks that `path` is a real directory (not a symlink) owned by the
/// effective uid and not writable (or, with `Private`, not open) to others.
fn check_dir(path: &Path, privacy: Privacy) -> Result<Metadata, HomeError> {
    let metadata = fs::symlink_metadata(path).map_err(|source| HomeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let path = path.to_path_buf();
    if metadata.file_type().is_symlink() {
        return Err(HomeError::Symlink { path });
    }
    if !metadata.is_dir() {
        return Err(HomeError::NotADirectory { path });
    }
    let me = Uid::effective().as_raw();
    if metadata.uid() != me {
        return Err(HomeError::Foreign {
            path,
            owner: metadata.uid(),
            me,
        });
    }
    let mode = metadata.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(HomeError::Writable { path, mode });
    }
    if privacy == Privacy::Private && mode & 0o077 != 0 {
        return Err(HomeError::Open { path, mode });
    }
    Ok(metadata)
}

/// Creates `path` (mode 0700) if it is missing; true if it was created here.
fn create_dir(path: &Path) -> Result<bool, HomeError> {
    let io_error = |source| HomeError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io_error)?;
    }
    match fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(error) => Err(io_error(error)),
    }
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

    /// For `start` and `foreground`: creates the home, `log/` and `plugins/`
    /// (0700) where missing, and refuses them if they are symlinks, belong
    /// to another user, or (the home) are open to others. An existing
    /// directory's mode is never changed.
    pub fn create(dir: &Path) -> Result<Home, HomeError> {
        create_dir(dir)?;
        check_dir(dir, Privacy::Private)?;
        let home = Home::at(dir)?;
        for sub in [home.dir.join("log"), home.plugins_dir()] {
            create_dir(&sub)?;
            check_dir(&sub, Privacy::NotWritable)?;
        }
        Ok(home)
    }

    /// For every other command: the home at `dir` if it exists (checked as
    /// [`Home::create`] does, except that a home others may only enter is
    /// accepted), `None` if it does not. Creates and changes nothing.
    pub fn existing(dir: &Path) -> Result<Option<Home>, HomeError> {
        match fs::symlink_metadata(dir) {
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            _ => {}
        }
        check_dir(dir, Privacy::NotWritable)?;
        let home = Home::at(dir)?;
        for sub in [home.dir.join("log"), home.plugins_dir()] {
            if fs::symlink_metadata(&sub).is_ok() {
                check_dir(&sub, Privacy::NotWritable)?;
            }
        }
        Ok(Some(home))
    }

    /// The checked directory by its absolute path (the last component is
    /// not a symlink: it was checked).
    fn at(dir: &Path) -> Result<Home, HomeError> {
        let dir = dir.canonicalize().map_err(|source| HomeError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
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
    /// What heart says about itself (restarts, last cause, why it gave up).
    pub fn heart_file(&self) -> PathBuf {
        self.dir.join("heart.json")
    }
    /// The fatal-signal handler's verdict on the daemon's death, for heart.
    pub fn fault_file(&self) -> PathBuf {
        self.dir.join("fault")
    }
    /// The load setting, restored when heart restarts the daemon.
    pub fn load_file(&self) -> PathBuf {
        self.dir.join("load.json")
    }
    /// Schedulers online, restored when heart restarts the daemon.
    pub fn schedulers_file(&self) -> PathBuf {
        self.dir.join("schedulers.json")
    }
    /// The access token (0600), while a daemon that requires one runs.
    pub fn token_file(&self) -> PathBuf {
        self.dir.join("access_token")
    }
    pub fn plugins_dir(&self) -> PathBuf {
        self.dir.join("plugins")
    }

    /// Takes the home's lock, creating the lock file (0600) if needed; fails
    /// with `WouldBlock` if a daemon holds it, and never follows a symlink.
    pub fn lock(&self) -> io::Result<HomeLock> {
        let file = no_follow()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(self.lock_file())
            .map_err(|error| self.lock_error(error))?;
        match fcntl(&file, FcntlArg::F_OFD_SETLK(&whole_file_write_lock())) {
            Ok(_) => Ok(HomeLock { _file: file }),
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => {
                Err(io::ErrorKind::WouldBlock.into())
            }
            Err(errno) => Err(io::Error::from(errno)),
        }
    }

    /// [`Home::lock`], trying again for up to `patience` while another
    /// process holds it (a dying daemon, or someone testing it).
    pub fn lock_within(&self, patience: std::time::Duration) -> io::Result<HomeLock> {
        let deadline = std::time::Instant::now() + patience;
        loop {
            match self.lock() {
                Err(error)
                    if error.kind() == io::ErrorKind::WouldBlock
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                other => return other,
            }
        }
    }

    /// True if a daemon holds the lock (it may still be starting). Only
    /// asks (`F_OFD_GETLK`), never takes it; creates nothing: without a
    /// lock file no daemon ever ran here.
    pub fn is_locked(&self) -> bool {
        let Ok(file) = open_read(&self.lock_file()) else {
            return false;
        };
        let mut question = whole_file_write_lock();
        match fcntl(&file, FcntlArg::F_OFD_GETLK(&mut question)) {
            Ok(_) => question.l_type != libc::F_UNLCK as libc::c_short,
            Err(_) => false,
        }
    }

    fn lock_error(&self, error: io::Error) -> io::Error {
        let path = self.lock_file();
        if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            io::Error::other(format!(
                "{} is a symlink; refusing to follow it",
                path.display()
            ))
        } else {
            io::Error::new(error.kind(), format!("{}: {error}", path.display()))
        }
    }

    /// The running daemon's state, or `None` if no daemon holds the lock.
    /// Files a dead daemon left behind are removed on the way.
    pub fn running(&self) -> Option<DaemonState> {
        if !self.is_locked() {
            self.remove_runtime_files();
            return None;
        }
        let text = io::read_to_string(open_read(&self.state_file()).ok()?).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// True if process `pid` holds this home's lock: one of its descriptors
    /// is the lock file (same device and inode) and carries the OFD lock. This,
    /// not a pid read from a file, is what makes a process "the daemon".
    pub fn held_by(&self, pid: u32) -> bool {
        let Ok(lock) = open_read(&self.lock_file()).and_then(|file| file.metadata()) else {
            return false;
        };
        let Ok(descriptors) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            return false;
        };
        descriptors.flatten().any(|entry| {
            let same_file = fs::metadata(entry.path())
                .is_ok_and(|m| m.dev() == lock.dev() && m.ino() == lock.ino());
            same_file
                && fs::read_to_string(format!(
                    "/proc/{pid}/fdinfo/{}",
                    entry.file_name().to_string_lossy()
                ))
                .is_ok_and(|info| {
                    info.lines()
                        .any(|line| line.starts_with("lock:") && line.contains("OFDLCK"))
                })
        })
    }

    /// Writes the pid and state files of the daemon that holds the lock.
    /// A symlink planted at either (or at the temporary file) is replaced, not followed.
    pub fn write_runtime_files(&self, state: &DaemonState) -> io::Result<()> {
        write_new(
            &self.pid_file(),
            format!("{}\n", state.pid).as_bytes(),
            0o600,
        )?;
        let json = serde_json::to_string_pretty(state).map_err(io::Error::other)?;
        replace(&self.state_file(), json.as_bytes())
    }

    /// Removes the pid file, state file and admin socket (stale or at exit).
    pub fn remove_runtime_files(&self) {
        for path in [self.pid_file(), self.state_file(), self.admin_socket()] {
            let _ = fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn scratch() -> tempfile::TempDir {
        tempfile::Builder::new()
            .permissions(fs::Permissions::from_mode(0o700))
            .tempdir()
            .expect("a scratch directory")
    }

    #[test]
    fn write_new_replaces_a_planted_symlink_without_following_it() {
        let dir = scratch();
        let victim = dir.path().join("victim");
        fs::write(&victim, "victim").unwrap();
        let path = dir.path().join("file");
        symlink(&victim, &path).unwrap();
        write_new(&path, b"ours", 0o600).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "victim");
        assert!(fs::symlink_metadata(&path).unwrap().is_file());
        assert_eq!(fs::read_to_string(&path).unwrap(), "ours");
        symlink(&victim, dir.path().join("link")).unwrap();
        assert!(open_read(&dir.path().join("link")).is_err(), "followed");
        assert!(open_append(&dir.path().join("link")).is_err(), "followed");
    }

    #[test]
    fn a_home_must_be_a_private_real_directory_and_is_not_created_by_readers() {
        let dir = scratch();
        let missing = dir.path().join("missing");
        assert!(Home::existing(&missing).unwrap().is_none());
        assert!(!missing.exists());

        let created = Home::create(&missing).unwrap();
        assert!(created.dir().join("log").is_dir() && created.plugins_dir().is_dir());
        assert!(Home::existing(&missing).unwrap().is_some());

        let link = dir.path().join("link");
        symlink(&missing, &link).unwrap();
        assert!(matches!(
            Home::create(&link),
            Err(HomeError::Symlink { .. })
        ));
        assert!(matches!(
            Home::existing(&link),
            Err(HomeError::Symlink { .. })
        ));

        fs::set_permissions(&missing, fs::Permissions::from_mode(0o711)).unwrap();
        assert!(matches!(
            Home::create(&missing),
            Err(HomeError::Open { mode: 0o711, .. })
        ));
        assert!(
            Home::existing(&missing).unwrap().is_some(),
            "enterable only"
        );
        fs::set_permissions(&missing, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            Home::existing(&missing),
            Err(HomeError::Writable { mode: 0o777, .. })
        ));
        assert_eq!(
            fs::metadata(&missing).unwrap().permissions().mode() & 0o777,
            0o777,
            "nothing was chmodded"
        );
    }
}
