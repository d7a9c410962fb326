//! `GET /status`: everything the dashboard draws, as JSON, so a script sees what a person
//! sees. Built on each request from the config, the metrics and the [`super::board::Board`].

use serde::Serialize;
use serde_json::{Value, json};

use super::AdminState;
use crate::config::{Config, Target, Webhook};
use crate::hubspot::limiter::Limiter;
use crate::pauses::Pauses;

/// A connector as the dashboard shows it.
#[derive(Debug, Serialize)]
struct ConnectorStatus {
    id: String,
    dry_run: bool,
    /// HubSpot's limit per rolling 10 s, and what sendtime paces to under it.
    limit_per_10s: u32,
    paced_per_10s: u32,
    /// Calls this process started in the last 10 s.
    calls_last_10s: usize,
    /// Why nothing goes out now, if so.
    paused: Option<crate::dispatch::connector::PausedBy>,
    /// Until when a HubSpot-imposed pause lasts (clock ms), when that is the reason shown.
    paused_until_ms: Option<i64>,
    /// The kinds of call (`enroll`, `list_add`, `complete`) waiting because the token lacks a
    /// scope they need, each until when (clock ms); the connector's other calls go on.
    missing_scopes: std::collections::BTreeMap<&'static str, i64>,
    /// Targets HubSpot said cannot take their calls (a workflow or list that is gone, a list
    /// made DYNAMIC): their contacts wait, the connector's other calls go on.
    held_targets: Vec<HeldTarget>,
    /// From HubSpot's latest daily headers (OAuth apps get none).
    daily_limit: Option<u32>,
    daily_remaining: Option<u32>,
    /// When those headers came (clock ms, as `now_ms`): HubSpot's count starts again at the
    /// account's midnight, which the next call's headers show.
    daily_as_of_ms: Option<i64>,
    last_error: Option<super::board::LastError>,
    last_import: Option<crate::metrics::ImportStatus>,
}

/// A target whose calls wait ([`crate::dispatch::target_holds`]).
#[derive(Debug, Serialize)]
struct HeldTarget {
    /// `enroll` or `list_add`.
    action: &'static str,
    /// The workflow or list id.
    target: String,
    /// When its hold ends and it is read again (clock ms).
    until_ms: i64,
    /// What HubSpot said of it.
    why: String,
}

/// The status document.
pub fn status(state: &AdminState) -> Value {
    let config = state.config.load();
    let board = &state.metrics.board;
    // Unreadable, the file holds every contact in the dispatcher: shown so, and why.
    let (pauses, pauses_error) = match crate::pauses::read(&config.server.data_dir) {
        Ok(p) => (p, None),
        Err(e) => (
            Pauses::unreadable(),
            Some(format!("{e:#}: every contact is held until it is fixed")),
        ),
    };
    let (actions, webhooks): (Vec<&Webhook>, Vec<&Webhook>) = config
        .webhooks
        .iter()
        .partition(|w| w.target == Target::Callback);
    let now = state.clock.now_ms();
    let connectors = connectors(&config, state, &pauses, now);
    let endpoint = |w: &Webhook, url: String| {
        let pending = state.metrics.pending(&w.id).get();
        // Its own pause (what its Resume button lifts), and its connector's.
        let paused = pauses.paused.contains_key(&w.id);
        let connector = connectors.iter().find(|c| c.id == w.connector);
        // While it or its connector is paused, nothing of it goes out: all it has waits.
        let connector_paused = connector.is_some_and(|c| c.paused.is_some());
        // Recorded, not sent: what its table row must say rather than "sending".
        let connector_dry_run = connector.is_some_and(|c| c.dry_run);
        // Its kind of call waits for a scope the token lacks, while the connector's others go.
        let action = crate::datasets::outcomes::Action::of(&w.target).as_str();
        let scope_held_until = connector.and_then(|c| c.missing_scopes.get(action).copied());
        // Its workflow or list cannot take its contacts, HubSpot said.
        let target = w.target.id();
        let target_held = connector.and_then(|c| {
            c.held_targets
                .iter()
                .find(|h| h.action == action && Some(&h.target) == target.as_ref())
        });
        json!({
            "id": w.id,
            "type": w.kind.as_str(),
            "connector": w.connector,
            "url": url,
            "pending": pending,
            "paused": paused,
            "connector_paused": connector_paused,
            "connector_dry_run": connector_dry_run,
            "scope_held_until_ms": scope_held_until,
            "target_held_until_ms": target_held.map(|h| h.until_ms),
            "target_held_why": target_held.map(|h| &h.why),
            "held": if paused || connector_paused || scope_held_until.is_some() || target_held.is_some() { pending } else { 0 },
            "counts": board.tally(&w.id),
        })
    };
    let webhooks: Vec<_> = webhooks
        .into_iter()
        .map(|w| endpoint(w, config.webhook_url(w)))
        .collect();
    let actions: Vec<_> = actions
        .into_iter()
        .map(|w| endpoint(w, config.action_url(w)))
        .collect();
    json!({
        "config": config.identity,
        "now_ms": now,
        "pending": state.pending.len(),
        "queued": state.metrics.queued.get(),
        "webhooks": webhooks,
        "actions": actions,
        "unknown": board.tally(super::board::UNKNOWN).refused,
        "totals": board.totals(),
        "held_for_removed": held_for_removed(board, &config, &state.pending),
        "connectors": connectors,
        "capacity": *state.metrics.forecast(),
        "population": board.population().map(|p| p.to_vec()),
        "outcomes": board.latest(),
        "imports": state.metrics.imports(),
        "paused": pauses.paused,
        "paused_connectors": pauses.connectors,
        // Pauses that hold nothing: what they named was renamed or removed.
        "paused_unknown": (pauses.unmatched(&config).iter())
            .map(|(kind, id)| json!({"kind": kind.as_str(), "id": id}))
            .collect::<Vec<_>>(),
        "pauses_error": pauses_error,
        "planning_error": board.planning_error(),
        "config_rejected": board.config_rejected(),
        "write_errors": board.write_errors(),
    })
}

