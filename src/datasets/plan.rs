//! The plan dataset (`{data_dir}/plan/`): one row per receipt, written once when the receipt
//! is planned, with its due time and why, and what dispatching it needs (so dispatching never
//! goes back to the inbox).
//!
//! Append-only; a compaction in progress can show a row in two parts for a moment, so readers
//! build sets from it.

use std::path::Path;

use polars::prelude::*;

use super::{
    bools_or_false, datetime_ms, datetime_ms_opt, floats_or_null, ints, ints_or_null, stored_enum,
    strs, strs_or_null,
};
use crate::config::WebhookType;
use crate::local_time::parse_zone;
use crate::store::{Dataset, concat_frames};
use chrono_tz::Tz;

/// The folder under the data directory.
pub const NAME: &str = "plan";

/// Column names, in schema order.
pub mod col {
    pub const RECEIPT_ID: &str = "receipt_id";
    pub const WEBHOOK_ID: &str = "webhook_id";
    pub const WEBHOOK_TYPE: &str = "webhook_type";
    pub const CONTACT_ID: &str = "contact_id";
    pub const EMAIL: &str = "email";
    /// UTC, a Parquet timestamp in milliseconds without a zone (as every time below).
    pub const RECEIVED_AT: &str = "received_at";
    pub const DUE_AT: &str = "due_at";
    /// Hour of week chosen (0 = Monday 00:00 UTC), when one was.
    pub const SLOT: &str = "slot";
    /// The rule applied, readable.
    pub const REASON: &str = "reason";
    pub const PLANNED_AT: &str = "planned_at";
    /// A workflow action's callback id (null for webhooks, and absent from older parts).
    pub const CALLBACK_ID: &str = "callback_id";
    /// Held out (`holdout`): sent at receipt, as without sendtime, to measure lift (absent
    /// from older parts: false).
    pub const HOLDOUT: &str = "holdout";
    /// The contact's zone as posted (IANA name), which its quiet hours are in; null when the
    /// post named none (the connector's zone), and in older parts.
    pub const TIME_ZONE: &str = "time_zone";
    /// When HubSpot's hold on an action's contact ends, as asked on receipt: its callback is
    /// completed before then. Null for webhooks, and in older parts (the config's window then
    /// says).
    pub const HOLD_ENDS: &str = "hold_ends";
    /// The HubSpot account (portal id) the receipt was taken for: it is sent through no
    /// other account's connector. Null in older parts.
    pub const PORTAL_ID: &str = "portal_id";
    /// The webhook's `holdout` share when the receipt was drawn (0 to 0.5): the lift report
    /// compares receipts drawn at the same share only. Null in older parts.
    pub const HOLDOUT_SHARE: &str = "holdout_share";
}

/// The dataset under `data_dir`.
pub fn dataset(data_dir: &Path) -> anyhow::Result<Dataset> {
    Dataset::open(data_dir, NAME)
}

/// Every row kept under `data_dir`: the live dataset's, then the archive's
/// ([`super::ARCHIVE`]).
pub fn read_kept(data_dir: &Path) -> anyhow::Result<Vec<PlanRow>> {
    super::read_kept(data_dir, NAME, read)
}

/// What the lift report needs of a plan row: who, when received, held out or not; borrowed
/// from the part being read.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    pub receipt_id: &'a str,
    pub webhook_id: &'a str,
    pub webhook_type: WebhookType,
    pub contact_id: Option<i64>,
    pub email: Option<&'a str>,
    pub received_at_ms: i64,
    pub holdout: bool,
    /// The share it was drawn at; none in older parts.
    pub holdout_share: Option<f64>,
    /// Read from the archive, which holds only receipts done with (sent, failed or dry run).
    pub archived: bool,
}

