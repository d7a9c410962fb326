//! `archive/{inbox,plan,outcomes}`: where finished receipts go once past the replay window, so
//! start-up reads what is pending and recent, and where they are deleted after
//! `[server] archive_days`. The dispatcher alone writes here.

use std::collections::HashSet;
use std::path::Path;

use anyhow::Context;
use ulid::Ulid;

use super::ids::IdSet;
use crate::datasets::{ARCHIVE, inbox, outcomes, plan};
use crate::store::Dataset;

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
        if let Err(e) = archive.compact(&HashSet::new()) {
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
    for folder in [ARCHIVE, crate::discard::DISCARDED] {
        for (name, id_column) in DATASETS {
            if !data_dir.join(folder).join(name).is_dir() {
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
const PRUNED_AT: &str = "state/archive_pruned";

/// When the archive was last pruned; never, if unknown.
pub(super) fn pruned_at(data_dir: &Path) -> i64 {
    std::fs::read_to_string(data_dir.join(PRUNED_AT))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(i64::MIN)
}

/// Keep `at` as the time of the last prune.
pub(super) fn record_pruned(data_dir: &Path, at: i64) -> anyhow::Result<()> {
    let path = data_dir.join(PRUNED_AT);
    crate::store::create_dir_durably(path.parent().expect("PRUNED_AT has a folder"))?;
    crate::store::write_durably(&path, at.to_string().as_bytes())?;
    Ok(())
}
