//! One console session: a `console_session` process that speaks the admin
//! protocol on its socket, and a dedicated OS thread that owns the session's
//! Rhai engine and scope, so variables and functions persist between lines
//! and no script ever runs on a scheduler thread.
//!
//! The process only moves frames; the thread evaluates scripts and performs
//! `upgrade` requests (loading a plugin version is blocking work, kept off
//! the schedulers too). A script is
//! stopped by the interrupt flag (checked on every Rhai operation), never
//! by killing the thread. When the process ends, the thread is interrupted
//! and ends after its current script.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc as std_mpsc;
use std::time::Instant;

use rhai::{AST, Dynamic, Engine, EvalAltResult, OptimizationLevel, Position, Scope};
use serde::Deserialize;
use tokio::net::UnixStream;
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::api::Api;
use super::atom::Atoms;
use super::budget::{self, Line, SESSION_BUDGET};
use super::frame::{FrameError, FrameReader, write_frame};
use super::reply::{ErrorKind, ErrorReply, Reply};
use super::{binding, nesting, render};
use crate::node::Node;
use crate::node::upgrade::{self, Target};
use system_runtime::{Pid, ProcessContext, Spec};

/// Stack of a session's evaluation thread: generous, since Rhai's call and
/// expression depths are bounded below and values nest at most a little
/// past `nesting::MAX_NESTING` (see there); reserved, not resident, until used.
const THREAD_STACK: usize = 64 * 1024 * 1024;
/// Frames the evaluation thread may queue before it waits for the client.
const REPLY_QUEUE: usize = 256;

/// Engine limits: a script cannot exhaust the daemon's memory or stack.
/// Operations are not limited: endless loops are interrupted, not forbidden.
pub const MAX_STRING_SIZE: usize = 1024 * 1024;
/// Enough for `Process.list()` at twice the default load cap.
pub const MAX_ARRAY_SIZE: usize = 4_000_000;
pub const MAX_MAP_SIZE: usize = 100_000;
pub const MAX_CALL_LEVELS: usize = 64;
pub const MAX_EXPR_DEPTH: usize = 64;
pub const MAX_FN_EXPR_DEPTH: usize = 32;
pub const MAX_VARIABLES: usize = 10_000;
pub const MAX_FUNCTIONS: usize = 1_000;

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Request {
    Eval {
        #[serde(default)]
        id: u64,
        script: String,
        /// Also send the result as JSON (`value`); a console only needs `text`.
        #[serde(default = "yes")]
        json: bool,
    },
    Interrupt,
    /// Hot upgrade: exactly one of `plugin` (a library path) or `rollback: true`.
    Upgrade {
        #[serde(default)]
        id: u64,
        #[serde(default)]
        plugin: Option<std::path::PathBuf>,
        #[serde(default)]
        rollback: bool,
    },
}

/// A frame from the evaluation thread; `done` ends the current evaluation.
struct Outgoing {
    frame: Reply,
    done: bool,
}

/// Starts the process that serves one accepted, authorised connection;
/// `seat` is its place among the sessions allowed at once, held until its
/// evaluation thread ends.
/// Starts a session's process; its parent is `server` (the `admin_server`
/// process, whose accept loop on the console's runtime calls this).
pub fn start(
    node: Arc<Node>,
    stream: UnixStream,
    peer: String,
    seat: OwnedSemaphorePermit,
    server: Pid,
) -> Pid {
    let spec =
        Spec::new("console_session", format!("Admin.Session.init(\"{peer}\")")).spawned_by(server);
    let tracker = node.connections.clone();
    node.registry.clone().spawn(spec, move |ctx| {
        tracker.track_future(run(ctx, node, stream, seat))
    })
}

async fn run(ctx: ProcessContext, node: Arc<Node>, stream: UnixStream, seat: OwnedSemaphorePermit) {
    ctx.enter(&"Admin.Session.loop/1");
    let (reader, mut writer) = stream.into_split();
    let mut reader = FrameReader::new(reader);
    let (replies_tx, mut replies) = mpsc::channel(REPLY_QUEUE);
    let worker = match Worker::spawn(node.clone(), Handle::current(), replies_tx, seat) {
        Ok(worker) => worker,
        Err(error) => {
            tracing::error!(
                "console session {}: cannot start its thread: {error}",
                ctx.pid()
            );
            let frame = Reply::error(
                None,
                ErrorKind::Internal,
                format!("cannot start a session: {error}"),
            );
            let _ = write_frame(&mut writer, &frame).await;
            return;
        }
    };
    let hello = Reply::Hello {
        node: node.name.clone(),
        version: node.version.to_owned(),
        session: ctx.pid().to_string(),
    };
    if write_frame(&mut writer, &hello).await.is_err() {
        return;
    }
    let mut running: Option<u64> = None;
    loop {
        let answer = tokio::select! {
            _ = node.shutdown.cancelled() => {
                let stopping = Reply::error(None, ErrorKind::Shutdown, "the daemon is stopping");
                let _ = write_frame(&mut writer, &stopping).await;
                return;
            }
            reply = replies.recv() => match reply {
                Some(reply) => {
                    if reply.done {
                        running = None;
                    }
                    Some(reply.frame)
                }
                None => return,
            },
            frame = reader.next_frame() => match frame {
                Ok(Some(bytes)) => handle(&worker, &mut running, &bytes),
                Ok(None) => return,
                Err(FrameError::TooLarge) => Some(Reply::error(None, ErrorKind::TooLarge, FrameError::TooLarge.to_string())),
                Err(FrameError::Io(error)) => {
                    tracing::debug!("console session {}: {error}", ctx.pid());
                    return;
                }
            },
        };
        if let Some(frame) = answer
            && write_frame(&mut writer, &frame).await.is_err()
        {
            return;
        }
    }
}

