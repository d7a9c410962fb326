//! Planning new receipts: read the inbox parts not seen yet, give each receipt its due time
//! (on both cores, one row group of the plan part per slice), and make the plans durable
//! before the parts count as read.

use rayon::prelude::*;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use polars::prelude::DataFrame;
use ulid::Ulid;

use super::capacity::Route;
use super::ids::ReceiptId;
use super::profiles::ProfileCache;
use super::send::Pending;
use super::{Dispatcher, Queued, intern};
use crate::capacity::{Capacity, Ledger, Placed, Request, assign};
use crate::config::{Config, Webhook};
use crate::datasets::inbox::{self, PlanningColumns};
use crate::datasets::plan::{self, Entry};
use crate::local_time::{Local, Masks, parse_zone};
use crate::model::plan::{
    Grounds, Move, Plan, Standing, Subject, Window, describe, minute_hash, prefer, score, window,
    within_hold,
};
use crate::model::profile::Profile;
use crate::time::{DAY_MS, HOUR_MS, SLOTS, day_of, slot_of};
use chrono_tz::Tz;

/// Receipts planned by one task and written as one row group of the plan part.
const PLAN_CHUNK: usize = 32_768;
/// While planning fails, how long before its hold ends an action's contact is sent unplanned.
const LAST_CHANCE_MS: i64 = HOUR_MS;
/// Hours of quiet-hour masks worked out ahead for a batch: the longest window, planned a day
/// late, and a day to spill into.
const MASK_HOURS: usize = ((9 * DAY_MS) / HOUR_MS) as usize;

/// Which file a path names: its inode, size and time of change. A part removed and written
/// again can get the inode it had back; not its size and time too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct FileStamp {
    inode: u64,
    len: u64,
    changed: (i64, i64),
}

impl FileStamp {
    fn of(m: &std::fs::Metadata) -> FileStamp {
        FileStamp {
            inode: m.ino(),
            len: m.len(),
            changed: (m.ctime(), m.ctime_nsec()),
        }
    }
}

