//! How deep a console value may nest, so that nothing that walks a value
//! recursively (printing, `to_json`, `==`, Rhai's own clone, drop and size
//! checks) can overflow a session thread's stack and take the daemon down.
//!
//! Why depth stays bounded (docs/admin-protocol.md, "Sandbox"): the engine
//! is built without closures (`no_closure`: no shared values, so no
//! reference cycles) and without `curry`, so values nest only through
//! arrays and maps, and Rhai walks the whole of a value each time it puts it
//! into another (its size check), so each extra level costs a walk of the
//! value. At a variable read, the session walks every variable of the
//! scope read from, at a pace ([`Paced`]) that keeps the walks under half
//! of the time, and refuses one nested deeper than [`MAX_NESTING`];
//! between two walks a script can add only the few levels whose own walks
//! fit in that pause (708 at most, measured: docs/admin-protocol.md). What walks a value for
//! printing, `to_json` or `==` checks it first, unpaced.
//!
//! It only measures and refuses; it must not change a value, and no walk
//! here recurses deeper than the limit (a deep value must not overflow the
//! check itself).

use std::sync::Mutex;
use std::time::Instant;

use rhai::{Array, Dynamic, Engine, EvalAltResult, ImmutableString, Map, NativeCallContext};

/// The deepest nesting of arrays and maps a script may read, print,
/// compare or serialise.
pub const MAX_NESTING: usize = 128;

type Fallible<T> = Result<T, Box<EvalAltResult>>;

/// True if `value` nests arrays or maps more than `limit` levels deep
/// (`[[1]]` is 2 levels). It recurses at most `limit + 1` levels, whatever
/// the value's depth, and stops at the first item too deep.
pub fn deeper_than(value: &Dynamic, limit: usize) -> bool {
    let nested =
        |item: &Dynamic| (item.is_array() || item.is_map()) && deeper_than(item, limit - 1);
    if let Ok(array) = value.as_array_ref() {
        limit == 0 || array.iter().any(nested)
    } else if let Ok(map) = value.as_map_ref() {
        limit == 0 || map.values().any(nested)
    } else {
        false
    }
}

/// The message of a value nested too deep.
pub fn too_deep(what: &str) -> String {
    format!("{what} nests arrays or maps more than {MAX_NESTING} levels deep; refused")
}

/// `Err` with a clear message if `value` is nested deeper than [`MAX_NESTING`].
pub fn check(value: &Dynamic, what: &str) -> Result<(), String> {
    if deeper_than(value, MAX_NESTING) {
        Err(too_deep(what))
    } else {
        Ok(())
    }
}

/// [`check`] for the items of an array or map (itself one level).
pub fn check_items<'a>(
    items: impl IntoIterator<Item = &'a Dynamic>,
    what: &str,
) -> Result<(), String> {
    if items
        .into_iter()
        .any(|item| deeper_than(item, MAX_NESTING - 1))
    {
        Err(too_deep(what))
    } else {
        Ok(())
    }
}

/// Removes the variables of `scope` nested deeper than [`MAX_NESTING`] (a
/// line stopped by the check may leave one); returns their names.
pub fn drop_too_deep(scope: &mut rhai::Scope) -> Vec<String> {
    let deep: Vec<String> = scope
        .iter_raw()
        .filter(|(_, _, value)| deeper_than(value, MAX_NESTING))
        .map(|(name, ..)| name.to_owned())
        .collect();
    for name in &deep {
        let _ = scope.remove::<Dynamic>(name);
    }
    deep
}

/// Runs a check at a pace that keeps checks under half of the time: after
/// a check that took `t`, the next one waits `t`.
pub struct Paced {
    next: Mutex<Instant>,
}

impl Default for Paced {
    fn default() -> Self {
        Paced {
            next: Mutex::new(Instant::now()),
        }
    }
}

impl Paced {
    /// Runs `check` unless the last one's pause still runs (then `Ok`).
    pub fn run<E>(&self, check: impl FnOnce() -> Result<(), E>) -> Result<(), E> {
        let started = Instant::now();
        let mut next = crate::lock(&self.next);
        if started < *next {
            return Ok(());
        }
        let result = check();
        *next = Instant::now() + started.elapsed();
        result
    }
}

