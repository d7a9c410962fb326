//! `sendtime report lift`: the sends of optimized and held-out receipts joined, by contact,
//! with the email events imported afterwards; open and click rates within 24 and 72 hours of
//! each send, their difference with a bootstrap 95 % interval, and a verdict only when that
//! interval excludes zero and each group has [`MIN_SENDS`].
//!
//! Only like is compared with like: each webhook that holds receipts out with itself, at each
//! holdout share it drew receipts at (receipts drawn with none, a webhook without a holdout or
//! the weeks it was lifted, are other workflows, audiences and dates); receipts planned before
//! the share was recorded, between the webhook's first and last held-out receipt.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use serde::Serialize;

use super::compare::{Cell, Cluster, Engagement, Metric, NoVerdict, Verdict, compare};
use super::sends::{Planned, plan_rows, with_sends};
use crate::datasets::contacts::{Contacts, contact_key};
use crate::datasets::events::{self, Kind};
use crate::datasets::{outcomes, plan};
use crate::time::{HOUR_MS, MINUTE_MS, format_minute};

/// Hours after a send within which an open or click counts.
const WINDOWS_H: [i64; 2] = [24, 72];

/// What to report on.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Receipts received at or after this (epoch ms): by receipt, not send, so that both
    /// groups start from the same receipts.
    pub since_ms: Option<i64>,
    /// Only this webhook or action.
    pub webhook: Option<String>,
    /// Engagement is known up to this ([`default_as_of`]): a receipt counts once its
    /// windows end before it, or later engagement would count as none.
    pub as_of_ms: i64,
    /// Connectors whose engagement `serve` imports and none of which is imported yet
    /// ([`default_as_of`]): the report says their sends count as not engaged.
    pub unimported: Vec<String>,
    /// Connectors in dry run whose engagement was imported once, up to when (less the hours
    /// HubSpot records late): `serve` imports no more of it, so their live sends' windows
    /// after that count as not engaged, and the report says so.
    pub imported_until: Vec<ImportedUntil>,
    /// Engagement is known only up to the newest event imported, when that is sooner than
    /// `as_of_ms` ([`default_as_of`] where `serve` imports nothing).
    pub up_to_newest_event: bool,
}

/// A connector whose engagement is known only up to `until_ms`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImportedUntil {
    pub connector: String,
    pub until_ms: i64,
}

/// What the report knows engagement up to by default: where `serve` imports from HubSpot,
/// the earliest instant up to which a connector's events are all imported, less the hours
/// HubSpot may record an event late (which the import reads again for them), and the
/// connectors none of whose events is imported yet (an account just added, or whose import
/// always fails): they have no such instant, and an earlier version left them out unsaid.
/// Every connector counts, not only those the reported webhooks name now: a webhook may
/// have sent through another before. Where `serve` imports nothing (files, or `import
/// hubspot` run by hand), the newest event imported: an earlier version took `now`, and
/// the windows after the last import, the optimized sends' more often, counted as not
/// engaged (an audit found it).
pub fn default_as_of(config: &crate::config::Config, now: i64) -> Options {
    use crate::import::hubspot::{OVERLAP, complete_until};
    let data_dir = &config.server.data_dir;
    let late = OVERLAP.as_millis() as i64;
    let (mut as_of, mut unimported, mut imported_until) = (now, Vec::new(), Vec::new());
    // Only the connectors `serve` imports for: the cursor of one in dry run, or of a run of
    // `import hubspot --until` with the schedule off, would hold every webhook's report at
    // its time for good. One in dry run is said, since its live sends before may be counted
    // (an audit: their windows after its import counted as not engaged, unsaid).
    for c in (config.connectors.iter()).filter(|_| config.import.enabled) {
        match (complete_until(data_dir, &c.id), c.dry_run) {
            (Some(t), false) => as_of = as_of.min(t - late),
            (None, false) => unimported.push(c.id.clone()),
            (Some(t), true) => imported_until.push(ImportedUntil {
                connector: c.id.clone(),
                until_ms: t - late,
            }),
            (None, true) => {}
        }
    }
    Options {
        as_of_ms: as_of,
        unimported,
        imported_until,
        up_to_newest_event: !config.import.enabled,
        ..Options::default()
    }
}

/// Refuse a `--since` not before the as-of time (`newest`: the newest event imported set it):
/// no send could be counted.
pub fn since_before(since: Option<i64>, as_of_ms: i64, newest: bool) -> anyhow::Result<()> {
    let Some(since) = since else { return Ok(()) };
    anyhow::ensure!(
        since < as_of_ms,
        "--since {} is not before the report's as-of time {}{}: no send could be counted",
        format_minute(since),
        format_minute(as_of_ms),
        match newest {
            true => " (the newest event imported: import newer events, or pass --as-of)",
            false => "",
        }
    );
    Ok(())
}

/// A group's receipts done with (sent, failed or a dry run) and counted, and of them those
/// that failed, never sent.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Lost {
    pub receipts: u64,
    pub failed: u64,
}

