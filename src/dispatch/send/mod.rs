//! Calling HubSpot for due contacts: one task per enrollment, one per list batch, each owning
//! its retries so a contact that waits (backoff, a slow HubSpot) never holds up the others.
//!
//! Every call is bracketed by durable outcome rows: `attempting` before it goes out, the result
//! after. A call whose answer was lost (timeout, dropped connection, 5xx) is "in doubt": before
//! an enrollment is sent again, the contact's current enrollments are read, so a slow HubSpot
//! does not cause a second email.
//!
//! Here, what every call shares (admission, recording, what a failure makes it do next);
//! [`enroll`], [`list_add`] and [`complete`] each make one kind of call; `rows` builds the
//! rows they record.

use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::connector::{Link, OneContact};
use super::ids::ReceiptId;
use super::target_holds::{Gate, Reading, Refused, named};
use crate::clock::Clock;
use crate::datasets::outcomes::{Action, OutcomeLog, OutcomeRow, Status};
use crate::hubspot::client::Admitted;
use crate::hubspot::limiter::Lane;
use crate::hubspot::policy::{self, Backoff};
use crate::hubspot::targets;
use crate::hubspot::{ApiError, RatePolicy};
use crate::metrics::Metrics;
use crate::time::MINUTE_MS;

mod complete;
mod enroll;
mod list_add;
pub(super) mod rows;

pub(in crate::dispatch) use rows::row;

pub use complete::complete;
pub(in crate::dispatch) use complete::{HeldBy, held_past_hold};
pub use enroll::{MAY_HAVE_GONE, enroll};
pub use list_add::list_add;

/// A planned receipt waiting to be dispatched. Compact on purpose (no `String`s of its own):
/// a million of these wait in memory between ticks.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub receipt_id: ReceiptId,
    /// Shared with every receipt of the same webhook.
    pub webhook_id: Arc<str>,
    pub contact_id: Option<i64>,
    pub email: Option<Box<str>>,
    /// A workflow action's execution: the callback that releases the contact.
    pub callback_id: Option<Box<str>>,
    pub due_at_ms: i64,
    /// Calls made so far.
    pub attempts: u32,
    /// Calls that failed in a way worth retrying (5xx, timeouts; a task that panicked too):
    /// [`Backoff::DISPATCH`]'s tries, then [`policy::spent_wait`]'s until
    /// [`policy::OUTLAST_MS`] after the due time. Rate limits and refused tokens are the
    /// connector's state, not the contact's, and do not count.
    pub failures: u8,
    /// An earlier call may have reached HubSpot without an answer.
    pub in_doubt: bool,
    /// Two calls may have, and no check can settle it (posted without a HubSpot id): failed
    /// without another call (after a restart between them, or when the failed row could not
    /// be written, the send was made again: an audit).
    pub doubted_twice: bool,
    /// The workflow that unanswered call enrolled into, when it was an enrollment: the check
    /// before sending again looks for it too, since `workflow_id` may have changed since.
    pub doubt_workflow: Option<NonZeroU64>,
    /// When HubSpot took its enrollment (clock ms; 0: not yet) while the row saying so could not
    /// be written: only the row is left to write. In memory only: after a restart, the
    /// `attempting` row makes it in doubt.
    pub enrolled_at_ms: i64,
    /// Not dispatched before this (the due time, or a retry's time).
    pub ready_at_ms: i64,
    /// The end of its connector's pause it was queued for (clock ms; 0: none): new settings
    /// that lift the pause send it at once ([`super::Dispatcher::release_paused`]), wherever
    /// the ledgers moved it since.
    pub paused_until_ms: i64,
    /// Held out: sent at receipt to measure lift; its outcome rows say so.
    pub holdout: bool,
    /// Taken unsigned in dry run: recorded as a dry run whatever the connector does now.
    pub dry_run_only: bool,
    /// The contact's zone as posted, which its quiet hours are in; none: the connector's.
    pub zone: Option<chrono_tz::Tz>,
    /// As stored (for an action, the delivery type its execution chose).
    pub webhook_type: crate::config::WebhookType,
    pub received_at_ms: i64,
    /// When HubSpot's hold on an action's contact ends, as asked on receipt (none: a webhook,
    /// or a receipt of an older version).
    pub hold_ends_ms: Option<i64>,
    /// The account it was taken for (none: recorded by an older version).
    pub portal: Option<NonZeroU64>,
}

impl Pending {
    /// The account it was taken for, as [`crate::config::sends`] takes it.
    pub fn account(&self) -> Option<u64> {
        self.portal.map(NonZeroU64::get)
    }

    /// A contact HubSpot holds for us: an action's execution answered BLOCK (taken while the
    /// connector was live), which only its callback releases.
    pub fn held_by_hubspot(&self) -> bool {
        self.callback_id.is_some() && !self.dry_run_only
    }

    /// HubSpot took its enrollment and only the row saying so is left to write.
    pub fn only_row_left(&self) -> bool {
        self.enrolled_at_ms > 0
    }

    /// Its HubSpot id, by which its enrollments can be checked (none: posted without one).
    pub fn checkable_id(&self) -> Option<i64> {
        self.contact_id.filter(|v| *v > 0)
    }
}

/// What follows a task for one receipt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    /// Final: never dispatched again.
    Done(Status),
    /// Back in the queue until this instant (clock ms).
    Again(i64),
    /// Held by an operator's pause or a target HubSpot cannot take calls for now: looked at
    /// again from this instant, and not booked in the connector's capacity meanwhile.
    Held(i64),
}

/// What every task shares.
pub struct Ctx {
    pub log: OutcomeLog,
    pub clock: Clock,
    pub metrics: Metrics,
    pub stop: watch::Receiver<bool>,
    /// Retries that would wait past this are left to a later tick.
    pub horizon: Instant,
    /// Operator pauses, as they are now: one set during the tick holds what has not gone out.
    pub pauses: Arc<crate::pauses::Watch>,
    /// The calls made (connector, instant), for the daily budget.
    pub calls: std::sync::Mutex<Vec<(String, i64)>>,
    /// What is left of each connector's daily budget: every call is held to it.
    pub day_left: crate::capacity::DayLeft,
    /// The window of each workflow action (by id), which HubSpot's hold on its contacts
    /// follows: a callback is worth trying until that hold ends.
    pub holds: std::collections::HashMap<String, Option<i64>>,
}

