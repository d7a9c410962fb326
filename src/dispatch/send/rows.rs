//! The outcome rows the calls record, and recording them: shared by the three kinds of call.

use super::{Ctx, Decision, Next, Pending};
use crate::datasets::outcomes::{Action, OutcomeRow, Status};
use crate::dispatch::connector::Link;
use crate::hubspot::ApiError;
use crate::time::MINUTE_MS;

pub(in crate::dispatch) fn row(
    item: &Pending,
    link: &Link,
    action: Action,
    target: &str,
    status: Status,
    at_ms: i64,
) -> OutcomeRow {
    row_of(item, &link.id, action, target, status, at_ms)
}

/// [`row`] for the connector of id `connector`, with no link at hand.
pub(in crate::dispatch) fn row_of(
    item: &Pending,
    connector: &str,
    action: Action,
    target: &str,
    status: Status,
    at_ms: i64,
) -> OutcomeRow {
    OutcomeRow {
        receipt_id: item.receipt_id.to_string(),
        webhook_id: item.webhook_id.to_string(),
        connector: connector.to_string(),
        action,
        target: target.to_string(),
        status,
        http_status: None,
        message: None,
        attempts: item.attempts,
        in_doubt: false,
        retry_at_ms: None,
        at_ms,
        holdout: item.holdout,
    }
}

/// The row of a call HubSpot refused (`e`) whose contact waits instead of failing (`why`),
/// until `next`; `in_doubt`: an earlier call's doubt still stands (recorded as not, a restart
/// sent the contact unchecked; an audit).
pub(super) fn waiting_row(
    base: OutcomeRow,
    e: &ApiError,
    why: &str,
    next: Next,
    in_doubt: bool,
) -> OutcomeRow {
    let retry_at_ms = match next {
        Next::Again(t) | Next::Held(t) => Some(t),
        Next::Done(_) => None,
    };
    OutcomeRow {
        http_status: e.status(),
        message: Some(format!("{e}; {why}")),
        retry_at_ms,
        in_doubt,
        ..base
    }
}

/// The row that records a failed call and what happens next.
pub(super) fn failure_row(
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

/// `r` with what was learned of its failure (`note`) after HubSpot's message.
pub(super) fn noted(mut r: OutcomeRow, note: Option<&str>) -> OutcomeRow {
    if let (Some(note), Some(message)) = (note, r.message.as_mut()) {
        message.push_str("; ");
        message.push_str(note);
    }
    r
}

/// Done with `row`'s status once the row is durable; until then the contact stays queued
/// (a minute later), so a disk that is full now cannot turn a call into one never recorded.
pub(super) async fn done_if_recorded(ctx: &Ctx, row: OutcomeRow, item: Pending) -> (Pending, Next) {
    let status = row.status;
    (item, final_if_recorded(ctx, vec![row], status).await)
}

/// [`done_if_recorded`] for rows that share one final status.
pub(super) async fn final_if_recorded(ctx: &Ctx, rows: Vec<OutcomeRow>, status: Status) -> Next {
    if ctx.record(rows).await {
        Next::Done(status)
    } else {
        Next::Again(ctx.now() + MINUTE_MS)
    }
}

/// Whether the call may have been acted on: an answer that may have come after HubSpot took
/// it, or a 2xx page (something passed the call on and answered in HubSpot's place; taken
/// for one that never went, an enrollment HubSpot took was sent again; an audit).
pub(super) fn may_have_reached(e: &ApiError) -> bool {
    matches!(
        e,
        ApiError::Transient {
            may_have_reached: true,
            ..
        } | ApiError::NotTheApi {
            status: 200..=299,
            ..
        }
    )
}
