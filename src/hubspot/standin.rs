//! A local HubSpot stand-in: the four API calls sendtime makes, with HubSpot's request and
//! response shapes, its bearer-token check, its rolling 10-second and daily limits (429 with
//! HubSpot's body and the `X-HubSpot-RateLimit-*` headers on every answer; the daily count
//! resets at midnight in the account's time zone, as HubSpot's does), and the failures a real
//! run meets (5xx, slow answers, dropped connections, batches that are too large).
//!
//! Tests, the dispatcher's tests and benchmarks run the real [`Client`](super::Client)
//! against it over real HTTP, so what is tested is what runs against HubSpot. Every request is
//! logged ([`StandIn::log`]) so tests can check what was called and when. It is also exposed
//! as the hidden `sendtime hubspot-standin` subcommand for trying things by hand.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use percent_encoding::percent_decode_str;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tower::ServiceExt;

use super::auth::TOKEN_PATH;
use super::client::{EmailEvent, RateLimit, RatePolicy};
use super::policy::TEN_SECONDS;
use crate::clock::Clock;
use crate::time::{DAY_MS, HOUR_MS, MINUTE_MS};

/// The token the stand-in accepts unless told otherwise.
pub const DEFAULT_TOKEN: &str = "standin-token";
/// HubSpot's default and largest events page.
const DEFAULT_EVENTS_LIMIT: usize = 100;
const MAX_EVENTS_LIMIT: usize = 1000;
/// The account's portal id unless told otherwise.
pub const DEFAULT_PORTAL_ID: u64 = 62515;

/// How the stand-in behaves. `Default` is a well-behaved Professional account (190 calls per
/// 10 s, 625,000 a day: HubSpot's usage guidelines).
#[derive(Debug, Clone)]
pub struct Options {
    /// The bearer token that is accepted; anything else gets HubSpot's 401.
    pub token: String,
    /// Requests allowed in any rolling 10 seconds before 429 `TEN_SECONDLY_ROLLING`.
    pub limit_per_10s: u32,
    /// Requests allowed per day before 429 `DAILY`. The day is the account's: the count
    /// resets at midnight at `utc_offset_minutes`, by `clock`.
    pub daily_limit: u32,
    /// The account's time zone, as minutes east of UTC (HubSpot resets daily limits at
    /// midnight in the account's time zone; a fixed offset, no daylight saving).
    pub utc_offset_minutes: i32,
    /// The account's portal id, as its account details and workflows name it.
    pub portal_id: u64,
    /// The stand-in's "now" for the daily reset, so a test can move it together with the
    /// dispatcher's (e.g. the same clock file). The 10-second window always uses real time,
    /// like the dispatcher's limiter.
    pub clock: Clock,
    /// `Retry-After` sent with ten-secondly 429s (HubSpot often sends none).
    pub retry_after: Option<Duration>,
    /// Fraction of requests answered 502 at random.
    pub error_rate: f64,
    /// Fraction of requests answered only after `slow_by` (processed first, like a real
    /// server that is slow to answer).
    pub slow_rate: f64,
    pub slow_by: Duration,
    /// Fraction of requests whose connection is closed without an answer (not processed).
    pub drop_rate: f64,
    /// List adds with more record ids than this get a 400 "too large".
    pub max_list_batch: Option<usize>,
    /// Email events served by the events API (any order; served newest first).
    pub events: Vec<EmailEvent>,
    /// Workflows that exist; empty means every id exists.
    pub workflows: Vec<u64>,
    /// Seed for the random faults, so a failing run can be repeated.
    pub seed: u64,
    /// An installed OAuth app: the token endpoint issues access tokens for it.
    pub oauth: Option<OAuthApp>,
    /// Lists that exist and how they are processed; empty means every numeric list id is a
    /// MANUAL contact list.
    pub lists: Vec<(String, ListKind)>,
    /// The scopes the token was granted; `None` means every scope. A call that needs another
    /// gets HubSpot's `MISSING_SCOPES` 403.
    pub scopes: Option<Vec<String>>,
    /// The workflow editor's flow ids and the legacy workflow id each maps to.
    pub flow_ids: Vec<(u64, u64)>,
    /// Whether the account's daily usage endpoint answers (it tells when the daily limit
    /// resets); when not, it is an HTML 404.
    pub usage_api: bool,
    /// The developer API key that lists the app's action definitions, and the action URLs
    /// registered for the app.
    pub developer_api_key: String,
    pub action_urls: Vec<String>,
    /// Only the contacts added with [`StandIn::add_contact`] exist, as in an account: a list
    /// add ignores any other record id and names it in `recordIdsMissing`, as HubSpot does.
    /// Off, every numeric id exists.
    pub known_records_only: bool,
    /// A callback it was never told of ([`StandIn::add_callback`], [`StandIn::answered`]) is
    /// taken as blocked, as when HubSpot's workflow executed the action: the standalone
    /// stand-in learns of no execution, so it refused every completion. Off (the tests'), it
    /// is not found.
    pub any_callback: bool,
    /// How long after an enrollment its workflow ends (it sent its email and has no delay
    /// step): HubSpot's enrollments endpoint lists only current enrollments, so it no longer
    /// names it. `None`: workflows never end.
    pub workflows_end_after: Option<Duration>,
}

/// How a list's membership is kept (HubSpot's `processingType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Manual,
    Snapshot,
    /// Filter-based: HubSpot refuses manual membership changes.
    Dynamic,
}

impl ListKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ListKind::Manual => "MANUAL",
            ListKind::Snapshot => "SNAPSHOT",
            ListKind::Dynamic => "DYNAMIC",
        }
    }
}

/// An OAuth app installed in the account, as HubSpot's token endpoint knows it.
#[derive(Debug, Clone)]
pub struct OAuthApp {
    pub client_id: String,
    pub client_secret: String,
    /// The refresh token the installation gave.
    pub refresh_token: String,
    /// How long an access token works (HubSpot: 30 minutes; shortened in tests).
    pub lifetime: Duration,
    /// Hand out a new refresh token with each refresh; the old one stops working.
    pub rotate: bool,
    /// Say `lifetime` in the answer's `expires_in`, as HubSpot does (off: a client must not
    /// depend on it).
    pub says_expires_in: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            token: DEFAULT_TOKEN.to_string(),
            limit_per_10s: 190,
            daily_limit: 625_000,
            utc_offset_minutes: 0,
            portal_id: DEFAULT_PORTAL_ID,
            clock: Clock::System,
            retry_after: None,
            error_rate: 0.0,
            slow_rate: 0.0,
            slow_by: Duration::from_secs(2),
            drop_rate: 0.0,
            max_list_batch: None,
            events: Vec::new(),
            workflows: Vec::new(),
            seed: 1,
            oauth: None,
            lists: Vec::new(),
            scopes: None,
            flow_ids: Vec::new(),
            usage_api: true,
            developer_api_key: "developer-api-key".to_string(),
            action_urls: Vec::new(),
            known_records_only: false,
            any_callback: false,
            workflows_end_after: None,
        }
    }
}

