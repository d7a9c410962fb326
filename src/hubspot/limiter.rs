//! Pacing one connector's calls under HubSpot's 10-second limit, and under what HubSpot's
//! headers say is left (other tools may share the account's limit). The [`super::Client`]
//! holds one and waits on it before every call. Callers wait their turn in order, and a read
//! that decides whether the queued calls should go at all ([`Lane::First`]) waits behind at
//! most one of them (and the other such reads already waiting).

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::HeaderMap;
use tokio::time::Instant;

use super::policy::{MAX_HEADER_WAIT, TEN_SECONDS};

/// The `X-HubSpot-RateLimit-*` headers of one response: what is left of the account's limits,
/// as HubSpot counts them (our own limiter only knows about this process's calls).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimit {
    /// `X-HubSpot-RateLimit-Max`: calls allowed per interval.
    pub max: Option<u32>,
    /// `X-HubSpot-RateLimit-Remaining`: calls left in the current interval.
    pub remaining: Option<u32>,
    /// `X-HubSpot-RateLimit-Interval-Milliseconds`.
    pub interval: Option<Duration>,
    /// `X-HubSpot-RateLimit-Daily`: calls allowed per day.
    pub daily: Option<u32>,
    /// `X-HubSpot-RateLimit-Daily-Remaining`.
    pub daily_remaining: Option<u32>,
}

impl RateLimit {
    pub const MAX: &str = "x-hubspot-ratelimit-max";
    pub const REMAINING: &str = "x-hubspot-ratelimit-remaining";
    pub const INTERVAL_MS: &str = "x-hubspot-ratelimit-interval-milliseconds";
    pub const DAILY: &str = "x-hubspot-ratelimit-daily";
    pub const DAILY_REMAINING: &str = "x-hubspot-ratelimit-daily-remaining";

    /// Read the headers; `None` when the response carries none of them (some endpoints and
    /// error paths do not), so "unknown" is never mistaken for "zero left".
    pub fn from_headers(headers: &HeaderMap) -> Option<RateLimit> {
        let num = |name: &str| -> Option<u64> {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok())
        };
        let clamp = |v: u64| v.min(u32::MAX as u64) as u32;
        let rate = RateLimit {
            max: num(Self::MAX).map(clamp),
            remaining: num(Self::REMAINING).map(clamp),
            // HubSpot's windows are seconds to a day; anything longer is not a window.
            interval: num(Self::INTERVAL_MS)
                .map(|ms| Duration::from_millis(ms.min(MAX_HEADER_WAIT.as_millis() as u64))),
            daily: num(Self::DAILY).map(clamp),
            daily_remaining: num(Self::DAILY_REMAINING).map(clamp),
        };
        (rate != RateLimit::default()).then_some(rate)
    }
}

/// Where a caller waits for its turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Behind every caller already waiting, in the order they came.
    Queue,
    /// Ahead of the queue, behind at most one of its callers (whose turn it is, or is next)
    /// and the callers of this lane already waiting: the reads made after HubSpot refused a
    /// call, which the calls queued to the same target wait on to be held (behind them, a
    /// gone workflow was sent up to 199 of 200 contacts first).
    First,
}

/// Paces one connector's calls under its 10-second limit, and under what HubSpot's headers
/// say is left (other tools may share the account's limit).
pub struct Limiter {
    /// Swapped whole when the connector's limit changes: the clients holding this limiter
    /// (a scheduled import under way) pace on the new one too.
    gcra: ArcSwap<DefaultDirectRateLimiter>,
    /// The connector's limit per 10 s (`requests_per_10s`).
    per_10s: AtomicU32,
    /// HubSpot's own limit per 10 s for the app in the account, as its latest rate-limit
    /// headers said (0: not said): `gcra` paces under the lower of the two. Set above
    /// HubSpot's (an OAuth app's 110 taken for a private app's 190), the connector burst to
    /// HubSpot's limit and then stood still for the rest of the window.
    hubspot_per_10s: AtomicU32,
    pace: Mutex<Pace>,
    /// The account it paces ([`Limiter::for_account`]), whose headers it keeps for `/status`.
    account: Option<String>,
    /// Held by the caller waiting on the pace, so one waits at a time (tokio's mutex serves
    /// its waiters in order).
    turn: tokio::sync::Mutex<()>,
    /// Held by the [`Lane::Queue`] caller in line for `turn` or holding it, so a
    /// [`Lane::First`] caller, which queues on `turn` alone, has at most one of them ahead.
    queue: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct Pace {
    /// Nobody starts a call before this (set after a 429).
    not_before: Option<Instant>,
    /// Minimum gap between call starts while HubSpot says the window is nearly spent, and the
    /// end of that window: past it the window has rolled over, whatever answers came since
    /// (one without the headers left the gap for good: an audit).
    spacing: Option<(Duration, Instant)>,
    last_start: Option<Instant>,
    /// Call starts in the last ten seconds (at most the paced limit), for the dashboard.
    recent: std::collections::VecDeque<Instant>,
    /// The rate-limit headers of the most recent response that had them, whichever client of
    /// the account it answered.
    last: Option<RateLimit>,
}

impl Pace {
    /// When the next call may start, if not now: after a 429's pause, and spaced out while
    /// HubSpot says the window is nearly spent.
    fn wait_until(&self) -> Option<Instant> {
        let spaced = match (self.spacing, self.last_start) {
            (Some((gap, until)), Some(last)) => Some((last + gap).min(until)),
            _ => None,
        };
        [self.not_before, spaced].into_iter().flatten().max()
    }

