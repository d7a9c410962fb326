//! A HubSpot API client for one connector (one account, one token).
//!
//! Every failure is sorted into an [`ApiError`] variant that says what the caller should do
//! next (wait for the rate limit, retry with backoff, split the batch, or give up and record
//! HubSpot's message), because the importer and the dispatcher decide on that, never on raw
//! status codes. The client does not retry by itself: callers own their retry policy, so a
//! dispatcher can keep other contacts moving while one waits.
//!
//! Every call first waits for the connector's [`Limiter`] (shared by every clone of the
//! client), so no caller can forget it; every response's `X-HubSpot-RateLimit-*` headers are
//! fed back into it so a nearly spent window slows everyone sharing the token down before
//! HubSpot answers 429, and a ten-secondly 429 holds them all for the wait [`policy`] gives.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::Context;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode, Url};
use serde::{Deserialize, Serialize};

use super::auth::Auth;
use super::limiter::{Lane, Limiter};
use super::paths;
use super::policy::{self, MAX_HEADER_WAIT};
use crate::config::Connector;

pub use super::paths::CALLBACKS_COMPLETE;
/// HubSpot's largest page for the email events API.
pub const MAX_EVENTS_PAGE: u32 = 1000;

/// Which of HubSpot's limits a 429 came from: they call for very different waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RatePolicy {
    /// `TEN_SECONDLY_ROLLING`: the burst window; free again within seconds.
    TenSecondly,
    /// `DAILY`: the account's daily allowance; nothing more today.
    Daily,
}

impl RatePolicy {
    /// HubSpot's `policyName`.
    pub fn as_str(self) -> &'static str {
        match self {
            RatePolicy::TenSecondly => "TEN_SECONDLY_ROLLING",
            RatePolicy::Daily => "DAILY",
        }
    }
}

impl fmt::Display for RatePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `X-HubSpot-RateLimit-*` headers of one response: what is left of the account's limits,
/// as HubSpot counts them (our own limiter only knows about this process's calls).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimit {
    /// `X-HubSpot-RateLimit-Max`: calls allowed per interval.
    pub max: Option<u32>,
    /// `X-HubSpot-RateLimit-Remaining`: calls left in the current interval.
    pub remaining: Option<u32>,
    /// `X-HubSpot-RateLimit-Interval-Milliseconds`.
    pub interval: Option<Duration>,
    /// `X-HubSpot-RateLimit-Daily`: calls allowed per day.
    pub daily: Option<u32>,
    /// `X-HubSpot-RateLimit-Daily-Remaining`.
    pub daily_remaining: Option<u32>,
}

impl RateLimit {
    pub const MAX: &str = "x-hubspot-ratelimit-max";
    pub const REMAINING: &str = "x-hubspot-ratelimit-remaining";
    pub const INTERVAL_MS: &str = "x-hubspot-ratelimit-interval-milliseconds";
    pub const DAILY: &str = "x-hubspot-ratelimit-daily";
    pub const DAILY_REMAINING: &str = "x-hubspot-ratelimit-daily-remaining";

    /// Read the headers; `None` when the response carries none of them (some endpoints and
    /// error paths do not), so "unknown" is never mistaken for "zero left".
    pub fn from_headers(headers: &HeaderMap) -> Option<RateLimit> {
        let num = |name: &str| -> Option<u64> {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok())
        };
        let clamp = |v: u64| v.min(u32::MAX as u64) as u32;
        let rate = RateLimit {
            max: num(Self::MAX).map(clamp),
            remaining: num(Self::REMAINING).map(clamp),
            // HubSpot's windows are seconds to a day; anything longer is not a window.
            interval: num(Self::INTERVAL_MS)
                .map(|ms| Duration::from_millis(ms.min(MAX_HEADER_WAIT.as_millis() as u64))),
            daily: num(Self::DAILY).map(clamp),
            daily_remaining: num(Self::DAILY_REMAINING).map(clamp),
        };
        (rate != RateLimit::default()).then_some(rate)
    }
}

/// A failed call, sorted by what the caller should do about it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// 429: wait. `retry_after` is HubSpot's `Retry-After` when it sent one; otherwise wait
    /// out the interval (ten-secondly) or stop for the day (daily).
    #[error("HubSpot rate limit {policy} reached{}: {message}", retry_after.map(|d| format!(" (retry after {d:?})")).unwrap_or_default())]
    RateLimited {
        policy: RatePolicy,
        retry_after: Option<Duration>,
        message: String,
    },
    /// 5xx, connection failures, timeouts: retry with backoff. `may_have_reached` says the
    /// request may have been received (and acted on) by HubSpot, e.g. a timeout after sending;
    /// a retry of such a call is at-least-once.
    #[error("HubSpot call failed ({}), worth retrying: {message}", status.map(|s| s.to_string()).unwrap_or_else(|| "no response".into()))]
    Transient {
        status: Option<u16>,
        may_have_reached: bool,
        message: String,
    },
    /// 477: the account is being moved between HubSpot's data hosting locations. Every call
    /// gets it until the move ends (HubSpot's `Retry-After`, "typically up to 24 hours").
    #[error("HubSpot is migrating the account (477){}: {message}", retry_after.map(|d| format!(" (retry after {d:?})")).unwrap_or_default())]
    Migrating {
        retry_after: Option<Duration>,
        message: String,
    },
    /// Other 4xx: retrying will not help; record HubSpot's message for a person.
    #[error("HubSpot refused the call with {status}: {message}")]
    Permanent {
        status: u16,
        message: String,
        correlation_id: Option<String>,
    },
    /// 403 `MISSING_SCOPES`: the token lacks a scope this kind of call needs. Calls of other
    /// kinds may go on; these fail alike until the app is granted the scope.
    #[error("HubSpot refused the call with 403: the token lacks {}: {message}", if scopes.is_empty() { "a scope it needs".to_string() } else { format!("the scope {}", scopes.join(", ")) })]
    MissingScopes {
        scopes: Vec<String>,
        message: String,
    },
    /// A 404 page (or a 405 or 410 one) from something in front of HubSpot's API (an edge, a
    /// proxy), or a redirect: the route is not there (a retired path, a wrong `api_base`), so
    /// every call through it fails alike.
    /// Neither the contact's failure nor worth an immediate retry: the connector waits.
    #[error("HubSpot's API did not answer: HTTP {status} page from in front of it ({message})")]
    NotTheApi { status: u16, message: String },
    /// No OAuth access token to call with: HubSpot's token endpoint failed or did not answer.
    /// The call was not made, and every call of the connector would wait alike: neither the
    /// contact's failure nor worth an immediate retry; the connector waits.
    #[error("no OAuth access token to call HubSpot with: {message}")]
    NoAccessToken {
        status: Option<u16>,
        message: String,
    },
    /// A list call refused because the batch is too large: split it and try again.
    #[error("HubSpot says a batch of {size} record ids is too large ({status}): {message}")]
    BatchTooLarge {
        size: usize,
        status: u16,
        message: String,
    },
}

