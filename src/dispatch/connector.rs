//! A connector as the dispatcher keeps it across ticks ([`Link`]): its HubSpot client (whose
//! limiter paces every call), what HubSpot taught it about list batches, and its pause.
//!
//! A DAILY 429 pauses a connector until HubSpot's day may be over ([`policy::daily_retry_at`]),
//! and the pause is written under `state/` so the next process (a restart, the next `sendtime
//! tick`) keeps it; a refused token, or a page that is not HubSpot's API, pauses it for
//! [`policy::REFUSED_TOKEN_PAUSE_MS`], and an OAuth token endpoint that fails for
//! [`policy::NO_ACCESS_TOKEN_PAUSE_MS`], in this process only, since a fix should work at once.
//! Either way its contacts stay queued.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::Dispatcher;
use crate::config::Connector;
use crate::datasets::outcomes::Action;
use crate::hubspot::ApiError;
use crate::hubspot::client::Admitted;
use crate::hubspot::limiter::Lane;
use crate::hubspot::{Client, policy};
use crate::metrics::Metrics;
use crate::time::format_minute;

/// How often a call waiting on the limiter looks for a 429's hold past its tick's horizon.
const HOLD_CHECK: Duration = Duration::from_secs(1);

/// The route of a call for one contact ([`Link::one_contact`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OneContact {
    /// An enrollment into this workflow.
    Enroll(u64),
    /// A read of the contact's workflow enrollments.
    Enrollments,
    /// A read of the contact's record (its address now).
    Record,
}

/// Why a connector sends nothing for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseReason {
    /// HubSpot's daily allowance is spent; outlasts the process.
    DailyLimit,
    /// HubSpot refused the token (401, or a 403 other than a missing scope).
    RefusedToken,
    /// The API route answered with a page, not HubSpot's API ([`ApiError::NotTheApi`]).
    NoApiRoute,
    /// No OAuth access token: HubSpot's token endpoint failed ([`ApiError::NoAccessToken`]).
    NoAccessToken,
    /// HubSpot is moving the account between data hosting locations ([`ApiError::Migrating`]).
    AccountMigrating,
}

impl PauseReason {
    /// Whether a pause of this kind is the account's, not this process's: kept across new
    /// settings and restarts ([`Dispatcher::store_pauses`]). An account migration's was this
    /// process's, so every `sendtime tick` (or a reload) called into it again (an audit).
    pub fn lasts(self) -> bool {
        matches!(
            self,
            PauseReason::DailyLimit | PauseReason::AccountMigrating
        )
    }

    /// The longest a pause of this kind lasts from when it is set.
    fn longest_ms(self) -> i64 {
        match self {
            PauseReason::DailyLimit => policy::DAILY_PAUSE_MAX_MS,
            PauseReason::RefusedToken | PauseReason::NoApiRoute => policy::REFUSED_TOKEN_PAUSE_MS,
            PauseReason::NoAccessToken => policy::NO_ACCESS_TOKEN_PAUSE_MS,
            PauseReason::AccountMigrating => policy::MIGRATION_PAUSE_MAX_MS,
        }
    }
}

/// Whether a pause or hold until `until`, of a kind lasting at most `longest_ms`, is in force at
/// `now`. One ending further away than that was set by a clock since stepped back (a VM's
/// wrong clock corrected): kept, it would hold contacts for as long as the clock was ahead.
fn in_force(until: i64, now: i64, longest_ms: i64) -> bool {
    until > now && until - now <= longest_ms
}

#[derive(Debug, Clone, Copy)]
struct Pause {
    /// Clock ms.
    until: i64,
    reason: PauseReason,
    /// HubSpot was asked when its daily limit resets (once per daily pause).
    asked: bool,
}

impl Pause {
    fn in_force(&self, now: i64) -> bool {
        in_force(self.until, now, self.reason.longest_ms())
    }
}

/// One connector's client and what the dispatcher learned about it across ticks.
pub struct Link {
    pub id: String,
    pub client: Client,
    /// The account's zone (`time_zone`), whose midnight ends a daily-limit pause: the
    /// config's latest (a new zone alone keeps the link, its pauses and holds).
    time_zone: Mutex<Option<chrono_tz::Tz>>,
    pause: Mutex<Option<Pause>>,
    /// Per kind of call, until when (clock ms) it waits because the token lacks a scope it
    /// needs ([`ApiError::MissingScopes`]): the connector's other kinds of call go on.
    scope_holds: Mutex<[Option<i64>; Action::ALL.len()]>,
    /// Told when a scope hold begins: calls of its kind waiting at the limiter leave.
    scope_held_now: tokio::sync::Notify,
    /// When (clock ms) a call for one contact last went through, by its route: a page in
    /// place of the API for one such call while others of its route go through is that
    /// call's, not the route's (a list add or a callback batch is many contacts' call).
    /// Entries older than that are let go.
    answered: Mutex<HashMap<OneContact, i64>>,
    /// The workflows and lists HubSpot refused calls to, read and held.
    pub targets: super::target_holds::TargetHolds,
    /// Largest list batch HubSpot accepted after refusing a larger one.
    pub learned_batch: AtomicUsize,
}

