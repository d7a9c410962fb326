//! When a received contact would like to be sent, from the webhook type, the receipt time,
//! what the model knows about the contact and the population profile: its window, its
//! preferred hour and next choices, and the reason every plan row carries. Fitting many
//! receipts into what a connector can send is [`crate::capacity`]'s; [`plan`] is one receipt
//! alone (as `explain` shows it).

use std::fmt::Write;

use super::profile::{Class, Profile};
use crate::config::WebhookType;
use crate::time::{DAY_MS, HOUR_MS, MINUTE_MS, Minute, SLOTS, SlotName, slot_of};

/// The longest default window.
const WEEK_MS: i64 = 7 * DAY_MS;

/// A decided due time and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// When to call HubSpot (UTC, epoch ms); the first tick at or after it does.
    pub due_at_ms: i64,
    /// The hour-of-week slot chosen, when one was.
    pub slot: Option<u8>,
    /// One line a person can read: the rule applied and what it was based on.
    pub reason: String,
}

/// Who the plan is for; the seed makes cold-contact draws and minute spreading reproducible.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The contact's key (email or `#id`).
    pub contact: &'a str,
    /// The receipt id: a contact posted twice gets independent (but reproducible) draws.
    pub receipt: &'a str,
}

/// Where a timed receipt may go: the hours from when it is planned to the end of its window.
/// Candidate k is the k-th hour from the one `from` falls in; the first and last may be cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Earliest due time: the receipt, or now when planned late.
    pub from: i64,
    /// The window's end (exclusive): the receipt plus its span.
    pub end: i64,
    /// The start of the hour `from` is in.
    pub first_hour: i64,
    /// Candidate hours; 0 when the window was over when planned.
    pub hours: usize,
    /// The window's length.
    pub span: i64,
    /// The hour-of-week slot of the first candidate.
    pub first_slot: u8,
}

impl Window {
    /// The start of candidate hour `k`.
    pub fn hour(&self, k: usize) -> i64 {
        self.first_hour + k as i64 * HOUR_MS
    }

    /// The hour-of-week slot of candidate `k`.
    pub fn slot(&self, k: usize) -> u8 {
        ((self.first_slot as usize + k) % SLOTS) as u8
    }

    /// The minutes of candidate `k` that overlap the window: bit m is minute m.
    pub fn minutes(&self, k: usize) -> u64 {
        let start = self.hour(k);
        let first = ((self.from - start).max(0) / MINUTE_MS).min(60);
        let last = ((self.end - start + MINUTE_MS - 1) / MINUTE_MS).clamp(0, 60);
        if last <= first {
            return 0;
        }
        let upto = if last == 60 {
            u64::MAX
        } else {
            (1u64 << last) - 1
        };
        upto & !((1u64 << first) - 1) & ((1u64 << 60) - 1)
    }

    /// When minute `m` of candidate `k` is due: its start, or `from` inside the first minute.
    pub fn due(&self, k: usize, m: u32) -> i64 {
        (self.hour(k) + m as i64 * MINUTE_MS).max(self.from)
    }

    fn label(&self) -> String {
        span_label(self.span)
    }
}

