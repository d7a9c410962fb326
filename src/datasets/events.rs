//! The engagement events dataset (`{data_dir}/events/`): what each contact did with our email,
//! and when. Imported from HubSpot's email events API or a CSV; read by the model.
//!
//! Rows carry what the profile aggregation needs as small integers computed once at import
//! (dense contact index, kind code, hour-of-week slot, day number), so building profiles over
//! 100M events never parses a timestamp or hashes a string. Each part is sorted by contact.
//! Contacts get their dense index from the `contacts/` dataset, a dictionary appended as new
//! contacts appear.

use std::collections::HashSet;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use anyhow::Context;
use polars::prelude::*;
use ulid::Ulid;

use super::contacts::{self, Contacts, contact_key};
use crate::store::{self, Dataset, cannot_open, is_not_found, lock_file, read_present_columns};
use crate::time::{day_of, slot_of};

/// The folder under the data directory.
pub const NAME: &str = "events";

/// Column names.
pub mod col {
    /// Dense index into the contact dictionary (`u32`).
    pub const CONTACT: &str = "contact";
    /// The source's own id for the event (HubSpot's `id`), when it has one.
    pub const EVENT_ID: &str = "event_id";
    pub const CONTACT_ID: &str = "contact_id";
    pub const EMAIL: &str = "email";
    /// [`super::Kind`] as its code (`u8`).
    pub const KIND: &str = "kind";
    /// UTC, a Parquet timestamp in milliseconds without a zone.
    pub const AT: &str = "at";
    /// Hour of week of `at` (`u8`).
    pub const SLOT: &str = "slot";
    /// Days since 1970-01-01 of `at` (`i32`).
    pub const DAY: &str = "day";
    /// Machine opens and bot clicks (`bool`).
    pub const FILTERED: &str = "filtered";
    /// Where it came from, e.g. `hubspot:main`: text, or in a bulk import's parts a one-value
    /// enum (a Parquet dictionary); read it cast to text.
    pub const SOURCE: &str = "source";
}

/// The dataset under `data_dir`; merged parts sorted by contact and time, as written (a
/// rebuild reads a sorted part on every core).
pub fn dataset(data_dir: &Path) -> anyhow::Result<Dataset> {
    Ok(Dataset::open(data_dir, NAME)?.sorted_by(&[col::CONTACT, col::AT]))
}

/// What [`col::SOURCE`] starts with for the events imported from HubSpot.
const HUBSPOT_SOURCE: &str = "hubspot:";

/// The source of the events imported from HubSpot through `connector`.
pub fn hubspot_source(connector: &str) -> String {
    format!("{HUBSPOT_SOURCE}{connector}")
}

/// What happened, as HubSpot names it. Stored as its `u8` code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Kind {
    Sent = 0,
    Dropped = 1,
    Processed = 2,
    Delivered = 3,
    Deferred = 4,
    Bounce = 5,
    Open = 6,
    Click = 7,
    Print = 8,
    Forward = 9,
    StatusChange = 10,
    SpamReport = 11,
}

impl Kind {
    pub const ALL: [Kind; 12] = [
        Kind::Sent,
        Kind::Dropped,
        Kind::Processed,
        Kind::Delivered,
        Kind::Deferred,
        Kind::Bounce,
        Kind::Open,
        Kind::Click,
        Kind::Print,
        Kind::Forward,
        Kind::StatusChange,
        Kind::SpamReport,
    ];

    /// HubSpot's name (`OPEN`, `CLICK`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Sent => "SENT",
            Kind::Dropped => "DROPPED",
            Kind::Processed => "PROCESSED",
            Kind::Delivered => "DELIVERED",
            Kind::Deferred => "DEFERRED",
            Kind::Bounce => "BOUNCE",
            Kind::Open => "OPEN",
            Kind::Click => "CLICK",
            Kind::Print => "PRINT",
            Kind::Forward => "FORWARD",
            Kind::StatusChange => "STATUSCHANGE",
            Kind::SpamReport => "SPAMREPORT",
        }
    }

    /// Case-insensitive parse of HubSpot's name.
    pub fn parse(s: &str) -> Option<Kind> {
        let s = s.trim();
        // HubSpot's spelling first: an import compares every row's kind.
        Kind::exact(s.as_bytes()).or_else(|| {
            Kind::ALL
                .into_iter()
                .find(|k| k.as_str().eq_ignore_ascii_case(s))
        })
    }

    /// The kind spelled exactly as HubSpot does (`OPEN`), from bytes not yet checked as text.
    pub fn exact(name: &[u8]) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str().as_bytes() == name)
    }

    pub fn from_code(code: u8) -> Option<Kind> {
        Kind::ALL.get(code as usize).copied()
    }

    /// Opens and clicks are what the model learns from.
    pub fn is_engagement(self) -> bool {
        matches!(self, Kind::Open | Kind::Click)
    }
}

