//! The inbox dataset (`{data_dir}/inbox/`): one row per accepted webhook post, durable before
//! HubSpot hears 2xx.
//!
//! One writer thread owns the write-ahead log (`{data_dir}/wal/`). Request handlers hand it
//! receipts over a bounded channel; it takes everything queued, checks each against the
//! [`PendingSet`] (a HubSpot retry of a contact already waiting must not become a second
//! enrollment), appends the new ones to the log with one fdatasync for the whole batch, and
//! only then answers. Every second (or every [`FLUSH_ROWS`] rows) the logged rows become a
//! Parquet part named after the log segment, and the segment is dropped.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use polars::prelude::*;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::pending::{Answered, Body, Contact, PendingSet, Repeat, SendsAs};
use super::{datetime_ms, datetime_ms_opt, stored_enum};
use crate::config::WebhookType;
use crate::metrics::Metrics;
use crate::store::wal::{self, Segment};
use crate::store::{self, Dataset, concat_frames, read_columns_or_null, sync_dir};
use crate::throttle::Throttle;

/// The folder under the data directory.
pub const NAME: &str = "inbox";
/// The write-ahead log's folder under the data directory.
pub const WAL_DIR: &str = "wal";

/// The signature of a post taken without one (`allow_unsigned`).
pub const UNSIGNED: &str = "unsigned";
/// The mark on a signature of a post only ever recorded as a dry run, even once its connector
/// calls HubSpot: one taken unsigned in dry run (an exposed listener may take it from anyone),
/// or an action's execution answered in dry run (its contact went on at once).
pub const DRY_RUN_MARK: &str = " (dry run)";

/// Whether a receipt with this stored signature is only ever recorded as a dry run.
pub fn dry_run_only(signature: &str) -> bool {
    signature.ends_with(DRY_RUN_MARK)
}

/// Whether a receipt with this stored signature was taken without one (`allow_unsigned`).
fn unsigned(signature: &str) -> bool {
    signature.starts_with(UNSIGNED)
}

/// Column names, in schema order.
pub mod col {
    /// A ULID, issued on receipt.
    pub const RECEIPT_ID: &str = "receipt_id";
    pub const WEBHOOK_ID: &str = "webhook_id";
    pub const WEBHOOK_TYPE: &str = "webhook_type";
    pub const CONTACT_ID: &str = "contact_id";
    pub const EMAIL: &str = "email";
    pub const PORTAL_ID: &str = "portal_id";
    /// UTC, a Parquet timestamp in milliseconds without a zone.
    pub const RECEIVED_AT: &str = "received_at";
    /// `v1`, `v2`, `v3` or [`super::UNSIGNED`], with [`super::DRY_RUN_MARK`] when only
    /// ever recorded as a dry run.
    pub const SIGNATURE: &str = "signature";
    /// Identity of the config in force.
    pub const CONFIG: &str = "config";
    /// A workflow action's callback id (null for webhooks, and absent from older parts).
    pub const CALLBACK_ID: &str = "callback_id";
    /// XXH3-128 of the post's body, hex (absent from older parts).
    pub const BODY_HASH: &str = "body_hash";
    /// The contact's time zone as posted (absent from older parts).
    pub const TIME_ZONE: &str = "time_zone";
    /// When HubSpot's hold on an action's contact ends, as sendtime asked for it on receipt
    /// (null for webhooks, and absent from older parts).
    pub const HOLD_ENDS: &str = "hold_ends";
}

/// The dataset under `data_dir`.
pub fn dataset(data_dir: &Path) -> anyhow::Result<Dataset> {
    Dataset::open(data_dir, NAME)
}

/// Rows are written to Parquet at least this often.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// The longest wait between flushes that fail ([`Writer::flush_retry`]).
const MAX_FLUSH_RETRY: Duration = Duration::from_secs(5);
/// ...or as soon as this many are waiting.
pub const FLUSH_ROWS: usize = 50_000;
/// Receipts logged but not yet in Parquet past which new posts are refused (503, HubSpot
/// retries): flushes keep failing, and each retry encodes the whole backlog.
const MAX_UNFLUSHED: usize = 4 * FLUSH_ROWS;
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
    pub webhook_type: WebhookType,
    pub contact_id: Option<i64>,
    pub email: Option<String>,
    pub portal_id: Option<i64>,
    /// UTC, epoch milliseconds.
    pub received_at_ms: i64,
    /// `v1`, `v2`, `v3`, or `unsigned` (only where a connector allows it).
    pub signature: String,
    /// Identity of the config in force when the post was accepted.
    pub config: String,
    /// A workflow action's execution: the callback that releases the contact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_id: Option<String>,
    /// XXH3-128 of the post's body (hex): a replay of it is recognised for three days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_hash: Option<String>,
    /// The contact's time zone as posted (HubSpot's `america_slash_new_york`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// An action's execution answered BLOCK: when HubSpot's hold on its contact ends (epoch
    /// ms), by the window in force at receipt. Planning keeps within it, even when the
    /// config's window has grown by then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_ends_ms: Option<i64>,
}

impl Receipt {
    /// Taken without a signature (`allow_unsigned`).
    pub fn unsigned(&self) -> bool {
        unsigned(&self.signature)
    }

    /// What this receipt's execution was answered, when it is one and that is known.
    pub fn answered(&self) -> Option<Answered> {
        answered(
            self.callback_id.is_some(),
            dry_run_only(&self.signature),
            self.received_at_ms,
            self.hold_ends_ms,
        )
    }

