//! What a well-behaved Unix service does for whoever runs it: raise its soft
//! limit on open files to the hard limit (as Go's runtime does), and tell a
//! service manager (systemd, `Type=notify`) when it serves and when it stops.
//!
//! Notices go to `NOTIFY_SOCKET` when it is set and are a no-op otherwise;
//! a failed notice is logged, never fatal. Nothing here starts or stops anything.

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use sd_notify::NotifyState;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and logs the limit.
/// Connections beyond it are refused (EMFILE) without affecting others.
pub fn raise_open_files_limit() {
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::info!("open files limit: {hard} (raised from {soft})"),
            Err(error) => {
                tracing::warn!("open files limit: {soft} (cannot raise it to {hard}: {error})")
            }
        },
        Ok((soft, _)) => tracing::info!("open files limit: {soft}"),
        Err(error) => tracing::warn!("cannot read the open files limit: {error}"),
    }
}

/// `READY=1`: the daemon serves.
pub fn notify_ready() {
    notify(NotifyState::Ready);
}

/// `STOPPING=1`: the daemon has begun its graceful stop.
pub fn notify_stopping() {
    notify(NotifyState::Stopping);
}

fn notify(state: NotifyState) {
    if let Err(error) = sd_notify::notify(&[state]) {
        tracing::warn!("cannot notify the service manager: {error}");
    }
}
