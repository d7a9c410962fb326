//! The dispatcher's notion of "now", injectable so tests (and people replaying a day) can jump
//! hours ahead without waiting for them to pass.
//!
//! Only the planning and due-time decisions read this clock (and, in the demo, receipts'
//! times and how far HubSpot's events are imported: [`Clock::world_ms`]). Real waiting (rate
//! limits, backoff, the scheduler's own timer) always uses the real monotonic clock: a fake
//! clock must never make sendtime call HubSpot faster than HubSpot allows.

use std::path::PathBuf;

use crate::time::{now_ms, parse_instant};

/// Where "now" comes from.
#[derive(Debug, Clone)]
pub enum Clock {
    /// The system clock.
    System,
    /// Read on every call from a file holding an instant ([`parse_instant`]); the system
    /// clock while the file is absent or unreadable. Tests rewrite the file to move time.
    File(PathBuf),
    /// A fixed instant (`sendtime tick --now`).
    Fixed(i64),
    /// Time running `speed` times faster than the system clock from `origin_ms` (`sendtime
    /// demo`: a day of sends in minutes).
    Scaled { origin_ms: i64, speed: u32 },
}

impl Clock {
    /// Epoch milliseconds.
    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::System => now_ms(),
            Clock::Fixed(ms) => *ms,
            Clock::Scaled { origin_ms, speed } => {
                origin_ms + (now_ms() - origin_ms) * i64::from(*speed)
            }
            Clock::File(path) => std::fs::read_to_string(path)
                .ok()
                .and_then(|t| parse_instant(&t))
                .unwrap_or_else(now_ms),
        }
    }

    /// How many times faster than the system clock it runs (1 but for the demo's).
    pub fn speed(&self) -> i64 {
        match self {
            Clock::Scaled { speed, .. } => i64::from(*speed),
            _ => 1,
        }
    }

    /// "Now" outside the dispatcher: what a receipt is stamped with, and up to when HubSpot's
    /// events are imported. The demo's scaled time, which its workflow and HubSpot stand-in
    /// run on (a receipt stamped with the system clock looked a day old two minutes in).
    /// Otherwise the system clock: a test's clock file moves only the dispatcher, which a
    /// test may set behind what it receives.
    pub fn world_ms(&self) -> i64 {
        match self {
            Clock::Scaled { .. } => self.now_ms(),
            _ => now_ms(),
        }
    }

    /// "Now" for the replay window, which real posts arrive in: a fixed instant (`tick
    /// --now`, an operator's knob run on real data) is taken no later than the system clock,
    /// so a future one does not end the replay protection of receipts just received. The
    /// test clocks (a file, a scaled demo) are taken as they are: tests move days ahead to
    /// see receipts archived.
    pub fn replay_now_ms(&self) -> i64 {
        match self {
            Clock::Fixed(ms) => (*ms).min(now_ms()),
            _ => self.now_ms(),
        }
    }
}
