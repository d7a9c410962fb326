//! Calls the dispatcher has made, per connector and minute, for the last two days. A ledger
//! built again (at start-up, for a new config, or after receipts went back in the queue)
//! books only what is queued; a connector's daily budget must also count what already went
//! out today.

use std::collections::{BTreeMap, HashMap};

use chrono_tz::Tz;

use crate::local_time::local_day;
use crate::time::{DAY_MS, HOUR_MS, MINUTE_MS};

/// How long calls are kept: the account's day, in any zone, lies within the last two.
const KEEP_MS: i64 = 2 * DAY_MS;
/// How far after now a call's stamp counts toward today: a day, in any zone (25 hours).
const AHEAD_MS: i64 = DAY_MS + HOUR_MS;

#[derive(Debug, Default)]
pub struct Spent {
    /// Connector → epoch minute → calls.
    calls: HashMap<String, BTreeMap<i64, u64>>,
}

impl Spent {
    pub fn record(&mut self, connector: &str, at_ms: i64, calls: u64) {
        let minutes = match self.calls.get_mut(connector) {
            Some(m) => m,
            None => self.calls.entry(connector.to_string()).or_default(),
        };
        *minutes.entry(at_ms.div_euclid(MINUTE_MS)).or_default() += calls;
    }

    /// Calls made through `connector` on the day (in `zone`) that `now_ms` is in, and those
    /// stamped up to a day after it: made while the clock was ahead, they must not leave the
    /// budget spent twice once it is set back (further ahead, they would hold every day up
    /// to their stamp).
    pub fn today(&self, connector: &str, zone: Tz, now_ms: i64) -> u64 {
        let day = local_day(zone, now_ms);
        let last = (now_ms + AHEAD_MS).div_euclid(MINUTE_MS);
        self.calls.get(connector).map_or(0, |minutes| {
            minutes
                .range((now_ms - KEEP_MS).div_euclid(MINUTE_MS)..=last)
                .filter(|(m, _)| local_day(zone, *m * MINUTE_MS) >= day)
                .map(|(_, n)| n)
                .sum()
        })
    }

    /// Calls made through `connector` in the minute `now_ms` is in.
    pub fn this_minute(&self, connector: &str, now_ms: i64) -> u64 {
        self.calls
            .get(connector)
            .and_then(|m| m.get(&now_ms.div_euclid(MINUTE_MS)))
            .copied()
            .unwrap_or(0)
    }

    /// Calls made through `connector` in the hour `now_ms` is in, up to its minute.
    pub fn this_hour(&self, connector: &str, now_ms: i64) -> u64 {
        let first = now_ms.div_euclid(HOUR_MS) * HOUR_MS / MINUTE_MS;
        self.calls.get(connector).map_or(0, |minutes| {
            minutes
                .range(first..=now_ms.div_euclid(MINUTE_MS))
                .map(|(_, n)| n)
                .sum()
        })
    }

    /// Let go of calls older than two days.
    pub fn forget_before(&mut self, now_ms: i64) {
        let first = (now_ms - KEEP_MS).div_euclid(MINUTE_MS);
        for minutes in self.calls.values_mut() {
            *minutes = minutes.split_off(&first);
        }
        self.calls.retain(|_, m| !m.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn today_is_the_accounts_day_and_this_hour_the_clocks() {
        let mut s = Spent::default();
        // 2026-01-01 23:30 UTC is 2026-01-01 18:30 in New York, 2026-01-02 in Tokyo.
        let late = 1_767_225_600_000 + 23 * HOUR_MS + 30 * MINUTE_MS;
        s.record("a", late, 1);
        s.record("a", late + HOUR_MS, 1);
        let (ny, tokyo): (Tz, Tz) = (
            "America/New_York".parse().unwrap(),
            "Asia/Tokyo".parse().unwrap(),
        );
        assert_eq!(s.today("a", Tz::UTC, late + HOUR_MS), 1);
        // 00:30's call, stamped after 23:30 (the clock went back since), counts today too.
        assert_eq!(s.today("a", Tz::UTC, late), 2);
        assert_eq!(s.today("a", ny, late - DAY_MS), 2);
        // Stamped three days ahead: the days between are not spent by it.
        let mut ahead = Spent::default();
        ahead.record("a", late + 3 * DAY_MS, 5);
        assert_eq!(ahead.today("a", Tz::UTC, late), 0);
        assert_eq!(
            ahead.today("a", Tz::UTC, late + 2 * DAY_MS + 2 * HOUR_MS),
            5
        );
        assert_eq!(s.today("a", ny, late + HOUR_MS), 2);
        assert_eq!(s.today("a", tokyo, late + HOUR_MS), 2);
        assert_eq!(s.today("b", Tz::UTC, late), 0);
        // The hour's calls up to now: 23:30's, not 00:30's of the next hour.
        s.record("a", late - 20 * MINUTE_MS, 3);
        assert_eq!(s.this_hour("a", late), 4);
        assert_eq!(s.this_hour("a", late + HOUR_MS), 1);
        assert_eq!(s.this_minute("a", late), 1);
        s.forget_before(late + 2 * DAY_MS + 30 * MINUTE_MS);
        assert_eq!(s.calls["a"].len(), 1);
        s.forget_before(late + 3 * DAY_MS);
        assert!(s.calls.is_empty());
    }
}
