//! Calling HubSpot for due contacts: one task per enrollment, one per list batch, each owning
//! its retries so a contact that waits (backoff, a slow HubSpot) never holds up the others.
//!
//! Every call is bracketed by durable outcome rows: `attempting` before it goes out, the result
//! after. A call whose answer was lost (timeout, dropped connection, 5xx) is "in doubt": before
//! an enrollment is sent again, the contact's current enrollments are read, so a slow HubSpot
//! does not cause a second email.

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::ids::ReceiptId;
use crate::clock::Clock;
use crate::datasets::outcomes::{Action, OutcomeLog, OutcomeRow, Status};
use crate::hubspot::{ApiError, Client, RatePolicy};
use crate::metrics::Metrics;
use crate::time::{HOUR_MS, MINUTE_MS};

/// Transient failures (5xx, timeouts) of one receipt's calls after which the next is final;
/// rate limits and refused tokens do not count.
pub const MAX_ATTEMPTS: u32 = 12;
/// Backoff cap between transient retries.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How long a connector whose token HubSpot refused waits before trying once more.
pub const AUTH_PAUSE_MS: i64 = 5 * MINUTE_MS;

/// A planned receipt waiting to be dispatched. Compact on purpose (no `String`s of its own):
/// a million of these wait in memory between ticks.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub receipt_id: ReceiptId,
    /// Shared with every receipt of the same webhook.
    pub webhook_id: Arc<str>,
    pub contact_id: Option<i64>,
    pub email: Option<Box<str>>,
    pub due_at_ms: i64,
    /// Calls made so far.
    pub attempts: u32,
    /// Calls that failed in a way worth retrying (5xx, timeouts): what [`MAX_ATTEMPTS`]
    /// limits. Rate limits and refused tokens are the connector's state, not the contact's,
    /// and do not count.
    pub failures: u8,
    /// An earlier call may have reached HubSpot without an answer.
    pub in_doubt: bool,
    /// The workflow that unanswered call enrolled into, when it was an enrollment: the check
    /// before sending again looks for it too, since `workflow_id` may have changed since.
    pub doubt_workflow: Option<NonZeroU64>,
    /// Not dispatched before this (the due time, or a retry's time).
    pub ready_at_ms: i64,
}

/// What follows a task for one receipt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    /// Final: never dispatched again.
    Done(Status),
    /// Back in the queue until this instant (clock ms).
    Again(i64),
}

/// One connector's client and what the dispatcher learned about it across ticks.
pub struct Link {
    pub id: String,
    pub client: Client,
    /// Set by a DAILY 429 or a refused token: nothing is sent through this connector before
    /// this (clock ms).
    pub paused_until: Mutex<Option<i64>>,
    /// The pause is for a refused token, not the daily limit: it is not kept for the next
    /// process or new settings, since a fixed token should work at once.
    pub auth_pause: AtomicBool,
    /// Largest list batch HubSpot accepted after refusing a larger one.
    pub learned_batch: AtomicUsize,
}

impl Link {
    pub fn new(id: String, client: Client) -> Link {
        Link {
            id,
            client,
            paused_until: Mutex::new(None),
            auth_pause: AtomicBool::new(false),
            learned_batch: AtomicUsize::new(usize::MAX),
        }
    }

    pub fn paused_until(&self) -> Option<i64> {
        *self.paused_until.lock().unwrap()
    }

    /// A daily-limit pause, the kind that outlasts the process.
    pub fn daily_pause(&self) -> Option<i64> {
        self.paused_until()
            .filter(|_| !self.auth_pause.load(Ordering::Relaxed))
    }
}

