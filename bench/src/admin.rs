//! A client of the daemon's admin socket (docs/admin-protocol.md): one
//! session, `eval` frames out, `result`/`error` frames back, timed from
//! sending the frame to reading the answer's line.
//!
//! It evaluates what it is given; it never interrupts or loops on its own.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// How long one evaluation may take before the benchmark gives up.
const TIMEOUT: Duration = Duration::from_secs(60);

pub struct Admin {
    lines: Lines<BufReader<OwnedReadHalf>>,
    writer: OwnedWriteHalf,
    next_id: u64,
}

/// One evaluation: how long it took, and its JSON value or error message.
pub struct Evaluated {
    pub took: Duration,
    pub value: Result<Value, String>,
    /// Size of the answer's frame in bytes.
    pub bytes: usize,
}

impl Admin {
    pub async fn connect(socket: &Path) -> anyhow::Result<Admin> {
        let stream = UnixStream::connect(socket)
            .await
            .with_context(|| format!("connecting to {}", socket.display()))?;
        let (reader, writer) = stream.into_split();
        let mut admin = Admin {
            lines: BufReader::new(reader).lines(),
            writer,
            next_id: 1,
        };
        let hello = admin.read().await?;
        if hello["type"] != "hello" {
            bail!("the admin socket said {hello} instead of hello");
        }
        Ok(admin)
    }

    async fn read(&mut self) -> anyhow::Result<Value> {
        Ok(self.read_line().await?.0)
    }

    async fn read_line(&mut self) -> anyhow::Result<(Value, usize)> {
        let line = tokio::time::timeout(TIMEOUT, self.lines.next_line())
            .await
            .map_err(|_| anyhow!("no answer on the admin socket within {TIMEOUT:?}"))??
            .ok_or_else(|| anyhow!("the admin socket closed"))?;
        Ok((serde_json::from_str(&line)?, line.len()))
    }

    /// Evaluates `script` and times it; the result's JSON form comes back.
    pub async fn eval(&mut self, script: &str) -> anyhow::Result<Evaluated> {
        self.evaluate(script, true).await
    }

    /// Evaluates `script` as a console does (the result only as text) and times it.
    pub async fn eval_text(&mut self, script: &str) -> anyhow::Result<Evaluated> {
        self.evaluate(script, false).await
    }

    async fn evaluate(&mut self, script: &str, with_json: bool) -> anyhow::Result<Evaluated> {
        let id = self.next_id;
        self.next_id += 1;
        let frame = format!(
            "{}\n",
            json!({"type": "eval", "id": id, "script": script, "json": with_json})
        );
        let sent = Instant::now();
        self.writer.write_all(frame.as_bytes()).await?;
        loop {
            let (answer, bytes) = self.read_line().await?;
            if answer["id"] != id {
                continue;
            }
            let took = sent.elapsed();
            let value = match answer["type"].as_str() {
                Some("result") => Ok(answer["value"].clone()),
                Some("error") => Err(format!(
                    "{}: {}",
                    answer["kind"].as_str().unwrap_or("?"),
                    answer["message"].as_str().unwrap_or("?")
                )),
                _ => continue,
            };
            return Ok(Evaluated { took, value, bytes });
        }
    }
}