/// A workflow for [`StandIn::play_workflow`] to play.
#[derive(Debug, Clone)]
pub struct WorkflowRun<'a> {
    /// The action's URL as HubSpot knows it (signatures cover it).
    pub action_url: &'a str,
    /// Where to post (the local address of the same endpoint).
    pub send_to: &'a str,
    /// The app's client secret that signs executions.
    pub client_secret: &'a str,
    pub portal_id: u64,
    pub workflow_id: u64,
    /// The delivery type chosen in the workflow editor.
    pub delivery_type: &'a str,
}

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
    /// Process normally, answer after this long.
    Slow(Duration),
    /// Close the connection without answering (and without processing).
    Drop,
    /// An HTML page with this status, as an edge proxy (not HubSpot's API) answers.
    Html(u16),
    /// 200 with this JSON body instead of the stand-in's own (a page of odd but real shape).
    Json(serde_json::Value),
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

/// One request the stand-in received.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    /// Arrival order, from 0.
    pub seq: u64,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub at: SystemTime,
    /// The status answered; `None` when the connection was dropped instead.
    pub status: Option<u16>,
}

struct Rule {
    injection: Injection,
    seen: u64,
    applied: u64,
}

/// Everything the stand-in remembers.
struct World {
    options: Options,
    /// Events sorted newest first.
    events: Vec<EmailEvent>,
    window: VecDeque<Instant>,
    daily_used: u32,
    /// The account's day (days since 1970-01-01 in its time zone) `daily_used` counts.
    daily_day: i64,
    rules: Vec<Rule>,
    rng: fastrand::Rng,
    vids: HashMap<String, u64>,
    enrollments: HashMap<u64, BTreeSet<u64>>,
    /// (contact, workflow) → when it was last enrolled, for [`Options::workflows_end_after`].
    enrolled_at: HashMap<(u64, u64), std::time::Instant>,
    lists: HashMap<String, BTreeSet<String>>,
    /// Workflow-action callbacks HubSpot holds, by id.
    callbacks: HashMap<String, Callback>,
    /// OAuth access tokens issued and when each stops working.
    issued: Vec<(String, Instant)>,
    /// The refresh token that works now (rotated when the app says so).
    refresh_token: Option<String>,
    /// The latest requests ([`LOG_LIMIT`] at most: a demo runs for hours).
    log: Vec<LogEntry>,
    /// Requests received, ever: the next one's `seq`.
    received: u64,
}

/// Requests the log keeps; past it, the older half is let go.
const LOG_LIMIT: usize = 1_000_000;

impl World {
    /// Log a request: its `seq` is its place among all received.
    fn record(
        &mut self,
        method: &Method,
        path: String,
        query: Option<String>,
        at: SystemTime,
        status: Option<u16>,
    ) {
        if self.log.len() >= LOG_LIMIT {
            self.log.drain(..LOG_LIMIT / 2);
        }
        self.log.push(LogEntry {
            seq: self.received,
            method: method.to_string(),
            path,
            query,
            at,
            status,
        });
        self.received += 1;
    }
}

type Shared = Arc<Mutex<World>>;

/// Inserted into each request so a handler can drop its connection.
#[derive(Clone)]
struct Killer(Arc<Notify>);

/// A running stand-in. Stops when dropped.
pub struct StandIn {
    addr: SocketAddr,
    world: Shared,
    shutdown: Option<oneshot::Sender<()>>,
}

impl StandIn {
    /// Start on an ephemeral port of 127.0.0.1.
    pub async fn start(options: Options) -> std::io::Result<StandIn> {
        StandIn::bind("127.0.0.1:0".parse().expect("valid address"), options).await
    }

