//! Importers that fill the events dataset: HubSpot's email events API, and files (CSV,
//! Parquet) through one bulk importer with a reader per format.
//!
//! A file import streams: a reader thread parses batches of rows and checks them against the
//! events already stored ([`stored`]) while this one interns contacts and stages parts of at
//! most `part_rows` rows, so what memory grows with is the contacts new to the store, not the
//! file's size (a store too large for the memory of that check is checked in several passes
//! over the file). The whole file is checked before anything is visible: one unreadable row
//! means nothing is imported (the staged parts are removed), and the error lists the bad rows
//! by line (CSV) or row (Parquet) so they can be fixed.

pub mod csv;
pub mod hubspot;
pub mod parquet;
pub mod scheduled;
pub mod seen;
pub mod stored;

use std::path::Path;
use std::sync::{Arc, mpsc};

use anyhow::Context;

use crate::datasets::contacts::{self, Contacts, Shared, is_email_address};
use crate::datasets::events::{self, Constant, Kind, PartColumns, Row, Staged};
use crate::text::quoted;
use crate::time::{Minute, format_minute, parse_instant};
use stored::Stored;

/// An email event before 2000 is a misread column (an id taken for epoch seconds).
const EARLIEST_MS: i64 = crate::time::YEAR_2000_MS;
/// An event more than this after now is a misread time too (epoch microseconds taken for
/// milliseconds land in the year 56972); a day's slack for a clock a little behind.
const AHEAD_MS: i64 = crate::time::DAY_MS;
/// Why a date without a time of day is refused as an event's time.
pub(super) const NO_HOUR: &str = "sendtime learns the hours people read email, and would take each date for midnight UTC; export each event's time";
/// Bad rows listed in one error before the rest are only counted.
const MAX_LISTED: usize = 20;
/// Rows per events part unless told otherwise: about 15 MB of columns to sort and encode.
/// Parts of 4M rows made a 10M-row import slower by a fifth: the kernel zeroing the fresh
/// pages of their larger buffers (system time 0.5–1.1 s against 0.15 s).
pub const PART_ROWS: usize = 1_000_000;

/// Which columns hold what, and the kind of rows without a kind column.
#[derive(Debug, Clone)]
pub struct Columns {
    pub contact: String,
    pub time: String,
    pub kind: Option<String>,
    pub kind_default: Kind,
    /// `kind_default` was chosen (`--kind-default`), not taken for want of one: a file with
    /// a column that looks like the kind is then read as all of it.
    pub kind_default_chosen: bool,
    /// The latest time an event may have: now, when the import began, and [`AHEAD_MS`].
    pub latest_ms: i64,
}

impl Columns {
    /// Columns as given on the command line, `kind_default` checked (OPEN when not given).
    pub fn new(
        contact: &str,
        time: &str,
        kind: Option<&str>,
        kind_default: Option<&str>,
    ) -> anyhow::Result<Self> {
        let kind_default_chosen = kind_default.is_some();
        let kind_default = kind_default.unwrap_or("OPEN");
        let kind_default = Kind::parse(kind_default).with_context(|| {
            format!(
                "--kind-default {kind_default:?} is not an event kind; use one of: {}",
                kind_names()
            )
        })?;
        // One column read as two things (ids as epoch seconds) would import made-up events.
        let given = [
            ("--contact", Some(contact)),
            ("--time", Some(time)),
            ("--kind", kind),
        ];
        for (i, (flag, name)) in given.iter().enumerate() {
            if let Some((other, _)) = given[..i].iter().find(|(_, n)| n.is_some() && n == name) {
                anyhow::bail!(
                    "column {:?} is given by both {other} and {flag}: each needs its own",
                    name.unwrap_or_default()
                );
            }
        }
        Ok(Self {
            contact: contact.into(),
            time: time.into(),
            kind: kind.map(Into::into),
            kind_default,
            kind_default_chosen,
            latest_ms: crate::time::now_ms() + AHEAD_MS,
        })
    }

