//! HubSpot's failures, sorted by what the caller should do about them ([`ApiError`]), and
//! how a failed answer is read into one (`classify`): the importer and the dispatcher
//! decide on these, never on raw status codes.

use std::fmt;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};

use super::limiter::RateLimit;
use super::policy;

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

/// The scopes of HubSpot's older 403 for a missing scope, still given on its older routes:
/// `This oauth-token (…) does not have proper permissions! (requires any of [automation])`
/// (quoted in HubSpot/hubspot-cli#380; estuary/connectors#3522, 2025). A missing scope, not a
/// refused token: taken for one, it paused every call of the connector (an audit). The token
/// it names is cut out with the rest of what the call sent ([`classify`]).
fn older_missing_scopes(message: &str) -> Option<Vec<String>> {
    let (_, tail) = message.split_once(" does not have proper permissions")?;
    let list =
        (tail.split_once('[').and_then(|(_, s)| s.split_once(']'))).map_or("", |(list, _)| list);
    Some(
        (list.split(',').map(str::trim))
            .filter(|s| !s.is_empty())
            .take(8)
            .map(|s| s.chars().take(100).collect())
            .collect(),
    )
}

/// `text` with each of `secrets` cut out, as written and as `encoding` percent-encodes it
/// (each spelling of 8 characters or more: a shorter one would cut ordinary words).
pub(super) fn redacted<'s>(
    mut text: String,
    secrets: impl IntoIterator<Item = &'s str>,
    encoding: &'static percent_encoding::AsciiSet,
) -> String {
    for secret in secrets {
        let encoded = percent_encoding::utf8_percent_encode(secret, encoding).to_string();
        for spelling in [secret, encoded.as_str()] {
            if spelling.len() >= 8 {
                text = text.replace(spelling, "<redacted>");
            }
        }
    }
    text
}

/// Whether an answer is an HTML page (an edge's, a proxy's, a website's): HubSpot's API
/// answers JSON, or nothing where it has nothing to say.
pub(super) fn is_html(headers: &HeaderMap) -> bool {
    headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/html"))
}

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

/// A 2xx whose body we cannot read: the call reached HubSpot, so a retry may repeat it.
pub(super) fn bad_body(e: &serde_json::Error) -> ApiError {
    ApiError::Transient {
        status: None,
        may_have_reached: true,
        // Clipped: serde quotes what it could not read, which may be megabytes, and the
        // message goes into every row of a batch, logs and `/status` (an audit).
        message: format!(
            "unexpected response body from HubSpot: {}",
            e.to_string()
                .chars()
                .take(MESSAGE_CHARS)
                .collect::<String>()
        ),
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
///
/// `sent`: the credentials the call was made with, cut from whatever the answer says (HubSpot's
/// older refusals name the token; the text goes to logs, `/status` and outcome rows).
pub(super) async fn classify(
    resp: reqwest::Response,
    batch: Option<usize>,
    sent: &[String],
) -> ApiError {
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
    // As sent, and as a query encodes it (an edge's page may echo the URL).
    let text = redacted(
        String::from_utf8_lossy(&bytes).into_owned(),
        sent.iter().map(String::as_str),
        percent_encoding::NON_ALPHANUMERIC,
    );
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
    if status == StatusCode::FORBIDDEN
        && let Some(scopes) = (body.category.as_deref() == Some("MISSING_SCOPES"))
            .then(|| body.missing_scopes())
            .or_else(|| older_missing_scopes(body.message.as_deref()?))
    {
        return ApiError::MissingScopes { scopes, message };
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

    /// HubSpot's older refusal is a missing scope, its scopes read from the brackets.
    #[test]
    fn an_older_scope_refusal_names_its_scopes() {
        assert_eq!(
            older_missing_scopes(
                "This hapikey (<redacted>) does not have proper permissions! (requires any of [content-editor-access, content-access])"
            ),
            Some(vec![
                "content-editor-access".into(),
                "content-access".into()
            ])
        );
        assert_eq!(
            older_missing_scopes("This oauth-token does not have proper permissions!"),
            Some(vec![])
        );
        assert_eq!(
            older_missing_scopes("This app hasn't been granted all required scopes"),
            None
        );
    }

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
}
