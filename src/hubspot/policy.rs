//! How sendtime answers HubSpot's failures over time: how long to back off after a transient
//! failure, how long a 429 holds a connector, when a spent daily allowance is worth trying
//! again. One home for these rules, used by the importer and the dispatcher alike; the
//! [`super::Client`] applies the 429 wait to its limiter itself, so every caller sharing the
//! connector backs off.

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};

use super::error::{ApiError, RatePolicy};
use super::limiter::RateLimit;
use crate::time::{HOUR_MS, MINUTE_MS};

/// How long a client waits for one answer: HubSpot's calls answer in well under a second,
/// and a longer wait only holds a slot. [`TIMEOUT_ENV`] overrides it for the dispatcher.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the importer waits for one page of email events, which can take a while to
/// make: a page answered late is still worth having.
pub const EVENTS_PAGE_TIMEOUT: Duration = Duration::from_secs(60);
/// Environment variable: the dispatcher's request timeout in milliseconds.
pub const TIMEOUT_ENV: &str = "SENDTIME_HUBSPOT_TIMEOUT_MS";

/// The dispatcher's request timeout: [`TIMEOUT_ENV`]'s, or [`REQUEST_TIMEOUT`]. A value
/// that is not a positive whole number of milliseconds is refused, not replaced unseen.
pub fn request_timeout() -> anyhow::Result<Duration> {
    let Ok(v) = std::env::var(TIMEOUT_ENV) else {
        return Ok(REQUEST_TIMEOUT);
    };
    match v.trim().parse::<u64>() {
        Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
        _ => anyhow::bail!(
            "{TIMEOUT_ENV}={v:?} is not a timeout: give whole milliseconds above 0 (e.g. 30000), or unset it for the default {} s",
            REQUEST_TIMEOUT.as_secs()
        ),
    }
}

/// The length of HubSpot's rolling burst window: what a ten-secondly 429 waits when HubSpot
/// says nothing more precise.
pub const TEN_SECONDS: Duration = Duration::from_secs(10);
/// The longest wait a response header (`Retry-After`, the rate-limit interval) is taken at:
/// a larger value is a broken header, not a plan, and must not stall a connector for years.
pub const MAX_HEADER_WAIT: Duration = Duration::from_secs(3600);
/// The shortest wait a ten-secondly 429 holds the connector for: a `Retry-After: 0` (or a
/// date already past, from a clock behind) would otherwise have every call retried at once
/// for as long as the 429s go on.
pub const MIN_RATE_LIMIT_WAIT: Duration = Duration::from_secs(1);
/// How long a connector waits after a 423: HubSpot's error-handling guide says its locks (on
/// an account syncing much data) last 2 seconds, and to leave at least that between calls.
pub const LOCKED_WAIT: Duration = Duration::from_secs(2);
/// How long a connector waits after a 502 or 504 (HubSpot's processing limits met), a 503 or
/// a 521: HubSpot's error-handling guide says to pause requests for a few seconds.
pub const OVERLOADED_WAIT: Duration = Duration::from_secs(5);
/// How long a connector whose token HubSpot refused (401, or 403) waits before trying once
/// more, and calls of a kind the token lacks a scope for wait.
pub const REFUSED_TOKEN_PAUSE_MS: i64 = 5 * MINUTE_MS;
/// How long calls to a target HubSpot cannot take (a workflow or list that is gone, a list
/// made DYNAMIC) wait before it is read again, their calls waiting for the answer; twice as
/// long each time it is found so again right after, up to [`TARGET_HOLD_MAX_MS`] (a read, not
/// a call, each time).
pub const TARGET_HOLD_MS: i64 = 5 * MINUTE_MS;
pub const TARGET_HOLD_MAX_MS: i64 = HOUR_MS;

/// How long a target found unusable is held: [`TARGET_HOLD_MS`], or twice `last` (its hold
/// that ended lately), up to [`TARGET_HOLD_MAX_MS`].
pub fn target_hold_ms(last: Option<i64>) -> i64 {
    last.map_or(TARGET_HOLD_MS, |l| (2 * l).min(TARGET_HOLD_MAX_MS))
}

