//! `sendtime import hubspot`: HubSpot's email events API into the events dataset.
//!
//! A run covers a fixed time window (`--since` or the end of the last complete run, minus an
//! overlap for events HubSpot records late, up to `--until` or now) and pages through it newest
//! first. Each page's new events are appended durably *before* the cursor that skips them is
//! saved (`{data_dir}/state/hubspot-{connector}.json`), so a run stopped anywhere (kill -9,
//! power loss, a daily limit) resumes at the page it was on. Events are keyed by HubSpot's
//! (`id`, `created`) and checked against what the events dataset already holds ([`Seen`], in
//! bounded memory), so a page fetched twice, or a window imported twice, never doubles an
//! event.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::config::{Config, ConfigHandle, Connector};
use crate::datasets::events::{self, Event, Kind};
use crate::hubspot::policy::{self, Backoff};
use crate::hubspot::wire::{EventsQuery, MAX_EVENTS_PAGE};
use crate::hubspot::{ApiError, Client, EmailEvent, EventsPage, RatePolicy};
use crate::import::seen::{BUDGET_MB, Seen};
use crate::import::stored::MB;
use crate::store;
use crate::time::format_rfc3339;

/// How far back a run re-reads before the previous run's end: HubSpot records some events
/// (opens by clients that were offline, deferred deliveries) after their `created` time.
pub const OVERLAP: Duration = Duration::from_secs(3 * 3600);
const STATE_VERSION: u32 = 1;
/// Empty pages in a row, each saying more follow, past which a run stops: HubSpot sends one
/// now and then, but a chain of new offsets without events would spend the run's share for
/// good (each new, so the repeated-offset check never ends it).
const MAX_EMPTY_PAGES: u32 = 50;
/// Events in a page none of which can be read, from which a run stops before its cursor moves
/// past them: HubSpot's answer has changed shape, and skipping them marked their window
/// imported with nothing stored. Fewer are odd events, skipped.
const UNREADABLE_PAGE: u64 = 10;

/// What the importer remembers between runs, per connector.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct State {
    version: u32,
    /// Every event created before this (epoch ms) has been imported.
    complete_until_ms: Option<i64>,
    /// The run in progress, if the last one did not finish.
    run: Option<Cursor>,
    /// The account the state is of: a connector given another `portal_id` in place starts
    /// afresh (the old account's cursor skipped the new one's history, an audit found).
    /// Absent in states written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    portal_id: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Cursor {
    start_ms: i64,
    end_ms: i64,
    /// HubSpot's offset for the next page; `None` before the first page.
    offset: Option<String>,
    pages: u64,
    stored: u64,
    /// HubSpot's time at the window's first page (its `Date`): the window is complete up to
    /// it when this machine's clock is ahead. Absent in states written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    read_at_ms: Option<i64>,
    /// Where an unfinished first import this window replaced began, before this window: the
    /// history between is unread, so completing this window marks nothing complete (it
    /// marked every event before it imported, and that history was never read: an audit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    history_from_ms: Option<i64>,
}

/// What to import.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The connector; may be left out when the config has one.
    pub connector: Option<String>,
    /// Only events at or after this instant (default: where the last complete run ended).
    pub since_ms: Option<i64>,
    /// Only events up to this instant (default: now).
    pub until_ms: Option<i64>,
    /// Events per API page, at most [`MAX_EVENTS_PAGE`].
    pub page_size: u32,
    /// Memory for the ids of the window's events, in bytes ([`Seen`]).
    pub dedup_budget: usize,
}

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// New events stored.
    pub stored: u64,
    /// Events of the window already stored, and events skipped (kinds other than opens and
    /// clicks, outside it, recipients that are no email address).
    pub already_stored: u64,
    pub skipped: u64,
    /// Every event created before this (epoch ms) is imported; none while the history before
    /// the window is left to read (a `--since` window that replaced an unfinished first import
    /// reported its own end, as if the history were read; an audit).
    pub complete_until_ms: Option<i64>,
    pub pages: u64,
    /// The window this run read (epoch ms): the mark above may lie past it.
    pub window: (i64, i64),
}