/// A window's length as reasons and the workflow editor say it: "24 hours", "7 days", "6
/// hours", "90 minutes".
pub fn span_label(span: i64) -> String {
    let (n, unit) = match span {
        DAY_MS => (24, "hour"),
        s if s % DAY_MS == 0 => (s / DAY_MS, "day"),
        s if s % HOUR_MS == 0 => (s / HOUR_MS, "hour"),
        s => (s / MINUTE_MS, "minute"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// The longest a receipt of `kind` may wait: `span`, else the type's default (24 hours, 7
/// days); `None` for the types that go on the next tick.
pub fn longest_wait(kind: WebhookType, span: Option<i64>) -> Option<i64> {
    match kind {
        WebhookType::Immediate | WebhookType::UpdateOnly => None,
        WebhookType::Next24Hours => Some(span.unwrap_or(DAY_MS)),
        WebhookType::NextWeek | WebhookType::NextWeekFrequencyOptimized => {
            Some(span.unwrap_or(WEEK_MS))
        }
    }
}

/// How long HubSpot is asked to hold a workflow action's contact: past the longest window a
/// receipt of `kind` can be planned in, with a day to spare for a dispatcher that was down.
pub fn hold(kind: WebhookType, span: Option<i64>) -> i64 {
    longest_wait(kind, span).unwrap_or(0) + SPARE_HOLD_MS
}

/// How much longer than the window HubSpot is asked to hold an action's contact.
const SPARE_HOLD_MS: i64 = DAY_MS;

/// How long before HubSpot's hold on an action's contact ends it is released at the latest.
/// Ticks come on whole minutes, planning first, and may overrun: released a minute before,
/// a contact received late in a minute could be released after HubSpot had moved it on.
pub const RELEASE_MARGIN_MS: i64 = 10 * crate::time::MINUTE_MS;

/// When HubSpot moves a workflow action's contact on without us: the hold asked for on
/// receipt (`hold_ends_ms`), whatever the window says now (a retry of the execution gets
/// that first answer too); a receipt of an older version, which does not record its hold,
/// by `span` ([`hold`]).
pub fn hold_end(
    hold_ends_ms: Option<i64>,
    received_at_ms: i64,
    kind: WebhookType,
    span: Option<i64>,
) -> i64 {
    hold_ends_ms.unwrap_or_else(|| received_at_ms + hold(kind, span))
}

/// A workflow action's last try once its release-by is past: a minute before HubSpot's hold
/// on it ends at `hold_end` (the dispatcher's, and what `explain` says of it).
pub fn last_try(hold_end: i64) -> i64 {
    hold_end - crate::time::MINUTE_MS
}

/// When a workflow action's contact must be released by: [`RELEASE_MARGIN_MS`] before
/// HubSpot's hold on it ends ([`hold_end`]).
pub fn release_by(
    hold_ends_ms: Option<i64>,
    received_at_ms: i64,
    kind: WebhookType,
    span: Option<i64>,
) -> i64 {
    hold_end(hold_ends_ms, received_at_ms, kind, span) - RELEASE_MARGIN_MS
}

/// The window (as `span`) of an action's receipt whose hold was asked to end at `hold_ends`:
/// `span`, or the window that hold was asked for if shorter (the config's window may have
/// grown since).
pub fn within_hold(
    kind: WebhookType,
    span: Option<i64>,
    received_at_ms: i64,
    hold_ends_ms: i64,
) -> Option<i64> {
    longest_wait(kind, span).map(|w| w.min(hold_ends_ms - SPARE_HOLD_MS - received_at_ms))
}

/// The window of a receipt of `kind`, or `None` for the types that go on the next tick.
///
/// `span` overrides the type's default window (24 hours, 7 days); for
/// NEXT_WEEK_FREQUENCY_OPTIMIZED it is the long window given to fading contacts, and the others
/// get at most 24 hours of it. `now_ms` is when the plan is made, normally the tick right after
/// receipt; when later (the dispatcher was down), only the hours still ahead are candidates.
pub fn window(
    kind: WebhookType,
    received_at_ms: i64,
    now_ms: i64,
    span: Option<i64>,
    profile: Option<&Profile>,
) -> Option<Window> {
    let long = longest_wait(kind, span)?;
    let span = match kind {
        // A machine-like contact's class was learned from its machine: it has no usable one.
        WebhookType::NextWeekFrequencyOptimized => {
            match profile.filter(|p| !p.machine).map(|p| p.class) {
                Some(Class::Passive | Class::Inactive) => long,
                _ => long.min(DAY_MS),
            }
        }
        _ => long,
    };
    let from = received_at_ms.max(now_ms);
    let first_hour = from.div_euclid(HOUR_MS) * HOUR_MS;
    let end = received_at_ms + span;
    let hours = if end > from {
        ((end - first_hour + HOUR_MS - 1) / HOUR_MS) as usize
    } else {
        0
    };
    Some(Window {
        from,
        end,
        first_hour,
        hours,
        span,
        first_slot: slot_of(first_hour),
    })
}

/// The contact's history, when it is worth following (engagements, not machine-like).
fn usable(profile: Option<&Profile>) -> Option<&Profile> {
    profile.filter(|p| p.engagements > 0 && !p.machine)
}

/// Predicted engagement in candidate `k`: the contact's own share of that hour, or the
/// population's for a contact without usable history.
pub fn score(
    window: &Window,
    k: usize,
    profile: Option<&Profile>,
    population: &[f64; SLOTS],
) -> f64 {
    let slot = window.slot(k) as usize;
    usable(profile).map_or(population[slot], |p| p.scores[slot])
}

/// How many next choices a [`Preference`] carries: enough that a full hour rarely means
/// looking the contact up again.
pub const NEXT_CHOICES: usize = 7;

/// The hour a contact would choose, what it loses by going to its next choice instead, and
/// its next choices.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preference {
    /// The candidate hour.
    pub k: usize,
    /// Its score less the next best open hour's (0 for a contact without history, whose hour
    /// is a draw: any hour serves it as well).
    pub regret: f64,
    /// The next open candidates, best first (`u8`: a window has at most 169 hours); the
    /// first `next_len` are set.
    pub next: [u8; NEXT_CHOICES],
    pub next_len: u8,
}

impl Preference {
    pub fn next(&self) -> impl Iterator<Item = usize> + '_ {
        self.next[..self.next_len as usize]
            .iter()
            .map(|&k| k as usize)
    }
}

/// The candidate hours `ranked` (best first) with the window's last hour moved last when it
/// is the other half of the hour of receipt, a week on ([`prefer`]).
pub fn last_half_last(window: &Window, ranked: &mut [usize]) {
    let last = window.hours.saturating_sub(1);
    if last > 0
        && window.slot(last) == window.slot(0)
        && let Some(at) = ranked.iter().position(|&k| k == last)
    {
        ranked[at..].rotate_left(1);
    }
}

/// The contact's preferred hour among the candidates with minutes `open` (each candidate's
/// minutes it may go in, as [`Window::minutes`]: none open, `None`).
///
/// Contacts without usable history (none, or machine-like) get an hour drawn from the
/// population profile, which spreads load and gathers unbiased data; the others get their best.
pub fn prefer(
    window: &Window,
    profile: Option<&Profile>,
    population: &[f64; SLOTS],
    who: Subject<'_>,
    open: impl Fn(usize) -> u64,
) -> Option<Preference> {
    // The best open candidates, best first: the preferred hour, its other half a week on
    // (no next choice), and the next choices.
    let mut top = [(0usize, f64::MIN); NEXT_CHOICES + 2];
    let mut len = 0;
    let mut any = false;
    let candidates = window.hours.min(SLOTS + 1);
    let scores = usable(profile).map_or(population, |p| &p.scores);
    for k in 0..candidates {
        if open(k) == 0 {
            continue;
        }
        any = true;
        let s = scores[window.slot(k) as usize];
        if len < top.len() || s > top[len - 1].1 {
            let mut i = len.min(top.len() - 1);
            while i > 0 && top[i - 1].1 < s {
                top[i] = top[i - 1];
                i -= 1;
            }
            top[i] = (k, s);
            len = (len + 1).min(top.len());
        }
    }
    if !any {
        return None;
    }
    // The hour of receipt and the window's last hour are halves of one hour of the week: a
    // contact whose best hour is that one loses nothing by going from one to the other, but
    // a week. Its regret is against the best other hour, and the other half is no next
    // choice (its regret was 0, so a busy hour's own contacts went last, a week on; an
    // audit): [`last_half_last`] ranks it after every other hour.
    let twin = |j: usize, k: usize| j != k && window.slot(j) == window.slot(k);
    let (k, regret) = match usable(profile) {
        Some(_) => {
            let (k, best) = top[0];
            let other = top[1..len].iter().find(|&&(j, _)| !twin(j, k));
            (k, other.map_or(best, |&(_, s)| best - s))
        }
        None => {
            let mut weights = [0.0f64; SLOTS + 1];
            let weights = &mut weights[..candidates];
            // An hour counts for as much of it as is open: the hour of receipt and the last
            // one are parts of the same hour of the day (an earlier version drew that hour of
            // the day twice as often as any other), and an hour half in quiet hours is half
            // an hour (one version drew it as a whole, an audit found).
            for (k, w) in weights.iter_mut().enumerate() {
                let share = f64::from(open(k).count_ones()) / 60.0;
                if share > 0.0 {
                    *w = scores[window.slot(k) as usize].max(f64::MIN_POSITIVE) * share;
                }
            }
            let seed = fnv1a(&[who.contact.as_bytes(), b"\0", who.receipt.as_bytes()]);
            (draw(weights, seed), 0.0)
        }
    };
    let mut next = [0u8; NEXT_CHOICES];
    let mut next_len = 0;
    // The other half is left to the window's ranking, which puts it last.
    for &(j, _) in top[..len].iter().filter(|&&(j, _)| j != k && !twin(j, k)) {
        if next_len < NEXT_CHOICES {
            next[next_len] = j as u8;
            next_len += 1;
        }
    }
    Some(Preference {
        k,
        regret,
        next,
        next_len: next_len as u8,
    })
}

/// The hash that spreads a contact over the minutes of an hour, the same on every host.
pub fn minute_hash(contact: &str) -> u64 {
    fnv1a(&[contact.as_bytes()])
}

/// The contact's own minute among `minutes` (bit m = minute m; not empty), from its
/// [`minute_hash`]: a popular hour is spread over its minutes; when that minute is not open
/// (the hour of receipt is partly past) the contact is spread over the minutes that are, so a
/// burst of posts does not become a burst of calls.
pub fn minute_in(minutes: u64, hash: u64) -> u32 {
    let own = (hash % 60) as u32;
    if minutes & (1 << own) != 0 {
        return own;
    }
    let mut rest = minutes;
    for _ in 0..hash % (minutes.count_ones() as u64).max(1) {
        rest &= rest - 1;
    }
    rest.trailing_zeros()
}

/// Why a receipt was planned where it was, beyond its own preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    /// Its preferred hour and minute.
    None,
    /// Its preferred hour was full on its connector; another hour of the window was taken.
    Capacity { preferred: usize },
    /// Every hour of the window was full: the first minute with room after it.
    Spilled,
    /// Without a window (IMMEDIATE, UPDATE_ONLY, held out): the minutes from its receipt on
    /// were full, so the first with room.
    Delayed,
    /// Quiet hours leave no minute in the window: the first allowed minute after it.
    Quiet,
    /// The window was over when it was planned (sendtime was not running): the first
    /// allowed minute with room.
    Late,
    /// No minute had room within the ledger's search ([`crate::capacity::ledger::SEARCH_DAYS`]:
    /// a daily budget far too small for the queue): planned at once, and held to the budget
    /// when it is sent.
    Overflow,
}

