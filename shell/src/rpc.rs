//! `system rpc '<script>'`: one evaluation on the running daemon, its result
//! printed (as text, or as JSON with `--json`).
//!
//! It prints and reports; the exit code is the binary's business.

use std::path::Path;

use crate::ShellError;
use crate::client::{Client, Outcome};

/// Evaluates `script` once. A failed script is an error.
pub fn run(socket: &Path, script: &str, json: bool) -> Result<(), ShellError> {
    let mut client = Client::connect(socket)?;
    let outcome = client.eval(script, json, |text| {
        if json {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    })?;
    match outcome {
        Outcome::Value { text, value } => {
            if json {
                println!("{value}");
            } else {
                println!("{text}");
            }
            Ok(())
        }
        Outcome::Failed { kind, message } => {
            Err(ShellError::Script(format!("{kind} error: {message}")))
        }
    }
}
