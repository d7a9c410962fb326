//! `archive/{inbox,plan,outcomes}`: where finished receipts go once past the replay window, so
//! start-up reads what is pending and recent, and where they are deleted after
//! `[server] archive_days`; at start-up and once a day of the clock. The dispatcher alone
//! writes here.

use std::collections::HashSet;
use std::path::Path;

use anyhow::Context;
use ulid::Ulid;

use super::Dispatcher;
use super::ids::{IdSet, ReceiptId};
use super::startup::counts_toward_budget;
use crate::datasets::outcomes::OutcomeRow;
use crate::datasets::{ARCHIVE, KEPT_APART, inbox, outcomes, plan};
use crate::store::{self, Dataset};

/// The archived datasets, in the order rows move and go: inbox and plan first, outcomes
/// last, so a move cut short leaves no receipt to plan without the outcome that finished it.
const DATASETS: [(&str, &str); 3] = [
    (inbox::NAME, inbox::col::RECEIPT_ID),
    (plan::NAME, plan::col::RECEIPT_ID),
    (outcomes::NAME, outcomes::col::RECEIPT_ID),
];

/// Dataset `name` kept in `folder` of the data folder (the archive, or what `discard` set
/// aside), its compactions finished or rolled back after a crash.
fn open(data_dir: &Path, folder: &str, name: &str) -> anyhow::Result<Dataset> {
    let kept = Dataset::open(&data_dir.join(folder), name)?;
    kept.recover()?;
    Ok(kept)
}

/// Move the inbox, plan and outcome rows of `settled` receipts to the archive; the rows moved.
pub(super) fn move_settled(data_dir: &Path, settled: &HashSet<String>) -> anyhow::Result<usize> {
    let mut moved = 0;
    for (name, id_column) in DATASETS {
        let dataset = Dataset::open(data_dir, name)?;
        let archive = open(data_dir, ARCHIVE, name)?;
        moved += dataset
            .move_rows(&archive, &[id_column], |df| {
                let ids = df.column(id_column)?.str()?;
                Ok(ids
                    .iter()
                    .map(|id| id.is_some_and(|id| settled.contains(id)))
                    .collect())
            })
            .with_context(|| format!("cannot archive settled rows of {}", dataset.dir.display()))?;
        // Each move adds a part per part it took rows from, every day: merged, so that a
        // lookup, which reads them all, opens a few.
        if let Err(e) = archive.compact(&|_| false) {
            tracing::warn!(archive = %archive.dir.display(), "archive compaction failed (will retry): {e:#}");
        }
    }
    Ok(moved)
}

/// Drop archived receipts from the finished set: their rows are no longer where planning
/// reads.
pub(super) fn forget(done: &mut IdSet, archived: &HashSet<String>) {
    let mut buf = [0u8; ulid::ULID_LEN];
    done.retain(|id| !archived.contains(id.as_str(&mut buf)));
}

/// Delete the archived rows of receipts received before `before` (epoch ms), and those
/// `sendtime discard` set aside (a retention limit covers every copy of an email); the rows
/// deleted. A receipt id is a ULID issued on receipt, so its time is on every row of the
/// receipt, outcomes included; an id that is no ULID is kept.
pub(super) fn prune(data_dir: &Path, before: i64) -> anyhow::Result<usize> {
    let mut deleted = 0;
    for folder in KEPT_APART {
        for (name, id_column) in DATASETS {
            if !store::is_dir(&data_dir.join(folder).join(name))? {
                continue;
            }
            let kept = open(data_dir, folder, name)?;
            deleted += kept
                .remove_rows(&[id_column], |df| {
                    let ids = df.column(id_column)?.str()?;
                    Ok(ids
                        .iter()
                        .map(|id| {
                            id.and_then(|id| Ulid::from_string(id).ok())
                                .is_some_and(|id| (id.timestamp_ms() as i64) < before)
                        })
                        .collect())
                })
                .with_context(|| format!("cannot delete old rows of {}", kept.dir.display()))?;
        }
    }
    Ok(deleted)
}

