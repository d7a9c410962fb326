//! Time: its constants, the one parser for instants that people and files give us, the
//! formats sendtime prints, and the system's "now".
//!
//! Inside sendtime every instant is UTC epoch milliseconds (`i64`); text exists only at the
//! edges (flags, CSV files, the clock file, logs and messages), and it all goes through here.
//! The dispatcher's injectable now is [`crate::clock`]'s, not [`now_ms`].

use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, SecondsFormat, Timelike, Utc};

pub const SECOND_MS: i64 = 1_000;
pub const MINUTE_MS: i64 = 60 * SECOND_MS;
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
pub const DAY_MS: i64 = 24 * HOUR_MS;
/// Hour-of-week slots; slot 0 is Monday 00:00–00:59 UTC.
pub const SLOTS: usize = 168;
/// 2000-01-01 00:00 UTC: no email event, and no plan, is earlier.
pub const YEAR_2000_MS: i64 = 946_684_800_000;

/// The system clock, epoch milliseconds.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Hour-of-week slot (0 = Monday 00:00 UTC) of an instant.
pub fn slot_of(at_ms: i64) -> u8 {
    let days = at_ms.div_euclid(DAY_MS);
    // 1970-01-01 was a Thursday: weekday 3 counting Monday as 0.
    let weekday = (days + 3).rem_euclid(7);
    let hour = at_ms.rem_euclid(DAY_MS) / HOUR_MS;
    (weekday * 24 + hour) as u8
}

/// Hour-of-week values folded into the 24 hours of the day (slot `s` is hour `s % 24`).
pub fn hours_of_day(week: &[f64]) -> [f64; 24] {
    let mut day = [0.0; 24];
    for (s, v) in week.iter().enumerate() {
        day[s % 24] += v;
    }
    day
}

/// Days since the Unix epoch.
pub fn day_of(at_ms: i64) -> i32 {
    at_ms.div_euclid(DAY_MS) as i32
}