    /// Refuse a file with a column that looks like the event kind when neither `--kind` nor
    /// `--kind-default` says how to read it: every row was taken as an open, and an export's
    /// deliveries (at the sender's own hours) were learnt as engagement (an audit).
    pub fn refuse_unread_kind<'a>(
        &self,
        path: &std::path::Path,
        names: impl IntoIterator<Item = &'a str>,
    ) -> anyhow::Result<()> {
        if self.kind.is_some() || self.kind_default_chosen {
            return Ok(());
        }
        let looks = |n: &str| {
            let n = n.trim().to_ascii_lowercase().replace(['_', ' ', '-'], "");
            matches!(
                n.as_str(),
                "kind" | "type" | "eventtype" | "eventkind" | "event"
            )
        };
        // A column named as the contact or the time is read as that.
        let named = |n: &str| n == self.contact || n == self.time;
        if let Some(name) = names.into_iter().find(|n| looks(n) && !named(n)) {
            anyhow::bail!(
                "{}: column {name:?} looks like the event kind, but --kind does not name it: pass --kind {name:?} (only opens and clicks are learnt from), or --kind-default OPEN if every row is an open",
                path.display()
            );
        }
        Ok(())
    }

    /// The contact in `text`: an email address or a numeric HubSpot id.
    pub fn contact(&self, text: &str) -> Result<Contact, String> {
        if let Ok(id) = text.parse::<i64>() {
            self.id(id)
        } else if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            Err(self.too_large(text))
        } else if is_email_address(text) {
            Ok(Contact::Email(text.to_ascii_lowercase()))
        } else if text.contains('@') {
            Err(format!(
                "contact {} in column {:?} is not an email address",
                quoted(text),
                self.contact
            ))
        } else if text.is_empty() {
            Err(format!("empty contact in column {:?}", self.contact))
        } else {
            // `12345.0`: an id column exported as floats (pandas, with a missing value).
            let float = text
                .strip_suffix(".0")
                .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()));
            Err(format!(
                "contact {} in column {:?} is neither an email nor a numeric contact id{}",
                quoted(text),
                self.contact,
                if float {
                    " (ids written as floats: export the column as integers)"
                } else {
                    ""
                }
            ))
        }
    }

    /// The error for a numeric contact past any HubSpot record id (a `uint64` beyond `i64`).
    pub fn too_large(&self, digits: &str) -> String {
        // At most 60 of them, as any value quoted (a hash column given as `--contact` was
        // printed whole; an audit).
        let shown = crate::text::clipped(digits);
        format!(
            "contact id {shown} in column {:?} is larger than any HubSpot record id (at most {})",
            self.contact,
            i64::MAX
        )
    }

    /// A numeric contact: HubSpot's record ids are positive, and exports write 0 or -1 for
    /// a missing one, which would make every such row one made-up contact.
    pub fn id(&self, id: i64) -> Result<Contact, String> {
        if id > 0 {
            Ok(Contact::Id(id))
        } else {
            Err(format!(
                "contact id {id} in column {:?} is not a HubSpot record id (they are positive)",
                self.contact
            ))
        }
    }

    /// The time in `text`, in any form [`parse_instant`] reads but a date alone.
    pub fn time(&self, text: &str) -> Result<i64, String> {
        if crate::time::is_date_alone(text) {
            return Err(format!(
                "time {} in column {:?} is a date without a time of day: {NO_HOUR}",
                quoted(text),
                self.time
            ));
        }
        let at_ms = parse_instant(text).ok_or_else(|| {
            format!(
                "cannot parse time {} in column {:?} (expected e.g. 2022-03-18 15:28:01 UTC, RFC 3339, or epoch seconds or milliseconds)",
                quoted(text),
                self.time
            )
        })?;
        self.check_time(at_ms, text)
    }

    /// Whether `at_ms` can be an email event's time: after 2000, not in the future.
    pub fn plausible(&self, at_ms: i64) -> bool {
        (EARLIEST_MS..=self.latest_ms).contains(&at_ms)
    }

    /// `at_ms` unless it is too early or too late to be an email event (`raw` is what the
    /// file held).
    pub fn check_time(&self, at_ms: i64, raw: &str) -> Result<i64, String> {
        if at_ms < EARLIEST_MS {
            return Err(format!(
                "time {} in column {:?} is {}, before 2000: is that the time column?",
                quoted(raw),
                self.time,
                format_minute(at_ms)
            ));
        }
        if at_ms > self.latest_ms {
            return Err(format!(
                "time {} in column {:?} is {}, more than a day from now: a wrong clock or time zone, or another unit (microseconds, nanoseconds)?",
                quoted(raw),
                self.time,
                format_minute(at_ms)
            ));
        }
        Ok(at_ms)
    }

    /// The kind in `text` (HubSpot's name, any case), read from the --kind column.
    pub fn kind(&self, text: &str) -> Result<Kind, String> {
        Kind::parse(text).ok_or_else(|| {
            format!(
                "unknown event kind {} in column {:?}; expected one of: {}",
                quoted(text),
                self.kind.as_deref().unwrap_or_default(),
                kind_names()
            )
        })
    }
}

