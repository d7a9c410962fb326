//! The per-minute job: plan new receipts, take what is due, call HubSpot within its
//! limits, record every call's outcome.
//!
//! State lives in memory between ticks (planned receipts, a queue ordered by due time, the set
//! of finished receipts), built once at start-up from `plan/` and `outcomes/`. A tick lists the
//! inbox folder and reads only parts it has not seen, so a tick with nothing new and nothing
//! due costs a directory listing. `sendtime tick` builds the same state from disk and runs one.
//!
//! Delivery contract: at-least-once. Every call is preceded by a durable `attempting` row and
//! followed by a durable result row; after a crash, receipts whose last call has no result are
//! "in doubt" and their contact's enrollments are read before an enrollment is sent again.

mod archive;
mod capacity;
pub mod connector;
pub mod ids;
mod in_flight;
pub mod locks;
pub mod lookups;
mod planning;
pub mod profiles;
pub mod send;
mod startup;
pub mod target_holds;
mod unbooked;
mod workflow_reads;

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{Semaphore, watch};

use crate::capacity::Spent;
use crate::clock::Clock;
use crate::config::{Config, Connector, Target};
use crate::datasets::outcomes::{Action, OutcomeLog, OutcomeRow, OutcomeWriter, Status};
use crate::datasets::pending::{Contact, PendingSet};
use crate::metrics::Metrics;
use crate::store::Dataset;
use crate::time::{MINUTE_MS, format_rfc3339_ms};

use connector::Link;
use ids::{IdSet, ReceiptId};
use in_flight::{Call, Deadline, InFlight};
pub use planning::plan_alone;
use profiles::ProfileCache;
use send::{Ctx, HeldBy, Next, Pending};

/// Calls (or list batches) in flight at once across all connectors. Enough to keep a 250/10 s
/// limit busy while HubSpot takes a few seconds per answer; the limiter does the pacing.
pub const MAX_IN_FLIGHT: usize = 96;
/// A retry that would wait longer than this past the time a tick's calls take at their
/// connectors' pace is left to a later tick, so one tick stays short ([`calls_take`]).
pub const IN_TICK_RETRY_HORIZON: Duration = Duration::from_secs(30);

/// How long calls take at their connectors' pace (`requests_per_10s`), given each one's
/// connector: the longest connector's. A tick's retries are waited out up to that and
/// [`IN_TICK_RETRY_HORIZON`] beyond: from the tick's start alone, a tick sending a minute's
/// calls left every retry after its first 30 s to the next tick, and a 429 of a second there
/// every call not yet made (an audit).
fn calls_take<'a>(connectors: impl Iterator<Item = &'a str>, config: &Config) -> Duration {
    let mut calls: HashMap<&str, u64> = HashMap::new();
    for c in connectors {
        *calls.entry(c).or_default() += 1;
    }
    (calls.into_iter())
        .filter_map(|(c, n)| {
            let per_10s = u64::from(config.connector(c)?.requests_per_10s.max(1));
            Some(Duration::from_millis(n * 10_000 / per_10s))
        })
        .max()
        .unwrap_or_default()
}
/// How much longer than planned a gap between two ticks is, for the backlog that came due in
/// it to be spread before a tick sends.
const BACKLOG_MS: i64 = 5 * MINUTE_MS;

/// What one tick did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TickReport {
    /// The tick's clock.
    pub now_ms: i64,
    pub planned: usize,
    pub due: usize,
    pub enrolled: usize,
    pub listed: usize,
    /// Workflow-action callbacks completed.
    pub completed: usize,
    pub failed: usize,
    pub dry_run: usize,
    /// Left queued for a later tick (retry wait, paused connector, shutdown).
    pub requeued: usize,
    /// Contacts of webhooks missing from the config.
    pub held: usize,
    /// Receipts planned and not yet final, after the tick.
    pub queued: usize,
    /// Why new receipts could not be planned (they wait in the inbox for the next tick; the
    /// due contacts were sent all the same).
    pub planning_error: Option<String>,
    /// Why outcome rows could not be written, the last time they could not (what they were
    /// for is looked at again by the next tick).
    pub write_error: Option<String>,
    pub took: Duration,
}

impl std::fmt::Display for TickReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "now={} planned={} due={} enrolled={} listed={} completed={} failed={} dry_run={} requeued={} held={} queued={} took_ms={}",
            format_rfc3339_ms(self.now_ms),
            self.planned,
            self.due,
            self.enrolled,
            self.listed,
            self.completed,
            self.failed,
            self.dry_run,
            self.requeued,
            self.held,
            self.queued,
            self.took.as_millis()
        )
    }
}

/// The dispatcher and its in-memory state.
pub struct Dispatcher {
    data_dir: PathBuf,
    inbox_ds: Dataset,
    plan_ds: Dataset,
    /// Planned, not final, not held; earliest ready first.
    queue: BinaryHeap<Queued>,
    /// Webhook id → contacts whose webhook is missing from the config.
    held: HashMap<String, Vec<Pending>>,
    /// Receipts planned and not final: queued, held, or being called.
    planned: IdSet,
    /// Receipts with calls recorded but no plan row at start-up (their plan part is in
    /// quarantine): the calls made and the workflow of the last. In doubt when planned again,
    /// and their attempts numbered on from there (the daily budget counts calls by them).
    unplanned_calls: HashMap<ReceiptId, (u32, Option<NonZeroU64>, bool)>,
    /// Receipts with a final outcome, not archived: a compacted inbox part repeats them.
    done: IdSet,
    /// When finished receipts were last archived ([`Dispatcher::archive_if_due`]), by the
    /// replay window's clock.
    archived_at_ms: i64,
    /// When archived receipts past `archive_days` were last deleted
    /// ([`Dispatcher::prune_if_due`]), kept across starts.
    pruned_at_ms: i64,
    /// One shared copy of each webhook id, so receipts carry no string of their own.
    webhook_ids: HashSet<Arc<str>>,
    /// Inbox parts whose receipts are planned, with their files' stamps.
    seen_parts: HashSet<(PathBuf, planning::FileStamp)>,
    profiles: ProfileCache,
    log: OutcomeLog,
    writer: Option<OutcomeWriter>,
    metrics: Metrics,
    /// Receipts not finished, shared with the receiver: finishing one releases it.
    pending: PendingSet,
    links: HashMap<String, (String, Arc<Link>)>,
    /// Connectors whose new settings lifted a pause, and its end: the contacts queued until
    /// then are due at the next tick.
    lifted: Vec<(String, i64)>,
    /// Each HubSpot request's ([`crate::hubspot::policy::TIMEOUT_ENV`]).
    request_timeout: Duration,
    /// The connectors' planned sends, for the config they were built for; `None` to book the
    /// queue again (a new config, or receipts back in the queue at another time).
    capacity: Option<capacity::Capacities>,
    /// Calls made in the last two days, which a daily budget counts when the ledgers are built again.
    spent: Spent,
    /// Operators' pauses as of the last tick: a change builds the ledgers again (what a pause
    /// held is spread when it ends).
    pauses: Arc<crate::pauses::Pauses>,
    /// Pauses that outlast the process, as last written under `state/` (connector → until,
    /// why).
    pauses_on_disk: HashMap<String, (i64, connector::PauseReason)>,
    /// A full disk fails that record at every tick: said once a minute.
    pause_write_errors: crate::throttle::Throttle,
    /// Operators' pauses of what the config does not name, as last said.
    unmatched_pauses: Vec<(crate::pauses::Kind, String)>,
    clock: Clock,
    /// The dashboard's contact lookups (set by `serve`).
    pub lookups: lookups::Lookups,
    /// The data folder's dispatch lock.
    lock: std::fs::File,
    /// The dispatcher's clock and the system clock (epoch ms) as the last tick ended: the
    /// scheduler plans the next fire from then.
    last_tick: Option<(i64, i64)>,
    /// The last tick's `now` (clock ms): it sent what was due by then, and what planning put
    /// after it is this tick's to send ([`Dispatcher::capacities`]). `None` after a gap
    /// nothing planned.
    planned_from: Option<i64>,
    /// The webhooks whose contacts the ledgers were last built without, or that were held
    /// since: their backlog is booked after the rest ([`Dispatcher::capacities`]).
    unbooked: unbooked::Unbooked,
}