/// One engagement event as importers produce it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The source's own id for the event (HubSpot's `id`), used to de-duplicate re-imports.
    pub event_id: Option<String>,
    pub contact_id: Option<i64>,
    pub email: Option<String>,
    pub kind: Kind,
    /// UTC, epoch milliseconds.
    pub at_ms: i64,
    /// HubSpot marks machine opens and bot clicks as filtered: kept, but not learned from.
    pub filtered: bool,
    /// Where it came from, e.g. `hubspot:main` or `csv:outspot-opens.csv`.
    pub source: String,
}

impl Event {
    /// The key that identifies the contact across sources: the lower-cased email when known,
    /// else `#` and the HubSpot contact id.
    pub fn contact_key(&self) -> Option<String> {
        contact_key(self.contact_id, self.email.as_deref())
    }
}

/// Append events to `{data_dir}/events/` as one part sorted by contact, adding new contacts to
/// the dictionary first (so every stored index resolves). Events without a contact, and those
/// of a contact `sendtime erase` erased, are skipped and counted. Returns (stored, skipped).
pub fn append(data_dir: &Path, events: &[Event]) -> anyhow::Result<(usize, usize)> {
    Appender::new(data_dir).append(events)
}

/// [`append`] batch after batch (the HubSpot import's pages), keeping the contact dictionary
/// between batches: loading it for each made a first import quadratic in its pages. The parts
/// another writer added are read before the next batch, and it is loaded again when its parts
/// were rewritten (an erase, a compaction).
pub struct Appender {
    data_dir: PathBuf,
    contacts: Contacts,
    /// The dictionary's parts as this appender left them; `None`: load it.
    parts: Option<Vec<PathBuf>>,
}

impl Appender {
    pub fn new(data_dir: &Path) -> Self {
        Appender {
            data_dir: data_dir.to_path_buf(),
            contacts: Contacts::default(),
            parts: None,
        }
    }

    /// [`append`] `events`.
    pub fn append(&mut self, events: &[Event]) -> anyhow::Result<(usize, usize)> {
        let _lock = lock(&self.data_dir)?;
        crate::cut_short::refuse_to_import(&self.data_dir)?;
        let dictionary = contacts::dataset(&self.data_dir)?;
        // Taken, so that a failure below leaves the dictionary to be loaded again.
        let left = self.parts.take();
        let now = dictionary.parts()?;
        let caught_up = match &left {
            // A part set aside may be the last one: the load says so, rather than its indices
            // given again.
            _ if dictionary.quarantined_until()?.is_some() => false,
            Some(left) if left.iter().all(|p| now.binary_search(p).is_ok()) => {
                let added: Vec<PathBuf> = now
                    .iter()
                    .filter(|p| left.binary_search(p).is_err())
                    .cloned()
                    .collect();
                // A part unreadable is left to the load, which sets it aside and says so.
                self.contacts.catch_up(&added).unwrap_or(false)
            }
            _ => false,
        };
        if !caught_up {
            self.contacts = Contacts::load(&self.data_dir)?;
        }
        let done = write(&self.data_dir, &mut self.contacts, events)?;
        self.parts = Some(dictionary.parts()?);
        Ok(done)
    }
}

/// [`append`] with the dictionary loaded, under the lock.
fn write(
    data_dir: &Path,
    contacts: &mut Contacts,
    events: &[Event],
) -> anyhow::Result<(usize, usize)> {
    let known = contacts.len();
    let erased = super::erased::Erased::load(data_dir)?;
    let mut rows: Vec<(u32, &Event)> = Vec::with_capacity(events.len());
    let mut skipped = 0;
    for e in events {
        match e.contact_key() {
            // An erased contact has no entry: only a new key may be one. An erased id is
            // judged on its own: `erase ID --only` leaves the entry of an address that carries
            // it (a review).
            Some(k)
                if !erased.is_empty()
                    && (e.contact_id.is_some_and(|id| erased.holds_id(id))
                        || (contacts.get(&k).is_none()
                            && e.email.as_deref().is_some_and(|m| erased.holds_email(m)))) =>
            {
                skipped += 1
            }
            Some(k) => rows.push((contacts.intern(&k, e.contact_id), e)),
            None => skipped += 1,
        }
    }
    if contacts.len() > known {
        contacts::write(data_dir, contacts, known..contacts.len())?;
    }
    if rows.is_empty() {
        return Ok((0, skipped));
    }
    rows.sort_by_key(|(c, e)| (*c, e.at_ms));
    let mut df = PartColumns {
        contact: rows.iter().map(|(c, _)| *c).collect(),
        event_id: str_column(
            col::EVENT_ID,
            rows.iter().map(|(_, e)| e.event_id.as_deref()),
        ),
        contact_id: Column::new(
            col::CONTACT_ID.into(),
            rows.iter().map(|(_, e)| e.contact_id).collect::<Vec<_>>(),
        ),
        email: str_column(col::EMAIL, rows.iter().map(|(_, e)| e.email.as_deref())),
        kind: rows.iter().map(|(_, e)| e.kind as u8).collect(),
        at_ms: rows.iter().map(|(_, e)| e.at_ms).collect(),
        filtered: rows.iter().map(|(_, e)| e.filtered).collect(),
        source: str_column(
            col::SOURCE,
            rows.iter().map(|(_, e)| Some(e.source.as_str())),
        ),
    }
    .into_frame()?;
    dataset(data_dir)?
        .write_part(Ulid::generate(), &mut df)
        .context("cannot write events")?;
    Ok((rows.len(), skipped))
}