fn kind_names() -> String {
    Kind::ALL.map(Kind::as_str).join(", ")
}

/// A row's contact as a file names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Contact {
    Id(i64),
    /// Lower-cased: the dictionary's key.
    Email(String),
}

/// One row of a file, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub contact: Contact,
    pub kind: Kind,
    pub at_ms: i64,
}

/// Rows a reader parsed, and those it could not, by where they are (a reader's own
/// position, turned into text by [`Reader::locate`]).
#[derive(Debug, Default)]
pub struct Batch {
    pub rows: Vec<Parsed>,
    pub bad: Vec<(u64, String)>,
    /// Bad rows past the first [`MAX_LISTED`] of a Parquet slice, counted only (a column of
    /// bad rows would have held a message per row).
    pub unlisted: usize,
    /// Each row's dense contact index as the [`Shared`] index had it, or [`NEW`].
    known: Vec<u32>,
}

/// Rows a batch may hold room for and be filled again: several chunks' worth (a 2 MB chunk
/// is some 60,000 rows); a larger one (after a record of many MB) is freed.
const MAX_RECYCLED_ROWS: usize = 1 << 20;

/// In [`Batch::known`]: a contact the shared index did not have (so new in this import).
const NEW: u32 = u32::MAX;

impl Batch {
    /// Move this batch's bad rows to `listed`, up to [`MAX_LISTED`] there; how many it had
    /// (those only counted too).
    fn take_bad(&mut self, listed: &mut Vec<(u64, String)>) -> usize {
        let count = self.bad.len() + self.unlisted;
        let room = MAX_LISTED.saturating_sub(listed.len());
        listed.extend(self.bad.drain(..).take(room));
        count
    }

    /// Look every row's contact up in the `shared` index, on all cores: interning then hashes
    /// only the contacts new since its last merge, one row at a time in file order, so
    /// indices are what interning every row in order would give.
    ///
    /// A row of a contact known before the import is checked against the stored events in
    /// `pass` ([`STORED`] when it matches one), or left to the pass that has them ([`LATER`]);
    /// a new contact's row is the first pass's, and [`LATER`] in the others.
    fn resolve(&mut self, shared: &Shared, pass: &Pass) {
        use rayon::prelude::*;
        let snapshot = shared.read();
        self.rows
            .par_iter()
            .map(|row| {
                match &row.contact {
                    Contact::Id(id) => snapshot.get_id(*id),
                    Contact::Email(email) => snapshot.get(email),
                }
                .unwrap_or(NEW)
            })
            .collect_into_vec(&mut self.known);
        drop(snapshot); // a merge waits for it
        // Each row's stored events are far from the last row's: looked for a few rows ahead.
        const CHUNK: usize = 4096;
        self.known
            .par_chunks_mut(CHUNK)
            .zip(self.rows.par_chunks(CHUNK))
            .for_each(|(known, rows)| {
                for i in 0..known.len() {
                    if let Some(&ahead) = known.get(i + 16) {
                        pass.stored.prefetch_start(ahead);
                    }
                    if let Some(&ahead) = known.get(i + 8) {
                        pass.stored.prefetch_run(ahead);
                    }
                    let (index, row) = (known[i], &rows[i]);
                    known[i] = match index {
                        i if i < pass.known && !pass.stored.covers(i) => LATER,
                        i if pass.stored.take(i, row.kind as u8, row.at_ms) => STORED,
                        i if i < pass.known || pass.first => i,
                        _ => LATER,
                    };
                }
            });
    }
}

/// A file format's reader: batches of rows, in file order.
pub trait Reader: Send {
    /// Fill `batch` (empty, its room kept from earlier batches) with the next rows; false at
    /// the end. An error is the file's, not a row's: the import stops.
    fn next_batch(&mut self, batch: &mut Batch) -> anyhow::Result<bool>;

