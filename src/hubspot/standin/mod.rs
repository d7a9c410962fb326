//! A local HubSpot stand-in: the API calls sendtime makes, with HubSpot's request and
//! response shapes, its bearer-token check, its rolling 10-second and daily limits (429 with
//! HubSpot's body and the `X-HubSpot-RateLimit-*` headers on every answer; the daily count
//! resets at midnight in the account's time zone, as HubSpot's does), and the failures a real
//! run meets (5xx, slow answers, dropped connections, batches that are too large).
//!
//! Tests, the dispatcher's tests and benchmarks run the real [`Client`](super::Client)
//! against it over real HTTP, so what is tested is what runs against HubSpot. Every request is
//! logged ([`StandIn::log`]) so tests can check what was called and when. It is also exposed
//! as the hidden `sendtime hubspot-standin` subcommand for trying things by hand
//! ([`by_hand`]).
//!
//! This file holds the server, its options and the table of routes; [`faults`] the limits and
//! the failures it answers with, [`oauth`] tokens and scopes, [`api`] the calls' answers and
//! [`callbacks`] the workflow-action callbacks HubSpot holds.

mod api;
mod by_hand;
mod callbacks;
mod faults;
mod oauth;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tower::ServiceExt;

pub use by_hand::run_until_ctrl_c;
use callbacks::Callback;
pub use callbacks::MAX_CALLBACK_BATCH;
pub use faults::{Fault, Injection};
use faults::{Gate, Rule};
use oauth::{legacy_missing_scope, missing_scope, required_scopes};

use super::auth::TOKEN_PATH;
use super::{EmailEvent, RateLimit};
use crate::clock::Clock;
use crate::time::{DAY_MS, MINUTE_MS};

/// The token the stand-in accepts unless told otherwise.
pub const DEFAULT_TOKEN: &str = "standin-token";
/// The events page without a `limit`, and the largest one (HubSpot's events reference:
/// default 10, "Required range: 1 <= x <= 1000").
const DEFAULT_EVENTS_LIMIT: usize = 10;
const MAX_EVENTS_LIMIT: usize = 1000;
/// Events kept where contacts answer mails ([`Options::mail`]): the demo runs for days, and
/// `serve` imports them within minutes (about nine hours of a running demo, some 1.5 events a
/// second).
const MAILED_EVENTS_KEPT: usize = 50_000;
/// The account's portal id unless told otherwise.
pub const DEFAULT_PORTAL_ID: u64 = 62515;
/// A Professional account's calls per rolling 10 s (HubSpot's usage guidelines).
pub const DEFAULT_LIMIT_PER_10S: u32 = 190;
/// A Professional account's calls per day (HubSpot's usage guidelines).
pub const DEFAULT_DAILY_LIMIT: u32 = 625_000;

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
    /// Requests the log keeps ([`StandIn::log`]); past it, the older half is let go. Tests
    /// read it; the demo and `hubspot-standin`, which run for days, keep a few.
    pub log_limit: usize,
    /// The workflow editor's flow ids and the legacy workflow id each maps to.
    pub flow_ids: Vec<(u64, u64)>,
    /// Workflows that exist but are turned off (`enabled: false`). HubSpot enrolls only into
    /// a workflow that is on; what it answers an enrollment into one off is not documented,
    /// so the stand-in takes it (204) and enrolls no one: the case a caller cannot see.
    pub workflows_off: Vec<u64>,
    /// Whether the account's daily usage endpoint answers (it tells when the daily limit
    /// resets); when not, it is an HTML 404.
    pub usage_api: bool,
    /// The developer API key that lists the app's action definitions, and the action URLs
    /// registered for the app.
    pub developer_api_key: String,
    pub action_urls: Vec<String>,
    /// The action definitions are saved but not published (`"published": false`): no
    /// workflow can use them.
    pub actions_unpublished: bool,
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
    /// How contacts answer the email the account sends each one it moves on (enrolled into
    /// a workflow, added to a list, released from the action): their email events, which the
    /// events API serves once their time comes. `None`: no one answers (no events appear).
    pub mail: Option<Mail>,
}

