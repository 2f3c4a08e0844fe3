//! The log file, rotated by size: `system.log` is the newest; when the next
//! line would take it over `max_bytes`, it becomes `system.log.1` (older ones
//! move up to `.2`, `.3` …, the oldest beyond `files` is deleted) and a new
//! `system.log` is started. Lines are never split across files.
//!
//! A small writer rather than a rotation crate because it must also reopen
//! its file by path (after an external logrotate, on SIGHUP) and, in a
//! daemon, point stdout and stderr at the current file. It is written only
//! by the log's writer thread; it never formats anything.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// How big the log may grow: `files` files of at most `max_bytes` each.
#[derive(Clone, Copy, Debug)]
pub struct Rotation {
    pub max_bytes: u64,
    /// Files kept, the current one included (at least 1).
    pub files: u32,
}

impl Default for Rotation {
    fn default() -> Rotation {
        Rotation {
            max_bytes: 10 * 1024 * 1024,
            files: 5,
        }
    }
}

pub struct RotatingFile {
    path: PathBuf,
    rotation: Rotation,
    /// Point fds 1 and 2 at the current file (a daemon's stdout and stderr).
    redirect_stdio: bool,
    file: Option<File>,
    size: u64,
}

impl RotatingFile {
    /// A writer on `path`; if the file cannot be opened, the error is
    /// returned alongside (every write will try again).
    pub fn open(
        path: &Path,
        rotation: Rotation,
        redirect_stdio: bool,
    ) -> (RotatingFile, io::Result<()>) {
        let mut log = RotatingFile {
            path: path.to_owned(),
            rotation,
            redirect_stdio,
            file: None,
            size: 0,
        };
        let opened = log.reopen();
        (log, opened)
    }

    /// The file's path (the newest of the rotated files).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the file at the path again (appending), e.g. after it was moved away.
    pub fn reopen(&mut self) -> io::Result<()> {
        self.file = None;
        let file = crate::os::home::open_append(&self.path)?;
        self.size = file.metadata().map_or(0, |m| m.len());
        let file = self.file.insert(file);
        if self.redirect_stdio {
            nix::unistd::dup2_stdout(&*file)?;
            nix::unistd::dup2_stderr(&*file)?;
        }
        Ok(())
    }

    /// Writes one whole line (or event), rotating first if it would not fit.
    pub fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let length = line.len() as u64;
        if self.file.is_none() || self.size > 0 && self.size + length > self.rotation.max_bytes {
            self.rotate_or_reopen()?;
        }
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("no log file"))?;
        file.write_all(line)?;
        self.size += length;
        Ok(())
    }

    fn rotate_or_reopen(&mut self) -> io::Result<()> {
        if self.file.is_some() {
            self.rotate()?;
        }
        self.reopen()
    }

    /// Shifts `path.N` to `path.N+1` (dropping the oldest) and `path` to `path.1`.
    fn rotate(&mut self) -> io::Result<()> {
        let kept = self.rotation.files.max(1) - 1;
        if kept == 0 {
            return ignore_missing(fs::remove_file(&self.path));
        }
        ignore_missing(fs::remove_file(self.numbered(kept)))?;
        for n in (1..kept).rev() {
            ignore_missing(fs::rename(self.numbered(n), self.numbered(n + 1)))?;
        }
        fs::rename(&self.path, self.numbered(1))
    }

    fn numbered(&self, n: u32) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }
}

fn ignore_missing(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_keeping_the_number_of_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("system.log");
        let rotation = Rotation {
            max_bytes: 20,
            files: 3,
        };
        let (mut log, opened) = RotatingFile::open(&path, rotation, false);
        opened.unwrap();
        for n in 0..10 {
            log.write_line(format!("line {n:04}\n").as_bytes()).unwrap();
        }
        // 10 bytes a line, two a file: lines 8-9 current, 6-7 in .1, 4-5 in .2.
        assert_eq!(fs::read_to_string(&path).unwrap(), "line 0008\nline 0009\n");
        assert_eq!(
            fs::read_to_string(dir.path().join("system.log.2")).unwrap(),
            "line 0004\nline 0005\n"
        );
        assert!(!dir.path().join("system.log.3").exists());
        // A line longer than the limit gets a file of its own, whole.
        log.write_line(&[b'x'; 30]).unwrap();
        assert_eq!(fs::read(&path).unwrap().len(), 30);
    }

    #[test]
    fn reopens_by_path_after_the_file_was_moved_away() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("system.log");
        let (mut log, _) = RotatingFile::open(&path, Rotation::default(), false);
        log.write_line(b"before\n").unwrap();
        fs::rename(&path, dir.path().join("moved")).unwrap();
        log.reopen().unwrap();
        log.write_line(b"after\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "after\n");
    }
}