impl PauseReason {
    /// As `/status` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            PauseReason::DailyLimit => "daily_limit",
            PauseReason::RefusedToken => "refused_token",
            PauseReason::NoApiRoute => "no_api_route",
            PauseReason::AccountMigrating => "account_migrating",
            PauseReason::NoAccessToken => "no_access_token",
        }
    }
}

/// Why a connector makes no calls, as `/status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PausedBy {
    /// The pause file cannot be read: every contact is held until it is fixed.
    PausesUnreadable,
    /// An operator's `sendtime pause` (or the dashboard's button).
    Operator,
    HubSpot(PauseReason),
}

impl PausedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            PausedBy::PausesUnreadable => "pauses_unreadable",
            PausedBy::Operator => "operator",
            PausedBy::HubSpot(why) => why.as_str(),
        }
    }
}

impl serde::Serialize for PausedBy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Why `connector` makes no calls at `now`, if it does not: an unreadable pause file, an
/// operator's pause, or HubSpot's on its `link` (with its end).
pub fn paused(
    pauses: &crate::pauses::Pauses,
    link: Option<&Link>,
    connector: &str,
    now: i64,
) -> Option<(PausedBy, Option<i64>)> {
    if pauses.unreadable {
        Some((PausedBy::PausesUnreadable, None))
    } else if pauses.connectors.contains_key(connector) {
        // An operator's pause has no end; HubSpot's under it is not what shows.
        Some((PausedBy::Operator, None))
    } else {
        link?
            .pause_at(now)
            .map(|(until, why)| (PausedBy::HubSpot(why), Some(until)))
    }
}

impl Link {
    /// Contacts per list add: the connector's `list_batch_size`, or less once HubSpot refused
    /// a batch of it as too large. Dispatch sends batches of this size, and planning charges
    /// a call per batch of it.
    pub fn list_batch(&self, connector: &crate::config::Connector) -> usize {
        (connector.list_batch_size)
            .min(
                self.learned_batch
                    .load(std::sync::atomic::Ordering::Relaxed),
            )
            .max(1)
    }

    pub(super) fn new(id: String, client: Client, time_zone: Option<chrono_tz::Tz>) -> Link {
        Link {
            id,
            client,
            time_zone: Mutex::new(time_zone),
            pause: Mutex::new(None),
            scope_holds: Mutex::new([None; Action::ALL.len()]),
            scope_held_now: tokio::sync::Notify::new(),
            answered: Mutex::default(),
            targets: Default::default(),
            learned_batch: AtomicUsize::new(usize::MAX),
        }
    }

    /// Until when nothing goes out through this connector (clock ms), if paused at `now`.
    pub fn paused_at(&self, now: i64) -> Option<i64> {
        self.pause_at(now).map(|(until, _)| until)
    }

    /// Until when and why nothing goes out, if paused at `now`.
    pub fn pause_at(&self, now: i64) -> Option<(i64, PauseReason)> {
        self.pause
            .lock()
            .unwrap()
            .filter(|p| p.in_force(now))
            .map(|p| (p.until, p.reason))
    }

    /// A pause of a kind that outlasts the process ([`PauseReason::lasts`]).
    fn lasting_pause(&self) -> Option<(i64, PauseReason)> {
        self.pause
            .lock()
            .unwrap()
            .filter(|p| p.reason.lasts())
            .map(|p| (p.until, p.reason))
    }

    /// HubSpot answered a DAILY 429 at `now`: pause until the day may be over
    /// ([`policy::daily_retry_at`], unless [`Link::learn_daily_reset`] learns when). Returns
    /// the end of the pause as known now.
    pub fn pause_for_the_day(&self, now: i64, metrics: &Metrics) -> i64 {
        let until = policy::daily_retry_at(now, *self.time_zone.lock().unwrap());
        let mut pause = self.pause.lock().unwrap();
        match pause.as_mut() {
            Some(p) if p.until >= until && p.in_force(now) => p.until,
            other => {
                if other.is_none() {
                    tracing::warn!(
                        connector = %self.id,
                        until = %format_minute(until),
                        "HubSpot daily API limit reached: connector paused; contacts stay queued"
                    );
                    metrics.connector_paused(&self.id).set(1);
                }
                *pause = Some(Pause {
                    until,
                    reason: PauseReason::DailyLimit,
                    asked: false,
                });
                until
            }
        }
    }

    /// Ask HubSpot, once per daily pause, when its daily limit resets (its daily API usage):
    /// once it says, the pause lasts until then (a minute after, for clocks apart) instead of
    /// probing every hour. `tick`: when the tick that met the limit began. The read waits for
    /// its turn at most [`policy::USAGE_READ_MAX`] (a ten-secondly 429's `Retry-After` may hold
    /// the limiter for an hour, and the tick, and a stop, with it).
    pub async fn learn_daily_reset(&self, tick: i64) {
        let ask = match self.pause.lock().unwrap().as_mut() {
            Some(p) if p.reason == PauseReason::DailyLimit && !p.asked => {
                p.asked = true;
                true
            }
            _ => false,
        };
        if !ask {
            return;
        }
        let read = self.client.daily_reset_at();
        let Ok(Some(reset)) = tokio::time::timeout(policy::USAGE_READ_MAX, read).await else {
            return;
        };
        let Some(until) = policy::daily_reset_pause_until(tick, reset) else {
            return;
        };
        if let Some(p) = self.pause.lock().unwrap().as_mut() {
            p.until = until;
            tracing::info!(
                connector = %self.id,
                until = %format_minute(until),
                "HubSpot reports when its daily limit resets: connector paused until then"
            );
        }
    }