impl Lost {
    fn share(self) -> f64 {
        self.failed as f64 / self.receipts.max(1) as f64
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Lift {
    pub since_ms: Option<i64>,
    pub as_of_ms: i64,
    /// The as-of time is the newest event imported, `serve` importing none
    /// ([`Options::up_to_newest_event`]).
    pub as_of_newest_event: bool,
    /// The newest event imported: windows after it are counted as not engaged.
    pub newest_event_ms: Option<i64>,
    /// No engagement event is imported at all: every send counts as not engaged.
    pub no_events: bool,
    pub webhook: Option<String>,
    /// Receipts compared, per group, sent or not: a group whose receipts were sent less
    /// (failed, still waiting) is compared on fewer of them.
    pub optimized_receipts: u64,
    pub holdout_receipts: u64,
    /// Receipts of IMMEDIATE and UPDATE_ONLY deliveries that would have been compared, left
    /// out when every webhook is reported on: both groups go at receipt.
    pub untimed_receipts: u64,
    /// Sends found, per group, whatever their windows.
    pub optimized_sends: u64,
    pub holdout_sends: u64,
    /// Receipts done with and counted, and of them those that failed, never sent, per group
    /// (optimized, held out): the sends compare only who stayed, and an optimized receipt
    /// waits longer for a failure to reach it (an audit: a contact deleted or unsubscribed
    /// meanwhile leaves the optimized group alone, likely a non-reader). Shares too different
    /// for chance, by enough to explain a verdict, withhold it ([`NoVerdict::LostUnequally`]).
    pub optimized_lost: Lost,
    pub holdout_lost: Lost,
    pub metrics: Vec<Metric>,
    /// Connectors `serve` imports for none of whose engagement is imported yet.
    pub unimported: Vec<String>,
    /// Connectors in dry run whose engagement is imported only up to before the as-of time.
    pub imported_until: Vec<ImportedUntil>,
    /// Webhooks with receipts not sent yet: each is counted up to the first of them.
    pub unsent: Vec<Unsent>,
    /// Parts of the plan, outcomes and events (live and archived) set aside as unreadable,
    /// some by this report's reads: their rows are missing from the figures, which an
    /// earlier version left unsaid (an audit).
    pub quarantined: u64,
    /// What a reader needs to know to read the figures ([`Lift::explain`]), as the report
    /// prints them.
    pub notes: Vec<String>,
}

/// A webhook's receipts not done with yet (waiting, retrying, held): its receipts from the
/// first of them on are not counted until it is.
#[derive(Debug, Clone, Serialize)]
pub struct Unsent {
    pub webhook: String,
    pub first_received_ms: i64,
    pub receipts: u64,
}

/// A send with its contact's index in the dictionary.
struct Send {
    /// Its webhook, as an index: each webhook is compared with itself ([`compare`]).
    stratum: usize,
    contact: Option<u32>,
    /// The contact's other entry, by HubSpot id, when it is in the store by email too: its
    /// engagement is the contact's as well.
    also: Option<u32>,
    at_ms: i64,
    holdout: bool,
    /// Receipt time plus the longest wait any send of its webhook had: windows are counted
    /// from here, the same rule for both groups (by send time, an optimized send, later,
    /// would be left out where its held-out twin is in).
    counted_from_ms: i64,
    /// Received at or after a receipt of its webhook that is not sent yet: not counted, in
    /// either group, until that one is done with (its wait is not known yet, and the longest
    /// wait of those sent would count its held-out twin and leave it out).
    after_unsent: bool,
    /// The contact's next send of any webhook after those that went with this one, if any:
    /// engagement after it is that send's.
    next_ms: Option<i64>,
    /// The sends to the contact that went together with this one, itself included, as its
    /// person and the range of them in that person's send times; none when it went alone. An
    /// open after several of them is theirs in equal shares, which mail was read being unknown.
    together: Option<(u32, std::ops::Range<usize>)>,
    /// Without a store entry (`contact` none): the index of the key it was posted with among
    /// such sends' keys, so one person's sends count as one contact, not one each.
    stranger: usize,
}

/// The receipts compared: those drawn at a holdout share above zero. Of rows from before the
/// share was recorded, of each webhook with a holdout, those it received between its first
/// and its last held-out one.
fn compared(all: &[Planned]) -> impl Iterator<Item = &Planned> {
    let mut held_out: HashMap<&str, (i64, i64)> = HashMap::new();
    for s in all.iter().filter(|s| s.holdout && s.share.is_none()) {
        let t = s.received_at_ms;
        let span = held_out.entry(&s.webhook).or_insert((t, t));
        *span = (span.0.min(t), span.1.max(t));
    }
    all.iter().filter(move |s| match s.share {
        Some(share) => share > 0.0,
        None => held_out
            .get(&*s.webhook)
            .is_some_and(|(first, last)| (*first..=*last).contains(&s.received_at_ms)),
    })
}

/// Build the report from the data folder.
pub fn lift(data_dir: &Path, options: &Options) -> anyhow::Result<Lift> {
    // Where no receipt was ever held out, nothing is compared: the outcomes and the contact
    // dictionary are not read (`GET /lift` in `serve` read them all for nothing, an audit).
    let mut all = plan_rows(data_dir)?;
    // The live plan's receipts (`ended` says archived until the sends are read): the inbox's
    // others are not planned yet.
    let mut live = HashSet::new();
    let contacts = if compared(&all).next().is_some() {
        live = all.iter().filter(|s| !s.ended).map(|s| s.receipt).collect();
        with_sends(data_dir, &mut all)?;
        Contacts::load(data_dir)?
    } else {
        Contacts::default()
    };
    let entries = |s: &Planned| contacts.find_each(s.contact_id, s.email.as_deref());
    let people = People::joined_by(all.iter().filter(|s| s.sent_at_ms.is_some()).map(entries));
    // Every send to each person, of any webhook, type or receipt time: engagement after a
    // later send is that send's, whether or not that send is compared.
    let mut sends_to: HashMap<u32, Vec<i64>> = HashMap::new();
    for s in &all {
        let [by_email, by_id] = entries(s);
        if let (Some(at), Some(c)) = (s.sent_at_ms, by_email.or(by_id)) {
            sends_to.entry(people.of(c)).or_default().push(at);
        }
    }
    // Each person's sends in time order, and where each group of sends that went together
    // begins: a group is its first send and those within [`TOGETHER_MS`] of it.
    let sends_to: HashMap<u32, (Vec<i64>, Vec<usize>)> = (sends_to.into_iter())
        .map(|(person, mut times)| {
            times.sort_unstable();
            let mut starts = vec![0];
            for (i, &t) in times.iter().enumerate() {
                if t > times[*starts.last().expect("one group at least")] + TOGETHER_MS {
                    starts.push(i);
                }
            }
            (person, (times, starts))
        })
        .collect();
    // The sends to `c`'s person that went together with its send at `at_ms` (none when it
    // went alone), and the first send after them.
    let together = |c: u32, at_ms: i64| {
        let person = people.of(c);
        let Some((times, starts)) = sends_to.get(&person) else {
            return (None, None);
        };
        let group = starts
            .partition_point(|&i| times[i] <= at_ms)
            .saturating_sub(1);
        let members = starts[group]..starts.get(group + 1).copied().unwrap_or(times.len());
        let next = times[members.end..].iter().find(|&&t| t > at_ms).copied();
        let alone = members.len() < 2 || times[members.clone()].binary_search(&at_ms).is_err();
        ((!alone).then_some((person, members)), next)
    };
    all.retain(|s| {
        options.since_ms.is_none_or(|t| s.received_at_ms >= t)
            && options.webhook.as_deref().is_none_or(|w| *w == *s.webhook)
    });
    // Where both groups go at receipt, nothing is measured but noise that would dilute the
    // rest; a webhook named alone that only ever went at receipt is compared whole (an A/A
    // check). An action's IMMEDIATE executions beside its timed ones are left out too (an
    // audit: named, they pulled its difference towards zero, unsaid).
    let aa_check = options.webhook.is_some() && all.iter().all(|s| !s.timed);
    let untimed = if !aa_check {
        let (timed, untimed): (Vec<Planned>, Vec<Planned>) = all.into_iter().partition(|s| s.timed);
        all = timed;
        compared(&untimed).count() as u64
    } else {
        0
    };
    let compared: Vec<&Planned> = compared(&all).collect();
    let unplanned = unplanned_timed(data_dir, &compared, &live, options)?;
    let mut wait: HashMap<&str, i64> = HashMap::new();
    let mut receipts = [0u64; 2];
    // Per webhook, the first receipt not done with, and how many are not.
    let mut unsent: BTreeMap<&str, (i64, u64)> = BTreeMap::new();
    for s in &compared {
        receipts[usize::from(s.holdout)] += 1;
        if let Some(at) = s.sent_at_ms {
            let w = wait.entry(&s.webhook).or_default();
            *w = (*w).max(at - s.received_at_ms);
        }
        if !s.ended {
            let u = unsent.entry(&s.webhook).or_insert((i64::MAX, 0));
            *u = (u.0.min(s.received_at_ms), u.1 + 1);
        }
    }
    for (webhook, received_at_ms) in &unplanned {
        let u = unsent.entry(webhook).or_insert((i64::MAX, 0));
        *u = (u.0.min(*received_at_ms), u.1 + 1);
    }
    // Of the receipts done with and counted (before their webhook's first not done with),
    // those never sent, per group, each webhook at each share apart (as the rates are).
    let mut lost_in: HashMap<(&str, Option<u64>), [Lost; 2]> = HashMap::new();
    for s in compared.iter().filter(|s| s.ended) {
        let counted = unsent
            .get(&*s.webhook)
            .is_none_or(|&(first, _)| s.received_at_ms < first);
        if counted {
            let stratum = lost_in
                .entry((&s.webhook, s.share.map(f64::to_bits)))
                .or_default();
            let g = &mut stratum[usize::from(s.holdout)];
            g.receipts += 1;
            g.failed += u64::from(s.failed);
        }
    }
    let mut lost = [Lost::default(); 2];
    for stratum in lost_in.values() {
        for (total, g) in lost.iter_mut().zip(stratum) {
            total.receipts += g.receipts;
            total.failed += g.failed;
        }
    }
    // Each webhook at each share it held out (randomized at one share, its two groups span
    // the same days; a share changed, or lifted and set again, would otherwise set one
    // period's optimized sends against another's held-out ones).
    let mut strata: HashMap<(&str, Option<u64>), usize> = HashMap::new();
    // A stranger's contact key, or without one, its receipt.
    let mut strangers: HashMap<Result<String, u128>, usize> = HashMap::new();
    let sends: Vec<Send> = compared
        .iter()
        .filter_map(|s| {
            let next = strata.len();
            let at_ms = s.sent_at_ms?;
            let [by_email, by_id] = contacts.find_each(s.contact_id, s.email.as_deref());
            let contact = by_email.or(by_id);
            let stranger = match contact {
                Some(_) => 0,
                None => {
                    let key = contact_key(s.contact_id, s.email.as_deref()).ok_or(s.receipt);
                    let n = strangers.len();
                    *strangers.entry(key).or_insert(n)
                }
            };
            let (together, next_ms) = contact.map_or((None, None), |c| together(c, at_ms));
            Some(Send {
                stratum: *strata
                    .entry((&s.webhook, s.share.map(f64::to_bits)))
                    .or_insert(next),
                contact,
                also: by_email.and(by_id),
                at_ms,
                holdout: s.holdout,
                counted_from_ms: s.received_at_ms + wait[&*s.webhook],
                after_unsent: unsent
                    .get(&*s.webhook)
                    .is_some_and(|&(first, _)| s.received_at_ms >= first),
                next_ms,
                together,
                stranger,
            })
        })
        .collect();
    let mut stratum_keys = vec![("", None); strata.len()];
    for (&key, &k) in &strata {
        stratum_keys[k] = key;
    }
    let (engagement, newest_event_ms) = engagement(data_dir, &sends, options.up_to_newest_event)?;
    let as_of_ms = match (options.up_to_newest_event, newest_event_ms) {
        (true, Some(newest)) => options.as_of_ms.min(newest),
        _ => options.as_of_ms,
    };
    let as_of_newest_event = as_of_ms < options.as_of_ms;
    // Said apart from the notes on a connector's first import (an audit: a report before
    // any import showed 0% in both groups, with no word why).
    let no_events = newest_event_ms.is_none()
        && !sends.is_empty()
        && events::dataset(data_dir)?.parts()?.is_empty();
    since_before(options.since_ms, as_of_ms, as_of_newest_event)?;
    let mut metrics = Vec::new();
    for metric in Engagement::ALL {
        let clicks_only = metric == Engagement::Clicked;
        for hours in WINDOWS_H {
            // Per contact (one not in the store by its posted key), per webhook and group: sends and
            // engaged; ordered, so that the seeded bootstrap draws the same contacts each
            // time.
            let mut clusters: BTreeMap<Result<u32, usize>, Cells> = BTreeMap::new();
            for s in &sends {
                if s.after_unsent || s.counted_from_ms + hours * HOUR_MS > as_of_ms {
                    continue;
                }
                let end = (s.at_ms + hours * HOUR_MS).min(s.next_ms.unwrap_or(i64::MAX));
                let first_engaged = [s.contact, s.also]
                    .into_iter()
                    .flatten()
                    .filter_map(|c| engagement.get(&c))
                    .filter_map(|ev| {
                        let from = ev.partition_point(|(at, _)| *at < s.at_ms);
                        (ev[from..].iter())
                            .take_while(|(at, _)| *at < end)
                            .find(|(_, kind)| !clicks_only || *kind == Kind::Click)
                            .map(|(at, _)| *at)
                    })
                    .min();
                // Shared by the sends of its group that had gone by then.
                let engaged = first_engaged.map_or(0.0, |at| {
                    let by_then = (s.together.clone()).map_or(1, |(person, members)| {
                        sends_to[&person].0[members].partition_point(|&t| t <= at)
                    });
                    1.0 / by_then.max(1) as f64
                });
                let c = clusters
                    .entry(s.contact.map(|c| people.of(c)).ok_or(s.stranger))
                    .or_default()
                    .entry((s.stratum, s.holdout))
                    .or_default();
                c.0 += 1;
                c.1 += engaged;
            }
            let clusters: Vec<Cluster> = clusters
                .into_values()
                .map(|cells| {
                    cells
                        .into_iter()
                        .map(|((stratum, holdout), (sends, engaged))| Cell {
                            stratum,
                            holdout,
                            sends,
                            engaged,
                        })
                        .collect()
                })
                .collect();
            let mut m = compare(metric, hours, strata.len(), &clusters);
            if m.optimized.sends + m.holdout.sends == 0 && !sends.is_empty() {
                m.no_verdict = Some(NoVerdict::NoWindowEnded);
                m.first_window_end_ms = (sends.iter())
                    .filter(|s| !s.after_unsent)
                    .map(|s| s.counted_from_ms + hours * HOUR_MS)
                    .min();
            }
            // Over the webhooks this metric compares, as they weigh in it: others, their
            // windows not ended, diluted the test (a review).
            let losses = || {
                (m.weighed.iter())
                    .filter_map(|&(k, w)| Some((lost_in.get(stratum_keys.get(k)?)?, w)))
            };
            if let Some([lo, hi]) = m.interval
                && lost_unequally(losses().map(|(lost, _)| lost))
                && explained_by_losses(m.verdict, [lo, hi], attrition_bias(losses()))
            {
                (m.verdict, m.no_verdict) = (None, Some(NoVerdict::LostUnequally));
            }
            m.no_verdict_text = m.no_verdict.map(NoVerdict::text);
            metrics.push(m);
        }
    }
    let mut lift = Lift {
        since_ms: options.since_ms,
        as_of_newest_event,
        as_of_ms,
        newest_event_ms,
        no_events,
        webhook: options.webhook.clone(),
        optimized_receipts: receipts[0],
        holdout_receipts: receipts[1],
        untimed_receipts: untimed,
        optimized_sends: sends.iter().filter(|s| !s.holdout).count() as u64,
        holdout_sends: sends.iter().filter(|s| s.holdout).count() as u64,
        optimized_lost: lost[0],
        holdout_lost: lost[1],
        metrics,
        unimported: options.unimported.clone(),
        imported_until: (options.imported_until.iter())
            .filter(|c| c.until_ms < as_of_ms)
            .cloned()
            .collect(),
        unsent: (unsent.into_iter())
            .map(|(webhook, (first, receipts))| Unsent {
                webhook: webhook.to_string(),
                first_received_ms: first,
                receipts,
            })
            .collect(),
        quarantined: [plan::NAME, outcomes::NAME, events::NAME]
            .into_iter()
            .map(|name| crate::datasets::quarantined_parts(data_dir, name))
            .sum::<anyhow::Result<usize>>()? as u64,
        notes: Vec::new(),
    };
    lift.notes = lift.explain();
    Ok(lift)
}

/// Whether a verdict could be the unequal losses' doing: the group that lost more (`bias`
/// positive: the optimized one) is the one found better, by no more than the losses could
/// move the difference (a large account's losses, a fraction of a point apart, are beyond
/// chance and explain nothing of a clear lift).
fn explained_by_losses(verdict: Option<Verdict>, [lo, hi]: [f64; 2], bias: f64) -> bool {
    match verdict {
        Some(Verdict::OptimizedBetter) => bias > 0.0 && lo <= bias,
        Some(Verdict::HoldoutBetter) => bias < 0.0 && hi >= bias,
        None => false,
    }
}

/// The timed receipts in the inbox that no plan row has yet, of the webhooks `compared` (as
/// `options` selects them): while the profiles cannot be built, the held-out ones are planned
/// and sent at receipt and the optimized ones wait in the inbox, unseen by the plan (an
/// audit: the held-out group was counted alone for the time they waited).
fn unplanned_timed(
    data_dir: &Path,
    compared: &[&Planned],
    planned: &HashSet<u128>,
    options: &Options,
) -> anyhow::Result<Vec<(String, i64)>> {
    let webhooks: HashSet<&str> = compared.iter().map(|s| &*s.webhook).collect();
    // A live plan part set aside leaves its receipts, sent ones too, without a plan row: they
    // cannot be told from those not planned (its note says rows are missing). One archived
    // holds none of the live inbox's.
    let set_aside = plan::dataset(data_dir)?
        .quarantined_parts()
        .map_or(true, |n| n > 0);
    if webhooks.is_empty() || set_aside {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    crate::datasets::inbox::for_each_received(data_dir, |id, webhook, kind, received_at_ms| {
        if kind.is_some_and(|k| k.timed())
            && webhooks.contains(webhook)
            && options.since_ms.is_none_or(|t| received_at_ms >= t)
            && !planned.contains(&super::sends::key(id))
        {
            out.push((webhook.to_string(), received_at_ms));
        }
    })?;
    Ok(out)
}

/// How far the difference could move were every receipt one group lost more of a reader (or
/// not): in each webhook at each share, the rate of those left is off by at most the excess
/// share lost over the share left; weighted as the difference weighs them. (Pooled, a webhook
/// that holds out little and fails often set its sign and size: an audit; and one the metric
/// does not compare, its windows not ended, weighed in: a review.)
fn attrition_bias<'a>(strata: impl Iterator<Item = (&'a [Lost; 2], f64)>) -> f64 {
    let (mut sum, mut weight) = (0.0, 0.0);
    for ([o, h], w) in strata {
        let left = 1.0 - o.share().max(h.share());
        if o.receipts == 0 || h.receipts == 0 || left <= 0.0 {
            continue;
        }
        sum += w * (o.share() - h.share()) / left;
        weight += w;
    }
    if weight > 0.0 { sum / weight } else { 0.0 }
}

/// Whether the shares lost (receipts, of them failed) by the two groups (optimized, held
/// out) differ beyond chance, each webhook at each share a stratum: the Cochran–Mantel–Haenszel
/// test at the 1 % level (its statistic over 6.635, chi-square with one degree of freedom), so
/// that chance alone withholds a verdict once in a hundred reports. Pooled, a webhook that
/// holds out less and fails more would make the groups look unequal by their mix alone.
fn lost_unequally<'a>(strata: impl Iterator<Item = &'a [Lost; 2]>) -> bool {
    let (mut excess, mut variance) = (0.0, 0.0);
    for [a, b] in strata {
        let (na, nb) = (a.receipts as f64, b.receipts as f64);
        let (n, lost) = (na + nb, (a.failed + b.failed) as f64);
        if na == 0.0 || nb == 0.0 {
            continue;
        }
        excess += a.failed as f64 - na * lost / n;
        variance += na * nb * lost * (n - lost) / (n * n * (n - 1.0));
    }
    variance > 0.0 && excess * excess / variance > 6.635
}

