//! Why a process ended, and the DOWN message its monitors receive.
//!
//! Plain data only: delivering DOWN messages is the registry's job.

use std::fmt;

use crate::Pid;

/// The reason a process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// Its code returned.
    Normal,
    /// Somebody called `kill` on it (an exit signal `kill`).
    Killed,
    /// An exit signal with this reason (neither `kill` nor `normal`) ended it.
    Exit(String),
    /// Its code panicked; the panic message.
    Panic(String),
    /// The daemon is stopping.
    Shutdown,
    /// A monitor was asked for a process that does not exist.
    NoProc,
    /// It held more memory than its [`Spec`](crate::Spec) allows: `reached`
    /// bytes, over `limit`.
    MemoryLimit { limit: u64, reached: u64 },
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Normal => f.write_str("normal"),
            ExitReason::Killed => f.write_str("killed"),
            ExitReason::Exit(reason) => f.write_str(reason),
            ExitReason::Panic(message) => f.write_str(message),
            ExitReason::Shutdown => f.write_str("shutdown"),
            ExitReason::NoProc => f.write_str("noproc"),
            ExitReason::MemoryLimit { limit, reached } => write!(
                f,
                "memory_limit: held {} of a {} limit",
                crate::memory::bytes(*reached),
                crate::memory::bytes(*limit)
            ),
        }
    }
}

/// A process body that returns `()` ended normally; one that returns an
/// [`ExitReason`] ended with it.
impl From<()> for ExitReason {
    fn from((): ()) -> ExitReason {
        ExitReason::Normal
    }
}

/// Sent exactly once to each monitor of a process when it ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Down {
    pub pid: Pid,
    pub reason: ExitReason,
}