/// How soon a contact whose call HubSpot refused while its target was being read (after
/// another refusal), or whose call waited for a read at a hold's end, is tried again: the
/// read takes a call.
pub const TARGET_READ_WAIT_MS: i64 = 5_000;
/// How long a target read and found usable, or since the last call HubSpot took after that
/// (or after a failed read), makes HubSpot's refusals of calls to it the contacts' own without
/// reading it again. It spans the next minute's tick, where the contacts told to wait for
/// the read go (a review measured, with reads failing and a tick a minute, a minute's window
/// running out just before them: each unknown contact's 404 then held the rest again). Short,
/// since a workflow deleted meanwhile fails the contacts then refused that were posted without
/// an id (one with an id found under the address HubSpot did not find has the workflow read
/// again).
pub const TARGET_USABLE_MS: i64 = 2 * MINUTE_MS;
/// How often a workflow that calls go to is read while they go (counted from its last read
/// that found it usable, or its first call: `validate --online` reads it before; kept under
/// `state/` across processes, and one found off is read first by the next process): HubSpot
/// enrolls only into a workflow that is turned on, and what it answers an enrollment into one
/// turned off is not documented (it may be taken and not run), so one turned off is noticed
/// within this and its contacts held. 144 reads a day per workflow.
pub const TARGET_RECHECK_MS: i64 = 10 * MINUTE_MS;
/// How long a connector without an OAuth access token (its token endpoint failed) waits
/// before trying again: an outage there is often a blip.
pub const NO_ACCESS_TOKEN_PAUSE_MS: i64 = MINUTE_MS;
/// How long a connector pauses for HubSpot's 477 (the account is being moved between data
/// hosting locations) without a `Retry-After`, and at most with one (HubSpot: "typically up to
/// 24 hours").
pub const MIGRATION_PAUSE_MS: i64 = HOUR_MS;
pub const MIGRATION_PAUSE_MAX_MS: i64 = 24 * HOUR_MS;
/// The longest a daily-limit pause lasts: a midnight is never further, in any zone.
pub const DAILY_PAUSE_MAX_MS: i64 = 25 * HOUR_MS;
/// How long HubSpot retries a workflow's webhook post that was not answered 2xx (or 429):
/// three days.
pub const WEBHOOK_RETRIES_MS: i64 = 3 * crate::time::DAY_MS;

/// How long after it was due an enrollment or list add whose tries ran out on failures worth
/// retrying (an outage: 5xx, no answer) is still tried, at [`spent_wait`]'s pace, before it
/// fails: as long as HubSpot retries a webhook's post. A callback is tried until HubSpot's
/// hold on its contact ends instead.
pub const OUTLAST_MS: i64 = WEBHOOK_RETRIES_MS;

/// How long a call waits after its `failures`-th transient failure in a row, once past
/// [`Backoff::DISPATCH`]'s tries: the backoff's cap, doubling up to an hour, so that an outage
/// of days costs a contact (or a batch) a call an hour, not one every five minutes. An
/// enrollment's is drawn from ½× to 1½× of it ([`spread`]), so that contacts whose tries ran
/// out together do not come back together; a batch's contacts do (one call).
pub fn spent_wait(failures: u8) -> i64 {
    let past = u32::from(failures).saturating_sub(Backoff::DISPATCH.give_up_after);
    let cap = Backoff::DISPATCH.cap.as_millis() as i64;
    cap.saturating_mul(1 << past.min(4)).min(HOUR_MS)
}

/// When a call whose tries ran out at `now`, after `failures`, is made again: after
/// [`spent_wait`] (drawn by `spread`), and at `last` at the latest; none once `last` is past.
pub fn retry_past_tries(failures: u8, now: i64, last: i64, spread: fn(i64) -> i64) -> Option<i64> {
    (now < last).then(|| (now + spread(spent_wait(failures))).min(last))
}

