//! The admin surface, on its own listener (`[server] admin_listen`), never where HubSpot
//! calls: the dashboard at `/`, `/status`, `/metrics`, a contact lookup, and pause and resume.
//!
//! With `admin_token_env` set, every request but `/healthz`, the page and its two assets needs
//! `Authorization: Bearer <token>` (the page holds no data: its script asks for the token and
//! sends it). Without
//! one, requests must name this machine in `Host` (so a web page cannot reach it through DNS
//! rebinding), and pause and resume take JSON only (so a cross-site form cannot post them).
//! Either way, a request a browser marks as sent by another site's page is refused.

pub mod board;
mod error;
mod page;
mod status;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

pub use error::AdminError;

use crate::clock::Clock;
use crate::config::{ConfigHandle, Server};
use crate::datasets::pending::PendingSet;
use crate::dispatch::lookups::Lookup;
use crate::metrics::Metrics;

/// How long a contact lookup waits for the dispatcher (it answers between ticks, and as a
/// tick waits on its calls; not while it plans).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(15);

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    pub config: ConfigHandle,
    pub metrics: Metrics,
    /// The receipts waiting, for counts: not the inbox's handle, which a `/status` read
    /// stuck on a hung disk would hold, and `serve`'s stop wait for (its writer ends with
    /// the last handle).
    pub pending: PendingSet,
    /// The dispatcher's "now".
    pub clock: Clock,
    pub lookups: mpsc::Sender<Lookup>,
    /// Read from `admin_token_env` at start-up.
    token: Option<Arc<str>>,
    /// One lift report at a time: each reads every send and event.
    lift: Arc<tokio::sync::Semaphore>,
    /// Contact lookups reading `plan/` at once.
    lookups_reading: Arc<tokio::sync::Semaphore>,
    /// The operators' pauses as the file says now: a lookup and `/metrics` show a pause set
    /// by the CLI at once, not at the dispatcher's next tick (an hour away on a sparse cron).
    pauses: Arc<crate::pauses::Watch>,
    /// `/status` and `/metrics` reads at once: a hung disk holds a blocking thread per poll
    /// of every open dashboard and scrape, and those threads also serve the receiver.
    status_reading: Arc<tokio::sync::Semaphore>,
    /// Pauses and resumes written at once: each holds a blocking thread for the pause file's
    /// lock and fsync (a CLI holding the lock, a hung disk).
    pausing: Arc<tokio::sync::Semaphore>,
}

/// Contact lookups that may read `plan/` at once: each reads all of it.
const LOOKUPS_AT_ONCE: usize = 2;
/// `/status` and `/metrics` answers that may read the pause file at once (a few open
/// dashboards, a scraper).
const STATUS_AT_ONCE: usize = 8;
/// Pauses and resumes that may wait for the pause file at once (an operator's clicks).
const PAUSES_AT_ONCE: usize = 4;
/// The longest id `POST /pause` and `/resume` take (config ids are at most 64 characters).
const MAX_ID_LEN: usize = 128;

impl AdminState {
    /// The admin state; fails when `admin_token_env` names a variable that is unset or empty.
    pub fn new(
        config: ConfigHandle,
        metrics: Metrics,
        pending: PendingSet,
        clock: Clock,
        lookups: mpsc::Sender<Lookup>,
    ) -> anyhow::Result<AdminState> {
        let token = match &config.load().server.admin_token_env {
            Some(env) => {
                let token = crate::config::env_value(env).unwrap_or_default();
                anyhow::ensure!(
                    !token.is_empty(),
                    "server.admin_token_env names {env}, which {}: set it to a long random token (e.g. `openssl rand -hex 32`), or remove the key",
                    crate::config::env_missing(env)
                );
                if let Some(problem) = Server::admin_token_problem(&token) {
                    anyhow::bail!("the admin token in {env} {problem}");
                }
                Some(Arc::from(token))
            }
            None => None,
        };
        let pauses = crate::pauses::Watch::new(&config.load().server.data_dir);
        Ok(AdminState {
            config,
            metrics,
            pending,
            clock,
            lookups,
            token,
            lift: Arc::new(tokio::sync::Semaphore::new(1)),
            lookups_reading: Arc::new(tokio::sync::Semaphore::new(LOOKUPS_AT_ONCE)),
            pauses: Arc::new(pauses),
            status_reading: Arc::new(tokio::sync::Semaphore::new(STATUS_AT_ONCE)),
            pausing: Arc::new(tokio::sync::Semaphore::new(PAUSES_AT_ONCE)),
        })
    }
}

