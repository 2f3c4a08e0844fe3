//! `system remote_console`: an interactive shell on the running daemon.
//! rustyline with history, completion and multi-line input; each line is
//! evaluated in the daemon's console session, which keeps its variables.
//!
//! Ctrl-C interrupts a running script (or clears the line), Ctrl-D leaves.
//! A failed script is printed and the shell goes on; only a lost
//! connection ends it with an error.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::{Config, Editor};

use crate::ShellError;
use crate::client::{self, Client, Outcome};
use crate::input::ConsoleHelper;

/// Lines kept in the history file.
const HISTORY_SIZE: usize = 1_000;

/// Runs the shell until Ctrl-D (or `exit`).
pub fn run(socket: &Path, history: &Path) -> Result<(), ShellError> {
    let mut client = Client::connect(socket)?;
    let config = Config::builder()
        .max_history_size(HISTORY_SIZE)?
        .auto_add_history(false)
        .build();
    let mut editor: Editor<ConsoleHelper, FileHistory> = Editor::with_config(config)?;
    editor.set_helper(Some(ConsoleHelper));
    // After the editor, which installs a SIGINT handler of its own: in raw
    // mode Ctrl-C is a key, outside it (while a script runs) it is ours.
    client::catch_ctrl_c()?;
    // A missing history file is the normal first run.
    let _ = editor.load_history(history);
    println!(
        "Remote console on {} (session {}). Ctrl-C interrupts, Ctrl-D leaves.",
        client.node, client.session
    );
    let prompt = format!("{}> ", client.node);
    loop {
        let line = match editor.readline(&prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(error) => return Err(error.into()),
        };
        let script = line.trim();
        if script.is_empty() {
            continue;
        }
        if script == "exit" || script == "quit" {
            break;
        }
        let _ = editor.add_history_entry(script);
        save_history(&mut editor, history);
        match client.eval(script, false, |text| println!("{text}"))? {
            Outcome::Value { text, .. } => println!("{text}"),
            Outcome::Failed { kind, message } if kind == "interrupted" => {
                println!("** interrupted: {message}")
            }
            Outcome::Failed { kind, message } => println!("** {kind} error: {message}"),
        }
    }
    Ok(())
}

/// Saves the history, readable by its owner only; a failure is reported, not fatal.
fn save_history(editor: &mut Editor<ConsoleHelper, FileHistory>, history: &Path) {
    let _ = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(history);
    if let Err(error) = editor.save_history(history) {
        eprintln!(
            "(cannot save the history to {}: {error})",
            history.display()
        );
    }
}
