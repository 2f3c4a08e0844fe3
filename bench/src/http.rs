//! Plain HTTP/1.1 GETs to the daemon (one connection each, `Connection:
//! close`), for the phases that read its JSON API: the status, the body
//! and how long the whole answer took.
//!
//! It only fetches; what a phase does with the answer is `phases`' job.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// One answer.
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub took: Duration,
}

/// `GET path` from the daemon at `url` (`http://HOST:PORT`).
pub async fn get(url: &str, path: &str) -> anyhow::Result<Answer> {
    let address = url.trim_start_matches("http://");
    let began = Instant::now();
    let mut stream = TcpStream::connect(address)
        .await
        .with_context(|| format!("connecting to {address}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let took = began.elapsed();
    let response = String::from_utf8_lossy(&response);
    let Some((head, body)) = response.split_once("\r\n\r\n") else {
        bail!("no HTTP answer to GET {path}: {response}");
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    Ok(Answer {
        status,
        body: body.to_owned(),
        took,
    })
}
