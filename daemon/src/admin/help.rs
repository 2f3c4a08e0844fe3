//! `help()` in the console: the API, one example a call, and the two rules
//! that make the talk's lines work as typed (atoms, binding).
//!
//! Text only; docs/admin-protocol.md is the full reference and must say the same.

/// What `help()` returns; the console prints it as it is, not as a string.
#[derive(Clone, Copy, Debug)]
pub struct Help;

pub const TEXT: &str = "\
The console speaks Rhai (https://rhai.rs), with the talk's IEx habits:
  :name          an atom, read as the string \"name\" (not inside strings, comments or maps' `key:`)
  name = expr    at the top level of a line, binds a new variable (as `let name = expr`)

Process.list()                          every live pid
Process.list(#{sort: :memory, limit: 20, name: \"sum\"})   a page of processes (sort :reductions :cpu :memory :age :name :pid; order, offset, status)
Process.info(pid)                       #{pid, name, initial_call, status, reductions, ...} or ()
Process.info(pid, :current_stacktrace)  one key's value (inside a poll: its native frames first); also :reductions, :memory, :status, ...
Process.info(pid, :links)               its links (pids); also :parent, :monitors, :monitored_by, :message_queue_len
Process.kill(pid)                       kills it; true if it was alive
Process.kill(pid, :kill)                the same (Erlang's exit(pid, :kill)); Process.exit(pid, reason) too
Process.kill(pid, :normal)              does nothing; true if it is alive
Process.kill(pid, :oops)                ends it with reason oops (its monitors see `oops`)
Process.whereis(\"admin_server\")         the pid of a named process, or ()
Process.alive(pid)  Process.count()     bool, number of processes
Runtime.top()                           the ten busiest processes over 1 s (= Runtime.top(:reductions))
Runtime.top(:memory)                    the ten biggest holders of memory now
Runtime.tree()                          the supervision tree, uniform branches folded
Runtime.trace(pid)                      its calls for 1 s (at most 50)
Runtime.trace(:sum, #{calls: 30, per_second: 100, ms: 5000})   every sum's calls until a limit: #{events, ended}
Runtime.traces()                        how many traces run now
Runtime.profile(pid)  Runtime.profile(pid, 500)   where it spends its time (native samples, ~1 kHz, 1 s)
Runtime.profile(pid, #{folded: true})   the same as folded stacks (for flame-graph tools)
Runtime.long_schedules()                the last polls that held a scheduler too long, with their stacks
System.info()                           node, version, uptime, schedulers, plugin, memory by process name
System.schedulers_online()  System.schedulers_online(2)   schedulers online; set it (1..=--max-schedulers), answers the count before
Load.get()  Load.set(1000)  Load.set(1000, 5)   the synthetic load (jobs, failure rate %)
Load.priority(:normal)                  the workers' priority (:low, the default, or :normal)
Code.versions()  Code.purge()           loaded plugin versions; kill what runs old code
pid(\"0.123.0\")  hd(list)                a pid from text; a list's first item
Short forms: info(pid), trace(pid), kill(pid), top(), whereis(name)

Example (the talk's Part 3):
  pid = hd(Runtime.top()).pid
  Process.info(pid, :current_stacktrace)
  Process.kill(pid, :kill)
Ctrl-C interrupts a running line, Ctrl-D leaves.";