/// One contact's (sends, engaged) per (webhook, held out), as they are counted.
type Cells = BTreeMap<(usize, bool), (u64, f64)>;

/// Sends to one person within this of the first of them go together (a contact's receipts of
/// two webhooks planned into its one minute go in one tick, seconds apart; callbacks completed
/// in one batch, at one instant): an open after them may be any one's, so each takes an equal
/// share. Counted for the later alone, the earlier webhook's rate fell and the later's rose;
/// counted for each, one open counted twice (an audit, then a review). Measured from the
/// first, not from each to the next: a send every few minutes would chain into one group.
const TOGETHER_MS: i64 = 5 * MINUTE_MS;

/// Who each contact entry is: a person posted with an email and a HubSpot id that are both in
/// the store has two entries, joined by the sends that carried both (`sends`' entries, by
/// email and by id), so that the bootstrap resamples the person whole and a send's window
/// ends at the person's next send (one send by email and another by id alone would otherwise
/// be two contacts). Each entry's person is the least entry joined to it.
struct People(HashMap<u32, u32>);

impl People {
    fn joined_by(sends: impl Iterator<Item = [Option<u32>; 2]>) -> Self {
        let mut people = People(HashMap::new());
        for [by_email, by_id] in sends {
            if let (Some(a), Some(b)) = (by_email, by_id) {
                let (a, b) = (people.of(a), people.of(b));
                if a != b {
                    people.0.insert(a.max(b), a.min(b));
                }
            }
        }
        people
    }

    /// The person of contact entry `c`.
    fn of(&self, mut c: u32) -> u32 {
        while let Some(&p) = self.0.get(&c) {
            c = p;
        }
        c
    }
}

/// Contact index → its opens and clicks (not filtered as machine or bot) from the first send on.
type Engaged = HashMap<u32, Vec<(i64, Kind)>>;

