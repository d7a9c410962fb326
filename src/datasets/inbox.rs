//! The inbox dataset: one row per accepted webhook post, durable before HubSpot hears 2xx.
//!
//! One writer thread owns the write-ahead log. Request handlers hand it receipts over a bounded
//! channel; it takes everything queued, checks each against the pending set (a HubSpot retry of
//! a contact already waiting must not become a second enrollment), appends the new ones to the
//! log with one fdatasync for the whole batch, and only then answers. Every second (or every
//! [`FLUSH_ROWS`] rows) the logged rows become a Parquet part and the log segment is dropped.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::wal::{self, Segment};
use super::{Dataset, concat_frames};
use crate::metrics::Metrics;

/// Rows are written to Parquet at least this often.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// ...or as soon as this many are waiting.
pub const FLUSH_ROWS: usize = 50_000;
/// Requests waiting for the writer before new ones get 503 (HubSpot retries).
const QUEUE: usize = 16_384;
/// Largest batch committed with one fdatasync.
const MAX_BATCH: usize = 4096;
const WAL_PREFIX: &str = "inbox";

/// One accepted webhook post.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub receipt_id: String,
    pub webhook_id: String,
    pub webhook_type: String,
    pub contact_id: Option<i64>,
    pub email: Option<String>,
    pub portal_id: Option<i64>,
    /// UTC, epoch milliseconds.
    pub received_at_ms: i64,
    /// `v1`, `v2`, `v3`, or `unsigned` (only where a connector allows it).
    pub signature: String,
    /// Identity of the config in force when the post was accepted.
    pub config: String,
}

impl Receipt {
    /// Who "the same contact" is for idempotency: the HubSpot id, else the email.
    pub fn pending_key(&self) -> PendingKey {
        pending_key(&self.webhook_id, self.contact_id, self.email.as_deref())
    }
}

/// See [`Receipt::pending_key`].
pub fn pending_key(webhook_id: &str, contact_id: Option<i64>, email: Option<&str>) -> PendingKey {
    let contact = match (contact_id, email) {
        (Some(id), _) => id.to_string(),
        (None, Some(email)) => email.to_ascii_lowercase(),
        (None, None) => String::new(),
    };
    (webhook_id.to_string(), contact)
}

/// (webhook id, contact id or lower-cased email).
pub type PendingKey = (String, String);

/// What happened to a post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Durable in the log; the receipt id.
    New(String),
    /// The contact already waits on this webhook; the earlier receipt id.
    Duplicate(String),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the store is busy; retry")]
    Busy,
    #[error("shutting down; retry")]
    ShuttingDown,
    #[error("cannot store the contact; retry")]
    Io,
}

struct Request {
    receipt: Receipt,
    reply: oneshot::Sender<Result<Stored, StoreError>>,
}

/// The handle request handlers use. Dropping every clone lets the writer flush and stop.
#[derive(Clone)]
pub struct Inbox {
    tx: SyncSender<Request>,
    pending: Arc<Mutex<HashMap<PendingKey, String>>>,
}

/// Owns the writer thread; [`InboxWriter::shutdown`] flushes and joins it.
pub struct InboxWriter {
    thread: Option<JoinHandle<()>>,
    compactor: Option<(SyncSender<()>, JoinHandle<()>)>,
}