    /// The contact as the pending set knows it.
    pub fn contact(&self) -> Contact<'_> {
        Contact {
            webhook_id: &self.webhook_id,
            contact_id: self.contact_id,
            email: self.email.as_deref(),
            callback_id: self.callback_id.as_deref(),
            body: self.body_hash.as_deref().map(|hash| Body {
                hash,
                received_at_ms: self.received_at_ms,
            }),
            sends_as: Some(SendsAs {
                enrolls: self.webhook_type.enrolls(),
                portal: self.portal_id,
            }),
        }
    }
}

/// An execution's answer, from its receipt: SUCCESS when only ever recorded as a dry run, else
/// the hold asked for; unknown for receipts of versions that kept no hold.
fn answered(
    execution: bool,
    dry_run_only: bool,
    received_at_ms: i64,
    hold_ends_ms: Option<i64>,
) -> Option<Answered> {
    match (execution, dry_run_only, hold_ends_ms) {
        (false, ..) => None,
        (true, true, _) => Some(Answered::Released),
        (true, false, hold_ends) => hold_ends.map(|h| Answered::Hold(h - received_at_ms)),
    }
}

/// What happened to a post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Durable in the log; the receipt id.
    New(String),
    /// The contact already waits on this webhook; the earlier receipt id, and for an
    /// execution what it was answered, when known.
    Duplicate(String, Option<Answered>),
    /// A replay of a body stored within the replay window as this receipt, since finished.
    Finished(String),
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
    /// Contacts merged into the receipt's ([`crate::receiver::payload::Contact::merged_ids`]).
    merged_ids: Vec<i64>,
    reply: oneshot::Sender<Result<Stored, StoreError>>,
}

/// The handle request handlers use. Dropping every clone lets the writer flush and stop.
#[derive(Clone)]
pub struct Inbox {
    tx: SyncSender<Request>,
    pending: PendingSet,
}

/// Owns the writer thread; [`InboxWriter::shutdown`] flushes and joins it.
pub struct InboxWriter {
    thread: Option<JoinHandle<()>>,
    compactor: Option<(SyncSender<()>, JoinHandle<()>)>,
    /// Notified when the writer thread ends, however it ends.
    ended: Arc<tokio::sync::Notify>,
}

/// Notifies when dropped: at the end of the writer thread, a panic's unwinding included.
struct NotifyOnDrop(Arc<tokio::sync::Notify>);

impl Drop for NotifyOnDrop {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

/// Bring the inbox under `data_dir` to a readable state after a stop or a crash: finish or
/// roll back interrupted compactions, and move what the write-ahead log holds into parts.
/// Returns every receipt's key. Run before [`Inbox::start`], by the process that owns the
/// folder.
pub fn recover(data_dir: &Path) -> anyhow::Result<Vec<ReceiptKey>> {
    let dataset = dataset(data_dir)?;
    dataset.recover()?;
    let mut keys = read_keys(&dataset)?;
    let replayed = replay_log(&dataset, data_dir)?;
    keys.extend(replayed.iter().map(|(part, r)| ReceiptKey::of(r, *part)));
    Ok(keys)
}

/// The account a stored `portal_id` (inbox or plan) names: a positive id; none in rows of
/// older versions that recorded none.
pub fn account(portal_id: Option<i64>) -> Option<std::num::NonZeroU64> {
    portal_id
        .filter(|p| *p > 0)
        .and_then(|p| std::num::NonZeroU64::new(p as u64))
}

/// Who a receipt is for, as the pending set knows it: all a restart needs to know which
/// contacts wait, whatever else the row holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptKey {
    pub receipt_id: String,
    pub webhook_id: String,
    pub contact_id: Option<i64>,
    pub email: Option<String>,
    pub callback_id: Option<String>,
    pub body_hash: Option<String>,
    pub received_at_ms: i64,
    /// Only ever recorded as a dry run ([`DRY_RUN_MARK`]).
    pub dry_run_only: bool,
    /// Taken without a signature (`allow_unsigned`).
    pub unsigned: bool,
    /// An execution's hold, as asked of HubSpot.
    pub hold_ends_ms: Option<i64>,
    /// The account it was taken for.
    pub portal_id: Option<i64>,
    /// The type of post it was taken as (none: unreadable).
    pub webhook_type: Option<WebhookType>,
    /// The part it is stored in (none: a name that is no part's).
    pub part: Option<ulid::Ulid>,
}

impl ReceiptKey {
    fn of(r: &Receipt, part: ulid::Ulid) -> ReceiptKey {
        ReceiptKey {
            receipt_id: r.receipt_id.clone(),
            webhook_id: r.webhook_id.clone(),
            contact_id: r.contact_id,
            email: r.email.clone(),
            callback_id: r.callback_id.clone(),
            body_hash: r.body_hash.clone(),
            received_at_ms: r.received_at_ms,
            dry_run_only: dry_run_only(&r.signature),
            unsigned: r.unsigned(),
            hold_ends_ms: r.hold_ends_ms,
            portal_id: r.portal_id,
            webhook_type: Some(r.webhook_type),
            part: Some(part),
        }
    }

    /// What this receipt's execution was answered, when it is one and that is known.
    pub fn answered(&self) -> Option<Answered> {
        answered(
            self.callback_id.is_some(),
            self.dry_run_only,
            self.received_at_ms,
            self.hold_ends_ms,
        )
    }

