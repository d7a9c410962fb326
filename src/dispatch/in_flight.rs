//! A tick's call tasks and the contacts each carries. A task that panics gives its contacts
//! back in doubt, as a restart would find them from their rows, instead of leaving them unsent
//! until one; after as many panics as a contact has tries, one that cannot be checked (or is
//! three days past due) is left for a restart.

use std::collections::HashMap;
use std::future::Future;
use std::num::NonZeroU64;

use tokio::task::{Id, JoinError, JoinSet};

use super::send::{Next, Pending};
use crate::hubspot::policy::{self, Backoff};

type Settled = Vec<(Pending, Next)>;

#[derive(Default)]
pub struct InFlight {
    tasks: JoinSet<Settled>,
    /// Copies of what each task carries, as it was handed over.
    carried: HashMap<Id, Vec<Pending>>,
}

impl InFlight {
    /// Run `task` for `items`. `workflow`: the one an enrollment task enrolls into, which
    /// the check before sending again must look for.
    pub fn spawn<F>(&mut self, items: Vec<Pending>, workflow: Option<u64>, task: F)
    where
        F: Future<Output = Settled> + Send + 'static,
    {
        let id = self.tasks.spawn(task).id();
        let carried = items
            .into_iter()
            .map(|mut item| {
                // The call it makes is to the job's workflow; a doubt of an earlier call keeps
                // its own, as the send does (after a change of workflow and a panic, the check
                // looked only in the new one; an audit).
                let job = workflow.and_then(NonZeroU64::new);
                item.doubt_workflow = match item.in_doubt {
                    true => item.doubt_workflow.or(job),
                    false => job.or(item.doubt_workflow),
                };
                item
            })
            .collect();
        self.carried.insert(id, carried);
    }

    /// A task that has ended, if any; `now` for a panicked task's retry.
    pub fn try_next(&mut self, now: i64) -> Option<Settled> {
        let done = self.tasks.try_join_next_with_id()?;
        Some(self.settled(done, now))
    }

    /// The next task to end, waiting for it; `None` when none is left. `now` gives the time
    /// when it ends.
    pub async fn next(&mut self, now: impl Fn() -> i64) -> Option<Settled> {
        let done = self.tasks.join_next_with_id().await?;
        Some(self.settled(done, now()))
    }

    fn settled(&mut self, done: Result<(Id, Settled), JoinError>, now: i64) -> Settled {
        let e = match done {
            Ok((id, out)) => {
                self.carried.remove(&id);
                return out;
            }
            Err(e) => e,
        };
        let mut items = self.carried.remove(&e.id()).unwrap_or_default();
        for item in &mut items {
            // Its call may have gone out: checked before it is sent again. Counted as a
            // transient failure, so a task that keeps failing is tried less and less often.
            item.in_doubt = true;
            item.failures = item.failures.saturating_add(1);
        }
        // A contact without a HubSpot id cannot be checked: a panic after its call, over and
        // over, would send it each time. Out of tries, it is left out of the queue and waits
        // for a restart; one that can be checked is tried on as an outage's are.
        let spent = |i: &Pending| Backoff::DISPATCH.exhausted(u32::from(i.failures));
        let later = |i: &Pending| match spent(i) {
            false => Some(now + Backoff::DISPATCH.wait(u32::from(i.failures)).as_millis() as i64),
            true if i.contact_id.is_some_and(|v| v > 0) => {
                super::send::after_tries(i, now, policy::spread)
            }
            true => None,
        };
        let (again, spent): (Vec<_>, Vec<_>) = (items.into_iter())
            .map(|i| (later(&i), i))
            .partition(|(at, _)| at.is_some());
        tracing::error!(
            contacts = again.len(),
            left_for_a_restart = spent.len(),
            "a dispatch task failed ({e}); its contacts are checked at HubSpot and tried again"
        );
        (again.into_iter())
            .filter_map(|(at, item)| Some((item, Next::Again(at?))))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::tests::pending;

    #[tokio::test]
    async fn a_panicked_task_gives_its_contacts_back_in_doubt() {
        let mut flight = InFlight::default();
        let ok = pending(1);
        flight.spawn(vec![ok.clone()], Some(7), async move {
            vec![(ok, Next::Done(crate::datasets::outcomes::Status::Enrolled))]
        });
        flight.spawn(vec![pending(2)], Some(7), async { panic!("a bug") });
        flight.spawn(vec![pending(3), pending(4)], None, async {
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
        flight.spawn(out_of_tries, None, async { panic!("again") });
        let mut out = Vec::new();
        while let Some(done) = flight.next(|| 1_000).await {
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
        flight.spawn(vec![doubted], Some(7), async { panic!("a bug") });
        let (item, _) = flight.next(|| 1_000).await.unwrap().remove(0);
        assert_eq!(item.doubt_workflow, NonZeroU64::new(3));
    }
}
