//! The HubSpot events a run has stored or met, so that each is stored once, in bounded memory.
//! Boundary: this reads the events dataset; the importer asks [`Seen::insert`] of each event of
//! a page and calls [`Seen::trim`] once the page is stored.
//!
//! A run pages through its window newest first. Holding every id of the window would grow
//! with it (a first import of a large account meets tens of millions). So the window is cut
//! into time slices: a slice's ids are read from the store when an event falls in it (with the
//! older slices after it, up to the budget), and after each page the slices the run has moved
//! past are let go. An event that falls in a slice let go reads it again, so pages in any order
//! are still checked against everything stored.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::path::{Path, PathBuf};

use crate::datasets::events;

/// Memory for ids unless told otherwise, in MB (about 2.8M ids). A smaller budget cost no
/// time in `benches/hubspot_import.sh` (the import's parts each hold one page, so a slice's
/// read skips almost all of them), and `serve` runs this import too.
pub const BUDGET_MB: usize = 64;
/// Bytes an id takes at most while held: 8 bytes and a control byte per slot of its slice's
/// table, which is at least 7/16 full.
const ID_BYTES: usize = 24;
/// Slices at most in a window (its `stored` and `held` flags take 5 bytes each).
const MAX_SLICES: u64 = 1 << 20;
/// The shortest slice.
const MIN_SLICE_MS: u64 = 60_000;

pub struct Seen {
    data_dir: PathBuf,
    start_ms: i64,
    end_ms: i64,
    slice_ms: i64,
    /// Events stored per slice, kept current as the run stores more: how much a read holds.
    stored: Vec<u32>,
    /// Slices whose stored ids are all in `slices`.
    held: Vec<bool>,
    /// Per slice held, a hash of each event's id and time, keyed per run so that no id can be
    /// chosen to collide.
    slices: BTreeMap<usize, HashSet<u64>>,
    /// Ids in `slices`.
    ids: usize,
    hasher: RandomState,
    /// Ids held at most after a trim, and what a read fills up to.
    budget: usize,
    /// Reads of the store after the first.
    reads: usize,
    /// Each part's earliest and latest time of the window's events (`None`: it has none);
    /// parts never change once written, so a read of a slice skips those outside it.
    parts: HashMap<PathBuf, Option<(i64, i64)>>,
}

