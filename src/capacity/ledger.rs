//! One connector's planned sends, booked by minute and by day against its [`Capacity`]. The
//! dispatcher rebuilds it from its queue before planning, so what is already planned keeps
//! its time and new receipts fill what is left.

use std::collections::BTreeSet;

use rustc_hash::FxHashMap;

use super::{CALL, Capacity, Cost};
use crate::local_time::{WHOLE_HOUR, local_day, offset_ms};
use crate::time::{DAY_MS, HOUR_MS, MINUTE_MS};

/// How far past its start a search for a free minute goes before giving up: a backlog that
/// does not fit in this much time is a configuration problem, not a plan.
pub const SEARCH_DAYS: i64 = 400;
const SEARCH_HOURS: i64 = SEARCH_DAYS * 24;

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
    /// (Epoch minute, batch) → contacts booked in that minute's batch ([`Cost::Batched`]).
    batches: FxHashMap<(i64, u64), u64>,
    /// Batch → the epoch minutes whose batch has room: a contact joining one costs nothing,
    /// in a full hour or on a full day too.
    open: FxHashMap<u64, BTreeSet<i64>>,
    /// (Epoch hour, calls): the calls already made in the current hour, before its minute,
    /// for the forecast (the minutes before are past, so planning needs only the minute's).
    made: (i64, u64),
}

impl Ledger {
    pub fn new(capacity: Capacity) -> Ledger {
        Ledger {
            capacity,
            minutes: FxHashMap::default(),
            hours: FxHashMap::default(),
            days: FxHashMap::default(),
            batches: FxHashMap::default(),
            open: FxHashMap::default(),
            made: (0, 0),
        }
    }

    fn day(&self, at_ms: i64) -> i64 {
        local_day(self.capacity.day_zone, at_ms)
    }

    /// What booking `cost` in `minute` adds: a batched contact that joins the minute's batch
    /// adds nothing.
    fn charge(&self, minute: i64, cost: Cost) -> u64 {
        match cost {
            Cost::Call => CALL,
            Cost::Batched { batch, size } => {
                let n = self.batches.get(&(minute, batch)).copied().unwrap_or(0);
                if n % size == 0 { CALL } else { 0 }
            }
        }
    }

    /// Whether the day of the hour starting at `hour_ms` is full for a new call, and all of
    /// the hour is in that day.
    fn day_full(&self, hour_ms: i64) -> bool {
        self.capacity.per_day.is_some_and(|d| {
            let day = self.day(hour_ms);
            self.days.get(&day).copied().unwrap_or(0) + CALL > d
                && self.day(hour_ms + HOUR_MS - MINUTE_MS) == day
        })
    }

    /// Whether the hour starting at `hour_ms` may have room for `cost` in some minute: a new
    /// call, or a place in one of its minutes' batches.
    pub fn hour_fits(&self, hour_ms: i64, cost: Cost) -> bool {
        (self.hour_has_room(hour_ms) && !(cost.budgeted() && self.day_full(hour_ms)))
            || self.joinable(cost, hour_ms, hour_ms + HOUR_MS).is_some()
    }

    /// The first minute from `from_ms` to before `until_ms` whose batch `cost` can join.
    fn joinable(&self, cost: Cost, from_ms: i64, until_ms: i64) -> Option<i64> {
        let Cost::Batched { batch, .. } = cost else {
            return None;
        };
        let (from, until) = (
            from_ms.div_euclid(MINUTE_MS),
            until_ms.div_euclid(MINUTE_MS),
        );
        (from < until)
            .then(|| self.open.get(&batch)?.range(from..until).next().copied())
            .flatten()
    }

    /// [`Ledger::hour_fits`] but for the day.
    fn hour_has_room(&self, hour_ms: i64) -> bool {
        let booked = self.hours.get(&(hour_ms / HOUR_MS)).copied().unwrap_or(0);
        booked + CALL <= self.capacity.per_minute.saturating_mul(60)
    }

    /// Whether the minute `at_ms` is in has room for `cost`, and its day too. Joining a batch
    /// already paid for costs nothing, so it fits though calls made since (callbacks, which
    /// the budget does not hold, retries) put the minute or the day over.
    pub fn fits(&self, at_ms: i64, cost: Cost) -> bool {
        let minute = at_ms.div_euclid(MINUTE_MS);
        let charge = self.charge(minute, cost);
        if charge == 0 {
            return true;
        }
        self.minutes.get(&minute).copied().unwrap_or(0) + charge <= self.capacity.per_minute
            && (!cost.budgeted()
                || self.capacity.per_day.is_none_or(|d| {
                    self.days.get(&self.day(at_ms)).copied().unwrap_or(0) + charge <= d
                }))
    }

