//! Counters and histograms served on `GET /metrics` in Prometheus text format.

use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::capacity::Forecast;

type Labels = Vec<(&'static str, String)>;

/// A connector's scheduled imports, as `/status` shows them.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ImportStatus {
    pub last_run_at_ms: Option<i64>,
    pub last_success_at_ms: Option<i64>,
    /// Every event created before this is imported.
    pub complete_until_ms: Option<i64>,
    pub last_new_events: u64,
    pub last_error: Option<String>,
    /// Why the latest run was skipped or stopped by a pause (it resumes where it stopped).
    pub paused: Option<String>,
}

/// Shared handles to every metric; cheap to clone.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

pub struct Inner {
    registry: Registry,
    /// Posts that reached a known webhook.
    pub received: Counter,
    /// Posts stored as new receipts.
    pub accepted: Counter,
    /// Repeats of a contact already pending on the same webhook (HubSpot retries).
    pub duplicates: Counter,
    rejected: Family<Labels, Counter>,
    /// Seconds per group commit (log write + fdatasync).
    pub commit_seconds: Histogram,
    pending: Family<Labels, Gauge>,
    outcomes: Family<Labels, Counter>,
    held: Family<Labels, Gauge>,
    paused: Family<Labels, Gauge>,
    /// Seconds per dispatcher tick.
    pub tick_seconds: Histogram,
    /// Scheduled ticks not run because the previous tick was still running.
    pub ticks_skipped: Counter,
    /// Ticks that could not plan new receipts (their due contacts were still sent).
    pub planning_failures: Counter,
    write_failures: Family<Labels, Counter>,
    /// Planned receipts not yet final (due or not).
    pub queued: Gauge,
    /// Finished receipts the dispatcher remembers, so as never to plan them again: those not
    /// archived yet.
    pub finished: Gauge,
    planned_calls: Family<Labels, Gauge>,
    capacity_per_hour: Family<Labels, Gauge>,
    plan_moves: Family<Labels, Counter>,
    secrets: Family<Labels, Counter>,
    import_runs: Family<Labels, Counter>,
    config_reloads: Family<Labels, Counter>,
    /// 1 while the config file holds a change that was rejected (or a reload failed): an
    /// older config is in force.
    pub config_rejected: Gauge,
    operator_paused: Family<Labels, Gauge>,
    pauses_unreadable: Gauge,
    import_lag: Family<Labels, Gauge>,
    /// Ids ever shown as operator-paused, with their kind.
    operator_ids: std::sync::Mutex<std::collections::BTreeSet<(String, &'static str)>>,
    /// Per connector, what its scheduled imports did (for `/status`).
    imports: std::sync::Mutex<std::collections::BTreeMap<String, ImportStatus>>,
    /// The dispatcher's latest forecast, for `/status`.
    forecast: std::sync::Mutex<Arc<Forecast>>,
    /// What `/status` and the dashboard show beyond the metrics.
    pub board: crate::admin::board::Board,
}

impl std::ops::Deref for Metrics {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sendtime");
        let received = Counter::default();
        let accepted = Counter::default();
        let duplicates = Counter::default();
        let rejected = Family::<Labels, Counter>::default();
        // 50 µs .. ~1.6 s
        let commit_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        let pending = Family::<Labels, Gauge>::default();
        let outcomes = Family::<Labels, Counter>::default();
        let held = Family::<Labels, Gauge>::default();
        let paused = Family::<Labels, Gauge>::default();
        // 1 ms .. ~9 min
        let tick_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 20));
        let ticks_skipped = Counter::default();
        let planning_failures = Counter::default();
        let write_failures = Family::<Labels, Counter>::default();
        let queued = Gauge::default();
        let finished = Gauge::default();
        let planned_calls = Family::<Labels, Gauge>::default();
        let capacity_per_hour = Family::<Labels, Gauge>::default();
        let plan_moves = Family::<Labels, Counter>::default();
        let secrets = Family::<Labels, Counter>::default();
        let import_runs = Family::<Labels, Counter>::default();
        let config_reloads = Family::<Labels, Counter>::default();
        registry.register(
            "config_reloads",
            "Config reloads after a change to the config file or a SIGHUP, by result: loaded (now in force), unchanged (the config in force, or the content rejected last), rejected (invalid: the config in force is kept; the log says why), error (failed unexpectedly: the config in force is kept)",
            config_reloads.clone(),
        );
        let config_rejected = Gauge::default();
        registry.register(
            "config_rejected",
            "1 while the config file holds a change that was rejected: the config in force is an earlier one (0 once a valid file is loaded; keys that apply on restart are not counted)",
            config_rejected.clone(),
        );
        let operator_paused = Family::<Labels, Gauge>::default();
        registry.register(
            "operator_paused",
            "1 while an operator has paused this webhook, action or connector (sendtime pause); its contacts are held",
            operator_paused.clone(),
        );
        let pauses_unreadable = Gauge::default();
        registry.register(
            "pauses_unreadable",
            "1 while state/pauses.json cannot be read: every contact is held until it is fixed (operator_paused then keeps its last known values)",
            pauses_unreadable.clone(),
        );
        let import_lag = Family::<Labels, Gauge>::default();
        registry.register(
            "import_runs",
            "Scheduled HubSpot email-event imports inside serve, by connector and result (ok, error, paused: not run, the connector being paused)",
            import_runs.clone(),
        );
        registry.register(
            "import_lag_seconds",
            "Seconds between the last successful scheduled import's end and the newest event it covers (how stale profiles can be), at that import",
            import_lag.clone(),
        );
        registry.register(
            "signature_secret",
            "Signed posts accepted, by the connector and the environment variable of the client secret that verified them (during a rotation, the older one should fall to zero)",
            secrets.clone(),
        );
        registry.register(
            "planned_calls",
            "HubSpot calls planned per connector in the hour that starts `hours_ahead` hours from this one (next 7 days; this hour's include the calls already made in it)",
            planned_calls.clone(),
        );
        registry.register(
            "capacity_calls_per_hour",
            "HubSpot calls per hour that planning may fill, per connector",
            capacity_per_hour.clone(),
        );
        registry.register(
            "plan_moves",
            "Receipts not planned at their preferred time: capacity (another hour of the window), spilled (past a full window), quiet (quiet hours leave no minute in the window), late (the window was over when planned), delayed (no window: the minutes from receipt were full), overflow (no minute with room within 400 days, a daily budget far too small for the queue: due at once, held to the budget when sent)",
            plan_moves.clone(),
        );
        registry.register(
            "dispatch_outcomes",
            "Dispatcher results per contact, by status (enrolled, listed, completed, retrying, failed, dry-run)",
            outcomes.clone(),
        );
        registry.register(
            "dispatch_held",
            "Contacts held because their webhook is no longer in the config (kept until it returns)",
            held.clone(),
        );
        registry.register(
            "connector_paused",
            "1 while a connector is paused by HubSpot (its daily API limit, a refused token, a page that is not its API, or no OAuth access token from its token endpoint)",
            paused.clone(),
        );
        registry.register(
            "tick_seconds",
            "Duration of one dispatcher tick",
            tick_seconds.clone(),
        );
        registry.register(
            "ticks_skipped",
            "Scheduled ticks skipped because the previous tick was still running",
            ticks_skipped.clone(),
        );
        registry.register(
            "planning_failures",
            "Ticks that could not plan new receipts (they wait in the inbox; due contacts were still sent); /status says why",
            planning_failures.clone(),
        );
        registry.register(
            "write_failures",
            "Writes to the data folder that failed (a full disk, a folder gone), by dataset: inbox (a post's append to the log, answered 503 so HubSpot retries; or the log's flush to Parquet, whose posts stay answered and safe in the log and are planned once it succeeds), outcomes (a contact's outcome rows: it is not sent until they are written); /status says why",
            write_failures.clone(),
        );
        registry.register(
            "dispatch_queued",
            "Planned contacts not yet enrolled, listed or failed",
            queued.clone(),
        );
        registry.register(
            "dispatch_finished_remembered",
            "Finished receipts held in memory until they are archived (a day after the replay window)",
            finished.clone(),
        );
        registry.register(
            "webhooks_received",
            "Webhook posts to a known webhook id",
            received.clone(),
        );
        registry.register(
            "webhooks_accepted",
            "Webhook posts stored durably as new receipts",
            accepted.clone(),
        );
        registry.register(
            "webhooks_duplicate",
            "Posts for a contact already pending on the same webhook, or replays of a body already finished (answered 200, nothing stored)",
            duplicates.clone(),
        );
        registry.register(
            "webhooks_rejected",
            "Posts refused, by reason",
            rejected.clone(),
        );
        registry.register(
            "store_commit_seconds",
            "Time of one inbox group commit (log write and fdatasync)",
            commit_seconds.clone(),
        );
        registry.register(
            "pending_contacts",
            "Receipts waiting to be dispatched, per webhook",
            pending.clone(),
        );
        Self(Arc::new(Inner {
            registry,
            received,
            accepted,
            duplicates,
            rejected,
            commit_seconds,
            pending,
            outcomes,
            held,
            paused,
            tick_seconds,
            ticks_skipped,
            planning_failures,
            write_failures,
            queued,
            finished,
            planned_calls,
            capacity_per_hour,
            plan_moves,
            secrets,
            import_runs,
            config_reloads,
            config_rejected,
            operator_paused,
            pauses_unreadable,
            import_lag,
            imports: Default::default(),
            operator_ids: Default::default(),
            forecast: Default::default(),
            board: Default::default(),
        }))
    }

    /// Count a refused post under a short reason label.
    pub fn reject(&self, reason: &str) {
        self.rejected
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc();
    }

    /// Each configured webhook's and action's series, at 0 until it has contacts: a series
    /// made on first use appeared only once a post came or the dashboard was opened, which
    /// `absent()` alerts cannot tell from a scrape gone wrong (an audit).
    pub fn configured(&self, config: &crate::config::Config) {
        for w in &config.webhooks {
            self.pending(&w.id);
        }
    }

    /// The pending gauge of one webhook.
    pub fn pending(&self, webhook: &str) -> Gauge {
        self.pending
            .get_or_create(&vec![("webhook", webhook.to_string())])
            .clone()
    }

    /// A write to `dataset` failed with `error`: counted, and on `/status` until one succeeds.
    pub fn write_failed(&self, dataset: &'static str, error: String) {
        self.write_failures
            .get_or_create(&vec![("dataset", dataset.to_string())])
            .inc();
        self.board.set_write_error(dataset, Some(error));
    }

    /// A write to `dataset` succeeded: what `/status` said of its last failure is over.
    pub fn write_succeeded(&self, dataset: &'static str) {
        self.board.set_write_error(dataset, None);
    }

    /// The counter of dispatcher results with `status`.
    pub fn outcome(&self, status: &str) -> Counter {
        self.outcomes
            .get_or_create(&vec![("status", status.to_string())])
            .clone()
    }

    /// Contacts held for a webhook missing from the config.
    pub fn held(&self, webhook: &str) -> Gauge {
        self.held
            .get_or_create(&vec![("webhook", webhook.to_string())])
            .clone()
    }

    /// Whether a connector is paused by the daily limit (1) or not (0).
    pub fn connector_paused(&self, connector: &str) -> Gauge {
        self.paused
            .get_or_create(&vec![("connector", connector.to_string())])
            .clone()
    }

    /// Count a receipt planned away from its preferred time on `connector`.
    pub fn plan_move(&self, connector: &str, kind: &str) -> Counter {
        self.plan_moves
            .get_or_create(&vec![
                ("connector", connector.to_string()),
                ("move", kind.to_string()),
            ])
            .clone()
    }

    /// Config reloads with `result` (`loaded`, `unchanged`, `rejected`, `error`).
    pub fn config_reload(&self, result: &str) -> Counter {
        self.config_reloads
            .get_or_create(&vec![("result", result.to_string())])
            .clone()
    }

    /// Count a post verified by the secret in `env` of `connector`.
    pub fn secret_matched(&self, connector: &str, env: &str) -> Counter {
        self.secrets
            .get_or_create(&vec![
                ("connector", connector.to_string()),
                ("secret_env", env.to_string()),
            ])
            .clone()
    }

    /// Show the operator pauses in force (1) and those lifted (0).
    pub fn set_operator_pauses(&self, pauses: &crate::pauses::Pauses) {
        self.pauses_unreadable.set(i64::from(pauses.unreadable));
        if pauses.unreadable {
            // What the file holds is not known: zeroes would say nothing is paused.
            return;
        }
        // Every id seen so far goes to 0 unless still paused: a family cannot forget a label.
        let mut seen = self.operator_ids.lock().unwrap();
        for (id, pause) in pauses.iter() {
            seen.insert((id.clone(), pause.kind.as_str()));
        }
        for (id, kind) in seen.iter() {
            let on = pauses
                .iter()
                .any(|(i, p)| i == id && p.kind.as_str() == *kind);
            self.operator_paused
                .get_or_create(&vec![("id", id.clone()), ("kind", kind.to_string())])
                .set(i64::from(on));
        }
    }

    /// Record a scheduled import of `connector` skipped or stopped at `at_ms` by a pause.
    pub fn import_paused(&self, connector: &str, at_ms: i64, why: &str) {
        self.import_run(connector, "paused").inc();
        let mut imports = self.imports.lock().unwrap();
        let status = imports.entry(connector.to_string()).or_default();
        status.last_run_at_ms = Some(at_ms);
        status.paused = Some(why.to_string());
    }

    fn import_run(&self, connector: &str, result: &str) -> Counter {
        self.import_runs
            .get_or_create(&vec![
                ("connector", connector.to_string()),
                ("result", result.to_string()),
            ])
            .clone()
    }

    /// Record a scheduled import of `connector` that finished at `at_ms`.
    pub fn import_finished(
        &self,
        connector: &str,
        at_ms: i64,
        result: Result<&crate::import::hubspot::Summary, String>,
    ) {
        self.import_run(connector, if result.is_ok() { "ok" } else { "error" })
            .inc();
        if let Ok(summary) = &result {
            let labels = vec![("connector", connector.to_string())];
            match summary.complete_until_ms {
                Some(until) => {
                    (self.import_lag.get_or_create(&labels)).set((at_ms - until).max(0) / 1000);
                }
                // Unknown while the history is left to read (it read about 0).
                None => {
                    self.import_lag.remove(&labels);
                }
            }
        }
        let mut imports = self.imports.lock().unwrap();
        let status = crate::import::scheduled::status(imports.get(connector), at_ms, result);
        imports.insert(connector.to_string(), status);
    }

    /// What the scheduled imports did, per connector.
    pub fn imports(&self) -> std::collections::BTreeMap<String, ImportStatus> {
        self.imports.lock().unwrap().clone()
    }

    /// Publish the dispatcher's forecast of planned calls against capacity.
    pub fn set_forecast(&self, forecast: Forecast) {
        // A connector gone from the config leaves no gauges at their last values.
        let old = self.forecast();
        for gone in old.connectors.iter().filter(|o| {
            !forecast
                .connectors
                .iter()
                .any(|c| c.connector == o.connector)
        }) {
            let connector = ("connector", gone.connector.clone());
            self.capacity_per_hour.remove(&vec![connector.clone()]);
            for h in 0..gone.planned_per_hour.len() {
                self.planned_calls
                    .remove(&vec![connector.clone(), ("hours_ahead", h.to_string())]);
            }
        }
        for c in &forecast.connectors {
            self.capacity_per_hour
                .get_or_create(&vec![("connector", c.connector.clone())])
                .set(c.capacity_per_hour as i64);
            for (h, n) in c.planned_per_hour.iter().enumerate() {
                self.planned_calls
                    .get_or_create(&vec![
                        ("connector", c.connector.clone()),
                        ("hours_ahead", h.to_string()),
                    ])
                    .set(*n as i64);
            }
        }
        *self.forecast.lock().unwrap() = Arc::new(forecast);
    }

    /// The latest forecast (empty before the first tick).
    pub fn forecast(&self) -> Arc<Forecast> {
        self.forecast.lock().unwrap().clone()
    }

    /// Everything in Prometheus/OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
