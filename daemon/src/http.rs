//! The HTTP listener process: serves the pages, `/health`, the load API and
//! `/metrics` (see `load::api`) and the WebSocket endpoint on the listening
//! socket the server bound at start.
//!
//! A restart of this process reuses the same socket; existing connections
//! are their own processes and are not affected by it.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use warp::Filter;
use warp::http::{Response, StatusCode};

use crate::node::Node;
use crate::process::ProcessContext;

/// Runs the web server until the daemon stops.
pub async fn serve(ctx: ProcessContext, node: Arc<Node>, listener: Arc<TcpListener>) {
    ctx.enter(&"http:accept_loop/1");
    let shutdown = node.shutdown.clone();
    warp::serve(routes(node))
        .serve_incoming_with_graceful_shutdown(incoming(listener), shutdown.cancelled_owned())
        .await;
}

/// Accepted connections; accept errors (e.g. out of file descriptors) are
/// logged and retried rather than ending the server.
fn incoming(
    listener: Arc<TcpListener>,
) -> impl futures::Stream<Item = Result<TcpStream, Infallible>> {
    futures::stream::unfold(listener, |listener| async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    // Without it, a reply sent right after another (a sum's
                    // `calculating` then `done`) waits for the client's
                    // delayed ACK: ~40 ms (Nagle's algorithm).
                    let _ = stream.set_nodelay(true);
                    return Some((Ok(stream), listener));
                }
                Err(error) => {
                    tracing::warn!("accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    })
}

fn routes(
    node: Arc<Node>,
) -> impl Filter<Extract = (impl warp::Reply,), Error = warp::Rejection> + Clone {
    let health = warp::path!("health").and(warp::get()).map(|| {
        let log =
            crate::log::failure().map_or_else(|| "ok".to_owned(), |e| format!("failing: {e}"));
        warp::reply::json(&serde_json::json!({"status": "ok", "log": log}))
    });
    let load_api = crate::load::api::routes(node.clone());
    let websocket = warp::path!("ws")
        .and(warp::ws())
        .and(warp::addr::remote())
        .and(warp::header::optional::<String>("origin"))
        .and(warp::header::optional::<String>("host"))
        .and_then(move |ws: warp::ws::Ws, peer: Option<std::net::SocketAddr>, origin: Option<String>, host: Option<String>| {
            let node = node.clone();
            async move {
                let peer = peer.map_or_else(|| "unknown".to_owned(), |p| p.to_string());
                if !same_origin(origin.as_deref(), host.as_deref()) {
                    tracing::warn!("refused a WebSocket from {peer}: origin {origin:?} is not host {host:?}");
                    return Err(warp::reject::custom(ForeignOrigin));
                }
                Ok(ws.max_message_size(MAX_MESSAGE).on_upgrade(move |socket| async move {
                    crate::connection::start(node, socket, peer);
                }))
            }
        });
    let assets =
        warp::get()
            .and(warp::path::full())
            .and_then(|path: warp::path::FullPath| async move {
                match web::asset(path.as_str()) {
                    Some(asset) => Ok(Response::builder()
                        .status(StatusCode::OK)
                        .header("content-type", asset.content_type)
                        .header("cache-control", "no-cache")
                        .body(asset.body)),
                    None => Err(warp::reject::not_found()),
                }
            });
    health
        .or(load_api)
        .or(websocket)
        .or(assets)
        .recover(refusal)
}

/// Largest WebSocket message accepted from a client.
const MAX_MESSAGE: usize = 64 * 1024;

#[derive(Debug)]
struct ForeignOrigin;
impl warp::reject::Reject for ForeignOrigin {}

/// A browser page may only open a WebSocket to the host that served it; a
/// client that sends no Origin (not a browser) is let through.
fn same_origin(origin: Option<&str>, host: Option<&str>) -> bool {
    match (origin, host) {
        (None, _) => true,
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_some_and(|(_, origin_host)| origin_host.trim_end_matches('/') == host),
        (Some(_), None) => false,
    }
}

async fn refusal(rejection: warp::Rejection) -> Result<impl warp::Reply, warp::Rejection> {
    if rejection.find::<ForeignOrigin>().is_some() {
        return Ok(warp::reply::with_status(
            "cross-origin WebSocket refused",
            StatusCode::FORBIDDEN,
        ));
    }
    Err(rejection)
}
