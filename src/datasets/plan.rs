//! The rows of `plan/` and `outcomes/`, and their Parquet frames.
//!
//! Both datasets are append-only logs: a plan row is written once per receipt; an outcome row
//! is written for every step of every call (`attempting` before it, the result after it), so
//! after a crash the rows alone say which calls were in flight. Readers must tolerate a row
//! seen twice (compaction briefly shows rows in two parts): everything built from them is a set.

use polars::prelude::*;

use crate::store::{Dataset, concat_frames};

/// A decided due time for one receipt, with what is needed to dispatch it (so dispatching
/// never has to go back to the inbox).
#[derive(Debug, Clone, PartialEq)]
pub struct PlanRow {
    pub receipt_id: String,
    pub webhook_id: String,
    pub webhook_type: String,
    pub contact_id: Option<i64>,
    pub email: Option<String>,
    pub received_at_ms: i64,
    pub due_at_ms: i64,
    pub slot: Option<u8>,
    pub reason: String,
    pub planned_at_ms: i64,
}

/// Where a receipt's dispatch stands after one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Written durably just before a call: with no later row, the call was in flight.
    Attempting,
    Enrolled,
    Listed,
    /// The call failed in a way worth retrying; `retry_at` says when.
    Retrying,
    /// HubSpot refused for good (or we gave up); `message` says why.
    Failed,
    /// The connector is in dry-run: this is what would have been called.
    DryRun,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::Attempting,
        Status::Enrolled,
        Status::Listed,
        Status::Retrying,
        Status::Failed,
        Status::DryRun,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Attempting => "attempting",
            Status::Enrolled => "enrolled",
            Status::Listed => "listed",
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
            Status::Enrolled | Status::Listed | Status::Failed | Status::DryRun
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
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Enroll => "enroll",
            Action::ListAdd => "list_add",
        }
    }
}

/// One step of one receipt's dispatch.
#[derive(Debug, Clone, PartialEq)]
pub struct OutcomeRow {
    pub receipt_id: String,
    pub webhook_id: String,
    pub connector: String,
    pub action: Action,
    /// The workflow id or list id called.
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
}

fn datetime(name: &str, values: Vec<Option<i64>>) -> PolarsResult<Column> {
    Column::new(name.into(), values).cast(&DataType::Datetime(TimeUnit::Milliseconds, None))
}

/// Plan rows as a frame.
pub fn plan_frame(rows: &[PlanRow]) -> anyhow::Result<DataFrame> {
    Ok(DataFrame::new(
        rows.len(),
        vec![
            Column::new(
                "receipt_id".into(),
                rows.iter()
                    .map(|r| r.receipt_id.as_str())
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "webhook_id".into(),
                rows.iter()
                    .map(|r| r.webhook_id.as_str())
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "webhook_type".into(),
                rows.iter()
                    .map(|r| r.webhook_type.as_str())
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "contact_id".into(),
                rows.iter().map(|r| r.contact_id).collect::<Vec<_>>(),
            ),
            Column::new(
                "email".into(),
                rows.iter().map(|r| r.email.as_deref()).collect::<Vec<_>>(),
            ),
            datetime(
                "received_at",
                rows.iter().map(|r| Some(r.received_at_ms)).collect(),
            )?,
            datetime("due_at", rows.iter().map(|r| Some(r.due_at_ms)).collect())?,
            Column::new(
                "slot".into(),
                rows.iter()
                    .map(|r| r.slot.map(i32::from))
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "reason".into(),
                rows.iter().map(|r| r.reason.as_str()).collect::<Vec<_>>(),
            ),
            datetime(
                "planned_at",
                rows.iter().map(|r| Some(r.planned_at_ms)).collect(),
            )?,
        ],
    )?)
}

/// Outcome rows as a frame.
pub fn outcome_frame(rows: &[OutcomeRow]) -> anyhow::Result<DataFrame> {
    let s = |name: &str, f: &dyn Fn(&OutcomeRow) -> Option<&str>| {
        Column::new(name.into(), rows.iter().map(f).collect::<Vec<_>>())
    };
    Ok(DataFrame::new(
        rows.len(),
        vec![
            s("receipt_id", &|r| Some(&r.receipt_id)),
            s("webhook_id", &|r| Some(&r.webhook_id)),
            s("connector", &|r| Some(&r.connector)),
            s("action", &|r| Some(r.action.as_str())),
            s("target", &|r| Some(&r.target)),
            s("status", &|r| Some(r.status.as_str())),
            Column::new(
                "http_status".into(),
                rows.iter()
                    .map(|r| r.http_status.map(i32::from))
                    .collect::<Vec<_>>(),
            ),
            s("message", &|r| r.message.as_deref()),
            Column::new(
                "attempts".into(),
                rows.iter().map(|r| r.attempts as i32).collect::<Vec<_>>(),
            ),
            Column::new(
                "in_doubt".into(),
                rows.iter().map(|r| r.in_doubt).collect::<Vec<_>>(),
            ),
            datetime("retry_at", rows.iter().map(|r| r.retry_at_ms).collect())?,
            datetime("at", rows.iter().map(|r| Some(r.at_ms)).collect())?,
        ],
    )?)
}

