//! The server's messages on a page's WebSocket, typed (docs/protocol.md,
//! "Server → client"): a connection sends one of these, never hand-built
//! JSON, and a test checks that the document names every message type and
//! every field they carry.
//!
//! It only describes messages; deciding what to send is the connection's job.

use serde::Serialize;

use crate::node::metrics::Sample;

/// One message from the server to a page.
#[derive(Serialize, Debug)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// Once, at connect.
    Hello {
        node: String,
        version: String,
        schedulers: usize,
        max_schedulers: usize,
        started_at: u64,
    },
    /// A line of the sum page: its id, what was typed, and where it is.
    Sum {
        id: i64,
        input: String,
        #[serde(flatten)]
        status: SumStatus,
    },
    History {
        samples: Vec<Sample>,
    },
    Metrics {
        sample: Sample,
    },
    Load {
        jobs: u64,
        failure_rate: f64,
    },
    /// Schedulers online now, of the most that may be.
    Schedulers {
        online: usize,
        max: usize,
    },
    Top {
        rows: Vec<TopRow>,
        by_memory: Vec<TopRow>,
    },
    Info {
        pid: String,
        info: Option<Box<ProcessInfo>>,
        stacktrace: Vec<String>,
        trace: Vec<String>,
    },
    Trace {
        pid: String,
        events: Vec<TraceEvent>,
        ended: &'static str,
    },
    Profile {
        pid: String,
        ms: u64,
        samples: usize,
        functions: Vec<FunctionSamples>,
    },
    Kill {
        pid: String,
        killed: bool,
    },
    Error {
        message: String,
        /// The process a refused `info`, `profile`, `trace` or `kill` named.
        #[serde(skip_serializing_if = "Option::is_none")]
        pid: Option<String>,
    },
}

/// Where a sum is: each status with its one field.
#[derive(Serialize, Debug)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SumStatus {
    Calculating { pid: String },
    Done { result: String },
    Error { reason: String },
    Invalid { reason: String },
}

/// One row of the /top page.
#[derive(Serialize, Debug)]
pub struct TopRow {
    pub pid: String,
    pub name: String,
    pub cpu: f64,
    pub reductions: u64,
    pub memory: u64,
    pub stuck_ms: Option<u64>,
    pub stuck_stack: Vec<String>,
}

/// What `info` says of a live process.
#[derive(Serialize, Debug)]
pub struct ProcessInfo {
    pub pid: String,
    pub name: String,
    pub initial_call: String,
    pub status: &'static str,
    pub priority: &'static str,
    pub reductions: u64,
    pub cpu_time_us: u64,
    pub memory: u64,
    pub allocated: u64,
    pub memory_limit: u64,
    pub current_function: String,
    pub parent: Option<String>,
    pub links: Vec<String>,
    pub monitors: Vec<String>,
    pub monitored_by: Vec<String>,
    pub message_queue_len: usize,
    pub spawned_at_ms: u64,
    pub plugin_version: Option<u32>,
}

/// One call a trace saw.
#[derive(Serialize, Debug)]
pub struct TraceEvent {
    pub pid: String,
    pub call: String,
    pub result: Option<String>,
    pub at_ms: u64,
}

/// One function of a profile and the samples it was innermost in.
#[derive(Serialize, Debug)]
pub struct FunctionSamples {
    pub function: String,
    pub samples: usize,
}

impl Reply {
    /// An `error` about no process in particular.
    pub fn error(message: impl Into<String>) -> Reply {
        Reply::Error {
            message: message.into(),
            pid: None,
        }
    }

    /// An `error` about `pid`.
    pub fn error_about(pid: impl ToString, message: impl Into<String>) -> Reply {
        Reply::Error {
            message: message.into(),
            pid: Some(pid.to_string()),
        }
    }

