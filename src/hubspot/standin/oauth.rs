//! The stand-in's tokens: the account's static token, OAuth access tokens its token
//! endpoint issues from a refresh token, and the scopes each route needs.

use std::collections::HashMap;

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::time::Instant;

use super::{World, correlation_id, error};
use crate::hubspot::policy::TEN_SECONDS;
use crate::secret::same_secret;

impl World {
    /// Whether `bearer` may call: the account's static token, or an OAuth access token
    /// issued and not expired (and whether it is one); else HubSpot's 401.
    pub(super) fn authorize(&mut self, bearer: Option<&str>) -> (Result<(), Response>, bool) {
        let Some(token) = bearer else {
            return (Err(unauthenticated()), false);
        };
        if same_secret(token, &self.options.token) {
            return (Ok(()), false);
        }
        let now = Instant::now();
        match self.issued.iter().find(|(t, _)| same_secret(token, t)) {
            Some((_, until)) if *until > now => (Ok(()), true),
            Some((_, until)) => {
                let ago = now.duration_since(*until).as_secs();
                let message =
                    format!("The OAuth token used to make this call expired {ago} second(s) ago.");
                (
                    Err(error(
                        StatusCode::UNAUTHORIZED,
                        &message,
                        Some("EXPIRED_AUTHENTICATION"),
                    )),
                    true,
                )
            }
            None => (Err(unauthenticated()), false),
        }
    }

    /// `POST /oauth/2026-03/token` with a refresh token, form-encoded (`form`): a new access
    /// token (and, when the app rotates them, a new refresh token); HubSpot's 400 for anything
    /// it does not know.
    pub(super) fn token_endpoint(&mut self, form: bool, body: &[u8]) -> Response {
        let fields: HashMap<String, String> = String::from_utf8_lossy(body)
            .split('&')
            .filter_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                let decode = |s: &str| {
                    percent_encoding::percent_decode_str(&s.replace('+', " "))
                        .decode_utf8_lossy()
                        .into_owned()
                };
                Some((decode(k), decode(v)))
            })
            .collect();
        let field = |k: &str| fields.get(k).map(String::as_str);
        // The date-versioned endpoint's error body.
        let bad = |message: &str| {
            let body = json!({
                "message": message,
                "correlationId": correlation_id(),
                "category": "VALIDATION_ERROR",
            });
            (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
        };
        if !form {
            return bad("the body must be application/x-www-form-urlencoded");
        }
        let Some(app) = self.options.oauth.clone() else {
            return bad("no OAuth app is installed in this account");
        };
        let secret = |k: &str, held: &str| field(k).is_some_and(|given| same_secret(given, held));
        if field("grant_type") != Some("refresh_token")
            || field("client_id") != Some(app.client_id.as_str())
            || !secret("client_secret", &app.client_secret)
        {
            return bad("missing or unknown client id, client secret or grant type");
        }
        let refresh = self.refresh_token.clone();
        if !refresh.is_some_and(|held| secret("refresh_token", &held)) {
            return bad("missing or unknown refresh token");
        }
        let n = self.issued.len() + 1;
        let access = format!("oauth-access-{n}-{}", self.rng.u64(..));
        let now = Instant::now();
        self.issued.retain(|(_, until)| *until + TEN_SECONDS > now);
        self.issued.push((access.clone(), now + app.lifetime));
        if app.rotate {
            self.refresh_token = Some(format!("oauth-refresh-{n}-{}", self.rng.u64(..)));
        }
        let mut body = json!({
            "token_type": "bearer",
            "access_token": access,
            "refresh_token": self.refresh_token,
            "expires_in": app.lifetime.as_secs(),
        });
        if let (false, Some(body)) = (app.says_expires_in, body.as_object_mut()) {
            body.remove("expires_in");
        }
        (StatusCode::OK, axum::Json(body)).into_response()
    }
}

/// The scopes a route takes: any one of these sets, each whole (none: any token will do), as
/// HubSpot's OpenAPI specs give them (`security`). Adding to a list takes `crm.lists.read`
/// with either write scope (HubSpot-public-api-spec-collection, lists 2026-03); its reference
/// page flattens the sets into "one of the following scopes", which an earlier stand-in took
/// literally, so a read-only token passed here and was refused by HubSpot (an audit).
pub(super) fn required_scopes(
    method: &Method,
    segments: &[&str],
) -> &'static [&'static [&'static str]] {
    let get = *method == Method::GET;
    match segments {
        ["email", ..] => &[&["content"]],
        ["account-info", ..] => &[&["oauth"]],
        ["automation", ..] => &[&["automation"]],
        ["crm", "lists", ..] | ["crm", "v3", "lists", ..] if get => &[&["crm.lists.read"]],
        ["crm", "lists", ..] | ["crm", "v3", "lists", ..] => &[
            &["cms.membership.access_groups.write", "crm.lists.read"],
            &["crm.lists.read", "crm.lists.write"],
        ],
        ["crm", "objects", ..] | ["crm", "v3", "objects", ..] if get => {
            &[&["crm.objects.contacts.read"]]
        }
        ["crm", "objects", ..] | ["crm", "v3", "objects", ..] => &[&["crm.objects.contacts.write"]],
        _ => &[],
    }
}

/// Whether `granted` holds one of the `required` sets whole.
pub(super) fn granted_one_of(required: &[&[&str]], granted: &[String]) -> bool {
    (required.iter()).any(|set| set.iter().all(|s| granted.iter().any(|g| g == s)))
}

/// Every scope `required` names, once each, in order.
pub(super) fn named(required: &[&[&'static str]]) -> Vec<&'static str> {
    let mut scopes: Vec<&str> = required
        .iter()
        .flat_map(|set| set.iter().copied())
        .collect();
    scopes.sort_unstable();
    scopes.dedup();
    scopes
}

/// HubSpot's 403 for a token without a scope the call needs, naming every scope it needs.
pub(super) fn missing_scope(scopes: &[&str]) -> Response {
    let body = json!({
        "status": "error",
        "message": "This app hasn't been granted all required scopes to make this call. Read more about required scopes here: https://developers.hubspot.com/scopes.",
        "correlationId": correlation_id(),
        "errors": [{
            "message": "One or more of the following scopes are required.",
            "context": {"requiredGranularScopes": scopes},
        }],
        "links": {"scopes": "https://developers.hubspot.com/scopes"},
        "category": "MISSING_SCOPES",
    });
    (StatusCode::FORBIDDEN, axum::Json(body)).into_response()
}

/// HubSpot's older 403 for a token without a scope, as its older (v1, v2) routes give it:
/// naming the token it was sent (quoted in HubSpot/hubspot-cli#380, the token masked by the
/// reporter; estuary/connectors#3522, 2025). HubSpot documents neither form route by route.
pub(super) fn legacy_missing_scope(token: &str, scopes: &[&str]) -> Response {
    let body = json!({
        "status": "error",
        "message": format!(
            "This oauth-token ({token}) does not have proper permissions! (requires any of [{}])",
            scopes.join(", ")
        ),
        "correlationId": correlation_id(),
    });
    (StatusCode::FORBIDDEN, axum::Json(body)).into_response()
}

/// HubSpot's 401 for a missing or unknown token.
pub(super) fn unauthenticated() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "Authentication credentials not found. This API supports OAuth 2.0 authentication \
         and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
        Some("INVALID_AUTHENTICATION"),
    )
}