    /// HubSpot refused the token at `now` (`status`, `message`): every call through this
    /// connector would fail the same way, so hold them all rather than fail the queue.
    pub fn pause_for_the_token(&self, now: i64, status: u16, message: &str, metrics: &Metrics) {
        let until = now + policy::REFUSED_TOKEN_PAUSE_MS;
        self.hold(now, until, PauseReason::RefusedToken, metrics, || {
            format!(
                "HubSpot refused the connector's credentials ({status}: {message}): connector paused and contacts stay queued; set a valid token (access_token_env, or for OAuth refresh_token_env and client_id_env): a reload that names a variable holding one lifts the pause at the next tick, as does a restart with it set (else it tries once more at the time shown)"
            )
        });
    }

    /// HubSpot refused a call of `action` at `now` for a scope the token lacks (`e`): every
    /// call of that kind would be refused alike, so they wait (tried again after the pause a
    /// refused token gets), while the connector's other kinds of call go on (an earlier
    /// version paused the whole connector, so one list webhook without `crm.lists.write` held
    /// every enrollment). Returns the end of the hold.
    pub fn hold_for_scopes(&self, action: Action, now: i64, e: &ApiError) -> i64 {
        let mut holds = self.scope_holds.lock().unwrap();
        let hold = &mut holds[action as usize];
        match *hold {
            Some(until) if in_force(until, now, policy::REFUSED_TOKEN_PAUSE_MS) => until,
            _ => {
                let until = now + policy::REFUSED_TOKEN_PAUSE_MS;
                tracing::error!(
                    connector = %self.id,
                    action = action.as_str(),
                    until = %format_minute(until),
                    "{e}: these calls wait and their contacts stay queued, while the connector's other calls go on; grant the app the scope (reinstall it with the scope, or give the token it) (it tries once more at the time shown)"
                );
                *hold = Some(until);
                self.scope_held_now.notify_waiters();
                until
            }
        }
    }

    /// Once calls of `action` wait for a missing scope, until when: a call waiting its turn
    /// at the limiter leaves then, rather than take a turn it would not use (a tick's calls
    /// queued there each waited their turn, minutes at a low pace, ahead of the connector's
    /// other calls).
    pub async fn until_scope_held(&self, action: Action, now: impl Fn() -> i64) -> i64 {
        loop {
            let told = self.scope_held_now.notified();
            let mut told = std::pin::pin!(told);
            // Listening before looking, so a hold set between the two is not missed.
            told.as_mut().enable();
            if let Some(until) = self.scope_held(action, now()) {
                return until;
            }
            told.await;
        }
    }

    /// Until when calls of `action` wait for a missing scope, if they do at `now`.
    pub fn scope_held(&self, action: Action, now: i64) -> Option<i64> {
        self.scope_holds.lock().unwrap()[action as usize]
            .filter(|until| in_force(*until, now, policy::REFUSED_TOKEN_PAUSE_MS))
    }

    /// The kinds of call waiting for a missing scope at `now`, with the end of each wait.
    pub fn scope_holds(&self, now: i64) -> Vec<(Action, i64)> {
        Action::ALL
            .into_iter()
            .filter_map(|a| Some((a, self.scope_held(a, now)?)))
            .collect()
    }

