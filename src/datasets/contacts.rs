//! The contact dictionary (`{data_dir}/contacts/`): each contact key (a lower-cased email, or
//! `#` and the HubSpot id) gets a dense index in order of first sight, which events carry
//! instead of the key. Parts are written in index order and only appended to.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use polars::prelude::*;
use ulid::Ulid;

use crate::store::{Dataset, concat_frames};

/// The folder under the data directory.
pub const NAME: &str = "contacts";

/// How the key of an erased contact's entry starts (`sendtime erase`): the entry stays, since
/// events index contacts by position, but no lookup finds it.
pub const ERASED: &str = "~erased-";

/// Whether `key` is an erased entry's: [`ERASED`] and a number, never an email (an address
/// that starts so, `~erased-1@example.com`, was never indexed, so each of its rows became a
/// new contact).
pub fn is_erased(key: &str) -> bool {
    key.strip_prefix(ERASED)
        .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
}

/// Column names.
pub mod col {
    /// The dense index (`u32`).
    pub const CONTACT: &str = "contact";
    /// The contact key.
    pub const KEY: &str = "key";
    /// The HubSpot id, when known (`i64`).
    pub const CONTACT_ID: &str = "contact_id";
}

/// Whether `s` names a contact as a person asks for one (`explain`, the dashboard's lookup):
/// an email address or a HubSpot record id, which is positive (as imports require).
pub fn is_contact_query(s: &str) -> bool {
    s.parse::<i64>().is_ok_and(|id| id > 0) || is_email_address(s)
}

/// Why `s` is no contact to ask about ([`is_contact_query`]), showing at most 60 characters
/// of it (a pasted blob was echoed whole).
pub fn not_a_contact(s: &str) -> String {
    let shown = crate::text::quoted(s);
    match !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && s.parse::<i64>().is_err() {
        true => format!(
            "{shown} is larger than any HubSpot contact id (at most {})",
            i64::MAX
        ),
        false => format!(
            "{shown} is neither an email address nor a HubSpot contact id (a positive number)"
        ),
    }
}

/// Whether `s` is an email address as sendtime takes one (from a webhook, an execution, a CSV
/// import): one `@` between a local part of at most 64 and a domain with a dot, at most 254 in
/// all, nothing but visible characters. Enough to keep out what is no address (`..` once
/// became a path segment of an enrollment call) without judging HubSpot's own validation.
pub fn is_email_address(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && s.len() <= 254
        && domain.contains('.')
        && !domain.contains('@')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && s.chars()
            .all(|c| c.is_alphanumeric() || c.is_ascii_punctuation())
        && !s.contains([
            '/', '\\', '?', '#', '%', '"', '<', '>', '(', ')', ',', ';', ':', '[', ']',
        ])
}

/// The key that identifies a contact across sources: the lower-cased email when known, else
/// `#` and the HubSpot contact id.
pub fn contact_key(contact_id: Option<i64>, email: Option<&str>) -> Option<String> {
    match (email.map(str::trim).filter(|e| !e.is_empty()), contact_id) {
        (Some(e), _) => Some(e.to_ascii_lowercase()),
        (None, Some(id)) => Some(format!("#{id}")),
        (None, None) => None,
    }
}

/// The dataset under `data_dir`.
pub fn dataset(data_dir: &Path) -> anyhow::Result<Dataset> {
    Dataset::open(data_dir, NAME)
}

/// The contact dictionary: contact key → dense index (0, 1, 2, ... in order of first sight).
#[derive(Debug, Default)]
pub struct Contacts {
    pub keys: Vec<String>,
    pub contact_ids: Vec<Option<i64>>,
    /// Key → index, built on first lookup (or [`Contacts::build_index`]): building profiles
    /// never needs it.
    index: std::sync::OnceLock<KeyIndex>,
    /// The index while [`Contacts::share`]d: moved there, not copied.
    shared: Option<Sharing>,
}

/// The index shared with other threads, and the keys interned since it was last
/// [`Contacts::merge`]d, which only this dictionary sees.
#[derive(Debug)]
struct Sharing {
    index: Shared,
    young: KeyIndex,
}

/// The key index, shared for lookups on other threads while the dictionary grows: they see
/// the keys interned up to the last [`Contacts::merge`].
#[derive(Debug, Clone)]
pub struct Shared(Arc<RwLock<KeyIndex>>);

