//! The stand-in's limits (HubSpot's rolling 10 seconds and the account's day) and the
//! failures it answers with: scripted ones first, then the limits, then random ones.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::time::Instant;

use super::{World, account_day, correlation_id, error, html};
use crate::hubspot::policy::TEN_SECONDS;
use crate::hubspot::{RateLimit, RatePolicy};

/// A failure to answer with instead of the normal response.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// 429 with HubSpot's body for `policy`, with `Retry-After` when given.
    RateLimited {
        policy: RatePolicy,
        retry_after: Option<Duration>,
    },
    /// Any status with HubSpot's error body (`{status, message, correlationId}`).
    Status { status: u16, message: String },
    /// [`Fault::Status`] without its content type, as a proxy that drops the header answers.
    Untyped { status: u16, message: String },
    /// 477 "Migration in Progress" (the account is moving between data hosting locations),
    /// with `Retry-After` when given, as HubSpot's error-handling guide describes it.
    Migrating { retry_after: Option<Duration> },
    /// Process normally, answer after this long.
    Slow(Duration),
    /// [`Fault::Status`] after this long, without processing: a gateway that gave up waiting.
    LateStatus { status: u16, after: Duration },
    /// Close the connection without answering (and without processing).
    Drop,
    /// An HTML page with this status, as an edge proxy (not HubSpot's API) answers.
    Html(u16),
    /// This status with an empty body and no content type, as a bare proxy or an ingress's
    /// deny answers.
    Empty(u16),
    /// Process normally, then answer an HTML page with this status: an edge that passed the
    /// request on and replaced HubSpot's answer.
    HtmlAfterProcessing(u16),
    /// 200 with this JSON body instead of the stand-in's own (a page of odd but real shape).
    Json(serde_json::Value),
}

/// HubSpot's error body with `status` (a 500 for a number that is no status).
fn status_error(status: u16, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error(status, message, None)
}

/// `Retry-After: d` on `resp`, in whole seconds (at least 1 for a wait that is not zero).
fn retry_after_header(resp: &mut Response, d: Option<Duration>) {
    if let Some(d) = d {
        let secs = d
            .as_secs_f64()
            .ceil()
            .max(if d.is_zero() { 0.0 } else { 1.0 });
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs as u64));
    }
}

/// A scripted fault: let `skip` matching requests through, then fail the next `times`.
#[derive(Debug, Clone, PartialEq)]
pub struct Injection {
    pub fault: Fault,
    pub skip: u64,
    pub times: u64,
    /// Only requests whose path starts with this count (e.g. `/email/`).
    pub path_prefix: Option<String>,
}

impl Injection {
    /// Fail the very next matching request once.
    pub fn next(fault: Fault) -> Injection {
        Injection {
            fault,
            skip: 0,
            times: 1,
            path_prefix: None,
        }
    }

    /// Fail `times` requests instead of one (`u64::MAX`: from then on).
    pub fn times(self, times: u64) -> Injection {
        Injection { times, ..self }
    }

    /// Let `skip` matching requests through first.
    pub fn after(self, skip: u64) -> Injection {
        Injection { skip, ..self }
    }

    /// Only requests whose path starts with `prefix`.
    pub fn on(self, prefix: &str) -> Injection {
        Injection {
            path_prefix: Some(prefix.to_string()),
            ..self
        }
    }
}

/// A scripted fault, with the matching requests it has seen and failed so far.
pub(super) struct Rule {
    pub(super) injection: Injection,
    pub(super) seen: u64,
    pub(super) applied: u64,
}

/// What the gate decided for one request.
pub(super) enum Gate {
    Answer(Response),
    Slow(Duration),
    SlowAnswer(Response, Duration),
    /// Process normally, answer this instead.
    Replaced(Response),
    Drop,
    Proceed,
}

impl World {
    /// The scripted fault for a request to `path`, if one applies; `named` counts only rules
    /// whose path prefix names it (the token endpoint, which other rules leave alone).
    pub(super) fn scripted(&mut self, path: &str, named: bool) -> Option<Fault> {
        for rule in &mut self.rules {
            let prefix = rule.injection.path_prefix.as_deref();
            if prefix.is_some_and(|p| !path.starts_with(p)) || (named && prefix.is_none()) {
                continue;
            }
            rule.seen += 1;
            if rule.seen > rule.injection.skip && rule.applied < rule.injection.times {
                rule.applied += 1;
                return Some(rule.injection.fault.clone());
            }
        }
        None
    }

