//! One page of the live processes, sorted and filtered: what
//! `Process.list(opts)` and `/api/processes` show.
//!
//! A page of a million processes is chosen without sorting them all on a
//! scheduler: the sort keys are gathered on the blocking pool (one walk of
//! the table), the first `offset + limit` are picked by partial selection
//! (`select_nth_unstable_by`, linear time), and only those are sorted and
//! described. At most [`CONCURRENT_READS`] such reads run at once in the
//! whole node; others wait their turn.
//!
//! It knows nothing of how a page is shown (no JSON, no text): the host
//! renders the [`Page`].

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::Semaphore;

use crate::{Pid, Priority, ProcessRegistry, Status};

/// The most rows one page may hold.
pub const MAX_LIMIT: usize = 1000;

/// Reads of the whole table that may run at once, node-wide (each is one
/// blocking-pool thread walking the table and a few bytes per process).
pub const CONCURRENT_READS: usize = 2;

static READS: Semaphore = Semaphore::const_new(CONCURRENT_READS);

/// What a page is sorted by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    /// Reductions since the process started.
    Reductions,
    /// CPU time since it started.
    Cpu,
    /// Bytes it holds now.
    Memory,
    /// How long it has lived (pids are handed out in spawn order, so this
    /// is the pid's order, reversed).
    Age,
    /// Its name, then its pid.
    Name,
    /// Its pid.
    Pid,
}

impl SortKey {
    pub const ALL: [SortKey; 6] = [
        SortKey::Reductions,
        SortKey::Cpu,
        SortKey::Memory,
        SortKey::Age,
        SortKey::Name,
        SortKey::Pid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SortKey::Reductions => "reductions",
            SortKey::Cpu => "cpu",
            SortKey::Memory => "memory",
            SortKey::Age => "age",
            SortKey::Name => "name",
            SortKey::Pid => "pid",
        }
    }
}

impl std::str::FromStr for SortKey {
    type Err = QueryError;

    fn from_str(text: &str) -> Result<SortKey, QueryError> {
        SortKey::ALL
            .into_iter()
            .find(|key| key.as_str() == text)
            .ok_or_else(|| QueryError::Sort(text.to_owned()))
    }
}

/// Which end of the sort comes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    Ascending,
    Descending,
}

impl std::str::FromStr for Order {
    type Err = QueryError;

    fn from_str(text: &str) -> Result<Order, QueryError> {
        match text {
            "asc" => Ok(Order::Ascending),
            "desc" => Ok(Order::Descending),
            other => Err(QueryError::Order(other.to_owned())),
        }
    }
}

/// Why a query was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("cannot sort by {0:?}: by reductions, cpu, memory, age, name or pid")]
    Sort(String),
    #[error("the order is asc or desc, not {0:?}")]
    Order(String),
    #[error("the limit is 1 to {MAX_LIMIT}, not {0}")]
    Limit(String),
    #[error("the offset is a whole number from 0, not {0}")]
    Offset(String),
    #[error("not a status: {0:?} (runnable, running, waiting or exiting)")]
    Status(String),
}

/// Parses a status as `Process.info` says it.
pub fn parse_status(text: &str) -> Result<Status, QueryError> {
    [
        Status::Runnable,
        Status::Running,
        Status::Waiting,
        Status::Exiting,
    ]
    .into_iter()
    .find(|status| status.as_str() == text)
    .ok_or_else(|| QueryError::Status(text.to_owned()))
}

/// Which page of which processes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub sort: SortKey,
    pub order: Order,
    /// Rows skipped before the page.
    pub offset: usize,
    /// Rows on the page (1 to [`MAX_LIMIT`]).
    pub limit: usize,
    /// Only processes whose name contains this (ASCII case ignored).
    pub name: Option<String>,
    pub status: Option<Status>,
}

impl Default for Query {
    /// The first 100 processes by pid (what `Process.list()` shows).
    fn default() -> Query {
        Query {
            sort: SortKey::Pid,
            order: Order::Ascending,
            offset: 0,
            limit: 100,
            name: None,
            status: None,
        }
    }
}

impl Query {
    /// Checks a limit given by a client.
    pub fn checked_limit(limit: i128) -> Result<usize, QueryError> {
        usize::try_from(limit)
            .ok()
            .filter(|limit| (1..=MAX_LIMIT).contains(limit))
            .ok_or_else(|| QueryError::Limit(limit.to_string()))
    }

    /// Checks an offset given by a client.
    pub fn checked_offset(offset: i128) -> Result<usize, QueryError> {
        usize::try_from(offset).map_err(|_| QueryError::Offset(offset.to_string()))
    }
}

/// One process on a page.
#[derive(Clone, Debug)]
pub struct Row {
    pub pid: Pid,
    pub name: String,
    pub status: Status,
    pub priority: Priority,
    pub reductions: u64,
    /// CPU time since it started.
    pub cpu_us: u64,
    /// Bytes it holds now.
    pub memory: u64,
    /// Milliseconds since it was spawned.
    pub age_ms: u64,
    pub current_function: String,
}

/// One page and how many processes matched the filters.
#[derive(Clone, Debug, Default)]
pub struct Page {
    pub total: usize,
    pub rows: Vec<Row>,
}

