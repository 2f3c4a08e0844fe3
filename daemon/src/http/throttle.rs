//! Log lines that clients can cause: their text clipped and their rate
//! limited (by the runtime's `Burst`, the one rate limit of the workspace),
//! so that a hostile client cannot fill the disk or forge lines.
//!
//! It decides whether and how such a line may be written; it writes nothing
//! itself and knows nothing of what the lines say.

use system_runtime::burst::Burst;

/// Characters of client-supplied text kept in a log line.
pub const CLIP: usize = 100;

/// Writes a warning through `limit` (the runtime's burst limit, one per kind
/// of line): `line` is only built if it is let through, preceded by the
/// count of the lines suppressed before it.
pub fn warn(limit: &Burst, line: impl FnOnce() -> String) {
    if limit.admit() {
        let suppressed = limit.take_suppressed();
        if suppressed > 0 {
            tracing::warn!("suppressed {suppressed} similar warnings ({})", limit.name);
        }
        tracing::warn!("{}", line());
    }
}

/// Client text for a log line: at most [`CLIP`] characters, quoted, with
/// control characters escaped (no forged lines), and the length of the
/// rest if it was longer.
pub fn clip(text: &str) -> String {
    match text.char_indices().nth(CLIP) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?}… ({} bytes)", &text[..end], text.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_keeps_short_text_and_cuts_long_text() {
        assert_eq!(clip("http://a"), "\"http://a\"");
        assert_eq!(clip("a\nb"), "\"a\\nb\"");
        let long = "x".repeat(7000);
        let clipped = clip(&long);
        assert!(clipped.len() < 130, "{clipped}");
        assert!(clipped.ends_with("(7000 bytes)"), "{clipped}");
    }
}