impl Dispatcher {
    /// The receipts not finished: the set the receiver checks posts against.
    pub fn pending(&self) -> &PendingSet {
        &self.pending
    }

    /// Planned receipts not yet final (held ones included).
    pub fn queued(&self) -> usize {
        self.queue.len() + self.held.values().map(Vec::len).sum::<usize>()
    }

    /// Whether outcome rows can be written: the writer thread runs.
    pub fn records(&self) -> bool {
        self.writer.as_ref().is_some_and(OutcomeWriter::is_running)
    }

    /// Flush the outcome writer and stop it, the data folder's lock held until it and its
    /// compactor are done: a `tick` let it go first, and the next one, taking it, rolled back
    /// a merge still being written, whose rows were then listed twice (an audit).
    pub fn close(mut self) {
        let writer = self.writer.take();
        let lock = self.hold_lock().ok();
        drop(self);
        if let Some(w) = writer {
            w.shutdown();
        }
        drop(lock);
    }

    /// The data folder's dispatch lock, held as long as the handle returned is open too: for
    /// `serve` to hold until its own writers are done (its inbox), whichever way the
    /// dispatcher ends (let go with it, an `erase` could rewrite the folder while they still
    /// wrote; an audit found it did).
    pub fn hold_lock(&self) -> std::io::Result<std::fs::File> {
        self.lock.try_clone()
    }

