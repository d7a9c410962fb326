//! `POST /hooks/{webhook_id}` and `POST /actions/{action_id}`: HubSpot's workflow webhooks and
//! workflow-action executions in, durable receipts out.
//!
//! Checks run cheapest-first and nothing unauthenticated is parsed: unknown path
//! (`unknown_path` 404) or method (`wrong_method` 405), unknown webhook or action (404), body
//! size (413, within the body budget), signature (503, an action's 429: it may be ours to fix,
//! and HubSpot retries it), body (400, also when it
//! lacks what the webhook's type needs: an email to enroll, a record id for a list), portal
//! (401), then the store (200 once the receipt is durable, BLOCK for an action; 503 when it
//! cannot be, so HubSpot retries).

pub mod body;
pub mod execution;
pub mod payload;
pub mod ratchet;
pub mod refusal;
pub mod signature;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use ulid::Ulid;

use crate::admin::board::{Post, UNKNOWN};
use crate::config::{Config, ConfigHandle, Connector, Target, Webhook};
use crate::datasets::contacts::is_email_address;
use crate::datasets::inbox::{self, Inbox, Receipt, Stored};
use crate::datasets::pending::Answered;
use crate::datasets::pending::MAX_UNSIGNED;
use crate::metrics::Metrics;
use crate::time::now_ms;
use payload::Portal;
use refusal::{Refusal, RefusalLog};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub config: ConfigHandle,
    pub inbox: Inbox,
    pub metrics: Metrics,
    pub refusals: Arc<RefusalLog>,
    /// The strongest signature version each endpoint has taken (`min_signature_version`).
    pub ratchet: Arc<ratchet::Ratchet>,
    /// Bytes of bodies held at once ([`body::budget`]): what bounds the memory that
    /// unauthenticated clients can make us hold (bodies are read before their signature can
    /// be checked).
    pub bodies: Arc<tokio::sync::Semaphore>,
    /// Per connector, when each warning that every post could repeat was last logged.
    pub warnings: Arc<std::sync::Mutex<HashMap<(String, PostWarning), crate::throttle::Throttle>>>,
    /// What receipts are stamped with ([`crate::clock::Clock::world_ms`]). Signatures are
    /// checked against the system clock.
    pub clock: crate::clock::Clock,
    /// Posts taken unsigned, about [`MAX_UNSIGNED`] an hour ([`unsigned_rate`]).
    pub unsigned_taken: Arc<governor::DefaultDirectRateLimiter>,
}

/// How many posts may be taken unsigned: a burst of [`MAX_UNSIGNED`], then as many an hour
/// (one every 0.36 s), so at most twice that in any hour. How many wait at once was
/// bounded, not how many were stored: a dry-run connector listening publicly took some
/// 10,000 a minute from anyone, kept for good (an audit).
pub fn unsigned_rate() -> governor::DefaultDirectRateLimiter {
    let per_hour = std::num::NonZeroU32::new(MAX_UNSIGNED as u32).expect("MAX_UNSIGNED > 0");
    governor::RateLimiter::direct(governor::Quota::per_hour(per_hour))
}

/// A warning about posts that are taken, logged at most once a minute per connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PostWarning {
    /// Signed with a secret being rotated out.
    OlderSecret,
    /// Taken unsigned (`allow_unsigned`).
    Unsigned,
}

/// The public HTTP surface, the one HubSpot calls: webhooks, actions, health. A post to any
/// other path, or a webhook's path by another method, is refused, counted and logged like
/// any refusal: a proxy or a workflow set up wrong would otherwise lose every contact
/// without a trace (HubSpot does not retry a 404 or a 405).
pub fn router(state: AppState) -> Router {
    let unrouted = state.clone();
    let routes = Router::new()
        .route("/hooks/{webhook_id}", post(receive))
        .route("/actions/{action_id}", post(receive_action))
        .route("/healthz", get(|| async { "ok\n" }))
        .method_not_allowed_fallback(wrong_method)
        .with_state(state.clone())
        .fallback(move |request: axum::extract::Request| no_route(unrouted.clone(), request));
    let inner = routes.clone();
    routes.fallback(move |request: axum::extract::Request| {
        elsewhere(state.clone(), inner.clone(), request)
    })
}

