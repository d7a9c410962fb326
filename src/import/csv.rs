//! `sendtime import csv`: engagement events from a CSV file, read as it streams.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::Context;

pub use super::Columns;
use super::{BATCH_ROWS, Batch, Contact, Options, Parsed, Reader};
use crate::datasets::events::Event;

/// Bytes read from the file at a time.
const BUFFER: usize = 1 << 20;

/// Import the CSV `file` into `data_dir`.
pub fn run(
    data_dir: &Path,
    file: &Path,
    columns: &Columns,
    options: Options,
) -> anyhow::Result<()> {
    let reader = CsvReader::open(file, columns)?;
    super::run(data_dir, reader, &super::source_of("csv", file), options)
}

/// Parse every row of `path` into events (for a backtest on a file), or fail listing the rows
/// that cannot be read.
pub fn read(path: &Path, columns: &Columns) -> anyhow::Result<Vec<Event>> {
    let source = super::source_of("csv", path);
    let mut reader = CsvReader::open(path, columns)?;
    let mut events = Vec::new();
    let mut bad = Vec::new();
    let mut bad_count = 0;
    let mut batch = Batch::default();
    while reader.next_batch(&mut batch)? {
        bad_count += batch.bad.len();
        let room = super::MAX_LISTED.saturating_sub(bad.len());
        bad.extend(batch.bad.drain(..).take(room));
        events.extend(batch.rows.drain(..).map(|r| {
            let (contact_id, email) = match r.contact {
                Contact::Id(id) => (Some(id), None),
                Contact::Email(e) => (None, Some(e)),
            };
            Event {
                event_id: None,
                contact_id,
                email,
                kind: r.kind,
                at_ms: r.at_ms,
                filtered: false,
                source: source.clone(),
            }
        }));
    }
    if bad_count > 0 {
        return Err(super::bad_rows(&reader, &bad, bad_count, ""));
    }
    Ok(events)
}

/// A CSV file read record by record into one reused buffer.
pub struct CsvReader {
    path: PathBuf,
    reader: ::csv::Reader<File>,
    /// One batch of records, tokenized in order, then parsed on all cores.
    records: Vec<::csv::ByteRecord>,
    parsed: Vec<Result<Parsed, String>>,
    columns: Columns,
    contact: usize,
    time: usize,
    kind: Option<usize>,
    done: bool,
}

impl CsvReader {
    /// Open `path` and find `columns` in its header row.
    pub fn open(path: &Path, columns: &Columns) -> anyhow::Result<Self> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut reader = ::csv::ReaderBuilder::new()
            .trim(::csv::Trim::Headers) // fields are trimmed as parsed, only those read
            .buffer_capacity(BUFFER)
            .from_reader(file);
        let headers = reader
            .headers()
            .with_context(|| format!("cannot read the header row of {}", path.display()))?
            .clone();
        if headers.iter().all(str::is_empty) {
            anyhow::bail!(
                "{} is empty: expected a header row naming the columns, then one row per event",
                path.display()
            );
        }
        let find = |flag: &str, name: &str| {
            headers.iter().position(|h| h == name).with_context(|| {
                format!(
                    "{}: no column named {name:?} (given by {flag}); the header has: {}",
                    path.display(),
                    headers.iter().collect::<Vec<_>>().join(", ")
                )
            })
        };
        Ok(Self {
            contact: find("--contact", &columns.contact)?,
            time: find("--time", &columns.time)?,
            kind: columns
                .kind
                .as_deref()
                .map(|k| find("--kind", k))
                .transpose()?,
            path: path.to_path_buf(),
            reader,
            records: Vec::new(),
            parsed: Vec::new(),
            columns: columns.clone(),
            done: false,
        })
    }

    fn parse(&self, record: &::csv::ByteRecord) -> Result<Parsed, String> {
        let field = |i: usize| {
            let bytes = record.get(i).unwrap_or_default();
            std::str::from_utf8(bytes)
                .map(str::trim)
                .map_err(|_| format!("field {} is not UTF-8", i + 1))
        };
        let contact = self.columns.contact(field(self.contact)?)?;
        let at_ms = self.columns.time(field(self.time)?)?;
        let kind = match self.kind {
            None => self.columns.kind_default,
            Some(c) => Columns::kind(field(c)?)?,
        };
        Ok(Parsed {
            contact,
            kind,
            at_ms,
        })
    }
}

impl Reader for CsvReader {
    fn next_batch(&mut self, batch: &mut Batch) -> anyhow::Result<bool> {
        if self.done {
            return Ok(false);
        }
        use rayon::prelude::*;
        batch.rows.clear();
        batch.bad.clear();
        let mut n = 0;
        while n + batch.bad.len() < BATCH_ROWS {
            if self.records.len() == n {
                self.records.push(::csv::ByteRecord::new());
            }
            match self.reader.read_byte_record(&mut self.records[n]) {
                Ok(false) => {
                    self.done = true;
                    break;
                }
                Ok(true) => n += 1,
                Err(e) => {
                    let offset = e.position().map_or(0, |p| p.byte());
                    let why = match e.kind() {
                        ::csv::ErrorKind::Io(_) => {
                            return Err(anyhow::Error::new(e)
                                .context(format!("cannot read {}", self.path.display())));
                        }
                        ::csv::ErrorKind::UnequalLengths {
                            expected_len, len, ..
                        } => format!(
                            "{len} field{} where the header has {expected_len}",
                            if *len == 1 { "" } else { "s" }
                        ),
                        _ => e.to_string(),
                    };
                    batch.bad.push((offset, why));
                }
            }
        }
        let mut parsed = std::mem::take(&mut self.parsed);
        self.records[..n]
            .par_iter()
            .map(|r| self.parse(r))
            .collect_into_vec(&mut parsed);
        let bad_records = batch.bad.len();
        for (record, row) in self.records.iter().zip(parsed.drain(..)) {
            match row {
                Ok(row) => batch.rows.push(row),
                Err(why) => batch
                    .bad
                    .push((record.position().map_or(0, |p| p.byte()), why)),
            }
        }
        self.parsed = parsed;
        if bad_records > 0 {
            batch.bad.sort_by_key(|(offset, _)| *offset); // in file order
        }
        Ok(true)
    }

    /// Line numbers from byte offsets, counting the header as line 1 (the csv crate's own
    /// count is one short in CRLF files), by reading the file again: only a failed import
    /// asks.
    fn locate(&self, offsets: &[u64]) -> anyhow::Result<Vec<String>> {
        let file = File::open(&self.path)
            .with_context(|| format!("cannot open {}", self.path.display()))?;
        let mut bytes = BufReader::with_capacity(BUFFER, file).bytes().peekable();
        let (mut at, mut newlines) = (0u64, 0u64);
        let mut out = Vec::with_capacity(offsets.len());
        for &offset in offsets {
            while at < offset {
                match bytes.next().transpose()? {
                    Some(b) => newlines += u64::from(b == b'\n'),
                    None => break,
                }
                at += 1;
            }
            // After a CRLF the reported start is the LF: step to the record's first byte.
            while let Some(Ok(b @ (b'\r' | b'\n'))) = bytes.peek() {
                newlines += u64::from(*b == b'\n');
                bytes.next();
                at += 1;
            }
            out.push(format!("{}:{}", self.path.display(), newlines + 1));
        }
        Ok(out)
    }

    fn path(&self) -> &Path {
        &self.path
    }
}
