//! The events a re-import must not store again: those stored without a source id, by contact,
//! kind and time, counted row for row. Boundary: this reads the events dataset; the importer
//! asks [`Stored::take`] of each row of a contact known before the import.
//!
//! Each stored event is 8 bytes, in sorted runs per contact. When the store holds more than
//! the memory budget allows, [`plan`] splits the contacts into ranges and the importer reads
//! the file once per range, so memory stays bounded whatever the store's size.

use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use polars::prelude::*;
use rayon::prelude::*;

use crate::datasets::events::{self, col};
use crate::prefetch::prefetch;
use crate::store::read_present_columns;

/// Memory for the index unless told otherwise: with the rest of a 100M-row import (about
/// 0.55 GB) it stays under 1 GB.
pub const BUDGET_MB: usize = 384;
/// `--dedup-memory` counts in these.
pub const MB: usize = 1 << 20;
/// Bytes per contact in an index: where its run starts.
const CONTACT_BYTES: usize = 4;
/// Bytes per stored event in an index.
const EVENT_BYTES: usize = 8;
/// The low bit of a key: a row has matched this event.
const TAKEN: u64 = 1;

/// How many events without a source id each contact known before the import has stored, and
/// the ranges of contacts whose index fits the budget, one file pass each.
pub struct Plan {
    counts: Vec<u32>,
    pub ranges: Vec<Range<u32>>,
}

/// Count the stored events of contacts `0..known` and split those contacts into ranges whose
/// index takes at most `budget` bytes (a contact with more events than that gets a range of
/// its own).
pub fn plan(data_dir: &Path, known: u32, budget: usize) -> anyhow::Result<Plan> {
    let mut counts = vec![0u32; known as usize];
    scan(data_dir, |rows| {
        for (i, &c) in rows.contacts.iter().enumerate() {
            if rows.unsourced(i)
                && let Some(n) = counts.get_mut(c as usize)
            {
                *n = n.saturating_add(1);
            }
        }
    })?;
    let mut ranges = Vec::new();
    // A range's keys are counted in u32 (where each contact's run starts).
    let budget = budget.min(u32::MAX as usize * EVENT_BYTES);
    let (mut start, mut bytes) = (0u32, 0usize);
    for (contact, &n) in (0u32..).zip(&counts) {
        let more = CONTACT_BYTES + n as usize * EVENT_BYTES;
        if bytes + more > budget && contact > start {
            ranges.push(start..contact);
            (start, bytes) = (contact, 0);
        }
        bytes += more;
    }
    ranges.push(start..known);
    Ok(Plan { counts, ranges })
}

/// The stored events of one range of contacts.
pub struct Stored {
    contacts: Range<u32>,
    /// Where each contact's run starts in `keys`, and one more at the end.
    starts: Vec<u32>,
    /// Per contact, sorted: [`key`], with [`TAKEN`] set once a row has matched it.
    keys: Vec<AtomicU64>,
}

/// An event's time and kind in one sortable word, never 0, the low bit left for [`TAKEN`].
/// Times beyond ±2^58 ms (9 million years) have none, and match nothing.
fn key(kind: u8, at_ms: i64) -> Option<u64> {
    const HALF: i64 = 1 << 58;
    let at = at_ms
        .checked_add(HALF)
        .filter(|at| (1..2 * HALF).contains(at))?;
    Some((at as u64) << 5 | u64::from(kind & 0xf) << 1)
}

impl Stored {
    /// The index of `plan`'s contacts in `range`.
    pub fn load(data_dir: &Path, plan: &Plan, range: Range<u32>) -> anyhow::Result<Stored> {
        let counts = &plan.counts[range.start as usize..range.end as usize];
        let mut starts = Vec::with_capacity(counts.len() + 1);
        let mut total = 0u32;
        starts.push(0);
        for &n in counts {
            total += n;
            starts.push(total);
        }
        let mut keys = vec![0u64; total as usize];
        if total > 0 {
            let mut next: Vec<u32> = starts[..counts.len()].to_vec();
            scan(data_dir, |rows| {
                for (i, &c) in rows.contacts.iter().enumerate() {
                    if !range.contains(&c) || !rows.unsourced(i) {
                        continue;
                    }
                    let run = (c - range.start) as usize;
                    // A part written meanwhile can add events beyond the count.
                    if next[run] < starts[run + 1]
                        && let Some(key) = key(rows.kinds[i], rows.at[i])
                    {
                        keys[next[run] as usize] = key;
                        next[run] += 1;
                    }
                }
            })?;
            // A run not filled to its count (a part compacted away meanwhile) keeps zeros,
            // which sort first and match no row.
            let mut runs = Vec::with_capacity(counts.len());
            let mut rest = keys.as_mut_slice();
            for pair in starts.windows(2) {
                let (run, tail) = rest.split_at_mut((pair[1] - pair[0]) as usize);
                runs.push(run);
                rest = tail;
            }
            runs.par_iter_mut().for_each(|run| run.sort_unstable());
        }
        Ok(Stored {
            contacts: range,
            starts,
            keys: keys.into_iter().map(AtomicU64::new).collect(),
        })
    }