/// How a [`ApiError::Transient`]'s text begins (its `#[error]` above).
const TRANSIENT_TEXT: &str = "HubSpot call failed (";

impl ApiError {
    /// Whether the same call may succeed later (rate limits and transient failures).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ApiError::RateLimited { .. }
                | ApiError::Transient { .. }
                | ApiError::NoAccessToken { .. }
                | ApiError::Migrating { .. }
        )
    }

    /// Whether `message`, an outcome row's, is a [`ApiError::Transient`]'s, the failures the
    /// dispatcher counts on a contact's tries: start-up counts them again from the rows, by
    /// this and not by the status (a redirect is no failure of the contact's, an edge's HTML
    /// 401 is one, HubSpot's JSON 401 is not).
    pub fn is_transient_text(message: &str) -> bool {
        message.starts_with(TRANSIENT_TEXT)
    }

    /// The HTTP status HubSpot answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::RateLimited { .. } => Some(429),
            ApiError::Transient { status, .. } | ApiError::NoAccessToken { status, .. } => *status,
            ApiError::MissingScopes { .. } => Some(403),
            ApiError::Migrating { .. } => Some(MIGRATING),
            ApiError::Permanent { status, .. }
            | ApiError::BatchTooLarge { status, .. }
            | ApiError::NotTheApi { status, .. } => Some(*status),
        }
    }
}

/// Where a redirect points, its host only: the path and query may echo a key (`hapikey=`) or
/// a contact's email, and the text goes to outcome rows, logs and `/status` (an audit).
fn shown_location(location: &str) -> String {
    match reqwest::Url::parse(location) {
        Ok(url) => format!("{}://{}/…", url.scheme(), url.host_str().unwrap_or("")),
        Err(_) => "a path on the same host".into(),
    }
}

/// One email event as HubSpot's email events API returns it. Fields we do not use are kept
/// in `extra` so the stand-in can serve, and tools can print, HubSpot's full shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmailEvent {
    /// HubSpot's event id (a string); unique together with `created`.
    pub id: String,
    /// Epoch milliseconds.
    pub created: i64,
    /// `OPEN`, `CLICK`, `SENT`, ...; empty when absent (HubSpot's UNBOUNCE events have no
    /// type): a type sendtime does not learn from, not a page it cannot read.
    #[serde(
        rename = "type",
        default,
        deserialize_with = "crate::lenient::or_default"
    )]
    pub kind: String,
    #[serde(
        default,
        deserialize_with = "crate::lenient::or_default",
        skip_serializing_if = "Option::is_none"
    )]
    pub recipient: Option<String>,
    #[serde(
        default,
        deserialize_with = "crate::lenient::or_default",
        skip_serializing_if = "Option::is_none"
    )]
    pub email_campaign_id: Option<i64>,
    /// Machine opens and bot clicks that HubSpot hides from its reports.
    #[serde(default, deserialize_with = "flag")]
    pub filtered_event: bool,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The filter flag, also as text (`"true"`): a bot's open read as a person's would be
/// learnt from.
fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Bool(b) => b,
        serde_json::Value::String(s) => s.trim().eq_ignore_ascii_case("true"),
        _ => false,
    })
}

/// One page of email events, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", from = "PageAsSent")]
pub struct EventsPage {
    pub events: Vec<EmailEvent>,
    pub has_more: bool,
    /// Opaque cursor for the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<String>,
    /// Events that could not be read (no id, no time): skipped and counted, not a page that
    /// stops the import.
    #[serde(skip)]
    pub unreadable: u64,
    /// When HubSpot answered, by its `Date` header: the import marks its window complete up
    /// to HubSpot's time, not this machine's (a clock ahead marked events complete before
    /// HubSpot had them, and no run read them; an audit).
    #[serde(skip)]
    pub answered_at_ms: Option<i64>,
}

/// A page as it comes, each event read on its own.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageAsSent {
    #[serde(default)]
    events: Vec<serde_json::Value>,
    /// Required: HubSpot always says it, and an answer without it (a proxy's `{}`, an
    /// `api_base` naming some other JSON service) read as a last page marked the window
    /// imported with nothing read.
    has_more: bool,
    #[serde(default)]
    offset: Option<String>,
}

impl From<PageAsSent> for EventsPage {
    fn from(page: PageAsSent) -> EventsPage {
        let total = page.events.len();
        let events: Vec<EmailEvent> = (page.events.into_iter())
            .filter_map(|e| serde_json::from_value(e).ok())
            .collect();
        EventsPage {
            answered_at_ms: None,
            unreadable: (total - events.len()) as u64,
            events,
            has_more: page.has_more,
            offset: page.offset,
        }
    }
}

/// What to ask the email events API for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsQuery {
    /// Inclusive, epoch ms.
    pub start_ms: Option<i64>,
    /// Inclusive, epoch ms. Fixing it for a whole run keeps offsets stable while new events arrive.
    pub end_ms: Option<i64>,
    pub event_type: Option<String>,
    pub limit: u32,
    pub offset: Option<String>,
}

