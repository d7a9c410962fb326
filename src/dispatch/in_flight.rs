//! A tick's call tasks and the contacts each carries. A task that panics gives its contacts
//! back in doubt, as a restart would find them from their rows, instead of leaving them unsent
//! until one; a callback is tried again within HubSpot's hold, as a failed call's is. After
//! as many panics as a contact has tries, an enrollment or list add that cannot be checked (or
//! is three days past due) is left for a restart. An enrollment that cannot be checked whose
//! earlier call may have gone too fails at once, its row saying so, as a send's does: sent at
//! most twice.

use std::collections::HashMap;
use std::future::Future;
use std::num::NonZeroU64;
use std::sync::Arc;

use tokio::task::{Id, JoinError, JoinSet};

use super::connector::Link;
use super::send::{MAY_HAVE_GONE, Next, Pending, row};
use crate::datasets::outcomes::{Action, OutcomeRow, Status};
use crate::hubspot::policy::{self, Backoff};

type Settled = Vec<(Pending, Next)>;

/// The call a task makes, which decides when its contacts may be sent again after a panic.
pub enum Call {
    /// Into this workflow, which the check before sending again must look for, through this
    /// connector.
    Enroll(u64, Arc<Link>),
    List,
    Complete,
}

#[derive(Default)]
pub struct InFlight {
    tasks: JoinSet<Settled>,
    /// Copies of what each task carries, as it was handed over, and the call it makes.
    carried: HashMap<Id, (Call, Vec<Pending>)>,
    /// Contacts a panic failed for good, with their rows, for the dispatcher to write.
    failed: Vec<(Pending, OutcomeRow)>,
}

impl InFlight {
    /// Run `task`, which makes `call` for `items`.
    pub fn spawn<F>(&mut self, items: Vec<Pending>, call: Call, task: F)
    where
        F: Future<Output = Settled> + Send + 'static,
    {
        let id = self.tasks.spawn(task).id();
        let job = match call {
            Call::Enroll(workflow, _) => NonZeroU64::new(workflow),
            Call::List | Call::Complete => None,
        };
        let carried = items
            .into_iter()
            .map(|mut item| {
                // The call it makes is to the job's workflow; a doubt of an earlier call keeps
                // its own, as the send does (after a change of workflow and a panic, the check
                // looked only in the new one; an audit).
                item.doubt_workflow = match item.in_doubt {
                    true => item.doubt_workflow.or(job),
                    false => job.or(item.doubt_workflow),
                };
                item
            })
            .collect();
        self.carried.insert(id, (call, carried));
    }

    /// A task that has ended, if any; `now` for a panicked task's retry, and `deadline` the
    /// last time a callback is tried again at ([`super::send::Ctx::callback_deadline`]).
    pub fn try_next(&mut self, now: i64, deadline: Deadline<'_>) -> Option<Settled> {
        let done = self.tasks.try_join_next_with_id()?;
        Some(self.settled(done, now, deadline))
    }

    /// The next task to end, waiting for it; `None` when none is left. `now` gives the time
    /// when it ends.
    pub async fn next(&mut self, now: impl Fn() -> i64, deadline: Deadline<'_>) -> Option<Settled> {
        let done = self.tasks.join_next_with_id().await?;
        Some(self.settled(done, now(), deadline))
    }

