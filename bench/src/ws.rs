//! A WebSocket client of the daemon's `/ws` (docs/protocol.md): sends JSON
//! messages and receives them, each stamped with the instant it arrived (a
//! reader task stamps it, so waiting elsewhere does not delay the stamp).
//!
//! It speaks the protocol only; what to send and when is the phases' job.

use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One message from the daemon and when it arrived.
#[derive(Debug)]
pub struct Received {
    pub at: Instant,
    pub message: Value,
}

/// One open WebSocket.
pub struct Client {
    sink: SplitSink<Stream, Message>,
    inbox: mpsc::UnboundedReceiver<Received>,
}

impl Client {
    /// Connects and waits for the daemon's `hello`.
    pub async fn connect(url: &str) -> anyhow::Result<Client> {
        let (stream, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        let (sink, mut source) = stream.split();
        let (tx, inbox) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = source.next().await {
                let at = Instant::now();
                match frame {
                    Message::Text(text) => {
                        if let Ok(message) = serde_json::from_str(text.as_str())
                            && tx.send(Received { at, message }).is_err()
                        {
                            return;
                        }
                    }
                    Message::Close(_) => return,
                    _ => {}
                }
            }
        });
        let mut client = Client { sink, inbox };
        client
            .wait_for(Duration::from_secs(10), |m| m["type"] == "hello")
            .await?;
        Ok(client)
    }

    pub async fn send(&mut self, message: &Value) -> anyhow::Result<()> {
        self.sink
            .send(Message::text(message.to_string()))
            .await
            .context("sending on the WebSocket")
    }

    /// The next message; `None` once the connection closed.
    pub async fn recv(&mut self) -> Option<Received> {
        self.inbox.recv().await
    }

    /// Skips messages until one satisfies `wanted`.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        wanted: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.recv()).await {
                Err(_) => bail!("no matching message within {timeout:?}"),
                Ok(None) => return Err(anyhow!("the WebSocket closed")),
                Ok(Some(received)) if wanted(&received.message) => return Ok(received),
                Ok(Some(_)) => {}
            }
        }
    }

    /// Sends sum `id` of `input` and waits for its final answer.
    pub async fn sum(
        &mut self,
        id: u64,
        input: &str,
        timeout: Duration,
    ) -> anyhow::Result<Received> {
        self.send(&serde_json::json!({"type": "sum", "id": id, "input": input}))
            .await?;
        self.wait_for(timeout, |m| is_final_sum(m, id)).await
    }

    /// Sets the load and waits for the daemon's `load` reply.
    pub async fn set_load(&mut self, jobs: u64) -> anyhow::Result<()> {
        self.send(&serde_json::json!({"type": "load", "jobs": jobs}))
            .await?;
        let reply = self
            .wait_for(Duration::from_secs(10), |m| {
                m["type"] == "load" || m["type"] == "error"
            })
            .await?;
        if reply.message["type"] == "error" {
            bail!("load {jobs} refused: {}", reply.message["message"]);
        }
        Ok(())
    }
}

/// Is `message` the final answer (`done`, `error`, `invalid`) to sum `id`?
pub fn is_final_sum(message: &Value, id: u64) -> bool {
    message["type"] == "sum"
        && message["id"] == id
        && matches!(
            message["status"].as_str(),
            Some("done" | "error" | "invalid")
        )
}