impl Dispatcher {
    /// Read inbox parts not seen yet; plan their new receipts and append the plans.
    ///
    /// A part counts as seen only once its receipts' plans are durable: if anything fails,
    /// the next tick reads it again.
    pub(super) fn plan_new(&mut self, config: &Config, now: i64) -> anyhow::Result<usize> {
        // Before the listing: each of these was written by then, so one not listed is gone.
        let unplanned_parts = self.pending.unread_parts();
        let parts = self
            .inbox_ds
            .parts()
            .with_context(|| format!("cannot list {}", self.inbox_ds.dir.display()))?;
        let listed_ids: HashSet<Ulid> = parts
            .iter()
            .filter_map(|p| crate::store::part_id(p))
            .collect();
        // Whether every part listed is read, now or before: only then are the receipts of a
        // part no longer listed in none (a merged part unread may hold them; one vanished
        // since the listing, in a part merged since; one set aside, its merge undone, in its
        // sources listed again).
        let mut all_read = true;
        // Each known by its file too: a part the inbox wrote again under its path (after a
        // flush whose folder fsync failed) is read again (its receipts planned already are
        // not planned twice). One gone since the listing was compacted away.
        let parts: Vec<(PathBuf, FileStamp)> = (parts.into_iter())
            .filter_map(|p| match std::fs::metadata(&p) {
                Ok(m) => Some((p, FileStamp::of(&m))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    all_read = false;
                    None
                }
                Err(e) => {
                    tracing::warn!(part = %p.display(), "cannot read inbox part (will try again next tick): {e}");
                    all_read = false;
                    None
                }
            })
            .collect();
        let listed: HashSet<&(PathBuf, FileStamp)> = parts.iter().collect();
        self.seen_parts.retain(|p| listed.contains(p));
        // Receipts read from the inbox, about to be planned: the queue entries to be.
        let mut fresh: Vec<Pending> = Vec::new();
        let mut read = Vec::new();
        for seen in &parts {
            if self.seen_parts.contains(seen) {
                continue;
            }
            let part = &seen.0;
            // A part that cannot be read now is left for the next tick; the others go on.
            let read_part = PlanningColumns::read(part).and_then(|columns| {
                if let Err(e) = columns.check_webhook_types() {
                    tracing::warn!(
                        part = %part.display(),
                        "{e:#}: its receipts of that type are left unplanned (a build that knows the type plans them when it starts); the others are planned"
                    );
                }
                self.take_fresh(&columns, &mut fresh)
                    .with_context(|| format!("cannot read receipts from {}", part.display()))
            });
            all_read &= read_part.is_ok();
            match read_part {
                Ok(()) => read.push(seen.clone()),
                Err(e) if crate::store::is_not_found(&e) => {}
                // Bytes that changed since the part was written: set aside, never planned
                // from (its receipts could be anyone's).
                Err(e)
                    if e.downcast_ref::<crate::store::checksum::Mismatch>()
                        .is_some() =>
                {
                    match self.inbox_ds.quarantine(part, &e) {
                        Err(q) => {
                            tracing::error!(part = %part.display(), "{e:#}; and it cannot be quarantined: {q:#}")
                        }
                        Ok(()) => tracing::error!(
                            part = %part.display(),
                            "its receipts not planned before are not planned; they stop waiting at a later tick that reads every inbox part, so that a later post of one of their contacts is a new receipt"
                        ),
                    }
                }
                Err(e) => {
                    tracing::warn!(part = %part.display(), "cannot read inbox part (will try again next tick): {e:#}");
                }
            }
        }
        let result = match self
            .profiles
            .refresh(config.model, now)
            .context("cannot build contact profiles (from events/, into profiles/)")
        {
            // Profiles are kept current on every tick (cheap when no event part is new), so
            // the first tick after start-up loads them and later ticks only add what was
            // imported.
            Ok(()) => self.record_plans(config, now, &mut fresh),
            Err(e) => {
                self.plan_without_profiles(config, now, &mut fresh);
                Err(e)
            }
        };
        if let Err(e) = result {
            // Planning is down: an action's contact in its hold's last hour goes now, rather
            // than be moved on by HubSpot without us. The others wait in the inbox for the
            // next tick.
            let last_chance = |item: &Pending| {
                let window = config
                    .webhook(&item.webhook_id)
                    .and_then(|w| super::capacity::route(config, w).window);
                item.held_by_hubspot() && release_by(item, window) - LAST_CHANCE_MS <= now
            };
            let (mut last, waiting): (Vec<Pending>, Vec<Pending>) =
                fresh.into_iter().partition(last_chance);
            for item in &waiting {
                self.planned.remove(&item.receipt_id);
            }
            if let Err(w) = self.record_unplanned(config, &mut last, now) {
                tracing::warn!(
                    contacts = last.len(),
                    "cannot record the plans of contacts sent in the last hour of HubSpot's hold (they are sent all the same): {w:#}"
                );
            }
            for mut item in last {
                item.due_at_ms = now;
                item.ready_at_ms = now;
                // Not booked: the ledgers count it once built again (an audit).
                self.requeue(item);
            }
            return Err(e);
        }
        self.seen_parts.extend(read);
        self.release_lost(&unplanned_parts, &listed_ids, all_read, &fresh);
        let planned = fresh.len();
        // The planned receipts' vector becomes the heap's (no copy) when it is the larger.
        let mut new: Vec<Queued> = fresh.into_iter().map(Queued).collect();
        if new.len() > self.queue.len() {
            new.extend(std::mem::take(&mut self.queue).into_vec());
            self.queue = BinaryHeap::from(new);
        } else {
            self.queue.extend(new);
        }
        if planned > 0
            && self.plan_ds.parts().map(|p| p.len()).unwrap_or(0) > 64
            && let Err(e) = self.plan_ds.compact(&|_| false)
        {
            tracing::warn!("plan compaction failed (will retry): {e:#}");
        }
        Ok(planned)
    }

