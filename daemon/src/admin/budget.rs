//! A console session's memory budget: what its variables may hold, all
//! together. Rhai's own limits are per value (an array of at most 4,000,000
//! items, …); without this, sixteen variables of such arrays would hold a
//! gigabyte.
//!
//! Sizes are estimates from the values' shapes (16 bytes a value, plus the
//! bytes of strings and the entries of maps), not measured allocations. It
//! decides nothing about scripts beyond refusing and dropping variables.

use std::sync::Mutex;
use std::time::Instant;

use rhai::{Dynamic, Scope};

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
    if value.is_shared() {
        return SLOT + value_size(&value.flatten_clone());
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
        "{OVER_BUDGET}: this session's variables would hold about {} MiB, \
         over its {} MiB budget",
        used.div_ceil(1024 * 1024),
        budget.div_ceil(1024 * 1024)
    )
}

/// Checks the budget while a script runs, at each new variable, at a pace
/// that keeps the checks under half of the time: a check walks every
/// variable, and a loop may declare one per iteration. A check skipped
/// lets the variables grow by at most about what the last check walked.
pub struct RunningCheck {
    budget: usize,
    next: Mutex<Instant>,
}

impl RunningCheck {
    pub fn new(budget: usize) -> RunningCheck {
        RunningCheck {
            budget,
            next: Mutex::new(Instant::now()),
        }
    }

    /// `Err` with the message if `scope` is over the budget; skipped (`Ok`)
    /// while the last check's pause runs.
    pub fn check(&self, scope: &Scope) -> Result<(), String> {
        let started = Instant::now();
        let mut next = crate::lock(&self.next);
        if started < *next {
            return Ok(());
        }
        let used = scope_size(scope);
        let took = started.elapsed();
        *next = Instant::now() + took;
        if used > self.budget {
            Err(over_budget(used, self.budget))
        } else {
            Ok(())
        }
    }
}

/// Brings `scope` back under the budget after a script ran: drops the
/// variables the script added (those past `before`), then the largest of
/// the others, until it fits. Returns what the variables held and the
/// names dropped; none if it fitted.
pub fn enforce(scope: &mut Scope, before: usize, budget: usize) -> Option<(usize, Vec<String>)> {
    let held = scope_size(scope);
    if held <= budget {
        return None;
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
    Some((held, dropped))
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
        assert_eq!(enforce(&mut scope, 2, BUDGET), None, "under the budget");
        let before = scope.len();
        scope.push_dynamic("c", ints(per_array));
        scope.push_dynamic("d", ints(per_array));
        let (held, dropped) = enforce(&mut scope, before, BUDGET).expect("over the budget");
        assert!(held > BUDGET);
        assert_eq!(dropped, ["c", "d"]);
        assert!(scope.contains("b") && scope.contains("small"));
        // Old variables that grew: the largest goes.
        scope.set_value("a", ints(per_array * 2));
        let before = scope.len();
        let dropped = enforce(&mut scope, before, BUDGET).map(|(_, names)| names);
        assert_eq!(dropped, Some(vec!["a".to_owned()]));
        assert!(scope_size(&scope) <= BUDGET);
        assert!(scope.contains("b") && scope.contains("Process"));
    }

    #[test]
    fn the_running_check_refuses_over_the_budget() {
        let mut scope = Scope::new();
        let check = RunningCheck::new(1000 * SLOT);
        assert!(check.check(&scope).is_ok());
        scope.push_dynamic("a", ints(1000));
        *crate::lock(&check.next) = Instant::now();
        let refused = check.check(&scope).expect_err("over the budget");
        assert!(refused.contains("memory budget exceeded"), "{refused}");
    }
}
