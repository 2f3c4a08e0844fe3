//! Test support: starts the real `system` binary in a temporary home on an
//! ephemeral port, and stops it (and removes the home) when dropped.
//!
//! No mocks: everything goes through the binary, its sockets and its files.

pub mod console;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `system` binary cargo built for these tests.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_system"))
}

/// The math plugin cargo built for these tests. `cargo test` builds it in
/// `deps/` (it is a dev-dependency); only `cargo build` copies it next to the
/// binary, where a stale copy may lie, so `deps/` comes first.
pub fn plugin() -> PathBuf {
    let name = format!(
        "{}math_plugin{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    let fresh = binary().with_file_name("deps").join(&name);
    if fresh.exists() {
        fresh
    } else {
        binary().with_file_name(name)
    }
}

/// A new, empty temporary home: private (0700), as `start` requires of a
/// home it did not create itself.
pub fn home() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .expect("a temporary home")
}

/// The versioned plugin copies in a home's `plugins/` (the `kept/`
/// directory of heart's kept versions aside).
pub fn versioned_copies(home: &Path) -> usize {
    std::fs::read_dir(home.join("plugins"))
        .expect("the plugins directory")
        .flatten()
        .filter(|entry| entry.path().is_file())
        .count()
}

/// Runs `system --home HOME args…` (with `SYSTEM_PLUGIN` set to [`plugin`])
/// and returns its output.
pub fn system(home: &Path, args: &[&str]) -> Output {
    Command::new(binary())
        .arg("--home")
        .arg(home)
        .args(args)
        .env_remove("SYSTEM_HOME")
        .env("SYSTEM_PLUGIN", plugin())
        .output()
        .expect("the system binary runs")
}

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The running daemon's state file (`system.json` in its home): its pid,
/// URL and heart's pid, as the daemon wrote them once it was ready.
pub fn state(home: &Path) -> system::os::home::DaemonState {
    let path = home.join("system.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("{}: {error} in {text:?}", path.display()))
}

/// A daemon started with `system start` in its own temporary home.
pub struct Daemon {
    pub home: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub pid: i32,
}

impl Daemon {
    pub fn start() -> Daemon {
        Daemon::start_with(&[])
    }

    /// Starts with extra `start` arguments (e.g. `--schedulers 2`).
    pub fn start_with(extra: &[&str]) -> Daemon {
        let home = home();
        let mut args = vec!["start", "--http", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let output = system(home.path(), &args);
        let said = text(&output);
        assert!(output.status.success(), "start failed: {said}");
        Daemon::adopt(home)
    }

    /// `system start` with the open-files limits set to `soft` and `hard` first.
    pub fn start_with_open_files(soft: u64, hard: u64) -> Daemon {
        use std::os::unix::process::CommandExt as _;
        let home = home();
        let mut start = Command::new(binary());
        start
            .arg("--home")
            .arg(home.path())
            .args(["start", "--http", "127.0.0.1:0"])
            .env_remove("SYSTEM_HOME")
            .env("SYSTEM_PLUGIN", plugin());
        // SAFETY: only an async-signal-safe system call between fork and exec.
        unsafe {
            start.pre_exec(move || {
                nix::sys::resource::setrlimit(
                    nix::sys::resource::Resource::RLIMIT_NOFILE,
                    soft,
                    hard,
                )
                .map_err(std::io::Error::from)
            });
        }
        let output = start.output().expect("the system binary runs");
        let said = text(&output);
        assert!(output.status.success(), "start failed: {said}");
        Daemon::adopt(home)
    }

    /// A daemon started by hand in `home` (and ready): its pid and URL
    /// from the home's state file.
    pub fn adopt(home: tempfile::TempDir) -> Daemon {
        let state = state(home.path());
        Daemon {
            pid: i32::try_from(state.pid).expect("a pid fits in i32"),
            url: state.url,
            home,
        }
    }

    /// The state file of the daemon serving in this home now.
    pub fn state(&self) -> system::os::home::DaemonState {
        state(self.home())
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    pub fn system(&self, args: &[&str]) -> Output {
        system(self.home(), args)
    }

    pub fn ws_url(&self) -> String {
        format!("{}/ws", self.url.replacen("http://", "ws://", 1))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.home().join("log/system.log")).unwrap_or_default()
    }

    /// The log once it contains `needle` (within [`PATIENCE`]): lines are
    /// written by the daemon's log thread a moment after their event.
    pub fn log_containing(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{needle:?} is not in the log:\n{log}"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// A plain HTTP/1.1 GET; returns (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        self.http(&format!("GET {path} HTTP/1.1\r\n\r\n"))
    }

    /// A plain HTTP/1.1 POST of a JSON body; returns (status, body).
    pub fn post(&self, path: &str, json: &str) -> (u16, String) {
        self.http(&format!(
            "POST {path} HTTP/1.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{json}",
            json.len()
        ))
    }

    /// Sends `request` (its request line and headers, to which `Host` and
    /// `Connection: close` are added) and reads the whole response.
    fn http(&self, request: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let address = self.url.trim_start_matches("http://");
        let (head, rest) = request.split_once("\r\n").expect("a request line");
        let mut stream = std::net::TcpStream::connect(address).expect("connect");
        write!(
            stream,
            "{head}\r\nHost: {address}\r\nConnection: close\r\n{rest}"
        )
        .expect("send request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read response");
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    pub fn is_alive(&self) -> bool {
        is_alive(self.pid)
    }

    /// `system rpc --json SCRIPT`: the script's value (the script must succeed).
    pub fn rpc(&self, script: &str) -> serde_json::Value {
        let output = self.system(&["rpc", "--json", script]);
        assert!(output.status.success(), "{script}: {}", text(&output));
        serde_json::from_slice(&output.stdout).expect("rpc --json prints JSON")
    }

    /// One value of `/metrics`, by its whole name (labels included).
    pub fn metric(&self, name: &str) -> f64 {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "{body}");
        body.lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{body}"))
    }
}

/// True while the OS process exists and is not a zombie.
pub fn is_alive(pid: i32) -> bool {
    system::lifecycle::is_alive(pid as u32)
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.system(&["stop"]);
        // Whatever is left (a heart between restarts, a daemon that did not
        // stop): heart first, so that nothing is restarted.
        let heart = std::fs::read_to_string(self.home().join("heart.json"))
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|state| state["pid"].as_i64());
        let current = std::fs::read_to_string(self.home().join("system.pid"))
            .ok()
            .and_then(|pid| pid.trim().parse::<i64>().ok());
        for pid in [heart, current, Some(i64::from(self.pid))]
            .into_iter()
            .flatten()
        {
            if is_alive(pid as i32) {
                let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            }
        }
    }
}