    /// Count the calls already made on the day `now_ms` is in, in its hour and in its minute
    /// (the budget is the day's, whoever planned them: a restart or a new config does not
    /// make them new; the hour's show in the forecast).
    pub fn spent(&mut self, now_ms: i64, today: u64, this_hour: u64, this_minute: u64) {
        if self.capacity.per_day.is_some() {
            let day = self.day(now_ms);
            *self.days.entry(day).or_default() += today * CALL;
        }
        *self
            .minutes
            .entry(now_ms.div_euclid(MINUTE_MS))
            .or_default() += this_minute * CALL;
        *self.hours.entry(now_ms.div_euclid(HOUR_MS)).or_default() += this_minute * CALL;
        self.made = (
            now_ms.div_euclid(HOUR_MS),
            this_hour.saturating_sub(this_minute) * CALL,
        );
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
        self.batches.retain(|(m, _), _| *m >= minute);
        self.open.retain(|_, minutes| {
            *minutes = minutes.split_off(&minute);
            !minutes.is_empty()
        });
    }

    /// Book `cost` in the minute `at_ms` is in.
    pub fn book(&mut self, at_ms: i64, cost: Cost) {
        let minute = at_ms.div_euclid(MINUTE_MS);
        let charge = self.charge(minute, cost);
        if let Cost::Batched { batch, size } = cost {
            let n = self.batches.entry((minute, batch)).or_default();
            *n += 1;
            let open = self.open.entry(batch).or_default();
            if n.is_multiple_of(size) {
                open.remove(&minute);
            } else {
                open.insert(minute);
            }
        }
        *self.minutes.entry(minute).or_default() += charge;
        *self.hours.entry(at_ms.div_euclid(HOUR_MS)).or_default() += charge;
        if self.capacity.per_day.is_some() {
            let day = self.day(at_ms);
            *self.days.entry(day).or_default() += charge;
        }
    }

    /// The hour to look at after `hour_ms`, whose day is full: two whole hours before that
    /// day's local midnight by `hour_ms`'s offset (a daylight-saving change moves midnight by
    /// at most two hours, Antarctica/Troll's), so a long spill does not look at every hour of
    /// every full day.
    fn after_full_day(&self, hour_ms: i64) -> i64 {
        let zone = self.capacity.day_zone;
        let midnight = (self.day(hour_ms) + 1) * DAY_MS - offset_ms(zone, hour_ms);
        (midnight.div_euclid(HOUR_MS) * HOUR_MS - 2 * HOUR_MS).max(hour_ms + HOUR_MS)
    }

    /// The first minute at or after `from_ms` with room for `cost` among those `allowed`
    /// leaves in each hour (bit m = minute m of the hour starting at the argument), searching
    /// in order from `start_minute` in the first hour and from minute 0 in the others. Its due
    /// time (`from_ms` itself in `from_ms`'s own minute).
    pub fn first_fit(
        &self,
        from_ms: i64,
        cost: Cost,
        mut allowed: impl FnMut(i64) -> u64,
    ) -> Option<i64> {
        let first_hour = from_ms.div_euclid(HOUR_MS) * HOUR_MS;
        let end = first_hour + SEARCH_HOURS * HOUR_MS;
        // A batch with room that it may join, which a search for a new call would pass over
        // in a full hour or day; a new call found before it goes first.
        let mut join = None;
        let mut after = from_ms;
        // The allowed minutes of the hour last looked at: worked out once an hour, not once
        // an open minute.
        let mut mask: Option<(i64, u64)> = None;
        while let Some(minute) = self.joinable(cost, after, end) {
            let at = (minute * MINUTE_MS).max(from_ms);
            let hour = at.div_euclid(HOUR_MS) * HOUR_MS;
            let open = match mask {
                Some((h, m)) if h == hour => m,
                _ => {
                    let m = allowed(hour) & WHOLE_HOUR;
                    mask = Some((hour, m));
                    m
                }
            };
            if open & (1 << ((at - hour) / MINUTE_MS)) != 0 {
                join = Some(at);
                break;
            }
            after = (minute + 1) * MINUTE_MS;
        }
        let mut hour = first_hour;
        while hour < join.unwrap_or(end).min(end) {
            if cost.budgeted() && self.day_full(hour) {
                hour = self.after_full_day(hour);
                continue;
            }
            if !self.hour_has_room(hour) {
                hour += HOUR_MS;
                continue;
            }
            let mut mask = allowed(hour) & WHOLE_HOUR;
            if hour == first_hour {
                let past = (from_ms - hour) / MINUTE_MS;
                mask &= !((1u64 << past) - 1);
            }
            while mask != 0 {
                let m = mask.trailing_zeros() as i64;
                let at = (hour + m * MINUTE_MS).max(from_ms);
                if join.is_some_and(|j| j <= at) {
                    return join;
                }
                if self.fits(at, cost) {
                    return Some(at);
                }
                mask &= mask - 1;
            }
            hour += HOUR_MS;
        }
        join
    }

