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
//! started can close it. When it ends, the tasks it started are killed
//! (they are linked to it, as Elixir's tasks are to their caller).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};
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

/// Pings a peer may send between two of ours ([`PING_INTERVAL`]); one
/// more ends the connection. Browsers send none; each ping costs the
/// daemon a pong to write, which a peer that does not read never takes.
pub const MAX_PEER_PINGS: u32 = 32;

/// A peer that has not taken what the connection sends within this is not
/// reading: the connection ends (it would otherwise hold the messages).
pub const SEND_PATIENCE: Duration = Duration::from_secs(10);

/// How often the shared `top` feed computes its rows (its window).
pub const TOP_INTERVAL: Duration = Duration::from_secs(1);

/// Connections ended because their peer flooded pings or did not read
/// (`system_websocket_peers_closed_total` in `/metrics`).
pub static PEERS_CLOSED: AtomicU64 = AtomicU64::new(0);

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
    Schedulers {
        online: u64,
    },
    Info {
        pid: String,
    },
    Profile {
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

/// The feeds every connection shares (owned by the HTTP listener).
pub struct Feeds {
    /// The latest `top` message, serialised once for every subscriber.
    top: watch::Sender<Option<Arc<str>>>,
    /// True while the `top_feed` process runs; it runs while anyone
    /// subscribes (checked under this lock by both sides).
    top_running: Mutex<bool>,
}

impl Default for Feeds {
    fn default() -> Self {
        Feeds {
            top: watch::channel(None).0,
            top_running: Mutex::new(false),
        }
    }
}

type TopFeed = watch::Receiver<Option<Arc<str>>>;

impl Feeds {
    /// A subscription to `top`, and the latest message if it is current
    /// (the feed was running).
    fn subscribe_top(self: &Arc<Self>, node: &Arc<Node>) -> (TopFeed, Option<Arc<str>>) {
        let feed = self.top.subscribe();
        let latest = self.ensure_top(node).then(|| feed.borrow().clone());
        (feed, latest.flatten())
    }

    /// Starts the `top_feed` process unless it runs (true if it did);
    /// never computes anything itself. A repeated subscribe calls it too,
    /// so a feed killed from the console comes back.
    fn ensure_top(self: &Arc<Self>, node: &Arc<Node>) -> bool {
        let mut running = crate::lock(&self.top_running);
        if *running {
            return true;
        }
        *running = true;
        let (feeds, owner) = (self.clone(), node.clone());
        let spec = Spec::new("top_feed", "Web.TopFeed.init()");
        node.registry
            .clone()
            .spawn(spec, move |ctx| feeds.compute_top(ctx, owner));
        false
    }

    /// The `top_feed` process: one `top` of the registry per
    /// [`TOP_INTERVAL`], sent to every subscriber, until none is left.
    async fn compute_top(self: Arc<Self>, ctx: ProcessContext, node: Arc<Node>) {
        /// Marks the feed stopped if the process ends otherwise (a kill, a stop).
        struct Stopped<'a>(&'a Feeds, bool);
        impl Drop for Stopped<'_> {
            fn drop(&mut self) {
                if self.1 {
                    *crate::lock(&self.0.top_running) = false;
                }
            }
        }
        let mut stopped = Stopped(&self, true);
        ctx.enter(&"Web.TopFeed.loop/1");
        loop {
            let rows = tokio::select! {
                rows = top::top(node.top_sources(), TOP_INTERVAL, 10) => rows,
                _ = node.shutdown.cancelled() => return,
            };
            // The biggest holders of memory now, for the page's other sort
            // (a walk of the registry on the blocking pool, once for all).
            let by_memory = top::by_memory(&node.registry, 10).await;
            let rows: Vec<Value> = rows.iter().map(top_row).collect();
            let by_memory: Vec<Value> = by_memory.iter().map(top_row).collect();
            let message = json!({"type": "top", "rows": rows, "by_memory": by_memory}).to_string();
            self.top.send_replace(Some(message.into()));
            // Under the lock a subscriber takes before it looks: either it
            // sees the feed stopped and starts it, or the feed sees it.
            let mut running = crate::lock(&self.top_running);
            if self.top.receiver_count() == 0 {
                *running = false;
                stopped.1 = false;
                return;
            }
        }
    }
}