    /// Scripted faults, then the limits, then random faults. A call with an `oauth` app's
    /// token has no daily limit, and is not in the daily usage (HubSpot: "there is no daily
    /// limit for these calls"; the stand-in applied one).
    pub(super) fn gate(&mut self, path: &str, oauth: bool) -> Gate {
        if let Some(fault) = self.scripted(path, false) {
            return self.fault(fault);
        }
        let now = Instant::now();
        while self.window.front().is_some_and(|t| now - *t >= TEN_SECONDS) {
            self.window.pop_front();
        }
        if self.window.len() >= self.options.limit_per_10s as usize {
            let retry_after = self.options.retry_after;
            return self.fault(Fault::RateLimited {
                policy: RatePolicy::TenSecondly,
                retry_after,
            });
        }
        let today = account_day(&self.options);
        if today > self.daily_day {
            self.daily_day = today;
            self.daily_used = 0;
        }
        // Account information answers when the allowance is spent (it is how a client learns
        // when it resets); it does not count toward it.
        let counted = !path.starts_with("/account-info/") && !oauth;
        if counted && self.daily_used >= self.options.daily_limit {
            return self.fault(Fault::RateLimited {
                policy: RatePolicy::Daily,
                retry_after: None,
            });
        }
        self.window.push_back(now);
        self.daily_used += u32::from(counted);
        // Each request's roll is a well-mixed hash of the seed and its arrival number: fastrand's
        // consecutive draws showed runs (one contact retried alone got 502 on every other
        // call), which real random faults do not.
        let roll = {
            let mut x = self
                .rng
                .u64(..)
                .wrapping_add(self.received.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            x ^= x >> 31;
            (x >> 11) as f64 / (1u64 << 53) as f64
        };
        let o = &self.options;
        if roll < o.drop_rate {
            Gate::Drop
        } else if roll < o.drop_rate + o.error_rate {
            self.fault(Fault::Status {
                status: 502,
                message: "Bad Gateway".into(),
            })
        } else if roll < o.drop_rate + o.error_rate + o.slow_rate {
            Gate::Slow(o.slow_by)
        } else {
            Gate::Proceed
        }
    }

    pub(super) fn fault(&self, fault: Fault) -> Gate {
        match fault {
            Fault::RateLimited {
                policy,
                retry_after,
            } => {
                let message = match policy {
                    RatePolicy::TenSecondly => format!(
                        "You have reached your ten_secondly_rolling limit. ({} requests per 10 s)",
                        self.options.limit_per_10s
                    ),
                    RatePolicy::Daily => "You have reached your daily limit.".to_string(),
                };
                let mut resp = (
                    StatusCode::TOO_MANY_REQUESTS,
                    axum::Json(json!({
                        "status": "error",
                        "message": message,
                        "errorType": "RATE_LIMIT",
                        "correlationId": correlation_id(),
                        "policyName": policy.as_str(),
                    })),
                )
                    .into_response();
                retry_after_header(&mut resp, retry_after);
                Gate::Answer(resp)
            }
            Fault::Migrating { retry_after } => {
                let status = StatusCode::from_u16(477).expect("a valid status code");
                let mut resp = error(status, "Migration in progress", None);
                retry_after_header(&mut resp, retry_after);
                Gate::Answer(resp)
            }
            Fault::Status { status, message } => Gate::Answer(status_error(status, &message)),
            Fault::Untyped { status, message } => {
                let mut resp = status_error(status, &message);
                resp.headers_mut().remove(header::CONTENT_TYPE);
                Gate::Answer(resp)
            }
            Fault::Slow(d) => Gate::Slow(d),
            Fault::LateStatus { status, after } => {
                let reason = StatusCode::from_u16(status).ok();
                let reason = reason.and_then(|s| s.canonical_reason()).unwrap_or("Error");
                Gate::SlowAnswer(status_error(status, reason), after)
            }
            Fault::Drop => Gate::Drop,
            Fault::Html(status) => Gate::Answer(html(
                StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN),
            )),
            Fault::Empty(status) => Gate::Answer(
                StatusCode::from_u16(status)
                    .unwrap_or(StatusCode::FORBIDDEN)
                    .into_response(),
            ),
            Fault::HtmlAfterProcessing(status) => {
                Gate::Replaced(html(StatusCode::from_u16(status).unwrap_or(StatusCode::OK)))
            }
            Fault::Json(body) => Gate::Answer((StatusCode::OK, axum::Json(body)).into_response()),
        }
    }

    pub(super) fn rate_headers(&self) -> RateLimit {
        let max = self.options.limit_per_10s;
        RateLimit {
            max: Some(max),
            remaining: Some(max.saturating_sub(self.window.len() as u32)),
            interval: Some(TEN_SECONDS),
            daily: Some(self.options.daily_limit),
            daily_remaining: Some(self.options.daily_limit.saturating_sub(self.daily_used)),
        }
    }
}
