//! Why a post was not stored, as a type: each refusal knows its HTTP status, its reason label
//! (the `reason` of `sendtime_webhooks_rejected_total` and of the JSON answer), the message
//! HubSpot shows in the workflow's history, and what goes to our log only.
//!
//! 4xx tells HubSpot not to retry (the post itself is wrong), but for 429: overload (bodies
//! in flight, the store's queue full, shutting down) asks it to come back after `Retry-After`,
//! the one answer HubSpot retries on its own schedule at our pace. 503 asks it to retry, on
//! its 5xx schedule (over three days), for what is wrong on our side (no secret configured, a
//! store error) or may be (a signature that does not match, a timestamp minutes off).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::execution::ExecutionError;
use super::payload::PayloadError;
use super::signature::SignatureError;
use crate::datasets::inbox::StoreError;
use crate::metrics::Metrics;
use crate::throttle::Throttle;

/// A body not fully received by then gets 429, so HubSpot sends it again (it gives up on a
/// request itself after 30 s, and retries no other 4xx).
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A refused post.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("no webhook with this id")]
    UnknownWebhook {
        /// The id asked for, cut to 64 characters (strangers choose it).
        id: String,
    },
    #[error(
        "nothing is received at this path: webhooks are posted to /hooks/ID, actions to /actions/ID"
    )]
    NoRoute {
        /// The path asked for, without its query, cut to 64 characters (strangers choose it).
        path: String,
    },
    #[error("webhooks and actions are received by POST only: set the workflow's webhook to POST")]
    WrongMethod { method: String },
    #[error("body over the {limit}-byte limit (server.max_body_bytes)")]
    TooLarge { limit: usize },
    #[error("too many posts being received at once")]
    Busy,
    #[error("the body could not be read (malformed chunked encoding, or the client went away)")]
    BodyUnreadable { why: String },
    #[error("the body did not arrive within {BODY_READ_TIMEOUT:?}")]
    BodyTimeout,
    #[error("this connector has no client secret configured")]
    /// `missing`: each variable and how it is missing (`NAME is set but blank`).
    NoSecret { connector: String, missing: String },
    #[error(
        "{} posts taken unsigned are waiting, as many as may: unsigned posts are refused until fewer wait (sign them: allow_unsigned is for local testing)",
        crate::datasets::pending::MAX_UNSIGNED
    )]
    UnsignedFull,
    #[error(
        "about {} posts an hour have been taken unsigned, as many as may: unsigned posts are refused for a while (sign them: allow_unsigned is for local testing)",
        crate::datasets::pending::MAX_UNSIGNED
    )]
    UnsignedRate,
    #[error("{error}")]
    Signature {
        error: SignatureError,
        /// The method and URL the signature was checked against, query values left out (a
        /// workflow may put an API key there).
        checked: String,
    },
    #[error("{0}")]
    Payload(PayloadError),
    #[error("{0}")]
    Execution(ExecutionError),
    #[error(
        "the body has no email address, which enrolling into a workflow needs (HubSpot \
         enrolls by email); include the email property in the workflow's webhook"
    )]
    NoEmail,
    #[error("the body's email is not an email address")]
    BadEmail,
    #[error(
        "the body has no contact record id, which adding to a list needs; include the \
         contact id (hs_object_id or vid) in the workflow's webhook"
    )]
    NoRecordId,
    #[error("the body's portal id is not this connector's portal")]
    WrongPortal {
        /// What the body names: a portal id, or what stands where one should.
        named: String,
        connector: String,
        expected: u64,
    },
    #[error("{0}")]
    Store(StoreError),
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::UnknownWebhook { .. } | Refusal::NoRoute { .. } => StatusCode::NOT_FOUND,
            Refusal::WrongMethod { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::BodyUnreadable { .. }
            | Refusal::Payload(_)
            | Refusal::Execution(_)
            | Refusal::NoEmail
            | Refusal::BadEmail
            | Refusal::NoRecordId => StatusCode::BAD_REQUEST,
            // A signature refused is as often ours to fix as a stranger's: `public_url`, a
            // rotated secret, the host's clock, a proxy that drops the v3 headers or all of
            // them (missing, downgraded, no timestamp), a version or floor this one does not
            // take. HubSpot's retries keep the contact while we do (it never retries a 401,
            // two audits found). A stranger gains nothing by the difference.
            Refusal::Signature { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::WrongPortal { .. } => StatusCode::UNAUTHORIZED,
            Refusal::Busy
            | Refusal::BodyTimeout
            | Refusal::Store(StoreError::Busy)
            | Refusal::Store(StoreError::ShuttingDown) => StatusCode::TOO_MANY_REQUESTS,
            Refusal::NoSecret { .. }
            | Refusal::UnsignedFull
            | Refusal::UnsignedRate
            | Refusal::Store(StoreError::Io) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Short label for metrics, logs and the answer's `reason`.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::UnknownWebhook { .. } => "unknown_webhook",
            Refusal::NoRoute { .. } => "unknown_path",
            Refusal::WrongMethod { .. } => "wrong_method",
            Refusal::TooLarge { .. } => "too_large",
            Refusal::Busy => "busy",
            Refusal::BodyUnreadable { .. } => "bad_body",
            Refusal::BodyTimeout => "body_timeout",
            Refusal::NoSecret { .. } => "no_secret",
            Refusal::UnsignedFull => "unsigned_full",
            Refusal::UnsignedRate => "unsigned_rate",
            Refusal::Signature { error, .. } => error.label(),
            Refusal::Payload(PayloadError::NotJson(_)) => "bad_json",
            Refusal::Payload(PayloadError::NoContact) => "no_contact",
            Refusal::Payload(PayloadError::NotContact(_)) => "not_a_contact",
            Refusal::Execution(ExecutionError::NotJson(_)) => "bad_json",
            Refusal::Execution(ExecutionError::NoCallback) => "no_callback",
            Refusal::Execution(ExecutionError::CallbackTooLong(_)) => "callback_too_long",
            Refusal::Execution(ExecutionError::NotContact(_)) => "not_a_contact",
            Refusal::Execution(ExecutionError::UnknownDeliveryType(_)) => "unknown_delivery_type",
            Refusal::NoEmail => "no_email",
            Refusal::BadEmail => "bad_email",
            Refusal::NoRecordId => "no_record_id",
            Refusal::WrongPortal { .. } => "wrong_portal",
            Refusal::Store(StoreError::Busy) => "store_busy",
            Refusal::Store(StoreError::ShuttingDown) => "shutting_down",
            Refusal::Store(StoreError::Io) => "store_error",
        }
    }

    /// What goes to the log after the message, never to the sender (it may say how we are
    /// configured); never a secret.
    pub fn detail(&self) -> String {
        match self {
            Refusal::UnknownWebhook { id } => {
                format!(": {id:?} (see `sendtime validate` for the configured ones)")
            }
            Refusal::NoRoute { path } => format!(
                ": {path:?} (see `sendtime validate` for the URLs to give HubSpot; a path in server.public_url may be kept or stripped by a proxy)"
            ),
            Refusal::WrongMethod { method } => format!(": {method}"),
            Refusal::BodyUnreadable { why } => format!(": {why}"),
            Refusal::Signature {
                error:
                    SignatureError::TooWeak(_)
                    | SignatureError::Downgraded { .. }
                    | SignatureError::Stripped(_),
                checked,
            } => format!(" (checked as {checked}; see min_signature_version)"),
            Refusal::Signature { checked, .. } => format!(
                " (checked as {checked}; is server.public_url the address HubSpot calls, and the connector's client secret its app's?)"
            ),
            Refusal::WrongPortal {
                named,
                connector,
                expected,
            } => format!(" ({named}; connector {connector} has {expected})"),
            Refusal::NoSecret { connector, missing } => {
                format!(" (connector {connector}: {missing})")
            }
            _ => String::new(),
        }
    }

    /// A refusal HubSpot's retries meet until someone fixes it (a secret not set, a signature
    /// refused): asked back in a minute, not in seconds.
    pub fn lasting(&self) -> bool {
        matches!(self, Refusal::NoSecret { .. } | Refusal::Signature { .. })
    }

    /// Our misconfiguration, not the sender's: logged as an error (once a minute, like every
    /// refusal, with the count of those suppressed), since it loses nothing (HubSpot retries)
    /// but needs fixing now.
    pub fn is_ours(&self) -> bool {
        matches!(self, Refusal::NoSecret { .. })
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        Refusal::Store(e)
    }
}

