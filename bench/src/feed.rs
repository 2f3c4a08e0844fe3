//! Records the daemon's metrics feed (WebSocket `subscribe` to `metrics`:
//! one sample every 100 ms) for the whole run, reconnecting if it drops and
//! counting the drops.
//!
//! It only listens; it never changes the load.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};

use crate::stats::Reading;
use crate::ws::Client;

/// The fields of one metrics sample the benchmark uses.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub t_ms: f64,
    pub jobs_total: u64,
    pub workers: u64,
    pub memory_mb: f64,
    pub scheduler_usage: f64,
}

impl Sample {
    fn parse(value: &Value) -> Option<Sample> {
        Some(Sample {
            t_ms: value["t_ms"].as_f64()?,
            jobs_total: value["jobs_total"].as_u64()?,
            workers: value["workers"].as_u64()?,
            memory_mb: value["memory_mb"].as_f64()?,
            scheduler_usage: value["scheduler_usage"].as_f64()?,
        })
    }
}

/// The samples received so far.
#[derive(Clone, Default)]
pub struct Feed {
    samples: Arc<Mutex<Vec<Sample>>>,
    disconnects: Arc<AtomicU64>,
}

impl Feed {
    /// Subscribes on its own WebSocket, in the background.
    pub async fn start(url: String) -> anyhow::Result<Feed> {
        let feed = Feed::default();
        let mut client = subscribe(&url).await?;
        let recorder = feed.clone();
        tokio::spawn(async move {
            loop {
                while let Some(received) = client.recv().await {
                    recorder.take(&received.message);
                }
                recorder.disconnects.fetch_add(1, Relaxed);
                client = loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if let Ok(client) = subscribe(&url).await {
                        break client;
                    }
                };
            }
        });
        Ok(feed)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Sample>> {
        self.samples.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take(&self, message: &Value) {
        let incoming: Vec<Sample> = match message["type"].as_str() {
            Some("metrics") => Sample::parse(&message["sample"]).into_iter().collect(),
            Some("history") => message["samples"]
                .as_array()
                .map(|all| all.iter().filter_map(Sample::parse).collect())
                .unwrap_or_default(),
            _ => return,
        };
        let mut samples = self.lock();
        for sample in incoming {
            if samples.last().is_none_or(|last| sample.t_ms > last.t_ms) {
                samples.push(sample);
            }
        }
    }

    pub fn latest(&self) -> Option<Sample> {
        self.lock().last().copied()
    }

    /// The daemon's clock (ms since its start) as of the latest sample.
    pub fn now_ms(&self) -> f64 {
        self.latest().map_or(0.0, |s| s.t_ms)
    }

    pub fn all(&self) -> Vec<Sample> {
        self.lock().clone()
    }

    pub fn readings(&self) -> Vec<Reading> {
        self.lock()
            .iter()
            .map(|s| Reading {
                t_ms: s.t_ms,
                total: s.jobs_total,
            })
            .collect()
    }

    pub fn disconnects(&self) -> u64 {
        self.disconnects.load(Relaxed)
    }

    /// Waits until a sample satisfies `wanted`; false on timeout.
    pub async fn wait_until(&self, timeout: Duration, wanted: impl Fn(&Sample) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if self.latest().is_some_and(|s| wanted(&s)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

async fn subscribe(url: &str) -> anyhow::Result<Client> {
    let mut client = Client::connect(url).await?;
    client
        .send(&json!({"type": "subscribe", "topic": "metrics"}))
        .await?;
    Ok(client)
}
