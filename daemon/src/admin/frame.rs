//! The admin socket's framing: one JSON object per line (`\n`-terminated),
//! at most [`MAX_REQUEST`] bytes from a client. See docs/admin-protocol.md.
//!
//! It splits and bounds bytes; it must not interpret the messages, and an
//! oversized or broken frame must never end anything but that frame.

use super::reply::{ErrorKind, Reply};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

/// Largest frame a client may send (the newline not counted).
pub const MAX_REQUEST: usize = 1024 * 1024;
/// Largest frame the daemon sends; a bigger result becomes an error frame.
pub const MAX_REPLY: usize = 64 * 1024 * 1024;

/// Why no frame could be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The frame is longer than [`MAX_REQUEST`]; the rest of it, up to its
    /// newline, is skipped and the next frame is read normally.
    #[error("frame longer than {MAX_REQUEST} bytes")]
    TooLarge,
    #[error("reading the admin socket: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads frames from a stream. [`FrameReader::next_frame`] is cancel-safe:
/// a partial frame stays here, not in the future.
pub struct FrameReader<R> {
    inner: BufReader<R>,
    line: Vec<u8>,
    /// Skipping the rest of an oversized frame.
    skipping: bool,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        FrameReader {
            inner: BufReader::new(inner),
            line: Vec::new(),
            skipping: false,
        }
    }

    /// The next frame without its newline; `None` at the end of the stream
    /// (an unterminated last frame is dropped).
    pub async fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        loop {
            let available = self.inner.fill_buf().await?;
            if available.is_empty() {
                return Ok(None);
            }
            let (chunk, complete) = match available.iter().position(|&b| b == b'\n') {
                Some(end) => (&available[..end], true),
                None => (available, false),
            };
            let used = chunk.len() + usize::from(complete);
            if !self.skipping {
                self.line.extend_from_slice(chunk);
            }
            self.inner.consume(used);
            if !self.skipping && self.line.len() > MAX_REQUEST {
                self.line = Vec::new();
                self.skipping = !complete;
                return Err(FrameError::TooLarge);
            }
            if complete {
                if std::mem::take(&mut self.skipping) {
                    continue;
                }
                return Ok(Some(std::mem::take(&mut self.line)));
            }
        }
    }
}

/// Writes one frame. A reply larger than [`MAX_REPLY`] is replaced by an
/// error frame saying so (with the same `id`).
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &Reply,
) -> std::io::Result<()> {
    let mut bytes = frame.to_line();
    if bytes.len() > MAX_REPLY + 1 {
        let too_large = Reply::error(
            frame.id(),
            ErrorKind::TooLarge,
            format!("the result is larger than {MAX_REPLY} bytes"),
        );
        bytes = too_large.to_line();
    }
    writer.write_all(&bytes).await?;
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn splits_lines_and_skips_an_oversized_one() {
        let mut input = b"{\"a\":1}\n".to_vec();
        input.extend(vec![b'x'; MAX_REQUEST + 10]);
        input.extend(b"\n{\"b\":2}\nunterminated");
        let mut reader = FrameReader::new(&input[..]);
        assert_eq!(
            reader.next_frame().await.ok().flatten(),
            Some(b"{\"a\":1}".to_vec())
        );
        assert!(matches!(
            reader.next_frame().await,
            Err(FrameError::TooLarge)
        ));
        assert_eq!(
            reader.next_frame().await.ok().flatten(),
            Some(b"{\"b\":2}".to_vec())
        );
        assert!(matches!(reader.next_frame().await, Ok(None)));
    }
}