/// Of a stranger's value echoed in a refusal (and its log line), this many characters are kept.
pub(super) const ECHOED_CHARS: usize = 64;

/// The first `chars` characters of `text`, marked when cut.
pub(super) fn clip(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

impl From<ExecutionError> for Refusal {
    fn from(e: ExecutionError) -> Self {
        Refusal::Execution(e)
    }
}

impl From<PayloadError> for Refusal {
    fn from(e: PayloadError) -> Self {
        Refusal::Payload(e)
    }
}

impl Refusal {
    /// The status answered on a route whose 503 is `unavailable` (ours to fix, worth
    /// retrying): a route whose caller may retry only a 429 answers that instead.
    pub fn answered(&self, unavailable: StatusCode) -> StatusCode {
        match self.status() {
            StatusCode::SERVICE_UNAVAILABLE => unavailable,
            status => status,
        }
    }

    /// The answer, with `status` ([`Refusal::answered`]): a 429 or 503 asks HubSpot to come
    /// back after `retry_after` (whose unit depends on who calls, see [`super::Route`]).
    pub fn into_response(self, status: StatusCode, retry_after: HeaderValue) -> Response {
        let body = json!({"status": "error", "reason": self.label(), "message": self.to_string()});
        let mut response = (status, axum::Json(body)).into_response();
        if matches!(
            status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        ) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, retry_after);
        }
        response
    }
}

