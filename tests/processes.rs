//! End to end, against the real daemon running 10,000 load workers: the
//! process table (`GET /api/processes`: each sort key in both orders, the
//! name and status filters, every page walked once, bad parameters
//! refused), the console's `Process.list(opts)` and `Runtime.tree()`, and
//! the tree as JSON (`GET /api/tree`).
//!
//! Waits read the daemon's own answers until a condition holds; nothing
//! sleeps for a guessed time. Speed at a million processes is the
//! benchmark's (`scenario --phases processes`), not asserted here.

use std::collections::HashSet;
use std::time::Duration;

use crate::support::{self, Daemon, eventually};
use serde_json::Value;

const WORKERS: u64 = 10_000;

/// A daemon with `WORKERS` load workers running (all started).
fn daemon_with_load() -> Daemon {
    let daemon = Daemon::start();
    let (status, body) = daemon.post("/api/load", &format!("{{\"jobs\":{WORKERS}}}"));
    assert_eq!(status, 200, "{body}");
    eventually(Duration::from_secs(60), "10,000 load workers", || {
        page(&daemon, "name=load_worker&limit=1")["total"] == WORKERS
    });
    daemon
}

/// `GET /api/processes?QUERY`, which must succeed.
fn page(daemon: &Daemon, query: &str) -> Value {
    let (status, body) = daemon.get(&format!("/api/processes?{query}"));
    assert_eq!(status, 200, "{query}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{query}: {e}: {body}"))
}

fn rows(page: &Value) -> &Vec<Value> {
    page["processes"].as_array().expect("a list of processes")
}

fn pid_number(row: &Value) -> u64 {
    let pid = row["pid"].as_str().expect("a pid");
    pid.trim_start_matches("#PID<0.")
        .trim_end_matches(".0>")
        .parse()
        .unwrap_or_else(|_| panic!("a pid: {pid}"))
}

