//! The pages in a real browser: Debian's headless Chromium, driven through
//! chromedriver (WebDriver, with the `fantoccini` client) against the real
//! daemon. Each test starts its own daemon, chromedriver (on a free port)
//! and Chromium (with a fresh profile), and saves a screenshot of its page
//! under `target/screenshots/` (plus `failed-*.png` when a wait times out).
//!
//! What they check: the sum page (5 → 15, 13 → error, abc → invalid
//! input), the load page (10,000 workers → the jobs chart reads about 10k),
//! the top page (a running `-1` sum shows up, `info` shows its stack trace
//! and links, `trace` its calls,
//! `kill` turns its line on the sum page into `error`; a process holding a
//! scheduler in one poll is marked, with a banner), the processes page
//! (search, sort by a column both ways, the next page, pause and resume,
//! a row's info, the folded supervision tree), that a page comes
//! back with a node heart restarted (its lost line reads `error`, "node
//! restarted"), and that every page shows its WebSocket as connected.
//!
//! The security tests drive the attacks of issue 13 from the browser: a page
//! of another origin (served by the test itself) posting text/plain to
//! `/api/load` and opening a WebSocket, and a DNS-rebinding name
//! (`--host-resolver-rules`) pointing at the daemon: nothing changes in it;
//! and with `--access-token` (issue 24), a page without the token says how
//! to get it, the URL `system status` prints opens a page that connects and
//! keeps no token in its address, and a server on another port of
//! 127.0.0.1 that the browser then visits receives no token (no cookie).
//!
//! What they must not do: sleep for a fixed time (every wait polls against a
//! deadline), talk to the daemon other than through the browser (except to
//! read the load and the log an attack must not have changed), or leave a
//! browser or chromedriver running (dropping [`Browser`] ends both). They
//! run one at a time: two Chromiums at once would starve a 2-core machine.

use crate::plugin_copies;
use crate::support;
use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::Daemon;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// How long a test waits for the page to show what it expects.
const PATIENCE: Duration = Duration::from_secs(30);
/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(100);
/// The viewport: a common projector resolution (720p).
const WIDTH: u32 = 1280;
const HEIGHT: u32 = 720;