/// An instant as people and exports write it: RFC 3339 (`2022-03-18T15:28:01Z`), a date and
/// time with an offset as databases write it (`2022-03-18 15:28:01+00`, `… -0800`), without a
/// zone (`2022-03-18 15:28:01[.ffffff][ UTC]`, taken as UTC), a date alone (`2022-07-01`,
/// midnight UTC; see [`is_date_alone`]), or a number of epoch seconds (up to 10 digits, with
/// a fraction or without) or milliseconds.
pub fn parse_instant(text: &str) -> Option<i64> {
    let s = text.trim();
    if let Some(ms) = parse_utc_seconds(s.as_bytes()) {
        return Some(ms);
    }
    if let Ok(n) = s.parse::<i64>() {
        return epoch_number(n);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    // The rarer forms after the common ones, which an import may read 100M times.
    parse_naive(s)
        .or_else(|| {
            // Databases' and libraries' zoned text: `2022-03-18 15:28:01+00` (Postgres,
            // Redshift, DuckDB), `… 15:28:01.000 -0800` (Snowflake), `…T15:28:01+0100` (%z).
            let zoned = ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"];
            let t = zoned
                .iter()
                .find_map(|f| DateTime::parse_from_str(s, f).ok())?;
            Some(t.timestamp_millis())
        })
        .or_else(|| fractional_epoch_seconds(s))
}

/// A date and time without an offset but UTC's, or a date alone, as UTC.
fn parse_naive(s: &str) -> Option<i64> {
    let naive = without_utc(s);
    [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        // RFC 3339 without its seconds, as people type it (an audit: refused, while the
        // same time with a space was taken).
        "%Y-%m-%dT%H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(naive, f).ok())
    .or_else(|| date_alone(naive)?.and_hms_opt(0, 0, 0))
    .map(|t| t.and_utc().timestamp_millis())
}

/// `s` without a suffix that says UTC (` UTC`, `Z`, `+00:00`).
fn without_utc(s: &str) -> &str {
    s.strip_suffix(" UTC")
        .or_else(|| s.strip_suffix('Z'))
        .or_else(|| s.strip_suffix("+00:00"))
        .map_or(s, str::trim_end)
}

/// A date without a time of day (`2022-07-01`, `2022-7-1`), as [`parse_instant`] reads one.
fn date_alone(naive: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(naive, "%Y-%m-%d").ok()
}

/// Whether `text` is a date without a time of day (`2022-07-01`): an instant for a flag, but
/// no event's time, since the hour is what sendtime learns.
pub fn is_date_alone(text: &str) -> bool {
    // (No date alone is longer once its UTC suffix is gone. Checked first, as an import asks
    // it of every row off its fast path; `2022-07-01 +00:00` was longer with it, and taken.)
    let naive = without_utc(text.trim());
    naive.len() <= 10 && date_alone(naive).is_some()
}

/// Epoch seconds with a fraction (`1647617281.5`, as `time.time()` writes them), to the
/// millisecond.
fn fractional_epoch_seconds(s: &str) -> Option<i64> {
    let (whole, fraction) = s.split_once('.')?;
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if !(digits(whole) && whole.len() <= 10 && digits(fraction) && fraction.len() <= 9) {
        return None;
    }
    let ms: String = fraction.chars().chain("00".chars()).take(3).collect();
    Some(whole.parse::<i64>().ok()? * SECOND_MS + ms.parse::<i64>().ok()?)
}

/// A number of epoch seconds (ten digits or fewer, until the year 2286) or, larger,
/// milliseconds: how [`parse_instant`] reads a number, for sources that hold it as one.
pub fn epoch_number(n: i64) -> Option<i64> {
    if n.unsigned_abs() < 10_000_000_000 {
        n.checked_mul(SECOND_MS)
    } else {
        Some(n)
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ`, the form bulk exports use, read without chrono's general parser
/// (and, by an import, before the bytes are checked as text): an import reads it once per
/// row, for 100M rows.
pub fn parse_utc_seconds(b: &[u8]) -> Option<i64> {
    if b.len() != 20 || b[19] != b'Z' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |range: std::ops::Range<usize>| {
        b[range].iter().try_fold(0u32, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let punct = b[4] == b'-' && b[7] == b'-' && b[13] == b':' && b[16] == b':';
    if !punct {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
    let time = date.and_hms_opt(num(11..13)?, num(14..16)?, num(17..19)?)?;
    Some(time.and_utc().timestamp_millis())
}

/// [`parse_instant`] for a command-line flag: the error names the flag and shows the forms.
pub fn parse_flag(flag: &str, text: &str) -> anyhow::Result<i64> {
    parse_instant(text).ok_or_else(|| {
        anyhow::anyhow!(
            "{flag} {} is not a time; use e.g. 2022-07-01, 2022-07-01T09:30:00Z, epoch seconds or epoch milliseconds",
            crate::text::quoted(text)
        )
    })
}

/// [`parse_flag`] for an instant sendtime plans and sends at (`tick --now`, `explain --at`):
/// from 2000 to a year from now. A year's typo would send at once every contact pending.
pub fn parse_plan_flag(flag: &str, text: &str) -> anyhow::Result<i64> {
    parse_flag_up_to(flag, text, now_ms() + 366 * DAY_MS, "a year from now")
}

/// [`parse_flag`] for an instant engagement is known up to (`report lift --as-of`, `--since`):
/// from 2000 to `now`.
pub fn parse_past_flag(flag: &str, text: &str, now: i64) -> anyhow::Result<i64> {
    let last = format!("now ({})", format_minute(now));
    parse_flag_up_to(flag, text, now, &last)
}

/// [`parse_flag`], from 2000 to `last` (said as `last_said`).
fn parse_flag_up_to(flag: &str, text: &str, last: i64, last_said: &str) -> anyhow::Result<i64> {
    let at = parse_flag(flag, text)?;
    anyhow::ensure!(
        (YEAR_2000_MS..=last).contains(&at),
        "{flag} {} is out of range: give a time from 2000 to {last_said} (a time without an offset is UTC)",
        format_minute(at)
    );
    Ok(at)
}

/// `2024-01-07 09:00 UTC`: how plans, reasons and messages show an instant.
pub fn format_minute(ms: i64) -> String {
    Minute(ms).to_string()
}

/// [`format_minute`] without allocating: written out by hand, since chrono's `format` parses
/// its pattern on every call and planning formats one time per receipt.
pub struct Minute(pub i64);

impl fmt::Display for Minute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match DateTime::<Utc>::from_timestamp_millis(self.0) {
            None => write!(f, "{}", self.0),
            // The digits go straight into place: planning writes one per receipt, and padded
            // formatting runs the formatter once per field (not measured apart; see BENCHMARKS).
            Some(t) if (0..=9999).contains(&t.year()) => {
                let mut out = *b"0000-00-00 00:00 UTC";
                put_digits(&mut out[0..4], t.year() as u32);
                put_digits(&mut out[5..7], t.month());
                put_digits(&mut out[8..10], t.day());
                put_digits(&mut out[11..13], t.hour());
                put_digits(&mut out[14..16], t.minute());
                f.write_str(std::str::from_utf8(&out).expect("ASCII digits"))
            }
            Some(t) => write!(
                f,
                "{:04}-{:02}-{:02} {:02}:{:02} UTC",
                t.year(),
                t.month(),
                t.day(),
                t.hour(),
                t.minute()
            ),
        }
    }
}

/// A span written as a whole number of minutes, hours or days: `90m`, `36h`, `7d` (how
/// delivery windows are written); exactly the schema's `^[1-9][0-9]*[mhd]$`.
pub fn parse_span(text: &str) -> Option<i64> {
    let unit = match text.bytes().last()? {
        b'm' => MINUTE_MS,
        b'h' => HOUR_MS,
        b'd' => DAY_MS,
        _ => return None,
    };
    let digits = &text[..text.len() - 1];
    if digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<i64>().ok()?.checked_mul(unit)
}

/// A span as [`parse_span`] reads it, in the largest unit that divides it.
pub fn format_span(ms: i64) -> String {
    if ms % DAY_MS == 0 && ms > DAY_MS {
        format!("{}d", ms / DAY_MS)
    } else if ms % HOUR_MS == 0 {
        format!("{}h", ms / HOUR_MS)
    } else {
        format!("{}m", ms / MINUTE_MS)
    }
}

/// A length of time as a reader takes it in: days, hours and minutes, the parts that are not
/// 0 (`448d 5h 45m`, `30s` under a minute); a scheduler's gap read `645465m` (an audit).
pub fn format_gap(ms: i64) -> String {
    if ms < MINUTE_MS {
        return format!("{}s", ms / 1000);
    }
    let parts = [
        (ms / DAY_MS, "d"),
        (ms % DAY_MS / HOUR_MS, "h"),
        (ms % HOUR_MS / MINUTE_MS, "m"),
    ];
    let shown: Vec<String> = (parts.iter())
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    shown.join(" ")
}

/// `09:30:00`: a time of day given as milliseconds since midnight.
pub fn format_time_of_day(ms: i64) -> String {
    let s = ms.rem_euclid(DAY_MS) / 1000;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// RFC 3339 in UTC to the second (`2026-01-01T00:00:00Z`), as import windows are shown.
pub fn format_rfc3339(ms: i64) -> String {
    rfc3339(ms, SecondsFormat::Secs)
}

/// RFC 3339 in UTC to the millisecond, as a tick's "now" is logged.
pub fn format_rfc3339_ms(ms: i64) -> String {
    rfc3339(ms, SecondsFormat::Millis)
}

fn rfc3339(ms: i64, precision: SecondsFormat) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).map_or_else(
        || format!("{ms} ms"),
        |t| t.to_rfc3339_opts(precision, true),
    )
}

/// `Mon 09:00 UTC`: the name of an hour-of-week slot.
pub fn slot_name(slot: u8) -> String {
    SlotName(slot).to_string()
}

/// [`slot_name`] without allocating.
pub struct SlotName(pub u8);

impl fmt::Display for SlotName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
        let slot = self.0;
        let mut out = *b"Mon 00:00 UTC";
        out[..3].copy_from_slice(DAYS[slot as usize / 24].as_bytes());
        put_digits(&mut out[4..6], u32::from(slot % 24));
        f.write_str(std::str::from_utf8(&out).expect("ASCII"))
    }
}

/// `n` in decimal, zero-padded to fill `out` (its lowest digits when it is longer).
fn put_digits(out: &mut [u8], mut n: u32) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_reads_in_days_hours_and_minutes() {
        let gap = |d: i64, h: i64, m: i64| d * DAY_MS + h * HOUR_MS + m * MINUTE_MS;
        assert_eq!(format_gap(gap(448, 5, 45)), "448d 5h 45m");
        assert_eq!(format_gap(gap(23, 0, 15)), "23d 15m");
        assert_eq!(format_gap(gap(0, 2, 0)), "2h");
        assert_eq!(format_gap(30_000), "30s");
    }

    /// The smallest i64 (how pandas stores NaT as a plain integer) is a number of
    /// milliseconds, not an overflow.
    #[test]
    fn the_smallest_number_is_read_without_overflow() {
        assert_eq!(epoch_number(i64::MIN), Some(i64::MIN));
        assert_eq!(epoch_number(-5), Some(-5_000));
    }

    /// Ten digits are seconds (the largest in 2286), eleven milliseconds (1973 at most): an
    /// earlier version read eleven digits as seconds too, a millisecond value of 1972 as a
    /// time in the year 3968.
    #[test]
    fn ten_digits_are_seconds_and_eleven_milliseconds() {
        assert_eq!(epoch_number(9_999_999_999), Some(9_999_999_999_000));
        assert_eq!(epoch_number(63_072_000_000), Some(63_072_000_000));
        assert_eq!(parse_instant("63072000000"), parse_instant("1972-01-01"));
    }

    #[test]
    fn instants_in_every_accepted_form() {
        let want = Some(1_647_617_281_000);
        for text in [
            "2022-03-18 15:28:01.000000 UTC",
            "2022-03-18 15:28:01 UTC",
            "2022-03-18T15:28:01Z",
            "2022-03-18T16:28:01+01:00",
            "2022-03-18 15:28:01",
            " 2022-03-18T15:28:01 ",
            "1647617281000",
            "1647617281",
            // Zoned text as databases and libraries write it.
            "2022-03-18 15:28:01+00",
            "2022-03-18 07:28:01-08",
            "2022-03-18 07:28:01.000 -0800",
            "2022-03-18T16:28:01+0100",
            "2022-03-18 15:28:01 +00:00",
            "2022-03-18 15:28:01 Z",
            "1647617281.0",
        ] {
            assert_eq!(parse_instant(text), want, "{text}");
        }
        assert_eq!(parse_instant("2022-07-01"), Some(1_656_633_600_000));
        assert_eq!(parse_instant("2022-07-01 09:30"), Some(1_656_667_800_000));
        for iso in ["2022-07-01T09:30", "2022-07-01T09:30Z"] {
            assert_eq!(parse_instant(iso), Some(1_656_667_800_000), "{iso}");
        }
        // The fast path for `...Z` agrees with chrono's parser, and leaves it what it refuses.
        for (text, ms) in [
            ("2024-02-29T23:59:59Z", Some(1_709_251_199_000)),
            ("1999-12-31t00:00:00Z", Some(946_598_400_000)),
            ("2023-02-29T00:00:00Z", None),
            ("2022-03-18T25:00:00Z", None),
            ("2022-03-18T1a:00:00Z", None),
        ] {
            assert_eq!(parse_instant(text), ms, "{text}");
            let chrono = DateTime::parse_from_rfc3339(text).ok();
            assert_eq!(chrono.map(|t| t.timestamp_millis()), ms, "{text}");
        }
        for date in [
            "2022-07-01",
            " 2022-7-1 ",
            "2022-07-01 UTC",
            "2022-07-01Z",
            "2022-07-01+00:00",
            "2022-07-01 +00:00",
            "2022-07-01     UTC",
        ] {
            assert_eq!(parse_instant(date), Some(1_656_633_600_000), "{date}");
            assert!(is_date_alone(date), "{date}");
        }
        for timed in [
            "2022-07-01 00:00",
            "2022-07-01T00:00:00Z",
            "1656633600",
            "2022-07-01 09:30 UTC",
        ] {
            assert!(!is_date_alone(timed), "{timed}");
        }
        assert_eq!(parse_instant("1647617281.5"), Some(1_647_617_281_500));
        assert_eq!(parse_instant("1647617281.0429"), Some(1_647_617_281_042));
        for bad in [
            "18/03/2022",
            "",
            "2022-13-01",
            "tomorrow",
            "1.",
            ".5",
            "16476172810.5",
        ] {
            assert_eq!(parse_instant(bad), None, "{bad}");
        }
        let err = parse_flag("--split", "soon").unwrap_err().to_string();
        assert!(err.starts_with("--split \"soon\" is not a time"), "{err}");
    }

    #[test]
    fn formats() {
        let t = 1_704_618_000_123; // 2024-01-07 09:00:00.123 UTC
        assert_eq!(format_minute(t), "2024-01-07 09:00 UTC");
        assert_eq!(format_rfc3339(t), "2024-01-07T09:00:00Z");
        assert_eq!(format_rfc3339_ms(t), "2024-01-07T09:00:00.123Z");
        assert_eq!(slot_name(0), "Mon 00:00 UTC");
        assert_eq!(slot_name(167), "Sun 23:00 UTC");
        assert_eq!(slot_name(37), "Tue 13:00 UTC");
    }

    /// Minutes written digit by digit read as padded formatting writes them, before year 0
    /// and after year 9999 (where padded formatting is kept) included.
    #[test]
    fn minutes_written_by_digits_as_by_padding() {
        let padded = |ms: i64| {
            let t = DateTime::<Utc>::from_timestamp_millis(ms).unwrap();
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02} UTC",
                t.year(),
                t.month(),
                t.day(),
                t.hour(),
                t.minute()
            )
        };
        let mut ms = -62_167_219_200_000 - 3_600_000; // an hour before 0000-01-01
        while ms < 253_402_300_800_000 + 3_600_000 {
            assert_eq!(format_minute(ms), padded(ms), "{ms}");
            ms += 7_777_777_777; // about 90 days, an uneven step: every hour and minute comes up
        }
        for ms in [0, -1, 1_704_618_000_123, 253_402_300_799_999] {
            assert_eq!(format_minute(ms), padded(ms), "{ms}");
        }
        assert_eq!(format_minute(-1), "1969-12-31 23:59 UTC");
        assert_eq!(format_minute(-62_167_219_200_001), "-001-12-31 23:59 UTC");
        assert_eq!(format_minute(253_402_300_800_000), "10000-01-01 00:00 UTC");
    }

    #[test]
    fn slots_start_monday_midnight_utc_and_wrap_on_sunday() {
        // 2024-01-01 was a Monday.
        let monday = 1_704_067_200_000;
        assert_eq!(slot_of(monday), 0);
        assert_eq!(slot_of(monday + 13 * HOUR_MS + 59 * MINUTE_MS), 13);
        assert_eq!(slot_of(monday + 6 * DAY_MS + 23 * HOUR_MS), 167);
        assert_eq!(slot_of(monday + 7 * DAY_MS), 0);
        assert_eq!(slot_of(monday - 1), 167);
        assert_eq!(day_of(monday - 1), day_of(monday) - 1);
    }
}