    /// One tick. `stop` turning true makes the tick finish the calls in flight, record them,
    /// and leave the rest queued.
    pub async fn tick(
        &mut self,
        config: &Config,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<TickReport> {
        let started = Instant::now();
        let now = self.clock.now_ms();
        // Read with `now`: the archive below then sees the tick's own instant.
        let replay_now = self.clock.replay_now_ms();
        let mut report = TickReport {
            now_ms: now,
            ..TickReport::default()
        };
        // Read once here; the tick's calls ask it again only if the file changes meanwhile.
        let watch = Arc::new(crate::pauses::Watch::new(&self.data_dir));
        let pauses = watch.current();
        // Every tick, due contacts or not.
        self.metrics.set_operator_pauses(&pauses);
        self.warn_unmatched_pauses(config, &pauses);
        if pauses != self.pauses {
            self.pauses = pauses;
            self.capacity = None;
        }
        // A webhook back in the config: its held contacts are queued before the ledgers are
        // built again ([`Dispatcher::requeue`]), so their backlog is spread over the minutes
        // with room, not sent in this tick (an audit found it was).
        self.unhold(config);
        // A backlog that came due in a gap nothing planned (a host suspended, a clock stepped
        // forward) is spread over the minutes with room, as at a start, not sent in one tick:
        // that tick could last hours, go on into the contacts' quiet hours, and keep planning
        // waiting behind it (an audit found it did). A sparse cron's gaps are planned: each
        // of its ticks sends what came due since the last. So is the backlog of a target whose
        // hold ended ([`capacity::Basis`]).
        let gap = self.unplanned_gap(config);
        if gap || self.ledgers_outdated(config, now) {
            self.capacity = None;
        }
        if gap {
            // Nothing was planned since: all of it is spread.
            self.planned_from = None;
        }
        // A planning failure (a part of the contact dictionary in quarantine, an unwritable
        // profiles folder) must not stop the contacts planned earlier: an action's hold would
        // run out.
        match tokio::task::block_in_place(|| self.plan_new(config, now)) {
            Ok(planned) => report.planned = planned,
            Err(e) => {
                tracing::error!(
                    "cannot plan new receipts (they wait in the inbox, but an action's contact in its hold's last hour is sent unplanned; the due contacts are sent all the same): {e:#}"
                );
                self.metrics.planning_failures.inc();
                report.planning_error = Some(format!("{e:#}"));
            }
        }
        self.metrics
            .board
            .set_planning_error(report.planning_error.clone());
        self.metrics
            .board
            .set_population(&self.profiles.population());
        self.publish_forecast(config, now);
        self.load_stored_pauses(config);
        // New settings lifted a pause (a token that works): the contacts it held go now.
        for (connector, until) in std::mem::take(&mut self.lifted) {
            self.release_paused(config, &connector, until, now);
        }
        self.resume_connectors(now);

        let (mut due, mut quiet) = (Vec::new(), Vec::new());
        while self.queue.peek().is_some_and(|q| q.0.ready_at_ms <= now) {
            let mut item = self.queue.pop().expect("peeked").0;
            match quiet_until(config, &item, now) {
                Some(later) => {
                    item.ready_at_ms = later;
                    quiet.push(item);
                }
                None => due.push(item),
            }
        }
        if !quiet.is_empty() {
            tracing::info!(
                contacts = quiet.len(),
                "due contacts wait out their quiet hours (they came due while nothing ran, or between two ticks)"
            );
            quiet.into_iter().for_each(|item| self.requeue(item));
        }
        report.due = due.len();
        if !due.is_empty() {
            self.dispatch(config, due, now, stop.clone(), watch, &mut report)
                .await;
        }
        // Stopping: no new call (a usage lookup waits up to its timeout) and no archive move
        // (it reads the day's outcomes); the next start does both.
        let stopping = *stop.borrow();
        if !stopping {
            for (_, link) in self.links.values() {
                link.learn_daily_reset(now).await;
            }
        }
        // A hold that began in this tick may end before the ledgers are built again (a cron
        // of 5 minutes or more, the next `sendtime tick`): its backlog is marked now, and the
        // next tick builds them (a target's hold requeues nothing that would; its mark would
        // wait for an unrelated build, and hold back retries then: a review).
        for webhook in self.held_targets(config, self.clock.now_ms()) {
            if self.unbooked.insert(webhook) {
                self.capacity = None;
            }
        }
        // Out of the config: `unhold` marks it when it is back, in this process only.
        for webhook in self.held.keys().filter(|w| config.webhook(w).is_none()) {
            self.unbooked.insert(webhook);
        }
        let ids = &self.webhook_ids;
        self.unbooked
            .save(|w| config.webhook(w).is_some() || ids.contains(w));
        self.store_pauses();
        self.metrics
            .board
            .set_links(self.links.values().map(|(_, link)| link));
        report.held = self.held.values().map(Vec::len).sum();
        self.metrics.board.set_held(
            (self.held.iter())
                .map(|(webhook, items)| (webhook.clone(), items.len()))
                .collect(),
        );
        report.queued = self.queued();
        if !stopping {
            tokio::task::block_in_place(|| {
                self.archive_if_due(replay_now);
                self.prune_if_due(config.server.archive_days, replay_now);
                self.finish_compactions();
            });
        }
        report.write_error = self.log.take_failure();
        report.took = started.elapsed();
        self.metrics.queued.set(report.queued as i64);
        self.metrics.finished.set(self.done.len() as i64);
        self.metrics.tick_seconds.observe(report.took.as_secs_f64());
        self.last_tick = Some(self.clocks());
        self.planned_from = Some(now);
        Ok(report)
    }

    /// What the model knows and would do for `contact` now, from the profiles in memory.
    pub fn explain(
        &self,
        config: &Config,
        contact: &str,
        on_disk: crate::model::explain::Posted,
        pauses: &crate::pauses::Pauses,
    ) -> anyhow::Result<crate::model::explain::Explanation> {
        // The id a queued or held receipt of that email carries, as planning used it; else
        // the one its receipts on disk carry (finished, or archived). The email asked by id
        // and the zone are the latest plan row's.
        let now = self.clock.now_ms();
        let email = contact.trim();
        let posted_id = self
            .queue
            .iter()
            .map(|q| &q.0)
            .chain(self.held.values().flatten())
            .filter(|p| {
                p.email
                    .as_deref()
                    .is_some_and(|e| e.eq_ignore_ascii_case(email))
            })
            .find_map(|p| p.contact_id)
            .or(on_disk.id);
        crate::model::explain::Explanation::new(
            config,
            self.profiles.built(),
            contact,
            crate::model::explain::Posted {
                id: posted_id,
                ..on_disk
            },
            pauses,
            &|connector| {
                let (until_ms, why) = (self.links.get(connector))
                    .and_then(|(_, link)| link.pause_at(now))
                    .or_else(|| connector::stored_pause_of(&self.data_dir, connector, now))?;
                let why = why.as_str();
                Some(crate::model::explain::ConnectorPaused { until_ms, why })
            },
            now,
        )
    }

    fn enqueue(&mut self, item: Pending) {
        self.queue.push(Queued(item));
    }

    /// Whether this tick follows a gap of more than [`BACKLOG_MS`] beyond what was planned
    /// since the last one ended: the system clock past the cron's next fire after it (a host
    /// suspended), or the dispatcher's clock moved on that much more than the system clock
    /// (the demo's or a test's clock stepped forward).
    fn unplanned_gap(&self, config: &Config) -> bool {
        self.last_tick.is_some_and(|last| {
            let cron = &config.scheduler.schedule;
            let gap = crate::scheduler::gap_beyond(cron, last, self.clocks(), self.clock.speed());
            gap > BACKLOG_MS
        })
    }

    /// The dispatcher's clock and the system clock, read together (epoch ms).
    fn clocks(&self) -> (i64, i64) {
        (self.clock.now_ms(), crate::time::now_ms())
    }

    /// Back in the queue at a time it was not booked for (a retry, HubSpot's pause, a webhook
    /// back in the config): the ledgers are built again from the queue before the next
    /// planning, so it counts where it now stands.
    fn requeue(&mut self, item: Pending) {
        self.capacity = None;
        self.enqueue(item);
    }

    /// The contacts queued for `connector`'s pause that ended at `until`, which new settings
    /// lifted, are due at `now`.
    fn release_paused(&mut self, config: &Config, connector: &str, until: i64, now: i64) {
        let mut released = 0;
        let queue = std::mem::take(&mut self.queue).into_vec();
        self.queue = (queue.into_iter())
            .map(|Queued(mut item)| {
                // Queued for it at a tick, or sent back to it by a call it stopped.
                if (item.paused_until_ms == until || item.ready_at_ms == until)
                    && route(config, &item).is_some_and(|w| w.connector == connector)
                {
                    item.ready_at_ms = now;
                    item.paused_until_ms = 0;
                    released += 1;
                }
                Queued(item)
            })
            .collect();
        if released > 0 {
            self.capacity = None;
            tracing::info!(
                connector,
                contacts = released,
                "the connector's new settings lift its pause: the contacts it held are due"
            );
        }
    }

    /// Say once of each operator's pause that names what the config does not (renamed or
    /// removed since, or at a restart): it holds nothing, so a renamed connector's or
    /// webhook's contacts go out unpaused (an audit: a rename lifted a pause without a word).
    fn warn_unmatched_pauses(&mut self, config: &Config, pauses: &crate::pauses::Pauses) {
        let unmatched: Vec<(crate::pauses::Kind, String)> = (pauses.unmatched(config).into_iter())
            .map(|(kind, id)| (kind, id.to_string()))
            .collect();
        for (kind, id) in unmatched
            .iter()
            .filter(|u| !self.unmatched_pauses.contains(u))
        {
            let flag = match kind {
                crate::pauses::Kind::Connector => " --connector",
                _ => "",
            };
            tracing::warn!(
                "the pause of {} `{id}` holds nothing: the config has no {0} of that id; if it was renamed, its contacts go out unpaused: pause it under its new id (`sendtime pause NEW_ID{flag}`), and `sendtime resume {id}{flag}` to drop this one",
                kind.as_str()
            );
        }
        self.unmatched_pauses = unmatched;
    }

    /// Contacts of a webhook that is back in the config, as the kind they were received by,
    /// go back in the queue.
    fn unhold(&mut self, config: &Config) {
        let back: Vec<String> = self
            .held
            .iter()
            .filter(|(_, items)| items.iter().any(|i| route(config, i).is_some()))
            .map(|(w, _)| w.clone())
            .collect();
        for webhook in back {
            let items = self.held.remove(&webhook).unwrap_or_default();
            let (go, stay): (Vec<Pending>, Vec<Pending>) =
                items.into_iter().partition(|i| route(config, i).is_some());
            tracing::info!(
                webhook = %webhook,
                contacts = go.len(),
                "webhook is back in the config: its held contacts are queued again"
            );
            self.metrics.held(&webhook).set(stay.len() as i64);
            self.unbooked.insert(&webhook);
            if !stay.is_empty() {
                self.held.insert(webhook, stay);
            }
            for item in go {
                self.requeue(item);
            }
        }
    }

    async fn dispatch(
        &mut self,
        config: &Config,
        due: Vec<Pending>,
        now: i64,
        stop: watch::Receiver<bool>,
        pauses_now: Arc<crate::pauses::Watch>,
        report: &mut TickReport,
    ) {
        enum Job {
            Enroll(Arc<Link>, u64, Pending),
            List(Arc<Link>, String, Vec<Pending>),
            Complete(Arc<Link>, Vec<Pending>),
        }
        let mut jobs = Vec::new();
        // (connector, list or "" for callbacks) → (link, batch size, contacts)
        type BatchJobs = HashMap<(String, String), (Arc<Link>, usize, Vec<Pending>)>;
        let mut lists: BatchJobs = HashMap::new();
        let mut callbacks: BatchJobs = HashMap::new();
        let mut dry = Vec::new();
        // Finished once their rows are durable: a receipt finished without one could be
        // archived with no outcome anywhere.
        let mut dry_items = Vec::new();
        // Callbacks whose hold ends during their connector's pause, failed.
        let (mut lost, mut lost_items) = (Vec::new(), Vec::new());
        let mut later = Vec::new();
        let mut newly_held: HashMap<String, usize> = HashMap::new();
        let pauses = pauses_now.current();
        for mut item in due {
            // No pause holds the row left to write, nor a reload that removed or changed its
            // webhook (it waited unrecorded among the held; an audit), and a dry run would
            // record the enrollment HubSpot took as never sent.
            if item.only_row_left()
                && let Some(connector) = row_connector(config, &item)
            {
                match self.link(connector) {
                    Ok(link) => {
                        let took = item.doubt_workflow.map_or(0, NonZeroU64::get);
                        jobs.push(Job::Enroll(link, took, item));
                    }
                    Err(e) => {
                        tracing::error!("{e:#}");
                        later.push((item, now + MINUTE_MS));
                    }
                }
                continue;
            }
            let Some(webhook) = route(config, &item) else {
                *newly_held.entry(item.webhook_id.to_string()).or_default() += 1;
                self.held
                    .entry(item.webhook_id.to_string())
                    .or_default()
                    .push(item);
                continue;
            };
            let connector = config
                .connector(&webhook.connector)
                .expect("validated: webhook connectors exist");
            let action = Action::of(&webhook.target);
            let target = (webhook.target.id())
                .unwrap_or_else(|| item.callback_id.as_deref().unwrap_or_default().to_string());
            // Paused by an operator: held in the queue, looked at again next minute (not booked:
            // when the pause ends, the ledgers are built again and spread what it held). An
            // action's contact whose hold has ended, HubSpot moved on: failed then, without a
            // call (it was sent after the resume, refused and failed, days late; an audit). A
            // dry run's is recorded as one once resumed, as when its hold ends unpaused.
            if pauses.holds(&webhook.id, &connector.id) {
                let hold_end = planning::hold_end(&item, webhook.window);
                if item.held_by_hubspot() && !connector.dry_run && now >= hold_end {
                    let by = match pauses.unreadable {
                        true => HeldBy::PausesUnreadable,
                        false => HeldBy::Operator,
                    };
                    let held = (None, hold_end);
                    lost.push(send::held_past_hold(
                        &item,
                        &connector.id,
                        &target,
                        by,
                        held,
                        now,
                    ));
                    lost_items.push(item);
                    continue;
                }
                item.ready_at_ms = now + MINUTE_MS;
                report.requeued += 1;
                self.enqueue(item);
                continue;
            }
            // A contact HubSpot holds for us: a dry run releases nothing, so it waits for the
            // connector to go live again, until it must be released.
            let release_by = planning::release_by(&item, webhook.window);
            if connector.dry_run && item.held_by_hubspot() && now < release_by {
                item.ready_at_ms = (now + MINUTE_MS).min(release_by);
                report.requeued += 1;
                self.enqueue(item);
                continue;
            }
            // A post taken unsigned in dry run may be anyone's: never sent, even once the
            // connector calls HubSpot (it was only ever accepted for a dry run).
            if connector.dry_run || item.dry_run_only {
                let mut message = dry_run_message(action, &item, &target);
                if !connector.dry_run {
                    message.push_str(match action {
                        Action::Complete => {
                            " (answered in dry run, so its contact went on then: never completed)"
                        }
                        Action::Enroll | Action::ListAdd => {
                            " (taken without a signature while the connector was in dry run: never sent to HubSpot; post it again, signed)"
                        }
                    });
                }
                dry.push(OutcomeRow {
                    receipt_id: item.receipt_id.to_string(),
                    webhook_id: item.webhook_id.to_string(),
                    connector: connector.id.clone(),
                    action,
                    target: target.clone(),
                    status: Status::DryRun,
                    http_status: None,
                    message: Some(message),
                    attempts: 0,
                    in_doubt: false,
                    retry_at_ms: None,
                    at_ms: now,
                    holdout: item.holdout,
                });
                dry_items.push(item);
                continue;
            }
            let link = match self.link(connector) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!("{e:#}");
                    later.push((item, now + MINUTE_MS));
                    continue;
                }
            };
            if let Some(until) = link.paused_at(now) {
                item.paused_until_ms = until;
                // A callback whose hold ends before the pause does waits until its last try,
                // and fails then, its contact still held (its failed row came once the pause
                // ended, up to a day late).
                let last = planning::callback_deadline(&item, webhook.window, now);
                match item.held_by_hubspot() && until > last {
                    true if now >= last => {
                        let hold_end = planning::hold_end(&item, webhook.window);
                        let r = send::held_past_hold(
                            &item,
                            &link.id,
                            &target,
                            HeldBy::Pause,
                            (Some(until), hold_end),
                            now,
                        );
                        lost.push(r);
                        lost_items.push(item);
                    }
                    true => later.push((item, last)),
                    false => later.push((item, until)),
                }
                continue;
            }
            item.paused_until_ms = 0;
            match &webhook.target {
                Target::Workflow(workflow) => jobs.push(Job::Enroll(link, *workflow, item)),
                Target::List(_) => {
                    let batch = link.list_batch(connector);
                    lists
                        .entry((connector.id.clone(), target))
                        .or_insert_with(|| (link, batch, Vec::new()))
                        .2
                        .push(item);
                }
                Target::Callback => {
                    let batch = connector.callback_batch_size.max(1);
                    callbacks
                        .entry((connector.id.clone(), String::new()))
                        .or_insert_with(|| (link, batch, Vec::new()))
                        .2
                        .push(item);
                }
            }
        }
        for (webhook, n) in newly_held {
            let total = self.held.get(&webhook).map_or(0, Vec::len);
            self.metrics.held(&webhook).set(total as i64);
            // Which of the causes, where the config says (it listed them all; an audit).
            let why = match config.webhook(&webhook) {
                None => "not in the config",
                Some(_) => crate::config::HELD_AS_CHANGED,
            };
            tracing::warn!(
                webhook = %webhook,
                newly_held = n,
                held = total,
                "{why}: {}",
                crate::config::held_until_back(&webhook)
            );
        }
        if !dry.is_empty() {
            let list_batches = number_dry_batches(&mut dry, config);
            tracing::info!(
                calls = dry.len(),
                list_batches,
                "dry run: recorded the calls it would make"
            );
            let recorded = self.finish_recorded(dry_items, dry, Status::DryRun, report);
            if let Err((dry_items, e)) = recorded.await {
                tracing::error!("{e:#} (the dry run's receipts are tried again at the next tick)");
                later.extend(dry_items.into_iter().map(|item| (item, now + MINUTE_MS)));
            }
        }
        if !lost.is_empty() {
            tracing::warn!(
                callbacks = lost.len(),
                "callbacks failed: paused (their connector, or by an operator) past HubSpot's hold on their contacts"
            );
            let recorded = self.finish_recorded(lost_items, lost, Status::Failed, report);
            if let Err((items, e)) = recorded.await {
                tracing::error!("{e:#} (the callbacks are looked at again at the next tick)");
                later.extend(items.into_iter().map(|item| (item, now + MINUTE_MS)));
            }
        }
        // Batches first: a few calls carry many contacts.
        let mut list_jobs: Vec<Job> = Vec::new();
        for ((_, list), (link, batch, items)) in lists {
            for chunk in into_batches(items, batch) {
                list_jobs.push(Job::List(link.clone(), list.clone(), chunk));
            }
        }
        for (_, (link, batch, items)) in callbacks {
            for chunk in into_batches(items, batch) {
                list_jobs.push(Job::Complete(link.clone(), chunk));
            }
        }
        // The batch whose first contact is the most overdue first, whatever its list: out of
        // a `HashMap`, which batches went before the day's budget ran out mid-tick changed
        // from run to run (an audit).
        let first = |job: &Job| match job {
            Job::List(_, _, items) | Job::Complete(_, items) => {
                items.first().map(|i| (i.ready_at_ms, i.receipt_id.clone()))
            }
            Job::Enroll(..) => None,
        };
        list_jobs.sort_by_cached_key(first);
        list_jobs.extend(jobs);
        let pacing = calls_take(
            list_jobs.iter().map(|job| match job {
                Job::Enroll(link, ..) | Job::List(link, ..) | Job::Complete(link, _) => {
                    link.id.as_str()
                }
            }),
            config,
        );
        for (mut item, at) in later {
            item.ready_at_ms = at;
            report.requeued += 1;
            self.requeue(item);
        }