/// Puts the depth checks in front of everything in the engine that walks a
/// value recursively: `==`/`!=` on arrays and maps, `to_string`/`to_debug`
/// (and so `print`, `debug` and string interpolation), `to_json`; and
/// removes `curry` (a curried value would nest unchecked).
pub fn register(engine: &mut Engine) {
    engine.disable_symbol("curry");
    engine
        .register_fn("==", |ctx: NativeCallContext, a: &mut Array, b: Array| {
            arrays_equal(&ctx, a, b)
        })
        .register_fn("!=", |ctx: NativeCallContext, a: &mut Array, b: Array| {
            arrays_equal(&ctx, a, b).map(|equal| !equal)
        })
        .register_fn("==", |ctx: NativeCallContext, a: &mut Map, b: Map| {
            maps_equal(&ctx, a, b)
        })
        .register_fn("!=", |ctx: NativeCallContext, a: &mut Map, b: Map| {
            maps_equal(&ctx, a, b).map(|equal| !equal)
        })
        .register_fn("to_string", |a: &mut Array| {
            check_items(a.iter(), "the array")?;
            Ok::<_, Box<EvalAltResult>>(ImmutableString::from(format!("{a:?}")))
        })
        .register_fn("to_debug", |a: &mut Array| {
            check_items(a.iter(), "the array")?;
            Ok::<_, Box<EvalAltResult>>(ImmutableString::from(format!("{a:?}")))
        })
        .register_fn("to_string", |m: &mut Map| shown_map(m, false))
        .register_fn("to_debug", |m: &mut Map| shown_map(m, true))
        .register_fn("to_json", |m: &mut Map| -> Fallible<ImmutableString> {
            check_items(m.values(), "the map")?;
            Ok(rhai::format_map_as_json(m).into())
        });
}

/// Rhai's own text of a map, once its depth is known to be safe.
fn shown_map(map: &Map, debug: bool) -> Fallible<ImmutableString> {
    check_items(map.values(), "the map")?;
    let value = Dynamic::from_map(map.clone());
    Ok(if debug {
        format!("{value:?}")
    } else {
        format!("{value}")
    }
    .into())
}

/// Two items equal by the engine's own `==` (which is ours again for
/// arrays and maps); items of different types without one are unequal.
fn items_equal(ctx: &NativeCallContext, a: &mut Dynamic, b: &mut Dynamic) -> Fallible<bool> {
    match ctx.call_native_fn_raw("==", true, &mut [a, b]) {
        Ok(result) => Ok(result.as_bool().unwrap_or(false)),
        Err(error) => match *error {
            EvalAltResult::ErrorFunctionNotFound(..) if a.type_id() != b.type_id() => Ok(false),
            _ => Err(error),
        },
    }
}

fn arrays_equal(ctx: &NativeCallContext, a: &mut Array, mut b: Array) -> Fallible<bool> {
    for side in [&*a, &b] {
        check_items(side.iter(), "an array compared with `==`")?;
    }
    if a.len() != b.len() {
        return Ok(false);
    }
    for (x, y) in a.iter_mut().zip(b.iter_mut()) {
        if !items_equal(ctx, x, y)? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn maps_equal(ctx: &NativeCallContext, a: &mut Map, mut b: Map) -> Fallible<bool> {
    for side in [&*a, &b] {
        check_items(side.values(), "a map compared with `==`")?;
    }
    if a.len() != b.len() {
        return Ok(false);
    }
    for (key, x) in a.iter_mut() {
        let Some(y) = b.get_mut(key) else {
            return Ok(false);
        };
        if !items_equal(ctx, x, y)? {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> Dynamic {
        let mut value = Dynamic::from_int(1);
        for _ in 0..depth {
            value = Dynamic::from_array(vec![value]);
        }
        value
    }

    #[test]
    fn depth_counts_levels_of_arrays_and_maps() {
        assert!(!deeper_than(&Dynamic::from_int(1), 0));
        assert!(!deeper_than(&nested(3), 3));
        assert!(deeper_than(&nested(4), 3));
        let mut map = Map::new();
        map.insert("x".into(), nested(2));
        assert!(!deeper_than(&Dynamic::from_map(map.clone()), 3));
        assert!(deeper_than(&Dynamic::from_map(map), 2));
    }
}
