//! The console's `Process.list(opts)` (one page of processes, sorted and
//! filtered, as `/api/processes` serves it: the same query rules and the
//! runtime's same selection) and `Runtime.tree()` (the supervision tree,
//! drawn by `tree`).
//!
//! It only translates Rhai values to the runtime's queries and back; the
//! registry is walked by the runtime off the schedulers, never here.

use rhai::{Array, Dynamic, Engine, EvalAltResult, Map};

use super::api::{Api, ProcessModule, RuntimeModule};
use super::tree::{self, TreeText};
use system_runtime::processes::Row;

type Fallible<T> = Result<T, Box<EvalAltResult>>;

/// Registers `Process.list(opts)` and `Runtime.tree()` on `engine`.
pub fn register(api: &Api, engine: &mut Engine) {
    let for_list = api.clone();
    engine.register_fn("list", move |_: ProcessModule, opts: Map| {
        list(&for_list, &opts)
    });
    let for_tree = api.clone();
    engine
        .register_type_with_name::<TreeText>("Tree")
        .register_fn("to_string", |tree: &mut TreeText| tree.0.clone())
        .register_fn("tree", move |_: RuntimeModule| draw_tree(&for_tree));
}

/// `Process.list(#{sort: :reductions, order: :desc, limit: 20, offset: 0,
/// name: "sum", status: :waiting})`: the rows of that page.
fn list(api: &Api, opts: &Map) -> Fallible<Array> {
    let params: Vec<(String, String)> = opts
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
    let query =
        crate::http::processes::parse(&params).map_err(|error| format!("Process.list: {error}"))?;
    let node = api.node.clone();
    let page = api.wait(async move { node.pages.page(query).await })?;
    Ok(page.rows.into_iter().map(row).collect())
}

fn row(row: Row) -> Dynamic {
    let int = |n: u64| Dynamic::from_int(i64::try_from(n).unwrap_or(i64::MAX));
    let mut map = Map::new();
    map.insert("pid".into(), Dynamic::from(row.pid));
    map.insert("name".into(), row.name.into());
    map.insert("status".into(), row.status.as_str().into());
    map.insert("priority".into(), row.priority.as_str().into());
    map.insert("reductions".into(), int(row.reductions));
    map.insert("cpu_us".into(), int(row.cpu_us));
    map.insert("memory".into(), int(row.memory));
    map.insert("age_ms".into(), int(row.age_ms));
    map.insert("current_function".into(), row.current_function.into());
    Dynamic::from(map)
}

fn draw_tree(api: &Api) -> Fallible<TreeText> {
    let registry = api.node.registry.clone();
    let roots = api.wait(async move { system_runtime::tree::tree(&registry).await })?;
    Ok(tree::draw(&roots))
}