        let ctx = Arc::new(Ctx {
            log: self.log.clone(),
            clock: self.clock.clone(),
            metrics: self.metrics.clone(),
            stop: stop.clone(),
            horizon: tokio::time::Instant::now() + pacing + IN_TICK_RETRY_HORIZON,
            pauses: pauses_now,
            calls: Default::default(),
            day_left: crate::capacity::DayLeft::new(config, &self.spent, now),
            holds: config
                .webhooks
                .iter()
                .filter_map(|w| {
                    let route = capacity::route(config, w);
                    route.holds().then(|| (w.id.clone(), route.window))
                })
                .collect(),
        });
        let deadline: Deadline = &|item, now| ctx.callback_deadline(item, now);
        let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let mut flight = InFlight::default();
        let mut jobs = list_jobs.into_iter();
        loop {
            if *stop.borrow() {
                break;
            }
            let Some(job) = jobs.next() else { break };
            // Waiting for a call to end: a lookup is answered meanwhile.
            let permit = loop {
                let lookup = tokio::select! {
                    permit = slots.clone().acquire_owned() => break permit.expect("never closed"),
                    lookup = self.lookups.next() => lookup,
                };
                self.answer(config, lookup);
            };
            let task_ctx = ctx.clone();
            let (carried, call) = match &job {
                Job::Enroll(link, wf, item) => {
                    (vec![item.clone()], Call::Enroll(*wf, link.clone()))
                }
                Job::List(_, _, items) => (items.clone(), Call::List),
                Job::Complete(_, items) => (items.clone(), Call::Complete),
            };
            flight.spawn(carried, call, async move {
                let ctx = task_ctx;
                let out = match job {
                    Job::Enroll(link, wf, item) => vec![send::enroll(ctx, link, wf, item).await],
                    Job::List(link, list, items) => send::list_add(ctx, link, list, items).await,
                    Job::Complete(link, items) => send::complete(ctx, link, items).await,
                };
                drop(permit);
                out
            });
            while let Some(done) = flight.try_next(self.clock.now_ms(), deadline) {
                self.settle(done, report);
                self.fail_panicked(flight.take_failed(), report).await;
            }
        }
        // Shutting down: what was not started stays queued, untouched.
        for job in jobs {
            let items = match job {
                Job::Enroll(_, _, item) => vec![item],
                Job::List(_, _, items) | Job::Complete(_, items) => items,
            };
            for item in items {
                report.requeued += 1;
                self.enqueue(item);
            }
        }
        let clock = self.clock.clone();
        loop {
            let lookup = tokio::select! {
                done = flight.next(|| clock.now_ms(), deadline) => match done {
                    Some(done) => Ok(done),
                    None => break,
                },
                lookup = self.lookups.next() => Err(lookup),
            };
            match lookup {
                Ok(done) => {
                    self.settle(done, report);
                    self.fail_panicked(flight.take_failed(), report).await;
                }
                Err(lookup) => self.answer(config, lookup),
            }
        }
        for (connector, at) in ctx.calls.lock().expect("not poisoned").drain(..) {
            self.spent.record(&connector, at, 1);
        }
        self.spent.forget_before(now);
    }

    /// Write `rows`, the final rows (each `status`) of `items`, and finish them; the items
    /// back when the rows cannot be written.
    async fn finish_recorded(
        &mut self,
        items: Vec<Pending>,
        rows: Vec<OutcomeRow>,
        status: Status,
        report: &mut TickReport,
    ) -> Result<(), (Vec<Pending>, anyhow::Error)> {
        let board = crate::admin::board::Outcomes::of(&rows);
        let n = rows.len() as u64;
        if let Err(e) = self.log.write(rows).await {
            return Err((items, e));
        }
        self.metrics.outcome(status.as_str()).inc_by(n);
        self.metrics.board.publish(board);
        for item in items {
            self.finish(&item, status, report);
        }
        Ok(())
    }

    /// Record the contacts a panicked task failed for good ([`InFlight::take_failed`]) and
    /// finish them; rows that cannot be written leave them for a restart, in doubt.
    async fn fail_panicked(&mut self, failed: Vec<(Pending, OutcomeRow)>, report: &mut TickReport) {
        if failed.is_empty() {
            return;
        }
        let (items, rows) = failed.into_iter().unzip();
        if let Err((_, e)) = self
            .finish_recorded(items, rows, Status::Failed, report)
            .await
        {
            tracing::error!("{e:#} (the contacts are left for a restart, in doubt)");
        }
    }

    fn settle(&mut self, results: Vec<(Pending, Next)>, report: &mut TickReport) {
        for (mut item, next) in results {
            match next {
                Next::Done(status) => self.finish(&item, status, report),
                Next::Again(at) => {
                    item.ready_at_ms = at;
                    report.requeued += 1;
                    self.requeue(item);
                }
                Next::Held(at) => {
                    item.ready_at_ms = at;
                    report.requeued += 1;
                    self.enqueue(item);
                }
            }
        }
    }

    fn finish(&mut self, item: &Pending, status: Status, report: &mut TickReport) {
        match status {
            Status::Enrolled => report.enrolled += 1,
            Status::Listed => report.listed += 1,
            Status::Completed => report.completed += 1,
            Status::Failed => report.failed += 1,
            Status::DryRun => report.dry_run += 1,
            Status::Attempting | Status::Retrying => {}
        }
        self.planned.remove(&item.receipt_id);
        self.done.insert(item.receipt_id.clone());
        let contact = Contact {
            webhook_id: &item.webhook_id,
            contact_id: item.contact_id,
            email: item.email.as_deref(),
            callback_id: item.callback_id.as_deref(),
            body: None,
            sends_as: None,
        };
        self.pending.release(contact, &item.receipt_id.to_string());
    }

    /// The data folder this dispatcher works on.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

