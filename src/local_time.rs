//! A contact's local time: its zone, from HubSpot's contact property or the connector's
//! default, and quiet hours in it. Boundary: zones are resolved from text here and turned into
//! per-minute masks of UTC hours; everything else works in UTC epoch milliseconds.

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

use chrono::{DateTime, Offset, TimeZone};
use chrono_tz::Tz;

use crate::time::{DAY_MS, HOUR_MS, MINUTE_MS};

/// HubSpot's default contact property "Time Zone" (set from the contact's IP address). Its
/// values are IANA names written as `america_slash_new_york` (`_hyphen_` for `-`).
pub const DEFAULT_ZONE_PROPERTY: &str = "hs_timezone";
/// A longer value is not a zone name; it is not stored.
pub const MAX_ZONE_CHARS: usize = 64;
/// Every minute of an hour allowed.
pub const WHOLE_HOUR: u64 = (1 << 60) - 1;

/// A zone from an IANA name (`America/New_York`) or HubSpot's spelling of one
/// (`america_slash_new_york`), in any case. HubSpot still offers `US/Pacific-New`, which the
/// time zone database dropped in 2020: it is Los Angeles's.
pub fn parse_zone(text: &str) -> Option<Tz> {
    static NAMES: OnceLock<HashMap<String, Tz>> = OnceLock::new();
    let names = NAMES.get_or_init(|| {
        chrono_tz::TZ_VARIANTS
            .iter()
            .map(|tz| (tz.name().to_ascii_lowercase(), *tz))
            .chain([("us/pacific-new".into(), Tz::America__Los_Angeles)])
            .collect()
    });
    let key = text
        .trim()
        .to_ascii_lowercase()
        .replace("_slash_", "/")
        .replace("_hyphen_", "-");
    names.get(&key).copied()
}

/// The UTC offset of `zone` at `at_ms`, in milliseconds.
pub fn offset_ms(zone: Tz, at_ms: i64) -> i64 {
    let utc = DateTime::from_timestamp_millis(at_ms).unwrap_or_default();
    zone.offset_from_utc_datetime(&utc.naive_utc())
        .fix()
        .local_minus_utc() as i64
        * 1000
}

/// The local calendar day (days since 1970-01-01 in `zone`) of `at_ms`.
pub fn local_day(zone: Tz, at_ms: i64) -> i64 {
    (at_ms + offset_ms(zone, at_ms)).div_euclid(DAY_MS)
}

/// The first minute of the local day after `at_ms`'s in `zone`: its midnight, or the first
/// minute after it where a daylight-saving change skips midnight.
pub fn next_local_day(zone: Tz, at_ms: i64) -> i64 {
    let today = local_day(zone, at_ms);
    // Midnight by today's offset, less the largest change of offset there is.
    let mut minute = ((today + 1) * DAY_MS - offset_ms(zone, at_ms) - 3 * HOUR_MS)
        .div_euclid(MINUTE_MS)
        * MINUTE_MS;
    while local_day(zone, minute) <= today {
        minute += MINUTE_MS;
    }
    minute.max(at_ms)
}

/// A daily local range in which nothing is sent: `21:00-08:00` runs from 21:00 to 08:00 the
/// next morning; the end minute is allowed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QuietHours {
    /// Minutes after local midnight.
    start: u16,
    end: u16,
}

impl QuietHours {
    /// `HH:MM-HH:MM`, hours 0 to 23 and an end of `24:00` for midnight (exactly the schema's
    /// pattern); the error says what is wrong.
    pub fn parse(text: &str) -> Result<QuietHours, String> {
        let minute = |t: &str| -> Option<u16> {
            let (h, m) = t.split_once(':')?;
            let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
            if !(1..=2).contains(&h.len()) || m.len() != 2 || !digits(h) || !digits(m) {
                return None;
            }
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60).then_some(h * 60 + m)
        };
        let (start, end) = text
            .split_once('-')
            .and_then(|(a, b)| Some((minute(a)?, if b == "24:00" { 0 } else { minute(b)? })))
            .ok_or_else(|| {
                format!(
                    "\"{text}\" is not a local time range such as \"21:00-08:00\" (hours 00 to 23, minutes 00 to 59; an end at midnight is 24:00 or 00:00)"
                )
            })?;
        if start == end {
            return Err(format!(
                "\"{text}\" starts and ends at the same minute: no minute of the day would be left to send in"
            ));
        }
        Ok(QuietHours { start, end })
    }

    /// The minutes of a day (without a clock change) that are not quiet.
    pub fn open_minutes(self) -> u16 {
        let quiet = (self.end + 24 * 60 - self.start) % (24 * 60);
        24 * 60 - quiet
    }

    /// Whether the local minute of the day `minute` is quiet.
    pub fn contains(self, minute: u16) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }

    /// The minutes of the UTC hour starting at `hour_ms` that are not quiet for a contact in
    /// `zone`: bit m is minute m. Offsets are read at both ends of the hour, so an hour in
    /// which the clocks change is taken minute by minute.
    pub fn allowed(self, zone: Tz, hour_ms: i64) -> u64 {
        let first = offset_ms(zone, hour_ms);
        let same = offset_ms(zone, hour_ms + HOUR_MS - MINUTE_MS) == first;
        let mut mask = 0u64;
        for m in 0..60 {
            let at = hour_ms + m * MINUTE_MS;
            let offset = if same { first } else { offset_ms(zone, at) };
            let of_day = (at + offset).rem_euclid(DAY_MS) / MINUTE_MS;
            if !self.contains(of_day as u16) {
                mask |= 1 << m;
            }
        }
        mask
    }
}

