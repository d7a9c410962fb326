//! The datasets sendtime keeps under its data folder, one module each: the folder's name, the
//! column names, the row type, the writer and the reader. [`crate::store`] holds the generic
//! machinery they share (parts, the write-ahead log, compaction, quarantine, locks, durable
//! writes).
//!
//! Data flows one way: the receiver appends to [`inbox`]; the dispatcher reads new inbox
//! parts, appends to [`plan`] and then to [`outcomes`] as it calls HubSpot. Importers append to
//! [`events`] (giving new contacts an index in [`contacts`]), which the model reads.
//! [`pending`] is the in-memory set of receipts not yet finished, shared by the receiver (to
//! spot HubSpot's retries) and the dispatcher (which releases what it finishes).

/// Where finished receipts past the replay window go (`{data_dir}/archive/{inbox,plan,outcomes}`),
/// out of what start-up reads; deleted after `[server] archive_days`, if set.
pub const ARCHIVE: &str = "archive";

/// The folders keeping receipts' rows apart from the live datasets: the archive and what
/// `sendtime discard` set aside. An erase and a retention limit reach them too.
pub const KEPT_APART: [&str; 2] = [ARCHIVE, crate::discard::DISCARDED];

pub mod contacts;
pub mod erased;
pub mod events;
pub mod inbox;
pub mod outcomes;
pub mod pending;
pub mod plan;

use std::path::Path;

use polars::prelude::*;

use crate::store::Dataset;

/// `f` on dataset `name` under `data_dir`, then on its archive if one was made: a read makes
/// no archive folder where none was made yet. The archive is looked for once the live one is
/// read: rows moved meanwhile, by the first move too, are found there.
fn kept(
    data_dir: &Path,
    name: &str,
    mut f: impl FnMut(&Dataset) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    f(&Dataset::open(data_dir, name)?)?;
    let archive = data_dir.join(ARCHIVE);
    if crate::store::is_dir(&archive.join(name))? {
        f(&Dataset::open(&archive, name)?)?;
    }
    Ok(())
}

/// The parts of dataset `name`, live and archived ([`kept`]), set aside as unreadable: their
/// rows are missing from what is read.
pub fn quarantined_parts(data_dir: &Path, name: &str) -> anyhow::Result<usize> {
    let mut parts = 0;
    kept(data_dir, name, |dataset| {
        parts += dataset.quarantined_parts()?;
        Ok(())
    })?;
    Ok(parts)
}

/// Every row of dataset `name` kept ([`kept`]) as `read` reads them.
fn read_kept<T>(
    data_dir: &Path,
    name: &str,
    read: impl Fn(&Dataset) -> anyhow::Result<Vec<T>>,
) -> anyhow::Result<Vec<T>> {
    let mut rows = Vec::new();
    kept(data_dir, name, |dataset| {
        rows.extend(read(dataset)?);
        Ok(())
    })?;
    Ok(rows)
}

/// The rows kept (as [`read_kept`]) that `keep` selects, read a part at a time and converted
/// by `rows` only where selected: the archive grows without end, and a lookup wants a few.
fn read_kept_where<T>(
    data_dir: &Path,
    name: &str,
    keep: impl Fn(&DataFrame) -> anyhow::Result<BooleanChunked>,
    rows: impl Fn(&DataFrame) -> anyhow::Result<Vec<T>>,
) -> anyhow::Result<Vec<T>> {
    let mut out = Vec::new();
    for_each_kept_where(data_dir, name, keep, rows, |part| out.extend(part))?;
    Ok(out)
}

/// [`read_kept_where`], each part's rows handed to `f` and not kept: a reader that folds the
/// whole archive holds one part's rows at a time.
fn for_each_kept_where<T>(
    data_dir: &Path,
    name: &str,
    keep: impl Fn(&DataFrame) -> anyhow::Result<BooleanChunked>,
    rows: impl Fn(&DataFrame) -> anyhow::Result<Vec<T>>,
    mut f: impl FnMut(Vec<T>),
) -> anyhow::Result<()> {
    kept(data_dir, name, |dataset| {
        dataset.read_each(|_, df| {
            let selected = df.filter(&keep(&df)?)?;
            if selected.height() > 0 {
                f(rows(&selected)?);
            }
            Ok(())
        })
    })
}

/// A string column's values.
fn strs(df: &DataFrame, name: &str) -> anyhow::Result<Vec<Option<String>>> {
    Ok(df
        .column(name)?
        .str()?
        .iter()
        .map(|v| v.map(str::to_string))
        .collect())
}

/// [`strs`] of a column added later: all null in parts written before it.
fn strs_or_null(df: &DataFrame, name: &str) -> anyhow::Result<Vec<Option<String>>> {
    if df.column(name).is_err() {
        return Ok(vec![None; df.height()]);
    }
    strs(df, name)
}

/// A boolean column added later: false in parts written before it (and for nulls).
fn bools_or_false(df: &DataFrame, name: &str) -> anyhow::Result<Vec<bool>> {
    match df.column(name) {
        Ok(c) => Ok(c.bool()?.iter().map(|v| v.unwrap_or(false)).collect()),
        Err(_) => Ok(vec![false; df.height()]),
    }
}

/// A float column added later: all null in parts written before it.
fn floats_or_null(df: &DataFrame, name: &str) -> anyhow::Result<Vec<Option<f64>>> {
    match df.column(name) {
        Ok(c) => Ok(c.cast(&DataType::Float64)?.f64()?.iter().collect()),
        Err(_) => Ok(vec![None; df.height()]),
    }
}

/// An integer or timestamp column's values as `i64`.
fn ints(df: &DataFrame, name: &str) -> anyhow::Result<Vec<Option<i64>>> {
    Ok(df
        .column(name)?
        .cast(&DataType::Int64)?
        .i64()?
        .iter()
        .collect())
}

/// [`ints`] of a column added later: all null in parts written before it.
fn ints_or_null(df: &DataFrame, name: &str) -> anyhow::Result<Vec<Option<i64>>> {
    if df.column(name).is_err() {
        return Ok(vec![None; df.height()]);
    }
    ints(df, name)
}

/// Epoch milliseconds as a Parquet timestamp (UTC, stored without a zone).
fn datetime_ms(name: &str, values: Vec<i64>) -> PolarsResult<Column> {
    Column::new(name.into(), values).cast(&DataType::Datetime(TimeUnit::Milliseconds, None))
}

/// [`datetime_ms`] with nulls.
fn datetime_ms_opt(name: &str, values: Vec<Option<i64>>) -> PolarsResult<Column> {
    Column::new(name.into(), values).cast(&DataType::Datetime(TimeUnit::Milliseconds, None))
}

/// A closed set's stored name read back; a name this build does not know is an error that
/// says which, never a default.
fn stored_enum<T>(
    column: &str,
    value: Option<&str>,
    parse: impl Fn(&str) -> Option<T>,
) -> anyhow::Result<T> {
    let value = value.unwrap_or_default();
    parse(value).ok_or_else(|| {
        anyhow::anyhow!(
            "stored {column} {value:?} is not one this sendtime knows (written by a newer version, or edited by hand?)"
        )
    })
}
