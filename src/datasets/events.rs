//! The engagement events dataset (`{data_dir}/events/`): what each contact did with our email,
//! and when. Imported from HubSpot's email events API or a CSV; read by the model.
//!
//! Rows carry what the profile aggregation needs as small integers computed once at import
//! (dense contact index, kind code, hour-of-week slot, day number), so building profiles over
//! 100M events never parses a timestamp or hashes a string. Each part is sorted by contact.
//! Contacts get their dense index from the `contacts/` dataset, a dictionary appended as new
//! contacts appear.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use polars::prelude::*;
use ulid::Ulid;

use crate::store::{Dataset, concat_frames, lock_file};

/// Milliseconds per hour and per day.
pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;
/// Hour-of-week slots; slot 0 is Monday 00:00–00:59 UTC.
pub const SLOTS: usize = 168;

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
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
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

/// See [`Event::contact_key`].
pub fn contact_key(contact_id: Option<i64>, email: Option<&str>) -> Option<String> {
    match (email.map(str::trim).filter(|e| !e.is_empty()), contact_id) {
        (Some(e), _) => Some(e.to_ascii_lowercase()),
        (None, Some(id)) => Some(format!("#{id}")),
        (None, None) => None,
    }
}

/// Hour-of-week slot (0 = Monday 00:00 UTC) of an instant.
pub fn slot_of(at_ms: i64) -> u8 {
    let days = at_ms.div_euclid(DAY_MS);
    // 1970-01-01 was a Thursday: weekday 3 counting Monday as 0.
    let weekday = (days + 3).rem_euclid(7);
    let hour = at_ms.rem_euclid(DAY_MS) / HOUR_MS;
    (weekday * 24 + hour) as u8
}

/// Days since the Unix epoch.
pub fn day_of(at_ms: i64) -> i32 {
    at_ms.div_euclid(DAY_MS) as i32
}

/// The contact dictionary: contact key → dense index (0, 1, 2, ... in order of first sight).
#[derive(Debug, Default, Clone)]
pub struct Contacts {
    pub keys: Vec<String>,
    pub contact_ids: Vec<Option<i64>>,
    /// Key → index, built on first lookup (or [`Contacts::build_index`]): building profiles
    /// never needs it.
    index: std::sync::OnceLock<KeyIndex>,
}

/// Key → dense index. `#{id}` keys (contacts known by HubSpot id only) are held by their
/// number, so looking one up hashes an integer and touches one entry, with no key string per
/// contact; other keys (emails) by their text. FxHash: keys come from our own data, so
/// SipHash's flooding resistance buys nothing for its cost on millions of lookups.
#[derive(Debug, Default, Clone)]
struct KeyIndex {
    ids: HashMap<i64, u32, rustc_hash::FxBuildHasher>,
    text: HashMap<String, u32, rustc_hash::FxBuildHasher>,
}

impl KeyIndex {
    fn get(&self, key: &str) -> Option<u32> {
        match id_of_key(key) {
            Some(id) => self.ids.get(&id).copied(),
            None => self.text.get(key).copied(),
        }
    }

    fn insert(&mut self, key: &str, index: u32) {
        match id_of_key(key) {
            Some(id) => self.ids.insert(id, index),
            None => self.text.insert(key.to_string(), index),
        };
    }
}

/// The HubSpot id of a `#{id}` key, only when the key is exactly how [`contact_key`] writes
/// it (`#007` is another key than `#7`).
fn id_of_key(key: &str) -> Option<i64> {
    use std::io::Write;
    let id: i64 = key.strip_prefix('#')?.parse().ok()?;
    let mut buf = [0u8; 24];
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    write!(cursor, "#{id}").ok()?;
    let n = cursor.position() as usize;
    (buf[..n] == *key.as_bytes()).then_some(id)
}