fn connectors(
    config: &Config,
    state: &AdminState,
    pauses: &Pauses,
    now: i64,
) -> Vec<ConnectorStatus> {
    let board = &state.metrics.board;
    let imports = state.metrics.imports();
    config
        .connectors
        .iter()
        .map(|c| {
            let link = board.link(&c.id);
            // The account's, whichever client called: the scheduled import's calls count too,
            // before the dispatcher has made any.
            let limiter = Limiter::existing(&c.id);
            let rate = Limiter::last_rate_of(&c.id);
            let paused = crate::dispatch::connector::paused(pauses, link.as_deref(), &c.id, now);
            ConnectorStatus {
                id: c.id.clone(),
                dry_run: c.dry_run,
                limit_per_10s: c.requests_per_10s,
                // Under HubSpot's own limit when it said a lower one.
                paced_per_10s: Limiter::paced_per_10s(
                    limiter
                        .as_ref()
                        .map_or(c.requests_per_10s, |l| l.effective_per_10s()),
                ),
                calls_last_10s: limiter.as_ref().map_or(0, |l| l.calls_in_window()),
                paused: paused.map(|(why, _)| why),
                paused_until_ms: paused.and_then(|(_, until)| until),
                missing_scopes: link.as_ref().map_or_else(Default::default, |l| {
                    l.scope_holds(now)
                        .into_iter()
                        .map(|(action, until)| (action.as_str(), until))
                        .collect()
                }),
                held_targets: link.as_ref().map_or_else(Vec::new, |l| {
                    l.targets
                        .held(now)
                        .into_iter()
                        .map(|(action, target, until_ms, why)| HeldTarget {
                            action: action.as_str(),
                            target,
                            until_ms,
                            why,
                        })
                        .collect()
                }),
                daily_limit: rate.and_then(|(r, _)| r.daily),
                daily_remaining: rate.and_then(|(r, _)| r.daily_remaining),
                // On the clock of `now` (the demo's runs fast): as long ago as they came.
                daily_as_of_ms: rate.map(|(_, at)| now - (crate::time::now_ms() - at).max(0)),
                last_error: board.last_error(&c.id),
                last_import: imports.get(&c.id).cloned(),
            }
        })
        .collect()
}

/// The contacts held because the config does not send them as they were taken: those the
/// dispatcher found so when they came due, and every pending one of an id the config no
/// longer names, due or not (a removed webhook's showed only once due, days later for a
/// NEXT_WEEK one, and one removed while `serve` was down not at all; an audit).
fn held_for_removed(
    board: &super::board::Board,
    config: &crate::config::Config,
    pending: &crate::datasets::pending::PendingSet,
) -> std::collections::BTreeMap<String, u64> {
    let mut held: std::collections::BTreeMap<String, u64> = (board.held().into_iter())
        .map(|(id, n)| (id, n as u64))
        .collect();
    for (id, n) in pending.by_webhook() {
        if config.webhook(&id).is_none() {
            let h = held.entry(id).or_default();
            *h = (*h).max(n);
        }
    }
    held
}
