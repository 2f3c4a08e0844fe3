//! One browser WebSocket connection as one process: it reads the client's
//! JSON messages (see docs/protocol.md), starts a monitored `SumTask` per
//! submission, and turns each task's result or DOWN into exactly one reply.
//!
//! It pings its peer and ends if the peer stays silent (a dead peer holds
//! nothing for long). A page's `kill` reaches only user work (sums, load
//! workers); system processes are the console's to kill.
//!
//! It never computes anything itself, and no crash or kill of a task it
//! started can close it. When it ends, the tasks it started are killed
//! (they are linked to it, as Elixir's tasks are to their caller).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::time::Instant;
use warp::ws::{Message, WebSocket};

use crate::node::Node;
use crate::{load, metrics, sum};
use system_runtime::top::{self, TopRow};
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

/// Refused kills logged per second at most.
static REFUSED_KILLS: crate::throttle::Throttle = crate::throttle::Throttle::new(5);

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
    Info {
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

/// Starts the process that owns `socket`.
pub fn start(node: Arc<Node>, socket: WebSocket, peer: String) -> Pid {
    let spec = Spec::new("ws_connection", format!("Web.Connection.init(\"{peer}\")"));
    let tracker = node.connections.clone();
    node.registry.clone().spawn(spec, move |ctx| {
        tracker.track_future(run(ctx, node, socket))
    })
}

struct Connection {
    ctx: ProcessContext,
    node: Arc<Node>,
    /// Pending sum replies; each resolves to exactly one final `sum` message.
    sums: FuturesUnordered<BoxFuture<'static, (Pid, Value)>>,
    /// Pending `info` replies (each waits for its one-second trace), at
    /// most [`MAX_INFOS_PER_CONNECTION`].
    infos: FuturesUnordered<BoxFuture<'static, Value>>,
    /// The sum processes still running, killed if the connection ends.
    running: HashSet<Pid>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        for pid in &self.running {
            self.node.registry.kill(*pid);
        }
    }
}

async fn run(ctx: ProcessContext, node: Arc<Node>, socket: WebSocket) {
    ctx.enter(&"Web.Connection.loop/1");
    let (mut outgoing, mut incoming) = socket.split();
    let mut connection = Connection {
        ctx,
        node: node.clone(),
        sums: FuturesUnordered::new(),
        infos: FuturesUnordered::new(),
        running: HashSet::new(),
    };
    let hello = json!({"type": "hello", "node": node.name, "version": node.version, "schedulers": node.schedulers, "started_at": node.started_at});
    let mut pending = vec![hello];
    let mut top_feed: Option<BoxFuture<'static, Vec<TopRow>>> = None;
    let mut metrics_feed = None;
    // On the runtime's timer wheel; a late ping moves the next one back.
    let mut ping_at = Instant::now() + PING_INTERVAL;
    let mut last_heard = Instant::now();
    loop {
        for message in pending.drain(..) {
            if outgoing
                .send(Message::text(message.to_string()))
                .await
                .is_err()
            {
                return;
            }
        }
        tokio::select! {
            _ = node.shutdown.cancelled() => {
                let _ = outgoing.send(Message::close_with(1001u16, "server stopping")).await;
                return;
            }
            _ = connection.ctx.sleep_until(ping_at) => {
                ping_at += PING_INTERVAL;
                let now = Instant::now();
                if ping_at <= now {
                    ping_at = now + PING_INTERVAL;
                }
                if last_heard.elapsed() > LIVENESS {
                    tracing::info!("WebSocket {} closed: no answer to pings for {LIVENESS:?}", connection.ctx.pid());
                    return;
                }
                if outgoing.send(Message::ping(Vec::new())).await.is_err() {
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
                            Ok(Request::Subscribe { topic: Topic::Top }) => {
                                top_feed = Some(next_top(&node));
                            }
                            Ok(Request::Subscribe { topic: Topic::Metrics }) => {
                                let (history, feed) = node.metrics.subscribe();
                                pending.push(json!({"type": "history", "samples": history}));
                                metrics_feed = Some(feed);
                            }
                            Ok(request) => pending.extend(connection.handle(request)),
                            Err(error) => pending.push(error_reply(format!("malformed message: {error}"))),
                        }
                        connection.ctx.enter(&"Web.Connection.loop/1");
                    }
                    Some(Ok(message)) if message.is_close() => return,
                    Some(Ok(message)) if message.is_ping() || message.is_pong() => {}
                    Some(Ok(_)) => pending.push(error_reply("binary messages are not understood".into())),
                    Some(Err(error)) => {
                        // A frame over the size limit, or a broken stream: say so if we still can.
                        let _ = outgoing.send(Message::close_with(1009u16, "message too big or malformed")).await;
                        tracing::info!("WebSocket {} closed: {error}", connection.ctx.pid());
                        return;
                    }
                    None => return,
                }
            }
            Some((pid, reply)) = connection.sums.next() => {
                connection.running.remove(&pid);
                pending.push(reply);
            }
            Some(reply) = connection.infos.next() => pending.push(reply),
            rows = async { top_feed.as_mut().expect("guarded").await }, if top_feed.is_some() => {
                pending.push(json!({"type": "top", "rows": rows.iter().map(top_row).collect::<Vec<_>>()}));
                top_feed = Some(next_top(&node));
            }
            sample = metrics::next_sample(&mut metrics_feed), if metrics_feed.is_some() => {
                if let Some(sample) = sample {
                    pending.push(json!({"type": "metrics", "sample": sample}));
                }
            }
        }
    }
}