    /// Receipts just planned (`fresh`) no longer depend on their inbox parts; the receipts of
    /// parts that were recorded unplanned before the listing and are no longer `listed` (set
    /// aside, before planning read them) stop waiting, when every part listed was read.
    fn release_lost(
        &mut self,
        unplanned_parts: &HashSet<Ulid>,
        listed: &HashSet<Ulid>,
        all_read: bool,
        fresh: &[Pending],
    ) {
        // The ids made before the lock, which every post's check takes.
        if self.pending.has_unread() {
            let ids: Vec<String> = fresh.iter().map(|p| p.receipt_id.to_string()).collect();
            self.pending.read(&ids);
        }
        let gone: HashSet<Ulid> = unplanned_parts.difference(listed).copied().collect();
        if !all_read || gone.is_empty() {
            return;
        }
        let planned = &self.planned;
        let released =
            (self.pending).release_unread(&gone, |id| planned.contains(&ReceiptId::new(id)));
        if released > 0 {
            tracing::warn!(
                receipts = released,
                "receipts of inbox parts set aside before they were planned no longer wait: a later post of one of their contacts is a new receipt"
            );
        }
    }

    /// The receipts of an inbox part not planned or finished yet, read straight from its
    /// columns; they count as planned from here on (the caller undoes that on failure).
    /// Converting rows is spread over the cores (it mostly touches fresh memory, which costs
    /// here); only the de-duplication against what is known runs on one.
    fn take_fresh(
        &mut self,
        part: &PlanningColumns,
        fresh: &mut Vec<Pending>,
    ) -> anyhow::Result<()> {
        // Rows of a webhook type this build does not know are not taken (never read as a
        // default); a compaction may have merged them with anyone's.
        let rows: Vec<usize> = (0..part.len())
            .into_par_iter()
            .filter(|&i| part.webhook_type(i).is_some())
            .collect();
        let ids = &part.receipt_id;
        let webhooks = &part.webhook_id;
        let contacts = &part.contact_id;
        let emails = &part.email;
        let received = &part.received_at;
        // The part's few distinct webhook ids, shared (parts hold long runs of one).
        let mut shared: Vec<Arc<str>> = Vec::new();
        let mut last: Option<&str> = None;
        for w in webhooks.iter() {
            let w = w.unwrap_or_default();
            if last != Some(w) && !shared.iter().any(|x| **x == *w) {
                shared.push(intern(&mut self.webhook_ids, w));
            }
            last = Some(w);
        }
        let start = fresh.len();
        fresh.par_extend(rows.par_iter().map(|&i| {
            let w = webhooks.get(i).unwrap_or_default();
            Pending {
                receipt_id: ReceiptId::new(ids.get(i).unwrap_or_default()),
                webhook_id: shared
                    .iter()
                    .find(|x| ***x == *w)
                    .expect("every webhook id of the part is shared above")
                    .clone(),
                contact_id: contacts.get(i),
                email: emails.get(i).map(Box::from),
                callback_id: part.callback_id.get(i).map(Box::from),
                due_at_ms: 0,
                attempts: 0,
                failures: 0,
                in_doubt: false,
                doubted_twice: false,
                doubt_workflow: None,
                enrolled_at_ms: 0,
                paused_until_ms: 0,
                ready_at_ms: 0,
                holdout: false,
                dry_run_only: part.signature.get(i).is_some_and(inbox::dry_run_only),
                zone: part.time_zone.get(i).and_then(parse_zone),
                webhook_type: part.webhook_type(i).expect("filtered above"),
                received_at_ms: received.get(i).unwrap_or_default(),
                hold_ends_ms: part.hold_ends.get(i),
                portal: inbox::account(part.portal_id.get(i)),
            }
        }));
        self.planned.reserve(rows.len());
        let mut repeats = Vec::new();
        // A zone name no one knows (a custom property's free text): the account's zone
        // serves, as when none is posted, but not silently (once per receipt, not at each
        // tick that reads its part again).
        let mut unknown = (0, None);
        for (i, item) in fresh[start..].iter().enumerate() {
            let id = &item.receipt_id;
            if self.done.contains(id) || !self.planned.insert(id.clone()) {
                repeats.push(start + i);
            } else if item.zone.is_none()
                && let Some(zone) = part.time_zone.get(rows[i])
            {
                unknown = (unknown.0 + 1, unknown.1.or(Some(zone)));
            }
        }
        if let (contacts, Some(example)) = unknown {
            tracing::warn!(
                contacts,
                example = ?example,
                "time zones that are no IANA name: those contacts' local time is the connector's `time_zone` (UTC when none)"
            );
        }
        // Kept, not taken: a tick whose plans cannot be written plans them again.
        if !self.unplanned_calls.is_empty() {
            for item in &mut fresh[start..] {
                if let Some(&(calls, workflow, twice)) = self.unplanned_calls.get(&item.receipt_id)
                {
                    item.attempts = calls;
                    item.in_doubt = true;
                    item.doubt_workflow = workflow;
                    item.doubted_twice = twice && item.checkable_id().is_none();
                }
            }
        }
        // Rows already planned or finished (a compacted part repeats them): drop them.
        if !repeats.is_empty() {
            let mut drop = vec![false; fresh.len()];
            for i in repeats {
                drop[i] = true;
            }
            let mut i = 0;
            fresh.retain(|_| {
                i += 1;
                !drop[i - 1]
            });
        }
        Ok(())
    }