impl Move {
    /// The metric label of a move (`None` for [`Move::None`]).
    pub fn label(self) -> Option<&'static str> {
        match self {
            Move::None => None,
            Move::Capacity { .. } => Some("capacity"),
            Move::Spilled => Some("spilled"),
            Move::Delayed => Some("delayed"),
            Move::Quiet => Some("quiet"),
            Move::Late => Some("late"),
            Move::Overflow => Some("overflow"),
        }
    }
}

/// What a reason says of the contact, worked out when its hour is chosen: writing a million
/// reasons then needs no second look at the profiles.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Standing {
    /// None: the model has never seen the contact.
    class: Option<Class>,
    machine: bool,
    /// Its opens and clicks, when its own history scores its hours (none: the population's do).
    own: Option<u32>,
    /// It has history, but the prior in force scores every contact by the population's.
    pooled: bool,
    /// The window's mean score.
    mean: f64,
    /// The contact's preferred candidate and its score: the hour a reason names.
    preferred: Option<(usize, f64)>,
}

impl Standing {
    /// The contact with `profile`, whose preferred candidate of `window` is `preferred`.
    pub fn of(
        window: Option<&Window>,
        preferred: Option<usize>,
        profile: Option<&Profile>,
        population: &[f64; SLOTS],
    ) -> Standing {
        let (mean, preferred) = window.filter(|w| w.hours > 0).map_or((0.0, None), |w| {
            let score = |k: usize| score(w, k, profile, population);
            let mean = (0..w.hours).map(score).sum::<f64>() / w.hours as f64;
            (mean, preferred.map(|k| (k, score(k))))
        });
        Standing {
            class: profile.map(|p| p.class),
            machine: profile.is_some_and(|p| p.machine),
            own: usable(profile).map(|p| p.engagements),
            pooled: profile.is_some_and(|p| p.pooled),
            mean,
            preferred,
        }
    }
}

