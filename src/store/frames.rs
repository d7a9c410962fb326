//! Reading parts into frames (checksum first), and frames of parts written by older
//! builds made to agree (columns added later, text as a dictionary).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use polars::prelude::*;

use super::checksum;

/// Read one part file. An error opening it is an `io::Error`, one decoding it a Polars error
/// ([`read_with`]).
pub fn read_part(path: &Path) -> anyhow::Result<DataFrame> {
    read_with(path, |reader| reader.finish())
}

/// Read the part at `path` through `read`, once its checksum is checked: how every reader of
/// a part's rows opens it. An I/O error inside Polars is the machine's state (an
/// `io::Error`), and a part matching its checksum that `read` fails on is [`Undecodable`].
/// Only the rest says the file is damaged.
pub fn read_with<T>(
    path: &Path,
    read: impl FnOnce(ParquetReader<File>) -> PolarsResult<T>,
) -> anyhow::Result<T> {
    let checked = checksum::verify(path)?;
    let file = File::open(path)?;
    read(ParquetReader::new(file)).map_err(|e| match e {
        PolarsError::IO { error, .. } => io::Error::new(error.kind(), error.to_string()).into(),
        e if checked => Undecodable {
            path: path.to_path_buf(),
            source: e,
        }
        .into(),
        e => e.into(),
    })
}

/// A part that matches its checksum but cannot be read: its bytes are as written, so the
/// file is not damaged (a newer build's part, or a bug), and it is left where it is.
#[derive(Debug, thiserror::Error)]
#[error("{} matches its checksum but this build cannot read it: {source}", path.display())]
pub struct Undecodable {
    path: PathBuf,
    source: PolarsError,
}

/// Text, plain or as a dictionary.
fn is_text(dtype: &DataType) -> bool {
    matches!(
        dtype,
        DataType::String | DataType::Categorical(..) | DataType::Enum(..)
    )
}

/// Stack frames. Parts written before a column was added lack it: such frames get the column
/// as nulls, so old and new parts read (and merge) as one.
pub fn concat_frames(mut frames: Vec<DataFrame>) -> anyhow::Result<DataFrame> {
    let mut columns: Vec<(PlSmallStr, DataType)> = Vec::new();
    for df in &frames {
        for (name, dtype) in df.schema().iter() {
            match columns.iter_mut().find(|(n, _)| n == name) {
                None => columns.push((name.clone(), dtype.clone())),
                // Text stored as a dictionary in some parts (a bulk import's one-value
                // `source`) and as plain text in others: plain text.
                Some((_, d)) if d != dtype && is_text(d) && is_text(dtype) => *d = DataType::String,
                Some(_) => {}
            }
        }
    }
    for df in &mut frames {
        let height = df.height();
        for (name, dtype) in &columns {
            match df.column(name).map(|c| c.dtype()) {
                // Only text is unified; other mismatches fail the stacking, as they did.
                Ok(d) if d != dtype && *dtype == DataType::String && is_text(d) => {
                    let cast = df.column(name)?.cast(dtype)?;
                    df.with_column(cast)?;
                }
                Ok(_) => {}
                Err(_) => {
                    df.with_column(Column::full_null(name.clone(), height, dtype))?;
                }
            }
        }
        if df.width() != columns.len()
            || df
                .get_column_names()
                .iter()
                .zip(&columns)
                .any(|(a, (b, _))| *a != b)
        {
            *df = df.select(columns.iter().map(|(n, _)| n.clone()))?;
        }
    }
    let mut iter = frames.into_iter();
    let Some(mut out) = iter.next() else {
        anyhow::bail!("nothing to concatenate");
    };
    for df in iter {
        out.vstack_mut_owned(df)?;
    }
    out.rechunk_mut();
    Ok(out)
}

/// Those of `columns` that the part at `path` has (parts written before a column existed
/// lack it), and only those: reading whole parts of a large dataset to look at a few
/// columns is what this avoids.
pub fn read_present_columns(path: &Path, columns: &[&str]) -> anyhow::Result<DataFrame> {
    read_with(path, |mut reader| {
        let schema = reader.schema()?;
        let present = columns
            .iter()
            .filter(|c| schema.contains(c))
            .map(|c| c.to_string())
            .collect();
        reader.with_columns(Some(present)).finish()
    })
}

/// [`read_present_columns`], with the absent ones as nulls of `dtype`: for a reader that
/// needs a column added later.
pub fn read_columns_or_null(
    path: &Path,
    columns: &[(&str, DataType)],
) -> anyhow::Result<DataFrame> {
    let names: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();
    let mut df = read_present_columns(path, &names)?;
    let height = df.height();
    for (name, dtype) in columns {
        if df.column(name).is_err() {
            df.with_column(Column::full_null((*name).into(), height, dtype))?;
        }
    }
    Ok(df)
}
