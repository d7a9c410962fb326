//! Completing a batch of workflow-action callbacks, which releases their contacts.

use std::convert::identity;
use std::sync::Arc;

use super::rows::{failure_row, final_if_recorded, may_have_reached, noted, row, row_of};
use super::{Ctx, Decision, Next, Pending};
use crate::datasets::outcomes::{Action, OutcomeRow, Status};
use crate::dispatch::connector::Link;
use crate::hubspot::ApiError;
use crate::hubspot::policy;
use crate::hubspot::wire::Completion;
use crate::time::format_rfc3339;

/// What a callback's row adds when the call came after the hold sendtime asked HubSpot for.
fn past_hold(hold_end: i64) -> String {
    format!(
        "after the hold sendtime asked for ended ({}): HubSpot may have moved the contact on by then",
        format_rfc3339(hold_end)
    )
}

/// What keeps a callback from being completed past its last try: its connector's holds, or
/// an operator's pause of it or its connector.
#[derive(Debug, Clone, Copy)]
pub(in crate::dispatch) enum HeldBy {
    /// HubSpot's daily limit, a refused token, no API route: [`Link::paused_at`].
    Pause,
    /// The app lacks the scope to complete callbacks (HubSpot's 403), asked again later.
    Scope,
    /// HubSpot's rate limit (a ten-secondly 429's `Retry-After`).
    RateLimit,
    /// An operator's pause of the action or its connector (`sendtime pause`), until resumed.
    Operator,
    /// The operators' pause file cannot be read: it holds every contact until fixed.
    PausesUnreadable,
}

impl HeldBy {
    fn text(self) -> &'static str {
        match self {
            HeldBy::Pause => "the connector is paused",
            HeldBy::Scope => "callbacks wait for a scope the app lacks (HubSpot's 403)",
            HeldBy::RateLimit => "HubSpot's rate limit (a 429's Retry-After) holds the calls",
            HeldBy::Operator => "an operator's pause holds it",
            HeldBy::PausesUnreadable => "the pause file cannot be read, which holds every contact",
        }
    }
}

/// The failed row of a callback held (`by`) until `until` (unknown: until an operator
/// resumes it), past its last try or its hold's end (`now`): HubSpot moves its contact on when
/// the hold (ending at `hold_end`) ends. `connector`: the id its row names.
pub(in crate::dispatch) fn held_past_hold(
    item: &Pending,
    connector: &str,
    target: &str,
    by: HeldBy,
    (until, hold_end): (Option<i64>, i64),
    now: i64,
) -> OutcomeRow {
    let mut r = row_of(
        item,
        connector,
        Action::Complete,
        target,
        Status::Failed,
        now,
    );
    let by = match until {
        Some(until) => format!("{} until {}", by.text(), format_rfc3339(until)),
        None => by.text().to_string(),
    };
    let ends = format_rfc3339(hold_end);
    let mut message = match now < hold_end {
        true => format!(
            "{by}, past HubSpot's hold on the contact (it ends {ends}): not completed; HubSpot moves it on then"
        ),
        false => format!(
            "{by}; HubSpot's hold on the contact ended {ends}: not completed; HubSpot moved it on then"
        ),
    };
    if item.in_doubt {
        message.push_str(" (an earlier call whose answer was lost may have completed it)");
    }
    r.message = Some(message);
    r.in_doubt = item.in_doubt;
    r
}

