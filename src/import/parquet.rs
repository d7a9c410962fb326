//! `sendtime import parquet`: engagement events from a Parquet file (a warehouse export),
//! read a row group or so at a time.
//!
//! A time column may be a timestamp (any unit, with or without a zone: stored as UTC), an
//! integer (epoch seconds or milliseconds, as text times are read) or text; a contact
//! column integers (HubSpot ids) or text, as in a CSV file.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::Context;
use polars::prelude::*;

use super::{Batch, Columns, Contact, MAX_LISTED, Parsed, Reader};
use crate::time::epoch_number;

/// Rows decoded at a time when a row group is larger.
const SLICE_ROWS: usize = 1 << 20;
/// The most rows a file's footer may claim: a trillion, some thousand times the largest
/// import measured (a slice of a million listed for each, 16 MB of them at most).
const MAX_FILE_ROWS: usize = 1 << 40;
/// Rows of smaller row groups gathered into one batch, their groups decoded on all cores.
const BATCH_ROWS: usize = 1 << 18;
/// Rows of adjacent small row groups decoded together as one slice: a batch of thousands of
/// slices (a streaming writer's 100-row groups) overflowed a decoding thread's stack, each
/// slice waiting on Polars' pool nested in the one before.
const MIN_SLICE_ROWS: usize = BATCH_ROWS / 8;

/// Whether `file` starts with Parquet's magic bytes (read without moving its cursor).
pub fn is_parquet(file: &File) -> bool {
    use std::os::unix::fs::FileExt;
    let mut magic = [0u8; 4];
    file.read_exact_at(&mut magic, 0).is_ok() && &magic == b"PAR1"
}

/// A Parquet file read in slices of whole row groups (or of [`SLICE_ROWS`] within a larger
/// one, or of adjacent small ones up to about [`MIN_SLICE_ROWS`]), each decoded on its own; a batch is one slice or several of up to [`BATCH_ROWS`]
/// rows in all, decoded and parsed on all cores.
pub struct ParquetFile {
    path: PathBuf,
    /// The file as opened, read by every slice: one put in its place meanwhile is not read
    /// against this one's footer (the import refuses it at the end, as changed).
    file: File,
    /// Its length then: a slice of a file since cut short would read past its end.
    len: u64,
    metadata: std::sync::Arc<polars::io::parquet::read::FileMetadata>,
    columns: Columns,
    names: Vec<String>,
    slices: std::iter::Peekable<std::vec::IntoIter<(usize, usize)>>,
    /// What each slice of a batch parsed, reused from batch to batch.
    pieces: Vec<Batch>,
}

