//! The versioned copies of plugin libraries in `plugins/`: each load gets a
//! new file name (dlopen caches by path), written beside and renamed into
//! place, removed once its version is unloaded.
//!
//! It must never overwrite a file in place (a mapped library overwritten
//! would crash the daemon) and never touch the kept versions (`plugins/kept/`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::CodeError;

/// Every versioned copy's name starts with this.
const PREFIX: &str = "math_plugin-v";

/// The versioned copy's path for load `id` of bytes hashed `sha256`.
pub(super) fn path(dir: &Path, id: u32, sha256: &str) -> PathBuf {
    dir.join(format!("{PREFIX}{id}-{}.so", &sha256[..12]))
}

/// Writes `bytes` to `versioned` via a temporary file and a rename, so a file
/// that may still be mapped by this or another process is never overwritten in place.
pub(super) fn write(dir: &Path, versioned: &Path, bytes: &[u8]) -> Result<(), CodeError> {
    let copy_error = |source| CodeError::Copy {
        path: versioned.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir).map_err(copy_error)?;
    let temporary = versioned.with_extension("so.partial");
    // Created exclusively, never through a symlink, and read-only: a mapped
    // library overwritten in place would crash the daemon.
    crate::os::home::write_new(&temporary, bytes, 0o400).map_err(copy_error)?;
    fs::rename(&temporary, versioned).map_err(|source| {
        remove(&temporary);
        copy_error(source)
    })
}

/// Removes the versioned copies in `dir` (not the kept ones): called before
/// anything is loaded, they can only be a dead daemon's.
pub(super) fn remove_stale(dir: &Path) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with(PREFIX) {
            remove(&entry.path());
        }
    }
}

/// Best-effort removal of a versioned copy that is no longer loaded.
pub(super) fn remove(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "could not remove plugin copy")
        }
    }
}