/// The email events contact `vid`, mailed at an instant (epoch ms, the stand-in's clock),
/// answers with: the demo draws them from its synthetic contacts' habits.
#[derive(Clone)]
pub struct Mail(pub Arc<dyn Fn(u64, i64) -> Vec<EmailEvent> + Send + Sync>);

impl std::fmt::Debug for Mail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mail(..)")
    }
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
            limit_per_10s: DEFAULT_LIMIT_PER_10S,
            daily_limit: DEFAULT_DAILY_LIMIT,
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
            log_limit: 1_000_000,
            workflows_off: Vec::new(),
            usage_api: true,
            developer_api_key: "developer-api-key".to_string(),
            action_urls: Vec::new(),
            actions_unpublished: false,
            known_records_only: false,
            any_callback: false,
            workflows_end_after: None,
            mail: None,
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
    /// Contact id by email address, secondary addresses (a merge's) included.
    vids: HashMap<String, u64>,
    /// Each contact's primary address, what reading it by id answers.
    addresses: HashMap<u64, String>,
    enrollments: HashMap<u64, BTreeSet<u64>>,
    /// (contact, workflow) → when it was last enrolled, for [`Options::workflows_end_after`].
    enrolled_at: HashMap<(u64, u64), std::time::Instant>,
    lists: HashMap<String, BTreeSet<String>>,
    /// Workflow-action callbacks HubSpot holds, by id.
    callbacks: HashMap<String, Callback>,
    /// Workflow executions played so far: each has a callback id of its own, as at HubSpot.
    executions: u64,
    /// OAuth access tokens issued and when each stops working.
    issued: Vec<(String, Instant)>,
    /// The refresh token that works now (rotated when the app says so).
    refresh_token: Option<String>,
    /// The latest requests ([`Options::log_limit`] at most).
    log: Vec<LogEntry>,
    /// Requests received, ever: the next one's `seq`.
    received: u64,
}

impl World {
    /// Contact `vid` was moved on now: the events it answers the mail with join the others
    /// ([`Options::mail`]), in their order, the newest [`MAILED_EVENTS_KEPT`] kept.
    fn mailed(&mut self, vid: u64) {
        let Some(mail) = self.options.mail.clone() else {
            return;
        };
        for event in (mail.0)(vid, self.options.clock.now_ms()) {
            let at =
                (self.events).partition_point(|e| (e.created, &e.id) > (event.created, &event.id));
            self.events.insert(at, event);
        }
        self.events.truncate(MAILED_EVENTS_KEPT);
    }