    /// Plan `fresh`, setting each one's due time, and append the plans as one part.
    ///
    /// Each receipt's preferred hour is worked out on both cores; then, on one, the receipts
    /// are placed in what their connectors have left, those that lose most by moving first
    /// ([`crate::capacity::assign`]); then each slice's rows are built and written as a row
    /// group of the part as soon as they are ready (fresh pages cost a lot here).
    fn record_plans(
        &mut self,
        config: &Config,
        now: i64,
        fresh: &mut Vec<Pending>,
    ) -> anyhow::Result<()> {
        if fresh.is_empty() {
            return Ok(());
        }
        let mut caps = {
            self.capacities(config, now);
            self.capacity.take().expect("built above")
        };
        let routes = caps.routes(config);
        let unrouted = caps.unrouted();
        let pauses = self.pauses.clone();
        let held = caps.held().clone();
        let route_of = |item: &Pending| {
            let mut route = *super::capacity::route_of(&routes, item).unwrap_or(&unrouted);
            // Held by an operator's pause, or its target's hold: planned at its best time,
            // booked when that ends (the ledgers are built again then).
            if pauses.holds(&item.webhook_id, route.connector) || held.contains(&*item.webhook_id) {
                route.ledger = unrouted.ledger;
            }
            route
        };
        let population = self.profiles.population();
        let profiles = &self.profiles;
        let day = day_of(now);
        // Held-out receipts go at receipt, as without sendtime (capacity permitting).
        let shares: HashMap<&str, f64> = config
            .webhooks
            .iter()
            .filter(|w| w.holdout > 0.0)
            .map(|w| (w.id.as_str(), w.holdout))
            .collect();
        if !shares.is_empty() {
            fresh.par_iter_mut().for_each(|item| {
                let share = shares.get(&*item.webhook_id).copied().unwrap_or(0.0);
                let mut buf = [0u8; ulid::ULID_LEN];
                item.holdout = crate::lift::held_out(item.receipt_id.as_str(&mut buf), share);
            });
        }
        let locals: HashSet<Local> = fresh
            .par_iter()
            .filter_map(|item| route_of(item).local(item.zone))
            .collect();
        let masks = Masks::build(locals, now, MASK_HOURS);
        let (requests, found): (Vec<Request>, Vec<Found>) = fresh
            .par_iter()
            .map_init(String::new, |key, item| {
                let route = route_of(item);
                let index = profiles.find(item.contact_id, item.email.as_deref(), key);
                let profile = profiles.profile(index, day);
                let mut buf = [0u8; ulid::ULID_LEN];
                let who = Subject {
                    contact: key,
                    receipt: item.receipt_id.as_str(&mut buf),
                };
                let (request, standing) = request(
                    item,
                    &route,
                    profile.as_ref(),
                    &population,
                    &masks,
                    who,
                    now,
                );
                (request, Found { index, standing })
            })
            .unzip();
        let placed = assign(&requests, &mut caps.ledgers, &masks, |i, out| {
            let profile = profiles.profile(found[i].index, day);
            rank(requests[i].window, profile.as_ref(), &population, out);
        });
        self.count_moves(fresh, &placed, &route_of);
        let schema = plan::Columns::with_capacity(0).finish()?.schema().clone();
        let result = self
            .plan_ds
            .write_part_with(Ulid::generate(), &schema, |writer| {
                fresh
                    .par_chunks_mut(PLAN_CHUNK)
                    .zip(requests.par_chunks(PLAN_CHUNK))
                    .zip(placed.par_chunks(PLAN_CHUNK))
                    .zip(found.par_chunks(PLAN_CHUNK))
                    .try_for_each(|(((items, requests), placed), found)| {
                        let chunk = Chunk {
                            requests,
                            placed,
                            found,
                            route_of: &route_of,
                            shares: &shares,
                        };
                        let df = plan_chunk(items, chunk, profiles, &population, now)?;
                        writer(&df)
                    })
            })
            .context("cannot record plans");
        drop(routes);
        if result.is_ok() {
            self.capacity = Some(caps);
        }
        // A failed write leaves the ledgers without this batch's bookings: the next tick
        // rebuilds them from the queue.
        result?;
        Ok(())
    }