/// One browser test at a time (see the module doc).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `target/screenshots/`, next to the binary under test.
fn screenshot_dir() -> PathBuf {
    let binary = support::binary();
    let target = binary
        .parent()
        .and_then(|profile| profile.parent())
        .expect("the binary lives in target/<profile>/");
    let dir = target.join("screenshots");
    std::fs::create_dir_all(&dir).expect("create target/screenshots");
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// chromedriver plus one Chromium session; both end when this is dropped.
struct Browser {
    client: Client,
    driver: Child,
    driver_port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        Browser::start_with(&[]).await
    }

    /// Starts with extra Chromium arguments (e.g. `--host-resolver-rules=…`).
    async fn start_with(extra: &[&str]) -> Browser {
        let driver_port = free_port();
        let chromedriver = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {chromedriver} (apt-get install chromium-driver): {e}")
            });
        let profile = tempfile::tempdir().expect("a fresh profile directory");
        let mut options = json!({
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                format!("--window-size={WIDTH},{HEIGHT}"),
                format!("--user-data-dir={}", profile.path().display()),
            ]
        });
        if let Some(args) = options["args"].as_array_mut() {
            args.extend(extra.iter().map(|arg| json!(arg)));
        }
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        if std::path::Path::new(&chromium).exists() {
            options["binary"] = json!(chromium);
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert("goog:chromeOptions".into(), options);
        let url = format!("http://127.0.0.1:{driver_port}");
        let deadline = Instant::now() + PATIENCE;
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(error) if Instant::now() < deadline => {
                    let _ = error;
                    tokio::time::sleep(POLL).await;
                }
                Err(error) => panic!("no Chromium session from chromedriver: {error}"),
            }
        };
        let session = client
            .session_id()
            .await
            .ok()
            .flatten()
            .expect("a session id");
        let browser = Browser {
            client,
            driver,
            driver_port,
            session,
            _profile: profile,
        };
        browser.fit_viewport().await;
        browser
    }

    /// Makes the page's viewport (not the window, which is taller by the
    /// size of a toolbar headless Chromium pretends to have) WIDTH × HEIGHT.
    async fn fit_viewport(&self) {
        let (width, height) = self.client.get_window_size().await.expect("window size");
        let inner = self
            .js("return [window.innerWidth, window.innerHeight]")
            .await;
        let extra = |i: usize, outer: u64| outer.saturating_sub(inner[i].as_u64().unwrap_or(outer));
        self.client
            .set_window_size(
                WIDTH + extra(0, width) as u32,
                HEIGHT + extra(1, height) as u32,
            )
            .await
            .expect("resize the window");
        let inner = self
            .js("return [window.innerWidth, window.innerHeight]")
            .await;
        assert_eq!(inner, json!([WIDTH, HEIGHT]), "the viewport");
    }

    async fn open(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
        self.connected().await;
    }

    /// Waits until the page shows its WebSocket as connected.
    async fn connected(&self) {
        self.until("#ws-state reads connected", || async {
            let state = self.attr("#ws-state", "data-state").await?;
            let text = self.text("#ws-state").await?;
            (state == "connected" && text == "connected").then_some(())
        })
        .await;
    }

    async fn text(&self, css: &str) -> Option<String> {
        let element = self.client.find(Locator::Css(css)).await.ok()?;
        element.text().await.ok()
    }

    async fn attr(&self, css: &str, name: &str) -> Option<String> {
        let element = self.client.find(Locator::Css(css)).await.ok()?;
        element.attr(name).await.ok().flatten()
    }

    /// Clicks the element, retrying while the page re-renders it.
    async fn click(&self, css: &str) {
        self.until(&format!("a click on {css}"), || async {
            let element = self.client.find(Locator::Css(css)).await.ok()?;
            element.click().await.ok()
        })
        .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"));
        element.clear().await.expect("clear");
        element.send_keys(text).await.expect("type");
    }

    /// Runs a script in the page; returns its value.
    async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}"))
    }

    /// Polls `check` until it returns `Some`, within [`PATIENCE`]; on time-out
    /// saves a screenshot `failed-….png` and fails the test.
    async fn until<T, F, Fut>(&self, what: &str, check: F) -> T
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        self.until_within(PATIENCE, what, check).await
    }

    async fn until_within<T, F, Fut>(&self, patience: Duration, what: &str, check: F) -> T
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + patience;
        loop {
            if let Some(value) = check().await {
                return value;
            }
            if Instant::now() >= deadline {
                let name: String = what
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                    .collect();
                self.screenshot(&format!("failed-{name}")).await;
                panic!("timed out after {patience:?} waiting for {what}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Saves the viewport as `target/screenshots/NAME.png`.
    async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("a screenshot");
        let path = screenshot_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        eprintln!("screenshot: {}", path.display());
        path
    }
}

impl Drop for Browser {
    /// Ends the session (so chromedriver quits Chromium), then chromedriver.
    fn drop(&mut self) {
        use std::io::{Read, Write};
        let address = format!("127.0.0.1:{}", self.driver_port);
        if let Ok(mut stream) = std::net::TcpStream::connect(&address) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                stream,
                "DELETE /session/{} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n",
                self.session
            );
            let _ = stream.read_to_end(&mut Vec::new());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Submits `input` on the sum page; waits until its line reads `expected`.
async fn sum(browser: &Browser, input: &str, expected: &str) {
    browser.type_into("#number", input).await;
    browser.click("#sum-submit").await;
    let line = format!("#results li[data-input=\"{input}\"]");
    let want = format!("∑(1..{input}) = {expected}");
    browser
        .until(&format!("{input} to give {expected}"), || async {
            let text = browser.text(&line).await?;
            (text.trim() == want).then_some(())
        })
        .await;
}

#[tokio::test]
async fn sum_page_shows_results_errors_and_invalid_input() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let daemon = Daemon::start();
    let browser = Browser::start().await;
    browser.open(&format!("{}/", daemon.url)).await;

    sum(&browser, "5", "15").await;
    sum(&browser, "13", "error").await;
    sum(&browser, "abc", "invalid input").await;
    sum(&browser, "100000", "5000050000").await;

    // Newest first, each with its own status.
    let statuses = browser
        .js("return [...document.querySelectorAll('#results li')].map(li => li.dataset.status)")
        .await;
    assert_eq!(statuses, json!(["done", "invalid", "error", "done"]));
    browser.screenshot("sum").await;
}

#[tokio::test]
async fn load_page_charts_ten_thousand_jobs_per_second() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let daemon = Daemon::start();
    let browser = Browser::start().await;
    browser.open(&format!("{}/load", daemon.url)).await;

    // The first metrics have arrived (the inputs are seeded from them).
    browser
        .until("the first metrics", || async {
            let workers = browser.text("#workers").await?;
            (workers != "–").then_some(())
        })
        .await;
    let schedulers = browser.text("#schedulers").await;
    assert_eq!(schedulers.as_deref(), Some("1"));

    browser.type_into("#jobs", "10000").await;
    browser.click("#apply").await;
    browser
        .until("the load to be accepted", || async {
            let status = browser.text("#load-status").await?;
            status.contains("10,000 jobs").then_some(())
        })
        .await;
    browser
        .until("10,000 workers", || async {
            (browser.text("#workers").await? == "10,000").then_some(())
        })
        .await;
    // Each worker runs one job a second; the chart smooths over 10 samples.
    let latest = browser
        .until_within(
            Duration::from_secs(60),
            "the jobs chart to read about 10k",
            || async {
                let value: f64 = browser
                    .attr("#jobs-latest", "data-value")
                    .await?
                    .parse()
                    .ok()?;
                (9_000.0..=11_000.0).contains(&value).then_some(value)
            },
        )
        .await;
    let label = browser.text("#jobs-latest").await.unwrap_or_default();
    assert!(label.ends_with('k'), "{label} (value {latest})");
    assert!(
        label.starts_with("9.") || label.starts_with("10."),
        "{label}"
    );
    let memory: f64 = browser
        .text("#memory")
        .await
        .and_then(|m| m.parse().ok())
        .expect("memory in MB");
    assert!(memory > 1.0, "{memory}");
    browser.screenshot("load").await;
}

