//! `sendtime import csv`: engagement events from a CSV file, read as it streams.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::Context;

pub use super::Columns;
use super::{Batch, Contact, Parsed, Reader};
use crate::datasets::events::{Kind, Stored};
use crate::time::parse_utc_seconds;

/// Bytes read from the file at a time; a batch is the whole records they hold (larger chunks
/// held more memory and made no import faster).
const CHUNK: usize = 2 << 20;
/// Longer records are refused: most likely a quote left open, which would otherwise take the
/// rest of the file into one field.
const MAX_RECORD: usize = 256 << 20;
/// Buffer for reading the file again to find line numbers.
const BUFFER: usize = 1 << 20;

/// Every row of `path` as an event of a contact indexed here in the order first met, and the
/// number of contacts (for a backtest on a file: some 24 bytes a row, where whole events took
/// some 300, a string each: an audit); or fail listing the rows that cannot be read, or
/// refusing dates written as times, as an import does.
pub fn read(path: &Path, columns: &Columns) -> anyhow::Result<(Vec<Stored>, usize)> {
    let mut reader = CsvReader::open(path, columns)?;
    let mut index: HashMap<Contact, u32> = HashMap::new();
    let mut rows = Vec::new();
    let mut summary = super::Summary::default();
    let mut bad = Vec::new();
    let mut bad_count = 0;
    let mut batch = Batch::default();
    while reader.next_batch(&mut batch)? {
        bad_count += batch.take_bad(&mut bad);
        for r in batch.rows.drain(..) {
            let next = index.len() as u32;
            let contact = *index.entry(r.contact).or_insert(next);
            summary.add(contact, r.at_ms);
            rows.push(Stored {
                contact,
                kind: r.kind as u8,
                at_ms: r.at_ms,
                filtered: false,
            });
        }
    }
    if bad_count > 0 {
        return Err(super::bad_rows(&reader, &bad, bad_count, ""));
    }
    summary.check_times()?;
    Ok((rows, index.len()))
}

/// A CSV file read in chunks of whole records, each chunk split into pieces that are
/// tokenized and parsed on all cores, rows kept in file order.
/// The most a header row may take.
const MAX_HEADER_BYTES: u64 = 1024 * 1024;

/// A header's names for a message: the first few, each cut short.
fn listed(headers: &::csv::StringRecord) -> String {
    const SHOWN: usize = 40;
    let mut names: Vec<String> = headers
        .iter()
        .take(SHOWN)
        .map(|h| h.chars().take(60).collect())
        .collect();
    if headers.len() > SHOWN {
        names.push(format!("and {} more", headers.len() - SHOWN));
    }
    names.join(", ")
}

pub struct CsvReader {
    path: PathBuf,
    file: File,
    /// Bytes read and not parsed yet: whole records, then the start of the next one.
    buf: Vec<u8>,
    /// Where `buf` starts in the file.
    offset: u64,
    eof: bool,
    /// Bytes to read at a time ([`CHUNK`]; smaller in tests).
    chunk: usize,
    /// Fields in the header: every record must have as many.
    fields: usize,
    /// What each piece of a chunk parsed, reused from chunk to chunk.
    pieces: Vec<Batch>,
    columns: Columns,
    contact: usize,
    time: usize,
    kind: Option<usize>,
}

