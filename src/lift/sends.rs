//! What was sent: every planned receipt, live and archived, with its first send, read from
//! the plan and the outcomes a part at a time.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use crate::datasets::outcomes::{self, OutcomeRow, Status};
use crate::datasets::plan;

/// A receipt id as the report keys it: its 128-bit hash. It is held for every receipt of the
/// archive, in 16 bytes where the id (a ULID) as a `String` took about 50 with its
/// allocation; two of a billion ids share a hash with odds below 10^-20.
pub fn key(receipt_id: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(receipt_id.as_bytes())
}

/// A planned receipt: who, whether it was held out, and when it was sent, if it was.
#[derive(Debug, Clone)]
pub struct Planned {
    /// Its receipt id's [`key`].
    pub receipt: u128,
    /// Its webhook's id, one allocation shared by all its receipts.
    pub webhook: Arc<str>,
    pub contact_id: Option<i64>,
    pub email: Option<Box<str>>,
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
/// completed) if any.
pub fn planned(data_dir: &Path) -> anyhow::Result<Vec<Planned>> {
    let mut out = plan_rows(data_dir)?;
    with_sends(data_dir, &mut out)?;
    Ok(out)
}

/// Every planned receipt, live and archived, as its plan row says (none sent yet); of the
/// plan, what a row needs here, read a part at a time.
pub(super) fn plan_rows(data_dir: &Path) -> anyhow::Result<Vec<Planned>> {
    let mut out = Vec::new();
    // A row read twice (a compaction, a move to the archive) counts once.
    let mut seen = HashSet::new();
    let mut webhooks: HashSet<Arc<str>> = HashSet::new();
    plan::for_each_kept_received(data_dir, |p| {
        let receipt = key(p.receipt_id);
        if !seen.insert(receipt) {
            return;
        }
        let webhook = webhooks.get(p.webhook_id).cloned().unwrap_or_else(|| {
            let w: Arc<str> = p.webhook_id.into();
            webhooks.insert(w.clone());
            w
        });
        out.push(Planned {
            receipt,
            webhook,
            contact_id: p.contact_id,
            email: p.email.map(Box::from),
            received_at_ms: p.received_at_ms,
            sent_at_ms: None,
            ended: p.archived,
            failed: false,
            holdout: p.holdout,
            share: p.holdout_share,
            timed: p.webhook_type.timed(),
        });
    })?;
    Ok(out)
}

/// `planned`'s first sends, and which of them ended without one, from the outcomes.
pub(super) fn with_sends(data_dir: &Path, planned: &mut [Planned]) -> anyhow::Result<()> {
    let ends = Ends::read(data_dir)?;
    for p in planned {
        p.sent_at_ms = ends.first.get(&p.receipt).map(|&(at, _)| at);
        let unsent = ends.unsent.get(&p.receipt);
        p.ended |= p.sent_at_ms.is_some() || unsent.is_some();
        p.failed = p.sent_at_ms.is_none() && unsent == Some(&true);
    }
    Ok(())
}

/// The statuses of a send.
const SENDS: [Status; 3] = [Status::Enrolled, Status::Listed, Status::Completed];

pub(super) fn is_send(s: Status) -> bool {
    SENDS.contains(&s)
}

/// Each receipt's first send and its end without one, folded from the outcomes' final rows.
#[derive(Debug, Default)]
pub(super) struct Ends {
    /// Each receipt's first send (enrolled, listed or completed): when, and whether its row
    /// has a 2xx of its own.
    pub first: HashMap<u128, (i64, bool)>,
    /// The receipts ended without a send (true: failed, not a dry run).
    pub unsent: HashMap<u128, bool>,
    /// The ids of the receipts with a send without a 2xx of its own (few): the steps of those
    /// whose first send it is are read ([`Ends::date_resolved`]).
    unanswered: HashMap<u128, String>,
}

impl Ends {
    /// Of the outcomes, the final rows, a part at a time, and the other steps of the few
    /// receipts whose send resolved a doubt ([`Ends::date_resolved`]).
    fn read(data_dir: &Path) -> anyhow::Result<Self> {
        let finals: Vec<Status> = (Status::ALL.into_iter()).filter(|s| s.is_final()).collect();
        let mut ends = Ends::default();
        outcomes::for_each_kept_with_status(data_dir, &finals, |rows| {
            rows.iter().for_each(|r| ends.add(r));
        })?;
        let resolved = ends.resolved();
        let steps = match resolved.is_empty() {
            true => Vec::new(),
            false => outcomes::read_kept_of_receipts(data_dir, &resolved)?,
        };
        ends.date_resolved(&steps);
        ends.unanswered = HashMap::new();
        Ok(ends)
    }

    /// A final row (enrolled, listed, completed, failed or a dry run).
    pub(super) fn add(&mut self, r: &OutcomeRow) {
        let receipt = key(&r.receipt_id);
        if !is_send(r.status) {
            *self.unsent.entry(receipt).or_default() |= r.status == Status::Failed;
            return;
        }
        let answered = r.http_status.is_some_and(|s| (200..300).contains(&s));
        let first = self.first.entry(receipt).or_insert((r.at_ms, answered));
        if r.at_ms < first.0 {
            *first = (r.at_ms, answered);
        }
        if !answered {
            (self.unanswered.entry(receipt)).or_insert_with(|| r.receipt_id.clone());
        }
    }

    /// The receipts whose first send resolved a call left in doubt: no 2xx of its own.
    fn resolved(&self) -> HashSet<&str> {
        (self.unanswered.iter())
            .filter(|(receipt, _)| !self.first[*receipt].1)
            .map(|(_, id)| id.as_str())
            .collect()
    }

    /// Dates each first send that resolved a call left in doubt (no 2xx of its own: found
    /// enrolled by the check after a timeout or a crash, or HubSpot refusing to complete
    /// again what it had completed) by that call: the earliest attempt after the last failure
    /// that was not in doubt. Dated by the check, the send's window would start late, and an
    /// open in between would go to the contact's previous send. `steps` holds at least every
    /// step of those receipts ([`Ends::resolved`]); sends among them are passed over.
    pub(super) fn date_resolved(&mut self, steps: &[OutcomeRow]) {
        let mut before: HashMap<u128, Vec<&OutcomeRow>> = HashMap::new();
        for r in steps.iter().filter(|r| !is_send(r.status)) {
            before.entry(key(&r.receipt_id)).or_default().push(r);
        }
        for (receipt, rows) in &mut before {
            let Some(send) = self
                .first
                .get_mut(receipt)
                .filter(|(_, answered)| !answered)
            else {
                continue;
            };
            rows.retain(|r| r.at_ms <= send.0);
            rows.sort_by_key(|r| r.at_ms);
            for r in rows.iter().rev() {
                match r.status {
                    Status::Attempting => send.0 = r.at_ms,
                    _ if !r.in_doubt => break,
                    _ => {}
                }
            }
        }
    }
}