/// Issue 27: the load page's schedulers input changes the schedulers
/// online live (the page's WebSocket stays open through it), and the usage
/// chart shows one series per scheduler online.
#[tokio::test]
async fn load_page_changes_the_schedulers_online_and_shows_each_ones_usage() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let daemon = Daemon::start_with(&["--schedulers", "1", "--max-schedulers", "2"]);
    let browser = Browser::start().await;
    browser.open(&format!("{}/load", daemon.url)).await;
    browser
        .until("the maximum from hello", || async {
            (browser.text("#max-schedulers").await? == "2").then_some(())
        })
        .await;
    browser
        .until("one scheduler's usage", || async {
            let values = browser.attr("#usage-each", "data-values").await?;
            (values.split(',').count() == 1 && !values.is_empty()).then_some(())
        })
        .await;
    browser.type_into("#schedulers-online", "2").await;
    browser.click("#set-schedulers").await;
    browser
        .until("two schedulers online", || async {
            let status = browser.text("#load-status").await?;
            (status.contains("schedulers online: 2 of 2")
                && browser.text("#schedulers").await? == "2")
                .then_some(())
        })
        .await;
    assert_eq!(daemon.rpc("System.schedulers_online()"), 2);
    browser
        .until("two schedulers' usage", || async {
            let values = browser.attr("#usage-each", "data-values").await?;
            (values.split(',').count() == 2).then_some(())
        })
        .await;
    // Outside 1..=2: the page says why, and nothing changes.
    browser.type_into("#schedulers-online", "3").await;
    browser.click("#set-schedulers").await;
    browser
        .until("the refusal", || async {
            let status = browser.text("#load-status").await?;
            status.contains("between 1 and 2").then_some(())
        })
        .await;
    assert_eq!(daemon.rpc("System.schedulers_online()"), 2);
    assert_eq!(
        browser.text("#ws-state").await.as_deref(),
        Some("connected")
    );
    browser.screenshot("load-schedulers").await;
}

/// `1.5 KiB` → 1536.
fn bytes_of(text: &str) -> Option<f64> {
    let (number, unit) = text.split_once(' ')?;
    let scale = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(number.parse::<f64>().ok()? * scale)
}

