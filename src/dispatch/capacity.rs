//! The dispatcher's view of its connectors' capacity: one [`Ledger`] per connector, built from
//! the queue when the config changes (what no longer fits is moved later, so dispatch stays
//! within the new limits), and what each webhook's receipts cost.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono_tz::Tz;

use super::send::Pending;
use super::{Dispatcher, Queued};
use crate::capacity::{CALL, Capacity, Cost, Ledger, cost};
use crate::capacity::{ConnectorForecast, Forecast};
use crate::config::{Config, Target, Webhook};
use crate::datasets::outcomes::Action;
use crate::hubspot::limiter::Limiter;
use crate::local_time::{Local, Masks, QuietHours};
use crate::time::{HOUR_MS, MINUTE_MS, SLOTS};

/// Hours of quiet-hour masks worked out ahead when the ledgers are built again: contacts are
/// moved a few hours at most (later hours are worked out as they are looked at).
const REBUILD_MASK_HOURS: usize = 48;

/// How a webhook's receipts are planned.
#[derive(Debug, Clone, Copy)]
pub(super) struct Route<'c> {
    /// Its connector's ledger.
    pub ledger: usize,
    pub connector: &'c str,
    pub cost: Cost,
    pub window: Option<i64>,
    pub quiet: Option<QuietHours>,
    /// The zone of contacts whose own is unknown.
    pub zone: Tz,
    pub target: &'c Target,
    /// Its connector's account.
    pub portal_id: u64,
}

impl Route<'_> {
    /// A workflow action: HubSpot holds its contacts only so long ([`crate::model::plan::hold`]).
    pub fn holds(&self) -> bool {
        *self.target == Target::Callback
    }

    /// The quiet hours of a contact whose posted zone is `zone` (none: the connector's), in
    /// that zone; none without quiet hours.
    pub fn local(&self, zone: Option<Tz>) -> Option<Local> {
        self.quiet.map(|q| (zone.unwrap_or(self.zone), q))
    }

    /// The quiet hours that hold a queued `item` back, in its zone: those of timed sends, not
    /// held out (those go at receipt, as without sendtime).
    pub fn quiet_for(&self, item: &Pending) -> Option<Local> {
        self.local(item.zone)
            .filter(|_| item.webhook_type.timed() && !item.holdout)
    }

    /// Whether it sends `item` ([`crate::config::sends`]): one it does not is held at dispatch,
    /// so it books nothing on this connector.
    pub fn takes(&self, item: &Pending) -> bool {
        let callback = item.callback_id.is_some();
        let enrolls = Some(item.webhook_type.enrolls());
        crate::config::sends(
            self.target,
            self.portal_id,
            callback,
            enrolls,
            item.account(),
        )
    }
}

/// How the receipts of webhook `w` of `config` are planned.
pub(super) fn route<'c>(config: &'c Config, w: &'c Webhook) -> Route<'c> {
    let index = config
        .connectors
        .iter()
        .position(|c| c.id == w.connector)
        .expect("validated: webhook connectors exist");
    let connector = &config.connectors[index];
    Route {
        ledger: index,
        connector: &connector.id,
        cost: cost(&w.target, connector),
        window: w.window,
        quiet: w.quiet_hours,
        zone: connector.time_zone.unwrap_or(Tz::UTC),
        target: &w.target,
        portal_id: connector.portal_id,
    }
}

/// Ledgers for the config they were built for.
pub(super) struct Capacities {
    identity: String,
    /// By connector, in config order; the last one (unlimited) takes the receipts of webhooks
    /// missing from the config (they are held at dispatch, not sent).
    pub ledgers: Vec<Ledger>,
    ids: Vec<String>,
    /// What they were built for besides the config.
    basis: Basis,
}

/// What the ledgers are built for besides the config; they are built again when it changes
/// ([`Dispatcher::ledgers_outdated`]).
#[derive(PartialEq, Eq)]
pub(super) struct Basis {
    /// The webhooks whose calls are held ([`Dispatcher::held_targets`]): their contacts are
    /// not booked. One whose hold ends joins the ledgers, its backlog spread over the minutes
    /// with room after the contacts planned at theirs (it went in one tick before, for as
    /// long as the limiter took), and one that begins frees the minutes its contacts were
    /// booked in.
    held: BTreeSet<String>,
    /// Each connector's limit per 10 s: HubSpot's for the app when a response said a lower
    /// one than `requests_per_10s`, which calls are paced under ([`Limiter::hubspot_per_10s`]).
    limits: Vec<u32>,
    /// Each connector's list batch size as the dispatcher sends them
    /// ([`super::connector::Link::list_batch`]): planning charged a call per `list_batch_size`
    /// after HubSpot's refusals had made the sends go in batches of a fraction of it.
    list_batches: Vec<usize>,
}

