//! Synthetic load and metrics (not built yet: see issue 4). The connection
//! already speaks to this interface; until it exists it says so.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::node::Node;

pub type Sample = Value;
pub type Feed = broadcast::Receiver<Sample>;

pub fn subscribe(_node: &Arc<Node>) -> (Vec<Sample>, Feed) {
    let (_tx, rx) = broadcast::channel(1);
    (Vec::new(), rx)
}

pub async fn next_sample(feed: &mut Option<Feed>) -> Option<Sample> {
    match feed {
        Some(rx) => match rx.recv().await {
            Ok(sample) => Some(sample),
            Err(broadcast::error::RecvError::Lagged(_)) => None,
            Err(broadcast::error::RecvError::Closed) => {
                *feed = None;
                None
            }
        },
        None => std::future::pending().await,
    }
}

pub fn set(_node: &Arc<Node>, _jobs: Option<u64>, _failure_rate: Option<f64>) -> Value {
    json!({"type": "error", "message": "load control is not available yet"})
}

pub fn reset(_node: &Arc<Node>) -> Value {
    json!({"type": "error", "message": "load control is not available yet"})
}