/// Every row kept (live and archived) as [`Received`], handed to `f` a part at a time: the
/// archive grows without end, and the caller keeps what it needs of a row (its reason, most
/// of its bytes, is not even read out).
pub fn for_each_kept_received(
    data_dir: &Path,
    mut f: impl FnMut(Received<'_>),
) -> anyhow::Result<()> {
    let archive = data_dir.join(super::ARCHIVE);
    super::kept(data_dir, NAME, |dataset| {
        let archived = dataset.dir.starts_with(&archive);
        dataset.read_each(|_, df| {
            let [ids, webhooks, types, emails] = [
                col::RECEIPT_ID,
                col::WEBHOOK_ID,
                col::WEBHOOK_TYPE,
                col::EMAIL,
            ]
            .map(|name| df.column(name).and_then(|c| c.str()));
            let (ids, webhooks, types, emails) = (ids?, webhooks?, types?, emails?);
            let contacts = ints(&df, col::CONTACT_ID)?;
            let received = ints(&df, col::RECEIVED_AT)?;
            let holdouts = bools_or_false(&df, col::HOLDOUT)?;
            let shares = floats_or_null(&df, col::HOLDOUT_SHARE)?;
            let rows = ids
                .iter()
                .zip(webhooks.iter())
                .zip(types.iter())
                .zip(emails.iter());
            for (i, (((id, webhook), kind), email)) in rows.enumerate() {
                f(Received {
                    receipt_id: id.unwrap_or_default(),
                    webhook_id: webhook.unwrap_or_default(),
                    webhook_type: stored_enum(col::WEBHOOK_TYPE, kind, WebhookType::parse)?,
                    contact_id: contacts[i],
                    email,
                    received_at_ms: received[i].unwrap_or_default(),
                    holdout: holdouts[i],
                    holdout_share: shares[i],
                    archived,
                });
            }
            Ok(())
        })
    })
}

/// The rows kept of the contact with HubSpot id `id` or, without one, with `email` (in any
/// case), read a part at a time: a lookup's read of the whole archive.
pub fn read_kept_of_contact(
    data_dir: &Path,
    id: Option<i64>,
    email: Option<&str>,
) -> anyhow::Result<Vec<PlanRow>> {
    super::read_kept_where(
        data_dir,
        NAME,
        |df| {
            Ok(match (id, email.map(str::trim)) {
                (Some(id), _) => df
                    .column(col::CONTACT_ID)?
                    .cast(&DataType::Int64)?
                    .i64()?
                    .iter()
                    .map(|c| c == Some(id))
                    .collect(),
                (None, Some(e)) => df
                    .column(col::EMAIL)?
                    .str()?
                    .iter()
                    .map(|pe| pe.is_some_and(|pe| pe.eq_ignore_ascii_case(e)))
                    .collect(),
                (None, None) => BooleanChunked::full("".into(), false, df.height()),
            })
        },
        rows,
    )
}

/// A decided due time for one receipt.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanRow {
    pub receipt_id: String,
    pub webhook_id: String,
    pub webhook_type: WebhookType,
    pub contact_id: Option<i64>,
    pub email: Option<String>,
    pub received_at_ms: i64,
    pub due_at_ms: i64,
    pub slot: Option<u8>,
    pub reason: String,
    pub planned_at_ms: i64,
    pub callback_id: Option<String>,
    pub holdout: bool,
    pub time_zone: Option<Tz>,
    pub hold_ends_ms: Option<i64>,
    pub portal_id: Option<i64>,
    pub holdout_share: Option<f64>,
}

/// One plan row as the planner has it: borrowed, so planning a million receipts allocates no
/// row of its own.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub receipt_id: &'a str,
    pub webhook_id: &'a str,
    pub webhook_type: WebhookType,
    pub contact_id: Option<i64>,
    pub email: Option<&'a str>,
    pub received_at_ms: i64,
    pub due_at_ms: i64,
    pub slot: Option<u8>,
    pub reason: &'a str,
    pub planned_at_ms: i64,
    pub callback_id: Option<&'a str>,
    pub holdout: bool,
    pub time_zone: Option<Tz>,
    pub hold_ends_ms: Option<i64>,
    pub portal_id: Option<i64>,
    pub holdout_share: Option<f64>,
}

