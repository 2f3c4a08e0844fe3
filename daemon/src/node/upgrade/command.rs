//! `system upgrade`, the client side: builds the plugin (or takes a prebuilt
//! library, or asks for a rollback), sends one `upgrade` request over the
//! admin socket (docs/admin-protocol.md) and prints what the daemon did.
//!
//! It never loads a library itself and never touches the daemon's files:
//! the daemon checks, switches and reports. Any failure is an error (non-zero exit).

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use shell::client::Client;

use crate::os::home::Home;

/// What `system upgrade` was asked to do.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The workspace to build `math-plugin` from (default: found from the current directory up).
    pub source: Option<PathBuf>,
    /// A prebuilt library to load instead of building.
    pub plugin: Option<PathBuf>,
    /// Return to the previous version instead.
    pub rollback: bool,
}

/// Runs `system upgrade` against the daemon of `home`.
pub fn run(home: &Home, options: Options) -> anyhow::Result<()> {
    // Connect first: no point building for a daemon that is not there.
    let mut client = Client::connect(&home.admin_socket())?;
    let request = if options.rollback {
        json!({"type": "upgrade", "rollback": true})
    } else {
        let library = match options.plugin {
            // The daemon runs elsewhere (its working directory is `/`): send an absolute path.
            Some(plugin) => std::path::absolute(&plugin)
                .with_context(|| format!("resolving {}", plugin.display()))?,
            None => {
                let source = match options.source {
                    Some(source) => source,
                    None => super::find_source()?,
                };
                println!(
                    "Building math-plugin (release) from {} ...",
                    source.display()
                );
                let library = super::build_plugin(&source)?;
                println!("Built {}", library.display());
                library
            }
        };
        json!({"type": "upgrade", "plugin": library})
    };
    let reply = client.request(request)?;
    report(&reply, options.rollback)
}

/// Prints a successful reply; turns an error reply into an error.
fn report(reply: &Value, rollback: bool) -> anyhow::Result<()> {
    let text = |name: &str| reply.get(name).and_then(Value::as_str).unwrap_or("?");
    match text("type") {
        "upgraded" => {
            let took_us = reply.get("took_us").and_then(Value::as_u64).unwrap_or(0);
            println!(
                "{} finished successfully.",
                if rollback { "Rollback" } else { "Upgrade" }
            );
            println!(
                "math_plugin {} -> {}, sha256 {}",
                reply.get("from").and_then(Value::as_str).unwrap_or("none"),
                text("to"),
                text("sha256")
            );
            println!("switch took {}", duration(took_us));
            Ok(())
        }
        "error" => bail!("{}", text("message")),
        _ => bail!("the daemon answered something unexpected: {reply}"),
    }
}

/// `850 µs` or `2.345 ms (2345 µs)`.
fn duration(us: u64) -> String {
    if us < 1_000 {
        format!("{us} µs")
    } else {
        format!("{:.3} ms ({us} µs)", us as f64 / 1_000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_in_ms_and_us() {
        assert_eq!(duration(850), "850 µs");
        assert_eq!(duration(2_345), "2.345 ms (2345 µs)");
    }

    #[test]
    fn an_error_reply_is_an_error_with_its_message() {
        let reply = json!({"type": "error", "id": 1, "kind": "upgrade", "message": "boom"});
        let error = report(&reply, false).expect_err("an error reply fails");
        assert_eq!(error.to_string(), "boom");
    }
}