    /// Where the rows at `positions` (ascending, as batches gave them) are, as
    /// `file:line` or `file: row N`.
    fn locate(&self, positions: &[u64]) -> anyhow::Result<Vec<String>>;

    /// The file, for messages.
    fn path(&self) -> &Path;

    /// The format's name, as `source` records it (`csv`).
    fn format(&self) -> &'static str;
}

/// Set by [`stop`]: a file import stops at its next batch, nothing imported (its staging
/// folder removed as for a bad row).
static STOPPED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Stop the file import under way at its next batch (a user's Ctrl-C).
pub fn stop() {
    STOPPED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Refuse to go on once [`stop`] was called: nothing of `path` is imported.
fn go_on(path: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        !STOPPED.load(std::sync::atomic::Ordering::Relaxed),
        "stopped (Ctrl-C or SIGTERM): nothing of {} was imported",
        path.display()
    );
    Ok(())
}

/// Refuse a compressed or archived export, which no reader takes, saying what to do.
fn refuse_packed(file: &std::fs::File, path: &Path) -> anyhow::Result<()> {
    let mut start = [0u8; 4];
    let read = std::os::unix::fs::FileExt::read_at(file, &mut start, 0).unwrap_or(0);
    let what = match &start[..read] {
        [0x1F, 0x8B, ..] => "gzip-compressed: decompress it first (`gunzip -k FILE`)",
        [b'P', b'K', 3, 4] => {
            "a zip archive: an Excel workbook (.xlsx) is one, to save as \"CSV UTF-8\"; a downloaded export, to unzip and import the file inside"
        }
        _ => return Ok(()),
    };
    anyhow::bail!("{} is {what}", path.display())
}

/// The refusal of a file that changed while it was read.
pub(super) fn changed(path: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "{} changed while it was being imported; nothing was imported (import it once it is complete)",
        path.display()
    )
}

/// How an import runs.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Show what would be imported; write nothing.
    pub dry_run: bool,
    /// Rows per events part.
    pub part_rows: usize,
    /// Bytes for the index of stored events that rows are checked against.
    pub dedup_budget: usize,
}

/// In [`Batch::known`]: a row that matched a stored event.
const STORED: u32 = u32::MAX - 1;
/// In [`Batch::known`]: a row left to another pass over the file.
const LATER: u32 = u32::MAX - 2;

/// One read of the file: the rows of contacts known before the import whose stored events are
/// in `stored`, and in the first pass also the rows of new contacts.
struct Pass {
    stored: Stored,
    first: bool,
    known: u32,
}