#[tokio::test]
async fn top_page_shows_info_and_kills_an_endless_sum() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let daemon = Daemon::start();
    let browser = Browser::start().await;

    // The sum page, in the first window: an endless sum.
    browser.open(&format!("{}/", daemon.url)).await;
    let sum_window = browser.client.window().await.expect("window handle");
    browser.type_into("#number", "-1").await;
    browser.click("#sum-submit").await;
    let line = "#results li[data-input=\"-1\"]";
    browser
        .until("the -1 sum to be calculating", || async {
            (browser.attr(line, "data-status").await? == "calculating").then_some(())
        })
        .await;

    // The top page, in a second window.
    let top_window = browser.client.new_window(false).await.expect("new window");
    browser
        .client
        .switch_to_window(top_window.handle)
        .await
        .expect("switch to the top window");
    browser.fit_viewport().await;
    browser.open(&format!("{}/top", daemon.url)).await;
    let rows_js = "[...document.querySelectorAll('#top tbody tr')].map(tr => ({
        pid: tr.dataset.pid,
        name: tr.querySelector('.name').textContent,
        cpu: tr.querySelector('.cpu').textContent }))";
    let pid = browser
        .until("the sum to show in the top table", || async {
            let rows = browser.js(&format!("return {rows_js}")).await;
            let rows = rows.as_array()?;
            assert!(rows.len() <= 10, "at most ten rows: {rows:?}");
            let row = rows.iter().find(|row| row["name"] == "sum")?;
            Some(row["pid"].as_str()?.to_owned())
        })
        .await;
    assert!(pid.starts_with("#PID<0."), "{pid}");
    // The busiest process over the last second, with a CPU share.
    let cpu = browser
        .until("a CPU figure for the sum", || async {
            let rows = browser.js(&format!("return {rows_js}")).await;
            let row = rows
                .as_array()?
                .iter()
                .find(|row| row["pid"] == pid)?
                .clone();
            let cpu = row["cpu"]
                .as_str()?
                .trim_end_matches(" %")
                .parse::<f64>()
                .ok()?;
            (cpu > 0.0).then_some(cpu)
        })
        .await;
    assert!(cpu <= 100.0, "{cpu}");

    // Sorted by memory: the biggest holders first, each with its bytes.
    browser.click("#sort-memory").await;
    let memory_js =
        "[...document.querySelectorAll('#top tbody tr .memory')].map(td => td.textContent)";
    let figures = browser
        .until("the table sorted by memory", || async {
            (browser.attr("#top", "data-sort").await? == "memory").then_some(())?;
            let figures = browser.js(&format!("return {memory_js}")).await;
            let figures: Vec<f64> = figures
                .as_array()?
                .iter()
                .map(|text| bytes_of(text.as_str()?))
                .collect::<Option<_>>()?;
            (figures.len() > 1).then_some(figures)
        })
        .await;
    assert!(
        figures.windows(2).all(|pair| pair[0] >= pair[1]),
        "biggest first: {figures:?}"
    );
    assert_eq!(
        browser.text("#top-title").await.as_deref(),
        Some("biggest holders of memory, now")
    );
    browser.click("#sort-cpu").await;

    // info: the panel shows the stack trace and the one-second call trace.
    let row = format!("#top tbody tr[data-pid=\"{pid}\"]");
    browser.click(&format!("{row} button.info")).await;
    let stack = browser
        .until("the stack trace in the info panel", || async {
            if browser.attr("#info-panel", "data-pid").await? != pid {
                return None;
            }
            let stack = browser.text("#info-panel pre.stacktrace").await?;
            stack.contains("calc_sum").then_some(stack)
        })
        .await;
    assert!(stack.contains("math_plugin"), "{stack}");
    let trace = browser
        .text("#info-panel pre.trace")
        .await
        .unwrap_or_default();
    assert!(trace.contains("calc_sum"), "the call trace: {trace}");

    // profile: where the sum spends its time, from native samples.
    browser.click("#info-panel button.profile").await;
    let hottest = browser
        .until("the profile in the info panel", || async {
            let hottest = browser
                .text("#info-panel .hot-functions li .function")
                .await?;
            (!hottest.is_empty()).then_some(hottest)
        })
        .await;
    assert!(
        hottest.contains("calc_sum"),
        "the hottest function: {hottest}"
    );

    // trace (issue 26): the panel's button shows the sum's calls with
    // their arguments and why the trace ended (50 calls come in well
    // under its second); the info lists its links (its connection).
    browser.click("#info-panel button.trace").await;
    let ended = browser
        .until("the trace in the info panel", || async {
            browser
                .attr("#info-panel .call-trace .trace-ended", "data-ended")
                .await
        })
        .await;
    assert_eq!(ended, "calls");
    let calls = browser
        .text("#info-panel .call-trace .trace-events")
        .await
        .unwrap_or_default();
    assert!(calls.contains("math_plugin::calc_sum("), "{calls}");
    assert!(calls.contains(&pid), "each event names its pid: {calls}");
    // (Inside a closed <details>: its text content, not its visible text.)
    let info = browser
        .js("return document.querySelector('#info-panel dl.process-info')?.textContent ?? ''")
        .await;
    let info = info.as_str().unwrap_or_default();
    assert!(
        info.contains("links") && info.contains("message_queue_len"),
        "{info}"
    );
    browser.screenshot("top").await;

    // kill: the top page confirms, the sum page's line turns into `error`.
    browser.click(&format!("{row} button.kill")).await;
    browser
        .until("the kill to be confirmed", || async {
            let status = browser.text("#kill-status").await?;
            (status == format!("killed {pid}")).then_some(())
        })
        .await;
    browser
        .until("the killed sum to leave the top table", || async {
            let rows = browser.js(&format!("return {rows_js}")).await;
            let gone = !rows.as_array()?.iter().any(|row| row["pid"] == pid);
            gone.then_some(())
        })
        .await;
    browser
        .client
        .switch_to_window(sum_window)
        .await
        .expect("back to the sum window");
    browser
        .until("the -1 line to read error", || async {
            let text = browser.text(line).await?;
            (text.trim() == "∑(1..-1) = error").then_some(())
        })
        .await;
    browser.connected().await;
    browser.screenshot("sum-after-kill").await;
}