    /// Start on `addr`.
    pub async fn bind(addr: SocketAddr, options: Options) -> std::io::Result<StandIn> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let mut events = options.events.clone();
        events.sort_by(|a, b| (b.created, &b.id).cmp(&(a.created, &a.id)));
        let daily_day = account_day(&options);
        let options_refresh = options.oauth.as_ref().map(|o| o.refresh_token.clone());
        let world = Arc::new(Mutex::new(World {
            rng: fastrand::Rng::with_seed(options.seed),
            options,
            events,
            daily_day,
            window: VecDeque::new(),
            daily_used: 0,
            rules: Vec::new(),
            vids: HashMap::new(),
            enrollments: HashMap::new(),
            enrolled_at: HashMap::new(),
            lists: HashMap::new(),
            callbacks: HashMap::new(),
            issued: Vec::new(),
            refresh_token: options_refresh,
            log: Vec::new(),
            received: 0,
        }));
        let router = axum::Router::new()
            .fallback(handle)
            .with_state(world.clone());
        let (tx, mut rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = &mut rx => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                };
                let router = router.clone();
                tokio::spawn(serve_connection(stream, router));
            }
        });
        Ok(StandIn {
            addr,
            world,
            shutdown: Some(tx),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL to put in a connector's `api_base`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far (the latest million), in arrival order.
    pub fn log(&self) -> Vec<LogEntry> {
        self.world.lock().unwrap().log.clone()
    }

    /// Add a scripted fault (rules are tried in the order added).
    pub fn inject(&self, injection: Injection) {
        self.world.lock().unwrap().rules.push(Rule {
            injection,
            seen: 0,
            applied: 0,
        });
    }

    /// Remove all scripted faults.
    pub fn clear_faults(&self) {
        self.world.lock().unwrap().rules.clear();
    }

    /// Change the rolling 10-second limit while running.
    pub fn set_limit_per_10s(&self, limit: u32) {
        self.world.lock().unwrap().options.limit_per_10s = limit;
    }

    /// Change the random fault rates while running.
    pub fn set_fault_rates(&self, error_rate: f64, slow_rate: f64, drop_rate: f64) {
        let mut w = self.world.lock().unwrap();
        w.options.error_rate = error_rate;
        w.options.slow_rate = slow_rate;
        w.options.drop_rate = drop_rate;
    }

    /// The contact id the stand-in gave `email` when it was first enrolled.
    pub fn vid_of(&self, email: &str) -> Option<u64> {
        self.world
            .lock()
            .unwrap()
            .vids
            .get(&email.to_ascii_lowercase())
            .copied()
    }

    /// Make `email` a contact with HubSpot id `vid`, as a real account knows its contacts
    /// before anything is enrolled (so the enrollments read by id finds what was enrolled by
    /// email).
    pub fn add_contact(&self, email: &str, vid: u64) {
        self.world
            .lock()
            .unwrap()
            .vids
            .insert(email.to_ascii_lowercase(), vid);
    }

    /// Workflows `email` has been enrolled in.
    pub fn enrollments_of(&self, email: &str) -> Vec<u64> {
        let w = self.world.lock().unwrap();
        w.vids
            .get(&email.to_ascii_lowercase())
            .and_then(|vid| w.enrollments.get(vid))
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Record ids in list `list_id`.
    pub fn list_members(&self, list_id: &str) -> Vec<String> {
        let w = self.world.lock().unwrap();
        w.lists
            .get(list_id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// A workflow execution HubSpot is holding (blocked) under `callback_id`, until
    /// [`StandIn::answered`] says for how long.
    pub fn add_callback(&self, callback_id: &str) {
        self.world.lock().unwrap().callbacks.insert(
            callback_id.to_string(),
            Callback::Blocked {
                expires_at_ms: None,
            },
        );
    }

    /// What HubSpot does with an execution's `answer`: `BLOCK` holds `callback_id` for its
    /// `hs_expiration_duration` (a week without one) from now, by the stand-in's clock; after
    /// that it cannot be completed (the contact moved on). Any other answer lets the contact
    /// go on at once: a callback still blocked is no longer held. A callback completed
    /// meanwhile stays completed. Panics on a duration it cannot read (a test's failure).
    pub fn answered(&self, callback_id: &str, answer: &serde_json::Value) {
        let fields = &answer["outputFields"];
        let mut world = self.world.lock().unwrap();
        if fields["hs_execution_state"] != "BLOCK" {
            if let Some(Callback::Blocked { .. }) = world.callbacks.get(callback_id) {
                world.callbacks.remove(callback_id);
            }
            return;
        }
        let hold = match fields["hs_expiration_duration"].as_str() {
            None => 7 * DAY_MS,
            Some(d) => iso_duration_ms(d)
                .unwrap_or_else(|| panic!("hs_expiration_duration {d:?} is not a duration")),
        };
        let now = world.options.clock.now_ms();
        let callback =
            world
                .callbacks
                .entry(callback_id.to_string())
                .or_insert(Callback::Blocked {
                    expires_at_ms: None,
                });
        if let Callback::Blocked { expires_at_ms } = callback {
            *expires_at_ms = Some(now.saturating_add(hold));
        }
    }

    /// The output fields `callback_id` was completed with; `None` while it is blocked, once
    /// it expired, or unknown.
    pub fn completion(&self, callback_id: &str) -> Option<serde_json::Value> {
        match self.world.lock().unwrap().callbacks.get(callback_id) {
            Some(Callback::Completed(fields)) => Some(fields.clone()),
            _ => None,
        }
    }

    /// Play a workflow that reaches a custom action: post a signed (v2) execution of the
    /// action at `action_url` (as `public_url` names it; sent to `send_to`) for each contact,
    /// holding its callback as HubSpot does. Returns each contact's callback id and the answer.
    pub async fn play_workflow(
        &self,
        execution: &WorkflowRun<'_>,
        contacts: &[(u64, &str)],
    ) -> anyhow::Result<Vec<(String, serde_json::Value)>> {
        // The action's URL is sendtime on this machine: no proxy from the environment.
        let http = reqwest::Client::builder().no_proxy().build()?;
        let mut out = Vec::with_capacity(contacts.len());
        for (vid, email) in contacts {
            let callback = format!(
                "ap-{}-{}-{vid}-0",
                execution.portal_id, execution.workflow_id
            );
            self.add_callback(&callback);
            let body = json!({
                "callbackId": callback,
                "origin": {"portalId": execution.portal_id, "actionDefinitionId": 1, "actionDefinitionVersion": 1},
                "context": {"source": "WORKFLOWS", "workflowId": execution.workflow_id},
                "object": {"objectId": vid, "objectType": "CONTACT", "properties": {"email": email}},
                "inputFields": {"delivery_type": execution.delivery_type},
            })
            .to_string();
            let signature = crate::receiver::signature::sign_v2(
                execution.client_secret.as_bytes(),
                "POST",
                execution.action_url,
                body.as_bytes(),
            );
            let answer: serde_json::Value = http
                .post(execution.send_to)
                .header("X-HubSpot-Signature", signature)
                .header("X-HubSpot-Signature-Version", "v2")
                .header(header::CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            self.answered(&callback, &answer);
            out.push((callback, answer));
        }
        Ok(out)
    }

    /// Stop accepting connections.
    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Serve one connection with hyper directly (not `axum::serve`) so a handler can close it
/// without answering, the way a crashed proxy or a reset does.
async fn serve_connection(stream: tokio::net::TcpStream, router: axum::Router) {
    let kill = Arc::new(Notify::new());
    let k = kill.clone();
    let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(Killer(k.clone()));
        router.clone().oneshot(req.map(Body::new))
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = conn => {}
        _ = kill.notified() => {}
    }
}

/// What the gate decided for one request.
enum Gate {
    Answer(Response),
    Slow(Duration),
    SlowAnswer(Response, Duration),
    Drop,
    Proceed,
}

async fn handle(State(world): State<Shared>, req: Request) -> Result<Response, Infallible> {
    let received = SystemTime::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let killer = req.extensions().get::<Killer>().cloned();
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    let uri = req.uri().clone();
    let form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let body = axum::body::to_bytes(req.into_body(), 64 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let (outcome, rate) = if method == Method::POST && path == TOKEN_PATH {
        // Outside the API's limits; only faults scripted for its path reach it.
        let mut w = world.lock().unwrap();
        let outcome = match w.scripted(&path, true).map(|f| w.fault(f)) {
            None => Gate::Answer(w.token_endpoint(form, &body)),
            Some(Gate::Slow(d)) => Gate::SlowAnswer(w.token_endpoint(form, &body), d),
            Some(other) => other,
        };
        let status = match &outcome {
            Gate::Answer(r) | Gate::SlowAnswer(r, _) => Some(r.status().as_u16()),
            _ => None,
        };
        w.record(&method, path, query, received, status);
        (outcome, RateLimit::default())
    } else {
        let (authorized, oauth) = world.lock().unwrap().authorize(bearer.as_deref());
        let mut w = world.lock().unwrap();
        // A refused call counts toward the limits too, as at HubSpot.
        let gate = match (authorized, w.gate(&path)) {
            (Ok(()), gate) => gate,
            (Err(refusal), Gate::Proceed) => Gate::Answer(refusal),
            (Err(_), limited) => limited,
        };
        let outcome = match gate {
            Gate::Proceed => Gate::Answer(w.route(&method, &path, &uri, &body)),
            // Processed now, answered late: like a server that did the work but is slow to say so.
            Gate::Slow(d) => Gate::SlowAnswer(w.route(&method, &path, &uri, &body), d),
            other => other,
        };
        let status = match &outcome {
            Gate::Answer(r) | Gate::SlowAnswer(r, _) => Some(r.status().as_u16()),
            _ => None,
        };
        w.record(&method, path, query, received, status);
        let mut rate = w.rate_headers();
        if oauth {
            // HubSpot sends no daily-limit headers to OAuth apps.
            (rate.daily, rate.daily_remaining) = (None, None);
        }
        (outcome, rate)
    };
    match outcome {
        Gate::Answer(resp) => Ok(with_rate(resp, rate)),
        Gate::SlowAnswer(resp, d) => {
            tokio::time::sleep(d).await;
            Ok(with_rate(resp, rate))
        }
        Gate::Slow(_) | Gate::Drop | Gate::Proceed => {
            if let Some(Killer(k)) = killer {
                k.notify_one();
            }
            std::future::pending().await
        }
    }
}

impl World {
    /// Whether `bearer` may call: the account's static token, or an OAuth access token
    /// issued and not expired (and whether it is one); else HubSpot's 401.
    fn authorize(&mut self, bearer: Option<&str>) -> (Result<(), Response>, bool) {
        let Some(token) = bearer else {
            return (Err(unauthenticated()), false);
        };
        if token == self.options.token {
            return (Ok(()), false);
        }
        let now = Instant::now();
        match self.issued.iter().find(|(t, _)| t == token) {
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
    fn token_endpoint(&mut self, form: bool, body: &[u8]) -> Response {
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
        if field("grant_type") != Some("refresh_token")
            || field("client_id") != Some(app.client_id.as_str())
            || field("client_secret") != Some(app.client_secret.as_str())
        {
            return bad("missing or unknown client id, client secret or grant type");
        }
        if field("refresh_token") != self.refresh_token.as_deref() {
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

    /// The scripted fault for a request to `path`, if one applies; `named` counts only rules
    /// whose path prefix names it (the token endpoint, which other rules leave alone).
    fn scripted(&mut self, path: &str, named: bool) -> Option<Fault> {
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

    /// Scripted faults, then the limits, then random faults.
    fn gate(&mut self, path: &str) -> Gate {
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
        let counted = !path.starts_with("/account-info/");
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

    fn fault(&self, fault: Fault) -> Gate {
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
                if let Some(d) = retry_after {
                    let secs = d
                        .as_secs_f64()
                        .ceil()
                        .max(if d.is_zero() { 0.0 } else { 1.0 });
                    resp.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(secs as u64));
                }
                Gate::Answer(resp)
            }
            Fault::Status { status, message } => Gate::Answer(error(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                &message,
                None,
            )),
            Fault::Slow(d) => Gate::Slow(d),
            Fault::Drop => Gate::Drop,
            Fault::Html(status) => Gate::Answer(html(
                StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN),
            )),
            Fault::Json(body) => Gate::Answer((StatusCode::OK, axum::Json(body)).into_response()),
        }
    }

    fn rate_headers(&self) -> RateLimit {
        let max = self.options.limit_per_10s;
        RateLimit {
            max: Some(max),
            remaining: Some(max.saturating_sub(self.window.len() as u32)),
            interval: Some(TEN_SECONDS),
            daily: Some(self.options.daily_limit),
            daily_remaining: Some(self.options.daily_limit.saturating_sub(self.daily_used)),
        }
    }

    fn route(
        &mut self,
        method: &Method,
        path: &str,
        uri: &axum::http::Uri,
        body: &[u8],
    ) -> Response {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        if let Some(scope) = required_scope(method, &segments)
            && self
                .options
                .scopes
                .as_ref()
                .is_some_and(|granted| !granted.iter().any(|g| g == scope))
        {
            return missing_scope(scope);
        }
        match (method.clone(), segments.as_slice()) {
            (Method::GET, ["account-info", "v3" | "2026-03", "details"]) => self.account_details(),
            (
                Method::GET,
                [
                    "account-info",
                    "v3" | "2026-03",
                    "api-usage",
                    "daily",
                    "private-apps",
                ],
            ) if self.options.usage_api => self.daily_usage(),
            (Method::GET, ["automation", "v3", "workflows", id]) => self.workflow(id),
            (Method::POST, ["automation", "v4", "workflow-id-mappings", "batch", "read"]) => {
                self.workflow_id_mappings(body)
            }
            (Method::GET, ["automation", "v4", "actions", app]) => {
                self.action_definitions(app, uri)
            }
            (Method::GET, ["crm", "lists", "2026-03", list] | ["crm", "v3", "lists", list]) => {
                self.list(list)
            }
            (Method::GET, ["email", "public", "v1", "events"]) => self.events_page(uri),
            (
                Method::POST,
                [
                    "automation",
                    "v2",
                    "workflows",
                    wf,
                    "enrollments",
                    "contacts",
                    email,
                ],
            ) => self.enroll(wf, email),
            (
                Method::GET,
                [
                    "automation",
                    "v2",
                    "workflows",
                    "enrollments",
                    "contacts",
                    vid,
                ],
            ) => self.enrollments_read(vid),
            (
                Method::PUT,
                ["crm", "v3", "lists", list, "memberships", "add"]
                | ["crm", "lists", "2026-03", list, "memberships", "add"],
            ) => self.list_add(list, body),
            (Method::POST, ["automation", "actions", "callbacks", "2026-03", "complete"]) => {
                self.complete_callbacks(body, Version::Dated)
            }
            (Method::POST, ["automation", "v4", "actions", "callbacks", "complete"]) => {
                self.complete_callbacks(body, Version::V4)
            }
            (
                Method::POST,
                [
                    "automation",
                    "actions",
                    "callbacks",
                    version @ "2026-03",
                    id,
                    "complete",
                ]
                | [
                    "automation",
                    version @ "v4",
                    "actions",
                    "callbacks",
                    id,
                    "complete",
                ],
            ) => {
                // Indexing a JSON value that is not an object panics (with the world locked).
                let Ok(serde_json::Value::Object(mut input)) =
                    serde_json::from_slice::<serde_json::Value>(body)
                else {
                    return error(StatusCode::BAD_REQUEST, "Invalid input JSON", None);
                };
                input.insert("callbackId".into(), json!(id));
                let version = match *version {
                    "v4" => Version::V4,
                    _ => Version::Dated,
                };
                self.complete_callbacks(
                    &serde_json::to_vec(&json!({ "inputs": [input] })).unwrap_or_default(),
                    version,
                )
            }
            // HubSpot answers an unknown route with its HTML 404 page, not JSON.
            _ => html(StatusCode::NOT_FOUND),
        }
    }

    /// The daily allowance: used, limit, and when it resets (the account's next midnight).
    fn daily_usage(&self) -> Response {
        let offset = i64::from(self.options.utc_offset_minutes) * MINUTE_MS;
        let resets = (account_day(&self.options) + 1) * DAY_MS - offset;
        let body = json!({"results": [{
            "name": "private-apps-api-calls-daily",
            "usageLimit": self.options.daily_limit,
            "currentUsage": self.daily_used,
            "collectedAt": crate::time::format_rfc3339(self.options.clock.now_ms()),
            "fetchStatus": "SUCCESS",
            "resetsAt": crate::time::format_rfc3339(resets),
        }]});
        (StatusCode::OK, axum::Json(body)).into_response()
    }

    fn account_details(&self) -> Response {
        let offset_ms = i64::from(self.options.utc_offset_minutes) * MINUTE_MS;
        let body = json!({
            "portalId": self.options.portal_id,
            "accountType": "STANDARD",
            "timeZone": zone_name(self.options.utc_offset_minutes),
            "companyCurrency": "USD",
            "additionalCurrencies": [],
            "utcOffset": format!("{:+03}:{:02}", offset_ms / 3_600_000, (offset_ms.abs() / 60_000) % 60),
            "utcOffsetMilliseconds": offset_ms,
            "uiDomain": "app.hubspot.com",
            "dataHostingLocation": "na1",
        });
        (StatusCode::OK, axum::Json(body)).into_response()
    }

    fn workflow_exists(&self, id: u64) -> bool {
        self.options.workflows.is_empty() || self.options.workflows.contains(&id)
    }

    /// A legacy workflow, by its workflow id; a flow id is not one.
    fn workflow(&self, id: &str) -> Response {
        match id.parse::<u64>() {
            Ok(id)
                if self.workflow_exists(id)
                    && !self.options.flow_ids.iter().any(|(flow, _)| *flow == id) =>
            {
                let body = json!({
                    "id": id,
                    "name": format!("Workflow {id}"),
                    "type": "DRIP_DELAY",
                    "enabled": true,
                    "portalId": self.options.portal_id,
                });
                (StatusCode::OK, axum::Json(body)).into_response()
            }
            _ => error(
                StatusCode::NOT_FOUND,
                &format!("Workflow {id} not found"),
                Some("OBJECT_NOT_FOUND"),
            ),
        }
    }

    fn workflow_id_mappings(&self, body: &[u8]) -> Response {
        let Ok(input) = serde_json::from_slice::<serde_json::Value>(body) else {
            return error(StatusCode::BAD_REQUEST, "Invalid input JSON", None);
        };
        let results: Vec<serde_json::Value> = input["inputs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| {
                let num = |k: &str| {
                    i[k].as_u64()
                        .or_else(|| i[k].as_str().and_then(|s| s.parse().ok()))
                };
                self.options
                    .flow_ids
                    .iter()
                    .find(|(flow, wf)| match i["type"].as_str() {
                        Some("FLOW_ID") => num("flowId") == Some(*flow),
                        Some("WORKFLOW_ID") => num("workflowId") == Some(*wf),
                        _ => false,
                    })
            })
            .map(|(flow, wf)| json!({"flowId": flow, "workflowId": wf}))
            .collect();
        let now = crate::time::format_rfc3339(self.options.clock.now_ms());
        let body = json!({
            "status": "COMPLETE",
            "results": results,
            "startedAt": now,
            "completedAt": now,
        });
        (StatusCode::OK, axum::Json(body)).into_response()
    }

    /// The app's action definitions, with the developer API key (`hapikey`).
    fn action_definitions(&self, app: &str, uri: &axum::http::Uri) -> Response {
        let key = uri
            .query()
            .into_iter()
            .flat_map(|q| q.split('&'))
            .find_map(|p| p.strip_prefix("hapikey="))
            .map(|k| percent_decode_str(k).decode_utf8_lossy().into_owned());
        if key.as_deref() != Some(self.options.developer_api_key.as_str()) {
            return unauthenticated();
        }
        let results: Vec<serde_json::Value> = self
            .options
            .action_urls
            .iter()
            .enumerate()
            .map(|(i, url)| {
                json!({"id": (10_646 + i).to_string(), "appId": app, "actionUrl": url, "published": true})
            })
            .collect();
        (StatusCode::OK, axum::Json(json!({ "results": results }))).into_response()
    }

    /// The list's kind, if it exists.
    fn list_kind(&self, list: &str) -> Option<ListKind> {
        if self.options.lists.is_empty() {
            return list.parse::<u64>().is_ok().then_some(ListKind::Manual);
        }
        self.options
            .lists
            .iter()
            .find(|(id, _)| id == list)
            .map(|(_, kind)| *kind)
    }

    fn list(&self, list: &str) -> Response {
        match self.list_kind(list) {
            Some(kind) => {
                let body = json!({"list": {
                    "listId": list,
                    "name": format!("List {list}"),
                    "processingType": kind.as_str(),
                    "objectTypeId": "0-1",
                    "size": self.lists.get(list).map_or(0, |m| m.len()),
                }});
                (StatusCode::OK, axum::Json(body)).into_response()
            }
            None => error(
                StatusCode::NOT_FOUND,
                &format!("List {list} does not exist."),
                Some("OBJECT_NOT_FOUND"),
            ),
        }
    }

    fn events_page(&self, uri: &axum::http::Uri) -> Response {
        let Ok(Query(q)) = Query::<HashMap<String, String>>::try_from_uri(uri) else {
            return error(StatusCode::BAD_REQUEST, "Invalid query string", None);
        };
        let num = |k: &str| -> Result<Option<i64>, String> {
            q.get(k)
                .map(|v| {
                    v.parse::<i64>()
                        .map_err(|_| format!("{k} must be a number, got {v:?}"))
                })
                .transpose()
        };
        let parsed = (|| {
            Ok::<_, String>((
                num("startTimestamp")?,
                num("endTimestamp")?,
                num("limit")?,
                num("offset")?,
            ))
        })();
        let (start, end, limit, offset) = match parsed {
            Ok(p) => p,
            Err(message) => return error(StatusCode::BAD_REQUEST, &message, None),
        };
        let limit = limit
            .map(|l| (l.max(1) as usize).min(MAX_EVENTS_LIMIT))
            .unwrap_or(DEFAULT_EVENTS_LIMIT);
        let offset = offset.unwrap_or(0).max(0) as usize;
        let exclude_filtered = q.get("excludeFilteredEvents").is_some_and(|v| v == "true");
        let event_type = q.get("eventType");
        // Newest first: skip what is newer than `end`, stop at what is older than `start`.
        let lo = end.map_or(0, |e| self.events.partition_point(|ev| ev.created > e));
        let hi = start.map_or(self.events.len(), |s| {
            self.events.partition_point(|ev| ev.created >= s)
        });
        let window = &self.events[lo..hi.max(lo)];
        // Without filters the offset is an index: paging through millions stays linear.
        let mut rest: Box<dyn Iterator<Item = &EmailEvent>> =
            if event_type.is_none() && !exclude_filtered {
                Box::new(window.get(offset..).unwrap_or_default().iter())
            } else {
                Box::new(
                    window
                        .iter()
                        // HubSpot: "Only return events of the specified type (case-sensitive)".
                        .filter(|e| event_type.is_none_or(|t| e.kind == *t))
                        .filter(|e| !(exclude_filtered && e.filtered_event))
                        .skip(offset),
                )
            };
        let page: Vec<&EmailEvent> = rest.by_ref().take(limit).collect();
        let next = offset + page.len();
        let has_more = rest.next().is_some();
        axum::Json(json!({
            "events": page,
            "hasMore": has_more,
            "offset": next.to_string(),
        }))
        .into_response()
    }

    fn enroll(&mut self, workflow: &str, email: &str) -> Response {
        let Ok(workflow) = workflow.parse::<u64>() else {
            return error(
                StatusCode::NOT_FOUND,
                &format!("Workflow {workflow:?} not found"),
                None,
            );
        };
        if !self.options.workflows.is_empty() && !self.options.workflows.contains(&workflow) {
            return error(
                StatusCode::NOT_FOUND,
                &format!("Workflow {workflow} not found"),
                None,
            );
        }
        let email = percent_decode_str(email)
            .decode_utf8_lossy()
            .to_ascii_lowercase();
        if !email.contains('@') || email.starts_with('@') || email.ends_with('@') {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("Invalid email address: {email:?}"),
                None,
            );
        }
        // Only contacts that exist can be enrolled: HubSpot answers 404 for any other email.
        let Some(&vid) = self.vids.get(&email) else {
            return error(
                StatusCode::NOT_FOUND,
                &format!("Contact with email {email} does not exist"),
                Some("OBJECT_NOT_FOUND"),
            );
        };
        self.enrollments.entry(vid).or_default().insert(workflow);
        self.enrolled_at
            .insert((vid, workflow), std::time::Instant::now());
        StatusCode::NO_CONTENT.into_response()
    }

    fn enrollments_read(&self, vid: &str) -> Response {
        let Ok(vid) = vid.parse::<u64>() else {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("Invalid contact id {vid:?}"),
                None,
            );
        };
        // Current enrollments only: a workflow that ended is not named.
        let current = |workflow: u64| {
            self.options.workflows_end_after.is_none_or(|lasts| {
                self.enrolled_at
                    .get(&(vid, workflow))
                    .is_none_or(|at| at.elapsed() < lasts)
            })
        };
        let workflows: Vec<_> = self
            .enrollments
            .get(&vid)
            .into_iter()
            .flatten()
            .filter(|id| current(**id))
            .map(|id| {
                json!({
                    "id": id,
                    "name": format!("Workflow {id}"),
                    "type": "DRIP_DELAY",
                    "enabled": true,
                    "portalId": self.options.portal_id,
                })
            })
            .collect();
        axum::Json(workflows).into_response()
    }

    fn list_add(&mut self, list: &str, body: &[u8]) -> Response {
        if list.parse::<u64>().is_err() {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("Invalid list id {list:?}: ILS list ids are numbers"),
                None,
            );
        }
        match self.list_kind(list) {
            None => {
                return error(
                    StatusCode::NOT_FOUND,
                    &format!("List {list} does not exist."),
                    Some("OBJECT_NOT_FOUND"),
                );
            }
            Some(ListKind::Dynamic) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "List {list} has processingType DYNAMIC: memberships can only be changed for MANUAL or SNAPSHOT lists."
                    ),
                    Some("VALIDATION_ERROR"),
                );
            }
            Some(_) => {}
        }
        let ids: Vec<serde_json::Value> = match serde_json::from_slice(body) {
            Ok(ids) => ids,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("Invalid input JSON: expected an array of record ids: {e}"),
                    None,
                );
            }
        };
        if let Some(max) = self.options.max_list_batch
            && ids.len() > max
        {
            return error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "Request is too large: {} record ids sent, at most {max} allowed per call",
                    ids.len()
                ),
                Some("VALIDATION_ERROR"),
            );
        }
        let known: Option<HashSet<u64>> = self
            .options
            .known_records_only
            .then(|| self.vids.values().copied().collect());
        let members = self.lists.entry(list.to_string()).or_default();
        let (mut added, mut missing) = (Vec::new(), Vec::new());
        for id in ids {
            let id = match id {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            let exists = match (id.parse::<u64>(), &known) {
                (Ok(vid), Some(known)) => known.contains(&vid),
                (Ok(_), None) => true,
                (Err(_), _) => false,
            };
            if !exists {
                missing.push(id);
            } else if members.insert(id.clone()) {
                added.push(id);
            }
        }
        axum::Json(json!({
            "recordIdsMissing": missing,
            "recordIdsRemoved": [],
            "recordsIdsAdded": added,
        }))
        .into_response()
    }
}