/// Refused posts, counted and logged in one place. The log says why HubSpot got a 4xx to
/// whoever wires a workflow, but at most once a minute per webhook and reason (a
/// misconfigured workflow refuses every post).
#[derive(Default)]
pub struct RefusalLog(Mutex<HashMap<LogKey, Throttle>>);

/// (webhook id, reason label).
type LogKey = (String, &'static str);

impl RefusalLog {
    /// Count `refusal`, answered `status`, and log it (rate-limited) when it is worth a
    /// person's attention.
    pub fn record(&self, metrics: &Metrics, webhook: &str, refusal: &Refusal, status: StatusCode) {
        let reason = refusal.label();
        metrics.reject(reason);
        // Busy and store errors say nothing to fix in a workflow; a full set of unsigned
        // receipts does, to whoever tests with them.
        if !refusal.is_ours()
            && !refusal.status().is_client_error()
            && !matches!(refusal, Refusal::UnsignedFull | Refusal::Signature { .. })
        {
            return;
        }
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Keyed by config ids (strangers' are one key), but ids removed by reloads linger:
        // past the bound, only lines logged in the last minute are kept (clearing all let
        // every webhook's next refusal be logged again).
        if seen.len() >= 1024 {
            seen.retain(|_, t| t.recent());
            if seen.len() >= 1024 {
                seen.clear();
            }
        }
        let Some(suppressed) = seen.entry((webhook.to_string(), reason)).or_default().due() else {
            return;
        };
        if refusal.is_ours() {
            tracing::error!(
                webhook,
                reason,
                status = status.as_u16(),
                suppressed,
                "refused a post: {refusal}{}",
                refusal.detail()
            );
        } else {
            tracing::warn!(
                webhook,
                reason,
                status = status.as_u16(),
                suppressed,
                "refused a post: {refusal}{}",
                refusal.detail()
            );
        }
    }
}
