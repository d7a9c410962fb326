//! The HubSpot import inside `serve`: at the times of `[import] cron`, each connector that
//! calls HubSpot (not in `dry_run`, not paused) imports the email events since its last run
//! (the same code and cursor as `sendtime import hubspot`, paced at the share planning
//! leaves). The dispatcher's profiles take the new event parts on its next tick.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::clock::Clock;
use crate::config::{ConfigHandle, Connector};
use crate::datasets::events::Appender;
use crate::dispatch::connector::{self, PauseReason, PausedBy};
use crate::import::hubspot::SharedAppender;
use crate::metrics::{ImportStatus, Metrics};
use crate::scheduler::{RECHECK, next_after};

/// Run imports until `stop` turns true (a run in progress finishes its page first). The cron
/// is on the system clock; the times `/status` shows and pauses are on `clock`, the
/// dispatcher's, and a window ends at its [`Clock::world_ms`].
pub async fn run(
    config: ConfigHandle,
    metrics: Metrics,
    clock: Clock,
    mut stop: watch::Receiver<bool>,
) {
    let mut last_fire: Option<DateTime<Utc>> = None;
    // Each account's round under way, and its connectors.
    let mut rounds: HashMap<u64, (tokio::task::JoinHandle<()>, Vec<String>)> = HashMap::new();
    // The rounds under way's: one copy of the contact dictionary, gone when they end.
    let mut appender: Weak<Mutex<Appender>> = Weak::new();
    loop {
        let snapshot = config.load_full();
        let now = Utc::now();
        if last_fire.is_some_and(|l| crate::scheduler::ahead_of_the_clock(l, now)) {
            tracing::warn!("the clock went back: scheduling imports from now");
            last_fire = None;
        }
        let from = last_fire.map_or(now, |l| l.max(now));
        let fire = next_after(&snapshot.import.schedule, from);
        let wait = (fire - now).to_std().unwrap_or_default().min(RECHECK);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
        let snapshot = config.load_full();
        // A cron changed while waiting: its own next fire, not the old one's.
        let still_due = next_after(&snapshot.import.schedule, from) == fire;
        if !snapshot.import.enabled
            || !still_due
            || Utc::now() + chrono::Duration::seconds(1) < fire
        {
            continue; // disabled, changed, or the once-a-minute look at the config
        }
        last_fire = Some(fire);
        // Each account's round beside the others': an account's first import may take days,
        // and a round that imported every connector in turn held the others' back that long
        // (an audit). One account's connectors go in turn (its import lock is one).
        rounds.retain(|_, (round, _)| !round.is_finished());
        let mut accounts: BTreeMap<u64, Vec<Connector>> = BTreeMap::new();
        for c in snapshot.connectors.iter().filter(|c| !c.dry_run) {
            accounts.entry(c.portal_id).or_default().push(c.clone());
        }
        // A connector moved to another account by a reload is still in its old round.
        let busy: HashSet<String> = rounds.values().flat_map(|(_, ids)| ids.clone()).collect();
        for (portal, connectors) in accounts {
            if rounds.contains_key(&portal) || connectors.iter().any(|c| busy.contains(&c.id)) {
                tracing::info!(
                    portal,
                    "scheduled HubSpot import skipped: the account's last round is still under way"
                );
                continue;
            }
            let ids = connectors.iter().map(|c| c.id.clone()).collect();
            let shared = appender.upgrade().unwrap_or_else(|| {
                let new = Arc::new(Mutex::new(Appender::new(&snapshot.server.data_dir)));
                appender = Arc::downgrade(&new);
                new
            });
            let round = tokio::spawn(round(
                config.clone(),
                snapshot.clone(),
                connectors,
                shared,
                metrics.clone(),
                clock.clone(),
                stop.clone(),
            ));
            rounds.insert(portal, (round, ids));
        }
    }
    // Each run under way stops after its page.
    for (_, (round, _)) in rounds {
        let _ = round.await;
    }
    tracing::info!("import scheduler stopped");
}

