//! What the registry knows of supervision: which processes supervise which,
//! with what policy, and each child's restart type, so that `tree` can draw
//! the supervision tree. A supervisor — the runtime's own (`supervisor`) or
//! one a host writes itself — registers a view of its children for as long
//! as it runs ([`ProcessRegistry::supervising`](crate::ProcessRegistry::supervising)).
//!
//! It only records what supervisors say; it never starts, restarts or
//! kills a process, and it must not import the registry (the registry
//! holds a [`Supervisors`]).

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use dashmap::DashMap;

use crate::Pid;

/// When a child that ended is started again (OTP's restart types).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Restart {
    /// Always.
    Permanent,
    /// Only if it ended abnormally: not `normal`, not `shutdown`.
    Transient,
    /// Never.
    Temporary,
}

impl Restart {
    pub fn as_str(self) -> &'static str {
        match self {
            Restart::Permanent => "permanent",
            Restart::Transient => "transient",
            Restart::Temporary => "temporary",
        }
    }
}

impl fmt::Display for Restart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// At most `max_restarts` within `within`; one more and the supervisor ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intensity {
    pub max_restarts: usize,
    pub within: Duration,
}

impl Default for Intensity {
    fn default() -> Self {
        Intensity {
            max_restarts: 10,
            within: Duration::from_secs(10),
        }
    }
}

/// Which children a supervisor restarts when one ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Only the one that ended.
    OneForOne,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::OneForOne => "one_for_one",
        }
    }
}

/// How a supervisor restarts: its strategy and its intensity (`None`: it
/// restarts without limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub strategy: Strategy,
    pub intensity: Option<Intensity>,
}

/// One child as its supervisor sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SupervisedChild {
    pub pid: Pid,
    pub restart: Restart,
}

/// A supervisor's view of itself, read by whoever draws the tree (off the
/// schedulers; a view may hold a million children).
pub trait Supervises: Send + Sync {
    fn policy(&self) -> Policy;
    /// Appends its children now, in its own order. A child being restarted
    /// may be missing or already gone.
    fn children(&self, into: &mut Vec<SupervisedChild>);
}

/// A view for a supervisor whose children fit in one list: the
/// supervisor replaces a child's pid when it restarts it.
pub struct ChildList {
    policy: Policy,
    children: Mutex<Vec<SupervisedChild>>,
}

impl ChildList {
    pub fn new(policy: Policy) -> ChildList {
        ChildList {
            policy,
            children: Mutex::new(Vec::new()),
        }
    }

    /// Sets child `index` (appending if it is the next one).
    pub fn set(&self, index: usize, child: SupervisedChild) {
        let mut children = self.children.lock().unwrap_or_else(PoisonError::into_inner);
        match children.get_mut(index) {
            Some(slot) => *slot = child,
            None => children.push(child),
        }
    }

    /// The children's pids now.
    pub fn pids(&self) -> Vec<Pid> {
        let children = self.children.lock().unwrap_or_else(PoisonError::into_inner);
        children.iter().map(|child| child.pid).collect()
    }
}

impl Supervises for ChildList {
    fn policy(&self) -> Policy {
        self.policy
    }

    fn children(&self, into: &mut Vec<SupervisedChild>) {
        let children = self.children.lock().unwrap_or_else(PoisonError::into_inner);
        into.extend_from_slice(&children);
    }
}

/// The live supervisors of a registry, by pid.
#[derive(Default)]
pub(crate) struct Supervisors {
    views: DashMap<u64, Arc<dyn Supervises>>,
}

impl Supervisors {
    pub(crate) fn insert(self: &Arc<Self>, pid: Pid, view: Arc<dyn Supervises>) -> Supervising {
        self.views.insert(pid.0, view);
        Supervising {
            supervisors: self.clone(),
            pid,
        }
    }

    /// Every registered supervisor, by ascending pid.
    pub(crate) fn all(&self) -> Vec<(Pid, Arc<dyn Supervises>)> {
        let mut all: Vec<(Pid, Arc<dyn Supervises>)> = self
            .views
            .iter()
            .map(|view| (Pid(*view.key()), view.value().clone()))
            .collect();
        all.sort_unstable_by_key(|(pid, _)| *pid);
        all
    }
}

/// A supervisor's registration; dropping it (when the supervisor ends,
/// however it ends) takes the supervisor out of the tree.
pub struct Supervising {
    supervisors: Arc<Supervisors>,
    pid: Pid,
}

impl Drop for Supervising {
    fn drop(&mut self) {
        self.supervisors.views.remove(&self.pid.0);
    }
}