fn next_top(node: &Arc<Node>) -> BoxFuture<'static, Vec<TopRow>> {
    let node = node.clone();
    async move { top::top(node.top_sources(), Duration::from_secs(1), 10).await }.boxed()
}

fn error_reply(message: String) -> Value {
    json!({"type": "error", "message": message})
}

impl Connection {
    /// Handles one request; returns the replies to send at once.
    fn handle(&mut self, request: Request) -> Vec<Value> {
        match request {
            Request::Sum { id, input } => self.sum(id, input),
            Request::Load { jobs, failure_rate } => vec![self.set_load(jobs, failure_rate)],
            Request::Reset => vec![self.reset_load()],
            Request::Info { pid } => match pid.parse::<Pid>() {
                Ok(pid) if self.infos.len() >= MAX_INFOS_PER_CONNECTION => vec![json!({
                    "type": "error",
                    "pid": pid.to_string(),
                    "message": format!(
                        "too many info requests waiting on this connection (at most {MAX_INFOS_PER_CONNECTION}); ask again when one is answered"
                    ),
                })],
                Ok(pid) => {
                    let node = self.node.clone();
                    self.infos.push(info(node, pid).boxed());
                    vec![]
                }
                Err(error) => vec![error_reply(error.to_string())],
            },
            Request::Kill { pid } => match pid.parse::<Pid>() {
                Ok(pid) => vec![self.kill(pid)],
                Err(error) => vec![error_reply(error.to_string())],
            },
            Request::Subscribe { .. } => vec![],
        }
    }

    /// Sets the load; the reply is `load` or `error`.
    fn set_load(&self, jobs: Option<u64>, failure_rate: Option<f64>) -> Value {
        match self.node.load.apply(jobs, failure_rate) {
            Ok(setting) => {
                tracing::info!(
                    "load set to {} jobs, {} % failures",
                    setting.jobs,
                    setting.failure_rate
                );
                load_reply(setting)
            }
            Err(error) => error_reply(error.to_string()),
        }
    }

    /// Load to 0, failure rate 0, metrics history cleared; the `load` reply.
    fn reset_load(&self) -> Value {
        let setting = match self.node.load.apply(Some(0), Some(0.0)) {
            Ok(setting) => setting,
            Err(error) => return error_reply(error.to_string()),
        };
        self.node.metrics.clear();
        tracing::info!("load reset");
        load_reply(setting)
    }

