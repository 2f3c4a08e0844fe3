//! Schedulers online, as the console and the /load page change them: the
//! runtime's [`Schedulers`] plus where the count is saved
//! (`schedulers.json` in the home), so that a daemon heart restarts
//! comes back with the count it had, as it comes back with its load.
//!
//! It changes only the count; how processes move is the runtime's
//! (`system_runtime::scheduler`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use system_runtime::scheduler::{OutOfRange, Schedulers};

/// What `schedulers.json` holds.
#[derive(Serialize, Deserialize)]
struct Saved {
    online: usize,
}

/// The node's schedulers and their saved count.
pub struct SchedulersOnline {
    schedulers: Arc<Schedulers>,
    saved_in: Mutex<Option<PathBuf>>,
}

impl SchedulersOnline {
    pub fn new(schedulers: Arc<Schedulers>) -> SchedulersOnline {
        SchedulersOnline {
            schedulers,
            saved_in: Mutex::new(None),
        }
    }

    pub fn schedulers(&self) -> &Arc<Schedulers> {
        &self.schedulers
    }

    /// Schedulers online now.
    pub fn online(&self) -> usize {
        self.schedulers.online()
    }

    /// The most that can be online (`--max-schedulers`).
    pub fn max(&self) -> usize {
        self.schedulers.max()
    }

    /// Sets the count (1..=max) and saves it; returns the count before.
    pub fn set(&self, online: usize) -> Result<usize, OutOfRange> {
        let before = self.schedulers.set_online(online)?;
        if before != online {
            tracing::info!("schedulers online: {before} -> {online}");
        }
        self.save();
        Ok(before)
    }

    /// Saves every new count to `file` from now on; with `restore`, first
    /// applies the count saved there (a restarted daemon resumes it).
    pub fn remember_in(&self, file: PathBuf, restore: bool) {
        if restore
            && let Some(saved) = std::fs::read_to_string(&file)
                .ok()
                .and_then(|text| serde_json::from_str::<Saved>(&text).ok())
        {
            match self.schedulers.set_online(saved.online) {
                Ok(_) => tracing::info!("schedulers online restored to {}", saved.online),
                Err(error) => {
                    tracing::warn!("the saved schedulers online are not restored: {error}")
                }
            }
        }
        *crate::lock(&self.saved_in) = Some(file);
        self.save();
    }

    fn save(&self) {
        let saved_in = crate::lock(&self.saved_in);
        let Some(file) = saved_in.as_ref() else {
            return;
        };
        let json = serde_json::to_string(&Saved {
            online: self.online(),
        })
        .unwrap_or_default();
        if let Err(error) = crate::home::replace(file, json.as_bytes()) {
            tracing::warn!(
                "cannot save the schedulers online to {}: {error}",
                file.display()
            );
        }
    }
}
