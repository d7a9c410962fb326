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

#[derive(Default)]
struct State {
    endpoints: BTreeMap<String, Tally>,
    latest: VecDeque<Latest>,
    errors: BTreeMap<String, LastError>,
    links: BTreeMap<String, Arc<Link>>,
    population: Option<Arc<[f64]>>,
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

    /// Count the dispatcher's outcome rows, keep the latest, and each connector's last error.
    pub fn outcomes(&self, rows: &[OutcomeRow]) {
        let mut state = self.state();
        for r in rows.iter().filter(|r| r.status != Status::Attempting) {
            let tally = state.endpoints.entry(r.webhook_id.clone()).or_default();
            match r.status {
                Status::Enrolled | Status::Listed | Status::Completed => tally.sent += 1,
                Status::Failed => tally.failed += 1,
                Status::Retrying => tally.retrying += 1,
                Status::DryRun => tally.dry_run += 1,
                Status::Attempting => {}
            }
            if matches!(r.status, Status::Failed | Status::Retrying) {
                state.errors.insert(
                    r.connector.clone(),
                    LastError {
                        at_ms: r.at_ms,
                        webhook: r.webhook_id.clone(),
                        http_status: r.http_status,
                        message: r.message.clone().unwrap_or_default(),
                    },
                );
            }
            if state.latest.len() == LATEST {
                state.latest.pop_back();
            }
            state.latest.push_front(Latest {
                at_ms: r.at_ms,
                receipt_id: r.receipt_id.clone(),
                webhook: r.webhook_id.clone(),
                connector: r.connector.clone(),
                action: r.action.as_str(),
                target: r.target.clone(),
                status: r.status.as_str(),
                http_status: r.http_status,
                message: r.message.clone(),
            });
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