/// The admin router.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/", get(page::index))
        .route("/dashboard.js", get(page::script))
        .route("/dashboard.css", get(page::style))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/contact", get(contact))
        .route("/lift", post(lift))
        .route("/pause", post(pause))
        .route("/resume", post(resume))
        .fallback(|| async { AdminError::NotFound("no such page on the admin surface".into()) })
        .method_not_allowed_fallback(|| async { AdminError::MethodNotAllowed })
        .layer(axum::middleware::from_fn(body_in_time))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        // Health checks carry no token.
        .route(
            "/healthz",
            get(|| async { "ok\n" }).fallback(|| async { AdminError::MethodNotAllowed }),
        )
        .with_state(state)
}

/// The token, or (without one) a Host that names this machine. The page and its assets need
/// no token: they hold no data, and a browser cannot add the header to a navigation.
async fn guard(
    State(state): State<AdminState>,
    request: Request,
    next: Next,
) -> Result<Response, AdminError> {
    let headers = request.headers();
    // Read only: another method's body would be read before its 405 (2 MiB, 10 s, from
    // whoever reaches the port: an audit).
    let public = matches!(request.method(), &Method::GET | &Method::HEAD)
        && matches!(
            request.uri().path(),
            "/" | "/dashboard.js" | "/dashboard.css"
        );
    // A page of another site may make the browser send requests here (an image, a form): a
    // browser says so, and such requests are refused whatever they carry. The page and its
    // assets are not (a link from another site, an SSO redirect): they hold no data, and the
    // page cannot be framed.
    let site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none");
    if matches!(site, "cross-site" | "same-site") && !public {
        return Err(AdminError::CrossSite);
    }
    match &state.token {
        Some(token) => {
            if !public && !bearer_matches(headers, token) {
                return Err(AdminError::Unauthorized);
            }
        }
        None => {
            if !host_is_local(headers, state.config.load().server.admin_listen) {
                return Err(AdminError::ForeignHost);
            }
            // A proxy on this machine names its upstream, a loopback address, as the Host: what
            // it passes on would open the surface to whoever reaches it. Only a proxy that says
            // so is seen (one that adds none of these cannot be told from a local client).
            if PROXY_HEADERS.iter().any(|h| headers.contains_key(*h)) {
                return Err(AdminError::Proxied);
            }
        }
    }
    let mut response = next.run(request).await;
    // Data is for whoever asked, now: no cache keeps it, no browser guesses its type.
    let headers = response.headers_mut();
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(response)
}

/// How long a request's body may take to arrive (its bodies are a few bytes of JSON): a
/// body that never ends held its connection for good, and 64 such locked the surface out.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest body read, axum's JSON default.
const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// A POST with its body read whole within [`BODY_READ_TIMEOUT`] (after the guard; the
/// other methods' handlers read none).
async fn body_in_time(request: Request, next: Next) -> Result<Response, AdminError> {
    if request.method() != axum::http::Method::POST {
        return Ok(next.run(request).await);
    }
    let (parts, body) = request.into_parts();
    let read = axum::body::to_bytes(body, MAX_BODY_BYTES);
    let bytes = match tokio::time::timeout(BODY_READ_TIMEOUT, read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            return Err(if too_large {
                AdminError::Unreadable(
                    axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                    format!("a body is at most {MAX_BODY_BYTES} bytes"),
                )
            } else {
                AdminError::Unreadable(axum::http::StatusCode::BAD_REQUEST, e.to_string())
            });
        }
        Err(_) => {
            return Err(AdminError::Unreadable(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request's body did not arrive within {}s",
                    BODY_READ_TIMEOUT.as_secs()
                ),
            ));
        }
    };
    Ok(next
        .run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await)
}