/// Starts the process that owns `socket`.
pub fn start(node: Arc<Node>, feeds: Arc<Feeds>, socket: WebSocket, peer: String) -> Pid {
    let spec = Spec::new("ws_connection", format!("Web.Connection.init(\"{peer}\")"));
    let tracker = node.connections.clone();
    node.registry.clone().spawn(spec, move |ctx| {
        tracker.track_future(run(ctx, node, feeds, socket))
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
    let hello = json!({"type": "hello", "node": node.name, "version": node.version, "schedulers": node.schedulers.online(), "max_schedulers": node.schedulers.max(), "started_at": node.started_at});
    // Text frames to send, in order.
    let mut pending: Vec<String> = vec![hello.to_string()];
    let mut top_feed: Option<TopFeed> = None;
    let mut metrics_feed = None;
    // On the runtime's timer wheel; a late ping moves the next one back.
    let mut ping_at = Instant::now() + PING_INTERVAL;
    let mut last_heard = Instant::now();
    let mut peer_pings = 0;
    loop {
        let messages = pending.drain(..).map(Message::text);
        if let Err(ended) = send_all(&mut outgoing, messages).await {
            connection.ended(ended);
            return;
        }
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
                                    pending.push(json!({"type": "history", "samples": history}).to_string());
                                    metrics_feed = Some(feed);
                                }
                            }
                            Ok(request) => pending.extend(connection.handle(request).iter().map(Value::to_string)),
                            Err(error) => pending.push(error_reply(format!("malformed message: {error}")).to_string()),
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
                    Some(Ok(_)) => pending.push(error_reply("binary messages are not understood".into()).to_string()),
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
                pending.push(reply.to_string());
            }
            Some(reply) = connection.infos.next() => pending.push(reply.to_string()),
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
                    pending.push(json!({"type": "metrics", "sample": sample}).to_string());
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

fn error_reply(message: String) -> Value {
    json!({"type": "error", "message": message})
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
        ask: impl FnOnce(Arc<Node>, Pid) -> BoxFuture<'static, Value>,
    ) -> Vec<Value> {
        match pid.parse::<Pid>() {
            Ok(pid) if self.infos.len() >= MAX_INFOS_PER_CONNECTION => vec![json!({
                "type": "error",
                "pid": pid.to_string(),
                "message": format!(
                    "too many info requests waiting on this connection (at most {MAX_INFOS_PER_CONNECTION}); ask again when one is answered"
                ),
            })],
            Ok(pid) => {
                self.infos.push(ask(self.node.clone(), pid));
                vec![]
            }
            Err(error) => vec![error_reply(error.to_string())],
        }
    }

    fn handle(&mut self, request: Request) -> Vec<Value> {
        match request {
            Request::Sum { id, input } => self.sum(id, input),
            Request::Load { jobs, failure_rate } => vec![self.set_load(jobs, failure_rate)],
            Request::Reset => vec![self.reset_load()],
            Request::Schedulers { online } => vec![self.set_schedulers(online)],
            Request::Info { pid } => self.queue(&pid, |node, pid| info(node, pid).boxed()),
            Request::Profile { pid } => self.queue(&pid, |node, pid| profile(node, pid).boxed()),
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

    /// Sets the schedulers online; the reply is `schedulers` or `error`.
    fn set_schedulers(&self, online: u64) -> Value {
        let schedulers = &self.node.schedulers;
        match schedulers.set(usize::try_from(online).unwrap_or(0)) {
            Ok(_) => {
                json!({"type": "schedulers", "online": schedulers.online(), "max": schedulers.max()})
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
    let mut stacktrace = node.registry.stacktrace(pid).unwrap_or_default();
    let trace = node
        .registry
        .trace(pid, 50, Duration::from_secs(1))
        .await
        .unwrap_or_default();
    // A system process's arguments are not a page's business: a console
    // session's name who opened it (uid and pid), a connection its peer.
    let private = node
        .registry
        .spec(pid)
        .is_some_and(|spec| !spec.killable_from_web);
    let info = info.map(|info| {
        let mut initial_call = info.initial_call;
        if private {
            let call = without_arguments(&initial_call);
            for frame in &mut stacktrace {
                if *frame == initial_call {
                    frame.clone_from(&call);
                }
            }
            initial_call = call;
        }
        json!({
            "pid": info.pid,
            "name": info.name,
            "initial_call": initial_call,
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

/// `Admin.Session.init("uid 0 pid 42")` as `Admin.Session.init(…)`.
fn without_arguments(call: &str) -> String {
    match call.split_once('(') {
        Some((function, _)) => format!("{function}(…)"),
        None => call.to_owned(),
    }
}

/// Profiles pages may run at once, node-wide: each holds a thread of the
/// blocking pool for its window and signals a scheduler ~1,000 times a
/// second.
const MAX_WEB_PROFILES: usize = 2;
static WEB_PROFILES: AtomicUsize = AtomicUsize::new(0);

/// One of the [`MAX_WEB_PROFILES`] profiles that may run; given back on drop.
struct ProfileSlot;

impl ProfileSlot {
    fn take() -> Option<ProfileSlot> {
        WEB_PROFILES
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < MAX_WEB_PROFILES).then_some(n + 1)
            })
            .ok()
            .map(|_| ProfileSlot)
    }
}

impl Drop for ProfileSlot {
    fn drop(&mut self) {
        WEB_PROFILES.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How long a page's profile samples.
const WEB_PROFILE_WINDOW: Duration = Duration::from_secs(1);

/// The `profile` reply: where `pid` spent its time on a scheduler over
/// [`WEB_PROFILE_WINDOW`] (native samples, the innermost function of each),
/// the ten hottest functions first. Sampling and symbolising run on the
/// blocking pool, never on a scheduler.
async fn profile(node: Arc<Node>, pid: Pid) -> Value {
    let Some(slot) = ProfileSlot::take() else {
        return json!({
            "type": "error",
            "pid": pid.to_string(),
            "message": format!("{MAX_WEB_PROFILES} profiles are running already; ask again in a second"),
        });
    };
    let registry = node.registry.clone();
    // The slot goes with the sampling thread: it is given back when the
    // sampling ends, even if the page went away meanwhile.
    let sampled = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let mut checks = 0u32;
        let (samples, _idle) = system_runtime::stack::profile(pid.0, WEB_PROFILE_WINDOW, || {
            checks += 1;
            !checks.is_multiple_of(64) || registry.is_alive(pid)
        });
        system_runtime::symbols::Report::of(&samples)
    })
    .await;
    let report = sampled.unwrap_or_default();
    let functions: Vec<Value> = report
        .functions
        .iter()
        .take(10)
        .map(|(function, samples)| json!({"function": function, "samples": samples}))
        .collect();
    json!({
        "type": "profile",
        "pid": pid.to_string(),
        "ms": WEB_PROFILE_WINDOW.as_millis() as u64,
        "samples": report.samples,
        "functions": functions,
    })
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