    /// `result` of a call for one contact through `route` at `now`, as the caller should take
    /// it. A success is noted; a page in place of the API ([`ApiError::NotTheApi`]) while
    /// calls of that route went through in the last [`policy::REFUSED_TOKEN_PAUSE_MS`] is
    /// this call's own (an HTML 404 for one record), retried with backoff as a transient
    /// failure. As the route's, one contact paused the connector for five minutes at each
    /// try (an audit). A route gone for every call is paused once its last success is that
    /// old.
    pub fn one_contact<T>(
        &self,
        route: OneContact,
        result: Result<T, ApiError>,
        now: i64,
    ) -> Result<T, ApiError> {
        let mut answered = self.answered.lock().unwrap();
        answered.retain(|_, at| (0..policy::REFUSED_TOKEN_PAUSE_MS).contains(&(now - *at)));
        match result {
            Ok(t) => {
                answered.insert(route, now);
                Ok(t)
            }
            Err(ApiError::NotTheApi { status, message }) if answered.contains_key(&route) => {
                Err(ApiError::Transient {
                    status: Some(status),
                    // A 2xx page: something passed the call on, which may have been taken.
                    may_have_reached: (200..300).contains(&status),
                    message: format!(
                        "HTTP {status} page for this call while others of its kind go through: {message}"
                    ),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// A call at `now` got a page, not HubSpot's API ([`ApiError::NotTheApi`]): as for a
    /// refused token, every call would, so all are held and tried again later.
    pub fn pause_for_the_route(&self, now: i64, e: &ApiError, metrics: &Metrics) {
        let until = now + policy::REFUSED_TOKEN_PAUSE_MS;
        self.hold(now, until, PauseReason::NoApiRoute, metrics, || {
            format!(
                "{e}: connector paused and contacts stay queued; check api_base (it tries again at the time shown)"
            )
        });
    }

    /// A call at `now` found no OAuth access token ([`ApiError::NoAccessToken`]): every call
    /// would wait for one, so all are held, briefly, and none counts as a contact's failure.
    pub fn pause_for_the_token_endpoint(&self, now: i64, e: &ApiError, metrics: &Metrics) {
        let until = now + policy::NO_ACCESS_TOKEN_PAUSE_MS;
        self.hold(now, until, PauseReason::NoAccessToken, metrics, || {
            format!(
                "{e}: connector paused and contacts stay queued (it tries again at the time shown)"
            )
        });
    }

    /// A call at `now` found the account being migrated ([`ApiError::Migrating`]): every call
    /// would until it ends, so all are held until HubSpot's `Retry-After` (an hour without
    /// one, a day at most), and none counts as a contact's failure.
    pub fn pause_for_migration(
        &self,
        now: i64,
        retry_after: Option<Duration>,
        e: &ApiError,
        metrics: &Metrics,
    ) -> i64 {
        let wait = retry_after.map_or(policy::MIGRATION_PAUSE_MS, |d| d.as_millis() as i64);
        let until = now + wait.clamp(crate::time::MINUTE_MS, policy::MIGRATION_PAUSE_MAX_MS);
        self.hold(now, until, PauseReason::AccountMigrating, metrics, || {
            format!(
                "{e}: connector paused and contacts stay queued until HubSpot's move ends (it tries again at the time shown)"
            )
        });
        self.paused_at(now).unwrap_or(until)
    }

    /// Hold every call from `now` until `until` (clock ms), unless held already.
    fn hold(
        &self,
        now: i64,
        until: i64,
        reason: PauseReason,
        metrics: &Metrics,
        why: impl Fn() -> String,
    ) {
        let mut pause = self.pause.lock().unwrap();
        if !pause.is_some_and(|p| p.in_force(now)) {
            tracing::error!(connector = %self.id, until = %format_minute(until), "{}", why());
            metrics.connector_paused(&self.id).set(1);
            *pause = Some(Pause {
                until,
                reason,
                asked: false,
            });
        }
    }

    /// Wait for the limiter's permission for one call, in `lane`, unless the connector is
    /// paused before or after waiting, `stop` turns true, or a 429 holds the limiter past
    /// `horizon`: then until when (clock ms) the work stays queued. A long hold is left to a
    /// later tick, as a retry's long wait is, so neither the tick nor a shutdown waits it out.
    pub async fn admit(
        &self,
        now: impl Fn() -> i64,
        stop: &watch::Receiver<bool>,
        horizon: Instant,
        lane: Lane,
    ) -> Result<Admitted<'_>, i64> {
        let halt = || {
            if *stop.borrow() {
                return Some(now());
            }
            self.paused_at(now())
        };
        if let Some(until) = halt() {
            return Err(until);
        }
        let mut stop = stop.clone();
        let stopped = async {
            // A sender gone (no one will ask to stop) is never a stop.
            if stop.wait_for(|s| *s).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        let admitted = tokio::select! {
            admitted = self.client.admit_in(lane) => admitted,
            () = stopped => return Err(now()),
            t = self.client.held_past(horizon, HOLD_CHECK) => {
                let left = t.saturating_duration_since(Instant::now());
                return Err(now() + left.as_millis() as i64);
            }
        };
        match halt() {
            Some(until) => Err(until),
            None => Ok(admitted),
        }
    }
}

impl Dispatcher {
    /// The connector's link, rebuilt when its settings change (its limiter is kept otherwise,
    /// so pacing carries across ticks).
    pub(super) fn link(&mut self, connector: &Connector) -> anyhow::Result<Arc<Link>> {
        // The client secret signs OAuth refreshes: a rotation reorders its variables.
        let account = format!("{}|{:?}|", connector.api_base, connector.credentials);
        let key = format!(
            "{account}{:?}|{}",
            connector.client_secret_env, connector.requests_per_10s
        );
        if let Some((k, link)) = self.links.get(&connector.id)
            && *k == key
        {
            *link.time_zone.lock().unwrap() = connector.time_zone;
            return Ok(link.clone());
        }
        let client = Client::for_connector(connector, self.request_timeout)?;
        // The account's one limiter paces at the newest config's limit (a scheduled import
        // started on an older config built its client with the old one).
        client.pace_at(connector.requests_per_10s);
        let link = Arc::new(Link::new(connector.id.clone(), client, connector.time_zone));
        if let Some((k, old)) = self.links.get(&connector.id) {
            if k.starts_with(&account) {
                // The same token through the same API: the list batch HubSpot took is still
                // the one to send (a rotated secret, a new rate, relearned it at twice the
                // cost; an audit).
                let learned = old.learned_batch.load(std::sync::atomic::Ordering::Relaxed);
                link.learned_batch
                    .store(learned, std::sync::atomic::Ordering::Relaxed);
            } else {
                // What HubSpot said of the old one's limit is no word on it.
                crate::hubspot::limiter::Limiter::forget_rate_of(&connector.id);
            }
        }
        // New settings do not lift HubSpot's daily limit, nor end an account's migration:
        // keep a pause of those, from this process or (`sendtime tick` runs once a minute)
        // an earlier one. A refused-token
        // pause is dropped: the new settings may name a token that works, and the contacts
        // it held, queued until its end, go at the next tick (they waited for it).
        let lifted = (self.links.get(&connector.id))
            .and_then(|(_, old)| old.pause_at(self.clock.now_ms()))
            .filter(|(_, why)| {
                matches!(why, PauseReason::RefusedToken | PauseReason::NoAccessToken)
            });
        if let Some((until, _)) = lifted {
            self.lifted.push((connector.id.clone(), until));
        }
        let lasting = match self.links.get(&connector.id) {
            Some((_, old)) => old.lasting_pause(),
            None => self.stored_pause(&connector.id).inspect(|(until, why)| {
                let what = match why {
                    PauseReason::AccountMigrating => {
                        "HubSpot was moving the account between data hosting locations"
                    }
                    _ => "HubSpot's daily API limit was reached",
                };
                tracing::warn!(
                    connector = %connector.id,
                    until = %format_minute(*until),
                    "{what} before this run: connector paused until then; contacts stay queued"
                );
            }),
        };
        // A pause from before was asked about already, when HubSpot could say.
        *link.pause.lock().unwrap() = lasting.map(|(until, reason)| Pause {
            asked: true,
            until,
            reason,
        });
        self.metrics
            .connector_paused(&connector.id)
            .set(i64::from(lasting.is_some()));
        // Workflows found turned off, and when each was last read, as recorded when read (by
        // this process or an earlier one).
        let kept = super::workflow_reads::files(&self.data_dir, &connector.id);
        link.targets.keep_in(kept, self.clock.now_ms());
        self.links.insert(connector.id.clone(), (key, link.clone()));
        Ok(link)
    }

    /// The links of connectors with a pause an earlier run stored, so that it
    /// shows (`/status`, metrics) from the first tick, not once a contact comes due.
    pub(super) fn load_stored_pauses(&mut self, config: &crate::config::Config) {
        for c in &config.connectors {
            if c.dry_run
                || self.links.contains_key(&c.id)
                || !pause_path(&self.data_dir, &c.id).exists()
            {
                continue;
            }
            // What fails here fails again, logged, when a contact comes due.
            if let Err(e) = self.link(c) {
                tracing::debug!(connector = %c.id, "{e:#}");
            }
        }
    }

    /// Lift the pauses that are over by `now`.
    pub(super) fn resume_connectors(&mut self, now: i64) {
        for (_, link) in self.links.values() {
            let mut pause = link.pause.lock().unwrap();
            let Some(p) = pause.filter(|p| !p.in_force(now)) else {
                continue;
            };
            *pause = None;
            self.metrics.connector_paused(&link.id).set(0);
            if p.until > now {
                tracing::warn!(
                    connector = %link.id,
                    until = %format_minute(p.until),
                    "the clock went back since this pause began: it ends now, not at the time shown"
                );
                continue;
            }
            let why = match p.reason {
                PauseReason::RefusedToken => "refused-token pause over: trying the token again",
                PauseReason::NoApiRoute => "no-API-route pause over: trying HubSpot again",
                PauseReason::NoAccessToken => {
                    "no-access-token pause over: trying HubSpot's token endpoint again"
                }
                PauseReason::DailyLimit => "daily-limit pause over: sending again",
                PauseReason::AccountMigrating => {
                    "account-migration pause over: trying HubSpot again"
                }
            };
            tracing::info!(connector = %link.id, "{why}");
        }
    }

    /// A pause an earlier run recorded ([`PauseReason::lasts`]) that is not over yet. The
    /// file goes once over; one further away than a pause lasts is ignored but kept (`tick
    /// --now` in the past must not delete the pause a later `serve` needs), and so is one
    /// that cannot be read (a newer version's reason: its process may need it again).
    fn stored_pause(&mut self, connector: &str) -> Option<(i64, PauseReason)> {
        let now = self.clock.now_ms();
        let path = pause_path(&self.data_dir, connector);
        match read_pause(&path) {
            Some((until, why)) if in_force(until, now, why.longest_ms()) => {
                self.pauses_on_disk
                    .insert(connector.to_string(), (until, why));
                Some((until, why))
            }
            Some((until, _)) if until > now => None,
            Some(_) => {
                let _ = std::fs::remove_file(path);
                None
            }
            None => None,
        }
    }

    /// Write each connector's pause that outlasts the process ([`PauseReason::lasts`]) where
    /// the next process finds it (and remove it once over), so a restart or the next
    /// `sendtime tick` does not spend a call on learning again that it still holds.
    pub(super) fn store_pauses(&mut self) {
        let changed: Vec<(String, Option<(i64, PauseReason)>)> = self
            .links
            .iter()
            .map(|(id, (_, link))| (id.clone(), link.lasting_pause()))
            .filter(|(id, p)| self.pauses_on_disk.get(id).copied() != *p)
            .collect();
        for (id, until) in changed {
            let path = pause_path(&self.data_dir, &id);
            let written = match until {
                Some(pause) => crate::store::write_durably(&path, pause_text(pause).as_bytes()),
                None => match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                },
            };
            match (written, until) {
                (Ok(()), Some(t)) => {
                    self.pauses_on_disk.insert(id, t);
                }
                (Ok(()), None) => {
                    self.pauses_on_disk.remove(&id);
                }
                (Err(e), _) => {
                    if let Some(suppressed) = self.pause_write_errors.due() {
                        tracing::warn!(
                            connector = %id,
                            suppressed,
                            "cannot record the connector's pause in {} (a restart would try HubSpot again before it ends): {e}",
                            path.display()
                        );
                    }
                }
            }
        }
    }
}

/// Until when and why the pause a run stored for `connector` lasts, if past `now`: what a
/// process that has not called yet (its first tick, its scheduled import) must respect.
pub fn stored_pause_of(data_dir: &Path, connector: &str, now: i64) -> Option<(i64, PauseReason)> {
    read_pause(&pause_path(data_dir, connector))
        .filter(|(until, why)| in_force(*until, now, why.longest_ms()))
}

/// A stored pause's text: its end (epoch ms), and why unless the daily limit (the file an
/// earlier version wrote held the end alone).
fn pause_text((until, why): (i64, PauseReason)) -> String {
    match why {
        PauseReason::DailyLimit => until.to_string(),
        _ => format!("{until} {}", why.as_str()),
    }
}

/// The pause stored at `path`, if readable ([`pause_text`]); a reason this build does not
/// know is none (and its file is kept).
fn read_pause(path: &Path) -> Option<(i64, PauseReason)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut words = text.split_whitespace();
    let until = words.next()?.parse::<i64>().ok()?;
    let why = match words.next() {
        None => PauseReason::DailyLimit,
        Some(w) if w == PauseReason::AccountMigrating.as_str() => PauseReason::AccountMigrating,
        Some(_) => return None,
    };
    Some((until, why))
}

/// Where a connector's pause that outlasts the process ([`pause_text`]) is kept.
fn pause_path(data_dir: &Path, connector: &str) -> PathBuf {
    crate::store::state_dir(data_dir).join(format!("dispatch-pause-{connector}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::time::MINUTE_MS;
    use std::sync::atomic::Ordering;

    const NOW: i64 = 1_795_750_200_000; // 2026-11-27 03:30 UTC
    /// When a day spent at [`NOW`] is tried again: a minute past the next whole hour.
    const NEXT_HOUR: i64 = 1_795_752_000_000 + MINUTE_MS;

    fn connector(requests_per_10s: u32) -> Connector {
        Connector {
            id: "main".into(),
            portal_id: 1,
            app_id: 2,
            client_secret_env: vec!["UNUSED".into()],
            // Any variable that is set: nothing is called.
            credentials: crate::config::Credentials::Static {
                access_token_env: "PATH".into(),
            },
            api_base: "http://127.0.0.1:9".into(),
            requests_per_10s,
            requests_per_day: 1000,
            list_batch_size: 10,
            callback_batch_size: 100,
            dry_run: false,
            allow_unsigned: false,
            require_portal_id: false,
            min_signature_version: crate::receiver::signature::Floor::Auto,
            daily_budget: None,
            time_zone: None,
            time_zone_property: crate::local_time::DEFAULT_ZONE_PROPERTY.into(),
            quiet_hours: None,
        }
    }

    fn dispatcher(data: &Path, now: i64) -> Dispatcher {
        Dispatcher::open(data, Metrics::new(), Clock::Fixed(now)).unwrap()
    }

    /// The daily limit met just before the account's midnight: HubSpot's reset read before
    /// it is taken; read just after, it names the next day's, which is not (an earlier version
    /// paused the connector a whole day, an audit found).
    #[tokio::test]
    async fn a_reset_read_after_midnight_does_not_pause_a_day() {
        use crate::hubspot::standin::{DEFAULT_TOKEN, Options, StandIn};
        use crate::hubspot::{Client, ClientOptions};
        let dir = tempfile::tempdir().unwrap();
        let clock = dir.path().join("clock");
        let midnight =
            NOW.div_euclid(crate::time::DAY_MS) * crate::time::DAY_MS + crate::time::DAY_MS;
        let standin = StandIn::start(Options {
            clock: Clock::File(clock.clone()),
            usage_api: true,
            ..Options::default()
        })
        .await
        .unwrap();
        // Met at 22:30: without HubSpot's word, tried again at 23:01.
        let (tick, met) = (
            midnight - 2 * crate::time::HOUR_MS,
            midnight - 90 * MINUTE_MS,
        );
        let paused_after_reading_at = |read: i64| {
            let client = Client::new(&standin.url(), DEFAULT_TOKEN, ClientOptions::default());
            let link = Link::new("main".into(), client.unwrap(), None);
            let clock = clock.clone();
            async move {
                link.pause_for_the_day(met, &Metrics::new());
                std::fs::write(&clock, read.to_string()).unwrap();
                link.learn_daily_reset(tick).await;
                link.paused_at(midnight + 30_000)
            }
        };
        assert_eq!(
            paused_after_reading_at(midnight - 10_000).await,
            Some(midnight + MINUTE_MS),
            "HubSpot's reset, a minute after"
        );
        assert_eq!(paused_after_reading_at(midnight + 5_000).await, None);
    }

    #[tokio::test]
    async fn admission_is_refused_while_paused_or_stopping() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = dispatcher(dir.path(), NOW);
        let link = d.link(&connector(100)).unwrap();
        let (stop, running) = watch::channel(false);
        let stopping = watch::channel(true).1;
        let horizon = Instant::now() + Duration::from_secs(30);
        assert!(
            link.admit(|| NOW, &running, horizon, Lane::Queue)
                .await
                .is_ok()
        );
        assert_eq!(
            link.admit(|| NOW, &stopping, horizon, Lane::Queue)
                .await
                .err(),
            Some(NOW)
        );
        let metrics = Metrics::new();
        assert_eq!(link.pause_for_the_day(NOW, &metrics), NEXT_HOUR);
        assert_eq!(
            link.admit(|| NOW, &running, horizon, Lane::Queue)
                .await
                .err(),
            Some(NEXT_HOUR)
        );
        assert!(
            link.admit(|| NEXT_HOUR, &running, horizon, Lane::Queue)
                .await
                .is_ok()
        );
        drop(stop);
        d.close();
    }

    #[tokio::test]
    async fn new_settings_keep_a_daily_pause_and_drop_a_refused_token_pause() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = dispatcher(dir.path(), NOW);
        let metrics = Metrics::new();
        let link = d.link(&connector(100)).unwrap();
        link.pause_for_the_day(NOW, &metrics);
        let rebuilt = d.link(&connector(150)).unwrap();
        assert!(!Arc::ptr_eq(&link, &rebuilt), "new settings, new client");
        assert_eq!(rebuilt.paused_at(NOW), Some(NEXT_HOUR));
        rebuilt.pause_for_the_day(NEXT_HOUR, &metrics); // still spent at the next hour
        let refused = d.link(&connector(100)).unwrap();
        assert_eq!(
            refused.paused_at(NEXT_HOUR),
            Some(NEXT_HOUR + crate::time::HOUR_MS)
        );
        *refused.pause.lock().unwrap() = None;
        refused.pause_for_the_token(NOW, 401, "bad token", &metrics);
        assert!(refused.paused_at(NOW).is_some());
        let fixed = d.link(&connector(150)).unwrap();
        assert_eq!(fixed.paused_at(NOW), None, "a new token is tried at once");
        d.close();
    }

    /// An account's migration (HubSpot's 477) is the account's, as its daily limit is: its
    /// pause outlasts new settings and the process (it was this process's: every `sendtime
    /// tick`, or a reload, called into it again; an audit), and is forgotten once over.
    #[tokio::test]
    async fn an_account_migration_pause_outlasts_new_settings_and_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let file = pause_path(dir.path(), "main");
        let mut d = dispatcher(dir.path(), NOW);
        let link = d.link(&connector(100)).unwrap();
        let e = ApiError::Migrating {
            retry_after: Some(Duration::from_secs(3 * 3600)),
            message: "moving".into(),
        };
        let until =
            link.pause_for_migration(NOW, Some(Duration::from_secs(3 * 3600)), &e, &d.metrics);
        assert_eq!(until, NOW + 3 * crate::time::HOUR_MS);
        let rebuilt = d.link(&connector(150)).unwrap();
        assert!(!Arc::ptr_eq(&link, &rebuilt), "new settings, new client");
        assert_eq!(
            rebuilt.pause_at(NOW),
            Some((until, PauseReason::AccountMigrating))
        );
        d.store_pauses();
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            format!("{until} account_migrating")
        );
        d.close();
        let mut d = dispatcher(dir.path(), NOW + MINUTE_MS);
        let link = d.link(&connector(100)).unwrap();
        let at = NOW + MINUTE_MS;
        assert_eq!(
            link.pause_at(at),
            Some((until, PauseReason::AccountMigrating))
        );
        assert_eq!(
            stored_pause_of(dir.path(), "main", at),
            Some((until, PauseReason::AccountMigrating))
        );
        d.resume_connectors(until);
        d.store_pauses();
        assert!(!file.exists());
        d.close();
        // A reason this build does not know is no pause (a newer version's file), kept.
        std::fs::write(&file, format!("{until} unheard_of")).unwrap();
        assert_eq!(stored_pause_of(dir.path(), "main", NOW), None);
        let mut d = dispatcher(dir.path(), NOW);
        let link = d.link(&connector(100)).unwrap();
        assert_eq!(link.pause_at(NOW), None);
        d.store_pauses();
        assert!(file.exists());
        d.close();
    }

    #[tokio::test]
    async fn a_new_time_zone_alone_keeps_the_link_and_its_pauses() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = dispatcher(dir.path(), NOW);
        let metrics = Metrics::new();
        let link = d.link(&connector(100)).unwrap();
        link.pause_for_the_token(NOW, 401, "bad token", &metrics);
        let mut kolkata = connector(100);
        kolkata.time_zone = Some(chrono_tz::Asia::Kolkata);
        let same = d.link(&kolkata).unwrap();
        assert!(Arc::ptr_eq(&link, &same), "a new zone keeps the client");
        assert!(
            same.paused_at(NOW).is_some(),
            "the refused token stays paused"
        );
        *same.pause.lock().unwrap() = None;
        // 03:30 UTC is 09:00 in Kolkata: its midnight is after the next whole hour.
        assert_eq!(same.pause_for_the_day(NOW, &metrics), NEXT_HOUR);
        *same.pause.lock().unwrap() = None;
        let evening = NOW + 15 * crate::time::HOUR_MS; // 18:30 UTC, 00:00 in Kolkata
        assert_eq!(
            same.pause_for_the_day(evening - 10 * MINUTE_MS, &metrics),
            evening + MINUTE_MS,
            "the new zone's midnight ends the day"
        );
        d.close();
    }