/// A request to a path the routes do not have. When `public_url` has a path (`/sendtime`) and
/// a proxy passed it on instead of stripping it, the request is taken under it: the path
/// signed is `public_url`'s with the rest, as when it is stripped.
async fn elsewhere(
    state: AppState,
    routes: Router,
    mut request: axum::extract::Request,
) -> Response {
    let prefix = public_path(&state.config.load().server.public_url).to_string();
    let ours = |rest: &&str| {
        ["/hooks/", "/actions/", "/healthz"]
            .iter()
            .any(|p| rest.starts_with(p))
    };
    let rest = (request.uri().path_and_query())
        .filter(|_| !prefix.is_empty())
        .and_then(|pq| pq.as_str().strip_prefix(prefix.as_str()))
        .filter(ours)
        .and_then(|rest| rest.parse::<axum::http::Uri>().ok());
    let Some(uri) = rest else {
        return no_route(state, request).await;
    };
    request.extensions_mut().insert(OriginalUri(uri.clone()));
    *request.uri_mut() = uri;
    // `routes` has no way back here: what it does not have is `no_route`'s.
    tower::ServiceExt::oneshot(routes, request)
        .await
        .into_response()
}

/// A path nothing is received at: a post is refused, counted and logged (a proxy or workflow
/// set up wrong); other requests (scanners' `GET /wp-login.php`) only answered, so that an
/// alert on refused posts does not fire on the internet's noise.
async fn no_route(state: AppState, request: axum::extract::Request) -> Response {
    let path: String = request.uri().path().chars().take(64).collect();
    let refusal = Refusal::NoRoute { path };
    if request.method() == axum::http::Method::POST {
        return refused(&state, Route::Hook, UNKNOWN, refusal);
    }
    let status = refusal.answered(Route::Hook.unavailable());
    refusal.into_response(status, Route::Hook.retry_after(false))
}