/// What an enrollment's 404 turned out to be, read from HubSpot (HubSpot's answer does not
/// say whether the address or the workflow was not found).
enum NotFound {
    /// The contact's address changed since its post: enroll by this one.
    Moved(String),
    /// The contact's own (it fails), with what was learned of it.
    Contact(Option<String>),
    /// The contact waits (its workflow cannot be enrolled into, or a read cannot be made
    /// now): why, and what follows.
    Wait(String, Next),
    /// A read failed as every call would (an outage, a rate limit, a refused token): that
    /// failure decides, as a call's own would; and which read it was.
    Unknown(ApiError, String),
}

/// What a refused call's target turned out to be.
enum TargetCheck {
    /// It can take calls: the refusal is the contacts' own.
    Usable,
    /// Its contacts wait (it cannot take calls, another refusal is having it read, or the
    /// read cannot be made now): why, and what follows.
    Wait(String, Next),
    /// The read failed as every call would: that failure decides, as a call's own would.
    Failed(ApiError),
    /// The read failed for itself alone (a scope only it needs): the refusal stands, and this
    /// is said of it.
    Unread(String),
}

/// Whether a read's failure is one every call would meet (then it decides, and the read is
/// made again), not one of that read alone (a scope only it needs).
fn holds_every_call(e: &ApiError) -> bool {
    match e {
        ApiError::Permanent { status, .. } => matches!(status, 401 | 403),
        ApiError::MissingScopes { .. } | ApiError::BatchTooLarge { .. } => false,
        _ => true,
    }
}

