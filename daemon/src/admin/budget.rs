//! A console session's memory budget: what its scripts may hold, all
//! together. Rhai's own limits are per value (an array of at most 4,000,000
//! items, …); without this, sixteen variables of such arrays would hold a
//! gigabyte.
//!
//! Two measures. While a line runs, [`Line`] measures what the session's
//! thread has allocated and not freed since the line began (the allocator's
//! per-thread counters, `crate::node::memory`), which counts everything the line
//! holds: new variables, function-locals at every call level, temporaries.
//! Between lines (once, at the end of each), what the variables hold is estimated from their shapes
//! (16 bytes a value, plus the bytes of strings and the entries of maps),
//! since memory the thread hands to others (reply frames) or frees for
//! them (requests) would make the counters drift over a session's life.
//! Values cannot form cycles (the engine has no closures), so what a
//! session held is freed when its thread ends.
//!
//! It decides nothing about scripts beyond stopping a line and dropping
//! variables.

use std::cell::Cell;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

use rhai::{Dynamic, Scope};
use tikv_jemalloc_ctl::thread::{ThreadLocal, allocatedp, deallocatedp};

/// What one session's variables may hold, estimated.
pub const SESSION_BUDGET: usize = 128 * 1024 * 1024;

/// Bytes of a value slot (`Dynamic`).
const SLOT: usize = 16;
/// Bytes a map entry costs beyond its key and value (tree node share).
const MAP_ENTRY: usize = 32;
/// Bytes a boxed container or custom value costs beyond its slot.
const BOXED: usize = 24;

/// The estimated bytes `value` holds, itself included. Scalars (most
/// items of a big array) cost one cheap tag test.
pub fn value_size(value: &Dynamic) -> usize {
    if value.is_int() || value.is_float() || value.is_bool() || value.is_unit() {
        return SLOT;
    }
    if let Ok(array) = value.as_array_ref() {
        return SLOT + BOXED + array.iter().map(value_size).sum::<usize>();
    }
    if let Ok(map) = value.as_map_ref() {
        return SLOT
            + BOXED
            + map
                .iter()
                .map(|(key, item)| key.len() + MAP_ENTRY + value_size(item))
                .sum::<usize>();
    }
    if let Ok(text) = value.as_immutable_string_ref() {
        return SLOT + BOXED + text.len();
    }
    if let Ok(blob) = value.as_blob_ref() {
        return SLOT + BOXED + blob.len();
    }
    SLOT
}

/// The estimated bytes every variable of `scope` holds.
pub fn scope_size(scope: &Scope) -> usize {
    scope
        .iter_raw()
        .map(|(name, _, value)| name.len() + value_size(value))
        .sum()
}

/// How the message of a session over its budget starts.
pub const OVER_BUDGET: &str = "memory budget exceeded";

/// The message of a session over its budget.
pub fn over_budget(used: usize, budget: usize) -> String {
    format!(
        "{OVER_BUDGET}: this session would hold about {} MiB, \
         over its {} MiB budget",
        used.div_ceil(1024 * 1024),
        budget.div_ceil(1024 * 1024)
    )
}

thread_local! {
    /// This thread's allocator counters (allocated, freed), looked up once.
    static COUNTERS: Cell<Option<(ThreadLocal<u64>, ThreadLocal<u64>)>> = const { Cell::new(None) };
}

/// Bytes this thread holds from the allocator (allocated minus freed since
/// it started); `None` if the allocator cannot say.
pub fn thread_net() -> Option<i64> {
    COUNTERS.with(|counters| {
        let (allocated, freed) = match counters.get() {
            Some(pair) => pair,
            None => {
                let pair = (allocatedp::read().ok()?, deallocatedp::read().ok()?);
                counters.set(Some(pair));
                pair
            }
        };
        Some(allocated.get().wrapping_sub(freed.get()) as i64)
    })
}

/// The budget of the line running on a session's thread: what the thread
/// may newly hold while it runs.
#[derive(Default)]
pub struct Line {
    /// [`thread_net`] when the line began.
    start: AtomicI64,
    /// What the variables held (estimated) when the line began.
    held: AtomicI64,
    /// Bytes allocated here for others (output frames), not held by the line.
    handed_over: AtomicI64,
    budget: AtomicI64,
}

impl Line {
    /// Starts measuring a line on this thread; `held` is what the
    /// variables hold already.
    pub fn begin(&self, held: usize, budget: usize) {
        self.start.store(thread_net().unwrap_or(0), Relaxed);
        self.held.store(held as i64, Relaxed);
        self.handed_over.store(0, Relaxed);
        self.budget.store(budget as i64, Relaxed);
    }

    /// Runs `make` (which builds something another thread will free) and
    /// does not count what it allocated against the line.
    pub fn handing_over<T>(&self, make: impl FnOnce() -> T) -> T {
        let before = thread_net();
        let made = make();
        if let (Some(before), Some(after)) = (before, thread_net()) {
            self.handed_over.fetch_add(after - before, Relaxed);
        }
        made
    }

