//! What the line editor knows about the console language: tab completion
//! of the API's names, and "the input goes on" while brackets are open.
//!
//! It looks at text only; it must not talk to the daemon.

use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Helper};

/// The names tab completes, as they are typed.
pub const API_NAMES: &[&str] = &[
    "Process.list()",
    "Process.info(",
    "Process.kill(",
    "Process.exit(",
    "Process.whereis(",
    "Process.alive(",
    "Process.count()",
    "Runtime.top()",
    "Runtime.trace(",
    "System.info()",
    "Load.get()",
    "Load.set(",
    "Code.versions()",
    "Code.purge()",
    "info(",
    "trace(",
    "kill(",
    "top()",
    "pid(",
    "hd(",
    "whereis(",
    "help()",
    ":current_stacktrace",
    ":current_function",
    ":reductions",
    ":status",
    ":kill",
    ":normal",
];

/// The console's rustyline helper.
pub struct ConsoleHelper;

impl Completer for ConsoleHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let start = before
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.' || c == ':'))
            .map_or(0, |i| i + 1);
        let word = &before[start..];
        if word.is_empty() {
            return Ok((pos, Vec::new()));
        }
        let candidates = API_NAMES
            .iter()
            .filter(|name| name.starts_with(word))
            .map(|name| Pair {
                display: (*name).to_owned(),
                replacement: (*name).to_owned(),
            })
            .collect();
        Ok((start, candidates))
    }
}

impl Hinter for ConsoleHelper {
    type Hint = String;
}

impl Highlighter for ConsoleHelper {}

impl Validator for ConsoleHelper {
    fn validate(&self, ctx: &mut ValidationContext<'_>) -> rustyline::Result<ValidationResult> {
        Ok(if open_brackets(ctx.input()) > 0 {
            ValidationResult::Incomplete
        } else {
            ValidationResult::Valid(None)
        })
    }
}

impl Helper for ConsoleHelper {}

/// Brackets opened and not closed, outside strings and comments.
pub fn open_brackets(input: &str) -> i64 {
    let mut depth = 0i64;
    let mut chars = input.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                if c == '\\' && q != '`' {
                    chars.next();
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '"' | '`' | '\'' => quote = Some(c),
                '/' if chars.peek() == Some(&'/') => {
                    for c in chars.by_ref() {
                        if c == '\n' {
                            break;
                        }
                    }
                }
                '(' | '[' | '{' => depth += 1,
                ')' | ']' | '}' => depth -= 1,
                _ => {}
            },
        }
    }
    depth
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_open_brackets_outside_strings_and_comments() {
        assert_eq!(open_brackets("Process.list()"), 0);
        assert_eq!(open_brackets("fn f(x) {"), 1);
        assert_eq!(open_brackets("let s = \"({[\"; ["), 1);
        assert_eq!(open_brackets("// ( comment\n1"), 0);
        assert_eq!(open_brackets("#{a: [1,\n2]}"), 0);
    }

    #[test]
    fn completes_api_names_and_atoms() {
        let history = rustyline::history::DefaultHistory::new();
        let context = Context::new(&history);
        let complete = |line: &str| {
            let (start, pairs) = ConsoleHelper
                .complete(line, line.len(), &context)
                .expect("completion");
            (
                start,
                pairs.into_iter().map(|p| p.replacement).collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            complete("Runtime.to"),
            (0, vec!["Runtime.top()".to_owned()])
        );
        assert_eq!(
            complete("Process.info(pid, :current_s"),
            (18, vec![":current_stacktrace".to_owned()])
        );
        assert_eq!(complete("Process.kill(pid, :ki").1, [":kill"]);
    }
}
