//! What `/status` (and so the dashboard) shows that neither the metrics nor the files hold in a
//! readable form: per-endpoint tallies, the latest outcomes, the connectors' live state and the
//! population's heat map. The receiver and the dispatcher publish here; the admin surface
//! reads. Everything is bounded: endpoints are configured ids plus [`UNKNOWN`], outcomes a ring
//! of [`LATEST`], connectors the configured ones.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::datasets::outcomes::{OutcomeRow, Status};
use crate::dispatch::connector::Link;

/// The key of posts to ids that are not configured, however many strangers try.
pub const UNKNOWN: &str = "(unknown)";
/// Outcomes kept for the dashboard.
pub const LATEST: usize = 50;

/// One webhook's or action's counts since the process started.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Tally {
    /// Posts stored as new receipts.
    pub accepted: u64,
    /// Posts for a contact already pending there (HubSpot's retries).
    pub duplicates: u64,
    /// Posts refused, by reason.
    pub refused: BTreeMap<&'static str, u64>,
    /// Enrolled, listed or completed.
    pub sent: u64,
    pub failed: u64,
    pub dry_run: u64,
    /// Calls that failed and are tried again.
    pub retrying: u64,
}

/// What became of one post, as the receiver counts it.
#[derive(Debug, Clone, Copy)]
pub enum Post {
    Accepted,
    Duplicate,
    Refused(&'static str),
}

/// A connector's last failed call.
#[derive(Debug, Clone, Serialize)]
pub struct LastError {
    pub at_ms: i64,
    pub webhook: String,
    pub http_status: Option<u16>,
    pub message: String,
}

/// One recent outcome, as the dashboard lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Latest {
    pub at_ms: i64,
    pub receipt_id: String,
    pub webhook: String,
    pub connector: String,
    pub action: &'static str,
    pub target: String,
    pub status: &'static str,
    pub http_status: Option<u16>,
    pub message: Option<String>,
}

/// What a batch of outcome rows adds to the board: made before the rows are written (they go
/// to the writer), published once they are durable, so a failed write shows nothing but its
/// retries (their rows are not written again).
#[derive(Debug, Default)]
pub struct Outcomes {
    /// Per webhook: sent, failed, retrying, dry run.
    tallies: Vec<(String, [u64; 4])>,
    /// Each connector's last failed call in the batch.
    errors: Vec<(String, LastError)>,
    /// The batch's latest rows, newest first.
    latest: Vec<Latest>,
}

impl Outcomes {
    pub fn of(rows: &[OutcomeRow]) -> Outcomes {
        Outcomes::of_status(rows, |s| s != Status::Attempting)
    }

    /// [`Outcomes::of`] the rows whose status is `shown`.
    pub fn of_status(rows: &[OutcomeRow], shown: impl Fn(Status) -> bool) -> Outcomes {
        let mut tallies: std::collections::HashMap<&str, [u64; 4]> = Default::default();
        let mut errors: std::collections::HashMap<&str, &OutcomeRow> = Default::default();
        let done = || rows.iter().filter(|r| shown(r.status));
        for r in done() {
            let at = match r.status {
                Status::Enrolled | Status::Listed | Status::Completed => 0,
                Status::Failed => 1,
                Status::Retrying => 2,
                Status::DryRun | Status::Attempting => 3,
            };
            tallies.entry(&r.webhook_id).or_default()[at] += 1;
            if matches!(r.status, Status::Failed | Status::Retrying) {
                errors.insert(&r.connector, r);
            }
        }
        Outcomes {
            tallies: tallies
                .into_iter()
                .map(|(w, t)| (w.to_string(), t))
                .collect(),
            errors: errors
                .into_iter()
                .map(|(c, r)| {
                    let error = LastError {
                        at_ms: r.at_ms,
                        webhook: r.webhook_id.clone(),
                        http_status: r.http_status,
                        message: r.message.clone().unwrap_or_default(),
                    };
                    (c.to_string(), error)
                })
                .collect(),
            latest: done()
                .rev()
                .take(LATEST)
                .map(|r| Latest {
                    at_ms: r.at_ms,
                    receipt_id: r.receipt_id.clone(),
                    webhook: r.webhook_id.clone(),
                    connector: r.connector.clone(),
                    action: r.action.as_str(),
                    target: r.target.clone(),
                    status: r.status.as_str(),
                    http_status: r.http_status,
                    message: r.message.clone(),
                })
                .collect(),
        }
    }
}

#[derive(Default)]
struct State {
    endpoints: BTreeMap<String, Tally>,
    latest: VecDeque<Latest>,
    errors: BTreeMap<String, LastError>,
    links: BTreeMap<String, Arc<Link>>,
    population: Option<Arc<[f64]>>,
    planning_error: Option<String>,
    /// Why the config file as it is now was not loaded, while it is not.
    config_rejected: Option<String>,
    /// Why the last write to a dataset failed, until one succeeds, by dataset.
    write_errors: BTreeMap<&'static str, String>,
    /// Contacts held for ids the config no longer routes, by id.
    held: BTreeMap<String, usize>,
}

/// Shared by the receiver, the dispatcher and the admin surface.
#[derive(Default)]
pub struct Board(Mutex<State>);

impl Board {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Count a post to `endpoint`, which must be a configured id or [`UNKNOWN`].
    pub fn post(&self, endpoint: &str, post: Post) {
        let mut state = self.state();
        let tally = state.endpoints.entry(endpoint.to_string()).or_default();
        match post {
            Post::Accepted => tally.accepted += 1,
            Post::Duplicate => tally.duplicates += 1,
            Post::Refused(reason) => *tally.refused.entry(reason).or_default() += 1,
        }
    }

