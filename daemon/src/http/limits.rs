//! What one HTTP client can hold: a connection cap below the open-files
//! limit (descriptors kept in reserve so the admin socket always accepts),
//! time limits on each connection's reads and writes, and how long a
//! kept-alive connection may sit idle between requests.
//!
//! It counts and times connections; it never reads what they carry.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use nix::sys::resource::{Resource, getrlimit};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_io_timeout::TimeoutStream;

/// Descriptors kept for everything but HTTP connections (the admin socket
/// and its sessions, the log, plugins, the runtime's own), at most half
/// the limit.
pub const RESERVE: u64 = 256;

/// A request's head (request line and headers) must arrive within this,
/// and a kept-alive connection is closed after this long without one
/// (hyper's own timer covers only the first request: see [`Idle`]).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// A read or write pending longer than this ends the connection (a stalled
/// body, a peer that reads nothing). WebSockets are pinged well within it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// The connection slots, shared by every incarnation of the listener.
pub struct Limits {
    slots: Arc<Semaphore>,
    cap: usize,
}

impl Limits {
    /// Slots for the open-files soft limit as it is now, minus the reserve.
    pub fn from_open_files_limit() -> Limits {
        let soft = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
        Limits::new(cap_for(soft))
    }

    pub fn new(cap: usize) -> Limits {
        Limits {
            slots: Arc::new(Semaphore::new(cap)),
            cap,
        }
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// A free slot, if any (without waiting).
    pub fn try_slot(&self) -> Option<Slot> {
        self.slots.clone().try_acquire_owned().ok().map(Slot)
    }

    /// Waits for a free slot.
    pub async fn slot(&self) -> Slot {
        match self.slots.clone().acquire_owned().await {
            Ok(permit) => Slot(permit),
            // The semaphore is never closed.
            Err(_) => std::future::pending().await,
        }
    }
}

/// When a connection last finished a request, and how many it is serving:
/// the connection's task closes it once it has served none for
/// [`HEADER_TIMEOUT`].
pub struct Idle {
    state: std::sync::Mutex<(usize, tokio::time::Instant)>,
}

impl Idle {
    pub fn new() -> Arc<Idle> {
        Arc::new(Idle {
            state: std::sync::Mutex::new((0, tokio::time::Instant::now())),
        })
    }

    /// Marks a request being served until the guard is dropped.
    pub fn busy(self: &Arc<Self>) -> Busy {
        crate::lock(&self.state).0 += 1;
        Busy(self.clone())
    }

    /// When the connection may be closed if nothing happens before, or
    /// `None` while a request is being served.
    pub fn deadline(&self) -> Option<tokio::time::Instant> {
        let (busy, since) = *crate::lock(&self.state);
        (busy == 0).then_some(since + HEADER_TIMEOUT)
    }
}

/// A request in progress on a connection (see [`Idle::busy`]).
pub struct Busy(Arc<Idle>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = crate::lock(&self.0.state);
        state.0 = state.0.saturating_sub(1);
        state.1 = tokio::time::Instant::now();
    }
}

/// HTTP connections allowed under an open-files soft limit of `soft`.
fn cap_for(soft: u64) -> usize {
    let reserve = RESERVE.min(soft / 2);
    let cap = soft.saturating_sub(reserve).max(1);
    usize::try_from(cap)
        .unwrap_or(usize::MAX)
        .min(Semaphore::MAX_PERMITS)
}

/// One connection's place under the cap, given back when it is dropped.
pub struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

/// An accepted connection: holds its slot for as long as the socket is
/// open (through a WebSocket upgrade too), and times out stalled I/O.
pub type Connection = Pin<Box<TimeoutStream<Counted>>>;

pub fn connection(stream: TcpStream, slot: Slot) -> Connection {
    let mut stream = TimeoutStream::new(Counted {
        stream,
        _slot: slot,
    });
    stream.set_read_timeout(Some(IO_TIMEOUT));
    stream.set_write_timeout(Some(IO_TIMEOUT));
    Box::pin(stream)
}

/// A socket with its slot.
pub struct Counted {
    stream: TcpStream,
    _slot: Slot,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_keeps_a_reserve_below_the_limit() {
        assert_eq!(cap_for(1024), 768);
        assert_eq!(cap_for(256), 128);
        assert_eq!(cap_for(2), 1);
        assert_eq!(cap_for(0), 1);
    }
}
