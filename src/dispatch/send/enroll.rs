//! Enrolling one contact into a workflow, checking first whether an earlier call whose
//! answer was lost already did.

use std::num::NonZeroU64;
use std::sync::Arc;

use super::rows::{done_if_recorded, failure_row, may_have_reached, noted, row, waiting_row};
use super::{Ctx, Decision, Next, NotFound, Pending};
use crate::datasets::outcomes::{Action, OutcomeRow, Status};
use crate::dispatch::connector::{Link, OneContact};
use crate::hubspot::ApiError;
use crate::hubspot::limiter::Lane;
use crate::hubspot::policy::Backoff;

/// The row of an enrollment into `workflow` that HubSpot took (204) at `at`.
fn enrolled_row(item: &Pending, link: &Link, workflow: u64, at: i64) -> OutcomeRow {
    let mut r = row(
        item,
        link,
        Action::Enroll,
        &workflow.to_string(),
        Status::Enrolled,
        at,
    );
    r.http_status = Some(204);
    r
}

/// The note of an enrollment failed for good after an earlier call whose answer was lost and
/// that no check could settle (a contact without a HubSpot id).
pub const MAY_HAVE_GONE: &str = "an earlier call whose answer was lost may have enrolled it";

/// The note of a failed check of whether an earlier call enrolled the contact.
const CHECKING: &str = "reading the contact's enrollments, to see whether an earlier call whose \
                        answer was lost enrolled it";