/// What a reason names besides the plan itself.
pub struct Grounds<'a> {
    pub kind: WebhookType,
    pub standing: Standing,
    /// The score of the hour capacity moved the receipt to, when it did.
    pub moved_to: Option<f64>,
    /// The contact's quiet hours and zone, when it has them.
    pub quiet: Option<crate::local_time::Local>,
    /// The connector, when capacity moved the receipt.
    pub connector: &'a str,
    /// Held out to measure lift: sent at receipt whatever its type.
    pub holdout: bool,
}

/// Append why a receipt with `window` is due at `due` in candidate `k` (none: outside it) to
/// `reason`, the text every plan row carries.
pub fn describe(
    ctx: &Grounds<'_>,
    window: Option<&Window>,
    k: Option<usize>,
    moved: Move,
    due: i64,
    reason: &mut String,
) {
    let kind = ctx.kind;
    let Some(window) = window else {
        let _ = match kind {
            _ if ctx.holdout => write!(
                reason,
                "HOLDOUT: sent at receipt, as without sendtime, to measure lift (sendtime report lift)"
            ),
            WebhookType::UpdateOnly => {
                write!(
                    reason,
                    "UPDATE_ONLY: list membership updated on the next tick, in a batch"
                )
            }
            _ => write!(reason, "IMMEDIATE: on the next tick"),
        };
        match moved {
            Move::None => {}
            Move::Overflow => overflowed(reason, ctx.connector),
            _ => {
                let _ = write!(
                    reason,
                    "; the minutes before are full on connector {} (requests_per_10s or daily_budget): due {}",
                    ctx.connector,
                    Minute(due)
                );
            }
        }
        return;
    };
    let standing = &ctx.standing;
    let class = match standing.class {
        None => "unknown",
        Some(_) if standing.machine => "machine-like",
        Some(c) => c.as_str(),
    };
    let label = window.label();
    let _ = match kind {
        WebhookType::NextWeekFrequencyOptimized => {
            write!(reason, "{kind} gives {class} contacts the next {label}; ")
        }
        _ => write!(reason, "{kind}: the next {label}; "),
    };
    if let Some((zone, quiet)) = ctx.quiet {
        let _ = write!(reason, "quiet hours {quiet} in {zone}; ");
    }
    if window.hours == 0 {
        let _ = write!(
            reason,
            "the window was over when planned: the first minute with room, {}",
            Minute(due)
        );
        return;
    }
    // The hour the contact preferred: where it went, or where capacity moved it from.
    let named = match moved {
        Move::Capacity { preferred } => Some(preferred),
        _ => k,
    };
    if let Some(named) = named {
        debug_assert_eq!(Some(named), standing.preferred.map(|(k, _)| k));
        let preferred = standing.preferred.map_or(f64::NAN, |(_, score)| score);
        match standing.own {
            // The population's best hour, not a draw: said so, not as its own (a model audit).
            Some(engagements) if standing.pooled => {
                let _ = write!(
                    reason,
                    "best hour of the population's profile for this {class} contact ({engagements} opens/clicks; the prior in force scores every contact by the population's): {} ({:.1}x the window's average)",
                    SlotName(window.slot(named)),
                    times_mean(preferred, standing.mean)
                );
            }
            Some(engagements) => {
                let _ = write!(
                    reason,
                    "best hour for this {class} contact ({engagements} opens/clicks): {} ({:.1}x the window's average)",
                    SlotName(window.slot(named)),
                    times_mean(preferred, standing.mean)
                );
            }
            None => {
                let who = if standing.machine {
                    "machine-like contact"
                } else {
                    "contact without history"
                };
                let _ = write!(
                    reason,
                    "{who}: {} drawn from the population profile",
                    SlotName(window.slot(named))
                );
            }
        }
    }
    if named.is_none() {
        // No hour named: the "; " after the window or quiet hours ends that part.
        reason.truncate(reason.trim_end_matches("; ").len());
    }
    match (moved, k) {
        (Move::Capacity { .. }, Some(k)) => {
            let _ = write!(
                reason,
                "; that hour is full on connector {}: moved to {} ({:.1}x)",
                ctx.connector,
                SlotName(window.slot(k)),
                ctx.moved_to
                    .map_or(f64::NAN, |m| times_mean(m, standing.mean))
            );
        }
        (Move::Spilled, _) => {
            let _ = write!(
                reason,
                "; every hour of the window is full on connector {}: spilled past the window",
                ctx.connector
            );
        }
        (Move::Overflow, _) => overflowed(reason, ctx.connector),
        (Move::Quiet, _) => {
            reason.push_str(
                "; quiet hours leave no minute in the window: the first allowed minute after it",
            );
        }
        _ => {}
    }
    let _ = write!(reason, "; due {}", Minute(due));
}

fn overflowed(reason: &mut String, connector: &str) {
    let _ = write!(
        reason,
        "; no minute has room within {} days on connector {connector} (daily_budget far too small for the queue): planned at once, held to the budget when sent",
        crate::capacity::ledger::SEARCH_DAYS
    );
}

/// `score` against the window's `mean`: 1 when every hour scores nothing (`prior_strength = 0`
/// and no engagement of the contact's in the window), where a division would print NaN.
fn times_mean(score: f64, mean: f64) -> f64 {
    if mean > 0.0 { score / mean } else { 1.0 }
}

/// Decide the due time for one receipt, as if its connector had room at any minute.
///
/// `profile` is `None` for a contact the model has never seen.
pub fn plan(
    kind: WebhookType,
    received_at_ms: i64,
    profile: Option<&Profile>,
    population: &[f64; SLOTS],
    who: Subject<'_>,
) -> Plan {
    let mut reason = String::new();
    let (due_at_ms, slot) = plan_into(
        kind,
        received_at_ms,
        received_at_ms,
        profile,
        population,
        who,
        &mut reason,
    );
    Plan {
        due_at_ms,
        slot,
        reason,
    }
}