impl Capacities {
    /// For `config`, on a clock `speed` times real time.
    fn new(config: &Config, basis: Basis, speed: i64) -> Capacities {
        let mut ledgers: Vec<Ledger> = (config.connectors.iter())
            .zip(&basis.limits)
            .map(|(c, &limit)| Ledger::new(Capacity::under(c, limit).at_speed(speed)))
            .collect();
        ledgers.push(Ledger::new(Capacity {
            per_minute: u64::MAX / 4,
            per_day: None,
            day_zone: Tz::UTC,
        }));
        Capacities {
            identity: config.identity.clone(),
            ledgers,
            ids: config.connectors.iter().map(|c| c.id.clone()).collect(),
            basis,
        }
    }

    /// The webhooks whose target is held ([`Basis::held`]): their contacts are not booked.
    pub fn held(&self) -> &BTreeSet<String> {
        &self.basis.held
    }

    /// How the receipts of each webhook of `config` are planned: a list's batches no larger
    /// than the dispatcher sends them ([`Basis::list_batches`]).
    pub fn routes<'c>(&self, config: &'c Config) -> HashMap<&'c str, Route<'c>> {
        config
            .webhooks
            .iter()
            .map(|w| {
                let mut r = route(config, w);
                if let (Target::List(_), Cost::Batched { size, .. }) = (&w.target, &mut r.cost)
                    && let Some(&batch) = self.basis.list_batches.get(r.ledger)
                {
                    *size = batch as u64;
                }
                (w.id.as_str(), r)
            })
            .collect()
    }
}

/// Each connector's limit per 10 s ([`Basis::limits`]).
fn limits(config: &Config) -> Vec<u32> {
    (config.connectors.iter())
        .map(|c| {
            // A dry run calls nothing (an import's calls may teach its limiter meanwhile).
            if c.dry_run {
                c.requests_per_10s
            } else {
                Limiter::limit_of(&c.id, c.requests_per_10s)
            }
        })
        .collect()
}

/// The route of `routes` that books `item`: its webhook's, if that sends it ([`Route::takes`]).
pub(super) fn route_of<'r, 'c>(
    routes: &'r HashMap<&'c str, Route<'c>>,
    item: &Pending,
) -> Option<&'r Route<'c>> {
    routes.get(&*item.webhook_id).filter(|r| r.takes(item))
}

/// The target of [`Capacities::unrouted`]: none, whose receipts are held at dispatch (not an
/// action's: HubSpot holds none of them).
static UNROUTED: Target = Target::List(String::new());

impl Capacities {
    /// The route of receipts whose webhook is missing from the config.
    pub fn unrouted(&self) -> Route<'static> {
        Route {
            ledger: self.ledgers.len() - 1,
            connector: "",
            cost: Cost::Call,
            window: None,
            quiet: None,
            zone: Tz::UTC,
            target: &UNROUTED,
            portal_id: 0,
        }
    }

    /// Planned calls per hour for the next 7 days, per connector.
    pub fn forecast(&self, now: i64) -> Forecast {
        let from = now.div_euclid(HOUR_MS) * HOUR_MS;
        Forecast {
            from_ms: from,
            connectors: self
                .ids
                .iter()
                .zip(&self.ledgers)
                .map(|(id, l)| ConnectorForecast {
                    connector: id.clone(),
                    capacity_per_hour: l.capacity.calls_per_hour(),
                    daily_budget: l.capacity.per_day.map(|d| d / CALL),
                    planned_per_hour: l.per_hour(from, SLOTS),
                })
                .collect(),
        }
    }
}

