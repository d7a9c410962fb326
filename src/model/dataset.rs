//! Profiles from the events dataset: the production path from Parquet parts to [`Profiles`].
//!
//! Only the small integer columns are read (`contact`, `kind`, `slot`, `day`, `filtered`, and
//! `at` when a cut-off is asked for), and rows go straight into dense per-contact arrays.

use std::path::Path;

use polars::prelude::*;

use super::ModelConfig;
use super::backtest::{Row, Rows};
use super::profile::Profiles;
use crate::events::{Contacts, day_of};
use crate::store::{Dataset, read_part};

/// Everything known up to `as_of_ms`: the contact dictionary, the profiles as of that day,
/// and which contacts had any event (of any kind) before it.
pub struct Built {
    pub contacts: Contacts,
    pub profiles: Profiles,
    pub seen: Vec<bool>,
}

/// Build profiles from every event before `as_of_ms`.
pub fn build(data_dir: &Path, config: ModelConfig, as_of_ms: i64) -> anyhow::Result<Built> {
    let contacts = Contacts::load(data_dir)?;
    let mut profiles = Profiles::new(config, contacts.len(), day_of(as_of_ms));
    let mut seen = vec![false; contacts.len()];
    for_each_part(data_dir, |df| {
        let c = df.column("contact")?.u32()?;
        let k = df.column("kind")?.u8()?;
        let s = df.column("slot")?.u8()?;
        let d = df.column("day")?.i32()?;
        let f = df.column("filtered")?.bool()?;
        let at = df.column("at")?.cast(&DataType::Int64)?;
        let at = at.i64()?;
        for ((((c, k), s), d), (f, at)) in c
            .iter()
            .zip(k.iter())
            .zip(s.iter())
            .zip(d.iter())
            .zip(f.iter().zip(at.iter()))
        {
            let (Some(c), Some(k), Some(s), Some(d), Some(at)) = (c, k, s, d, at) else {
                continue;
            };
            if at >= as_of_ms {
                continue;
            }
            if let Some(x) = seen.get_mut(c as usize) {
                *x = true;
            }
            profiles.add(c, k, s, d, f.unwrap_or(false));
        }
        Ok(())
    })?;
    profiles.grow(contacts.len());
    profiles.refresh_population();
    Ok(Built {
        contacts,
        profiles,
        seen,
    })
}

/// Every event of the dataset as evaluation rows.
pub fn rows(data_dir: &Path) -> anyhow::Result<Rows> {
    let contacts = Contacts::load(data_dir)?;
    let mut rows = Vec::new();
    for_each_part(data_dir, |df| {
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

fn for_each_part(
    data_dir: &Path,
    mut f: impl FnMut(&DataFrame) -> PolarsResult<()>,
) -> anyhow::Result<()> {
    let dataset = Dataset::open(data_dir, "events")?;
    for path in dataset.parts()? {
        match read_part(&path) {
            Ok(df) => f(&df)?,
            Err(e) => dataset.quarantine(&path, &e)?,
        }
    }
    Ok(())
}