/// `GET /hooks/…` and the like: counted on the webhook or action the path names, so that a
/// workflow set up with the wrong method shows on its row (it was counted as an unknown id's;
/// an audit).
async fn wrong_method(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> Response {
    let method = method.as_str().chars().take(16).collect();
    let (route, allow) = match uri.path() {
        "/healthz" => (Route::Hook, "GET, HEAD"),
        p if p.starts_with("/actions/") => (Route::Action, "POST"),
        _ => (Route::Hook, "POST"),
    };
    // An action's id at `/hooks/` (or the reverse) names nothing there, as a post finds.
    let kind_here = |id: &String| (state.config.load().webhook(id)).is_some_and(|w| route.takes(w));
    let id = (id.ok().map(|Path(id)| id))
        .filter(kind_here)
        .unwrap_or_else(|| UNKNOWN.to_string());
    let mut response = refused(&state, route, &id, Refusal::WrongMethod { method });
    (response.headers_mut()).insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// The path of `public_url` (`https://example.com/sendtime` → `/sendtime`), empty without one.
fn public_path(public_url: &str) -> &str {
    let after_scheme = public_url.split_once("://").map_or(public_url, |(_, r)| r);
    after_scheme.find('/').map_or("", |i| &after_scheme[i..])
}

/// The id a post's path names; one that does not decode (`/hooks/%FF`) as its last segment
/// still escaped, which names no webhook: refused as unknown, counted and logged as every
/// refusal (axum's plain-text 400 was neither; an audit).
fn path_id(id: Result<Path<String>, PathRejection>, uri: &axum::http::Uri) -> String {
    match id {
        Ok(Path(id)) => id,
        Err(_) => uri
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string(),
    }
}

/// `POST /hooks/{webhook_id}`: the receipt's id, or the refusal, counted and logged.
async fn receive(
    State(state): State<AppState>,
    webhook_id: Result<Path<String>, PathRejection>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let webhook_id = path_id(webhook_id, &uri);
    let accepted = async {
        let post = authenticate(&state, Route::Hook, &webhook_id, &uri, &headers, body).await?;
        accept_contact(&state, post).await
    };
    match accepted.await {
        Ok(stored) => {
            let (status, id) = match stored {
                Stored::New(id) => ("accepted", id),
                Stored::Duplicate(id, _) | Stored::Finished(id) => ("duplicate", id),
            };
            let body = json!({"status": status, "receipt_id": id});
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Err(refusal) => refused(&state, Route::Hook, &webhook_id, refusal),
    }
}

/// `POST /actions/{action_id}`: a custom workflow action's execution. Once the receipt is
/// durable, HubSpot hears BLOCK: the contact waits in its workflow until the dispatcher
/// completes the callback at the planned time.
async fn receive_action(
    State(state): State<AppState>,
    action_id: Result<Path<String>, PathRejection>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let action_id = path_id(action_id, &uri);
    let accepted = async {
        let post = authenticate(&state, Route::Action, &action_id, &uri, &headers, body).await?;
        accept_execution(&state, post).await
    };
    match accepted.await {
        Ok(Some(hold_ms)) => {
            let body = json!({"outputFields": {
                "hs_execution_state": "BLOCK",
                "hs_expiration_duration": execution::expiration(hold_ms),
            }});
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        // A retry of an execution already released, or any in dry run: a hold would never
        // be released.
        Ok(None) => {
            let body = json!({"outputFields": {"hs_execution_state": "SUCCESS"}});
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Err(refusal) => refused(&state, Route::Action, &action_id, refusal),
    }
}

/// Count and log a refusal, and answer with it.
fn refused(state: &AppState, route: Route, id: &str, refusal: Refusal) -> Response {
    // Unknown ids are logged under one key, however many strangers try.
    let webhook = match &refusal {
        Refusal::UnknownWebhook { .. } => UNKNOWN,
        _ if state.config.load().webhook(id).is_none() => UNKNOWN,
        _ => id,
    };
    let status = refusal.answered(route.unavailable());
    state
        .refusals
        .record(&state.metrics, webhook, &refusal, status);
    state
        .metrics
        .board
        .post(webhook, Post::Refused(refusal.label()));
    let retry_after = route.retry_after(refusal.lasting());
    refusal.into_response(status, retry_after)
}

/// Which URL a post came to: webhooks and actions share one id space, each at its own path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Hook,
    Action,
}

impl Route {
    /// Whether `w` is received at this route: an action's id at `/hooks/` (or a webhook's at
    /// `/actions/`) names nothing there.
    fn takes(self, w: &Webhook) -> bool {
        (w.target == Target::Callback) == (self == Route::Action)
    }

    /// Five seconds, or a minute for a refusal that lasts until someone fixes it, in the unit
    /// each caller reads: HubSpot's knowledge base says workflow webhooks read `Retry-After`
    /// in milliseconds, its custom-action guide says seconds (and retries an action's 429
    /// when it says: every 5 s, each of thousands of held executions came back at that pace).
    fn retry_after(self, lasting: bool) -> HeaderValue {
        HeaderValue::from_static(match (self, lasting) {
            (Route::Hook, false) => "5000",
            (Route::Hook, true) => "60000",
            (Route::Action, false) => "5",
            (Route::Action, true) => "60",
        })
    }

    /// What a failure of ours that a retry may get past is answered: a workflow webhook's
    /// post is retried on a 5xx for three days; an action's execution is documented retried
    /// on a 429 only (the workflow extensions' rule: any other status logs a failure and the
    /// contact goes on), so it gets a 429.
    fn unavailable(self) -> StatusCode {
        match self {
            Route::Hook => StatusCode::SERVICE_UNAVAILABLE,
            Route::Action => StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

/// A post whose endpoint exists, whose body was read within the limits and whose signature
/// holds.
struct Authenticated {
    config: Arc<Config>,
    webhook: Webhook,
    connector: Connector,
    /// The body, its bytes counted in the budget until the post is answered.
    body: body::Received,
    /// The version that verified; none: taken unsigned (`allow_unsigned`).
    signature: Option<signature::Version>,
    now_ms: i64,
}

/// The checks every post passes, cheapest first: the endpoint, the size, the signature.
async fn authenticate(
    state: &AppState,
    route: Route,
    id: &str,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Authenticated, Refusal> {
    let config = state.config.load_full();
    let webhook = config
        .webhook(id)
        .filter(|w| route.takes(w))
        .ok_or_else(|| Refusal::UnknownWebhook {
            id: id.chars().take(64).collect(),
        })?
        .clone();
    state.metrics.received.inc();
    let connector = config
        .connector(&webhook.connector)
        .expect("validated: webhook connectors exist")
        .clone();

    let limit = config.server.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(Refusal::TooLarge { limit });
    }
    let received = body::read(body, limit, declared, &state.bodies).await?;
    let body = &received.bytes;

    let now_ms = now_ms();
    // A signature header that is present but not text is a bad signature, never an absent
    // one (which would downgrade to another version, or pass as unsigned).
    // The URL HubSpot called: public_url plus the path and query as received.
    let called = format!(
        "{}{}",
        config.server.public_url,
        uri.path_and_query().map_or("/", |pq| pq.as_str())
    );
    // For the log: a workflow may put an API key in the query.
    let checked = || {
        let query = uri.query().map_or(String::new(), redacted_query);
        format!("POST {}{}{query}", config.server.public_url, uri.path())
    };
    let header = |name: &str| -> Result<Option<&str>, Refusal> {
        headers
            .get(name)
            .map(|v| v.to_str())
            .transpose()
            .map_err(|_| Refusal::Signature {
                error: signature::SignatureError::Malformed,
                checked: checked(),
            })
    };
    let sig_headers = signature::Headers {
        v3: header("x-hubspot-signature-v3")?,
        timestamp: header("x-hubspot-request-timestamp")?,
        v1v2: header("x-hubspot-signature")?,
        version: header("x-hubspot-signature-version")?,
    };
    let unsigned = sig_headers.v3.is_none() && sig_headers.v1v2.is_none();
    let refused = |error| Refusal::Signature {
        error,
        checked: checked(),
    };
    let signature = if unsigned && connector.allow_unsigned {
        check_floor(state, &config, &connector, &webhook, None, refused)?;
        // Anyone's: how many wait is bounded, as each may wait a week.
        if state.inbox.unsigned_full() {
            return Err(Refusal::UnsignedFull);
        }
        if state.unsigned_taken.check().is_err() {
            return Err(Refusal::UnsignedRate);
        }
        if let Some(suppressed) = due(state, &connector.id, PostWarning::Unsigned) {
            tracing::warn!(
                webhook = %webhook.id,
                connector = %connector.id,
                suppressed,
                "accepting an UNSIGNED post: allow_unsigned is on (local testing only)"
            );
        }
        None
    } else {
        let secrets = connector.client_secrets();
        if secrets.is_empty() {
            return Err(Refusal::NoSecret {
                connector: connector.id.clone(),
                missing: (connector.client_secret_env.iter())
                    .map(|name| format!("{name} {}", crate::config::env_missing(name)))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        // Current secret first; during a rotation an older one may still sign HubSpot's posts.
        // A post no secret verifies is refused with what the current one found.
        let mut first_error = None;
        let mut matched = None;
        for (i, (name, secret)) in secrets.iter().enumerate() {
            match signature::verify(
                secret.as_bytes(),
                "POST",
                &called,
                body,
                sig_headers,
                now_ms,
            ) {
                Ok(version) => {
                    matched = Some((i, *name, version));
                    break;
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let Some((i, name, version)) = matched else {
            return Err(refused(first_error.expect("at least one secret was tried")));
        };
        state.metrics.secret_matched(&connector.id, name).inc();
        if i > 0 {
            older_secret_used(state, &connector.id, name);
        }
        check_floor(state, &config, &connector, &webhook, Some(version), refused)?;
        Some(version)
    };
    Ok(Authenticated {
        config,
        webhook,
        connector,
        body: received,
        signature,
        now_ms,
    })
}

/// A verified `version` (none: unsigned, taken with `allow_unsigned`) against the connector's
/// floor: a fixed one (which unsigned posts bypass, as before), or with `"auto"` the strongest
/// the endpoint has taken, which a post stripped of every signature header is weaker than.
fn check_floor(
    state: &AppState,
    config: &Config,
    connector: &Connector,
    webhook: &Webhook,
    version: Option<signature::Version>,
    refused: impl Fn(signature::SignatureError) -> Refusal,
) -> Result<(), Refusal> {
    use signature::{Floor, SignatureError};
    let floor = match (connector.min_signature_version, version) {
        (Floor::At(min), Some(v)) if v < min => SignatureError::TooWeak(v.as_str()),
        (Floor::Auto, _) => match (seen_floor(state, config, webhook), version) {
            (Some(seen), None) => SignatureError::Stripped(seen.version.as_str()),
            (Some(seen), Some(v)) if v < seen.version => SignatureError::Downgraded {
                carried: v.as_str(),
                seen: seen.version.as_str(),
            },
            _ => return Ok(()),
        },
        (Floor::At(_), _) => return Ok(()),
    };
    Err(refused(floor))
}

/// The strongest version `webhook` has taken; before its first post, the strongest any
/// webhook (or any action, for an action) of its connector has taken. HubSpot signs every post
/// of a connector's app alike, so a new webhook takes no weaker signature than its siblings:
/// a captured post of one, stripped to its v1 signature (which signs only the body), is not
/// taken at a webhook that has had no post yet.
fn seen_floor(state: &AppState, config: &Config, webhook: &Webhook) -> Option<ratchet::Seen> {
    let action = webhook.target == Target::Callback;
    let floor = |w: &Webhook| {
        state.ratchet.seen(&ratchet::endpoint(w)).or_else(|| {
            // An action's floor an earlier version kept under its bare id, at most v2 (a v3
            // there was a namesake webhook's): what an upgrade must not drop.
            let seen = state.ratchet.seen(&w.id).filter(|_| action)?;
            Some(ratchet::Seen {
                version: seen.version.min(signature::Version::V2),
                ..seen
            })
        })
    };
    floor(webhook).or_else(|| {
        config
            .webhooks
            .iter()
            .filter(|w| {
                w.connector == webhook.connector && (w.target == Target::Callback) == action
            })
            .filter_map(floor)
            .max_by_key(|s| s.version)
    })
}

/// After a post was taken: with `"auto"`, record the version it was signed with. Only then,
/// so that a post refused for its body or portal cannot raise what an endpoint takes. The
/// contact is stored already: a failed write is logged, not refused.
async fn raise_floor(
    state: &AppState,
    connector: &Connector,
    webhook: &Webhook,
    signature: Option<signature::Version>,
    now_ms: i64,
) {
    let (Some(version), signature::Floor::Auto) = (signature, connector.min_signature_version)
    else {
        return;
    };
    let endpoint = ratchet::endpoint(webhook);
    // Most posts raise nothing: no blocking task for them.
    if state.ratchet.settled(&endpoint, version, now_ms) {
        return;
    }
    let (ratchet, id) = (state.ratchet.clone(), endpoint.clone());
    let raised = tokio::task::spawn_blocking(move || ratchet.raise(&id, version, now_ms))
        .await
        .map_err(std::io::Error::other)
        .and_then(|written| written);
    if let Err(e) = raised {
        tracing::error!(%endpoint, "cannot record the signature version: {e}");
    }
}

/// Warn (at most once a minute per connector) that HubSpot still signs with a secret being
/// rotated out: the rotation is not finished until this stops.
fn older_secret_used(state: &AppState, connector: &str, name: &str) {
    if let Some(suppressed) = due(state, connector, PostWarning::OlderSecret) {
        tracing::warn!(
            connector,
            secret_env = name,
            suppressed,
            "a post was signed with an older client secret, not the current (first) one: keep it until this stops, then remove it from client_secret_env"
        );
    }
}

/// Whether `warning` is due for `connector` ([`crate::throttle::Throttle::due`]).
fn due(state: &AppState, connector: &str, warning: PostWarning) -> Option<u64> {
    let mut warnings = state.warnings.lock().unwrap();
    warnings
        .entry((connector.to_string(), warning))
        .or_default()
        .due()
}

/// A portal id in the body must be the connector's, and a valid one; the connector may
/// require one.
fn check_portal(portal: &Portal, connector: &Connector) -> Result<(), Refusal> {
    let wrong = |named: String| Refusal::WrongPortal {
        named,
        connector: connector.id.clone(),
        expected: connector.portal_id,
    };
    match portal {
        Portal::Id(id) if *id == connector.portal_id as i64 => Ok(()),
        Portal::Id(id) => Err(wrong(id.to_string())),
        Portal::Invalid(text) => Err(wrong(format!("{text:?}, not a portal id"))),
        Portal::Absent if connector.require_portal_id => Err(wrong("none".into())),
        Portal::Absent => Ok(()),
    }
}

/// The body's hash kept to recognise a replay (a signed post sent again, within the
/// window): none for a post taken unsigned, which is anyone's to send anyway, so strangers'
/// bodies are not remembered for days.
fn replay_hash(signature: Option<signature::Version>, body: &body::Received) -> Option<String> {
    signature.map(|_| body.hash())
}

/// The signature column's value for a post that `signature` verified (none: taken unsigned),
/// marked ([`inbox::DRY_RUN_MARK`]) when it is only ever to be recorded as a dry run: taken
/// unsigned in dry run (it may be anyone's), or `answered` in dry run (an execution told
/// SUCCESS, whose contact went on at once).
fn stored_signature(
    signature: Option<signature::Version>,
    connector: &Connector,
    answered: bool,
) -> String {
    let version = signature.map_or(inbox::UNSIGNED, signature::Version::as_str);
    if connector.dry_run && (signature.is_none() || answered) {
        format!("{version}{}", inbox::DRY_RUN_MARK)
    } else {
        version.to_string()
    }
}

/// Store a receipt; count what became of it.
async fn store(
    state: &AppState,
    receipt: Receipt,
    merged_ids: Vec<i64>,
) -> Result<Stored, Refusal> {
    let webhook = receipt.webhook_id.clone();
    let stored = state.inbox.store(receipt, merged_ids).await?;
    let post = match &stored {
        Stored::New(_) => {
            state.metrics.accepted.inc();
            Post::Accepted
        }
        Stored::Duplicate(..) | Stored::Finished(_) => {
            state.metrics.duplicates.inc();
            Post::Duplicate
        }
    };
    state.metrics.board.post(&webhook, post);
    Ok(stored)
}

/// A query for the log: the names of the first few `name=value` parameters, values left out
/// (a workflow may put an API key in the query, even bare, with no `=`).
fn redacted_query(query: &str) -> String {
    const SHOWN: usize = 8;
    let plain = |n: &str| {
        (1..=32).contains(&n.len())
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
    };
    let params: Vec<&str> = query.split('&').collect();
    let mut shown: Vec<String> = params
        .iter()
        .take(SHOWN)
        .map(|p| match p.split_once('=') {
            Some((name, _)) if plain(name) => format!("{name}=…"),
            _ => "…".to_string(),
        })
        .collect();
    if params.len() > SHOWN {
        shown.push(format!("({} more)", params.len() - SHOWN));
    }
    format!("?{}", shown.join("&"))
}

/// A webhook's contact: checked for what its dispatch will need, then stored.
async fn accept_contact(state: &AppState, post: Authenticated) -> Result<Stored, Refusal> {
    let Authenticated {
        config,
        webhook,
        connector,
        body,
        signature,
        now_ms,
    } = post;
    let mut contact = payload::parse(&body.bytes, &connector.time_zone_property)?;
    // What the dispatch will need: refused now, HubSpot shows why in the workflow's history;
    // accepted, the contact could only fail later where nobody looks. A list add needs only
    // the record id: an odd email is dropped there, not a reason to refuse.
    if contact
        .email
        .as_deref()
        .is_some_and(|e| !is_email_address(e))
    {
        if webhook.kind.enrolls() {
            return Err(Refusal::BadEmail);
        }
        contact.email = None;
    }
    if webhook.kind.enrolls() && contact.email.is_none() {
        return Err(Refusal::NoEmail);
    }
    if !webhook.kind.enrolls() && contact.contact_id.is_none() {
        return Err(Refusal::NoRecordId);
    }
    check_portal(&contact.portal, &connector)?;
    let receipt = Receipt {
        receipt_id: Ulid::generate().to_string(),
        webhook_id: webhook.id.clone(),
        webhook_type: webhook.kind,
        contact_id: contact.contact_id,
        email: contact.email,
        // The account it was taken for, which a portal the body names is (checked above):
        // the dispatcher sends it through no other account's connector.
        portal_id: Some(connector.portal_id as i64),
        received_at_ms: state.clock.world_ms(),
        signature: stored_signature(signature, &connector, false),
        config: config.identity.clone(),
        callback_id: None,
        body_hash: replay_hash(signature, &body),
        time_zone: contact.time_zone,
        hold_ends_ms: None,
    };
    let stored = store(state, receipt, contact.merged_ids).await?;
    raise_floor(state, &connector, &webhook, signature, now_ms).await;
    Ok(stored)
}

/// An action's execution: stored with its callback; how long HubSpot is asked to hold the
/// contact. A repeat of a callback already waiting (HubSpot retries) stores nothing and gets
/// the answer the first got, whatever the config says now; a repeat of one already released,
/// or any execution in dry run, `None` (no hold).
async fn accept_execution(state: &AppState, post: Authenticated) -> Result<Option<i64>, Refusal> {
    let Authenticated {
        config,
        webhook,
        connector,
        body,
        signature,
        now_ms,
    } = post;
    let execution = execution::parse(&body.bytes, &connector.time_zone_property)?;
    check_portal(&execution.portal, &connector)?;
    let kind = execution.delivery_type.unwrap_or(webhook.kind);
    // As asked of HubSpot (whole hours): a contact HubSpot still held was taken for one whose
    // hold had ended, between the window and the hour it was rounded up to (an audit).
    let hold_ms = execution::asked(crate::model::plan::hold(kind, webhook.window));
    let received_at_ms = state.clock.world_ms();
    let receipt = Receipt {
        receipt_id: Ulid::generate().to_string(),
        webhook_id: webhook.id.clone(),
        webhook_type: kind,
        contact_id: execution.contact_id,
        // Not needed to release the contact: an odd value is dropped, not a reason to fail
        // the workflow's action.
        email: execution.email.filter(|e| is_email_address(e)),
        portal_id: Some(connector.portal_id as i64),
        received_at_ms,
        // Answered SUCCESS in dry run (below), the contact goes on now: its callback must
        // never be completed, even once the connector calls HubSpot.
        signature: stored_signature(signature, &connector, true),
        config: config.identity.clone(),
        callback_id: Some(execution.callback_id),
        body_hash: replay_hash(signature, &body),
        time_zone: execution.time_zone,
        // What the BLOCK below asks of HubSpot (HubSpot starts counting later): planning
        // keeps to it, even if the config's window changes first.
        hold_ends_ms: (!connector.dry_run).then_some(received_at_ms + hold_ms),
    };
    let stored = store(state, receipt, Vec::new()).await?;
    raise_floor(state, &connector, &webhook, signature, now_ms).await;
    Ok(match stored {
        // A retry: the first answer (one in dry run never gets a hold it would keep).
        Stored::Duplicate(_, Some(Answered::Hold(first))) => Some(first),
        Stored::Duplicate(_, Some(Answered::Released)) => None,
        // In dry run nothing would release a hold: the contact goes on at once, as without
        // sendtime, and its plan is recorded as a dry run.
        _ if connector.dry_run => None,
        Stored::Finished(_) => None,
        _ => Some(hold_ms),
    })
}

#[cfg(test)]
mod tests {
    /// An hour's unsigned posts are bounded, however few wait.
    #[test]
    fn an_hours_unsigned_posts_are_bounded() {
        let taken = super::unsigned_rate();
        assert!((0..super::MAX_UNSIGNED).all(|_| taken.check().is_ok()));
        assert!(taken.check().is_err());
    }
}
