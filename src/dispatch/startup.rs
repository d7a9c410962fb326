//! Start-up: the dispatcher's state rebuilt from the data folder (`plan/`, `outcomes/`, the
//! inbox and its write-ahead log), with what a crash left in doubt marked to be checked at
//! HubSpot before anything is sent again.

use std::collections::{BinaryHeap, HashMap, HashSet};
use std::num::NonZeroU64;
use std::path::Path;

use anyhow::Context;

use super::archive::{self, Settling};
use super::ids::{IdSet, ReceiptId};
use super::profiles::ProfileCache;
use super::send::Pending;
use super::{Dispatcher, Queued, intern, locks};
use crate::capacity::Spent;
use crate::clock::Clock;
use crate::config::Connector;
use crate::datasets::outcomes::{self, Action, OutcomeLog, OutcomeRow, Status};
use crate::datasets::pending::PendingSet;
use crate::datasets::{inbox, plan};
use crate::hubspot::ApiError;
use crate::metrics::Metrics;

impl Dispatcher {
    /// Build the state from `plan/` and `outcomes/` under `data_dir`, recover the inbox (its
    /// write-ahead log replayed into parts) and collect the receipts not finished into the
    /// pending set that [`Dispatcher::pending`] hands to the receiver. Takes the data folder's
    /// dispatch lock first: two dispatchers on one folder would send twice, and the inbox of
    /// a running server is its own.
    pub fn open(data_dir: &Path, metrics: Metrics, clock: Clock) -> anyhow::Result<Dispatcher> {
        let request_timeout = crate::hubspot::policy::request_timeout()?;
        let lock = locks::lock(
            data_dir,
            "two dispatchers on one data folder would enroll contacts twice",
        )?;
        crate::cut_short::refuse_to_dispatch(data_dir)?;
        let plan_ds = plan::dataset(data_dir)?;
        let outcomes_ds = outcomes::dataset(data_dir)?;
        plan_ds.recover()?;
        outcomes_ds.recover()?;

        #[derive(Default)]
        struct Seen {
            started: u32,
            finished: u32,
            last_doubt: bool,
            retry_at: Option<i64>,
            /// The workflow each attempt called (a check calls under the one it looks for).
            calls: Vec<(u32, Option<NonZeroU64>)>,
            /// Attempts that failed in a way worth retrying (a set: rows may be seen twice).
            failed: HashSet<u32>,
        }
        impl Seen {
            /// The workflow a call whose answer was lost may have enrolled into, by the
            /// attempts' numbers, not their times (a clock set back misled them; an audit): a
            /// doubt recorded last is of its attempt's workflow, which the call or check
            /// after it, if in flight, keeps, as a running dispatcher's does; past that, a
            /// check found nothing (it records no row) and the latest call is the one.
            fn doubt_workflow(&self) -> Option<NonZeroU64> {
                let attempt = match self.last_doubt && self.started <= self.finished + 1 {
                    true => self.finished,
                    false => self.started,
                };
                (self.calls.iter()).find_map(|&(a, w)| (a == attempt).then_some(w)?)
            }

            /// Whether two calls may have reached HubSpot unanswered: those never answered
            /// (one per crash; a call cut short counts, whether it left or not) and a doubt
            /// recorded after the last answered ([`Pending::doubted_twice`]).
            fn doubted_twice(&self) -> bool {
                self.started.saturating_sub(self.finished) + u32::from(self.last_doubt) >= 2
            }
        }
        let mut history: HashMap<String, Seen> = HashMap::new();
        let mut done = IdSet::default();
        let rows = outcomes::read(&outcomes_ds)
            .with_context(|| format!("cannot read {}", outcomes_ds.dir.display()))?;
        let spent = spent_by(&rows, clock.now_ms());
        // Finished receipts past the replay window: moved out of the datasets read at start-up,
        // so the next start reads what is pending and recent, not all history.
        let settling = Settling::new(&rows, clock.replay_now_ms(), clock.now_ms());
        // Outcome rows set aside as unreadable may have recorded any receipt received before
        // them: those without a final row here are checked before they are sent again.
        let doubt_before = outcomes_ds.quarantined_until()?.unwrap_or(i64::MIN);
        for r in rows {
            if r.status.is_final() {
                done.insert(ReceiptId::new(&r.receipt_id));
                continue;
            }
            let h = history.entry(r.receipt_id).or_default();
            if r.status == Status::Attempting {
                h.started = h.started.max(r.attempts);
                h.calls.push((r.attempts, r.target.parse().ok()));
            } else {
                // The failures the dispatcher counted on the contact's tries (no answer, 5xx,
                // 408, 423, an edge's page for 401 or 403); not the connector's state
                // (HubSpot's 401 or 403, 429, a redirect) nor a batch's split, which are no
                // failure of the contact's. Told by the row's text, as the status cannot tell
                // an edge's 401 from HubSpot's (an audit found a restart counted redirects,
                // and not an edge's pages, the other way round from a running dispatcher).
                let transient = r.status == Status::Retrying
                    && r.message
                        .as_deref()
                        .is_some_and(ApiError::is_transient_text);
                if transient {
                    h.failed.insert(r.attempts);
                }
                if r.attempts >= h.finished {
                    h.finished = r.attempts;
                    h.last_doubt = r.in_doubt;
                    h.retry_at = r.retry_at_ms;
                }
            }
        }
        let mut queue = Vec::new();
        let mut planned = IdSet::default();
        let mut webhook_ids = HashSet::new();
        let mut in_flight = 0usize;
        let mut lost_rows_doubt = 0usize;
        let plans = plan::read(&plan_ds)
            .with_context(|| format!("cannot read {}", plan_ds.dir.display()))?;
        let mut settled: HashSet<String> = HashSet::new();
        // Finished receipts with a plan row here: the others' rows left for the archive.
        let mut done_planned = IdSet::default();
        for p in plans {
            let id = ReceiptId::new(&p.receipt_id);
            if done.contains(&id) {
                if settling.settles(&p) {
                    settled.insert(p.receipt_id);
                }
                done_planned.insert(id);
                continue;
            }
            if !planned.insert(id.clone()) {
                continue;
            }
            let h = history.remove(&p.receipt_id).unwrap_or_default();
            let lost_rows = p.received_at_ms <= doubt_before;
            let in_doubt = h.started > h.finished || h.last_doubt || lost_rows;
            if h.started > h.finished {
                in_flight += 1;
            }
            lost_rows_doubt += usize::from(lost_rows);
            let ready = p.due_at_ms.max(h.retry_at.unwrap_or(i64::MIN));
            let mut item = Pending {
                receipt_id: id,
                webhook_id: intern(&mut webhook_ids, &p.webhook_id),
                contact_id: p.contact_id,
                email: p.email.map(String::into_boxed_str),
                callback_id: p.callback_id.map(String::into_boxed_str),
                due_at_ms: p.due_at_ms,
                attempts: h.started.max(h.finished),
                failures: h.failed.len().min(u8::MAX as usize) as u8,
                in_doubt,
                doubted_twice: false,
                doubt_workflow: in_doubt.then(|| h.doubt_workflow()).flatten(),
                enrolled_at_ms: 0,
                paused_until_ms: 0,
                ready_at_ms: ready,
                holdout: p.holdout,
                dry_run_only: false,
                zone: p.time_zone,
                webhook_type: p.webhook_type,
                received_at_ms: p.received_at_ms,
                hold_ends_ms: p.hold_ends_ms,
                portal: inbox::account(p.portal_id),
            };
            item.doubted_twice = h.doubted_twice() && item.checkable_id().is_none();
            queue.push(Queued(item));
        }
        let mut queue = BinaryHeap::from(queue);
        if lost_rows_doubt > 0 {
            tracing::warn!(
                receipts = lost_rows_doubt,
                quarantine = %outcomes_ds.quarantine_dir().display(),
                "outcome parts are in quarantine: receipts received before them without a final outcome are checked at HubSpot before anything is sent (they may have gone already)"
            );
        }
        if in_flight > 0 {
            tracing::warn!(
                calls = in_flight,
                "calls were in flight when sendtime last stopped; their contacts' enrollments are checked before anything is sent again"
            );
        }
        tracing::info!(
            queued = queue.len(),
            finished = done.len(),
            "dispatcher state loaded"
        );
        metrics.queued.set(queue.len() as i64);
        let mut receipts = inbox::recover(data_dir)
            .with_context(|| format!("cannot recover the inbox in {}", data_dir.display()))?;
        let in_inbox: IdSet = receipts
            .iter()
            .map(|r| ReceiptId::new(&r.receipt_id))
            .collect();
        // Plan rows do not say how a receipt was signed; its inbox row does. Nor, written by
        // an older version, its account: its inbox row may (HubSpot's posts name it).
        let dry_run_only: HashSet<ReceiptId> = receipts
            .iter()
            .filter(|r| r.dry_run_only)
            .map(|r| ReceiptId::new(&r.receipt_id))
            .collect();
        let portals: HashMap<ReceiptId, NonZeroU64> = match queue
            .iter()
            .any(|Queued(p)| p.portal.is_none())
        {
            true => (receipts.iter())
                .filter_map(|r| Some((ReceiptId::new(&r.receipt_id), inbox::account(r.portal_id)?)))
                .collect(),
            false => HashMap::new(),
        };
        if !dry_run_only.is_empty() || !portals.is_empty() {
            let mut items = queue.into_vec();
            for Queued(p) in &mut items {
                p.dry_run_only = dry_run_only.contains(&p.receipt_id);
                p.portal = p.portal.or_else(|| portals.get(&p.receipt_id).copied());
            }
            queue = BinaryHeap::from(items);
        }
        // Outcome rows of receipts without a plan row here. In the inbox, their plan part is
        // in quarantine: planned again as new, they are checked at HubSpot before a call goes
        // out, as the calls recorded may have reached it. In neither, a move to the archive
        // was cut short (a crash, a failed write) after their inbox and plan rows went (they
        // go first): they settled then, and left here they would stay, and in memory, for good.
        let mut unplanned_calls = HashMap::new();
        for (id, h) in history {
            let rid = ReceiptId::new(&id);
            if done.contains(&rid) {
                continue;
            }
            if in_inbox.contains(&rid) {
                if h.started > 0 {
                    let calls = h.started.max(h.finished);
                    unplanned_calls.insert(rid, (calls, h.doubt_workflow(), h.doubted_twice()));
                }
            } else if settling.counts_no_call_of(&id) {
                settled.insert(id);
            }
        }
        // They stayed, and were read at each start, for good (an audit).
        settled.extend(settling.settled_unplanned(&receipts, |id| {
            done.contains(id) && !done_planned.contains(id)
        }));
        let mut buf = [0u8; ulid::ULID_LEN];
        settled.extend(
            done.iter()
                .filter(|id| !done_planned.contains(*id) && !in_inbox.contains(*id))
                .map(|id| id.as_str(&mut buf).to_string())
                .filter(|id| settling.counts_no_call_of(id)),
        );
        drop((done_planned, in_inbox));
        if !unplanned_calls.is_empty() {
            tracing::warn!(
                receipts = unplanned_calls.len(),
                quarantine = %plan_ds.quarantine_dir().display(),
                "receipts with calls recorded have no plan row (their plan part is in quarantine): they are planned again and checked at HubSpot before anything is sent"
            );
        }
        if !settled.is_empty() {
            // Housekeeping: a move that fails leaves the rows where they are, for the next day.
            match archive::move_settled(data_dir, &settled) {
                Ok(moved) => {
                    receipts.retain(|r| !settled.contains(&r.receipt_id));
                    archive::forget(&mut done, &settled);
                    tracing::info!(
                        receipts = settled.len(),
                        rows = moved,
                        "finished receipts older than the replay window moved to archive/"
                    );
                }
                Err(e) => tracing::warn!(
                    "cannot archive finished receipts (will try again in a day): {e:#}"
                ),
            }
        }
        let pending = PendingSet::new(metrics.clone());
        for r in &receipts {
            if done.contains(&ReceiptId::new(&r.receipt_id)) {
                pending.remember(r.contact(), &r.receipt_id);
            } else {
                // Repeats (a receipt in two parts) keep the first.
                if pending
                    .insert(r.contact(), &r.receipt_id, r.unsigned)
                    .is_err()
                {
                    continue;
                }
                if let Some(answer) = r.answered() {
                    pending.answered(&r.receipt_id, answer);
                }
                // Not planned yet: its part set aside before the first tick plans it
                // releases it, as one flushed since. (Not one of a type this build cannot
                // read: it waits for a build that can, whatever becomes of its part.)
                if let Some(part) = r.part
                    && r.webhook_type.is_some()
                    && !planned.contains(&ReceiptId::new(&r.receipt_id))
                {
                    pending.flushed(part, [(r.receipt_id.as_str(), r.contact())]);
                }
            }
        }
        tracing::info!(
            receipts = receipts.len(),
            pending = pending.len(),
            "inbox recovered"
        );
        let (log, writer) = OutcomeLog::open(data_dir, metrics.clone())?;
        metrics.finished.set(done.len() as i64);
        Ok(Dispatcher {
            data_dir: data_dir.to_path_buf(),
            inbox_ds: inbox::dataset(data_dir)?,
            plan_ds,
            queue,
            held: HashMap::new(),
            planned,
            unplanned_calls,
            done,
            webhook_ids,
            seen_parts: HashSet::new(),
            profiles: ProfileCache::new(data_dir),
            log,
            writer: Some(writer),
            metrics,
            pending,
            links: HashMap::new(),
            lifted: Vec::new(),
            request_timeout,
            capacity: None,
            spent,
            pauses: Default::default(),
            pauses_on_disk: HashMap::new(),
            pause_write_errors: Default::default(),
            unmatched_pauses: Vec::new(),
            archived_at_ms: clock.replay_now_ms(),
            pruned_at_ms: archive::pruned_at(data_dir),
            clock,
            lookups: Default::default(),
            lock,
            last_tick: None,
            planned_from: None,
            unbooked: super::unbooked::Unbooked::open(data_dir),
        })
    }
}

