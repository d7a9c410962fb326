//! Adding a batch of contacts to a static list.

use std::convert::identity;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::rows::{failure_row, final_if_recorded, noted, row, waiting_row};
use super::{Ctx, Decision, Next, Pending, TargetCheck};
use crate::datasets::outcomes::{Action, OutcomeRow, Status};
use crate::dispatch::connector::Link;
use crate::hubspot::ApiError;
use crate::time::MINUTE_MS;

/// The smallest batch a refusal not said to be of its size splits: down to it, a refusal of
/// every batch costs at most about 4 × size / SPLIT_FLOOR calls, not 2 × size.
const SPLIT_FLOOR: usize = 100;

/// Split `chunk`, refused (`size`, `status`, what HubSpot `said`), in halves onto `work`;
/// refused as too large (`learn`), send batches of at most half from now on (a refusal for
/// another reason, a systematic one, shrank every later batch).
async fn split(
    ctx: &Ctx,
    link: &Link,
    list_id: &str,
    mut chunk: Vec<Pending>,
    (size, status, said, learn): (usize, u16, &str, bool),
    work: &mut Vec<Vec<Pending>>,
) {
    let half = chunk.len() / 2;
    if learn {
        link.learned_batch.fetch_min(half.max(1), Ordering::Relaxed);
    }
    let from_now = match learn {
        true => format!(" and sending batches of at most {half} from now on"),
        false => String::new(),
    };
    tracing::warn!(
        connector = %link.id,
        list = %list_id,
        "HubSpot refused a list batch of {size} {said}; splitting it{from_now}"
    );
    let now = ctx.now();
    let rows = chunk
        .iter()
        .map(|i| {
            let mut r = row(i, link, Action::ListAdd, list_id, Status::Retrying, now);
            r.http_status = Some(status);
            r.message = Some(format!("batch of {size} refused {said}; split"));
            r.retry_at_ms = Some(now);
            r
        })
        .collect();
    ctx.record(rows).await;
    let second = chunk.split_off(half);
    work.push(second);
    work.push(chunk);
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
            let attempting = |i: &Pending, now| {
                row(i, &link, Action::ListAdd, &list_id, Status::Attempting, now)
            };
            let call = match ctx
                .start_batch(
                    &link,
                    Action::ListAdd,
                    Some(&list_id),
                    &mut chunk,
                    attempting,
                    &mut out,
                )
                .await
            {
                Ok(call) => call,
                Err(next) => {
                    out.extend(chunk.into_iter().map(|i| (i, next)));
                    continue 'chunks;
                }
            };
            let ids: Vec<String> = chunk
                .iter()
                .map(|i| i.contact_id.unwrap_or_default().to_string())
                .collect();
            match call.add_to_list(&list_id, &ids).await {
                Ok(result) => {
                    link.targets.took(Action::ListAdd, &list_id, ctx.now());
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
                Err(ApiError::BatchTooLarge {
                    size,
                    status,
                    message,
                }) if chunk.len() > 1 => {
                    let said = format!("as too large ({message})");
                    let refused = (size, status, said.as_str(), true);
                    split(&ctx, &link, &list_id, chunk, refused, &mut work).await;
                    continue 'chunks;
                }
                Err(mut e) => {
                    // A refusal of the whole batch may be the list's (gone, or made DYNAMIC),
                    // not its contacts': then they wait for it.
                    let mut note = None;
                    if matches!(
                        e,
                        ApiError::Permanent {
                            status: 400 | 404 | 422,
                            ..
                        }
                    ) {
                        let webhooks: Vec<&str> = chunk.iter().map(|i| &*i.webhook_id).collect();
                        match ctx
                            .check_target(&link, Action::ListAdd, &webhooks, &list_id)
                            .await
                        {
                            // HubSpot ignores records it does not have: with the list usable,
                            // a refusal of a large batch is of its size, however worded (it
                            // failed thousands of contacts for good, an audit found). Split
                            // down to SPLIT_FLOOR, then failed together.
                            // (Unread too: one read that failed lost the batch.)
                            TargetCheck::Usable | TargetCheck::Unread(_)
                                if chunk.len() > SPLIT_FLOOR
                                    && matches!(e.status(), Some(400 | 422)) =>
                            {
                                let (size, status) = (chunk.len(), e.status().unwrap_or(400));
                                let said = format!("({e})");
                                let refused = (size, status, said.as_str(), false);
                                split(&ctx, &link, &list_id, chunk, refused, &mut work).await;
                                continue 'chunks;
                            }
                            TargetCheck::Usable => {}
                            TargetCheck::Wait(why, next) => {
                                let now = ctx.now();
                                let rows = chunk
                                    .iter()
                                    .map(|i| {
                                        let base = row(
                                            i,
                                            &link,
                                            Action::ListAdd,
                                            &list_id,
                                            Status::Retrying,
                                            now,
                                        );
                                        waiting_row(base, &e, &why, next, i.in_doubt)
                                    })
                                    .collect();
                                ctx.record(rows).await;
                                out.extend(chunk.into_iter().map(|i| (i, next)));
                                continue 'chunks;
                            }
                            TargetCheck::Failed(failed) => {
                                note = Some(format!(
                                    "reading whether list {list_id} can take contacts, after HubSpot's refusal ({e})"
                                ));
                                e = failed;
                            }
                            TargetCheck::Unread(why) => note = Some(why),
                        }
                    }
                    let decision = ctx.decide_after(&link, Action::ListAdd, &e, &mut chunk);
                    let (spent, rest) = ctx.spent(&link, Action::ListAdd, &e, decision, chunk);
                    let now = ctx.now();
                    let row_of = |i: &Pending, decision: &Decision| {
                        let base = row(i, &link, Action::ListAdd, &list_id, Status::Retrying, now);
                        noted(failure_row(base, &e, decision, now, false), note.as_deref())
                    };
                    let rows = |items: &[Pending], decision: &Decision| -> Vec<OutcomeRow> {
                        items.iter().map(|i| row_of(i, decision)).collect()
                    };
                    // Each contact out of tries in an outage is tried again on its own time.
                    let (mut later, mut failed) = (Vec::new(), Vec::new());
                    for i in spent {
                        // Not spread: the batch's contacts go back together, in one call.
                        match ctx.outlast_at(&e, &i, identity) {
                            Some(at) => {
                                later.push(row_of(&i, &Decision::Later(at)));
                                out.push((i, Next::Again(at)));
                            }
                            None => failed.push(i),
                        }
                    }
                    if !later.is_empty() {
                        ctx.record(later).await;
                    }
                    let spent = failed;
                    if !spent.is_empty() {
                        tracing::warn!(connector = %link.id, list = %list_id, contacts = spent.len(), "list add failed: {e}");
                        let failed = rows(&spent, &Decision::GiveUp);
                        let next = final_if_recorded(&ctx, failed, Status::Failed).await;
                        out.extend(spent.into_iter().map(|i| (i, next)));
                    }
                    let Some((decision, rest)) = rest else {
                        continue 'chunks;
                    };
                    chunk = rest;
                    ctx.record(rows(&chunk, &decision)).await;
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
