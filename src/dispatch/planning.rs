//! Planning new receipts: read the inbox parts not seen yet, give each receipt its due time
//! (on both cores, one row group of the plan part per slice), and make the plans durable
//! before the parts count as read.

use rayon::prelude::*;
use std::collections::{BinaryHeap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use polars::prelude::{
    Column, DataFrame, DataType, IntoColumn, ParquetReader, SerReader, StringChunkedBuilder,
    TimeUnit,
};
use ulid::Ulid;

use super::ids::ReceiptId;
use super::profiles::ProfileCache;
use super::send::Pending;
use super::{Dispatcher, Queued, intern};
use crate::config::{Config, WebhookType};
use crate::events::day_of;
use crate::model::plan::{Subject, plan_into};

/// Receipts planned by one task and written as one row group of the plan part.
const PLAN_CHUNK: usize = 32_768;

/// Receipts read from the inbox, about to be planned: the queue entries to be, and for each
/// its stored webhook type (when it names one) and receipt time.
#[derive(Default)]
struct Fresh {
    items: Vec<Pending>,
    meta: Vec<(Option<WebhookType>, i64)>,
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
        let mut result = Ok(());
        for part in parts {
            if self.seen_parts.contains(&part) {
                continue;
            }
            let df = match read_inbox_part(&part) {
                Ok(df) => df,
                Err(e) => {
                    let gone = e
                        .downcast_ref::<std::io::Error>()
                        .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound);
                    if !gone {
                        tracing::warn!(part = %part.display(), "cannot read inbox part (will try again next tick): {e:#}");
                    }
                    continue;
                }
            };
            result = self
                .take_fresh(&df, &mut fresh)
                .with_context(|| format!("cannot read receipts from {}", part.display()));
            if result.is_err() {
                break;
            }
            read.push(part);
        }
        let result = result
            .and_then(|()| {
                // Kept current on every tick (cheap when no event part is new), so the first
                // tick after start-up loads them and later ticks only add what was imported.
                self.profiles
                    .refresh(config.model, now)
                    .context("cannot build contact profiles from the events dataset")
            })
            .and_then(|()| self.record_plans(config, now, &mut fresh));
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
    fn take_fresh(&mut self, df: &DataFrame, fresh: &mut Fresh) -> anyhow::Result<()> {
        let n = df.height();
        let ids = df.column("receipt_id")?.str()?;
        let webhooks = df.column("webhook_id")?.str()?;
        let types = df.column("webhook_type")?.str()?;
        let contacts = df.column("contact_id")?.cast(&DataType::Int64)?;
        let contacts = contacts.i64()?;
        let emails = df.column("email")?.str()?;
        let received = df.column("received_at")?.cast(&DataType::Int64)?;
        let received = received.i64()?;
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
                due_at_ms: 0,
                attempts: 0,
                failures: 0,
                in_doubt: false,
                doubt_workflow: None,
                ready_at_ms: 0,
            }
        }));
        fresh.meta.par_extend((0..n).into_par_iter().map(|i| {
            (
                types.get(i).and_then(WebhookType::parse),
                received.get(i).unwrap_or_default(),
            )
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
    fn record_plans(&self, config: &Config, now: i64, fresh: &mut Fresh) -> anyhow::Result<()> {
        if fresh.items.is_empty() {
            return Ok(());
        }
        let population = self.profiles.population();
        let profiles = &self.profiles;
        let schema = plan_chunk(&mut [], &[], config, profiles, &population, now)?
            .schema()
            .clone();
        self.plan_ds
            .write_part_with(Ulid::generate(), &schema, |writer| {
                fresh
                    .items
                    .par_chunks_mut(PLAN_CHUNK)
                    .zip(fresh.meta.par_chunks(PLAN_CHUNK))
                    .try_for_each(|(items, meta)| {
                        let df = plan_chunk(items, meta, config, profiles, &population, now)?;
                        writer(&df)
                    })
            })
            .context("cannot record plans")?;
        Ok(())
    }
}

/// The inbox columns planning needs (not the signature or config identity).
fn read_inbox_part(path: &Path) -> anyhow::Result<DataFrame> {
    let file = std::fs::File::open(path)?;
    let columns = [
        "receipt_id",
        "webhook_id",
        "webhook_type",
        "contact_id",
        "email",
        "received_at",
    ];
    Ok(ParquetReader::new(file)
        .with_columns(Some(columns.iter().map(|c| c.to_string()).collect()))
        .finish()?)
}

/// Plan one slice of receipts, setting their due times; their rows of `plan/` as a frame.
/// Columns are built directly (no per-row structs or strings): one reused buffer for keys and
/// reasons.
fn plan_chunk(
    items: &mut [Pending],
    meta: &[(Option<WebhookType>, i64)],
    config: &Config,
    profiles: &ProfileCache,
    population: &[f64; crate::events::SLOTS],
    now: i64,
) -> anyhow::Result<DataFrame> {
    let n = items.len();
    let day = day_of(now);
    let debug = tracing::enabled!(tracing::Level::DEBUG);
    let mut key = String::new();
    let mut reason = String::new();
    let mut ids = StringChunkedBuilder::new("receipt_id".into(), n);
    let mut webhooks = StringChunkedBuilder::new("webhook_id".into(), n);
    let mut types = StringChunkedBuilder::new("webhook_type".into(), n);
    let mut emails = StringChunkedBuilder::new("email".into(), n);
    let mut reasons = StringChunkedBuilder::new("reason".into(), n);
    let mut contacts = Vec::with_capacity(n);
    let mut received = Vec::with_capacity(n);
    let mut dues = Vec::with_capacity(n);
    let mut slots = Vec::with_capacity(n);
    for (r, &(kind, received_at_ms)) in items.iter_mut().zip(meta) {
        let kind = kind
            .or_else(|| config.webhook(&r.webhook_id).map(|w| w.kind))
            .unwrap_or(WebhookType::Immediate);
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
        ids.append_value(receipt);
        webhooks.append_value(&*r.webhook_id);
        types.append_value(kind.as_str());
        emails.append_option(r.email.as_deref());
        reasons.append_value(&reason);
        contacts.push(r.contact_id);
        received.push(received_at_ms);
        dues.push(due);
        slots.push(slot.map(i32::from));
        r.due_at_ms = due;
        r.ready_at_ms = due;
        if debug {
            tracing::debug!(receipt = %r.receipt_id, webhook = %r.webhook_id, due_at = due, "planned: {reason}");
        }
    }
    let datetime = |name: &str, v: Vec<i64>| {
        Column::new(name.into(), v).cast(&DataType::Datetime(TimeUnit::Milliseconds, None))
    };
    let df = DataFrame::new(
        n,
        vec![
            ids.finish().into_column(),
            webhooks.finish().into_column(),
            types.finish().into_column(),
            Column::new("contact_id".into(), contacts),
            emails.finish().into_column(),
            datetime("received_at", received)?,
            datetime("due_at", dues)?,
            Column::new("slot".into(), slots),
            reasons.finish().into_column(),
            datetime("planned_at", vec![now; n])?,
        ],
    )?;
    Ok(df)
}
