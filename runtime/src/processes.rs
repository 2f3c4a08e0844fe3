//! One page of the live processes, sorted and filtered: what
//! `Process.list(opts)` and `/api/processes` show.
//!
//! A page of a million processes is chosen without sorting them all on a
//! scheduler: a census of every process's sort keys is taken in the
//! background (`background`: one walk of the table, which holds each of the
//! registry's many small shards' read lock only briefly, so a spawn on a
//! scheduler never waits long for it) and serves every page for a few
//! times what it cost (see `Census`); from it the first `offset + limit`
//! are picked by partial selection (`select_nth_unstable_by`, linear
//! time), and only those are sorted and described. At most
//! [`CONCURRENT_READS`] such reads run at once in the whole node; others
//! wait their turn.
//!
//! It knows nothing of how a page is shown (no JSON, no text): the host
//! renders the [`Page`].

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Semaphore;

use crate::{Pid, Priority, ProcessRegistry, Status};

/// The most rows one page may hold.
pub const MAX_LIMIT: usize = 1000;

/// Reads of the whole table that may run at once, node-wide (each is one
/// blocking-pool thread walking the table and a few bytes per process).
pub const CONCURRENT_READS: usize = 2;

static READS: Semaphore = Semaphore::const_new(CONCURRENT_READS);

/// A turn among the [`CONCURRENT_READS`] whole-table reads (pages and trees).
pub(crate) async fn read_permit()
-> Result<tokio::sync::SemaphorePermit<'static>, tokio::sync::AcquireError> {
    READS.acquire().await
}

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

/// A page's candidate: its sort key (a number; for the name, the name's
/// rank) and its pid. 16 bytes, so a page of a million holds 16 MB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Gathered {
    key: u64,
    pid: u64,
}

/// What one walk of the table keeps of every process: enough to answer
/// any query (every sort key, every filter) without walking again. It
/// serves pages for a few times what the walk cost, at most [`MAX_AGE`]:
/// so reading pages non-stop spends at most a fifth of one blocking-pool
/// thread on walks, a table of a thousand processes is walked again after
/// a few microseconds (fresh for any reader), and a million's after most
/// of a second (one walk serves a screenful of pages, and the pages of
/// one screen agree with each other).
struct Census {
    /// When the walk started (its rows are at least this old).
    taken: Instant,
    /// How long the walk took.
    cost: Duration,
    counted: Vec<Counted>,
    /// Each name seen, by its number in `Counted::name`.
    names: Vec<Cow<'static, str>>,
}

/// A census serves pages while younger than this many times its cost...
const REUSE: u32 = 4;

/// ... and never once older than this.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// One process in a census: 40 bytes, so a million hold 40 MB.
#[derive(Clone, Copy, Debug)]
struct Counted {
    pid: u64,
    reductions: u64,
    cpu_ns: u64,
    memory: u64,
    name: u32,
    status: Status,
}

