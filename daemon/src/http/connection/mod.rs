//! One browser WebSocket connection as one process: it reads the client's
//! JSON messages (see docs/protocol.md), starts a monitored `SumTask` per
//! submission, and turns each task's result or DOWN into exactly one reply.
//!
//! It pings its peer and ends if the peer stays silent (a dead peer holds
//! nothing for long), floods it with pings, or does not take what it is
//! sent within [`SEND_PATIENCE`]. A page's `kill` reaches only user work
//! (sums, load workers); system processes are the console's to kill, and
//! their arguments (who opened a console) are not shown to pages.
//!
//! Feeds are shared ([`Feeds`]): one `top` computation a second serves
//! every subscribed connection, and a repeated subscribe starts nothing
//! and sends nothing (the metrics history goes once per connection).
//!
//! It never computes anything itself, and no crash or kill of a task it
//! started can close it (it traps exits). When it ends, the tasks it
//! started end too: each is linked to it by the runtime, as Elixir's tasks
//! are to their caller.

mod feeds;
mod inspect;
mod reply;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::oneshot;
use tokio::time::Instant;
use warp::ws::{Message, WebSocket};

use self::feeds::TopFeed;
pub use self::feeds::{Feeds, TOP_INTERVAL};
use self::inspect::{info, profile, trace};
use self::reply::{Reply, SumStatus};
use crate::node::Node;
use crate::{node::load, node::metrics, node::sum};
use system_runtime::{ExitReason, Pid, ProcessContext, Spec};

/// Computations one connection may have running at once.
pub const MAX_SUMS_PER_CONNECTION: usize = 32;

/// `info` requests one connection may have waiting at once (each holds a
/// one-second trace of its process).
pub const MAX_INFOS_PER_CONNECTION: usize = 8;

/// How often the connection pings its peer.
pub const PING_INTERVAL: Duration = Duration::from_secs(15);

/// A peer heard nothing from (not even a pong) for this long is dead: the
/// connection ends.
pub const LIVENESS: Duration = Duration::from_secs(45);

/// Pings a peer may send between two of ours ([`PING_INTERVAL`]); one
/// more ends the connection. Browsers send none; each ping costs the
/// daemon a pong to write, which a peer that does not read never takes.
pub const MAX_PEER_PINGS: u32 = 32;

/// A peer that has not taken what the connection sends within this is not
/// reading: the connection ends (it would otherwise hold the messages).
pub const SEND_PATIENCE: Duration = Duration::from_secs(10);

/// Connections ended because their peer flooded pings or did not read
/// (`system_websocket_peers_closed_total` in `/metrics`).
pub static PEERS_CLOSED: AtomicU64 = AtomicU64::new(0);

/// Refused kills logged per second at most.
static REFUSED_KILLS: system_runtime::burst::Burst =
    system_runtime::burst::Burst::new("refused kills", 5);

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Request {
    Sum {
        id: i64,
        input: String,
    },
    Subscribe {
        topic: Topic,
    },
    Load {
        jobs: Option<u64>,
        failure_rate: Option<f64>,
    },
    Reset,
    Schedulers {
        online: u64,
    },
    Info {
        pid: String,
    },
    Profile {
        pid: String,
    },
    Trace {
        pid: String,
    },
    Kill {
        pid: String,
    },
}

#[derive(Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "snake_case")]
enum Topic {
    Metrics,
    Top,
}

/// Starts the process that owns `socket`; its parent is the listener
/// (whose task of this HTTP connection starts it).
pub fn start(
    node: Arc<Node>,
    feeds: Arc<Feeds>,
    socket: WebSocket,
    peer: String,
    listener: Pid,
) -> Pid {
    // It traps exits: a sum linked to it that ends never ends it.
    let spec = Spec::new("ws_connection", format!("Web.Connection.init(\"{peer}\")"))
        .trap_exits()
        .spawned_by(listener);
    let tracker = node.connections.clone();
    node.registry.clone().spawn(spec, move |ctx| {
        tracker.track_future(run(ctx, node, feeds, socket))
    })
}

struct Connection {
    ctx: ProcessContext,
    node: Arc<Node>,
    /// Pending sum replies; each resolves to exactly one final `sum` message.
    sums: FuturesUnordered<BoxFuture<'static, (Pid, Reply)>>,
    /// Pending `info` replies (each waits for its one-second trace), at
    /// most [`MAX_INFOS_PER_CONNECTION`].
    infos: FuturesUnordered<BoxFuture<'static, Reply>>,
    /// The sum processes still running (linked to it: they end with it).
    running: HashSet<Pid>,
}

