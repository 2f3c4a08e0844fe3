//! The sum page's WebSocket against the real daemon: results, let it crash,
//! invalid input, long and endless computations, kill, and a connection
//! that never closes through any of it.

use crate::support;
use std::time::Instant;

use crate::support::{Client, Daemon};
use serde_json::json;

#[tokio::test]
async fn sums_crashes_and_invalid_input_on_one_connection() {
    let daemon = Daemon::start();
    let mut client = Client::connect(&daemon).await;

    client.sum(1, "5").await;
    let calculating = client.calculating(1).await;
    assert!(calculating["pid"].as_str().unwrap().starts_with("#PID<0."));
    let answer = client.answer(1).await;
    assert_eq!(answer["status"], "done");
    assert_eq!(answer["result"], "15");

    client.sum(2, "13").await;
    let answer = client.answer(2).await;
    assert_eq!(answer["status"], "error", "{answer}");
    assert_eq!(answer["reason"], "error", "{answer}");

    client.sum(3, "100").await;
    assert_eq!(client.answer(3).await["result"], "5050");

    for (id, input) in [
        (4, "abc"),
        (5, "12abc"),
        (6, "1.5"),
        (7, ""),
        (8, "99999999999999999999"),
    ] {
        client.sum(id, input).await;
        let answer = client.answer(id).await;
        assert_eq!(answer["status"], "invalid", "{input:?}: {answer}");
    }

    // Malformed and unknown messages get an error and the connection lives on.
    client.send_text("{not json".into()).await;
    client.expect(|m| m["type"] == "error").await;
    client.send(json!({"type": "launch_rockets"})).await;
    client.expect(|m| m["type"] == "error").await;
    client.sum(9, "3").await;
    assert_eq!(client.answer(9).await["result"], "6");

    let log = daemon.log_containing("crash report");
    assert!(log.contains("Math.sum(13)"), "{log}");
}

#[tokio::test]
async fn a_long_sum_does_not_stop_other_connections() {
    let daemon = Daemon::start();
    let mut long = Client::connect(&daemon).await;
    let mut other = Client::connect(&daemon).await;

    long.sum(1, "999999999").await;
    long.calculating(1).await;
    // Read the long answer concurrently, noting when it arrives.
    let long_answer = tokio::spawn(async move {
        let answer = long.answer(1).await;
        (answer, Instant::now())
    });
    let mut last_other = Instant::now();
    for id in 1..=20 {
        other.sum(id, "5").await;
        assert_eq!(other.answer(id).await["result"], "15");
        last_other = Instant::now();
    }
    let (answer, long_done) = long_answer.await.unwrap();
    assert_eq!(answer["result"], "499999999500000000", "{answer}");
    assert!(
        last_other < long_done,
        "the other connection waited for the long sum"
    );
}

#[tokio::test]
async fn an_endless_sum_runs_until_killed_and_its_line_becomes_error() {
    let daemon = Daemon::start();
    let mut client = Client::connect(&daemon).await;
    let mut other = Client::connect(&daemon).await;

    client.sum(1, "-1").await;
    let pid = client.calculating(1).await["pid"]
        .as_str()
        .unwrap()
        .to_owned();
    client.sum(2, "0").await;
    client.calculating(2).await;
    for id in 1..=20 {
        other.sum(id, "10").await;
        assert_eq!(other.answer(id).await["result"], "55");
    }
    client.sum(3, "4").await;
    assert_eq!(client.answer(3).await["result"], "10");

    // Kill through the runtime's kill, as the top page does.
    other.send(json!({"type": "kill", "pid": pid})).await;
    let killed = other.expect(|m| m["type"] == "kill").await;
    assert_eq!(killed["killed"], true, "{killed}");
    let answer = client.answer(1).await;
    assert_eq!(answer["status"], "error");
    assert_eq!(answer["reason"], "killed");

    // The connection is still open and serving.
    client.sum(4, "6").await;
    assert_eq!(client.answer(4).await["result"], "21");
}

#[tokio::test]
async fn a_websocket_from_a_foreign_origin_is_refused() {
    let daemon = Daemon::start();
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = daemon.ws_url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("origin", "http://evil.example".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(request).await.is_err());
    daemon.log_containing("refused GET \"/ws\"");
}

