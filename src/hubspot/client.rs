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
use serde::Deserialize;

use super::auth::Auth;
use super::error::{ApiError, RatePolicy, bad_body, classify, is_html, read_at_most, transport};
use super::limiter::{Lane, Limiter, RateLimit};
use super::paths;
use super::policy;
use super::wire::{Completion, EventsPage, EventsQuery, ListAddResult, MAX_EVENTS_PAGE, Workflow};
use crate::config::Connector;

pub use super::paths::CALLBACKS_COMPLETE;

/// Whether `url`'s host is this machine's loopback (`localhost` or a loopback address).
pub fn is_loopback(url: &Url) -> bool {
    url.host_str().is_some_and(|host| {
        host.eq_ignore_ascii_case("localhost")
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.to_canonical().is_loopback())
    })
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
        json_body(resp, AnswerKind::Other).await
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
        // A call made with the developer API key: its 401 refuses the key, not the token
        // (withdrawn, a good token was refreshed and the call made again: an audit).
        let key = (url.query_pairs())
            .find(|(k, _)| k == "hapikey")
            .map(|(_, v)| v.into_owned());
        let mut sent: Vec<String> = key.iter().cloned().chain([token.to_string()]).collect();
        if resp.status() == StatusCode::UNAUTHORIZED && self.auth.refreshes() && key.is_none() {
            // Only HubSpot's 401 is a word on the token, as `classify` reads it (its JSON body,
            // whatever the content type says): refreshing for an edge's (a page, a bare 401)
            // would mint a token per call while the edge answers so; not refreshing for
            // HubSpot's paused the connector.
            self.observe(resp.headers());
            let refused = classify(resp, batch, &sent).await;
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
            sent.push(fresh.to_string());
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
        let error = classify(resp, batch, &sent).await;
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
        let page: EventsPage = json_body(resp, AnswerKind::EventsPage).await?;
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
        Ok(match json_body(resp, AnswerKind::Other).await? {
            Answer::Many(all) => all,
            Answer::One(one) => vec![one],
        })
    }

    /// `GET path`: HubSpot's JSON answer.
    pub async fn get_json(self, path: &str) -> Result<serde_json::Value, ApiError> {
        let url = self.client.url(path);
        let resp = self.send(Method::GET, url, None, None).await?;
        json_body(resp, AnswerKind::Other).await
    }

    /// A legacy workflow's name and whether it is on (none: not said). Its definition, every
    /// action and branch, may be large: read up to an events page's bound, into these two
    /// fields alone.
    pub async fn workflow(self, id: u64) -> Result<(Option<String>, Option<bool>), ApiError> {
        let url = self.client.url(&paths::workflow(id));
        let resp = self.send(Method::GET, url, None, None).await?;
        // A field of another type counts as absent, as it did read as a JSON value.
        #[derive(Deserialize)]
        struct Workflow {
            #[serde(default, deserialize_with = "crate::lenient::or_default")]
            name: Option<String>,
            #[serde(default, deserialize_with = "crate::lenient::or_default")]
            enabled: Option<bool>,
        }
        let w: Workflow = json_body(resp, AnswerKind::Workflow).await?;
        Ok((w.name, w.enabled))
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
        let contact: Contact = json_body(resp, AnswerKind::Other).await?;
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
        let bytes = answer_body(resp, AnswerKind::ListAdd).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(ListAddResult::default());
        }
        serde_json::from_slice(&bytes).map_err(|e| bad_body(&e))
    }
}

/// The most of a successful answer read, by what was asked: a page of 1,000 email events is a
/// few MB, a list add's ids at most 100,000, anything else (a workflow, a contact, the daily
/// usage) far less. Parsed into JSON values, an answer takes many times its size: every answer
/// was read up to the events' bound (an audit).
#[derive(Debug, Clone, Copy)]
enum AnswerKind {
    EventsPage,
    /// A workflow's whole definition, read into two fields.
    Workflow,
    ListAdd,
    Other,
}

impl AnswerKind {
    fn max_bytes(self) -> usize {
        match self {
            AnswerKind::EventsPage | AnswerKind::Workflow => 32 << 20,
            AnswerKind::ListAdd => 8 << 20,
            AnswerKind::Other => 2 << 20,
        }
    }
}

/// A 2xx answer's body, refused when larger than any HubSpot answer of its kind.
async fn answer_body(resp: reqwest::Response, kind: AnswerKind) -> Result<Vec<u8>, ApiError> {
    let max = kind.max_bytes();
    match read_at_most(resp, max).await.map_err(transport)? {
        (_, true) => Err(ApiError::Transient {
            status: None,
            may_have_reached: true,
            message: format!(
                "HubSpot's answer is larger than {} MB: not an answer this client expects",
                max >> 20
            ),
        }),
        (bytes, false) => Ok(bytes),
    }
}

async fn json_body<T: serde::de::DeserializeOwned>(
    resp: reqwest::Response,
    kind: AnswerKind,
) -> Result<T, ApiError> {
    let bytes = answer_body(resp, kind).await?;
    serde_json::from_slice(&bytes).map_err(|e| bad_body(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

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
