//! The end-to-end tests: one test binary, one module per area, so the
//! daemon's library is linked once for all of them (matklad, "Delete Cargo
//! Integration Tests"). Each area drives the real `system` binary started
//! in a temporary home on ephemeral ports (`support`), through its
//! WebSocket, HTTP, admin socket, pty, log and files; `plugin_copies` makes
//! the misbehaving plugins from the real source with one change each.
//!
//! Run one area with `cargo test -p system --test e2e console::`, one test
//! by its name; `cargo test --workspace` runs them all.

mod plugin_copies;
mod support;

mod browser;
mod console;
mod cores;
mod demo;
mod faults;
mod fuzz;
mod heart;
mod homes;
mod lifecycle;
mod links;
mod load;
mod memory;
mod module_cycles;
mod native_stacks;
mod ops;
mod processes;
mod security;
mod soak;
mod sum;
mod tokio_console;
mod untrusted_plugins;
mod upgrade;
