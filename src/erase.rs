//! `sendtime erase`: delete what the data folder holds about a person, for an erasure
//! request: its receipts (inbox, plan and outcome rows, live and archived), its email events,
//! its entry in the contact dictionary (left as a blank: events index contacts by position)
//! and its stored profile (rebuilt without it). Runs with `serve` and `tick` stopped, whose
//! memory holds the same. Boundary: the data folder; logs, backups and `quarantine/` are the
//! operator's to clear.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use anyhow::Context;
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::cut_short;
use crate::datasets::contacts::{self, Contacts, is_email_address};
use crate::datasets::{KEPT_APART, events, inbox, outcomes, plan};
use crate::model::ModelConfig;
use crate::store::{self, Dataset, read_columns_or_null};

/// What an erase that failed once it began removing rows tells the operator.
const CUT_SHORT: &str =
    "the erase was cut short: fix the cause and run `sendtime erase` (no contact) to finish it";

/// What an erase cut short left to do.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Intent {
    person: Person,
    /// Their receipts: outcome rows name no contact, and a receipt's inbox and plan rows may
    /// be gone already.
    receipts: BTreeSet<String>,
}

/// Whom an erase is for: emails (lower-cased) and HubSpot ids.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Person {
    emails: BTreeSet<String>,
    ids: BTreeSet<i64>,
}

impl Person {
    /// From what a person typed: email addresses and HubSpot contact ids.
    pub fn parse(queries: &[String]) -> anyhow::Result<Person> {
        let mut person = Person::default();
        for q in queries {
            let q = q.trim();
            // `#1001` as the store's keys (and earlier versions' messages) name an id.
            match q.strip_prefix('#').unwrap_or(q).parse::<i64>() {
                Ok(id) if id > 0 => {
                    person.ids.insert(id);
                }
                _ if is_email_address(q) => {
                    person.emails.insert(q.to_ascii_lowercase());
                }
                _ => anyhow::bail!(crate::datasets::contacts::not_a_contact(q)),
            }
        }
        Ok(person)
    }

    fn is_empty(&self) -> bool {
        self.emails.is_empty() && self.ids.is_empty()
    }

    fn matches(&self, email: Option<&str>, id: Option<i64>) -> bool {
        id.is_some_and(|id| self.ids.contains(&id))
            || email.is_some_and(|e| self.emails.contains(&e.trim().to_ascii_lowercase()))
    }

    /// A dictionary key (a lower-cased email, or `#` and the id) is this person's.
    fn has_key(&self, key: &str) -> bool {
        match key.strip_prefix('#') {
            Some(id) => id.parse().is_ok_and(|id| self.ids.contains(&id)),
            None => self.emails.contains(key),
        }
    }

    /// Their dictionary keys: each email, and `#` and each id.
    fn keys(&self) -> Vec<String> {
        let ids = self.ids.iter().map(|id| format!("#{id}"));
        self.emails.iter().cloned().chain(ids).collect()
    }

    /// Add what a row of this person's names beside what matched.
    fn widen(&mut self, email: Option<&str>, id: Option<i64>) {
        if let Some(e) = email.map(str::trim).filter(|e| !e.is_empty()) {
            self.emails.insert(e.to_ascii_lowercase());
        }
        self.ids.extend(id);
    }