/// Import the file at `path`, read by what `open` makes of it, into `data_dir`, with its
/// [`source_of`] recorded on every event.
/// The file is read once, or once per range of contacts when the stored events that rows are
/// checked against do not fit `options.dedup_budget`.
pub fn run<R: Reader>(
    data_dir: &Path,
    path: &Path,
    open: impl Fn(&Path) -> anyhow::Result<R>,
    options: Options,
) -> anyhow::Result<()> {
    // The same rows each time it is read: a file, not a pipe, and unchanged until the end.
    let file =
        std::fs::metadata(path).with_context(|| format!("cannot open {}", path.display()))?;
    anyhow::ensure!(
        !file.is_dir(),
        "{} is a folder: give the file to import",
        path.display()
    );
    anyhow::ensure!(
        file.is_file(),
        "{} is not a regular file: an import reads its file in place, and may read it more than \
         once (save a pipe's output to a file first)",
        path.display()
    );
    let unchanged = (file.len(), file.modified().ok());
    let check_unchanged = || -> anyhow::Result<()> {
        let file = std::fs::metadata(path)?;
        match (file.len(), file.modified().ok()) == unchanged {
            true => Ok(()),
            false => Err(changed(path)),
        }
    };
    let mut reader = open(path)?;
    let source = &source_of(&reader);
    let part_rows = options.part_rows.max(1);
    // Held to the end: the dictionary must be as this import leaves it when the next starts.
    let _lock = if options.dry_run {
        None
    } else {
        let lock = events::lock(data_dir)?;
        crate::cut_short::refuse_to_import(data_dir)?;
        // First, as it finishes an interrupted publish: what is stored includes those parts.
        events::recover_locked(data_dir)?;
        Some(lock)
    };
    let staged = if options.dry_run {
        None
    } else {
        Some(Staged::start(data_dir)?)
    };
    // A dry run moves nothing: a damaged part is named, not set aside (an audit found it was,
    // beside a running `serve`).
    let mut contacts = match options.dry_run {
        true => Contacts::load_from(&crate::datasets::contacts::dataset(data_dir)?.for_dry_run())?,
        false => Contacts::load(data_dir)?,
    };
    let erased = crate::datasets::erased::Erased::load(data_dir)?;
    let mut of_erased = 0usize;
    let known = contacts.len();
    let plan = stored::plan(data_dir, known as u32, options.dedup_budget)?;
    let mut part: Vec<Row> = Vec::with_capacity(part_rows.min(PART_ROWS));
    let mut summary = Summary::default();
    let mut first: Vec<Row> = Vec::new();
    let mut skipped = 0usize;
    let mut bad: Vec<(u64, String)> = Vec::new();
    let mut bad_count = 0usize;

    let reader = std::thread::scope(|scope| -> anyhow::Result<R> {
        let (to_writer, parts) = mpsc::sync_channel::<PartColumns>(1);
        let staged = staged.as_ref();
        let writer = scope.spawn(move || -> anyhow::Result<()> {
            for columns in parts {
                staged
                    .expect("parts are sent only to be written")
                    .write(columns)?;
            }
            Ok(())
        });
        let mut constant = None;
        let mut flush = |part: &mut Vec<Row>, contacts: &Contacts| -> bool {
            if part.is_empty() || staged.is_none() {
                part.clear();
                return true;
            }
            let constant = constant.get_or_insert_with(|| Constant::new(source, part.len()));
            let columns = Staged::columns(part, contacts, constant);
            part.clear();
            to_writer.send(columns).is_ok()
        };
        let mut writing = true;
        // The readers look contacts up in the shared index, which takes this thread's new
        // contacts after each batch (the cost of the keys added alone), so few rows are left
        // for this thread to intern.
        let shared = contacts.share();
        for (n, range) in plan.ranges.iter().enumerate() {
            if n > 0 {
                if bad_count > 0 || !writing {
                    break;
                }
                check_unchanged()?;
                reader = open(path)?;
            }
            let pass = Arc::new(Pass {
                stored: Stored::load(data_dir, &plan, range.clone())?,
                first: n == 0,
                known: known as u32,
            });
            // The reader parses on its own thread, this one interns and gathers parts, the
            // writer encodes and writes them.
            let (tx, rx) = mpsc::sync_channel(4);
            // Batches go back to the reader to be filled again: no fresh memory per batch.
            let (recycle, recycled) = mpsc::sync_channel::<Batch>(8);
            let reading = scope.spawn({
                let (shared, pass) = (shared.clone(), pass.clone());
                move || {
                    loop {
                        let mut batch = recycled.try_recv().unwrap_or_default();
                        let next = reader.next_batch(&mut batch).map(|more| {
                            batch.resolve(&shared, &pass);
                            more.then_some(batch)
                        });
                        let last = !matches!(next, Ok(Some(_)));
                        if tx.send(next).is_err() || last {
                            return reader;
                        }
                    }
                }
            });
            for batch in rx {
                go_on(path)?;
                let Some(mut batch) = batch? else { break };
                if !batch.bad.is_empty() || bad_count > 0 {
                    bad_count += batch.take_bad(&mut bad);
                    // Nothing will be imported: check the rest, stage nothing more.
                    continue;
                }
                if !writing {
                    break; // the writer failed: its error says why
                }
                for (row, index) in batch.rows.drain(..).zip(batch.known.drain(..)) {
                    let contact = match (&row.contact, index) {
                        (_, STORED) => {
                            skipped += 1;
                            continue;
                        }
                        (_, LATER) => continue,
                        // A contact `sendtime erase` erased has no entry: only a new one may
                        // be theirs.
                        (Contact::Id(id), NEW)
                            if !erased.is_empty()
                                && contacts.get_id(*id).is_none()
                                && erased.holds_id(*id) =>
                        {
                            of_erased += 1;
                            continue;
                        }
                        (Contact::Email(email), NEW)
                            if !erased.is_empty()
                                && contacts.get(email).is_none()
                                && erased.holds(email) =>
                        {
                            of_erased += 1;
                            continue;
                        }
                        (Contact::Id(id), NEW) => contacts.intern_id(*id),
                        (Contact::Email(email), NEW) => contacts.intern(email, None),
                        (_, index) => index,
                    };
                    let kind = row.kind as u8;
                    summary.add(contact, row.at_ms);
                    if first.len() < 5 {
                        first.push((contact, row.at_ms, kind));
                    }
                    part.push((contact, row.at_ms, kind));
                    if part.len() >= part_rows {
                        writing = flush(&mut part, &contacts);
                    }
                }
                contacts.merge();
                // One that a long record made huge is not kept for the rest of the file.
                if batch.rows.capacity() <= MAX_RECYCLED_ROWS {
                    let _ = recycle.try_send(batch);
                }
            }
            // A decoder that panicked (on a file changed under it, say) ends the import.
            reader = reading.join().map_err(|panic| {
                check_unchanged().err().unwrap_or_else(|| {
                    let why = (panic.downcast_ref::<&str>().copied())
                        .or(panic.downcast_ref::<String>().map(String::as_str))
                        .unwrap_or("a panic");
                    anyhow::anyhow!(
                        "cannot read {}: {why}; nothing was imported",
                        path.display()
                    )
                })
            })?;
        }
        if bad_count == 0 && writing {
            flush(&mut part, &contacts);
        }
        drop(to_writer); // the writer stops when the parts are all sent
        writer.join().expect("the writer does not panic")?;
        Ok(reader)
    })?;

    if bad_count > 0 {
        drop(staged);
        return Err(bad_rows(&reader, &bad, bad_count, "; nothing was imported"));
    }
    // A file still being written: the last line read may be cut short.
    check_unchanged()?;
    let mut already = if skipped > 0 {
        format!("; {skipped} rows already stored, skipped")
    } else {
        String::new()
    };
    if of_erased > 0 {
        already += &format!("; {of_erased} rows of contacts erased (sendtime erase), skipped");
    }
    (summary.check_times()).map_err(|e| anyhow::anyhow!("{e}; nothing was imported"))?;
    if summary.events == 0 {
        match (skipped, of_erased) {
            (0, 0) => println!("nothing to import: {} has no rows", path.display()),
            (_, 0) => println!(
                "nothing to import: all {skipped} rows of {} are already stored",
                path.display()
            ),
            _ => println!("nothing to import from {}{already}", path.display()),
        }
        return Ok(());
    }
    let Some(staged) = staged else {
        println!("dry run: {summary} would be imported{already}; nothing written");
        for (contact, at_ms, kind) in first {
            println!(
                "  {} {} at {}",
                contacts.keys[contact as usize],
                Kind::from_code(kind).map_or("?", Kind::as_str),
                format_minute(at_ms)
            );
        }
        return Ok(());
    };
    // A stop after the last batch (the writer's last part, the checks) is still in time.
    go_on(path)?;
    // New contacts first: every index a visible event carries resolves. Without the index
    // (not needed now), which would otherwise stay beside the part's copy of the new keys.
    contacts.forget_index();
    if contacts.len() > known {
        contacts::write(data_dir, &contacts, known..contacts.len())?;
    }
    staged.publish()?;
    println!(
        "imported {} events ({summary}) into {}{already}",
        summary.events,
        data_dir.join(events::NAME).display()
    );
    Ok(())
}

