//! `Runtime.long_schedules()` and what a kill of a process stuck in one
//! poll answers ("kill pending: …").
//!
//! It reads the long-schedule monitor's reports; it kills only through the
//! registry.

use super::*;

impl Api {
    pub(super) fn register_long_schedules(&self, engine: &mut Engine) {
        let api = self.clone();
        engine.register_fn("long_schedules", move |_: RuntimeModule| {
            api.long_schedules()
        });
    }

    /// `Runtime.long_schedules()`: the last 100 polls that held a scheduler
    /// longer than the threshold, oldest first, as
    /// `#{pid, name, function, plugin, ms, started_at, running, stack}`
    /// (`stack`: its native frames when first seen, innermost first).
    pub(super) fn long_schedules(&self) -> Array {
        self.node
            .long_schedules
            .events()
            .into_iter()
            .map(|event| {
                let mut map = Map::new();
                let pid = event
                    .pid
                    .parse::<Pid>()
                    .map_or_else(|_| Dynamic::from(event.pid.clone()), Dynamic::from);
                map.insert("pid".into(), pid);
                map.insert("name".into(), event.name.into());
                map.insert("initial_call".into(), event.initial_call.into());
                map.insert("function".into(), event.function.into());
                map.insert(
                    "plugin".into(),
                    event.code.map_or(Dynamic::UNIT, Dynamic::from),
                );
                map.insert(
                    "scheduler".into(),
                    Dynamic::from_int(to_int(event.scheduler as u64)),
                );
                map.insert("ms".into(), Dynamic::from_int(to_int(event.ms)));
                map.insert("started_at".into(), event.started_at.into());
                map.insert("running".into(), Dynamic::from_bool(event.running));
                map.insert("stack".into(), Dynamic::from(strings(event.stack)));
                if let Some(error) = event.stack_error {
                    map.insert("stack_error".into(), error.into());
                }
                Dynamic::from(map)
            })
            .collect()
    }

    /// `Process.kill(pid)`: `true` if it was alive (it ends at its next
    /// yield), `false` if not; for a process inside a poll longer than the
    /// long-schedule threshold, a sentence saying the kill waits for that
    /// poll to return (nothing can cut a poll short).
    pub(super) fn kill(&self, pid: Pid) -> Dynamic {
        self.signalled(pid, self.node.registry.kill(pid))
    }

    /// What a kill or an exit signal answers: whether it reached a live
    /// process, or, for a process inside a poll holding a scheduler (this
    /// signal or an earlier one waiting), that it waits for that poll.
    pub(super) fn signalled(&self, pid: Pid, killed: bool) -> Dynamic {
        let threshold = self.node.long_schedules.threshold();
        match system_runtime::watch::in_poll(pid.0) {
            Some(held) if !threshold.is_zero() && held >= threshold => Dynamic::from(format!(
                "kill pending: {pid} has been inside one poll for {} ms; the kill takes effect when that poll returns, unless the process finishes in it",
                crate::log::thousands(held.as_millis() as u64)
            )),
            _ => Dynamic::from_bool(killed),
        }
    }
}