impl Dispatcher {
    /// Ledgers for `config`: kept while the config is the same; otherwise built again from
    /// the calls made today and the queue, in due order (a released backlog after the rest),
    /// and a queued receipt that no longer fits its minute (limits were lowered, or it is
    /// overdue) is moved to the first minute with room. Receipts an operator's pause holds are
    /// left out (they are booked when it ends), as are those of a target held (a workflow
    /// turned off or deleted in HubSpot: they go when it can take them, unbooked; an earlier
    /// version booked them first, as the oldest, and pushed the other webhooks' contacts back
    /// by the whole backlog), and a workflow action's stay where they are: planning put them
    /// before their block expires.
    pub(super) fn capacities(&mut self, config: &Config, now: i64) -> &mut Capacities {
        let current = self
            .capacity
            .as_ref()
            .is_some_and(|c| c.identity == config.identity);
        if !current {
            let basis = self.basis(config, now);
            let mut caps = Capacities::new(config, basis, self.clock.speed());
            for (ledger, c) in caps.ledgers.iter_mut().zip(&config.connectors) {
                let zone = ledger.capacity.day_zone;
                ledger.spent(
                    now,
                    self.spent.today(&c.id, zone, now),
                    self.spent.this_hour(&c.id, now),
                    self.spent.this_minute(&c.id, now),
                );
            }
            let routes = caps.routes(config);
            let mut items = std::mem::take(&mut self.queue).into_vec();
            items.sort_unstable();
            items.reverse();
            let mut unbooked: HashSet<String> = (config.webhooks.iter())
                .filter(|w| {
                    self.pauses.holds(&w.id, &w.connector) || caps.basis.held.contains(&w.id)
                })
                .map(|w| w.id.clone())
                .chain(
                    self.held
                        .keys()
                        .filter(|w| config.webhook(w).is_none())
                        .cloned(),
                )
                .collect();
            // A backlog released since the ledgers were last built (a pause or a hold ended, a
            // webhook back in the config; by this process or the last) is booked after the
            // rest, in due order.
            // Booked first, as the oldest, it moved the contacts at their planned minutes
            // later, and they stayed moved when the hold came back (a missing scope is tried
            // again every 5 minutes, and each time pushed them further: an audit). Only what
            // is released is: a retry or a contact moved before keeps its place (a review).
            let mut released = self.unbooked.take();
            released.retain(|w| !unbooked.contains(w));
            if !released.is_empty() {
                let (rest, late): (Vec<_>, Vec<_>) = (items.into_iter())
                    .partition(|Queued(item)| !released.contains(&*item.webhook_id));
                items = rest;
                items.extend(late);
            }
            let locals = items
                .iter()
                .filter_map(|Queued(item)| route_of(&routes, item)?.quiet_for(item));
            let masks = Masks::build(locals.collect::<Vec<_>>(), now, REBUILD_MASK_HOURS);
            // What planning put in the minutes since the last tick's `now`, and nothing moved
            // since (a retry, a hold, a rebuild), goes now, as it would without a rebuild
            // (moved, a sparse cron's tick sent a minute's worth, an audit found). The rest
            // is a backlog nothing planned (all of it after a gap), spread.
            let planned_since = self.planned_from;
            let mut moved = 0usize;
            for Queued(item) in &mut items {
                // Held at dispatch, booked when its route is back: a webhook out of the config
                // is marked (one that takes none of a kind or account it received others as
                // is not: its other contacts would go last at every build, a review; so a
                // change of kind or account undone across a restart books that backlog first).
                let Some(route) = route_of(&routes, item) else {
                    let gone = config.webhook(&item.webhook_id).is_none();
                    if gone && !unbooked.contains(&*item.webhook_id) {
                        unbooked.insert(item.webhook_id.to_string());
                    }
                    continue;
                };
                // Held by an operator's pause, or by a dry run that releases nothing: booked
                // when that ends (the ledgers are built again then).
                let dry_run = config.connector(route.connector).is_some_and(|c| c.dry_run);
                if self.pauses.holds(&item.webhook_id, route.connector)
                    || (dry_run && item.held_by_hubspot())
                    || caps.basis.held.contains(&*item.webhook_id)
                {
                    if !unbooked.contains(&*item.webhook_id) {
                        unbooked.insert(item.webhook_id.to_string());
                    }
                    continue;
                }
                let ledger = &mut caps.ledgers[route.ledger];
                // An earlier version planned an action's contact up to a minute before
                // HubSpot's hold ends: kept to its release-by now. (A retry may come later,
                // until a minute before: pulled forward, it would lose its backoff. One put off by
                // its connector's pause keeps its time: pulled to now, it came back at every
                // tick, each rebuilding the ledgers, for the rest of the pause; an audit.)
                if route.holds() && item.attempts == 0 && item.paused_until_ms <= now {
                    let by = super::planning::release_by(item, route.window);
                    item.ready_at_ms = item.ready_at_ms.min(by.max(now));
                }
                let at = item.ready_at_ms.max(now);
                let planned = item.attempts == 0
                    && item.ready_at_ms == item.due_at_ms
                    && planned_since.is_some_and(|t| (t..=now).contains(&item.due_at_ms));
                // Overdue or moved, a timed send still keeps its contact's quiet hours, judged
                // as its send judges them (one due in the last minute, at that time).
                let local = route.quiet_for(item);
                let allowed =
                    masks.allows(local, crate::local_time::judged_at(item.ready_at_ms, now));
                let to = if route.holds() || planned || (allowed && ledger.fits(at, route.cost)) {
                    at
                } else {
                    ledger
                        .first_fit(at, route.cost, |h| masks.allowed(local, h))
                        .unwrap_or(at)
                };
                if to.div_euclid(MINUTE_MS) != at.div_euclid(MINUTE_MS) {
                    item.ready_at_ms = to;
                    moved += 1;
                }
                ledger.book(to, route.cost);
            }
            drop(routes);
            if moved > 0 {
                tracing::warn!(
                    moved,
                    "queued contacts moved later: their minutes are past (overdue, kept out of quiet hours) or beyond what the connectors can send"
                );
            }
            self.queue = items.into();
            self.unbooked.set(unbooked);
            self.capacity = Some(caps);
        }
        let caps = self.capacity.as_mut().expect("set above");
        for ledger in &mut caps.ledgers {
            ledger.forget_before(now);
        }
        caps
    }