/// The sort key gathered for one process.
#[derive(Clone, Debug)]
enum Key {
    Number(u64),
    Name(Cow<'static, str>),
}

/// What the walk keeps of one process: its key, its pid, and its status
/// when the walk read it (so a page filtered by status shows the status it
/// was chosen by).
type Gathered = (Key, u64, Option<Status>);

/// The page `query` asks for, read on the blocking pool (waiting first if
/// [`CONCURRENT_READS`] reads are running).
pub async fn page(registry: &Arc<ProcessRegistry>, query: Query) -> Page {
    // The semaphore is never closed, so acquiring cannot fail.
    let Ok(_permit) = READS.acquire().await else {
        return Page::default();
    };
    let registry = registry.clone();
    tokio::task::spawn_blocking(move || select(&registry, &query))
        .await
        .unwrap_or_default()
}

/// The page `query` asks for, on the calling thread: walks the whole
/// table, so never call it on a scheduler ([`page`] does not).
pub fn select(registry: &ProcessRegistry, query: &Query) -> Page {
    let needle = query.name.as_deref().filter(|needle| !needle.is_empty());
    let mut keyed: Vec<Gathered> = Vec::new();
    registry.for_each_entry(|entry| {
        if needle.is_some_and(|needle| !contains_ignoring_ascii_case(&entry.spec.name, needle)) {
            return;
        }
        let needs_activity = query.status.is_some()
            || matches!(
                query.sort,
                SortKey::Reductions | SortKey::Cpu | SortKey::Memory
            );
        let activity = needs_activity.then(|| entry.activity.read());
        if let (Some(status), Some(activity)) = (query.status, activity)
            && activity.status != status
        {
            return;
        }
        let key = match (query.sort, activity) {
            (SortKey::Reductions, Some(activity)) => Key::Number(activity.reductions),
            (SortKey::Cpu, Some(activity)) => Key::Number(activity.cpu_ns),
            (SortKey::Memory, Some(activity)) => Key::Number(activity.memory()),
            (SortKey::Name, _) => Key::Name(entry.spec.name.clone()),
            // Age and pid: the pid is the key (compared in `compare`).
            _ => Key::Number(0),
        };
        keyed.push((key, entry.pid.0, activity.map(|activity| activity.status)));
    });
    let total = keyed.len();
    let wanted = query.offset.saturating_add(query.limit).min(total);
    if query.offset >= total || query.limit == 0 {
        return Page {
            total,
            rows: Vec::new(),
        };
    }
    let compare = |a: &Gathered, b: &Gathered| compare(query, (&a.0, a.1), (&b.0, b.1));
    if wanted < total {
        keyed.select_nth_unstable_by(wanted - 1, compare);
        keyed.truncate(wanted);
    }
    keyed.sort_unstable_by(compare);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let rows = keyed
        .into_iter()
        .skip(query.offset)
        .filter_map(|(key, pid, status)| {
            // Gone since the walk: left out (the page is one row short).
            let info = registry.info(Pid(pid))?;
            let mut row = Row {
                pid: Pid(pid),
                name: info.name,
                status: status.unwrap_or(info.status),
                priority: info.priority,
                reductions: info.reductions,
                cpu_us: info.cpu_time_us,
                memory: info.memory,
                age_ms: now.saturating_sub(info.spawned_at_ms),
                current_function: info.current_function,
            };
            // The sorted column shows the value the page was chosen by
            // (the others are read now).
            if let Key::Number(value) = key {
                match query.sort {
                    SortKey::Reductions => row.reductions = value,
                    SortKey::Cpu => row.cpu_us = value / 1_000,
                    SortKey::Memory => row.memory = value,
                    _ => {}
                }
            }
            Some(row)
        })
        .collect();
    Page { total, rows }
}

/// The page's order: the key in the asked order, then the pid ascending
/// (so equal keys page stably). Age is the pid's order reversed (the
/// oldest has the lowest pid).
fn compare(query: &Query, a: (&Key, u64), b: (&Key, u64)) -> Ordering {
    let by_key = match (a.0, b.0) {
        (Key::Number(x), Key::Number(y)) => x.cmp(y),
        (Key::Name(x), Key::Name(y)) => x.cmp(y),
        // One query gathers one kind of key.
        _ => Ordering::Equal,
    };
    let by_key = match query.sort {
        SortKey::Age => b.1.cmp(&a.1),
        SortKey::Pid => a.1.cmp(&b.1),
        _ => by_key,
    };
    let by_key = match query.order {
        Order::Ascending => by_key,
        Order::Descending => by_key.reverse(),
    };
    by_key.then(a.1.cmp(&b.1))
}

fn contains_ignoring_ascii_case(haystack: &str, needle: &str) -> bool {
    let (haystack, needle) = (haystack.as_bytes(), needle.as_bytes());
    needle.is_empty()
        || needle.len() <= haystack.len()
            && haystack
                .windows(needle.len())
                .any(|window| window.eq_ignore_ascii_case(needle))
}

impl fmt::Display for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Order::Ascending => "asc",
            Order::Descending => "desc",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_ignoring_ascii_case() {
        assert!(contains_ignoring_ascii_case("load_worker", "WORK"));
        assert!(contains_ignoring_ascii_case("sum", ""));
        assert!(!contains_ignoring_ascii_case("sum", "sums"));
    }

    #[test]
    fn equal_keys_order_by_pid_in_both_orders() {
        let query = Query {
            sort: SortKey::Reductions,
            order: Order::Descending,
            ..Query::default()
        };
        let (five, nine) = (Key::Number(5), Key::Number(9));
        assert_eq!(compare(&query, (&five, 101), (&five, 102)), Ordering::Less);
        assert_eq!(compare(&query, (&nine, 103), (&five, 100)), Ordering::Less);
    }
}
