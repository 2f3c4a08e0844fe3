//! tokio-console attaches to the running daemon: a gRPC client of the
//! console's own API (`console-api`) sees the daemon's tasks named after
//! their processes (`http_listener #PID<0.N.0>`).

use crate::support;
use crate::support::Daemon;
use console_api::instrument::InstrumentRequest;
use console_api::instrument::instrument_client::InstrumentClient;

#[tokio::test]
async fn tokio_console_sees_tasks_named_after_processes() {
    // A free port for the console API (the daemon must be told one).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let daemon = Daemon::start_with(&["--tokio-console", &address]);
    let mut client = InstrumentClient::connect(format!("http://{address}"))
        .await
        .expect("the console API accepts a client");
    let mut updates = client
        .watch_updates(InstrumentRequest::default())
        .await
        .expect("watch updates")
        .into_inner();
    let seen = tokio::time::timeout(support::PATIENCE, async {
        let mut seen = String::new();
        while let Some(update) = updates.message().await.expect("an update") {
            seen.push_str(&format!("{update:?}"));
            if seen.contains("http_listener #PID<0.") {
                return seen;
            }
        }
        seen
    })
    .await
    .expect("the named task shows up in time");
    assert!(seen.contains("http_listener #PID<0."), "{seen}");
    assert!(seen.contains("supervisor #PID<0."), "{seen}");
    assert!(daemon.get("/health").0 == 200);
}