/// Whether a read's failure pauses the connector whatever the call (the day's limit, a refused
/// token, no access token, a migration): the call it was read for would meet it too. A 403
/// or an HTML page may be the read's alone.
fn pauses_every_call(e: &ApiError) -> bool {
    matches!(
        e,
        ApiError::RateLimited {
            policy: RatePolicy::Daily,
            ..
        } | ApiError::Permanent { status: 401, .. }
            | ApiError::NoAccessToken { .. }
            | ApiError::Migrating { .. }
    )
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Decision {
    /// Wait this long here, then call again.
    Retry(Duration),
    /// Leave it to a later tick, from this instant (clock ms).
    Later(i64),
    GiveUp,
}

impl Ctx {
    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Durably record rows; false when they could not be written (nothing is sent then).
    /// A final row is counted once written: one that could not be is recorded again later (a
    /// call HubSpot took is not made again), and counted then. A retry is counted, and shown
    /// on `/status` with its error, as it happens: its row is not written again.
    async fn record(&self, rows: Vec<OutcomeRow>) -> bool {
        let mut statuses = Vec::new();
        for s in rows.iter().map(|r| r.status) {
            match s {
                Status::Attempting => {}
                Status::Retrying => {
                    self.metrics.outcome(s.as_str()).inc();
                }
                _ => statuses.push(s),
            }
        }
        use crate::admin::board::Outcomes;
        let board = Outcomes::of(&rows);
        let retrying = |s| s == Status::Retrying;
        let retries =
            (rows.iter().any(|r| retrying(r.status))).then(|| Outcomes::of_status(&rows, retrying));
        // A failure is logged by the writer, once a minute.
        let written = self.log.write(rows).await.is_ok();
        if written {
            for s in statuses {
                self.metrics.outcome(s.as_str()).inc();
            }
            self.metrics.board.publish(board);
        } else if let Some(retries) = retries {
            self.metrics.board.publish(retries);
        }
        written
    }

    /// The limiter's permission for one call through `link` for contacts of `webhooks` (to
    /// `target`, when it is one HubSpot may refuse), waiting in `lane`, and when `budgeted` a
    /// call of its daily budget; when stopping, the connector is paused (by HubSpot, or by an
    /// operator, who may also have paused every one of `webhooks`), the target is held
    /// ([`super::target_holds`]), or the budget is spent: until when the work stays queued.
    /// The first call after a target's hold ends, or when a workflow is due to be read again,
    /// reads it, and goes if it is usable or the read failed (in doubt; a pausing failure
    /// pauses the connector).
    async fn admit<'l>(
        &self,
        link: &'l Link,
        action: Action,
        webhooks: &[&str],
        budgeted: bool,
        target: Option<&str>,
        lane: Lane,
    ) -> Result<Admitted<'l>, Next> {
        let held = || {
            let pauses = self.pauses.current();
            webhooks.iter().all(|w| pauses.holds(w, &link.id))
        };
        // Once this call has read the target, it goes without being made to read it again.
        // Read again as often in real time whatever the clock's speed (at the demo's 720x,
        // each workflow was read at every tick; an audit).
        let every = policy::TARGET_RECHECK_MS.saturating_mul(self.clock.speed());
        let mut recheck = true;
        loop {
            if held() {
                return Err(self.in_a_minute());
            }
            // A target HubSpot refused a call to and found unable to take calls: its contacts
            // wait, unbooked, looked at again each minute (the config may name another). The
            // call that finds its hold ended reads it first, the others waiting meanwhile.
            let gate = target.map_or(Gate::Open, |t| {
                link.targets
                    .gate(action, t, self.now(), recheck.then_some(every))
            });
            if let Gate::Wait(again) = gate {
                return Err(Next::Held(again));
            }
            if let Some(until) = link.scope_held(action, self.now()) {
                return Err(Next::Again(until));
            }
            if budgeted {
                self.day_left.check(&link.id).map_err(Next::Again)?;
            }
            // The read at a hold's end goes ahead of the queue, as a refusal's does: the
            // target's other calls wait for its answer.
            let lane = match gate {
                Gate::Read(_) => Lane::First,
                _ => lane,
            };
            let admitted = link.admit(|| self.now(), &self.stop, self.horizon, lane);
            let target_held = async {
                match (&gate, target) {
                    (Gate::Open, Some(t)) => {
                        link.targets.until_waits(action, t, || self.now()).await
                    }
                    _ => std::future::pending().await,
                }
            };
            // Held while it waits its turn, it leaves the queue rather than take a turn it
            // would not use (looked at first, so a hold that came meanwhile wins).
            let call = tokio::select! {
                biased;
                again = target_held => return Err(Next::Held(again)),
                until = link.until_scope_held(action, || self.now()) => return Err(Next::Again(until)),
                call = admitted => call,
            }
            .map_err(Next::Again)?;
            if held() {
                return Err(self.in_a_minute());
            }
            let gate = match (gate, target) {
                (Gate::Read(reading), _) => Gate::Read(reading),
                (_, Some(t)) => link
                    .targets
                    .gate(action, t, self.now(), recheck.then_some(every)),
                (_, None) => Gate::Open,
            };
            if let Gate::Wait(again) = gate {
                return Err(Next::Held(again));
            }
            // Set by a refusal while this call waited on the limiter.
            if let Some(until) = link.scope_held(action, self.now()) {
                return Err(Next::Again(until));
            }
            // Taken once the call may go: a call waiting on the limiter holds none of it.
            if budgeted {
                self.day_left.take(&link.id).map_err(Next::Again)?;
            } else {
                self.day_left.spend(&link.id);
            }
            let (Gate::Read(reading), Some(target)) = (gate, target) else {
                return Ok(call);
            };
            recheck = false;
            // Usable, not readable now (its refusal would stand) or failed (held, or in doubt:
            // the call goes): the gate says. A failure that pauses the connector whatever the
            // call pauses it now.
            match self.read_target(link, action, target, call, reading).await {
                TargetCheck::Wait(_, next) => return Err(next),
                TargetCheck::Failed(e) if pauses_every_call(&e) => {
                    if let Decision::Later(at) = self.decide(link, action, &e, 0) {
                        return Err(Next::Again(at));
                    }
                }
                _ => {}
            }
        }
    }

    /// A batch's call, ready to go: admitted by the limiter, and its `attempting` rows
    /// durable. Contacts of webhooks an operator paused while the batch waited are taken out
    /// of it, held, into `out`.
    async fn start_batch<'l>(
        &self,
        link: &'l Link,
        action: Action,
        target: Option<&str>,
        batch: &mut Vec<Pending>,
        row_of: impl Fn(&Pending, i64) -> OutcomeRow,
        out: &mut Vec<(Pending, Next)>,
    ) -> Result<Admitted<'l>, Next> {
        let webhooks: Vec<&str> = batch.iter().map(|i| i.webhook_id.as_ref()).collect();
        // A workflow action's callbacks go whatever the budget, as they are planned: HubSpot's
        // hold on their contacts runs out.
        let budgeted = batch.iter().all(|i| i.callback_id.is_none());
        let call = self
            .admit(link, action, &webhooks, budgeted, target, Lane::Queue)
            .await?;
        let pauses = self.pauses.current();
        let (held, go): (Vec<Pending>, Vec<Pending>) = std::mem::take(batch)
            .into_iter()
            .partition(|i| pauses.holds(&i.webhook_id, &link.id));
        *batch = go;
        let later = self.in_a_minute();
        out.extend(held.into_iter().map(|i| (i, later)));
        if batch.is_empty() {
            self.day_left.give_back(&link.id);
            return Err(later);
        }
        if let Err(next) = self.attempting(link, action, batch, row_of).await {
            self.day_left.give_back(&link.id);
            return Err(next);
        }
        Ok(call)
    }

    /// Why HubSpot answered 404 to enrolling `item` by `email` into `workflow`: the contact's
    /// address now is read by its id, when it has one (a contact deleted, or whose address
    /// changed, unless it changed once already in this task); else whether the workflow
    /// exists.
    async fn not_found(
        &self,
        link: &Link,
        item: &Pending,
        email: &str,
        workflow: u64,
        readdressed: bool,
    ) -> NotFound {
        let webhooks = [&*item.webhook_id];
        let target = workflow.to_string();
        let mut learned = None;
        if let Some(vid) = item.checkable_id() {
            // Ahead of the queued calls, which a gone workflow would refuse meanwhile.
            let call = match self
                .admit(
                    link,
                    Action::Enroll,
                    &webhooks,
                    true,
                    Some(&target),
                    Lane::First,
                )
                .await
            {
                Ok(call) => call,
                Err(next) => {
                    // The workflow held meanwhile (by another refusal's read) says so.
                    let why = link
                        .targets
                        .waiting(Action::Enroll, &target, self.now())
                        .map_or_else(
                            || {
                                "the contact's address now is read by its id before it is \
                                 sent again"
                                    .into()
                            },
                            |(why, _)| why,
                        );
                    return NotFound::Wait(why, next);
                }
            };
            self.count_call(link, self.now());
            let read = call.contact_email(vid as u64).await;
            match link.one_contact(OneContact::Record, read, self.now()) {
                Ok(Some(now)) if !now.eq_ignore_ascii_case(email) && !readdressed => {
                    return NotFound::Moved(now);
                }
                Ok(Some(now)) if !now.eq_ignore_ascii_case(email) => {
                    learned = Some("its address changed again while it was sent".into());
                }
                // Not found by an address it has: the workflow is the likelier cause, whatever
                // a read of it found a moment ago (it may have been deleted since).
                Ok(Some(_)) => link.targets.forget_usable(Action::Enroll, &target),
                Ok(None) => learned = Some("the contact has no email address now".into()),
                Err(ApiError::Permanent { status: 404, .. }) => {
                    let gone = format!("the contact (id {vid}) no longer exists in HubSpot");
                    return NotFound::Contact(Some(gone));
                }
                Err(e) if holds_every_call(&e) => {
                    let read = "reading the contact's address now by its id".into();
                    return NotFound::Unknown(e, read);
                }
                Err(e) => {
                    learned = Some(format!("its address now could not be read by its id: {e}"))
                }
            }
        }
        // No contact found by an address it has (or none known by id): the workflow may be gone.
        match self
            .check_target(link, Action::Enroll, &webhooks, &target)
            .await
        {
            TargetCheck::Usable => NotFound::Contact(learned),
            TargetCheck::Wait(why, next) => NotFound::Wait(why, next),
            TargetCheck::Failed(e) => {
                NotFound::Unknown(e, format!("reading whether workflow {workflow} exists"))
            }
            TargetCheck::Unread(why) => {
                NotFound::Contact(Some(learned.map_or(why.clone(), |l| format!("{l}; {why}"))))
            }
        }
    }

    /// After HubSpot refused a call of `action` to `target` (for contacts of `webhooks`) in a
    /// way that may be the target's: whether it can take calls, read from HubSpot (a call of
    /// the budget), one read at a time ([`super::target_holds`]).
    async fn check_target(
        &self,
        link: &Link,
        action: Action,
        webhooks: &[&str],
        target: &str,
    ) -> TargetCheck {
        let readable = match action {
            Action::Enroll => target.parse::<u64>().is_ok(),
            Action::ListAdd => true,
            Action::Complete => false,
        };
        if !readable {
            return TargetCheck::Usable;
        }
        let reading = match link.targets.refused(action, target, self.now()) {
            Refused::Read(reading) => reading,
            Refused::Usable => return TargetCheck::Usable,
            Refused::Wait(why, again) => return TargetCheck::Wait(why, Next::Held(again)),
        };
        // Ahead of the queued calls: they would be refused meanwhile if it cannot take them.
        match self
            .admit(link, action, webhooks, true, None, Lane::First)
            .await
        {
            Ok(call) => self.read_target(link, action, target, call, reading).await,
            Err(next) => {
                let why = format!(
                    "whether {} can take them is read before they are sent again",
                    named(action, target)
                );
                TargetCheck::Wait(why, next)
            }
        }
    }

    /// Read whether `target` can take calls of `action`, by `call`, and record the answer.
    async fn read_target(
        &self,
        link: &Link,
        action: Action,
        target: &str,
        call: Admitted<'_>,
        reading: Reading<'_>,
    ) -> TargetCheck {
        self.count_call(link, self.now());
        let read = match (action, target.parse::<u64>()) {
            (Action::Enroll, Ok(id)) => targets::workflow(call, id).await.map(|r| r.err()),
            _ => targets::list(call, target).await.map(|r| r.err()),
        };
        match read {
            Ok(unusable) => match reading.found(&link.id, self.now(), unusable.as_ref()) {
                None => TargetCheck::Usable,
                Some(why) => TargetCheck::Wait(why, self.in_a_minute()),
            },
            Err(e) if holds_every_call(&e) => {
                reading.failed(self.now());
                TargetCheck::Failed(e)
            }
            Err(e) => {
                reading.unread();
                TargetCheck::Unread(format!(
                    "whether {} can take them could not be read: {e}",
                    named(action, target)
                ))
            }
        }
    }

    /// Held, looked at again in a minute (not booked in the connector's capacity meanwhile).
    fn in_a_minute(&self) -> Next {
        Next::Held(self.now() + MINUTE_MS)
    }

    /// The call about to be made, for the daily budget.
    fn count_call(&self, link: &Link, at_ms: i64) {
        let made = (link.id.clone(), at_ms);
        self.calls.lock().expect("not poisoned").push(made);
    }

    /// Make a batch's `attempting` rows durable before its call, its attempts counted; when
    /// they cannot be, the batch waits a minute, uncounted (without an access token, until
    /// the connector's pause ends).
    async fn attempting(
        &self,
        link: &Link,
        action: Action,
        batch: &mut [Pending],
        row_of: impl Fn(&Pending, i64) -> OutcomeRow,
    ) -> Result<(), Next> {
        // Without an access token no call is made: a row saying one was would count, after
        // a restart, against the contacts' tries and the day's budget. The connector pauses
        // as the call's own failure would pause it (a refused token, or its endpoint failing).
        if let Err(e) = link.client.ensure_token().await {
            return Err(Next::Again(match self.decide(link, action, &e, 0) {
                Decision::Later(t) => t,
                Decision::Retry(d) => self.now() + d.as_millis() as i64,
                Decision::GiveUp => self.now() + MINUTE_MS,
            }));
        }
        let now = self.now();
        batch.iter_mut().for_each(|i| i.attempts += 1);
        if self
            .record(batch.iter().map(|i| row_of(i, now)).collect())
            .await
        {
            self.count_call(link, now);
            return Ok(());
        }
        batch.iter_mut().for_each(|i| i.attempts -= 1);
        Err(Next::Again(now + MINUTE_MS))
    }

    /// [`Self::attempting`] for one enrollment into `target`, or the check of one; when its
    /// row cannot be written, its call of the day's budget is given back.
    async fn attempting_enroll(
        &self,
        link: &Link,
        item: &mut Pending,
        target: &str,
    ) -> Result<(), Next> {
        let row_of =
            |i: &Pending, now| row(i, link, Action::Enroll, target, Status::Attempting, now);
        let made =
            (self.attempting(link, Action::Enroll, std::slice::from_mut(item), row_of)).await;
        if made.is_err() {
            self.day_left.give_back(&link.id);
        }
        made
    }

    /// After a batch's retryable failure is recorded: the batch back, to call again after
    /// waiting here, or `None` with it left to a later tick in `out`.
    async fn wait_or_requeue(
        &self,
        decision: &Decision,
        batch: Vec<Pending>,
        out: &mut Vec<(Pending, Next)>,
    ) -> Option<Vec<Pending>> {
        let next = match decision {
            Decision::Retry(d) if self.sleep(*d).await => return Some(batch),
            Decision::Retry(_) | Decision::GiveUp => Next::Again(self.now()),
            Decision::Later(t) => Next::Again(*t),
        };
        out.extend(batch.into_iter().map(|i| (i, next)));
        None
    }

    /// Sleep `d` unless shutting down first; false when interrupted.
    async fn sleep(&self, d: Duration) -> bool {
        let mut stop = self.stop.clone();
        if *stop.borrow() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = stop.changed() => false,
        }
    }

    /// The last time `item`'s callback is tried again at, after a failure at `now`: its
    /// release-by, or once that has gone by (a batch's last try, a late tick), a minute
    /// before the hold ends, after which the call is refused.
    pub(in crate::dispatch) fn callback_deadline(&self, item: &Pending, now: i64) -> i64 {
        super::planning::callback_deadline(item, self.window_of(item), now)
    }

    /// When `item`'s contact is released by, at the latest ([`super::planning::release_by`]).
    fn release_by(&self, item: &Pending) -> i64 {
        super::planning::release_by(item, self.window_of(item))
    }

    /// When HubSpot's hold on `item`'s contact ends: a refusal of its callback after that
    /// is the hold's end, not the callback's fault.
    fn hold_end(&self, item: &Pending) -> i64 {
        super::planning::hold_end(item, self.window_of(item))
    }

    /// The window of `item`'s action, which HubSpot's hold follows.
    fn window_of(&self, item: &Pending) -> Option<i64> {
        self.holds.get(&*item.webhook_id).copied().flatten()
    }

    /// What to do after `e` failed a call for `batch`: a transient failure is counted on each
    /// of its contacts, and the one that has failed most decides (a list batch's contacts then
    /// give up each on its own count: [`Self::spent`]).
    fn decide_after(
        &self,
        link: &Link,
        action: Action,
        e: &ApiError,
        batch: &mut [Pending],
    ) -> Decision {
        if matches!(e, ApiError::Transient { .. }) {
            batch
                .iter_mut()
                .for_each(|i| i.failures = i.failures.saturating_add(1));
        }
        let failures = batch.iter().map(|i| i.failures).max().unwrap_or(1);
        self.decide(link, action, e, u32::from(failures))
    }

    /// Split `batch`, on which [`Self::decide_after`] made `decision`, by each contact's own
    /// failures: those given up, and the rest with what to do with them (as the one of them
    /// that failed most asks). A contact received during an outage is not failed with the
    /// oldest of its batch, after a try or two of its own.
    fn spent(
        &self,
        link: &Link,
        action: Action,
        e: &ApiError,
        decision: Decision,
        batch: Vec<Pending>,
    ) -> (Vec<Pending>, Option<(Decision, Vec<Pending>)>) {
        if !matches!(decision, Decision::GiveUp) {
            return (Vec::new(), Some((decision, batch)));
        }
        let decide = |failures: u8| self.decide(link, action, e, u32::from(failures));
        let (spent, rest): (Vec<Pending>, Vec<Pending>) = batch
            .into_iter()
            .partition(|i| matches!(decide(i.failures), Decision::GiveUp));
        let most = rest.iter().map(|i| i.failures).max();
        (spent, most.map(|f| (decide(f), rest)))
    }

    /// `decision`, but for an enrollment or list add given up on a failure worth retrying
    /// (an outage outlasting its tries): tried again at growing intervals until
    /// [`policy::OUTLAST_MS`] after it was due, and failed only then. An earlier version failed
    /// every contact due during an outage of more than about 18 minutes.
    fn outlast(&self, decision: Decision, e: &ApiError, item: &Pending) -> Decision {
        match decision {
            Decision::GiveUp => self
                .outlast_at(e, item, policy::spread)
                .map_or(decision, Decision::Later),
            d => d,
        }
    }

    /// When a contact given up on after `e` is tried again ([`Self::outlast`]), if it is, its
    /// wait drawn by `spread`.
    fn outlast_at(&self, e: &ApiError, item: &Pending, spread: fn(i64) -> i64) -> Option<i64> {
        let transient = matches!(e, ApiError::Transient { .. });
        transient
            .then(|| after_tries(item, self.now(), spread))
            .flatten()
    }

    /// What to do after `e` failed a call of `action`; `failures` counts the transient
    /// failures so far, this one included.
    fn decide(&self, link: &Link, action: Action, e: &ApiError, failures: u32) -> Decision {
        let fits = |d: Duration| Instant::now() + d <= self.horizon;
        let wait = |d: Duration| {
            if fits(d) {
                Decision::Retry(d)
            } else {
                Decision::Later(self.now() + d.as_millis() as i64)
            }
        };
        match e {
            // The client holds the connector's limiter for this long already.
            ApiError::RateLimited {
                policy: RatePolicy::TenSecondly,
                retry_after,
                ..
            } => wait(policy::rate_limit_wait(
                *retry_after,
                link.client.last_rate_limit(),
            )),
            ApiError::RateLimited {
                policy: RatePolicy::Daily,
                ..
            } => Decision::Later(link.pause_for_the_day(self.now(), &self.metrics)),
            // The token, not the contact: held by the pause while this process runs.
            ApiError::Permanent {
                status: status @ (401 | 403),
                message,
                ..
            } => {
                link.pause_for_the_token(self.now(), *status, message, &self.metrics);
                Decision::Later(self.now())
            }
            // The token, for this kind of call only.
            ApiError::MissingScopes { .. } => {
                Decision::Later(link.hold_for_scopes(action, self.now(), e))
            }
            ApiError::NotTheApi { .. } => {
                link.pause_for_the_route(self.now(), e, &self.metrics);
                Decision::Later(self.now())
            }
            ApiError::NoAccessToken { .. } => {
                link.pause_for_the_token_endpoint(self.now(), e, &self.metrics);
                Decision::Later(self.now())
            }
            ApiError::Migrating { retry_after, .. } => Decision::Later(link.pause_for_migration(
                self.now(),
                *retry_after,
                e,
                &self.metrics,
            )),
            ApiError::Transient { .. } if Backoff::DISPATCH.exhausted(failures) => Decision::GiveUp,
            ApiError::Transient { .. } => wait(Backoff::DISPATCH.wait(failures)),
            ApiError::Permanent { .. } | ApiError::BatchTooLarge { .. } => Decision::GiveUp,
        }
    }
}

