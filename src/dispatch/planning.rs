//! Planning new receipts: read the inbox parts not seen yet, give each receipt its due time
//! (on both cores, one row group of the plan part per slice), and make the plans durable
//! before the parts count as read.

use rayon::prelude::*;
use std::collections::{BinaryHeap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use polars::prelude::DataFrame;
use ulid::Ulid;

use super::ids::ReceiptId;
use super::profiles::ProfileCache;
use super::send::Pending;
use super::{Dispatcher, Queued, intern};
use crate::config::{Config, WebhookType};
use crate::datasets::inbox::PlanningColumns;
use crate::datasets::plan::{self, Entry};
use crate::model::plan::{Subject, plan_into};
use crate::time::day_of;

/// Receipts planned by one task and written as one row group of the plan part.
const PLAN_CHUNK: usize = 32_768;

/// Receipts read from the inbox, about to be planned: the queue entries to be, and for each
/// its stored webhook type and receipt time.
#[derive(Default)]
struct Fresh {
    items: Vec<Pending>,
    meta: Vec<(WebhookType, i64)>,
}

impl Dispatcher {
    /// Read inbox parts not seen yet; plan their new receipts and append the plans.
    ///
    /// A part counts as seen only once its receipts' plans are durable: if anything fails,
    /// the next tick reads it again.
    pub(super) fn plan_new(&mut self, config: &Config, now: i64) -> anyhow::Result<usize> {
        let parts = self
            .inbox_ds
            .parts()
            .with_context(|| format!("cannot list {}", self.inbox_ds.dir.display()))?;
        let listed: HashSet<PathBuf> = parts.iter().cloned().collect();
        self.seen_parts.retain(|p| listed.contains(p));
        let mut fresh = Fresh::default();
        let mut read = Vec::new();
        for part in parts {
            if self.seen_parts.contains(&part) {
                continue;
            }
            // A part that cannot be read now (or holds a receipt this build cannot plan) is
            // left for the next tick; the others go on.
            let read_part = PlanningColumns::read(&part).and_then(|columns| {
                self.take_fresh(&columns, &mut fresh)
                    .with_context(|| format!("cannot read receipts from {}", part.display()))
            });
            match read_part {
                Ok(()) => read.push(part),
                Err(e) if crate::store::is_not_found(&e) => {}
                Err(e) => {
                    tracing::warn!(part = %part.display(), "cannot read inbox part (will try again next tick): {e:#}");
                }
            }
        }
        let result = self
            .profiles
            .refresh(config.model, now)
            .context("cannot build contact profiles from the events dataset")
            .and_then(|()| {
                // Profiles are kept current on every tick (cheap when no event part is new), so
                // the first tick after start-up loads them and later ticks only add what was
                // imported.
                self.record_plans(now, &mut fresh)
            });
        if let Err(e) = result {
            for item in &fresh.items {
                self.planned.remove(&item.receipt_id);
            }
            return Err(e);
        }
        self.seen_parts.extend(read);
        let planned = fresh.items.len();
        // The planned receipts' vector becomes the heap's (no copy) when it is the larger.
        let mut new: Vec<Queued> = fresh.items.into_iter().map(Queued).collect();
        if new.len() > self.queue.len() {
            new.extend(std::mem::take(&mut self.queue).into_vec());
            self.queue = BinaryHeap::from(new);
        } else {
            self.queue.extend(new);
        }
        if planned > 0
            && self.plan_ds.parts().map(|p| p.len()).unwrap_or(0) > 64
            && let Err(e) = self.plan_ds.compact(&HashSet::new())
        {
            tracing::warn!("plan compaction failed (will retry): {e:#}");
        }
        Ok(planned)
    }

    /// The receipts of an inbox part not planned or finished yet, read straight from its
    /// columns; they count as planned from here on (the caller undoes that on failure).
    /// Converting rows is spread over the cores (it mostly touches fresh memory, which costs
    /// here); only the de-duplication against what is known runs on one.
    fn take_fresh(&mut self, part: &PlanningColumns, fresh: &mut Fresh) -> anyhow::Result<()> {
        let n = part.len();
        part.check_webhook_types()?;
        let ids = &part.receipt_id;
        let webhooks = &part.webhook_id;
        let contacts = &part.contact_id;
        let emails = &part.email;
        let received = &part.received_at;
        // The part's few distinct webhook ids, shared (parts hold long runs of one).
        let mut shared: Vec<Arc<str>> = Vec::new();
        let mut last: Option<&str> = None;
        for w in webhooks.iter() {
            let w = w.unwrap_or_default();
            if last != Some(w) && !shared.iter().any(|x| **x == *w) {
                shared.push(intern(&mut self.webhook_ids, w));
            }
            last = Some(w);
        }
        let start = fresh.items.len();
        fresh.items.par_extend((0..n).into_par_iter().map(|i| {
            let w = webhooks.get(i).unwrap_or_default();
            Pending {
                receipt_id: ReceiptId::new(ids.get(i).unwrap_or_default()),
                webhook_id: shared
                    .iter()
                    .find(|x| ***x == *w)
                    .expect("every webhook id of the part is shared above")
                    .clone(),
                contact_id: contacts.get(i),
                email: emails.get(i).map(Box::from),
                callback_id: part.callback_id.get(i).map(Box::from),
                due_at_ms: 0,
                attempts: 0,
                failures: 0,
                in_doubt: false,
                doubt_workflow: None,
                ready_at_ms: 0,
            }
        }));
        fresh.meta.par_extend((0..n).into_par_iter().map(|i| {
            let kind = part.webhook_type(i).expect("checked above");
            (kind, received.get(i).unwrap_or_default())
        }));
        self.planned.reserve(n);
        let mut repeats = Vec::new();
        for (i, item) in fresh.items[start..].iter().enumerate() {
            let id = &item.receipt_id;
            if self.done.contains(id) || !self.planned.insert(id.clone()) {
                repeats.push(start + i);
            }
        }
        // Rows already planned or finished (a compacted part repeats them): drop them.
        if !repeats.is_empty() {
            let mut drop = vec![false; fresh.items.len()];
            for i in repeats {
                drop[i] = true;
            }
            let mut i = 0;
            fresh.items.retain(|_| {
                i += 1;
                !drop[i - 1]
            });
            let mut i = 0;
            fresh.meta.retain(|_| {
                i += 1;
                !drop[i - 1]
            });
        }
        Ok(())
    }

    /// Plan `fresh` over the cores, setting each one's due time, and append the plans as one
    /// part. Each task writes its slice's rows as a row group as soon as they are planned, so
    /// the columns of one slice are freed (and their memory reused) before the next: fresh
    /// pages cost a lot here.
    fn record_plans(&self, now: i64, fresh: &mut Fresh) -> anyhow::Result<()> {
        if fresh.items.is_empty() {
            return Ok(());
        }
        let population = self.profiles.population();
        let profiles = &self.profiles;
        let schema = plan_chunk(&mut [], &[], profiles, &population, now)?
            .schema()
            .clone();
        self.plan_ds
            .write_part_with(Ulid::generate(), &schema, |writer| {
                fresh
                    .items
                    .par_chunks_mut(PLAN_CHUNK)
                    .zip(fresh.meta.par_chunks(PLAN_CHUNK))
                    .try_for_each(|(items, meta)| {
                        let df = plan_chunk(items, meta, profiles, &population, now)?;
                        writer(&df)
                    })
            })
            .context("cannot record plans")?;
        Ok(())
    }
}

/// Plan one slice of receipts, setting their due times; their rows of `plan/` as a frame.
/// Columns are built directly (no per-row structs or strings): one reused buffer for keys and
/// reasons.
fn plan_chunk(
    items: &mut [Pending],
    meta: &[(WebhookType, i64)],
    profiles: &ProfileCache,
    population: &[f64; crate::time::SLOTS],
    now: i64,
) -> anyhow::Result<DataFrame> {
    let day = day_of(now);
    let debug = tracing::enabled!(tracing::Level::DEBUG);
    let mut key = String::new();
    let mut reason = String::new();
    let mut rows = plan::Columns::with_capacity(items.len());
    for (r, &(kind, received_at_ms)) in items.iter_mut().zip(meta) {
        let profile = profiles.lookup(r.contact_id, r.email.as_deref(), day, &mut key);
        let mut buf = [0u8; ulid::ULID_LEN];
        let receipt = r.receipt_id.as_str(&mut buf);
        reason.clear();
        let (due, slot) = plan_into(
            kind,
            received_at_ms,
            now,
            profile.as_ref(),
            population,
            Subject {
                contact: &key,
                receipt,
            },
            &mut reason,
        );
        rows.push(Entry {
            receipt_id: receipt,
            webhook_id: &r.webhook_id,
            webhook_type: kind,
            contact_id: r.contact_id,
            email: r.email.as_deref(),
            received_at_ms,
            due_at_ms: due,
            slot,
            reason: &reason,
            planned_at_ms: now,
            callback_id: r.callback_id.as_deref(),
        });
        r.due_at_ms = due;
        r.ready_at_ms = due;
        if debug {
            tracing::debug!(receipt = %r.receipt_id, webhook = %r.webhook_id, due_at = due, "planned: {reason}");
        }
    }
    rows.finish()
}