impl World {
    /// Complete callbacks, all or none: 204. HubSpot's docs give a batch no per-callback
    /// results and do not say how an unknown or already completed callback is answered; the
    /// stand-in refuses the whole batch (400, naming them), and batches of more than
    /// [`MAX_CALLBACK_BATCH`].
    fn complete_callbacks(&mut self, body: &[u8], version: Version) -> Response {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Input {
            callback_id: String,
            #[serde(default)]
            output_fields: serde_json::Value,
            /// Required by HubSpot's 2026-03 reference (an input without it is refused); v4's
            /// batch takes only `callbackId` and `outputFields`.
            typed_outputs: Option<serde::de::IgnoredAny>,
        }
        #[derive(serde::Deserialize)]
        struct Batch {
            inputs: Vec<Input>,
        }
        let batch: Batch = match serde_json::from_slice(body) {
            Ok(b) => b,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("Invalid input JSON: expected {{\"inputs\": [...]}}: {e}"),
                    Some("VALIDATION_ERROR"),
                );
            }
        };
        if version == Version::Dated
            && let Some(i) = batch.inputs.iter().find(|i| i.typed_outputs.is_none())
        {
            return error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "Invalid input JSON: missing field `typedOutputs` in the input for callback {}",
                    i.callback_id
                ),
                Some("VALIDATION_ERROR"),
            );
        }
        if batch.inputs.len() > MAX_CALLBACK_BATCH {
            return error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "Request is too large: {} callbacks sent, at most {MAX_CALLBACK_BATCH} allowed per call",
                    batch.inputs.len()
                ),
                Some("VALIDATION_ERROR"),
            );
        }
        let now = self.options.clock.now_ms();
        let refused: Vec<String> = batch
            .inputs
            .iter()
            .filter_map(|i| match self.callbacks.get(&i.callback_id) {
                None if self.options.any_callback => None,
                None => Some(format!("{} (not found)", i.callback_id)),
                Some(Callback::Completed(_)) => {
                    Some(format!("{} (already completed)", i.callback_id))
                }
                Some(Callback::Blocked {
                    expires_at_ms: Some(t),
                }) if *t <= now => Some(format!("{} (expired)", i.callback_id)),
                Some(Callback::Blocked { .. }) => None,
            })
            .collect();
        if !refused.is_empty() {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("Cannot complete callbacks: {}", refused.join(", ")),
                Some("VALIDATION_ERROR"),
            );
        }
        for input in batch.inputs {
            self.callbacks
                .insert(input.callback_id, Callback::Completed(input.output_fields));
        }
        StatusCode::NO_CONTENT.into_response()
    }
}