/// When a contact whose tries ran out at `now` is tried again: at [`policy::spent_wait`]'s
/// pace (drawn by `spread`) until [`policy::OUTLAST_MS`] after it was due (the last try
/// then), or not.
pub(super) fn after_tries(item: &Pending, now: i64, spread: fn(i64) -> i64) -> Option<i64> {
    let last = item.due_at_ms.saturating_add(policy::OUTLAST_MS);
    policy::retry_past_tries(item.failures, now, last, spread)
}

#[cfg(test)]
mod tests {
    //! What each of HubSpot's failures makes a call do next, without HubSpot.
    use super::super::tests::link;
    use super::complete::given_up;
    use super::*;
    use crate::hubspot::{Client, ClientOptions};
    use crate::model::plan::RELEASE_MARGIN_MS;

    const NOW: i64 = 1_795_750_200_000; // 2026-11-27 03:30 UTC

    fn ctx(data: &std::path::Path) -> (Ctx, crate::datasets::outcomes::OutcomeWriter) {
        let (log, writer) = OutcomeLog::open(data, Metrics::new()).unwrap();
        let (_tx, stop) = watch::channel(false);
        let ctx = Ctx {
            log,
            clock: Clock::Fixed(NOW),
            metrics: Metrics::new(),
            stop,
            horizon: Instant::now() + Duration::from_secs(30),
            pauses: Arc::new(crate::pauses::Watch::new(data)),
            calls: Default::default(),
            day_left: Default::default(),
            holds: Default::default(),
        };
        (ctx, writer)
    }

