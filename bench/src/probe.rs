//! The round-trip probe: on its own WebSocket, sends `sum(5)` at 100 Hz
//! (one outstanding at a time) and records how long each took to come back
//! `done`; counts disconnects and reconnects.
//!
//! It measures the daemon from outside; it never changes the load.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::time::MissedTickBehavior;

use crate::ws::{Client, is_final_sum};

/// Time between two probes.
const PERIOD: Duration = Duration::from_millis(10);

/// A probe answer slower than this counts as lost.
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Default)]
pub struct Probe {
    /// Round trips in ms since the last `take`.
    rtts: Arc<Mutex<Vec<f64>>>,
    /// Probes that got no `done` in time or a wrong answer.
    failures: Arc<AtomicU64>,
    disconnects: Arc<AtomicU64>,
    active: Arc<AtomicBool>,
}

impl Probe {
    /// Connects and starts probing (paused until `resume`).
    pub async fn start(url: String) -> anyhow::Result<Probe> {
        let probe = Probe::default();
        let mut client = Client::connect(&url).await?;
        let runner = probe.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(PERIOD);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
            let mut id = 0u64;
            loop {
                ticks.tick().await;
                if !runner.active.load(Relaxed) {
                    continue;
                }
                id += 1;
                match runner.once(&mut client, id).await {
                    Ok(true) => {}
                    Ok(false) => {
                        runner.failures.fetch_add(1, Relaxed);
                    }
                    Err(_) => {
                        runner.disconnects.fetch_add(1, Relaxed);
                        client = loop {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            if let Ok(client) = Client::connect(&url).await {
                                break client;
                            }
                        };
                    }
                }
            }
        });
        Ok(probe)
    }

    /// One probe: Ok(true) if `done` with 15 came back in time.
    async fn once(&self, client: &mut Client, id: u64) -> anyhow::Result<bool> {
        let sent = Instant::now();
        client
            .send(&json!({"type": "sum", "id": id, "input": "5"}))
            .await?;
        let answer = match client.wait_for(TIMEOUT, |m| is_final_sum(m, id)).await {
            Ok(answer) => answer,
            Err(error) if error.to_string().contains("closed") => return Err(error),
            Err(_) => return Ok(false),
        };
        if answer.message["status"] != "done" || answer.message["result"] != "15" {
            return Ok(false);
        }
        let rtt = answer.at.duration_since(sent).as_secs_f64() * 1000.0;
        self.lock().push(rtt);
        Ok(true)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<f64>> {
        self.rtts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn resume(&self) {
        self.lock().clear();
        self.active.store(true, Relaxed);
    }

    pub fn pause(&self) {
        self.active.store(false, Relaxed);
    }

    /// The round trips (ms) since the last `take` or `resume`.
    pub fn take(&self) -> Vec<f64> {
        std::mem::take(&mut *self.lock())
    }

    pub fn failures(&self) -> u64 {
        self.failures.load(Relaxed)
    }

    pub fn disconnects(&self) -> u64 {
        self.disconnects.load(Relaxed)
    }
}
