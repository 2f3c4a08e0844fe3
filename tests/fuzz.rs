//! Bad input tried against the real daemon: random and corpus messages on
//! the WebSocket, random bytes on the admin socket, random and corpus Rhai
//! scripts. None may crash or stall the daemon; each connection stays usable.
//!
//! The corpora (tests/corpus/) are small and kept in the repository; the
//! random parts come from proptest with a fixed number of cases.

use crate::support;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::support::{Client, Daemon};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

/// A message shaped like the protocol's, with random or hostile fields.
fn ws_message() -> impl Strategy<Value = String> {
    let text = prop_oneof![
        any::<String>(),
        "-?[0-9]{0,30}",
        "[0-9a-z.+-]{0,10}",
        Just("-1".to_owned()),
    ];
    let shaped = (
        prop_oneof![
            Just("sum"),
            Just("subscribe"),
            Just("load"),
            Just("reset"),
            Just("info"),
            Just("kill"),
            Just("nope")
        ],
        any::<i64>(),
        text,
        0u64..1_000,
        -10.0f64..200.0,
    )
        .prop_map(|(kind, id, input, jobs, rate)| {
            let message = match kind {
                "sum" => json!({"type": kind, "id": id, "input": input}),
                "subscribe" => json!({"type": kind, "topic": input}),
                "load" => json!({"type": kind, "jobs": jobs, "failure_rate": rate}),
                // Pids far above any live process: never this connection's own.
                "info" | "kill" => {
                    json!({"type": kind, "pid": format!("0.{}.0", id.unsigned_abs() | (1 << 40))})
                }
                _ => json!({"type": kind, "input": input}),
            };
            message.to_string()
        });
    prop_oneof![shaped, any::<String>(), "[{}\\[\\]\":,a-z0-9 ]{0,40}"]
}

#[tokio::test]
async fn random_and_corpus_websocket_messages_never_break_the_connection() {
    let daemon = Daemon::start();
    let mut client = Client::connect(&daemon).await;
    let mut messages: Vec<String> = include_str!("corpus/ws.txt")
        .lines()
        .map(str::to_owned)
        .collect();
    let mut runner = TestRunner::new(Config {
        cases: 300,
        ..Config::default()
    });
    let strategy = ws_message();
    for _ in 0..300 {
        messages.push(strategy.new_tree(&mut runner).unwrap().current());
    }
    for message in messages {
        client.send_text(message).await;
    }
    client.send(json!({"type": "reset"})).await;
    client.sum(-7, "5").await;
    let answer = client.answer(-7).await;
    assert_eq!(answer["result"], "15", "{answer}");
    assert_eq!(daemon.get("/health").0, 200);
}

/// A raw admin-socket session.
struct Admin {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
    next_id: u64,
}

impl Admin {
    fn connect(daemon: &Daemon) -> Admin {
        let stream = UnixStream::connect(daemon.home().join("admin.sock")).unwrap();
        stream.set_read_timeout(Some(support::PATIENCE)).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut hello = String::new();
        reader.read_line(&mut hello).unwrap();
        assert!(hello.contains("hello"), "{hello}");
        Admin {
            stream,
            reader,
            next_id: 1,
        }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    fn read(&mut self) -> Value {
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .expect("the daemon answers in time");
        serde_json::from_str(&line).expect("the daemon sends JSON")
    }

    /// Evaluates `script`; interrupts it if it runs for more than `limit`.
    /// Returns the final `result` or `error` frame.
    fn eval(&mut self, script: &str, limit: Duration) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let frame = json!({"type": "eval", "id": id, "script": script}).to_string() + "\n";
        self.send_raw(frame.as_bytes());
        self.stream.set_read_timeout(Some(limit)).unwrap();
        let mut interrupted = false;
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => panic!("the admin connection closed on {script:?}"),
                Ok(_) => {
                    let reply: Value = serde_json::from_str(&line).unwrap();
                    if reply["id"] == id && (reply["type"] == "result" || reply["type"] == "error")
                    {
                        self.stream
                            .set_read_timeout(Some(support::PATIENCE))
                            .unwrap();
                        return reply;
                    }
                }
                Err(_) if !interrupted => {
                    interrupted = true;
                    self.send_raw(b"{\"type\":\"interrupt\"}\n");
                    self.stream
                        .set_read_timeout(Some(support::PATIENCE))
                        .unwrap();
                }
                Err(error) => panic!("no answer to {script:?} even after an interrupt: {error}"),
            }
        }
    }
}

