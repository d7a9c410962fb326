//! Profiles from the events dataset: the production path from Parquet parts to [`Profiles`].
//!
//! Only the small integer columns are read (`contact`, `kind`, `slot`, `day`, `filtered`; `at`
//! only for parts that reach the cut-off day), and rows go straight from column slices into
//! per-contact rows: no hashing, no per-row allocation. Parts are decoded on a
//! background thread while the previous one is being added, so decoding and adding overlap.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use polars::prelude::*;

use super::ModelConfig;
use super::backtest::{Row, Rows};
use super::profile::{Delta, Profiles};
use crate::events::{Contacts, day_of};
use crate::store::Dataset;

/// Everything known up to `as_of_ms`: the contact dictionary, the profiles as of that day,
/// and which contacts had any event (of any kind) before it.
pub struct Built {
    pub contacts: Contacts,
    pub profiles: Profiles,
    pub seen: Vec<bool>,
}

const PROFILE_COLUMNS: [&str; 5] = ["contact", "kind", "slot", "day", "filtered"];

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
    let parts = Dataset::open(data_dir, "events")?.parts()?;
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
    let parts = Dataset::open(data_dir, "events")?.parts()?;
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
    add_parts(parts, &mut profiles, &mut seen, as_of_ms, None)?;
    profiles.refresh_population();
    Ok((profiles, seen))
}

/// Add the events of `parts` before `as_of_ms` to `profiles`, marking each contact seen.
pub fn add_parts(
    parts: &[PathBuf],
    profiles: &mut Profiles,
    seen: &mut Vec<bool>,
    as_of_ms: i64,
    mut delta: Option<&mut Delta>,
) -> anyhow::Result<()> {
    let cutoff_day = if as_of_ms == i64::MAX {
        i32::MAX
    } else {
        day_of(as_of_ms)
    };
    for_each_part(parts, &PROFILE_COLUMNS, |path, mut df| {
        // Rows before the cut-off: a part that reaches the cut-off day needs the exact time.
        let skip: Option<Vec<bool>> =
            if cutoff_day != i32::MAX && df.column("day")?.i32()?.max() >= Some(cutoff_day) {
                let at = read_columns(path, &["at"])?;
                let at = at.column("at")?.cast(&DataType::Int64)?;
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
            let c = chunk.column("contact")?.u32()?.cont_slice()?;
            let k = chunk.column("kind")?.u8()?.cont_slice()?;
            let s = chunk.column("slot")?.u8()?.cont_slice()?;
            let d = chunk.column("day")?.i32()?.cont_slice()?;
            let filtered = chunk.column("filtered")?.bool()?;
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
            profiles.add_batch(
                c,
                k,
                s,
                d,
                filtered.as_deref(),
                skip.as_ref().map(|m| &m[rows]),
                seen,
                delta.as_deref_mut(),
            );
        }
        Ok(())
    })
}

/// Every event of the dataset as evaluation rows.
pub fn rows(data_dir: &Path) -> anyhow::Result<Rows> {
    let contacts = Contacts::load(data_dir)?;
    let mut rows = Vec::new();
    let parts = Dataset::open(data_dir, "events")?.parts()?;
    for_each_part(&parts, &["contact", "kind", "filtered", "at"], |_, df| {
        let c = df.column("contact")?.u32()?;
        let k = df.column("kind")?.u8()?;
        let f = df.column("filtered")?.bool()?;
        let at = df.column("at")?.cast(&DataType::Int64)?;
        for (((c, k), f), at) in c.iter().zip(k.iter()).zip(f.iter()).zip(at.i64()?.iter()) {
            if let (Some(contact), Some(kind), Some(at_ms)) = (c, k, at) {
                rows.push(Row {
                    contact,
                    kind,
                    at_ms,
                    filtered: f.unwrap_or(false),
                });
            }
        }
        Ok(())
    })?;
    Ok(Rows::new(rows, contacts.len()))
}

fn read_columns(path: &Path, columns: &[&str]) -> anyhow::Result<DataFrame> {
    let file = std::fs::File::open(path)?;
    Ok(ParquetReader::new(file)
        .with_columns(Some(columns.iter().map(|c| c.to_string()).collect()))
        .finish()?)
}

/// Decode parts (projected to `columns`) on a helper thread, one ahead of `f`.
fn for_each_part(
    parts: &[PathBuf],
    columns: &'static [&'static str],
    mut f: impl FnMut(&Path, DataFrame) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
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
                Err(e)
                    if e.downcast_ref::<std::io::Error>()
                        .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound) => {}
                // The file may be fine (out of file descriptors, permissions): fail, not
                // quarantine.
                Err(e) if crate::store::cannot_open(&e) => {
                    return Err(e.context(format!("cannot open {}", path.display())));
                }
                Err(e) => {
                    // Quarantine under the dataset the part belongs to.
                    let data_dir = path
                        .parent()
                        .and_then(Path::parent)
                        .unwrap_or(Path::new("."));
                    Dataset::open(data_dir, "events")?.quarantine(&path, &e)?
                }
            }
        }
        Ok(())
    })
}