    /// Drop the starts that are out of the window ending at `now`.
    fn forget_before(&mut self, now: Instant) {
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= TEN_SECONDS)
        {
            self.recent.pop_front();
        }
    }
}

/// The limiters in use in this process, by account: see [`Limiter::for_account`]. Keyed by
/// the config's connectors, never by outsiders' data; entries nobody holds are dropped.
static ACCOUNTS: LazyLock<Mutex<HashMap<String, Weak<Limiter>>>> = LazyLock::new(Default::default);

/// Each account's latest rate-limit headers, whichever client of it got them (the dashboard's
/// daily use counts the scheduled imports' calls too), and when (epoch ms), kept when its
/// clients are gone. Keyed by the config's connector ids.
static LAST_RATES: LazyLock<Mutex<HashMap<String, (RateLimit, i64)>>> =
    LazyLock::new(Default::default);

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter").field("pace", &self.pace).finish()
    }
}

impl Limiter {
    /// A limiter for `requests_per_10s` calls in any rolling 10 seconds.
    ///
    /// A token bucket lets a full burst plus a window's refill into one rolling window, so
    /// calls are paced instead (burst of one), at the limit less a 2 % margin (at least one
    /// call): HubSpot counts when a call arrives, not when it was allowed, and the time between
    /// the two varies by a few milliseconds. For 190 per 10 s that is 18.6 calls per second,
    /// 97.9 % of the limit, and never more than 187 in a window.
    pub fn new(requests_per_10s: u32) -> Limiter {
        Limiter {
            gcra: ArcSwap::from_pointee(Self::gcra(requests_per_10s)),
            per_10s: AtomicU32::new(requests_per_10s),
            hubspot_per_10s: AtomicU32::new(0),
            pace: Mutex::new(Pace::default()),
            account: None,
            turn: Default::default(),
            queue: Default::default(),
        }
    }

    fn gcra(requests_per_10s: u32) -> DefaultDirectRateLimiter {
        let period = TEN_SECONDS / Self::paced_per_10s(requests_per_10s);
        let quota = Quota::with_period(period)
            .expect("period is positive")
            .allow_burst(NonZeroU32::new(1).expect("1 > 0"));
        RateLimiter::direct(quota)
    }

    /// Pace under `requests_per_10s` from now on (the connector's limit changed): set by the
    /// dispatcher, whose config is the newest (a scheduled import started on an older one
    /// must not set the old limit back).
    pub fn set_rate(&self, requests_per_10s: u32) {
        let before = self.effective_per_10s();
        self.per_10s.store(requests_per_10s, Ordering::Relaxed);
        self.repace(before);
    }

    /// HubSpot's limit per 10 s for the app, as its latest response with one said.
    pub fn hubspot_per_10s(&self) -> Option<u32> {
        Some(self.hubspot_per_10s.load(Ordering::Relaxed)).filter(|&n| n > 0)
    }

    /// The limit per 10 s calls are paced under: the connector's, or HubSpot's when it said a
    /// lower one.
    pub fn effective_per_10s(&self) -> u32 {
        let own = self.per_10s.load(Ordering::Relaxed);
        self.hubspot_per_10s()
            .map_or(own, |hubspot| own.min(hubspot))
    }

    /// Pace anew if the limit paced under is no longer `before`.
    fn repace(&self, before: u32) {
        let now = self.effective_per_10s();
        if now != before {
            self.gcra.store(Arc::new(Self::gcra(now)));
        }
    }