/// The appenders' lock file, in the data folder.
const LOCK: &str = "events.lock";

/// Take the appenders' lock, held while the returned file is open. Appenders (two imports at
/// once) take turns: each must see the dictionary as the one before left it, or two contacts
/// get the same index.
pub fn lock(data_dir: &Path) -> anyhow::Result<std::fs::File> {
    let lock_path = data_dir.join(LOCK);
    let lock = lock_file(&lock_path)?;
    if lock.try_lock().is_err() {
        // Said, since a file import holds it for as long as it reads its file; a warning, so
        // that the commands that log only warnings (`erase`) do not wait without a word.
        tracing::warn!(
            "waiting for another import or an erase to finish writing events ({} is locked)",
            lock_path.display()
        );
        lock.lock()
            .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    }
    Ok(lock)
}

/// Clear what writers that crashed left in `events/` and `contacts/`: finish the bulk imports'
/// publishes a crash interrupted (their parts were all written, and were hidden until another
/// file import), remove the staging folders of imports that died, and temporary files and
/// checksums of parts never published. Hold [`lock`]: a writer at work has such files too.
pub fn recover_locked(data_dir: &Path) -> anyhow::Result<()> {
    let target = dataset(data_dir)?;
    let mut pending = HashSet::new();
    for entry in std::fs::read_dir(&target.dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "pending")
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            let staging = target.dir.join(stem);
            store::finish_publishing(&path, &staging, &target.dir)
                .with_context(|| format!("cannot finish publishing {}", path.display()))?;
            pending.insert(staging);
        }
    }
    for entry in std::fs::read_dir(&target.dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with(STAGING_PREFIX) && path.is_dir() && !pending.contains(&path) {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    target.recover()?;
    contacts::dataset(data_dir)?.recover()
}

/// [`lock`] if no one holds it, for work that can wait for a later turn rather than for an
/// import to end.
pub fn try_lock(data_dir: &Path) -> anyhow::Result<Option<std::fs::File>> {
    let lock = lock_file(&data_dir.join(LOCK))?;
    Ok(lock.try_lock().is_ok().then_some(lock))
}

/// [`recover_locked`] unless a writer holds [`lock`] (it recovers itself): for `serve`'s
/// start, which must not wait for a long file import to end.
pub fn recover_unless_busy(data_dir: &Path) -> anyhow::Result<()> {
    if let Some(_lock) = try_lock(data_dir)? {
        recover_locked(data_dir)?;
    }
    Ok(())
}

/// One row of a bulk import: (dense contact index, time in epoch ms, kind code). Ordered as
/// parts are sorted.
pub type Row = (u32, i64, u8);

/// A bulk import's parts, written to a staging folder as they fill and published together
/// ([`store::publish`]): readers see all of an import or none of it, and an import that
/// fails (a bad row at the end of the file) or dies leaves nothing visible. Take [`lock`]
/// first. Dropped unpublished, the staging folder is removed.
pub struct Staged {
    staging: Dataset,
    target: Dataset,
    published: bool,
}

/// Columns the same in every row of a bulk import, `rows` long, sliced for each part.
pub struct Constant {
    null_text: Column,
    source: Column,
}

impl Constant {
    pub fn new(source: &str, rows: usize) -> Self {
        let materialized = |c: Column| c.as_materialized_series().clone().into_column();
        Self {
            null_text: materialized(Column::full_null(
                PlSmallStr::EMPTY,
                rows,
                &DataType::String,
            )),
            // A one-value enum: written as a Parquet dictionary straight from its codes, where
            // text would be hashed row by row (a twelfth of a bulk import's time).
            source: materialized(
                Column::new_scalar(col::SOURCE.into(), PlSmallStr::from(source).into(), rows)
                    .cast(&DataType::from_frozen_categories(
                        FrozenCategories::new([source]).expect("one category"),
                    ))
                    .expect("text casts to an enum of itself"),
            ),
        }
    }
}

/// Staging folders are `events/.import-<ulid>`: not parts, so readers pass them by.
const STAGING_PREFIX: &str = ".import-";

impl Staged {
    /// Start staging under `data_dir` (after [`recover_locked`], under [`lock`]).
    pub fn start(data_dir: &Path) -> anyhow::Result<Self> {
        let target = dataset(data_dir)?;
        let staging = Dataset::open(
            data_dir,
            &format!("{NAME}/{STAGING_PREFIX}{}", Ulid::generate()),
        )?;
        Ok(Self {
            staging,
            target,
            published: false,
        })
    }

    /// The columns of `rows` as one part, sorted by contact and time; `contacts` holds every
    /// contact they name. The columns every row of an import shares are sliced from
    /// `constant`, made once, rather than filled again for each part.
    pub fn columns(rows: &[Row], contacts: &Contacts, constant: &Constant) -> PartColumns {
        let rows = sorted(rows);
        let n = rows.len();
        let email = |c: u32| {
            let key = contacts.keys[c as usize].as_str();
            (!key.starts_with('#')).then_some(key)
        };
        // Checked by key only when there are emails: each row's key is a pointer into
        // millions of strings, a cache miss a row.
        let email = if contacts.has_emails() && rows.iter().any(|r| email(r.0).is_some()) {
            str_column(col::EMAIL, rows.iter().map(|r| email(r.0)))
        } else {
            constant.null_text.slice(0, n)
        };
        let id = |r: &Row| contacts.contact_ids[r.0 as usize];
        let contact_id = if rows.iter().all(|r| id(r).is_some()) {
            let ids: Vec<i64> = rows.iter().filter_map(id).collect();
            Column::new(col::CONTACT_ID.into(), ids)
        } else {
            Column::new(
                col::CONTACT_ID.into(),
                rows.iter().map(id).collect::<Vec<_>>(),
            )
        };
        PartColumns {
            contact: rows.iter().map(|r| r.0).collect(),
            event_id: constant.null_text.slice(0, n),
            contact_id,
            email,
            kind: rows.iter().map(|r| r.2).collect(),
            at_ms: rows.iter().map(|r| r.1).collect(),
            filtered: vec![false; n],
            source: constant.source.slice(0, n),
        }
    }

    /// Stage `columns` as one part. Takes `&self`: parts can be written on another thread
    /// while the next is gathered.
    pub fn write(&self, columns: PartColumns) -> anyhow::Result<()> {
        let mut df = columns.into_frame()?;
        self.staging
            .write_part(Ulid::generate(), &mut df)
            .context("cannot write events")?;
        Ok(())
    }

    /// Make every staged part visible at once; how many parts.
    pub fn publish(mut self) -> anyhow::Result<usize> {
        self.published = true;
        store::publish(&self.staging, &self.target)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.published {
            let _ = std::fs::remove_dir_all(&self.staging.dir);
        }
    }
}

/// `rows` sorted by contact, then time and kind: a counting sort on the dense contact index
/// (linear; a comparison sort of millions of rows took an eighth of an import), then each
/// contact's few rows sorted. Rows of few contacts among many (a part of a store of 100M
/// contacts: 800 MB of counts for each part, an import audit) are sorted by comparison.
fn sorted(rows: &[Row]) -> Vec<Row> {
    let Some(max) = rows.iter().map(|r| r.0).max() else {
        return Vec::new();
    };
    if max as usize > 4 * rows.len() {
        let mut out = rows.to_vec();
        out.sort_unstable();
        return out;
    }
    // Counts in u32, half the memory to zero and copy for millions of contacts: a part has
    // fewer than 2^32 rows.
    let mut starts = vec![0u32; max as usize + 2];
    for r in rows {
        starts[r.0 as usize + 1] += 1;
    }
    for i in 1..starts.len() {
        starts[i] += starts[i - 1];
    }
    let mut next = starts.clone();
    let mut out = vec![(0, 0, 0); rows.len()];
    for r in rows {
        let at = &mut next[r.0 as usize];
        out[*at as usize] = *r;
        *at += 1;
    }
    for run in starts.windows(2) {
        if run[1] - run[0] > 1 {
            out[run[0] as usize..run[1] as usize].sort_unstable();
        }
    }
    out
}

/// Calls `each(id, at_ms)` for every event imported from HubSpot stored with an id in the part
/// at `path` and a time in `window`; returns the earliest and latest of those times (`None`:
/// it has none). What a re-import of the window must not store again
/// ([`crate::import::seen`]). Through any connector: HubSpot's ids are random, so a connector
/// renamed, or a second one on the same account, does not store its events again.
pub fn ids_in_part(
    path: &Path,
    window: RangeInclusive<i64>,
    mut each: impl FnMut(&str, i64),
) -> anyhow::Result<Option<(i64, i64)>> {
    let mut read = || -> anyhow::Result<Option<(i64, i64)>> {
        let footer = ParquetReader::new(std::fs::File::open(path)?)
            .get_metadata()?
            .clone();
        if !may_hold_ids(&footer, &window) {
            return Ok(None);
        }
        let df = read_present_columns(path, &[col::EVENT_ID, col::AT, col::SOURCE])?;
        let Ok(ids) = df.column(col::EVENT_ID) else {
            return Ok(None); // parts written before event ids were stored
        };
        let ids = ids.str()?;
        let at = df.column(col::AT)?.cast(&DataType::Int64)?;
        let at = at.i64()?;
        let sources = df.column(col::SOURCE)?.cast(&DataType::String)?;
        let sources = sources.str()?;
        let mut span: Option<(i64, i64)> = None;
        for ((id, at), src) in ids.iter().zip(at.iter()).zip(sources.iter()) {
            if let (Some(id), Some(at), Some(src)) = (id, at, src)
                && src.starts_with(HUBSPOT_SOURCE)
                && window.contains(&at)
            {
                span = Some(span.map_or((at, at), |(lo, hi)| (lo.min(at), hi.max(at))));
                each(id, at);
            }
        }
        Ok(span)
    };
    read().with_context(|| format!("cannot read event ids from {}", path.display()))
}

/// Whether a part's footer allows an event with an id and a time in `window`: some row group
/// has ids (not all null) and times overlapping it. Parts of a bulk import (no ids) and parts
/// of other times are passed by without reading their rows, so a run over the last hours
/// does not read a store of 100M rows. The footer is read unverified: the rows are verified
/// ([`read_present_columns`]) when they are read.
fn may_hold_ids(
    footer: &polars::io::parquet::read::FileMetadata,
    window: &RangeInclusive<i64>,
) -> bool {
    use polars_parquet::parquet::statistics::Statistics;
    footer.row_groups.iter().any(|group| {
        let stats = |name: &str| {
            let column = group.columns_under_root_iter(name)?.next()?;
            Some(column.statistics(&footer.footer_buf).and_then(Result::ok))
        };
        let ids = match stats(col::EVENT_ID) {
            None => false, // parts written before event ids were stored
            Some(Some(s)) => s.null_count() != Some(group.num_rows() as i64),
            Some(None) => true,
        };
        let times = match stats(col::AT) {
            Some(Some(Statistics::Int64(s))) => match (s.min_value, s.max_value) {
                (Some(lo), Some(hi)) => lo <= *window.end() && hi >= *window.start(),
                _ => true,
            },
            _ => true,
        };
        ids && times
    })
}

/// The columns of one events part as writers hold them; `slot` and `day` are derived from
/// `at_ms` here, the one place that writes the events schema.
pub struct PartColumns {
    pub contact: Vec<u32>,
    /// Strings, or all null ([`Column::full_null`]) for a source without ids.
    pub event_id: Column,
    pub contact_id: Column,
    pub email: Column,
    pub kind: Vec<u8>,
    pub at_ms: Vec<i64>,
    pub filtered: Vec<bool>,
    pub source: Column,
}

impl PartColumns {
    /// The part's frame, columns in schema order.
    pub fn into_frame(self) -> anyhow::Result<DataFrame> {
        let n = self.contact.len();
        let slot: Vec<u8> = self.at_ms.iter().map(|a| slot_of(*a)).collect();
        let day: Vec<i32> = self.at_ms.iter().map(|a| day_of(*a)).collect();
        let at = Column::new(col::AT.into(), self.at_ms)
            .cast(&DataType::Datetime(TimeUnit::Milliseconds, None))?;
        let named = |c: Column, name: &str| c.with_name(name.into());
        Ok(DataFrame::new(
            n,
            vec![
                Column::new(col::CONTACT.into(), self.contact),
                named(self.event_id, col::EVENT_ID),
                named(self.contact_id, col::CONTACT_ID).cast(&DataType::Int64)?,
                named(self.email, col::EMAIL),
                Column::new(col::KIND.into(), self.kind),
                at,
                Column::new(col::SLOT.into(), slot),
                Column::new(col::DAY.into(), day),
                Column::new(col::FILTERED.into(), self.filtered),
                named(self.source, col::SOURCE),
            ],
        )?)
    }
}

fn str_column<'a>(name: &str, values: impl Iterator<Item = Option<&'a str>>) -> Column {
    Column::new(name.into(), values.collect::<Vec<_>>())
}