/// `ms` drawn from ½× to 1½× of it, as the backoff's waits are.
pub fn spread(ms: i64) -> i64 {
    (ms as f64 * (0.5 + fastrand::f64())) as i64
}

/// Exponential backoff with jitter after transient failures (5xx, timeouts, dropped
/// connections): `base`, twice that, four times ... capped at `cap`, each drawn from half to
/// one and a half times that, so the retries of many callers spread out. 429s and refused
/// tokens are not transient failures: they are the connector's state, and never count.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
    /// Transient failures after which the caller gives up.
    pub give_up_after: u32,
}

impl Backoff {
    /// The dispatcher's: each contact has its own task, so waiting long costs no other contact.
    pub const DISPATCH: Backoff = Backoff {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(300),
        give_up_after: 12,
    };
    /// The importer's: one page at a time with someone watching, so it gives up sooner.
    pub const IMPORT: Backoff = Backoff {
        base: Duration::from_millis(500),
        cap: Duration::from_secs(30),
        give_up_after: 8,
    };

    /// The wait after the `failures`-th transient failure in a row (1 for the first), jittered
    /// and never past the cap.
    pub fn wait(&self, failures: u32) -> Duration {
        let full = self
            .base
            .saturating_mul(1 << failures.saturating_sub(1).min(16))
            .min(self.cap);
        Duration::from_millis(spread(full.as_millis() as i64) as u64).min(self.cap)
    }

    /// Whether `failures` transient failures in a row are enough to give up.
    pub fn exhausted(&self, failures: u32) -> bool {
        failures >= self.give_up_after
    }
}

/// 429s for one page at which an import gives up (the client's limiter waits out each
/// one); the dispatcher never does: its contacts wait in the queue.
pub const IMPORT_429S: u32 = 30;

/// How long a ten-secondly 429 holds the connector: HubSpot's `Retry-After` when it sent one,
/// else the interval its rate-limit headers last reported, else ten seconds; at least
/// [`MIN_RATE_LIMIT_WAIT`].
pub fn rate_limit_wait(retry_after: Option<Duration>, last: Option<RateLimit>) -> Duration {
    retry_after
        .or_else(|| last.and_then(|r| r.interval))
        .unwrap_or(TEN_SECONDS)
        .clamp(MIN_RATE_LIMIT_WAIT, MAX_HEADER_WAIT)
}

/// How long every call of a connector waits after a call failed with `e`, besides the
/// caller's own retry: after a ten-secondly 429, a 423, a 502/504, a 503 or a 521, HubSpot
/// asks for a pause of all calls, not only the one refused (its error-handling page: "pause
/// your requests for a few seconds"; the 503's and 521's were missed: an audit). `last`: the
/// rate-limit headers seen last.
pub fn connector_wait(e: &ApiError, last: Option<RateLimit>) -> Option<Duration> {
    match e {
        ApiError::RateLimited {
            policy: RatePolicy::TenSecondly,
            retry_after,
            ..
        } => Some(rate_limit_wait(*retry_after, last)),
        ApiError::Transient {
            status: Some(423), ..
        } => Some(LOCKED_WAIT),
        ApiError::Transient {
            status: Some(502 | 503 | 504 | 521),
            ..
        } => Some(OVERLOADED_WAIT),
        _ => None,
    }
}

/// How far this machine's clock and HubSpot's may be apart: what a reset time is waited past,
/// and how far ahead of HubSpot's an import's clock may run before it says so.
pub const CLOCKS_APART_MS: i64 = MINUTE_MS;