#[test]
fn the_process_table_sorts_filters_and_pages_ten_thousand_workers() {
    let daemon = daemon_with_load();

    // Every row has every field.
    let first = page(&daemon, "");
    assert_eq!(rows(&first).len(), 20, "20 rows by default");
    for field in [
        "pid",
        "name",
        "status",
        "priority",
        "reductions",
        "cpu",
        "memory",
        "age_ms",
        "current_function",
    ] {
        assert!(
            !rows(&first)[0][field].is_null(),
            "{field} in {}",
            rows(&first)[0]
        );
    }
    assert!(first["total"].as_u64().expect("a total") > WORKERS);

    // Each key, both orders: the rows come in that order.
    for key in ["reductions", "cpu", "memory"] {
        for order in ["desc", "asc"] {
            let page = page(&daemon, &format!("sort={key}&order={order}&limit=50"));
            let field = if key == "cpu" { "cpu" } else { key };
            let values: Vec<u64> = rows(&page)
                .iter()
                .map(|row| row[field].as_u64().expect("a number"))
                .collect();
            assert_eq!(values.len(), 50);
            let sorted = values.windows(2).all(|w| match order {
                "desc" => w[0] >= w[1],
                _ => w[0] <= w[1],
            });
            assert!(sorted, "by {key} {order}: {values:?}");
        }
    }
    // The busiest by reductions are busier than the quietest.
    let busiest = page(&daemon, "sort=reductions&order=desc&limit=1");
    let quietest = page(&daemon, "sort=reductions&order=asc&limit=1");
    assert!(
        rows(&busiest)[0]["reductions"].as_u64() > rows(&quietest)[0]["reductions"].as_u64(),
        "{busiest} vs {quietest}"
    );
    for order in ["desc", "asc"] {
        let by_age = page(&daemon, &format!("sort=age&order={order}&limit=100"));
        let pids: Vec<u64> = rows(&by_age).iter().map(pid_number).collect();
        // The oldest first (desc) is the lowest pid first.
        let sorted = pids.windows(2).all(|w| match order {
            "desc" => w[0] < w[1],
            _ => w[0] > w[1],
        });
        assert!(sorted, "by age {order}: {pids:?}");
        let by_name = page(&daemon, &format!("sort=name&order={order}&limit=1000"));
        let names: Vec<&str> = rows(&by_name)
            .iter()
            .map(|row| row["name"].as_str().expect("a name"))
            .collect();
        let sorted = names.windows(2).all(|w| match order {
            "desc" => w[0] >= w[1],
            _ => w[0] <= w[1],
        });
        assert!(sorted, "by name {order}: {names:?}");
    }
    // By name ascending, the system processes come before the workers.
    let by_name = page(&daemon, "sort=name&order=asc&limit=3");
    assert_eq!(rows(&by_name)[0]["name"], "admin_server", "{by_name}");

    // Filters: by name (a part of it, any case) and by status.
    let supervisors = page(&daemon, "name=SUPERVISOR&sort=pid&order=asc");
    let names: Vec<&str> = rows(&supervisors)
        .iter()
        .map(|row| row["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(names, ["supervisor", "load_supervisor"], "{supervisors}");
    assert_eq!(supervisors["total"], 2);
    let waiting = page(&daemon, "status=waiting&name=worker&limit=1000");
    assert!(
        waiting["total"].as_u64() > Some(WORKERS / 2),
        "{}",
        waiting["total"]
    );
    assert!(
        rows(&waiting)
            .iter()
            .all(|row| row["status"] == "waiting" && row["name"] == "load_worker"),
        "{waiting}"
    );
    let none = page(&daemon, "name=no_such_process");
    assert_eq!((none["total"].as_u64(), rows(&none).len()), (Some(0), 0));

    // Paging: every worker exactly once across the pages (the last one
    // partial), the total right on every page.
    let mut seen = HashSet::new();
    let mut offset = 0;
    let limit = 700;
    loop {
        let page = page(
            &daemon,
            &format!("name=load_worker&sort=age&order=desc&limit={limit}&offset={offset}"),
        );
        assert_eq!(page["total"], WORKERS, "at offset {offset}");
        let rows = rows(&page);
        for row in rows {
            assert!(seen.insert(pid_number(row)), "{} twice", row["pid"]);
        }
        if rows.len() < limit {
            assert_eq!(rows.len() as u64, WORKERS % limit as u64, "the last page");
            break;
        }
        offset += limit;
    }
    assert_eq!(seen.len() as u64, WORKERS, "every worker once");
    let beyond = page(&daemon, &format!("name=load_worker&offset={WORKERS}"));
    assert_eq!(
        (beyond["total"].as_u64(), rows(&beyond).len()),
        (Some(WORKERS), 0)
    );

    // Bad parameters: 400, saying what is wrong.
    for (query, says) in [
        ("sort=size", "cannot sort by \\\"size\\\""),
        ("order=up", "asc or desc"),
        ("limit=0", "the limit is 1 to 1000"),
        ("limit=1001", "the limit is 1 to 1000"),
        ("limit=ten", "the limit is 1 to 1000"),
        ("offset=-5", "the offset is a whole number"),
        ("status=sleeping", "not a status"),
        ("colour=blue", "unknown parameter"),
        ("limit=5&limit=6", "twice"),
    ] {
        let (status, body) = daemon.get(&format!("/api/processes?{query}"));
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(says), "{query}: {body}");
        assert!(body.starts_with("{\"error\":"), "{query}: {body}");
    }
}

#[test]
fn the_console_lists_a_page_and_draws_the_folded_tree() {
    let daemon = daemon_with_load();

    // `Process.list(opts)`: the same page as the API's.
    let listed = daemon.rpc("Process.list(#{sort: :reductions, limit: 20, name: \"worker\"})");
    let listed = listed.as_array().expect("a list of rows");
    assert_eq!(listed.len(), 20, "{listed:?}");
    assert!(
        listed.iter().all(|row| row["name"] == "load_worker"),
        "{listed:?}"
    );
    let reductions: Vec<i64> = listed
        .iter()
        .map(|row| row["reductions"].as_i64().expect("reductions"))
        .collect();
    assert!(
        reductions.windows(2).all(|w| w[0] >= w[1]),
        "{reductions:?}"
    );
    let oldest = daemon.rpc("Process.list(#{sort: :age, order: :desc, limit: 1})");
    assert_eq!(
        oldest[0]["name"], "supervisor",
        "the root supervisor is the oldest: {oldest}"
    );
    // Plain `Process.list()` is every pid, as before.
    let all = daemon.rpc("Process.list().len()");
    assert!(all.as_i64() > Some(WORKERS as i64), "{all}");
    let refused = daemon.system(&["rpc", "Process.list(#{limit: 5000})"]);
    assert!(!refused.status.success());
    assert!(
        support::text(&refused).contains("the limit is 1 to 1000"),
        "{}",
        support::text(&refused)
    );

    // `Runtime.tree()`: the root supervisor with its policy, its children
    // with their restart types, the load supervisor's 10,000 workers
    // folded into one line; the connection-less rest under "unsupervised".
    let output = daemon.system(&["rpc", "Runtime.tree()"]);
    assert!(output.status.success(), "{}", support::text(&output));
    let tree = String::from_utf8_lossy(&output.stdout).into_owned();
    let lines: Vec<&str> = tree.lines().collect();
    assert!(lines.len() <= 200, "{} lines:\n{tree}", lines.len());
    assert!(
        lines[0].contains(" supervisor  one_for_one, at most 10 restarts in 10s"),
        "{tree}"
    );
    for child in [
        "http_listener  permanent",
        "admin_server  permanent",
        "metrics_sampler  permanent",
        "load_supervisor  permanent  one_for_one, no restart limit",
    ] {
        assert!(tree.contains(child), "no {child:?} in\n{tree}");
    }
    let fold = lines
        .iter()
        .find(|line| line.contains("load_worker × 10,000"))
        .unwrap_or_else(|| panic!("no fold line in\n{tree}"));
    assert!(fold.contains("transient"), "{fold}");
    assert!(
        fold.starts_with("│  └─ ") || fold.starts_with("   └─ "),
        "under the load supervisor: {fold}"
    );
    assert!(tree.contains("unsupervised ("), "{tree}");
}

#[test]
fn the_tree_as_json_has_each_supervisor_its_children_and_the_fold() {
    let daemon = daemon_with_load();
    let (status, body) = daemon.get("/api/tree");
    assert_eq!(status, 200, "{body}");
    let tree: Value = serde_json::from_str(&body).expect("JSON");
    let roots = tree["roots"].as_array().expect("roots");
    let root = &roots[0];
    assert_eq!(root["name"], "supervisor");
    assert_eq!(root["kind"], "supervisor");
    assert_eq!(root["strategy"], "one_for_one");
    assert!(
        root.get("restart").is_none(),
        "a root has no restart type: {root}"
    );
    assert!(root.get("count").is_none(), "{root}");
    assert!(
        root["pid"]
            .as_str()
            .is_some_and(|pid| pid.starts_with("#PID<0."))
    );
    let children = root["children"].as_array().expect("children");
    let load = children
        .iter()
        .find(|child| child["name"] == "load_supervisor")
        .expect("the load supervisor");
    assert_eq!(
        (&load["kind"], &load["restart"], &load["strategy"]),
        (
            &Value::from("supervisor"),
            &Value::from("permanent"),
            &Value::from("one_for_one")
        )
    );
    let workers = load["children"].as_array().expect("its children");
    assert_eq!(workers.len(), 1, "one folded node: {workers:?}");
    let fold = &workers[0];
    assert_eq!(fold["name"], "load_worker");
    assert_eq!(fold["kind"], "worker");
    assert_eq!(fold["restart"], "transient");
    assert_eq!(fold["count"], WORKERS);
    assert!(fold["pid"].as_str().is_some(), "{fold}");
    for child in children
        .iter()
        .filter(|child| child["name"] != "load_supervisor")
    {
        assert_eq!(
            (&child["kind"], &child["restart"]),
            (&Value::from("worker"), &Value::from("permanent")),
            "{child}"
        );
        assert!(
            child.get("count").is_none() && child.get("strategy").is_none(),
            "{child}"
        );
    }
    if let Some(group) = roots.get(1) {
        assert_eq!(
            (&group["name"], &group["kind"]),
            (&Value::from("unsupervised"), &Value::from("group"))
        );
        assert!(group["pid"].is_null());
    }
    assert!(body.len() < 16 * 1024, "folded: {} bytes", body.len());
}