/// Acts on one client frame; returns the immediate answer, if any.
fn handle(worker: &Worker, running: &mut Option<u64>, bytes: &[u8]) -> Option<Reply> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    match serde_json::from_slice::<Request>(bytes) {
        Err(error) => Some(Reply::error(
            None,
            ErrorKind::Malformed,
            format!("malformed frame: {error}"),
        )),
        Ok(Request::Interrupt) => {
            if running.is_some() {
                worker.interrupt.store(true, Relaxed);
            }
            None
        }
        Ok(Request::Eval { id, script, json }) => {
            submit(worker, running, id, Work::Eval { script, json })
        }
        Ok(Request::Upgrade {
            id,
            plugin,
            rollback,
        }) => {
            let received = Instant::now();
            let target = match (plugin, rollback) {
                (Some(path), false) => Target::Plugin(path),
                (None, true) => Target::Rollback,
                _ => {
                    return Some(Reply::error(
                        Some(id),
                        ErrorKind::Malformed,
                        "an upgrade needs exactly one of `plugin` (a path) or `rollback: true`",
                    ));
                }
            };
            submit(worker, running, id, Work::Upgrade { target, received })
        }
    }
}

/// Hands a job to the session's thread unless one is running.
fn submit(worker: &Worker, running: &mut Option<u64>, id: u64, work: Work) -> Option<Reply> {
    if let Some(busy) = running {
        return Some(Reply::error(
            Some(id),
            ErrorKind::Busy,
            format!("evaluation {busy} is still running; interrupt it first"),
        ));
    }
    worker.interrupt.store(false, Relaxed);
    match worker.jobs.send(Job { id, work }) {
        Ok(()) => {
            *running = Some(id);
            None
        }
        Err(_) => Some(Reply::error(
            Some(id),
            ErrorKind::Internal,
            "the session's evaluation thread has ended",
        )),
    }
}

fn yes() -> bool {
    true
}

struct Job {
    id: u64,
    work: Work,
}

/// What the session's thread does for one request.
enum Work {
    Eval {
        script: String,
        json: bool,
    },
    /// `received`: when the session process read the request (the switch time counts from there).
    Upgrade {
        target: Target,
        received: Instant,
    },
}

/// The handle the process keeps on its evaluation thread.
struct Worker {
    jobs: std_mpsc::Sender<Job>,
    interrupt: Arc<AtomicBool>,
}

impl Drop for Worker {
    /// Stops a running script; the thread ends once its job queue is closed.
    fn drop(&mut self) {
        self.interrupt.store(true, Relaxed);
    }
}

impl Worker {
    fn spawn(
        node: Arc<Node>,
        handle: Handle,
        replies: mpsc::Sender<Outgoing>,
        seat: OwnedSemaphorePermit,
    ) -> std::io::Result<Worker> {
        let (jobs, queue) = std_mpsc::channel::<Job>();
        let interrupt = Arc::new(AtomicBool::new(false));
        let flag = interrupt.clone();
        std::thread::Builder::new()
            .name("console-session".to_owned())
            .stack_size(THREAD_STACK)
            .spawn(move || {
                let _seat = seat;
                let mut evaluator = Evaluator::new(node, handle, flag, replies.clone());
                while let Ok(job) = queue.recv() {
                    let frame = evaluator.run(&job);
                    if replies
                        .blocking_send(Outgoing { frame, done: true })
                        .is_err()
                    {
                        break;
                    }
                }
            })?;
        Ok(Worker { jobs, interrupt })
    }
}

/// The session's Rhai state: engine, scope and the functions defined so far.
struct Evaluator {
    node: Arc<Node>,
    engine: Engine,
    atoms: Atoms,
    scope: Scope<'static>,
    functions: AST,
    current: Arc<AtomicU64>,
    /// The memory budget of the line running.
    line: Arc<Line>,
    /// What the variables held (estimated) when the last line ended.
    held: usize,
    /// Set when a variable was found nested too deep (it is dropped after the line).
    too_deep: Arc<AtomicBool>,
}