/// The final row of a callback HubSpot will not complete: failed, unless an earlier call for
/// it went unanswered and HubSpot refuses it as it would a completed one (a 4xx in its own
/// error body, not one for the batch's size) while it still holds the contact (before
/// `hold_end`): that call then completed it (done, not failed). Past the hold the refusal
/// says nothing of that call, and the row says the hold had ended.
pub(super) fn given_up(
    item: &Pending,
    link: &Link,
    callback: &str,
    e: &ApiError,
    now: i64,
    hold_end: i64,
) -> (OutcomeRow, Status) {
    let held = now < hold_end;
    let base = row(
        item,
        link,
        Action::Complete,
        callback,
        Status::Retrying,
        now,
    );
    let mut r = failure_row(base, e, &Decision::GiveUp, now, item.in_doubt);
    // HubSpot's own refusal, whose error body always carries a correlation id: a proxy's
    // page says nothing of the callback (taken as done, it was recorded completed).
    let refused_as_done = matches!(
        e,
        ApiError::Permanent {
            status: 400 | 404 | 409 | 410,
            correlation_id: Some(_),
            ..
        }
    );
    if item.in_doubt && refused_as_done && held {
        r.status = Status::Completed;
        r.message = Some(format!(
            "HubSpot refused to complete it again ({e}): an earlier call whose answer was lost had completed it"
        ));
    } else if item.in_doubt {
        r.message = Some(format!(
            "{e} (an earlier call whose answer was lost may have completed it; HubSpot's refusal does not tell)"
        ));
    }
    if !held {
        r = noted(r, Some(&past_hold(hold_end)));
    }
    let status = r.status;
    (r, status)
}