/// [`plan`] planned at `now_ms` (later than the receipt when the dispatcher was down; a window
/// already over means now), appending the reason to `reason`; returns (due at, slot).
pub fn plan_into(
    kind: WebhookType,
    received_at_ms: i64,
    now_ms: i64,
    profile: Option<&Profile>,
    population: &[f64; SLOTS],
    who: Subject<'_>,
    reason: &mut String,
) -> (i64, Option<u8>) {
    let window = window(kind, received_at_ms, now_ms, None, profile);
    let chosen = window
        .as_ref()
        .and_then(|w| prefer(w, profile, population, who, |k| w.minutes(k)).map(|p| p.k));
    let ctx = Grounds {
        kind,
        standing: Standing::of(window.as_ref(), chosen, profile, population),
        moved_to: None,
        quiet: None,
        connector: "",
        holdout: false,
    };
    let Some(window) = window else {
        describe(&ctx, None, None, Move::None, received_at_ms, reason);
        return (received_at_ms, None);
    };
    let Some(k) = chosen else {
        describe(&ctx, Some(&window), None, Move::None, window.from, reason);
        return (window.from, None);
    };
    let due = window.due(k, minute_in(window.minutes(k), minute_hash(who.contact)));
    describe(&ctx, Some(&window), Some(k), Move::None, due, reason);
    (due, Some(window.slot(k)))
}

/// Index drawn with probability proportional to `weights`, from a 64-bit seed.
fn draw(weights: &[f64], seed: u64) -> usize {
    let total: f64 = weights.iter().sum();
    if total <= 0.0 {
        return (seed % weights.len() as u64) as usize;
    }
    // 53 random bits → uniform in [0, 1).
    let u = (splitmix(seed) >> 11) as f64 / (1u64 << 53) as f64;
    let mut acc = 0.0;
    for (i, w) in weights.iter().enumerate() {
        acc += w / total;
        if u < acc {
            return i;
        }
    }
    // Rounding left the sum short of `u`: the last index that can be drawn (the last one
    // may weigh nothing, an hour without an open minute; an audit).
    (weights.iter())
        .rposition(|w| *w > 0.0)
        .unwrap_or(weights.len() - 1)
}

