//! The process table's and the supervision tree's HTTP face:
//! `GET /api/processes?sort=&order=&limit=&offset=&name=&status=` (one page
//! of the live processes, chosen by the runtime's `processes`) and
//! `GET /api/tree` (the runtime's `tree`), both as JSON.
//!
//! It only parses the query and renders what the runtime chose; it never
//! walks the registry itself (the runtime does, off the schedulers).

use std::sync::Arc;

use serde_json::{Map, Value, json};
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use crate::node::Node;
use system_runtime::processes::{self, Order, Page, Query, QueryError, SortKey};
use system_runtime::tree::{self, Kind};

/// The routes above, for the HTTP listener to mount.
pub fn routes(node: Arc<Node>) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let with_node = warp::any().map(move || node.clone());
    let list = warp::path!("api" / "processes")
        .and(warp::get())
        .and(warp::query::<Vec<(String, String)>>())
        .and(with_node.clone())
        .and_then(
            |params: Vec<(String, String)>, node: Arc<Node>| async move {
                let reply = match parse(&params) {
                    Ok(query) => {
                        let page = node.pages.page(query).await;
                        warp::reply::with_status(
                            warp::reply::json(&page_json(&page)),
                            StatusCode::OK,
                        )
                    }
                    Err(error) => warp::reply::with_status(
                        warp::reply::json(&json!({ "error": error })),
                        StatusCode::BAD_REQUEST,
                    ),
                };
                Ok::<_, Rejection>(reply)
            },
        );
    let tree = warp::path!("api" / "tree")
        .and(warp::get())
        .and(with_node)
        .and_then(|node: Arc<Node>| async move {
            let roots = tree::tree(&node.registry).await;
            let roots: Vec<Value> = roots.iter().map(node_json).collect();
            Ok::<_, Rejection>(warp::reply::json(&json!({ "roots": roots })))
        });
    list.or(tree)
}

/// The query string as a [`Query`]: `sort` (reductions, cpu, memory, age,
/// name, pid; default reductions), `order` (asc, desc; default desc),
/// `limit` (1–1000; default 20), `offset` (default 0), `name`, `status`;
/// `token` is the guard's. Anything else, or a value twice, is refused.
pub fn parse(params: &[(String, String)]) -> Result<Query, String> {
    let mut query = Query {
        sort: SortKey::Reductions,
        order: Order::Descending,
        limit: 20,
        ..Query::default()
    };
    let mut seen: Vec<&str> = Vec::new();
    for (key, value) in params {
        if seen.contains(&key.as_str()) {
            return Err(format!("{key} is given twice"));
        }
        seen.push(key);
        let number = |error: fn(String) -> QueryError| {
            value
                .parse::<i128>()
                .map_err(|_| error(value.clone()).to_string())
        };
        match key.as_str() {
            "sort" => query.sort = value.parse().map_err(|e: QueryError| e.to_string())?,
            "order" => query.order = value.parse().map_err(|e: QueryError| e.to_string())?,
            "limit" => {
                query.limit =
                    Query::checked_limit(number(QueryError::Limit)?).map_err(|e| e.to_string())?;
            }
            "offset" => {
                query.offset = Query::checked_offset(number(QueryError::Offset)?)
                    .map_err(|e| e.to_string())?;
            }
            "name" => query.name = Some(value.clone()).filter(|name| !name.is_empty()),
            "status" if value.is_empty() => query.status = None,
            "status" => {
                query.status = Some(processes::parse_status(value).map_err(|e| e.to_string())?);
            }
            "token" => {}
            other => {
                return Err(format!(
                    "unknown parameter {other:?}: sort, order, limit, offset, name, status"
                ));
            }
        }
    }
    Ok(query)
}

/// A page as `{"total": T, "processes": [...]}`.
pub fn page_json(page: &Page) -> Value {
    let rows: Vec<Value> = page
        .rows
        .iter()
        .map(|row| {
            json!({
                "pid": row.pid.to_string(),
                "name": row.name,
                "status": row.status.as_str(),
                "priority": row.priority.as_str(),
                "reductions": row.reductions,
                "cpu": row.cpu_us,
                "memory": row.memory,
                "age_ms": row.age_ms,
                "current_function": row.current_function,
            })
        })
        .collect();
    json!({ "total": page.total, "processes": rows })
}

/// A node of the tree (docs/protocol.md): `pid`, `name`, `kind`,
/// `strategy` (and `intensity`) for a supervisor, `restart` unless a root,
/// `children`, and `count` on a folded node or a group.
fn node_json(node: &tree::Node) -> Value {
    let mut map = Map::new();
    map.insert(
        "pid".into(),
        node.pid.map_or(Value::Null, |pid| pid.to_string().into()),
    );
    map.insert("name".into(), node.name.clone().into());
    map.insert("kind".into(), node.kind.as_str().into());
    if let Some(policy) = node.policy {
        map.insert("strategy".into(), policy.strategy.as_str().into());
        map.insert(
            "intensity".into(),
            policy.intensity.map_or(Value::Null, |intensity| {
                json!({
                    "max_restarts": intensity.max_restarts,
                    "within_ms": intensity.within.as_millis() as u64,
                })
            }),
        );
    }
    if let Some(restart) = node.restart {
        map.insert("restart".into(), restart.as_str().into());
    }
    map.insert(
        "children".into(),
        node.children
            .iter()
            .map(node_json)
            .collect::<Vec<_>>()
            .into(),
    );
    if node.is_folded() || node.kind == Kind::Group {
        map.insert("count".into(), node.count.into());
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn bad_parameters_say_what_is_wrong() {
        let refused = |pairs: &[(&str, &str)]| parse(&params(pairs)).expect_err("refused");
        assert!(refused(&[("sort", "size")]).contains("cannot sort by \"size\""));
        assert!(refused(&[("limit", "0")]).contains("limit is 1 to 1000"));
        assert!(refused(&[("limit", "1001")]).contains("limit is 1 to 1000"));
        assert!(refused(&[("offset", "-1")]).contains("offset"));
        assert!(refused(&[("status", "asleep")]).contains("not a status"));
        assert!(refused(&[("order", "up")]).contains("asc or desc"));
        assert!(refused(&[("colour", "red")]).contains("unknown parameter"));
        assert!(refused(&[("limit", "5"), ("limit", "6")]).contains("twice"));
        let query = parse(&params(&[
            ("sort", "name"),
            ("order", "asc"),
            ("token", "x"),
        ]))
        .expect("accepted");
        assert_eq!(
            (query.sort, query.order, query.limit),
            (SortKey::Name, Order::Ascending, 20)
        );
    }
}