/// Which of HubSpot's callback APIs a completion came through.
#[derive(Clone, Copy, PartialEq)]
enum Version {
    /// `/automation/actions/callbacks/2026-03/...`, which sendtime calls.
    Dated,
    /// `/automation/v4/actions/callbacks/...`, supported until 2027-03-30.
    V4,
}

/// The most callbacks the stand-in completes in one call.
pub const MAX_CALLBACK_BATCH: usize = 100;

/// A workflow-action callback HubSpot holds.
enum Callback {
    /// The contact waits in the action, until `expires_at_ms` when known.
    Blocked { expires_at_ms: Option<i64> },
    /// Completed with these output fields.
    Completed(serde_json::Value),
}

/// An ISO-8601 duration of whole weeks, days, hours, minutes and seconds (`P2D`, `P1DT12H`,
/// `PT90M`), in milliseconds; `None` for anything else (units out of order or twice, a `T`
/// with nothing after it).
fn iso_duration_ms(text: &str) -> Option<i64> {
    let rest = text.strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((_, "")) => return None,
        Some((date, time)) => (date, time),
        None => (rest, ""),
    };
    let mut total = 0i64;
    for (part, units) in [
        (date, &[('W', 7 * DAY_MS), ('D', DAY_MS)][..]),
        (time, &[('H', HOUR_MS), ('M', MINUTE_MS), ('S', 1000)][..]),
    ] {
        let mut units = units.iter();
        let mut number = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            // Each unit once, in order: the rest of the list after it.
            let &(_, unit) = units.find(|(u, _)| *u == c)?;
            total = total.checked_add(number.parse::<i64>().ok()?.checked_mul(unit)?)?;
            number.clear();
        }
        if !number.is_empty() {
            return None;
        }
    }
    (!rest.is_empty()).then_some(total)
}