/// When a spent daily allowance is worth trying again: HubSpot resets it at midnight in the
/// account's time zone. Most zones' midnights fall on a whole hour, so a minute after the next
/// one (for clocks apart: on the hour, a clock ahead of HubSpot's met the spent day again and
/// lost an hour; an audit); or the midnight of the connector's `time_zone`, a minute after,
/// when that comes sooner (Asia/Kolkata's is at :30 UTC). A wrong `time_zone` costs nothing:
/// the hourly tries go on.
pub fn daily_retry_at(now_ms: i64, zone: Option<chrono_tz::Tz>) -> i64 {
    let hour = (now_ms.div_euclid(HOUR_MS) + 1) * HOUR_MS + CLOCKS_APART_MS;
    zone.map_or(hour, |z| {
        hour.min(crate::local_time::next_local_day(z, now_ms) + CLOCKS_APART_MS)
    })
}

/// When a spent daily allowance resets, given HubSpot's word for it (its daily API usage's
/// `resetsAt`, read after the 429 of a tick that began at `tick_ms`): a minute after, for
/// clocks apart. `None` when that is already past, or more than [`DAILY_RESET_AFTER_MAX_MS`]
/// after the tick began: the allowance reset between the 429 and the read, whose answer names
/// the next day's reset (taken, it held the connector a whole day; an audit found it), or the
/// answer is broken. The hourly probe then goes on.
pub fn daily_reset_pause_until(tick_ms: i64, resets_at_ms: i64) -> Option<i64> {
    let until = resets_at_ms.saturating_add(CLOCKS_APART_MS);
    let ahead = resets_at_ms.saturating_sub(tick_ms);
    (until > tick_ms && ahead <= DAILY_RESET_AFTER_MAX_MS).then_some(until)
}

/// The longest a tick waits to read when the daily limit resets, its turn at the limiter
/// included: unread, the hourly probe goes on.
pub const USAGE_READ_MAX: Duration = Duration::from_secs(30);
/// The furthest a reset HubSpot names is taken after the daily limit was met: a midnight is at
/// most a day away, but a limit met in the first hour after one (another integration spent
/// the allowance in an hour, a 25-hour day) is rarer than one met just before it and an answer
/// read just after, by a tick that ran past midnight or a clock a little ahead of HubSpot's.
/// Past it, the hourly probe costs a call an hour.
pub const DAILY_RESET_AFTER_MAX_MS: i64 = 23 * HOUR_MS;

