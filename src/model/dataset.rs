//! Profiles from the events dataset: the production path from Parquet parts to [`Profiles`].
//!
//! Only the small integer columns are read (`contact`, `kind`, `slot`, `day`, `filtered`; `at`
//! only for parts that reach the cut-off day), and rows go straight from column slices into
//! per-contact rows: no hashing, no per-row allocation. Parts are decoded on a
//! background thread while the previous one is being added, so decoding and adding overlap.

use std::path::{Path, PathBuf};

use polars::prelude::*;

use super::profile::{Delta, Profiles};
use super::{ModelConfig, calibrate};
use crate::datasets::contacts::Contacts;
use crate::datasets::events::{self, col, for_each_part, read_columns};
use crate::time::day_of;

/// Everything known up to `as_of_ms`: the contact dictionary, the profiles as of that day,
/// and which contacts had any event (of any kind) before it.
pub struct Built {
    pub contacts: Contacts,
    pub profiles: Profiles,
    pub seen: Vec<bool>,
}

impl Built {
    /// The contact a receipt names, by its email's key (lower-cased, as
    /// [`contact_key`](crate::datasets::contacts::contact_key) makes it) or its HubSpot id.
    /// Known by both (events imported under each key are two contacts), the entry the model
    /// has learnt more of, recency weighed as its scores weigh it: one event imported by email
    /// would hide any number imported by id, and a count would let years-old history by id
    /// outweigh a recent one by email.
    pub fn find(&self, email_key: Option<&str>, contact_id: Option<i64>) -> Option<u32> {
        let by_email = email_key.and_then(|k| self.contacts.get(k));
        let by_id = contact_id.and_then(|id| self.contacts.get_id(id));
        match (by_email, by_id) {
            (Some(e), Some(i)) => {
                let learnt = |c: u32| self.profiles.learnt(c);
                Some(if learnt(i) > learnt(e) { i } else { e })
            }
            (e, i) => e.or(i),
        }
    }
}

const PROFILE_COLUMNS: [&str; 5] = [col::CONTACT, col::KIND, col::SLOT, col::DAY, col::FILTERED];

/// Build profiles from every event before `as_of_ms`, as of that day.
pub fn build(data_dir: &Path, config: ModelConfig, as_of_ms: i64) -> anyhow::Result<Built> {
    build_at(data_dir, config, day_of(as_of_ms), as_of_ms)
}

/// Build profiles decayed to `reference_day` from every event before `as_of_ms`, with the
/// contact dictionary.
pub fn build_at(
    data_dir: &Path,
    config: ModelConfig,
    reference_day: i32,
    as_of_ms: i64,
) -> anyhow::Result<Built> {
    let parts = events::dataset(data_dir)?.parts()?;
    build_from(data_dir, config, reference_day, as_of_ms, &parts)
}

/// [`build_at`] from the given event parts: a caller that records which parts the profiles
/// hold must build from exactly the list it records.
pub fn build_from(
    data_dir: &Path,
    config: ModelConfig,
    reference_day: i32,
    as_of_ms: i64,
    parts: &[PathBuf],
) -> anyhow::Result<Built> {
    // The dictionary loads while the events are added: neither needs the other until the end.
    let (contacts, built) = std::thread::scope(|scope| {
        let contacts = scope.spawn(|| Contacts::load(data_dir));
        let built = profiles_from(data_dir, config, reference_day, as_of_ms, parts);
        (
            contacts.join().expect("contact loading does not panic"),
            built,
        )
    });
    let (contacts, (mut profiles, mut seen)) = (contacts?, built?);
    profiles.grow(contacts.len());
    seen.resize(contacts.len().max(seen.len()), false);
    Ok(Built {
        contacts,
        profiles,
        seen,
    })
}

/// Profiles decayed to `reference_day` from every event before `as_of_ms`, and which
/// contacts had any event; sized from the dictionary's footers without loading it.
pub fn profiles_at(
    data_dir: &Path,
    config: ModelConfig,
    reference_day: i32,
    as_of_ms: i64,
) -> anyhow::Result<(Profiles, Vec<bool>)> {
    let parts = events::dataset(data_dir)?.parts()?;
    profiles_from(data_dir, config, reference_day, as_of_ms, &parts)
}