    fn limited(policy: RatePolicy, retry_after: Option<Duration>) -> ApiError {
        ApiError::RateLimited {
            policy,
            retry_after,
            message: "limit".into(),
        }
    }

    fn transient() -> ApiError {
        ApiError::Transient {
            status: Some(502),
            may_have_reached: true,
            message: "bad gateway".into(),
        }
    }

    /// HubSpot's refusal, in its error body (with a correlation id).
    fn permanent(status: u16) -> ApiError {
        ApiError::Permanent {
            status,
            message: "no".into(),
            correlation_id: Some("4f6c1c7e-0b1a-4d2e-9c3f-2a1b0c9d8e7f".into()),
        }
    }

    /// A callback in doubt that HubSpot refuses to complete as a done one while it still
    /// holds the contact was completed by the call whose answer was lost. Refused past the
    /// hold, or as too large a batch, that cannot be told: failed, saying so (each was
    /// recorded completed, so lift counted contacts HubSpot had moved on as sent).
    #[test]
    fn a_refused_callback_in_doubt_is_completed_only_as_done_while_held() {
        let link = link();
        let item = Pending {
            in_doubt: true,
            callback_id: Some("cb".into()),
            ..super::super::tests::pending(1)
        };
        let too_large = ApiError::BatchTooLarge {
            size: 1,
            status: 400,
            message: "too large".into(),
        };
        for (e, held, want) in [
            (permanent(400), true, Status::Completed),
            (permanent(400), false, Status::Failed),
            (too_large, true, Status::Failed),
            // A proxy's page: not HubSpot's word on the callback.
            (
                ApiError::Permanent {
                    status: 400,
                    message: "<html>Bad Request</html>".into(),
                    correlation_id: None,
                },
                true,
                Status::Failed,
            ),
        ] {
            let hold_end = if held { NOW + 1 } else { NOW };
            let (row, status) = given_up(&item, &link, "cb", &e, NOW, hold_end);
            assert_eq!((status, row.status), (want, want), "{e}, held {held}");
            let message = row.message.unwrap();
            if want == Status::Failed {
                assert!(message.contains("may have completed it"));
            }
            assert_eq!(message.contains("hold sendtime asked for ended"), !held);
        }
        // Not in doubt, it failed whatever the refusal.
        let sure = Pending {
            in_doubt: false,
            ..item
        };
        let (_, status) = given_up(&sure, &link, "cb", &permanent(400), NOW, NOW + 1);
        assert_eq!(status, Status::Failed);
    }

