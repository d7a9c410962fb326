//! The outcomes dataset (`{data_dir}/outcomes/`): one row per step of every receipt's
//! dispatch (`attempting` before a call, its result after), so after a crash the rows alone
//! say which calls were in flight. A receipt's latest row says where it stands.
//!
//! Rows are appended by one writer thread ([`OutcomeLog`]) that group-commits: it takes
//! whatever rows are queued, writes them as one part (tmp, fsync, rename, directory fsync) and
//! then answers every caller, one fsync for many calls. Small parts are merged every so often
//! so a long run does not leave thousands of files. Readers tolerate a row seen twice
//! (compaction briefly shows rows in two parts): everything built from them is a set.

use std::collections::HashSet;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use polars::prelude::*;
use tokio::sync::oneshot;
use ulid::Ulid;

use super::{bools_or_false, datetime_ms_opt, ints, stored_enum, strs};
use crate::metrics::Metrics;
use crate::store::{Dataset, concat_frames};

/// The folder under the data directory.
pub const NAME: &str = "outcomes";

/// Column names, in schema order.
pub mod col {
    pub const RECEIPT_ID: &str = "receipt_id";
    pub const WEBHOOK_ID: &str = "webhook_id";
    pub const CONNECTOR: &str = "connector";
    /// [`super::Action`].
    pub const ACTION: &str = "action";
    /// The workflow id, list id or callback id called.
    pub const TARGET: &str = "target";
    /// [`super::Status`].
    pub const STATUS: &str = "status";
    pub const HTTP_STATUS: &str = "http_status";
    pub const MESSAGE: &str = "message";
    pub const ATTEMPTS: &str = "attempts";
    pub const IN_DOUBT: &str = "in_doubt";
    /// UTC, a Parquet timestamp in milliseconds without a zone (as `at`).
    pub const RETRY_AT: &str = "retry_at";
    pub const AT: &str = "at";
    /// The receipt was held out (see the plan's `holdout`); absent from older parts: false.
    pub const HOLDOUT: &str = "holdout";
}

/// The dataset under `data_dir`.
pub fn dataset(data_dir: &Path) -> anyhow::Result<Dataset> {
    Dataset::open(data_dir, NAME)
}

/// Every row kept under `data_dir`: the live dataset's, then the archive's
/// ([`super::ARCHIVE`]).
pub fn read_kept(data_dir: &Path) -> anyhow::Result<Vec<OutcomeRow>> {
    super::read_kept(data_dir, NAME, read)
}

/// The rows kept whose status is one of `statuses`, a part's at a time handed to `f` (the
/// lift report folds the sends of the whole archive, not every step, into one map).
pub fn for_each_kept_with_status(
    data_dir: &Path,
    statuses: &[Status],
    f: impl FnMut(Vec<OutcomeRow>),
) -> anyhow::Result<()> {
    super::for_each_kept_where(
        data_dir,
        NAME,
        |df| {
            // A status this build does not know is an error, as in a whole read, not a row
            // left out.
            df.column(col::STATUS)?
                .str()?
                .iter()
                .map(|s| stored_enum(col::STATUS, s, Status::parse).map(|s| statuses.contains(&s)))
                .collect::<anyhow::Result<BooleanChunked>>()
        },
        rows,
        f,
    )
}

/// The rows kept of `receipts`, read a part at a time: a lookup's read of the whole archive.
pub fn read_kept_of_receipts(
    data_dir: &Path,
    receipts: &HashSet<&str>,
) -> anyhow::Result<Vec<OutcomeRow>> {
    super::read_kept_where(
        data_dir,
        NAME,
        |df| {
            Ok(df
                .column(col::RECEIPT_ID)?
                .str()?
                .iter()
                .map(|r| r.is_some_and(|r| receipts.contains(r)))
                .collect())
        },
        rows,
    )
}

/// Where a receipt's dispatch stands after one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Written durably just before a call: with no later row, the call was in flight.
    Attempting,
    Enrolled,
    Listed,
    /// A workflow action's callback completed: the contact went on in its workflow.
    Completed,
    /// The call failed in a way worth retrying; `retry_at` says when.
    Retrying,
    /// HubSpot refused for good (or we gave up); `message` says why.
    Failed,
    /// The connector is in dry-run: this is what would have been called.
    DryRun,
}

impl Status {
    pub const ALL: [Status; 7] = [
        Status::Attempting,
        Status::Enrolled,
        Status::Listed,
        Status::Completed,
        Status::Retrying,
        Status::Failed,
        Status::DryRun,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Attempting => "attempting",
            Status::Enrolled => "enrolled",
            Status::Listed => "listed",
            Status::Completed => "completed",
            Status::Retrying => "retrying",
            Status::Failed => "failed",
            Status::DryRun => "dry-run",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// A final status ends the receipt: it is never dispatched again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Status::Enrolled | Status::Listed | Status::Completed | Status::Failed | Status::DryRun
        )
    }
}

