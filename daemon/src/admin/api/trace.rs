//! `Runtime.trace(target, opts)` and `Runtime.traces()`: tracing with
//! limits (recon_trace's model: a pid or a name; calls, time, rate), ended
//! with the session at the latest.
//!
//! It only reads what the registry's traces report.

use super::*;

impl Api {
    pub(super) fn register_limited_trace(&self, engine: &mut Engine) {
        let api = self.clone();
        engine.register_fn("trace", move |_: RuntimeModule, name: &str| {
            api.trace_limited(TraceTarget::Name(name.to_owned()), Map::new())
        });
        let api = self.clone();
        engine.register_fn("trace", move |name: &str| {
            api.trace_limited(TraceTarget::Name(name.to_owned()), Map::new())
        });
        let api = self.clone();
        engine.register_fn("trace", move |_: RuntimeModule, pid: Pid, opts: Map| {
            api.trace_limited(TraceTarget::Pid(pid), opts)
        });
        let api = self.clone();
        engine.register_fn("trace", move |pid: Pid, opts: Map| {
            api.trace_limited(TraceTarget::Pid(pid), opts)
        });
        let api = self.clone();
        engine.register_fn("trace", move |_: RuntimeModule, name: &str, opts: Map| {
            api.trace_limited(TraceTarget::Name(name.to_owned()), opts)
        });
        let api = self.clone();
        engine.register_fn("trace", move |name: &str, opts: Map| {
            api.trace_limited(TraceTarget::Name(name.to_owned()), opts)
        });
        let api = self.clone();
        engine.register_fn("traces", move |_: RuntimeModule| {
            Dynamic::from_int(to_int(api.node.registry.traces_running() as u64))
        });
    }

    /// `Runtime.trace(target, #{calls: N, per_second: R, ms: T})`: the
    /// events of a pid, or of every process of a name (those started
    /// meanwhile too), until whichever limit comes first (50 calls and
    /// 1,000 ms unless given; no rate limit unless given), as
    /// `#{events: [#{pid, call, result, at_ms}], ended}`; `()` if the pid
    /// is not alive. It waits on the session's thread; an interrupt, or the
    /// session's end, ends it.
    pub(super) fn trace_limited(&self, target: TraceTarget, opts: Map) -> Fallible<Dynamic> {
        let limits = trace_limits(&opts)?;
        let registry = self.node.registry.clone();
        let report = self.wait(async move { registry.trace_with(target, limits).await })?;
        Ok(report.map_or(Dynamic::UNIT, |report| Dynamic::from(trace_map(report))))
    }
}

/// The limits of `Runtime.trace(target, opts)`.
pub(super) fn trace_limits(opts: &Map) -> Fallible<TraceLimits> {
    let mut limits = TraceLimits::default();
    for (key, value) in opts {
        let number = value
            .as_int()
            .ok()
            .and_then(|n| u64::try_from(n).ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("trace option {key} is a whole number above 0"))?;
        match key.as_str() {
            "calls" => limits.calls = number.min(system_runtime::TRACE_MAX_CALLS as u64) as usize,
            "per_second" => limits.per_second = Some(number.min(usize::MAX as u64) as usize),
            "ms" => limits.window = Duration::from_millis(number),
            other => {
                return Err(format!(
                    "unknown trace option {other:?}; known: calls, per_second, ms"
                )
                .into());
            }
        }
    }
    Ok(limits)
}

pub(super) fn trace_map(report: TraceReport) -> Map {
    let events: Array = report
        .events
        .into_iter()
        .map(|event| {
            let mut map = Map::new();
            map.insert("pid".into(), Dynamic::from(event.pid));
            map.insert("call".into(), event.call.into());
            map.insert(
                "result".into(),
                event.result.map_or(Dynamic::UNIT, Dynamic::from),
            );
            map.insert(
                "at_ms".into(),
                Dynamic::from_int(to_int(event.at.as_millis() as u64)),
            );
            Dynamic::from(map)
        })
        .collect();
    let mut map = Map::new();
    map.insert("events".into(), Dynamic::from(events));
    map.insert("ended".into(), report.ended.as_str().into());
    map
}