/// The columns of plan rows being written: the one writer of the plan schema.
pub struct Columns {
    ids: StringChunkedBuilder,
    webhooks: StringChunkedBuilder,
    types: StringChunkedBuilder,
    emails: StringChunkedBuilder,
    reasons: StringChunkedBuilder,
    callbacks: StringChunkedBuilder,
    zones: StringChunkedBuilder,
    contacts: Vec<Option<i64>>,
    received: Vec<i64>,
    dues: Vec<i64>,
    slots: Vec<Option<i32>>,
    planned: Vec<i64>,
    holdouts: Vec<bool>,
    hold_ends: Vec<Option<i64>>,
    portals: Vec<Option<i64>>,
    shares: Vec<Option<f64>>,
}

impl Columns {
    pub fn with_capacity(n: usize) -> Columns {
        Columns {
            ids: StringChunkedBuilder::new(col::RECEIPT_ID.into(), n),
            webhooks: StringChunkedBuilder::new(col::WEBHOOK_ID.into(), n),
            types: StringChunkedBuilder::new(col::WEBHOOK_TYPE.into(), n),
            emails: StringChunkedBuilder::new(col::EMAIL.into(), n),
            reasons: StringChunkedBuilder::new(col::REASON.into(), n),
            callbacks: StringChunkedBuilder::new(col::CALLBACK_ID.into(), n),
            zones: StringChunkedBuilder::new(col::TIME_ZONE.into(), n),
            contacts: Vec::with_capacity(n),
            received: Vec::with_capacity(n),
            dues: Vec::with_capacity(n),
            slots: Vec::with_capacity(n),
            planned: Vec::with_capacity(n),
            holdouts: Vec::with_capacity(n),
            hold_ends: Vec::with_capacity(n),
            portals: Vec::with_capacity(n),
            shares: Vec::with_capacity(n),
        }
    }

    pub fn push(&mut self, e: Entry<'_>) {
        self.ids.append_value(e.receipt_id);
        self.webhooks.append_value(e.webhook_id);
        self.types.append_value(e.webhook_type.as_str());
        self.emails.append_option(e.email);
        self.reasons.append_value(e.reason);
        self.callbacks.append_option(e.callback_id);
        self.zones.append_option(e.time_zone.map(|z| z.name()));
        self.contacts.push(e.contact_id);
        self.received.push(e.received_at_ms);
        self.dues.push(e.due_at_ms);
        self.slots.push(e.slot.map(i32::from));
        self.planned.push(e.planned_at_ms);
        self.holdouts.push(e.holdout);
        self.hold_ends.push(e.hold_ends_ms);
        self.portals.push(e.portal_id);
        self.shares.push(e.holdout_share);
    }

    /// The rows as a frame in schema order.
    pub fn finish(self) -> anyhow::Result<DataFrame> {
        let n = self.contacts.len();
        Ok(DataFrame::new(
            n,
            vec![
                self.ids.finish().into_column(),
                self.webhooks.finish().into_column(),
                self.types.finish().into_column(),
                Column::new(col::CONTACT_ID.into(), self.contacts),
                self.emails.finish().into_column(),
                datetime_ms(col::RECEIVED_AT, self.received)?,
                datetime_ms(col::DUE_AT, self.dues)?,
                Column::new(col::SLOT.into(), self.slots),
                self.reasons.finish().into_column(),
                datetime_ms(col::PLANNED_AT, self.planned)?,
                self.callbacks.finish().into_column(),
                Column::new(col::HOLDOUT.into(), self.holdouts),
                self.zones.finish().into_column(),
                datetime_ms_opt(col::HOLD_ENDS, self.hold_ends)?,
                Column::new(col::PORTAL_ID.into(), self.portals),
                Column::new(col::HOLDOUT_SHARE.into(), self.shares),
            ],
        )?)
    }
}