impl Contacts {
    /// Load the dictionary from `{data_dir}/contacts/`.
    pub fn load(data_dir: &Path) -> anyhow::Result<Self> {
        let dataset = Dataset::open(data_dir, "contacts")?;
        let mut out = Contacts::default();
        let frames: Vec<DataFrame> = dataset.read_all()?.into_iter().map(|(_, df)| df).collect();
        if frames.is_empty() {
            return Ok(out);
        }
        let mut df = concat_frames(frames)?;
        // Parts are written in index order, so this is normally sorted already.
        if !df.column("contact")?.u32()?.iter().is_sorted() {
            df.sort_in_place(["contact"], SortMultipleOptions::default())?;
        }
        let idx = df.column("contact")?.u32()?.clone();
        let keys = df.column("key")?.str()?.clone();
        let ids = df.column("contact_id")?.i64()?.clone();
        out.keys.reserve(df.height());
        out.contact_ids.reserve(df.height());
        for ((i, k), id) in idx.iter().zip(keys.iter()).zip(ids.iter()) {
            let (Some(i), Some(k)) = (i, k) else { continue };
            // Each index is written once, in order; a repeat is a duplicate row from an
            // interrupted compaction.
            if (i as usize) < out.keys.len() {
                continue;
            }
            // A gap: the part holding those indices is gone (quarantined?). Going on would
            // give the next new contacts indices that events already use for others.
            anyhow::ensure!(
                i as usize == out.keys.len(),
                "the contact dictionary in {} has no entry for index {} (next: {i}): a part is \
                 missing, maybe moved to {}; put it back",
                data_dir.join("contacts").display(),
                out.keys.len(),
                data_dir.join("quarantine").join("contacts").display()
            );
            out.keys.push(k.to_string());
            out.contact_ids.push(id);
        }
        Ok(out)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// How many contacts the dictionary holds, from the parts' footers alone.
    pub fn count(data_dir: &Path) -> anyhow::Result<usize> {
        let mut n = 0;
        for part in Dataset::open(data_dir, "contacts")?.parts()? {
            let file = std::fs::File::open(&part)?;
            n += ParquetReader::new(file).num_rows()?;
        }
        Ok(n)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<u32> {
        self.index().get(key)
    }

    /// The index of the contact whose key is `#{id}` (known by HubSpot id only).
    pub fn get_id(&self, id: i64) -> Option<u32> {
        self.index().ids.get(&id).copied()
    }

    /// Build the key index now rather than on the first lookup (a noticeable part of a second
    /// for millions of contacts), so a process that will plan receipts does it while loading,
    /// not mid-tick.
    pub fn build_index(&self) {
        self.index();
    }

    fn index(&self) -> &KeyIndex {
        self.index.get_or_init(|| {
            let mut index = KeyIndex::default();
            index.ids.reserve(self.keys.len());
            for (i, k) in self.keys.iter().enumerate() {
                index.insert(k, i as u32);
            }
            index
        })
    }

    /// The dense index of a contact: its email first, then its HubSpot id.
    pub fn find(&self, contact_id: Option<i64>, email: Option<&str>) -> Option<u32> {
        email
            .and_then(|e| contact_key(None, Some(e)))
            .and_then(|k| self.get(&k))
            .or_else(|| contact_id.and_then(|id| self.get_id(id)))
    }

    /// Index for `key`, adding it if new.
    fn intern(&mut self, key: &str, contact_id: Option<i64>) -> u32 {
        self.index();
        let index = self.index.get_mut().expect("initialised above");
        if let Some(i) = index.get(key) {
            return i;
        }
        let i = self.keys.len() as u32;
        index.insert(key, i);
        self.keys.push(key.to_string());
        self.contact_ids.push(contact_id);
        i
    }
}

/// Append events to `{data_dir}/events/` as one part sorted by contact, adding new contacts to
/// the dictionary first (so every stored index resolves). Events without a contact are
/// skipped and counted. Returns (stored, skipped).
pub fn append(data_dir: &Path, events: &[Event]) -> anyhow::Result<(usize, usize)> {
    // Appenders (two imports at once) take turns: each must see the dictionary as the one
    // before left it, or two contacts get the same index.
    let lock_path = data_dir.join("events.lock");
    let lock = lock_file(&lock_path)?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    let mut contacts = Contacts::load(data_dir)?;
    let known = contacts.len();
    let mut rows: Vec<(u32, &Event)> = Vec::with_capacity(events.len());
    let mut skipped = 0;
    for e in events {
        match e.contact_key() {
            Some(k) => rows.push((contacts.intern(&k, e.contact_id), e)),
            None => skipped += 1,
        }
    }
    if contacts.len() > known {
        let new = known..contacts.len();
        let mut df = DataFrame::new(
            new.len(),
            vec![
                Column::new(
                    "contact".into(),
                    new.clone().map(|i| i as u32).collect::<Vec<_>>(),
                ),
                Column::new(
                    "key".into(),
                    contacts.keys[new.clone()]
                        .iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>(),
                ),
                Column::new("contact_id".into(), contacts.contact_ids[new].to_vec()),
            ],
        )?;
        Dataset::open(data_dir, "contacts")?.write_part(Ulid::generate(), &mut df)?;
    }
    if rows.is_empty() {
        return Ok((0, skipped));
    }
    rows.sort_by_key(|(c, e)| (*c, e.at_ms));
    let mut df = frame(&rows)?;
    Dataset::open(data_dir, "events")?
        .write_part(Ulid::generate(), &mut df)
        .context("cannot write events")?;
    Ok((rows.len(), skipped))
}

/// The events that `{data_dir}/events/` does not hold yet, and how many it does. Only events
/// without a HubSpot event id are compared (those with one are de-duplicated by id as they are
/// imported): an event is held when a stored event without an id has the same contact, kind
/// and time, counted row for row, so importing a file again adds nothing and importing a
/// longer export of it adds only its new rows.
pub fn not_yet_stored(data_dir: &Path, events: Vec<Event>) -> anyhow::Result<(Vec<Event>, usize)> {
    let contacts = Contacts::load(data_dir)?;
    let key = |e: &Event| {
        if e.event_id.is_some() {
            return None;
        }
        let contact = contacts.find(e.contact_id, e.email.as_deref())?;
        Some((contact, e.kind as u8, e.at_ms))
    };
    // How many stored rows match each key of the new events.
    let mut held: HashMap<(u32, u8, i64), u32> =
        events.iter().filter_map(key).map(|k| (k, 0)).collect();
    if held.is_empty() {
        return Ok((events, 0));
    }
    let (lo, hi) = held.keys().fold((i64::MAX, i64::MIN), |(lo, hi), k| {
        (lo.min(k.2), hi.max(k.2))
    });
    for path in Dataset::open(data_dir, "events")?.parts()? {
        let count = |held: &mut HashMap<_, u32>| -> anyhow::Result<()> {
            let df = read_present_columns(&path, &["contact", "kind", "at", "event_id"])?;
            let ids = match df.column("event_id") {
                Ok(c) => c.str()?.iter().map(|id| id.is_some()).collect(),
                Err(_) => vec![false; df.height()], // written before event ids were stored
            };
            let c = df.column("contact")?.u32()?;
            let k = df.column("kind")?.u8()?;
            let at = df.column("at")?.cast(&DataType::Int64)?;
            for (((c, k), at), has_id) in c.iter().zip(k.iter()).zip(at.i64()?.iter()).zip(ids) {
                if let (Some(c), Some(k), Some(at), false) = (c, k, at, has_id)
                    && (lo..=hi).contains(&at)
                    && let Some(n) = held.get_mut(&(c, k, at))
                {
                    *n += 1;
                }
            }
            Ok(())
        };
        count(&mut held).with_context(|| format!("cannot read {}", path.display()))?;
    }
    let mut stored = 0;
    let fresh = events
        .into_iter()
        .filter(|e| match key(e).and_then(|k| held.get_mut(&k)) {
            Some(n) if *n > 0 => {
                *n -= 1;
                stored += 1;
                false
            }
            _ => true,
        })
        .collect();
    Ok((fresh, stored))
}

/// Those of `columns` that the events part at `path` has (parts written before a column
/// existed lack it), and only those: reading whole parts of a large dataset to look at a few
/// columns is what this avoids.
pub fn read_present_columns(path: &Path, columns: &[&str]) -> anyhow::Result<DataFrame> {
    let mut reader = ParquetReader::new(std::fs::File::open(path)?);
    let schema = reader.schema()?;
    let present = columns
        .iter()
        .filter(|c| schema.contains(c))
        .map(|c| c.to_string())
        .collect();
    Ok(reader.with_columns(Some(present)).finish()?)
}

fn frame(rows: &[(u32, &Event)]) -> anyhow::Result<DataFrame> {
    let at = Column::new(
        "at".into(),
        rows.iter().map(|(_, e)| e.at_ms).collect::<Vec<_>>(),
    )
    .cast(&DataType::Datetime(TimeUnit::Milliseconds, None))?;
    Ok(DataFrame::new(
        rows.len(),
        vec![
            Column::new(
                "contact".into(),
                rows.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
            ),
            Column::new(
                "event_id".into(),
                rows.iter()
                    .map(|(_, e)| e.event_id.as_deref())
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "contact_id".into(),
                rows.iter().map(|(_, e)| e.contact_id).collect::<Vec<_>>(),
            ),
            Column::new(
                "email".into(),
                rows.iter()
                    .map(|(_, e)| e.email.as_deref())
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "kind".into(),
                rows.iter().map(|(_, e)| e.kind as u8).collect::<Vec<_>>(),
            ),
            at,
            Column::new(
                "slot".into(),
                rows.iter()
                    .map(|(_, e)| slot_of(e.at_ms))
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "day".into(),
                rows.iter()
                    .map(|(_, e)| day_of(e.at_ms))
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "filtered".into(),
                rows.iter().map(|(_, e)| e.filtered).collect::<Vec<_>>(),
            ),
            Column::new(
                "source".into(),
                rows.iter()
                    .map(|(_, e)| e.source.as_str())
                    .collect::<Vec<_>>(),
            ),
        ],
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dictionary part gone missing is an error, not indices silently reused.
    #[test]
    fn a_gap_in_the_dictionary_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..3 {
            let e = Event {
                event_id: None,
                contact_id: Some(i),
                email: None,
                kind: Kind::Open,
                at_ms: 1_700_000_000_000,
                filtered: false,
                source: "t".into(),
            };
            append(dir.path(), &[e]).unwrap();
        }
        assert_eq!(Contacts::load(dir.path()).unwrap().len(), 3);
        let parts = Dataset::open(dir.path(), "contacts")
            .unwrap()
            .parts()
            .unwrap();
        std::fs::remove_file(&parts[1]).unwrap();
        let err = Contacts::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("has no entry for index 1 (next: 2)"), "{err}");
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
    fn id_keys_are_looked_up_by_number_and_only_in_their_exact_spelling() {
        let keys = ["#7", "#007", "ada@example.com", "#-3", "#+5", "#0"];
        let mut c = Contacts {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            contact_ids: vec![None; keys.len()],
            ..Contacts::default()
        };
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(c.get(k), Some(i as u32), "{k}");
        }
        assert_eq!(c.get_id(7), Some(0));
        assert_eq!(c.get_id(-3), Some(3));
        assert_eq!(c.get_id(5), None, "#+5 is not how id 5 is keyed");
        assert_eq!(c.get_id(0), Some(5));
        assert_eq!(c.get("#8"), None);
        assert_eq!(c.find(Some(7), Some("nobody@example.com")), Some(0));
        assert_eq!(c.find(Some(7), Some("ADA@example.com")), Some(2));
        // Interning after the index exists keeps both halves current.
        assert_eq!(c.intern("#8", Some(8)), 6);
        assert_eq!(c.intern("bob@example.com", None), 7);
        assert_eq!((c.get_id(8), c.get("bob@example.com")), (Some(6), Some(7)));
    }

    #[test]
    fn slots_start_monday_midnight_utc_and_wrap_on_sunday() {
        // 2024-01-01 was a Monday.
        let monday = 1_704_067_200_000;
        assert_eq!(slot_of(monday), 0);
        assert_eq!(slot_of(monday + 13 * HOUR_MS + 59 * 60_000), 13);
        assert_eq!(slot_of(monday + 6 * DAY_MS + 23 * HOUR_MS), 167);
        assert_eq!(slot_of(monday + 7 * DAY_MS), 0);
        assert_eq!(slot_of(monday - 1), 167);
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
        let parts = Dataset::open(dir.path(), "events")
            .unwrap()
            .read_all()
            .unwrap();
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
}
