//! The console's Rhai API: the constants `Process`, `Runtime`, `System`, `Load` and `Code`
//! (custom types with methods, so `Process.list()` reads as in the talk),
//! the `Pid` type, the short forms `info`, `trace`, `kill`, `top`,
//! `pid`, `hd`, `whereis`, and `help()`.
//!
//! It only observes and kills processes through the registry; it must not
//! give scripts file, network or module access, and it must not run on a
//! scheduler thread (calls that wait use `Handle::block_on`).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use rhai::{Array, Dynamic, Engine, EvalAltResult, ImmutableString, Map, Position, Scope};
use tokio::runtime::Handle;

mod long_schedule;
mod profile;
mod trace;

use self::profile::native_frames;

use super::help::{self, Help};
use crate::node::Node;
use system_runtime::{Pid, Priority, ProcessInfo, TraceLimits, TraceReport, TraceTarget};

/// `Runtime.top()`: the window and the number of rows.
pub const TOP_WINDOW: Duration = Duration::from_secs(1);
pub const TOP_COUNT: usize = 10;
/// `Runtime.trace(pid)`: at most this many calls, for at most the window.
pub const TRACE_CALLS: usize = 50;
pub const TRACE_WINDOW: Duration = Duration::from_secs(1);

/// The value of the `Process` constant.
#[derive(Clone, Copy, Debug)]
pub struct ProcessModule;
/// The value of the `Runtime` constant.
#[derive(Clone, Copy, Debug)]
pub struct RuntimeModule;
/// The value of the `System` constant.
#[derive(Clone, Copy, Debug)]
pub struct SystemModule;
/// The value of the `Load` constant.
#[derive(Clone, Copy, Debug)]
pub struct LoadModule;
/// The value of the `Code` constant.
#[derive(Clone, Copy, Debug)]
pub struct CodeModule;

/// The longest exit reason `Process.kill(pid, reason)` takes (it is shown
/// on the page's line and in the log).
pub const MAX_EXIT_REASON: usize = 200;

/// `Code.purge()`: how long it waits for the old libraries to unload.
pub const PURGE_PATIENCE: Duration = Duration::from_secs(5);

type Fallible<T> = Result<T, Box<EvalAltResult>>;

/// What the API functions reach: the node, the runtime to wait on, and the
/// session's interrupt flag (so a wait ends early on Ctrl-C).
#[derive(Clone)]
pub struct Api {
    pub(super) node: Arc<Node>,
    handle: Handle,
    interrupt: Arc<AtomicBool>,
}

/// The error a script gets when it is interrupted.
pub fn interrupted() -> Box<EvalAltResult> {
    EvalAltResult::ErrorTerminated(Dynamic::from("interrupted"), Position::NONE).into()
}

impl Api {
    pub fn new(node: Arc<Node>, handle: Handle, interrupt: Arc<AtomicBool>) -> Api {
        Api {
            node,
            handle,
            interrupt,
        }
    }

    /// Puts the API's constants into a session's scope.
    pub fn push_constants(scope: &mut Scope) {
        scope.push_constant("Process", ProcessModule);
        scope.push_constant("Runtime", RuntimeModule);
        scope.push_constant("System", SystemModule);
        scope.push_constant("Load", LoadModule);
        scope.push_constant("Code", CodeModule);
    }

    /// The API's constant called `name`, wherever a script names it: the
    /// console's closures capture nothing (`no_closure`, so no value can
    /// contain itself), so inside `|p| Process.info(p)` the scope's
    /// constants are out of reach and the engine's variable resolver asks
    /// here.
    pub fn constant(name: &str) -> Option<Dynamic> {
        Some(match name {
            "Process" => Dynamic::from(ProcessModule),
            "Runtime" => Dynamic::from(RuntimeModule),
            "System" => Dynamic::from(SystemModule),
            "Load" => Dynamic::from(LoadModule),
            "Code" => Dynamic::from(CodeModule),
            _ => return None,
        })
    }

