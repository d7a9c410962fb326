//! What was sent: every planned receipt, live and archived, with its first send, read from
//! the plan and the outcomes a part at a time.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::datasets::outcomes::{self, OutcomeRow, Status};
use crate::datasets::plan;

/// A planned receipt: who, whether it was held out, and when it was sent, if it was.
#[derive(Debug, Clone)]
pub struct Planned {
    pub receipt_id: String,
    pub webhook: String,
    pub contact_id: Option<i64>,
    pub email: Option<String>,
    pub received_at_ms: i64,
    /// Its first send (enrolled, listed or completed); none: not sent (waiting, failed).
    pub sent_at_ms: Option<i64>,
    /// Whether it is done with: sent, failed for good, or recorded as a dry run; not still
    /// waiting, retrying or held.
    pub ended: bool,
    /// Ended failed for good, never sent (not a dry run, which says nothing of the contact):
    /// lost to its group ([`Lift::optimized_lost`](super::report::Lift::optimized_lost)).
    pub failed: bool,
    pub holdout: bool,
    /// The webhook's holdout share it was drawn at; none in rows from before it was recorded.
    pub share: Option<f64>,
    /// Of a timed type: held out or not, an untimed one (IMMEDIATE, UPDATE_ONLY) goes at
    /// receipt.
    pub timed: bool,
}

/// Every planned receipt, live and archived, with its first send (enrolled, listed or
/// completed) if any. The outcomes are read first and dropped before the plan is read, so
/// only one of them is in memory whole at a time.
pub fn planned(data_dir: &Path) -> anyhow::Result<Vec<Planned>> {
    let (sent, unsent_ends) = first_sends_of(data_dir)?;
    let mut out = plan_rows(data_dir)?;
    for p in &mut out {
        p.sent_at_ms = sent.get(&p.receipt_id).copied();
        let unsent = unsent_ends.get(&p.receipt_id);
        p.ended |= p.sent_at_ms.is_some() || unsent.is_some();
        p.failed = p.sent_at_ms.is_none() && unsent == Some(&true);
    }
    Ok(out)
}

/// Every planned receipt, live and archived, as its plan row says (none sent yet); of the
/// plan, what a row needs here.
pub(super) fn plan_rows(data_dir: &Path) -> anyhow::Result<Vec<Planned>> {
    let mut out = Vec::new();
    // A row read twice (a compaction, a move to the archive) counts once.
    let mut seen = HashSet::new();
    for p in plan::read_kept_received(data_dir)? {
        if !seen.insert(p.receipt_id.clone()) {
            continue;
        }
        out.push(Planned {
            ended: p.archived,
            failed: false,
            sent_at_ms: None,
            receipt_id: p.receipt_id,
            webhook: p.webhook_id,
            contact_id: p.contact_id,
            email: p.email,
            received_at_ms: p.received_at_ms,
            holdout: p.holdout,
            share: p.holdout_share,
            timed: p.webhook_type.timed(),
        });
    }
    Ok(out)
}

/// Each receipt's first send, and the receipts ended without one (true: failed, not a dry
/// run). Of the outcomes, only the final rows are read, and the other steps of the few
/// receipts whose send resolved a doubt ([`sent_at`]).
fn first_sends_of(
    data_dir: &Path,
) -> anyhow::Result<(HashMap<String, i64>, HashMap<String, bool>)> {
    let ends: Vec<Status> = (Status::ALL.into_iter()).filter(|s| s.is_final()).collect();
    let sends = outcomes::read_kept_with_status(data_dir, &ends)?;
    let mut unsent_ends: HashMap<String, bool> = HashMap::new();
    for r in sends.iter().filter(|r| !is_send(r.status)) {
        *unsent_ends.entry(r.receipt_id.clone()).or_default() |= r.status == Status::Failed;
    }
    let first = first_sends(&sends);
    let doubts: HashSet<&str> = resolved(&first).collect();
    let steps = if doubts.is_empty() {
        Vec::new()
    } else {
        outcomes::read_kept_of_receipts(data_dir, &doubts)?
    };
    Ok((sent_at(first, &steps), unsent_ends))
}

/// The statuses of a send.
const SENDS: [Status; 3] = [Status::Enrolled, Status::Listed, Status::Completed];

pub(super) fn is_send(s: Status) -> bool {
    SENDS.contains(&s)
}

/// Each receipt's first send among `rows`.
pub(super) fn first_sends(rows: &[OutcomeRow]) -> HashMap<&str, &OutcomeRow> {
    let mut first: HashMap<&str, &OutcomeRow> = HashMap::new();
    for r in rows.iter().filter(|r| is_send(r.status)) {
        let f = first.entry(&r.receipt_id).or_insert(r);
        if r.at_ms < f.at_ms {
            *f = r;
        }
    }
    first
}

/// The receipts whose first send resolved a call left in doubt: no 2xx of its own.
fn resolved<'r>(first: &HashMap<&'r str, &'r OutcomeRow>) -> impl Iterator<Item = &'r str> {
    let answered = |r: &OutcomeRow| r.http_status.is_some_and(|s| (200..300).contains(&s));
    first
        .iter()
        .filter(move |(_, r)| !answered(r))
        .map(|(id, _)| *id)
}

/// When each receipt's contact was sent: its first enrolled, listed or completed row; or, when
/// that row resolved a call left in doubt (no 2xx of its own: found enrolled by the check after
/// a timeout or a crash, or HubSpot refusing to complete again what it had completed), that
/// call: the earliest attempt after the last failure that was not in doubt. Dated by the
/// check, the send's window would start late, and an open in between would go to the
/// contact's previous send. `first` is each receipt's first send ([`first_sends`]), `steps`
/// holds at least every step of the receipts whose send resolved a doubt (sends among them
/// are passed over).
pub(super) fn sent_at(
    first: HashMap<&str, &OutcomeRow>,
    steps: &[OutcomeRow],
) -> HashMap<String, i64> {
    // The rows of the receipts whose send resolved a doubt (few), to find the call.
    let mut resolved: HashMap<&str, Vec<&OutcomeRow>> =
        resolved(&first).map(|id| (id, Vec::new())).collect();
    if !resolved.is_empty() {
        for r in steps.iter().filter(|r| !is_send(r.status)) {
            if let Some(before) = resolved.get_mut(r.receipt_id.as_str()) {
                before.push(r);
            }
        }
    }
    first
        .into_iter()
        .map(|(id, send)| {
            let mut at = send.at_ms;
            if let Some(before) = resolved.get_mut(id) {
                before.retain(|r| r.at_ms <= send.at_ms);
                before.sort_by_key(|r| r.at_ms);
                for r in before.iter().rev() {
                    match r.status {
                        Status::Attempting => at = r.at_ms,
                        _ if !r.in_doubt => break,
                        _ => {}
                    }
                }
            }
            (id.to_string(), at)
        })
        .collect()
}