impl CsvReader {
    /// Open `path` and find `columns` in its header row.
    pub fn open(path: &Path, columns: &Columns) -> anyhow::Result<Self> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        anyhow::ensure!(
            !super::parquet::is_parquet(&file),
            "{} is a Parquet file, not CSV: import it with `sendtime import parquet` (for `backtest`, import it, then run without --events)",
            path.display()
        );
        super::refuse_packed(&file, path)?;
        let mut start = [0u8; 2];
        let read = std::os::unix::fs::FileExt::read_at(&file, &mut start, 0).unwrap_or(0);
        anyhow::ensure!(
            !(read == 2 && matches!(start, [0xFF, 0xFE] | [0xFE, 0xFF])),
            "{} is UTF-16 text: save it as UTF-8 (\"CSV UTF-8\" in Excel)",
            path.display()
        );
        // The header is read through a bound: an unclosed quote in it would take in the file.
        let mut reader = ::csv::ReaderBuilder::new()
            .trim(::csv::Trim::Headers) // fields are trimmed as parsed, only those read
            .from_reader(Read::take(&file, MAX_HEADER_BYTES));
        let headers = match reader.headers() {
            Ok(headers) => headers.clone(),
            Err(e) if matches!(e.kind(), ::csv::ErrorKind::Utf8 { .. }) => anyhow::bail!(
                "{}: the header row is not UTF-8 text: save the file as UTF-8 (\"CSV UTF-8\" in Excel, whose plain \"CSV\" writes Windows-1252)",
                path.display()
            ),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot read the header row of {}", path.display()));
            }
        };
        anyhow::ensure!(
            reader.position().byte() < MAX_HEADER_BYTES,
            "{}: the header row does not end within its first {} KiB (an unclosed quote?)",
            path.display(),
            MAX_HEADER_BYTES / 1024
        );
        // A quote opened in the header and closed rows later takes those rows in as a column
        // name, and the import went on without them (an audit).
        if let Some(name) = headers.iter().find(|h| h.contains(['\n', '\r'])) {
            anyhow::bail!(
                "{}: line 1: the header's column {:?} runs over more than one line (a quote opened in the header and closed later?): nothing imported; fix the header",
                path.display(),
                name.chars().take(40).collect::<String>()
            );
        }
        columns.refuse_unread_kind(path, headers.iter())?;
        if headers.iter().all(str::is_empty) {
            anyhow::bail!(
                "{} is empty: expected a header row naming the columns, then one row per event",
                path.display()
            );
        }
        let find = |flag: &str, name: &str| {
            let at: Vec<usize> = (0..headers.len())
                .filter(|&i| &headers[i] == name)
                .collect();
            match at[..] {
                [i] => Ok(i),
                [] => anyhow::bail!(
                    "{}: no column named {name:?} ({flag}); the header has: {}{}",
                    path.display(),
                    listed(&headers),
                    if headers.len() == 1 && headers[0].contains([';', '\t']) {
                        " (one column: the file looks separated by ';' or tabs, and sendtime \
                         reads commas; export it as comma-separated CSV)"
                    } else {
                        ""
                    }
                ),
                _ => anyhow::bail!(
                    "{}: the header names {name:?} (given by {flag}) {} times, at columns {}: \
                     rename all but one",
                    path.display(),
                    at.len(),
                    at.iter()
                        .map(|i| (i + 1).to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        };
        // Records are read from here on in chunks, not through this reader.
        let offset = reader.position().byte();
        drop(reader);
        let mut file = file;
        file.seek(SeekFrom::Start(offset))
            .with_context(|| format!("cannot read {}", path.display()))?;
        Ok(Self {
            contact: find("--contact", &columns.contact)?,
            time: find("--time", &columns.time)?,
            kind: columns
                .kind
                .as_deref()
                .map(|k| find("--kind", k))
                .transpose()?,
            fields: headers.len(),
            path: path.to_path_buf(),
            file,
            buf: Vec::with_capacity(CHUNK),
            offset,
            eof: false,
            chunk: CHUNK,
            pieces: Vec::new(),
            columns: columns.clone(),
        })
    }

    /// Read until `buf` holds at least `want` bytes or the file ends.
    fn fill(&mut self, want: usize) -> anyhow::Result<()> {
        while !self.eof && self.buf.len() < want {
            let len = self.buf.len();
            self.buf.resize(want, 0);
            let read = self.file.read(&mut self.buf[len..]);
            self.buf.truncate(len + read.as_ref().map_or(0, |n| *n));
            match read {
                Ok(n) => self.eof = n == 0,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("cannot read {}", self.path.display())));
                }
            }
        }
        Ok(())
    }

    /// Tokenize and parse the whole records of `piece`, which starts at `start` in the file,
    /// with the csv crate's own tokenizer, straight from memory; where the last whole record
    /// ends. With `last` (the file ends with the piece) a final record without a line break
    /// is whole too.
    fn parse_piece(&self, piece: &[u8], start: u64, last: bool, out: &mut Batch) -> usize {
        use ::csv_core::ReadRecordResult as Read;
        out.rows.clear();
        out.bad.clear();
        let mut reader = ::csv_core::Reader::new();
        // An empty line first, read as nothing: a BOM opening the piece is then data, as it
        // is mid-file, not a file's mark to strip.
        reader.read_record(b"\n", &mut [], &mut []);
        let (mut data, mut ends) = (vec![0u8; 256], vec![0usize; self.fields + 1]);
        let (mut input, mut consumed) = (piece, 0);
        let (mut record_at, mut data_len, mut ends_len) = (0, 0, 0);
        // At the file's end, a line break is given after it (not counted as read).
        let mut closed = false;
        loop {
            let (result, nin, ndata, nends) =
                reader.read_record(input, &mut data[data_len..], &mut ends[ends_len..]);
            input = &input[nin..];
            if !closed {
                consumed += nin;
            }
            data_len += ndata;
            ends_len += nends;
            match result {
                // Not the file's end: what follows the last record is read again later.
                Read::InputEmpty if !last && input.is_empty() => return record_at,
                // The file's end: a line break ends a last record that has none...
                Read::InputEmpty if !closed => {
                    closed = true;
                    input = b"\n";
                }
                // ...unless a quote opened in it is never closed: the line break went into
                // its field, as the rest of the file did (csv-core would end the record
                // there and take the lines swallowed for one field, perhaps unread).
                Read::InputEmpty if ndata > 0 => {
                    let why = "a quote (\") opened in this row is never closed, so every line after it would be one field".to_string();
                    out.bad.push((start + record_at as u64, why));
                    return consumed;
                }
                // All given: asked again with nothing, it ends.
                Read::InputEmpty => {}
                Read::OutputFull => data.resize(data.len() * 2, 0),
                Read::OutputEndsFull => ends.resize(ends.len() * 2, 0),
                Read::Record => {
                    let fields = Fields {
                        data: &data[..data_len],
                        ends: &ends[..ends_len],
                    };
                    let raw = &piece[record_at..consumed];
                    let parsed = if ends_len == self.fields {
                        self.parse(&fields)
                            .and_then(|row| match self.swallowed(raw) {
                                Some(why) => Err(why),
                                None => Ok(row),
                            })
                    } else {
                        Err(format!(
                            "{ends_len} field{} where the header has {}",
                            if ends_len == 1 { "" } else { "s" },
                            self.fields
                        ))
                    };
                    match parsed {
                        Ok(row) => out.rows.push(row),
                        Err(why) => out.bad.push((start + record_at as u64, why)),
                    }
                    (record_at, data_len, ends_len) = (consumed, 0, 0);
                }
                Read::End => return consumed,
            }
        }
    }

    /// Why the record `raw` (its bytes as in the file) is refused, when a field of it runs
    /// over lines that read as rows of their own: a stray quote opened in one row and another
    /// closed it rows later, and the rows between would be one unread field, lost without a
    /// word. A record on one line (nearly all) costs a scan for line breaks.
    fn swallowed(&self, raw: &[u8]) -> Option<String> {
        // Blank lines before it (skipped) and its own line break are not its lines.
        let line_break = |b: &u8| *b == b'\n' || *b == b'\r';
        let first = raw.iter().position(|b| !line_break(b))?;
        let last = raw.iter().rposition(|b| !line_break(b))?;
        let body = &raw[first..=last];
        memchr::memchr2(b'\n', b'\r', body)?;
        // Lines as an editor counts them: at LF (a CR before it is the CRLF's), or at CR
        // in a file without LF.
        let end = if memchr::memchr(b'\n', body).is_some() {
            b'\n'
        } else {
            b'\r'
        };
        let mut lines = body.split(|b| *b == end).skip(1);
        let inner =
            lines.position(|line| self.reads_as_row(line.strip_suffix(b"\r").unwrap_or(line)))?;
        let below = inner + 1;
        Some(format!(
            "a quoted field runs from this row over the lines below it, and the line {below} below reads as a row of its own: a quote (\") opened in this row is closed only further down, and the rows between would be lost in one field (fix the quotes; a value holding a line break followed by text shaped like a whole row is refused too)"
        ))
    }

    /// Whether `line`, read alone, is one whole row of this file's shape that parses.
    fn reads_as_row(&self, line: &[u8]) -> bool {
        let mut alone = Batch::default();
        self.parse_piece(line, 0, true, &mut alone);
        alone.rows.len() == 1 && alone.bad.is_empty()
    }

    /// Parse the pieces of `buf` that end at `ends` on all cores, into `self.pieces`; where
    /// the last ends, or none when a piece did not end where a record does (or `ends` is
    /// empty).
    fn parse_pieces(&mut self, ends: &[usize]) -> Option<usize> {
        use rayon::prelude::*;
        let spans: Vec<(usize, usize)> = std::iter::once(0)
            .chain(ends.iter().copied())
            .zip(ends.iter().copied())
            .collect();
        self.pieces.resize_with(spans.len(), Batch::default);
        let mut pieces = std::mem::take(&mut self.pieces);
        let (buf, eof) = (&self.buf, self.eof);
        let clean = pieces
            .par_iter_mut()
            .zip(&spans)
            .map(|(out, &(a, b))| {
                let piece = &buf[a..b];
                let used =
                    self.parse_piece(piece, self.offset + a as u64, eof && b == buf.len(), out);
                // Only line breaks after the last record: the tokenizer ended the piece at a
                // record's end, as the cut assumed.
                piece[used..].iter().all(|c| matches!(c, b'\r' | b'\n'))
            })
            .collect::<Vec<bool>>();
        self.pieces = pieces;
        (!ends.is_empty() && clean.iter().all(|c| *c)).then(|| ends[ends.len() - 1])
    }

    fn parse(&self, record: &Fields) -> Result<Parsed, String> {
        let field = |i: usize| {
            let bytes = record.get(i);
            std::str::from_utf8(bytes).map(str::trim).map_err(|_| {
                let name = match i {
                    i if i == self.contact => &self.columns.contact,
                    i if i == self.time => &self.columns.time,
                    _ => self.columns.kind.as_deref().unwrap_or_default(),
                };
                format!(
                    "column {name:?} (field {}) is not UTF-8 text: save the file as UTF-8 \
                     (\"CSV UTF-8\" in Excel, whose plain \"CSV\" writes Windows-1252)",
                    i + 1
                )
            })
        };
        // The forms exports write (digits, `YYYY-MM-DDTHH:MM:SSZ`, HubSpot's kind names) are
        // read from the bytes; anything else through the general rules and their messages.
        let bytes = |i: usize| record.get(i);
        let contact = match digits(bytes(self.contact)) {
            Some(id) => Contact::Id(id),
            None => self.columns.contact(field(self.contact)?)?,
        };
        let at_ms = match parse_utc_seconds(bytes(self.time)) {
            Some(at_ms) if self.columns.plausible(at_ms) => at_ms,
            _ => self.columns.time(field(self.time)?)?,
        };
        let kind = match self.kind {
            None => self.columns.kind_default,
            Some(c) => match Kind::exact(bytes(c)) {
                Some(kind) => kind,
                None => self.columns.kind(field(c)?)?,
            },
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
        batch.rows.clear();
        batch.bad.clear();
        let mut want = self.chunk;
        let used = loop {
            self.fill(want)?;
            if self.buf.is_empty() {
                return Ok(false);
            }
            // Several pieces a thread: one slow piece holds up the chunk less.
            let ends = record_ends(&self.buf, rayon::current_num_threads() * 4, self.eof);
            if let Some(used) = self.parse_pieces(&ends) {
                break used;
            }
            // The pieces were cut inside a quoted field (a quote inside an unquoted field is
            // data, and misled the count): the chunk is read again in one piece.
            self.pieces.resize_with(1, Batch::default);
            let mut piece = std::mem::take(&mut self.pieces[0]);
            let used = self.parse_piece(&self.buf, self.offset, self.eof, &mut piece);
            self.pieces[0] = piece;
            if used > 0 {
                break used;
            }
            // Not one whole record yet: a long one, or a quote left open.
            if want >= MAX_RECORD.max(self.chunk) {
                let line = self.locate(&[self.offset])?.remove(0);
                anyhow::bail!(
                    "{line}: a record longer than {} MB: is a quote (\") left open?",
                    MAX_RECORD >> 20
                );
            }
            want *= 2;
        };
        for piece in &mut self.pieces {
            batch.rows.append(&mut piece.rows);
            batch.bad.append(&mut piece.bad);
        }
        self.buf.drain(..used);
        self.offset += used as u64;
        // A long record grew the buffer, and one piece's rows, to up to MAX_RECORD: given
        // back, or they would be held for the rest of the file.
        if self.buf.capacity() > 4 * self.chunk {
            self.buf.shrink_to(self.chunk.max(self.buf.len()));
            self.pieces.clear();
        }
        Ok(true)
    }

    /// Line numbers from byte offsets, counting the header as line 1 (the csv crate's own
    /// count is one short in CRLF files), by reading the file again: only a failed import
    /// asks. A line ends where an editor ends it: at LF or CRLF, or, in a file without LF
    /// (old Mac files), at CR. A stray CR in an LF file ends a record but not a line.
    fn locate(&self, offsets: &[u64]) -> anyhow::Result<Vec<String>> {
        let file = File::open(&self.path)
            .with_context(|| format!("cannot open {}", self.path.display()))?;
        let mut reader = BufReader::with_capacity(BUFFER, file);
        // Decided from the first buffer, not consumed.
        let line_end = if memchr::memchr(b'\n', reader.fill_buf()?).is_some() {
            b'\n'
        } else {
            b'\r'
        };
        let mut bytes = reader.bytes().peekable();
        let (mut at, mut newlines) = (0u64, 0u64);
        let ends = |b: u8| u64::from(b == line_end);
        let mut out = Vec::with_capacity(offsets.len());
        for &offset in offsets {
            while at < offset {
                match bytes.next().transpose()? {
                    Some(b) => newlines += ends(b),
                    None => break,
                }
                at += 1;
            }
            // After a CRLF the reported start is the LF: step to the record's first byte.
            while let Some(Ok(b @ (b'\r' | b'\n'))) = bytes.peek() {
                newlines += ends(*b);
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

    fn format(&self) -> &'static str {
        "csv"
    }
}

/// One record's fields as the tokenizer wrote them: unescaped bytes, one end per field.
struct Fields<'a> {
    data: &'a [u8],
    ends: &'a [usize],
}

impl Fields<'_> {
    fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.data[start..self.ends[i]]
    }
}