/// Run the import for one connector (`sendtime import hubspot`), at the connector's full pace,
/// or at the share planning leaves from the first page on which the data folder's dispatch
/// lock is held (a `serve` sending from it, maybe started after the import): its limiter and
/// this one are apart, and at full pace the two together went past HubSpot's limit, and its
/// sends were held by the 429s.
pub fn run(config: &Config, request: &Request) -> anyhow::Result<Summary> {
    let connector = pick_connector(config, request.connector.as_deref())?;
    let client = Client::for_connector(connector, policy::EVENTS_PAGE_TIMEOUT)?
        .with_share(connector.requests_per_10s);
    let page_size = request.page_size.clamp(1, MAX_EVENTS_PAGE);
    let mut import = Import::new(config, connector, client, page_size, request.dedup_budget)?;
    // The data folder exists by now (made owner-only by the command).
    let (data_dir, paced) = (import.data_dir.clone(), connector.clone());
    let mut shared = false;
    import.before_page = Box::new(move |client: &Client| {
        if !shared && crate::dispatch::locks::dispatching(&data_dir).unwrap_or(false) {
            shared = true;
            eprintln!(
                "the dispatch lock of {} is held (by a `serve` sending from it, most likely): this import paces at {} calls per 10 s from now on, the share of connector {}'s limit that planning leaves",
                data_dir.display(),
                share_of(&paced),
                paced.id,
            );
        }
        // Worked out at each page: HubSpot's answers may have said a lower limit since.
        if shared {
            client.share_at(share_of(&paced));
        }
    });
    let summary = import.run(request.since_ms, request.until_ms)?;
    let complete = match summary.complete_until_ms {
        Some(until) => format!("every event before {} is imported", format_rfc3339(until)),
        None => "the history before it is left to read: the next run without --since reads it"
            .to_string(),
    };
    println!(
        "imported {} new event{} from HubSpot (connector {}) in {} page{}; {} already stored, \
         {} skipped; read {} .. {}, {complete}",
        summary.stored,
        if summary.stored == 1 { "" } else { "s" },
        connector.id,
        summary.pages,
        if summary.pages == 1 { "" } else { "s" },
        summary.already_stored,
        summary.skipped,
        format_rfc3339(summary.window.0),
        format_rfc3339(summary.window.1),
    );
    Ok(summary)
}

/// The import `serve` runs on its schedule: from where the last run ended to now, at most at
/// the share of the connector's limit that planning leaves ([`crate::capacity`]), and on the
/// same limiter as the dispatcher's sends, so that together they stay under HubSpot's limit.
/// `stop` is asked after each page and while waiting on HubSpot: once it says why to stop, the
/// run ends there (its cursor saved, so the next run resumes). `clock` is `serve`'s: the
/// demo's runs faster, as its HubSpot stand-in's does ([`Clock::world_ms`]).
/// `appender` is shared by the imports running at once, so they hold one copy of the contact
/// dictionary. The share is worked out again at each page, from the config in force
/// (`handle`'s) and HubSpot's latest limit: a run may last days.
pub fn run_in_background(
    handle: &ConfigHandle,
    connector: &Connector,
    clock: Clock,
    appender: SharedAppender,
    stop: impl Fn() -> Option<&'static str> + Send + 'static,
) -> anyhow::Result<Summary> {
    let client = Client::for_connector(connector, policy::EVENTS_PAGE_TIMEOUT)?
        .with_share(share_of(connector));
    let config = handle.load_full();
    let mut import = Import::new(&config, connector, client, MAX_EVENTS_PAGE, BUDGET_MB * MB)?;
    let (handle, id) = (handle.clone(), connector.id.clone());
    import.before_page = Box::new(move |client: &Client| {
        if let Some(now) = handle.load().connector(&id) {
            client.share_at(share_of(now));
        }
    });
    import.stop = Box::new(stop);
    import.clock = clock;
    import.appender = appender;
    import.run(None, None)
}

/// Calls per 10 s an import beside the dispatcher takes: what planning leaves of the limit
/// paced under, HubSpot's when its answers said a lower one than `requests_per_10s` (from the
/// key, a run took a larger share of the real limit than planning leaves).
fn share_of(connector: &Connector) -> u32 {
    let limit =
        crate::hubspot::limiter::Limiter::limit_of(&connector.id, connector.requests_per_10s);
    let reserve = u64::from(limit) * (100 - crate::capacity::PLAN_SHARE_PERCENT) / 100;
    (reserve as u32).max(1)
}