/// The sends' contacts' engagement, and the newest event imported (anyone's, any kind).
fn engagement(
    data_dir: &Path,
    sends: &[Send],
    need_newest: bool,
) -> anyhow::Result<(Engaged, Option<i64>)> {
    let first = sends.iter().map(|s| s.at_ms).min().unwrap_or(i64::MAX);
    let mut out: Engaged = sends
        .iter()
        .flat_map(|s| [s.contact, s.also])
        .flatten()
        .map(|c| (c, Vec::new()))
        .collect();
    let mut newest = None;
    // With no contact to read, the newest event is still wanted where it sets the as-of
    // time (an audit: the report said "as of now" when every contact sent was new); with no
    // send, it sets nothing (`GET /lift` read every event for nothing, an earlier audit).
    if sends.is_empty() || (out.is_empty() && !need_newest) {
        return Ok((out, newest));
    }
    let parts = events::dataset(data_dir)?.parts()?;
    events::for_each_event(data_dir, &parts, |e| {
        newest = newest.max(Some(e.at_ms));
        if e.filtered || e.at_ms < first {
            return;
        }
        let Some(kind) = Kind::from_code(e.kind).filter(|k| k.is_engagement()) else {
            return;
        };
        if let Some(v) = out.get_mut(&e.contact) {
            v.push((e.at_ms, kind));
        }
    })?;
    // In time order, so that a send's window is found by bisection: a daily workflow's
    // contact has a send per day and an event list as long, scanned whole for each.
    out.values_mut()
        .for_each(|v| v.sort_unstable_by_key(|e| e.0));
    Ok((out, newest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WebhookType;
    use crate::datasets::outcomes::{Action, OutcomeRow, Status};
    use crate::datasets::plan::PlanRow;
    use crate::lift::sends::{Ends, is_send, key, planned};
    use crate::lift::text::points;
    use crate::time::DAY_MS;

    const T: i64 = 1_790_000_000_000;

    /// A receipt of webhook `w`: id, contact (its email `c{contact}@example.com`), received,
    /// sent (none: never), held out.
    type Given = (&'static str, i64, i64, Option<i64>, bool);

    /// Contact 1 held out at T, then sent (optimized) at T+2h, received at T+1h; contact 2
    /// held out at T+3h.
    const THREE: [Given; 3] = [
        ("r1", 1, T, Some(T), true),
        ("r2", 1, T + HOUR_MS, Some(T + 2 * HOUR_MS), false),
        ("r3", 2, T + 3 * HOUR_MS, Some(T + 3 * HOUR_MS), true),
    ];

    /// A data folder whose webhook `w` planned `sends` and sent those with a time, and whose
    /// contacts opened at `opens` (contact, time).
    fn world(sends: &[Given], opens: &[(i64, i64)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        receipts(data, "w", WebhookType::Next24Hours, sends, true);
        let events: Vec<events::Event> = opens
            .iter()
            .map(|&(contact, at_ms)| events::Event {
                event_id: None,
                contact_id: Some(contact),
                email: None,
                kind: Kind::Open,
                at_ms,
                filtered: false,
                source: "test".into(),
            })
            .collect();
        events::append(data, &events).unwrap();
        dir
    }

    /// `sends` planned by `webhook`, of type `kind`, and sent, those with a time; posted with
    /// the contact's email when `emails`, else with its HubSpot id alone.
    fn receipts(data: &Path, webhook: &str, kind: WebhookType, sends: &[Given], emails: bool) {
        let plans: Vec<PlanRow> = sends
            .iter()
            .map(|&(id, contact, received, _, holdout)| PlanRow {
                receipt_id: id.into(),
                webhook_id: webhook.into(),
                webhook_type: kind,
                contact_id: Some(contact),
                email: emails.then(|| format!("c{contact}@example.com")),
                received_at_ms: received,
                due_at_ms: received,
                slot: None,
                reason: String::new(),
                planned_at_ms: received,
                callback_id: None,
                holdout,
                time_zone: None,
                hold_ends_ms: None,
                portal_id: None,
                holdout_share: None,
            })
            .collect();
        let done: Vec<OutcomeRow> = sends
            .iter()
            .filter_map(|&(id, _, _, at_ms, holdout)| Some(enrolled(id, webhook, at_ms?, holdout)))
            .collect();
        let part = ulid::Ulid::generate();
        plan::dataset(data)
            .unwrap()
            .write_part(part, &mut plan::frame(&plans).unwrap())
            .unwrap();
        outcomes::dataset(data)
            .unwrap()
            .write_part(part, &mut outcomes::frame(&done).unwrap())
            .unwrap();
    }

    /// Receipt `id` of `webhook` enrolled at `at_ms` (HubSpot's 204).
    fn enrolled(id: &str, webhook: &str, at_ms: i64, holdout: bool) -> OutcomeRow {
        OutcomeRow {
            receipt_id: id.into(),
            webhook_id: webhook.into(),
            connector: "c".into(),
            action: Action::Enroll,
            target: "1".into(),
            status: Status::Enrolled,
            http_status: Some(204),
            message: None,
            attempts: 1,
            in_doubt: false,
            retry_at_ms: None,
            at_ms,
            holdout,
        }
    }

    /// An open of contact `c` ten days before T, imported by its email: the contact is then
    /// in the store by email too.
    fn old_open_by_email(c: i64) -> events::Event {
        events::Event {
            event_id: None,
            contact_id: None,
            email: Some(format!("c{c}@example.com")),
            kind: Kind::Open,
            at_ms: T - 10 * DAY_MS,
            filtered: false,
            source: "test".into(),
        }
    }

    fn opened_24h(lift: &Lift) -> &Metric {
        &lift.metrics[0]
    }

    /// The default as-of is the earliest connector's cursor, and names a connector none of
    /// whose events is imported yet: it was left out unsaid, so its sends counted as not
    /// engaged.
    #[test]
    fn the_default_as_of_names_a_connector_never_imported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("webhooks.toml");
        let connector = |id: &str, portal: u32, dry_run: bool| {
            format!(
                "[[connector]]\nid = \"{id}\"\nportal_id = {portal}\napp_id = 1\n\
                 client_secret_env = \"S\"\naccess_token_env = \"T_{id}\"\ndry_run = {dry_run}\n\
                 [[webhook]]\nid = \"w{id}\"\ntype = \"NEXT_WEEK\"\nworkflow_id = 1\nconnector = \"{id}\"\n"
            )
        };
        let config_of = |a_dry_run: bool| {
            std::fs::write(
                &path,
                format!(
                    "version = 1\n[server]\npublic_url = \"https://h.example.com\"\ndata_dir = {:?}\n{}{}",
                    dir.path().join("data"),
                    connector("a", 1, a_dry_run),
                    connector("b", 2, false)
                ),
            )
            .unwrap();
            let loaded = crate::config::Config::load(
                &path,
                &Default::default(),
                crate::config::EnvCheck::Warn,
            );
            loaded.unwrap().config
        };
        let config = config_of(false);
        let of = |o: Options| (o.as_of_ms, o.unimported, o.up_to_newest_event);
        assert_eq!(
            of(default_as_of(&config, T)),
            (T, vec!["a".into(), "b".into()], false)
        );
        let state = crate::import::hubspot::state_path(&config.server.data_dir, "a");
        std::fs::create_dir_all(state.parent().unwrap()).unwrap();
        let imported = T - 5 * DAY_MS;
        std::fs::write(
            &state,
            format!(r#"{{"version": 1, "complete_until_ms": {imported}, "run": null}}"#),
        )
        .unwrap();
        let late = crate::import::hubspot::OVERLAP.as_millis() as i64;
        assert_eq!(
            of(default_as_of(&config, T)),
            (imported - late, vec!["b".into()], false)
        );
        assert_eq!(default_as_of(&config, T).imported_until, []);
        // In dry run since, it no longer holds the as-of time, and is named with how far its
        // engagement is known (its live sends before counted as not engaged after it, unsaid).
        let options = default_as_of(&config_of(true), T);
        assert_eq!(of(options.clone()), (T, vec!["b".into()], false));
        let until = ImportedUntil {
            connector: "a".into(),
            until_ms: imported - late,
        };
        assert_eq!(options.imported_until, [until]);
    }

    /// A connector in dry run is named in the report only when its engagement is known up to
    /// before the as-of time: a window that ends after it counts as not engaged.
    #[test]
    fn a_dry_run_connector_imported_up_to_before_the_as_of_is_named() {
        let given: [Given; 1] = [("r1", 1, T, Some(T), true)];
        let dir = world(&given, &[]);
        let named = |until_ms| {
            let options = Options {
                as_of_ms: T + 10 * DAY_MS,
                imported_until: vec![ImportedUntil {
                    connector: "a".into(),
                    until_ms,
                }],
                ..Options::default()
            };
            let lift = lift(dir.path(), &options).unwrap();
            let named = lift.imported_until.len();
            assert_eq!(
                lift.explain()
                    .iter()
                    .filter(|n| n.contains("connector a is in dry run"))
                    .count(),
                named
            );
            named
        };
        assert_eq!(named(T + DAY_MS), 1);
        assert_eq!(named(T + 11 * DAY_MS), 0);
    }

    /// Where `serve` imports nothing, engagement is known up to the newest event imported:
    /// a window that ends after it is not counted, and the report says so. An earlier version
    /// took now, and counted it as not engaged (an audit found it).
    #[test]
    fn without_scheduled_imports_the_report_is_as_of_the_newest_event() {
        let given: [Given; 2] = [
            ("r1", 1, T, Some(T), true),
            ("r2", 2, T, Some(T + HOUR_MS), false),
        ];
        let newest = T + 60 * HOUR_MS;
        let dir = world(&given, &[(1, newest)]);
        let report = |up_to_newest_event| {
            let options = Options {
                as_of_ms: T + 10 * DAY_MS,
                up_to_newest_event,
                ..Options::default()
            };
            lift(dir.path(), &options).unwrap()
        };
        let sends = |lift: &Lift, hours: i64| {
            let m = (lift.metrics.iter())
                .find(|m| m.metric == Engagement::Opened && m.window_hours == hours)
                .unwrap();
            (m.optimized.sends, m.holdout.sends)
        };
        let known = report(true);
        assert_eq!(known.as_of_ms, newest);
        // Received at T, due within a day: a 24-hour window ends by T + 48 h, a 72-hour one
        // after the newest event.
        assert_eq!((sends(&known, 24), sends(&known, 72)), ((1, 1), (0, 0)));
        let said = |lift: &Lift| (lift.notes.iter()).any(|n| n.starts_with("as of the newest"));
        assert!(said(&known), "{:?}", known.notes);
        let now = report(false);
        assert_eq!((now.as_of_ms, sends(&now, 72)), (T + 10 * DAY_MS, (1, 1)));
        // An as-of given that is the newest event is not said to be taken from it.
        let given = Options {
            as_of_ms: newest,
            ..Options::default()
        };
        let given = lift(dir.path(), &given).unwrap();
        assert!(!said(&now) && !said(&given), "{:?}", given.notes);
        // Every contact sent new to the store (only another's events imported): still as
        // of the newest event, not of now.
        let strangers: [Given; 2] = [
            ("r1", 5, T, Some(T), true),
            ("r2", 6, T, Some(T + HOUR_MS), false),
        ];
        let dir = world(&strangers, &[(9, newest)]);
        let options = Options {
            as_of_ms: T + 10 * DAY_MS,
            up_to_newest_event: true,
            ..Options::default()
        };
        assert_eq!(lift(dir.path(), &options).unwrap().as_of_ms, newest);
    }

    /// Sends and no event imported at all: every send is "not engaged", and the report says
    /// why (it showed 0% in both groups, with no word, an audit found); once one event is
    /// imported, it does not.
    #[test]
    fn a_report_before_any_import_says_none_is_imported() {
        let given: [Given; 2] = [
            ("r1", 1, T, Some(T), true),
            ("r2", 2, T, Some(T + HOUR_MS), false),
        ];
        let said = |lift: &Lift| (lift.notes.iter()).any(|n| n.starts_with("no engagement event"));
        for up_to_newest_event in [true, false] {
            let options = Options {
                as_of_ms: T + 10 * DAY_MS,
                up_to_newest_event,
                ..Options::default()
            };
            let none = lift(world(&given, &[]).path(), &options).unwrap();
            assert!(none.no_events && said(&none), "{:?}", none.notes);
            let one = lift(world(&given, &[(9, T + 9 * DAY_MS)]).path(), &options).unwrap();
            assert!(!one.no_events && !said(&one), "{:?}", one.notes);
        }
    }

    /// Receipts held out and none sent (a dry run) are not "nothing held out": the hint
    /// asked for a `holdout` that was set.
    #[test]
    fn the_hint_says_why_a_group_has_no_sends() {
        let text = |since_ms, optimized_receipts, holdout_receipts, holdout_sends| {
            let mut lift = Lift {
                since_ms,
                as_of_newest_event: false,
                as_of_ms: T,
                newest_event_ms: None,
                no_events: false,
                webhook: None,
                optimized_receipts,
                holdout_receipts,
                untimed_receipts: 0,
                optimized_sends: 10,
                holdout_sends,
                metrics: Vec::new(),
                unimported: Vec::new(),
                imported_until: Vec::new(),
                unsent: Vec::new(),
                optimized_lost: Lost::default(),
                holdout_lost: Lost::default(),
                quarantined: 0,
                notes: Vec::new(),
            };
            lift.notes = lift.explain();
            lift.text()
        };
        assert!(text(None, 0, 0, 0).contains("nothing held out"));
        // A share set and none drawn yet: it asked for a share that was set.
        let none_yet = text(None, 30, 0, 0);
        assert!(
            !none_yet.contains("nothing held out")
                && none_yet.contains("none of 30 receipts held out yet"),
            "{none_yet}"
        );
        let unsent = text(None, 10, 5, 0);
        assert!(
            !unsent.contains("nothing held out") && unsent.contains("dry run"),
            "{unsent}"
        );
        let sent = text(None, 10, 5, 5);
        assert!(
            !sent.contains("nothing held out") && !sent.contains("dry run"),
            "{sent}"
        );
        // No receipts since a time is no holdout to set (it said "nothing held out").
        let since = text(Some(T - DAY_MS), 0, 0, 0);
        assert!(
            !since.contains("nothing held out")
                && since.contains("no receipts of a webhook or action holding some out since"),
            "{since}"
        );
        // Receipts since then, none held out by chance: said so (it said there were none).
        let since = text(Some(T - DAY_MS), 30, 0, 0);
        assert!(
            since.contains("none of 30 receipts since ") && since.contains(" held out yet"),
            "{since}"
        );
    }

    /// Before any send's window has ended the report says so, and when the first one ends:
    /// it said no webhook had sent in both groups, over sends in both.
    #[test]
    fn before_any_window_ends_the_report_says_when_one_does() {
        let dir = world(&THREE, &[]);
        let early = Options {
            as_of_ms: T + HOUR_MS,
            ..Options::default()
        };
        let report = lift(dir.path(), &early).unwrap();
        assert!(report.optimized_sends > 0 && report.holdout_sends > 0);
        let m = opened_24h(&report);
        assert_eq!(m.no_verdict, Some(NoVerdict::NoWindowEnded));
        let first = m.first_window_end_ms.unwrap();
        assert!(first > early.as_of_ms, "{first}");
        assert!(report.text().contains(&format!(
            "no send's window has ended by {}; the first ends {}",
            format_minute(early.as_of_ms),
            format_minute(first)
        )));
        // Then, it counts.
        let then = Options {
            as_of_ms: first,
            ..Options::default()
        };
        let m = opened_24h(&lift(dir.path(), &then).unwrap()).clone();
        assert!(m.optimized.sends + m.holdout.sends > 0, "{m:?}");
        assert_ne!(m.no_verdict, Some(NoVerdict::NoWindowEnded));
    }

    /// Contact 1 is held out at T, then sent (optimized) at T+2h; it opens at T+5h: that
    /// open is the later send's, not the held-out one's, whose window ends at T+2h.
    #[test]
    fn a_window_ends_at_the_contacts_next_send() {
        let dir = world(&THREE, &[(1, T + 5 * HOUR_MS), (2, T - 10 * DAY_MS)]);
        let options = Options {
            as_of_ms: T + 10 * DAY_MS,
            ..Options::default()
        };
        let m = opened_24h(&lift(dir.path(), &options).unwrap()).clone();
        assert_eq!((m.optimized.sends, m.optimized.engaged), (1, 1.0));
        assert_eq!((m.holdout.sends, m.holdout.engaged), (2, 0.0));
    }

    /// A send of another webhook ends a send's window as one of its own does, whether that
    /// webhook is timed or not, holds receipts out or not, and is reported on or not: contact
    /// 1, held out by `w` at T, is sent by `b` at T+1h and opens at T+2h, which is `b`'s mail.
    #[test]
    fn another_webhooks_send_ends_a_window_too() {
        let given: [Given; 2] = [
            ("r1", 1, T, Some(T), true),
            ("r2", 2, T, Some(T + 3 * HOUR_MS), false),
        ];
        for (kind, holdout) in [
            (WebhookType::Immediate, false),
            (WebhookType::Next24Hours, false),
            (WebhookType::Next24Hours, true),
        ] {
            let dir = world(&given, &[(1, T + 2 * HOUR_MS)]);
            let other = [("b1", 1, T + HOUR_MS, Some(T + HOUR_MS), holdout)];
            receipts(dir.path(), "b", kind, &other, true);
            let mut options = Options {
                as_of_ms: T + 10 * DAY_MS,
                ..Options::default()
            };
            let all = lift(dir.path(), &options).unwrap();
            assert_eq!(opened_24h(&all).holdout.engaged, 0.0, "{kind} {holdout}");
            options.webhook = Some("w".into());
            let named = lift(dir.path(), &options).unwrap();
            assert_eq!(opened_24h(&named).holdout.sends, 1);
            assert_eq!(opened_24h(&named).holdout.engaged, 0.0, "{kind} {holdout}");
        }
    }

    /// A damaged outcomes part is set aside as every reader sets one aside, and the report
    /// says its figures lack the part's sends (an earlier version said nothing).
    #[test]
    fn a_part_set_aside_is_named_in_the_notes() {
        let dir = world(&THREE, &[(1, T + 3 * HOUR_MS)]);
        let options = Options {
            as_of_ms: T + 10 * DAY_MS,
            ..Options::default()
        };
        let whole = lift(dir.path(), &options).unwrap();
        assert_eq!(whole.quarantined, 0);
        let outcomes = outcomes::dataset(dir.path()).unwrap();
        let part = outcomes.parts().unwrap().remove(0);
        let mut bytes = std::fs::read(&part).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&part, bytes).unwrap();
        let damaged = lift(dir.path(), &options).unwrap();
        assert!(damaged.optimized_sends + damaged.holdout_sends < 3);
        assert_eq!(damaged.quarantined, 1);
        assert!(
            damaged
                .notes
                .iter()
                .any(|n| n.starts_with("1 parts of the plan")),
            "{:?}",
            damaged.notes
        );
    }

    /// Webhooks lose receipts at their own rates: one that holds out little and fails often
    /// makes the optimized group lose more, pooled, by its mix alone. Compared within each
    /// webhook, as the rates are, the groups lose alike; one that loses more in one group is
    /// found.
    #[test]
    fn losses_are_compared_within_each_webhook() {
        let lost = |receipts, failed| Lost { receipts, failed };
        let a = [lost(100, 0), lost(100, 0)];
        let b = [lost(200, 60), lost(10, 3)];
        assert!(!lost_unequally([a, b].iter()));
        let c = [lost(200, 60), lost(200, 30)];
        assert!(lost_unequally([a, c].iter()));
        assert!(!lost_unequally([a].iter()), "no loss, no test");
        // A webhook holding out half, both groups losing a fifth, beside one holding out 5 %
        // whose optimized group loses more: pooled, the held-out group lost more (its mix);
        // within each, the optimized one did, by about a point.
        let (half, few) = (
            [lost(1000, 200), lost(1000, 200)],
            [lost(95_000, 1900), lost(5000, 50)],
        );
        assert!(lost_unequally([half, few].iter()));
        // Weighed by their sends (1600 and 98,050).
        let bias = attrition_bias([(&half, 1600.0), (&few, 98_050.0)].into_iter());
        assert!((0.0095..0.0105).contains(&bias), "{bias}");
        // Each as much as it weighs in the metric.
        let bias = attrition_bias([(&half, 98_050.0), (&few, 1600.0)].into_iter());
        assert!((0.0001..0.0002).contains(&bias), "{bias}");
        // Beyond chance, a large account's losses a fraction of a point apart explain only a
        // verdict as close to zero, and only one for the group that lost more.
        let bias = 0.0015;
        assert!(!explained_by_losses(
            Some(Verdict::OptimizedBetter),
            [0.03, 0.07],
            bias
        ));
        assert!(explained_by_losses(
            Some(Verdict::OptimizedBetter),
            [0.001, 0.01],
            bias
        ));
        assert!(!explained_by_losses(
            Some(Verdict::HoldoutBetter),
            [-0.01, -0.001],
            bias
        ));
        assert!(explained_by_losses(
            Some(Verdict::HoldoutBetter),
            [-0.01, -0.001],
            -bias
        ));
    }

    /// Receipts `ids[..200]` of contacts 0..200 at T, the last 100 held out, and the opens
    /// after them: the first 40 optimized ones failed (their outcomes: [`record_failed`]), six
    /// in ten optimized contacts sent read and three in ten held out do.
    fn forty_lost_of_a_hundred(ids: &'static [String]) -> (Vec<Given>, Vec<(i64, i64)>) {
        let (mut given, mut opens) = (Vec::new(), Vec::new());
        for i in 0..200i64 {
            let holdout = i >= 100;
            let failed = !holdout && i < 40;
            given.push((&*ids[i as usize], i, T, (!failed).then_some(T), holdout));
            if !failed && i % 10 < if holdout { 3 } else { 6 } {
                opens.push((i, T + HOUR_MS));
            }
        }
        (given, opens)
    }

    /// Receipts (id, webhook, at, held out) failed for good (HubSpot's 404).
    fn record_failed<'a>(data: &Path, failed: impl Iterator<Item = (&'a str, &'a str, i64, bool)>) {
        let rows: Vec<OutcomeRow> = failed
            .map(|(id, webhook, at, holdout)| OutcomeRow {
                status: Status::Failed,
                http_status: Some(404),
                ..enrolled(id, webhook, at, holdout)
            })
            .collect();
        outcomes::dataset(data)
            .unwrap()
            .write_part(ulid::Ulid::generate(), &mut outcomes::frame(&rows).unwrap())
            .unwrap();
    }

    /// The losses are tested over the webhooks a metric compares: here `v`'s sends, losing
    /// alike, are too recent for the 24-hour windows, and tested with them (an earlier
    /// version), its 1000 receipts diluted `w`'s unequal losses below the test's level.
    #[test]
    fn losses_are_tested_over_the_webhooks_compared() {
        let ids: Vec<String> = (0..1200).map(|i| format!("r{i}")).collect();
        let ids: &'static [String] = Box::leak(ids.into_boxed_slice());
        let (w, opens) = forty_lost_of_a_hundred(ids);
        let mut v = Vec::new();
        let recent = T + 10 * DAY_MS - HOUR_MS;
        for i in 200..1200i64 {
            let failed = i % 2 == 0;
            let given = (
                ids[i as usize].as_str(),
                i,
                recent,
                (!failed).then_some(recent),
                i >= 700,
            );
            v.push(given);
        }
        let dir = world(&w, &opens);
        receipts(dir.path(), "v", WebhookType::Next24Hours, &v, true);
        let failed = (0..40).map(|i| (&*ids[i], "w", T, false)).chain(
            (200..1200)
                .step_by(2)
                .map(|i| (&*ids[i], "v", recent, i >= 700)),
        );
        record_failed(dir.path(), failed);
        let options = Options {
            as_of_ms: T + 10 * DAY_MS,
            ..Options::default()
        };
        let report = lift(dir.path(), &options).unwrap();
        let m = opened_24h(&report);
        assert_eq!((m.optimized.sends, m.holdout.sends), (60, 100));
        assert_eq!(
            (m.verdict, m.no_verdict),
            (None, Some(NoVerdict::LostUnequally))
        );
    }

    /// The optimized group lost 40 of its 100 receipts (failed, likely non-readers) and the
    /// held-out group none: its sends look better by less than the losses could explain, and
    /// the report gives the figures without a verdict, saying why (an earlier version said
    /// `optimized_better`).
    #[test]
    fn groups_that_lost_unequal_shares_get_no_verdict() {
        let ids: Vec<String> = (0..200).map(|i| format!("r{i}")).collect();
        let ids: &'static [String] = Box::leak(ids.into_boxed_slice());
        let (given, opens) = forty_lost_of_a_hundred(ids);
        let dir = world(&given, &opens);
        let options = Options {
            as_of_ms: T + 10 * DAY_MS,
            ..Options::default()
        };
        record_failed(dir.path(), (0..40).map(|i| (&*ids[i], "w", T, false)));
        let lost = lift(dir.path(), &options).unwrap();
        let m = opened_24h(&lost);
        assert_eq!((m.optimized.sends, m.holdout.sends), (60, 100));
        assert!(m.interval.unwrap()[0] > 0.0, "{m:?}");
        assert_eq!(
            (m.verdict, m.no_verdict),
            (None, Some(NoVerdict::LostUnequally))
        );
        assert_eq!(
            (lost.optimized_lost.failed, lost.optimized_lost.receipts),
            (40, 100)
        );
        assert!(
            lost.notes
                .iter()
                .any(|n| n.starts_with("no verdict where the losses could explain it: 40 of 100"))
        );
    }

    /// A contact's events come in parts of any order (older events imported after newer
    /// ones): a send's window finds its open wherever it was read.
    #[test]
    fn events_read_out_of_time_order_are_found() {
        let given: [Given; 2] = [("r1", 1, T, Some(T), true), ("r2", 2, T, Some(T), false)];
        let dir = world(&given, &[(1, T + 30 * HOUR_MS), (2, T + 30 * HOUR_MS)]);
        let open = |contact| events::Event {
            event_id: None,
            contact_id: Some(contact),
            email: None,
            kind: Kind::Open,
            at_ms: T + HOUR_MS,
            filtered: false,
            source: "test".into(),
        };
        events::append(dir.path(), &[open(1), open(2)]).unwrap();
        let options = Options {
            as_of_ms: T + 10 * DAY_MS,
            ..Options::default()
        };
        let m = opened_24h(&lift(dir.path(), &options).unwrap()).clone();
        assert_eq!((m.optimized.engaged, m.holdout.engaged), (1.0, 1.0));
    }

    /// Contacts in the store by HubSpot id (their opens after the sends) and by email (an old
    /// event each): both entries are the contact's engagement. Before, only the email's entry
    /// was read, and the opens by id counted as none.
    #[test]
    fn engagement_by_id_counts_when_the_contact_is_known_by_email_too() {
        let given: [Given; 2] = [
            ("r1", 1, T, Some(T), true),
            ("r2", 2, T, Some(T + HOUR_MS), false),
        ];
        let dir = world(&given, &[(1, T + 2 * HOUR_MS), (2, T + 3 * HOUR_MS)]);
        events::append(dir.path(), &[old_open_by_email(1), old_open_by_email(2)]).unwrap();
        let options = Options {
            as_of_ms: T + 10 * DAY_MS,
            ..Options::default()
        };
        let m = opened_24h(&lift(dir.path(), &options).unwrap()).clone();
        assert_eq!((m.optimized.engaged, m.holdout.engaged), (1.0, 1.0));
    }

    /// A later send that names the contact by HubSpot id alone (a list webhook's body) ends
    /// the window of one that named it by email too, though the two are different entries of
    /// the store: the open after it is that send's.
    #[test]
    fn a_next_send_by_id_alone_ends_a_window_too() {
        let given: [Given; 2] = [
            ("r1", 1, T, Some(T), true),
            ("r2", 2, T, Some(T + 3 * HOUR_MS), false),
        ];
        let dir = world(&given, &[(1, T + 2 * HOUR_MS)]);
        events::append(dir.path(), &[old_open_by_email(1)]).unwrap();
        let other = [("b1", 1, T + HOUR_MS, Some(T + HOUR_MS), false)];
        receipts(dir.path(), "b", WebhookType::UpdateOnly, &other, false);
        let options = Options {
            as_of_ms: T + 10 * DAY_MS,
            ..Options::default()
        };
        let m = opened_24h(&lift(dir.path(), &options).unwrap()).clone();
        assert_eq!((m.holdout.sends, m.holdout.engaged), (1, 0.0));
    }

    /// Contacts 1 to 5, each received and sent (optimized) at T plus its number in hours.
    fn five_optimized() -> Vec<Given> {
        [("o1", 1), ("o2", 2), ("o3", 3), ("o4", 4), ("o5", 5)]
            .into_iter()
            .map(|(id, c)| (id, c, T + c * HOUR_MS, Some(T + c * HOUR_MS), false))
            .collect()
    }

    /// An open of each of `contacts` a day before T: they are in the store.
    fn known(contacts: &[i64]) -> Vec<(i64, i64)> {
        contacts.iter().map(|&c| (c, T - DAY_MS)).collect()
    }

    /// A person posted once with its email (in the store by email and by id) and once by id
    /// alone is one contact of its group, not two: here the held-out group reaches four people,
    /// fewer than a comparison needs. Counted as two, it reached five and was compared.
    #[test]
    fn a_person_posted_by_email_and_by_id_is_one_contact() {
        let at = |k: i64| T + k * HOUR_MS;
        let held_out: [Given; 4] = [
            ("h1", 11, at(1), Some(at(1)), true),
            ("h2", 12, at(2), Some(at(2)), true),
            ("h3", 13, at(3), Some(at(3)), true),
            ("h4", 15, at(4), Some(at(4)), true),
        ];
        let dir = world(&five_optimized(), &known(&[1, 2, 3, 4, 5, 11, 12, 13, 15]));
        receipts(
            dir.path(),
            "w",
            WebhookType::Next24Hours,
            &held_out[..3],
            false,
        );
        receipts(
            dir.path(),
            "w",
            WebhookType::Next24Hours,
            &held_out[3..],
            true,
        );
        let again = [("h5", 15, at(30), Some(at(30)), true)];
        receipts(dir.path(), "w", WebhookType::Next24Hours, &again, false);
        events::append(dir.path(), &[old_open_by_email(15)]).unwrap();
        let m = opened_24h(&lift_of(&dir)).clone();
        assert_eq!((m.holdout.sends, m.too_few_contacts), (5, 1), "{m:?}");
    }

    /// Sends to a person the store does not know (nothing of it imported) count as one
    /// contact per key posted, not one per send: four sends to one stranger and two known
    /// contacts are three contacts, too few for a group (each send counted as a contact, a
    /// group of two people passed for five).
    #[test]
    fn sends_to_one_person_unknown_to_the_store_are_one_contact() {
        let at = |h: i64| T + h * HOUR_MS;
        let held_out: [Given; 6] = [
            ("h1", 11, at(1), Some(at(1)), true),
            ("h2", 12, at(2), Some(at(2)), true),
            ("h3", 99, at(3), Some(at(3)), true),
            ("h4", 99, at(30), Some(at(30)), true),
            ("h5", 99, at(60), Some(at(60)), true),
            ("h6", 99, at(90), Some(at(90)), true),
        ];
        let dir = world(&five_optimized(), &known(&[1, 2, 3, 4, 5, 11, 12]));
        receipts(dir.path(), "w", WebhookType::Next24Hours, &held_out, true);
        let m = opened_24h(&lift_of(&dir)).clone();
        assert_eq!(m.holdout.sends, 6, "{m:?}");
        assert_eq!((m.too_few_contacts, m.difference), (1, None), "{m:?}");
    }

    /// Sends to one contact that went together, at one instant (callbacks completed in one
    /// batch) or a moment apart (two webhooks' receipts sent in one tick), share the open
    /// after them, half each; sends ten minutes apart do not: the open is the later one's.
    /// An open between two sends of a group is the earlier's alone, and a send every four
    /// minutes does not chain into one group: five minutes count from the group's first.
    /// Before, the instant's sends took it each (one open counted twice), and of sends a
    /// moment apart the later took it all (the earlier webhook's rate fell, the later's rose).
    #[test]
    fn sends_that_went_together_share_their_engagement() {
        let h = T + HOUR_MS;
        let min = 60_000;
        let sends = [
            ("r1", 1, T, Some(h), true),
            ("r2", 1, T, Some(h), false),
            ("r3", 2, T, Some(h), true),
            ("r4", 2, T, Some(h + 20_000), false),
            ("r5", 3, T, Some(h), true),
            ("r6", 3, T, Some(h + 10 * min), false),
            ("r7", 4, T, Some(h), true),
            ("r8", 4, T, Some(h + 4 * min), false),
            ("r9", 5, T, Some(h), true),
            ("r10", 5, T, Some(h + 4 * min), false),
            ("r11", 5, T, Some(h + 8 * min), false),
        ];
        let mut opens: Vec<(i64, i64)> = (1..=5).map(|c| (c, h + HOUR_MS)).collect();
        opens[3].1 = h + 2 * min;
        let dir = world(&sends, &opens);
        let options = Options {
            as_of_ms: T + 10 * DAY_MS,
            ..Options::default()
        };
        let m = opened_24h(&lift(dir.path(), &options).unwrap()).clone();
        assert_eq!((m.holdout.sends, m.holdout.engaged), (5, 2.0));
        assert_eq!((m.optimized.sends, m.optimized.engaged), (6, 3.0));
    }

    /// A send that resolved a call left in doubt is dated by that call, not by the check that
    /// found it went: r1's enrollment timed out at T and was found 30 minutes on; r2's first
    /// call failed for sure (a 503), its second timed out and was found after a crash; r3's
    /// callback timed out, and HubSpot refused to complete it again; r4 went at once.
    #[test]
    fn a_send_found_after_a_doubt_is_dated_by_its_call() {
        let row = |id: &str, status: Status, http: Option<u16>, doubt: bool, at: i64| OutcomeRow {
            receipt_id: id.into(),
            webhook_id: "w".into(),
            connector: "c".into(),
            action: Action::Enroll,
            target: "1".into(),
            status,
            http_status: http,
            message: None,
            attempts: 1,
            in_doubt: doubt,
            retry_at_ms: None,
            at_ms: at,
            holdout: false,
        };
        let m = 60_000;
        use Status::{Attempting as A, Completed, Enrolled, Retrying};
        let rows = [
            row("r1", A, None, false, T),
            row("r1", Retrying, None, true, T + m),
            row("r1", Enrolled, None, false, T + 30 * m),
            // After the send: passed over (read from the end, it would stop the search).
            row("r1", Retrying, Some(503), false, T + 40 * m),
            row("r2", A, None, false, T),
            row("r2", Retrying, Some(503), false, T + m),
            row("r2", A, None, false, T + 5 * m),
            row("r2", Enrolled, None, false, T + 90 * m),
            row("r3", A, None, false, T),
            row("r3", Retrying, None, true, T + m),
            row("r3", A, None, false, T + 10 * m),
            row("r3", Completed, Some(400), false, T + 10 * m),
            row("r4", A, None, false, T),
            row("r4", Enrolled, Some(204), false, T + 1),
        ];
        let mut ends = Ends::default();
        (rows.iter())
            .filter(|r| r.status.is_final())
            .for_each(|r| ends.add(r));
        ends.date_resolved(&rows);
        let at = |id: &str| ends.first[&key(id)].0 - T;
        assert_eq!([at("r1"), at("r2"), at("r3"), at("r4")], [0, 5 * m, 0, 1]);
        // The same from the data folder, where only the sends and the steps of the receipts
        // whose send resolved a doubt are read (the steps in a part of their own).
        let dir = tempfile::tempdir().unwrap();
        let given: Vec<Given> = ["r1", "r2", "r3", "r4"]
            .iter()
            .zip(1..)
            .map(|(id, c)| (*id, c, T, None, false))
            .collect();
        receipts(dir.path(), "w", WebhookType::Next24Hours, &given, true);
        let (sends, steps): (Vec<OutcomeRow>, Vec<OutcomeRow>) =
            rows.into_iter().partition(|r| is_send(r.status));
        for rows in [steps, sends] {
            outcomes::dataset(dir.path())
                .unwrap()
                .write_part(ulid::Ulid::generate(), &mut outcomes::frame(&rows).unwrap())
                .unwrap();
        }
        let planned: HashMap<u128, Option<i64>> = planned(dir.path())
            .unwrap()
            .into_iter()
            .map(|p| (p.receipt, p.sent_at_ms.map(|t| t - T)))
            .collect();
        let at = |id: &str| planned[&key(id)];
        let want = [Some(0), Some(5 * m), Some(0), Some(1)];
        assert_eq!([at("r1"), at("r2"), at("r3"), at("r4")], want);
    }

    /// With no receipt held out, nothing is compared, and the report reads neither the
    /// outcomes nor the contact dictionary (here unreadable); with one held out, it does.
    #[test]
    fn with_nothing_held_out_the_dictionary_is_not_read() {
        let damage = |dir: &Path| {
            let parts = crate::datasets::contacts::dataset(dir)
                .unwrap()
                .parts()
                .unwrap();
            let last = parts.last().unwrap();
            let mut bytes = std::fs::read(last).unwrap();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0xff;
            std::fs::write(last, bytes).unwrap();
        };
        let none: Vec<Given> = THREE
            .iter()
            .map(|&(a, b, c, d, _)| (a, b, c, d, false))
            .collect();
        let dir = world(&none, &[(1, T + 3 * HOUR_MS)]);
        damage(dir.path());
        let report = lift(dir.path(), &Options::default()).unwrap();
        assert_eq!(
            (report.optimized_receipts, report.holdout_receipts),
            (0, 0),
            "{report:?}"
        );
        let dir = world(&THREE, &[(1, T + 3 * HOUR_MS)]);
        damage(dir.path());
        assert!(lift(dir.path(), &Options::default()).is_err());
    }

    /// An outcome whose status this build does not know (a newer version wrote it) stops the
    /// report with why, as a whole read does: left out, its receipt would count as never sent.
    #[test]
    fn an_unknown_outcome_status_is_refused_not_skipped() {
        let dir = world(&THREE, &[]);
        let mut df = outcomes::frame(&[enrolled("r9", "w", T, false)]).unwrap();
        let status = polars::prelude::Column::new(outcomes::col::STATUS.into(), ["teleported"]);
        df.replace(outcomes::col::STATUS, status).unwrap();
        outcomes::dataset(dir.path())
            .unwrap()
            .write_part(ulid::Ulid::generate(), &mut df)
            .unwrap();
        let err = planned(dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains("\"teleported\""), "{err:#}");
    }

    /// A receipt planned and never sent (failed, still waiting) is counted among its group's
    /// receipts, not its sends: a group that loses more of them shows it.
    #[test]
    fn receipts_never_sent_are_counted_apart_from_sends() {
        let mut given = THREE.to_vec();
        given.push(("r4", 3, T + 2 * HOUR_MS, None, false));
        let dir = world(&given, &[(2, T - 10 * DAY_MS)]);
        let mut failed = enrolled("r4", "w", T + 3 * HOUR_MS, false);
        (failed.status, failed.http_status) = (Status::Failed, Some(400));
        outcomes::dataset(dir.path())
            .unwrap()
            .write_part(
                ulid::Ulid::generate(),
                &mut outcomes::frame(&[failed]).unwrap(),
            )
            .unwrap();
        let options = Options {
            as_of_ms: T + 10 * DAY_MS,
            ..Options::default()
        };
        let all = lift(dir.path(), &options).unwrap();
        assert_eq!((all.optimized_receipts, all.optimized_sends), (2, 1));
        assert_eq!((all.holdout_receipts, all.holdout_sends), (2, 2));
        let m = opened_24h(&all);
        assert_eq!((m.optimized.sends, m.holdout.sends), (1, 2));
        assert!(all.unsent.is_empty());
    }

    /// An optimized receipt not sent yet (its planned time days ahead, a retry, a pause) holds
    /// its webhook's count at its receipt time, in both groups: by the longest wait of those
    /// sent, its held-out twin, sent at receipt, was counted and it was not (an audit's case).
    /// Once it is sent, the receipts after it count again.
    #[test]
    fn a_receipt_not_sent_yet_holds_both_groups_at_its_receipt_time() {
        let mut given = THREE.to_vec();
        given.push(("r4", 3, T + 2 * HOUR_MS, None, false));
        let dir = world(&given, &[(2, T - 10 * DAY_MS)]);
        let options = Options {
            as_of_ms: T + 10 * DAY_MS,
            ..Options::default()
        };
        let all = lift(dir.path(), &options).unwrap();
        // r1 and r2 (received before r4) count; r3, held out after it, does not yet.
        let m = opened_24h(&all);
        assert_eq!((m.optimized.sends, m.holdout.sends), (1, 1));
        assert_eq!((all.optimized_sends, all.holdout_sends), (1, 2));
        assert_eq!(all.unsent.len(), 1);
        assert_eq!(
            (all.unsent[0].first_received_ms, all.unsent[0].receipts),
            (T + 2 * HOUR_MS, 1)
        );
        assert!(
            all.notes.iter().any(|n| n.starts_with("w: counted up to")),
            "{:?}",
            all.notes
        );
        // Sent three days after receipt: every receipt counts.
        outcomes::dataset(dir.path())
            .unwrap()
            .write_part(
                ulid::Ulid::generate(),
                &mut outcomes::frame(&[enrolled("r4", "w", T + 3 * DAY_MS, false)]).unwrap(),
            )
            .unwrap();
        let all = lift(dir.path(), &options).unwrap();
        let m = opened_24h(&all);
        assert_eq!((m.optimized.sends, m.holdout.sends), (2, 2));
        assert!(all.unsent.is_empty());
        // A receipt in the archive is done with (only such are moved there), whatever its
        // outcome rows (a part of them set aside as damaged): it holds nothing back.
        let archive = dir.path().join(crate::datasets::ARCHIVE);
        let old: [Given; 1] = [("r0", 4, T + HOUR_MS / 2, None, false)];
        receipts(&archive, "w", WebhookType::Next24Hours, &old, true);
        let all = lift(dir.path(), &options).unwrap();
        assert_eq!(all.optimized_receipts, 3);
        assert!(all.unsent.is_empty(), "{:?}", all.unsent);
    }

    /// A timed receipt still in the inbox, not planned (the profiles could not be built, so
    /// only the held-out ones were planned and sent), holds its webhook's count at its receipt
    /// time as one planned and not sent does; the inbox's planned receipts hold nothing.
    #[test]
    fn a_receipt_not_planned_yet_holds_both_groups_at_its_receipt_time() {
        let dir = world(&THREE, &[(2, T - 10 * DAY_MS)]);
        let receipt = |id: &str, received_at_ms| crate::datasets::inbox::Receipt {
            receipt_id: id.into(),
            webhook_id: "w".into(),
            webhook_type: WebhookType::Next24Hours,
            contact_id: Some(3),
            email: None,
            portal_id: None,
            received_at_ms,
            signature: "v3".into(),
            config: "test".into(),
            callback_id: None,
            body_hash: None,
            time_zone: None,
            hold_ends_ms: None,
        };
        let rows = [receipt("r2", T + HOUR_MS), receipt("r4", T + 2 * HOUR_MS)];
        crate::datasets::inbox::dataset(dir.path())
            .unwrap()
            .write_part(
                ulid::Ulid::generate(),
                &mut crate::datasets::inbox::frame(&rows).unwrap(),
            )
            .unwrap();
        let options = Options {
            as_of_ms: T + 10 * DAY_MS,
            ..Options::default()
        };
        let all = lift(dir.path(), &options).unwrap();
        let m = opened_24h(&all);
        assert_eq!((m.optimized.sends, m.holdout.sends), (1, 1));
        assert_eq!(all.unsent.len(), 1);
        assert_eq!(
            (all.unsent[0].first_received_ms, all.unsent[0].receipts),
            (T + 2 * HOUR_MS, 1)
        );
    }

    /// An IMMEDIATE webhook's receipts go at receipt in both groups: left out of the report
    /// on every webhook (counted apart), compared when it is named (an A/A check), unless
    /// it has timed ones too.
    #[test]
    fn untimed_deliveries_are_left_out_unless_named() {
        let dir = world(&THREE, &[(3, T + 10 * HOUR_MS)]);
        let now: [Given; 2] = [
            ("i1", 3, T + 9 * HOUR_MS, Some(T + 9 * HOUR_MS), true),
            ("i2", 4, T + 9 * HOUR_MS, Some(T + 9 * HOUR_MS), false),
        ];
        receipts(dir.path(), "now", WebhookType::Immediate, &now, true);
        let mut options = Options {
            as_of_ms: T + 10 * DAY_MS,
            ..Options::default()
        };
        let all = lift(dir.path(), &options).unwrap();
        assert_eq!(all.untimed_receipts, 2);
        assert_eq!((all.optimized_receipts, all.holdout_receipts), (1, 2));
        assert_eq!(opened_24h(&all).holdout.engaged, 0.0);
        options.webhook = Some("now".into());
        let named = lift(dir.path(), &options).unwrap();
        assert_eq!(named.untimed_receipts, 0);
        assert_eq!((named.optimized_receipts, named.holdout_receipts), (1, 1));
        assert_eq!(opened_24h(&named).holdout.engaged, 1.0);
        // An action whose executions went both ways, named: its IMMEDIATE ones are left out
        // and counted (they were compared, unsaid).
        let timed: [Given; 2] = [
            ("m1", 5, T, Some(T), true),
            ("m2", 6, T, Some(T + HOUR_MS), false),
        ];
        let at_once: [Given; 1] = [("m3", 7, T, Some(T), true)];
        receipts(dir.path(), "mixed", WebhookType::Next24Hours, &timed, true);
        receipts(dir.path(), "mixed", WebhookType::Immediate, &at_once, true);
        options.webhook = Some("mixed".into());
        let mixed = lift(dir.path(), &options).unwrap();
        assert_eq!(
            (
                mixed.untimed_receipts,
                mixed.optimized_receipts,
                mixed.holdout_receipts
            ),
            (1, 1, 1)
        );
        let hint = |lift: &Lift| (lift.notes.iter()).any(|n| n.contains("--webhook"));
        assert!(hint(&all) && !hint(&mixed), "{:?}", mixed.notes);
    }

    /// Windows are counted from receipt plus the webhook's longest wait (1 h here), for both
    /// groups: r3's own window ended by the cutoff, but a receipt of its time sent after the
    /// longest wait would not have, so it is not counted yet. `--since` is by receipt too.
    #[test]
    fn receipts_count_by_their_receipt_time_not_their_send_time() {
        let h = HOUR_MS;
        let dir = world(&THREE, &[(2, T - 10 * DAY_MS)]);
        let mut options = Options {
            as_of_ms: T + 27 * h,
            ..Options::default()
        };
        let m = opened_24h(&lift(dir.path(), &options).unwrap()).clone();
        assert_eq!((m.optimized.sends, m.holdout.sends), (1, 1));
        options.since_ms = Some(T + 3 * h);
        let all = lift(dir.path(), &options).unwrap();
        assert_eq!((all.optimized_sends, all.holdout_sends), (0, 1));
        assert_eq!((all.optimized_receipts, all.holdout_receipts), (0, 1));
    }

    /// A holdout set for a week and lifted: only that week's receipts are compared, and a
    /// webhook that never held any out is not compared at all.
    #[test]
    fn only_receipts_of_the_held_out_period_are_compared() {
        let day = crate::time::DAY_MS;
        let send = |webhook: &str, day_n: i64, holdout: bool| Planned {
            receipt: key(&format!("{webhook}-{day_n}-{holdout}")),
            webhook: webhook.into(),
            contact_id: Some(day_n),
            email: None,
            received_at_ms: day_n * day,
            // Optimized sends go out days after receipt.
            sent_at_ms: Some(day_n * day + if holdout { 0 } else { 3 * day }),
            ended: true,
            failed: false,
            holdout,
            share: None,
            timed: true,
        };
        let mut all = vec![send("w", 0, false)];
        all.extend((1..=7).flat_map(|d| [send("w", d, true), send("w", d, false)]));
        all.extend((8..=28).map(|d| send("w", d, false)));
        all.extend((0..28).map(|d| send("never", d, false)));
        let days: Vec<(&str, i64)> = compared(&all)
            .map(|s| (&*s.webhook, s.contact_id.unwrap()))
            .collect();
        assert_eq!(days.len(), 14, "{days:?}");
        assert!(
            (days.iter()).all(|&(webhook, d)| webhook == "w" && (1..=7).contains(&d)),
            "{days:?}"
        );
    }

    /// A data folder of 600 receipts of webhook `w` planned with their holdout share, one
    /// per contact, 20 a day from T: receipt `c` of day `d` drawn at `share(d)` (held out as
    /// a fixed hash of `c` falls below it) and opened an hour after its send at `rate(d)` %
    /// (another hash), whichever its group: sending time makes no difference here.
    fn drifting(share: impl Fn(i64) -> f64, rate: impl Fn(i64) -> u64) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let (mut plans, mut done, mut opens) = (Vec::new(), Vec::new(), Vec::new());
        let open = |contact: i64, at_ms: i64| events::Event {
            event_id: None,
            contact_id: Some(contact),
            email: None,
            kind: Kind::Open,
            at_ms,
            filtered: false,
            source: "test".into(),
        };
        for c in 1..=600i64 {
            let day = (c - 1) / 20;
            let received = T + day * DAY_MS + (c % 20) * HOUR_MS / 2;
            let holdout = ((c * 7919) % 1000) as f64 / 1000.0 < share(day);
            let sent = received + if holdout { 0 } else { 2 * HOUR_MS };
            let id = format!("r{c}");
            plans.push(PlanRow {
                receipt_id: id.clone(),
                webhook_id: "w".into(),
                webhook_type: WebhookType::Next24Hours,
                contact_id: Some(c),
                email: None,
                received_at_ms: received,
                due_at_ms: sent,
                slot: None,
                reason: String::new(),
                planned_at_ms: received,
                callback_id: None,
                holdout,
                time_zone: None,
                hold_ends_ms: None,
                portal_id: None,
                holdout_share: Some(share(day)),
            });
            done.push(enrolled(&id, "w", sent, holdout));
            // Every contact is in the store, from an open long before.
            opens.push(open(c, T - 100 * DAY_MS));
            if ((c * 104_729 + 17) % 100) < rate(day) as i64 {
                opens.push(open(c, sent + HOUR_MS));
            }
        }
        let part = ulid::Ulid::generate();
        plan::dataset(dir.path())
            .unwrap()
            .write_part(part, &mut plan::frame(&plans).unwrap())
            .unwrap();
        outcomes::dataset(dir.path())
            .unwrap()
            .write_part(part, &mut outcomes::frame(&done).unwrap())
            .unwrap();
        events::append(dir.path(), &opens).unwrap();
        dir
    }

    /// The report of `dir` once every window is over.
    fn lift_of(dir: &tempfile::TempDir) -> Lift {
        let options = Options {
            as_of_ms: T + 60 * DAY_MS,
            ..Options::default()
        };
        lift(dir.path(), &options).unwrap()
    }

    /// A holdout of 0.5 lifted for the middle ten days and set again, while engagement falls
    /// from 80 % to 20 % over those days in both groups: the receipts drawn with no holdout
    /// are not compared. Counted between the first and last held-out receipts, as rows
    /// without a share are, the middle's optimized sends made holding out look better.
    #[test]
    fn receipts_drawn_while_the_holdout_was_lifted_are_not_compared() {
        let lifted = |d: i64| (10..20).contains(&d);
        let dir = drifting(
            |d| if lifted(d) { 0.0 } else { 0.5 },
            |d| if lifted(d) { 20 } else { 80 },
        );
        let report = lift_of(&dir);
        let m = opened_24h(&report);
        assert_eq!(report.optimized_receipts + report.holdout_receipts, 400);
        assert_eq!(m.optimized.sends + m.holdout.sends, 400, "{m:?}");
        assert!(m.difference.unwrap().abs() < 0.1, "{m:?}");
        assert_eq!(m.verdict, None, "{m:?}");
        // No verdict for want of a difference, not of sends: the text gives the interval.
        let [lo, hi] = m.interval.unwrap();
        assert!(report.text().contains(&format!(
            "opened within 24 h: no verdict (the interval includes zero): the difference lies between {} and {} points",
            points(lo),
            points(hi)
        )));
    }

    /// A share of 0.1 for ten days, then 0.5 while engagement falls from 80 % to 20 % in both
    /// groups: each share is compared with itself. Pooled, the held-out sends came mostly
    /// from the later days and the optimized ones from the earlier, and optimized sends
    /// looked better (Simpson's paradox over time).
    #[test]
    fn each_holdout_share_is_compared_with_itself() {
        let dir = drifting(
            |d| if d < 10 { 0.1 } else { 0.5 },
            |d| if d < 10 { 80 } else { 20 },
        );
        let report = lift_of(&dir);
        let m = opened_24h(&report);
        assert_eq!(m.optimized.sends + m.holdout.sends, 600, "{m:?}");
        assert!(m.difference.unwrap().abs() < 0.1, "{m:?}");
        assert_eq!(m.verdict, None, "{m:?}");
    }
}
