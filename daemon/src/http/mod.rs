//! The HTTP listener process: serves the pages, `/health`, the load API and
//! `/metrics` (see `api` and `prometheus`) and the WebSocket endpoint on the listening
//! socket the server bound at start.
//!
//! Each accepted connection takes a slot under the cap (`limits`), gets
//! time limits, and every request on it passes the `guard` before a route
//! sees it. A restart of this process reuses the same socket and slots;
//! existing connections are not affected by it.

mod api;
pub mod guard;
pub mod limits;
mod prometheus;
pub mod token;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::{self, HeaderValue};
use hyper::server::conn::Http;
use hyper::service::Service as _;
use tokio::net::TcpListener;
use warp::Filter;
use warp::http::{Response, StatusCode};

use self::guard::{Guard, Verdict};
use self::limits::Limits;
use crate::node::Node;
use crate::throttle::{self, Throttle};
use system_runtime::ProcessContext;

/// Accept failures and cap warnings written per second at most.
static ACCEPT_WARNINGS: Throttle = Throttle::new(1);

/// What the listener is given at start: the socket, the request rules and
/// the connection slots (all outliving any one incarnation of it).
pub struct Listener {
    pub socket: TcpListener,
    pub guard: Guard,
    pub limits: Limits,
}

/// The client's address, for routes that log it.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// Runs the web server until the daemon stops.
pub async fn serve(ctx: ProcessContext, node: Arc<Node>, listener: Arc<Listener>) {
    ctx.enter(&"http:accept_loop/1");
    let shutdown = node.shutdown.clone();
    let routes = warp::service(routes(node));
    let mut http = Http::new();
    http.http1_only(true)
        .http1_header_read_timeout(limits::HEADER_TIMEOUT);
    let http = Arc::new(http);
    loop {
        let slot = match listener.limits.try_slot() {
            Some(slot) => slot,
            None => {
                throttle::warn(&ACCEPT_WARNINGS, || {
                    format!(
                        "{} HTTP connections open (the cap): new ones wait",
                        listener.limits.cap()
                    )
                });
                tokio::select! {
                    slot = listener.limits.slot() => slot,
                    _ = shutdown.cancelled() => return,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = accept(&listener.socket) => accepted,
            _ = shutdown.cancelled() => return,
        };
        let (listener, routes, http, shutdown) = (
            listener.clone(),
            routes.clone(),
            http.clone(),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let mut routes = routes.clone();
                let listener = listener.clone();
                async move {
                    let mut request = request;
                    if let Verdict::Answer(response) = listener.guard.check(&request, peer) {
                        return Ok::<_, Infallible>(response);
                    }
                    request.extensions_mut().insert(Peer(peer));
                    let mut response = routes.call(request).await?;
                    protective_headers(response.headers_mut());
                    Ok(response)
                }
            });
            let connection = http
                .serve_connection(limits::connection(stream, slot), service)
                .with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
}

/// The next connection; accept errors (e.g. out of file descriptors) are
/// logged and retried rather than ending the server.
async fn accept(listener: &TcpListener) -> (tokio::net::TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                // Without it, a reply sent right after another (a sum's
                // `calculating` then `done`) waits for the client's
                // delayed ACK: ~40 ms (Nagle's algorithm).
                let _ = stream.set_nodelay(true);
                return (stream, peer);
            }
            Err(error) => {
                throttle::warn(&ACCEPT_WARNINGS, || format!("accept failed: {error}"));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// No page of ours may be framed by another site (no clickjacking of its
/// buttons), nor a response sniffed as another type.
fn protective_headers(headers: &mut hyper::HeaderMap) {
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("frame-ancestors 'none'"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

fn routes(
    node: Arc<Node>,
) -> impl Filter<Extract = (impl warp::Reply,), Error = warp::Rejection> + Clone {
    let health = warp::path!("health").and(warp::get()).map(|| {
        let log =
            crate::log::failure().map_or_else(|| "ok".to_owned(), |e| format!("failing: {e}"));
        warp::reply::json(&serde_json::json!({"status": "ok", "log": log}))
    });
    let load_api = api::routes(node.clone());
    let websocket = warp::path!("ws")
        .and(warp::ws())
        .and(warp::ext::get::<Peer>())
        .map(move |ws: warp::ws::Ws, Peer(peer): Peer| {
            let node = node.clone();
            ws.max_message_size(MAX_MESSAGE)
                .on_upgrade(move |socket| async move {
                    crate::connection::start(node, socket, peer.to_string());
                })
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
    health.or(load_api).or(websocket).or(assets)
}

/// Largest WebSocket message accepted from a client.
const MAX_MESSAGE: usize = 64 * 1024;
