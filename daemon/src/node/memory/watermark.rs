//! The node's high watermark: while the daemon holds more than it, the
//! biggest user process is killed with `memory_pressure` (sums first, then
//! load workers; never a system process) and the freed pages go back to
//! the system, so that no computation drives the node into an abort or the
//! kernel's OOM killer (which might pick another program altogether).
//!
//! It watches from a thread of its own (`memory-watch`), so a held
//! scheduler does not stop it; it only kills through the registry (a
//! process ends at its next yield) and never touches a process's memory.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use system_runtime::{Holder, ProcessRegistry};

use super::{allocated, bytes, release_freed_pages};

/// How often the node's memory is looked at.
const PERIOD: Duration = Duration::from_millis(100);
/// How long a killed holder is given to reach its next yield and end
/// before the next one is chosen.
const END_WAIT: Duration = Duration::from_secs(1);
/// Once the daemon's live bytes have fallen this far below their peak
/// since the last release, the freed pages go back to the system at once
/// (a big holder ended: killed for its limit, or simply done).
const RELEASE_AFTER_FREEING: u64 = 32 << 20;

/// The node's high watermark and what it did.
pub struct Watermark {
    /// Bytes the daemon may hold (the allocator's live bytes); 0: none.
    limit: u64,
    kills: AtomicU64,
}

impl Watermark {
    pub fn new(limit: u64) -> Arc<Watermark> {
        Arc::new(Watermark {
            limit,
            kills: AtomicU64::new(0),
        })
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Processes killed for memory pressure since start.
    pub fn kills(&self) -> u64 {
        self.kills.load(Relaxed)
    }

    /// Watches the node until the registry is gone. Also hands freed pages
    /// back to the system once a big holder has ended (e.g. one killed for
    /// its own limit).
    pub fn watch(self: &Arc<Self>, registry: &Arc<ProcessRegistry>) -> std::io::Result<()> {
        let (watermark, registry) = (self.clone(), Arc::downgrade(registry));
        std::thread::Builder::new()
            .name("memory-watch".to_owned())
            .spawn(move || watermark.run(&registry))
            .map(drop)
    }

    fn run(&self, registry: &Weak<ProcessRegistry>) {
        let mut peak = 0;
        loop {
            std::thread::sleep(PERIOD);
            let Some(registry) = registry.upgrade() else {
                return;
            };
            let Some(held) = allocated() else {
                continue;
            };
            // Whenever memory was freed, not when a kill was seen: what a
            // killed process held comes back when its task is dropped,
            // which on a busy machine may be periods later.
            peak = peak.max(held);
            if peak - held >= RELEASE_AFTER_FREEING {
                release_freed_pages();
                peak = held;
            }
            if self.limit != 0 && held > self.limit {
                self.relieve(&registry, held);
            }
        }
    }

    /// Kills the biggest user process and waits for it to end.
    fn relieve(&self, registry: &ProcessRegistry, held: u64) {
        let Some(victim) = choose(registry.memory()) else {
            tracing::warn!(
                "memory pressure: the node holds {} over its {} watermark, and no user process holds memory to free",
                bytes(held),
                bytes(self.limit)
            );
            std::thread::sleep(END_WAIT);
            return;
        };
        let reason = format!(
            "memory_pressure: the node held {} over its {} watermark; this process held {}",
            bytes(held),
            bytes(self.limit),
            bytes(victim.memory)
        );
        if !registry.exit_signal(victim.pid, &reason) {
            return;
        }
        self.kills.fetch_add(1, Relaxed);
        tracing::warn!(
            "memory pressure: killed process {} {} holding {}: the node held {} over its {} watermark",
            victim.name,
            victim.pid,
            bytes(victim.memory),
            bytes(held),
            bytes(self.limit)
        );
        let deadline = Instant::now() + END_WAIT;
        while registry.is_alive(victim.pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        release_freed_pages();
    }
}

/// The process to kill: the biggest sum, else the biggest other user
/// process; never a system process, never one that holds nothing.
fn choose(holders: Vec<Holder>) -> Option<Holder> {
    let biggest = |sums: bool| {
        holders
            .iter()
            .filter(|h| h.user && h.memory > 0 && (h.name == "sum") == sums)
            .max_by_key(|h| h.memory)
            .cloned()
    };
    biggest(true).or_else(|| biggest(false))
}

/// 80 % of the memory the daemon may use: its cgroup's `memory.max` (the
/// tightest of its own and its ancestors') where one is set, else the
/// machine's physical memory.
pub fn default_limit() -> u64 {
    let available = cgroup_limit().or_else(physical_memory).unwrap_or(0);
    available / 10 * 8
}

fn cgroup_limit() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    // cgroup v2: one line `0::/path`.
    let path = own.lines().find_map(|line| line.strip_prefix("0::"))?;
    let mut dir = std::path::Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
    let mut tightest: Option<u64> = None;
    loop {
        if let Ok(text) = std::fs::read_to_string(dir.join("memory.max"))
            && let Ok(limit) = text.trim().parse::<u64>()
        {
            tightest = Some(tightest.map_or(limit, |t| t.min(limit)));
        }
        if dir == std::path::Path::new("/sys/fs/cgroup") || !dir.pop() {
            return tightest;
        }
    }
}

fn physical_memory() -> Option<u64> {
    let pages = nix::unistd::sysconf(nix::unistd::SysconfVar::_PHYS_PAGES).ok()??;
    let size = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok()??;
    Some(pages as u64 * size as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use system_runtime::Pid;

    fn holder(pid: u64, name: &'static str, user: bool, memory: u64) -> Holder {
        Holder {
            pid: Pid(pid),
            name: name.into(),
            user,
            memory,
        }
    }

    #[test]
    fn sums_go_first_then_other_user_work_never_system_processes() {
        let victim = |holders| choose(holders).map(|h: Holder| h.pid.0);
        assert_eq!(
            victim(vec![
                holder(1, "ws_connection", false, 900),
                holder(2, "load_worker", true, 500),
                holder(3, "sum", true, 10),
                holder(4, "sum", true, 20),
            ]),
            Some(4)
        );
        assert_eq!(
            victim(vec![
                holder(1, "ws_connection", false, 900),
                holder(2, "load_worker", true, 500),
                holder(3, "load_worker", true, 600),
            ]),
            Some(3)
        );
        assert_eq!(victim(vec![holder(1, "supervisor", false, 900)]), None);
        assert_eq!(victim(vec![holder(1, "sum", true, 0)]), None);
    }

    #[test]
    fn the_default_is_a_fraction_of_what_there_is() {
        let limit = default_limit();
        assert!(limit > 0);
        assert!(limit <= physical_memory().unwrap_or(u64::MAX));
    }
}