    /// `Err` with the message once the variables and what the line holds
    /// are over the budget. On the line's thread only.
    pub fn check(&self) -> Result<(), String> {
        let Some(now) = thread_net() else {
            return Ok(());
        };
        let used = self.held.load(Relaxed) + now
            - self.start.load(Relaxed)
            - self.handed_over.load(Relaxed);
        let budget = self.budget.load(Relaxed);
        if used > budget {
            Err(over_budget(used.max(0) as usize, budget as usize))
        } else {
            Ok(())
        }
    }
}

/// Brings `scope` back under the budget after a script ran: drops the
/// variables the script added (those past `before`), then the largest of
/// the others, until it fits. Returns what the variables hold now and, if
/// they did not fit, what they held and the names dropped.
pub fn enforce(
    scope: &mut Scope,
    before: usize,
    budget: usize,
) -> (usize, Option<(usize, Vec<String>)>) {
    let held = scope_size(scope);
    if held <= budget {
        return (held, None);
    }
    // `iter_raw` goes newest first.
    let mut dropped: Vec<String> = scope
        .iter_raw()
        .take(scope.len().saturating_sub(before))
        .map(|(name, ..)| name.to_owned())
        .collect();
    dropped.reverse();
    scope.rewind(before.min(scope.len()));
    let mut used = scope_size(scope);
    while used > budget {
        let largest = scope
            .iter_raw()
            .map(|(name, _, value)| (value_size(value), name.to_owned()))
            .max();
        let Some((_, name)) = largest else { break };
        let _ = scope.remove::<Dynamic>(&name);
        dropped.push(name);
        used = scope_size(scope);
    }
    (used, Some((held, dropped)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rhai::Array;

    fn ints(n: usize) -> Dynamic {
        Dynamic::from_array((0..n as i64).map(Dynamic::from_int).collect::<Array>())
    }

    #[test]
    fn sizes_follow_the_values_shape() {
        assert_eq!(value_size(&Dynamic::from_int(1)), SLOT);
        assert_eq!(value_size(&ints(1000)), SLOT + BOXED + 1000 * SLOT);
        assert_eq!(value_size(&Dynamic::from("abc")), SLOT + BOXED + 3);
        let nested = Dynamic::from_array(vec![ints(10), ints(10)]);
        assert_eq!(
            value_size(&nested),
            SLOT + BOXED + 2 * (SLOT + BOXED + 10 * SLOT)
        );
        let mut map = rhai::Map::new();
        map.insert("key".into(), ints(2));
        assert_eq!(
            value_size(&Dynamic::from_map(map)),
            SLOT + BOXED + 3 + MAP_ENTRY + SLOT + BOXED + 2 * SLOT
        );
    }

    #[test]
    fn enforcing_drops_the_new_variables_then_the_largest() {
        const BUDGET: usize = 30_000 * SLOT;
        let per_array = 10_000;
        let mut scope = Scope::new();
        scope.push_constant("Process", 1_i64);
        scope.push_dynamic("small", Dynamic::from_int(1));
        scope.push_dynamic("a", ints(per_array));
        scope.push_dynamic("b", ints(per_array));
        assert_eq!(enforce(&mut scope, 2, BUDGET).1, None, "under the budget");
        let before = scope.len();
        scope.push_dynamic("c", ints(per_array));
        scope.push_dynamic("d", ints(per_array));
        let (held, dropped) = enforce(&mut scope, before, BUDGET)
            .1
            .expect("over the budget");
        assert!(held > BUDGET);
        assert_eq!(dropped, ["c", "d"]);
        assert!(scope.contains("b") && scope.contains("small"));
        // Old variables that grew: the largest goes.
        scope.set_value("a", ints(per_array * 2));
        let before = scope.len();
        let dropped = enforce(&mut scope, before, BUDGET)
            .1
            .map(|(_, names)| names);
        assert_eq!(dropped, Some(vec!["a".to_owned()]));
        assert!(scope_size(&scope) <= BUDGET);
        assert!(scope.contains("b") && scope.contains("Process"));
    }

    #[test]
    fn a_line_counts_what_its_thread_allocates_but_not_what_it_hands_over() {
        let line = Line::default();
        line.begin(1000, 64 * 1024 * 1024);
        assert!(line.check().is_ok());
        let handed = line.handing_over(|| vec![0_u8; 48 * 1024 * 1024]);
        assert!(line.check().is_ok(), "handed over, not held");
        let held = vec![1_u8; 80 * 1024 * 1024];
        let refused = line.check().expect_err("over the budget");
        assert!(refused.contains("memory budget exceeded"), "{refused}");
        drop(held);
        drop(handed);
        assert!(line.check().is_ok(), "freed again");
    }
}
