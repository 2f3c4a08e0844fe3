//! A client of the admin socket for the tests (docs/admin-protocol.md),
//! and the console-side helpers several areas share.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use super::{Client, Daemon, PATIENCE};

/// A client of the admin socket, speaking docs/admin-protocol.md.
pub struct Console {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    next_id: u64,
    pub hello: Value,
    /// What scripts printed, in order.
    output: Vec<String>,
}

impl Console {
    pub async fn open(daemon: &Daemon) -> Console {
        Console::connect(&daemon.home().join("admin.sock"))
            .await
            .expect("the admin socket accepts a console")
    }

    pub async fn connect(socket: &Path) -> std::io::Result<Console> {
        let (reader, writer) = UnixStream::connect(socket).await?.into_split();
        let mut console = Console {
            reader: BufReader::new(reader),
            writer,
            next_id: 1,
            hello: Value::Null,
            output: Vec::new(),
        };
        console.hello = console.frame().await;
        assert_eq!(console.hello["type"], "hello", "{}", console.hello);
        Ok(console)
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.writer
            .write_all(bytes)
            .await
            .expect("write to the admin socket");
    }

    pub async fn send(&mut self, frame: Value) {
        let mut bytes = frame.to_string().into_bytes();
        bytes.push(b'\n');
        self.send_raw(&bytes).await;
    }

    /// The next frame (within [`PATIENCE`]).
    pub async fn frame(&mut self) -> Value {
        let mut line = String::new();
        let read = tokio::time::timeout(PATIENCE, self.reader.read_line(&mut line))
            .await
            .expect("a frame arrives in time")
            .expect("read the admin socket");
        assert!(read > 0, "the daemon closed the console");
        serde_json::from_str(&line).expect("the daemon sends JSON lines")
    }

    /// Sends an `eval` without waiting; returns its id.
    pub async fn start(&mut self, script: &str) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({"type": "eval", "id": id, "script": script}))
            .await;
        id
    }

    /// The `result` or `error` frame of evaluation `id`, collecting output.
    pub async fn reply(&mut self, id: u64) -> Value {
        loop {
            let frame = self.frame().await;
            if frame["type"] == "output" {
                self.output
                    .push(frame["text"].as_str().unwrap_or("").to_owned());
            } else if frame["id"] == id {
                return frame;
            }
        }
    }

    pub async fn eval(&mut self, script: &str) -> Value {
        let id = self.start(script).await;
        self.reply(id).await
    }

    /// The JSON value of a script that must succeed.
    pub async fn value(&mut self, script: &str) -> Value {
        let reply = self.eval(script).await;
        assert_eq!(reply["type"], "result", "{script}: {reply}");
        reply["value"].clone()
    }

    /// The printed text of a script that must succeed.
    pub async fn text(&mut self, script: &str) -> String {
        let reply = self.eval(script).await;
        assert_eq!(reply["type"], "result", "{script}: {reply}");
        reply["text"].as_str().unwrap_or("").to_owned()
    }

    pub async fn until(&mut self, script: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let value = self.value(script).await;
            if done(&value) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting on {script}: {value}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Starts `sum(-1)` (an endless loop) as sum `id`; returns its pid.
pub async fn endless_sum(browser: &mut Client, id: i64) -> String {
    browser.sum(id, "-1").await;
    let calculating = browser.calculating(id).await;
    calculating["pid"]
        .as_str()
        .expect("calculating names the pid")
        .to_owned()
}

/// A kill's answer for a live process: `true`, or, when the process is
/// inside a long poll (a busy machine stretches one), "kill pending: …".
pub fn kill_taken(answer: &Value) -> bool {
    *answer == true
        || answer
            .as_str()
            .is_some_and(|text| text.starts_with("kill pending"))
}