    /// While the profiles cannot be built, plan the receipts of `fresh` that need none, taking
    /// them out of it: an untimed type's (IMMEDIATE, UPDATE_ONLY) and those held out, which go
    /// at receipt whatever the model knows (they waited in the inbox with the rest, an
    /// audit). A failure to plan them leaves them in `fresh`, to wait with the rest.
    fn plan_without_profiles(&mut self, config: &Config, now: i64, fresh: &mut Vec<Pending>) {
        let needs_none = |item: &Pending| {
            let share = config.webhook(&item.webhook_id).map_or(0.0, |w| w.holdout);
            let mut buf = [0u8; ulid::ULID_LEN];
            !item.webhook_type.timed()
                || crate::lift::held_out(item.receipt_id.as_str(&mut buf), share)
        };
        let (mut now_items, waiting): (Vec<Pending>, Vec<Pending>) =
            std::mem::take(fresh).into_iter().partition(needs_none);
        *fresh = waiting;
        if now_items.is_empty() {
            return;
        }
        match self.record_plans(config, now, &mut now_items) {
            Ok(()) => now_items.into_iter().for_each(|item| self.enqueue(item)),
            Err(e) => {
                tracing::warn!(
                    contacts = now_items.len(),
                    "cannot plan the receipts that need no profile (untimed, held out) either: {e:#}"
                );
                fresh.extend(now_items);
            }
        }
    }

    /// Plan rows for `items`, sent at `now` unplanned while planning fails: finished
    /// receipts are archived by their plan rows, and `explain` and the lift report read them.
    /// Each is held out or not first, in the group the receipt was drawn for, as the lift
    /// report compares them (whether or not its row can be written).
    fn record_unplanned(
        &self,
        config: &Config,
        items: &mut [Pending],
        now: i64,
    ) -> anyhow::Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let mut rows = plan::Columns::with_capacity(items.len());
        for r in items.iter_mut() {
            let mut buf = [0u8; ulid::ULID_LEN];
            let reason = "planning failed: sent in the last hour of HubSpot's hold";
            let share = config.webhook(&r.webhook_id).map_or(0.0, |w| w.holdout);
            r.holdout = crate::lift::held_out(r.receipt_id.as_str(&mut buf), share);
            let receipt = r.receipt_id.as_str(&mut buf);
            rows.push(entry(r, receipt, now, None, reason, now, share));
        }
        self.plan_ds
            .write_part(Ulid::generate(), &mut rows.finish()?)
            .context("cannot record plans")?;
        Ok(())
    }

    /// Count and log the receipts planned away from their preferred time, per connector.
    fn count_moves<'r>(
        &self,
        items: &[Pending],
        placed: &[Placed],
        route_of: &dyn Fn(&Pending) -> Route<'r>,
    ) {
        let mut spilled: HashMap<&str, usize> = HashMap::new();
        let mut overflowed: HashMap<&str, usize> = HashMap::new();
        for (item, p) in items.iter().zip(placed) {
            let Some(kind) = p.moved.label() else {
                continue;
            };
            let connector = route_of(item).connector;
            self.metrics.plan_move(connector, kind).inc();
            match p.moved {
                Move::Spilled => *spilled.entry(connector).or_default() += 1,
                Move::Overflow => *overflowed.entry(connector).or_default() += 1,
                _ => {}
            }
        }
        for (connector, n) in spilled {
            tracing::warn!(
                connector,
                contacts = n,
                "contacts planned past their window: every minute of it is full on this connector (raise requests_per_10s or daily_budget, or widen the `window` of its timed webhooks)"
            );
        }
        for (connector, n) in overflowed {
            tracing::warn!(
                connector,
                contacts = n,
                "contacts found no minute with room within {} days on this connector: planned at once, and held to daily_budget when sent (raise daily_budget: it is far too small for the queue)",
                crate::capacity::ledger::SEARCH_DAYS
            );
        }
    }
}