/// The connector that writes the row of an enrollment HubSpot took ([`Pending::only_row_left`]):
/// its webhook's, else one of the account it was taken for (its webhook removed or moved; an
/// older version's receipt names no account, and only its webhook's may).
fn row_connector<'c>(config: &'c Config, item: &Pending) -> Option<&'c Connector> {
    let account = |c: &&Connector| item.account().is_none_or(|a| c.portal_id == a);
    (config.webhook(&item.webhook_id))
        .and_then(|w| config.connector(&w.connector))
        .filter(account)
        .or_else(|| {
            let a = item.account()?;
            config.connectors.iter().find(|c| c.portal_id == a)
        })
}

/// The webhook that sends `item` now ([`Config::route`]): none for one made an action of
/// the same id since (or the reverse), which has no callback to complete for a webhook's
/// receipt and would enroll a contact HubSpot holds in the action, one whose type changed
/// between a list's and an enrolling one, or one moved to another account's connector.
fn route<'c>(config: &'c Config, item: &Pending) -> Option<&'c crate::config::Webhook> {
    let callback = item.callback_id.is_some();
    let enrolls = Some(item.webhook_type.enrolls());
    config.route(&item.webhook_id, callback, enrolls, item.account())
}

/// When a due contact may go, if `now` is in its quiet hours: one that came due while
/// nothing ran (or between the ticks of a sparse cron) waits for its morning. Timed sends
/// only, not held out; a workflow action's contact only when its quiet hours end by its
/// release-by.
fn quiet_until(config: &Config, item: &Pending, now: i64) -> Option<i64> {
    // Quiet hours do not hold a row left to write.
    if item.only_row_left() {
        return None;
    }
    let route = capacity::route(config, config.webhook(&item.webhook_id)?);
    let (zone, quiet) = route.quiet_for(item)?;
    let release_by = route
        .holds()
        .then(|| planning::release_by(item, route.window));
    quiet.hold_until(zone, item.ready_at_ms, release_by, now)
}