    /// Log a request: its `seq` is its place among all received.
    fn record(
        &mut self,
        method: &Method,
        path: String,
        query: Option<String>,
        at: SystemTime,
        status: Option<u16>,
    ) {
        let limit = self.options.log_limit.max(1);
        if self.log.len() >= limit {
            self.log.drain(..limit.div_ceil(2));
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
            addresses: HashMap::new(),
            enrollments: HashMap::new(),
            enrolled_at: HashMap::new(),
            lists: HashMap::new(),
            callbacks: HashMap::new(),
            executions: 0,
            issued: Vec::new(),
            refresh_token: options_refresh,
            log: Vec::new(),
            received: 0,
        }));
        let router = axum::Router::new()
            .fallback(handle)
            .layer(axum::middleware::map_response_with_state(
                world.clone(),
                hubspot_date,
            ))
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

    /// Rotate the OAuth app's client secret, as its settings in HubSpot do: a refresh with the
    /// old one is refused from now on.
    pub fn set_client_secret(&self, secret: &str) {
        if let Some(app) = self.world.lock().unwrap().options.oauth.as_mut() {
            app.client_secret = secret.to_string();
        }
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
    /// email). A second address of a contact already known is a secondary one (as a merge leaves).
    pub fn add_contact(&self, email: &str, vid: u64) {
        let mut w = self.world.lock().unwrap();
        let email = email.to_ascii_lowercase();
        w.vids.insert(email.clone(), vid);
        w.addresses.entry(vid).or_insert(email);
    }

    /// Change contact `vid`'s primary address to `email`, as someone editing the contact in
    /// HubSpot: the old address no longer finds it.
    pub fn change_email(&self, vid: u64, email: &str) {
        let mut w = self.world.lock().unwrap();
        let email = email.to_ascii_lowercase();
        if let Some(old) = w.addresses.insert(vid, email.clone()) {
            w.vids.remove(&old);
        }
        w.vids.insert(email, vid);
    }

    /// The workflows that exist from now on (empty: every id), as when one is deleted.
    pub fn set_workflows(&self, workflows: Vec<u64>) {
        self.world.lock().unwrap().options.workflows = workflows;
    }

    /// The workflows turned off from now on ([`Options::workflows_off`]).
    pub fn set_workflows_off(&self, workflows: Vec<u64>) {
        self.world.lock().unwrap().options.workflows_off = workflows;
    }

    /// The lists that exist from now on and their kinds (empty: every numeric id is MANUAL),
    /// as when one is deleted or made DYNAMIC.
    pub fn set_lists(&self, lists: Vec<(String, ListKind)>) {
        self.world.lock().unwrap().options.lists = lists;
    }

    /// Delete contact `vid`: none of its addresses finds it, nor its id.
    pub fn delete_contact(&self, vid: u64) {
        let mut w = self.world.lock().unwrap();
        w.vids.retain(|_, v| *v != vid);
        w.addresses.remove(&vid);
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

/// HubSpot's `Date`, by the stand-in's clock (a test sets it apart from this machine's).
async fn hubspot_date(State(world): State<Shared>, mut response: Response) -> Response {
    let now = world.lock().unwrap().options.clock.now_ms();
    let date = chrono::DateTime::from_timestamp_millis(now)
        .map(|at| at.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
        .and_then(|d| HeaderValue::from_str(&d).ok());
    if let Some(date) = date {
        response.headers_mut().insert(header::DATE, date);
    }
    response
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
    // Read only for a call that may be made (the token endpoint's, or one whose token is
    // good): a stranger's body of up to 64 MiB was read before its token was looked at.
    let token_call = method == Method::POST && path == TOKEN_PATH;
    let (authorized, oauth) = match token_call {
        true => (Ok(()), false),
        false => world.lock().unwrap().authorize(bearer.as_deref()),
    };
    let body = match authorized {
        Ok(()) => axum::body::to_bytes(req.into_body(), 64 * 1024 * 1024)
            .await
            .unwrap_or_default(),
        Err(_) => Default::default(),
    };
    let (outcome, rate) = if token_call {
        // Outside the API's limits; only faults scripted for its path reach it.
        let mut w = world.lock().unwrap();
        let outcome = match w.scripted(&path, true).map(|f| w.fault(f)) {
            None => Gate::Answer(w.token_endpoint(form, &body)),
            Some(Gate::Slow(d)) => Gate::SlowAnswer(w.token_endpoint(form, &body), d),
            Some(Gate::Replaced(page)) => {
                w.token_endpoint(form, &body);
                Gate::Answer(page)
            }
            Some(other) => other,
        };
        let status = match &outcome {
            Gate::Answer(r) | Gate::SlowAnswer(r, _) => Some(r.status().as_u16()),
            _ => None,
        };
        w.record(&method, path, query, received, status);
        (outcome, RateLimit::default())
    } else {
        let token = bearer.as_deref().unwrap_or_default();
        let mut w = world.lock().unwrap();
        // A refused call counts toward the limits too, as at HubSpot.
        let gate = match (authorized, w.gate(&path, oauth)) {
            (Ok(()), gate) => gate,
            (Err(refusal), Gate::Proceed) => Gate::Answer(refusal),
            (Err(_), limited) => limited,
        };
        let outcome = match gate {
            Gate::Proceed => Gate::Answer(w.route(&method, &path, &uri, &body, token)),
            // Processed now, answered late: like a server that did the work but is slow to say so.
            Gate::Slow(d) => Gate::SlowAnswer(w.route(&method, &path, &uri, &body, token), d),
            Gate::Replaced(page) => {
                w.route(&method, &path, &uri, &body, token);
                Gate::Answer(page)
            }
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
        Gate::Slow(_) | Gate::Drop | Gate::Proceed | Gate::Replaced(_) => {
            if let Some(Killer(k)) = killer {
                k.notify_one();
            }
            std::future::pending().await
        }
    }
}

impl World {
    fn route(
        &mut self,
        method: &Method,
        path: &str,
        uri: &axum::http::Uri,
        body: &[u8],
        token: &str,
    ) -> Response {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let required = required_scopes(method, &segments);
        if let Some(granted) = &self.options.scopes
            && !required.is_empty()
            && !oauth::granted_one_of(required, granted)
        {
            let required = oauth::named(required);
            return if segments.iter().any(|s| matches!(*s, "v1" | "v2")) {
                legacy_missing_scope(token, &required)
            } else {
                missing_scope(&required)
            };
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
            (
                Method::GET,
                ["automation", "actions", "2026-03", app] | ["automation", "v4", "actions", app],
            ) => self.action_definitions(app, uri),
            (Method::GET, ["crm", "lists", "2026-03", list] | ["crm", "v3", "lists", list]) => {
                self.list(list)
            }
            (
                Method::GET,
                ["crm", "objects", "2026-03", "contacts" | "0-1", id]
                | ["crm", "v3", "objects", "contacts", id],
            ) => self.contact(id),
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
            (
                Method::POST,
                ["automation", "actions", "callbacks", "2026-03", "complete"]
                | ["automation", "v4", "actions", "callbacks", "complete"],
            ) => self.complete_callbacks(body),
            (
                Method::POST,
                [
                    "automation",
                    "actions",
                    "callbacks",
                    "2026-03",
                    id,
                    "complete",
                ]
                | ["automation", "v4", "actions", "callbacks", id, "complete"],
            ) => {
                // Indexing a JSON value that is not an object panics (with the world locked).
                let Ok(serde_json::Value::Object(mut input)) =
                    serde_json::from_slice::<serde_json::Value>(body)
                else {
                    return error(StatusCode::BAD_REQUEST, "Invalid input JSON", None);
                };
                input.insert("callbackId".into(), json!(id));
                self.complete_callbacks(
                    &serde_json::to_vec(&json!({ "inputs": [input] })).unwrap_or_default(),
                )
            }
            // HubSpot answers an unknown route with its HTML 404 page, not JSON.
            _ => html(StatusCode::NOT_FOUND),
        }
    }
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

/// A random UUID (version 4), as HubSpot's `correlationId` is (its spec: `format: uuid`).
fn correlation_id() -> String {
    let (hi, lo) = (fastrand::u64(..), fastrand::u64(..));
    let hi = (hi & !0xf000) | 0x4000;
    let lo = (lo & !(0b11 << 62)) | (0b10 << 62);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    /// A correlation id is a version-4 UUID in its canonical form.
    #[test]
    fn a_correlation_id_is_a_uuid() {
        for _ in 0..100 {
            let id = super::correlation_id();
            let groups: Vec<&str> = id.split('-').collect();
            let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
            assert_eq!(lengths, [8, 4, 4, 4, 12], "{id}");
            assert!(
                id.chars()
                    .all(|c| c == '-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
                "{id}"
            );
            assert!(groups[2].starts_with('4'), "{id}");
            assert!(groups[3].starts_with(['8', '9', 'a', 'b']), "{id}");
        }
    }
}