    #[tokio::test]
    async fn a_daily_pause_outlasts_the_process_and_is_forgotten_once_over() {
        let dir = tempfile::tempdir().unwrap();
        let file = pause_path(dir.path(), "main");
        let mut d = dispatcher(dir.path(), NOW);
        let link = d.link(&connector(100)).unwrap();
        link.pause_for_the_day(NOW, &d.metrics);
        d.store_pauses();
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            NEXT_HOUR.to_string()
        );
        d.close();
        // The next process knows it.
        let mut d = dispatcher(dir.path(), NOW + MINUTE_MS);
        let link = d.link(&connector(100)).unwrap();
        assert_eq!(link.paused_at(NOW + MINUTE_MS), Some(NEXT_HOUR));
        // Over at the hour: lifted, and the file goes.
        d.resume_connectors(NEXT_HOUR);
        assert_eq!(link.paused_at(NOW), None);
        d.store_pauses();
        assert!(!file.exists());
        d.close();
        // A refused-token pause is this process's only.
        let mut d = dispatcher(dir.path(), NOW);
        let link = d.link(&connector(100)).unwrap();
        link.pause_for_the_token(NOW, 401, "bad token", &d.metrics);
        d.store_pauses();
        assert!(!file.exists());
        d.close();
    }
    /// The list batch HubSpot took stays through a link rebuilt for the same account (a new
    /// rate, a rotated secret), not for another token.
    #[tokio::test]
    async fn a_new_rate_keeps_the_list_batch_learned_another_token_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = dispatcher(dir.path(), NOW);
        let learned = |link: &Link| link.learned_batch.load(Ordering::Relaxed);
        let link = d.link(&connector(100)).unwrap();
        link.learned_batch.store(4, Ordering::Relaxed);
        let mut rotated = connector(50);
        rotated.client_secret_env = vec!["NEW".into(), "UNUSED".into()];
        let rebuilt = d.link(&rotated).unwrap();
        assert!(!Arc::ptr_eq(&link, &rebuilt));
        assert_eq!(learned(&rebuilt), 4);
        let mut other = connector(50);
        other.credentials = crate::config::Credentials::Static {
            access_token_env: "HOME".into(),
        };
        assert_eq!(learned(&d.link(&other).unwrap()), usize::MAX);
        d.close();
    }

    #[tokio::test]
    async fn pauses_set_by_a_clock_since_set_back_end_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let ahead = NOW + 3 * crate::time::DAY_MS; // a clock three days ahead, then corrected
        let mut d = dispatcher(dir.path(), NOW);
        let link = d.link(&connector(100)).unwrap();
        link.pause_for_the_day(ahead, &d.metrics);
        assert!(link.paused_at(ahead).is_some());
        assert_eq!(link.paused_at(NOW), None);
        assert_eq!(link.pause_for_the_day(NOW, &d.metrics), NEXT_HOUR);
        // Stored by a process whose clock was ahead: the next one does not wait for it.
        let file = pause_path(dir.path(), "main");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, (ahead + 1).to_string()).unwrap();
        assert_eq!(stored_pause_of(dir.path(), "main", NOW), None);
        assert_eq!(
            stored_pause_of(dir.path(), "main", ahead),
            Some((ahead + 1, PauseReason::DailyLimit))
        );
        assert_eq!(d.stored_pause("main"), None);
        assert!(
            file.exists(),
            "kept: a clock behind (`tick --now`) must not delete it"
        );
        // The other pauses alike, and a missing scope's hold.
        *link.pause.lock().unwrap() = None;
        link.pause_for_the_token(ahead, 401, "bad token", &d.metrics);
        assert_eq!(link.paused_at(NOW), None);
        d.resume_connectors(NOW);
        assert!(link.pause.lock().unwrap().is_none(), "lifted");
        link.pause_for_the_token(NOW, 401, "bad token", &d.metrics);
        assert_eq!(
            link.paused_at(NOW),
            Some(NOW + policy::REFUSED_TOKEN_PAUSE_MS)
        );
        let e = ApiError::MissingScopes {
            scopes: vec![],
            message: "no".into(),
        };
        link.hold_for_scopes(Action::Enroll, ahead, &e);
        assert_eq!(link.scope_held(Action::Enroll, NOW), None);
        assert_eq!(
            link.hold_for_scopes(Action::Enroll, NOW, &e),
            NOW + policy::REFUSED_TOKEN_PAUSE_MS
        );
        d.close();
    }
}