/// Say in each dry-run list add which batch it would go in (batches of the connector's
/// `list_batch_size`, per list), so a dry run previews the batching too. Returns the number
/// of batches.
fn number_dry_batches(dry: &mut [OutcomeRow], config: &Config) -> usize {
    // (connector, list or "" for callbacks, action) → rows
    let mut batches: HashMap<(&str, &str, Action), Vec<usize>> = HashMap::new();
    for (i, r) in dry.iter().enumerate() {
        match r.action {
            Action::ListAdd => batches.entry((&r.connector, &r.target, r.action)),
            Action::Complete => batches.entry((&r.connector, "", r.action)),
            Action::Enroll => continue,
        }
        .or_default()
        .push(i);
    }
    let mut numbered: Vec<(usize, String)> = Vec::new();
    let mut total = 0;
    for ((connector, _, action), rows) in batches {
        let size = config.connector(connector).map_or(1, |c| {
            match action {
                Action::Complete => c.callback_batch_size,
                _ => c.list_batch_size,
            }
            .max(1)
        });
        let batches = rows.len().div_ceil(size);
        total += batches;
        for (k, chunk) in rows.chunks(size).enumerate() {
            let n = chunk.len();
            let what = match action {
                Action::Complete => "callback",
                _ => "record",
            };
            let note = format!(
                " (batch {} of {batches}, {n} {what}{})",
                k + 1,
                if n == 1 { "" } else { "s" }
            );
            numbered.extend(chunk.iter().map(|&i| (i, note.clone())));
        }
    }
    for (i, note) in numbered {
        if let Some(m) = dry[i].message.as_mut() {
            m.push_str(&note);
        }
    }
    total
}

fn dry_run_message(action: Action, item: &Pending, target: &str) -> String {
    let who = item
        .email
        .as_deref()
        .map(str::to_string)
        .or(item.contact_id.map(|c| c.to_string()))
        .unwrap_or_default();
    match action {
        Action::Enroll => format!("dry run: would enroll {who} into workflow {target}"),
        Action::ListAdd => format!(
            "dry run: would add record {} to list {target}",
            item.contact_id.map(|c| c.to_string()).unwrap_or(who)
        ),
        Action::Complete if item.dry_run_only => format!(
            "dry run: would complete callback {target} (contact {who}) now; answered in dry run, it went on at receipt"
        ),
        Action::Complete => format!(
            "dry run: would complete callback {target} (contact {who}) now; held before the dry run began, its hold at HubSpot ended in dry run: never completed"
        ),
    }
}