    /// A stand-in answering every call 503, a link to it, and a context whose retries all go
    /// to a later tick (nothing waits here).
    async fn unavailable(
        data: &std::path::Path,
    ) -> (
        crate::hubspot::standin::StandIn,
        Arc<Ctx>,
        Arc<Link>,
        crate::datasets::outcomes::OutcomeWriter,
    ) {
        use crate::hubspot::standin::{DEFAULT_TOKEN, Fault, Injection, Options, StandIn};
        let standin = StandIn::start(Options::default()).await.unwrap();
        standin.inject(
            Injection::next(Fault::Status {
                status: 503,
                message: "unavailable".into(),
            })
            .times(u64::MAX),
        );
        let (ctx, writer) = ctx(data);
        let ctx = Arc::new(Ctx {
            horizon: Instant::now(),
            ..ctx
        });
        let client = Client::new(&standin.url(), DEFAULT_TOKEN, ClientOptions::default()).unwrap();
        let link = Arc::new(Link::new("main".into(), client, None));
        (standin, ctx, link, writer)
    }

    /// A list batch HubSpot keeps refusing (503): each contact gives up on its own count. One
    /// at its twelfth failure fails; one received during the outage, in the same batch, is
    /// tried again later (it failed with the batch's oldest, after a try of its own).
    #[tokio::test]
    async fn a_list_batch_fails_each_contact_on_its_own_count() {
        let dir = tempfile::tempdir().unwrap();
        let (_standin, ctx, link, _writer) = unavailable(dir.path()).await;
        let oldest = Pending {
            failures: 11,
            ..super::super::tests::pending(1)
        };
        let fresh = super::super::tests::pending(2);
        let out = list_add(ctx, link, "7".into(), vec![oldest, fresh]).await;
        let next: std::collections::HashMap<i64, Next> = out
            .iter()
            .map(|(i, next)| (i.contact_id.unwrap(), *next))
            .collect();
        assert_eq!(next[&1], Next::Done(Status::Failed), "{next:?}");
        assert!(matches!(next[&2], Next::Again(_)), "{next:?}");
    }

    /// A callback whose backoff would end after HubSpot's hold is tried again at the hold's
    /// end at the latest: after it, HubSpot refuses the completion.
    #[tokio::test]
    async fn a_callback_is_tried_again_before_its_hold_ends() {
        let dir = tempfile::tempdir().unwrap();
        let (_standin, ctx, link, _writer) = unavailable(dir.path()).await;
        // Its tenth failure waits 2.5 to 5 minutes (jittered); it must be released in two.
        let item = Pending {
            callback_id: Some("cb".into()),
            failures: 9,
            hold_ends_ms: Some(NOW + 2 * MINUTE_MS + RELEASE_MARGIN_MS),
            ..super::super::tests::pending(1)
        };
        let release_by = NOW + 2 * MINUTE_MS;
        // Below the shortest wait, so the cap decides.
        assert!(release_by < NOW + 150_000);
        // One whose hold is over already fails now: no later try is within it (an earlier
        // version brought it back at a past time, and called it again at every tick).
        let over = Pending {
            callback_id: Some("cb2".into()),
            hold_ends_ms: Some(NOW - 10 * MINUTE_MS),
            ..item.clone()
        };
        // One past its release-by (a late tick) is tried until a minute before the hold ends:
        // uncapped, its retry came after it.
        let late = Pending {
            callback_id: Some("cb3".into()),
            hold_ends_ms: Some(NOW + 3 * MINUTE_MS),
            ..item.clone()
        };
        let out = complete(ctx, link, vec![item, over, late]).await;
        let next = |cb: &str| {
            let (_, next) = (out.iter())
                .find(|(i, _)| i.callback_id.as_deref() == Some(cb))
                .unwrap();
            *next
        };
        assert_eq!(next("cb"), Next::Again(release_by));
        assert_eq!(next("cb2"), Next::Done(Status::Failed));
        assert_eq!(next("cb3"), Next::Again(NOW + 2 * MINUTE_MS));
    }