/// Read `columns` of one part.
pub fn read_columns(path: &Path, columns: &[&str]) -> anyhow::Result<DataFrame> {
    crate::store::read_with(path, |reader| {
        reader
            .with_columns(Some(columns.iter().map(|c| c.to_string()).collect()))
            .finish()
    })
}

/// `e`, with what to do when it is a stored part's damage: an import cannot match rows
/// against a part it cannot read, and `profiles` (or `serve`'s next tick) sets it aside.
pub fn with_damage_hint(e: anyhow::Error) -> anyhow::Error {
    if e.chain()
        .any(|c| c.downcast_ref::<store::checksum::Mismatch>().is_some())
    {
        e.context(
            "a stored events part is damaged: `sendtime profiles` moves it to quarantine/ (its \
             events leave the store; import them again), then run this again",
        )
    } else {
        e
    }
}

/// One stored event as the readers that go event by event take it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stored {
    pub contact: u32,
    /// [`Kind`] as its code.
    pub kind: u8,
    pub at_ms: i64,
    pub filtered: bool,
}

/// Each event of `parts` that has a contact, kind and time, as [`for_each_part`] reads them.
pub fn for_each_event(
    data_dir: &Path,
    parts: &[PathBuf],
    mut f: impl FnMut(Stored),
) -> anyhow::Result<()> {
    let columns = [col::CONTACT, col::KIND, col::AT, col::FILTERED];
    for_each_part(data_dir, parts, &columns, |_, df| {
        let contact = df.column(col::CONTACT)?.u32()?;
        let kind = df.column(col::KIND)?.u8()?;
        let at = df.column(col::AT)?.cast(&DataType::Int64)?;
        let filtered = df.column(col::FILTERED)?.bool()?;
        let rows = contact.iter().zip(kind.iter()).zip(at.i64()?.iter());
        for (((c, k), at), filtered) in rows.zip(filtered.iter()) {
            if let (Some(contact), Some(kind), Some(at_ms)) = (c, k, at) {
                let filtered = filtered == Some(true);
                f(Stored {
                    contact,
                    kind,
                    at_ms,
                    filtered,
                });
            }
        }
        Ok(())
    })
}

