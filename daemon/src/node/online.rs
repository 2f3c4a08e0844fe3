//! Schedulers online, as the console and the /load page change them: the
//! runtime's [`Schedulers`] plus where the count is saved
//! (`schedulers.json` in the home), so that a daemon heart restarts
//! comes back with the count it had, as it comes back with its load.
//!
//! With `--tokio-console` the processes are tokio tasks instead (so that
//! the console names them), on a tokio runtime of N workers fixed at
//! start: the count cannot change then, and says why.
//!
//! It changes only the count; how processes move is the runtime's
//! (`system_runtime::scheduler`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use system_runtime::scheduler::{OutOfRange, Schedulers};
use system_runtime::usage::UsageMeter;
use tokio::runtime::Handle;

/// Why the count did not change.
#[derive(Debug, thiserror::Error)]
pub enum SetError {
    #[error(transparent)]
    Range(#[from] OutOfRange),
    #[error(
        "with --tokio-console processes are tokio tasks: the {0} scheduler(s) are fixed at start"
    )]
    Fixed(usize),
}

/// Where processes run.
enum Mode {
    /// On the runtime's own schedulers.
    Own(Arc<Schedulers>),
    /// As tokio tasks on a runtime with this many workers.
    Tokio(Handle, usize),
}

/// What `schedulers.json` holds.
#[derive(Serialize, Deserialize)]
struct Saved {
    online: usize,
}

/// The node's schedulers and their saved count.
pub struct SchedulersOnline {
    mode: Mode,
    saved_in: Mutex<Option<PathBuf>>,
}

impl SchedulersOnline {
    /// Processes on the runtime's own schedulers.
    pub fn own(schedulers: Arc<Schedulers>) -> SchedulersOnline {
        SchedulersOnline {
            mode: Mode::Own(schedulers),
            saved_in: Mutex::new(None),
        }
    }

    /// Processes as tokio tasks on `handle`'s `workers` (fixed).
    pub fn tokio(handle: Handle, workers: usize) -> SchedulersOnline {
        SchedulersOnline {
            mode: Mode::Tokio(handle, workers.max(1)),
            saved_in: Mutex::new(None),
        }
    }

    /// The runtime's schedulers, if processes run on them.
    pub fn own_schedulers(&self) -> Option<&Arc<Schedulers>> {
        match &self.mode {
            Mode::Own(schedulers) => Some(schedulers),
            Mode::Tokio(..) => None,
        }
    }

    /// A meter of the schedulers' usage (per scheduler, on our own).
    pub fn usage_meter(&self) -> UsageMeter {
        match &self.mode {
            Mode::Own(schedulers) => UsageMeter::of_schedulers(schedulers.clone()),
            Mode::Tokio(handle, _) => UsageMeter::new(handle.clone()),
        }
    }

    /// Schedulers online now.
    pub fn online(&self) -> usize {
        match &self.mode {
            Mode::Own(schedulers) => schedulers.online(),
            Mode::Tokio(_, workers) => *workers,
        }
    }

    /// The most that can be online (`--max-schedulers`).
    pub fn max(&self) -> usize {
        match &self.mode {
            Mode::Own(schedulers) => schedulers.max(),
            Mode::Tokio(_, workers) => *workers,
        }
    }

    /// Sets the count (1..=max) and saves it; returns the count before.
    pub fn set(&self, online: usize) -> Result<usize, SetError> {
        let Mode::Own(schedulers) = &self.mode else {
            return Err(SetError::Fixed(self.online()));
        };
        let before = schedulers.set_online(online)?;
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
            && let Mode::Own(schedulers) = &self.mode
        {
            match schedulers.set_online(saved.online) {
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
        if let Err(error) = crate::os::home::replace(file, json.as_bytes()) {
            tracing::warn!(
                "cannot save the schedulers online to {}: {error}",
                file.display()
            );
        }
    }
}