    /// The limiter every client of the account `account` (a connector's id) in this process
    /// paces on: HubSpot counts the dispatcher's calls and the scheduled import's against one
    /// limit, and holds them all after a 429, whatever limit each was built with: a changed
    /// limit is set on it ([`Limiter::set_rate`]; a limiter per limit let an import under way
    /// pace apart at the old one). `requests_per_10s` is the limit of one made now.
    pub fn for_account(account: &str, requests_per_10s: u32) -> Arc<Limiter> {
        let mut accounts = ACCOUNTS.lock().unwrap();
        accounts.retain(|_, l| l.strong_count() > 0);
        if let Some(limiter) = accounts.get(account).and_then(Weak::upgrade) {
            return limiter;
        }
        let limiter = Arc::new(Limiter {
            account: Some(account.to_string()),
            ..Limiter::new(requests_per_10s)
        });
        accounts.insert(account.to_string(), Arc::downgrade(&limiter));
        limiter
    }

    /// The limiter of account `account` if a client of it is alive in this process (the
    /// dashboard looks, and makes none).
    pub fn existing(account: &str) -> Option<Arc<Limiter>> {
        let accounts = ACCOUNTS.lock().unwrap();
        accounts.get(account).and_then(Weak::upgrade)
    }

    /// The rate-limit headers of the most recent response that had them.
    pub fn last_rate(&self) -> Option<RateLimit> {
        self.pace.lock().unwrap().last
    }

    /// Forget account `account`'s headers, and HubSpot's word on its 10-second limit: its
    /// token or API base changed, which may be another app's or portal's limit (kept, pacing
    /// and planning followed the old one until the next answer).
    pub fn forget_rate_of(account: &str) {
        LAST_RATES.lock().unwrap().remove(account);
        if let Some(limiter) = Limiter::existing(account) {
            let before = limiter.effective_per_10s();
            limiter.hubspot_per_10s.store(0, Ordering::Relaxed);
            limiter.repace(before);
        }
    }

    /// The limit per 10 s a connector of account `account` set to `requests_per_10s` is paced
    /// and planned under: HubSpot's when its answers in this process said a lower one.
    pub fn limit_of(account: &str, requests_per_10s: u32) -> u32 {
        Limiter::existing(account)
            .and_then(|l| l.hubspot_per_10s())
            .map_or(requests_per_10s, |h| h.min(requests_per_10s))
    }

    /// Account `account`'s latest rate-limit headers in this process and when they came (epoch
    /// ms: the daily count they show is stale after HubSpot's midnight), if any client of it
    /// has had some.
    pub fn last_rate_of(account: &str) -> Option<(RateLimit, i64)> {
        LAST_RATES.lock().unwrap().get(account).copied()
    }

    /// Calls started per 10 seconds under a limit of `requests_per_10s`: the limit less a 2 %
    /// margin (at least one call). Planning counts capacity from this, so the two agree.
    pub fn paced_per_10s(requests_per_10s: u32) -> u32 {
        let n = requests_per_10s.max(1);
        let margin = (n / 50).max(1);
        n.saturating_sub(margin + 1).max(1)
    }

    /// Wait for permission to start one call, in `lane`.
    pub async fn until_ready(&self, lane: Lane) {
        let _queue = match lane {
            Lane::Queue => Some(self.queue.lock().await),
            Lane::First => None,
        };
        let _turn = self.turn.lock().await;
        loop {
            let wait_until = self.pace.lock().unwrap().wait_until();
            if let Some(t) = wait_until.filter(|t| *t > Instant::now()) {
                tokio::time::sleep_until(t).await;
                continue;
            }
            let gcra = self.gcra.load_full();
            gcra.until_ready().await;
            // The limit changed while this call waited: its turn is the new pace's.
            if !Arc::ptr_eq(&gcra, &self.gcra.load()) {
                continue;
            }
            let now = Instant::now();
            let mut pace = self.pace.lock().unwrap();
            // A 429 (or HubSpot's headers) may have held the connector while this call
            // waited its turn: every waiting caller honours it, not only those to come.
            if pace.wait_until().is_some_and(|t| t > now) {
                continue;
            }
            pace.last_start = Some(now);
            pace.forget_before(now);
            pace.recent.push_back(now);
            return;
        }
    }

    /// Calls started in the last ten seconds.
    pub fn calls_in_window(&self) -> usize {
        let mut pace = self.pace.lock().unwrap();
        pace.forget_before(Instant::now());
        pace.recent.len()
    }

    /// Until when every caller is held (after a 429), if it is.
    pub fn held_until(&self) -> Option<Instant> {
        let now = Instant::now();
        self.pace.lock().unwrap().not_before.filter(|t| *t > now)
    }