/// Headers a proxy adds to the requests it passes on, as configured in most.
const PROXY_HEADERS: [&str; 6] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "via",
];

/// `Authorization: Bearer <token>`, compared in constant time.
fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    // The scheme's name is case-insensitive (RFC 9110).
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map_or("", |(_, token)| token.trim());
    crate::secret::same_secret(given, token)
}

/// A Host of `localhost`, a loopback address, or the admin listener's own address.
fn host_is_local(headers: &HeaderMap, admin: std::net::SocketAddr) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    // Without the port: `[::1]:8081`, `127.0.0.1:8081`, `localhost`.
    let name = match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    name.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback() || ip == admin.ip())
}

async fn metrics(State(state): State<AdminState>) -> Response {
    // The pause gauges as the file says now, read off the runtime (a disk read) with the
    // status reads' bound; on a hung disk, as they last stood.
    if let Ok(reading) = state.status_reading.clone().try_acquire_owned() {
        let (pauses, metrics) = (state.pauses.clone(), state.metrics.clone());
        let read = tokio::task::spawn_blocking(move || {
            let _reading = reading;
            metrics.set_operator_pauses(&pauses.current());
        });
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), read).await;
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn status(State(state): State<AdminState>) -> Result<Response, AdminError> {
    // It reads the pause file: off the runtime, which also answers HubSpot (a hung disk must
    // not take its threads, one per open dashboard every 2 s).
    let reading = (state.status_reading.clone().try_acquire_owned())
        .map_err(|_| AdminError::Busy("other status requests are reading the disk"))?;
    let status = tokio::task::spawn_blocking(move || {
        let _reading = reading;
        status::status(&state)
    })
    .await
    .map_err(|e| AdminError::Internal(e.into()))?;
    Ok(axum::Json(status).into_response())
}

#[derive(Deserialize)]
struct ContactQuery {
    /// An email address or a HubSpot contact id.
    q: String,
}

/// `GET /contact?q=`: what `sendtime explain` shows, from the profiles in memory.
async fn contact(
    State(state): State<AdminState>,
    query: Result<Query<ContactQuery>, QueryRejection>,
) -> Result<Response, AdminError> {
    let Query(query) = query.map_err(|e| {
        AdminError::Unreadable(
            e.status(),
            format!("{}; ask for ?q=EMAIL_OR_ID", e.body_text()),
        )
    })?;
    let contact = query.q.trim();
    if contact.len() > 320 || !crate::datasets::contacts::is_contact_query(contact) {
        return Err(AdminError::BadRequest(
            "q must be an email address or a HubSpot contact id".into(),
        ));
    }
    // The receipts on disk first: they name the id an email was posted with.
    let reading = state
        .lookups_reading
        .clone()
        .try_acquire_owned()
        .map_err(|_| AdminError::Busy("other contact lookups are reading the plans"))?;
    let data_dir = state.config.load().server.data_dir.clone();
    let asked = contact.to_string();
    let watch = state.pauses.clone();
    // The permit goes with the work: a client that hangs up does not free it early.
    let (receipts, pauses) = tokio::task::spawn_blocking(move || {
        let _reading = reading;
        crate::model::explain::receipts(&data_dir, &asked).map(|r| (r, watch.current()))
    })
    .await
    .map_err(|e| AdminError::Internal(e.into()))?
    .map_err(AdminError::Internal)?;
    let (reply, answer) = oneshot::channel();
    let lookup = Lookup {
        contact: contact.to_string(),
        posted: receipts.posted.clone(),
        pauses,
        reply,
    };
    let answered = tokio::time::timeout(LOOKUP_TIMEOUT, async {
        state.lookups.send(lookup).await.ok()?;
        answer.await.ok()
    })
    .await;
    let explanation = match answered {
        Ok(Some(explanation)) => explanation.map_err(AdminError::Internal)?,
        _ => {
            return Err(AdminError::Busy(
                "the dispatcher did not answer in time (a long tick?)",
            ));
        }
    };
    let config = state.config.load();
    Ok(axum::Json(explanation.with_receipts(receipts, &config)).into_response())
}