impl PlanRow {
    pub fn entry(&self) -> Entry<'_> {
        Entry {
            receipt_id: &self.receipt_id,
            webhook_id: &self.webhook_id,
            webhook_type: self.webhook_type,
            contact_id: self.contact_id,
            email: self.email.as_deref(),
            received_at_ms: self.received_at_ms,
            due_at_ms: self.due_at_ms,
            slot: self.slot,
            reason: &self.reason,
            planned_at_ms: self.planned_at_ms,
            callback_id: self.callback_id.as_deref(),
            holdout: self.holdout,
            time_zone: self.time_zone,
            hold_ends_ms: self.hold_ends_ms,
            portal_id: self.portal_id,
            holdout_share: self.holdout_share,
        }
    }
}

/// Plan rows as a frame.
pub fn frame(rows: &[PlanRow]) -> anyhow::Result<DataFrame> {
    let mut columns = Columns::with_capacity(rows.len());
    for r in rows {
        columns.push(r.entry());
    }
    columns.finish()
}

/// Every plan row (a receipt may appear twice while a compaction is in progress). A row whose
/// webhook type this build does not know is an error: a default would send it the wrong way.
pub fn read(dataset: &Dataset) -> anyhow::Result<Vec<PlanRow>> {
    let frames: Vec<DataFrame> = dataset.read_all()?.into_iter().map(|(_, df)| df).collect();
    if frames.is_empty() {
        return Ok(Vec::new());
    }
    rows(&concat_frames(frames)?)
}

/// The rows of one frame.
fn rows(df: &DataFrame) -> anyhow::Result<Vec<PlanRow>> {
    let ids = strs(df, col::RECEIPT_ID)?;
    let webhooks = strs(df, col::WEBHOOK_ID)?;
    let types = strs(df, col::WEBHOOK_TYPE)?;
    let contacts = ints(df, col::CONTACT_ID)?;
    let emails = strs(df, col::EMAIL)?;
    let received = ints(df, col::RECEIVED_AT)?;
    let due = ints(df, col::DUE_AT)?;
    let slots = ints(df, col::SLOT)?;
    let reasons = strs(df, col::REASON)?;
    let planned = ints(df, col::PLANNED_AT)?;
    let callbacks = strs_or_null(df, col::CALLBACK_ID)?;
    let holdouts = bools_or_false(df, col::HOLDOUT)?;
    let zones = strs_or_null(df, col::TIME_ZONE)?;
    let hold_ends = ints_or_null(df, col::HOLD_ENDS)?;
    let portals = ints_or_null(df, col::PORTAL_ID)?;
    let shares = floats_or_null(df, col::HOLDOUT_SHARE)?;
    (0..ids.len())
        .map(|i| {
            Ok(PlanRow {
                receipt_id: ids[i].clone().unwrap_or_default(),
                webhook_id: webhooks[i].clone().unwrap_or_default(),
                webhook_type: stored_enum(
                    col::WEBHOOK_TYPE,
                    types[i].as_deref(),
                    WebhookType::parse,
                )?,
                contact_id: contacts[i],
                email: emails[i].clone(),
                received_at_ms: received[i].unwrap_or_default(),
                due_at_ms: due[i].unwrap_or_default(),
                slot: slots[i].and_then(|s| u8::try_from(s).ok()),
                reason: reasons[i].clone().unwrap_or_default(),
                planned_at_ms: planned[i].unwrap_or_default(),
                callback_id: callbacks[i].clone(),
                holdout: holdouts[i],
                time_zone: zones[i].as_deref().and_then(parse_zone),
                hold_ends_ms: hold_ends[i],
                portal_id: portals[i],
                holdout_share: shares[i],
            })
        })
        .collect()
}