impl Default for EventsQuery {
    fn default() -> Self {
        EventsQuery {
            start_ms: None,
            end_ms: None,
            event_type: None,
            limit: MAX_EVENTS_PAGE,
            offset: None,
        }
    }
}

/// A workflow a contact is enrolled in (enrollments read).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workflow {
    pub id: u64,
    #[serde(default)]
    pub name: String,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Whether `url`'s host is this machine's loopback (`localhost` or a loopback address).
pub fn is_loopback(url: &Url) -> bool {
    url.host_str().is_some_and(|host| {
        host.eq_ignore_ascii_case("localhost")
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    })
}

/// HubSpot's answer to a list membership add.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListAddResult {
    /// HubSpot's own schema spells it `recordsIdsAdded`; both spellings are accepted.
    #[serde(default, rename = "recordsIdsAdded", alias = "recordIdsAdded")]
    pub record_ids_added: Vec<String>,
    #[serde(default)]
    pub record_ids_missing: Vec<String>,
    #[serde(default)]
    pub record_ids_removed: Vec<String>,
}

/// One workflow-action callback to complete, with the output fields the workflow can branch
/// on after the action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Completion {
    pub callback_id: String,
    pub output_fields: serde_json::Map<String, serde_json::Value>,
    /// Required by the date-versioned API; sendtime sends none.
    #[serde(default)]
    pub typed_outputs: serde_json::Map<String, serde_json::Value>,
}

impl Completion {
    /// The contact goes on (`hs_execution_state: SUCCESS`), with the slot it was planned for,
    /// the planned time and the release time.
    pub fn released(callback_id: String, due_at_ms: i64, now_ms: i64) -> Completion {
        let mut fields = serde_json::Map::new();
        let mut put = |k: &str, v: String| fields.insert(k.into(), v.into());
        put("hs_execution_state", "SUCCESS".into());
        put(
            "sendtime_slot",
            crate::time::slot_name(crate::time::slot_of(due_at_ms)),
        );
        put(
            "sendtime_planned_at",
            crate::time::format_rfc3339(due_at_ms),
        );
        put("sendtime_released_at", crate::time::format_rfc3339(now_ms));
        Completion {
            callback_id,
            output_fields: fields,
            typed_outputs: serde_json::Map::new(),
        }
    }
}

/// HubSpot's error body: `{status, message, correlationId, category?, errors?, policyName?}`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody {
    message: Option<String>,
    correlation_id: Option<String>,
    policy_name: Option<String>,
    category: Option<String>,
    /// Any shape: only a missing scope's names are read from it ([`ErrorBody::missing_scopes`]),
    /// and an odd one must not make the body unreadable (that would make it a proxy's).
    errors: Option<serde_json::Value>,
}

impl ErrorBody {
    /// The scopes a `MISSING_SCOPES` refusal names in `errors[].context.requiredGranularScopes`,
    /// or `requiredScopes` as HubSpot's older bodies say it (one quoted in
    /// HubSpot/hubspot-api-nodejs#268) (a few, each cut short: a stranger's text that ends up
    /// in logs and `/status`).
    fn missing_scopes(&self) -> Vec<String> {
        let errors = self.errors.as_ref().and_then(|e| e.as_array());
        let mut scopes: Vec<String> = errors
            .into_iter()
            .flatten()
            .flat_map(|e| ["requiredGranularScopes", "requiredScopes"].map(|k| &e["context"][k]))
            .filter_map(|scopes| scopes.as_array())
            .flatten()
            .filter_map(|s| s.as_str())
            .take(8)
            .map(|s| s.chars().take(100).collect())
            .collect();
        scopes.dedup();
        scopes
    }
}

/// Settings for one connector's client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Whole-request timeout (connect, send, wait, read).
    pub timeout: Duration,
    /// The account's burst limit per 10 s; the limiter stays under it.
    pub requests_per_10s: u32,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: super::policy::REQUEST_TIMEOUT,
            requests_per_10s: Connector::DEFAULT_REQUESTS_PER_10S,
        }
    }
}

/// A HubSpot API client for one connector. Cheap to clone; clones share the limiter.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// The token endpoint's, apart from the calls' connections: a refresh runs on the
    /// process's runtime (`serve`'s), and a connection the scheduled import opened on its
    /// own runtime died with it, and the refresh's answer with it (an audit).
    token_http: reqwest::Client,
    base: String,
    /// Only ever put in the Authorization header; never in Debug output, errors or logs.
    auth: Arc<Auth>,
    /// The account's pace, shared with this process's other clients of it.
    limiter: Arc<Limiter>,
    /// This client's share of it, if capped.
    share: Option<Arc<Limiter>>,
    /// Who the log names: the connector, or the API base.
    label: Arc<str>,
    outage: Arc<Outage>,
}

/// Whether HubSpot has stopped answering, so that an outage is logged when it starts and when
/// it ends, not at every call (each failed call is in outcomes and `/status`): the unanswered
/// calls in a row.
#[derive(Debug, Default)]
struct Outage(AtomicU32);

/// Unanswered calls in a row that make an outage: a call failing among answered ones (a
/// workflow read answering 503 while enrollments are taken) is that call's own (an earlier
/// version logged an outage's start and end each time).
const OUTAGE_AFTER: u32 = 3;

/// What a call's result changed about an [`Outage`].
#[derive(Debug, PartialEq, Eq)]
enum OutageChange {
    Began,
    Ended,
}

impl Outage {
    /// `unanswered`: the call got no answer, or a 5xx. Any other answer ends the outage.
    fn observe(&self, unanswered: bool) -> Option<OutageChange> {
        if !unanswered {
            let before = self.0.swap(0, Ordering::Relaxed);
            return (before >= OUTAGE_AFTER).then_some(OutageChange::Ended);
        }
        let add = |n: u32| Some(n.saturating_add(1));
        let before = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, add);
        let now = before.unwrap_or(u32::MAX).saturating_add(1);
        (now == OUTAGE_AFTER).then_some(OutageChange::Began)
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("auth", &self.auth)
            .finish()
    }
}

