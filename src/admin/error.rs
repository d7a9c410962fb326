//! Why the admin surface refuses a request, as the HTTP answer it becomes (a JSON body with a
//! stable `error` label and a message saying what to do).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "this admin surface needs `Authorization: Bearer <token>`, the token in server.admin_token_env"
    )]
    Unauthorized,
    #[error(
        "requests must name this machine in their Host header (loopback or the admin address); set server.admin_token_env to serve other names"
    )]
    ForeignHost,
    #[error(
        "requests passed on by a proxy (Forwarded, X-Forwarded-*, X-Real-IP or Via) need a token: set server.admin_token_env, or ask from this machine without the proxy"
    )]
    Proxied,
    #[error(
        "requests from other sites' pages are refused (Sec-Fetch-Site): open the dashboard itself"
    )]
    CrossSite,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    /// The state a request would change cannot be read (the pause file).
    #[error("{0}")]
    Conflict(String),
    /// A request the extractors refused (no JSON, too large, a missing parameter), with
    /// their status.
    #[error("{1}")]
    Unreadable(StatusCode, String),
    #[error("this path takes another method (GET for data, POST for /pause, /resume and /lift)")]
    MethodNotAllowed,
    #[error("{0}; try again")]
    Busy(&'static str),
    #[error("{0:#}")]
    Internal(anyhow::Error),
}

impl AdminError {
    /// A JSON body the extractor refused, with the body to send instead. Its words are cut
    /// short: serde's quote what was sent (a 2 MB string came back whole, an audit).
    pub fn unreadable(rejection: &axum::extract::rejection::JsonRejection, send: &str) -> Self {
        let said: String = rejection.body_text().chars().take(200).collect();
        AdminError::Unreadable(
            rejection.status(),
            format!("{said}; send {send} as application/json"),
        )
    }

    /// Stable, for scripts and the dashboard.
    pub fn label(&self) -> &'static str {
        match self {
            AdminError::Unauthorized => "unauthorized",
            AdminError::ForeignHost => "foreign_host",
            AdminError::Proxied => "proxied",
            AdminError::CrossSite => "cross_site",
            AdminError::NotFound(_) => "not_found",
            AdminError::BadRequest(_) => "bad_request",
            AdminError::Conflict(_) => "conflict",
            AdminError::Unreadable(status, _) => match status.as_u16() {
                408 => "timeout",
                413 => "too_large",
                415 => "not_json",
                422 => "unprocessable",
                _ => "bad_request",
            },
            AdminError::MethodNotAllowed => "method_not_allowed",
            AdminError::Busy(_) => "busy",
            AdminError::Internal(_) => "internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AdminError::Unauthorized => StatusCode::UNAUTHORIZED,
            AdminError::ForeignHost => StatusCode::MISDIRECTED_REQUEST,
            AdminError::Proxied | AdminError::CrossSite => StatusCode::FORBIDDEN,
            AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::Conflict(_) => StatusCode::CONFLICT,
            AdminError::Unreadable(status, _) => *status,
            AdminError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            AdminError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            AdminError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        if let AdminError::Internal(e) = &self {
            tracing::error!("admin request failed: {e:#}");
        }
        let mut response = (
            self.status(),
            axum::Json(json!({"error": self.label(), "message": self.to_string()})),
        )
            .into_response();
        // A busy answer's work (a report, a lookup) is seconds long.
        if matches!(self, AdminError::Busy(_)) {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("5"),
            );
        }
        if matches!(self, AdminError::Unauthorized) {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