/// Stable 64-bit hash (FNV-1a): the same contact spreads to the same minute on every host.
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::DAY_MS;

    /// 2024-01-07 was a Sunday.
    const SUNDAY_MIDNIGHT: i64 = 1_704_585_600_000;
    const WHO: Subject = Subject {
        contact: "ada@example.com",
        receipt: "01J0000000000000000000000",
    };

    fn profile_peaking_at(slot: usize, class: Class) -> Profile {
        let mut scores = [0.5 / (SLOTS as f64 - 1.0); SLOTS];
        scores[slot] = 0.5;
        Profile {
            class,
            scores,
            engagements: 20,
            last_day: Some(0),
            machine: false,
            pooled: false,
        }
    }

    fn uniform() -> [f64; SLOTS] {
        [1.0 / SLOTS as f64; SLOTS]
    }

    /// An action's receipt keeps to the window its hold was asked for when the config's has
    /// grown since, and takes the config's when it has shrunk; the types that go at once have
    /// none either way.
    #[test]
    fn a_receipts_window_is_cut_to_its_hold() {
        use crate::time::HOUR_MS;
        let received = SUNDAY_MIDNIGHT;
        let asked = |kind, span| received + hold(kind, span);
        let six_hours = asked(WebhookType::Next24Hours, Some(6 * HOUR_MS));
        assert_eq!(
            within_hold(
                WebhookType::Next24Hours,
                Some(7 * DAY_MS),
                received,
                six_hours
            ),
            Some(6 * HOUR_MS)
        );
        assert_eq!(
            within_hold(WebhookType::Next24Hours, None, received, six_hours),
            Some(6 * HOUR_MS)
        );
        let week = asked(WebhookType::NextWeek, None);
        assert_eq!(
            within_hold(WebhookType::NextWeek, Some(2 * HOUR_MS), received, week),
            Some(2 * HOUR_MS)
        );
        // The long window of fading contacts is cut the same way.
        let kind = WebhookType::NextWeekFrequencyOptimized;
        let three_days = asked(kind, Some(3 * DAY_MS));
        assert_eq!(
            within_hold(kind, None, received, three_days),
            Some(3 * DAY_MS)
        );
        let w = window(kind, received, received, Some(3 * DAY_MS), None).unwrap();
        assert_eq!(w.span, DAY_MS, "an active contact still gets a day of it");
        let at_once = asked(WebhookType::Immediate, None);
        assert_eq!(
            within_hold(WebhookType::Immediate, Some(7 * DAY_MS), received, at_once),
            None
        );
    }

    /// A contact without history draws an hour for as much of it as is open: an hour half
    /// in quiet hours half as often as a whole one (an audit: drawn as a whole, the part-quiet
    /// hours at the edges of quiet hours took twice their share).
    #[test]
    fn a_cold_draw_weighs_an_hour_by_its_open_minutes() {
        let received = SUNDAY_MIDNIGHT;
        let w = window(
            WebhookType::Next24Hours,
            received,
            received,
            Some(2 * HOUR_MS),
            None,
        )
        .unwrap();
        let pop = uniform();
        let half = (1u64 << 30) - 1;
        let draws = 3000;
        let second = (0..draws)
            .filter(|i| {
                let receipt = format!("r{i}");
                let who = Subject {
                    contact: "c",
                    receipt: &receipt,
                };
                let open = |k: usize| {
                    if k == 1 {
                        w.minutes(k) & half
                    } else {
                        w.minutes(k)
                    }
                };
                prefer(&w, None, &pop, who, open).unwrap().k == 1
            })
            .count();
        // 30 open minutes of 90: a third.
        let share = second as f64 / f64::from(draws);
        assert!((0.29..0.38).contains(&share), "{share}");
    }

    /// A week's window holds the hour of receipt twice (its two halves, a week apart): a
    /// contact whose best hour that is loses by leaving it, and a week on is its last choice.
    /// Its regret was 0 and a week on its first next choice, so a busy hour's own contacts
    /// went last and, once their hour was full, a week late (an audit).
    #[test]
    fn the_hour_of_receipt_a_week_on_is_the_last_choice() {
        let received = SUNDAY_MIDNIGHT + 2 * DAY_MS + 10 * HOUR_MS + 40 * MINUTE_MS;
        let w = window(WebhookType::NextWeek, received, received, None, None).unwrap();
        assert_eq!(w.hours, 169);
        let prof = profile_peaking_at(slot_of(received) as usize, Class::Active);
        let pref = prefer(&w, Some(&prof), &uniform(), WHO, |k| w.minutes(k)).unwrap();
        assert_eq!(pref.k, 0);
        assert!(pref.regret > 0.0, "{pref:?}");
        let next: Vec<usize> = pref.next().collect();
        assert!(!next.contains(&168), "{next:?}");
        assert_eq!(next.len(), NEXT_CHOICES);
        // Ranked with the window's hours, the same hour a week on comes after all of them.
        let mut ranked: Vec<usize> = (0..w.hours).collect();
        ranked.sort_by(|a, b| {
            let score = |k: usize| prof.scores[w.slot(k) as usize];
            score(*b).total_cmp(&score(*a))
        });
        assert_eq!(&ranked[..2], [0, 168]);
        last_half_last(&w, &mut ranked);
        assert_eq!((ranked[0], ranked[168]), (0, 168));
    }

    /// A reason rates the hour the contact preferred, and the one capacity moved it to, by
    /// their scores against the window's mean.
    #[test]
    fn reasons_rate_the_preferred_and_the_moved_to_hour_against_the_window() {
        let received = SUNDAY_MIDNIGHT + 22 * HOUR_MS + 30 * MINUTE_MS;
        let prof = profile_peaking_at(9, Class::Active);
        let pop = uniform();
        let kind = WebhookType::Next24Hours;
        let w = window(kind, received, received, None, Some(&prof)).unwrap();
        let preferred = prefer(&w, Some(&prof), &pop, WHO, |k| w.minutes(k)).unwrap();
        assert_eq!(w.slot(preferred.k), 9);
        let own = |k: usize| prof.scores[w.slot(k) as usize];
        let mean = (0..w.hours).map(own).sum::<f64>() / w.hours as f64;
        let moved = preferred.next().nth(2).unwrap();
        let ctx = Grounds {
            kind,
            standing: Standing::of(Some(&w), Some(preferred.k), Some(&prof), &pop),
            moved_to: Some(own(moved)),
            quiet: None,
            connector: "main",
            holdout: false,
        };
        let capacity = Move::Capacity {
            preferred: preferred.k,
        };
        let reason_of = |ctx: &Grounds| {
            let mut reason = String::new();
            let due = w.due(moved, 0);
            describe(ctx, Some(&w), Some(moved), capacity, due, &mut reason);
            reason
        };
        let reason = reason_of(&ctx);
        let best = format!(
            "best hour for this active contact (20 opens/clicks): Mon 09:00 UTC ({:.1}x the window's average)",
            0.5 / mean
        );
        let taken = format!(
            "full on connector main: moved to {} ({:.1}x)",
            SlotName(w.slot(moved)),
            own(moved) / mean
        );
        assert!(
            reason.contains(&best) && reason.contains(&taken),
            "{reason}"
        );
        // Where the fit scores everyone by the population, the reason says so: it named the
        // population's best hour as the contact's own.
        let pooled = Profile {
            pooled: true,
            ..prof.clone()
        };
        let ctx = Grounds {
            standing: Standing::of(Some(&w), Some(preferred.k), Some(&pooled), &pop),
            ..ctx
        };
        let reason = reason_of(&ctx);
        assert!(
            reason.contains(
                "best hour of the population's profile for this active contact (20 opens/clicks;"
            ),
            "{reason}"
        );
    }

    /// Without a population prior (`prior_strength = 0`), a contact whose engagement all
    /// falls outside the window scores nothing in it: its reason still reads a number.
    #[test]
    fn a_window_where_every_hour_scores_nothing_reads_no_nan() {
        let received = SUNDAY_MIDNIGHT + 22 * HOUR_MS;
        let mut prof = profile_peaking_at(100, Class::Active);
        prof.scores = [0.0; SLOTS];
        prof.scores[100] = 1.0;
        let pop = uniform();
        let kind = WebhookType::Next24Hours;
        let w = window(kind, received, received, Some(2 * HOUR_MS), Some(&prof)).unwrap();
        let standing = Standing::of(Some(&w), Some(0), Some(&prof), &pop);
        assert_eq!(standing.mean, 0.0, "the test's premise");
        let ctx = Grounds {
            kind,
            standing,
            moved_to: Some(0.0),
            quiet: None,
            connector: "main",
            holdout: false,
        };
        let mut reason = String::new();
        let capacity = Move::Capacity { preferred: 0 };
        describe(&ctx, Some(&w), Some(1), capacity, w.due(1, 0), &mut reason);
        assert!(!reason.contains("NaN"), "{reason}");
        assert!(reason.contains("(1.0x the window's average)"), "{reason}");
        assert!(reason.contains("(1.0x); due"), "{reason}");
    }

    /// Quiet hours that leave no minute in the window read as one list: the reason had
    /// "; ;" where no hour was named.
    #[test]
    fn a_window_quiet_hours_cover_reads_without_an_empty_part() {
        let received = SUNDAY_MIDNIGHT + 22 * HOUR_MS;
        let pop = uniform();
        let kind = WebhookType::Next24Hours;
        let w = window(kind, received, received, Some(HOUR_MS), None).unwrap();
        let quiet = crate::local_time::QuietHours::parse("22:00-07:00").unwrap();
        let ctx = Grounds {
            kind,
            standing: Standing::of(Some(&w), None, None, &pop),
            moved_to: None,
            quiet: Some((chrono_tz::America::New_York, quiet)),
            connector: "main",
            holdout: false,
        };
        let mut reason = String::new();
        describe(&ctx, Some(&w), None, Move::Quiet, w.from, &mut reason);
        assert!(
            reason.ends_with(
                "quiet hours 22:00-07:00 in America/New_York; quiet hours leave no minute in the window: the first allowed minute after it; due 2024-01-07 22:00 UTC"
            ),
            "{reason}"
        );
    }

    #[test]
    fn immediate_and_update_only_go_on_the_next_tick() {
        for kind in [WebhookType::Immediate, WebhookType::UpdateOnly] {
            let p = plan(kind, 123_456, None, &uniform(), WHO);
            assert_eq!(p.due_at_ms, 123_456);
            assert_eq!(p.slot, None);
        }
    }

    #[test]
    fn next_24_hours_picks_the_best_slot_across_the_week_wrap() {
        // Received Sunday 22:30; the contact's best slot is Monday 09:00 (slot 9).
        let received = SUNDAY_MIDNIGHT + 22 * HOUR_MS + 30 * MINUTE_MS;
        let prof = profile_peaking_at(9, Class::Active);
        let p = plan(
            WebhookType::Next24Hours,
            received,
            Some(&prof),
            &uniform(),
            WHO,
        );
        assert_eq!(p.slot, Some(9));
        let monday_9 = SUNDAY_MIDNIGHT + DAY_MS + 9 * HOUR_MS;
        assert!(
            p.due_at_ms >= monday_9 && p.due_at_ms < monday_9 + HOUR_MS,
            "{}",
            p.reason
        );
        assert!(p.reason.contains("Mon 09:00 UTC"), "{}", p.reason);
        // Reproducible.
        assert_eq!(
            plan(
                WebhookType::Next24Hours,
                received,
                Some(&prof),
                &uniform(),
                WHO
            ),
            p
        );
    }

    #[test]
    fn next_24_hours_never_leaves_its_window_even_when_the_best_slot_is_outside() {
        // Best slot Wednesday 12:00 (slot 60); received Monday 10:00: outside 24 h.
        let received = SUNDAY_MIDNIGHT + DAY_MS + 10 * HOUR_MS;
        let prof = profile_peaking_at(60, Class::Active);
        let p = plan(
            WebhookType::Next24Hours,
            received,
            Some(&prof),
            &uniform(),
            WHO,
        );
        assert!(p.due_at_ms >= received && p.due_at_ms < received + DAY_MS);
        // NEXT_WEEK reaches it.
        let p = plan(
            WebhookType::NextWeek,
            received,
            Some(&prof),
            &uniform(),
            WHO,
        );
        assert_eq!(p.slot, Some(60));
        assert!(p.due_at_ms < received + 7 * DAY_MS);
    }

    #[test]
    fn window_edges_receipt_hour_and_last_hour() {
        // Best slot is the hour of receipt: the due time is not before the receipt.
        let received = SUNDAY_MIDNIGHT + 22 * HOUR_MS + 59 * MINUTE_MS + 30_000;
        let prof = profile_peaking_at(slot_of(received) as usize, Class::Active);
        let p = plan(
            WebhookType::Next24Hours,
            received,
            Some(&prof),
            &uniform(),
            WHO,
        );
        assert_eq!(p.slot, Some(slot_of(received)));
        assert!(p.due_at_ms >= received && p.due_at_ms < SUNDAY_MIDNIGHT + 23 * HOUR_MS);
        // Best slot is the last whole hour of the window (received 10:00, best 09:00 next day).
        let received = SUNDAY_MIDNIGHT + DAY_MS + 10 * HOUR_MS;
        let prof = profile_peaking_at(24 + 9, Class::Active);
        let p = plan(
            WebhookType::Next24Hours,
            received,
            Some(&prof),
            &uniform(),
            WHO,
        );
        assert_eq!(p.slot, Some(33));
        assert!(p.due_at_ms >= received + 23 * HOUR_MS && p.due_at_ms < received + DAY_MS);
    }

    #[test]
    fn frequency_optimized_waits_a_week_only_for_fading_contacts() {
        let received = SUNDAY_MIDNIGHT + DAY_MS; // Monday 00:00
        for (class, reach) in [
            (Class::Active, DAY_MS),
            (Class::Evaluating, DAY_MS),
            (Class::Passive, 7 * DAY_MS),
            (Class::Inactive, 7 * DAY_MS),
        ] {
            // Best slot Thursday 18:00: only reachable in a week.
            let prof = profile_peaking_at(3 * 24 + 18, class);
            let p = plan(
                WebhookType::NextWeekFrequencyOptimized,
                received,
                Some(&prof),
                &uniform(),
                WHO,
            );
            assert!(p.due_at_ms < received + reach, "{class}: {}", p.reason);
            assert_eq!(p.slot == Some(90), reach > DAY_MS, "{class}: {}", p.reason);
        }
    }

    /// Planned late (the dispatcher was down): the best hour still ahead in the window, not
    /// one already past; a window already over means now.
    #[test]
    fn planned_late_only_hours_still_ahead_count() {
        let monday = SUNDAY_MIDNIGHT + DAY_MS;
        let received = monday + 8 * HOUR_MS;
        let mut prof = profile_peaking_at(9, Class::Active); // Monday 09:00 best
        prof.scores[22] = 0.3; // Monday 22:00 next
        let at = |now: i64| {
            let mut reason = String::new();
            let (due, slot) = plan_into(
                WebhookType::Next24Hours,
                received,
                now,
                Some(&prof),
                &uniform(),
                WHO,
                &mut reason,
            );
            (due, slot, reason)
        };
        let (due, slot, _) = at(received);
        assert_eq!(slot, Some(9));
        assert!(due >= monday + 9 * HOUR_MS && due < monday + 10 * HOUR_MS);
        let now = monday + 20 * HOUR_MS;
        let (due, slot, reason) = at(now);
        assert_eq!(slot, Some(22), "{reason}");
        assert!(due >= monday + 22 * HOUR_MS && due < monday + 23 * HOUR_MS);
        let now = received + DAY_MS + 5 * MINUTE_MS;
        let (due, slot, reason) = at(now);
        assert_eq!((due, slot), (now, None));
        assert!(
            reason.contains("the window was over when planned"),
            "{reason}"
        );
    }

    #[test]
    fn a_machine_like_contact_has_no_class_to_wait_a_week_for() {
        let received = SUNDAY_MIDNIGHT + DAY_MS;
        let mut prof = profile_peaking_at(3 * 24 + 18, Class::Inactive);
        prof.machine = true;
        let p = plan(
            WebhookType::NextWeekFrequencyOptimized,
            received,
            Some(&prof),
            &uniform(),
            WHO,
        );
        assert!(p.due_at_ms < received + DAY_MS, "{}", p.reason);
        assert!(
            p.reason
                .starts_with("NEXT_WEEK_FREQUENCY_OPTIMIZED gives machine-like contacts the next 24 hours; machine-like contact: "),
            "{}",
            p.reason
        );
    }

    /// Posts arriving at 10:40 for contacts whose best hour is 10:00 are spread over the 20
    /// minutes left, not all due at 10:40.
    #[test]
    fn in_the_hour_of_receipt_minutes_spread_over_what_is_left() {
        let received = SUNDAY_MIDNIGHT + DAY_MS + 10 * HOUR_MS + 40 * MINUTE_MS; // Monday 10:40
        let prof = profile_peaking_at(10, Class::Active);
        let dues: Vec<i64> = (0..1000)
            .map(|i| {
                let contact = format!("c{i}@example.com");
                let who = Subject {
                    contact: &contact,
                    receipt: "r",
                };
                plan(
                    WebhookType::Next24Hours,
                    received,
                    Some(&prof),
                    &uniform(),
                    who,
                )
                .due_at_ms
            })
            .collect();
        let hour_end = received + 20 * MINUTE_MS;
        assert!(dues.iter().all(|d| (received..hour_end).contains(d)));
        let at_receipt = dues.iter().filter(|d| **d == received).count();
        assert!(
            at_receipt < 150,
            "{at_receipt} of 1000 due at the receipt time"
        );
        let minutes: std::collections::HashSet<i64> = dues.iter().map(|d| d / MINUTE_MS).collect();
        assert_eq!(minutes.len(), 20);
    }

    #[test]
    fn cold_contacts_draw_from_the_population_inside_the_window_reproducibly() {
        let received = SUNDAY_MIDNIGHT + 20 * HOUR_MS;
        let mut pop = [0.01; SLOTS];
        pop[7] = 1.0; // Monday 07:00 dominates
        let mut seen = std::collections::HashSet::new();
        for i in 0..200 {
            let contact = format!("c{i}@example.com");
            let who = Subject {
                contact: &contact,
                receipt: "r",
            };
            let p = plan(WebhookType::Next24Hours, received, None, &pop, who);
            assert!(p.due_at_ms >= received && p.due_at_ms < received + DAY_MS);
            assert_eq!(plan(WebhookType::Next24Hours, received, None, &pop, who), p);
            seen.insert(p.slot.unwrap());
            assert!(p.reason.contains("without history"));
        }
        // Mostly the dominant hour, but drawn, not fixed.
        assert!(seen.contains(&7) && seen.len() > 1, "{seen:?}");
        // Minutes are spread across the hour.
        let minutes: std::collections::HashSet<i64> = (0..200)
            .map(|i| {
                let contact = format!("c{i}@example.com");
                let p = plan(
                    WebhookType::Next24Hours,
                    received,
                    None,
                    &pop,
                    Subject {
                        contact: &contact,
                        receipt: "r",
                    },
                );
                (p.due_at_ms / MINUTE_MS) % 60
            })
            .collect();
        assert!(minutes.len() > 30);
    }

    /// Under a flat population, a contact without history received at half past an hour goes
    /// at that hour of the day as often as at any other: its window holds half of it today
    /// and half tomorrow. Counted whole each, it was drawn about twice as often (2/25).
    #[test]
    fn cold_contacts_draw_the_hour_of_receipt_for_the_part_the_window_holds() {
        let received = SUNDAY_MIDNIGHT + 10 * HOUR_MS + 30 * MINUTE_MS;
        let n = 4_800;
        let at_ten = (0..n)
            .filter(|i| {
                let contact = format!("c{i}@example.com");
                let who = Subject {
                    contact: &contact,
                    receipt: "r",
                };
                let p = plan(WebhookType::Next24Hours, received, None, &uniform(), who);
                p.slot.unwrap() % 24 == 10
            })
            .count();
        // 1/24 of 4,800 is 200 (sd 14); 2/25 would be 384.
        assert!((150..260).contains(&at_ten), "{at_ten}");
    }
}