    pub fn contact(&self) -> Contact<'_> {
        Contact {
            webhook_id: &self.webhook_id,
            contact_id: self.contact_id,
            email: self.email.as_deref(),
            callback_id: self.callback_id.as_deref(),
            body: self.body_hash.as_deref().map(|hash| Body {
                hash,
                received_at_ms: self.received_at_ms,
            }),
            sends_as: self.webhook_type.map(|t| SendsAs {
                enrolls: t.enrolls(),
                portal: self.portal_id,
            }),
        }
    }
}

impl Inbox {
    /// Start the writer for the inbox under `data_dir` (after [`recover`]), checking posts
    /// against `pending`. Returns the handle and the writer to shut down at exit.
    pub fn start(
        data_dir: &Path,
        pending: PendingSet,
        metrics: Metrics,
    ) -> anyhow::Result<(Inbox, InboxWriter)> {
        let dataset = dataset(data_dir)?;
        let wal_dir = data_dir.join(WAL_DIR);
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
            append_errors: Throttle::default(),
            flush_errors: Throttle::default(),
            flush_retry: None,
            unremoved: Vec::new(),
            removal_errors: Throttle::default(),
        };
        let ended = Arc::new(tokio::sync::Notify::new());
        let on_end = NotifyOnDrop(ended.clone());
        let thread = std::thread::Builder::new()
            .name("inbox-writer".into())
            .spawn(move || {
                let _on_end = on_end;
                writer.run(rx);
            })?;
        let compactor = spawn_compactor(dataset, wal_dir)?;
        Ok((
            Inbox { tx, pending },
            InboxWriter {
                thread: Some(thread),
                compactor: Some(compactor),
                ended,
            },
        ))
    }

    /// Store a receipt durably, or report the pending one it repeats.
    pub async fn store(
        &self,
        receipt: Receipt,
        merged_ids: Vec<i64>,
    ) -> Result<Stored, StoreError> {
        let (reply, rx) = oneshot::channel();
        match self.tx.try_send(Request {
            receipt,
            merged_ids,
            reply,
        }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(StoreError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(StoreError::ShuttingDown),
        }
        rx.await.unwrap_or(Err(StoreError::ShuttingDown))
    }

    /// Receipts pending per webhook or action id.
    pub fn pending_by_webhook(&self) -> std::collections::BTreeMap<String, u64> {
        self.pending.by_webhook()
    }

    /// Whether as many receipts taken unsigned wait as may: an unsigned post is refused.
    pub fn unsigned_full(&self) -> bool {
        self.pending.unsigned_full()
    }
}

impl InboxWriter {
    /// Resolves when the writer thread ends: while posts come in, only by a panic, after
    /// which every post would be refused.
    pub fn ended(&self) -> impl std::future::Future<Output = ()> + use<> {
        let ended = self.ended.clone();
        async move { ended.notified().await }
    }

    /// Flush what is logged to Parquet and stop. Call after the last [`Inbox`] is dropped.
    /// An error when the writer thread panicked (what it acknowledged is in its log).
    pub fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some((tx, handle)) = self.compactor.take() {
            drop(tx);
            let _ = handle.join();
        }
        match self.thread.take().map(JoinHandle::join) {
            Some(Err(_)) => anyhow::bail!(
                "the inbox writer failed; every post it acknowledged is in its log, replayed at the next start"
            ),
            _ => Ok(()),
        }
    }
}