impl Client {
    /// A client for `api_base` (e.g. `https://api.hubapi.com`) with a static `token`.
    pub fn new(api_base: &str, token: &str, options: ClientOptions) -> anyhow::Result<Client> {
        Client::with_auth(api_base, Auth::Static(token.into()), options)
    }

    /// A client for `api_base` that authenticates with `auth`, on a limiter of its own.
    pub fn with_auth(api_base: &str, auth: Auth, options: ClientOptions) -> anyhow::Result<Client> {
        let limiter = Arc::new(Limiter::new(options.requests_per_10s));
        Client::with_limiter(api_base, Arc::new(auth), options.timeout, limiter)
    }

    fn with_limiter(
        api_base: &str,
        auth: Arc<Auth>,
        timeout: Duration,
        limiter: Arc<Limiter>,
    ) -> anyhow::Result<Client> {
        let base = api_base.trim_end_matches('/').to_string();
        let url =
            Url::parse(&base).with_context(|| format!("HubSpot api_base {base:?} is not a URL"))?;
        let build = || {
            let mut http = reqwest::Client::builder();
            // A proxy from the environment (HTTP_PROXY) cannot reach this machine's loopback,
            // where only a stand-in (the demo's, a test's) answers.
            if is_loopback(&url) {
                http = http.no_proxy();
            }
            http.timeout(timeout)
                .user_agent(concat!("sendtime/", env!("CARGO_PKG_VERSION")))
                // HubSpot's API answers where it is asked; a redirect would resend the body
                // (the OAuth form holds the client secret) to wherever it points.
                .redirect(reqwest::redirect::Policy::none())
                .referer(false)
                .build()
                .context("cannot build the HTTP client")
        };
        Ok(Client {
            http: build()?,
            token_http: build()?,
            auth,
            limiter,
            share: None,
            label: base.as_str().into(),
            base,
            outage: Arc::default(),
        })
    }

    /// A client for `connector`, its credentials read from the env vars the config names. It
    /// paces on the limiter and refreshes with the credentials this process's other clients
    /// of the connector use ([`Limiter::for_account`], [`Auth::for_account`]).
    pub fn for_connector(connector: &Connector, timeout: Duration) -> anyhow::Result<Client> {
        let mut client = Client::with_limiter(
            &connector.api_base,
            Auth::for_account(connector)?,
            timeout,
            Limiter::for_account(&connector.id, connector.requests_per_10s),
        )?;
        client.label = format!("connector {}", connector.id).into();
        Ok(client)
    }

    /// This client's calls capped at `per_10s` within the account's pace (the scheduled
    /// import's share, leaving the rest to sends).
    pub fn with_share(mut self, per_10s: u32) -> Client {
        self.share = Some(Arc::new(Limiter::new(per_10s)));
        self
    }

    /// Pace this client's share ([`Client::with_share`]) under `per_10s` from now on (a
    /// client without a share is left as it is).
    pub fn share_at(&self, per_10s: u32) {
        if let Some(share) = &self.share {
            share.set_rate(per_10s);
        }
    }

    /// Pace this client's limiter (the account's, for [`Client::for_connector`]) under
    /// `requests_per_10s` from now on ([`Limiter::set_rate`]).
    pub fn pace_at(&self, requests_per_10s: u32) {
        self.limiter.set_rate(requests_per_10s);
    }

    /// The rate-limit headers of the most recent response that had them, to any client that
    /// shares this one's limiter (the account's, for [`Client::for_connector`]).
    pub fn last_rate_limit(&self) -> Option<RateLimit> {
        self.limiter.last_rate()
    }