/// A WebSocket client speaking docs/protocol.md to a running daemon.
pub struct Client {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    /// Messages read while waiting for something else, oldest first.
    pub seen: Vec<serde_json::Value>,
    /// The server's `hello`.
    pub hello: serde_json::Value,
}

/// How long a test waits for an expected message before failing.
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(20);

impl Client {
    pub async fn connect(daemon: &Daemon) -> Client {
        let (socket, _) = tokio_tungstenite::connect_async(daemon.ws_url())
            .await
            .expect("WebSocket connects");
        let mut client = Client {
            socket,
            seen: Vec::new(),
            hello: serde_json::Value::Null,
        };
        client.hello = client.expect(|m| m["type"] == "hello").await;
        client
    }

    pub async fn send(&mut self, message: serde_json::Value) {
        self.send_text(message.to_string()).await;
    }

    pub async fn send_text(&mut self, text: String) {
        use futures::SinkExt;
        self.socket
            .send(tokio_tungstenite::tungstenite::Message::text(text))
            .await
            .expect("send");
    }

    /// Submits a sum; returns its id.
    pub async fn sum(&mut self, id: i64, input: &str) {
        self.send(serde_json::json!({"type": "sum", "id": id, "input": input}))
            .await;
    }

    /// The next message, or None if the connection closed.
    pub async fn next(&mut self) -> Option<serde_json::Value> {
        use futures::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            match self.socket.next().await? {
                Ok(Message::Text(text)) => {
                    return Some(serde_json::from_str(&text).expect("server sends JSON"));
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Reads until the server closes; the close frame's code, if it sent one.
    pub async fn close_code(&mut self) -> Option<u16> {
        use futures::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            match self.socket.next().await? {
                Ok(Message::Close(frame)) => return frame.map(|f| f.code.into()),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// Reads until a message matches (within [`PATIENCE`]); returns it.
    pub async fn expect(
        &mut self,
        matches: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        if let Some(index) = self.seen.iter().position(&matches) {
            return self.seen.remove(index);
        }
        let wait = async {
            loop {
                let message = self.next().await.expect("the connection stays open");
                if matches(&message) {
                    return message;
                }
                self.seen.push(message);
            }
        };
        tokio::time::timeout(PATIENCE, wait)
            .await
            .expect("the expected message arrives in time")
    }

    /// The final answer (done, error or invalid) to sum `id`.
    pub async fn answer(&mut self, id: i64) -> serde_json::Value {
        self.expect(|m| m["type"] == "sum" && m["id"] == id && m["status"] != "calculating")
            .await
    }

    /// The `calculating` message of sum `id` (it carries the task's pid).
    pub async fn calculating(&mut self, id: i64) -> serde_json::Value {
        self.expect(|m| m["type"] == "sum" && m["id"] == id && m["status"] == "calculating")
            .await
    }
}

/// Waits (at most `patience`) until `done` holds, looking every 20 ms;
/// panics with `what` otherwise. For states only seen by asking.
pub fn eventually(patience: std::time::Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + patience;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
