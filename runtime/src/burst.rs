//! A burst limit for one kind of repetitive log event (crash reports): at
//! most `limit` per second are admitted, the rest are counted so that the
//! log can say how many it suppressed (the BEAM's logger does the same).
//!
//! Lock-free and allocation-free: it is asked on scheduler threads, once per
//! event. It only decides and counts; it never writes the log itself.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

/// The default burst limit, per kind (as the BEAM logger's 500 events/s).
pub const DEFAULT_LIMIT: u32 = 500;

/// The burst limit of one kind of event.
pub struct Burst {
    /// What the summary line calls these events, e.g. "crash reports".
    pub name: &'static str,
    limit: u32,
    /// The current window's second (high 32 bits) and the events admitted
    /// in it (low 32 bits), in one word so that both change together.
    window: AtomicU64,
    /// Events refused since the last [`Burst::take_suppressed`].
    suppressed: AtomicU64,
}

impl Burst {
    pub const fn new(name: &'static str, limit: u32) -> Burst {
        Burst {
            name,
            limit,
            window: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// True if one more event of this kind may be written now; otherwise
    /// counts it as suppressed.
    pub fn admit(&self) -> bool {
        self.admit_at(current_second())
    }

    fn admit_at(&self, second: u32) -> bool {
        let mut window = self.window.load(Relaxed);
        loop {
            let (start, admitted) = ((window >> 32) as u32, window as u32);
            let next = if start != second {
                (u64::from(second) << 32) | 1
            } else if admitted < self.limit {
                window + 1
            } else {
                self.suppressed.fetch_add(1, Relaxed);
                return false;
            };
            match self
                .window
                .compare_exchange_weak(window, next, Relaxed, Relaxed)
            {
                Ok(_) => return true,
                Err(now) => window = now,
            }
        }
    }

    /// The events suppressed since the last call (and resets the count).
    pub fn take_suppressed(&self) -> u64 {
        self.suppressed.swap(0, Relaxed)
    }
}

/// Seconds since the epoch, truncated to 32 bits (only equality matters).
fn current_second() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn admits_the_limit_per_second_and_counts_the_rest() {
        let burst = Burst::new("things", 3);
        let admitted = (0..10).filter(|_| burst.admit_at(7)).count();
        assert_eq!(admitted, 3);
        assert_eq!(burst.take_suppressed(), 7);
        assert_eq!(burst.take_suppressed(), 0);
        // A new second opens a new window.
        assert!(burst.admit_at(8));
        assert_eq!((0..5).filter(|_| burst.admit_at(8)).count(), 2);
        assert_eq!(burst.take_suppressed(), 3);
    }
}