    /// Wait for the limiter's permission for one call, in the queue. The client's own methods
    /// do this; a caller that must act between the permission and the call (the dispatcher
    /// makes its `attempting` row durable, and checks it should still call) takes the
    /// permission here, or in [`Client::admit_in`], and calls through it.
    pub async fn admit(&self) -> Admitted<'_> {
        self.admit_in(Lane::Queue).await
    }

    /// Wait for the limiter's permission for one call, in `lane`.
    pub async fn admit_in(&self, lane: Lane) -> Admitted<'_> {
        if let Some(share) = &self.share {
            share.until_ready(lane).await;
        }
        self.limiter.until_ready(lane).await;
        Admitted { client: self, lane }
    }

    /// Make sure a call would have an access token (an OAuth refresh, when due): the
    /// dispatcher asks before it records that it calls, so a failing token endpoint leaves no
    /// row of a call never made.
    pub async fn ensure_token(&self) -> Result<(), ApiError> {
        self.auth
            .bearer(&self.token_http, &self.base, None)
            .await
            .map(drop)
    }

    /// Once a hold on this client's calls (after a 429) runs past `beyond`: its end. Looked at
    /// every `every`.
    pub async fn held_past(
        &self,
        beyond: tokio::time::Instant,
        every: Duration,
    ) -> tokio::time::Instant {
        loop {
            if let Some(t) = self.held_until().filter(|t| *t > beyond) {
                return t;
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Until when this client's calls are held after a 429, if they are.
    pub fn held_until(&self) -> Option<tokio::time::Instant> {
        std::iter::once(&self.limiter)
            .chain(&self.share)
            .filter_map(|l| l.held_until())
            .max()
    }

    /// [`Admitted::email_events`], once admitted.
    pub async fn email_events(&self, query: &EventsQuery) -> Result<EventsPage, ApiError> {
        self.admit().await.email_events(query).await
    }

    /// [`Admitted::enroll`], once admitted.
    pub async fn enroll(&self, workflow_id: u64, email: &str) -> Result<(), ApiError> {
        self.admit().await.enroll(workflow_id, email).await
    }

    /// [`Admitted::enrollments`], once admitted.
    pub async fn enrollments(&self, vid: u64) -> Result<Vec<Workflow>, ApiError> {
        self.admit().await.enrollments(vid).await
    }

    /// [`Admitted::contact_email`], once admitted.
    pub async fn contact_email(&self, vid: u64) -> Result<Option<String>, ApiError> {
        self.admit().await.contact_email(vid).await
    }

    /// [`Admitted::complete_callbacks`], once admitted.
    pub async fn complete_callbacks(&self, completions: &[Completion]) -> Result<(), ApiError> {
        self.admit().await.complete_callbacks(completions).await
    }

    /// `GET path` (with its query), once admitted: HubSpot's JSON answer, for checks that
    /// read a field or two (`validate --online`).
    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value, ApiError> {
        self.admit().await.get_json(path).await
    }

    /// `POST path` with a JSON body, once admitted: HubSpot's JSON answer.
    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, ApiError> {
        self.admit().await;
        let body = serde_json::to_vec(body).expect("values serialize");
        let resp = self
            .send(Lane::Queue, Method::POST, self.url(path), Some(body), None)
            .await?;
        json_body(resp).await
    }

    /// When HubSpot says the account's daily allowance resets (epoch ms), from its daily
    /// API usage; `None` when it does not say (or cannot be asked).
    pub async fn daily_reset_at(&self) -> Option<i64> {
        let usage = self.get_json(paths::API_USAGE_DAILY).await.ok()?;
        usage["results"]
            .as_array()?
            .iter()
            .filter_map(|r| r["resetsAt"].as_str())
            .filter_map(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_millis())
            .max()
    }

    /// [`Admitted::add_to_list`], once admitted.
    pub async fn add_to_list(
        &self,
        list_id: &str,
        record_ids: &[String],
    ) -> Result<ListAddResult, ApiError> {
        self.admit().await.add_to_list(list_id, record_ids).await
    }

    fn url(&self, path: &str) -> Url {
        Url::parse(&format!("{}{path}", self.base)).expect("base validated in Client::new")
    }

    /// Send one request; a non-2xx answer becomes the matching [`ApiError`].
    async fn send(
        &self,
        lane: Lane,
        method: Method,
        url: Url,
        json: Option<Vec<u8>>,
        batch: Option<usize>,
    ) -> Result<reqwest::Response, ApiError> {
        let result = self.call(lane, method, url, json, batch).await;
        // Without an access token the call was never made: it says nothing of the API.
        if matches!(result, Err(ApiError::NoAccessToken { .. })) {
            return result;
        }
        let unanswered = matches!(result, Err(ApiError::Transient { .. }));
        match (self.outage.observe(unanswered), &result) {
            (Some(OutageChange::Began), Err(e)) => tracing::warn!(
                // Not "retried": each caller decides (a target's read holds its calls instead).
                "HubSpot is not answering {}: {e} (logged again when it answers)",
                self.label
            ),
            (Some(OutageChange::Ended), _) => {
                tracing::info!("HubSpot answers {} again", self.label)
            }
            _ => {}
        }
        result
    }

    async fn call(
        &self,
        lane: Lane,
        method: Method,
        url: Url,
        json: Option<Vec<u8>>,
        batch: Option<usize>,
    ) -> Result<reqwest::Response, ApiError> {
        let request = |token: &str| {
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(token);
            if let Some(body) = &json {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            req
        };
        let token = self.auth.bearer(&self.token_http, &self.base, None).await?;
        let mut resp = request(&token).send().await.map_err(transport)?;
        if resp.status() == StatusCode::UNAUTHORIZED && self.auth.refreshes() {
            // Only HubSpot's 401 is a word on the token, as `classify` reads it (its JSON body,
            // whatever the content type says): refreshing for an edge's (a page, a bare 401)
            // would mint a token per call while the edge answers so; not refreshing for
            // HubSpot's paused the connector.
            self.observe(resp.headers());
            let refused = classify(resp, batch).await;
            if !matches!(refused, ApiError::Permanent { status: 401, .. }) {
                return Err(self.back_off(refused));
            }
            // An access token HubSpot no longer takes (revoked, or its clock ahead of ours):
            // one refresh and one retry before the refusal counts. The retry is a call like
            // any other: paced, so a revoked token under many calls in flight does not send
            // them all again at once, in the lane the call waited in; and the token is taken
            // once it may go (taken before, a long wait for a 429 could outlive it). A hold on
            // the connector (a 429's, up to an hour), there or coming while the retry waits its
            // turn, is not waited out here, where no stop or pause is seen: the call fails as
            // held, with the token refreshed, and the caller's retry waits for the hold.
            self.auth.refused(&token);
            tokio::select! {
                biased;
                until = self.held_past(tokio::time::Instant::now(), HOLD_CHECK) => {
                    self.auth.bearer(&self.token_http, &self.base, Some(&token)).await?;
                    return Err(ApiError::RateLimited {
                        policy: RatePolicy::TenSecondly,
                        retry_after: Some(until.saturating_duration_since(tokio::time::Instant::now())),
                        message: "the token was refused, and its retry waits for the connector's hold (after a 429, or HubSpot's ask to pause)".into(),
                    });
                }
                _ = self.admit_in(lane) => {}
            }
            let fresh = self
                .auth
                .bearer(&self.token_http, &self.base, Some(&token))
                .await?;
            resp = request(&fresh).send().await.map_err(transport)?;
        }
        self.observe(resp.headers());
        // HubSpot's API answers JSON or nothing: a 2xx page (a proxy's login or block page, an
        // `api_base` pointing at a website) did not do what was asked. (A 204 carries no page,
        // whatever its content type says.)
        if resp.status().is_success()
            && resp.status() != StatusCode::NO_CONTENT
            && is_html(resp.headers())
        {
            return Err(ApiError::NotTheApi {
                status: resp.status().as_u16(),
                message: "a 2xx HTML page, not HubSpot's API answer".into(),
            });
        }
        if resp.status().is_success() {
            return Ok(resp);
        }
        let error = classify(resp, batch).await;
        Err(self.back_off(error))
    }

    /// Take an answer's rate-limit headers into the connector's limiter.
    fn observe(&self, headers: &HeaderMap) {
        if let Some(rate) = RateLimit::from_headers(headers) {
            self.limiter.observe(&rate);
        }
    }

    /// A failed call's error taken into the connector's limiter: everyone sharing the
    /// connector backs off, not only this caller.
    fn back_off(&self, error: ApiError) -> ApiError {
        if let Some(wait) = policy::connector_wait(&error, self.last_rate_limit()) {
            self.limiter.pause_for(wait);
        }
        error
    }
}

/// How often a refused token's retry, waiting its turn, looks for a hold on the connector.
const HOLD_CHECK: Duration = Duration::from_millis(100);

/// Whether an answer is an HTML page (an edge's, a proxy's, a website's): HubSpot's API
/// answers JSON, or nothing where it has nothing to say.
fn is_html(headers: &HeaderMap) -> bool {
    headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/html"))
}

/// One call the connector's limiter has admitted, spent by the call made through it.
pub struct Admitted<'c> {
    client: &'c Client,
    /// Where its call waited, and where a retry of it waits (after a token refresh).
    lane: Lane,
}

impl Admitted<'_> {
    /// Send one request through the client, a retry of it waiting in this call's lane.
    async fn send(
        &self,
        method: Method,
        url: Url,
        json: Option<Vec<u8>>,
        batch: Option<usize>,
    ) -> Result<reqwest::Response, ApiError> {
        self.client.send(self.lane, method, url, json, batch).await
    }

    /// One page of email events (`GET /email/public/v1/events`), newest first.
    pub async fn email_events(self, query: &EventsQuery) -> Result<EventsPage, ApiError> {
        let mut url = self.client.url(paths::EMAIL_EVENTS);
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = query.start_ms {
                q.append_pair("startTimestamp", &s.to_string());
            }
            if let Some(e) = query.end_ms {
                q.append_pair("endTimestamp", &e.to_string());
            }
            if let Some(t) = &query.event_type {
                q.append_pair("eventType", t);
            }
            q.append_pair("limit", &query.limit.clamp(1, MAX_EVENTS_PAGE).to_string());
            if let Some(o) = &query.offset {
                q.append_pair("offset", o);
            }
        }
        let resp = self.send(Method::GET, url, None, None).await?;
        let answered_at_ms = (resp.headers().get(reqwest::header::DATE))
            .and_then(|v| v.to_str().ok())
            .and_then(|d| chrono::DateTime::parse_from_rfc2822(d).ok())
            .map(|d| d.timestamp_millis());
        let page: EventsPage = json_body(resp).await?;
        Ok(EventsPage {
            answered_at_ms,
            ..page
        })
    }

    /// Enroll a contact, by email, into a workflow
    /// (`POST /automation/v2/workflows/{id}/enrollments/contacts/{email}`).
    pub async fn enroll(self, workflow_id: u64, email: &str) -> Result<(), ApiError> {
        let url = self.client.url(&paths::enroll(workflow_id, email));
        self.send(Method::POST, url, None, None).await?;
        Ok(())
    }

    /// The workflows a contact (by vid) is currently enrolled in.
    pub async fn enrollments(self, vid: u64) -> Result<Vec<Workflow>, ApiError> {
        let url = self.client.url(&paths::enrollments(vid));
        let resp = self.send(Method::GET, url, None, None).await?;
        // HubSpot's reference says it lists the workflows and shows one workflow as the
        // answer: either is read.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Answer {
            Many(Vec<Workflow>),
            One(Workflow),
        }
        Ok(match json_body(resp).await? {
            Answer::Many(all) => all,
            Answer::One(one) => vec![one],
        })
    }

    /// `GET path`: HubSpot's JSON answer.
    pub async fn get_json(self, path: &str) -> Result<serde_json::Value, ApiError> {
        let url = self.client.url(path);
        let resp = self.send(Method::GET, url, None, None).await?;
        json_body(resp).await
    }

    /// A contact's email address now, by its id
    /// (`GET /crm/objects/2026-03/contacts/{id}?properties=email`); `None` when it has none.
    /// A contact that no longer exists is HubSpot's 404.
    pub async fn contact_email(self, vid: u64) -> Result<Option<String>, ApiError> {
        let mut url = self.client.url(&paths::contact(vid));
        url.query_pairs_mut().append_pair("properties", "email");
        let resp = self.send(Method::GET, url, None, None).await?;
        #[derive(Deserialize)]
        struct Contact {
            #[serde(default)]
            properties: std::collections::HashMap<String, Option<String>>,
        }
        let contact: Contact = json_body(resp).await?;
        Ok(contact
            .properties
            .get("email")
            .cloned()
            .flatten()
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty()))
    }

    /// Complete workflow-action callbacks in one call
    /// (`POST /automation/actions/callbacks/2026-03/complete`, HubSpot's date-versioned path;
    /// 204 on success). HubSpot answers for the batch as a whole; a batch it finds too large
    /// comes back as [`ApiError::BatchTooLarge`].
    pub async fn complete_callbacks(self, completions: &[Completion]) -> Result<(), ApiError> {
        let url = self.client.url(paths::CALLBACKS_COMPLETE);
        let body = serde_json::to_vec(&serde_json::json!({ "inputs": completions }))
            .expect("completions serialize");
        self.send(Method::POST, url, Some(body), Some(completions.len()))
            .await?;
        Ok(())
    }

    /// Add records to a MANUAL or SNAPSHOT list (`PUT /crm/lists/2026-03/{id}/memberships/add`).
    /// Idempotent on HubSpot's side; a batch HubSpot finds too large comes back as
    /// [`ApiError::BatchTooLarge`].
    pub async fn add_to_list(
        self,
        list_id: &str,
        record_ids: &[String],
    ) -> Result<ListAddResult, ApiError> {
        let url = self.client.url(&paths::list_add(list_id));
        let body = serde_json::to_vec(record_ids).expect("strings serialize");
        let resp = self
            .send(Method::PUT, url, Some(body), Some(record_ids.len()))
            .await?;
        let bytes = answer_body(resp).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(ListAddResult::default());
        }
        serde_json::from_slice(&bytes).map_err(|e| bad_body(&e))
    }
}