/// Where the time of the last [`prune`] is kept (epoch ms, as text): a `tick` run every
/// minute by cron is a new process each time, and would prune every minute.
const PRUNED_AT: &str = "archive_pruned";

/// When the archive was last pruned; never, if unknown.
pub(super) fn pruned_at(data_dir: &Path) -> i64 {
    std::fs::read_to_string(crate::store::state_dir(data_dir).join(PRUNED_AT))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(i64::MIN)
}

/// Keep `at` as the time of the last prune.
pub(super) fn record_pruned(data_dir: &Path, at: i64) -> anyhow::Result<()> {
    let path = crate::store::state_dir(data_dir).join(PRUNED_AT);
    crate::store::write_durably(&path, at.to_string().as_bytes())?;
    Ok(())
}

impl Dispatcher {
    /// Remove what the compactions and archive moves of the datasets the dispatcher rewrites
    /// left on disk once their grace is over ([`crate::store::SOURCE_GRACE`]): the next
    /// compaction of each may be days away, and a reader of the folders that skips no intent
    /// sees those rows twice.
    pub(super) fn finish_compactions(&self) {
        let archive = self.data_dir.join(crate::datasets::ARCHIVE);
        let archived = [inbox::NAME, plan::NAME, outcomes::NAME]
            .into_iter()
            .filter(|name| store::is_dir(&archive.join(name)).unwrap_or(false))
            .map(|name| Dataset::open(&archive, name));
        let datasets = [
            Ok(self.inbox_ds.clone()),
            Ok(self.plan_ds.clone()),
            outcomes::dataset(&self.data_dir),
        ];
        for dataset in datasets.into_iter().chain(archived) {
            if let Err(e) = dataset.and_then(|d| d.finish_compactions()) {
                tracing::warn!("cannot remove what a compaction left (will retry): {e:#}");
            }
        }
    }

    /// Once a day of the clock, what start-up does: the receipts finished and past the replay
    /// window move to the archive and are forgotten, so a `serve` that runs for months holds
    /// its last days' receipts in memory, not every one it sent.
    pub(super) fn archive_if_due(&mut self, now: i64) {
        if !a_day_after(self.archived_at_ms, now) {
            return;
        }
        // A crash would replay such a part's log segment, rows moved and forgotten included.
        // Most likely a flush between writing its part and removing its segment: next tick.
        match inbox::any_part_logged(&self.data_dir) {
            Ok(false) => {}
            Ok(true) => return,
            Err(e) => {
                tracing::warn!("cannot list the inbox log (archiving waits): {e:#}");
                return;
            }
        }
        self.archived_at_ms = now;
        match self.archive_settled(now) {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                receipts = n,
                "finished receipts older than the replay window moved to archive/"
            ),
            Err(e) => {
                tracing::warn!("cannot archive finished receipts (will try again in a day): {e:#}")
            }
        }
    }

    /// Once a day of the clock (across starts), delete the archived receipts
    /// received more than `days` ago (`[server] archive_days`; `None` keeps them).
    pub(super) fn prune_if_due(&mut self, days: Option<u32>, now: i64) {
        let Some(days) = days else {
            return;
        };
        if !a_day_after(self.pruned_at_ms, now) {
            return;
        }
        self.pruned_at_ms = now;
        let pruned = prune(&self.data_dir, now - i64::from(days) * crate::time::DAY_MS)
            .and_then(|rows| record_pruned(&self.data_dir, now).map(|()| rows));
        match pruned {
            Ok(0) => {}
            Ok(rows) => tracing::info!(
                rows,
                days,
                "archived receipts older than archive_days deleted"
            ),
            Err(e) => tracing::warn!(
                "cannot delete archived receipts older than archive_days (will try again in a day): {e:#}"
            ),
        }
    }

    /// Archive the finished receipts received before the replay window and forget them; how
    /// many.
    fn archive_settled(&mut self, now: i64) -> anyhow::Result<usize> {
        let outcomes = outcomes::read(&outcomes::dataset(&self.data_dir)?)?;
        let settling = Settling::new(&outcomes, now, now);
        let plans = plan::read(&self.plan_ds)?;
        let planned: IdSet = plans
            .iter()
            .map(|p| ReceiptId::new(&p.receipt_id))
            .collect();
        let mut settled: HashSet<String> = (plans.into_iter())
            .filter(|p| settling.settles(p) && self.done.contains(&ReceiptId::new(&p.receipt_id)))
            .map(|p| p.receipt_id)
            .collect();
        // As a start moves them: they stayed in the live datasets until the next start (an
        // audit).
        let keys = inbox::read_keys(&inbox::dataset(&self.data_dir)?)?;
        settled.extend(
            settling.settled_unplanned(&keys, |id| self.done.contains(id) && !planned.contains(id)),
        );
        if settled.is_empty() {
            return Ok(0);
        }
        move_settled(&self.data_dir, &settled)?;
        forget(&mut self.done, &settled);
        Ok(settled.len())
    }
}

