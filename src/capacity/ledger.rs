//! One connector's planned sends, booked by minute and by day against its [`Capacity`]. The
//! dispatcher rebuilds it from its queue before planning, so what is already planned keeps
//! its time and new receipts fill what is left.

use rustc_hash::FxHashMap;

use super::{CALL, Capacity};
use crate::local_time::{WHOLE_HOUR, local_day};
use crate::time::{HOUR_MS, MINUTE_MS};

/// How far past its start a search for a free minute goes before giving up: a backlog that
/// does not fit in this much time is a configuration problem, not a plan.
const SEARCH_HOURS: i64 = 400 * 24;

/// Booked calls (in [`CALL`] units) of one connector.
#[derive(Debug, Clone)]
pub struct Ledger {
    pub capacity: Capacity,
    /// Epoch minute → booked.
    minutes: FxHashMap<i64, u64>,
    /// Epoch hour → booked (a full hour is skipped without looking at its minutes).
    hours: FxHashMap<i64, u64>,
    /// Day in the capacity's zone → booked.
    days: FxHashMap<i64, u64>,
}

impl Ledger {
    pub fn new(capacity: Capacity) -> Ledger {
        Ledger {
            capacity,
            minutes: FxHashMap::default(),
            hours: FxHashMap::default(),
            days: FxHashMap::default(),
        }
    }

    fn day(&self, at_ms: i64) -> i64 {
        local_day(self.capacity.day_zone, at_ms)
    }

    /// Whether the hour starting at `hour_ms` has room for `cost` in some minute.
    pub fn hour_fits(&self, hour_ms: i64, cost: u64) -> bool {
        let booked = self.hours.get(&(hour_ms / HOUR_MS)).copied().unwrap_or(0);
        booked + cost <= self.capacity.per_minute * 60
            && self.capacity.per_day.is_none_or(|d| {
                // Checked per minute below; here only a day already full is skipped.
                self.days.get(&self.day(hour_ms)).copied().unwrap_or(0) + cost <= d
                    || self.day(hour_ms + HOUR_MS - MINUTE_MS) != self.day(hour_ms)
            })
    }

    /// Whether the minute `at_ms` is in has room for `cost`, and its day too.
    pub fn fits(&self, at_ms: i64, cost: u64) -> bool {
        let minute = at_ms.div_euclid(MINUTE_MS);
        self.minutes.get(&minute).copied().unwrap_or(0) + cost <= self.capacity.per_minute
            && self
                .capacity
                .per_day
                .is_none_or(|d| self.days.get(&self.day(at_ms)).copied().unwrap_or(0) + cost <= d)
    }

    /// Let go of what lies before `now_ms`: nothing is booked in the past, so only the
    /// current minute, hour and day on are ever looked at (a running `serve` kept every past
    /// minute).
    pub fn forget_before(&mut self, now_ms: i64) {
        let (minute, hour) = (now_ms.div_euclid(MINUTE_MS), now_ms.div_euclid(HOUR_MS));
        let day = self.day(now_ms);
        self.minutes.retain(|m, _| *m >= minute);
        self.hours.retain(|h, _| *h >= hour);
        self.days.retain(|d, _| *d >= day);
    }

    /// Book `cost` in the minute `at_ms` is in.
    pub fn book(&mut self, at_ms: i64, cost: u64) {
        *self.minutes.entry(at_ms.div_euclid(MINUTE_MS)).or_default() += cost;
        *self.hours.entry(at_ms.div_euclid(HOUR_MS)).or_default() += cost;
        if self.capacity.per_day.is_some() {
            let day = self.day(at_ms);
            *self.days.entry(day).or_default() += cost;
        }
    }