fn pick_connector<'c>(config: &'c Config, id: Option<&str>) -> anyhow::Result<&'c Connector> {
    let ids = || {
        config
            .connectors
            .iter()
            .map(|c| c.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match id {
        Some(id) => config.connector(id).with_context(|| {
            format!(
                "no connector {id:?} in {}; it has: {}",
                config.path.display(),
                ids()
            )
        }),
        None => match config.connectors.as_slice() {
            [one] => Ok(one),
            _ => bail!(
                "{} has {} connectors ({}): say which with --connector ID",
                config.path.display(),
                config.connectors.len(),
                ids()
            ),
        },
    }
}

struct Import {
    data_dir: PathBuf,
    connector: Connector,
    source: String,
    client: Client,
    rt: tokio::runtime::Runtime,
    page_size: u32,
    dedup_budget: usize,
    /// Asked after each page and while waiting on HubSpot: why to stop there, if so (the
    /// process is shutting down, the connector was paused).
    stop: Box<dyn Fn() -> Option<&'static str> + Send>,
    /// Called before each page is asked for, with the client that asks.
    before_page: Box<dyn FnMut(&Client) + Send>,
    /// Its [`Clock::world_ms`] ends a window without `--until`.
    clock: Clock,
    appender: SharedAppender,
}

/// An events appender imports running at once share (`serve`'s scheduled imports).
pub type SharedAppender = Arc<Mutex<events::Appender>>;

impl Import {
    fn new(
        config: &Config,
        connector: &Connector,
        client: Client,
        page_size: u32,
        dedup_budget: usize,
    ) -> anyhow::Result<Import> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        Ok(Import {
            data_dir: config.server.data_dir.clone(),
            connector: connector.clone(),
            source: events::hubspot_source(&connector.id),
            client,
            rt,
            page_size,
            dedup_budget,
            stop: Box::new(|| None),
            before_page: Box::new(|_| {}),
            clock: Clock::System,
            appender: Arc::new(Mutex::new(events::Appender::new(&config.server.data_dir))),
        })
    }

    fn state_path(&self) -> PathBuf {
        state_path(&self.data_dir, &self.connector.id)
    }

    fn load_state(&self) -> anyhow::Result<State> {
        let path = self.state_path();
        match std::fs::read(&path) {
            Ok(bytes) => {
                let state: State = serde_json::from_slice(&bytes).with_context(|| {
                    format!(
                        "import state {} is unreadable; delete it to import the whole window again \
                         (nothing is doubled: stored events are recognised)",
                        path.display()
                    )
                })?;
                if state.version != STATE_VERSION {
                    bail!(
                        "import state {} has version {}, this build knows {STATE_VERSION}",
                        path.display(),
                        state.version
                    );
                }
                let portal = self.connector.portal_id;
                if let Some(old) = state.portal_id.filter(|p| *p != portal) {
                    tracing::warn!(
                        connector = %self.connector.id,
                        "the import state was portal {old}'s, and the connector now names portal {portal}: importing portal {portal}'s events from the first"
                    );
                    return Ok(State {
                        version: STATE_VERSION,
                        portal_id: Some(portal),
                        ..State::default()
                    });
                }
                Ok(State {
                    portal_id: Some(portal),
                    ..state
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State {
                version: STATE_VERSION,
                portal_id: Some(self.connector.portal_id),
                ..State::default()
            }),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    fn save_state(&self, state: &State) -> anyhow::Result<()> {
        let path = self.state_path();
        let bytes = serde_json::to_vec_pretty(state).expect("state serializes");
        store::write_durably(&path, &bytes)
            .with_context(|| format!("cannot save import state {}", path.display()))
    }

    fn run(&mut self, since: Option<i64>, until: Option<i64>) -> anyhow::Result<Summary> {
        // One run per connector at a time: two would resume the same cursor and store the
        // same pages twice.
        let lock_path = self.state_path().with_extension("lock");
        let lock = store::lock_file(&lock_path)?;
        lock.try_lock().map_err(|_| {
            anyhow::anyhow!(
                "another import from HubSpot for connector {} is running ({} is locked): a \
                 `sendtime import hubspot`, or the one `serve` runs on its `[import] cron`; \
                 let it finish, then run again if needed",
                self.connector.id,
                lock_path.display()
            )
        })?;
        // And one per account: each run matches the events stored before it began, so two
        // connectors of one portal importing at once stored every event twice.
        let portal = self.connector.portal_id;
        let account_path = store::state_dir(&self.data_dir).join(account_lock(portal));
        let account = store::lock_file(&account_path)?;
        account.try_lock().map_err(|_| {
            anyhow::anyhow!(
                "another connector's import from HubSpot for portal {portal} is running ({} is \
                 locked): a `sendtime import hubspot`, or the one `serve` runs on its \
                 `[import] cron`; let it finish, then run again if needed",
                account_path.display()
            )
        })?;
        let now = self.clock.world_ms();
        // A window ending later would be marked complete past now, and the events of the time
        // between never imported by the runs that start from that mark.
        if let Some(until) = until.filter(|&u| u > now) {
            bail!(
                "--until {} is in the future: events up to it cannot be imported yet; leave \
                 --until out to import up to now",
                format_rfc3339(until)
            );
        }
        let mut state = self.load_state()?;
        let resumable = state.run.clone().filter(|r| {
            since.is_none_or(|s| s == r.start_ms) && until.is_none_or(|u| u == r.end_ms)
        });
        let mut cursor = match resumable {
            Some(c) => {
                tracing::info!(
                    connector = %self.connector.id,
                    "resuming the interrupted import of {} .. {} after page {}",
                    format_rfc3339(c.start_ms),
                    format_rfc3339(c.end_ms),
                    c.pages
                );
                c
            }
            None => {
                if let Some(old) = &state.run {
                    tracing::warn!(
                        "an interrupted import of {} .. {} is replaced by the window asked for",
                        format_rfc3339(old.start_ms),
                        format_rfc3339(old.end_ms)
                    );
                }
                let start = since.unwrap_or_else(|| {
                    state
                        .complete_until_ms
                        .map_or(0, |t| t - OVERLAP.as_millis() as i64)
                        .max(0)
                });
                let end = until.unwrap_or(now);
                // An empty window would mark the history before it complete, unread.
                if start >= end && since.is_none() && until.is_none() {
                    // A mark set while the clock ran ahead (before HubSpot's time bounded it).
                    bail!(
                        "nothing to import: the last complete import reached {}, after this machine's clock now ({}): the clock was ahead then, or is behind now; once it is right, run `sendtime import hubspot --since TIME` once, TIME before the clock went wrong, to read the events missed",
                        format_rfc3339(start + OVERLAP.as_millis() as i64),
                        format_rfc3339(end)
                    );
                }
                if start >= end {
                    // (A --since in the future was told to come before an --until not given.)
                    let fix = match until {
                        Some(_) => "give a --since before --until",
                        None => "--since is not in the past: give a time before now",
                    };
                    bail!(
                        "nothing to import: the window starts at {} and ends at {} ({fix})",
                        format_rfc3339(start),
                        format_rfc3339(end)
                    );
                }
                // (Another `--since` window left unfinished was not the whole history.)
                let history_from_ms = (state.run.as_ref())
                    .filter(|_| state.complete_until_ms.is_none())
                    .and_then(|old| old.history_from_ms.or((old.start_ms == 0).then_some(0)))
                    .filter(|&from| from < start);
                Cursor {
                    start_ms: start,
                    end_ms: end,
                    offset: None,
                    pages: 0,
                    stored: 0,
                    read_at_ms: None,
                    history_from_ms,
                }
            }
        };
        state.run = Some(cursor.clone());
        self.save_state(&state)?;

        let mut seen = Seen::load(
            &self.data_dir,
            (cursor.start_ms, cursor.end_ms),
            self.dedup_budget,
        )?;
        {
            let _lock = events::lock(&self.data_dir)?;
            crate::cut_short::refuse_to_import(&self.data_dir)?;
            events::recover_locked(&self.data_dir)?;
        }
        let progress = Progress::new(&self.connector.id, cursor.start_ms, cursor.end_ms);
        let (mut new_total, mut dup_total, mut skipped_total) = (0u64, 0u64, 0u64);
        let mut resuming_offset = cursor.offset.is_some();
        // The offsets asked with in this run, hashed: one answered again would loop.
        let mut asked: std::collections::HashSet<u64> = Default::default();
        let hash = |offset: &str| xxhash_rust::xxh3::xxh3_64(offset.as_bytes());
        let mut empty_in_a_row = 0;
        loop {
            (self.before_page)(&self.client);
            let query = EventsQuery {
                start_ms: Some(cursor.start_ms),
                end_ms: Some(cursor.end_ms),
                event_type: None,
                limit: self.page_size,
                offset: cursor.offset.clone(),
            };
            if let Some(offset) = &query.offset {
                asked.insert(hash(offset));
            }
            let page = match self.fetch(&query) {
                // A saved offset HubSpot no longer accepts (they are opaque and may expire):
                // start the window over; stored events are recognised, so nothing doubles.
                Err(e) if resuming_offset && is_bad_request(&e) => {
                    tracing::warn!(
                        "HubSpot refused the saved offset ({e:#}); reading the window again from its newest event"
                    );
                    resuming_offset = false;
                    cursor.offset = None;
                    asked.clear();
                    continue;
                }
                other => other,
            };
            resuming_offset = false;
            let page = page.with_context(|| {
                format!(
                    "import stopped at page {} (progress is saved: once the cause below is \
                     fixed, the same command resumes)",
                    cursor.pages + 1
                )
            })?;
            if page.events.is_empty() && page.unreadable >= UNREADABLE_PAGE {
                bail!(
                    "none of the {} events of page {} could be read ({}): HubSpot's answer has \
                     changed shape, and this version of sendtime cannot read it. The import \
                     stopped before them (progress is saved); each run reads the page again, and \
                     a sendtime that reads them imports them",
                    page.unreadable,
                    cursor.pages + 1,
                    page.first_unreadable.as_deref().unwrap_or("unknown")
                );
            }
            let oldest = page.events.iter().map(|e| e.created).min();
            let (fresh, dups, skipped) =
                self.convert(&page, (cursor.start_ms, cursor.end_ms), &mut seen)?;
            let (stored, no_contact) = if fresh.is_empty() {
                (0, 0)
            } else {
                // Poisoned by a panic mid-batch, it loads the dictionary again (`Appender::append`).
                let mut appender = self.appender.lock().unwrap_or_else(PoisonError::into_inner);
                appender.append(&fresh).context("cannot store events")?
            };
            if let Some(oldest) = oldest {
                seen.trim(oldest.clamp(cursor.start_ms, cursor.end_ms));
            }
            // Only now that the events are durable may the cursor move past them. The last
            // page's save also marks the window complete: a crash between two saves left a
            // resume with the end's offset, which HubSpot may refuse (an audit).
            if cursor.pages == 0 {
                cursor.read_at_ms = page.answered_at_ms;
                if let Some(at) = page
                    .answered_at_ms
                    .filter(|&at| at < cursor.end_ms - policy::CLOCKS_APART_MS)
                {
                    tracing::warn!(
                        connector = %self.connector.id,
                        "this machine's clock is {} s ahead of HubSpot's: the window is marked complete up to HubSpot's time, {}",
                        (cursor.end_ms - at) / 1000,
                        format_rfc3339(at)
                    );
                }
            }
            cursor.pages += 1;
            cursor.stored += stored as u64;
            cursor.offset = page.offset.clone();
            // An empty page may still say there is more: only `hasMore` ends the window.
            let last = !page.has_more;
            if last {
                // Contiguous with what was complete (or the first run): complete up to this
                // window's end. A window that starts later leaves a gap the next default run
                // fills from the old mark (the events of this window are recognised then, not
                // stored twice).
                let end = cursor.end_ms.min(cursor.read_at_ms.unwrap_or(i64::MAX));
                // A mark past HubSpot's time was set by a clock ahead (an earlier version): it
                // is lowered to this window's end, or it stopped every run (a review).
                let hubspot_now = cursor.read_at_ms.unwrap_or(now);
                state.complete_until_ms = match (state.complete_until_ms, cursor.history_from_ms) {
                    (None, Some(from)) => {
                        tracing::warn!(
                            connector = %self.connector.id,
                            "the events from {} are imported; the unfinished import of the history from {} that this run replaced is not: nothing is marked complete, and the next run without --since reads the whole history (what is stored is recognised, not stored twice)",
                            format_rfc3339(cursor.start_ms),
                            format_rfc3339(from)
                        );
                        None
                    }
                    (None, None) => Some(end),
                    (Some(t), _) if t > hubspot_now + policy::CLOCKS_APART_MS => {
                        tracing::warn!(
                            connector = %self.connector.id,
                            "events were marked imported up to {}, past HubSpot's time: an earlier run's clock was ahead; marked up to {} now (events HubSpot recorded between that run and {} may be missing: import from before it with --since)",
                            format_rfc3339(t),
                            format_rfc3339(end),
                            format_rfc3339(cursor.start_ms)
                        );
                        Some(end)
                    }
                    (Some(t), _) if cursor.start_ms <= t => Some(t.max(end)),
                    (Some(t), _) => Some(t),
                };
                state.run = None;
            } else {
                state.run = Some(cursor.clone());
            }
            self.save_state(&state)?;

            new_total += stored as u64;
            dup_total += dups;
            skipped_total += skipped + no_contact as u64;
            progress.page(&cursor, page.events.len(), stored, dups, oldest);
            if last {
                break;
            }
            // More, but nothing to ask for it by: ending the window here would mark what
            // follows imported (it did, an audit found). The cursor saved has no offset: the
            // next run reads the window again from its newest event.
            if page.offset.is_none() {
                bail!(
                    "HubSpot said more events follow page {} but gave no offset to read them by: \
                     the window is left incomplete; the next run reads it again",
                    cursor.pages
                );
            }
            if page
                .offset
                .as_deref()
                .is_some_and(|o| asked.contains(&hash(o)))
            {
                // Going on would loop (over one page or several); ending the window here would
                // mark the events after it imported. The next run reads the window again from
                // its newest event (what is stored is recognised, not stored twice).
                cursor.offset = None;
                state.run = Some(cursor.clone());
                self.save_state(&state)?;
                bail!(
                    "HubSpot answered an offset it was given before as the next one after page \
                     {}: the window is left incomplete; the next run reads it again",
                    cursor.pages
                );
            }
            // Unreadable events are events: such pages are not the chain this guards against.
            let empty = page.events.is_empty() && page.unreadable == 0;
            empty_in_a_row = if empty { empty_in_a_row + 1 } else { 0 };
            if empty_in_a_row >= MAX_EMPTY_PAGES {
                bail!(
                    "HubSpot answered {empty_in_a_row} empty pages in a row, each saying more \
                     events follow: stopped after page {}, as it may go on for good; the next run \
                     resumes there",
                    cursor.pages
                );
            }
            if let Some(why) = (self.stop)() {
                bail!(
                    "stopped after page {} ({why}); the next run resumes there",
                    cursor.pages
                );
            }
        }
        progress.finish();
        tracing::info!(
            connector = %self.connector.id,
            new = new_total,
            already_stored = dup_total,
            skipped = skipped_total,
            pages = cursor.pages,
            store_reads = seen.reads(),
            "HubSpot import complete up to {}",
            format_rfc3339(cursor.end_ms)
        );
        Ok(Summary {
            stored: new_total,
            already_stored: dup_total,
            skipped: skipped_total,
            complete_until_ms: state.complete_until_ms,
            pages: cursor.pages,
            window: (cursor.start_ms, cursor.end_ms),
        })
    }

    /// This page's events not stored yet, as dataset rows; (new, duplicates, skipped: unknown
    /// kinds and events outside the window `[start_ms, end_ms]`, which `seen` cannot vouch
    /// for and a later run's window will hold).
    fn convert(
        &self,
        page: &EventsPage,
        (start_ms, end_ms): (i64, i64),
        seen: &mut Seen,
    ) -> anyhow::Result<(Vec<Event>, u64, u64)> {
        let (mut fresh, mut dups, mut skipped) = (Vec::new(), 0, page.unreadable);
        if page.unreadable > 0 {
            tracing::warn!(
                unreadable = page.unreadable,
                first = page.first_unreadable.as_deref().unwrap_or("unknown"),
                "skipping events HubSpot sent without an id or time sendtime can read"
            );
        }
        for e in &page.events {
            if !(start_ms..=end_ms).contains(&e.created) {
                skipped += 1;
                tracing::debug!(id = %e.id, created = e.created, "skipping event outside the window");
                continue;
            }
            // Only opens and clicks are learnt from: the sends, deliveries and the rest (most
            // of an account's events) would fill the store and every rebuild for nothing.
            let Some(kind) = Kind::parse(&e.kind).filter(|k| k.is_engagement()) else {
                skipped += 1;
                tracing::debug!(id = %e.id, kind = %e.kind, "skipping event of a type not learnt from");
                continue;
            };
            // As a file's rows are: what is no address would become a contact no webhook
            // names (and an unbounded key).
            if let Some(r) = e.recipient.as_deref()
                && !crate::datasets::contacts::is_email_address(r.trim())
            {
                skipped += 1;
                tracing::debug!(id = %e.id, "skipping event whose recipient is no email address");
                continue;
            }
            if !seen.insert(&e.id, e.created)? {
                dups += 1;
                continue;
            }
            fresh.push(to_event(e, kind, &self.source));
        }
        Ok((fresh, dups, skipped))
    }

    /// `work` run to its end, or `None` as soon as `stop` says so (asked every 200 ms): a
    /// stopping `serve` does not wait out HubSpot's retries and rate-limit waits, which can
    /// take an hour.
    fn until_stopped<T>(&self, work: impl std::future::Future<Output = T>) -> Option<T> {
        self.rt.block_on(async {
            tokio::select! {
                done = work => Some(done),
                () = async {
                    while (self.stop)().is_none() {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                } => None,
            }
        })
    }

    /// One page, waiting out rate limits and retrying transient failures.
    fn fetch(&self, query: &EventsQuery) -> anyhow::Result<EventsPage> {
        let stopped = || {
            let why = (self.stop)().unwrap_or("asked to stop");
            anyhow::anyhow!("stopped while reading a page ({why}); the next run resumes there")
        };
        let mut failures = 0u32;
        let mut rate_limited = 0u32;
        loop {
            let err = match self.until_stopped(self.client.email_events(query)) {
                None => return Err(stopped()),
                Some(Ok(page)) => return Ok(page),
                Some(Err(e)) => e,
            };
            match &err {
                ApiError::RateLimited {
                    policy: RatePolicy::Daily,
                    message,
                    ..
                } => bail!(
                    "HubSpot's daily API limit for connector {} is spent ({message}); \
                     run the import again once it resets",
                    self.connector.id
                ),
                ApiError::RateLimited { .. } => {
                    // The client holds its limiter for the wait; the next call waits there.
                    rate_limited += 1;
                    if rate_limited >= policy::IMPORT_429S {
                        bail!("HubSpot kept answering 429 for {rate_limited} attempts: {err}");
                    }
                    tracing::warn!("{err}; waiting");
                }
                ApiError::Transient { .. } | ApiError::NoAccessToken { .. } => {
                    failures += 1;
                    if Backoff::IMPORT.exhausted(failures) {
                        return Err(err).context(format!("gave up after {failures} attempts"));
                    }
                    let wait = Backoff::IMPORT.wait(failures);
                    tracing::warn!("{err}; retry {failures} in {wait:?}");
                    // The timer is made inside the runtime: an async block starts on its poll.
                    self.until_stopped(async { tokio::time::sleep(wait).await })
                        .ok_or_else(stopped)?;
                }
                ApiError::Permanent { status: 401, .. } => {
                    return Err(err).context(format!(
                        "HubSpot rejected the token in {} (connector {}): set a valid one",
                        self.connector.credentials.describe(),
                        self.connector.id,
                    ));
                }
                ApiError::MissingScopes { .. } => {
                    return Err(err).context(format!(
                        "connector {}: grant the app the scope (reinstall it with the scope, or give the token it)",
                        self.connector.id,
                    ));
                }
                // Hours, as a rule: the next run resumes where this one stopped.
                ApiError::Permanent { .. }
                | ApiError::BatchTooLarge { .. }
                | ApiError::NotTheApi { .. }
                | ApiError::Migrating { .. } => {
                    return Err(err.into());
                }
            }
        }
    }
}

fn is_bad_request(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<ApiError>(),
        Some(ApiError::Permanent { status: 400, .. })
    )
}

fn to_event(e: &EmailEvent, kind: Kind, source: &str) -> Event {
    Event {
        event_id: Some(e.id.clone()),
        contact_id: None,
        email: e.recipient.clone(),
        kind,
        at_ms: e.created,
        filtered: e.filtered_event,
        source: source.to_string(),
    }
}

/// A bar on a terminal, plain log lines otherwise (CI, cron, pipes).
struct Progress {
    bar: Option<ProgressBar>,
    end_ms: i64,
}

impl Progress {
    fn new(connector: &str, start_ms: i64, end_ms: i64) -> Progress {
        let from = match start_ms {
            ..=0 => "the first event".to_string(),
            t => format_rfc3339(t),
        };
        tracing::info!(
            "importing HubSpot email events for connector {connector}: {from} .. {}",
            format_rfc3339(end_ms)
        );
        let bar = std::io::stderr().is_terminal().then(|| {
            // A first import goes back to the account's first event, which no one knows: a
            // spinner, not a bar measured from 1970 that ends at a few percent.
            if start_ms <= 0 {
                let bar = ProgressBar::new_spinner().with_style(
                    ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                        .expect("valid template"),
                );
                bar.enable_steady_tick(std::time::Duration::from_millis(200));
                return bar;
            }
            // Pages come newest first: progress is how far back from the end we have got.
            let bar = ProgressBar::new(((end_ms - start_ms).max(1) / 1000) as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {percent}% {msg}",
                )
                .expect("valid template"),
            );
            bar
        });
        Progress { bar, end_ms }
    }

    fn page(&self, cursor: &Cursor, got: usize, stored: usize, dups: u64, oldest: Option<i64>) {
        let back_to = oldest.map(format_rfc3339).unwrap_or_else(|| "-".into());
        match &self.bar {
            Some(bar) => {
                if let Some(o) = oldest {
                    bar.set_position(((self.end_ms - o).max(0) / 1000) as u64);
                }
                bar.set_message(format!(
                    "page {}, {} stored, back to {back_to}",
                    cursor.pages, cursor.stored
                ));
            }
            None => tracing::info!(
                "page {}: {got} events, {stored} new, {dups} already stored; {} stored this run; back to {back_to}",
                cursor.pages,
                cursor.stored
            ),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Until when `connector`'s events are all imported from HubSpot (the last complete run's
/// end), if an import ever completed.
pub fn complete_until(data_dir: &Path, connector: &str) -> Option<i64> {
    let bytes = std::fs::read(state_path(data_dir, connector)).ok()?;
    serde_json::from_slice::<State>(&bytes)
        .ok()
        .filter(|s| s.version == STATE_VERSION)?
        .complete_until_ms
}

/// The name of the lock file, under `state/`, an import from the account `portal` holds for
/// its whole run. `@`: no connector id has one, so no connector's files share the name.
fn account_lock(portal: u64) -> String {
    format!("hubspot@portal-{portal}.lock")
}

/// The lock file of an import from HubSpot running on `data_dir` now, if one is. It takes the
/// events lock a page at a time, so an `erase` between two pages would see the next pages
/// bring the person's older events back.
pub fn running(data_dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    let entries = match std::fs::read_dir(store::state_dir(data_dir)) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    for entry in entries {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with("hubspot@portal-")
            && name.ends_with(".lock")
            && store::lock_file(&path)?.try_lock_shared().is_err()
        {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// The state file of `connector` under `data_dir` (for tools and tests).
pub fn state_path(data_dir: &Path, connector: &str) -> PathBuf {
    store::state_dir(data_dir).join(format!("hubspot-{connector}.json"))
}