    /// Registers the types and functions on `engine`.
    pub fn register(&self, engine: &mut Engine) {
        engine
            .register_type_with_name::<Pid>("Pid")
            .register_fn("to_string", |pid: &mut Pid| pid.to_string())
            .register_fn("to_debug", |pid: &mut Pid| pid.to_string())
            .register_fn("==", |a: Pid, b: Pid| a == b)
            .register_fn("!=", |a: Pid, b: Pid| a != b)
            .register_fn("pid", |text: &str| parse_pid(text))
            .register_fn("hd", |list: Array| {
                list.into_iter().next().unwrap_or(Dynamic::UNIT)
            });
        engine
            .register_type_with_name::<ProcessModule>("Process")
            .register_fn("to_string", |_: &mut ProcessModule| "Process".to_owned())
            .register_type_with_name::<RuntimeModule>("Runtime")
            .register_fn("to_string", |_: &mut RuntimeModule| "Runtime".to_owned())
            .register_type_with_name::<SystemModule>("System")
            .register_fn("to_string", |_: &mut SystemModule| "System".to_owned())
            .register_type_with_name::<LoadModule>("Load")
            .register_fn("to_string", |_: &mut LoadModule| "Load".to_owned())
            .register_type_with_name::<CodeModule>("Code")
            .register_fn("to_string", |_: &mut CodeModule| "Code".to_owned());

        self.register_process(engine);
        self.register_runtime(engine);
        self.register_load(engine);
        self.register_code(engine);
        self.register_long_schedules(engine);
        let api = self.clone();
        engine.register_fn("info", move |_: SystemModule| api.system_info());
        let api = self.clone();
        engine.register_fn("schedulers_online", move |_: SystemModule| {
            api.node.schedulers.online() as i64
        });
        let api = self.clone();
        engine.register_fn("schedulers_online", move |_: SystemModule, online: i64| {
            api.set_schedulers_online(online)
        });
        engine
            .register_type_with_name::<Help>("Help")
            .register_fn("to_string", |_: &mut Help| help::TEXT.to_owned())
            .register_fn("help", || Help);
    }

    fn register_process(&self, engine: &mut Engine) {
        let api = self.clone();
        engine.register_fn("list", move |_: ProcessModule| -> Array {
            api.node
                .registry
                .list()
                .into_iter()
                .map(Dynamic::from)
                .collect()
        });
        let api = self.clone();
        engine.register_fn("count", move |_: ProcessModule| {
            api.node.registry.count() as i64
        });
        let api = self.clone();
        engine.register_fn("alive", move |_: ProcessModule, pid: Pid| {
            api.node.registry.is_alive(pid)
        });
        let api = self.clone();
        engine.register_fn("whereis", move |_: ProcessModule, name: &str| {
            api.whereis(name)
        });
        let api = self.clone();
        engine.register_fn("whereis", move |name: &str| api.whereis(name));

        let api = self.clone();
        engine.register_fn("info", move |_: ProcessModule, pid: Pid| api.info(pid));
        let api = self.clone();
        engine.register_fn("info", move |pid: Pid| api.info(pid));
        let api = self.clone();
        engine.register_fn("info", move |_: ProcessModule, pid: Pid, key: &str| {
            api.info_item(pid, key)
        });
        let api = self.clone();
        engine.register_fn("info", move |pid: Pid, key: &str| api.info_item(pid, key));

        let api = self.clone();
        engine.register_fn("kill", move |_: ProcessModule, pid: Pid| api.kill(pid));
        let api = self.clone();
        engine.register_fn("kill", move |pid: Pid| api.kill(pid));
        // `Process.kill(pid, reason)`, and Elixir's name for it, `Process.exit(pid, reason)`.
        for name in ["kill", "exit"] {
            let api = self.clone();
            engine.register_fn(name, move |_: ProcessModule, pid: Pid, reason: &str| {
                api.exit_signal(pid, reason)
            });
        }
        let api = self.clone();
        engine.register_fn("kill", move |pid: Pid, reason: &str| {
            api.exit_signal(pid, reason)
        });
    }