/// The most of a successful answer read: a page of 1,000 email events is a few MB.
const MAX_ANSWER_BYTES: usize = 32 << 20;
/// The most of an error answer read: its message is all that is kept.
const MAX_ERROR_BYTES: usize = 1 << 20;
/// Of HubSpot's message for a failed call, this many characters are kept: it lands in every
/// outcome row of the call, and in `/status`.
pub(super) const MESSAGE_CHARS: usize = 300;

/// Up to `cap` bytes of `resp`'s body, and whether there was more.
pub(super) async fn read_at_most(
    mut resp: reqwest::Response,
    cap: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = cap - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

/// A 2xx answer's body, refused when larger than any HubSpot answer.
async fn answer_body(resp: reqwest::Response) -> Result<Vec<u8>, ApiError> {
    match read_at_most(resp, MAX_ANSWER_BYTES)
        .await
        .map_err(transport)?
    {
        (_, true) => Err(ApiError::Transient {
            status: None,
            may_have_reached: true,
            message: format!(
                "HubSpot's answer is larger than {} MB: not an answer this client expects",
                MAX_ANSWER_BYTES >> 20
            ),
        }),
        (bytes, false) => Ok(bytes),
    }
}

async fn json_body<T: serde::de::DeserializeOwned>(resp: reqwest::Response) -> Result<T, ApiError> {
    let bytes = answer_body(resp).await?;
    serde_json::from_slice(&bytes).map_err(|e| bad_body(&e))
}

/// A 2xx whose body we cannot read: the call reached HubSpot, so a retry may repeat it.
fn bad_body(e: &serde_json::Error) -> ApiError {
    ApiError::Transient {
        status: None,
        may_have_reached: true,
        message: format!("unexpected response body from HubSpot: {e}"),
    }
}

/// A request that got no (complete) HTTP answer.
pub(super) fn transport(e: reqwest::Error) -> ApiError {
    // A connect failure never reached HubSpot, nor a request that could not be built (a
    // header value no request may carry); anything later (timeout while waiting, the
    // connection dropped mid-answer) may have been received and acted on.
    let may_have_reached = !(e.is_connect() || e.is_builder());
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "connection failed"
    };
    let e = e.without_url();
    let mut message = format!("{what}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    ApiError::Transient {
        status: None,
        may_have_reached,
        message,
    }
}