/// The scope a route needs (`None`: any token will do).
fn required_scope(method: &Method, segments: &[&str]) -> Option<&'static str> {
    match segments {
        ["email", ..] => Some("content"),
        ["account-info", ..] => Some("oauth"),
        ["automation", ..] => Some("automation"),
        ["crm", "lists", ..] | ["crm", "v3", "lists", ..] => Some(if *method == Method::GET {
            "crm.lists.read"
        } else {
            "crm.lists.write"
        }),
        _ => None,
    }
}

/// HubSpot's 403 for a token without a scope the call needs.
fn missing_scope(scope: &str) -> Response {
    let body = json!({
        "status": "error",
        "message": "This app hasn't been granted all required scopes to make this call. Read more about required scopes here: https://developers.hubspot.com/scopes.",
        "correlationId": correlation_id(),
        "errors": [{
            "message": "One or more of the following scopes are required.",
            "context": {"requiredGranularScopes": [scope]},
        }],
        "links": {"scopes": "https://developers.hubspot.com/scopes"},
        "category": "MISSING_SCOPES",
    });
    (StatusCode::FORBIDDEN, axum::Json(body)).into_response()
}

/// An HTML error page, as HubSpot's edge serves for unknown routes and blocked requests.
fn html(status: StatusCode) -> Response {
    let page = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{status}</title></head>\
         <body><h1>{status}</h1><p>The page you were looking for could not be served.</p></body></html>"
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page,
    )
        .into_response()
}

