//! Linux facts the benchmark reads or sets: CPU affinity, a process's or a
//! thread's CPU time (from /proc), the load average, the machine's CPU.
//!
//! It only observes and pins; it never signals or changes another process
//! beyond its CPU affinity at spawn.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> anyhow::Result<()> {
    set_affinity(cpu).with_context(|| format!("pinning to CPU {cpu}"))
}

fn set_affinity(cpu: usize) -> std::io::Result<()> {
    set_affinity_to(cpu..cpu + 1)
}

fn set_affinity_to(cpus: std::ops::Range<usize>) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set, CPU_SET
    // writes inside it (it checks the index), and sched_setaffinity(0, …)
    // only reads the set we own. All of it is async-signal-safe.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Makes `command`'s process (and so everything it forks) run on `cpu` only.
pub fn pin_command(command: &mut Command, cpu: usize) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: the closure runs between fork and exec; set_affinity makes
    // one system call and allocates nothing.
    unsafe {
        command.pre_exec(move || set_affinity(cpu));
    }
}

/// Lets `command`'s process run on the first `count` CPUs (whatever the
/// affinity of the thread that spawns it).
pub fn spread_command(command: &mut Command, count: usize) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: as in `pin_command`: one system call, no allocation.
    unsafe {
        command.pre_exec(move || set_affinity_to(0..count));
    }
}

/// CPUs online (whatever this thread's affinity).
pub fn cpus() -> usize {
    // SAFETY: sysconf only reads a configuration value.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(online).unwrap_or(1).max(1)
}

/// The CPU model, from /proc/cpuinfo.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split(':').nth(1))
                .map(|model| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The 1-, 5- and 15-minute load averages, as /proc/loadavg says them.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".into())
}

/// Nanoseconds on CPU of every thread of `pid` (sum of the first field of
/// each `/proc/PID/task/TID/schedstat`). Threads that ended are not
/// counted (the daemon's walks of its table run on threads that end: see
/// [`process_stat_ns`]).
pub fn process_cpu_ns(pid: i32) -> anyhow::Result<u64> {
    let tasks = format!("/proc/{pid}/task");
    let mut total = 0;
    for task in std::fs::read_dir(&tasks).with_context(|| format!("reading {tasks}"))? {
        let path = task?.path().join("schedstat");
        // A thread may end between the listing and the read.
        if let Ok(ns) = schedstat_ns(&path) {
            total += ns;
        }
    }
    Ok(total)
}

/// Nanoseconds on CPU of the threads of `pid` named `name` (their `comm`),
/// e.g. the daemon's `scheduler` threads.
pub fn named_threads_cpu_ns(pid: i32, name: &str) -> anyhow::Result<u64> {
    let tasks = format!("/proc/{pid}/task");
    let mut total = 0;
    for task in std::fs::read_dir(&tasks).with_context(|| format!("reading {tasks}"))? {
        let task = task?.path();
        // `scheduler`, or `scheduler 1`, `scheduler 2`, … (issue 27).
        let named = std::fs::read_to_string(task.join("comm")).is_ok_and(|comm| {
            let comm = comm.trim();
            comm == name
                || comm
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' '))
        });
        if named && let Ok(ns) = schedstat_ns(&task.join("schedstat")) {
            total += ns;
        }
    }
    Ok(total)
}

/// Nanoseconds on CPU of one thread of this process.
pub fn thread_cpu_ns(tid: i32) -> anyhow::Result<u64> {
    schedstat_ns(Path::new(&format!("/proc/self/task/{tid}/schedstat")))
}

fn schedstat_ns(path: &Path) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(path)?;
    match text.split_whitespace().next().map(str::parse::<u64>) {
        Some(Ok(ns)) => Ok(ns),
        _ => bail!("unexpected {}: {text:?}", path.display()),
    }
}

/// utime + stime of `pid` in nanoseconds (clock-tick resolution), from /proc/PID/stat.
pub fn process_stat_ns(pid: i32) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at "state".
    let rest = text.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    let (Some(utime), Some(stime)) = (fields.get(11), fields.get(12)) else {
        bail!("unexpected /proc/{pid}/stat");
    };
    let ticks: u64 = utime.parse::<u64>()? + stime.parse::<u64>()?;
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = u64::try_from(per_second).unwrap_or(100).max(1);
    Ok(ticks * 1_000_000_000 / per_second)
}

/// The kernel's id of the calling thread.
pub fn current_tid() -> i32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::gettid() }
}