/// What every task shares.
pub struct Ctx {
    pub log: OutcomeLog,
    pub clock: Clock,
    pub metrics: Metrics,
    pub stop: watch::Receiver<bool>,
    /// Retries that would wait past this are left to a later tick.
    pub horizon: Instant,
}

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
    async fn record(&self, rows: Vec<OutcomeRow>) -> bool {
        for r in &rows {
            if r.status != Status::Attempting {
                self.metrics.outcome(r.status.as_str()).inc();
            }
        }
        match self.log.write(rows).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!("{e:#}");
                false
            }
        }
    }

    /// Why not to call now: stopping, or the connector is paused for the day.
    fn halt(&self, link: &Link) -> Option<Next> {
        if *self.stop.borrow() {
            return Some(Next::Again(self.now()));
        }
        link.paused_until()
            .filter(|t| *t > self.now())
            .map(Next::Again)
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

    /// What to do after `e`; `failures` counts the transient failures so far, this one
    /// included.
    fn decide(&self, link: &Link, e: &ApiError, failures: u32) -> Decision {
        let fits = |d: Duration| Instant::now() + d <= self.horizon;
        match e {
            ApiError::RateLimited {
                policy: RatePolicy::TenSecondly,
                retry_after,
                ..
            } => {
                let wait = retry_after.unwrap_or(crate::hubspot::client::TEN_SECONDS);
                link.client.limiter().pause_for(wait);
                if fits(wait) {
                    Decision::Retry(wait)
                } else {
                    Decision::Later(self.now() + wait.as_millis() as i64)
                }
            }
            ApiError::RateLimited {
                policy: RatePolicy::Daily,
                ..
            } => {
                // HubSpot resets the daily limit at midnight in the account's time zone, which
                // we do not know; time-zone midnights fall on whole hours, so try again then.
                let now = self.now();
                let until = (now.div_euclid(HOUR_MS) + 1) * HOUR_MS;
                let mut paused = link.paused_until.lock().unwrap();
                if paused.is_none_or(|t| t < until) {
                    if paused.is_none() {
                        tracing::warn!(
                            connector = %link.id,
                            until = %crate::time::format_minute(until),
                            "HubSpot daily API limit reached: connector paused until the next hour, when it tries again; contacts stay queued"
                        );
                        self.metrics.connector_paused(&link.id).set(1);
                    }
                    *paused = Some(until);
                    link.auth_pause.store(false, Ordering::Relaxed);
                }
                Decision::Later(until)
            }
            // The token, not the contact: every call through this connector would fail the
            // same way, so hold them all rather than fail the whole queue.
            ApiError::Permanent {
                status: status @ (401 | 403),
                message,
                ..
            } => {
                let until = self.now() + AUTH_PAUSE_MS;
                let mut paused = link.paused_until.lock().unwrap();
                if paused.is_none() {
                    tracing::error!(
                        connector = %link.id,
                        until = %crate::time::format_minute(until),
                        "HubSpot refused the connector's access token ({status}: {message}): connector paused and contacts stay queued; set a valid private app token in the connector's access_token_env and restart (it tries once more at the time shown)"
                    );
                    self.metrics.connector_paused(&link.id).set(1);
                    link.auth_pause.store(true, Ordering::Relaxed);
                    *paused = Some(until);
                }
                // Held by the pause while this process runs; not after it, like the pause.
                Decision::Later(self.now())
            }
            ApiError::Transient { .. } => {
                if failures >= MAX_ATTEMPTS {
                    return Decision::GiveUp;
                }
                let d = backoff(failures);
                if fits(d) {
                    Decision::Retry(d)
                } else {
                    Decision::Later(self.now() + d.as_millis() as i64)
                }
            }
            ApiError::Permanent { .. } | ApiError::BatchTooLarge { .. } => Decision::GiveUp,
        }
    }
}

/// Exponential backoff with jitter: about 1 s, 2 s, 4 s ... capped at [`MAX_BACKOFF`], each
/// drawn from half to one and a half times that, so retries from many contacts spread out.
pub fn backoff(attempts: u32) -> Duration {
    let base = Duration::from_secs(1u64 << attempts.saturating_sub(1).min(16)).min(MAX_BACKOFF);
    base.mul_f64(0.5 + fastrand::f64())
}

fn row(
    item: &Pending,
    link: &Link,
    action: Action,
    target: &str,
    status: Status,
    at_ms: i64,
) -> OutcomeRow {
    OutcomeRow {
        receipt_id: item.receipt_id.to_string(),
        webhook_id: item.webhook_id.to_string(),
        connector: link.id.clone(),
        action,
        target: target.to_string(),
        status,
        http_status: None,
        message: None,
        attempts: item.attempts,
        in_doubt: false,
        retry_at_ms: None,
        at_ms,
    }
}

