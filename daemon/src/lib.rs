//! The `system` daemon as a library: every module the binary uses, so that
//! tests and benchmarks can reach them too.

pub mod admin;
pub mod code;
pub mod connection;
pub mod home;
pub mod http;
pub mod lifecycle;
pub mod load;
pub mod log;
pub mod metrics;
pub mod node;
pub mod process;
pub mod scheduler;
pub mod server;
pub mod sum;
pub mod top;
pub mod upgrade;
