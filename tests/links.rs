//! Issue 26, items 3 and 4, end to end against the real daemon: what
//! `Process.info` says of a process's relations (`parent`, `links`,
//! `monitors`, `monitored_by`, `message_queue_len`), that a link is a real
//! relation (a connection's sums end with it), and tracing with limits
//! (`Runtime.trace(target, opts)`: a name, calls, rate, the session's end,
//! two consoles at once; the WebSocket `trace` request).
//!
//! Real WebSocket clients and real console sessions on the admin socket;
//! no sleeps as synchronisation: each step waits for the frame it needs,
//! or (for states only seen by asking) asks again until a deadline.

use std::time::{Duration, Instant};

use crate::support::console::{Console, endless_sum, kill_taken};
use crate::support::{Client, Daemon, PATIENCE};
use serde_json::{Value, json};

fn pids(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|pids| {
            pids.iter()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_names_parent_links_and_monitors_and_a_killed_connection_ends_its_sums() {
    let daemon = Daemon::start();
    let mut client = Client::connect(&daemon).await;
    let first = endless_sum(&mut client, 1).await;
    let second = endless_sum(&mut client, 2).await;
    let mut console = Console::open(&daemon).await;

    let info = console
        .value(&format!("Process.info(pid(\"{first}\"))"))
        .await;
    let connection = info["parent"]
        .as_str()
        .expect("a sum has a parent")
        .to_owned();
    assert_eq!(pids(&info["links"]), vec![connection.clone()], "{info}");
    assert_eq!(
        pids(&info["monitored_by"]),
        vec![connection.clone()],
        "{info}"
    );
    assert_eq!(pids(&info["monitors"]), Vec::<String>::new(), "{info}");
    assert_eq!(info["message_queue_len"], 0, "{info}");

    let of_connection = console
        .value(&format!("Process.info(pid(\"{connection}\"))"))
        .await;
    assert_eq!(of_connection["name"], "ws_connection", "{of_connection}");
    let mut sums = vec![first.clone(), second.clone()];
    sums.sort();
    let mut links = pids(&of_connection["links"]);
    links.sort();
    assert_eq!(links, sums, "{of_connection}");
    let mut monitors = pids(&of_connection["monitors"]);
    monitors.sort();
    assert_eq!(monitors, sums, "{of_connection}");
    // Its parent is the HTTP listener that accepted it (from a task of its).
    let listener = of_connection["parent"]
        .as_str()
        .expect("a connection has a parent")
        .to_owned();
    assert_eq!(
        console
            .value(&format!("Process.info(pid(\"{listener}\"), :name)"))
            .await,
        "http_listener"
    );
    // The root supervisor is linked to its children and is their parent.
    assert_eq!(
        console
            .value(
                "let s = Process.whereis(\"supervisor\"); let l = Process.whereis(\"http_listener\"); \
                 Process.info(l, :parent) == s && Process.info(s, :links).contains(l) \
                 && Process.info(l, :links) == [s] && Process.info(s, :parent) == ()"
            )
            .await,
        true
    );
    // A console session's parent is the admin server (from its accept loop).
    assert_eq!(
        console
            .value("Process.info(Process.whereis(\"console_session\"), :parent) == Process.whereis(\"admin_server\")")
            .await,
        true
    );
    // Each key on its own, as atoms.
    assert_eq!(
        console
            .value(&format!("Process.info(pid(\"{first}\"), :parent)"))
            .await,
        connection
    );
    assert_eq!(
        pids(
            &console
                .value(&format!("Process.info(pid(\"{connection}\"), :links)"))
                .await
        )
        .len(),
        2
    );
    for key in ["monitors", "monitored_by", "message_queue_len"] {
        let value = console
            .value(&format!("Process.info(pid(\"{connection}\"), :{key})"))
            .await;
        assert!(!value.is_null(), "{key}: {value}");
    }

    // A sum that ends leaves the connection's links; the connection (which
    // traps exits) lives on.
    assert!(kill_taken(
        &console
            .value(&format!("Process.kill(pid(\"{second}\"))"))
            .await
    ));
    assert_eq!(client.answer(2).await["status"], "error");
    console
        .until(
            &format!("Process.info(pid(\"{connection}\"), :links)"),
            |links| pids(links) == vec![first.clone()],
        )
        .await;

    // The link is real: killing the connection's process ends its sum.
    assert!(kill_taken(
        &console
            .value(&format!("Process.kill(pid(\"{connection}\"))"))
            .await
    ));
    console
        .until(&format!("Process.info(pid(\"{first}\"))"), Value::is_null)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_connection_counts_its_pending_frames_and_downs() {
    let daemon = Daemon::start();
    // A client that starts three endless sums, then only sends: requests
    // whose replies (an invalid input is echoed, 60 KB each) fill the
    // socket's buffers until the connection waits for its peer to read.
    let mut client = Client::connect(&daemon).await;
    let mut sums = Vec::new();
    for id in 1..=3 {
        sums.push(endless_sum(&mut client, id).await);
    }
    let mut console = Console::open(&daemon).await;
    let connection = console
        .value(&format!("Process.info(pid(\"{}\"), :parent)", sums[0]))
        .await
        .as_str()
        .expect("a parent")
        .to_owned();
    // The flood runs on; the client (so the connection) stays open, unread.
    let flood = tokio::spawn(async move {
        let input = "7".repeat(60_000);
        for id in 100..1_000 {
            let request = json!({"type": "sum", "id": id, "input": input}).to_string();
            client.send_text(request).await;
        }
        std::future::pending::<()>().await;
        drop(client);
    });
    // Blocked: frames wait in its inbox and it is not polled (its
    // reductions stand still) across two looks.
    let info = format!("Process.info(pid(\"{connection}\"))");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let before = console.value(&info).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = console.value(&info).await;
        if after["message_queue_len"].as_i64().unwrap_or(0) >= 1
            && after["reductions"] == before["reductions"]
        {
            break;
        }
        assert!(Instant::now() < deadline, "never blocked: {after}");
    }
    // Its three sums end: their DOWNs wait in its inbox too.
    for sum in &sums {
        assert!(kill_taken(
            &console
                .value(&format!("Process.kill(pid(\"{sum}\"))"))
                .await
        ));
    }
    let queued = console
        .until(
            &format!("Process.info(pid(\"{connection}\"), :message_queue_len)"),
            |len| len.as_i64().unwrap_or(0) >= 4,
        )
        .await;
    eprintln!("message_queue_len of the blocked connection: {queued}");
    flood.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_of_every_sum_is_limited_to_thirty_calls_from_several_pids() {
    let daemon = Daemon::start();
    let mut clients = Vec::new();
    let mut endless = Vec::new();
    for _ in 0..3 {
        let mut client = Client::connect(&daemon).await;
        endless.push(endless_sum(&mut client, 1).await);
        clients.push(client);
    }
    let mut console = Console::open(&daemon).await;
    let trace = console.value("Runtime.trace(:sum, #{calls: 30})").await;
    assert_eq!(trace["ended"], "calls", "{trace}");
    let events = trace["events"].as_array().cloned().unwrap_or_default();
    assert_eq!(events.len(), 30, "{trace}");
    let mut traced: Vec<&str> = events.iter().filter_map(|e| e["pid"].as_str()).collect();
    traced.sort_unstable();
    traced.dedup();
    assert!(traced.len() >= 2, "{traced:?}");
    assert!(
        events
            .iter()
            .all(|e| e["call"].as_str().is_some_and(|c| !c.is_empty())),
        "{trace}"
    );

    // The rate limit: an endless sum makes far more than 10 calls a second.
    let rated = console
        .value("Runtime.trace(:sum, #{calls: 10000, per_second: 10, ms: 5000})")
        .await;
    assert_eq!(rated["ended"], "rate", "{rated}");
    assert!(
        rated["events"].as_array().is_some_and(|e| e.len() <= 10),
        "{rated}"
    );

    // A sum started while the trace runs is traced too, with its result
    // (the endless ones gone, so the trace holds only the new ones).
    for pid in &endless {
        assert!(kill_taken(
            &console
                .value(&format!("Process.kill(pid(\"{pid}\"))"))
                .await
        ));
    }
    for client in &mut clients {
        assert_eq!(client.answer(1).await["status"], "error");
    }
    let mut other = Console::open(&daemon).await;
    let started = other
        .start("Runtime.trace(\"sum\", #{calls: 100000, ms: 3000})")
        .await;
    console
        .until("Runtime.traces()", |n| n.as_i64() == Some(1))
        .await;
    for client in &mut clients {
        client.sum(2, "5").await;
    }
    for client in &mut clients {
        assert_eq!(client.answer(2).await["result"], "15");
    }
    let reply = other.reply(started).await;
    assert_eq!(reply["type"], "result", "{reply}");
    let events = reply["value"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        events
            .iter()
            .any(|e| e["call"] == "Math.sum(5)" && e["result"] == "15"),
        "a return value: {reply}"
    );
    assert_eq!(reply["value"]["ended"], "time");
    assert_eq!(console.value("Runtime.traces()").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_of_two_consoles_are_independent_and_end_with_their_session() {
    let daemon = Daemon::start();
    let mut client = Client::connect(&daemon).await;
    let sum = endless_sum(&mut client, 1).await;
    let mut first = Console::open(&daemon).await;
    let mut second = Console::open(&daemon).await;
    // The first console traces for ten minutes (or 100,000 calls)…
    first.value(&format!("let p = pid(\"{sum}\"); p")).await;
    first
        .start("Runtime.trace(:sum, #{calls: 100000, ms: 600000})")
        .await;
    second
        .until("Runtime.traces()", |n| n.as_i64() == Some(1))
        .await;
    // …while the second's own trace of the sum ends by its own limit.
    let trace = second
        .value(&format!("Runtime.trace(pid(\"{sum}\"), #{{calls: 20}})"))
        .await;
    assert_eq!(trace["ended"], "calls", "{trace}");
    assert_eq!(trace["events"].as_array().map(Vec::len), Some(20));
    assert!(
        trace["events"]
            .as_array()
            .is_some_and(|events| events.iter().all(|e| e["pid"] == sum.as_str())),
        "{trace}"
    );
    assert_eq!(second.value("Runtime.traces()").await, 1);
    // The first session ends: its trace goes with it.
    drop(first);
    second
        .until("Runtime.traces()", |n| n.as_i64() == Some(0))
        .await;
    // The sum it traced is untouched.
    assert_eq!(
        second
            .value(&format!("Process.info(pid(\"{sum}\"), :name)"))
            .await,
        "sum"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_traces_a_process_over_its_websocket() {
    let daemon = Daemon::start();
    let mut client = Client::connect(&daemon).await;
    let sum = endless_sum(&mut client, 1).await;
    client.send(json!({"type": "trace", "pid": sum})).await;
    let reply = client.expect(|m| m["type"] == "trace").await;
    assert_eq!(reply["pid"], sum.as_str(), "{reply}");
    assert_eq!(reply["ended"], "calls", "{reply}");
    let events = reply["events"].as_array().cloned().unwrap_or_default();
    assert_eq!(events.len(), 50, "{reply}");
    for event in &events {
        assert_eq!(event["pid"], sum.as_str(), "{event}");
        assert!(event["at_ms"].as_u64().is_some(), "{event}");
        assert!(event.get("result").is_some(), "{event}");
    }
    assert!(
        events.iter().any(|e| e["call"]
            .as_str()
            .is_some_and(|c| c.starts_with("math_plugin::calc_sum("))),
        "{reply}"
    );
    // A process that is not alive: no events, ended by its exit.
    client
        .send(json!({"type": "trace", "pid": "<0.1.0>"}))
        .await;
    let dead = client.expect(|m| m["type"] == "trace").await;
    assert_eq!(dead["ended"], "exit", "{dead}");
    assert_eq!(dead["events"], json!([]), "{dead}");
}
