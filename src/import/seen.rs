//! The HubSpot events a run has stored or met, so that each is stored once, in bounded memory.
//! Boundary: this reads the events dataset; the importer asks [`Seen::insert`] of each event of
//! a page and calls [`Seen::trim`] once the page is stored.
//!
//! A run pages through its window newest first. Holding every id of the window would grow
//! with it (a first import of a large account meets tens of millions). So the window is cut
//! into time slices: a slice's ids are read from the store when an event falls in it, and
//! once the ids held pass the budget, the slices the run has moved past are let go. An event
//! that falls in a slice let go reads it again, so pages in any order are still checked
//! against everything stored.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use crate::datasets::events;

/// Memory for ids unless told otherwise, in MB (917,504 ids between trims). A smaller budget
/// cost no time in `benches/hubspot_import.sh` (the import's parts each hold one page, so a
/// slice's read skips almost all of them), and `serve` runs this import too.
pub const BUDGET_MB: usize = 64;
/// Bytes per slot of the id table: a 16-byte key and a control byte.
const SLOT_BYTES: usize = 17;
/// Slices at most in a window (its `stored` and `held` flags take 5 bytes each).
const MAX_SLICES: u64 = 1 << 20;
/// The shortest slice.
const MIN_SLICE_MS: u64 = 60_000;

/// An event as held: its `created` time and a hash of its id, keyed per run so that no id can
/// be chosen to collide. Two events are taken for one only if both agree.
type Key = (i64, u64);

pub struct Seen {
    data_dir: PathBuf,
    source: String,
    start_ms: i64,
    end_ms: i64,
    slice_ms: i64,
    /// Events stored per slice, kept current as the run stores more: how much a read holds.
    stored: Vec<u32>,
    /// Slices whose stored ids are all in `keys`.
    held: Vec<bool>,
    keys: HashSet<Key>,
    hasher: RandomState,
    /// Ids held before slices are let go.
    budget: usize,
    /// Each part's earliest and latest time of the window's events (`None`: it has none);
    /// parts never change once written, so a read of a slice skips those outside it.
    parts: HashMap<PathBuf, Option<(i64, i64)>>,
}

/// Ids held between trims for `bytes` of memory. The table's slots (a power of two, at most
/// 7/8 full) take at most `bytes` even while it grows into them (the table before, half the
/// size, lives until the move ends), and half of them are left for a slice read and a page.
fn ids_for(bytes: usize) -> usize {
    let slots = (bytes * 2 / 3 / SLOT_BYTES).max(2);
    let slots = 1usize << slots.ilog2();
    (slots / 8 * 7 / 2).max(1)
}

impl Seen {
    /// What `source` has stored in `start_ms..=end_ms`, within about `budget_bytes` of ids:
    /// one pass over the store, holding every id when they fit.
    pub fn load(
        data_dir: &Path,
        source: &str,
        (start_ms, end_ms): (i64, i64),
        budget_bytes: usize,
    ) -> anyhow::Result<Seen> {
        let width = (end_ms.saturating_sub(start_ms).saturating_add(1).max(1)) as u64;
        let slice_ms = width.div_ceil(MAX_SLICES).max(MIN_SLICE_MS);
        let slices = width.div_ceil(slice_ms) as usize;
        let slice_ms = slice_ms as i64;
        let mut seen = Seen {
            data_dir: data_dir.to_path_buf(),
            source: source.to_string(),
            start_ms,
            end_ms,
            slice_ms,
            stored: vec![0; slices],
            held: vec![false; slices],
            keys: HashSet::new(),
            hasher: RandomState::new(),
            budget: ids_for(budget_bytes),
            parts: HashMap::new(),
        };
        let mut fits = true;
        for path in events::dataset(data_dir)?.parts()? {
            let span = events::ids_in_part(&path, source, start_ms..=end_ms, |id, at| {
                let slice = seen.slice(at);
                seen.stored[slice] = seen.stored[slice].saturating_add(1);
                if fits {
                    seen.keys.insert(seen.key(id, at));
                    fits = seen.keys.len() <= seen.budget;
                }
            })?;
            seen.parts.insert(path, span);
        }
        if fits {
            seen.held.fill(true);
        } else {
            seen.keys = HashSet::new();
        }
        Ok(seen)
    }

    /// Whether the event `id` created at `created` (inside the window) is new: neither stored
    /// nor met before in this run. Reads its slice from the store when it is not held.
    pub fn insert(&mut self, id: &str, created: i64) -> anyhow::Result<bool> {
        let slice = self.slice(created);
        if !self.held[slice] {
            self.read(slice)?;
        }
        let new = self.keys.insert(self.key(id, created));
        if new {
            self.stored[slice] = self.stored[slice].saturating_add(1);
        }
        Ok(new)
    }