impl Shared {
    /// Look keys up; the dictionary cannot merge until the guard is dropped, so hold it for
    /// one batch's lookups, never while waiting on the dictionary's thread (nor on it).
    pub fn read(&self) -> IndexRead<'_> {
        // Readers never write it: a panic while holding it leaves it whole.
        IndexRead(self.0.read().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Key → dense index. `#{id}` keys (contacts known by HubSpot id only) are held by their
/// number, so looking one up hashes an integer and touches one entry, with no key string per
/// contact; other keys (emails) by their text. FxHash: keys come from our own data, so
/// SipHash's flooding resistance buys nothing for its cost on millions of lookups.
#[derive(Debug, Default)]
struct KeyIndex {
    ids: HashMap<i64, u32, rustc_hash::FxBuildHasher>,
    text: HashMap<String, u32, rustc_hash::FxBuildHasher>,
}

/// The shared index's keys, as of the last [`Contacts::merge`], held for reading.
pub struct IndexRead<'a>(RwLockReadGuard<'a, KeyIndex>);

impl IndexRead<'_> {
    /// The index of the contact known by HubSpot id `id` alone (key `#{id}`).
    pub fn get_id(&self, id: i64) -> Option<u32> {
        self.0.get_id(id)
    }

    /// The index of `key` (an email address, lower-cased, or `#{id}`).
    pub fn get(&self, key: &str) -> Option<u32> {
        self.0.get(key)
    }
}

impl KeyIndex {
    fn get(&self, key: &str) -> Option<u32> {
        match id_of_key(key) {
            Some(id) => self.ids.get(&id).copied(),
            None => self.text.get(key).copied(),
        }
    }

    fn get_id(&self, id: i64) -> Option<u32> {
        self.ids.get(&id).copied()
    }

