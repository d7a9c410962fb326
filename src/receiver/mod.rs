//! `POST /hooks/{webhook_id}`: HubSpot's workflow webhooks in, durable receipts out.
//!
//! Checks run cheapest-first and nothing unauthenticated is parsed: unknown webhook (404),
//! body size (413), signature (401), body (400, also when it lacks what the webhook's type
//! needs: an email to enroll, a record id for a list), portal (401), then the store (200 once
//! the receipt is durable; 503 when it cannot be, so HubSpot retries).

pub mod payload;
pub mod refusal;
pub mod signature;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use ulid::Ulid;

use crate::config::ConfigHandle;
use crate::datasets::inbox::{Inbox, Receipt, Stored};
use crate::metrics::Metrics;
use crate::time::now_ms;
use refusal::{BODY_READ_TIMEOUT, Refusal, RefusalLog};

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
/// How long a post waits for one of the [`BODIES_IN_FLIGHT`] before it is refused as busy.
const BODY_PERMIT_WAIT: Duration = Duration::from_secs(1);

/// The HTTP surface: webhooks, health, metrics, status.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/hooks/{webhook_id}", post(receive))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(state)
}

/// `POST /hooks/{webhook_id}`: the receipt's id, or the refusal, counted and logged.
async fn receive(
    State(state): State<AppState>,
    Path(webhook_id): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match accept(&state, &webhook_id, &uri, &headers, body).await {
        Ok(stored) => {
            let (status, id) = match stored {
                Stored::New(id) => ("accepted", id),
                Stored::Duplicate(id) => ("duplicate", id),
            };
            let body = json!({"status": status, "receipt_id": id});
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Err(refusal) => {
            // Unknown ids are logged under one key, however many strangers try.
            let webhook = match &refusal {
                Refusal::UnknownWebhook { .. } => "(unknown)",
                _ => webhook_id.as_str(),
            };
            state.refusals.record(&state.metrics, webhook, &refusal);
            refusal.into_response()
        }
    }
}

/// The checks, cheapest first, then the store.
async fn accept(
    state: &AppState,
    webhook_id: &str,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Stored, Refusal> {
    let config = state.config.load_full();
    let webhook = config
        .webhook(webhook_id)
        .ok_or_else(|| Refusal::UnknownWebhook {
            id: webhook_id.chars().take(64).collect(),
        })?;
    state.metrics.received.inc();
    let connector = config
        .connector(&webhook.connector)
        .expect("validated: webhook connectors exist");

    let limit = config.server.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(Refusal::TooLarge { limit });
    }
    let Ok(Ok(_permit)) =
        tokio::time::timeout(BODY_PERMIT_WAIT, state.bodies.clone().acquire_owned()).await
    else {
        return Err(Refusal::Busy);
    };
    let body =
        match tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, limit)).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                let too_big = std::error::Error::source(&e)
                    .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
                return Err(if too_big {
                    Refusal::TooLarge { limit }
                } else {
                    Refusal::BodyUnreadable { why: e.to_string() }
                });
            }
            Err(_) => return Err(Refusal::BodyTimeout),
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
        let secret = connector.client_secret().ok_or_else(|| Refusal::NoSecret {
            connector: connector.id.clone(),
            env: connector.client_secret_env.clone(),
        })?;
        // The URL HubSpot called: public_url plus the path and query as received.
        let called = format!(
            "{}{}",
            config.server.public_url,
            uri.path_and_query().map_or("/", |pq| pq.as_str())
        );
        signature::verify(
            secret.as_bytes(),
            "POST",
            &called,
            &body,
            sig_headers,
            now_ms,
        )
        .map_err(|error| Refusal::Signature {
            error,
            checked: format!("POST {called}"),
        })?
        .as_str()
    };

    let contact = payload::parse(&body)?;
    // What the dispatch will need: refused now, HubSpot shows why in the workflow's history;
    // accepted, the contact could only fail later where nobody looks.
    if webhook.kind.enrolls() && contact.email.is_none() {
        return Err(Refusal::NoEmail);
    }
    if !webhook.kind.enrolls() && contact.contact_id.is_none() {
        return Err(Refusal::NoRecordId);
    }
    if let Some(portal) = contact.portal_id
        && portal != connector.portal_id as i64
    {
        return Err(Refusal::WrongPortal {
            portal,
            connector: connector.id.clone(),
            expected: connector.portal_id,
        });
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
    let stored = state.inbox.store(receipt).await?;
    match &stored {
        Stored::New(_) => state.metrics.accepted.inc(),
        Stored::Duplicate(_) => state.metrics.duplicates.inc(),
    };
    Ok(stored)
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