impl Inbox {
    /// Recover the inbox under `data_dir` (quarantine torn parts, replay the log) and start
    /// the writer. Returns the handle and the writer to shut down at exit.
    ///
    /// `finished` says which receipts the dispatcher has finished with (enrolled, listed or
    /// failed for good): they are not pending, so the same contact posted again is accepted.
    pub fn open(
        data_dir: &Path,
        metrics: Metrics,
        finished: &dyn Fn(&str) -> bool,
    ) -> anyhow::Result<(Inbox, InboxWriter)> {
        let dataset = Dataset::open(data_dir, "inbox")?;
        let wal_dir = data_dir.join("wal");
        dataset.recover()?;
        let mut rows = read_receipts(&dataset)?;
        rows.extend(replay_log(&dataset, &wal_dir)?);

        let mut pending = HashMap::new();
        for r in rows.iter().filter(|r| !finished(&r.receipt_id)) {
            pending.insert(r.pending_key(), r.receipt_id.clone());
        }
        for (webhook, _) in pending.keys() {
            metrics.pending(webhook).inc();
        }
        tracing::info!(
            receipts = rows.len(),
            pending = pending.len(),
            "inbox opened"
        );
        let pending = Arc::new(Mutex::new(pending));

        let segment = Segment::create(&wal_dir, WAL_PREFIX)
            .with_context(|| format!("cannot create a log segment in {}", wal_dir.display()))?;
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let mut writer = Writer {
            dataset: dataset.clone(),
            wal_dir: wal_dir.clone(),
            segment,
            unflushed: Vec::new(),
            pending: pending.clone(),
            metrics,
        };
        let thread = std::thread::Builder::new()
            .name("inbox-writer".into())
            .spawn(move || writer.run(rx))?;
        let compactor = spawn_compactor(dataset, wal_dir)?;
        Ok((
            Inbox { tx, pending },
            InboxWriter {
                thread: Some(thread),
                compactor: Some(compactor),
            },
        ))
    }