/// HubSpot's 401 for a missing or unknown token.
fn unauthenticated() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "Authentication credentials not found. This API supports OAuth 2.0 authentication \
         and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
        Some("INVALID_AUTHENTICATION"),
    )
}

fn with_rate(mut resp: Response, rate: RateLimit) -> Response {
    let h = resp.headers_mut();
    let mut put = |name: &'static str, v: Option<u64>| {
        if let Some(v) = v {
            h.insert(name, HeaderValue::from(v));
        }
    };
    put(RateLimit::MAX, rate.max.map(u64::from));
    put(RateLimit::REMAINING, rate.remaining.map(u64::from));
    put(
        RateLimit::INTERVAL_MS,
        rate.interval.map(|d| d.as_millis() as u64),
    );
    put(RateLimit::DAILY, rate.daily.map(u64::from));
    put(
        RateLimit::DAILY_REMAINING,
        rate.daily_remaining.map(u64::from),
    );
    resp
}

/// The account's current day number, by the stand-in's clock and the account's offset.
fn account_day(options: &Options) -> i64 {
    (options.clock.now_ms() + i64::from(options.utc_offset_minutes) * MINUTE_MS).div_euclid(DAY_MS)
}

/// HubSpot's error body.
fn error(status: StatusCode, message: &str, category: Option<&str>) -> Response {
    let mut body = json!({
        "status": "error",
        "message": message,
        "correlationId": correlation_id(),
    });
    if let Some(c) = category {
        body["category"] = json!(c);
    }
    (status, axum::Json(body)).into_response()
}

