//! Log lines that could repeat on every request or commit (a missing secret, a full disk): at
//! most one a minute, with the count of those suppressed in between.

use std::time::{Duration, Instant};

/// How often a repeating line is logged at most.
pub const EVERY: Duration = Duration::from_secs(60);

/// One repeating line's state.
#[derive(Debug, Default, Clone, Copy)]
pub struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// `Some(suppressed since the last line)` when the line should be logged now; `None` (and
    /// one more suppressed) otherwise.
    pub fn due(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < EVERY)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }

    /// Whether its line was logged within [`EVERY`]: a new throttle would log the next at
    /// once.
    pub fn recent(&self) -> bool {
        self.last.is_some_and(|last| last.elapsed() < EVERY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_a_minute_with_the_count_in_between() {
        let mut t = Throttle::default();
        assert_eq!(t.due(), Some(0));
        assert_eq!(t.due(), None);
        assert_eq!(t.due(), None);
        assert!(t.recent());
        t.last = Some(Instant::now() - EVERY);
        assert!(!t.recent());
        assert_eq!(t.due(), Some(2));
    }
}