    /// Hold every caller for `wait` (after a 429, so the whole connector backs off).
    pub fn pause_for(&self, wait: Duration) {
        let until = Instant::now() + wait.min(MAX_HEADER_WAIT);
        let mut pace = self.pace.lock().unwrap();
        if pace.not_before.is_none_or(|t| t < until) {
            pace.not_before = Some(until);
        }
    }

    /// Take HubSpot's view of the window into account: when less than the 2 % our own pacing
    /// leaves is left, spread the remaining calls over the interval instead of spending them.
    pub fn observe(&self, rate: &RateLimit) {
        if let Some(account) = &self.account {
            let at = crate::time::now_ms();
            LAST_RATES
                .lock()
                .unwrap()
                .insert(account.clone(), (*rate, at));
        }
        // HubSpot's limit for a 10-second window (other endpoints' windows are their own).
        if let Some(max) = rate.max.filter(|_| rate.interval == Some(TEN_SECONDS)) {
            let (before, own) = (
                self.effective_per_10s(),
                self.per_10s.load(Ordering::Relaxed),
            );
            let said = self.hubspot_per_10s.swap(max, Ordering::Relaxed);
            if max < own && said != max {
                tracing::warn!(
                    account = self.account.as_deref().unwrap_or_default(),
                    "HubSpot's limit for this app is {max} calls per 10 s, below the connector's requests_per_10s ({own}): calls are paced, and planned, under HubSpot's; set requests_per_10s = {max}"
                );
            }
            self.repace(before);
        }
        let mut pace = self.pace.lock().unwrap();
        pace.last = Some(*rate);
        let (Some(max), Some(remaining)) = (rate.max, rate.remaining) else {
            return;
        };
        let interval = rate.interval.unwrap_or(TEN_SECONDS);
        // Our own pacing leaves about 2 % of the window unused; less than that left means
        // someone else shares the limit (or the window drifted): spread what remains.
        let reserve = (max / 50).max(1);
        // (Saturating: a header of 2^32 - 1 left overflowed, and the panic, under the lock,
        // poisoned the connector's limiter for the rest of the run; an audit.)
        let gap = interval / remaining.saturating_add(1);
        pace.spacing = (remaining < reserve).then(|| (gap, Instant::now() + interval));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderMap;

    /// A broken header must neither panic nor stall a connector for years.
    #[test]
    fn absurd_rate_limit_headers_are_capped() {
        let mut h = HeaderMap::new();
        h.insert(RateLimit::MAX, "190".parse().unwrap());
        h.insert(RateLimit::REMAINING, "0".parse().unwrap());
        h.insert(
            RateLimit::INTERVAL_MS,
            "18446744073709551615".parse().unwrap(),
        );
        let rate = RateLimit::from_headers(&h).unwrap();
        assert_eq!(rate.interval, Some(MAX_HEADER_WAIT));
        let limiter = Limiter::new(190);
        limiter.observe(&rate);
        limiter.pause_for(Duration::MAX);
        let held = limiter.held_until().expect("held");
        assert!(held <= Instant::now() + MAX_HEADER_WAIT);
    }

    #[tokio::test]
    async fn limiter_paces_at_the_limit_less_a_margin() {
        // 100 per 10 s: 97 paced. 10 per 10 s: 8 paced, 1.25 s apart, no burst beyond the
        // first (a slow pace, so a loaded machine's delays stay well inside the bounds).
        assert_eq!(Limiter::paced_per_10s(100), 97);
        assert_eq!(Limiter::paced_per_10s(190), 186);
        let limiter = Limiter::new(10);
        let start = Instant::now();
        limiter.until_ready(Lane::Queue).await;
        assert!(start.elapsed() < Duration::from_millis(600));
        for _ in 0..2 {
            limiter.until_ready(Lane::Queue).await;
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(2490) && took < Duration::from_millis(3100),
            "{took:?}"
        );
    }

    /// One account, one limiter, while anyone holds it.
    #[test]
    fn clients_of_one_account_share_its_limiter() {
        let a = Limiter::for_account("limiter-test", 100);
        let b = Limiter::for_account("limiter-test", 100);
        assert!(Arc::ptr_eq(&a, &b));
        // Asked for with another limit: still the one limiter, at the limit set on it.
        let paced = a.gcra.load_full();
        let c = Limiter::for_account("limiter-test", 190);
        assert!(Arc::ptr_eq(&a, &c));
        assert_eq!(a.per_10s.load(Ordering::Relaxed), 100);
        c.set_rate(190);
        assert_eq!(a.per_10s.load(Ordering::Relaxed), 190);
        assert!(!Arc::ptr_eq(&paced, &a.gcra.load_full()));
        assert!(!Arc::ptr_eq(&a, &Limiter::for_account("other", 100)));
    }

    /// A 429 holds the callers already waiting their turn too, not only later ones.
    #[tokio::test]
    async fn a_pause_holds_callers_already_waiting() {
        let limiter = std::sync::Arc::new(Limiter::new(10));
        let start = Instant::now();
        limiter.until_ready(Lane::Queue).await;
        let waiting: Vec<_> = (0..2)
            .map(|_| {
                let l = limiter.clone();
                tokio::spawn(async move {
                    l.until_ready(Lane::Queue).await;
                    Instant::now()
                })
            })
            .collect();
        // Both now wait on the pacing (1.25 s apart); a 429 holds everyone for 3 s.
        tokio::time::sleep(Duration::from_millis(20)).await;
        limiter.pause_for(Duration::from_secs(3));
        for w in waiting {
            let started = w.await.unwrap();
            assert!(
                started.duration_since(start) >= Duration::from_secs(3),
                "{:?}",
                started.duration_since(start)
            );
        }
    }

    #[tokio::test]
    async fn limiter_spreads_calls_when_hubspot_says_the_window_is_nearly_spent() {
        let limiter = Limiter::new(1000);
        // Timed from before the first call: the spacing counts from its start.
        let start = Instant::now();
        limiter.until_ready(Lane::Queue).await;
        // One call left in 4 s: the next waits half of it.
        limiter.observe(&RateLimit {
            max: Some(100),
            remaining: Some(1),
            interval: Some(Duration::from_secs(4)),
            ..RateLimit::default()
        });
        limiter.until_ready(Lane::Queue).await;
        assert!(
            start.elapsed() >= Duration::from_millis(1990),
            "{:?}",
            start.elapsed()
        );
        limiter.observe(&RateLimit {
            max: Some(100),
            remaining: Some(90),
            ..RateLimit::default()
        });
        let start = Instant::now();
        limiter.until_ready(Lane::Queue).await;
        // Not spread any more (that would wait 2 s); room for a loaded machine.
        assert!(start.elapsed() < Duration::from_millis(1000));
    }

    /// The spacing ends with the window HubSpot spoke of, though no answer since said how the
    /// next stands (an edge's page, an endpoint without the headers).
    #[tokio::test]
    async fn spacing_ends_with_the_window_hubspot_spoke_of() {
        // Any number a header says is taken without a panic.
        let mut headers = HeaderMap::new();
        headers.insert(RateLimit::MAX, "190".parse().unwrap());
        headers.insert(RateLimit::REMAINING, "99999999999".parse().unwrap());
        let huge = RateLimit::from_headers(&headers).unwrap();
        Limiter::new(1000).observe(&huge);
        let limiter = Limiter::new(1000);
        limiter.until_ready(Lane::Queue).await;
        limiter.observe(&RateLimit {
            max: Some(100),
            remaining: Some(0),
            interval: Some(Duration::from_millis(400)),
            ..RateLimit::default()
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        limiter.until_ready(Lane::Queue).await;
        let start = Instant::now();
        limiter.until_ready(Lane::Queue).await;
        // Spaced, it would wait 400 ms.
        assert!(
            start.elapsed() < Duration::from_millis(300),
            "{:?}",
            start.elapsed()
        );
    }

    /// Callers start in the order they came, and one in the first lane starts behind at most
    /// one of them.
    #[tokio::test]
    async fn callers_take_turns_in_order_and_the_first_lane_goes_ahead() {
        let limiter = Arc::new(Limiter::new(20));
        limiter.until_ready(Lane::Queue).await;
        let started = Arc::new(Mutex::new(Vec::new()));
        let mut waiting = Vec::new();
        for (name, lane) in [
            ("q1", Lane::Queue),
            ("q2", Lane::Queue),
            ("q3", Lane::Queue),
            ("first", Lane::First),
            ("q4", Lane::Queue),
        ] {
            let (l, started) = (limiter.clone(), started.clone());
            waiting.push(tokio::spawn(async move {
                l.until_ready(lane).await;
                started.lock().unwrap().push(name);
            }));
            // This test's runtime has one thread: the caller is queued before the next comes.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for w in waiting {
            w.await.unwrap();
        }
        assert_eq!(*started.lock().unwrap(), ["q1", "first", "q2", "q3", "q4"]);
    }
}