async fn run(ctx: ProcessContext, node: Arc<Node>, feeds: Arc<Feeds>, socket: WebSocket) {
    ctx.enter(&"Web.Connection.loop/1");
    let (mut outgoing, mut incoming) = socket.split();
    let mut connection = Connection {
        ctx,
        node: node.clone(),
        sums: FuturesUnordered::new(),
        infos: FuturesUnordered::new(),
        running: HashSet::new(),
    };
    let hello = Reply::Hello {
        node: node.name.clone(),
        version: node.version.to_owned(),
        schedulers: node.schedulers.online(),
        max_schedulers: node.schedulers.max(),
        started_at: node.started_at,
    };
    // Text frames to send, in order.
    let mut pending: Vec<String> = vec![hello.to_text()];
    let mut top_feed: Option<TopFeed> = None;
    let mut metrics_feed = None;
    // On the runtime's timer wheel; a late ping moves the next one back.
    let mut ping_at = Instant::now() + PING_INTERVAL;
    let mut last_heard = Instant::now();
    let mut peer_pings = 0;
    loop {
        // Frames waiting for the peer count as its inbox until sent.
        connection.ctx.set_message_queue_len(pending.len());
        let messages = pending.drain(..).map(Message::text);
        if let Err(ended) = send_all(&mut outgoing, messages).await {
            connection.ended(ended);
            return;
        }
        connection.ctx.set_message_queue_len(0);
        tokio::select! {
            _ = node.shutdown.cancelled() => {
                let closing = std::iter::once(Message::close_with(1001u16, "server stopping"));
                let _ = send_all(&mut outgoing, closing).await;
                return;
            }
            _ = connection.ctx.sleep_until(ping_at) => {
                ping_at += PING_INTERVAL;
                let now = Instant::now();
                if ping_at <= now {
                    ping_at = now + PING_INTERVAL;
                }
                peer_pings = 0;
                if last_heard.elapsed() > LIVENESS {
                    tracing::info!("WebSocket {} closed: no answer to pings for {LIVENESS:?}", connection.ctx.pid());
                    return;
                }
                if let Err(ended) = send_all(&mut outgoing, std::iter::once(Message::ping(Vec::new()))).await {
                    connection.ended(ended);
                    return;
                }
            }
            received = incoming.next() => {
                if matches!(received, Some(Ok(_))) {
                    last_heard = Instant::now();
                }
                match received {
                    Some(Ok(message)) if message.is_text() => {
                        let text = message.to_str().unwrap_or_default();
                        connection.ctx.enter(&"Web.Connection.handle_in/2");
                        match serde_json::from_str::<Request>(text) {
                            // Once per connection; a repeated subscribe
                            // starts nothing and sends nothing.
                            Ok(Request::Subscribe { topic: Topic::Top }) => match top_feed {
                                Some(_) => {
                                    feeds.ensure_top(&node);
                                }
                                None => {
                                    let (feed, latest) = feeds.subscribe_top(&node);
                                    pending.extend(latest.map(|text| text.to_string()));
                                    top_feed = Some(feed);
                                }
                            },
                            Ok(Request::Subscribe { topic: Topic::Metrics }) => {
                                if metrics_feed.is_none() {
                                    let (history, feed) = node.metrics.subscribe();
                                    pending.push(Reply::History { samples: history }.to_text());
                                    metrics_feed = Some(feed);
                                }
                            }
                            Ok(request) => pending.extend(connection.handle(request).iter().map(Reply::to_text)),
                            Err(error) => pending.push(Reply::error(format!("malformed message: {error}")).to_text()),
                        }
                        connection.ctx.enter(&"Web.Connection.loop/1");
                    }
                    Some(Ok(message)) if message.is_close() => return,
                    Some(Ok(message)) if message.is_ping() => {
                        peer_pings += 1;
                        if peer_pings > MAX_PEER_PINGS {
                            let closing = std::iter::once(Message::close_with(1008u16, "too many pings"));
                            let _ = send_all(&mut outgoing, closing).await;
                            connection.ended(Ended::PingFlood);
                            return;
                        }
                    }
                    Some(Ok(message)) if message.is_pong() => {}
                    Some(Ok(_)) => pending.push(Reply::error("binary messages are not understood").to_text()),
                    Some(Err(error)) => {
                        // A frame over the size limit, or a broken stream: say so if we still can.
                        let closing = std::iter::once(Message::close_with(1009u16, "message too big or malformed"));
                        let _ = send_all(&mut outgoing, closing).await;
                        tracing::info!("WebSocket {} closed: {error}", connection.ctx.pid());
                        return;
                    }
                    None => return,
                }
            }
            Some((pid, reply)) = connection.sums.next() => {
                connection.running.remove(&pid);
                pending.push(reply.to_text());
            }
            Some(reply) = connection.infos.next() => pending.push(reply.to_text()),
            changed = async { top_feed.as_mut().expect("guarded").changed().await }, if top_feed.is_some() => {
                match changed {
                    Ok(()) => {
                        let latest = top_feed.as_mut().and_then(|feed| feed.borrow_and_update().clone());
                        pending.extend(latest.map(|text| text.to_string()));
                    }
                    Err(_) => top_feed = None,
                }
            }
            sample = metrics::next_sample(&mut metrics_feed), if metrics_feed.is_some() => {
                if let Some(sample) = sample {
                    pending.push(Reply::Metrics { sample }.to_text());
                }
            }
        }
    }
}