/// The rows of /processes as the page shows them.
const PROCESS_ROWS_JS: &str =
    "return [...document.querySelectorAll('#processes tbody tr')].map(tr => ({
    pid: tr.dataset.pid,
    name: tr.querySelector('.name').textContent,
    reductions: Number(tr.querySelector('.reductions').textContent.replaceAll(',', '')) }))";

#[tokio::test]
async fn processes_page_searches_sorts_pages_pauses_and_opens_info() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let daemon = Daemon::start();
    let (status, body) = daemon.post("/api/load", "{\"jobs\":300}");
    assert_eq!(status, 200, "{body}");
    let browser = Browser::start().await;
    browser.open(&format!("{}/processes", daemon.url)).await;
    let rows = || async { browser.js(PROCESS_ROWS_JS).await.as_array().cloned() };

    // Search by name: only the load workers, all 300 counted.
    browser.type_into("#proc-search", "load_w").await;
    browser
        .until("300 load workers, 20 shown", || async {
            let rows = rows().await?;
            let total = browser.attr("#processes", "data-total").await?;
            (total == "300"
                && rows.len() == 20
                && rows.iter().all(|row| row["name"] == "load_worker"))
            .then_some(())
        })
        .await;
    assert_eq!(
        browser.text("#proc-range").await.as_deref(),
        Some("1–20 of 300")
    );

    // Sorted by reductions (the default, busiest first), then the other way
    // by clicking its header again.
    for (order, busiest_first) in [("descending", true), ("ascending", false)] {
        if !busiest_first {
            browser
                .click("#processes th[data-sort=\"reductions\"]")
                .await;
        }
        browser
            .until(&format!("rows by reductions, {order}"), || async {
                let sorted = browser
                    .attr("#processes th[data-sort=\"reductions\"]", "aria-sort")
                    .await?;
                let figures: Vec<f64> = rows()
                    .await?
                    .iter()
                    .map(|row| row["reductions"].as_f64())
                    .collect::<Option<_>>()?;
                let in_order = figures.windows(2).all(|w| {
                    if busiest_first {
                        w[0] >= w[1]
                    } else {
                        w[0] <= w[1]
                    }
                });
                (sorted == order && figures.len() == 20 && in_order).then_some(())
            })
            .await;
    }

    // The next page: rows 21–40, none of the first page's.
    browser.click("#processes th[data-sort=\"pid\"]").await;
    let first_page = browser
        .until("the first page by pid", || async {
            (browser
                .attr("#processes th[data-sort=\"pid\"]", "aria-sort")
                .await?
                == "ascending")
                .then_some(())?;
            let rows = rows().await?;
            (rows.len() == 20).then_some(rows)
        })
        .await;
    browser.click("#proc-next").await;
    let second_page = browser
        .until("the second page", || async {
            (browser.text("#proc-range").await? == "21–40 of 300").then_some(())?;
            rows().await
        })
        .await;
    assert!(
        second_page
            .iter()
            .all(|row| !first_page.iter().any(|first| first["pid"] == row["pid"])),
        "{first_page:?} then {second_page:?}"
    );

    // Pause: no new rendering for two refresh periods; resume: it goes on.
    browser.click("#proc-pause").await;
    assert_eq!(
        browser.attr("#proc-pause", "aria-pressed").await.as_deref(),
        Some("true")
    );
    async fn renders(browser: &Browser) -> Option<u64> {
        let count = browser.attr("#processes", "data-renders").await?;
        count.parse().ok()
    }
    let paused_at = renders(&browser).await.expect("a render count");
    let started = Instant::now();
    browser
        .until("two refresh periods paused", || async {
            assert_eq!(
                renders(&browser).await,
                Some(paused_at),
                "refreshed while paused"
            );
            (started.elapsed() > Duration::from_millis(2500)).then_some(())
        })
        .await;
    browser.click("#proc-pause").await;
    browser
        .until("refreshes after resuming", || async {
            (renders(&browser).await? > paused_at).then_some(())
        })
        .await;

    // A row opens its info: stack trace, call trace, every info key.
    let pid = second_page[0]["pid"].as_str().expect("a pid").to_owned();
    browser
        .click(&format!("#processes tbody tr[data-pid=\"{pid}\"] td.name"))
        .await;
    browser
        .until("the row's info in the panel", || async {
            (browser.attr("#info-panel", "data-pid").await? == pid).then_some(())?;
            let stack = browser.text("#info-panel pre.stacktrace").await?;
            stack.contains("Load.Worker").then_some(())
        })
        .await;
    let keys = browser
        .js("return [...document.querySelectorAll('#info-panel dd[data-key]')].map(dd => dd.dataset.key)")
        .await;
    for key in ["pid", "name", "status", "reductions", "memory"] {
        assert!(
            keys.as_array()
                .is_some_and(|keys| keys.iter().any(|k| k == key)),
            "{key} in {keys}"
        );
    }

    // The supervision tree: the load supervisor's 300 workers folded.
    browser.click("#tree-panel summary").await;
    let fold = browser
        .until("the folded workers in the tree", || async {
            let text = browser.text("#tree").await?;
            text.contains("load_worker × 300").then_some(text)
        })
        .await;
    assert!(fold.contains("load_supervisor"), "{fold}");
    browser.screenshot("processes").await;
}