struct Writer {
    dataset: Dataset,
    wal_dir: PathBuf,
    segment: Segment,
    unflushed: Vec<Receipt>,
    pending: PendingSet,
    metrics: Metrics,
    /// A full disk fails every commit and flush: logged once a minute, not each time.
    append_errors: Throttle,
    flush_errors: Throttle,
    /// After a failed flush, when the next may be tried and the wait after it fails again
    /// (a second, doubling to five: a disk that frees up takes posts again within that): every batch tried one, with 50,000 rows waiting or
    /// after a failed append, a 4 MiB segment made and removed and every row encoded each
    /// time, and the slowed writer answered posts 429 (an audit).
    flush_retry: Option<(Instant, Duration)>,
    /// Flushed segments whose removal failed: tried again at each flush, since archiving
    /// waits while one is left.
    unremoved: Vec<PathBuf>,
    removal_errors: Throttle,
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
            } else if !self.unremoved.is_empty() && last_flush.elapsed() >= FLUSH_INTERVAL {
                self.remove_flushed();
                last_flush = Instant::now();
            }
        }
        if !self.unflushed.is_empty() {
            // Once more at the stop, however soon after a failure.
            self.flush_retry = None;
            self.flush();
        }
        tracing::info!("inbox writer stopped; everything logged is in Parquet");
    }

    /// Group commit: one log write and one fdatasync for every new receipt in the batch.
    fn commit(&mut self, batch: Vec<Request>) {
        if self.unflushed.len() >= MAX_UNFLUSHED {
            if let Some(suppressed) = self.append_errors.due() {
                tracing::error!(
                    suppressed,
                    backlog = self.unflushed.len(),
                    "the inbox cannot be flushed to Parquet: new posts get 503 (HubSpot retries) until it can"
                );
            }
            for Request { reply, .. } in batch {
                let _ = reply.send(Err(StoreError::Io));
            }
            return;
        }
        let started = Instant::now();
        let mut new = Vec::new();
        let mut replies = Vec::with_capacity(batch.len());
        for Request {
            receipt,
            merged_ids,
            reply,
        } in batch
        {
            // A contact merged into this one still waits here: the same person.
            let waiting =
                self.pending
                    .waiting_for_any(receipt.contact(), &merged_ids, receipt.unsigned());
            let repeat = match waiting {
                Some(existing) => Err(Repeat::Waiting(existing)),
                None => {
                    self.pending
                        .insert(receipt.contact(), &receipt.receipt_id, receipt.unsigned())
                }
            };
            match repeat {
                Err(Repeat::Waiting(existing)) => {
                    let answer = self.pending.answer_of(&existing);
                    replies.push((reply, Stored::Duplicate(existing, answer)))
                }
                Err(Repeat::Finished(existing)) => {
                    replies.push((reply, Stored::Finished(existing)))
                }
                Ok(()) => {
                    if let Some(answer) = receipt.answered() {
                        self.pending.answered(&receipt.receipt_id, answer);
                    }
                    replies.push((reply, Stored::New(receipt.receipt_id.clone())));
                    new.push(receipt);
                }
            }
        }
        let encoded: Vec<Vec<u8>> = new
            .iter()
            .map(|r| serde_json::to_vec(r).expect("receipts serialize"))
            .collect();
        // A batch of repeats writes nothing: not a commit (it filled the histogram with
        // microseconds while HubSpot retried).
        let result = if encoded.is_empty() {
            Ok(())
        } else {
            let appended = self.segment.append(encoded.iter().map(Vec::as_slice));
            self.metrics
                .commit_seconds
                .observe(started.elapsed().as_secs_f64());
            appended
        };
        if let Err(e) = result {
            let e = format!(
                "cannot append to the inbox log {} (posts get 503 and HubSpot retries): {e}",
                self.segment.path.display()
            );
            if let Some(suppressed) = self.append_errors.due() {
                tracing::error!(suppressed, "{e}");
            }
            // Until a flush starts a new segment the log can take posts in.
            self.metrics.write_failed(NAME, e);
            for r in &new {
                self.pending.withdraw(r.contact(), &r.receipt_id);
            }
            // A duplicate of an earlier, durable receipt is still fine to acknowledge; a
            // duplicate of one in this failed batch is not.
            let failed: HashSet<&str> = new.iter().map(|r| r.receipt_id.as_str()).collect();
            // (Only then: a scan of three days of bodies, under the lock every post takes.)
            let repeats = |(_, stored): &(_, Stored)| matches!(stored, Stored::Duplicate(id, _) if failed.contains(id.as_str()));
            if replies.iter().any(repeats) {
                self.pending.forget_repeats_of(&failed);
            }
            for (reply, stored) in replies {
                let ok = match &stored {
                    Stored::Duplicate(id, _) => !failed.contains(id.as_str()),
                    Stored::Finished(id) => !failed.contains(id.as_str()),
                    Stored::New(_) => false,
                };
                let _ = reply.send(if ok { Ok(stored) } else { Err(StoreError::Io) });
            }
            // Move what the log holds into Parquet and start a clean segment, if the disk lets us.
            self.flush();
            return;
        }
        self.unflushed.extend(new);
        for (reply, stored) in replies {
            let _ = reply.send(Ok(stored));
        }
    }

    /// Write everything logged so far as the Parquet part named after the segment, then
    /// start a new segment and delete the old one. On failure the rows stay in the log, and
    /// the next flush waits ([`Writer::flush_retry`]).
    fn flush(&mut self) {
        if self.flush_retry.is_some_and(|(at, _)| Instant::now() < at) {
            return;
        }
        if !self.try_flush() {
            let wait = self
                .flush_retry
                .map_or(FLUSH_INTERVAL, |(_, wait)| (wait * 2).min(MAX_FLUSH_RETRY));
            self.flush_retry = Some((Instant::now() + wait, wait));
        } else {
            self.flush_retry = None;
        }
    }

    /// [`Writer::flush`] once: false when it failed.
    fn try_flush(&mut self) -> bool {
        let next = match Segment::create(&self.wal_dir, WAL_PREFIX) {
            Ok(s) => s,
            Err(e) => {
                let e = format!(
                    "cannot start a new log segment in {} (will retry): {e}",
                    self.wal_dir.display()
                );
                if let Some(suppressed) = self.flush_errors.due() {
                    tracing::error!(suppressed, "{e}");
                }
                self.metrics.write_failed(NAME, e);
                return false;
            }
        };
        if !self.unflushed.is_empty() {
            let written = frame(&self.unflushed)
                .and_then(|mut df| self.dataset.write_part(self.segment.id, &mut df));
            if let Err(e) = written {
                let e = format!("cannot flush the inbox to Parquet (rows stay in the log): {e:#}");
                if let Some(suppressed) = self.flush_errors.due() {
                    tracing::error!(suppressed, "{e}");
                }
                self.metrics.write_failed(NAME, e);
                // The part may be in place (a folder fsync failed after the rename) while
                // this segment takes more rows: take it back, so that a part named after the
                // segment means the segment is flushed. Should that fail too, start-up still
                // replays what the part lacks.
                let _ = self.dataset.remove_part(self.segment.id);
                let _ = std::fs::remove_file(&next.path);
                return false;
            }
            // Before its segment goes: the compactor leaves a part alone while it is there,
            // so the part is not merged away before its receipts are recorded.
            (self.pending).flushed(
                self.segment.id,
                (self.unflushed.iter()).map(|r| (r.receipt_id.as_str(), r.contact())),
            );
        }
        self.metrics.write_succeeded(NAME);
        let old = std::mem::replace(&mut self.segment, next);
        self.unremoved.push(old.path);
        self.remove_flushed();
        tracing::debug!(rows = self.unflushed.len(), part = %old.id, "inbox flushed");
        self.unflushed.clear();
        true
    }

    /// Remove flushed segments, durably: gone before the compactor may merge (and remove)
    /// their parts, or a power loss could bring a segment back without its part.
    fn remove_flushed(&mut self) {
        let Writer {
            unremoved,
            wal_dir,
            removal_errors,
            ..
        } = self;
        unremoved.retain(|path| {
            let removed = match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => sync_dir(wal_dir),
            };
            if let Err(e) = &removed
                && let Some(suppressed) = removal_errors.due()
            {
                tracing::warn!(
                    suppressed,
                    "cannot remove flushed log segment {} (will retry; archiving waits): {e}",
                    path.display()
                );
            }
            removed.is_err()
        });
    }
}

