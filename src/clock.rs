//! The dispatcher's notion of "now", injectable so tests (and people replaying a day) can jump
//! hours ahead without waiting for them to pass.
//!
//! Only the planning and due-time decisions read this clock. Real waiting (rate limits,
//! backoff, the scheduler's own timer) always uses the real monotonic clock: a fake clock must
//! never make sendtime call HubSpot faster than HubSpot allows.

use std::path::PathBuf;

/// Where "now" comes from.
#[derive(Debug, Clone)]
pub enum Clock {
    /// The system clock.
    System,
    /// Read on every call from a file holding an instant (epoch ms or RFC 3339); the system
    /// clock while the file is absent or unreadable. Tests rewrite the file to move time.
    File(PathBuf),
    /// A fixed instant (`sendtime tick --now`).
    Fixed(i64),
}

impl Clock {
    /// Epoch milliseconds.
    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::System => system_ms(),
            Clock::Fixed(ms) => *ms,
            Clock::File(path) => std::fs::read_to_string(path)
                .ok()
                .and_then(|t| parse_instant(t.trim()))
                .unwrap_or_else(system_ms),
        }
    }
}

fn system_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// An instant as epoch milliseconds or RFC 3339.
pub fn parse_instant(text: &str) -> Option<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Some(ms);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}