    /// Store a receipt durably, or report the pending one it repeats.
    pub async fn store(&self, receipt: Receipt) -> Result<Stored, StoreError> {
        let (reply, rx) = oneshot::channel();
        match self.tx.try_send(Request { receipt, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(StoreError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(StoreError::ShuttingDown),
        }
        rx.await.unwrap_or(Err(StoreError::ShuttingDown))
    }

    /// The dispatcher is done with `receipt_id` (enrolled, listed, failed for good): a later
    /// post of the same contact to the same webhook is a new receipt, not a duplicate.
    pub fn release(&self, key: &PendingKey, receipt_id: &str, metrics: &Metrics) {
        let mut pending = self.pending.lock().unwrap();
        if pending.get(key).is_some_and(|id| id == receipt_id) {
            pending.remove(key);
            metrics.pending(&key.0).dec();
        }
    }

    /// Pending receipts per webhook.
    pub fn pending_count(&self) -> usize {
        self.pending.lock().unwrap().len()
    }
}

impl InboxWriter {
    /// Flush what is logged to Parquet and stop. Call after the last [`Inbox`] is dropped.
    pub fn shutdown(mut self) {
        if let Some((tx, handle)) = self.compactor.take() {
            drop(tx);
            let _ = handle.join();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Writer {
    dataset: Dataset,
    wal_dir: PathBuf,
    segment: Segment,
    unflushed: Vec<Receipt>,
    pending: Arc<Mutex<HashMap<PendingKey, String>>>,
    metrics: Metrics,
}

impl Writer {
    fn run(&mut self, rx: mpsc::Receiver<Request>) {
        let mut last_flush = Instant::now();
        loop {
            let first = match rx.recv_timeout(FLUSH_INTERVAL) {
                Ok(r) => Some(r),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            if let Some(first) = first {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(r) => batch.push(r),
                        Err(_) => break,
                    }
                }
                self.commit(batch);
            }
            if !self.unflushed.is_empty()
                && (self.unflushed.len() >= FLUSH_ROWS || last_flush.elapsed() >= FLUSH_INTERVAL)
            {
                self.flush();
                last_flush = Instant::now();
            }
        }
        if !self.unflushed.is_empty() {
            self.flush();
        }
        tracing::info!("inbox writer stopped; everything logged is in Parquet");
    }

    /// Group commit: one log write and one fdatasync for every new receipt in the batch.
    fn commit(&mut self, batch: Vec<Request>) {
        let started = Instant::now();
        let mut new = Vec::new();
        let mut replies = Vec::with_capacity(batch.len());
        {
            let mut pending = self.pending.lock().unwrap();
            for Request { receipt, reply } in batch {
                let key = receipt.pending_key();
                if let Some(existing) = pending.get(&key) {
                    replies.push((reply, Stored::Duplicate(existing.clone())));
                } else {
                    pending.insert(key, receipt.receipt_id.clone());
                    replies.push((reply, Stored::New(receipt.receipt_id.clone())));
                    new.push(receipt);
                }
            }
        }
        let encoded: Vec<Vec<u8>> = new
            .iter()
            .map(|r| serde_json::to_vec(r).expect("receipts serialize"))
            .collect();
        let result = if encoded.is_empty() {
            Ok(())
        } else {
            self.segment.append(encoded.iter().map(Vec::as_slice))
        };
        self.metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = result {
            tracing::error!(
                "cannot append to the inbox log {}: {e}",
                self.segment.path.display()
            );
            {
                let mut pending = self.pending.lock().unwrap();
                for r in &new {
                    pending.remove(&r.pending_key());
                }
            }
            // A duplicate of an earlier, durable receipt is still fine to acknowledge; a
            // duplicate of one in this failed batch is not.
            let failed: HashSet<&str> = new.iter().map(|r| r.receipt_id.as_str()).collect();
            for (reply, stored) in replies {
                let ok = matches!(&stored, Stored::Duplicate(id) if !failed.contains(id.as_str()));
                let _ = reply.send(if ok { Ok(stored) } else { Err(StoreError::Io) });
            }
            // Move what the log holds into Parquet and start a clean segment, if the disk lets us.
            self.flush();
            return;
        }
        for r in &new {
            self.metrics.pending(&r.webhook_id).inc();
        }
        self.unflushed.extend(new);
        for (reply, stored) in replies {
            let _ = reply.send(Ok(stored));
        }
    }

    /// Write everything logged so far as the Parquet part named after the segment, then
    /// start a new segment and delete the old one. On failure the rows stay in the log.
    fn flush(&mut self) {
        let next = match Segment::create(&self.wal_dir, WAL_PREFIX) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot start a new inbox log segment (will retry): {e}");
                return;
            }
        };
        if !self.unflushed.is_empty() {
            let written = receipts_frame(&self.unflushed)
                .and_then(|mut df| self.dataset.write_part(self.segment.id, &mut df));
            if let Err(e) = written {
                tracing::error!("cannot flush the inbox to Parquet (rows stay in the log): {e:#}");
                let _ = std::fs::remove_file(&next.path);
                return;
            }
        }
        let old = std::mem::replace(&mut self.segment, next);
        if let Err(e) = std::fs::remove_file(&old.path) {
            tracing::warn!(
                "cannot remove flushed log segment {}: {e}",
                old.path.display()
            );
        }
        tracing::debug!(rows = self.unflushed.len(), part = %old.id, "inbox flushed");
        self.unflushed.clear();
    }
}

/// At start-up: segments whose part exists were flushed already; the rest are replayed into
/// their parts. Returns the replayed receipts.
fn replay_log(dataset: &Dataset, wal_dir: &Path) -> anyhow::Result<Vec<Receipt>> {
    let mut out = Vec::new();
    for (id, path) in wal::segments(wal_dir, WAL_PREFIX)? {
        if dataset.part_path(id).exists() {
            std::fs::remove_file(&path)?;
            continue;
        }
        let replay = wal::replay(&path)
            .with_context(|| format!("cannot read inbox log {}", path.display()))?;
        if replay.torn_bytes > 0 {
            tracing::warn!(
                segment = %path.display(),
                bytes = replay.torn_bytes,
                "inbox log ends in a torn write (a crash mid-append); those posts were never acknowledged"
            );
        }
        let receipts: Vec<Receipt> = replay
            .records
            .iter()
            .filter_map(|r| serde_json::from_slice(r).ok())
            .collect();
        if !receipts.is_empty() {
            let mut df = receipts_frame(&receipts)?;
            dataset.write_part(id, &mut df)?;
            tracing::info!(segment = %path.display(), receipts = receipts.len(), "replayed inbox log");
        }
        std::fs::remove_file(&path)?;
        out.extend(receipts);
    }
    super::sync_dir(wal_dir).ok();
    Ok(out)
}

fn spawn_compactor(
    dataset: Dataset,
    wal_dir: PathBuf,
) -> anyhow::Result<(SyncSender<()>, JoinHandle<()>)> {
    let (stop, rx) = mpsc::sync_channel::<()>(0);
    let handle = std::thread::Builder::new()
        .name("inbox-compactor".into())
        .spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(Duration::from_secs(10)) {
                // A part whose log segment still exists may be replayed after a crash: leave
                // it alone until the segment is gone, or its rows could come back twice.
                let skip: HashSet<PathBuf> = wal::segments(&wal_dir, WAL_PREFIX)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(id, _)| dataset.part_path(id))
                    .collect();
                if let Err(e) = dataset.compact(&skip) {
                    tracing::warn!("inbox compaction failed (will retry): {e:#}");
                }
            }
        })?;
    Ok((stop, handle))
}