/// A contact id written as 1 to 18 digits, nothing else, and not zero (left to
/// [`super::Columns::contact`], which refuses it).
fn digits(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 18 {
        return None;
    }
    b.iter()
        .try_fold(0i64, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
        })
        .filter(|id| *id > 0)
}

/// Where records end in `buf`, about `pieces` of them spread evenly, the last one the end of
/// the last whole record (all of `buf` at the end of the file); empty when `buf` holds no
/// whole record. A line break inside quotes is part of a field, so quotes are followed when
/// there are any (`""` inside a quoted field toggles twice).
fn record_ends(buf: &[u8], pieces: usize, eof: bool) -> Vec<usize> {
    let len = buf.len();
    let mut ends = Vec::with_capacity(pieces + 1);
    let mut last = None;
    if memchr::memchr(b'"', buf).is_none()
        && let Some(newline) = memchr::memrchr(b'\n', buf)
    {
        for k in 1..pieces {
            let from = (len * k / pieces).max(ends.last().copied().unwrap_or(0));
            match memchr::memchr(b'\n', buf.get(from..newline).unwrap_or_default()) {
                Some(i) => ends.push(from + i + 1),
                None => break,
            }
        }
        last = Some(newline + 1);
    } else {
        let mut quoted = false;
        for i in memchr::memchr3_iter(b'"', b'\n', b'\r', buf) {
            match buf[i] {
                b'"' => quoted = !quoted,
                _ if quoted => {}
                // CRLF ends at the LF; a CR at the very end may yet be followed by one.
                b'\r' if buf.get(i + 1).is_none_or(|&b| b == b'\n') => {}
                _ => {
                    if i + 1 >= len * (ends.len() + 1) / pieces {
                        ends.push(i + 1);
                    }
                    last = Some(i + 1);
                }
            }
        }
    }
    let last = if eof { Some(len) } else { last };
    if let Some(last) = last
        && ends.last() != Some(&last)
    {
        ends.push(last);
    }
    ends
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row of `path` and every bad one, read `chunk` bytes at a time.
    fn read_in_chunks(
        path: &Path,
        columns: &Columns,
        chunk: usize,
    ) -> (CsvReader, Vec<Parsed>, Vec<(u64, String)>) {
        let mut reader = CsvReader::open(path, columns).unwrap();
        reader.chunk = chunk;
        let (mut rows, mut bad) = (Vec::new(), Vec::new());
        let mut batch = Batch::default();
        while reader.next_batch(&mut batch).unwrap() {
            rows.append(&mut batch.rows);
            bad.append(&mut batch.bad);
        }
        (reader, rows, bad)
    }

    /// Lines end at LF, CRLF or, in a file without LF (old Mac files), CR.
    #[test]
    fn bad_rows_are_located_by_line_whatever_ends_them() {
        let dir = tempfile::tempdir().unwrap();
        let columns = Columns::new("contact", "time", None, Some("OPEN")).unwrap();
        for end in ["\n", "\r\n", "\r"] {
            let path = dir.path().join("ends.csv");
            let lines = [
                "contact,time",
                "1,2024-01-01T10:00:00Z",
                "2,bad",
                "3,2024-01-01T10:00:00Z",
                "4,bad",
            ];
            std::fs::write(&path, lines.join(end) + end).unwrap();
            let (reader, rows, bad) = read_in_chunks(&path, &columns, CHUNK);
            assert_eq!(rows.len(), 2, "{end:?}");
            let at: Vec<u64> = bad.iter().map(|b| b.0).collect();
            let places = reader.locate(&at).unwrap();
            let want = [3, 5].map(|n| format!("{}:{n}", path.display()));
            assert_eq!(places, want, "{end:?}");
        }
        // A stray CR inside a line of an LF file ends a record (both halves are bad) but
        // not a line: every place is the line an editor shows.
        let path = dir.path().join("stray.csv");
        let text =
            "contact,time\n1,2024-01-01T10:00:00Z\n2,ab\rcd\n3,2024-01-01T10:00:00Z\n4,bad\n";
        std::fs::write(&path, text).unwrap();
        let (reader, _, bad) = read_in_chunks(&path, &columns, CHUNK);
        let at: Vec<u64> = bad.iter().map(|b| b.0).collect();
        let places = reader.locate(&at).unwrap();
        let want = [3, 3, 5].map(|n| format!("{}:{n}", path.display()));
        assert_eq!(places, want);
    }

    /// A quote never closed would make every line after it one field of one row (csv-core
    /// ends the record at the file's end): in a column not read, that row passed and the lines
    /// after it were lost. Now the row is bad, at its line; a last row without a line break,
    /// or blank lines at the end, are not.
    #[test]
    fn a_quote_never_closed_is_a_bad_row_not_the_rest_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("open.csv");
        let mut text = String::from("contact,time,note\n1,2025-01-01T10:00:00Z,x\n");
        text += "2,2025-01-01T10:00:00Z,\"left open\n";
        for i in 3..60 {
            text += &format!("{i},2025-01-01T11:00:00Z,x\n");
        }
        std::fs::write(&path, &text).unwrap();
        let columns = Columns::new("contact", "time", None, Some("OPEN")).unwrap();
        for chunk in [CHUNK, 1, 16, 50, 90, 200] {
            let (reader, rows, bad) = read_in_chunks(&path, &columns, chunk);
            assert_eq!(rows.len(), 1, "chunk {chunk}");
            let at: Vec<u64> = bad.iter().map(|b| b.0).collect();
            let places = reader.locate(&at).unwrap();
            assert_eq!(places, [format!("{}:3", path.display())], "chunk {chunk}");
            assert!(bad[0].1.contains("never closed"), "{bad:?}");
        }
        for end in ["", "\n\n\n", "\r\n"] {
            let text = format!("contact,time,note\n1,2025-01-01T10:00:00Z,\"a \"\"b\"\"\"{end}");
            std::fs::write(&path, text).unwrap();
            for chunk in [CHUNK, 1, 16] {
                let (_, rows, bad) = read_in_chunks(&path, &columns, chunk);
                assert_eq!((rows.len(), bad), (1, vec![]), "{end:?}, chunk {chunk}");
            }
        }
    }

    /// A stray quote closed by another rows later made the rows between one unread field:
    /// lost without a word. Now the row where it opened is bad, whatever the chunks; a value
    /// that holds line breaks, blank lines and CRLF line ends are read as before.
    #[test]
    fn rows_a_stray_quote_would_swallow_make_its_row_bad() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stray.csv");
        let columns = Columns::new("contact", "time", None, Some("OPEN")).unwrap();
        let text = "contact,time,subject\n\
                    1,2025-01-01T10:00:00Z,\"Big sale\n\
                    2,2025-01-01T11:00:00Z,hello\n\
                    3,2025-01-01T12:00:00Z,size 12\"\n\
                    4,2025-01-01T13:00:00Z,x\n";
        for end in ["\n", "\r\n", "\r"] {
            std::fs::write(&path, text.replace('\n', end)).unwrap();
            for chunk in [CHUNK, 1, 16, 50] {
                let (reader, rows, bad) = read_in_chunks(&path, &columns, chunk);
                assert_eq!(rows.len(), 1, "{end:?}, chunk {chunk}");
                let at: Vec<u64> = bad.iter().map(|b| b.0).collect();
                let places = reader.locate(&at).unwrap();
                assert_eq!(places, [format!("{}:2", path.display())], "{end:?}");
                assert!(bad[0].1.contains("the line 1 below"), "{end:?}: {bad:?}");
            }
        }
        for end in ["\n", "\r\n"] {
            let lines = [
                "contact,time,note",
                "",
                "1,2025-01-01T10:00:00Z,\"two lines:\nthe second, without a time\"",
                "",
                "2,2025-01-01T11:00:00Z,x",
            ];
            std::fs::write(&path, lines.join(end) + end).unwrap();
            for chunk in [CHUNK, 1, 16] {
                let (_, rows, bad) = read_in_chunks(&path, &columns, chunk);
                assert_eq!((rows.len(), bad), (2, vec![]), "{end:?}, chunk {chunk}");
            }
        }
    }

    /// A long record grows the buffer to hold it; the rows after it are read with a chunk's
    /// room again, not the long record's for the rest of the file.
    #[test]
    fn the_room_a_long_record_took_is_given_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("long.csv");
        let mut text = format!(
            "contact,time,note\n1,2025-01-01T10:00:00Z,\"{}\"\n",
            "x".repeat(8192)
        );
        for i in 2..200 {
            text += &format!("{i},2025-01-01T11:00:00Z,y\n");
        }
        std::fs::write(&path, &text).unwrap();
        let columns = Columns::new("contact", "time", None, Some("OPEN")).unwrap();
        let (reader, rows, bad) = read_in_chunks(&path, &columns, 64);
        assert_eq!((rows.len(), bad.len()), (199, 0));
        assert!(reader.buf.capacity() <= 4 * 64, "{}", reader.buf.capacity());
    }

    /// A column named twice would be read from its first place, silently: refused.
    #[test]
    fn a_column_named_twice_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("twice.csv");
        std::fs::write(&path, "contact,time,time\n1,2024-01-01T10:00:00Z,bad\n").unwrap();
        let columns = Columns::new("contact", "time", None, Some("OPEN")).unwrap();
        let err = CsvReader::open(&path, &columns).err().unwrap().to_string();
        assert!(err.contains("2 times, at columns 2, 3"), "{err}");
    }

    #[test]
    fn records_end_at_line_breaks_outside_quotes() {
        // Pieces end at line breaks; the last end is the last whole record's.
        assert_eq!(record_ends(b"aaaa\nb\nc\npart", 2, false), vec![7, 9]);
        assert_eq!(record_ends(b"aaaa\nb\nc\npart", 2, true), vec![7, 13]);
        // A line break inside quotes is part of the field; `""` is a quote inside one.
        // (Many pieces: every record end is one.)
        assert_eq!(record_ends(b"x,\"a\nb\"\ny\n", 16, false), vec![8, 10]);
        assert_eq!(record_ends(b"x,\"a\"\"\nb\"\n", 16, false), vec![10]);
        assert_eq!(
            record_ends(b"x,\"open\nstill", 16, false),
            Vec::<usize>::new()
        );
        // CRLF ends after the LF; a CR alone ends a record, unless it is the last byte read.
        assert_eq!(record_ends(b"a\r\nb\r\n", 16, false), vec![3, 6]);
        assert_eq!(record_ends(b"a\rb\r", 16, false), vec![2]);
        assert_eq!(record_ends(b"a\rb\r", 16, true), vec![2, 4]);
        assert_eq!(record_ends(b"no end yet", 4, false), Vec::<usize>::new());
    }

    #[test]
    fn forms_outside_the_fast_paths_follow_the_general_rules() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opens.csv");
        std::fs::write(
            &path,
            "contact,time,kind\n\
             0042,2025-01-01T10:00:00Z,OPEN\n\
             \" 43 \",2025-01-01 10:00:00 UTC, open \n\
             Ann@Example.com,1735725600,Click\n\
             44,1999-12-31T23:59:59Z,OPEN\n\
             45,1735725600000000,OPEN\n\
             46,2100-01-04T03:00:00Z,OPEN\n\
             1234567890123456789,2025-01-01T10:00:00Z,OPEN\n",
        )
        .unwrap();
        let columns = Columns::new("contact", "time", Some("kind"), Some("OPEN")).unwrap();
        let mut reader = CsvReader::open(&path, &columns).unwrap();
        let mut batch = Batch::default();
        assert!(reader.next_batch(&mut batch).unwrap());
        let at = 1_735_725_600_000;
        let row = |contact, kind| Parsed {
            contact,
            kind,
            at_ms: at,
        };
        assert_eq!(
            batch.rows,
            vec![
                row(Contact::Id(42), Kind::Open),
                row(Contact::Id(43), Kind::Open),
                row(Contact::Email("ann@example.com".into()), Kind::Click),
                row(Contact::Id(1_234_567_890_123_456_789), Kind::Open),
            ]
        );
        // Too early, and in the future (epoch microseconds read as milliseconds, a year
        // far off): refused, not imported to swamp every profile.
        assert_eq!(batch.bad.len(), 3);
        assert!(batch.bad[0].1.contains("before 2000"), "{:?}", batch.bad);
        assert!(
            batch.bad[1].1.contains("more than a day from now"),
            "{:?}",
            batch.bad
        );
        assert!(
            batch.bad[2].1.contains("more than a day from now"),
            "{:?}",
            batch.bad
        );
    }

    #[test]
    fn a_stray_quote_does_not_split_a_quoted_line_break() {
        // A quote inside an unquoted field is data to the tokenizer; counting quotes alone
        // would take the line break inside "multi\nline" for a record's end.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opens.csv");
        let mut text = String::from("contact,note,time\n");
        for i in 0..40 {
            text += &format!("{},5'10\" tall,2025-01-01T10:00:00Z\n", 100 + i);
            text += &format!("{},\"multi\nline\",2025-01-01T10:00:00Z\n", 200 + i);
        }
        std::fs::write(&path, &text).unwrap();
        let columns = Columns::new("contact", "time", None, Some("OPEN")).unwrap();
        for chunk in [CHUNK, 1, 16, 50, 90, 200] {
            let (_, rows, bad) = read_in_chunks(&path, &columns, chunk);
            assert!(bad.is_empty(), "chunk {chunk}: {bad:?}");
            let ids: Vec<i64> = rows
                .iter()
                .map(|r| match r.contact {
                    Contact::Id(id) => id,
                    Contact::Email(_) => 0,
                })
                .collect();
            let want: Vec<i64> = (0..40).flat_map(|i| [100 + i, 200 + i]).collect();
            assert_eq!(ids, want, "chunk {chunk}");
        }
    }

    #[test]
    fn rows_are_the_same_whatever_the_chunk_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opens.csv");
        let mut text = String::from("\u{feff}contact,time,note,kind\r\n");
        for i in 0..500 {
            let note = match i % 5 {
                0 => "\"a, quoted\nnote with \"\"quotes\"\"\"".to_string(),
                1 => String::new(),
                2 => "\"\"".to_string(),
                _ => format!("n{i}"),
            };
            let end = if i % 3 == 0 { "\r\n" } else { "\n" };
            let kind = if i % 7 == 0 { "click" } else { "OPEN" };
            text += &format!(
                "{},2025-01-{:02}T10:00:00Z,{note},{kind}{end}",
                100 + i,
                1 + i % 28
            );
            if i == 250 {
                // A bad time, an empty line, and a BOM that is data, not a file's mark.
                text += "oops,not a time,,OPEN\n\n\u{feff}77,2025-01-01T10:00:00Z,,OPEN\n";
            }
        }
        std::fs::write(&path, &text).unwrap();
        let columns = Columns::new("contact", "time", Some("kind"), Some("OPEN")).unwrap();
        let read = |chunk: usize| {
            let (reader, rows, bad) = read_in_chunks(&path, &columns, chunk);
            let offsets: Vec<u64> = bad.iter().map(|(at, _)| *at).collect();
            (rows, reader.locate(&offsets).unwrap())
        };
        let (rows, bad) = read(CHUNK);
        assert_eq!(rows.len(), 500);
        assert_eq!(rows[499].contact, Contact::Id(599));
        assert_eq!(rows[7].kind, crate::datasets::events::Kind::Click);
        // Line 1 is the header; records 0..=250 take 251 lines plus one more for each
        // quoted note (i % 5 == 0: 51 of them).
        let line = |n: usize| format!("{}:{n}", path.display());
        assert_eq!(bad, vec![line(1 + 251 + 51 + 1), line(1 + 251 + 51 + 3)]);
        for chunk in [1, 7, 64, 1000] {
            assert_eq!(read(chunk), (rows.clone(), bad.clone()), "chunk {chunk}");
        }
    }
}