/// The names seen by one walk, each numbered in the order first seen
/// (a node has a few kinds of process, so this stays small).
#[derive(Default)]
struct Names {
    seen: HashMap<Cow<'static, str>, u32>,
    by_number: Vec<Cow<'static, str>>,
    /// The last name numbered: neighbours in the table are mostly of one
    /// kind, so this spares most lookups (compared by text: an address
    /// may be reused by another name once the first is freed).
    last: Option<(Cow<'static, str>, u32)>,
}

impl Names {
    // A `Cow`, not a `&str`: keeping a borrowed `'static` name copies no text.
    #[allow(clippy::ptr_arg)]
    fn number(&mut self, name: &Cow<'static, str>) -> u32 {
        if let Some((last, number)) = &self.last
            && last == name
        {
            return *number;
        }
        let next = self.by_number.len() as u32;
        let number = *self.seen.entry(name.clone()).or_insert_with(|| {
            self.by_number.push(name.clone());
            next
        });
        self.last = Some((name.clone(), number));
        number
    }
}

/// Each name's rank in alphabetical order, by its number.
fn ranks(names: &[Cow<'static, str>]) -> Vec<u64> {
    let mut order: Vec<usize> = (0..names.len()).collect();
    order.sort_unstable_by(|&a, &b| names[a].cmp(&names[b]));
    let mut ranks = vec![0; names.len()];
    for (rank, number) in order.into_iter().enumerate() {
        ranks[number] = rank as u64;
    }
    ranks
}

/// The pages of one registry's processes, and the census they are cut
/// from while it serves (one per reader of pages: the host keeps one for
/// its console and its web pages alike).
pub struct ProcessPages {
    registry: Arc<ProcessRegistry>,
    /// The last census, while it serves; one walk at a time (readers that
    /// come meanwhile wait for it).
    census: Arc<tokio::sync::Mutex<Option<Arc<Census>>>>,
}

impl ProcessPages {
    pub fn new(registry: Arc<ProcessRegistry>) -> ProcessPages {
        ProcessPages {
            registry,
            census: Arc::default(),
        }
    }

    /// The page `query` asks for, read in the background (never on a
    /// scheduler: `background`), from the census if it still serves, else from a new
    /// one; waits first if [`CONCURRENT_READS`] reads are running.
    pub async fn page(&self, query: Query) -> Page {
        let census = self.census().await;
        // The semaphore is never closed, so acquiring cannot fail.
        let Ok(_permit) = read_permit().await else {
            return Page::default();
        };
        let registry = self.registry.clone();
        crate::background::run("page", move || census.page(&registry, &query))
            .await
            .unwrap_or_default()
    }

    /// The census if it still serves, else a new one.
    async fn census(&self) -> Arc<Census> {
        let mut kept = self.census.lock().await;
        if let Some(census) = kept.as_ref().filter(|census| census.serves()) {
            return census.clone();
        }
        // The old one's memory goes before the new one's is taken.
        *kept = None;
        let census = {
            let Ok(_permit) = read_permit().await else {
                return Arc::new(Census::default());
            };
            let walked = self.registry.clone();
            crate::background::run("census", move || Census::take(&walked))
                .await
                .unwrap_or_default()
        };
        let census = Arc::new(census);
        *kept = Some(census.clone());
        drop(kept);
        self.forget_later(&census);
        census
    }

    /// Lets go of `census` once it no longer serves, so an idle node does
    /// not keep a million rows nobody reads.
    fn forget_later(&self, census: &Arc<Census>) {
        let (kept, census, after) = (
            Arc::downgrade(&self.census),
            Arc::downgrade(census),
            census.serves_for(),
        );
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let Some(kept) = kept.upgrade() else {
                return;
            };
            let mut kept = kept.lock().await;
            if kept
                .as_ref()
                .is_some_and(|kept| std::ptr::eq(Arc::as_ptr(kept), census.as_ptr()))
            {
                *kept = None;
            }
        });
    }
}

impl Default for Census {
    fn default() -> Census {
        Census {
            taken: Instant::now(),
            cost: Duration::ZERO,
            counted: Vec::new(),
            names: Vec::new(),
        }
    }
}

impl Census {
    /// Walks the whole table: never call it on a scheduler.
    fn take(registry: &ProcessRegistry) -> Census {
        let taken = Instant::now();
        let mut names = Names::default();
        let mut counted: Vec<Counted> = Vec::with_capacity(registry.count() + 64);
        registry.for_each_batch(|batch| {
            // Each process's counters are two cache misses (its entry, then
            // its task): asked for a batch ahead, they overlap.
            for entry in batch {
                crate::prefetch::prefetch_line(std::ptr::from_ref(*entry).cast());
            }
            for entry in batch {
                entry.activity.prefetch();
            }
            for entry in batch {
                let activity = entry.activity.read();
                counted.push(Counted {
                    pid: entry.pid.0,
                    reductions: activity.reductions,
                    cpu_ns: activity.cpu_ns,
                    memory: activity.memory(),
                    name: names.number(&entry.spec.name),
                    status: activity.status,
                });
            }
        });
        Census {
            taken,
            cost: taken.elapsed(),
            counted,
            names: names.by_number,
        }
    }

    fn serves_for(&self) -> Duration {
        (self.cost * REUSE).min(MAX_AGE)
    }

    fn serves(&self) -> bool {
        self.taken.elapsed() < self.serves_for()
    }