    /// Kills `pid` if a web page may (see `Spec::killable_from_web`); a
    /// system process is refused with an error naming it.
    fn kill(&self, pid: Pid) -> Value {
        let registry = &self.node.registry;
        match registry.spec(pid) {
            Some(spec) if !spec.killable_from_web => {
                let name = spec.name;
                crate::throttle::warn(&REFUSED_KILLS, || {
                    format!(
                        "refused a kill of {name} {pid} from WebSocket {}",
                        self.ctx.pid()
                    )
                });
                json!({
                    "type": "error",
                    "pid": pid.to_string(),
                    "message": format!("{pid} is a system process ({name}): a web page cannot kill it; use the console"),
                })
            }
            _ => json!({"type": "kill", "pid": pid.to_string(), "killed": registry.kill(pid)}),
        }
    }

    fn sum(&mut self, id: i64, input: String) -> Vec<Value> {
        let reply = |status: &str, field: &str, value: String| {
            vec![sum_reply(id, &input, status, field, value)]
        };
        let n = match sum::parse_input(&input) {
            Ok(n) => n,
            Err(invalid) => return reply("invalid", "reason", invalid.to_string()),
        };
        if self.running.len() >= MAX_SUMS_PER_CONNECTION {
            let reason = format!(
                "too many computations running on this connection (at most {MAX_SUMS_PER_CONNECTION})"
            );
            return reply("error", "reason", reason);
        }
        let Some(version) = self.node.code.current() else {
            return reply("error", "reason", "no math plugin loaded".into());
        };
        if let Err(reason) = version.validate(n) {
            return reply("invalid", "reason", reason);
        }
        let (result_tx, result_rx) = oneshot::channel();
        let monitor = sum::spawn(&self.node, version, n, result_tx);
        let pid = monitor.pid();
        self.running.insert(pid);
        let calculating = reply("calculating", "pid", pid.to_string());
        self.sums.push(
            async move {
                let down = monitor.await;
                let (status, field, value) = match (down.reason, result_rx.await) {
                    (ExitReason::Normal, Ok(result)) => ("done", "result", result.to_string()),
                    (ExitReason::Normal, Err(_)) => ("error", "reason", "no result".to_owned()),
                    (reason, _) => ("error", "reason", reason.to_string()),
                };
                (pid, sum_reply(id, &input, status, field, value))
            }
            .boxed(),
        );
        calculating
    }
}

/// The `load` message: what the load is set to now.
fn load_reply(setting: load::Setting) -> Value {
    json!({"type": "load", "jobs": setting.jobs, "failure_rate": setting.failure_rate})
}

/// A `sum` message for line `id`, with its one extra field (`pid`, `result` or `reason`).
fn sum_reply(id: i64, input: &str, status: &str, field: &str, value: String) -> Value {
    let mut message = json!({"type": "sum", "id": id, "input": input, "status": status});
    message[field] = Value::String(value);
    message
}

async fn info(node: Arc<Node>, pid: Pid) -> Value {
    let info = node.registry.info(pid);
    let stacktrace = node.registry.stacktrace(pid).unwrap_or_default();
    let trace = node
        .registry
        .trace(pid, 50, Duration::from_secs(1))
        .await
        .unwrap_or_default();
    let info = info.map(|info| {
        json!({
            "pid": info.pid,
            "name": info.name,
            "initial_call": info.initial_call,
            "status": info.status.as_str(),
            "priority": info.priority.as_str(),
            "reductions": info.reductions,
            "cpu_time_us": info.cpu_time_us,
            "memory": info.memory,
            "allocated": info.allocated,
            "memory_limit": info.memory_limit,
            "current_function": info.current_function,
            "monitors": info.monitors,
            "spawned_at_ms": info.spawned_at_ms,
            "plugin_version": info.code_version,
        })
    });
    json!({"type": "info", "pid": pid.to_string(), "info": info, "stacktrace": stacktrace, "trace": trace})
}

/// One row of the /top page.
fn top_row(row: &TopRow) -> Value {
    json!({
        "pid": row.pid,
        "name": row.name,
        "cpu": row.cpu,
        "reductions": row.reductions,
        "memory": row.memory,
        "stuck_ms": row.stuck_ms,
        "stuck_stack": row.stuck_stack,
    })
}
