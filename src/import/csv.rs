//! `sendtime import csv`: engagement events from a CSV file into the events dataset.
//!
//! The whole file is checked before anything is written: one unparseable row means nothing is
//! imported, and the error lists the bad rows by line number so they can be fixed.

use std::path::Path;

use anyhow::Context;

use crate::datasets::contacts::is_email_address;
use crate::datasets::events::{self, Event, Kind};
use crate::time::{Minute, format_minute, parse_instant};

/// 2000-01-01: an email event before it is a misread column (an id taken for epoch seconds).
const EARLIEST_MS: i64 = 946_684_800_000;
/// Bad rows listed in one error before the rest are only counted.
const MAX_LISTED: usize = 20;

/// How to read a CSV file's columns.
#[derive(Debug, Clone)]
pub struct Columns {
    pub contact: String,
    pub time: String,
    pub kind: Option<String>,
    pub kind_default: Kind,
}

impl Columns {
    /// Columns as given on the command line, `kind_default` checked.
    pub fn new(
        contact: &str,
        time: &str,
        kind: Option<&str>,
        kind_default: &str,
    ) -> anyhow::Result<Self> {
        let kind_default = Kind::parse(kind_default).with_context(|| {
            format!(
                "--kind-default {kind_default:?} is not an event kind; use one of: {}",
                kind_names()
            )
        })?;
        Ok(Self {
            contact: contact.into(),
            time: time.into(),
            kind: kind.map(Into::into),
            kind_default,
        })
    }
}

/// Import the CSV `file` into `data_dir`; with `dry_run`, only show what would be imported.
pub fn run(data_dir: &Path, file: &Path, columns: &Columns, dry_run: bool) -> anyhow::Result<()> {
    let (events, stored) = events::not_yet_stored(data_dir, read(file, columns)?)?;
    let summary = Summary::of(&events);
    let already = if stored > 0 {
        format!("; {stored} rows already stored, skipped")
    } else {
        String::new()
    };
    if events.is_empty() && stored > 0 {
        println!(
            "nothing to import: all {stored} rows of {} are already stored",
            file.display()
        );
        return Ok(());
    }
    if dry_run {
        println!("dry run: {summary} would be imported{already}; nothing written");
        for e in events.iter().take(5) {
            println!(
                "  {} {} at {}",
                e.contact_key().unwrap_or_default(),
                e.kind.as_str(),
                format_minute(e.at_ms)
            );
        }
        return Ok(());
    }
    let (new, skipped) = events::append(data_dir, &events)?;
    debug_assert_eq!(skipped, 0, "every row was checked to have a contact");
    println!(
        "imported {new} events ({summary}) into {}{already}",
        data_dir.join("events").display()
    );
    Ok(())
}

/// Parse every row of `path`, or fail listing the rows that cannot be read.
pub fn read(path: &Path, columns: &Columns) -> anyhow::Result<Vec<Event>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot open {}", path.display()))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        anyhow::bail!(
            "{} is empty: expected a header row naming the columns, then one row per event",
            path.display()
        );
    }
    let mut reader = ::csv::ReaderBuilder::new()
        .trim(::csv::Trim::All)
        .from_reader(bytes.as_slice());
    // Line numbers from byte offsets: the csv crate's own count is one short in CRLF files.
    let mut lines = LineCounter::default();
    let headers = reader
        .headers()
        .with_context(|| format!("cannot read the header row of {}", path.display()))?
        .clone();
    let find = |flag: &str, name: &str| {
        headers.iter().position(|h| h == name).with_context(|| {
            format!(
                "{}: no column named {name:?} (given by {flag}); the header has: {}",
                path.display(),
                headers.iter().collect::<Vec<_>>().join(", ")
            )
        })
    };
    let contact_col = find("--contact", &columns.contact)?;
    let time_col = find("--time", &columns.time)?;
    let kind_col = columns
        .kind
        .as_deref()
        .map(|k| find("--kind", k))
        .transpose()?;
    let source = format!(
        "csv:{}",
        path.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    );

    let mut events = Vec::new();
    let mut bad = Vec::new();
    let mut bad_count = 0usize;
    for (i, record) in reader.records().enumerate() {
        // Line numbers count the header as line 1.
        let offset = match &record {
            Ok(r) => r.position(),
            Err(e) => e.position(),
        };
        let line = offset.map_or(i as u64 + 2, |p| lines.at(&bytes, p.byte() as usize));
        let parsed = record
            .map_err(|e| match e.kind() {
                ::csv::ErrorKind::UnequalLengths {
                    expected_len, len, ..
                } => format!(
                    "{len} field{} where the header has {expected_len}",
                    if *len == 1 { "" } else { "s" }
                ),
                _ => e.to_string(),
            })
            .and_then(|r| parse_row(&r, contact_col, time_col, kind_col, columns, &source));
        match parsed {
            Ok(e) => events.push(e),
            Err(why) => {
                bad_count += 1;
                if bad.len() < MAX_LISTED {
                    bad.push(format!("{}:{line}: {why}", path.display()));
                }
            }
        }
    }
    if bad_count > 0 {
        let more = bad_count.saturating_sub(bad.len());
        anyhow::bail!(
            "{bad_count} row{} of {} cannot be read; nothing was imported:\n{}{}",
            if bad_count == 1 { "" } else { "s" },
            path.display(),
            bad.join("\n"),
            if more > 0 {
                format!("\n... and {more} more")
            } else {
                String::new()
            }
        );
    }
    Ok(events)
}