/// Why a connection ended while sending.
enum Ended {
    /// The peer went away, or sending failed (the write buffer full).
    Failed(String),
    /// The peer took nothing for [`SEND_PATIENCE`].
    NotReading,
    /// The peer sent more than [`MAX_PEER_PINGS`] pings in a ping interval.
    PingFlood,
}

/// Sends `messages` in order; a peer that does not take them within
/// [`SEND_PATIENCE`] is not reading.
async fn send_all(
    outgoing: &mut futures::stream::SplitSink<WebSocket, Message>,
    messages: impl Iterator<Item = Message>,
) -> Result<(), Ended> {
    let sending = async {
        for message in messages {
            outgoing.feed(message).await?;
        }
        outgoing.flush().await
    };
    match tokio::time::timeout(SEND_PATIENCE, sending).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(Ended::Failed(error.to_string())),
        Err(_) => Err(Ended::NotReading),
    }
}

impl Connection {
    /// Logs why the connection ends (once: it ends), and counts a peer
    /// that flooded pings or did not read.
    fn ended(&self, ended: Ended) {
        let pid = self.ctx.pid();
        match ended {
            Ended::Failed(error) => tracing::debug!("WebSocket {pid} closed: {error}"),
            Ended::NotReading => {
                PEERS_CLOSED.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "WebSocket {pid} closed: its peer took nothing sent to it for {SEND_PATIENCE:?}"
                );
            }
            Ended::PingFlood => {
                PEERS_CLOSED.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "WebSocket {pid} closed: its peer sent too many pings (over {MAX_PEER_PINGS} in {PING_INTERVAL:?})"
                );
            }
        }
    }

    /// Handles one request; returns the replies to send at once.
    /// Queues a reply that takes a while (an `info`'s one-second trace, a
    /// profile): at most [`MAX_INFOS_PER_CONNECTION`] wait at once, beyond
    /// which the request is answered with an error at once.
    fn queue(
        &mut self,
        pid: &str,
        ask: impl FnOnce(Arc<Node>, Pid) -> BoxFuture<'static, Reply>,
    ) -> Vec<Reply> {
        match pid.parse::<Pid>() {
            Ok(pid) if self.infos.len() >= MAX_INFOS_PER_CONNECTION => vec![Reply::error_about(
                pid,
                format!(
                    "too many info requests waiting on this connection (at most {MAX_INFOS_PER_CONNECTION}); ask again when one is answered"
                ),
            )],
            Ok(pid) => {
                self.infos.push(ask(self.node.clone(), pid));
                vec![]
            }
            Err(error) => vec![Reply::error(error.to_string())],
        }
    }

    fn handle(&mut self, request: Request) -> Vec<Reply> {
        match request {
            Request::Sum { id, input } => self.sum(id, input),
            Request::Load { jobs, failure_rate } => vec![self.set_load(jobs, failure_rate)],
            Request::Reset => vec![self.reset_load()],
            Request::Schedulers { online } => vec![self.set_schedulers(online)],
            Request::Info { pid } => self.queue(&pid, |node, pid| info(node, pid).boxed()),
            Request::Profile { pid } => self.queue(&pid, |node, pid| profile(node, pid).boxed()),
            Request::Trace { pid } => self.queue(&pid, |node, pid| trace(node, pid).boxed()),
            Request::Kill { pid } => match pid.parse::<Pid>() {
                Ok(pid) => vec![self.kill(pid)],
                Err(error) => vec![Reply::error(error.to_string())],
            },
            Request::Subscribe { .. } => vec![],
        }
    }

    /// Sets the load; the reply is `load` or `error`.
    fn set_load(&self, jobs: Option<u64>, failure_rate: Option<f64>) -> Reply {
        match self.node.load.apply(jobs, failure_rate) {
            Ok(setting) => {
                tracing::info!(
                    "load set to {} jobs, {} % failures",
                    setting.jobs,
                    setting.failure_rate
                );
                load_reply(setting)
            }
            Err(error) => Reply::error(error.to_string()),
        }
    }

    /// Sets the schedulers online; the reply is `schedulers` or `error`.
    fn set_schedulers(&self, online: u64) -> Reply {
        let schedulers = &self.node.schedulers;
        match schedulers.set(usize::try_from(online).unwrap_or(0)) {
            Ok(_) => Reply::Schedulers {
                online: schedulers.online(),
                max: schedulers.max(),
            },
            Err(error) => Reply::error(error.to_string()),
        }
    }

    /// Load to 0, failure rate 0, metrics history cleared; the `load` reply.
    fn reset_load(&self) -> Reply {
        let setting = match self.node.load.apply(Some(0), Some(0.0)) {
            Ok(setting) => setting,
            Err(error) => return Reply::error(error.to_string()),
        };
        self.node.metrics.clear();
        tracing::info!("load reset");
        load_reply(setting)
    }

    /// Kills `pid` if a web page may (see `Spec::killable_from_web`); a
    /// system process is refused with an error naming it.
    fn kill(&self, pid: Pid) -> Reply {
        let registry = &self.node.registry;
        match registry.spec(pid) {
            Some(spec) if !spec.killable_from_web => {
                let name = spec.name;
                crate::http::throttle::warn(&REFUSED_KILLS, || {
                    format!(
                        "refused a kill of {name} {pid} from WebSocket {}",
                        self.ctx.pid()
                    )
                });
                Reply::error_about(
                    pid,
                    format!(
                        "{pid} is a system process ({name}): a web page cannot kill it; use the console"
                    ),
                )
            }
            _ => Reply::Kill {
                pid: pid.to_string(),
                killed: registry.kill(pid),
            },
        }
    }

    fn sum(&mut self, id: i64, input: String) -> Vec<Reply> {
        let reply = |status: SumStatus| vec![sum_reply(id, &input, status)];
        let n = match sum::parse_input(&input) {
            Ok(n) => n,
            Err(invalid) => {
                return reply(SumStatus::Invalid {
                    reason: invalid.to_string(),
                });
            }
        };
        if self.running.len() >= MAX_SUMS_PER_CONNECTION {
            let reason = format!(
                "too many computations running on this connection (at most {MAX_SUMS_PER_CONNECTION})"
            );
            return reply(SumStatus::Error { reason });
        }
        let Some(version) = self.node.code.current() else {
            return reply(SumStatus::Error {
                reason: "no math plugin loaded".into(),
            });
        };
        if let Err(reason) = version.validate(n) {
            return reply(SumStatus::Invalid { reason });
        }
        let (result_tx, result_rx) = oneshot::channel();
        let monitor = sum::spawn(
            &self.node.registry,
            self.node.memory.per_sum,
            version,
            n,
            result_tx,
        );
        let pid = monitor.pid();
        self.running.insert(pid);
        let calculating = reply(SumStatus::Calculating {
            pid: pid.to_string(),
        });
        self.sums.push(
            async move {
                let down = monitor.await;
                let status = match (down.reason, result_rx.await) {
                    (ExitReason::Normal, Ok(result)) => SumStatus::Done {
                        result: result.to_string(),
                    },
                    (ExitReason::Normal, Err(_)) => SumStatus::Error {
                        reason: "no result".to_owned(),
                    },
                    (reason, _) => SumStatus::Error {
                        reason: reason.to_string(),
                    },
                };
                (pid, sum_reply(id, &input, status))
            }
            .boxed(),
        );
        calculating
    }
}

/// The `load` message: what the load is set to now.
fn load_reply(setting: load::Setting) -> Reply {
    Reply::Load {
        jobs: setting.jobs,
        failure_rate: setting.failure_rate,
    }
}

/// A `sum` message for line `id`.
fn sum_reply(id: i64, input: &str, status: SumStatus) -> Reply {
    Reply::Sum {
        id,
        input: input.to_owned(),
        status,
    }
}