/// Counts shown after an import or a dry run.
#[derive(Default)]
struct Summary {
    events: usize,
    contacts: usize,
    /// Contacts seen, a bit per dense index: small enough to stay in cache for millions.
    seen: Vec<u64>,
    first: Option<i64>,
    last: Option<i64>,
    /// The times of day (ms) the events had so far, while at most two (a zone's midnight in
    /// winter and in summer, in UTC).
    times_of_day: Vec<i64>,
    /// More than two times of day.
    varied: bool,
}

/// Events past which one time of day shared by all (`2024-01-05 00:00:00`, a date cast to a
/// timestamp) says the file holds dates, not times.
const DATES_ONLY_EVENTS: usize = 100;

impl Summary {
    /// Refused when every one of many events has the same time of day on a quarter hour
    /// (midnight, or a zone's midnight in UTC), or one of two an hour apart (a zone's midnight
    /// across a change of summer time: an audit found such files taken): dates written as
    /// times, which the model would learn as everyone's hour (an earlier version took them).
    fn check_times(&self) -> anyhow::Result<()> {
        use crate::time::{DAY_MS, HOUR_MS, MINUTE_MS};
        let dates = match self.times_of_day[..] {
            [t] => t % (15 * MINUTE_MS) == 0,
            [a, b] => {
                let apart = (a - b).rem_euclid(DAY_MS);
                a % (15 * MINUTE_MS) == 0 && (apart == HOUR_MS || apart == DAY_MS - HOUR_MS)
            }
            _ => false,
        };
        if dates && !self.varied && self.events >= DATES_ONLY_EVENTS {
            let times: Vec<String> = (self.times_of_day.iter())
                .map(|&t| crate::time::format_time_of_day(t))
                .collect();
            anyhow::bail!(
                "all {} events are at {} UTC: the times are dates written as times; {NO_HOUR}",
                self.events,
                times.join(" or ")
            );
        }
        Ok(())
    }