    fn register_runtime(&self, engine: &mut Engine) {
        let api = self.clone();
        engine.register_fn("top", move |_: RuntimeModule| api.top());
        let api = self.clone();
        engine.register_fn("top", move || api.top());
        let api = self.clone();
        engine.register_fn("top", move |_: RuntimeModule, sort: &str| api.top_by(sort));
        let api = self.clone();
        engine.register_fn("top", move |sort: &str| api.top_by(sort));
        let api = self.clone();
        engine.register_fn("trace", move |_: RuntimeModule, pid: Pid| api.trace(pid));
        let api = self.clone();
        engine.register_fn("trace", move |pid: Pid| api.trace(pid));
        self.register_limited_trace(engine);
        self.register_profile(engine);
    }

    fn register_load(&self, engine: &mut Engine) {
        let api = self.clone();
        engine.register_fn("get", move |_: LoadModule| api.load_state());
        let api = self.clone();
        engine.register_fn("set", move |_: LoadModule, jobs: i64| {
            api.set_load(jobs, None)
        });
        let api = self.clone();
        engine.register_fn("set", move |_: LoadModule, jobs: i64, failure_rate: f64| {
            api.set_load(jobs, Some(failure_rate))
        });
        let api = self.clone();
        engine.register_fn("set", move |_: LoadModule, jobs: i64, failure_rate: i64| {
            api.set_load(jobs, Some(failure_rate as f64))
        });
        let api = self.clone();
        engine.register_fn("priority", move |_: LoadModule, priority: &str| {
            api.set_load_priority(priority)
        });
    }

    fn register_code(&self, engine: &mut Engine) {
        let api = self.clone();
        engine.register_fn("versions", move |_: CodeModule| api.code_versions());
        let api = self.clone();
        engine.register_fn("purge", move |_: CodeModule| api.code_purge());
    }

    /// `Code.versions()`: every loaded version, oldest first, as
    /// `#{id, version, current, computations, sha256, path}`.
    fn code_versions(&self) -> Array {
        self.node
            .code
            .versions()
            .into_iter()
            .map(|version| {
                let mut map = Map::new();
                map.insert("id".into(), Dynamic::from_int(i64::from(version.id)));
                map.insert("version".into(), version.version.into());
                map.insert("current".into(), Dynamic::from_bool(version.current));
                map.insert(
                    "computations".into(),
                    Dynamic::from_int(to_int(version.computations as u64)),
                );
                map.insert("sha256".into(), version.sha256.into());
                map.insert("path".into(), version.path.display().to_string().into());
                Dynamic::from(map)
            })
            .collect()
    }

    /// `Code.purge()`: kills the processes running old versions and waits
    /// (this is the session's thread) until their libraries are unloaded;
    /// `#{killed, unloaded}`.
    fn code_purge(&self) -> Map {
        let (killed, old_left) = crate::node::upgrade::purge_and_wait(&self.node, PURGE_PATIENCE);
        let mut map = Map::new();
        map.insert("killed".into(), Dynamic::from_int(to_int(killed as u64)));
        map.insert("unloaded".into(), Dynamic::from_bool(!old_left));
        map
    }

    /// `System.schedulers_online(n)`: sets how many schedulers are online
    /// (1 to the node's maximum) and answers the count before, as
    /// `erlang:system_flag(schedulers_online, N)` does.
    fn set_schedulers_online(&self, online: i64) -> Fallible<i64> {
        let schedulers = &self.node.schedulers;
        let asked = usize::try_from(online).unwrap_or(0);
        let before = schedulers.set(asked).map_err(|error| match error {
            crate::node::online::SetError::Range(_) => format!(
                "schedulers online must be between 1 and {} (--max-schedulers), not {online}",
                schedulers.max()
            ),
            fixed => fixed.to_string(),
        })?;
        Ok(before as i64)
    }