/// The row that records a failed call and what happens next.
fn failure_row(
    base: OutcomeRow,
    e: &ApiError,
    decision: &Decision,
    now: i64,
    in_doubt: bool,
) -> OutcomeRow {
    let (status, retry_at_ms) = match decision {
        Decision::Retry(d) => (Status::Retrying, Some(now + d.as_millis() as i64)),
        Decision::Later(t) => (Status::Retrying, Some(*t)),
        Decision::GiveUp => (Status::Failed, None),
    };
    let mut message = e.to_string();
    if matches!(decision, Decision::GiveUp) && e.is_retryable() {
        message = format!("gave up after {} attempts: {message}", base.attempts);
    }
    OutcomeRow {
        status,
        http_status: e.status(),
        message: Some(message),
        in_doubt,
        retry_at_ms,
        ..base
    }
}

/// Done with `row`'s status once the row is durable; until then the contact stays queued
/// (a minute later), so a disk that is full now cannot turn a call into one never recorded.
async fn done_if_recorded(ctx: &Ctx, row: OutcomeRow, item: Pending) -> (Pending, Next) {
    let status = row.status;
    (item, final_if_recorded(ctx, vec![row], status).await)
}

/// [`done_if_recorded`] for rows that share one final status.
async fn final_if_recorded(ctx: &Ctx, rows: Vec<OutcomeRow>, status: Status) -> Next {
    if ctx.record(rows).await {
        Next::Done(status)
    } else {
        Next::Again(ctx.now() + MINUTE_MS)
    }
}

fn may_have_reached(e: &ApiError) -> bool {
    matches!(
        e,
        ApiError::Transient {
            may_have_reached: true,
            ..
        }
    )
}

/// Enroll one contact into `workflow`, retrying what is worth retrying.
pub async fn enroll(
    ctx: Arc<Ctx>,
    link: Arc<Link>,
    workflow: u64,
    mut item: Pending,
) -> (Pending, Next) {
    let target = workflow.to_string();
    let Some(email) = item
        .email
        .as_deref()
        .filter(|e| !e.is_empty())
        .map(str::to_string)
    else {
        let mut r = row(
            &item,
            &link,
            Action::Enroll,
            &target,
            Status::Failed,
            ctx.now(),
        );
        r.message = Some(
            "the contact was posted without an email address, and HubSpot enrolls by email; \
             include the email property in the workflow's webhook body"
                .into(),
        );
        tracing::warn!(receipt = %item.receipt_id, webhook = %item.webhook_id, "enroll failed: the contact has no email address");
        return done_if_recorded(&ctx, r, item).await;
    };
    loop {
        if let Some(next) = ctx.halt(&link) {
            return (item, next);
        }
        link.client.ready().await;
        if let Some(next) = ctx.halt(&link) {
            return (item, next);
        }
        if item.in_doubt
            && let Some(vid) = item.contact_id.filter(|v| *v > 0)
        {
            let earlier = item.doubt_workflow.map(NonZeroU64::get);
            match link.client.enrollments(vid as u64).await {
                Ok(ref workflows)
                    if let Some(w) = workflows
                        .iter()
                        .find(|w| w.id == workflow || Some(w.id) == earlier) =>
                {
                    let mut r = row(
                        &item,
                        &link,
                        Action::Enroll,
                        &w.id.to_string(),
                        Status::Enrolled,
                        ctx.now(),
                    );
                    r.message = Some(if w.id == workflow {
                        "already enrolled: an earlier call whose answer was lost reached HubSpot \
                         (found in the contact's current enrollments; not sent again)"
                            .into()
                    } else {
                        format!(
                            "already enrolled into workflow {}, the workflow_id when an earlier \
                             call whose answer was lost was made; not sent again to {workflow}",
                            w.id
                        )
                    });
                    return done_if_recorded(&ctx, r, item).await;
                }
                Ok(_) => {
                    item.in_doubt = false;
                    continue;
                }
                Err(e) => {
                    tracing::debug!(receipt = %item.receipt_id, "enrollments check failed: {e}");
                    match ctx.decide(&link, &e, u32::from(item.failures.max(1))) {
                        Decision::Retry(d) if ctx.sleep(d).await => continue,
                        Decision::Retry(_) => return (item, Next::Again(ctx.now())),
                        Decision::Later(t) => return (item, Next::Again(t)),
                        // HubSpot will not answer the check (e.g. no such record id): what is
                        // left is the at-least-once contract, so send.
                        Decision::GiveUp => {
                            tracing::warn!(receipt = %item.receipt_id, "cannot check whether an earlier call reached HubSpot ({e}); sending again (at-least-once)");
                            item.in_doubt = false;
                            continue;
                        }
                    }
                }
            }
        }
        item.attempts += 1;
        let attempting = row(
            &item,
            &link,
            Action::Enroll,
            &target,
            Status::Attempting,
            ctx.now(),
        );
        if !ctx.record(vec![attempting]).await {
            item.attempts -= 1;
            return (item, Next::Again(ctx.now() + MINUTE_MS));
        }
        match link.client.enroll(workflow, &email).await {
            Ok(()) => {
                let mut r = row(
                    &item,
                    &link,
                    Action::Enroll,
                    &target,
                    Status::Enrolled,
                    ctx.now(),
                );
                r.http_status = Some(204);
                // Until the row is durable the call stays in doubt, as after a crash.
                item.in_doubt = true;
                item.doubt_workflow = NonZeroU64::new(workflow);
                return done_if_recorded(&ctx, r, item).await;
            }
            Err(e) => {
                if matches!(e, ApiError::Transient { .. }) {
                    item.failures = item.failures.saturating_add(1);
                }
                let decision = ctx.decide(&link, &e, u32::from(item.failures));
                item.in_doubt = may_have_reached(&e);
                if item.in_doubt {
                    item.doubt_workflow = NonZeroU64::new(workflow);
                }
                let base = row(
                    &item,
                    &link,
                    Action::Enroll,
                    &target,
                    Status::Retrying,
                    ctx.now(),
                );
                let r = failure_row(base, &e, &decision, ctx.now(), item.in_doubt);
                if matches!(decision, Decision::GiveUp) {
                    tracing::warn!(receipt = %item.receipt_id, webhook = %item.webhook_id, "enrollment failed: {e}");
                    return done_if_recorded(&ctx, r, item).await;
                }
                ctx.record(vec![r]).await;
                match decision {
                    Decision::Retry(d) if ctx.sleep(d).await => continue,
                    Decision::Retry(_) | Decision::GiveUp => return (item, Next::Again(ctx.now())),
                    Decision::Later(t) => return (item, Next::Again(t)),
                }
            }
        }
    }
}