    /// The message's text frame.
    pub fn to_text(&self) -> String {
        // A derived Serialize of strings, numbers and options cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// One message of each type, every optional field present.
    fn every_message() -> Vec<Reply> {
        let row = || TopRow {
            pid: "#PID<0.1.0>".into(),
            name: "n".into(),
            cpu: 1.0,
            reductions: 1,
            memory: 1,
            stuck_ms: Some(1),
            stuck_stack: vec!["f".into()],
        };
        let sum = |status| Reply::Sum {
            id: 1,
            input: "5".into(),
            status,
        };
        let messages = vec![
            Reply::Hello {
                node: "n".into(),
                version: "v".into(),
                schedulers: 1,
                max_schedulers: 2,
                started_at: 1,
            },
            sum(SumStatus::Calculating { pid: "p".into() }),
            sum(SumStatus::Done {
                result: "15".into(),
            }),
            sum(SumStatus::Error { reason: "r".into() }),
            sum(SumStatus::Invalid { reason: "r".into() }),
            Reply::History {
                samples: vec![Sample::default()],
            },
            Reply::Metrics {
                sample: Sample::default(),
            },
            Reply::Load {
                jobs: 1,
                failure_rate: 0.0,
            },
            Reply::Schedulers { online: 1, max: 2 },
            Reply::Top {
                rows: vec![row()],
                by_memory: vec![row()],
            },
            Reply::Info {
                pid: "p".into(),
                info: Some(Box::new(ProcessInfo {
                    pid: "p".into(),
                    name: "n".into(),
                    initial_call: "c".into(),
                    status: "running",
                    priority: "normal",
                    reductions: 1,
                    cpu_time_us: 1,
                    memory: 1,
                    allocated: 1,
                    memory_limit: 1,
                    current_function: "f".into(),
                    parent: Some("p".into()),
                    links: vec!["p".into()],
                    monitors: vec!["p".into()],
                    monitored_by: vec!["p".into()],
                    message_queue_len: 1,
                    spawned_at_ms: 1,
                    plugin_version: Some(1),
                })),
                stacktrace: vec!["f".into()],
                trace: vec!["f".into()],
            },
            Reply::Trace {
                pid: "p".into(),
                events: vec![TraceEvent {
                    pid: "p".into(),
                    call: "c".into(),
                    result: Some("r".into()),
                    at_ms: 1,
                }],
                ended: "calls",
            },
            Reply::Profile {
                pid: "p".into(),
                ms: 1,
                samples: 1,
                functions: vec![FunctionSamples {
                    function: "f".into(),
                    samples: 1,
                }],
            },
            Reply::Kill {
                pid: "p".into(),
                killed: true,
            },
            Reply::error_about("p", "m"),
        ];
        // Adding a message type without an example above fails to compile here.
        for message in &messages {
            match message {
                Reply::Hello { .. }
                | Reply::Sum { .. }
                | Reply::History { .. }
                | Reply::Metrics { .. }
                | Reply::Load { .. }
                | Reply::Schedulers { .. }
                | Reply::Top { .. }
                | Reply::Info { .. }
                | Reply::Trace { .. }
                | Reply::Profile { .. }
                | Reply::Kill { .. }
                | Reply::Error { .. } => {}
            }
        }
        messages
    }

    /// The text from `start` to the next `## ` heading.
    fn section<'a>(document: &'a str, start: &str) -> &'a str {
        let from = document
            .find(start)
            .map_or("", |at| &document[at + start.len()..]);
        from.find("\n## ").map_or(from, |end| &from[..end])
    }

    /// Every key of the objects nested in `value` (not `value`'s own).
    fn nested_keys(value: &Value, out: &mut Vec<String>) {
        let children: Vec<&Value> = match value {
            Value::Object(object) => object.values().collect(),
            Value::Array(items) => items.iter().collect(),
            _ => return,
        };
        for child in children {
            if let Value::Object(object) = child {
                out.extend(object.keys().cloned());
            }
            nested_keys(child, out);
        }
    }

    #[test]
    fn the_protocol_document_names_every_message_and_field() {
        let document = include_str!("../../../../docs/protocol.md");
        let messages = section(document, "## Server → client");
        let mut missing = std::collections::BTreeSet::new();
        for message in every_message() {
            let json = serde_json::to_value(&message).expect("a message serialises");
            let kind = json["type"].as_str().expect("a type").to_owned();
            let Some(row) = messages
                .lines()
                .find(|line| line.starts_with(&format!("| `{kind}` |")))
            else {
                missing.insert(format!("no row for `{kind}`"));
                continue;
            };
            for (field, value) in json.as_object().expect("an object") {
                if field != "type" && !row.contains(&format!("`{field}`")) {
                    missing.insert(format!("the `{kind}` row lacks `{field}`"));
                }
                if field == "status"
                    && let Some(status) = value.as_str()
                    && !row.contains(&format!("`{status}`"))
                {
                    missing.insert(format!("the `{kind}` row lacks status `{status}`"));
                }
            }
            // Fields of nested objects: in the row or the text after the table.
            let mut keys = Vec::new();
            nested_keys(&json, &mut keys);
            for key in keys {
                if !messages.contains(&format!("`{key}`")) {
                    missing.insert(format!("`{kind}` carries `{key}`, named nowhere"));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "docs/protocol.md is behind the code: {missing:#?}"
        );
    }
}