/// Receipts as a Polars frame with the inbox schema.
pub fn receipts_frame(rows: &[Receipt]) -> anyhow::Result<DataFrame> {
    let s = |name: &str, f: &dyn Fn(&Receipt) -> Option<&str>| {
        Column::new(name.into(), rows.iter().map(f).collect::<Vec<_>>())
    };
    let i = |name: &str, f: &dyn Fn(&Receipt) -> Option<i64>| {
        Column::new(name.into(), rows.iter().map(f).collect::<Vec<_>>())
    };
    let received = i("received_at", &|r| Some(r.received_at_ms))
        .cast(&DataType::Datetime(TimeUnit::Milliseconds, None))?;
    Ok(DataFrame::new(
        rows.len(),
        vec![
            s("receipt_id", &|r| Some(&r.receipt_id)),
            s("webhook_id", &|r| Some(&r.webhook_id)),
            s("webhook_type", &|r| Some(&r.webhook_type)),
            i("contact_id", &|r| r.contact_id),
            s("email", &|r| r.email.as_deref()),
            i("portal_id", &|r| r.portal_id),
            received,
            s("signature", &|r| Some(&r.signature)),
            s("config", &|r| Some(&r.config)),
        ],
    )?)
}

/// Every receipt in the inbox's Parquet parts, each once (a compaction in progress can show
/// a row in two parts for a moment).
pub fn read_receipts(dataset: &Dataset) -> anyhow::Result<Vec<Receipt>> {
    let frames: Vec<DataFrame> = dataset.read_all()?.into_iter().map(|(_, df)| df).collect();
    if frames.is_empty() {
        return Ok(Vec::new());
    }
    let df = concat_frames(frames)?;
    receipts_from_frame(&df)
}

/// The receipts of one inbox frame (one part, or several stacked), each receipt id once.
pub fn receipts_from_frame(df: &DataFrame) -> anyhow::Result<Vec<Receipt>> {
    let str_col = |name: &str| -> anyhow::Result<Vec<Option<String>>> {
        Ok(df
            .column(name)?
            .str()?
            .iter()
            .map(|v| v.map(str::to_string))
            .collect())
    };
    let i64_col = |name: &str| -> anyhow::Result<Vec<Option<i64>>> {
        Ok(df
            .column(name)?
            .cast(&DataType::Int64)?
            .i64()?
            .iter()
            .collect())
    };
    let ids = str_col("receipt_id")?;
    let webhooks = str_col("webhook_id")?;
    let types = str_col("webhook_type")?;
    let contacts = i64_col("contact_id")?;
    let emails = str_col("email")?;
    let portals = i64_col("portal_id")?;
    let received = i64_col("received_at")?;
    let sigs = str_col("signature")?;
    let configs = str_col("config")?;
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(ids.len());
    for i in 0..ids.len() {
        let id = ids[i].clone().unwrap_or_default();
        if !seen.insert(id.clone()) {
            continue;
        }
        out.push(Receipt {
            receipt_id: id,
            webhook_id: webhooks[i].clone().unwrap_or_default(),
            webhook_type: types[i].clone().unwrap_or_default(),
            contact_id: contacts[i],
            email: emails[i].clone(),
            portal_id: portals[i],
            received_at_ms: received[i].unwrap_or_default(),
            signature: sigs[i].clone().unwrap_or_default(),
            config: configs[i].clone().unwrap_or_default(),
        });
    }
    Ok(out)
}
