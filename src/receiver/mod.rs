//! `POST /hooks/{webhook_id}`: HubSpot's workflow webhooks in, durable receipts out.
//!
//! Checks run cheapest-first and nothing unauthenticated is parsed: unknown webhook (404),
//! body size (413), signature (401), body (400, also when it lacks what the webhook's type
//! needs: an email to enroll, a record id for a list), portal (401), then the store (200 once
//! the receipt is durable; 503 when it cannot be, so HubSpot retries).

pub mod payload;
pub mod signature;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use ulid::Ulid;

use crate::config::ConfigHandle;
use crate::datasets::inbox::{Inbox, Receipt, StoreError, Stored};
use crate::metrics::Metrics;
use crate::time::now_ms;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub config: ConfigHandle,
    pub inbox: Inbox,
    pub metrics: Metrics,
    pub refusals: Arc<RefusalLog>,
    /// Bodies being read at once: with `max_body_bytes` each, what bounds the memory that
    /// unauthenticated clients can make us hold (bodies are read before their signature
    /// can be checked).
    pub bodies: Arc<tokio::sync::Semaphore>,
}

/// Bodies read at once (see [`AppState::bodies`]); more posts wait up to a second, then
/// get 503 and HubSpot retries.
pub const BODIES_IN_FLIGHT: usize = 128;
/// A body not fully received by then gets 408 (HubSpot itself gives up after 30 s).
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Refused posts, logged so that whoever wires a workflow sees why HubSpot got a 4xx, but at
/// most once a minute per webhook and reason (a misconfigured workflow refuses every post).
#[derive(Default)]
pub struct RefusalLog(Mutex<HashMap<(String, String), (Instant, u64)>>);

const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);

impl RefusalLog {
    fn warn(&self, webhook: &str, reason: &str, status: StatusCode, message: &str) {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Webhook ids come from the URL: bound what strangers can make us remember.
        if seen.len() >= 1024 {
            seen.clear();
        }
        let now = Instant::now();
        let key = (webhook.to_string(), reason.to_string());
        let suppressed = match seen.get_mut(&key) {
            Some((last, n)) if now.duration_since(*last) < REFUSAL_LOG_EVERY => {
                *n += 1;
                return;
            }
            Some((last, n)) => {
                *last = now;
                std::mem::take(n)
            }
            None => {
                seen.insert(key, (now, 0));
                0
            }
        };
        tracing::warn!(
            webhook,
            reason,
            status = status.as_u16(),
            suppressed,
            "refused a post: {message}"
        );
    }
}

/// The HTTP surface: webhooks, health, metrics, status.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/hooks/{webhook_id}", post(receive))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(state)
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// Answer with an error; `detail` goes to the log only (never a secret).
fn refuse(
    state: &AppState,
    webhook: &str,
    status: StatusCode,
    reason: &str,
    message: &str,
    detail: &str,
) -> Response {
    state.metrics.reject(reason);
    if status.is_client_error() {
        state
            .refusals
            .warn(webhook, reason, status, &format!("{message}{detail}"));
    }
    reply(
        status,
        json!({"status": "error", "reason": reason, "message": message}),
    )
}