    /// Publish what a batch of outcome rows added: once the rows are durable, or its retries
    /// alone when they could not be written ([`Outcomes`]).
    pub fn publish(&self, outcomes: Outcomes) {
        let mut state = self.state();
        for (webhook, [sent, failed, retrying, dry_run]) in outcomes.tallies {
            let tally = state.endpoints.entry(webhook).or_default();
            tally.sent += sent;
            tally.failed += failed;
            tally.retrying += retrying;
            tally.dry_run += dry_run;
        }
        state.errors.extend(outcomes.errors);
        // Oldest first, so the newest ends up in front.
        for latest in outcomes.latest.into_iter().rev() {
            if state.latest.len() == LATEST {
                state.latest.pop_back();
            }
            state.latest.push_front(latest);
        }
    }

    /// The dispatcher's connectors as of now (replacing the ones it no longer has).
    pub fn set_links<'l>(&self, links: impl Iterator<Item = &'l Arc<Link>>) {
        self.state().links = links.map(|l| (l.id.clone(), l.clone())).collect();
    }

    /// The population's engagement per hour-of-week slot (Monday 00:00 UTC first).
    pub fn set_population(&self, population: &[f64]) {
        self.state().population = Some(population.into());
    }

    /// Why the last tick could not plan new receipts (`None` once one could).
    pub fn set_planning_error(&self, error: Option<String>) {
        self.state().planning_error = error;
    }

    pub fn planning_error(&self) -> Option<String> {
        self.state().planning_error.clone()
    }

    /// Why the config file was not loaded at its last change (`None` once it is, or is the
    /// config in force again): the log and a gauge said so, the dashboard did not (an audit).
    pub fn set_config_rejected(&self, why: Option<String>) {
        self.state().config_rejected = why;
    }

    pub fn config_rejected(&self) -> Option<String> {
        self.state().config_rejected.clone()
    }

    pub fn set_write_error(&self, dataset: &'static str, error: Option<String>) {
        let errors = &mut self.state().write_errors;
        match error {
            Some(e) => errors.insert(dataset, e),
            None => errors.remove(dataset),
        };
    }

    pub fn write_errors(&self) -> BTreeMap<&'static str, String> {
        self.state().write_errors.clone()
    }

    /// The contacts the dispatcher holds because the config does not send them as they were
    /// received ([`crate::config::Config::route`]), by id.
    pub fn set_held(&self, held: BTreeMap<String, usize>) {
        self.state().held = held;
    }

    pub fn held(&self) -> BTreeMap<String, usize> {
        self.state().held.clone()
    }

    /// Every endpoint's counts added up, those of ids a reload removed too: a total since the
    /// start does not fall when a webhook is removed (the dashboard's cards did; an audit).
    pub fn totals(&self) -> Tally {
        let state = self.state();
        let mut total = Tally::default();
        for t in state.endpoints.values() {
            total.accepted += t.accepted;
            total.duplicates += t.duplicates;
            for (reason, n) in &t.refused {
                *total.refused.entry(reason).or_default() += n;
            }
            total.sent += t.sent;
            total.failed += t.failed;
            total.dry_run += t.dry_run;
            total.retrying += t.retrying;
        }
        total
    }

    pub fn tally(&self, endpoint: &str) -> Tally {
        self.state()
            .endpoints
            .get(endpoint)
            .cloned()
            .unwrap_or_default()
    }

    pub fn latest(&self) -> Vec<Latest> {
        self.state().latest.iter().cloned().collect()
    }

    pub fn last_error(&self, connector: &str) -> Option<LastError> {
        self.state().errors.get(connector).cloned()
    }

    pub fn link(&self, connector: &str) -> Option<Arc<Link>> {
        self.state().links.get(connector).cloned()
    }

    pub fn population(&self) -> Option<Arc<[f64]>> {
        self.state().population.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasets::outcomes::Action;

    fn row(n: i64, webhook: &str, status: Status) -> OutcomeRow {
        OutcomeRow {
            receipt_id: format!("r{n}"),
            webhook_id: webhook.into(),
            connector: "main".into(),
            action: Action::Enroll,
            target: "101".into(),
            status,
            http_status: (status == Status::Failed).then_some(400),
            message: (status == Status::Failed).then(|| "no such workflow".into()),
            attempts: 1,
            in_doubt: false,
            retry_at_ms: None,
            at_ms: n,
            holdout: false,
        }
    }

    #[test]
    fn published_outcomes_count_per_webhook_and_keep_the_latest_first() {
        let board = Board::default();
        let mut rows: Vec<OutcomeRow> = (0..60)
            .map(|n| row(n, if n % 2 == 0 { "a" } else { "b" }, Status::Enrolled))
            .collect();
        rows.push(row(60, "a", Status::Attempting));
        rows.push(row(61, "b", Status::Failed));
        board.publish(Outcomes::of(&rows));
        assert_eq!(board.tally("a").sent, 30);
        assert_eq!((board.tally("b").sent, board.tally("b").failed), (30, 1));
        let latest = board.latest();
        assert_eq!(latest.len(), LATEST);
        assert_eq!(
            latest[0].receipt_id, "r61",
            "newest first, attempts left out"
        );
        assert_eq!(latest[1].receipt_id, "r59");
        let error = board.last_error("main").unwrap();
        assert_eq!(
            (error.http_status, error.message.as_str()),
            (Some(400), "no such workflow")
        );
    }
}