/// When a workflow action's contact must be released by: [`RELEASE_MARGIN_MS`] before
/// HubSpot's hold on it ends ([`hold_end`]).
pub(super) fn release_by(item: &Pending, window: Option<i64>) -> i64 {
    let received = item.received_at_ms;
    crate::model::plan::release_by(item.hold_ends_ms, received, item.webhook_type, window)
}

/// The last time a workflow action's callback is tried at, at `now`: its release-by, or once
/// that has gone by (a batch's last try, a late tick), a minute before the hold ends, after
/// which HubSpot refuses the call.
pub(super) fn callback_deadline(item: &Pending, window: Option<i64>, now: i64) -> i64 {
    match release_by(item, window) {
        by if by > now => by,
        _ => crate::model::plan::last_try(hold_end(item, window)),
    }
}

/// When HubSpot moves a workflow action's contact on without us
/// ([`crate::model::plan::hold_end`]).
pub(super) fn hold_end(item: &Pending, window: Option<i64>) -> i64 {
    let received = item.received_at_ms;
    crate::model::plan::hold_end(item.hold_ends_ms, received, item.webhook_type, window)
}

/// `item`'s request to [`assign`] on `route`, from its contact's `profile` (none: a
/// stranger), and what its reason will say of the contact.
fn request(
    item: &Pending,
    route: &Route,
    profile: Option<&Profile>,
    population: &[f64; SLOTS],
    masks: &Masks,
    who: Subject,
    now: i64,
) -> (Request, Standing) {
    let span = match item.hold_ends_ms {
        Some(ends) => within_hold(item.webhook_type, route.window, item.received_at_ms, ends),
        None => route.window,
    };
    let window = window(item.webhook_type, item.received_at_ms, now, span, profile)
        .filter(|_| !item.holdout);
    let local = route.local(item.zone);
    let preferred = window.as_ref().and_then(|w| {
        prefer(w, profile, population, who, |k| {
            w.minutes(k) & masks.allowed(local, w.hour(k))
        })
    });
    let request = Request {
        ledger: route.ledger,
        cost: route.cost,
        window,
        from: item.received_at_ms.max(now),
        // Before HubSpot would move the contact on without us.
        deadline: (route.holds() || item.hold_ends_ms.is_some())
            .then(|| release_by(item, route.window)),
        preference: preferred,
        hash: minute_hash(who.contact),
        local,
    };
    let standing = Standing::of(window.as_ref(), preferred.map(|p| p.k), profile, population);
    (request, standing)
}

/// The candidate hours of `window` in `out`, best first for `profile`.
fn rank(
    window: Option<Window>,
    profile: Option<&Profile>,
    population: &[f64; SLOTS],
    out: &mut Vec<usize>,
) {
    let Some(w) = window else { return };
    let scores: Vec<f64> = (0..w.hours)
        .map(|k| score(&w, k, profile, population))
        .collect();
    out.extend(0..w.hours);
    out.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
    crate::model::plan::last_half_last(&w, out);
}