    /// `Load.set(n)` / `Load.set(n, failure_rate)`: the new load, as `Load.get()` shows it.
    fn set_load(&self, jobs: i64, failure_rate: Option<f64>) -> Fallible<Map> {
        let jobs = u64::try_from(jobs)
            .map_err(|_| format!("the load must be 0 or more jobs, not {jobs}"))?;
        self.node
            .load
            .apply(Some(jobs), failure_rate)
            .map_err(|error| error.to_string())?;
        Ok(self.load_state())
    }

    /// `Load.priority(:normal)`: the priority the workers run at (`:low`,
    /// the default, or `:normal`; `:high` too), as `Load.get()` shows it.
    fn set_load_priority(&self, priority: &str) -> Fallible<Map> {
        let priority: Priority = priority.parse()?;
        self.node.load.set_priority(priority);
        Ok(self.load_state())
    }

    /// `Load.get()`: the setting and the counters.
    fn load_state(&self) -> Map {
        let load = &self.node.load;
        let mut map = Map::new();
        map.insert("jobs".into(), Dynamic::from_int(to_int(load.target())));
        map.insert(
            "failure_rate".into(),
            Dynamic::from_float(load.failure_rate()),
        );
        map.insert("priority".into(), load.priority().as_str().into());
        map.insert("workers".into(), Dynamic::from_int(to_int(load.workers())));
        map.insert(
            "succeeded".into(),
            Dynamic::from_int(to_int(load.succeeded())),
        );
        map.insert("failed".into(), Dynamic::from_int(to_int(load.failed())));
        map.insert(
            "restarts".into(),
            Dynamic::from_int(to_int(load.restarts())),
        );
        map
    }

    /// Waits for `future` on the daemon's runtime; ends early with an
    /// `interrupted` error if the client interrupts.
    pub(super) fn wait<T>(&self, future: impl Future<Output = T>) -> Fallible<T> {
        let interrupt = self.interrupt.clone();
        self.handle.block_on(async move {
            let watch = async {
                while !interrupt.load(Relaxed) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            tokio::select! {
                out = future => Ok(out),
                _ = watch => Err(interrupted()),
            }
        })
    }

    /// `Process.kill(pid, reason)`: Erlang's `exit(pid, reason)` for a
    /// process that does not trap exits (see `ProcessRegistry::exit_signal`).
    fn exit_signal(&self, pid: Pid, reason: &str) -> Fallible<Dynamic> {
        let reason = reason.strip_prefix(':').unwrap_or(reason);
        if reason.is_empty() || reason.len() > MAX_EXIT_REASON {
            return Err(format!(
                "an exit reason is 1 to {MAX_EXIT_REASON} bytes, e.g. :kill, :normal or :oops"
            )
            .into());
        }
        let delivered = self.node.registry.exit_signal(pid, reason);
        Ok(match reason {
            // Nothing is delivered: `true` only says it is alive.
            "normal" => Dynamic::from_bool(delivered),
            _ => self.signalled(pid, delivered),
        })
    }

    fn info(&self, pid: Pid) -> Dynamic {
        match self.node.registry.info(pid) {
            Some(info) => Dynamic::from(info_map(pid, info)),
            None => Dynamic::UNIT,
        }
    }

    /// `Process.info(pid, "current_stacktrace")` or one key of the info map;
    /// `()` if the process is not alive.
    fn info_item(&self, pid: Pid, key: &str) -> Fallible<Dynamic> {
        let key = key.trim_start_matches(':');
        if key == "current_stacktrace" {
            return Ok(match self.node.registry.stacktrace(pid) {
                Some(frames) => Dynamic::from(strings(native_frames(pid, frames))),
                None => Dynamic::UNIT,
            });
        }
        let Some(info) = self.node.registry.info(pid) else {
            return Ok(Dynamic::UNIT);
        };
        let map = info_map(pid, info);
        match map.get(key) {
            Some(value) => Ok(value.clone()),
            None => {
                let mut keys: Vec<&str> = map.keys().map(|k| k.as_str()).collect();
                keys.push("current_stacktrace");
                Err(format!("unknown info key {key:?}; known: {}", keys.join(", ")).into())
            }
        }
    }

    fn whereis(&self, name: &str) -> Dynamic {
        let registry = &self.node.registry;
        registry
            .list()
            .into_iter()
            .find(|pid| registry.name(*pid).as_deref() == Some(name))
            .map_or(Dynamic::UNIT, Dynamic::from)
    }

    fn top(&self) -> Fallible<Array> {
        let rows = self.wait(system_runtime::top::top(
            self.node.top_sources(),
            TOP_WINDOW,
            TOP_COUNT,
        ))?;
        Ok(top_rows(rows))
    }

    /// `Runtime.top(:reductions)` (as `Runtime.top()`) or `Runtime.top(:memory)`.
    fn top_by(&self, sort: &str) -> Fallible<Array> {
        match sort {
            "reductions" => self.top(),
            "memory" => {
                let registry = self.node.registry.clone();
                let rows = self.wait(async move {
                    system_runtime::top::by_memory(&registry, TOP_COUNT).await
                })?;
                Ok(top_rows(rows))
            }
            other => Err(format!("cannot sort top by {other:?}; by :reductions or :memory").into()),
        }
    }
}

impl Api {
    /// The calls `pid` makes in the next second (at most 50); `()` if it is not alive.
    fn trace(&self, pid: Pid) -> Fallible<Dynamic> {
        let registry = self.node.registry.clone();
        let calls =
            self.wait(async move { registry.trace(pid, TRACE_CALLS, TRACE_WINDOW).await })?;
        Ok(calls.map_or(Dynamic::UNIT, |calls| Dynamic::from(strings(calls))))
    }