/// At start-up: every segment's receipts that are not in the part named after it are
/// replayed into a part (a segment whose part exists was flushed, unless a flush published
/// its part and failed after, while the segment took more rows). A segment holding a record
/// that cannot be decoded (written by a newer version?) is moved to `quarantine/wal/` rather
/// than deleted. Returns the replayed receipts, each with the part it is now in.
fn replay_log(dataset: &Dataset, data_dir: &Path) -> anyhow::Result<Vec<(ulid::Ulid, Receipt)>> {
    let wal_dir = &data_dir.join(WAL_DIR);
    let mut out = Vec::new();
    let segments = wal::segments(wal_dir, WAL_PREFIX)?;
    let any = !segments.is_empty();
    for (id, path) in segments {
        let replay = wal::replay(&path)
            .with_context(|| format!("cannot read inbox log {}", path.display()))?;
        let mut receipts: Vec<Receipt> = replay
            .records
            .iter()
            .filter_map(|r| serde_json::from_slice(r).ok())
            .collect();
        let undecodable = replay.records.len() - receipts.len();
        let part = dataset.part_path(id);
        let part_id = if part.exists() {
            let df = read_columns_or_null(&part, &[(col::RECEIPT_ID, DataType::String)])?;
            let flushed: HashSet<&str> = df
                .column(col::RECEIPT_ID)?
                .str()?
                .iter()
                .flatten()
                .collect();
            receipts.retain(|r| !flushed.contains(r.receipt_id.as_str()));
            // The rest go to the part after it, whole: a replay cut short after writing it
            // (before the segment went) writes it again, not the rows again beside it (a
            // random id did, an audit found).
            leftover_part(id)
        } else {
            id
        };
        if !receipts.is_empty() {
            let mut df = frame(&receipts)?;
            dataset.write_part(part_id, &mut df)?;
            tracing::info!(segment = %path.display(), receipts = receipts.len(), "replayed inbox log");
        }
        if undecodable > 0 || !replay.skipped.is_empty() || replay.cut {
            // Never deleted: what could not be read may be an acknowledged contact.
            let quarantine = data_dir.join("quarantine").join(WAL_DIR);
            crate::store::create_dir_durably(&quarantine)?;
            let dest = quarantine.join(path.file_name().context("segment without a name")?);
            std::fs::rename(&path, &dest)?;
            crate::store::sync_dir(&quarantine)?;
            if undecodable > 0 {
                tracing::error!(
                    segment = %path.display(),
                    moved_to = %dest.display(),
                    records = undecodable,
                    "inbox log records this sendtime cannot read (written by a newer version?) were kept aside, not replayed"
                );
            }
            if replay.cut {
                tracing::error!(
                    segment = %path.display(),
                    moved_to = %dest.display(),
                    replayed = receipts.len(),
                    "inbox log was cut short (it is shorter than it was allocated): acknowledged posts after the cut may be lost; every record before it was replayed and the segment is kept aside"
                );
            }
            if replay.only_torn_tail() {
                tracing::warn!(
                    segment = %path.display(),
                    moved_to = %dest.display(),
                    bytes = replay.skipped_bytes(),
                    replayed = receipts.len(),
                    "inbox log ends in a torn write (a crash mid-append; those posts were never acknowledged); the segment is kept aside"
                );
            } else if !replay.skipped.is_empty() {
                tracing::error!(
                    segment = %path.display(),
                    moved_to = %dest.display(),
                    skipped = ?replay.skipped,
                    replayed = receipts.len(),
                    "inbox log is damaged: the byte ranges (offset, length) shown were skipped and every intact record around them replayed; the segment is kept aside for inspection"
                );
            }
        } else {
            std::fs::remove_file(&path)?;
        }
        out.extend(receipts.into_iter().map(|r| (part_id, r)));
    }
    // The segments' removal is durable before anything built on the parts (an erase's
    // rewrite) is: a segment back after a power loss would bring its rows back (an audit).
    if any {
        sync_dir(wal_dir).with_context(|| format!("cannot sync {}", wal_dir.display()))?;
    }
    Ok(out)
}

/// The part a segment's receipts missing from its own part are replayed into: the same for
/// each replay of the segment.
fn leftover_part(segment: ulid::Ulid) -> ulid::Ulid {
    segment.increment().unwrap_or_else(|last| last)
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
                if let Err(e) = dataset.compact(&|part| logged(&wal_dir, part)) {
                    tracing::warn!("inbox compaction failed (will retry): {e:#}");
                }
            }
        })?;
    Ok((stop, handle))
}