impl Seen {
    /// What HubSpot's imports have stored in `start_ms..=end_ms`, within about `budget_bytes`
    /// of ids: one pass over the store, holding every id when they fit.
    pub fn load(
        data_dir: &Path,
        (start_ms, end_ms): (i64, i64),
        budget_bytes: usize,
    ) -> anyhow::Result<Seen> {
        let width = (end_ms.saturating_sub(start_ms).saturating_add(1).max(1)) as u64;
        let slice_ms = width.div_ceil(MAX_SLICES).max(MIN_SLICE_MS);
        let count = width.div_ceil(slice_ms) as usize;
        let mut seen = Seen {
            data_dir: data_dir.to_path_buf(),
            start_ms,
            end_ms,
            slice_ms: slice_ms as i64,
            stored: vec![0; count],
            held: vec![false; count],
            slices: BTreeMap::new(),
            ids: 0,
            hasher: RandomState::new(),
            budget: (budget_bytes / ID_BYTES).max(1),
            reads: 0,
            parts: HashMap::new(),
        };
        let mut fits = true;
        for path in events::dataset(data_dir)?.parts()? {
            let span = events::ids_in_part(&path, start_ms..=end_ms, |id, at| {
                let slice = seen.slice(at);
                seen.stored[slice] = seen.stored[slice].saturating_add(1);
                if fits {
                    seen.hold(slice, id, at);
                    fits = seen.ids <= seen.budget;
                }
            })
            .map_err(events::with_damage_hint)?;
            seen.parts.insert(path, span);
        }
        if fits {
            seen.held.fill(true);
        } else {
            seen.slices.clear();
            seen.ids = 0;
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
        let new = self.hold(slice, id, created);
        if new {
            self.stored[slice] = self.stored[slice].saturating_add(1);
        }
        Ok(new)
    }

    /// Once the page's events are stored: let go of the slices after `position` (the page's
    /// oldest event; pages come newest first), and if more than the budget is still held, of
    /// all but `position`'s own.
    pub fn trim(&mut self, position: i64) {
        let at = self.slice(position);
        let passed = self.slices.split_off(&(at + 1));
        self.let_go(passed);
        if self.ids > self.budget {
            let mine = self.slices.remove(&at);
            let rest = std::mem::take(&mut self.slices);
            self.let_go(rest);
            if let Some(mine) = mine {
                self.slices.insert(at, mine);
            }
        }
    }

    /// Reads of the store after the first.
    pub fn reads(&self) -> usize {
        self.reads
    }

    fn let_go(&mut self, slices: BTreeMap<usize, HashSet<u64>>) {
        for (slice, ids) in slices {
            self.ids -= ids.len();
            self.held[slice] = false;
        }
    }

    fn hold(&mut self, slice: usize, id: &str, at: i64) -> bool {
        let new = self
            .slices
            .entry(slice)
            .or_default()
            .insert(self.hasher.hash_one((id, at)));
        self.ids += new as usize;
        new
    }

    /// Read `slice`, and the older slices not held after it (the run is heading that way)
    /// while the ids held stay within the budget.
    fn read(&mut self, slice: usize) -> anyhow::Result<()> {
        let mut first = slice;
        let mut ids = self.stored[slice] as usize;
        while first > 0 && !self.held[first - 1] {
            let more = self.stored[first - 1] as usize;
            if self.ids + ids + more > self.budget {
                break;
            }
            ids += more;
            first -= 1;
        }
        self.held[first..=slice].fill(true);
        if ids == 0 {
            return Ok(());
        }
        self.reads += 1;
        let from = self.start_ms + first as i64 * self.slice_ms;
        let to = (self.start_ms + (slice as i64 + 1) * self.slice_ms - 1).min(self.end_ms);
        let (window, range) = (self.start_ms..=self.end_ms, from..=to);
        for path in events::dataset(&self.data_dir)?.parts()? {
            let known = self.parts.get(&path).copied();
            if let Some(span) = known {
                let Some((lo, hi)) = span else { continue };
                if hi < from || lo > to {
                    continue;
                }
            }
            let span = events::ids_in_part(&path, window.clone(), |id, at| {
                if range.contains(&at) {
                    self.hold(self.slice(at), id, at);
                }
            })
            .map_err(events::with_damage_hint)?;
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
        let mut seen = Seen::load(dir.path(), window, 56 * ID_BYTES).unwrap();
        let budget = seen.budget;
        assert_eq!(budget, 56);
        assert_eq!(seen.ids, 0, "400 ids do not fit: none are held");
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
                seen.ids <= budget + 25,
                "{} ids held before the trim",
                seen.ids
            );
            seen.trim(page.last().unwrap() * HOUR);
            assert!(seen.ids <= budget, "{} ids held", seen.ids);
        }
        new.sort();
        let want: Vec<i64> = (0..600).filter(|i| i % 3 == 0).collect();
        assert_eq!(new, want);
        assert!(seen.reads() > 0);
        // Stored by any connector (one renamed since), and only HubSpot's.
        let renamed = Event {
            event_id: Some("moved".into()),
            source: "hubspot:renamed".into(),
            ..event(650)
        };
        let file = Event {
            event_id: Some("from-a-file".into()),
            source: "csv:opens.csv".into(),
            ..event(660)
        };
        append(dir.path(), &[renamed, file]).unwrap();
        let mut seen = Seen::load(dir.path(), window, 1 << 20).unwrap();
        assert!(!seen.insert("moved", 650 * HOUR).unwrap());
        assert!(seen.insert("from-a-file", 660 * HOUR).unwrap());
    }

    /// Pages in order, newest first, over a store of twenty budgets: each slice is read once,
    /// in reads of about a budget each, not once per page.
    #[test]
    fn a_run_newest_first_reads_the_store_in_few_large_reads() {
        let dir = tempfile::tempdir().unwrap();
        let stored: Vec<Event> = (0..1_200).map(event).collect();
        for chunk in stored.chunks(20) {
            append(dir.path(), chunk).unwrap();
        }
        let window = (0, 1_300 * HOUR);
        let mut seen = Seen::load(dir.path(), window, 56 * ID_BYTES).unwrap();
        assert_eq!(seen.budget, 56);
        let newest_first: Vec<i64> = (0..1_200).rev().collect();
        for page in newest_first.chunks(10) {
            for &i in page {
                assert!(!seen.insert(&format!("e{i}"), i * HOUR).unwrap());
            }
            seen.trim(page.last().unwrap() * HOUR);
        }
        // 1,200 stored ids, a budget of 56: at least 22 reads; one per page would be 120.
        assert!(seen.reads() <= 1_200 / 56 * 2 + 2, "{} reads", seen.reads());
    }
}
