//! The HTTP listener process: serves the pages, `/health`, the load API and
//! `/metrics` (see `api` and `prometheus`), the process table and the
//! supervision tree (`processes`) and the WebSocket endpoint on the listening
//! socket the server bound at start.
//!
//! Each accepted connection takes a slot under the cap (`limits`), gets
//! time limits (closed after 10 s idle between requests), and every
//! request on it passes the `guard` before a route sees it. A WebSocket's
//! write buffer is capped (`MAX_WRITE_BUFFER`): a peer that does not read
//! cannot make the daemon queue without bound. A restart of this process
//! reuses the same socket, slots and feeds; existing connections are not
//! affected by it.

mod api;
pub mod connection;
pub(crate) mod guard;
pub(crate) mod limits;
pub(crate) mod processes;
mod prometheus;
pub(crate) mod throttle;
pub(crate) mod token;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::{self, HeaderValue};
use hyper::server::conn::Http;
use hyper::service::Service as _;
use tokio::net::TcpListener;
use warp::http::{Response, StatusCode};
use warp::{Filter, Reply as _};

use self::guard::{Guard, Verdict};
use self::limits::Limits;
use crate::node::Node;
use system_runtime::burst::Burst;
use system_runtime::{Pid, ProcessContext};

/// Accept failures and cap warnings written per second at most.
static ACCEPT_WARNINGS: Burst = Burst::new("accept warnings", 1);

/// What the listener is given at start: the socket, the request rules,
/// the connection slots and the feeds pages share (all outliving any one
/// incarnation of it).
pub struct Listener {
    pub socket: TcpListener,
    pub guard: Guard,
    pub limits: Limits,
    pub feeds: Arc<crate::http::connection::Feeds>,
}

/// The client's address, for routes that log it.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// Runs the web server until the daemon stops.
pub async fn serve(ctx: ProcessContext, node: Arc<Node>, listener: Arc<Listener>) {
    ctx.enter(&"http:accept_loop/1");
    let shutdown = node.shutdown.clone();
    let routes = warp::service(routes(node, listener.feeds.clone(), ctx.pid()));
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
            let idle = limits::Idle::new();
            let served = idle.clone();
            let service = hyper::service::service_fn(move |request| {
                let mut routes = routes.clone();
                let listener = listener.clone();
                let busy = served.busy();
                async move {
                    let _busy = busy;
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
            loop {
                let idle_until = idle.deadline();
                tokio::select! {
                    _ = connection.as_mut() => return,
                    _ = shutdown.cancelled() => break,
                    _ = idle_wait(idle_until) => {
                        if idle.deadline().is_some_and(|at| at <= tokio::time::Instant::now()) {
                            break;
                        }
                    }
                }
            }
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        });
    }
}

/// Until `deadline`, or for another [`limits::HEADER_TIMEOUT`] while a
/// request is being served (then the deadline is looked at again).
async fn idle_wait(deadline: Option<tokio::time::Instant>) {
    let at = deadline.unwrap_or_else(|| tokio::time::Instant::now() + limits::HEADER_TIMEOUT);
    tokio::time::sleep_until(at).await;
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

/// `listener`: the listener's pid, the parent of each WebSocket's process.
fn routes(
    node: Arc<Node>,
    feeds: Arc<crate::http::connection::Feeds>,
    listener: Pid,
) -> impl Filter<Extract = (impl warp::Reply,), Error = warp::Rejection> + Clone {
    let health = warp::path!("health").and(warp::get()).map(|| {
        let log =
            crate::log::failure().map_or_else(|| "ok".to_owned(), |e| format!("failing: {e}"));
        warp::reply::json(&serde_json::json!({"status": "ok", "log": log}))
    });
    let load_api = api::routes(node.clone());
    let process_api = processes::routes(node.clone());
    let websocket = warp::path!("ws")
        .and(warp::ws())
        .and(warp::ext::get::<Peer>())
        .and(warp::header::optional::<String>("sec-websocket-protocol"))
        .map(
            move |ws: warp::ws::Ws, Peer(peer): Peer, protocols: Option<String>| {
                let (node, feeds) = (node.clone(), feeds.clone());
                let mut response = ws
                    .max_message_size(MAX_MESSAGE)
                    .max_write_buffer_size(MAX_WRITE_BUFFER)
                    .on_upgrade(move |socket| async move {
                        crate::http::connection::start(
                            node,
                            feeds,
                            socket,
                            peer.to_string(),
                            listener,
                        );
                    })
                    .into_response();
                // The pages offer `system` with their token (`bearer.…`): the
                // answer names `system`, never the token.
                let offered = protocols.as_deref().unwrap_or("");
                if offered.split(',').any(|p| p.trim() == SUBPROTOCOL) {
                    response.headers_mut().insert(
                        header::SEC_WEBSOCKET_PROTOCOL,
                        HeaderValue::from_static(SUBPROTOCOL),
                    );
                }
                response
            },
        );
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
    health.or(load_api).or(process_api).or(websocket).or(assets)
}

/// Largest WebSocket message accepted from a client.
const MAX_MESSAGE: usize = 64 * 1024;

/// Most a WebSocket may hold unsent (its peer not reading): past this a
/// send fails and the connection ends, and tungstenite keeps only the
/// latest pong. Above the largest message (the metrics history, ~130 KB)
/// plus tungstenite's 128 KiB write buffer.
const MAX_WRITE_BUFFER: usize = 1024 * 1024;

/// The WebSocket subprotocol the pages speak (docs/protocol.md).
const SUBPROTOCOL: &str = "system";