    /// Whole calls booked in each of `hours` hours from the one `from_ms` is in (rounded up),
    /// the calls already made in it included.
    pub fn per_hour(&self, from_ms: i64, hours: usize) -> Vec<u64> {
        let first = from_ms.div_euclid(HOUR_MS);
        (first..first + hours as i64)
            .map(|h| {
                let made = if h == self.made.0 { self.made.1 } else { 0 };
                (self.hours.get(&h).copied().unwrap_or(0) + made).div_ceil(CALL)
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

    /// Calls made earlier in the hour count in its forecast, and those of the minute in its
    /// room: a ledger built again mid-hour showed only the minute's.
    #[test]
    fn calls_already_made_count_in_the_hour_and_the_minute() {
        let mut l = ledger(2, None);
        let now = 10 * HOUR_MS + 30 * MINUTE_MS;
        l.spent(now, 0, 40, 2);
        assert_eq!(l.per_hour(now, 2), [40, 0]);
        assert!(!l.fits(now, Cost::Call));
        assert!(l.fits(now + MINUTE_MS, Cost::Call));
    }

    /// An hour holds as many calls as `calls_per_hour` says, with a fraction of a call a
    /// minute (190 per 10 s: 1,004.4): an earlier version said 60,264 for 60,240.
    #[test]
    fn an_hour_holds_what_its_capacity_says() {
        let capacity = Capacity {
            per_minute: CALL * 10_044 / 10,
            per_day: None,
            day_zone: Tz::UTC,
        };
        let mut l = Ledger::new(capacity);
        let mut booked = 0;
        while let Some(at) = l.first_fit(0, Cost::Call, |_| WHOLE_HOUR)
            && at < HOUR_MS
        {
            l.book(at, Cost::Call);
            booked += 1;
        }
        assert_eq!(booked, capacity.calls_per_hour());
        assert_eq!(booked, 60_240);
    }

    #[test]
    fn a_full_minute_sends_the_next_booking_on() {
        let mut l = ledger(2, None);
        let from = 10 * HOUR_MS + 30 * MINUTE_MS + 5_000;
        for expected in [from, from, 10 * HOUR_MS + 31 * MINUTE_MS] {
            let at = l.first_fit(from, Cost::Call, |_| WHOLE_HOUR).unwrap();
            assert_eq!(at, expected);
            l.book(at, Cost::Call);
        }
        // Batches of two share a minute's call; a third contact needs a second call.
        let mut l = ledger(1, None);
        let pair = Cost::Batched { batch: 2, size: 2 };
        for _ in 0..2 {
            let at = l.first_fit(0, pair, |_| WHOLE_HOUR).unwrap();
            assert_eq!(at, 0);
            l.book(at, pair);
        }
        assert!(!l.fits(0, pair));
        assert_eq!(l.first_fit(0, pair, |_| WHOLE_HOUR), Some(MINUTE_MS));
    }

    #[test]
    fn the_daily_budget_moves_bookings_to_the_next_day() {
        let mut l = ledger(100, Some(3));
        let mut days = Vec::new();
        for _ in 0..5 {
            let at = l.first_fit(0, Cost::Call, |_| WHOLE_HOUR).unwrap();
            l.book(at, Cost::Call);
            days.push(at / crate::time::DAY_MS);
        }
        assert_eq!(days, [0, 0, 0, 1, 1]);
        assert_eq!(l.per_hour(0, 2), [3, 0]);
    }

    /// A day that ends two hours early (Antarctica/Troll's change to +02 on 2026-03-29, the
    /// largest there is): the next day's budget is used from its first hour (22:00 UTC). The
    /// search assumed a change of at most one hour and began at 23:00.
    #[test]
    fn a_full_day_that_ends_two_hours_early_spills_into_the_next_from_its_start() {
        let mut l = Ledger::new(Capacity {
            per_minute: 100 * CALL,
            per_day: Some(3 * CALL),
            day_zone: "Antarctica/Troll".parse().unwrap(),
        });
        let start = chrono::DateTime::parse_from_rfc3339("2026-03-29T00:30:00Z")
            .unwrap()
            .timestamp_millis();
        let mut at = Vec::new();
        for _ in 0..4 {
            let t = l.first_fit(start, Cost::Call, |_| WHOLE_HOUR).unwrap();
            l.book(t, Cost::Call);
            at.push(crate::time::format_minute(t));
        }
        assert_eq!(at[3], "2026-03-29 22:00 UTC", "{at:?}");
    }

    /// A batch sent alone costs a whole call: list adds one a minute spend a daily budget
    /// of three in three minutes.
    #[test]
    fn each_minutes_batch_pays_a_call() {
        let mut l = ledger(100, Some(3));
        let list = Cost::Batched {
            batch: 8,
            size: 2500,
        };
        let due: Vec<i64> = (0..10)
            .map(|k| {
                let at = l.first_fit(k * MINUTE_MS, list, |_| WHOLE_HOUR).unwrap();
                l.book(at, list);
                at
            })
            .collect();
        assert_eq!(due[..3], [0, MINUTE_MS, 2 * MINUTE_MS]);
        // The seven others share one batch, at the next day's first minute.
        assert!(
            due[3..].iter().all(|&at| at == crate::time::DAY_MS),
            "{due:?}"
        );
        // Ten calls: two more on day 1, three on days 2 and 3, two on day 4, which has room
        // for the next one.
        for _ in 0..10 {
            let at = l.first_fit(0, Cost::Call, |_| WHOLE_HOUR).unwrap();
            l.book(at, Cost::Call);
        }
        assert_eq!(
            l.first_fit(0, Cost::Call, |_| WHOLE_HOUR),
            Some(4 * crate::time::DAY_MS)
        );
    }

    /// Past minutes are let go, and what is booked from now on still counts: the current
    /// minute, hour and day keep their bookings.
    #[test]
    fn the_past_is_let_go_and_the_present_kept() {
        let mut l = ledger(1, Some(3));
        let day = crate::time::DAY_MS;
        for at in [MINUTE_MS, 2 * HOUR_MS, day + 5 * MINUTE_MS] {
            l.book(at, Cost::Call);
        }
        let now = 2 * HOUR_MS + 30_000;
        l.forget_before(now);
        assert_eq!((l.minutes.len(), l.hours.len(), l.days.len()), (2, 2, 2));
        // The current minute is full, and today has one call left of three.
        assert!(!l.fits(now, Cost::Call));
        assert_eq!(
            l.first_fit(now, Cost::Call, |_| WHOLE_HOUR),
            Some(2 * HOUR_MS + MINUTE_MS)
        );
        l.book(2 * HOUR_MS + MINUTE_MS, Cost::Call);
        assert_eq!(l.first_fit(now, Cost::Call, |_| WHOLE_HOUR), Some(day));
    }

    /// A contact joining a batch paid for fits though the day is over its budget (callbacks,
    /// which it does not hold, and calls made count in it): in a timed webhook's window it
    /// was refused and spilled past it.
    #[test]
    fn joining_a_paid_batch_fits_a_day_over_its_budget() {
        let mut l = ledger(100, Some(1));
        let list = Cost::Batched { batch: 8, size: 10 };
        l.book(0, list);
        l.spent(0, 3, 3, 0);
        assert!(l.fits(0, list));
        assert!(l.hour_fits(0, list));
        assert!(!l.fits(MINUTE_MS, list));
        assert!(!l.fits(0, Cost::Call));
    }

    #[test]
    fn only_allowed_minutes_are_taken() {
        let l = ledger(1, None);
        let at = l.first_fit(0, Cost::Call, |h| if h == 0 { 0 } else { 1 << 45 });
        assert_eq!(at, Some(HOUR_MS + 45 * MINUTE_MS));
    }
}