    /// The page `query` asks for, as this census saw the table (the rows'
    /// other columns are read now; a process gone since is left out).
    fn page(&self, registry: &ProcessRegistry, query: &Query) -> Page {
        let needle = query.name.as_deref().filter(|needle| !needle.is_empty());
        let named: Vec<bool> = self
            .names
            .iter()
            .map(|name| needle.is_none_or(|needle| contains_ignoring_ascii_case(name, needle)))
            .collect();
        let ranks = if query.sort == SortKey::Name {
            ranks(&self.names)
        } else {
            Vec::new()
        };
        let mut keyed: Vec<Gathered> = self
            .counted
            .iter()
            .filter(|counted| {
                named[counted.name as usize]
                    && query.status.is_none_or(|status| status == counted.status)
            })
            .map(|counted| Gathered {
                key: match query.sort {
                    SortKey::Reductions => counted.reductions,
                    SortKey::Cpu => counted.cpu_ns,
                    SortKey::Memory => counted.memory,
                    SortKey::Name => ranks[counted.name as usize],
                    // Age and pid: the pid is the key (see `compare`).
                    SortKey::Age | SortKey::Pid => 0,
                },
                pid: counted.pid,
            })
            .collect();
        let total = keyed.len();
        if query.offset >= total || query.limit == 0 {
            return Page {
                total,
                rows: Vec::new(),
            };
        }
        let wanted = query.offset.saturating_add(query.limit).min(total);
        let compare = |a: &Gathered, b: &Gathered| compare(query, *a, *b);
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
            .filter_map(|Gathered { key, pid }| {
                // Gone since the walk: left out (the page is one row short).
                let info = registry.info(Pid(pid))?;
                let mut row = Row {
                    pid: Pid(pid),
                    name: info.name,
                    // Filtered by status: the status it was chosen by.
                    status: query.status.unwrap_or(info.status),
                    priority: info.priority,
                    reductions: info.reductions,
                    cpu_us: info.cpu_time_us,
                    memory: info.memory,
                    age_ms: now.saturating_sub(info.spawned_at_ms),
                    current_function: info.current_function,
                };
                // The sorted column shows the value the page was chosen by
                // (the others are read now).
                match query.sort {
                    SortKey::Reductions => row.reductions = key,
                    SortKey::Cpu => row.cpu_us = key / 1_000,
                    SortKey::Memory => row.memory = key,
                    _ => {}
                }
                Some(row)
            })
            .collect();
        Page { total, rows }
    }
}

/// The page's order: the key in the asked order, then the pid ascending
/// (so equal keys page stably). Age is the pid's order reversed (the
/// oldest has the lowest pid).
fn compare(query: &Query, a: Gathered, b: Gathered) -> Ordering {
    let by_key = match query.sort {
        SortKey::Age => b.pid.cmp(&a.pid),
        SortKey::Pid => a.pid.cmp(&b.pid),
        _ => a.key.cmp(&b.key),
    };
    let by_key = match query.order {
        Order::Ascending => by_key,
        Order::Descending => by_key.reverse(),
    };
    by_key.then(a.pid.cmp(&b.pid))
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
        let at = |key, pid| Gathered { key, pid };
        assert_eq!(compare(&query, at(5, 101), at(5, 102)), Ordering::Less);
        assert_eq!(compare(&query, at(9, 103), at(5, 100)), Ordering::Less);
    }

    #[test]
    fn names_rank_alphabetically_whatever_order_they_come_in() {
        let mut names = Names::default();
        let numbers: Vec<u32> = ["sum", "load_worker", "load_worker", "admin_server", "sum"]
            .into_iter()
            .map(|name| names.number(&Cow::Borrowed(name)))
            .collect();
        assert_eq!(numbers, [0, 1, 1, 2, 0]);
        assert_eq!(ranks(&names.by_number), [2, 1, 0]);
    }

    #[test]
    fn a_census_serves_for_a_few_times_its_cost_and_at_most_max_age() {
        let costing = |cost| Census {
            cost,
            ..Census::default()
        };
        assert_eq!(
            costing(Duration::from_millis(100)).serves_for(),
            Duration::from_millis(100) * REUSE
        );
        assert_eq!(costing(Duration::from_secs(2)).serves_for(), MAX_AGE);
        assert!(!costing(Duration::ZERO).serves());
    }

    #[test]
    fn a_name_at_the_last_ones_address_is_still_compared_by_text() {
        let mut names = Names::default();
        let first = Cow::Owned("sum".to_owned());
        assert_eq!(names.number(&first), 0);
        // Another text of the same length: whatever its address, a new name.
        assert_eq!(names.number(&Cow::Owned("top".to_owned())), 1);
        assert_eq!(names.number(&first), 0);
    }
}