    fn insert(&mut self, key: &str, index: u32) {
        if is_erased(key) {
            return;
        }
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
    /// A dictionary of `keys` (index order) and their HubSpot ids.
    pub fn new(keys: Vec<String>, contact_ids: Vec<Option<i64>>) -> Self {
        Contacts {
            keys,
            contact_ids,
            ..Contacts::default()
        }
    }

    /// Load the dictionary from `{data_dir}/contacts/`.
    pub fn load(data_dir: &Path) -> anyhow::Result<Self> {
        Self::load_from(&dataset(data_dir)?)
    }

    /// [`Self::load`] from `dataset` (one [`Dataset::for_dry_run`]).
    pub fn load_from(dataset: &Dataset) -> anyhow::Result<Self> {
        let mut out = Contacts::default();
        let frames: Vec<DataFrame> = dataset.read_all()?.into_iter().map(|(_, df)| df).collect();
        // Without a part, even the last, new contacts would get indices that events already
        // use for others.
        anyhow::ensure!(
            dataset.quarantined_until()?.is_none(),
            "a part of the contact dictionary is in {} (it could not be read): contacts would be \
             mixed up without it. Restore it from a backup into {}, or move it away if it was \
             put back already",
            dataset.quarantine_dir().display(),
            dataset.dir.display()
        );
        if frames.is_empty() {
            return Ok(out);
        }
        let mut df = concat_frames(frames)?;
        // Parts are written in index order, so this is normally sorted already.
        if !df.column(col::CONTACT)?.u32()?.iter().is_sorted() {
            df.sort_in_place([col::CONTACT], SortMultipleOptions::default())?;
        }
        let idx = df.column(col::CONTACT)?.u32()?.clone();
        let keys = df.column(col::KEY)?.str()?.clone();
        let ids = df.column(col::CONTACT_ID)?.i64()?.clone();
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
                dataset.dir.display(),
                out.keys.len(),
                dataset.quarantine_dir().display()
            );
            out.keys.push(k.to_string());
            out.contact_ids.push(id);
        }
        Ok(out)
    }

    /// Add the entries of `parts`, written by another writer since this dictionary was
    /// loaded, without reading the rest again: two imports at once each add a part a page.
    /// `false` when they do not just continue it (an entry rewritten by an erase, a gap):
    /// load it again.
    pub fn catch_up(&mut self, parts: &[PathBuf]) -> anyhow::Result<bool> {
        let mut rows: Vec<(u32, String, Option<i64>)> = Vec::new();
        for part in parts {
            let df = crate::store::read_part(part)?;
            let idx = df.column(col::CONTACT)?.u32()?;
            let keys = df.column(col::KEY)?.str()?;
            let ids = df.column(col::CONTACT_ID)?.i64()?;
            for ((i, k), id) in idx.iter().zip(keys.iter()).zip(ids.iter()) {
                if let (Some(i), Some(k)) = (i, k) {
                    rows.push((i, k.to_string(), id));
                }
            }
        }
        rows.sort_unstable_by_key(|r| r.0);
        for (i, key, id) in rows {
            let continues = match self.keys.get(i as usize) {
                // A repeat of an entry it holds, or the same index rewritten.
                Some(held) => *held == key,
                // Added at the end; past it (a gap), or a key it holds, at another index.
                None => self.intern(&key, id) == i,
            };
            if !continues {
                return Ok(false);
            }
        }
        Ok(true)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// How many contacts the dictionary holds, from the parts' footers alone.
    pub fn count(data_dir: &Path) -> anyhow::Result<usize> {
        let mut n = 0;
        for part in dataset(data_dir)?.parts()? {
            let file = std::fs::File::open(&part)?;
            n += ParquetReader::new(file).num_rows()?;
        }
        Ok(n)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<u32> {
        self.look(|index| index.get(key))
    }

    /// The index of the contact whose key is `#{id}` (known by HubSpot id only).
    pub fn get_id(&self, id: i64) -> Option<u32> {
        self.look(|index| index.get_id(id))
    }

    /// `find` in the index, wherever it is: the young keys first, as a key the shared index
    /// lacked when a reader looked is most likely there.
    fn look<T>(&self, find: impl Fn(&KeyIndex) -> Option<T>) -> Option<T> {
        match &self.shared {
            Some(sharing) => find(&sharing.young).or_else(|| find(&sharing.index.read().0)),
            None => find(self.index()),
        }
    }

    /// Build the key index now rather than on the first lookup (a noticeable part of a second
    /// for millions of contacts), so a process that will plan receipts does it while loading,
    /// not mid-tick.
    pub fn build_index(&self) {
        if self.shared.is_none() {
            self.index();
        }
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
        let [by_email, by_id] = self.find_each(contact_id, email);
        by_email.or(by_id)
    }

    /// The contacts a receipt's contact is in the store as, by its email and by its HubSpot
    /// id: events imported by each key are two contacts. The second only when it differs.
    pub fn find_each(&self, contact_id: Option<i64>, email: Option<&str>) -> [Option<u32>; 2] {
        let by_email = email
            .and_then(|e| contact_key(None, Some(e)))
            .and_then(|k| self.get(&k));
        let by_id = contact_id
            .and_then(|id| self.get_id(id))
            .filter(|i| Some(*i) != by_email);
        [by_email, by_id]
    }

    /// Whether any contact is keyed by email (the rest are known by HubSpot id alone).
    pub fn has_emails(&self) -> bool {
        let emails = |index: &KeyIndex| (!index.text.is_empty()).then_some(true);
        self.look(emails).unwrap_or(false)
    }

    /// Share the key index with lookups on other threads while this dictionary grows (a bulk
    /// import's readers). It is moved, not copied: one index of millions of keys is memory
    /// enough. Keys interned from now on are seen by the others once [`Contacts::merge`]d.
    pub fn share(&mut self) -> Shared {
        if let Some(sharing) = &self.shared {
            return sharing.index.clone();
        }
        self.index();
        let index = Shared(Arc::new(RwLock::new(self.index.take().unwrap_or_default())));
        self.shared = Some(Sharing {
            index: index.clone(),
            young: KeyIndex::default(),
        });
        index
    }

    /// Move the keys interned since the last merge into the shared index (waiting for its
    /// readers' guards), so other threads find them too.
    pub fn merge(&mut self) {
        let Some(sharing) = &mut self.shared else {
            return;
        };
        if sharing.young.ids.is_empty() && sharing.young.text.is_empty() {
            return;
        }
        // Drained, not taken: its room is kept for the next batch's new contacts.
        let mut index = (sharing.index.0.write()).unwrap_or_else(PoisonError::into_inner);
        index.ids.extend(sharing.young.ids.drain());
        index.text.extend(sharing.young.text.drain());
    }

    /// Drop the key index, shared or not, to free its memory; the next lookup builds it again.
    pub fn forget_index(&mut self) {
        self.shared = None;
        self.index = Default::default();
    }

    /// The index of `key` if the dictionary has it (looked for as [`Contacts::look`] does),
    /// else the index to add it to.
    fn find_or_writable(
        &mut self,
        find: impl Fn(&KeyIndex) -> Option<u32>,
    ) -> Result<u32, &mut KeyIndex> {
        if let Some(i) = self.look(&find) {
            return Ok(i);
        }
        Err(match &mut self.shared {
            Some(sharing) => &mut sharing.young,
            None => self.index.get_mut().expect("built by the lookup"),
        })
    }

    /// Index of the contact known by HubSpot id `id` alone (key `#{id}`), adding it if new:
    /// [`Contacts::intern`] without formatting and re-parsing the key, for bulk imports.
    pub fn intern_id(&mut self, id: i64) -> u32 {
        let i = self.keys.len() as u32;
        match self.find_or_writable(|index| index.get_id(id)) {
            Ok(i) => return i,
            Err(index) => index.ids.insert(id, i),
        };
        self.keys.push(format!("#{id}"));
        self.contact_ids.push(Some(id));
        i
    }

    /// Index for `key`, adding it if new.
    pub fn intern(&mut self, key: &str, contact_id: Option<i64>) -> u32 {
        let i = self.keys.len() as u32;
        match self.find_or_writable(|index| index.get(key)) {
            Ok(i) => return i,
            Err(index) => index.insert(key, i),
        }
        self.keys.push(key.to_string());
        self.contact_ids.push(contact_id);
        i
    }
}

/// Append the dictionary's entries `new` (indices not stored yet) as one part.
pub fn write(data_dir: &Path, contacts: &Contacts, new: Range<usize>) -> anyhow::Result<()> {
    let index = new.clone().map(|i| i as u32).collect();
    let keys: Vec<&str> = contacts.keys[new.clone()]
        .iter()
        .map(String::as_str)
        .collect();
    let ids = contacts.contact_ids[new].to_vec();
    write_entries(&dataset(data_dir)?, index, keys, ids)?;
    Ok(())
}

/// Write entries (index, key, HubSpot id) as one part of `dataset`: new ones, or ones written
/// again (an erase's blanks and the entries it takes an id off); the part's path.
pub fn write_entries<K: AsRef<str>>(
    dataset: &Dataset,
    index: Vec<u32>,
    keys: Vec<K>,
    ids: Vec<Option<i64>>,
) -> anyhow::Result<PathBuf> {
    let keys: Vec<&str> = keys.iter().map(AsRef::as_ref).collect();
    let mut df = DataFrame::new(
        index.len(),
        vec![
            Column::new(col::CONTACT.into(), index),
            Column::new(col::KEY.into(), keys),
            Column::new(col::CONTACT_ID.into(), ids),
        ],
    )?;
    dataset.write_part(Ulid::generate(), &mut df)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasets::events::{Event, Kind, append};

    /// A folder whose dictionary has three parts, a contact each.
    fn three_parts() -> tempfile::TempDir {
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
            // Parts are named by ULID, in write order only across milliseconds.
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        dir
    }

    /// A part that continues a loaded dictionary is caught up with, found by its key; one
    /// that rewrites an entry it holds (an erase's blanks, left beside the entries by a
    /// crash) is not: the dictionary must be loaded again.
    #[test]
    fn only_a_part_that_continues_the_dictionary_is_caught_up_with() {
        let dir = three_parts();
        let mut contacts = Contacts::load(dir.path()).unwrap();
        assert_eq!(contacts.get("#1"), Some(1));
        let part = |rows: &[(u32, &str, Option<i64>)]| {
            let dataset = dataset(dir.path()).unwrap();
            let (index, keys, ids) = (
                rows.iter().map(|r| r.0).collect(),
                rows.iter().map(|r| r.1).collect(),
                rows.iter().map(|r| r.2).collect(),
            );
            write_entries::<&str>(&dataset, index, keys, ids).unwrap()
        };
        // A repeat of an entry it holds (an interrupted compaction's) is passed over.
        let continues = part(&[(4, "#9", Some(9)), (2, "#2", Some(2)), (3, "x@y.com", None)]);
        assert!(contacts.catch_up(&[continues]).unwrap());
        assert_eq!(
            (contacts.get("x@y.com"), contacts.get_id(9)),
            (Some(3), Some(4))
        );
        assert_eq!(contacts.contact_ids[3..], [None, Some(9)]);
        assert!(
            !contacts
                .catch_up(&[part(&[(1, "~erased-1", None)])])
                .unwrap()
        );
        assert!(!contacts.catch_up(&[part(&[(6, "z@y.com", None)])]).unwrap());
    }

    /// A dictionary part gone missing is an error, not indices silently reused.
    #[test]
    fn a_gap_in_the_dictionary_is_an_error() {
        let dir = three_parts();
        assert_eq!(Contacts::load(dir.path()).unwrap().len(), 3);
        let parts = dataset(dir.path()).unwrap().parts().unwrap();
        std::fs::remove_file(&parts[1]).unwrap();
        let err = Contacts::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("has no entry for index 1 (next: 2)"), "{err}");
    }

    /// The last part unreadable: it is quarantined and the load refused. It used to return
    /// the contacts before it, and the next import gave its indices to others.
    #[test]
    fn an_unreadable_last_part_is_an_error() {
        let dir = three_parts();
        let parts = dataset(dir.path()).unwrap().parts().unwrap();
        let last = parts.last().unwrap();
        let mut bytes = std::fs::read(last).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(last, bytes).unwrap();
        let err = Contacts::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("quarantine/contacts"), "{err}");
        assert!(
            Contacts::load(dir.path()).is_err(),
            "still, once it is set aside"
        );
    }

    /// An address that starts as an erased entry's key does (`~erased-1@...`) is a contact like
    /// any: its second event is its, not a new contact's.
    #[test]
    fn an_address_that_starts_as_an_erased_key_is_found_again() {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..2 {
            let e = Event {
                event_id: None,
                contact_id: None,
                email: Some("~erased-1@example.com".into()),
                kind: Kind::Open,
                at_ms: 1_700_000_000_000,
                filtered: false,
                source: "t".into(),
            };
            append(dir.path(), &[e]).unwrap();
        }
        assert_eq!(Contacts::load(dir.path()).unwrap().len(), 1);
        assert!(is_erased("~erased-12") && !is_erased("~erased-1@example.com"));
    }

    #[test]
    fn addresses_and_what_is_not_one() {
        for ok in [
            "ada@example.com",
            "a.b+tag@mail.example.co.uk",
            "o'neil@example.ie",
            "jo@exämple.de",
        ] {
            assert!(is_email_address(ok), "{ok}");
        }
        let long = format!("{}@example.com", "a".repeat(65));
        for bad in [
            "..",
            "ada",
            "@example.com",
            "ada@",
            "ada@localhost",
            "a@b@example.com",
            "ada@example..com",
            "ada @example.com",
            "ada@example.com\r\nX: y",
            "ada\0@example.com",
            "../../x@example.com",
            long.as_str(),
        ] {
            assert!(!is_email_address(bad), "{bad:?}");
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
        assert_eq!((c.intern_id(8), c.intern_id(9)), (6, 8));
        assert_eq!((c.get("#9"), c.keys[8].as_str()), (Some(8), "#9"));
    }

    /// Shared, the index shows other threads the keys of the last merge, and the dictionary
    /// all of them, with the indices one dictionary never shared gives.
    #[test]
    fn a_shared_index_shows_others_what_was_merged() {
        let mut c = Contacts::new(
            vec!["#1".into(), "ada@example.com".into()],
            vec![Some(1), None],
        );
        let shared = c.share();
        assert_eq!((c.intern_id(2), c.intern("bob@example.com", None)), (2, 3));
        let again = (c.intern_id(1), c.intern("ada@example.com", None));
        assert_eq!((again, c.intern_id(2), c.len()), ((0, 1), 2, 4));
        let seen = shared.read();
        let old = (seen.get_id(1), seen.get("ada@example.com"));
        let young = (seen.get_id(2), seen.get("bob@example.com"));
        assert_eq!((old, young), ((Some(0), Some(1)), (None, None)));
        drop(seen);
        assert_eq!((c.get_id(2), c.get("bob@example.com")), (Some(2), Some(3)));
        c.merge();
        let seen = shared.read();
        let young = (seen.get_id(2), seen.get("bob@example.com"));
        assert_eq!(young, (Some(2), Some(3)));
        drop(seen);
        let merged = (c.get_id(2), c.get("bob@example.com"), c.get("#1"));
        assert_eq!(
            (merged, c.has_emails()),
            ((Some(2), Some(3), Some(0)), true)
        );
        assert_eq!(
            (c.intern_id(2), c.len()),
            (2, 4),
            "found in the shared index"
        );
        c.forget_index();
        assert_eq!((c.get_id(2), c.get("bob@example.com")), (Some(2), Some(3)));

        // Keys that repeat across merges: the same indices as never shared.
        let (mut one, mut other) = (Contacts::default(), Contacts::default());
        other.share();
        for n in 0u64..5_000 {
            let k = n.wrapping_mul(2_654_435_761) % 1_000;
            let (a, b) = if k % 2 == 0 {
                (one.intern_id(k as i64), other.intern_id(k as i64))
            } else {
                let key = format!("c{k}@example.com");
                (one.intern(&key, None), other.intern(&key, None))
            };
            assert_eq!(a, b, "row {n}");
            if n % 700 == 0 {
                other.merge();
            }
        }
        assert_eq!((one.keys, other.len()), (other.keys, 1_000));
    }
}