    /// Callbacks a pause stops before their call (met while they waited their turn) come back
    /// by their last try at the latest, where a pause outlasting it fails them, not at the
    /// pause's end: past the hold, it was refused there, its failed row up to a day late (a
    /// review).
    #[tokio::test]
    async fn a_callback_a_pause_stops_comes_back_by_its_last_try() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _writer) = ctx(dir.path());
        let link = link();
        let next_hour = link.pause_for_the_day(NOW, &ctx.metrics);
        let callback = |id: &str, hold_end| Pending {
            callback_id: Some(id.into()),
            hold_ends_ms: Some(hold_end),
            ..super::super::tests::pending(1)
        };
        // Released by in five minutes; one past it, by a minute before its hold ends; one
        // whose hold outlasts the pause, at the pause's end.
        let items = vec![
            callback("soon", NOW + 5 * MINUTE_MS + RELEASE_MARGIN_MS),
            callback("late", NOW + 5 * MINUTE_MS),
            callback("long", next_hour + 2 * RELEASE_MARGIN_MS),
        ];
        let out = complete(Arc::new(ctx), link, items).await;
        let next: Vec<(String, Next)> = (out.into_iter())
            .map(|(i, next)| (i.callback_id.unwrap().to_string(), next))
            .collect();
        assert_eq!(
            next,
            [
                ("soon".into(), Next::Again(NOW + 5 * MINUTE_MS)),
                ("late".into(), Next::Again(NOW + 4 * MINUTE_MS)),
                ("long".into(), Next::Again(next_hour)),
            ]
        );
    }

    /// So do callbacks a missing scope's hold stops: back by their release-by, or, past it
    /// and held beyond their last try, failed then, without a call and saying why (they waited
    /// the hold out and were refused after HubSpot's hold; each ledger rebuild meanwhile
    /// brought them back). One whose last try the hold ends before waits it out.
    #[tokio::test]
    async fn a_callback_a_missing_scope_holds_past_its_last_try_fails_then() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _writer) = ctx(dir.path());
        let link = link();
        let refused = ApiError::MissingScopes {
            scopes: vec!["automation".into()],
            message: "missing".into(),
        };
        let until = link.hold_for_scopes(Action::Complete, NOW, &refused);
        let callback = |id: &str, hold_end| Pending {
            callback_id: Some(id.into()),
            hold_ends_ms: Some(hold_end),
            ..super::super::tests::pending(1)
        };
        let items = vec![
            callback("soon", NOW + 3 * MINUTE_MS + RELEASE_MARGIN_MS),
            callback("late", NOW + 3 * MINUTE_MS),
            callback("long", NOW + crate::time::HOUR_MS),
        ];
        let out = complete(Arc::new(ctx), link, items).await;
        let next: std::collections::BTreeMap<String, Next> = (out.into_iter())
            .map(|(i, next)| (i.callback_id.unwrap().to_string(), next))
            .collect();
        let want = [
            ("late", Next::Done(Status::Failed)),
            ("long", Next::Again(until)),
            ("soon", Next::Again(NOW + 3 * MINUTE_MS)),
        ];
        assert_eq!(next, want.map(|(id, n)| (id.to_string(), n)).into());
        let rows = crate::datasets::outcomes::read_kept(dir.path()).unwrap();
        let failed: Vec<(&str, &str)> = (rows.iter())
            .filter(|r| r.status == Status::Failed)
            .map(|r| (r.target.as_str(), r.message.as_deref().unwrap_or_default()))
            .collect();
        assert!(
            matches!(failed[..], [("late", why)] if why.starts_with("callbacks wait for a scope")),
            "{failed:?}"
        );
    }

    /// A list batch HubSpot refuses with a 400 not worded as "too large", the list usable, is
    /// split and sent on (HubSpot ignores records it does not have: such a refusal is of the
    /// batch's size): it failed every contact of the batch for good. One of SPLIT_FLOOR
    /// contacts or fewer fails together, as before.
    #[tokio::test]
    async fn a_large_list_batch_refused_however_worded_is_split_not_failed() {
        use crate::hubspot::standin::{DEFAULT_TOKEN, Fault, Injection, Options, StandIn};
        let dir = tempfile::tempdir().unwrap();
        let standin = StandIn::start(Options::default()).await.unwrap();
        let (ctx, _writer) = ctx(dir.path());
        let ctx = Arc::new(ctx);
        let client = Client::new(&standin.url(), DEFAULT_TOKEN, ClientOptions::default()).unwrap();
        let link = Arc::new(Link::new("main".into(), client, None));
        let refused = |status| {
            let invalid = Fault::Status {
                status,
                message: "Invalid input".into(),
            };
            Injection::next(invalid).on("/crm/lists/2026-03/77/memberships/add")
        };
        let batch = |ns: std::ops::RangeInclusive<u64>| -> Vec<Pending> {
            ns.map(super::super::tests::pending).collect()
        };
        standin.inject(refused(422));
        let out = list_add(ctx.clone(), link.clone(), "77".into(), batch(1..=150)).await;
        assert!(
            out.iter().all(|(_, n)| *n == Next::Done(Status::Listed)),
            "{out:?}"
        );
        assert_eq!(standin.list_members("77").len(), 150);
        // Not taken for a size limit: later batches keep their size.
        assert_eq!(
            link.learned_batch
                .load(std::sync::atomic::Ordering::Relaxed),
            usize::MAX
        );
        standin.inject(refused(400));
        let out = list_add(ctx, link, "77".into(), batch(201..=250)).await;
        assert!(
            out.iter().all(|(_, n)| *n == Next::Done(Status::Failed)),
            "{out:?}"
        );
    }

    /// A batch refused for another callback's fault is split: one past its release-by that
    /// HubSpot still holds is completed alone. An earlier version failed it with the batch,
    /// as one whose hold had ended.
    #[tokio::test]
    async fn a_callback_past_its_release_by_still_held_is_split_out_not_failed() {
        use crate::hubspot::standin::{DEFAULT_TOKEN, Options, StandIn};
        let dir = tempfile::tempdir().unwrap();
        let standin = StandIn::start(Options::default()).await.unwrap();
        standin.add_callback("late");
        let (ctx, _writer) = ctx(dir.path());
        let client = Client::new(&standin.url(), DEFAULT_TOKEN, ClientOptions::default()).unwrap();
        let link = Arc::new(Link::new("main".into(), client, None));
        // Five minutes of HubSpot's hold left; the other callback HubSpot does not know.
        let late = Pending {
            callback_id: Some("late".into()),
            hold_ends_ms: Some(NOW + 5 * MINUTE_MS),
            ..super::super::tests::pending(1)
        };
        let unknown = Pending {
            callback_id: Some("unknown".into()),
            hold_ends_ms: Some(NOW + crate::time::DAY_MS),
            ..super::super::tests::pending(2)
        };
        let out = complete(Arc::new(ctx), link, vec![late, unknown]).await;
        let next: std::collections::HashMap<i64, Next> = (out.iter())
            .map(|(i, n)| (i.contact_id.unwrap(), *n))
            .collect();
        assert_eq!(next[&1], Next::Done(Status::Completed), "{next:?}");
        assert_eq!(next[&2], Next::Done(Status::Failed), "{next:?}");
        assert!(standin.completion("late").is_some());
    }

    /// A callback HubSpot completes after the hold sendtime asked for has ended (a dispatcher
    /// down past it: HubSpot documents no answer then, and may take it) is completed, its row
    /// saying HubSpot may have moved the contact on first; one still held says nothing more.
    #[tokio::test]
    async fn a_callback_completed_past_its_hold_says_so() {
        use crate::hubspot::standin::{DEFAULT_TOKEN, Options, StandIn};
        let dir = tempfile::tempdir().unwrap();
        let standin = StandIn::start(Options::default()).await.unwrap();
        standin.add_callback("over");
        standin.add_callback("held");
        let (ctx, _writer) = ctx(dir.path());
        let client = Client::new(&standin.url(), DEFAULT_TOKEN, ClientOptions::default()).unwrap();
        let link = Arc::new(Link::new("main".into(), client, None));
        let over = Pending {
            callback_id: Some("over".into()),
            hold_ends_ms: Some(NOW - MINUTE_MS),
            ..super::super::tests::pending(1)
        };
        let held = Pending {
            callback_id: Some("held".into()),
            hold_ends_ms: Some(NOW + MINUTE_MS),
            ..super::super::tests::pending(2)
        };
        let out = complete(Arc::new(ctx), link, vec![over, held]).await;
        assert!(
            out.iter().all(|(_, n)| *n == Next::Done(Status::Completed)),
            "{out:?}"
        );
        let rows = crate::datasets::outcomes::read_kept(dir.path()).unwrap();
        let message = |callback: &str| {
            let r = (rows.iter())
                .find(|r| r.target == callback && r.status == Status::Completed)
                .unwrap();
            r.message.clone()
        };
        let over = message("over").unwrap();
        assert!(
            over.contains("hold sendtime asked for ended (2026-11-27T03:29:00Z)"),
            "{over}"
        );
        assert_eq!(message("held"), None);
    }

    #[tokio::test]
    async fn a_ten_secondly_429_waits_here_when_short_and_leaves_it_to_a_later_tick_when_long() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _writer) = ctx(dir.path());
        let link = link();
        let s = Duration::from_secs;
        let short = limited(RatePolicy::TenSecondly, Some(s(3)));
        assert_eq!(
            ctx.decide(&link, Action::Enroll, &short, 0),
            Decision::Retry(s(3))
        );
        let long = limited(RatePolicy::TenSecondly, Some(s(120)));
        assert_eq!(
            ctx.decide(&link, Action::Enroll, &long, 0),
            Decision::Later(NOW + 120_000)
        );
        let silent = limited(RatePolicy::TenSecondly, None);
        assert_eq!(
            ctx.decide(&link, Action::Enroll, &silent, 0),
            Decision::Retry(s(10))
        );
        assert_eq!(link.paused_at(NOW), None, "the connector is not paused");
    }

    #[tokio::test]
    async fn a_daily_429_pauses_the_connector_until_the_next_hour() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _writer) = ctx(dir.path());
        let link = link();
        // A minute past it, for clocks apart.
        let next_hour = 1_795_752_000_000 + crate::time::MINUTE_MS;
        let daily = limited(RatePolicy::Daily, None);
        assert_eq!(
            ctx.decide(&link, Action::Enroll, &daily, 0),
            Decision::Later(next_hour)
        );
        assert_eq!(link.paused_at(NOW), Some(next_hour));
        assert_eq!(link.paused_at(next_hour), None, "over at the hour");
        assert!(
            ctx.metrics
                .render()
                .contains("sendtime_connector_paused{connector=\"main\"} 1")
        );
    }

    #[tokio::test]
    async fn a_refused_token_holds_the_connector_and_never_fails_the_contact() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _writer) = ctx(dir.path());
        for status in [401, 403] {
            let link = link();
            assert_eq!(
                ctx.decide(&link, Action::Enroll, &permanent(status), 12),
                Decision::Later(NOW)
            );
            let until = NOW + policy::REFUSED_TOKEN_PAUSE_MS;
            assert_eq!(link.paused_at(NOW), Some(until));
            // A second refusal does not push the pause further.
            let later = Ctx {
                clock: Clock::Fixed(NOW + 1000),
                ..ctx.clone_for_test()
            };
            later.decide(&link, Action::Enroll, &permanent(status), 0);
            assert_eq!(link.paused_at(NOW), Some(until));
        }
    }

    #[tokio::test]
    async fn transient_failures_back_off_until_the_twelfth_and_refusals_give_up_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _writer) = ctx(dir.path());
        let link = link();
        match ctx.decide(&link, Action::Enroll, &transient(), 1) {
            Decision::Retry(d) => {
                assert!(d >= Duration::from_millis(500) && d < Duration::from_millis(1500))
            }
            other => panic!("{other:?}"),
        }
        // The ninth waits minutes: past this tick's horizon.
        match ctx.decide(&link, Action::Enroll, &transient(), 9) {
            Decision::Later(t) => assert!(t >= NOW + 128_000, "{t}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            ctx.decide(&link, Action::Enroll, &transient(), 12),
            Decision::GiveUp
        );
        assert_eq!(
            ctx.decide(&link, Action::Enroll, &permanent(400), 0),
            Decision::GiveUp
        );
        let too_large = ApiError::BatchTooLarge {
            size: 2,
            status: 400,
            message: "too large".into(),
        };
        assert_eq!(
            ctx.decide(&link, Action::Enroll, &too_large, 0),
            Decision::GiveUp
        );
        assert_eq!(link.paused_at(NOW), None);
    }

    impl Ctx {
        fn clone_for_test(&self) -> Ctx {
            Ctx {
                log: self.log.clone(),
                clock: self.clock.clone(),
                metrics: self.metrics.clone(),
                stop: self.stop.clone(),
                horizon: self.horizon,
                pauses: self.pauses.clone(),
                calls: Default::default(),
                day_left: Default::default(),
                holds: self.holds.clone(),
            }
        }
    }
}