/// Decode `parts` (projected to `columns`) on a helper thread, one ahead of `f`, so decoding
/// and `f`'s work overlap. A part gone (compacted away) is skipped, one that cannot be
/// opened fails (the file may be fine), one that cannot be decoded is quarantined.
pub fn for_each_part(
    data_dir: &Path,
    parts: &[PathBuf],
    columns: &[&str],
    mut f: impl FnMut(&Path, DataFrame) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let dataset = dataset(data_dir)?;
    let (tx, rx) = mpsc::sync_channel::<(PathBuf, anyhow::Result<DataFrame>)>(1);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            for path in parts {
                let df = read_columns(path, columns);
                if tx.send((path.clone(), df)).is_err() {
                    return;
                }
            }
        });
        for (path, df) in rx {
            match df {
                Ok(df) => f(&path, df)?,
                Err(e) if is_not_found(&e) => {}
                Err(e) if cannot_open(&e) => {
                    return Err(e.context(format!("cannot open {}", path.display())));
                }
                Err(e) => dataset.quarantine(&path, &e)?,
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event naming an erased HubSpot id is skipped though its address has an entry:
    /// `erase ID --only` leaves the entry of an address that carries the id (a review).
    #[test]
    fn an_event_naming_an_erased_id_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let event = |id: Option<i64>, email: &str| Event {
            event_id: None,
            contact_id: id,
            email: Some(email.into()),
            kind: Kind::Open,
            at_ms: 1_795_947_420_000,
            filtered: false,
            source: "test".into(),
        };
        append(dir.path(), &[event(None, "ann@example.com")]).unwrap();
        crate::datasets::erased::Erased::record(dir.path(), ["#7", "bob@example.com"]).unwrap();
        let (stored, skipped) = append(
            dir.path(),
            &[
                event(Some(7), "ann@example.com"),
                event(None, "Bob@example.com"),
                event(Some(8), "ann@example.com"),
            ],
        )
        .unwrap();
        assert_eq!((stored, skipped), (1, 2));
    }

    /// Two imports appending at once (each with new contacts) lose no contact and give none
    /// another's index.
    #[test]
    fn concurrent_appends_keep_every_contact() {
        let dir = tempfile::tempdir().unwrap();
        let event = |email: String| Event {
            event_id: None,
            contact_id: None,
            email: Some(email),
            kind: Kind::Open,
            at_ms: 1_700_000_000_000,
            filtered: false,
            source: "t".into(),
        };
        std::thread::scope(|s| {
            for t in 0..2 {
                let dir = dir.path();
                s.spawn(move || {
                    for i in 0..40 {
                        append(dir, &[event(format!("t{t}-{i}@example.com"))]).unwrap();
                    }
                });
            }
        });
        let contacts = Contacts::load(dir.path()).unwrap();
        assert_eq!(contacts.len(), 80);
        for t in 0..2 {
            for i in 0..40 {
                assert!(contacts.get(&format!("t{t}-{i}@example.com")).is_some());
            }
        }
    }

    #[test]
    fn rows_sort_by_contact_then_time_and_kind() {
        let rows = [
            (3, 5, 6),
            (0, 9, 7),
            (3, 1, 7),
            (0, 9, 6),
            (1, 4, 6),
            (3, 1, 6),
        ];
        let mut want = rows.to_vec();
        want.sort_unstable();
        assert_eq!(sorted(&rows), want);
        assert!(sorted(&[]).is_empty());
        // Few contacts of a large dictionary: sorted alike, by comparison.
        let sparse = rows.map(|(c, at, kind)| (c * 1_000_000, at, kind));
        let mut want = sparse.to_vec();
        want.sort_unstable();
        assert_eq!(sorted(&sparse), want);
    }

    #[test]
    fn kinds_round_trip() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_code(k as u8), Some(k));
            assert_eq!(Kind::parse(&k.as_str().to_lowercase()), Some(k));
        }
        assert_eq!(Kind::parse("nope"), None);
    }

    #[test]
    fn append_assigns_dense_indices_and_sorts_by_contact() {
        let dir = tempfile::tempdir().unwrap();
        let ev = |email: &str, at| Event {
            event_id: None,
            contact_id: None,
            email: Some(email.into()),
            kind: Kind::Open,
            at_ms: at,
            filtered: false,
            source: "test".into(),
        };
        append(
            dir.path(),
            &[ev("b@x.com", 5), ev("a@x.com", 3), ev("B@x.com", 1)],
        )
        .unwrap();
        let (n, skipped) = append(
            dir.path(),
            &[
                ev("a@x.com", 9),
                Event {
                    email: None,
                    ..ev("", 1)
                },
            ],
        )
        .unwrap();
        assert_eq!((n, skipped), (1, 1));
        let contacts = Contacts::load(dir.path()).unwrap();
        assert_eq!(contacts.keys, ["b@x.com", "a@x.com"]);
        assert_eq!(contacts.find(None, Some("A@X.com")), Some(1));
        let parts = dataset(dir.path()).unwrap().read_all().unwrap();
        let first = &parts[0].1;
        let c: Vec<_> = first
            .column("contact")
            .unwrap()
            .u32()
            .unwrap()
            .iter()
            .flatten()
            .collect();
        assert_eq!(c, [0, 0, 1]);
    }

    /// An open by `email`.
    fn event(email: &str) -> Event {
        Event {
            event_id: None,
            contact_id: None,
            email: Some(email.into()),
            kind: Kind::Open,
            at_ms: 1_700_000_000_000,
            filtered: false,
            source: "test".into(),
        }
    }

    /// The stored events' (email, contact index), sorted.
    fn emails_stored(data: &Path) -> Vec<(String, u32)> {
        let mut rows: Vec<(String, u32)> = Vec::new();
        for (_, df) in dataset(data).unwrap().read_all().unwrap() {
            let emails = df.column(col::EMAIL).unwrap().str().unwrap().clone();
            let idx = df.column(col::CONTACT).unwrap().u32().unwrap().clone();
            let pairs = emails.iter().zip(idx.iter());
            rows.extend(pairs.map(|(e, i)| (e.unwrap().into(), i.unwrap())));
        }
        rows.sort();
        rows
    }

    /// An appender keeps its dictionary between batches, but another writer's contacts (here
    /// a second appender) are seen before its next batch: no two contacts share an index.
    #[test]
    fn an_appender_sees_contacts_another_writer_added() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Appender::new(dir.path());
        let mut b = Appender::new(dir.path());
        a.append(&[event("a@x.com")]).unwrap();
        b.append(&[event("b@x.com")]).unwrap();
        a.append(&[event("c@x.com"), event("a@x.com")]).unwrap();
        b.append(&[event("d@x.com")]).unwrap();
        let contacts = Contacts::load(dir.path()).unwrap();
        assert_eq!(contacts.keys, ["a@x.com", "b@x.com", "c@x.com", "d@x.com"]);
        let rows = emails_stored(dir.path());
        let want = [
            ("a@x.com", 0),
            ("a@x.com", 0),
            ("b@x.com", 1),
            ("c@x.com", 2),
            ("d@x.com", 3),
        ];
        assert_eq!(rows, want.map(|(e, i)| (e.to_string(), i)));
    }

    /// An appender reads only the dictionary parts another writer added since its last
    /// batch (two imports at once add one a page): the parts it had read are damaged here
    /// meanwhile, and neither appender reads them again.
    #[test]
    fn an_appender_reads_only_the_parts_another_writer_added() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Appender::new(dir.path());
        let mut b = Appender::new(dir.path());
        a.append(&[event("a@x.com")]).unwrap();
        b.append(&[event("b@x.com")]).unwrap();
        // The parts both have read (b has not read c's, below).
        let read = contacts::dataset(dir.path()).unwrap().parts().unwrap();
        a.append(&[event("c@x.com")]).unwrap();
        let kept: Vec<Vec<u8>> = read.iter().map(|p| std::fs::read(p).unwrap()).collect();
        for part in &read {
            let mut bytes = std::fs::read(part).unwrap();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0xff;
            std::fs::write(part, bytes).unwrap();
        }
        b.append(&[event("d@x.com"), event("a@x.com")]).unwrap();
        a.append(&[event("e@x.com"), event("d@x.com")]).unwrap();
        for (part, bytes) in read.iter().zip(&kept) {
            std::fs::write(part, bytes).unwrap();
        }
        let contacts = Contacts::load(dir.path()).unwrap();
        let keys = ["a@x.com", "b@x.com", "c@x.com", "d@x.com", "e@x.com"];
        assert_eq!(contacts.keys, keys);
        let rows = emails_stored(dir.path());
        let want = [
            ("a@x.com", 0),
            ("a@x.com", 0),
            ("b@x.com", 1),
            ("c@x.com", 2),
            ("d@x.com", 3),
            ("d@x.com", 3),
            ("e@x.com", 4),
        ];
        assert_eq!(rows, want.map(|(e, i)| (e.to_string(), i)));
    }

    /// A part whose footer says it has no ids, or none in the window, is passed by without
    /// its rows being read: here a damaged checksum shows whether they were.
    #[test]
    fn parts_without_ids_in_the_window_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let event = |id: Option<&str>, at_ms: i64| Event {
            event_id: id.map(String::from),
            contact_id: None,
            email: Some("a@x.com".into()),
            kind: Kind::Open,
            at_ms,
            filtered: false,
            source: "hubspot:main".into(),
        };
        const DAY: i64 = 86_400_000;
        let t = 1_700_000_000_000;
        // Parts are named by ULID, in write order only across milliseconds.
        for e in [
            event(Some("old"), t - 10 * DAY),
            event(None, t),
            event(Some("new"), t),
        ] {
            append(dir.path(), &[e]).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let parts = dataset(dir.path()).unwrap().parts().unwrap();
        for part in &parts[..2] {
            std::fs::write(part.with_extension("xxh3"), "0").unwrap();
        }
        let ids = |part: &Path, window: RangeInclusive<i64>| {
            let mut ids = Vec::new();
            ids_in_part(part, window, |id, _| ids.push(id.to_string())).map(|_| ids)
        };
        let today = t - DAY..=t + DAY;
        assert!(ids(&parts[0], today.clone()).unwrap().is_empty());
        assert!(ids(&parts[1], today.clone()).unwrap().is_empty());
        assert_eq!(ids(&parts[2], today).unwrap(), ["new"]);
        // Over its time, the damaged part with ids is read, and its damage found.
        let err = ids(&parts[0], t - 11 * DAY..=t).unwrap_err();
        assert!(format!("{err:#}").contains("checksum"), "{err:#}");
    }

    #[test]
    fn a_bulk_part_and_an_api_part_read_their_sources_as_text() {
        let dir = tempfile::tempdir().unwrap();
        let staged = Staged::start(dir.path()).unwrap();
        let contacts = Contacts::new(vec!["#7".into()], vec![Some(7)]);
        let rows = [(0, 1_700_000_000_000, Kind::Open as u8)];
        staged
            .write(Staged::columns(
                &rows,
                &contacts,
                &Constant::new("csv:opens.csv", 1),
            ))
            .unwrap();
        staged.publish().unwrap();
        let api = Event {
            event_id: Some("e1".into()),
            contact_id: Some(7),
            email: None,
            kind: Kind::Open,
            at_ms: 1_700_000_000_000,
            filtered: false,
            source: "hubspot:main".into(),
        };
        append(dir.path(), &[api]).unwrap();
        let mut ids = Vec::new();
        for part in dataset(dir.path()).unwrap().parts().unwrap() {
            ids_in_part(&part, 0..=i64::MAX, |id, at| ids.push((id.to_string(), at))).unwrap();
        }
        assert_eq!(ids, [("e1".to_string(), 1_700_000_000_000)]);
        let mut sources = Vec::new();
        for (_, df) in dataset(dir.path()).unwrap().read_all().unwrap() {
            let text = df.column(col::SOURCE).unwrap().cast(&DataType::String);
            let text = text.unwrap();
            sources.extend(text.str().unwrap().iter().flatten().map(String::from));
        }
        sources.sort();
        assert_eq!(sources, ["csv:opens.csv", "hubspot:main"]);
    }
}