    fn settled(
        &mut self,
        done: Result<(Id, Settled), JoinError>,
        now: i64,
        deadline: Deadline<'_>,
    ) -> Settled {
        let e = match done {
            Ok((id, out)) => {
                self.carried.remove(&id);
                return out;
            }
            Err(e) => e,
        };
        let (call, items) = self
            .carried
            .remove(&e.id())
            .unwrap_or((Call::List, Vec::new()));
        let later = |i: &Pending| {
            let spent = Backoff::DISPATCH.exhausted(u32::from(i.failures));
            let wait = now + Backoff::DISPATCH.wait(u32::from(i.failures)).as_millis() as i64;
            match call {
                // A second completion is refused, never done twice: tried again until the
                // hold ends, whatever its tries; out of tries past it, left for a restart
                // (whose call HubSpot refuses, and the row says so), as a send gives it up.
                Call::Complete => {
                    let ends = deadline(i, now);
                    match spent {
                        true => policy::retry_past_tries(i.failures, now, ends, policy::spread),
                        false if ends > now => Some(wait.min(ends)),
                        false => Some(wait),
                    }
                }
                _ if !spent => Some(wait),
                _ if i.checkable_id().is_some() => super::send::after_tries(i, now, policy::spread),
                _ => None,
            }
        };
        let (mut again, mut spent, mut failed) = (Vec::new(), 0, 0);
        for mut item in items {
            let was_in_doubt = item.in_doubt;
            // Its call may have gone out: checked before it is sent again. Counted as a
            // transient failure, so a task that keeps failing is tried less and less often.
            item.in_doubt = true;
            item.failures = item.failures.saturating_add(1);
            match &call {
                // No check can settle it, and its earlier call may have enrolled it too (one
                // HubSpot took, its row left to write, comes back to write it).
                Call::Enroll(workflow, link)
                    if item.checkable_id().is_none() && was_in_doubt && !item.only_row_left() =>
                {
                    let row = failed_row(&item, link, *workflow, now, &e);
                    self.failed.push((item, row));
                    failed += 1;
                }
                _ => match later(&item) {
                    Some(at) => again.push((item, Next::Again(at))),
                    None => spent += 1,
                },
            }
        }
        tracing::error!(
            contacts = again.len(),
            left_for_a_restart = spent,
            failed,
            "a dispatch task failed ({e}); its contacts are checked at HubSpot and tried again"
        );
        again
    }

    /// The contacts a panic failed for good since the last call, with their rows: finished
    /// once the rows are written.
    pub fn take_failed(&mut self) -> Vec<(Pending, OutcomeRow)> {
        std::mem::take(&mut self.failed)
    }
}

/// The row of an enrollment a panic failed for good.
fn failed_row(item: &Pending, link: &Link, workflow: u64, now: i64, e: &JoinError) -> OutcomeRow {
    let target = workflow.to_string();
    OutcomeRow {
        message: Some(format!("its dispatch task failed ({e}); {MAY_HAVE_GONE}")),
        in_doubt: true,
        ..row(item, link, Action::Enroll, &target, Status::Failed, now)
    }
}