#[tokio::test]
async fn a_page_comes_back_with_the_node_after_a_crash_and_marks_its_lost_sum() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let daemon = Daemon::start();
    let browser = Browser::start().await;
    browser.open(&format!("{}/", daemon.url)).await;
    sum(&browser, "-1", "calculating").await;

    // The node dies under the page (SIGKILL: no close frame, no goodbye);
    // heart starts it again on the same port.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.pid),
        nix::sys::signal::SIGKILL,
    )
    .expect("kill -9 the daemon");
    let line = "#results li[data-input=\"-1\"]";
    browser
        .until("the lost line to say the node restarted", || async {
            let status = browser.attr(line, "data-status").await?;
            let reason = browser.attr(line, "title").await?;
            (status == "error" && reason == "node restarted").then_some(())
        })
        .await;
    browser.connected().await;
    assert_eq!(
        browser.text(line).await.as_deref().map(str::trim),
        Some("∑(1..-1) = error")
    );
    sum(&browser, "5", "15").await;
    browser.screenshot("sum-after-node-restart").await;
}

/// A one-page web server of another origin: answers every request on its
/// port with `html`, for as long as the test runs. Returns its URL.
fn serve_page(html: String) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the page's server");
    let url = format!(
        "http://{}",
        listener.local_addr().expect("the page server's address")
    );
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{html}",
                html.len()
            );
        }
    });
    url
}

fn load_jobs(daemon: &Daemon) -> Value {
    let (status, body) = daemon.get("/api/load");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body).expect("JSON")["jobs"].clone()
}