/// Add a batch of contacts to a list; a batch HubSpot finds too large is split and sent on.
pub async fn list_add(
    ctx: Arc<Ctx>,
    link: Arc<Link>,
    list_id: String,
    items: Vec<Pending>,
) -> Vec<(Pending, Next)> {
    let mut out = Vec::with_capacity(items.len());
    let (with_id, without): (Vec<Pending>, Vec<Pending>) =
        items.into_iter().partition(|i| i.contact_id.is_some());
    if !without.is_empty() {
        let now = ctx.now();
        let rows = without
            .iter()
            .map(|i| {
                let mut r = row(i, &link, Action::ListAdd, &list_id, Status::Failed, now);
                r.message = Some(
                    "the contact was posted without a HubSpot record id, which list membership \
                     needs; include the contact id in the workflow's webhook body"
                        .into(),
                );
                r
            })
            .collect();
        tracing::warn!(list = %list_id, contacts = without.len(), "list add failed: contacts without a record id");
        let next = final_if_recorded(&ctx, rows, Status::Failed).await;
        out.extend(without.into_iter().map(|i| (i, next)));
    }
    let mut work = vec![with_id];
    'chunks: while let Some(mut chunk) = work.pop() {
        if chunk.is_empty() {
            continue;
        }
        loop {
            if let Some(next) = ctx.halt(&link) {
                out.extend(chunk.into_iter().map(|i| (i, next)));
                continue 'chunks;
            }
            link.client.ready().await;
            if let Some(next) = ctx.halt(&link) {
                out.extend(chunk.into_iter().map(|i| (i, next)));
                continue 'chunks;
            }
            let now = ctx.now();
            for i in &mut chunk {
                i.attempts += 1;
            }
            let attempting = chunk
                .iter()
                .map(|i| row(i, &link, Action::ListAdd, &list_id, Status::Attempting, now))
                .collect();
            if !ctx.record(attempting).await {
                out.extend(chunk.into_iter().map(|mut i| {
                    i.attempts -= 1;
                    (i, Next::Again(now + MINUTE_MS))
                }));
                continue 'chunks;
            }
            let ids: Vec<String> = chunk
                .iter()
                .map(|i| i.contact_id.unwrap_or_default().to_string())
                .collect();
            match link.client.add_to_list(&list_id, &ids).await {
                Ok(result) => {
                    let missing: std::collections::HashSet<&String> =
                        result.record_ids_missing.iter().collect();
                    let now = ctx.now();
                    let mut rows = Vec::with_capacity(chunk.len());
                    let mut nexts = Vec::with_capacity(chunk.len());
                    for (i, id) in chunk.iter().zip(&ids) {
                        let status = if missing.contains(id) {
                            Status::Failed
                        } else {
                            Status::Listed
                        };
                        let mut r = row(i, &link, Action::ListAdd, &list_id, status, now);
                        r.http_status = Some(200);
                        if status == Status::Failed {
                            r.message = Some(format!(
                                "HubSpot reports record id {id} missing: no such contact in the account"
                            ));
                        }
                        rows.push(r);
                        nexts.push(Next::Done(status));
                    }
                    if !ctx.record(rows).await {
                        // Not durable: in doubt, as after a crash (a list add is idempotent).
                        let later = Next::Again(ctx.now() + MINUTE_MS);
                        nexts.iter_mut().for_each(|n| *n = later);
                    }
                    out.extend(chunk.into_iter().zip(nexts));
                    continue 'chunks;
                }
                Err(ApiError::BatchTooLarge { size, message, .. }) if chunk.len() > 1 => {
                    let half = chunk.len() / 2;
                    link.learned_batch.fetch_min(half.max(1), Ordering::Relaxed);
                    tracing::warn!(
                        connector = %link.id,
                        list = %list_id,
                        "HubSpot refused a list batch of {size} as too large ({message}); splitting it and sending batches of at most {half} from now on"
                    );
                    let now = ctx.now();
                    let rows = chunk
                        .iter()
                        .map(|i| {
                            let mut r =
                                row(i, &link, Action::ListAdd, &list_id, Status::Retrying, now);
                            r.http_status = Some(400);
                            r.message =
                                Some(format!("batch of {size} too large; split: {message}"));
                            r.retry_at_ms = Some(now);
                            r
                        })
                        .collect();
                    ctx.record(rows).await;
                    let second = chunk.split_off(half);
                    work.push(second);
                    work.push(chunk);
                    continue 'chunks;
                }
                Err(e) => {
                    if matches!(e, ApiError::Transient { .. }) {
                        chunk
                            .iter_mut()
                            .for_each(|i| i.failures = i.failures.saturating_add(1));
                    }
                    let failures = chunk.iter().map(|i| i.failures).max().unwrap_or(1);
                    let decision = ctx.decide(&link, &e, u32::from(failures));
                    let now = ctx.now();
                    let rows = chunk
                        .iter()
                        .map(|i| {
                            let base =
                                row(i, &link, Action::ListAdd, &list_id, Status::Retrying, now);
                            failure_row(base, &e, &decision, now, false)
                        })
                        .collect();
                    if matches!(decision, Decision::GiveUp) {
                        tracing::warn!(connector = %link.id, list = %list_id, contacts = chunk.len(), "list add failed: {e}");
                        let next = final_if_recorded(&ctx, rows, Status::Failed).await;
                        out.extend(chunk.into_iter().map(|i| (i, next)));
                        continue 'chunks;
                    }
                    ctx.record(rows).await;
                    match decision {
                        Decision::Retry(d) if ctx.sleep(d).await => continue,
                        Decision::Retry(_) => {
                            let now = ctx.now();
                            out.extend(chunk.into_iter().map(|i| (i, Next::Again(now))));
                        }
                        Decision::Later(t) => {
                            out.extend(chunk.into_iter().map(|i| (i, Next::Again(t))))
                        }
                        Decision::GiveUp => unreachable!("handled above"),
                    }
                    continue 'chunks;
                }
            }
        }
    }
    out
}