/// Enroll one contact into `workflow`, retrying what is worth retrying.
pub async fn enroll(
    ctx: Arc<Ctx>,
    link: Arc<Link>,
    workflow: u64,
    mut item: Pending,
) -> (Pending, Next) {
    // HubSpot took it and only its row is left to write (the disk was full): never sent again.
    if item.only_row_left() {
        let took = item.doubt_workflow.map_or(workflow, NonZeroU64::get);
        let r = enrolled_row(&item, &link, took, item.enrolled_at_ms);
        return done_if_recorded(&ctx, r, item).await;
    }
    let target = workflow.to_string();
    if item.doubted_twice && item.checkable_id().is_none() {
        return given_up_unchecked(&ctx, &link, &target, item).await;
    }
    let Some(mut email) = item
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
    // Whether an enrollment's 404 was looked into in this task (the workflow, the contact's
    // address now): once is enough, but after a read failed as every call would.
    let mut looked_up = false;
    let mut readdressed = false;
    // The check gave up: the send goes unchecked, the contact still in doubt (a doubt stands
    // until a check settles it, whatever a later failure says of itself, and whichever way
    // the task ends: a review found the doubt lost).
    let mut unchecked = false;
    let retrying = |i: &Pending, now| row(i, &link, Action::Enroll, &target, Status::Retrying, now);
    loop {
        let call = match ctx
            .admit(
                &link,
                Action::Enroll,
                &[&item.webhook_id],
                true,
                Some(&target),
                Lane::Queue,
            )
            .await
        {
            Ok(call) => call,
            Err(next) => return (item, next),
        };
        if item.in_doubt
            && !unchecked
            && let Some(vid) = item.checkable_id()
        {
            let earlier = item.doubt_workflow.map(NonZeroU64::get);
            // The check is an attempt of its own, under the workflow the contact may be in, so
            // its failures count across processes too: a `tick` run each minute against a
            // failing check otherwise started its count afresh and never sent (an audit).
            let checked = earlier.map_or_else(|| target.clone(), |w| w.to_string());
            if let Err(next) = ctx.attempting_enroll(&link, &mut item, &checked).await {
                return (item, next);
            }
            let read = call.enrollments(vid as u64).await;
            match link.one_contact(OneContact::Enrollments, read, ctx.now()) {
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
                    // Its transient failures count, as a call's do: a check that keeps
                    // failing backs off and, after the last, gives up below. A JSON 403 or a
                    // route's page may be the read's alone (as for target reads): HubSpot will
                    // not answer it, and pausing the connector for it paused every call, again
                    // after each pause, for ever (an audit). The send tells whether the token
                    // or the route is refused.
                    let read_alone = matches!(
                        e,
                        ApiError::Permanent { status: 403, .. } | ApiError::NotTheApi { .. }
                    );
                    let mut decision = match read_alone {
                        true => Decision::GiveUp,
                        false => ctx.decide_after(
                            &link,
                            Action::Enroll,
                            &e,
                            std::slice::from_mut(&mut item),
                        ),
                    };
                    // Past the failure that spent its tries, an outage goes on: checked again
                    // later, not sent again unchecked each time.
                    if !read_alone && u32::from(item.failures) > Backoff::DISPATCH.give_up_after {
                        decision = ctx.outlast(decision, &e, &item);
                    }
                    // HubSpot will not answer the check (e.g. no such record id): what is
                    // left is the at-least-once contract, so send. Its failures stay
                    // counted: a send that fails would put the contact back in doubt, and
                    // checks and sends would go on for ever. This failure is recorded too
                    // (retried at once, by the send), so that a restart counts it and does
                    // not send unchecked again (a review).
                    let now = ctx.now();
                    unchecked = matches!(decision, Decision::GiveUp);
                    if unchecked {
                        tracing::warn!(receipt = %item.receipt_id, "cannot check whether an earlier call reached HubSpot ({e}); sending again (at-least-once)");
                        decision = Decision::Later(now);
                    }
                    let failed = failure_row(retrying(&item, now), &e, &decision, now, true);
                    ctx.record(vec![noted(failed, Some(CHECKING))]).await;
                    if unchecked {
                        continue;
                    }
                    match decision {
                        Decision::Retry(d) if ctx.sleep(d).await => continue,
                        Decision::Later(t) => return (item, Next::Again(t)),
                        _ => return (item, Next::Again(ctx.now())),
                    }
                }
            }
        }
        if let Err(next) = ctx.attempting_enroll(&link, &mut item, &target).await {
            return (item, next);
        }
        let sent = call.enroll(workflow, &email).await;
        match link.one_contact(OneContact::Enroll(workflow), sent, ctx.now()) {
            Ok(()) => {
                link.targets.took(Action::Enroll, &target, ctx.now());
                let mut r = enrolled_row(&item, &link, workflow, ctx.now());
                if readdressed {
                    r.message = Some(
                        "enrolled by the contact's address now, read by its id: HubSpot had no \
                         contact with the address it was posted with"
                            .into(),
                    );
                }
                // Until the row is durable the call stays in doubt, as after a crash; while
                // this process runs, only the row is written again.
                item.in_doubt = true;
                item.doubt_workflow = NonZeroU64::new(workflow);
                item.enrolled_at_ms = r.at_ms;
                return done_if_recorded(&ctx, r, item).await;
            }
            Err(mut e) => {
                // Whether this call may have enrolled the contact (not a read made after it).
                let in_doubt = may_have_reached(&e);
                // HubSpot enrolls by email: a contact whose address changed since its post is
                // not found by the old one, nor any contact in a workflow that is gone.
                let mut note = None;
                if !looked_up && matches!(e, ApiError::Permanent { status: 404, .. }) {
                    looked_up = true;
                    match ctx
                        .not_found(&link, &item, &email, workflow, readdressed)
                        .await
                    {
                        NotFound::Moved(now) => {
                            item.email = Some(now.as_str().into());
                            email = now;
                            readdressed = true;
                            // A 404 to the address now is looked into in turn (the workflow
                            // may have gone meanwhile).
                            looked_up = false;
                            continue;
                        }
                        NotFound::Contact(learned) => note = learned,
                        NotFound::Wait(why, next) => {
                            let base = retrying(&item, ctx.now());
                            let r = waiting_row(base, &e, &why, next, item.in_doubt);
                            ctx.record(vec![r]).await;
                            return (item, next);
                        }
                        NotFound::Unknown(failed, read) => {
                            note = Some(format!("{read}, after HubSpot's 404 ({e})"));
                            e = failed;
                            looked_up = false;
                        }
                    }
                }
                let decision =
                    ctx.decide_after(&link, Action::Enroll, &e, std::slice::from_mut(&mut item));
                // A doubt no check settled (its check gave up, or it has no HubSpot id to
                // check by) stands: a send unchecked that failed without reaching HubSpot
                // cleared it, and every later try went unchecked (a review found it).
                let was_in_doubt = item.in_doubt;
                // An outage outlasted: tried again later, and checked first when in doubt. One
                // that cannot be checked (posted without a HubSpot id) is not sent again and
                // again unchecked: it fails, as before.
                let checkable = item.checkable_id().is_some();
                let twice = !checkable && in_doubt && was_in_doubt;
                let decision = match in_doubt || was_in_doubt {
                    // A second call that may have reached HubSpot, of a contact no check can
                    // settle: each such call may have enrolled it, so it fails here, sent at
                    // most twice (a slow HubSpot enrolled it once per timeout, up to twelve
                    // times; an audit).
                    true if twice => Decision::GiveUp,
                    true if !checkable => decision,
                    _ => ctx.outlast(decision, &e, &item),
                };
                // Failed for good after a call whose answer was lost: that call may have
                // enrolled it, and the row says so (it said nothing, a review found).
                if matches!(decision, Decision::GiveUp) && was_in_doubt {
                    note = Some(note.map_or(String::new(), |n| format!("{n}; ")) + MAY_HAVE_GONE);
                }
                (item.in_doubt, unchecked) = (in_doubt || was_in_doubt, false);
                // The workflow this call may have enrolled into; a doubt of an earlier call
                // keeps its own (the workflow called now is checked anyway).
                if in_doubt && !was_in_doubt {
                    item.doubt_workflow = NonZeroU64::new(workflow);
                }
                let base = retrying(&item, ctx.now());
                let failed = failure_row(base, &e, &decision, ctx.now(), item.in_doubt);
                let r = noted(failed, note.as_deref());
                if matches!(decision, Decision::GiveUp) {
                    tracing::warn!(receipt = %item.receipt_id, webhook = %item.webhook_id, "enrollment failed: {e}");
                    // Its row not written, the next try writes it, not a third call.
                    item.doubted_twice |= twice;
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

/// The failed row of a contact two calls may have enrolled, with no HubSpot id to check by
/// ([`Pending::doubted_twice`]): not sent a third time.
async fn given_up_unchecked(
    ctx: &Ctx,
    link: &Link,
    target: &str,
    item: Pending,
) -> (Pending, Next) {
    let mut r = row(
        &item,
        link,
        Action::Enroll,
        target,
        Status::Failed,
        ctx.now(),
    );
    r.message = Some(format!(
        "two calls whose answers were lost may each have enrolled it, and it was posted without a HubSpot id to check by: not sent again ({MAY_HAVE_GONE})"
    ));
    r.in_doubt = true;
    done_if_recorded(ctx, r, item).await
}
