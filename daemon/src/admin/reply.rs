//! The daemon's frames on the admin socket, typed (docs/admin-protocol.md,
//! "Daemon → client"): a session sends one of these, never hand-built JSON,
//! and a test checks that the document names every type, field and error
//! kind they can carry.
//!
//! It only describes frames; reading and writing lines is `frame`'s job.

use serde::Serialize;
use serde_json::Value;

/// One frame from the daemon to a console client.
#[derive(Serialize, Debug)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// Once, at connect.
    Hello {
        node: String,
        version: String,
        session: String,
    },
    /// The running script called `print` or `debug`.
    Output {
        id: u64,
        text: String,
    },
    /// The evaluation succeeded: the value as the console prints it, and as
    /// JSON when the client asked for it.
    Result {
        id: u64,
        text: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<Value>,
    },
    /// An `upgrade` succeeded.
    Upgraded {
        id: u64,
        from: Option<String>,
        to: String,
        version_id: u32,
        sha256: String,
        took_us: u64,
    },
    Error(ErrorReply),
}

/// An `error` frame.
#[derive(Serialize, Debug)]
pub struct ErrorReply {
    /// The request it answers, when it answers one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    pub kind: ErrorKind,
    pub message: String,
    /// For an `upgrade` error: why the code server refused (e.g. `yield`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For a `script` error: where, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

/// What went wrong (docs/admin-protocol.md, "Error kinds").
#[derive(Serialize, Debug, Clone, Copy, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    Script,
    Interrupted,
    Memory,
    Busy,
    Malformed,
    TooLarge,
    Upgrade,
    Refused,
    Shutdown,
    Internal,
}

impl Reply {
    /// An error answering request `id` (or none).
    pub fn error(id: Option<u64>, kind: ErrorKind, message: impl Into<String>) -> Reply {
        Reply::Error(ErrorReply {
            id,
            kind,
            message: message.into(),
            reason: None,
            line: None,
            column: None,
        })
    }

    /// The request this frame answers, if any.
    pub fn id(&self) -> Option<u64> {
        match self {
            Reply::Hello { .. } => None,
            Reply::Output { id, .. } | Reply::Result { id, .. } | Reply::Upgraded { id, .. } => {
                Some(*id)
            }
            Reply::Error(error) => error.id,
        }
    }

    /// The frame's line: JSON and a newline.
    pub fn to_line(&self) -> Vec<u8> {
        // A derived Serialize of strings, numbers and JSON values cannot fail.
        let mut bytes = serde_json::to_vec(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One frame of each type, and an error of each kind with every field.
    fn every_frame() -> Vec<Reply> {
        let kinds = [
            ErrorKind::Script,
            ErrorKind::Interrupted,
            ErrorKind::Memory,
            ErrorKind::Busy,
            ErrorKind::Malformed,
            ErrorKind::TooLarge,
            ErrorKind::Upgrade,
            ErrorKind::Refused,
            ErrorKind::Shutdown,
            ErrorKind::Internal,
        ];
        // Adding a kind without listing it above fails to compile here.
        for kind in kinds {
            match kind {
                ErrorKind::Script
                | ErrorKind::Interrupted
                | ErrorKind::Memory
                | ErrorKind::Busy
                | ErrorKind::Malformed
                | ErrorKind::TooLarge
                | ErrorKind::Upgrade
                | ErrorKind::Refused
                | ErrorKind::Shutdown
                | ErrorKind::Internal => {}
            }
        }
        let mut frames = vec![
            Reply::Hello {
                node: "n".into(),
                version: "v".into(),
                session: "s".into(),
            },
            Reply::Output {
                id: 1,
                text: "t".into(),
            },
            Reply::Result {
                id: 1,
                text: "t".into(),
                value: Some(Value::Null),
            },
            Reply::Upgraded {
                id: 1,
                from: None,
                to: "v2".into(),
                version_id: 2,
                sha256: "0".into(),
                took_us: 1,
            },
        ];
        frames.extend(kinds.map(|kind| {
            Reply::Error(ErrorReply {
                id: Some(1),
                kind,
                message: "m".into(),
                reason: Some("r".into()),
                line: Some(1),
                column: Some(1),
            })
        }));
        // Adding a frame type without an example above fails to compile here.
        for frame in &frames {
            match frame {
                Reply::Hello { .. }
                | Reply::Output { .. }
                | Reply::Result { .. }
                | Reply::Upgraded { .. }
                | Reply::Error(_) => {}
            }
        }
        frames
    }

    /// The row of a Markdown table whose first cell is `` `name` ``.
    fn row<'a>(document: &'a str, name: &str) -> Option<&'a str> {
        document
            .lines()
            .find(|line| line.starts_with(&format!("| `{name}` |")))
    }

    /// The text from `start` to the next `## ` heading.
    fn section<'a>(document: &'a str, start: &str) -> &'a str {
        let from = document
            .find(start)
            .map_or("", |at| &document[at + start.len()..]);
        from.find("\n## ").map_or(from, |end| &from[..end])
    }

    #[test]
    fn the_protocol_document_names_every_frame_field_and_error_kind() {
        let document = include_str!("../../../docs/admin-protocol.md");
        let frames = section(document, "## Daemon → client");
        let kinds = section(frames, "Error kinds:");
        let mut missing = std::collections::BTreeSet::new();
        for frame in every_frame() {
            let json = serde_json::to_value(&frame).expect("a frame serialises");
            let object = json.as_object().expect("a frame is an object");
            let kind = object["type"].as_str().expect("a type").to_owned();
            let Some(line) = row(frames, &kind) else {
                missing.insert(format!("no row for `{kind}`"));
                continue;
            };
            for field in object.keys().filter(|field| *field != "type") {
                if !line.contains(&format!("`{field}`")) {
                    missing.insert(format!("`{kind}` row lacks `{field}`"));
                }
            }
            if let Some(error_kind) = object.get("kind").and_then(Value::as_str)
                && row(kinds, error_kind).is_none()
            {
                missing.insert(format!("no row for error kind `{error_kind}`"));
            }
        }
        assert!(
            missing.is_empty(),
            "docs/admin-protocol.md is behind the code: {missing:?}"
        );
    }
}