/// HubSpot's "Migration in Progress" (its error handling guide).
const MIGRATING: u16 = 477;

/// Sort a non-2xx answer into what the caller should do.
async fn classify(resp: reqwest::Response, batch: Option<usize>) -> ApiError {
    let status = resp.status();
    let retry_after = policy::retry_after(resp.headers());
    let page = is_html(resp.headers());
    // The day's allowance spent, as the headers say: a 429 whose body does not name its policy
    // (cut short, an edge's page) is the daily one (taken for a burst, it was tried again
    // every 10 s all day; an audit).
    let day_spent =
        RateLimit::from_headers(resp.headers()).and_then(|r| r.daily_remaining) == Some(0);
    // A redirect is never followed: it would resend the body elsewhere ([`ApiError::NotTheApi`]).
    if status.is_redirection() {
        let location = (resp.headers().get(reqwest::header::LOCATION))
            .and_then(|v| v.to_str().ok())
            .map_or("no Location".into(), shown_location);
        return ApiError::NotTheApi {
            status: status.as_u16(),
            message: format!("a redirect to {location}"),
        };
    }
    let (bytes, _) = read_at_most(resp, MAX_ERROR_BYTES)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let parsed = serde_json::from_str::<ErrorBody>(&text);
    // A 401 or 403 that is not HubSpot's JSON comes from something in front of the API (an
    // edge block, a proxy), not from HubSpot refusing the token: worth retrying, not a reason
    // to pause the connector.
    if parsed.is_err() && matches!(status.as_u16(), 401 | 403) {
        return ApiError::Transient {
            status: Some(status.as_u16()),
            may_have_reached: false,
            message: format!(
                "HTTP {status} that is not HubSpot's API answer (an HTML page from an edge or proxy): {}",
                text.trim().chars().take(120).collect::<String>()
            ),
        };
    }
    // An unknown route's 404, or a retired route's 405 or 410 page that is not HubSpot's
    // JSON: the route, not the contact, so every call through it would get the same, as with
    // a redirect. (Other pages may be the call's own: an edge's 413 for a batch, or its 400 or
    // 414 for one contact's address.)
    let route_page =
        status == StatusCode::NOT_FOUND || (page && matches!(status.as_u16(), 405 | 410));
    if parsed.is_err() && route_page {
        return ApiError::NotTheApi {
            status: status.as_u16(),
            message: text.trim().chars().take(120).collect(),
        };
    }
    let body: ErrorBody = parsed.unwrap_or_default();
    let message = match body.message.as_deref().unwrap_or(text.trim()) {
        "" => format!("HTTP {status} with no message"),
        m => m.chars().take(MESSAGE_CHARS).collect(),
    };
    // A request timeout says nothing of the contact: worth retrying. A 408 from a proxy may
    // come after it passed the request on, so that call may have reached HubSpot. A 423 is
    // HubSpot's lock on an account syncing much data, lasting 2 s: refused, not taken.
    if status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::LOCKED {
        return ApiError::Transient {
            status: Some(status.as_u16()),
            may_have_reached: status == StatusCode::REQUEST_TIMEOUT,
            message,
        };
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        let policy = match body.policy_name.as_deref() {
            Some("DAILY") => RatePolicy::Daily,
            None if day_spent => RatePolicy::Daily,
            _ => RatePolicy::TenSecondly,
        };
        return ApiError::RateLimited {
            policy,
            retry_after,
            message,
        };
    }
    if status.as_u16() == MIGRATING {
        return ApiError::Migrating {
            retry_after,
            message,
        };
    }
    if status.is_server_error() {
        return ApiError::Transient {
            status: Some(status.as_u16()),
            may_have_reached: true,
            message,
        };
    }
    // A 413 at any size; words only in a 400 or 422 for more than one record (HubSpot's
    // other refusals may speak of limits too: a single callback's, a token's).
    if let Some(size) = batch
        && (status == StatusCode::PAYLOAD_TOO_LARGE
            || (size > 1 && matches!(status.as_u16(), 400 | 422) && says_too_large(&message)))
    {
        return ApiError::BatchTooLarge {
            size,
            status: status.as_u16(),
            message,
        };
    }
    if status == StatusCode::FORBIDDEN && body.category.as_deref() == Some("MISSING_SCOPES") {
        return ApiError::MissingScopes {
            scopes: body.missing_scopes(),
            message,
        };
    }
    ApiError::Permanent {
        status: status.as_u16(),
        message,
        correlation_id: body.correlation_id,
    }
}