#[tokio::test]
async fn stop_closes_websockets_with_a_close_frame() {
    let daemon = Daemon::start();
    let mut client = Client::connect(&daemon).await;
    client.sum(1, "-1").await;
    client.calculating(1).await;
    let home = daemon.home().to_owned();
    let stop = tokio::task::spawn_blocking(move || support::system(&home, &["stop"]));
    let code = tokio::time::timeout(support::PATIENCE, client.close_code())
        .await
        .expect("closed in time");
    assert_eq!(code, Some(1001), "a going-away close frame");
    assert!(stop.await.unwrap().status.success());
    assert!(!daemon.is_alive());
}

#[tokio::test]
async fn computations_beyond_the_per_connection_limit_get_an_error_line() {
    let daemon = Daemon::start();
    let mut client = Client::connect(&daemon).await;
    let limit = system::http::connection::MAX_SUMS_PER_CONNECTION as i64;
    let mut first = None;
    for id in 1..=limit {
        client.sum(id, "-1").await;
        let calculating = client.calculating(id).await;
        first.get_or_insert(calculating["pid"].clone());
    }
    client.sum(limit + 1, "5").await;
    let refused = client.answer(limit + 1).await;
    assert_eq!(refused["status"], "error", "{refused}");
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("too many computations"),
        "{refused}"
    );
    // Nothing was queued: killing one loop frees a place at once.
    client.send(json!({"type": "kill", "pid": first})).await;
    assert_eq!(client.answer(1).await["reason"], "killed");
    client.sum(limit + 2, "5").await;
    assert_eq!(client.answer(limit + 2).await["result"], "15");
}

#[tokio::test]
async fn info_requests_beyond_the_per_connection_limit_get_an_error() {
    let daemon = Daemon::start();
    let limit = system::http::connection::MAX_INFOS_PER_CONNECTION;
    // Idle connections, one per info: the trace of a process that makes
    // (almost) no calls lasts its whole second, and two traces of one pid
    // would cut each other short.
    let mut client = Client::connect(&daemon).await;
    let mut idle = Vec::new();
    for _ in 0..limit {
        idle.push(Client::connect(&daemon).await);
    }
    let output = daemon.system(&[
        "rpc",
        "--json",
        "Process.list().filter(|p| Process.info(p)?.name == \"ws_connection\").map(|p| p.to_string())",
    ]);
    assert!(output.status.success(), "{}", support::text(&output));
    let pids: Vec<String> = serde_json::from_slice(&output.stdout).expect("a list of pids");
    assert_eq!(pids.len(), limit + 1, "{pids:?}");

    for pid in &pids {
        client.send(json!({"type": "info", "pid": pid})).await;
    }
    let refused = client.expect(|m| m["type"] == "error").await;
    let expected = format!("too many info requests waiting on this connection (at most {limit})");
    assert!(
        refused["message"]
            .as_str()
            .unwrap_or_default()
            .contains(&expected),
        "{refused}"
    );
    assert_eq!(refused["pid"], pids[limit].as_str(), "the last one asked");
    // The ones under the cap are all answered.
    for pid in &pids[..limit] {
        let info = client
            .expect(|m| m["type"] == "info" && m["pid"] == pid.as_str())
            .await;
        assert_eq!(info["info"]["name"], "ws_connection", "{info}");
    }
    // Answered ones free their places: the refused one is served now.
    client
        .send(json!({"type": "info", "pid": pids[limit]}))
        .await;
    let info = client
        .expect(|m| m["type"] == "info" || m["type"] == "error")
        .await;
    assert_eq!(info["type"], "info", "{info}");
    assert_eq!(info["pid"], pids[limit].as_str(), "{info}");
    drop(idle);
}

#[tokio::test]
async fn an_oversized_message_closes_only_that_connection() {
    let daemon = Daemon::start();
    let mut big = Client::connect(&daemon).await;
    let mut other = Client::connect(&daemon).await;
    big.send_text("x".repeat(70 * 1024)).await;
    let code = tokio::time::timeout(support::PATIENCE, big.close_code())
        .await
        .expect("closed in time");
    assert_eq!(code, Some(1009));
    other.sum(1, "5").await;
    assert_eq!(other.answer(1).await["result"], "15");
}
