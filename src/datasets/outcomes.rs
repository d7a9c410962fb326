//! Group-committed appends to `outcomes/`: every call's `attempting` row is durable before the
//! call goes out, and its result row before the receipt counts as done.
//!
//! Calls run concurrently, so one writer thread takes whatever rows are queued, writes them as
//! one Parquet part (tmp, fsync, rename, directory fsync) and then answers every caller: one
//! fsync for many calls. Small parts are merged every so often so a long run does not leave
//! thousands of files.

use std::collections::HashSet;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;
use ulid::Ulid;

use super::records::{OutcomeRow, outcome_frame};
use crate::store::Dataset;

/// How long the writer waits for more rows after the first, to share one fsync.
const LINGER: Duration = Duration::from_millis(5);
/// Merge small parts after this many writes.
const COMPACT_EVERY: usize = 200;

type Reply = oneshot::Sender<Result<(), String>>;

/// Handle to the outcome writer. Cheap to clone; the writer stops when every clone is dropped.
#[derive(Clone)]
pub struct OutcomeLog {
    tx: Sender<(Vec<OutcomeRow>, Reply)>,
}

/// Owns the writer thread.
pub struct OutcomeWriter {
    thread: Option<JoinHandle<()>>,
}

impl OutcomeLog {
    /// Start the writer for `{data_dir}/outcomes`.
    pub fn open(data_dir: &Path) -> anyhow::Result<(OutcomeLog, OutcomeWriter)> {
        let dataset = Dataset::open(data_dir, "outcomes")?;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("outcome-writer".into())
            .spawn(move || run(&dataset, rx))?;
        Ok((
            OutcomeLog { tx },
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
        self.tx
            .send((rows, reply))
            .map_err(|_| anyhow::anyhow!("the outcome writer has stopped"))?;
        rx.await
            .map_err(|_| anyhow::anyhow!("the outcome writer has stopped"))?
            .map_err(|e| anyhow::anyhow!(e))
    }
}

impl OutcomeWriter {
    /// Wait for the writer to finish what is queued. Call after the last [`OutcomeLog`] is gone.
    pub fn shutdown(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(dataset: &Dataset, rx: Receiver<(Vec<OutcomeRow>, Reply)>) {
    let mut writes = 0usize;
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
        let result = outcome_frame(&rows)
            .and_then(|mut df| dataset.write_part(Ulid::generate(), &mut df))
            .map(|_| ())
            .map_err(|e| format!("cannot record outcomes in {}: {e:#}", dataset.dir.display()));
        if let Err(e) = &result {
            tracing::error!("{e}");
        }
        for (_, reply) in batch {
            let _ = reply.send(result.clone());
        }
        writes += 1;
        if writes.is_multiple_of(COMPACT_EVERY)
            && let Err(e) = dataset.compact(&HashSet::new())
        {
            tracing::warn!("outcomes compaction failed (will retry): {e:#}");
        }
    }
}
