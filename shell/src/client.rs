//! A blocking client of the admin socket: connects, reads the `hello`,
//! sends `eval` frames and collects their output and result, turning a
//! Ctrl-C (the SIGINT flag) into an `interrupt` frame.
//!
//! Framing only as docs/admin-protocol.md defines it; it must not interpret
//! scripts or results beyond the frames' fields.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use serde_json::{Value, json};

use crate::ShellError;
use crate::interrupt::INTERRUPTED;

/// Largest frame the daemon sends.
pub const MAX_REPLY: usize = 64 * 1024 * 1024;
/// How often a waiting client looks at the Ctrl-C flag.
const POLL: Duration = Duration::from_millis(50);
/// How long to wait for the daemon's greeting.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// A connected console session.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    pending: Vec<u8>,
    next_id: u64,
    /// The node's name, e.g. `system@host`.
    pub node: String,
    /// The session process's pid in the daemon.
    pub session: String,
}

/// How one evaluation ended.
#[derive(Debug)]
pub enum Outcome {
    /// `text` as the console prints it, `value` as JSON.
    Value { text: String, value: Value },
    /// The script failed (or was interrupted); the session goes on.
    Failed { kind: String, message: String },
}

impl Client {
    pub fn connect(socket: &Path) -> Result<Client, ShellError> {
        let stream = UnixStream::connect(socket).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => ShellError::NotRunning {
                socket: socket.to_path_buf(),
            },
            _ => ShellError::Connect {
                socket: socket.to_path_buf(),
                source,
            },
        })?;
        let writer = stream.try_clone()?;
        stream.set_read_timeout(Some(HELLO_TIMEOUT))?;
        let mut client = Client {
            reader: BufReader::new(stream),
            writer,
            pending: Vec::new(),
            next_id: 1,
            node: String::new(),
            session: String::new(),
        };
        let hello = client.read_frame()?.ok_or(ShellError::Disconnected)?;
        match field(&hello, "type") {
            "hello" => {
                client.node = field(&hello, "node").to_owned();
                client.session = field(&hello, "session").to_owned();
            }
            "error" if field(&hello, "kind") == "refused" => {
                return Err(ShellError::Refused(field(&hello, "message").to_owned()));
            }
            _ => return Err(ShellError::Protocol(hello.to_string())),
        }
        client.reader.get_ref().set_read_timeout(Some(POLL))?;
        Ok(client)
    }

    /// Evaluates `script`; `output` gets what the script prints, as it comes.
    /// Ctrl-C (SIGINT, if caught) interrupts the script.
    /// With `json`, the result also carries its JSON form (`value`).
    pub fn eval(
        &mut self,
        script: &str,
        json: bool,
        mut output: impl FnMut(&str),
    ) -> Result<Outcome, ShellError> {
        let id = self.next_id;
        self.next_id += 1;
        INTERRUPTED.store(false, SeqCst);
        self.send(&json!({"type": "eval", "id": id, "script": script, "json": json}))?;
        loop {
            let Some(frame) = self.poll_frame()? else {
                if INTERRUPTED.swap(false, SeqCst) {
                    self.send(&json!({"type": "interrupt"}))?;
                }
                continue;
            };
            let for_us = frame.get("id").and_then(Value::as_u64) == Some(id);
            match field(&frame, "type") {
                "output" => output(field(&frame, "text")),
                "result" if for_us => {
                    return Ok(Outcome::Value {
                        text: field(&frame, "text").to_owned(),
                        value: frame.get("value").cloned().unwrap_or(Value::Null),
                    });
                }
                "error" if for_us || frame.get("id").is_none() => {
                    let kind = field(&frame, "kind").to_owned();
                    if kind == "shutdown" {
                        return Err(ShellError::Stopping);
                    }
                    return Ok(Outcome::Failed {
                        kind,
                        message: field(&frame, "message").to_owned(),
                    });
                }
                _ => {}
            }
        }
    }

    /// Sends a request other than `eval` (e.g. `upgrade`), giving it a fresh
    /// `id`, and returns the frame that answers it: the first frame with that
    /// id, or an error frame without one. A `shutdown` error is an error.
    pub fn request(&mut self, mut frame: Value) -> Result<Value, ShellError> {
        let id = self.next_id;
        self.next_id += 1;
        if let Some(fields) = frame.as_object_mut() {
            fields.insert("id".to_owned(), json!(id));
        }
        self.send(&frame)?;
        loop {
            let Some(frame) = self.poll_frame()? else {
                continue;
            };
            let answers = match frame.get("id") {
                Some(found) => found.as_u64() == Some(id) && field(&frame, "type") != "output",
                None => field(&frame, "type") == "error",
            };
            if !answers {
                continue;
            }
            if field(&frame, "type") == "error" && field(&frame, "kind") == "shutdown" {
                return Err(ShellError::Stopping);
            }
            return Ok(frame);
        }
    }

    fn send(&mut self, frame: &Value) -> Result<(), ShellError> {
        let mut bytes = frame.to_string().into_bytes();
        bytes.push(b'\n');
        self.writer
            .write_all(&bytes)
            .map_err(|_| ShellError::Disconnected)
    }

    /// A frame, or `None` if none arrived within the poll interval.
    fn poll_frame(&mut self) -> Result<Option<Value>, ShellError> {
        match self.read_frame() {
            Ok(Some(frame)) => Ok(Some(frame)),
            Ok(None) => Err(ShellError::Disconnected),
            Err(ShellError::Io(error))
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// Reads one whole frame; a partial one stays in `pending` across timeouts.
    fn read_frame(&mut self) -> Result<Option<Value>, ShellError> {
        loop {
            let read = Read::take(
                &mut self.reader,
                (MAX_REPLY + 1 - self.pending.len().min(MAX_REPLY)) as u64,
            )
            .read_until(b'\n', &mut self.pending)?;
            if self.pending.last() == Some(&b'\n') {
                let line = std::mem::take(&mut self.pending);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(&line)
                    .map(Some)
                    .map_err(|error| ShellError::Protocol(error.to_string()));
            }
            if self.pending.len() > MAX_REPLY {
                return Err(ShellError::Protocol(format!(
                    "a frame longer than {MAX_REPLY} bytes"
                )));
            }
            if read == 0 {
                return Ok(None);
            }
        }
    }
}

fn field<'a>(frame: &'a Value, name: &str) -> &'a str {
    frame.get(name).and_then(Value::as_str).unwrap_or("")
}

pub(crate) fn catch_ctrl_c() -> Result<(), ShellError> {
    crate::interrupt::catch_sigint().map_err(ShellError::Io)
}
