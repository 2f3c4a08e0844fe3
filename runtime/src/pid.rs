//! Process identifiers: unique for the life of the daemon, printed and parsed
//! the way the BEAM prints them (`#PID<0.N.0>`).
//!
//! A pid is only a number; it must not carry or imply any state of the process.

use std::fmt;
use std::str::FromStr;

/// A process identifier. Never reused while the daemon runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pid(pub u64);

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#PID<0.{}.0>", self.0)
    }
}

/// Why a text is not a pid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a pid: {0:?} (expected 0.N.0, <0.N.0> or #PID<0.N.0>)")]
pub struct ParsePidError(String);

impl FromStr for Pid {
    type Err = ParsePidError;

    /// Accepts `0.N.0`, `<0.N.0>` and `#PID<0.N.0>`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || ParsePidError(text.to_owned());
        let trimmed = text.trim();
        let inner = trimmed.strip_prefix("#PID").unwrap_or(trimmed);
        let inner = match inner.strip_prefix('<') {
            Some(rest) => rest.strip_suffix('>').ok_or_else(err)?,
            None => inner,
        };
        let mut parts = inner.split('.');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("0"), Some(n), Some("0"), None) => n.parse().map(Pid).map_err(|_| err()),
            _ => Err(err()),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn prints_and_parses_every_form() {
        let pid = Pid(812);
        assert_eq!(pid.to_string(), "#PID<0.812.0>");
        for text in ["0.812.0", "<0.812.0>", "#PID<0.812.0>", " 0.812.0 "] {
            assert_eq!(text.parse::<Pid>(), Ok(pid), "{text}");
        }
        for bad in [
            "",
            "812",
            "1.812.0",
            "<0.812.0",
            "0.x.0",
            "0.812.0.0",
            "#PID0.1.0>",
        ] {
            assert!(bad.parse::<Pid>().is_err(), "{bad}");
        }
    }
}