/// Whether a day-long pace's next run is due at `now`, the last having run at `last`: a day
/// after it, or at once when the clock went back past it (set ahead, then corrected, it would
/// wait as long as it was ahead).
pub(super) fn a_day_after(last: i64, now: i64) -> bool {
    !(0..crate::time::DAY_MS).contains(&now.saturating_sub(last))
}

/// Which finished receipts may leave for the archive, at start-up and once a day.
pub(super) struct Settling {
    /// Received before this: past the replay window.
    before: i64,
    /// Receipts with calls the daily budget counts: kept until those calls are older, or a
    /// restart would not count them.
    counted: HashSet<String>,
}

impl Settling {
    /// As of `replay_now` (the replay window's clock) and `now` (the budget's), from the
    /// outcome rows not archived.
    pub(super) fn new(outcomes: &[OutcomeRow], replay_now: i64, now: i64) -> Self {
        Settling {
            before: replay_now - crate::datasets::pending::REPLAY_WINDOW_MS,
            counted: outcomes
                .iter()
                .filter(|r| counts_toward_budget(r, now))
                .map(|r| r.receipt_id.clone())
                .collect(),
        }
    }

    /// Whether `p`, once finished, settles.
    pub(super) fn settles(&self, p: &plan::PlanRow) -> bool {
        self.settles_received(&p.receipt_id, p.received_at_ms)
    }

    /// The receipts of `inbox` finished with no plan row (`unplanned_done`) that settle, by
    /// their inbox row's time: a plan part in quarantine, a plan row that could not be written
    /// for an action's contact sent in its hold's last hour. A start and the daily move take
    /// them alike.
    pub(super) fn settled_unplanned(
        &self,
        inbox: &[inbox::ReceiptKey],
        unplanned_done: impl Fn(&ReceiptId) -> bool,
    ) -> Vec<String> {
        (inbox.iter())
            .filter(|r| self.settles_received(&r.receipt_id, r.received_at_ms))
            .filter(|r| unplanned_done(&ReceiptId::new(&r.receipt_id)))
            .map(|r| r.receipt_id.clone())
            .collect()
    }

    /// Whether `receipt`, received at `received_at_ms`, once finished, settles.
    pub(super) fn settles_received(&self, receipt: &str, received_at_ms: i64) -> bool {
        received_at_ms < self.before && self.counts_no_call_of(receipt)
    }

    /// Whether the daily budget counts none of the calls of `receipt`.
    pub(super) fn counts_no_call_of(&self, receipt: &str) -> bool {
        !self.counted.contains(receipt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daily_run_is_due_a_day_on_or_once_the_clock_went_back() {
        let day = crate::time::DAY_MS;
        assert!(a_day_after(i64::MIN, 0), "never run");
        assert!(!a_day_after(0, day - 1));
        assert!(a_day_after(0, day));
        // The last run was stamped by a clock since set back: waiting would last the step.
        assert!(a_day_after(3 * day, day));
    }
}