    /// Once the events met so far are stored: over budget, let go of the slices after
    /// `position` (the page's oldest event; pages come newest first), and if that is not
    /// enough, of all but `position`'s own.
    pub fn trim(&mut self, position: i64) {
        if self.keys.len() <= self.budget {
            return;
        }
        let at = self.slice(position);
        let keep = |seen: &mut Seen, keep: &dyn Fn(usize) -> bool| {
            let (start, slice_ms) = (seen.start_ms, seen.slice_ms);
            seen.keys
                .retain(|&(t, _)| keep(((t - start) / slice_ms) as usize));
            for (i, held) in seen.held.iter_mut().enumerate() {
                *held &= keep(i);
            }
        };
        keep(self, &|s| s <= at);
        if self.keys.len() > self.budget {
            keep(self, &|s| s == at);
        }
        // Without the slots of the ids let go, the table would grow past its budget.
        self.keys.shrink_to_fit();
    }

    /// Ids held now (for tests and logs).
    pub fn held(&self) -> usize {
        self.keys.len()
    }

    /// Read `slice`, and the older slices not held after it (the run is heading that way) while
    /// the ids held stay within one and a half budgets: with a page, the table's slots.
    fn read(&mut self, slice: usize) -> anyhow::Result<()> {
        let mut first = slice;
        let mut ids = self.stored[slice] as usize;
        while first > 0 && !self.held[first - 1] {
            let more = self.stored[first - 1] as usize;
            if self.keys.len() + ids + more > self.budget * 3 / 2 {
                break;
            }
            ids += more;
            first -= 1;
        }
        let from = self.start_ms + first as i64 * self.slice_ms;
        let to = (self.start_ms + (slice as i64 + 1) * self.slice_ms - 1).min(self.end_ms);
        if ids > 0 {
            self.read_ids(from..=to)?;
        }
        self.held[first..=slice].fill(true);
        Ok(())
    }

    fn read_ids(&mut self, range: RangeInclusive<i64>) -> anyhow::Result<()> {
        let window = self.start_ms..=self.end_ms;
        for path in events::dataset(&self.data_dir)?.parts()? {
            let known = self.parts.get(&path).copied();
            if let Some(span) = known {
                let Some((lo, hi)) = span else { continue };
                if hi < *range.start() || lo > *range.end() {
                    continue;
                }
            }
            let (keys, hasher) = (&mut self.keys, &self.hasher);
            let span = events::ids_in_part(&path, &self.source, window.clone(), |id, at| {
                if range.contains(&at) {
                    keys.insert((at, hasher.hash_one(id)));
                }
            })?;
            if known.is_none() {
                self.parts.insert(path, span);
            }
        }
        Ok(())
    }

    fn slice(&self, at: i64) -> usize {
        debug_assert!((self.start_ms..=self.end_ms).contains(&at));
        ((at - self.start_ms) / self.slice_ms) as usize
    }

    fn key(&self, id: &str, created: i64) -> Key {
        (created, self.hasher.hash_one(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasets::events::{Event, Kind, append};

    const HOUR: i64 = 3_600_000;

    fn event(i: i64) -> Event {
        Event {
            event_id: Some(format!("e{i}")),
            contact_id: None,
            email: Some(format!("p{}@x.com", i % 7)),
            kind: Kind::Open,
            at_ms: i * HOUR,
            filtered: false,
            source: "hubspot:main".into(),
        }
    }

    /// Pages out of time order, some fetched twice, over a store far larger than the budget:
    /// every stored event is recognised (the run's own too), every new one taken once, and
    /// what is held stays near the budget.
    #[test]
    fn events_in_any_order_are_checked_against_every_stored_one_within_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let stored: Vec<Event> = (0..600).filter(|i| i % 3 != 0).map(event).collect();
        for chunk in stored.chunks(50) {
            append(dir.path(), chunk).unwrap();
        }
        let window = (0, 700 * HOUR);
        let mut seen = Seen::load(dir.path(), "hubspot:main", window, 3_300).unwrap();
        let budget = seen.budget;
        assert_eq!(budget, 56);
        assert_eq!(seen.held(), 0, "400 ids do not fit: none are held");
        // Pages of 25, newest first within each, the pages shuffled and three fetched again.
        let newest_first: Vec<i64> = (0..600).rev().collect();
        let mut pages: Vec<&[i64]> = newest_first.chunks(25).collect();
        fastrand::Rng::with_seed(7).shuffle(&mut pages);
        pages.extend_from_within(..3);
        let mut new = Vec::new();
        for page in &pages {
            let mut fresh = Vec::new();
            for &i in page.iter() {
                for _ in 0..2 {
                    if seen.insert(&format!("e{i}"), i * HOUR).unwrap() {
                        fresh.push(event(i));
                    }
                }
            }
            append(dir.path(), &fresh).unwrap();
            new.extend(fresh.iter().map(|e| e.at_ms / HOUR));
            assert!(
                seen.keys.capacity() <= 2 * budget,
                "the table grew past its slots"
            );
            seen.trim(page.last().unwrap() * HOUR);
            assert!(seen.held() <= budget, "{} ids held", seen.held());
        }
        new.sort();
        let want: Vec<i64> = (0..600).filter(|i| i % 3 == 0).collect();
        assert_eq!(new, want);
        // Another source's events with the same ids are not this source's.
        let other = Seen::load(dir.path(), "hubspot:other", window, 1 << 20).unwrap();
        assert_eq!(other.held(), 0);
    }
}
