//! Log lines that clients can cause: their text clipped and their rate
//! limited, so that a hostile client cannot fill the disk or forge lines.
//!
//! It decides whether and how such a line may be written; it writes nothing
//! itself and knows nothing of what the lines say.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Characters of client-supplied text kept in a log line.
pub const CLIP: usize = 100;

/// At most `per_second` lines a second; the others are counted, and the
/// count is reported with the next line that is let through.
pub struct Throttle {
    per_second: u32,
    window: Mutex<Window>,
}

struct Window {
    started: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl Throttle {
    pub const fn new(per_second: u32) -> Throttle {
        Throttle {
            per_second,
            window: Mutex::new(Window {
                started: None,
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// `Some(n)` if a line may be written now, `n` being how many were
    /// suppressed since the last one written; `None` if this one must not.
    pub fn allow(&self) -> Option<u64> {
        let mut window = crate::lock(&self.window);
        let now = Instant::now();
        if window
            .started
            .is_none_or(|started| now.duration_since(started) >= Duration::from_secs(1))
        {
            window.started = Some(now);
            window.logged = 0;
        }
        if window.logged >= self.per_second {
            window.suppressed += 1;
            return None;
        }
        window.logged += 1;
        Some(std::mem::take(&mut window.suppressed))
    }
}

/// Writes a warning through `throttle`: `line` is only built if it is let
/// through, preceded by the count of the lines suppressed before it.
pub fn warn(throttle: &Throttle, line: impl FnOnce() -> String) {
    if let Some(suppressed) = throttle.allow() {
        if suppressed > 0 {
            tracing::warn!("suppressed {suppressed} similar warnings");
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

    #[test]
    fn throttle_lets_through_n_a_second_and_counts_the_rest() {
        let throttle = Throttle::new(3);
        let let_through = (0..10).filter(|_| throttle.allow().is_some()).count();
        assert_eq!(let_through, 3);
        let window = crate::lock(&throttle.window);
        assert_eq!(window.suppressed, 7);
    }
}