    fn system_info(&self) -> Map {
        let node = &self.node;
        let mut map = Map::new();
        map.insert("node".into(), node.name.clone().into());
        map.insert("version".into(), node.version.into());
        map.insert(
            "uptime_s".into(),
            Dynamic::from_float(node.started.elapsed().as_secs_f64()),
        );
        map.insert(
            "schedulers".into(),
            Dynamic::from_int(node.schedulers.online() as i64),
        );
        map.insert(
            "max_schedulers".into(),
            Dynamic::from_int(node.schedulers.max() as i64),
        );
        map.insert(
            "processes".into(),
            Dynamic::from_int(node.registry.count() as i64),
        );
        let plugin = node.code.current();
        map.insert(
            "plugin_version".into(),
            plugin
                .as_ref()
                .map_or(Dynamic::UNIT, |p| p.version().to_owned().into()),
        );
        map.insert(
            "plugin_id".into(),
            plugin
                .as_ref()
                .map_or(Dynamic::UNIT, |p| Dynamic::from_int(i64::from(p.id()))),
        );
        map.insert("memory".into(), Dynamic::from(memory_map(node)));
        map
    }
}

fn parse_pid(text: &str) -> Fallible<Pid> {
    text.parse::<Pid>()
        .map_err(|error| error.to_string().into())
}

fn to_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn strings(items: Vec<String>) -> Array {
    items
        .into_iter()
        .map(|s| Dynamic::from(ImmutableString::from(s)))
        .collect()
}

/// `Runtime.top()`'s rows as Rhai maps.
fn top_rows(rows: Vec<system_runtime::top::TopRow>) -> Array {
    rows.into_iter()
        .map(|row| {
            let mut map = Map::new();
            let pid = row
                .pid
                .parse::<Pid>()
                .map_or(Dynamic::from(row.pid.clone()), Dynamic::from);
            map.insert("pid".into(), pid);
            map.insert("name".into(), row.name.into());
            map.insert("cpu".into(), Dynamic::from_float(row.cpu));
            map.insert(
                "reductions".into(),
                Dynamic::from_int(to_int(row.reductions)),
            );
            map.insert("memory".into(), Dynamic::from_int(to_int(row.memory)));
            if let Some(ms) = row.stuck_ms {
                map.insert("stuck_ms".into(), Dynamic::from_int(to_int(ms)));
            }
            Dynamic::from(map)
        })
        .collect()
}

/// `System.info().memory`: what the node holds, by kind of process and
/// apart from them, and its limits (walks the registry: on the session's
/// thread, never a scheduler).
fn memory_map(node: &crate::node::Node) -> Map {
    let breakdown = crate::node::memory::Breakdown::of(&node.registry);
    let int = |bytes: u64| Dynamic::from_int(to_int(bytes));
    let optional = |bytes: Option<u64>| bytes.map_or(Dynamic::UNIT, int);
    let mut by_name = Map::new();
    for (name, bytes) in &breakdown.by_name {
        by_name.insert(name.as_str().into(), int(*bytes));
    }
    let mut map = Map::new();
    map.insert("processes".into(), int(breakdown.processes));
    map.insert("by_name".into(), Dynamic::from(by_name));
    map.insert(
        "outside_processes".into(),
        optional(breakdown.outside_processes()),
    );
    map.insert("allocated".into(), optional(breakdown.allocated));
    map.insert("resident".into(), optional(breakdown.resident));
    map.insert("max_process_memory".into(), int(node.memory.per_sum));
    map.insert("max_memory".into(), int(node.memory.watermark.limit()));
    map.insert(
        "memory_limit_kills".into(),
        int(node.registry.memory_limit_kills()),
    );
    map.insert(
        "memory_pressure_kills".into(),
        int(node.memory.watermark.kills()),
    );
    map
}

/// `Process.info(pid)` as a Rhai map.
fn info_map(pid: Pid, info: ProcessInfo) -> Map {
    let mut map = Map::new();
    map.insert("pid".into(), Dynamic::from(pid));
    map.insert("name".into(), info.name.into());
    map.insert("initial_call".into(), info.initial_call.into());
    map.insert("status".into(), info.status.as_str().into());
    map.insert("priority".into(), info.priority.as_str().into());
    map.insert(
        "reductions".into(),
        Dynamic::from_int(to_int(info.reductions)),
    );
    map.insert(
        "cpu_time_us".into(),
        Dynamic::from_int(to_int(info.cpu_time_us)),
    );
    map.insert("memory".into(), Dynamic::from_int(to_int(info.memory)));
    map.insert(
        "allocated".into(),
        Dynamic::from_int(to_int(info.allocated)),
    );
    map.insert(
        "memory_limit".into(),
        Dynamic::from_int(to_int(info.memory_limit)),
    );
    map.insert("current_function".into(), info.current_function.into());
    map.insert(
        "parent".into(),
        info.parent.map_or(Dynamic::UNIT, Dynamic::from),
    );
    map.insert("links".into(), pid_list(&info.links));
    map.insert("monitors".into(), pid_list(&info.monitors));
    map.insert("monitored_by".into(), pid_list(&info.monitored_by));
    map.insert(
        "message_queue_len".into(),
        Dynamic::from_int(to_int(info.message_queue_len as u64)),
    );
    map.insert(
        "spawned_at".into(),
        utc_timestamp(info.spawned_at_ms).into(),
    );
    map.insert(
        "plugin_version".into(),
        info.code_version
            .map_or(Dynamic::UNIT, |v| Dynamic::from_int(i64::from(v))),
    );
    map
}

fn pid_list(pids: &[Pid]) -> Dynamic {
    Dynamic::from(pids.iter().copied().map(Dynamic::from).collect::<Array>())
}

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn utc_timestamp(ms: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_timestamps() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc_timestamp(1_709_210_096_789), "2024-02-29T12:34:56.789Z");
    }
}