/// The body of `POST /lift`: `{}`. A POST of JSON, so that no page of another site can make
/// a browser start one (an image's or a form's request cannot send JSON): each reads every
/// send and event, a GET was started by any `<img>` in browsers that do not say whose page
/// asked (an audit).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LiftAsk {}

/// `POST /lift`: `sendtime report lift` as of now, over every webhook and action.
async fn lift(
    State(state): State<AdminState>,
    asked: Result<axum::Json<LiftAsk>, JsonRejection>,
) -> Result<Response, AdminError> {
    let axum::Json(LiftAsk {}) = asked.map_err(|e| AdminError::unreadable(&e, "{}"))?;
    let running = state
        .lift
        .clone()
        .try_acquire_owned()
        .map_err(|_| AdminError::Busy("a lift report is being made"))?;
    let config = state.config.load_full();
    let now = state.clock.now_ms();
    // The permit goes with the work: a client that hangs up does not free it early. The
    // import state files are read there too, off the runtime that answers HubSpot.
    let lift = tokio::task::spawn_blocking(move || {
        let _running = running;
        let options = crate::lift::report::default_as_of(&config, now);
        crate::lift::report::lift(&config.server.data_dir, &options)
    })
    .await
    .map_err(|e| AdminError::Internal(e.into()))?
    .map_err(AdminError::Internal)?;
    Ok(axum::Json(lift).into_response())
}

/// The body of `POST /pause` and `POST /resume`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Target {
    /// A webhook, action or connector id.
    id: String,
    /// `id` names a connector even where a webhook has the same id.
    #[serde(default)]
    connector: bool,
}

async fn pause(
    State(state): State<AdminState>,
    target: Result<axum::Json<Target>, JsonRejection>,
) -> Result<Response, AdminError> {
    set_pause(&state, target, true).await
}

async fn resume(
    State(state): State<AdminState>,
    target: Result<axum::Json<Target>, JsonRejection>,
) -> Result<Response, AdminError> {
    set_pause(&state, target, false).await
}

/// What `sendtime pause` and `sendtime resume` do; the dispatcher sees it at its next tick.
async fn set_pause(
    state: &AdminState,
    target: Result<axum::Json<Target>, JsonRejection>,
    on: bool,
) -> Result<Response, AdminError> {
    let axum::Json(target) =
        target.map_err(|e| AdminError::unreadable(&e, r#"{"id": "...", "connector": false}"#))?;
    if target.id.len() > MAX_ID_LEN {
        return Err(AdminError::BadRequest(format!(
            "id is {} bytes: ids given here are at most {MAX_ID_LEN} bytes (config ids at most 64 characters)",
            target.id.len()
        )));
    }
    // A pause of something since removed from the config can be lifted, as by the CLI.
    let config = state.config.load_full();
    // On the dispatcher's clock, as `/status` reports (the demo's runs fast).
    let now = state.clock.now_ms();
    let writing = (state.pausing.clone().try_acquire_owned())
        .map_err(|_| AdminError::Busy("other pauses and resumes are waiting for the pause file"))?;
    let kind = tokio::task::spawn_blocking(move || {
        let _writing = writing;
        let named = crate::config::Named::of(&config);
        let set = crate::pauses::set(&named, &target.id, target.connector, on, now)?;
        Ok::<_, anyhow::Error>((target.id, set.0, set.1))
    })
    .await
    .map_err(|e| AdminError::Internal(e.into()))?;
    let (id, kind, was) = kind.map_err(|e| match e.downcast::<crate::pauses::Unknown>() {
        Ok(unknown) => AdminError::NotFound(unknown.in_the_config()),
        Err(e) if e.is::<crate::pauses::Unreadable>() => AdminError::Conflict(format!("{e:#}")),
        Err(e) => AdminError::Internal(e),
    })?;
    tracing::info!(
        id,
        kind = kind.as_str(),
        paused = on,
        "set from the dashboard"
    );
    Ok(axum::Json(json!({
        "id": id,
        "kind": kind.as_str(),
        "paused": on,
        "changed": was.is_some() != on,
    }))
    .into_response())
}
