//! The load's and the metrics' HTTP face: `GET /metrics` (Prometheus text,
//! see `prometheus`), `GET /api/load` (the setting and counters) and
//! `POST /api/load` with `{"jobs":N,"failure_rate":P}` (either field optional),
//! and `GET`/`POST /api/schedulers` (`{"online":N}`: schedulers online).
//!
//! It only translates HTTP to the load calls; the listener owns the socket.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use crate::node::Node;

/// Largest request body accepted by `POST /api/load`.
const MAX_BODY: u64 = 4 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadRequest {
    jobs: Option<u64>,
    failure_rate: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SchedulersRequest {
    online: usize,
}

/// The routes above, for the HTTP listener to mount.
pub fn routes(node: Arc<Node>) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let with_node = warp::any().map(move || node.clone());
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_node.clone())
        .and_then(|node: Arc<Node>| async move {
            // It walks the registry: in the background, not on a scheduler.
            let text = system_runtime::background::run("metrics", move || {
                super::prometheus::render(&node)
            })
            .await
            .unwrap_or_default();
            Ok::<_, Rejection>(warp::reply::with_header(
                text,
                "content-type",
                "text/plain; version=0.0.4; charset=utf-8",
            ))
        });
    let get_load = warp::path!("api" / "load")
        .and(warp::get())
        .and(with_node.clone())
        .map(|node: Arc<Node>| {
            let load = &node.load;
            warp::reply::json(&json!({
                "jobs": load.target(),
                "failure_rate": load.failure_rate(),
                "workers": load.workers(),
                "max_load": load.cap(),
                "jobs_total": load.succeeded(),
                "failed_total": load.failed(),
                "restarts_total": load.restarts(),
            }))
        });
    let post_load = warp::path!("api" / "load")
        .and(warp::post())
        .and(warp::body::content_length_limit(MAX_BODY))
        .and(warp::body::bytes())
        .and(with_node.clone())
        .map(|body: warp::hyper::body::Bytes, node: Arc<Node>| set(&node, &body));
    let get_schedulers = warp::path!("api" / "schedulers")
        .and(warp::get())
        .and(with_node.clone())
        .map(|node: Arc<Node>| warp::reply::json(&schedulers_state(&node)));
    let post_schedulers = warp::path!("api" / "schedulers")
        .and(warp::post())
        .and(warp::body::content_length_limit(MAX_BODY))
        .and(warp::body::bytes())
        .and(with_node)
        .map(|body: warp::hyper::body::Bytes, node: Arc<Node>| set_schedulers(&node, &body));
    metrics
        .or(get_load)
        .or(post_load)
        .or(get_schedulers)
        .or(post_schedulers)
}

fn schedulers_state(node: &Node) -> serde_json::Value {
    json!({"online": node.schedulers.online(), "max": node.schedulers.max()})
}

fn set_schedulers(node: &Arc<Node>, body: &[u8]) -> warp::reply::WithStatus<warp::reply::Json> {
    let refuse = |message: String| {
        warp::reply::with_status(
            warp::reply::json(&json!({ "error": message })),
            StatusCode::BAD_REQUEST,
        )
    };
    let request: SchedulersRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(error) => return refuse(format!("malformed schedulers request: {error}")),
    };
    match node.schedulers.set(request.online) {
        Ok(_) => {
            warp::reply::with_status(warp::reply::json(&schedulers_state(node)), StatusCode::OK)
        }
        Err(error) => refuse(error.to_string()),
    }
}

fn set(node: &Arc<Node>, body: &[u8]) -> warp::reply::WithStatus<warp::reply::Json> {
    let refuse = |message: String| {
        warp::reply::with_status(
            warp::reply::json(&json!({ "error": message })),
            StatusCode::BAD_REQUEST,
        )
    };
    let request: LoadRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(error) => return refuse(format!("malformed load request: {error}")),
    };
    match node.load.apply(request.jobs, request.failure_rate) {
        Ok(setting) => {
            tracing::info!(
                "load set over HTTP to {} jobs, {} % failures",
                setting.jobs,
                setting.failure_rate
            );
            warp::reply::with_status(warp::reply::json(&setting), StatusCode::OK)
        }
        Err(error) => refuse(error.to_string()),
    }
}