fn correlation_id() -> String {
    ulid::Ulid::generate().to_string().to_ascii_lowercase()
}

/// `sendtime hubspot-standin`: run the stand-in on `listen` until Ctrl-C, serving the email
/// events of `events_file` (a JSON array of HubSpot events, or `{"events": [...]}`).
/// `--contacts`: one `email` or `email,id` per line; blank lines are skipped.
fn read_contacts(path: &Path) -> anyhow::Result<Vec<(String, Option<u64>)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read contacts file {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (email, id) = match line.split_once(',') {
            Some((email, id)) => (email.trim(), Some(id.trim())),
            None => (line, None),
        };
        let id = id.map(|id| id.parse::<u64>().ok().filter(|&id| id > 0));
        anyhow::ensure!(
            email.contains('@') && id.is_none_or(|id| id.is_some()),
            "{} line {}: expected `email` or `email,id` (a positive integer id), found {line:?}",
            path.display(),
            n + 1
        );
        out.push((email.to_string(), id.flatten()));
    }
    Ok(out)
}

pub fn run_until_ctrl_c(
    listen: SocketAddr,
    events_file: Option<&Path>,
    contacts_file: Option<&Path>,
    options: Options,
) -> anyhow::Result<()> {
    let events = match events_file {
        None => Vec::new(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read events file {}", path.display()))?;
            #[derive(serde::Deserialize)]
            #[serde(untagged)]
            enum File {
                List(Vec<EmailEvent>),
                Page { events: Vec<EmailEvent> },
            }
            match serde_json::from_str::<File>(&text).with_context(|| {
                format!(
                    "{}: expected a JSON array of HubSpot email events or {{\"events\": [...]}}",
                    path.display()
                )
            })? {
                File::List(e) | File::Page { events: e } => e,
            }
        }
    };
    let mut contacts = match contacts_file {
        None => Vec::new(),
        Some(path) => read_contacts(path)?,
    };
    contacts.extend(
        events
            .iter()
            .filter_map(|e| Some((e.recipient.clone()?, None))),
    );
    let options = Options { events, ..options };
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(async {
        let n = options.events.len();
        let standin = StandIn::bind(listen, options)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        // Ids as given; the others numbered after the largest.
        let mut next = contacts.iter().filter_map(|c| c.1).max().unwrap_or(0) + 1;
        let mut known = 0;
        for (email, vid) in contacts {
            if standin.vid_of(&email).is_none() {
                standin.add_contact(
                    &email,
                    vid.unwrap_or_else(|| {
                        next += 1;
                        next - 1
                    }),
                );
                known += 1;
            }
        }
        println!(
            "HubSpot stand-in listening on {} ({n} email events, {known} contacts)",
            standin.url()
        );
        tokio::signal::ctrl_c().await?;
        Ok(())
    })
}

/// The account's zone as HubSpot names it, for a fixed offset east of UTC in minutes: "UTC",
/// an `Etc/GMT` zone for whole hours (whose sign is the reverse), else the first zone of
/// that offset all year (330: `Asia/Calcutta`).
fn zone_name(offset_minutes: i32) -> String {
    use chrono::{Offset, TimeZone};
    if offset_minutes == 0 {
        return "UTC".into();
    }
    let fixed = |tz: &chrono_tz::Tz| {
        ["2026-01-15T12:00:00Z", "2026-07-15T12:00:00Z"]
            .iter()
            .all(|t| {
                let at = chrono::DateTime::parse_from_rfc3339(t).unwrap().naive_utc();
                tz.offset_from_utc_datetime(&at).fix().local_minus_utc() == offset_minutes * 60
            })
    };
    let zones: Vec<&chrono_tz::Tz> = chrono_tz::TZ_VARIANTS
        .iter()
        .filter(|tz| fixed(tz))
        .collect();
    (zones.iter().find(|tz| tz.name().starts_with("Etc/GMT")))
        .or(zones.first())
        .map_or("UTC".into(), |tz| tz.name().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_durations_of_whole_units_are_read() {
        assert_eq!(iso_duration_ms("P2D"), Some(2 * DAY_MS));
        assert_eq!(iso_duration_ms("P1DT12H"), Some(DAY_MS + 12 * HOUR_MS));
        assert_eq!(iso_duration_ms("P1W"), Some(7 * DAY_MS));
        assert_eq!(iso_duration_ms("PT90M"), Some(90 * MINUTE_MS));
        assert_eq!(
            iso_duration_ms("PT1H30M5S"),
            Some(HOUR_MS + 30 * MINUTE_MS + 5000)
        );
        for bad in [
            "", "P", "PT", "2D", "P2", "P2H", "PT2D", "P1.5D", "P-1D", "P1DT", "PT5S1H", "P1D1D",
        ] {
            assert_eq!(iso_duration_ms(bad), None, "{bad}");
        }
    }
}