/// Where `placed` puts `item`: its due time and slot, its reason appended to `reason`.
fn settle(
    item: &Pending,
    request: &Request,
    placed: Placed,
    grounds: &Grounds,
    reason: &mut String,
) -> (i64, Option<u8>) {
    // A next-tick receipt that fits keeps its receipt time as its due time.
    let due = match (request.window, placed.moved) {
        (None, Move::None) => item.received_at_ms,
        _ => placed.due,
    };
    let slot = request.window.map(|w| match placed.k {
        Some(k) => w.slot(k),
        None => slot_of(due),
    });
    describe(
        grounds,
        request.window.as_ref(),
        placed.k,
        placed.moved,
        due,
        reason,
    );
    (due, slot)
}

/// When a receipt of `webhook` posted at `now` for `contact` (its key, in zone `zone`) would be
/// due, and why, as planning places it alone: its window, quiet hours and zone, not what
/// other contacts take of its connector. `sendtime explain` and the dashboard's lookup show it.
pub fn plan_alone(
    config: &Config,
    webhook: &Webhook,
    profile: Option<&Profile>,
    population: &[f64; SLOTS],
    contact: &str,
    zone: Option<Tz>,
    now: i64,
) -> Plan {
    let routed = super::capacity::route(config, webhook);
    let connector = &config.connectors[routed.ledger];
    let route = Route {
        ledger: 0,
        ..routed
    };
    let item = Pending {
        receipt_id: ReceiptId::new("explain"),
        webhook_id: Arc::from(webhook.id.as_str()),
        contact_id: None,
        email: None,
        callback_id: None,
        due_at_ms: now,
        attempts: 0,
        failures: 0,
        in_doubt: false,
        doubted_twice: false,
        doubt_workflow: None,
        enrolled_at_ms: 0,
        paused_until_ms: 0,
        ready_at_ms: now,
        holdout: false,
        dry_run_only: false,
        zone,
        webhook_type: webhook.kind,
        received_at_ms: now,
        hold_ends_ms: None,
        portal: None,
    };
    // Worked out as asked: one receipt's few hours.
    let masks = Masks::default();
    let who = Subject {
        contact,
        receipt: "explain",
    };
    let (request, standing) = request(&item, &route, profile, population, &masks, who, now);
    let mut ledgers = [Ledger::new(Capacity::of(connector))];
    let placed = assign(
        std::slice::from_ref(&request),
        &mut ledgers,
        &masks,
        |_, out| rank(request.window, profile, population, out),
    )[0];
    let grounds = Grounds {
        kind: webhook.kind,
        standing,
        moved_to: None,
        quiet: request.local,
        connector: route.connector,
        holdout: false,
    };
    let mut reason = String::new();
    let (due_at_ms, slot) = settle(&item, &request, placed, &grounds, &mut reason);
    Plan {
        due_at_ms,
        slot,
        reason,
    }
}

/// A receipt's contact as planning first found it.
#[derive(Clone, Copy)]
struct Found {
    /// Its index among the profiles: a second lookup by key would cost a couple of cache
    /// misses in a table of millions, and is rarely needed.
    index: Option<u32>,
    /// What its reason says of it.
    standing: Standing,
}

/// What planning one slice reads besides its queue entries.
struct Chunk<'a, 'r> {
    requests: &'a [Request],
    placed: &'a [Placed],
    found: &'a [Found],
    route_of: &'a (dyn Fn(&Pending) -> Route<'r> + Sync),
    /// The `holdout` share of each webhook that has one, as the receipts were drawn.
    shares: &'a HashMap<&'a str, f64>,
}