/// `items` in batches of at most `size`, each holding only its own items: split off from one
/// vector, every batch would keep the capacity of all that followed it (for 500,000 contacts
/// in batches of 100, gigabytes).
fn into_batches(items: Vec<Pending>, size: usize) -> Vec<Vec<Pending>> {
    let mut items = items.into_iter();
    std::iter::from_fn(|| {
        let batch: Vec<Pending> = items.by_ref().take(size).collect();
        (!batch.is_empty()).then_some(batch)
    })
    .collect()
}

/// `sendtime tick`: one tick from the state on disk, for hosts that prefer system cron. A
/// first SIGINT or SIGTERM stops it as it stops `serve`'s: the calls in flight finish and are
/// recorded, and nothing new starts (killed mid-call, each contact in flight was left in
/// doubt, for the next run to check with HubSpot; an audit); a second stops it at once.
/// Returns the signal that stopped it, if one did.
pub fn run_once(
    config: &Config,
    now_ms: Option<i64>,
) -> anyhow::Result<(TickReport, Option<&'static str>)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let data_dir = &config.server.data_dir;
        let metrics = Metrics::new();
        let clock = now_ms.map_or(Clock::System, Clock::Fixed);
        // Before the dispatcher opens: one that failed after would be dropped unclosed.
        let mut signals = crate::serve::Signals::install(false)?;
        // Opening replays the inbox log a stopped server left, so its receipts count.
        let mut dispatcher =
            tokio::task::block_in_place(|| Dispatcher::open(data_dir, metrics, clock))?;
        let (stop_tx, stop) = watch::channel(false);
        let signalled = Arc::new(std::sync::OnceLock::new());
        let first_signal = signalled.clone();
        let handler: tokio::task::JoinHandle<()> = tokio::spawn(async move {
            let why = signals.next().await;
            first_signal.get_or_init(|| why);
            tracing::warn!(
                "{why}: finishing the calls in flight and recording them; nothing new starts (a second signal stops at once)"
            );
            let _ = stop_tx.send(true);
            let again = signals.next_apart_from(tokio::time::Instant::now()).await;
            tracing::error!(
                "{again} again: stopping now; the next run checks the calls in flight with HubSpot"
            );
            std::process::exit(130);
        });
        let report = dispatcher.tick(config, stop).await;
        // A signal while the dispatcher closes stopped nothing the tick would have done.
        let stopped = signalled.get().copied();
        tokio::task::block_in_place(|| dispatcher.close());
        handler.abort();
        Ok((report?, stopped))
    })
}

/// A queue entry: the heap puts the earliest ready time (then the lowest receipt id) on top.
struct Queued(Pending);