#[tokio::test]
async fn a_page_of_another_origin_cannot_change_the_load_or_connect() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let daemon = Daemon::start();
    let target = daemon.url.clone();
    let ws = daemon.ws_url();
    // The issue's attack: a no-cors text/plain POST needs no preflight.
    let page = format!(
        r#"<!doctype html><title>evil</title><body><p id="post">pending</p><p id="ws">pending</p><script>
        fetch('{target}/api/load', {{method: 'POST', mode: 'no-cors',
            headers: {{'Content-Type': 'text/plain'}}, body: '{{"jobs":1234,"failure_rate":100}}'}})
          .then(() => {{ document.getElementById('post').textContent = 'sent'; }},
                () => {{ document.getElementById('post').textContent = 'failed'; }});
        const socket = new WebSocket('{ws}');
        socket.onopen = () => {{ document.getElementById('ws').textContent = 'open'; }};
        socket.onerror = () => {{ document.getElementById('ws').textContent = 'refused'; }};
        </script>"#
    );
    let evil = serve_page(page);
    let browser = Browser::start().await;
    browser.client.goto(&evil).await.expect("navigate");
    browser
        .until("the page's POST to be sent", || async {
            let post = browser.text("#post").await?;
            (post != "pending").then_some(())
        })
        .await;
    let ws_state = browser
        .until("the page's WebSocket to settle", || async {
            let ws = browser.text("#ws").await?;
            (ws != "pending").then_some(ws)
        })
        .await;
    assert_eq!(ws_state, "refused");
    browser.screenshot("cross-origin-page").await;
    // The POST reached the daemon and was refused; the load is unchanged.
    let log = daemon.log_containing("refused POST \"/api/load\"");
    let evil_origin = format!("Origin {:?}", evil);
    assert!(
        log.lines()
            .any(|l| l.contains("refused POST \"/api/load\"") && l.contains(&evil_origin)),
        "{log}"
    );
    assert_eq!(load_jobs(&daemon), json!(0));
}

#[tokio::test]
async fn a_rebinding_name_cannot_reach_the_daemon() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let daemon = Daemon::start();
    let browser = Browser::start_with(&["--host-resolver-rules=MAP evil.example 127.0.0.1"]).await;
    let port = daemon.url.rsplit(':').next().expect("a port");
    let evil = format!("http://evil.example:{port}");
    // After a rebinding, the attacker's page is this origin: its pages are refused…
    browser
        .client
        .goto(&format!("{evil}/load"))
        .await
        .expect("navigate");
    let text = browser
        .until("the refusal", || async {
            let body = browser.text("body").await?;
            body.contains("not served here").then_some(body)
        })
        .await;
    assert!(text.contains("421"), "{text}");
    assert!(
        browser.text("#ws-state").await.is_none(),
        "no page, no connection"
    );
    browser.screenshot("rebinding-refused").await;
    // …and so are its same-origin scripts: a JSON POST and a WebSocket.
    let outcome = browser
        .client
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
            const result = {};
            fetch('/api/load', {method: 'POST', headers: {'Content-Type': 'application/json'},
                body: '{"jobs":2000,"failure_rate":100}'})
              .then(r => { result.post = r.status; }, () => { result.post = 'failed'; })
              .then(() => {
                const socket = new WebSocket(`ws://${location.host}/ws`);
                socket.onopen = () => { result.ws = 'open'; done(result); };
                socket.onerror = () => { result.ws = 'refused'; done(result); };
              });"#,
            vec![],
        )
        .await
        .expect("the script runs");
    assert_eq!(outcome, json!({"post": 421, "ws": "refused"}));
    assert_eq!(load_jobs(&daemon), json!(0));
    daemon.log_containing("Host \"evil.example:");
}

/// A web server on another port of 127.0.0.1 (another local user's, in
/// the attack): answers every request with `html` and keeps each request's
/// head. Returns its URL and the heads.
fn serve_recording(html: String) -> (String, Arc<Mutex<Vec<String>>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the other server");
    let url = format!(
        "http://{}",
        listener.local_addr().expect("the other server's address")
    );
    let heads = Arc::new(Mutex::new(Vec::new()));
    let kept = heads.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut head = Vec::new();
            let mut buffer = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buffer[..n]),
                }
            }
            kept.lock()
                .expect("heads")
                .push(String::from_utf8_lossy(&head).into_owned());
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{html}",
                html.len()
            );
        }
    });
    (url, heads)
}