impl QuietHours {
    /// The first minute at or after `from_ms` that is not quiet for a contact in `zone`
    /// (`from_ms` itself when it is not), looking two days ahead.
    pub fn next_allowed(self, zone: Tz, from_ms: i64) -> Option<i64> {
        let first_hour = from_ms.div_euclid(HOUR_MS) * HOUR_MS;
        (0..48).find_map(|h| {
            let hour = first_hour + h * HOUR_MS;
            let mut mask = self.allowed(zone, hour);
            if h == 0 {
                mask &= !((1u64 << ((from_ms - hour) / MINUTE_MS)) - 1);
            }
            (mask != 0).then(|| (hour + i64::from(mask.trailing_zeros()) * MINUTE_MS).max(from_ms))
        })
    }

    /// Until when these quiet hours hold a queued contact in `zone` that may go from
    /// `ready_at_ms`, at `now` ([`judged_at`]); none when they do not, or would hold it past
    /// `release_by` (an action's contact, which HubSpot moves on after). The dispatcher and
    /// `explain` alike.
    pub fn hold_until(
        self,
        zone: Tz,
        ready_at_ms: i64,
        release_by: Option<i64>,
        now: i64,
    ) -> Option<i64> {
        (self.next_allowed(zone, judged_at(ready_at_ms, now)))
            .filter(|t| *t > now && release_by.is_none_or(|r| *t <= r))
    }
}

/// When the quiet hours of a queued contact that may go from `ready_at_ms` are judged at
/// `now`: then, if that was within the last minute, the ticks' step; `now` for one overdue
/// longer (it came due while nothing ran, and waits for its morning). One due between two
/// minutes (a retry's, a pause's end) just before its quiet hours waited for their end,
/// found due only in their first minute (an audit).
pub fn judged_at(ready_at_ms: i64, now: i64) -> i64 {
    if ready_at_ms >= now - MINUTE_MS {
        ready_at_ms
    } else {
        now
    }
}

impl fmt::Display for QuietHours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )
    }
}

/// A contact's quiet hours in its zone.
pub type Local = (Tz, QuietHours);

/// Allowed minutes per UTC hour for each (zone, quiet hours) a batch of receipts has, worked
/// out once for the hours the batch can reach: zone lookups would otherwise cost more than
/// planning itself.
#[derive(Debug, Default)]
pub struct Masks {
    first_hour: i64,
    table: rustc_hash::FxHashMap<Local, Vec<u64>>,
}

impl Masks {
    /// Masks of `locals` for `hours` hours from the one `from_ms` is in.
    pub fn build(locals: impl IntoIterator<Item = Local>, from_ms: i64, hours: usize) -> Masks {
        use rayon::prelude::*;
        let first_hour = from_ms.div_euclid(HOUR_MS) * HOUR_MS;
        let locals: Vec<Local> = locals
            .into_iter()
            .collect::<std::collections::HashSet<_>>()
            .into_iter()
            .collect();
        let table = locals
            .into_par_iter()
            .map(|(zone, quiet)| {
                let masks = (0..hours as i64)
                    .map(|h| quiet.allowed(zone, first_hour + h * HOUR_MS))
                    .collect();
                ((zone, quiet), masks)
            })
            .collect();
        Masks { first_hour, table }
    }

    /// Whether the minute `at_ms` is in is not quiet for `local`.
    pub fn allows(&self, local: Option<Local>, at_ms: i64) -> bool {
        let hour = at_ms.div_euclid(HOUR_MS) * HOUR_MS;
        self.allowed(local, hour) >> ((at_ms - hour) / MINUTE_MS) & 1 == 1
    }