impl Queued {
    fn key(&self) -> (i64, &ReceiptId) {
        (self.0.ready_at_ms, &self.0.receipt_id)
    }
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Queued {}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Queued {
    fn cmp(&self, other: &Self) -> Ordering {
        other.key().cmp(&self.key())
    }
}

/// The shared copy of a webhook id.
fn intern(set: &mut HashSet<Arc<str>>, id: &str) -> Arc<str> {
    if let Some(x) = set.get(id) {
        return x.clone();
    }
    let x: Arc<str> = Arc::from(id);
    set.insert(x.clone());
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link to connector `main`, which tests never call: nothing listens there.
    pub(super) fn link() -> Arc<connector::Link> {
        use crate::hubspot::{Client, ClientOptions};
        let client = Client::new("http://127.0.0.1:9", "t", ClientOptions::default()).unwrap();
        Arc::new(connector::Link::new("main".into(), client, None))
    }

    /// A config of one connector in dry run, with `connector`'s lines, and one webhook `w` of
    /// type `kind` (into workflow 1).
    pub(super) fn config(connector: &str, kind: &str) -> Config {
        let text = format!(
            "version = 1\n[server]\npublic_url = \"https://hooks.example.com\"\n\n\
             [[connector]]\nid = \"main\"\nportal_id = 62515\napp_id = 54321\n\
             client_secret_env = \"DISPATCH_TEST_SECRET\"\n\
             access_token_env = \"DISPATCH_TEST_TOKEN\"\ndry_run = true\n{connector}\n\n\
             [[webhook]]\nid = \"w\"\ntype = \"{kind}\"\nworkflow_id = 1\n"
        );
        let path = std::path::Path::new("webhooks.toml");
        let env = crate::config::EnvCheck::Warn;
        match Config::from_text(path, &text, &Default::default(), env) {
            Ok(loaded) => loaded.config,
            Err(d) => panic!("{d:?}"),
        }
    }

    /// A tick's calls take as long as their connector's pace allows: a minute's 950 calls at
    /// 190 per 10 s, 50 s, within which (and 30 s more) its retries are waited out.
    #[test]
    fn calls_take_as_long_as_their_connectors_pace() {
        let config = config("requests_per_10s = 190", "NEXT_24_HOURS");
        let take = |n: usize| calls_take(std::iter::repeat_n("main", n), &config);
        assert_eq!(take(950), Duration::from_secs(50));
        assert_eq!(take(19), Duration::from_secs(1));
        assert_eq!(take(0), Duration::ZERO);
        // A connector no longer configured (a link kept from before a reload) counts none.
        let gone = calls_take(["main", "gone", "gone", "gone"].into_iter(), &config);
        assert_eq!(gone, Duration::from_millis(10_000 / 190));
    }

    /// A timed contact due 40 s before its quiet hours begin goes at the tick in their first
    /// minute; one due 20 s into them, or five minutes before them, waits for their end (the
    /// first waited too).
    #[test]
    fn a_contact_due_in_the_minute_before_quiet_hours_is_not_held_for_them() {
        use crate::time::HOUR_MS;
        let config = config("quiet_hours = \"21:00-08:00\"", "NEXT_24_HOURS");
        let midnight = 1_795_737_600_000; // 2026-11-27 00:00 UTC
        let nine_pm = midnight + 21 * HOUR_MS;
        let due = |ready_at_ms| Pending {
            webhook_type: crate::config::WebhookType::Next24Hours,
            ready_at_ms,
            ..pending(1)
        };
        assert_eq!(quiet_until(&config, &due(nine_pm - 40_000), nine_pm), None);
        let morning = midnight + 32 * HOUR_MS;
        // Overdue longer (a sparse cron, a gap): judged now, as before.
        let overdue = due(nine_pm - 5 * MINUTE_MS);
        assert_eq!(
            quiet_until(&config, &overdue, nine_pm + 30_000),
            Some(morning)
        );
        assert_eq!(
            quiet_until(&config, &due(nine_pm + 20_000), nine_pm + MINUTE_MS),
            Some(morning)
        );
    }

    /// Ledgers built again keep a retry due in the minute before its contact's quiet hours at
    /// its time, as its send judges them (they moved it to the morning), and move one due in
    /// them to their end.
    #[tokio::test]
    async fn a_rebuild_keeps_a_retry_due_just_before_quiet_hours() {
        use crate::time::HOUR_MS;
        let dir = tempfile::tempdir().unwrap();
        let config = config("quiet_hours = \"21:00-08:00\"", "NEXT_24_HOURS");
        let nine_pm = 1_795_737_600_000 + 21 * HOUR_MS; // 2026-11-27 21:00 UTC
        let clock = crate::clock::Clock::Fixed(nine_pm);
        let mut d = Dispatcher::open(dir.path(), Metrics::new(), clock).unwrap();
        d.requeue(Pending {
            webhook_type: crate::config::WebhookType::Next24Hours,
            attempts: 1,
            failures: 1,
            due_at_ms: nine_pm - 10 * MINUTE_MS,
            ready_at_ms: nine_pm - 40_000,
            ..pending(1)
        });
        d.capacities(&config, nine_pm);
        let ready: Vec<i64> = d.queue.iter().map(|q| q.0.ready_at_ms).collect();
        assert_eq!(ready, [nine_pm - 40_000]);
        // A retry due in them, the ledgers built before they begin: moved to their end.
        d.capacity = None;
        d.queue.peek_mut().unwrap().0.ready_at_ms = nine_pm + 30 * MINUTE_MS;
        d.capacities(&config, nine_pm - 10 * MINUTE_MS);
        let ready: Vec<i64> = d.queue.iter().map(|q| q.0.ready_at_ms).collect();
        assert_eq!(ready, [nine_pm + 11 * HOUR_MS]);
        d.close();
    }

    /// A callback put off by its connector's pause keeps its time when the ledgers are built
    /// again, though its release-by has gone by: pulled to now, it came back at every tick,
    /// each building them again, for the rest of the pause (an audit).
    #[tokio::test]
    async fn a_rebuild_keeps_a_callback_put_off_by_a_pause_at_its_time() {
        let dir = tempfile::tempdir().unwrap();
        let text = "version = 1\n[server]\npublic_url = \"https://hooks.example.com\"\n\
                    [[connector]]\nid = \"main\"\nportal_id = 62515\napp_id = 54321\n\
                    client_secret_env = \"DISPATCH_TEST_SECRET\"\n\
                    access_token_env = \"DISPATCH_TEST_TOKEN\"\n\
                    [[action]]\nid = \"w\"\nname = \"Send at the best time\"\n";
        let env = crate::config::EnvCheck::Warn;
        let path = std::path::Path::new("webhooks.toml");
        let config = Config::from_text(path, text, &Default::default(), env)
            .unwrap_or_else(|d| panic!("{d:?}"))
            .config;
        let now = 1_795_737_600_000;
        let clock = crate::clock::Clock::Fixed(now);
        let mut d = Dispatcher::open(dir.path(), Metrics::new(), clock).unwrap();
        // Its release-by five minutes ago; its last try in four minutes, before the pause ends.
        let item = |paused_until_ms| Pending {
            callback_id: Some("cb".into()),
            hold_ends_ms: Some(now + 5 * MINUTE_MS),
            ready_at_ms: now + 4 * MINUTE_MS,
            paused_until_ms,
            ..pending(1)
        };
        d.requeue(item(now + 10 * MINUTE_MS));
        d.capacities(&config, now);
        let ready: Vec<i64> = d.queue.iter().map(|q| q.0.ready_at_ms).collect();
        assert_eq!(ready, [now + 4 * MINUTE_MS]);
        // Not put off by a pause: kept to its release-by, which is now.
        d.queue.clear();
        d.requeue(item(0));
        d.capacities(&config, now);
        let ready: Vec<i64> = d.queue.iter().map(|q| q.0.ready_at_ms).collect();
        assert_eq!(ready, [now]);
        d.close();
    }

    pub(super) fn pending(n: u64) -> Pending {
        Pending {
            receipt_id: ReceiptId::new(&format!("r{n}")),
            webhook_id: Arc::from("w"),
            contact_id: Some(n as i64),
            email: None,
            callback_id: None,
            due_at_ms: 0,
            attempts: 0,
            failures: 0,
            in_doubt: false,
            doubted_twice: false,
            doubt_workflow: None,
            enrolled_at_ms: 0,
            paused_until_ms: 0,
            ready_at_ms: 0,
            holdout: false,
            dry_run_only: false,
            zone: None,
            webhook_type: crate::config::WebhookType::Immediate,
            received_at_ms: 0,
            hold_ends_ms: None,
            portal: None,
        }
    }

    #[test]
    fn batches_keep_order_and_only_their_own_capacity() {
        let items: Vec<Pending> = (0..1050).map(pending).collect();
        let batches = into_batches(items, 100);
        assert_eq!(batches.len(), 11);
        assert!(batches.iter().all(|b| b.capacity() <= 100));
        assert_eq!(batches[10].len(), 50);
        let ids: Vec<i64> = batches
            .iter()
            .flatten()
            .filter_map(|p| p.contact_id)
            .collect();
        assert_eq!(ids, (0..1050).collect::<Vec<_>>());
    }

    /// An action's contact is released by the hold asked for on receipt whatever the window
    /// now (a retry of the execution gets that first answer too); a receipt that does not
    /// record its hold (an older version's) goes by the window.
    #[test]
    fn a_recorded_hold_decides_the_release() {
        use crate::config::WebhookType;
        use crate::model::plan::RELEASE_MARGIN_MS;
        use crate::time::{DAY_MS, HOUR_MS};
        let received = 1_000 * DAY_MS;
        let older = Pending {
            webhook_type: WebhookType::Next24Hours,
            received_at_ms: received,
            ..pending(1)
        };
        let recorded = Pending {
            hold_ends_ms: Some(received + 30 * HOUR_MS),
            ..older.clone()
        };
        for window in [None, Some(HOUR_MS), Some(6 * HOUR_MS), Some(7 * DAY_MS)] {
            assert_eq!(
                planning::release_by(&recorded, window),
                received + 30 * HOUR_MS - RELEASE_MARGIN_MS
            );
        }
        assert_eq!(
            planning::release_by(&older, Some(7 * DAY_MS)),
            received + 8 * DAY_MS - RELEASE_MARGIN_MS
        );
        assert_eq!(
            planning::release_by(&older, None),
            received + 2 * DAY_MS - RELEASE_MARGIN_MS
        );
    }
}