    /// How the output names them.
    fn names(&self) -> String {
        self.emails
            .iter()
            .cloned()
            // As `erase` takes them, to be given back as they are (`#1001` was refused; an
            // audit).
            .chain(self.ids.iter().map(|id| id.to_string()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What an erase found (and, unless a dry run, deleted).
#[derive(Debug, Default)]
pub struct Erased {
    /// Who.
    pub person: Person,
    /// Emails and ids their rows name beside those given, not erased.
    pub linked: Person,
    /// Receipts of a given id in other accounts ([`Found::elsewhere`]): (id, portal).
    pub elsewhere: BTreeSet<(i64, i64)>,
    /// `--only`: the links are left by choice.
    pub only: bool,
    /// Rows per dataset (its folder under the data folder), those with any.
    pub rows: Vec<(String, usize)>,
    /// Entries of the contact dictionary blanked.
    pub contacts: usize,
    /// Other emails' dictionary entries that carried one of the ids given (`--only`), which
    /// lose it.
    pub unlinked: usize,
    /// What became of the stored profiles, when there were any.
    pub profiles: Option<ProfilesErased>,
    /// Files in the quarantine folders (the live datasets', the archive's, what `discard` set
    /// aside), which may hold more and are not read: an earlier version counted the first
    /// alone, before its own rewrites could set a part aside.
    pub quarantined: usize,
    /// A dry run beside a running dispatcher.
    pub beside: bool,
}

impl std::fmt::Display for Erased {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.beside {
            writeln!(f, "{}", crate::dispatch::locks::COUNTED_BESIDE)?;
        }
        writeln!(f, "contact: {}", self.person.names())?;
        if self.rows.is_empty() && self.contacts == 0 {
            writeln!(f, "nothing held about them")?;
        }
        for (dataset, rows) in &self.rows {
            writeln!(f, "{dataset}: {rows} rows")?;
        }
        if !self.elsewhere.is_empty() {
            let how = match self.only {
                true => "erased: --only",
                false => "a real run refuses until --only is given",
            };
            writeln!(f, "{} ({how})", elsewhere_text(&self.elsewhere))?;
        }
        if !self.linked.is_empty() {
            let why = match self.only {
                true => "not erased: --only",
                false => "not erased; a real run refuses until they are given too, or --only",
            };
            writeln!(f, "their rows also name ({why}): {}", self.linked.names())?;
        }
        if self.contacts > 0 {
            writeln!(
                f,
                "contacts: {} dictionary entries (left blank: events index contacts by position)",
                self.contacts
            )?;
        }
        if self.unlinked > 0 {
            writeln!(
                f,
                "contacts: {} entries of other emails carry an id given (--only takes it off them)",
                self.unlinked
            )?;
        }
        match self.profiles {
            Some(ProfilesErased::Rebuilt) => writeln!(f, "profiles: rebuilt without them")?,
            Some(ProfilesErased::Deleted) => writeln!(
                f,
                "profiles: deleted (the config does not validate, so they were not rebuilt: `serve`, `tick` and `sendtime profiles` rebuild them)"
            )?,
            None => {}
        }
        if self.quarantined > 0 {
            writeln!(
                f,
                "warning: the quarantine folders (quarantine/, archive/quarantine/, discarded/quarantine/) hold {} files set aside as unreadable (a part and its checksum counted once), not searched: they may hold rows of this contact",
                self.quarantined
            )?;
        }
        Ok(())
    }
}

/// How the stored profiles lose the person's weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ProfilesErased {
    /// Rebuilt with the config's `[model]` settings.
    Rebuilt,
    /// Deleted, for the next start to rebuild: the config does not validate, and an erasure
    /// request should not wait for a webhook's fix.
    Deleted,
}

/// Erase `queries` (emails, HubSpot ids) from `data_dir`, or with `dry_run` only count what
/// would go. Without queries, finish an erase that was cut short. Refused when their rows name
/// other emails or ids (a HubSpot id is one account's, and an address may have passed between
/// people: whose they are is the operator's call), unless `only`. The stored profiles are
/// rebuilt with `model`, or deleted without it (a config that does not validate).
pub fn run(
    data_dir: &Path,
    model: Option<ModelConfig>,
    queries: &[String],
    only: bool,
    dry_run: bool,
) -> anyhow::Result<Erased> {
    // Imports take turns with this on the events lock; taken first: a file import holds it for
    // as long as it reads its file, and waiting for it with the dispatch lock held kept
    // `serve` and `tick` from starting all that while (an audit). The locks below are only
    // tried, never waited for.
    // The contacts are read first: one mistyped waited for an import to end, or asked for
    // `serve` to be stopped, before it was refused (an audit).
    let given = Person::parse(queries)?;
    let _importing = events::lock(data_dir)?;
    let rewriting = crate::dispatch::locks::lock_rewriting(
        data_dir,
        dry_run,
        "its memory holds the contact's receipts and profile, which it would write back",
    )?;
    let beside = rewriting.beside;
    let intent = cut_short::Intent::of(data_dir, cut_short::Command::Erase);
    let mut person = given.clone();
    let unfinished: Intent = intent
        .read("delete it, then erase the person again by every email and id they are known by")?
        .unwrap_or_default();
    // What an erase cut short was cleared for is finished as it was (contacts given beside
    // it are checked for links as any).
    let finishing = !unfinished.person.is_empty();
    anyhow::ensure!(
        !dry_run || !finishing,
        "an erase was cut short: run `sendtime erase` without --dry-run to finish it"
    );
    person.emails.extend(unfinished.person.emails);
    person.ids.extend(unfinished.person.ids);
    anyhow::ensure!(
        !person.is_empty(),
        "name the contact to erase: an email address or a HubSpot contact id"
    );
    // Receipts still in the write-ahead log become rows first, so they are found, and what
    // a crashed writer left (temporary files, compactions) is cleared, as a start would; a
    // running dispatcher does that for itself.
    if !beside {
        let live_inbox = inbox::dataset(data_dir)?.dir;
        inbox::recover(data_dir)?;
        for (dataset, _) in receipt_datasets(data_dir)? {
            // (The live inbox was just recovered with its log.)
            if dataset.dir != live_inbox {
                dataset.recover()?;
            }
        }
    }
    // An import that crashed is finished first, so its hidden parts cannot bring events back.
    if !dry_run && let Some(lock) = crate::import::hubspot::running(data_dir)? {
        anyhow::bail!(
            "an import from HubSpot is running ({} is locked): its next pages could bring the \
             person's events back; let it finish (or stop it), then erase",
            lock.display()
        );
    }
    events::recover_locked(data_dir)?;
    let dictionary = match dry_run {
        true => Contacts::load_from(&crate::datasets::contacts::dataset(data_dir)?.for_dry_run()),
        false => Contacts::load(data_dir),
    }?;
    let Found {
        mut receipts,
        linked,
        elsewhere,
    } = find(data_dir, &dictionary, &person, dry_run)?;
    // One refusal for both, so that --only is not given for one unseen.
    let named: Vec<String> = [
        (!linked.is_empty()).then(|| format!("their rows also name {}", linked.names())),
        (!elsewhere.is_empty()).then(|| elsewhere_text(&elsewhere)),
    ]
    .into_iter()
    .flatten()
    .collect();
    anyhow::ensure!(
        named.is_empty() || only || dry_run || (finishing && given.is_empty()),
        "{}: give those emails and ids too to erase everything held about this person, or add \
         --only to erase just the rows naming what was given, those receipts by id included \
         (check first that they are the same person: a HubSpot id belongs to one account, and \
         an address can pass between people)",
        named.join("; ")
    );
    receipts.extend(unfinished.receipts);

    let mut erased = Erased {
        linked,
        elsewhere,
        only,
        beside,
        ..Erased::default()
    };
    if !dry_run {
        // The intent first, which keeps `serve` from starting and has the next run finish
        // (recorded first, a crash between the two left the person's events kept out of
        // imports and their rows in place, with nothing to finish; an audit); then the record,
        // before their rows go: imports would bring them back (the HubSpot import reads the
        // hours before its last run again; a file may still hold them). A record that fails
        // leaves the intent, for `sendtime erase` to finish once the disk takes it.
        let writing = Intent {
            person: person.clone(),
            receipts: receipts.clone(),
        };
        intent.write(&writing)?;
        let keys = person.keys();
        crate::datasets::erased::Erased::record(data_dir, keys.iter().map(String::as_str))?;
    }
    for (dataset, columns) in receipt_datasets(data_dir)? {
        let pick = |df: &DataFrame| pick_receipt_rows(df, &person, &receipts);
        let rows = match dry_run {
            true => dataset.count_rows(&columns, pick)?,
            false => dataset.remove_rows(&columns, pick).context(CUT_SHORT)?,
        };
        erased.record(data_dir, &dataset, rows);
    }
    let indices: HashSet<u32> = (0..dictionary.len())
        .filter(|&i| is_theirs(&person, &dictionary, i))
        .map(|i| i as u32)
        .collect();
    let events_ds = events::dataset(data_dir)?;
    let columns = [
        events::col::CONTACT,
        events::col::EMAIL,
        events::col::CONTACT_ID,
    ];
    let pick = |df: &DataFrame| pick_events(df, &person, &indices);
    let rows = match dry_run {
        true => events_ds.count_rows(&columns, pick)?,
        false => events_ds.remove_rows(&columns, pick).context(CUT_SHORT)?,
    };
    erased.record(data_dir, &events_ds, rows);
    erased.contacts = indices.len();
    erased.unlinked = (0..dictionary.len())
        .filter(|&i| !is_theirs(&person, &dictionary, i))
        .filter(|&i| dictionary.contact_ids[i].is_some_and(|id| person.ids.contains(&id)))
        .count();
    if !dry_run {
        blank(data_dir, &person, &indices).context(CUT_SHORT)?;
        unlink(data_dir, &person).context(CUT_SHORT)?;
        // Any file there: a first build killed before it named its files in `state.json`
        // left their weights (an audit).
        let stored = std::fs::read_dir(data_dir.join(crate::model::stored::NAME))
            .is_ok_and(|mut files| files.next().is_some());
        // Finishing, the rows may have gone in the run cut short, before the rebuild.
        if stored && (finishing || rows > 0 || !indices.is_empty()) {
            const UNFINISHED: &str = "the contact's rows are erased, but their stored profile could not be: fix the cause and run `sendtime erase` (no contact) to finish";
            erased.profiles = Some(match model {
                Some(model) => {
                    crate::model::stored::update(data_dir, model, crate::time::now_ms(), true)
                        .context(UNFINISHED)?;
                    ProfilesErased::Rebuilt
                }
                None => {
                    crate::model::stored::delete(data_dir).context(UNFINISHED)?;
                    ProfilesErased::Deleted
                }
            });
        }
        intent.remove()?;
    }
    erased.person = person;
    // Counted last: the rewrites above may have set a damaged part aside.
    erased.quarantined = receipt_roots(data_dir)
        .map(|dir| count_files(&dir.join("quarantine")))
        .sum();
    Ok(erased)
}

impl Erased {
    fn record(&mut self, data_dir: &Path, dataset: &Dataset, rows: usize) {
        if rows > 0 {
            let name = dataset.dir.strip_prefix(data_dir).unwrap_or(&dataset.dir);
            self.rows.push((name.display().to_string(), rows));
        }
    }
}

/// How the output names receipts of a given id in other accounts.
fn elsewhere_text(elsewhere: &BTreeSet<(i64, i64)>) -> String {
    let each: Vec<String> = (elsewhere.iter())
        .map(|(id, portal)| format!("{id} in portal {portal}"))
        .collect();
    format!(
        "receipts by id alone in an account where that id is not known to be theirs: {}",
        each.join(", ")
    )
}

/// The datasets holding receipts, live, archived and discarded, each's inbox and plan rows
/// before its outcomes; the columns the erase reads.
fn receipt_datasets(data_dir: &Path) -> anyhow::Result<Vec<(Dataset, Vec<&'static str>)>> {
    let mut out = Vec::new();
    for dir in receipt_roots(data_dir) {
        for (name, columns) in [
            (inbox::NAME, RECEIPT_COLUMNS.to_vec()),
            (plan::NAME, RECEIPT_COLUMNS.to_vec()),
            (outcomes::NAME, vec![outcomes::col::RECEIPT_ID]),
        ] {
            if store::is_dir(&dir.join(name))? {
                out.push((Dataset::open(&dir, name)?, columns));
            }
        }
    }
    Ok(out)
}

/// The folders holding receipts' datasets: the data folder and those kept apart from it.
fn receipt_roots(data_dir: &Path) -> impl Iterator<Item = PathBuf> {
    let apart = KEPT_APART.map(|d| data_dir.join(d));
    std::iter::once(data_dir.to_path_buf()).chain(apart)
}

/// The columns of inbox and plan rows that say whose receipt it is (the same in both).
const RECEIPT_COLUMNS: [&str; 3] = [
    inbox::col::RECEIPT_ID,
    inbox::col::EMAIL,
    inbox::col::CONTACT_ID,
];

/// A receipt row's receipt id, email and contact id.
type ReceiptRow<'a> = (Option<&'a str>, Option<&'a str>, Option<i64>);

fn receipt_rows(df: &DataFrame) -> anyhow::Result<Vec<ReceiptRow<'_>>> {
    let ids = df.column(inbox::col::RECEIPT_ID)?.str()?;
    let emails = df.column(inbox::col::EMAIL)?.str()?;
    let contact_ids = df.column(inbox::col::CONTACT_ID)?.i64()?;
    Ok(ids
        .iter()
        .zip(emails.iter())
        .zip(contact_ids.iter())
        .map(|((r, e), c)| (r, e, c))
        .collect())
}

/// Read `columns` of every inbox and plan part (live and archived) through `visit`.
fn each_receipt_part(
    data_dir: &Path,
    dry_run: bool,
    mut visit: impl FnMut(&DataFrame) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    for (dataset, columns) in receipt_datasets(data_dir)? {
        if columns != RECEIPT_COLUMNS {
            continue;
        }
        for part in dataset.parts()? {
            let columns = [
                (inbox::col::RECEIPT_ID, DataType::String),
                (inbox::col::EMAIL, DataType::String),
                (inbox::col::CONTACT_ID, DataType::Int64),
                (inbox::col::PORTAL_ID, DataType::Int64),
            ];
            if let Some(df) = read_found(&part, &columns, dry_run)? {
                visit(&df)?;
            }
        }
    }
    Ok(())
}

/// `columns` of `part`, or none for a part gone since listed or damaged: the erase's rewrite
/// of the dataset sets a damaged part aside into quarantine (an audit found every erase
/// stopped at one here instead); a dry run names it, with what to do.
fn read_found(
    part: &Path,
    columns: &[(&str, DataType)],
    dry_run: bool,
) -> anyhow::Result<Option<DataFrame>> {
    match read_columns_or_null(part, columns) {
        Ok(df) => Ok(Some(df)),
        Err(e) if store::is_not_found(&e) => Ok(None),
        Err(e) if dry_run => Err(store::named_for_dry_run(part, e)),
        Err(e) if store::cannot_open(&e) => {
            Err(e.context(format!("cannot read {}", part.display())))
        }
        Err(_) => Ok(None),
    }
}

/// What the data folder holds of `person`, found in one read of each dataset: the ids of
/// their receipts (outcome rows name no contact), and the emails and ids their receipts,
/// dictionary entries and events name beside theirs. An entry of another key that carries
/// one of their ids is another's: named.
struct Found {
    receipts: BTreeSet<String>,
    linked: Person,
    /// (id, portal) of receipts matched by a given id alone (no email) in an account where
    /// that id is not known to be theirs (see [`find`]): a HubSpot id is one account's, so
    /// these may be another account's contact.
    elsewhere: BTreeSet<(i64, i64)>,
}

fn find(
    data_dir: &Path,
    dictionary: &Contacts,
    person: &Person,
    dry_run: bool,
) -> anyhow::Result<Found> {
    let mut wider = person.clone();
    let mut receipts = BTreeSet::new();
    // The accounts of their receipts by email, the (id, account) pairs those carry, and those
    // of receipts by a given id alone.
    let (mut by_email, mut paired, mut by_id) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    // Every account receipts come from (a handful).
    let mut accounts = BTreeSet::new();
    each_receipt_part(data_dir, dry_run, |df| {
        let portals = df.column(inbox::col::PORTAL_ID)?.i64()?;
        accounts.extend(portals.iter().flatten());
        for ((receipt, email, id), portal) in receipt_rows(df)?.into_iter().zip(portals.iter()) {
            if person.matches(email, id) {
                wider.widen(email, id);
                receipts.extend(receipt.map(str::to_string));
                if let Some(p) = portal {
                    match (person.matches(email, None), id) {
                        (true, id) => {
                            by_email.insert(p);
                            paired.extend(id.map(|id| (id, p)));
                        }
                        (false, Some(id)) if email.is_none() => {
                            by_id.insert((id, p));
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    })?;
    // An id is theirs in an account where a receipt of theirs carries it beside their email;
    // not where theirs carry another id; elsewhere, by the accounts alone: given with an email
    // no receipt carries, in no account when there are several (the id's one account was
    // taken for theirs, and another account's contact erased; an audit).
    let unsure = !person.emails.is_empty() && accounts.len() > 1;
    let accounts_of = |id: i64| by_id.iter().filter(move |(i, _)| *i == id).count();
    let carries_ids = |p: i64| paired.iter().any(|(_, q)| *q == p);
    let elsewhere = (by_id.iter())
        .filter(|&&(id, p)| {
            !paired.contains(&(id, p))
                && (carries_ids(p)
                    || match by_email.is_empty() {
                        false => !by_email.contains(&p),
                        true => unsure || accounts_of(id) > 1,
                    })
        })
        .copied()
        .collect();
    let mut widen = |email: Option<&str>, id: Option<i64>| {
        if person.matches(email, id) {
            wider.widen(email, id);
        }
    };
    for (key, id) in dictionary.keys.iter().zip(&dictionary.contact_ids) {
        let email = (!key.starts_with('#')).then_some(key.as_str());
        widen(email, *id);
    }
    for part in events::dataset(data_dir)?.parts()? {
        let columns = [
            (events::col::EMAIL, DataType::String),
            (events::col::CONTACT_ID, DataType::Int64),
        ];
        let Some(df) = read_found(&part, &columns, dry_run)? else {
            continue;
        };
        let emails = df.column(events::col::EMAIL)?.str()?;
        let ids = df.column(events::col::CONTACT_ID)?.i64()?;
        for (email, id) in emails.iter().zip(ids.iter()) {
            widen(email, id);
        }
    }
    let linked = Person {
        emails: &wider.emails - &person.emails,
        ids: &wider.ids - &person.ids,
    };
    Ok(Found {
        receipts,
        linked,
        elsewhere,
    })
}

/// Whether the dictionary entry `i` is `person`'s: by its key alone (an entry of another
/// email that carries one of their ids is another's, and is named by [`find`]).
fn is_theirs(person: &Person, dictionary: &Contacts, i: usize) -> bool {
    person.has_key(&dictionary.keys[i])
}

/// Rows of `person`'s receipts: by id (outcome rows name no contact), or by whom they name.
fn pick_receipt_rows(
    df: &DataFrame,
    person: &Person,
    receipts: &BTreeSet<String>,
) -> anyhow::Result<BooleanChunked> {
    let ids = df.column(inbox::col::RECEIPT_ID)?.str()?;
    if df.column(inbox::col::EMAIL).is_err() {
        return Ok(ids
            .iter()
            .map(|r| r.is_some_and(|r| receipts.contains(r)))
            .collect());
    }
    Ok(receipt_rows(df)?
        .into_iter()
        .map(|(r, email, id)| r.is_some_and(|r| receipts.contains(r)) || person.matches(email, id))
        .collect())
}

/// Events of `person`: by the dictionary's index, or by the email or id they carry.
fn pick_events(
    df: &DataFrame,
    person: &Person,
    indices: &HashSet<u32>,
) -> anyhow::Result<BooleanChunked> {
    let contact = df.column(events::col::CONTACT)?.u32()?;
    let email = df
        .column(events::col::EMAIL)
        .ok()
        .map(|c| c.str())
        .transpose()?;
    let id = df
        .column(events::col::CONTACT_ID)
        .ok()
        .map(|c| c.i64())
        .transpose()?;
    Ok((0..df.height())
        .map(|i| {
            contact.get(i).is_some_and(|c| indices.contains(&c))
                || person.matches(email.and_then(|e| e.get(i)), id.and_then(|id| id.get(i)))
        })
        .collect())
}

/// Blank the dictionary entries `indices`: each index keeps a row (events index contacts by
/// position, and a gap stops every reader), under a key no query matches and without an id.
/// The blanks are written before the entries go, so a crash leaves both, never a gap; the
/// next erase removes the entries left, and writes no second blank where one is.
fn blank(data_dir: &Path, person: &Person, indices: &HashSet<u32>) -> anyhow::Result<()> {
    let dataset = contacts::dataset(data_dir)?;
    let mut sorted: Vec<u32> = indices.iter().copied().collect();
    if !sorted.is_empty() {
        let mut blanked = HashSet::new();
        for part in dataset.parts()? {
            let df = crate::store::read_present_columns(
                &part,
                &[contacts::col::CONTACT, contacts::col::KEY],
            )?;
            let keys = df.column(contacts::col::KEY)?.str()?;
            let index = df.column(contacts::col::CONTACT)?.u32()?;
            for (i, k) in index.iter().zip(keys.iter()) {
                if let (Some(i), true) = (i, k.is_some_and(contacts::is_erased)) {
                    blanked.insert(i);
                }
            }
        }
        sorted.retain(|i| !blanked.contains(i));
        sorted.sort_unstable();
    }
    if !sorted.is_empty() {
        let keys: Vec<String> = sorted
            .iter()
            .map(|i| format!("{}{i}", contacts::ERASED))
            .collect();
        let ids = vec![None::<i64>; sorted.len()];
        contacts::write_entries(&dataset, sorted, keys, ids)?;
    }
    dataset.remove_rows(&[contacts::col::KEY], |df| {
        let keys = df.column(contacts::col::KEY)?.str()?;
        Ok(keys
            .iter()
            .map(|k| k.is_some_and(|k| person.has_key(k)))
            .collect())
    })?;
    Ok(())
}

/// Take `person`'s ids off the entries of other emails that carry them (`--only` left those
/// emails): a file import of such an email writes its entry's id into each event. Each entry
/// is written again without the id before the one with it goes, so a crash leaves the entry
/// (twice: the next erase finishes it), never a gap.
fn unlink(data_dir: &Path, person: &Person) -> anyhow::Result<()> {
    if person.ids.is_empty() {
        return Ok(());
    }
    let dataset = contacts::dataset(data_dir)?;
    let columns = [contacts::col::KEY, contacts::col::CONTACT_ID];
    let carries = |df: &DataFrame| -> anyhow::Result<BooleanChunked> {
        let keys = df.column(contacts::col::KEY)?.str()?;
        let ids = df.column(contacts::col::CONTACT_ID)?.i64()?;
        Ok((keys.iter().zip(ids.iter()))
            .map(|(k, id)| {
                id.is_some_and(|id| person.ids.contains(&id))
                    && k.is_some_and(|k| !person.has_key(k))
            })
            .collect())
    };
    let (mut index, mut keys) = (Vec::<u32>::new(), Vec::<String>::new());
    for part in dataset.parts()? {
        let mut df = crate::store::read_present_columns(
            &part,
            &[
                contacts::col::CONTACT,
                contacts::col::KEY,
                contacts::col::CONTACT_ID,
            ],
        )?;
        df = df.filter(&carries(&df)?)?;
        index.extend(
            df.column(contacts::col::CONTACT)?
                .u32()?
                .into_no_null_iter(),
        );
        keys.extend((df.column(contacts::col::KEY)?.str()?.iter().flatten()).map(String::from));
    }
    if index.is_empty() {
        return Ok(());
    }
    let ids = vec![None::<i64>; index.len()];
    contacts::write_entries(&dataset, index, keys, ids)?;
    dataset.remove_rows(&columns, carries)?;
    Ok(())
}

fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    let mut folders: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_none_or(|e| e != store::checksum::EXT) {
                // A part's checksum went with it: one file set aside, not two.
                n += 1;
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasets::events::{Event, Kind, append};
    use crate::datasets::plan::PlanRow;
    use ulid::Ulid;

    fn event(email: &str, id: Option<i64>) -> Event {
        Event {
            event_id: None,
            contact_id: id,
            email: Some(email.into()),
            kind: Kind::Open,
            at_ms: 1_700_000_000_000,
            filtered: false,
            source: "t".into(),
        }
    }

    /// A kept-apart folder that cannot be looked at fails the erase (taken for none, its
    /// receipts' rows were kept while the erase said it was done: an audit). `archive` a
    /// file makes the look fail, as a permission or I/O error would.
    #[test]
    fn an_archive_that_cannot_be_looked_at_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(receipt_datasets(dir.path()).unwrap().len(), 0);
        std::fs::write(dir.path().join(crate::datasets::ARCHIVE), "not a folder").unwrap();
        let Err(e) = receipt_datasets(dir.path()) else {
            panic!("an error, not no archive");
        };
        assert!(format!("{e:#}").contains("cannot look at"), "{e:#}");
    }

    /// Another email's dictionary entry carrying one of the ids given is another person's
    /// (two accounts' contact 7701): named as a link, not taken; an id beside an email in
    /// an event row is named too.
    #[test]
    fn links_are_named_and_entries_taken_by_key_alone() {
        let dir = tempfile::tempdir().unwrap();
        append(
            dir.path(),
            &[
                event("ann@example.com", None),
                event("carl@example.com", Some(7701)),
                event("dora@example.com", Some(9999)),
            ],
        )
        .unwrap();
        let dictionary = Contacts::load(dir.path()).unwrap();
        let ann = Person::parse(&["ann@example.com".into(), "7701".into()]).unwrap();
        let links = find(dir.path(), &dictionary, &ann, false).unwrap().linked;
        assert_eq!(links.names(), "carl@example.com");
        let taken: Vec<&str> = (0..dictionary.len())
            .filter(|&i| is_theirs(&ann, &dictionary, i))
            .map(|i| dictionary.keys[i].as_str())
            .collect();
        assert_eq!(taken, ["ann@example.com"]);
        let dora = Person::parse(&["dora@example.com".into()]).unwrap();
        let links = find(dir.path(), &dictionary, &dora, false).unwrap().linked;
        assert_eq!(links.names(), "9999");
        // Given back as named, or as the store's keys write it.
        for given in ["9999", "#9999"] {
            let both = Person::parse(&["dora@example.com".into(), given.into()]).unwrap();
            assert!(both.ids.contains(&9999), "{given}");
        }
    }

    /// A given id's receipts by id alone in an account none of the person's receipts by
    /// email is from are named (two accounts can each have a contact 7701), as are those of
    /// an id found in several accounts when no email is known; the same account's are theirs.
    #[test]
    fn receipts_of_a_given_id_in_another_account_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let row = |id: &str, email: Option<&str>, contact: i64, portal: i64| PlanRow {
            receipt_id: id.into(),
            webhook_id: "w".into(),
            webhook_type: crate::config::WebhookType::UpdateOnly,
            contact_id: Some(contact),
            email: email.map(str::to_string),
            received_at_ms: 0,
            due_at_ms: 0,
            slot: None,
            reason: String::new(),
            planned_at_ms: 0,
            callback_id: None,
            holdout: false,
            time_zone: None,
            hold_ends_ms: None,
            portal_id: Some(portal),
            holdout_share: None,
        };
        let rows = [
            row("r1", Some("ann@example.com"), 7701, 111),
            row("r2", None, 7701, 111),
            row("r3", None, 7701, 222),
            row("r4", None, 8801, 111),
        ];
        plan::dataset(dir.path())
            .unwrap()
            .write_part(Ulid::generate(), &mut plan::frame(&rows).unwrap())
            .unwrap();
        let dictionary = Contacts::load(dir.path()).unwrap();
        let found = |q: &[&str]| {
            let person = Person::parse(&q.iter().map(|q| q.to_string()).collect::<Vec<_>>());
            find(dir.path(), &dictionary, &person.unwrap(), false).unwrap()
        };
        let ann = found(&["ann@example.com", "7701"]);
        assert_eq!(ann.elsewhere, BTreeSet::from([(7701, 222)]));
        assert_eq!(ann.receipts.len(), 3);
        // Known by the id alone: it is in two accounts.
        let id = found(&["7701"]);
        assert_eq!(id.elsewhere, BTreeSet::from([(7701, 111), (7701, 222)]));
        assert_eq!(id.linked.names(), "ann@example.com");
        assert!(found(&["8801"]).elsewhere.is_empty());
        // Ann is in account 222 too, as contact 5555: 7701 there is someone else.
        let more = [row("r5", Some("ann@example.com"), 5555, 222)];
        plan::dataset(dir.path())
            .unwrap()
            .write_part(Ulid::generate(), &mut plan::frame(&more).unwrap())
            .unwrap();
        let ann = found(&["ann@example.com", "7701", "5555"]);
        assert_eq!(ann.elsewhere, BTreeSet::from([(7701, 222)]));
        // Given with an email none of the receipts carry, in a folder of two accounts: the
        // id's receipts in its one account may be another contact's (they were erased).
        let dir = tempfile::tempdir().unwrap();
        let rows = [
            row("r6", None, 7701, 222),
            row("r7", Some("zed@example.com"), 9901, 111),
        ];
        plan::dataset(dir.path())
            .unwrap()
            .write_part(Ulid::generate(), &mut plan::frame(&rows).unwrap())
            .unwrap();
        let dictionary = Contacts::load(dir.path()).unwrap();
        let person = Person::parse(&["ann@example.com".into(), "7701".into()]).unwrap();
        let ann = find(dir.path(), &dictionary, &person, false).unwrap();
        assert_eq!(ann.elsewhere, BTreeSet::from([(7701, 222)]));
    }

    #[test]
    fn a_query_is_an_email_or_an_id() {
        let p = Person::parse(&["Ann@Example.com".into(), " 42 ".into()]).unwrap();
        assert!(p.matches(Some("ann@example.COM"), None));
        assert!(p.matches(None, Some(42)));
        assert!(p.has_key("#42") && p.has_key("ann@example.com") && !p.has_key("#4"));
        for bad in ["0", "-3", "ann", "a b@c.d"] {
            assert!(Person::parse(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