/// Complete a batch of workflow-action callbacks: the contacts go on in their workflows. A
/// batch HubSpot refuses (too large, or naming a callback it does not take) is split in
/// halves until the callback at fault is alone, so one bad callback fails no other.
pub async fn complete(ctx: Arc<Ctx>, link: Arc<Link>, items: Vec<Pending>) -> Vec<(Pending, Next)> {
    let mut out = Vec::with_capacity(items.len());
    let (with_id, without): (Vec<Pending>, Vec<Pending>) =
        items.into_iter().partition(|i| i.callback_id.is_some());
    if !without.is_empty() {
        let now = ctx.now();
        let rows = without
            .iter()
            .map(|i| {
                let mut r = row(i, &link, Action::Complete, "", Status::Failed, now);
                r.message = Some("the receipt has no callback id to complete".into());
                r
            })
            .collect();
        let next = final_if_recorded(&ctx, rows, Status::Failed).await;
        out.extend(without.into_iter().map(|i| (i, next)));
    }
    let callback = |i: &Pending| i.callback_id.as_deref().unwrap_or_default().to_string();
    // The row of a call that failed and is tried again, before its details.
    let retrying = |i: &Pending, now| {
        row(
            i,
            &link,
            Action::Complete,
            &callback(i),
            Status::Retrying,
            now,
        )
    };
    let mut work = vec![with_id];
    'chunks: while let Some(mut chunk) = work.pop() {
        if chunk.is_empty() {
            continue;
        }
        loop {
            let attempting = |i: &Pending, now| {
                row(
                    i,
                    &link,
                    Action::Complete,
                    &callback(i),
                    Status::Attempting,
                    now,
                )
            };
            let call = match ctx
                .start_batch(
                    &link,
                    Action::Complete,
                    None,
                    &mut chunk,
                    attempting,
                    &mut out,
                )
                .await
            {
                Ok(call) => call,
                Err(next) => {
                    // What held it, where a hold of the connector did: a failed write of the
                    // `attempting` rows, a token refresh failing or a stop goes on as it was.
                    let now = ctx.now();
                    let by = match next {
                        Next::Again(at) if link.paused_at(now) == Some(at) => Some(HeldBy::Pause),
                        Next::Again(at) if link.scope_held(Action::Complete, now) == Some(at) => {
                            Some(HeldBy::Scope)
                        }
                        Next::Again(_) if link.client.held_until().is_some() => {
                            Some(HeldBy::RateLimit)
                        }
                        _ => None,
                    };
                    let (Next::Again(at), Some(by)) = (next, by) else {
                        out.extend(chunk.into_iter().map(|i| (i, next)));
                        continue 'chunks;
                    };
                    let mut failed = Vec::new();
                    for mut i in chunk {
                        if let HeldBy::Pause = by {
                            // Sent at once by settings that lift the pause, as at a tick.
                            i.paused_until_ms = at;
                        }
                        // Held past its last try: back by then, not after its hold ends (it
                        // was refused then, its failed row up to a day late). A pause met
                        // there fails it at the tick; another hold, here (pulled to its
                        // release-by by each ledger rebuild, it came back every tick).
                        let last = ctx.callback_deadline(&i, now).max(now);
                        if at <= last {
                            out.push((i, next));
                        } else if matches!(by, HeldBy::Pause) || ctx.release_by(&i) > now {
                            out.push((i, Next::Again(last)));
                        } else {
                            let held = (Some(at), ctx.hold_end(&i));
                            let r = held_past_hold(&i, &link.id, &callback(&i), by, held, now);
                            failed.push((i, r));
                        }
                    }
                    if !failed.is_empty() {
                        let (items, rows): (Vec<Pending>, Vec<OutcomeRow>) =
                            failed.into_iter().unzip();
                        let next = final_if_recorded(&ctx, rows, Status::Failed).await;
                        out.extend(items.into_iter().map(|i| (i, next)));
                    }
                    continue 'chunks;
                }
            };
            let sent_at = ctx.now();
            let completions: Vec<Completion> = chunk
                .iter()
                .map(|i| Completion::released(callback(i), i.due_at_ms, sent_at))
                .collect();
            match call.complete_callbacks(&completions).await {
                Ok(()) => {
                    let now = ctx.now();
                    let rows = chunk
                        .iter()
                        .map(|i| {
                            let mut r = row(
                                i,
                                &link,
                                Action::Complete,
                                &callback(i),
                                Status::Completed,
                                now,
                            );
                            r.http_status = Some(204);
                            // Sent in time, it was in time however slow the answer.
                            let hold_end = ctx.hold_end(i);
                            if sent_at >= hold_end {
                                r.message = Some(format!("completed {}", past_hold(hold_end)));
                            }
                            r
                        })
                        .collect();
                    // Until the rows are durable the call stays in doubt, as after a crash:
                    // HubSpot's refusal to complete them again then means they were.
                    chunk.iter_mut().for_each(|i| i.in_doubt = true);
                    let next = final_if_recorded(&ctx, rows, Status::Completed).await;
                    out.extend(chunk.into_iter().map(|i| (i, next)));
                    continue 'chunks;
                }
                Err(
                    ref e @ (ApiError::BatchTooLarge { .. }
                    | ApiError::Permanent {
                        status: 400 | 402 | 404..=499,
                        ..
                    }),
                ) if chunk.len() > 1 => {
                    // Callbacks whose hold has ended are refused alone too: failed now, not
                    // split out one by one (a dispatcher down past the holds finds them all
                    // so, and halving would cost two calls per callback). Those past their
                    // release-by but still held are split with the rest.
                    let now = ctx.now();
                    let (over, live): (Vec<Pending>, Vec<Pending>) =
                        chunk.into_iter().partition(|i| ctx.hold_end(i) <= now);
                    chunk = live;
                    if !over.is_empty() {
                        tracing::warn!(connector = %link.id, callbacks = over.len(), "HubSpot refused callbacks whose hold had ended: {e}");
                        for item in over {
                            let (r, status) = given_up(
                                &item,
                                &link,
                                &callback(&item),
                                e,
                                now,
                                ctx.hold_end(&item),
                            );
                            let next = final_if_recorded(&ctx, vec![r], status).await;
                            out.push((item, next));
                        }
                    }
                    if chunk.len() <= 1 {
                        work.push(chunk);
                        continue 'chunks;
                    }
                    let half = chunk.len() / 2;
                    tracing::warn!(
                        connector = %link.id,
                        callbacks = chunk.len(),
                        "HubSpot refused a batch of callbacks ({e}); splitting it to find the one at fault"
                    );
                    let now = ctx.now();
                    let rows = chunk
                        .iter()
                        .map(|i| {
                            let base = retrying(i, now);
                            OutcomeRow {
                                http_status: e.status(),
                                message: Some(format!(
                                    "batch of {} refused; split: {e}",
                                    chunk.len()
                                )),
                                retry_at_ms: Some(now),
                                // Still in doubt after a restart, if an earlier call went
                                // unanswered: HubSpot's own refusal then means it was completed.
                                in_doubt: i.in_doubt,
                                ..base
                            }
                        })
                        .collect();
                    ctx.record(rows).await;
                    let second = chunk.split_off(half);
                    work.push(second);
                    work.push(chunk);
                    continue 'chunks;
                }
                Err(e) => {
                    if may_have_reached(&e) {
                        chunk.iter_mut().for_each(|i| i.in_doubt = true);
                    }
                    let decision = ctx.decide_after(&link, Action::Complete, &e, &mut chunk);
                    let now = ctx.now();
                    // When a callback is tried again at a later tick, within HubSpot's hold:
                    // after it, the call is refused. Given up on, yet retryable: HubSpot holds
                    // a contact for days, so however many failures it takes, its callback is
                    // tried again until its deadline, and only callbacks past it fail. Left
                    // to a later tick: at that time, or that deadline if sooner; past it (the
                    // last try failed), it fails now rather than once the hold has ended.
                    let deadline = |i: &Pending| ctx.callback_deadline(i, now);
                    let later = |i: &Pending| match decision {
                        Decision::GiveUp => {
                            policy::retry_past_tries(i.failures, now, deadline(i), identity)
                        }
                        Decision::Later(t) => (deadline(i) > now).then(|| t.min(deadline(i))),
                        Decision::Retry(_) => None,
                    };
                    let to_later = match decision {
                        Decision::GiveUp => e.is_retryable(),
                        Decision::Later(_) => true,
                        Decision::Retry(_) => false,
                    };
                    if to_later {
                        let (mut again, mut over) = (Vec::new(), Vec::new());
                        for i in chunk {
                            match later(&i) {
                                Some(at) => again.push((i, at)),
                                None => over.push(i),
                            }
                        }
                        let rows = again
                            .iter()
                            .map(|(i, at)| {
                                let base = retrying(i, now);
                                failure_row(base, &e, &Decision::Later(*at), now, i.in_doubt)
                            })
                            .collect();
                        ctx.record(rows).await;
                        out.extend(again.into_iter().map(|(i, at)| (i, Next::Again(at))));
                        chunk = over;
                        if chunk.is_empty() {
                            continue 'chunks;
                        }
                    }
                    if matches!(decision, Decision::GiveUp | Decision::Later(_)) {
                        // A lone callback HubSpot will not complete, or one whose last try
                        // before its hold ends has failed: failed, or done when an earlier
                        // call for it went unanswered ([`given_up`]).
                        let last_try = matches!(decision, Decision::Later(_))
                            .then_some("its last try before HubSpot's hold ends failed");
                        let rows: Vec<(OutcomeRow, Status)> = chunk
                            .iter()
                            .map(|i| {
                                let (r, status) =
                                    given_up(i, &link, &callback(i), &e, now, ctx.hold_end(i));
                                (noted(r, last_try), status)
                            })
                            .collect();
                        tracing::warn!(connector = %link.id, callbacks = chunk.len(), "completing callbacks failed: {e}");
                        for ((r, status), item) in rows.into_iter().zip(chunk) {
                            let next = final_if_recorded(&ctx, vec![r], status).await;
                            out.push((item, next));
                        }
                        continue 'chunks;
                    }
                    let rows = chunk
                        .iter()
                        .map(|i| {
                            let base = retrying(i, now);
                            failure_row(base, &e, &decision, now, i.in_doubt)
                        })
                        .collect();
                    ctx.record(rows).await;
                    match ctx.wait_or_requeue(&decision, chunk, &mut out).await {
                        Some(again) => {
                            chunk = again;
                            continue;
                        }
                        None => continue 'chunks,
                    }
                }
            }
        }
    }
    out
}