impl ParquetFile {
    /// Open `path` and find `columns` in its schema.
    pub fn open(path: &Path, columns: &Columns) -> anyhow::Result<Self> {
        let cannot_read = || format!("cannot read {} as Parquet", path.display());
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        super::refuse_packed(&file, path)?;
        anyhow::ensure!(
            is_parquet(&file),
            "{} is not a Parquet file (it does not start with PAR1): for a CSV file, use `sendtime import csv`",
            path.display()
        );
        let len = file.metadata()?.len();
        let mut reader = ParquetReader::new(file.try_clone()?);
        let schema = anyhow::Context::with_context(reader.schema(), cannot_read)?;
        let metadata = anyhow::Context::with_context(reader.get_metadata(), cannot_read)?.clone();
        columns.refuse_unread_kind(path, schema.iter_names().map(|n| n.as_str()))?;
        let mut names = vec![columns.contact.clone(), columns.time.clone()];
        names.extend(columns.kind.clone());
        let flags = ["--contact", "--time", "--kind"];
        for (flag, name) in flags.iter().zip(&names) {
            let Some(field) = schema.get(name.as_str()) else {
                anyhow::bail!(
                    "{}: no column named {name:?} ({flag}); the file has: {}",
                    path.display(),
                    schema
                        .iter_names()
                        .map(|n| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            };
            // Polars is built here without decimals: decoding one would abort the import.
            if matches!(
                field.dtype,
                ArrowDataType::Decimal(..)
                    | ArrowDataType::Decimal32(..)
                    | ArrowDataType::Decimal64(..)
                    | ArrowDataType::Decimal256(..)
            ) {
                anyhow::bail!(
                    "{}: column {name:?} (given by {flag}) is a DECIMAL (as a warehouse's NUMBER is exported): cast it to an integer (BIGINT) or text in the export",
                    path.display()
                );
            }
        }
        // What the footer says is checked before slices are made of it: a footer claiming 2^62
        // rows had a slice listed for each million before any was read (an audit).
        let rows = (metadata.row_groups.iter())
            .try_fold(0usize, |n, g| n.checked_add(g.num_rows()))
            .filter(|n| *n <= MAX_FILE_ROWS);
        anyhow::ensure!(
            rows.is_some(),
            "{}: its footer claims more than {MAX_FILE_ROWS} rows: not a file this import reads (damaged, or not written as Parquet says)",
            path.display()
        );
        let mut slices = Vec::new();
        let mut offset = 0;
        for group in &metadata.row_groups {
            let end = offset + group.num_rows();
            if let Some((_, len)) = slices.last_mut()
                && *len < MIN_SLICE_ROWS
                && group.num_rows() < MIN_SLICE_ROWS
            {
                *len += group.num_rows();
                offset = end;
                continue;
            }
            while offset < end {
                let len = (end - offset).min(SLICE_ROWS);
                slices.push((offset, len));
                offset += len;
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            len,
            metadata,
            columns: columns.clone(),
            names,
            slices: slices.into_iter().peekable(),
            pieces: Vec::new(),
        })
    }

    /// Decode and parse the `len` rows from row `offset` (from 0) into `out`.
    fn read_slice(&self, offset: usize, len: usize, out: &mut Batch) -> anyhow::Result<()> {
        let file = self.file.try_clone()?;
        if file.metadata()?.len() != self.len {
            return Err(super::changed(&self.path));
        }
        let mut reader = ParquetReader::new(file);
        reader.set_metadata(self.metadata.clone());
        let df = reader
            .with_columns(Some(self.names.clone()))
            .with_slice(Some((offset, len)))
            .finish();
        let df =
            anyhow::Context::with_context(df, || format!("cannot read {}", self.path.display()))?;
        self.parse(&df, offset, out)
    }

    /// Parse a decoded slice whose first row is row `first` of the file (from 0).
    fn parse(&self, df: &DataFrame, first: usize, batch: &mut Batch) -> anyhow::Result<()> {
        let n = df.height();
        // Text stored as categories (pandas' and Polars' categoricals and enums) is text.
        let column = |name: &str| -> anyhow::Result<Column> {
            let c = df.column(name)?;
            Ok(if c.dtype().is_categorical() || c.dtype().is_enum() {
                c.cast(&DataType::String)?
            } else {
                c.clone()
            })
        };
        let contacts = self.contacts(&column(&self.columns.contact)?)?;
        let times = self.times(&column(&self.columns.time)?)?;
        let kinds: Option<Vec<Result<_, String>>> = match &self.columns.kind {
            None => None,
            Some(name) => {
                let column = column(name)?;
                let text = column.str().map_err(|_| {
                    anyhow::anyhow!(
                        "{}: column {name:?} (given by --kind) is {}: expected text (OPEN, CLICK, ...)",
                        self.path.display(),
                        column.dtype()
                    )
                })?;
                Some(listed(text.iter().map(|k| {
                    k.ok_or_else(|| format!("no kind in column {name:?}"))
                        .and_then(|k| self.columns.kind(k))
                })))
            }
        };
        batch.rows.clear();
        batch.bad.clear();
        batch.unlisted = 0;
        batch.rows.reserve(n);
        for (i, (contact, at_ms)) in contacts.into_iter().zip(times).enumerate() {
            let kind = match &kinds {
                None => Ok(self.columns.kind_default),
                Some(kinds) => kinds[i].clone(),
            };
            match (contact, at_ms, kind) {
                (Ok(contact), Ok(at_ms), Ok(kind)) => batch.rows.push(Parsed {
                    contact,
                    kind,
                    at_ms,
                }),
                (Err(why), _, _) | (_, Err(why), _) | (_, _, Err(why)) => {
                    match batch.bad.len() < MAX_LISTED {
                        true => batch.bad.push(((first + i) as u64, why)),
                        false => batch.unlisted += 1,
                    }
                }
            }
        }
        Ok(())
    }

    fn contacts(&self, column: &Column) -> anyhow::Result<Vec<Result<Contact, String>>> {
        let name = &self.columns.contact;
        let missing = || format!("no contact in column {name:?}");
        // Cast to i64, an id past its range would read as null ("no contact").
        if column.dtype() == &DataType::UInt64 {
            return Ok(listed(column.u64()?.iter().map(|id| {
                let id = id.ok_or_else(missing)?;
                i64::try_from(id)
                    .map_err(|_| self.columns.too_large(&id.to_string()))
                    .and_then(|id| self.columns.id(id))
            })));
        }
        if column.dtype().is_integer() {
            let ids = column.cast(&DataType::Int64)?;
            return Ok(listed((ids.i64()?.iter()).map(|id| {
                id.ok_or_else(missing).and_then(|id| self.columns.id(id))
            })));
        }
        match column.str() {
            Ok(text) => Ok(listed(text.iter().map(|c| {
                c.ok_or_else(missing)
                    .and_then(|c| self.columns.contact(c.trim()))
            }))),
            Err(_) => anyhow::bail!(
                "{}: column {name:?} (given by --contact) is {}: expected integers (HubSpot contact ids) or text (emails or ids){}",
                self.path.display(),
                column.dtype(),
                float_hint(column.dtype())
            ),
        }
    }

    fn times(&self, column: &Column) -> anyhow::Result<Vec<Result<i64, String>>> {
        let name = &self.columns.time;
        let missing = || format!("no time in column {name:?}");
        let check = |at_ms: Option<i64>, raw: &dyn Fn() -> String| {
            match at_ms.ok_or_else(missing)? {
                at_ms if self.columns.plausible(at_ms) => Ok(at_ms),
                // The raw value is written out only for the message.
                at_ms => self.columns.check_time(at_ms, &raw()),
            }
        };
        let physical = || -> anyhow::Result<Vec<Option<i64>>> {
            Ok(column.cast(&DataType::Int64)?.i64()?.iter().collect())
        };
        let from_units = |per_ms: i64| -> anyhow::Result<Vec<Result<i64, String>>> {
            Ok(listed(physical()?.into_iter().map(|t| {
                check(t.map(|t| t.div_euclid(per_ms)), &|| {
                    t.map_or_else(String::new, |t| t.to_string())
                })
            })))
        };
        match column.dtype() {
            DataType::Datetime(unit, _) => from_units(match unit {
                TimeUnit::Nanoseconds => 1_000_000,
                TimeUnit::Microseconds => 1_000,
                TimeUnit::Milliseconds => 1,
            }),
            DataType::Date => anyhow::bail!(
                "{}: column {name:?} (given by --time) is a DATE, without a time of day: {}",
                self.path.display(),
                super::NO_HOUR
            ),
            t if t.is_integer() => Ok(listed(physical()?.into_iter().map(|n| {
                let at_ms =
                    match n {
                        Some(n) => Some(epoch_number(n).ok_or_else(|| {
                            format!("time {n} in column {name:?} is out of range")
                        })?),
                        None => None,
                    };
                check(at_ms, &|| n.map_or_else(String::new, |n| n.to_string()))
            }))),
            DataType::String => {
                Ok(listed((column.str()?.iter()).map(|t| {
                    t.ok_or_else(missing).and_then(|t| self.columns.time(t))
                })))
            }
            other => anyhow::bail!(
                "{}: column {name:?} (given by --time) is {other}: expected a timestamp, epoch seconds or milliseconds (integers), or text{}",
                self.path.display(),
                float_hint(other)
            ),
        }
    }
}

/// Each row's result, the reasons past the first [`MAX_LISTED`] bad ones dropped as they are
/// made: only those are listed, and a column of bad rows (a wrong `--time`) held a message per
/// row, some 200 MB per row group of a million (an audit).
fn listed<T>(rows: impl Iterator<Item = Result<T, String>>) -> Vec<Result<T, String>> {
    let mut bad = 0;
    rows.map(|row| {
        row.map_err(|why| {
            bad += 1;
            if bad <= MAX_LISTED {
                why
            } else {
                String::new()
            }
        })
    })
    .collect()
}

/// What to do about a float column: pandas writes integers with a missing value as floats.
fn float_hint(dtype: &DataType) -> &'static str {
    match dtype.is_float() {
        true => {
            "; integers written as floats (pandas does so for a column with a missing value): cast it to BIGINT, or pandas' Int64, before export"
        }
        false => "",
    }
}

impl Reader for ParquetFile {
    fn next_batch(&mut self, batch: &mut Batch) -> anyhow::Result<bool> {
        use rayon::prelude::*;
        batch.rows.clear();
        batch.bad.clear();
        batch.unlisted = 0;
        let mut slices = Vec::new();
        let mut rows = 0;
        while let Some(&(offset, len)) = self.slices.peek() {
            if !slices.is_empty() && rows + len > BATCH_ROWS {
                break;
            }
            slices.push((offset, len));
            rows += len;
            self.slices.next();
        }
        if slices.is_empty() {
            return Ok(false);
        }
        self.pieces.resize_with(slices.len(), Batch::default);
        let mut pieces = std::mem::take(&mut self.pieces);
        let read = pieces
            .par_iter_mut()
            .zip(&slices)
            .try_for_each(|(out, &(offset, len))| self.read_slice(offset, len, out));
        for piece in &mut pieces {
            batch.rows.append(&mut piece.rows);
            batch.bad.append(&mut piece.bad);
            batch.unlisted += piece.unlisted;
        }
        self.pieces = pieces;
        read?;
        Ok(true)
    }