/// Set one slice's due times from where its receipts were placed; its rows of `plan/` as a
/// frame. Columns are built directly (no per-row structs or strings): one reused buffer for
/// keys and reasons.
fn plan_chunk(
    items: &mut [Pending],
    chunk: Chunk<'_, '_>,
    profiles: &ProfileCache,
    population: &[f64; crate::time::SLOTS],
    now: i64,
) -> anyhow::Result<DataFrame> {
    let day = day_of(now);
    let debug = tracing::enabled!(tracing::Level::DEBUG);
    let mut reason = String::new();
    let mut rows = plan::Columns::with_capacity(items.len());
    for (i, r) in items.iter_mut().enumerate() {
        let (request, placed) = (&chunk.requests[i], chunk.placed[i]);
        let mut buf = [0u8; ulid::ULID_LEN];
        let receipt = r.receipt_id.as_str(&mut buf);
        reason.clear();
        // Only a receipt moved by capacity needs its whole profile again (to name the hour).
        let moved_to = match (request.window, placed.k, placed.moved) {
            (Some(w), Some(k), Move::Capacity { .. }) => {
                let profile = profiles.profile(chunk.found[i].index, day);
                Some(score(&w, k, profile.as_ref(), population))
            }
            _ => None,
        };
        let context = Grounds {
            kind: r.webhook_type,
            standing: chunk.found[i].standing,
            moved_to,
            quiet: request.local,
            connector: (chunk.route_of)(r).connector,
            holdout: r.holdout,
        };
        let (due, slot) = settle(r, request, placed, &context, &mut reason);
        let share = chunk.shares.get(&*r.webhook_id).copied().unwrap_or(0.0);
        rows.push(entry(r, receipt, due, slot, &reason, now, share));
        r.due_at_ms = due;
        r.ready_at_ms = due;
        if debug {
            tracing::debug!(receipt = %r.receipt_id, webhook = %r.webhook_id, due_at = due, "planned: {reason}");
        }
    }
    rows.finish()
}

/// The plan row of `r` (its id written out as `receipt_id`): due at `due_at_ms`, in `slot`,
/// for `reason`, planned at `now`, drawn for holding out at `share`.
fn entry<'a>(
    r: &'a Pending,
    receipt_id: &'a str,
    due_at_ms: i64,
    slot: Option<u8>,
    reason: &'a str,
    now: i64,
    share: f64,
) -> Entry<'a> {
    Entry {
        receipt_id,
        webhook_id: &r.webhook_id,
        webhook_type: r.webhook_type,
        contact_id: r.contact_id,
        email: r.email.as_deref(),
        received_at_ms: r.received_at_ms,
        due_at_ms,
        slot,
        reason,
        planned_at_ms: now,
        callback_id: r.callback_id.as_deref(),
        holdout: r.holdout,
        time_zone: r.zone,
        hold_ends_ms: r.hold_ends_ms,
        portal_id: r.portal.map(|p| p.get() as i64),
        holdout_share: Some(share),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WebhookType;
    use crate::datasets::inbox::Receipt;

    /// An inbox part taken back and written again under its path with more receipts (the
    /// inbox's, after a flush whose folder fsync failed) is read again: the receipts it gained
    /// are planned, the others not twice. Known by its path alone (or its path and inode,
    /// which may come back), it was not read again until a restart.
    #[tokio::test]
    async fn a_part_written_again_under_its_path_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_795_750_200_000;
        let config = crate::dispatch::tests::config("", "IMMEDIATE");
        let clock = crate::clock::Clock::Fixed(now);
        let mut d = Dispatcher::open(dir.path(), crate::metrics::Metrics::new(), clock).unwrap();
        let receipt = |n: i64| Receipt {
            receipt_id: Ulid::from_parts(now as u64, n as u128).to_string(),
            webhook_id: "w".into(),
            webhook_type: WebhookType::Immediate,
            contact_id: Some(n),
            email: Some(format!("c{n}@example.com")),
            portal_id: None,
            received_at_ms: now,
            signature: "v3".into(),
            config: "c".into(),
            callback_id: None,
            body_hash: None,
            time_zone: None,
            hold_ends_ms: None,
        };
        let part = Ulid::generate();
        let write = |d: &Dispatcher, rows: &[Receipt]| {
            let mut df = inbox::frame(rows).unwrap();
            d.inbox_ds.write_part(part, &mut df).unwrap();
        };
        write(&d, &[receipt(1)]);
        assert_eq!(d.plan_new(&config, now).unwrap(), 1);
        // Taken back, as a failed flush does, then written with what came since.
        d.inbox_ds.remove_part(part).unwrap();
        write(&d, &[receipt(1), receipt(2)]);
        assert_eq!(d.plan_new(&config, now).unwrap(), 1);
        assert_eq!(d.queued(), 2);
        d.close();
    }
}
