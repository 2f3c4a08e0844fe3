//! What the daemon needs of the operating system and its files: the home
//! directory and its lock (`home`), files kept across restarts (`kept`),
//! the fatal-signal handler (`fatal`) and the service manager's
//! notifications (`service`).
//!
//! Leaves: nothing here knows the node, its processes or its edges.

pub(crate) mod fatal;
pub mod home;
pub(crate) mod kept;
pub(crate) mod service;