/// Whether the inbox part `part` still has its log segment in `wal_dir`, asked by compaction
/// of each part once the parts are listed: a segment is made before its part and removed
/// after it, so a part listed while its segment is there is left. (A list of segments taken
/// before the parts missed one made in between, an audit found: with a flush taken back and
/// written again under its name, that part was hidden as a merge's source, and deleted with
/// the receipts written since.) A segment that cannot be looked for leaves its part too.
fn logged(wal_dir: &Path, part: &Path) -> bool {
    store::part_id(part)
        .is_none_or(|id| (wal::segment_path(wal_dir, WAL_PREFIX, id).try_exists()).unwrap_or(true))
}

/// Whether any inbox part still has its log segment (a flush whose segment could not be
/// removed): then archiving waits, since a crash would replay the segment and bring the rows
/// it moved back.
pub fn any_part_logged(data_dir: &Path) -> anyhow::Result<bool> {
    let dataset = dataset(data_dir)?;
    for (id, _) in wal::segments(&data_dir.join(WAL_DIR), WAL_PREFIX)? {
        if store::exists(&dataset.part_path(id))? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Receipts as a frame in schema order: the one writer of the inbox schema.
pub fn frame(rows: &[Receipt]) -> anyhow::Result<DataFrame> {
    let s = |name: &str, f: &dyn Fn(&Receipt) -> Option<&str>| {
        Column::new(name.into(), rows.iter().map(f).collect::<Vec<_>>())
    };
    let i = |name: &str, f: &dyn Fn(&Receipt) -> Option<i64>| {
        Column::new(name.into(), rows.iter().map(f).collect::<Vec<_>>())
    };
    Ok(DataFrame::new(
        rows.len(),
        vec![
            s(col::RECEIPT_ID, &|r| Some(&r.receipt_id)),
            s(col::WEBHOOK_ID, &|r| Some(&r.webhook_id)),
            s(col::WEBHOOK_TYPE, &|r| Some(r.webhook_type.as_str())),
            i(col::CONTACT_ID, &|r| r.contact_id),
            s(col::EMAIL, &|r| r.email.as_deref()),
            i(col::PORTAL_ID, &|r| r.portal_id),
            datetime_ms(
                col::RECEIVED_AT,
                rows.iter().map(|r| r.received_at_ms).collect(),
            )?,
            s(col::SIGNATURE, &|r| Some(&r.signature)),
            s(col::CONFIG, &|r| Some(&r.config)),
            s(col::CALLBACK_ID, &|r| r.callback_id.as_deref()),
            s(col::BODY_HASH, &|r| r.body_hash.as_deref()),
            s(col::TIME_ZONE, &|r| r.time_zone.as_deref()),
            datetime_ms_opt(
                col::HOLD_ENDS,
                rows.iter().map(|r| r.hold_ends_ms).collect(),
            )?,
        ],
    )?)
}

/// Each live receipt's id, webhook, type (none: one this build does not know) and receipt
/// time, a part at a time; a part (or row) that cannot be read is passed over and moves
/// nothing (the lift report reads beside `serve`, whose planning sets it aside).
pub fn for_each_received(
    data_dir: &Path,
    mut f: impl FnMut(&str, &str, Option<WebhookType>, i64),
) -> anyhow::Result<()> {
    let columns = [
        col::RECEIPT_ID,
        col::WEBHOOK_ID,
        col::WEBHOOK_TYPE,
        col::RECEIVED_AT,
    ];
    for path in dataset(data_dir)?.parts()? {
        let Ok(df) = store::read_present_columns(&path, &columns) else {
            continue;
        };
        let [ids, webhooks, types] = [col::RECEIPT_ID, col::WEBHOOK_ID, col::WEBHOOK_TYPE]
            .map(|name| df.column(name).and_then(|c| c.str()));
        let (Ok(ids), Ok(webhooks), Ok(types), Ok(received)) =
            (ids, webhooks, types, super::ints(&df, col::RECEIVED_AT))
        else {
            continue;
        };
        for (i, ((id, webhook), kind)) in ids
            .iter()
            .zip(webhooks.iter())
            .zip(types.iter())
            .enumerate()
        {
            if let (Some(id), Some(webhook), Some(at)) = (id, webhook, received[i]) {
                f(id, webhook, kind.and_then(WebhookType::parse), at);
            }
        }
    }
    Ok(())
}

/// Every receipt's key in the inbox's parts, each once (a compaction in progress can show a
/// row in two parts for a moment).
pub fn read_keys(dataset: &Dataset) -> anyhow::Result<Vec<ReceiptKey>> {
    let read = dataset.read_all()?;
    // Each row's part.
    let parts: Vec<Option<ulid::Ulid>> = (read.iter())
        .flat_map(|(path, df)| std::iter::repeat_n(store::part_id(path), df.height()))
        .collect();
    let frames: Vec<DataFrame> = read.into_iter().map(|(_, df)| df).collect();
    if frames.is_empty() {
        return Ok(Vec::new());
    }
    let df = concat_frames(frames)?;
    let ids = super::strs(&df, col::RECEIPT_ID)?;
    let webhooks = super::strs(&df, col::WEBHOOK_ID)?;
    let contacts = super::ints(&df, col::CONTACT_ID)?;
    let emails = super::strs(&df, col::EMAIL)?;
    let callbacks = super::strs_or_null(&df, col::CALLBACK_ID)?;
    let bodies = super::strs_or_null(&df, col::BODY_HASH)?;
    let received = super::ints(&df, col::RECEIVED_AT)?;
    let signatures = super::strs(&df, col::SIGNATURE)?;
    let holds = super::ints_or_null(&df, col::HOLD_ENDS)?;
    let portals = super::ints(&df, col::PORTAL_ID)?;
    let types = super::strs(&df, col::WEBHOOK_TYPE)?;
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(ids.len());
    for (i, id) in ids.into_iter().enumerate() {
        let receipt_id = id.unwrap_or_default();
        if seen.insert(receipt_id.clone()) {
            out.push(ReceiptKey {
                receipt_id,
                webhook_id: webhooks[i].clone().unwrap_or_default(),
                contact_id: contacts[i],
                email: emails[i].clone(),
                callback_id: callbacks[i].clone(),
                body_hash: bodies[i].clone(),
                received_at_ms: received[i].unwrap_or_default(),
                dry_run_only: signatures[i].as_deref().is_some_and(dry_run_only),
                unsigned: signatures[i].as_deref().is_some_and(unsigned),
                hold_ends_ms: holds[i],
                portal_id: portals[i],
                webhook_type: types[i].as_deref().and_then(WebhookType::parse),
                part: parts[i],
            });
        }
    }
    Ok(out)
}

/// The columns of one inbox part that planning needs (not the config identity), as typed
/// columns: planning reads them straight into its queue entries.
pub struct PlanningColumns {
    pub receipt_id: StringChunked,
    pub webhook_id: StringChunked,
    pub webhook_type: StringChunked,
    pub contact_id: Int64Chunked,
    pub email: StringChunked,
    /// Epoch milliseconds.
    pub received_at: Int64Chunked,
    pub callback_id: StringChunked,
    pub time_zone: StringChunked,
    pub signature: StringChunked,
    /// Epoch milliseconds.
    pub hold_ends: Int64Chunked,
    pub portal_id: Int64Chunked,
}

impl PlanningColumns {
    /// Read them from the part at `path`. An error opening the file is an `io::Error`.
    pub fn read(path: &Path) -> anyhow::Result<PlanningColumns> {
        let text = || DataType::String;
        let df = read_columns_or_null(
            path,
            &[
                (col::RECEIPT_ID, text()),
                (col::WEBHOOK_ID, text()),
                (col::WEBHOOK_TYPE, text()),
                (col::CONTACT_ID, DataType::Int64),
                (col::EMAIL, text()),
                (col::RECEIVED_AT, DataType::Int64),
                (col::CALLBACK_ID, text()),
                (col::TIME_ZONE, text()),
                (col::SIGNATURE, text()),
                (col::HOLD_ENDS, DataType::Int64),
                (col::PORTAL_ID, DataType::Int64),
            ],
        )?;
        let int = |name: &str| -> anyhow::Result<Int64Chunked> {
            Ok(df.column(name)?.cast(&DataType::Int64)?.i64()?.clone())
        };
        Ok(PlanningColumns {
            receipt_id: df.column(col::RECEIPT_ID)?.str()?.clone(),
            webhook_id: df.column(col::WEBHOOK_ID)?.str()?.clone(),
            webhook_type: df.column(col::WEBHOOK_TYPE)?.str()?.clone(),
            contact_id: int(col::CONTACT_ID)?,
            email: df.column(col::EMAIL)?.str()?.clone(),
            received_at: int(col::RECEIVED_AT)?,
            callback_id: df.column(col::CALLBACK_ID)?.str()?.clone(),
            time_zone: df.column(col::TIME_ZONE)?.str()?.clone(),
            signature: df.column(col::SIGNATURE)?.str()?.clone(),
            hold_ends: int(col::HOLD_ENDS)?,
            portal_id: int(col::PORTAL_ID)?,
        })
    }

    pub fn len(&self) -> usize {
        self.receipt_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `i`'s webhook type, if this build knows it.
    pub fn webhook_type(&self, i: usize) -> Option<WebhookType> {
        self.webhook_type.get(i).and_then(WebhookType::parse)
    }

    /// An error naming a webhook type of the part that this build does not know, if any.
    pub fn check_webhook_types(&self) -> anyhow::Result<()> {
        let unknown = (0..self.len())
            .into_par_iter()
            .find_first(|&i| self.webhook_type(i).is_none());
        match unknown {
            None => Ok(()),
            Some(i) => stored_enum(
                col::WEBHOOK_TYPE,
                self.webhook_type.get(i),
                WebhookType::parse,
            )
            .map(|_| ()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(id: &str, email: &str) -> Receipt {
        Receipt {
            receipt_id: id.into(),
            webhook_id: "w".into(),
            webhook_type: WebhookType::NextWeek,
            contact_id: None,
            email: Some(email.into()),
            portal_id: None,
            received_at_ms: 1_700_000_000_000,
            signature: "v2".into(),
            config: "c".into(),
            callback_id: None,
            body_hash: None,
            time_zone: None,
            hold_ends_ms: None,
        }
    }

    /// A log record this build cannot decode (a newer version's) is kept aside with its
    /// segment, never deleted; the records it can read are replayed.
    #[test]
    fn a_log_record_that_cannot_be_decoded_is_kept_aside_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let wal_dir = dir.path().join(WAL_DIR);
        let mut segment = Segment::create(&wal_dir, WAL_PREFIX).unwrap();
        let good = serde_json::to_vec(&receipt("r1", "a@example.com")).unwrap();
        let newer = String::from_utf8(serde_json::to_vec(&receipt("r2", "b@example.com")).unwrap())
            .unwrap()
            .replace("NEXT_WEEK", "NEXT_FORTNIGHT");
        segment.append([good.as_slice(), newer.as_bytes()]).unwrap();
        let name = segment.path.file_name().unwrap().to_owned();

        let keys = recover(dir.path()).unwrap();
        assert_eq!(
            keys.iter()
                .map(|k| k.receipt_id.as_str())
                .collect::<Vec<_>>(),
            ["r1"]
        );
        assert_eq!(read_keys(&dataset(dir.path()).unwrap()).unwrap(), keys);
        assert!(!segment.path.exists());
        let kept = dir.path().join("quarantine").join(WAL_DIR).join(name);
        let records = wal::replay(&kept).unwrap().records;
        assert_eq!(records.len(), 2, "the whole segment is kept");
        // Recovering again finds nothing new and loses nothing.
        assert_eq!(recover(dir.path()).unwrap(), keys);
    }

    /// A flush that published its part and then failed (its folder fsync) leaves the writer
    /// appending to the same segment: the receipts after it are in the log only, and a crash
    /// must not take the part for proof that the whole segment is flushed.
    #[test]
    fn receipts_logged_after_a_part_of_their_segment_was_written_are_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let wal_dir = dir.path().join(WAL_DIR);
        let mut segment = Segment::create(&wal_dir, WAL_PREFIX).unwrap();
        let r1 = receipt("r1", "a@example.com");
        segment
            .append([serde_json::to_vec(&r1).unwrap().as_slice()])
            .unwrap();
        dataset(dir.path())
            .unwrap()
            .write_part(segment.id, &mut frame(std::slice::from_ref(&r1)).unwrap())
            .unwrap();
        let r2 = serde_json::to_vec(&receipt("r2", "b@example.com")).unwrap();
        segment.append([r2.as_slice()]).unwrap();

        let ids = |keys: &[ReceiptKey]| {
            let mut ids: Vec<String> = keys.iter().map(|k| k.receipt_id.clone()).collect();
            ids.sort();
            ids
        };
        let keys = recover(dir.path()).unwrap();
        assert_eq!(ids(&keys), ["r1", "r2"]);
        assert!(!segment.path.exists());
        let stored = read_keys(&dataset(dir.path()).unwrap()).unwrap();
        assert_eq!(ids(&stored), ["r1", "r2"], "each receipt stored once");
        assert_eq!(ids(&recover(dir.path()).unwrap()), ["r1", "r2"]);
    }

    /// A replay cut short after it wrote the receipts missing from a segment's part, before
    /// the segment went: the next replay writes that part again, not its rows again beside it
    /// (an audit: a part of a random id each time stored them twice).
    #[test]
    fn a_replay_cut_short_stores_each_receipt_once() {
        let dir = tempfile::tempdir().unwrap();
        let wal_dir = dir.path().join(WAL_DIR);
        let mut segment = Segment::create(&wal_dir, WAL_PREFIX).unwrap();
        let (r1, r2) = (
            receipt("r1", "a@example.com"),
            receipt("r2", "b@example.com"),
        );
        for r in [&r1, &r2] {
            segment
                .append([serde_json::to_vec(r).unwrap().as_slice()])
                .unwrap();
        }
        let ds = dataset(dir.path()).unwrap();
        ds.write_part(segment.id, &mut frame(std::slice::from_ref(&r1)).unwrap())
            .unwrap();
        // What the replay cut short had written.
        let leftover = leftover_part(segment.id);
        ds.write_part(leftover, &mut frame(std::slice::from_ref(&r2)).unwrap())
            .unwrap();
        recover(dir.path()).unwrap();
        assert!(!segment.path.exists());
        let rows: usize = ds
            .read_all()
            .unwrap()
            .iter()
            .map(|(_, df)| df.height())
            .sum();
        assert_eq!(rows, 2, "each receipt stored once");
    }

    /// Compaction leaves a part whose segment is there when it is asked, after the parts are
    /// listed (a segment made after a list of segments was taken was missed), and merges the
    /// others.
    #[test]
    fn compaction_leaves_a_part_whose_segment_is_there_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let wal_dir = dir.path().join(WAL_DIR);
        let ds = dataset(dir.path()).unwrap();
        for n in 0..3 {
            let r = receipt(&format!("r{n}"), "a@example.com");
            (ds.write_part(ulid::Ulid::generate(), &mut frame(&[r]).unwrap())).unwrap();
        }
        // A segment made now, and its part written after the others.
        let segment = Segment::create(&wal_dir, WAL_PREFIX).unwrap();
        let r = receipt("r3", "b@example.com");
        let logged_part = ds.part_path(segment.id);
        (ds.write_part(segment.id, &mut frame(&[r]).unwrap())).unwrap();
        assert!(logged(&wal_dir, &logged_part));
        let merged = ds.compact(&|part| logged(&wal_dir, part)).unwrap().unwrap();
        assert_eq!(merged.sources.len(), 3, "{:?}", merged.sources);
        assert!(!merged.sources.contains(&logged_part));
        assert!(ds.parts().unwrap().contains(&logged_part));
    }
}
