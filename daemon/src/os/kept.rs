//! The plugin versions kept in the home across daemon restarts: the current
//! one and the one before it, as read-only copies in `plugins/kept/` with an
//! index, `plugins/kept/kept.json`. They are the source of truth for which
//! code a restarted daemon loads, and what heart rolls back to.
//!
//! The running daemon records every version it makes current; heart rolls
//! back only while no daemon runs. It never loads or checks code itself.
//! An index entry names a file in `plugins/kept/` only (a plain
//! `math_plugin-vN.so` name): one that names any other path is ignored, as
//! if nothing were kept.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One kept version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptVersion {
    /// The code server's version id (`v3`), kept across restarts.
    pub id: u32,
    /// The plugin's own version string (`1.1.0`).
    pub version: String,
    /// The copy's file name in the kept directory.
    pub file: String,
}

/// The index: what is current, and what was current before it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Kept {
    pub current: Option<KeptVersion>,
    pub previous: Option<KeptVersion>,
    /// The highest id ever given out (ids are never reused, even after a rollback).
    #[serde(default)]
    pub last_id: u32,
}

/// The kept directory of one home.
#[derive(Clone, Debug)]
pub struct KeptPlugins {
    dir: PathBuf,
}

impl KeptPlugins {
    pub fn new(dir: PathBuf) -> KeptPlugins {
        KeptPlugins { dir }
    }

    /// The path of a kept version's copy.
    pub fn path(&self, version: &KeptVersion) -> PathBuf {
        self.dir.join(&version.file)
    }

    /// The index; empty if nothing was kept (or the index is unreadable).
    /// Entries that do not name a copy in the kept directory are left out.
    pub fn read(&self) -> Kept {
        let mut kept: Kept = fs::read_to_string(self.dir.join("kept.json"))
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default();
        for entry in [&mut kept.current, &mut kept.previous] {
            if entry.as_ref().is_some_and(|version| !confined(version)) {
                *entry = None;
            }
        }
        kept
    }

    /// Forgets every kept version (a fresh `start`, not a restart).
    pub fn clear(&self) -> io::Result<()> {
        self.write(&Kept::default())
    }

    /// Records that version `id` (whose loaded copy is `copy`) became
    /// current; the former current one becomes the previous one.
    pub fn record(&self, id: u32, version: &str, copy: &Path) -> io::Result<()> {
        let kept = self.read();
        if kept
            .current
            .as_ref()
            .is_some_and(|current| current.id == id)
        {
            return Ok(());
        }
        fs::create_dir_all(&self.dir)?;
        let file = format!("math_plugin-v{id}.so");
        let target = self.dir.join(&file);
        let _ = fs::remove_file(&target);
        // Same inode as the loaded (read-only) copy when the file system allows.
        if fs::hard_link(copy, &target).is_err() {
            fs::copy(copy, &target)?;
        }
        let current = KeptVersion {
            id,
            version: version.to_owned(),
            file,
        };
        self.write(&Kept {
            current: Some(current),
            previous: kept.current,
            last_id: kept.last_id.max(id),
        })
    }

    /// Makes the previous version current again and deletes the current one;
    /// returns (from, to), or `None` when there is nothing to roll back to.
    pub fn roll_back(&self) -> io::Result<Option<(KeptVersion, KeptVersion)>> {
        let kept = self.read();
        let (Some(from), Some(to)) = (kept.current, kept.previous) else {
            return Ok(None);
        };
        self.write(&Kept {
            current: Some(to.clone()),
            previous: None,
            last_id: kept.last_id,
        })?;
        Ok(Some((from, to)))
    }

    /// Writes the index (temporary file, then rename) and deletes copies it
    /// no longer names.
    fn write(&self, kept: &Kept) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let json = serde_json::to_string_pretty(kept).map_err(io::Error::other)?;
        crate::os::home::replace(&self.dir.join("kept.json"), json.as_bytes())?;
        let named: Vec<&str> = [&kept.current, &kept.previous]
            .into_iter()
            .flatten()
            .map(|version| version.file.as_str())
            .collect();
        for entry in fs::read_dir(&self.dir)?.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".so") && !named.contains(&name.as_ref()) {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(())
    }
}

/// True if the entry names a copy this module made: `math_plugin-vID.so`,
/// a plain name inside the kept directory (no path, no `..`).
fn confined(version: &KeptVersion) -> bool {
    version.file == format!("math_plugin-v{}.so", version.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_current_and_previous_and_rolls_back_once() {
        let dir = tempfile::tempdir().expect("a temporary dir");
        let kept = KeptPlugins::new(dir.path().join("kept"));
        let library = dir.path().join("lib.so");
        fs::write(&library, b"code").expect("a library");
        for (id, version) in [(1, "1.0.0"), (2, "1.1.0"), (3, "1.2.0")] {
            kept.record(id, version, &library).expect("record");
        }
        let index = kept.read();
        assert_eq!(index.current.as_ref().map(|v| v.id), Some(3));
        assert_eq!(index.previous.as_ref().map(|v| v.id), Some(2));
        assert!(!dir.path().join("kept/math_plugin-v1.so").exists());

        let (from, to) = kept.roll_back().expect("roll back").expect("a previous");
        assert_eq!((from.id, to.id), (3, 2));
        assert!(kept.path(&to).exists());
        assert!(!kept.path(&from).exists(), "the bad copy is gone");
        assert!(kept.roll_back().expect("roll back").is_none(), "only once");
        assert_eq!(kept.read().last_id, 3, "ids are not reused");
    }

    #[test]
    fn entries_naming_other_paths_are_ignored() {
        let dir = tempfile::tempdir().expect("a temporary dir");
        let kept = KeptPlugins::new(dir.path().to_path_buf());
        for file in ["/etc/hostname", "../../lib.so", "math_plugin-v2.so"] {
            let index = format!(
                r#"{{"current":{{"id":1,"version":"1.0.0","file":"{file}"}},"last_id":1}}"#
            );
            fs::write(dir.path().join("kept.json"), index).expect("an index");
            assert!(kept.read().current.is_none(), "{file}");
        }
    }
}