    /// The first minute at or after `from_ms` with room for `cost` among those `allowed`
    /// leaves in each hour (bit m = minute m of the hour starting at the argument), searching
    /// in order from `start_minute` in the first hour and from minute 0 in the others. Its due
    /// time (`from_ms` itself in `from_ms`'s own minute).
    pub fn first_fit(
        &self,
        from_ms: i64,
        cost: u64,
        mut allowed: impl FnMut(i64) -> u64,
    ) -> Option<i64> {
        let first_hour = from_ms.div_euclid(HOUR_MS) * HOUR_MS;
        for h in 0..SEARCH_HOURS {
            let hour = first_hour + h * HOUR_MS;
            if !self.hour_fits(hour, cost) {
                continue;
            }
            let mut mask = allowed(hour) & WHOLE_HOUR;
            if h == 0 {
                let past = (from_ms - hour) / MINUTE_MS;
                mask &= !((1u64 << past) - 1);
            }
            while mask != 0 {
                let m = mask.trailing_zeros() as i64;
                let at = (hour + m * MINUTE_MS).max(from_ms);
                if self.fits(at, cost) {
                    return Some(at);
                }
                mask &= mask - 1;
            }
        }
        None
    }

    /// Whole calls booked in each of `hours` hours from the one `from_ms` is in (rounded up).
    pub fn per_hour(&self, from_ms: i64, hours: usize) -> Vec<u64> {
        let first = from_ms.div_euclid(HOUR_MS);
        (0..hours as i64)
            .map(|h| {
                self.hours
                    .get(&(first + h))
                    .copied()
                    .unwrap_or(0)
                    .div_ceil(CALL)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Tz;

    fn ledger(per_minute: u64, per_day: Option<u64>) -> Ledger {
        Ledger::new(Capacity {
            per_minute: per_minute * CALL,
            per_day: per_day.map(|d| d * CALL),
            day_zone: Tz::UTC,
        })
    }

    #[test]
    fn a_full_minute_sends_the_next_booking_on() {
        let mut l = ledger(2, None);
        let from = 10 * HOUR_MS + 30 * MINUTE_MS + 5_000;
        for expected in [from, from, 10 * HOUR_MS + 31 * MINUTE_MS] {
            let at = l.first_fit(from, CALL, |_| WHOLE_HOUR).unwrap();
            assert_eq!(at, expected);
            l.book(at, CALL);
        }
        // Half-calls share a minute two to one.
        let mut l = ledger(1, None);
        for _ in 0..2 {
            let at = l.first_fit(0, CALL / 2, |_| WHOLE_HOUR).unwrap();
            assert_eq!(at, 0);
            l.book(at, CALL / 2);
        }
        assert!(!l.fits(0, 1));
    }

    #[test]
    fn the_daily_budget_moves_bookings_to_the_next_day() {
        let mut l = ledger(100, Some(3));
        let mut days = Vec::new();
        for _ in 0..5 {
            let at = l.first_fit(0, CALL, |_| WHOLE_HOUR).unwrap();
            l.book(at, CALL);
            days.push(at / crate::time::DAY_MS);
        }
        assert_eq!(days, [0, 0, 0, 1, 1]);
        assert_eq!(l.per_hour(0, 2), [3, 0]);
    }

    /// Past minutes are let go, and what is booked from now on still counts: the current
    /// minute, hour and day keep their bookings.
    #[test]
    fn the_past_is_let_go_and_the_present_kept() {
        let mut l = ledger(1, Some(3));
        let day = crate::time::DAY_MS;
        for at in [MINUTE_MS, 2 * HOUR_MS, day + 5 * MINUTE_MS] {
            l.book(at, CALL);
        }
        let now = 2 * HOUR_MS + 30_000;
        l.forget_before(now);
        assert_eq!((l.minutes.len(), l.hours.len(), l.days.len()), (2, 2, 2));
        // The current minute is full, and today has one call left of three.
        assert!(!l.fits(now, CALL));
        assert_eq!(
            l.first_fit(now, CALL, |_| WHOLE_HOUR),
            Some(2 * HOUR_MS + MINUTE_MS)
        );
        l.book(2 * HOUR_MS + MINUTE_MS, CALL);
        assert_eq!(l.first_fit(now, CALL, |_| WHOLE_HOUR), Some(day));
    }

    #[test]
    fn only_allowed_minutes_are_taken() {
        let l = ledger(1, None);
        let at = l.first_fit(0, CALL, |h| if h == 0 { 0 } else { 1 << 45 });
        assert_eq!(at, Some(HOUR_MS + 45 * MINUTE_MS));
    }
}