/// What a call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Workflow enrollment by email.
    Enroll,
    /// List membership add by record id (UPDATE_ONLY).
    ListAdd,
    /// A workflow action's callback completed (the target is the callback id).
    Complete,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::Enroll, Action::ListAdd, Action::Complete];

    /// The call that delivers to `target`.
    pub fn of(target: &crate::config::Target) -> Action {
        use crate::config::Target;
        match target {
            Target::Workflow(_) => Action::Enroll,
            Target::List(_) => Action::ListAdd,
            Target::Callback => Action::Complete,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Enroll => "enroll",
            Action::ListAdd => "list_add",
            Action::Complete => "complete",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// One step of one receipt's dispatch.
#[derive(Debug, Clone, PartialEq)]
pub struct OutcomeRow {
    pub receipt_id: String,
    pub webhook_id: String,
    pub connector: String,
    pub action: Action,
    /// The workflow id, list id or callback id called.
    pub target: String,
    pub status: Status,
    /// HubSpot's HTTP status, when it answered.
    pub http_status: Option<u16>,
    /// HubSpot's message (failures), or what happened (e.g. found already enrolled).
    pub message: Option<String>,
    /// Calls made for this receipt so far, this one included.
    pub attempts: u32,
    /// The call may have reached HubSpot without a definite answer (timeout, 5xx): check the
    /// contact's enrollments before sending again.
    pub in_doubt: bool,
    /// For `retrying`: not before this instant (epoch ms).
    pub retry_at_ms: Option<i64>,
    pub at_ms: i64,
    /// Held out: sent at receipt to measure lift.
    pub holdout: bool,
}

/// Outcome rows as a frame in schema order: the one writer of the outcomes schema.
pub fn frame(rows: &[OutcomeRow]) -> anyhow::Result<DataFrame> {
    let s = |name: &str, f: &dyn Fn(&OutcomeRow) -> Option<&str>| {
        Column::new(name.into(), rows.iter().map(f).collect::<Vec<_>>())
    };
    Ok(DataFrame::new(
        rows.len(),
        vec![
            s(col::RECEIPT_ID, &|r| Some(&r.receipt_id)),
            s(col::WEBHOOK_ID, &|r| Some(&r.webhook_id)),
            s(col::CONNECTOR, &|r| Some(&r.connector)),
            s(col::ACTION, &|r| Some(r.action.as_str())),
            s(col::TARGET, &|r| Some(&r.target)),
            s(col::STATUS, &|r| Some(r.status.as_str())),
            Column::new(
                col::HTTP_STATUS.into(),
                rows.iter()
                    .map(|r| r.http_status.map(i32::from))
                    .collect::<Vec<_>>(),
            ),
            s(col::MESSAGE, &|r| r.message.as_deref()),
            Column::new(
                col::ATTEMPTS.into(),
                rows.iter().map(|r| r.attempts as i32).collect::<Vec<_>>(),
            ),
            Column::new(
                col::IN_DOUBT.into(),
                rows.iter().map(|r| r.in_doubt).collect::<Vec<_>>(),
            ),
            datetime_ms_opt(col::RETRY_AT, rows.iter().map(|r| r.retry_at_ms).collect())?,
            datetime_ms_opt(col::AT, rows.iter().map(|r| Some(r.at_ms)).collect())?,
            Column::new(
                col::HOLDOUT.into(),
                rows.iter().map(|r| r.holdout).collect::<Vec<_>>(),
            ),
        ],
    )?)
}

/// Every outcome row, in storage order. A status or action this build does not know is an
/// error: read as some default, it could end a receipt that is not done or send it again.
pub fn read(dataset: &Dataset) -> anyhow::Result<Vec<OutcomeRow>> {
    let frames: Vec<DataFrame> = dataset.read_all()?.into_iter().map(|(_, df)| df).collect();
    if frames.is_empty() {
        return Ok(Vec::new());
    }
    rows(&concat_frames(frames)?)
}

/// The rows of one frame.
fn rows(df: &DataFrame) -> anyhow::Result<Vec<OutcomeRow>> {
    let ids = strs(df, col::RECEIPT_ID)?;
    let webhooks = strs(df, col::WEBHOOK_ID)?;
    let connectors = strs(df, col::CONNECTOR)?;
    let actions = strs(df, col::ACTION)?;
    let targets = strs(df, col::TARGET)?;
    let statuses = strs(df, col::STATUS)?;
    let http = ints(df, col::HTTP_STATUS)?;
    let messages = strs(df, col::MESSAGE)?;
    let attempts = ints(df, col::ATTEMPTS)?;
    let doubt: Vec<Option<bool>> = df.column(col::IN_DOUBT)?.bool()?.iter().collect();
    let retry = ints(df, col::RETRY_AT)?;
    let at = ints(df, col::AT)?;
    let holdouts = bools_or_false(df, col::HOLDOUT)?;
    (0..ids.len())
        .map(|i| {
            Ok(OutcomeRow {
                receipt_id: ids[i].clone().unwrap_or_default(),
                webhook_id: webhooks[i].clone().unwrap_or_default(),
                connector: connectors[i].clone().unwrap_or_default(),
                action: stored_enum(col::ACTION, actions[i].as_deref(), Action::parse)?,
                target: targets[i].clone().unwrap_or_default(),
                status: stored_enum(col::STATUS, statuses[i].as_deref(), Status::parse)?,
                http_status: http[i].and_then(|s| u16::try_from(s).ok()),
                message: messages[i].clone(),
                attempts: attempts[i].unwrap_or_default().max(0) as u32,
                in_doubt: doubt[i].unwrap_or(false),
                retry_at_ms: retry[i],
                at_ms: at[i].unwrap_or_default(),
                holdout: holdouts[i],
            })
        })
        .collect()
}

/// How long the writer waits for more rows after the first, to share one fsync.
const LINGER: Duration = Duration::from_millis(5);
/// Merge small parts after this many writes.
const COMPACT_EVERY: usize = 200;

type Reply = oneshot::Sender<Result<(), String>>;

/// Handle to the outcome writer. Cheap to clone; the writer stops when every clone is dropped.
#[derive(Clone)]
pub struct OutcomeLog {
    tx: Sender<(Vec<OutcomeRow>, Reply)>,
    /// The last write that failed since [`OutcomeLog::take_failure`]: `sendtime tick`, run
    /// once, must not exit 0 over rows it could not record.
    failed: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

/// Owns the writer thread.
pub struct OutcomeWriter {
    thread: Option<JoinHandle<()>>,
}

impl OutcomeLog {
    /// Start the writer for `{data_dir}/outcomes`.
    pub fn open(data_dir: &Path, metrics: Metrics) -> anyhow::Result<(OutcomeLog, OutcomeWriter)> {
        let dataset = dataset(data_dir)?;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("outcome-writer".into())
            .spawn(move || run(&dataset, rx, &metrics))?;
        Ok((
            OutcomeLog {
                tx,
                failed: Default::default(),
            },
            OutcomeWriter {
                thread: Some(thread),
            },
        ))
    }

    /// Append rows; returns once they are durable.
    pub async fn write(&self, rows: Vec<OutcomeRow>) -> anyhow::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let (reply, rx) = oneshot::channel();
        let stopped = || "the outcome writer has stopped".to_string();
        let written = match self.tx.send((rows, reply)) {
            Ok(()) => rx.await.map_err(|_| stopped()).and_then(|r| r),
            Err(_) => Err(stopped()),
        };
        if let Err(e) = &written {
            *self
                .failed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e.clone());
        }
        written.map_err(|e| anyhow::anyhow!(e))
    }

    /// Why the last failed write failed, if one did since the last call.
    pub fn take_failure(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

impl OutcomeWriter {
    /// Whether its thread runs (it ends only at shutdown, or by a panic).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Wait for the writer to finish what is queued. Call after the last [`OutcomeLog`] is gone.
    pub fn shutdown(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Write what arrives, a batch a part; each write counted and, failed, said on `/status`
/// until one succeeds (`metrics`), in the order written.
fn run(dataset: &Dataset, rx: Receiver<(Vec<OutcomeRow>, Reply)>, metrics: &Metrics) {
    // Compaction on a thread of its own: the calls waiting on their `attempting` rows do not
    // wait for it. It merges only committed parts, so writes go on beside it.
    let (kick, kicked) = std::sync::mpsc::sync_channel::<()>(1);
    let compactor = {
        let dataset = dataset.clone();
        std::thread::Builder::new()
            .name("outcomes-compactor".into())
            .spawn(move || {
                for () in kicked {
                    if let Err(e) = dataset.compact(&|_| false) {
                        tracing::warn!("outcomes compaction failed (will retry): {e:#}");
                    }
                }
            })
    };
    let mut writes = 0usize;
    // A full disk fails every write: logged once a minute (`/status` and the metrics say it).
    let mut errors = crate::throttle::Throttle::default();
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        loop {
            match rx.recv_timeout(LINGER) {
                Ok(more) => batch.push(more),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
            if batch.len() >= 1024 {
                break;
            }
        }
        let rows: Vec<OutcomeRow> = batch.iter().flat_map(|(r, _)| r.iter().cloned()).collect();
        let result = frame(&rows)
            .and_then(|mut df| dataset.write_part(Ulid::generate(), &mut df))
            .map(|_| ())
            .map_err(|e| format!("cannot record outcomes in {}: {e:#}", dataset.dir.display()));
        match &result {
            Ok(()) => metrics.write_succeeded(NAME),
            Err(e) => {
                if let Some(suppressed) = errors.due() {
                    tracing::error!(suppressed, "{e}");
                }
                metrics.write_failed(NAME, e.clone());
            }
        }
        for (_, reply) in batch {
            let _ = reply.send(result.clone());
        }
        writes += 1;
        if writes.is_multiple_of(COMPACT_EVERY) {
            // One already waiting will see these parts too.
            let _ = kick.try_send(());
        }
    }
    drop(kick);
    match compactor {
        Ok(t) => {
            let _ = t.join();
        }
        Err(e) => tracing::warn!("cannot start the outcomes compactor: {e}"),
    }
}