fn profiles_from(
    data_dir: &Path,
    config: ModelConfig,
    reference_day: i32,
    as_of_ms: i64,
    parts: &[PathBuf],
) -> anyhow::Result<(Profiles, Vec<bool>)> {
    let expected = Contacts::count(data_dir)?;
    let mut profiles = Profiles::new(config, expected, reference_day);
    let mut seen = vec![false; expected];
    // The latest weeks of events, kept aside (as well as counted) to fit on.
    let end_day = if as_of_ms == i64::MAX {
        reference_day
    } else {
        day_of(as_of_ms)
    };
    let mut recent = calibrate::Recent::until(end_day);
    add_parts(
        data_dir,
        parts,
        &mut profiles,
        &mut seen,
        as_of_ms,
        None,
        config.auto.any().then_some(&mut recent),
    )?;
    if config.auto.any() {
        let counts = profiles.population_counts();
        let fit = calibrate::fit(&profiles, &counts, recent, config.auto);
        profiles.apply_fit(fit, &counts);
    } else {
        profiles.refresh_population();
    }
    Ok((profiles, seen))
}

/// Add the events of `parts` before `as_of_ms` to `profiles`, marking each contact seen.
pub fn add_parts(
    data_dir: &Path,
    parts: &[PathBuf],
    profiles: &mut Profiles,
    seen: &mut Vec<bool>,
    as_of_ms: i64,
    mut delta: Option<&mut Delta>,
    mut recent: Option<&mut calibrate::Recent>,
) -> anyhow::Result<()> {
    let cutoff_day = if as_of_ms == i64::MAX {
        i32::MAX
    } else {
        day_of(as_of_ms)
    };
    for_each_part(data_dir, parts, &PROFILE_COLUMNS, |path, mut df| {
        // Rows before the cut-off: a part that reaches the cut-off day needs the exact time.
        let skip: Option<Vec<bool>> =
            if cutoff_day != i32::MAX && df.column(col::DAY)?.i32()?.max() >= Some(cutoff_day) {
                let at = read_columns(path, &[col::AT])?;
                let at = at.column(col::AT)?.cast(&DataType::Int64)?;
                Some(
                    at.i64()?
                        .iter()
                        .map(|at| at.is_none_or(|at| at >= as_of_ms))
                        .collect(),
                )
            } else {
                None
            };
        // Row group by row group, as decoded: no copy into one buffer.
        let mut offset = 0;
        for chunk in df.split_chunks() {
            let rows = offset..offset + chunk.height();
            offset = rows.end;
            let c = chunk.column(col::CONTACT)?.u32()?.cont_slice()?;
            let k = chunk.column(col::KIND)?.u8()?.cont_slice()?;
            let s = chunk.column(col::SLOT)?.u8()?.cont_slice()?;
            let d = chunk.column(col::DAY)?.i32()?.cont_slice()?;
            let filtered = chunk.column(col::FILTERED)?.bool()?;
            // A mask only where some event is filtered.
            let filtered: Option<Vec<bool>> = filtered.any().then(|| {
                if filtered.null_count() == 0 {
                    filtered
                        .downcast_iter()
                        .flat_map(|a| a.values_iter())
                        .collect()
                } else {
                    filtered.iter().map(|v| v.unwrap_or(false)).collect()
                }
            });
            let skip = skip.as_ref().map(|m| &m[rows]);
            if let Some(r) = recent.as_deref_mut()
                && d.iter().any(|day| *day >= r.first_day())
            {
                for i in 0..c.len() {
                    let kept = d[i] >= r.first_day()
                        && !filtered.as_ref().is_some_and(|f| f[i])
                        && !skip.is_some_and(|m| m[i])
                        && events::Kind::from_code(k[i]).is_some_and(events::Kind::is_engagement);
                    if kept {
                        r.push(c[i], s[i], d[i], k[i]);
                    }
                }
            }
            profiles.add_batch(
                c,
                k,
                s,
                d,
                filtered.as_deref(),
                skip,
                seen,
                delta.as_deref_mut(),
            );
        }
        Ok(())
    })
}
