//! The admin endpoint: a Unix socket in the daemon's home (mode 0600 in the
//! 0700 home), bound at start and served by the `admin_server` process, which checks each
//! peer's credentials and starts one `console_session` process per client,
//! at most [`MAX_SESSIONS`] at once.
//! The protocol is in docs/admin-protocol.md.
//!
//! It accepts and authorises; it must not evaluate anything itself (that is
//! the session's thread) nor trust a client the kernel did not vouch for.

pub mod api;
pub mod atom;
pub mod binding;
pub mod budget;
pub mod frame;
pub mod help;
pub mod nesting;
pub mod processes;
pub mod render;
pub mod reply;
pub mod session;
pub mod tree;

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reply::{ErrorKind, Reply};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use crate::node::Node;
use system_runtime::{Pid, ProcessContext};

/// Why the admin socket could not be served.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot bind the admin socket {path}: {source}")]
    Bind { path: String, source: io::Error },
    #[error("cannot restrict the admin socket {path} to its owner: {source}")]
    Permissions { path: String, source: io::Error },
}

/// Console sessions open at once (each has a thread and up to
/// `budget::SESSION_BUDGET` of variables); the next connection is refused.
pub const MAX_SESSIONS: usize = 16;

/// True if a peer with `peer_uid` may use a daemon running as `daemon_uid`:
/// the same user, or root.
pub fn peer_allowed(peer_uid: u32, daemon_uid: u32) -> bool {
    peer_uid == daemon_uid || peer_uid == 0
}

/// The `admin_server` process: accepts on the admin socket (bound once, at
/// start, by [`bind`]) until the daemon stops. A restart reuses the same
/// socket, so clients that connect meanwhile wait in its backlog.
///
/// The accept loop and the sessions run on the node's console runtime, not
/// on the schedulers: a saturated scheduler must not make the console wait.
/// This process only owns that loop (killing it ends the loop).
pub async fn serve(
    ctx: ProcessContext,
    node: Arc<Node>,
    listener: Arc<std::os::unix::net::UnixListener>,
) {
    ctx.enter(&"Admin.Server.accept_loop/1");
    let accepting = node
        .console
        .spawn(accept_loop(node.clone(), listener, ctx.pid()));
    let _stop_with_me = AbortOnDrop(accepting.abort_handle());
    match accepting.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => panic!("admin socket: {error}"),
        Err(error) if error.is_panic() => panic!("admin socket: the accept loop panicked"),
        Err(_) => {}
    }
}

/// Ends the console-side accept loop when the `admin_server` process ends.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `server`: the `admin_server` process, the parent of every session.
async fn accept_loop(
    node: Arc<Node>,
    listener: Arc<std::os::unix::net::UnixListener>,
    server: Pid,
) -> io::Result<()> {
    let listener = UnixListener::from_std(listener.try_clone()?)?;
    let daemon_uid = nix::unistd::geteuid().as_raw();
    let seats = Arc::new(Semaphore::new(MAX_SESSIONS));
    loop {
        let accepted = tokio::select! {
            _ = node.shutdown.cancelled() => return Ok(()),
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => admit(&node, stream, daemon_uid, &seats, server),
            Err(error) => {
                tracing::warn!("admin socket: accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Starts a session for an authorised peer while fewer than
/// [`MAX_SESSIONS`] are open; refuses any other with an error frame (and
/// closes its connection).
fn admit(
    node: &Arc<Node>,
    stream: UnixStream,
    daemon_uid: u32,
    seats: &Arc<Semaphore>,
    server: Pid,
) {
    let credentials = match stream.peer_cred() {
        Ok(credentials) => credentials,
        Err(error) => {
            tracing::warn!("admin socket: cannot read the peer's credentials: {error}; refused");
            refuse(&stream, "cannot verify your credentials");
            return;
        }
    };
    let peer = format!(
        "uid {} pid {}",
        credentials.uid(),
        credentials
            .pid()
            .map_or_else(|| "?".to_owned(), |pid| pid.to_string())
    );
    if !peer_allowed(credentials.uid(), daemon_uid) {
        tracing::warn!(
            "admin socket: refused {peer}: not the daemon's user (uid {daemon_uid}) or root"
        );
        refuse(
            &stream,
            "permission denied: only the daemon's user or root may use this console",
        );
        return;
    }
    let Ok(seat) = seats.clone().try_acquire_owned() else {
        tracing::warn!("admin socket: refused {peer}: {MAX_SESSIONS} console sessions are open");
        refuse(
            &stream,
            &format!(
                "too many console sessions: {MAX_SESSIONS} are open, the most at once; \
                 close one and try again"
            ),
        );
        return;
    };
    let pid = session::start(node.clone(), stream, peer.clone(), seat, server);
    tracing::info!("console session {pid} opened by {peer}");
}

/// Best effort, never waits: the refusal fits in the socket's buffer.
fn refuse(stream: &UnixStream, message: &str) {
    let _ = stream.try_write(&Reply::error(None, ErrorKind::Refused, message).to_line());
}

/// Binds the admin socket, replacing a stale file (the home lock guarantees
/// no other daemon owns it), and restricts it to the owner (mode 0600).
pub fn bind(path: &Path) -> Result<std::os::unix::net::UnixListener, AdminError> {
    let shown = path.display().to_string();
    match std::fs::remove_file(path) {
        Ok(()) => tracing::debug!("removed a stale admin socket {shown}"),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(AdminError::Bind {
                path: shown,
                source,
            });
        }
    }
    let listener = std::os::unix::net::UnixListener::bind(path)
        .and_then(|listener| listener.set_nonblocking(true).map(|()| listener))
        .map_err(|source| AdminError::Bind {
            path: shown.clone(),
            source,
        })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        AdminError::Permissions {
            path: shown.clone(),
            source,
        }
    })?;
    tracing::info!("admin socket at {shown}");
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_user_or_root_is_allowed() {
        assert!(peer_allowed(1000, 1000));
        assert!(peer_allowed(0, 1000));
        assert!(peer_allowed(0, 0));
        assert!(!peer_allowed(65534, 1000));
        assert!(!peer_allowed(1000, 0));
    }
}