    /// The minutes of the hour starting at `hour_ms` not quiet for `local` (all without one).
    pub fn allowed(&self, local: Option<Local>, hour_ms: i64) -> u64 {
        let Some(local) = local else {
            return WHOLE_HOUR;
        };
        let h = (hour_ms - self.first_hour) / HOUR_MS;
        self.table
            .get(&local)
            .and_then(|masks| usize::try_from(h).ok().and_then(|h| masks.get(h)))
            .copied()
            .unwrap_or_else(|| local.1.allowed(local.0, hour_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A contact overdue in its quiet hours waits for their end, unless that is past its
    /// release-by; one found due within a minute of coming due, just before them, goes.
    #[test]
    fn quiet_hours_hold_a_due_contact_until_they_end_or_its_release_by() {
        let quiet = QuietHours::parse("21:00-08:00").unwrap();
        let day = 1_795_737_600_000; // 2026-11-27 00:00 UTC
        let (at_23, at_8) = (day + 23 * HOUR_MS, day + 32 * HOUR_MS);
        assert_eq!(quiet.hold_until(Tz::UTC, at_23, None, at_23), Some(at_8));
        let overdue = day + 18 * HOUR_MS;
        assert_eq!(quiet.hold_until(Tz::UTC, overdue, None, at_23), Some(at_8));
        let release_by = at_8 - 5 * MINUTE_MS;
        assert_eq!(
            quiet.hold_until(Tz::UTC, at_23, Some(release_by), at_23),
            None
        );
        let (due, found) = (day + 21 * HOUR_MS - 30_000, day + 21 * HOUR_MS + 10_000);
        assert_eq!(quiet.hold_until(Tz::UTC, due, None, found), None);
        assert_eq!(quiet.hold_until(Tz::UTC, at_8, None, at_8), None);
    }

    #[test]
    fn the_next_day_begins_at_local_midnight_across_daylight_saving() {
        let ny: Tz = "America/New_York".parse().unwrap();
        // 2026-03-07 12:00 UTC (07:00 EST): the next day begins 2026-03-08 05:00 UTC.
        let at = 1_772_884_800_000;
        assert_eq!(next_local_day(ny, at), 1_772_946_000_000);
        assert_eq!(next_local_day(Tz::UTC, at), 1_772_928_000_000);
        // 2026-03-08 12:00 UTC (08:00 EDT, after the change): 2026-03-09 04:00 UTC.
        assert_eq!(next_local_day(ny, at + 86_400_000), 1_773_028_800_000);
    }

    #[test]
    fn zones_from_hubspot_slugs_and_iana_names() {
        assert_eq!(
            parse_zone("america_slash_new_york"),
            Some(Tz::America__New_York)
        );
        assert_eq!(
            parse_zone("America/Port-au-Prince"),
            parse_zone("america_slash_port_hyphen_au_hyphen_prince")
        );
        assert_eq!(parse_zone(" Europe/Brussels "), Some(Tz::Europe__Brussels));
        // Among HubSpot's options, though the zone database dropped it in 2020.
        assert_eq!(
            parse_zone("us_slash_pacific_hyphen_new"),
            Some(Tz::America__Los_Angeles)
        );
        assert_eq!(parse_zone("Mars/Olympus"), None);
        assert_eq!(parse_zone(""), None);
    }

    #[test]
    fn quiet_hours_parse_and_wrap_midnight() {
        let q = QuietHours::parse("21:00-08:00").unwrap();
        assert_eq!(q.to_string(), "21:00-08:00");
        assert!(q.contains(21 * 60) && q.contains(0) && q.contains(8 * 60 - 1));
        assert!(!q.contains(8 * 60) && !q.contains(20 * 60 + 59));
        let day = QuietHours::parse("12:30-13:15").unwrap();
        assert!(day.contains(12 * 60 + 30) && !day.contains(13 * 60 + 15));
        // Midnight as an end may be written 24:00 (the end is not quiet).
        let late = QuietHours::parse("22:00-24:00").unwrap();
        assert_eq!(late, QuietHours::parse("22:00-00:00").unwrap());
        assert!(late.contains(23 * 60 + 59) && !late.contains(0));
        for bad in [
            "21:00",
            "25:00-08:00",
            "08:00-08:00",
            "9-17",
            "+9:00-10:00",
            "24:00-08:00",
            "00:00-24:00",
            "22:00-24:30",
        ] {
            assert!(QuietHours::parse(bad).is_err(), "{bad}");
        }
    }

    /// 2026-03-29 01:00 UTC: Brussels goes from +01:00 to +02:00. Quiet 02:00-03:00 local
    /// is 01:00-02:00 UTC the day before and 00:00-01:00 UTC the day after.
    #[test]
    fn allowed_minutes_follow_daylight_saving() {
        let q = QuietHours::parse("02:00-03:00").unwrap();
        let zone = Tz::Europe__Brussels;
        let hour = |d: i64, h: i64| 1_774_656_000_000 + d * DAY_MS + h * HOUR_MS; // 2026-03-28 00:00 UTC
        assert_eq!(q.allowed(zone, hour(0, 1)), 0);
        assert_eq!(q.allowed(zone, hour(0, 0)), WHOLE_HOUR);
        assert_eq!(q.allowed(zone, hour(2, 0)), 0);
        assert_eq!(q.allowed(zone, hour(2, 1)), WHOLE_HOUR);
        // Half-hour zones split an hour.
        let india = QuietHours::parse("21:00-08:00").unwrap();
        let mask = india.allowed(Tz::Asia__Kolkata, hour(0, 2)); // 07:30-08:30 IST
        assert_eq!(mask, WHOLE_HOUR & !((1 << 30) - 1));
    }
}