/// The last time a callback is tried again at, given the time now.
pub type Deadline<'a> = &'a (dyn Fn(&Pending, i64) -> i64 + Sync);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::tests::{link, pending};

    #[tokio::test]
    async fn a_panicked_task_gives_its_contacts_back_in_doubt() {
        let mut flight = InFlight::default();
        let ok = pending(1);
        flight.spawn(vec![ok.clone()], Call::Enroll(7, link()), async move {
            vec![(ok, Next::Done(crate::datasets::outcomes::Status::Enrolled))]
        });
        flight.spawn(vec![pending(2)], Call::Enroll(7, link()), async {
            panic!("a bug")
        });
        flight.spawn(vec![pending(3), pending(4)], Call::List, async {
            panic!("another")
        });
        // Out of tries: one that cannot be checked (no HubSpot id), or past the days an
        // outage is outlasted, is left for a restart, not queued again; one that can be
        // checked comes back as an outage's contacts do.
        let spent = |n, contact_id, due_at_ms| Pending {
            failures: 11,
            contact_id,
            due_at_ms,
            ..pending(n)
        };
        let days = -4 * crate::time::DAY_MS;
        let out_of_tries = vec![
            spent(5, None, 0),
            spent(6, Some(6), days),
            spent(7, Some(7), 0),
        ];
        flight.spawn(out_of_tries, Call::List, async { panic!("again") });
        let mut out = Vec::new();
        while let Some(done) = flight.next(|| 1_000, &|_, _| 0).await {
            out.extend(done);
        }
        out.sort_by_key(|(i, _)| i.contact_id);
        let ids: Vec<_> = out.iter().map(|(i, _)| i.contact_id.unwrap()).collect();
        assert_eq!(
            ids,
            [1, 2, 3, 4, 7],
            "every contact but the spent ones comes back once"
        );
        let (outlasting, next) = out.pop().unwrap();
        assert_eq!(outlasting.failures, 12);
        assert!(
            matches!(next, Next::Again(at) if (151_000..=451_000).contains(&at)),
            "{next:?}"
        );
        assert!(!out[0].0.in_doubt);
        for (item, next) in &out[1..] {
            assert!(item.in_doubt, "{item:?}");
            assert_eq!(item.failures, 1);
            let Next::Again(at) = next else {
                panic!("{next:?}")
            };
            assert!((1_500..=2_500).contains(at), "{at}");
        }
        assert_eq!(out[1].0.doubt_workflow, NonZeroU64::new(7));
        assert_eq!(out[2].0.doubt_workflow, None);
        assert!(flight.carried.is_empty(), "nothing kept of ended tasks");
    }

    /// After a panic, a callback comes back before HubSpot's hold ends, however many its
    /// tries and whether or not it has a HubSpot id (out of tries past the hold, it is left for
    /// a restart); an enrollment no check can settle whose earlier call may have gone too
    /// fails, never sent a third time, one that can be checked comes back.
    #[tokio::test]
    async fn a_panic_keeps_callbacks_in_their_hold_and_sends_no_contact_thrice() {
        let mut flight = InFlight::default();
        let callback = |n, failures| Pending {
            contact_id: None,
            callback_id: Some("c".into()),
            failures,
            ..pending(n)
        };
        // The third's hold is over (its deadline is now): out of tries, left for a restart.
        let over = Pending {
            hold_ends_ms: Some(0),
            ..callback(5, 11)
        };
        let calls = vec![callback(1, 0), callback(2, 11), over];
        flight.spawn(calls, Call::Complete, async { panic!("a bug") });
        let doubted = |n, contact_id| Pending {
            contact_id,
            in_doubt: true,
            ..pending(n)
        };
        // The fifth's enrollment HubSpot took, its row left to write: it comes back for that.
        let took = Pending {
            enrolled_at_ms: 500,
            ..doubted(5, None)
        };
        let enrolls = vec![doubted(3, None), doubted(4, Some(4)), took];
        flight.spawn(enrolls, Call::Enroll(7, link()), async {
            panic!("another")
        });
        let mut out = Vec::new();
        let deadline = |i: &Pending, _| match i.hold_ends_ms {
            Some(0) => 1_000,
            _ => 1_300,
        };
        while let Some(done) = flight.next(|| 1_000, &deadline).await {
            out.extend(done);
        }
        out.sort_by_key(|(i, _)| i.receipt_id.clone());
        let back: Vec<_> = out
            .iter()
            .map(|(i, n)| (i.receipt_id.to_string(), *n))
            .collect();
        assert_eq!(
            back,
            [
                ("r1".into(), Next::Again(1_300)),
                ("r2".into(), Next::Again(1_300)),
                ("r4".into(), back[2].1),
                ("r5".into(), back[3].1)
            ]
        );
        for (_, next) in &back[2..] {
            assert!(matches!(next, Next::Again(at) if (1_500..=2_500).contains(at)));
        }
        // The one no check can settle fails, its row saying so.
        let failed = flight.take_failed();
        let rows: Vec<_> = failed.iter().map(|(_, r)| r).collect();
        assert_eq!(rows.len(), 1, "{rows:?}");
        let row = rows[0];
        assert_eq!(
            (row.receipt_id.as_str(), row.status, row.target.as_str()),
            ("r3", Status::Failed, "7")
        );
        assert_eq!((row.connector.as_str(), row.in_doubt), ("main", true));
        assert!(row.message.as_deref().unwrap().ends_with(MAY_HAVE_GONE));
        assert!(flight.take_failed().is_empty(), "taken once");
    }

    /// A contact already in doubt for workflow 3 (its call's answer lost), sent to workflow 7
    /// since (the config changed) by a task that panics: its check still looks in 3.
    #[tokio::test]
    async fn a_panic_keeps_the_workflow_an_earlier_doubt_is_of() {
        let mut flight = InFlight::default();
        let doubted = Pending {
            in_doubt: true,
            doubt_workflow: NonZeroU64::new(3),
            ..pending(1)
        };
        flight.spawn(vec![doubted], Call::Enroll(7, link()), async {
            panic!("a bug")
        });
        let (item, _) = flight.next(|| 1_000, &|_, _| 0).await.unwrap().remove(0);
        assert_eq!(item.doubt_workflow, NonZeroU64::new(3));
    }
}