#[test]
fn random_bytes_on_the_admin_socket_get_errors_and_the_session_lives_on() {
    let daemon = Daemon::start();
    let mut admin = Admin::connect(&daemon);
    let mut runner = TestRunner::new(Config {
        cases: 200,
        ..Config::default()
    });
    let strategy = prop::collection::vec(
        any::<u8>().prop_filter("one frame", |b| *b != b'\n'),
        1..200,
    );
    for _ in 0..200 {
        let mut frame = strategy.new_tree(&mut runner).unwrap().current();
        frame.push(b'\n');
        admin.send_raw(&frame);
        let reply = admin.read();
        assert_eq!(reply["type"], "error", "{reply}");
    }
    // A frame over the 1 MiB limit.
    let mut huge = vec![b'x'; 1024 * 1024 + 10];
    huge.push(b'\n');
    admin.send_raw(&huge);
    assert_eq!(admin.read()["kind"], "too_large");
    let reply = admin.eval("1 + 1", support::PATIENCE);
    assert_eq!(reply["text"], "2", "{reply}");
}

/// Rhai source made of the language's tokens and the console's API, in
/// random order: mostly syntax errors, sometimes loops, calls and throws.
fn rhai_script() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("let x = "),
        Just("x"),
        Just("fn f(a) { "),
        Just("f("),
        Just("("),
        Just(")"),
        Just("{"),
        Just("}"),
        Just("["),
        Just("]"),
        Just(";"),
        Just(","),
        Just("+"),
        Just("*"),
        Just("/"),
        Just("=="),
        Just("if "),
        Just("else "),
        Just("while "),
        Just("for i in 0..3 "),
        Just("loop "),
        Just("break"),
        Just("return "),
        Just("1"),
        Just("0"),
        Just("-1"),
        Just("\"s\""),
        Just("#{a: 1}"),
        Just("Process.list()"),
        Just("Process.info("),
        Just("Runtime"),
        Just(".top()"),
        Just("pid(\"0.1.0\")"),
        Just("kill("),
        Just("throw "),
        Just("System.info()"),
        Just("Load.get()"),
        Just("true"),
        Just("()"),
        Just("."),
    ];
    prop::collection::vec(token, 1..25).prop_map(|tokens| tokens.join(" "))
}

#[test]
fn random_and_corpus_rhai_scripts_never_crash_or_stall_the_daemon() {
    let daemon = Daemon::start();
    let mut admin = Admin::connect(&daemon);
    let mut scripts: Vec<String> = include_str!("corpus/rhai.txt")
        .lines()
        .map(str::to_owned)
        .collect();
    let mut runner = TestRunner::new(Config {
        cases: 150,
        ..Config::default()
    });
    let strategy = rhai_script();
    for _ in 0..150 {
        scripts.push(strategy.new_tree(&mut runner).unwrap().current());
    }
    for script in &scripts {
        // `kill(` with a random pid could hit this very session; keep it to others.
        let script = script.replace("kill(", "Process.alive(");
        let reply = admin.eval(&script, Duration::from_secs(2));
        assert!(
            reply["type"] == "result" || reply["type"] == "error",
            "{script:?}: {reply}"
        );
        assert_ne!(reply["kind"], "internal", "{script:?}: {reply}");
    }
    let reply = admin.eval("40 + 2", support::PATIENCE);
    assert_eq!(reply["text"], "42", "{reply}");
    assert_eq!(daemon.get("/health").0, 200);
}