/// The calls that `attempting` rows of the last two days record: one per enrollment attempt
/// (rows read twice after a crash count once), and per batch: a list's rows of one instant,
/// and a connector's callback rows of one instant in calls of at most 100 (HubSpot's
/// largest batch; the rows name each callback, not the call). Two calls of one instant
/// would count as one, but the limiter spaces a connector's calls by its pace (40 ms at
/// HubSpot's 250 per 10 s, 1 ms at the 10,000 allowed).
fn spent_by(rows: &[OutcomeRow], now: i64) -> Spent {
    let mut spent = Spent::default();
    let mut attempts = HashSet::new();
    // (connector, list or "" for callbacks, instant) → rows
    let mut batches: HashMap<(&str, &str, i64), u64> = HashMap::new();
    for r in rows.iter().filter(|r| counts_toward_budget(r, now)) {
        match r.action {
            Action::Enroll => {
                if attempts.insert((&r.receipt_id, r.attempts)) {
                    spent.record(&r.connector, r.at_ms, 1);
                }
            }
            Action::ListAdd => {
                batches.insert((&r.connector, &r.target, r.at_ms), 1);
            }
            // (A row read twice after a crash counts once here too: an audit.)
            Action::Complete => {
                if attempts.insert((&r.receipt_id, r.attempts)) {
                    *batches.entry((&r.connector, "", r.at_ms)).or_default() += 1;
                }
            }
        }
    }
    for ((connector, list, at_ms), n) in batches {
        // A list's rows of one instant were one call; callbacks go up to 100 to a call.
        let calls = if list.is_empty() {
            n.div_ceil(Connector::MAX_CALLBACK_BATCH_SIZE as u64)
        } else {
            n
        };
        spent.record(connector, at_ms, calls);
    }
    spent.forget_before(now);
    spent
}

/// Whether `r` records a call of the last two days, which the daily budget counts: the
/// connector's day, in whatever zone.
pub(super) fn counts_toward_budget(r: &OutcomeRow, now: i64) -> bool {
    r.status == Status::Attempting && r.at_ms >= now - 2 * crate::time::DAY_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch of 60 callbacks was one call, its rows read twice after a crash included.
    #[test]
    fn callback_rows_read_twice_count_one_call() {
        let now = 1_795_947_420_000;
        let row = |n: usize| OutcomeRow {
            receipt_id: format!("r{n}"),
            webhook_id: "act".into(),
            connector: "main".into(),
            action: Action::Complete,
            target: format!("cb{n}"),
            status: Status::Attempting,
            http_status: None,
            message: None,
            attempts: 1,
            in_doubt: false,
            retry_at_ms: None,
            at_ms: now - 60_000,
            holdout: false,
        };
        let rows: Vec<OutcomeRow> = (0..60).chain(0..60).map(row).collect();
        let spent = spent_by(&rows, now);
        assert_eq!(spent.today("main", chrono_tz::UTC, now), 1);
    }
}