fn all_rows(dataset: &Dataset) -> anyhow::Result<Option<DataFrame>> {
    let frames: Vec<DataFrame> = dataset.read_all()?.into_iter().map(|(_, df)| df).collect();
    if frames.is_empty() {
        return Ok(None);
    }
    Ok(Some(concat_frames(frames)?))
}

fn strs(df: &DataFrame, name: &str) -> anyhow::Result<Vec<Option<String>>> {
    Ok(df
        .column(name)?
        .str()?
        .iter()
        .map(|v| v.map(str::to_string))
        .collect())
}

fn ints(df: &DataFrame, name: &str) -> anyhow::Result<Vec<Option<i64>>> {
    Ok(df
        .column(name)?
        .cast(&DataType::Int64)?
        .i64()?
        .iter()
        .collect())
}

/// Every plan row (a receipt may appear twice while a compaction is in progress).
pub fn read_plans(dataset: &Dataset) -> anyhow::Result<Vec<PlanRow>> {
    let Some(df) = all_rows(dataset)? else {
        return Ok(Vec::new());
    };
    let ids = strs(&df, "receipt_id")?;
    let webhooks = strs(&df, "webhook_id")?;
    let types = strs(&df, "webhook_type")?;
    let contacts = ints(&df, "contact_id")?;
    let emails = strs(&df, "email")?;
    let received = ints(&df, "received_at")?;
    let due = ints(&df, "due_at")?;
    let slots = ints(&df, "slot")?;
    let reasons = strs(&df, "reason")?;
    let planned = ints(&df, "planned_at")?;
    Ok((0..ids.len())
        .map(|i| PlanRow {
            receipt_id: ids[i].clone().unwrap_or_default(),
            webhook_id: webhooks[i].clone().unwrap_or_default(),
            webhook_type: types[i].clone().unwrap_or_default(),
            contact_id: contacts[i],
            email: emails[i].clone(),
            received_at_ms: received[i].unwrap_or_default(),
            due_at_ms: due[i].unwrap_or_default(),
            slot: slots[i].and_then(|s| u8::try_from(s).ok()),
            reason: reasons[i].clone().unwrap_or_default(),
            planned_at_ms: planned[i].unwrap_or_default(),
        })
        .collect())
}

/// Every outcome row, in storage order.
pub fn read_outcomes(dataset: &Dataset) -> anyhow::Result<Vec<OutcomeRow>> {
    let Some(df) = all_rows(dataset)? else {
        return Ok(Vec::new());
    };
    let ids = strs(&df, "receipt_id")?;
    let webhooks = strs(&df, "webhook_id")?;
    let connectors = strs(&df, "connector")?;
    let actions = strs(&df, "action")?;
    let targets = strs(&df, "target")?;
    let statuses = strs(&df, "status")?;
    let http = ints(&df, "http_status")?;
    let messages = strs(&df, "message")?;
    let attempts = ints(&df, "attempts")?;
    let doubt: Vec<Option<bool>> = df.column("in_doubt")?.bool()?.iter().collect();
    let retry = ints(&df, "retry_at")?;
    let at = ints(&df, "at")?;
    let mut out = Vec::with_capacity(ids.len());
    for i in 0..ids.len() {
        let Some(status) = statuses[i].as_deref().and_then(Status::parse) else {
            continue;
        };
        out.push(OutcomeRow {
            receipt_id: ids[i].clone().unwrap_or_default(),
            webhook_id: webhooks[i].clone().unwrap_or_default(),
            connector: connectors[i].clone().unwrap_or_default(),
            action: if actions[i].as_deref() == Some("list_add") {
                Action::ListAdd
            } else {
                Action::Enroll
            },
            target: targets[i].clone().unwrap_or_default(),
            status,
            http_status: http[i].and_then(|s| u16::try_from(s).ok()),
            message: messages[i].clone(),
            attempts: attempts[i].unwrap_or_default().max(0) as u32,
            in_doubt: doubt[i].unwrap_or(false),
            retry_at_ms: retry[i],
            at_ms: at[i].unwrap_or_default(),
        });
    }
    Ok(out)
}