async fn receive(
    State(state): State<AppState>,
    Path(webhook_id): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let config = state.config.load_full();
    let Some(webhook) = config.webhook(&webhook_id) else {
        // Logged under one key, however many ids strangers try.
        let shown: String = webhook_id.chars().take(64).collect();
        return refuse(
            &state,
            "(unknown)",
            StatusCode::NOT_FOUND,
            "unknown_webhook",
            "no webhook with this id",
            &format!(": {shown:?} (see `sendtime validate` for the configured ones)"),
        );
    };
    state.metrics.received.inc();
    let connector = config
        .connector(&webhook.connector)
        .expect("validated: webhook connectors exist");

    let limit = config.server.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return too_large(&state, &webhook.id, limit);
    }
    let Ok(Ok(_permit)) =
        tokio::time::timeout(Duration::from_secs(1), state.bodies.clone().acquire_owned()).await
    else {
        let mut resp = refuse(
            &state,
            &webhook.id,
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many posts being received at once",
            "",
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        return resp;
    };
    let body = match tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, limit))
        .await
    {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            let too_big = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_big {
                return too_large(&state, &webhook.id, limit);
            }
            return refuse(
                &state,
                &webhook.id,
                StatusCode::BAD_REQUEST,
                "bad_body",
                "the body could not be read (malformed chunked encoding, or the client went away)",
                &format!(": {e}"),
            );
        }
        Err(_) => {
            return refuse(
                &state,
                &webhook.id,
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                &format!("the body did not arrive within {BODY_READ_TIMEOUT:?}"),
                "",
            );
        }
    };

    let now_ms = now_ms();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let sig_headers = signature::Headers {
        v3: header("x-hubspot-signature-v3"),
        timestamp: header("x-hubspot-request-timestamp"),
        v1v2: header("x-hubspot-signature"),
        version: header("x-hubspot-signature-version"),
    };
    let unsigned = sig_headers.v3.is_none() && sig_headers.v1v2.is_none();
    let signature = if unsigned && connector.allow_unsigned {
        tracing::warn!(
            webhook = %webhook.id,
            connector = %connector.id,
            "accepting an UNSIGNED post: allow_unsigned is on (local testing only)"
        );
        "unsigned"
    } else {
        let Some(secret) = connector.client_secret() else {
            // Our misconfiguration, not the sender's: 503 so HubSpot keeps the contact and retries.
            tracing::error!(
                connector = %connector.id,
                "cannot verify a post: {} is not set", connector.client_secret_env
            );
            return refuse(
                &state,
                &webhook.id,
                StatusCode::SERVICE_UNAVAILABLE,
                "no_secret",
                "this connector has no client secret configured",
                "",
            );
        };
        // The URL HubSpot called: public_url plus the path and query as received.
        let called = format!(
            "{}{}",
            config.server.public_url,
            uri.path_and_query().map_or("/", |pq| pq.as_str())
        );
        match signature::verify(
            secret.as_bytes(),
            "POST",
            &called,
            &body,
            sig_headers,
            now_ms,
        ) {
            Ok(v) => v.as_str(),
            Err(e) => {
                // The URL checked against is what goes wrong when public_url is off.
                return refuse(
                    &state,
                    &webhook.id,
                    StatusCode::UNAUTHORIZED,
                    e.label(),
                    &e.to_string(),
                    &format!(
                        " (checked as POST {called}; is server.public_url the address HubSpot calls, and the connector's client secret its app's?)"
                    ),
                );
            }
        }
    };

    let contact = match payload::parse(&body) {
        Ok(c) => c,
        Err(e) => {
            let reason = match e {
                payload::PayloadError::NotJson(_) => "bad_json",
                payload::PayloadError::NoContact => "no_contact",
            };
            return refuse(
                &state,
                &webhook.id,
                StatusCode::BAD_REQUEST,
                reason,
                &e.to_string(),
                "",
            );
        }
    };
    // What the dispatch will need: refused now, HubSpot shows why in the workflow's history;
    // accepted, the contact could only fail later where nobody looks.
    let missing = if webhook.kind.enrolls() {
        contact.email.is_none().then_some((
            "no_email",
            "the body has no email address, which enrolling into a workflow needs (HubSpot \
             enrolls by email); include the email property in the workflow's webhook",
        ))
    } else {
        contact.contact_id.is_none().then_some((
            "no_record_id",
            "the body has no contact record id, which adding to a list needs; include the \
             contact id (hs_object_id or vid) in the workflow's webhook",
        ))
    };
    if let Some((reason, message)) = missing {
        return refuse(
            &state,
            &webhook.id,
            StatusCode::BAD_REQUEST,
            reason,
            message,
            "",
        );
    }
    if let Some(portal) = contact.portal_id
        && portal != connector.portal_id as i64
    {
        return refuse(
            &state,
            &webhook.id,
            StatusCode::UNAUTHORIZED,
            "wrong_portal",
            "the body's portal id is not this connector's portal",
            &format!(
                " ({portal}, connector {} has {})",
                connector.id, connector.portal_id
            ),
        );
    }

    let receipt = Receipt {
        receipt_id: Ulid::generate().to_string(),
        webhook_id: webhook.id.clone(),
        webhook_type: webhook.kind,
        contact_id: contact.contact_id,
        email: contact.email,
        portal_id: contact.portal_id,
        received_at_ms: now_ms,
        signature: signature.to_string(),
        config: config.identity.clone(),
    };
    match state.inbox.store(receipt).await {
        Ok(Stored::New(id)) => {
            state.metrics.accepted.inc();
            reply(
                StatusCode::OK,
                json!({"status": "accepted", "receipt_id": id}),
            )
        }
        Ok(Stored::Duplicate(id)) => {
            state.metrics.duplicates.inc();
            reply(
                StatusCode::OK,
                json!({"status": "duplicate", "receipt_id": id}),
            )
        }
        Err(e) => {
            let reason = match e {
                StoreError::Busy => "store_busy",
                StoreError::ShuttingDown => "shutting_down",
                StoreError::Io => "store_error",
            };
            let mut resp = refuse(
                &state,
                &webhook.id,
                StatusCode::SERVICE_UNAVAILABLE,
                reason,
                &e.to_string(),
                "",
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
            resp
        }
    }
}

fn too_large(state: &AppState, webhook: &str, limit: usize) -> Response {
    refuse(
        state,
        webhook,
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        &format!("body over the {limit}-byte limit (server.max_body_bytes)"),
        "",
    )
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// What is in force: the config identity and the webhooks it declares.
async fn status(State(state): State<AppState>) -> Response {
    let config = state.config.load();
    let webhooks: Vec<_> = config
        .webhooks
        .iter()
        .map(|w| {
            json!({
                "id": w.id,
                "type": w.kind.as_str(),
                "connector": w.connector,
                "url": config.webhook_url(w),
            })
        })
        .collect();
    axum::Json(json!({
        "config": config.identity,
        "pending": state.inbox.pending_count(),
        "webhooks": webhooks,
    }))
    .into_response()
}