/// HubSpot documents neither a batch limit for these calls nor its wording, so the usual
/// ways of saying so are read (an audit found the stand-in's own wording the only one).
fn says_too_large(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "too large",
        "too many",
        "too big",
        "exceeds the maximum",
        "exceeds the limit",
        "maximum batch",
        "maximum of",
        "must be between",
    ]
    .iter()
    .any(|p| m.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A redirect's target is shown by its host: no key in its query, no email in its path.
    #[test]
    fn a_redirect_shows_its_host_only() {
        let shown = shown_location("https://edge.example/v4/x?hapikey=k-123&to=ann@example.com");
        assert_eq!(shown, "https://edge.example/…");
        assert_eq!(
            shown_location("/automation/v2/workflows/1/enrollments/contacts/ann%40example.com"),
            "a path on the same host"
        );
    }

    /// Start-up tells the failures counted on a contact's tries by the row's text: a
    /// transient failure's, and no other error's.
    #[test]
    fn a_transient_failure_is_told_by_its_text() {
        let transient = |status| ApiError::Transient {
            status,
            may_have_reached: true,
            message: "m".into(),
        };
        assert!(ApiError::is_transient_text(
            &transient(Some(503)).to_string()
        ));
        assert!(ApiError::is_transient_text(&transient(None).to_string()));
        let others = [
            ApiError::NotTheApi {
                status: 301,
                message: "a redirect".into(),
            },
            ApiError::Permanent {
                status: 401,
                message: "m".into(),
                correlation_id: None,
            },
        ];
        for e in others {
            assert!(!ApiError::is_transient_text(&e.to_string()), "{e}");
        }
    }

    #[test]
    fn a_batch_limit_is_read_in_its_usual_wordings() {
        for said in [
            "Request is too large: 3000 ids",
            "Batch size must be between 1 and 100",
            "Input exceeds the limit of 100 inputs",
            "A maximum of 100000 record ids is allowed",
        ] {
            assert!(says_too_large(said), "{said}");
        }
        for said in [
            "Invalid record id: abc",
            "List 987 is DYNAMIC",
            "The callback exceeded its expiration",
        ] {
            assert!(!says_too_large(said), "{said}");
        }
    }

    /// A missing scope's names are read from HubSpot's body, and an `errors` of another shape
    /// (null, not a list) leaves the body readable: unreadable, it would be taken for a proxy's.
    #[test]
    fn error_bodies_of_any_errors_shape_are_read() {
        let read = |text: &str| serde_json::from_str::<ErrorBody>(text).unwrap();
        let scoped = read(
            r#"{"message": "m", "category": "MISSING_SCOPES", "errors": [{"context": {"requiredGranularScopes": ["automation", "automation"]}}, {"message": "no context"}]}"#,
        );
        assert_eq!(scoped.missing_scopes(), ["automation"]);
        // As an older body names them.
        let older = read(
            r#"{"message": "m", "category": "MISSING_SCOPES", "errors": [{"message": "One or more of the following scopes are required.", "context": {"requiredScopes": ["contacts"]}}]}"#,
        );
        assert_eq!(older.missing_scopes(), ["contacts"]);
        for odd in [
            r#"{"message": "no such workflow", "errors": null}"#,
            r#"{"message": "no such workflow", "errors": "text"}"#,
            r#"{"message": "no such workflow", "errors": [1, {"context": null}]}"#,
        ] {
            let body = read(odd);
            assert_eq!(body.message.as_deref(), Some("no such workflow"));
            assert!(body.missing_scopes().is_empty());
        }
    }

    #[test]
    fn an_outage_is_reported_when_it_begins_and_when_it_ends() {
        let outage = Outage::default();
        // One or two calls failing among answered ones are not an outage; three in a row are.
        let calls = [
            false, true, false, true, true, false, true, true, true, true, false, false, true,
        ];
        let changes: Vec<_> = calls.iter().map(|&u| outage.observe(u)).collect();
        use OutageChange::*;
        assert_eq!(
            changes,
            [
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                Some(Began),
                None,
                Some(Ended),
                None,
                None
            ]
        );
    }

    #[test]
    fn list_add_accepts_both_spellings() {
        let a: ListAddResult =
            serde_json::from_str(r#"{"recordsIdsAdded":["1"],"recordIdsMissing":["9"]}"#).unwrap();
        let b: ListAddResult = serde_json::from_str(r#"{"recordIdsAdded":["1"]}"#).unwrap();
        assert_eq!(a.record_ids_added, ["1"]);
        assert_eq!(a.record_ids_missing, ["9"]);
        assert_eq!(b.record_ids_added, ["1"]);
    }

    #[test]
    fn debug_never_shows_the_token() {
        let c = Client::new(
            "http://127.0.0.1:1",
            "pat-secret-123",
            ClientOptions::default(),
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("pat-secret-123"));
    }
}