/// `Retry-After` in either form HTTP allows: delta-seconds (`120`, fractions tolerated) or an
/// HTTP-date (`Wed, 21 Oct 2015 07:28:00 GMT`, the wait until then by the system clock).
/// Negative, unreadable or absurd values are not a wait. Taken up to a day, the longest any
/// use waits (a 477's pause); each use bounds it further (a 429's at [`MAX_HEADER_WAIT`]).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match value.parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Duration::from_secs_f64(s.min(1e9)),
        Ok(_) => return None,
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
            (at.to_utc() - chrono::Utc::now())
                .to_std()
                .unwrap_or_default()
        }
    };
    Some(wait.min(Duration::from_millis(MIGRATION_PAUSE_MAX_MS as u64)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reset_time_is_taken_within_23_hours_of_the_tick() {
        let now = 1_700_000_000_000;
        assert_eq!(
            daily_reset_pause_until(now, now + 3 * HOUR_MS),
            Some(now + 3 * HOUR_MS + MINUTE_MS)
        );
        assert_eq!(daily_reset_pause_until(now, i64::MAX), None);
        assert_eq!(daily_reset_pause_until(now, now - 2 * MINUTE_MS), None);
        // The limit met at 23:59:40 and the usage read after midnight: it names the next
        // day's reset, a day and a minute away.
        let tick = now - 60_000;
        assert_eq!(daily_reset_pause_until(tick, now + 24 * HOUR_MS), None);
    }

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, value.parse().unwrap());
        h
    }

    #[test]
    fn retry_after_in_both_forms() {
        assert_eq!(retry_after(&headers("3")), Some(Duration::from_secs(3)));
        assert_eq!(
            retry_after(&headers("0.5")),
            Some(Duration::from_millis(500))
        );
        let day = Duration::from_secs(24 * 3600);
        assert_eq!(retry_after(&headers("99999999999")), Some(day));
        assert_eq!(
            retry_after(&headers("72000")),
            Some(Duration::from_secs(72000))
        );
        // A 429's wait stays within the hour.
        assert_eq!(rate_limit_wait(Some(day), None), MAX_HEADER_WAIT);
        assert_eq!(retry_after(&headers("-1")), None);
        assert_eq!(retry_after(&headers("soon")), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
        let in_a_minute = chrono::Utc::now() + chrono::Duration::seconds(60);
        let date = in_a_minute.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        let wait = retry_after(&headers(&date)).unwrap();
        assert!(
            wait > Duration::from_secs(55) && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
        // A date in the past: go now.
        assert_eq!(
            retry_after(&headers("Wed, 21 Oct 2015 07:28:00 GMT")),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn a_ten_secondly_429_waits_what_hubspot_said() {
        let interval = RateLimit {
            interval: Some(Duration::from_secs(7)),
            ..RateLimit::default()
        };
        let s = Duration::from_secs;
        assert_eq!(rate_limit_wait(Some(s(3)), Some(interval)), s(3));
        assert_eq!(rate_limit_wait(None, Some(interval)), s(7));
        assert_eq!(rate_limit_wait(None, None), TEN_SECONDS);
        assert_eq!(rate_limit_wait(Some(s(1 << 40)), None), MAX_HEADER_WAIT);
        // A wait of nothing (`Retry-After: 0`, a date past) would retry at once, unpaced.
        assert_eq!(rate_limit_wait(Some(s(0)), Some(interval)), s(1));
        let none = RateLimit {
            interval: Some(s(0)),
            ..RateLimit::default()
        };
        assert_eq!(rate_limit_wait(None, Some(none)), s(1));
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter_and_gives_up_when_told() {
        let b = Backoff::DISPATCH;
        for failures in 1..=20 {
            let full = (b.base * (1 << (failures - 1).min(16))).min(b.cap);
            let w = b.wait(failures);
            assert!(w >= full / 2 && w < full * 3 / 2, "{failures}: {w:?}");
            assert!(w <= b.cap, "{failures}: {w:?}");
        }
        assert!(!b.exhausted(11) && b.exhausted(12));
        let i = Backoff::IMPORT;
        assert!(i.wait(1) < Duration::from_millis(750));
        assert!(i.wait(30) < Duration::from_secs(45));
    }

    #[test]
    fn a_spent_day_is_tried_again_a_minute_after_the_next_whole_hour() {
        let t = 1_795_750_200_000; // 2026-11-27 03:30 UTC
        assert_eq!(daily_retry_at(t, None), 1_795_752_000_000 + MINUTE_MS);
        assert_eq!(
            daily_retry_at(1_795_752_000_000, None),
            1_795_752_000_000 + HOUR_MS + MINUTE_MS
        );
        // New York's midnight (05:00 UTC) is a whole hour: the next hour comes first.
        let new_york = Some(chrono_tz::America::New_York);
        assert_eq!(daily_retry_at(t, new_york), 1_795_752_000_000 + MINUTE_MS);
    }

    /// In a zone whose midnight is at :30 UTC, the last hour's try lands on it (a minute
    /// after), not half an hour late, as when the account's zone was not looked at.
    #[test]
    fn a_spent_day_in_a_half_hour_zone_is_tried_again_at_its_midnight() {
        let kolkata = Some(chrono_tz::Asia::Kolkata);
        let at = |t: &str| {
            chrono::DateTime::parse_from_rfc3339(t)
                .unwrap()
                .timestamp_millis()
        };
        // 2026-11-27 00:00 IST is 2026-11-26 18:30 UTC.
        assert_eq!(
            daily_retry_at(at("2026-11-26T18:10:00Z"), kolkata),
            at("2026-11-26T18:31:00Z")
        );
        assert_eq!(
            daily_retry_at(at("2026-11-26T17:10:00Z"), kolkata),
            at("2026-11-26T18:01:00Z")
        );
    }
}