/// Issue 24, the attack: after the owner opened the token URL once, a page
/// served by another local user on another port of 127.0.0.1 received the
/// token in a cookie (browsers do not isolate cookies by port). Now the
/// token lives in the tab's sessionStorage of the daemon's origin: the
/// other server gets nothing, and the daemon's pages still work.
#[tokio::test]
async fn the_token_url_opens_a_page_and_no_server_on_another_port_gets_the_token() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let daemon = Daemon::start_with(&["--access-token"]);
    let status = support::text(&daemon.system(&["status"]));
    let url = status
        .split_whitespace()
        .find(|word| word.contains("token="))
        .unwrap_or_else(|| panic!("no token URL in {status:?}"))
        .to_owned();
    let token = url.rsplit("token=").next().expect("the token").to_owned();
    assert_eq!(token.len(), 64, "{url}");
    let browser = Browser::start().await;
    // Without the token: the page says how to get it, and does not connect.
    browser
        .client
        .goto(&format!("{}/load", daemon.url))
        .await
        .expect("navigate");
    let said = browser
        .until("the page to say how to get the token", || async {
            let body = browser.text("body").await?;
            body.contains("system status").then_some(body)
        })
        .await;
    assert!(said.contains("access token"), "{said}");
    assert_ne!(
        browser.attr("#ws-state", "data-state").await.as_deref(),
        Some("connected")
    );
    browser.screenshot("load-without-token").await;
    // The owner opens the URL `system status` printed: the page connects,
    // and the token leaves the address bar.
    browser.open(&url).await;
    browser
        .until("the token to leave the address bar", || async {
            let address = browser.client.current_url().await.ok()?;
            (address.as_str() == format!("{}/", daemon.url)).then_some(())
        })
        .await;
    sum(&browser, "5", "15").await;
    // Another local user's page, on another port of the same address.
    let page = r#"<!doctype html><title>other</title><p id="done">pending</p><script>
        fetch('/probe', {credentials: 'include'})
          .then(() => { document.getElementById('done').textContent = 'done'; },
                () => { document.getElementById('done').textContent = 'failed'; });
        </script>"#;
    let (other, heads) = serve_recording(page.to_owned());
    browser.client.goto(&other).await.expect("navigate");
    browser
        .until("the other page's own request", || async {
            (browser.text("#done").await? == "done").then_some(())
        })
        .await;
    let heads = heads.lock().expect("heads").clone();
    assert!(heads.len() >= 2, "the page and its fetch: {heads:?}");
    for head in &heads {
        assert!(
            !head.contains(&token),
            "the other port received the token: {head}"
        );
        assert!(
            !head.to_ascii_lowercase().contains("system_token"),
            "the other port received the token's cookie: {head}"
        );
    }
    // Back to the daemon in the same tab, without the token in the URL:
    // the page still has it and works.
    browser.open(&format!("{}/", daemon.url)).await;
    sum(&browser, "6", "21").await;
    browser.screenshot("sum-with-token").await;
}

#[tokio::test]
async fn top_page_marks_a_process_holding_a_scheduler() {
    let _turn = ONE_AT_A_TIME.lock().await;
    // A plugin that passes every check but spins 3 s in one call for 4242.
    let source = plugin_copies::plugin_copy("spins", plugin_copies::SPINS_ON_4242);
    plugin_copies::prebuild("spins", &source);
    // Two schedulers: one is held, the other keeps the page's WebSocket going.
    let daemon = Daemon::start_with(&["--schedulers", "2"]);
    let library = plugin_copies::copy_library("spins");
    let upgrade = daemon.system(&["upgrade", "--plugin", &library.to_string_lossy()]);
    assert!(upgrade.status.success(), "{}", support::text(&upgrade));
    let browser = Browser::start().await;
    browser.open(&format!("{}/top", daemon.url)).await;
    browser.connected().await;
    // One 4242 at a time, from the page's own socket, each after the last.
    browser
        .js("let n = 0;
             const next = () => App.send({ type: 'sum', id: ++n, input: '4242' });
             App.on('sum', (m) => { if (m.status !== 'calculating') next(); });
             next();
             return n;")
        .await;
    let (row, banner) = browser
        .until("a row marked stuck, with the banner", || async {
            let marked = browser
                .js("const tr = document.querySelector('#top tbody tr.stuck');
                     const banner = document.getElementById('stuck-banner');
                     return tr && !banner.hidden
                       ? [tr.querySelector('.name').textContent, banner.textContent] : null;")
                .await;
            let marked = marked.as_array()?;
            Some((
                marked.first()?.as_str()?.to_owned(),
                marked.get(1)?.as_str()?.to_owned(),
            ))
        })
        .await;
    assert_eq!(row, "sum");
    assert!(
        banner.contains("has held a scheduler for") && banner.contains("without yielding"),
        "{banner}"
    );
    browser.screenshot("top-stuck").await;
}