    fn locate(&self, rows: &[u64]) -> anyhow::Result<Vec<String>> {
        Ok(rows
            .iter()
            .map(|r| format!("{}: row {}", self.path.display(), r + 1))
            .collect())
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn format(&self) -> &'static str {
        "parquet"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file cut short after it was opened is refused as changed, not read against the
    /// footer read at the start (Polars panicked on the offsets past its end); one put in its
    /// place is not read at all (the import refuses it at the end, as changed).
    #[test]
    fn a_file_cut_short_or_replaced_after_it_was_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.parquet");
        let write = |path: &Path, n: i64| {
            let mut df = DataFrame::new(
                n as usize,
                vec![
                    Column::new("contact".into(), (1..=n).collect::<Vec<_>>()),
                    Column::new(
                        "time".into(),
                        (0..n).map(|i| 1_736_121_600 + i).collect::<Vec<_>>(),
                    ),
                ],
            )
            .unwrap();
            ParquetWriter::new(File::create(path).unwrap())
                .finish(&mut df)
                .unwrap();
        };
        let columns = Columns::new("contact", "time", None, Some("OPEN")).unwrap();
        write(&path, 1000);
        let mut file = ParquetFile::open(&path, &columns).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(100)
            .unwrap();
        let err = file.next_batch(&mut Batch::default()).unwrap_err();
        assert!(
            err.to_string()
                .contains("changed while it was being imported"),
            "{err}"
        );

        write(&path, 1000);
        let mut file = ParquetFile::open(&path, &columns).unwrap();
        let other = dir.path().join("other.parquet");
        write(&other, 10);
        std::fs::rename(&other, &path).unwrap();
        let mut batch = Batch::default();
        assert!(file.next_batch(&mut batch).unwrap());
        assert_eq!(batch.rows.len(), 1000, "the file as opened");
    }
}