    /// Whether the ledgers were built for another [`Basis`] than `config`'s now.
    pub(super) fn ledgers_outdated(&mut self, config: &Config, now: i64) -> bool {
        if self.capacity.is_none() {
            return false;
        }
        let basis = self.basis(config, now);
        self.capacity.as_ref().is_some_and(|c| c.basis != basis)
    }

    /// The [`Basis`] of `config`'s ledgers at `now`.
    fn basis(&mut self, config: &Config, now: i64) -> Basis {
        let held = (self.held_targets(config, now).into_iter())
            .map(String::from)
            .collect();
        let batch = |c: &crate::config::Connector| {
            (self.links.get(&c.id)).map_or(c.list_batch_size.max(1), |(_, l)| l.list_batch(c))
        };
        Basis {
            held,
            limits: limits(config),
            list_batches: config.connectors.iter().map(batch).collect(),
        }
    }

    /// The webhooks of `config` whose target is held
    /// ([`super::target_holds::TargetHolds::holding`]), or whose kind of call waits at `now`
    /// for a scope the token lacks (booked, a backlog of those pushed the connector's other
    /// calls later at each hold's end, again and again: an audit). Each connector's link is
    /// made first: a new process (`sendtime tick`) learns there which workflows an earlier one
    /// found off.
    pub(super) fn held_targets<'c>(&mut self, config: &'c Config, now: i64) -> HashSet<&'c str> {
        // A dry run's connector calls nothing: no link made for it, no target held.
        let links: HashMap<&str, _> = (config.connectors.iter())
            .filter(|c| !c.dry_run)
            .filter_map(|c| Some((c.id.as_str(), self.link(c).ok()?)))
            .collect();
        (config.webhooks.iter())
            .filter(|w| {
                let Some(link) = links.get(w.connector.as_str()) else {
                    return false;
                };
                let action = Action::of(&w.target);
                link.scope_held(action, now).is_some()
                    || (w.target.id()).is_some_and(|t| link.targets.holding(action, &t))
            })
            .map(|w| w.id.as_str())
            .collect()
    }

    /// Publish the next 7 days' planned calls against capacity (`/status`, `/metrics`).
    pub(super) fn publish_forecast(&mut self, config: &Config, now: i64) {
        let forecast = self.capacities(config, now).forecast(now);
        self.metrics.set_forecast(forecast);
    }
}