/// One account's connectors' imports, in turn.
async fn round(
    config: ConfigHandle,
    snapshot: Arc<crate::config::Config>,
    connectors: Vec<Connector>,
    appender: SharedAppender,
    metrics: Metrics,
    clock: Clock,
    stop: watch::Receiver<bool>,
) {
    let data_dir = &snapshot.server.data_dir;
    for connector in &connectors {
        // A round may last hours (a first import): the config in force now decides
        // whether each connector still imports, not the one the round began with.
        let now_config = config.load_full();
        if let Some(why) = unconfigured(&now_config, &connector.id) {
            tracing::info!(connector = %connector.id, "scheduled HubSpot import skipped: {why}");
            continue;
        }
        // And its settings: its client, built from the round's, put the installation's
        // client secrets back as they were, when a rotation had changed them since (an audit).
        let Some(connector) = (now_config.connector(&connector.id))
            .filter(|c| c.portal_id == connector.portal_id)
            .cloned()
        else {
            tracing::info!(connector = %connector.id, "scheduled HubSpot import skipped: the connector was moved to another account; it imports in that account's rounds");
            continue;
        };
        drop(now_config);
        if let Some(why) = paused(data_dir, &metrics, &connector.id, clock.now_ms()) {
            tracing::info!(connector = %connector.id, "scheduled HubSpot import skipped: the connector is paused ({why})");
            let why = format!("skipped: the connector is paused ({why})");
            metrics.import_paused(&connector.id, clock.now_ms(), &why);
            continue;
        }
        let (handle, config, c) = (config.clone(), snapshot.clone(), connector.clone());
        let (stopping, watching, run_clock) = (stop.clone(), metrics.clone(), clock.clone());
        let shared = appender.clone();
        // Why the run stopped, when a pause came while it ran.
        let halted = Arc::new(Mutex::new(None));
        let halting = halted.clone();
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || {
            let (data_dir, id) = (config.server.data_dir.clone(), c.id.clone());
            let pauses = crate::pauses::Watch::new(&data_dir);
            let now = run_clock.clone();
            let current = handle.clone();
            crate::import::hubspot::run_in_background(&current, &c, run_clock, shared, move || {
                if *stopping.borrow() {
                    return Some("shutting down");
                }
                let why = unconfigured(&handle.load(), &id)
                    .or_else(|| halted_by(&pauses, &watching, &data_dir, &id, now.now_ms()))?;
                *halting.lock().unwrap() = Some(why);
                Some(why)
            })
        })
        .await;
        let result = match result {
            Ok(r) => r,
            Err(e) => Err(anyhow::anyhow!("the import task failed: {e}")),
        };
        let at = clock.now_ms();
        // Cut short by the shutdown or a pause: not a failure (the next run resumes there).
        if result.is_err() && *stop.borrow() {
            tracing::info!(connector = %connector.id, "scheduled HubSpot import stopped for the shutdown; the next run resumes where it stopped");
            return;
        }
        let halted = *halted.lock().unwrap();
        if let (Err(e), Some(why)) = (&result, halted) {
            tracing::info!(connector = %connector.id, "scheduled HubSpot import {e:#}");
            let why = format!("stopped: {why} (the next run resumes where it stopped)");
            metrics.import_paused(&connector.id, at, &why);
            continue;
        }
        match &result {
            Ok(summary) => tracing::info!(
                connector = %connector.id,
                new = summary.stored,
                took_ms = started.elapsed().as_millis() as u64,
                "scheduled HubSpot import done"
            ),
            Err(e) => tracing::warn!(
                connector = %connector.id,
                "scheduled HubSpot import failed (the next run resumes where it stopped): {e:#}"
            ),
        }
        metrics.import_finished(
            &connector.id,
            at,
            result.as_ref().map_err(|e| format!("{e:#}")),
        );
        if *stop.borrow() {
            return;
        }
    }
}

/// Why `connector` makes no calls now, if so. An operator's pause may protect a limit shared
/// with another integration, and HubSpot would refuse calls under its own pause (a refused
/// token, the daily limit); a pause stored by an earlier run (the daily limit, an account's
/// migration) counts before the dispatcher's first tick shows it.
fn paused(data_dir: &Path, metrics: &Metrics, connector: &str, now: i64) -> Option<&'static str> {
    let pauses = crate::pauses::read_or_hold(data_dir);
    let link = metrics.board.link(connector);
    let stored = || connector::stored_pause_of(data_dir, connector, now);
    connector::paused(&pauses, link.as_deref(), connector, now)
        .map(|(why, _)| why)
        .or_else(|| stored().map(|(_, why)| PausedBy::HubSpot(why)))
        .map(PausedBy::as_str)
}

/// Why the config in force no longer has `connector` import, if so: a reload that turned
/// imports off, took the connector out or put it in `dry_run` stopped no run under way
/// (an audit).
fn unconfigured(config: &crate::config::Config, connector: &str) -> Option<&'static str> {
    if !config.import.enabled {
        return Some("imports were turned off in the config");
    }
    match config.connector(connector) {
        None => Some("the connector was taken out of the config"),
        Some(c) if c.dry_run => Some("the connector was put in dry_run"),
        Some(_) => None,
    }
}

/// Why a run under way stops for a pause, if so: an operator's pause of its connector (or a
/// pause file that cannot be read, which holds everything), HubSpot's daily limit or an
/// account's migration. HubSpot's short holds (a refused or missing token) are left to the
/// run's own retries.
fn halted_by(
    pauses: &crate::pauses::Watch,
    metrics: &Metrics,
    data_dir: &Path,
    connector: &str,
    now: i64,
) -> Option<&'static str> {
    let pauses = pauses.current();
    if pauses.unreadable {
        return Some("the pause file cannot be read");
    }
    if pauses.connectors.contains_key(connector) {
        return Some("the connector was paused");
    }
    let why = (metrics.board.link(connector))
        .and_then(|l| l.pause_at(now))
        .map(|(_, why)| why)
        .filter(|why| why.lasts())
        .or_else(|| connector::stored_pause_of(data_dir, connector, now).map(|(_, why)| why));
    why.map(|why| match why {
        PauseReason::AccountMigrating => {
            "HubSpot is moving the account between data hosting locations"
        }
        _ => "HubSpot's daily limit was reached",
    })
}

/// What `/status` shows for a connector's imports.
pub fn status(
    previous: Option<&ImportStatus>,
    at_ms: i64,
    result: Result<&crate::import::hubspot::Summary, String>,
) -> ImportStatus {
    let mut s = previous.cloned().unwrap_or_default();
    s.last_run_at_ms = Some(at_ms);
    s.paused = None;
    match result {
        Ok(summary) => {
            s.last_success_at_ms = Some(at_ms);
            s.complete_until_ms = summary.complete_until_ms;
            s.last_new_events = summary.stored;
            s.last_error = None;
        }
        Err(e) => s.last_error = Some(e),
    }
    s
}