impl Evaluator {
    fn new(
        node: Arc<Node>,
        handle: Handle,
        interrupt: Arc<AtomicBool>,
        replies: mpsc::Sender<Outgoing>,
    ) -> Evaluator {
        let current = Arc::new(AtomicU64::new(0));
        let line = Arc::new(Line::default());
        let too_deep = Arc::new(AtomicBool::new(false));
        let mut engine = engine(
            Api::new(node.clone(), handle, interrupt.clone()),
            interrupt,
            replies,
            current.clone(),
            (line.clone(), too_deep.clone()),
        );
        let atoms = Atoms::install(&mut engine);
        let mut scope = Scope::new();
        Api::push_constants(&mut scope);
        Evaluator {
            node,
            engine,
            atoms,
            scope,
            functions: AST::empty(),
            current,
            line,
            held: 0,
            too_deep,
        }
    }

    /// Does one job; returns its final frame.
    fn run(&mut self, job: &Job) -> Reply {
        match &job.work {
            Work::Eval { script, json } => self.eval(job.id, script, *json),
            Work::Upgrade { target, received } => self.upgrade(job.id, target, *received),
        }
    }

    /// Switches the plugin version; returns the `upgraded` or `error` frame.
    fn upgrade(&self, id: u64, target: &Target, received: Instant) -> Reply {
        let node = &self.node;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            upgrade::switch(node, target, received)
        }));
        match outcome {
            Ok(Ok(report)) => Reply::Upgraded {
                id,
                from: report.from,
                to: report.to,
                version_id: report.id,
                sha256: report.sha256,
                took_us: report.took_us,
            },
            Ok(Err(error)) => {
                let serving = node
                    .code
                    .current()
                    .map_or_else(|| "no version".to_owned(), |v| v.to_string());
                Reply::Error(ErrorReply {
                    reason: Some(error.kind().to_owned()),
                    ..error_reply(
                        id,
                        ErrorKind::Upgrade,
                        format!("upgrade failed: {error}; the daemon still serves {serving}"),
                    )
                })
            }
            Err(_) => Reply::error(
                Some(id),
                ErrorKind::Internal,
                "the upgrade panicked; the daemon still serves its current version",
            ),
        }
    }

    /// Evaluates one script; returns its `result` or `error` frame.
    fn eval(&mut self, id: u64, script: &str, with_json: bool) -> Reply {
        self.current.store(id, Relaxed);
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.evaluate(script)));
        let outcome = outcome.map(|result| {
            result.and_then(|value| {
                nesting::check(&value, "the result")
                    .map(|()| value)
                    .map_err(|message| {
                        EvalAltResult::ErrorRuntime(message.into(), Position::NONE).into()
                    })
            })
        });
        match outcome {
            Ok(Ok(value)) => Reply::Result {
                id,
                text: render::text(&value),
                value: with_json.then(|| render::json(&value)),
            },
            Ok(Err(error)) => script_error(id, &error),
            Err(_) => Reply::error(
                Some(id),
                ErrorKind::Internal,
                "the evaluation panicked; the session is still usable",
            ),
        }
    }

    /// Compiles (atoms included), binds the line's new top-level names,
    /// runs it, and keeps the session's variables within their budget.
    fn evaluate(&mut self, script: &str) -> Result<Dynamic, Box<EvalAltResult>> {
        self.atoms.reset();
        let ast = self.engine.compile_with_scope(&self.scope, script)?;
        let bound = binding::unbound_targets(&ast, &self.scope);
        let shown = binding::last_assigned(&ast);
        let ast = self
            .engine
            .optimize_ast(&self.scope, ast, OptimizationLevel::Simple);
        let program = self.functions.merge(&ast);
        let before = self.scope.len();
        self.line.begin(self.held, SESSION_BUDGET);
        for name in &bound {
            self.scope.push_dynamic(name.clone(), Dynamic::UNIT);
        }
        let result = self
            .engine
            .eval_ast_with_scope::<Dynamic>(&mut self.scope, &program)
            .map(|value| match &shown {
                Some(name) if value.is_unit() => self.scope.get(name).cloned().unwrap_or(value),
                _ => value,
            });
        if result.is_err() {
            // A line that failed binds nothing it had not assigned yet.
            for name in &bound {
                if self.scope.get(name).is_some_and(Dynamic::is_unit) {
                    let _ = self.scope.remove::<Dynamic>(name);
                }
            }
        }
        let mut functions = program;
        functions.clear_statements();
        self.functions = functions;
        let deep = if self.too_deep.swap(false, Relaxed) {
            nesting::drop_too_deep(&mut self.scope)
        } else {
            Vec::new()
        };
        if !deep.is_empty() {
            let message = format!(
                "{}; dropped {}; the session goes on",
                nesting::too_deep("a variable"),
                deep.iter()
                    .map(|name| format!("`{name}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            return Err(EvalAltResult::ErrorRuntime(message.into(), Position::NONE).into());
        }
        let (now_held, over) = budget::enforce(&mut self.scope, before, SESSION_BUDGET);
        self.held = now_held;
        if let Some((held, dropped)) = over {
            let names = dropped
                .iter()
                .map(|name| format!("`{name}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let message = format!(
                "{}; dropped {names}; the session goes on",
                budget::over_budget(held, SESSION_BUDGET)
            );
            return Err(EvalAltResult::ErrorRuntime(message.into(), Position::NONE).into());
        }
        result
    }
}

/// The error frame of a failed script: its message and, if known, position.
fn script_error(id: u64, error: &EvalAltResult) -> Reply {
    if let EvalAltResult::ErrorTerminated(token, _) = error {
        let message = token.to_string();
        if message.starts_with(budget::OVER_BUDGET) {
            return Reply::error(
                Some(id),
                ErrorKind::Memory,
                format!("{message}; the line was stopped; the session goes on"),
            );
        }
        return Reply::error(Some(id), ErrorKind::Interrupted, "interrupted");
    }
    if let EvalAltResult::ErrorRuntime(value, _) = error
        && value
            .read_lock::<rhai::ImmutableString>()
            .is_some_and(|message| message.starts_with(budget::OVER_BUDGET))
    {
        return Reply::error(Some(id), ErrorKind::Memory, value.to_string());
    }
    let position = error.position();
    Reply::Error(ErrorReply {
        line: position.line(),
        column: position.position(),
        ..error_reply(id, ErrorKind::Script, error.to_string())
    })
}

/// An error answering request `id`, without the optional fields.
fn error_reply(id: u64, kind: ErrorKind, message: String) -> ErrorReply {
    ErrorReply {
        id: Some(id),
        kind,
        message,
        reason: None,
        line: None,
        column: None,
    }
}

/// A sandboxed engine: no modules from files, bounded sizes and depths,
/// interruptible, `print`/`debug` sent to the client.
fn engine(
    api: Api,
    interrupt: Arc<AtomicBool>,
    replies: mpsc::Sender<Outgoing>,
    current: Arc<AtomicU64>,
    (line, too_deep): (Arc<Line>, Arc<AtomicBool>),
) -> Engine {
    let mut engine = Engine::new();
    engine
        .set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new())
        .set_max_operations(0)
        .set_max_string_size(MAX_STRING_SIZE)
        .set_max_array_size(MAX_ARRAY_SIZE)
        .set_max_map_size(MAX_MAP_SIZE)
        .set_max_call_levels(MAX_CALL_LEVELS)
        .set_max_expr_depths(MAX_EXPR_DEPTH, MAX_FN_EXPR_DEPTH)
        .set_max_variables(MAX_VARIABLES)
        .set_max_functions(MAX_FUNCTIONS)
        .set_max_modules(0)
        // Compiled as written, so that `binding` sees the line's own top
        // level; `evaluate` optimizes afterwards.
        .set_optimization_level(OptimizationLevel::None);
    // At a variable read, at a pace: every variable of the scope read from
    // (function-locals included), whichever the script reads.
    let paced = nesting::Paced::default();
    #[allow(deprecated)] // "volatile", not deprecated
    engine.on_var(move |name, _, context| {
        if let Some(constant) = super::api::Api::constant(name) {
            return Ok(Some(constant));
        }
        let scope = context.scope();
        paced
            .run(|| {
                scope
                    .iter_raw()
                    .try_for_each(|(name, _, value)| nesting::check(value, &format!("`{name}`")))
            })
            .map(|()| None)
            .map_err(|message| {
                too_deep.store(true, Relaxed);
                message.into()
            })
    });
    let budget = line.clone();
    engine.on_progress(move |_| {
        if interrupt.load(Relaxed) {
            return Some(Dynamic::from("interrupted"));
        }
        budget.check().err().map(Dynamic::from)
    });
    // Output frames are freed by the session's process, not held by the line.
    // The frame's text is made inside `handing_over`: it is the process's.
    let output = move |text: &str| {
        let frame = line.handing_over(|| Reply::Output {
            id: current.load(Relaxed),
            text: text.to_owned(),
        });
        let _ = replies.blocking_send(Outgoing { frame, done: false });
    };
    let print = output.clone();
    engine.on_print(move |text| print(text));
    engine.on_debug(move |text, _source, position| {
        if position.is_none() {
            output(text)
        } else {
            output(&format!("{text} @ {position}"))
        }
    });
    api.register(&mut engine);
    super::processes::register(&api, &mut engine);
    nesting::register(&mut engine);
    engine
}