/// Line numbers (from 1) of byte offsets visited in increasing order.
#[derive(Default)]
struct LineCounter {
    offset: usize,
    newlines: u64,
}

impl LineCounter {
    fn at(&mut self, bytes: &[u8], mut offset: usize) -> u64 {
        // After a CRLF the reported start is the LF: step to the record's first byte.
        while matches!(bytes.get(offset), Some(b'\r' | b'\n')) {
            offset += 1;
        }
        let offset = offset.min(bytes.len());
        if offset >= self.offset {
            self.newlines += bytes[self.offset..offset]
                .iter()
                .filter(|b| **b == b'\n')
                .count() as u64;
            self.offset = offset;
        }
        self.newlines + 1
    }
}

fn parse_row(
    r: &::csv::StringRecord,
    contact_col: usize,
    time_col: usize,
    kind_col: Option<usize>,
    columns: &Columns,
    source: &str,
) -> Result<Event, String> {
    let contact = r.get(contact_col).unwrap_or("");
    let (contact_id, email) = if is_email_address(contact) {
        (None, Some(contact.to_string()))
    } else if contact.contains('@') {
        return Err(format!(
            "contact {contact:?} in column {:?} is not an email address",
            columns.contact
        ));
    } else if let Ok(id) = contact.parse::<i64>() {
        (Some(id), None)
    } else if contact.is_empty() {
        return Err(format!("empty contact in column {:?}", columns.contact));
    } else {
        return Err(format!(
            "contact {contact:?} in column {:?} is neither an email nor a numeric contact id",
            columns.contact
        ));
    };
    let raw_time = r.get(time_col).unwrap_or("");
    let at_ms = parse_instant(raw_time).ok_or_else(|| {
        format!(
            "cannot parse time {raw_time:?} in column {:?} (expected e.g. 2022-03-18 15:28:01 UTC, RFC 3339, or epoch seconds or milliseconds)",
            columns.time
        )
    })?;
    if at_ms < EARLIEST_MS {
        return Err(format!(
            "time {raw_time:?} in column {:?} is {}, before 2000: is that the time column?",
            columns.time,
            format_minute(at_ms)
        ));
    }
    let kind = match kind_col {
        None => columns.kind_default,
        Some(c) => {
            let raw = r.get(c).unwrap_or("");
            Kind::parse(raw).ok_or_else(|| {
                format!(
                    "unknown event kind {raw:?}; expected one of: {}",
                    kind_names()
                )
            })?
        }
    };
    Ok(Event {
        event_id: None,
        contact_id,
        email,
        kind,
        at_ms,
        filtered: false,
        source: source.to_string(),
    })
}

fn kind_names() -> String {
    Kind::ALL.map(Kind::as_str).join(", ")
}

/// Counts shown after an import or a dry run.
struct Summary {
    events: usize,
    contacts: usize,
    first: Option<i64>,
    last: Option<i64>,
}

impl Summary {
    fn of(events: &[Event]) -> Self {
        let contacts: std::collections::HashSet<_> =
            events.iter().filter_map(Event::contact_key).collect();
        Self {
            events: events.len(),
            contacts: contacts.len(),
            first: events.iter().map(|e| e.at_ms).min(),
            last: events.iter().map(|e| e.at_ms).max(),
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