    fn add(&mut self, contact: u32, at_ms: i64) {
        self.events += 1;
        let (word, bit) = (contact as usize / 64, 1 << (contact % 64));
        if word >= self.seen.len() {
            self.seen.resize((word + 1).next_power_of_two(), 0);
        }
        if self.seen[word] & bit == 0 {
            self.seen[word] |= bit;
            self.contacts += 1;
        }
        self.first = Some(self.first.map_or(at_ms, |f| f.min(at_ms)));
        self.last = Some(self.last.map_or(at_ms, |l| l.max(at_ms)));
        let time_of_day = at_ms.rem_euclid(crate::time::DAY_MS);
        if !self.varied && !self.times_of_day.contains(&time_of_day) {
            self.varied = self.times_of_day.len() == 2;
            if !self.varied {
                self.times_of_day.push(time_of_day);
            }
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} events of {} contacts", self.events, self.contacts)?;
        if let (Some(a), Some(b)) = (self.first, self.last) {
            write!(f, ", {} to {}", Minute(a), Minute(b))?;
        }
        Ok(())
    }
}

/// The error for `count` unreadable rows, the first of them (`bad`: position and why) listed
/// where the reader locates them; `outcome` says what became of the file.
fn bad_rows<R: Reader>(
    reader: &R,
    bad: &[(u64, String)],
    count: usize,
    outcome: &str,
) -> anyhow::Error {
    let positions: Vec<u64> = bad.iter().map(|(at, _)| *at).collect();
    let places = match reader.locate(&positions) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let listed: Vec<String> = places
        .iter()
        .zip(bad)
        .map(|(place, (_, why))| format!("{place}: {why}"))
        .collect();
    let more = count.saturating_sub(listed.len());
    anyhow::anyhow!(
        "{count} row{} of {} cannot be read{outcome}:\n{}{}",
        if count == 1 { "" } else { "s" },
        reader.path().display(),
        listed.join("\n"),
        if more > 0 {
            format!("\n... and {more} more")
        } else {
            String::new()
        }
    )
}

/// The file as `source` records it: `csv:opens.csv`.
pub fn source_of(reader: &impl Reader) -> String {
    format!(
        "{}:{}",
        reader.format(),
        reader
            .path()
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row's value is cut in its message: a quote never closed can make it megabytes.
    #[test]
    fn a_long_value_is_cut_in_its_message() {
        let columns = Columns::new("contact", "time", None, Some("OPEN")).unwrap();
        let long = format!("é{}", "x".repeat(100_000));
        let messages = [
            columns.time(&long).unwrap_err(),
            columns.contact(&long).unwrap_err(),
            columns.kind(&long).unwrap_err(),
        ];
        for m in messages {
            assert!(m.len() < 400, "{} bytes: {}", m.len(), &m[..400]);
            assert!(m.contains("\"éxxx") && m.contains("(100002 bytes)"), "{m}");
        }
        assert!(
            columns
                .time("soon")
                .unwrap_err()
                .contains("\"soon\" in column")
        );
        let digits = columns.contact(&"9".repeat(100_000)).unwrap_err();
        assert!(
            digits.len() < 200 && digits.contains("(100000 bytes)"),
            "{}",
            &digits[..200]
        );
    }
}