    /// Whether `contact` is in this index's range: its rows are checked in this pass.
    pub fn covers(&self, contact: u32) -> bool {
        self.contacts.contains(&contact)
    }

    /// Start loading where `contact`'s run begins: a step before [`Stored::prefetch_run`].
    pub fn prefetch_start(&self, contact: u32) {
        if let Some(start) = self
            .starts
            .get(contact.wrapping_sub(self.contacts.start) as usize)
        {
            prefetch(start);
        }
    }

    /// Start loading the middle of `contact`'s run, where [`Stored::take`] looks first.
    pub fn prefetch_run(&self, contact: u32) {
        if self.covers(contact) {
            let i = (contact - self.contacts.start) as usize;
            let middle = (self.starts[i] + self.starts[i + 1]) / 2;
            if let Some(key) = self.keys.get(middle as usize) {
                prefetch(key);
            }
        }
    }

    /// Whether a stored event not matched yet has this contact, kind and time; it is then
    /// matched, so a row counts against one stored event only. Safe from many threads.
    pub fn take(&self, contact: u32, kind: u8, at_ms: i64) -> bool {
        let (Some(key), true) = (key(kind, at_ms), self.covers(contact)) else {
            return false;
        };
        let i = (contact - self.contacts.start) as usize;
        let run = &self.keys[self.starts[i] as usize..self.starts[i + 1] as usize];
        let first = run.partition_point(|k| k.load(Ordering::Relaxed) & !TAKEN < key);
        run[first..]
            .iter()
            .take_while(|k| k.load(Ordering::Relaxed) & !TAKEN == key)
            .any(|k| k.fetch_or(TAKEN, Ordering::Relaxed) & TAKEN == 0)
    }
}

/// One row group of a stored part.
struct Rows<'a> {
    contacts: &'a [u32],
    kinds: &'a [u8],
    at: &'a [i64],
    /// Which rows have no source id; `None`: all of them.
    unsourced: Option<&'a [bool]>,
}

impl Rows<'_> {
    fn unsourced(&self, i: usize) -> bool {
        self.unsourced.is_none_or(|u| u[i])
    }
}

/// Call `f` with every row group of the stored parts that has events without a source id.
fn scan(data_dir: &Path, mut f: impl FnMut(Rows<'_>)) -> anyhow::Result<()> {
    let columns = [col::CONTACT, col::KIND, col::AT, col::EVENT_ID];
    for path in events::dataset(data_dir)?.parts()? {
        let mut read = || -> anyhow::Result<()> {
            let mut df = read_present_columns(&path, &columns)?;
            // Row group by row group, as decoded: no copy into one buffer.
            for chunk in df.split_chunks() {
                let unsourced: Option<Vec<bool>> = match chunk.column(col::EVENT_ID) {
                    Ok(ids) if ids.null_count() == 0 => continue, // all from an API
                    Ok(ids) if ids.null_count() < ids.len() => {
                        Some(ids.is_null().iter().map(|n| n == Some(true)).collect())
                    }
                    _ => None, // all without, or written before event ids were stored
                };
                let at = chunk.column(col::AT)?.cast(&DataType::Int64)?;
                f(Rows {
                    contacts: chunk.column(col::CONTACT)?.u32()?.cont_slice()?,
                    kinds: chunk.column(col::KIND)?.u8()?.cont_slice()?,
                    at: at.i64()?.cont_slice()?,
                    unsourced: unsourced.as_deref(),
                });
            }
            Ok(())
        };
        read()
            .with_context(|| format!("cannot read {}", path.display()))
            .map_err(events::with_damage_hint)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_time_then_kind_and_keep_the_low_bit_free() {
        let early = key(7, 1_000).unwrap();
        let later = key(6, 1_001).unwrap();
        assert!(early < later);
        assert!(key(6, 1_000).unwrap() < early);
        assert_eq!(early & TAKEN, 0);
        assert!(key(6, -5_000).unwrap() < key(6, 0).unwrap());
        assert_eq!(key(6, i64::MAX), None);
        assert_eq!(key(0, -(1 << 58)), None);
        assert_ne!(key(0, 1 - (1 << 58)), Some(0));
    }
}
