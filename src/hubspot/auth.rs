//! How a connector's calls authenticate: a static token, or OAuth access tokens obtained with
//! the refresh token and refreshed before they expire (HubSpot's last 30 minutes), one refresh
//! at a time per installation (an app's client id and refresh token, whichever connectors use
//! it). A refresh token HubSpot rotates is kept for the process's life.
//! A refresh that fails is the answer of every call that was waiting for it, so a token
//! endpoint in trouble gets one request, not one per waiting call.
//! Tokens are never logged: they appear only in the Authorization header and the refresh form.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use super::error::{ApiError, MESSAGE_CHARS, read_at_most, redacted, transport};
use crate::config::{Connector, Credentials, env_missing, env_value};

/// HubSpot's date-versioned token endpoint (v1, `/oauth/v1/token`, is retired on 2027-02-16).
pub const TOKEN_PATH: &str = "/oauth/2026-03/token";
/// Refresh this long before a token expires at most (a sixth of its life when shorter).
const REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// The token lives HubSpot reports are taken within these bounds (seconds): at most one
/// refresh a second, whatever it says.
const MIN_TOKEN_LIFE_S: u64 = 1;
const MAX_TOKEN_LIFE_S: u64 = 24 * 3600;
/// How soon a refresh that got no answer is tried again while the token in hand still lives.
const REFRESH_RETRY: Duration = Duration::from_secs(15);

/// A connector's credentials, as its client uses them (shared by the connectors of one
/// OAuth installation: [`Auth::for_account`]).
pub enum Auth {
    Static(Arc<str>),
    OAuth(Arc<OAuth>),
}

/// What refreshing needs, and the access token in use.
pub struct OAuth {
    client_id: String,
    /// The app's client secrets, current first: during a rotation, the one HubSpot takes may
    /// be either.
    client_secrets: Mutex<Vec<String>>,
    /// The refresh token the installation gave (as configured).
    installed: String,
    /// The latest refresh token (HubSpot may hand out a new one with each refresh).
    refresh_token: Mutex<String>,
    /// Held while refreshing, so an installation refreshes once however many calls wait.
    current: tokio::sync::Mutex<Refreshed>,
    /// Refreshes finished so far: a call that waited while one was tried takes its outcome.
    attempts: AtomicU64,
    /// The latest token and until when it may be kept, readable while a refresh holds
    /// `current`: a token endpoint slow to answer does not hold calls a token in hand serves.
    in_hand: Mutex<Option<(Arc<str>, Instant)>>,
}

/// The latest refresh's outcome.
#[derive(Default)]
struct Refreshed {
    access: Option<Access>,
    /// A failed refresh, and the attempt it was (counting from 1).
    failed: Option<Box<(ApiError, u64)>>,
    /// A refresh still running whose caller was dropped: the next caller takes its outcome.
    /// A second refresh beside it would spend the refresh token it had spent, which HubSpot
    /// may have rotated (an audit).
    under_way: Option<UnderWay>,
}

/// A refresh in a task of its own ([`OAuth::spawn_refresh`]).
struct UnderWay {
    task: tokio::task::JoinHandle<Result<Access, ApiError>>,
    /// The attempt it is (counting from 1).
    attempt: u64,
    started: Instant,
}

/// Where refreshes run when the process has a runtime for its life (`serve`'s): a refresh
/// begun by the scheduled import, on a runtime of its own, was cancelled with that runtime
/// when the import stopped mid-refresh (a review).
static REFRESHES: std::sync::OnceLock<tokio::runtime::Handle> = std::sync::OnceLock::new();

/// Run OAuth refreshes on `runtime` (one that lives as long as the process) from now on.
pub fn refresh_on(runtime: tokio::runtime::Handle) {
    let _ = REFRESHES.set(runtime);
}

struct Access {
    token: Arc<str>,
    refresh_at: Instant,
    /// When HubSpot stops taking it (by its `expires_in`, counted from before the request).
    expires_at: Instant,
    /// How long before `expires_at` it was due for a refresh.
    margin: Duration,
}

impl Access {
    /// Until when it is used without a refresh of its own: while it has half its margin of
    /// life left (the calls in flight must arrive before it expires).
    fn keep_until(&self) -> Instant {
        self.expires_at - self.margin / 2
    }

    /// After a refresh that failed for want of an answer: the token in hand while it may be
    /// kept, and the next refresh soon, so an early refresh does not bring a token endpoint's
    /// outage forward.
    fn still_good(&mut self, now: Instant) -> Option<Arc<str>> {
        let keep_until = self.keep_until();
        if now >= keep_until {
            return None;
        }
        self.refresh_at = (now + (self.margin / 4).min(REFRESH_RETRY)).min(keep_until);
        Some(self.token.clone())
    }
}

/// HubSpot's token answer (the standard OAuth fields; its older docs show camelCase), as far
/// as the access token: a rotated refresh token is read before it, in [`OAuth::refresh`].
#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(alias = "accessToken")]
    access_token: String,
    /// Seconds, as a number (or a string of one); HubSpot's 30 minutes when it is missing.
    #[serde(alias = "expiresIn", default)]
    expires_in: Option<serde_json::Value>,
}

/// HubSpot's access tokens' life, taken when its answer does not say.
const DEFAULT_TOKEN_LIFE_S: u64 = 1800;

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Static(_) => f.write_str("Static(<redacted>)"),
            Auth::OAuth(o) => f
                .debug_struct("OAuth")
                .field("client_id", &o.client_id)
                .finish_non_exhaustive(),
        }
    }
}

impl Auth {
    /// OAuth credentials: the app's client id and secret and an installation's refresh token.
    pub fn oauth(client_id: &str, client_secret: &str, refresh_token: &str) -> Auth {
        Auth::oauth_rotating(client_id, vec![client_secret.to_string()], refresh_token)
    }

    /// [`Auth::oauth`] with the app's client secrets, current first (not empty).
    fn oauth_rotating(client_id: &str, client_secrets: Vec<String>, refresh_token: &str) -> Auth {
        Auth::OAuth(Arc::new(OAuth {
            client_id: client_id.to_string(),
            client_secrets: Mutex::new(client_secrets),
            installed: refresh_token.to_string(),
            refresh_token: Mutex::new(refresh_token.to_string()),
            current: tokio::sync::Mutex::new(Refreshed::default()),
            attempts: AtomicU64::new(0),
            in_hand: Mutex::new(None),
        }))
    }

    /// The credentials every client of `connector` in this process uses: the dispatcher's and
    /// the scheduled import's, those built again after a reload, and those of every connector
    /// of the same installation (one app's client id and refresh token: two connectors of a
    /// portal, or one renamed). A refresh token HubSpot rotated is then the one each refreshes
    /// with; credentials built apart, one would refresh with the token another had already
    /// spent, and be refused.
    ///
    /// New client secrets for an installation are taken into its shared credentials, with its
    /// latest refresh token.
    pub fn for_account(connector: &Connector) -> anyhow::Result<Arc<Auth>> {
        use std::collections::HashMap;
        use std::sync::OnceLock;
        /// Whose credentials: keys from the config, a handful, kept for the process's life
        /// as a rotated refresh token must be.
        #[derive(PartialEq, Eq, Hash)]
        enum Holder {
            Connector(String),
            /// Client id and the refresh token it was installed with.
            Installation(String, String),
        }
        static ACCOUNTS: OnceLock<Mutex<HashMap<Holder, Arc<Auth>>>> = OnceLock::new();
        let fresh = Auth::for_connector(connector)?;
        let key = match &fresh {
            Auth::Static(_) => Holder::Connector(connector.id.clone()),
            Auth::OAuth(new) => Holder::Installation(new.client_id.clone(), new.installed.clone()),
        };
        let mut accounts = ACCOUNTS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(shared) = accounts.get(&key) {
            match (&**shared, &fresh) {
                (Auth::Static(a), Auth::Static(b)) if a == b => return Ok(shared.clone()),
                // Its credentials stay one, with the new secrets. Built apart, a client still
                // on the old ones (an import under way) refreshed on its own and could spend
                // the refresh token HubSpot had just rotated.
                (Auth::OAuth(old), Auth::OAuth(new)) => {
                    let secrets = new.client_secrets.lock().unwrap().clone();
                    *old.client_secrets.lock().unwrap() = secrets;
                    return Ok(shared.clone());
                }
                _ => {}
            }
        }
        let fresh = Arc::new(fresh);
        accounts.insert(key, fresh.clone());
        Ok(fresh)
    }

    /// The connector's credentials, read from the environment variables its config names;
    /// the error names the one that is not set.
    fn for_connector(connector: &Connector) -> anyhow::Result<Auth> {
        let value = |key: &str, name: &str| {
            env_value(name).ok_or_else(|| {
                // Only the dispatcher can do without: a dry run sends nothing.
                let hint = if connector.dry_run {
                    "; `dry_run` spares only the sending"
                } else {
                    " (sending alone can do without it, with dry_run = true)"
                };
                anyhow::anyhow!(
                    "connector {:?}: environment variable {name} ({key}) {}: reading from HubSpot needs it{hint}",
                    connector.id,
                    env_missing(name)
                )
            })
        };
        Ok(match &connector.credentials {
            Credentials::Static { access_token_env } => {
                let token = value("access_token_env", access_token_env)?;
                // Else every call fails before it leaves, as a connection failure would.
                anyhow::ensure!(
                    reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).is_ok(),
                    "connector {:?}: environment variable {access_token_env} (access_token_env) holds a character no HTTP header may carry: set it to the token alone",
                    connector.id
                );
                Auth::Static(token.into())
            }
            Credentials::OAuth {
                client_id_env,
                refresh_token_env,
            } => {
                let secrets: Vec<String> = connector
                    .client_secrets()
                    .into_iter()
                    .map(|(_, s)| s)
                    .collect();
                anyhow::ensure!(
                    !secrets.is_empty(),
                    "connector {:?}: OAuth needs the app's client secret in {}",
                    connector.id,
                    connector.client_secret_env[0]
                );
                Auth::oauth_rotating(
                    &value("client_id_env", client_id_env)?,
                    secrets,
                    &value("refresh_token_env", refresh_token_env)?,
                )
            }
        })
    }

    /// Whether a refused token (401) may be cured by refreshing it.
    pub fn refreshes(&self) -> bool {
        matches!(self, Auth::OAuth(_))
    }

    /// HubSpot answered 401 to `token`: it is handed to no one else, and the next call
    /// refreshes (while the refused call waited its turn to retry, every call admitted took
    /// it and was refused in turn, an audit found).
    pub fn refused(&self, token: &str) {
        let Auth::OAuth(oauth) = self else { return };
        let mut in_hand = oauth.in_hand.lock().unwrap();
        if in_hand.as_ref().is_some_and(|(t, _)| &**t == token) {
            *in_hand = None;
        }
    }

    /// The token to send. `refused` is a token HubSpot just answered 401 to: a new one is
    /// obtained unless another call already replaced it.
    pub async fn bearer(
        &self,
        http: &reqwest::Client,
        base: &str,
        refused: Option<&str>,
    ) -> Result<Arc<str>, ApiError> {
        let oauth = match self {
            Auth::Static(token) => return Ok(token.clone()),
            Auth::OAuth(oauth) => oauth,
        };
        let tried = oauth.attempts.load(Ordering::Acquire);
        if let Some(refused) = refused {
            self.refused(refused);
        }
        let mut current = match oauth.current.try_lock() {
            Ok(current) => current,
            // A refresh under way: the token in hand, while it may be kept.
            Err(_) => match oauth.token_in_hand() {
                Some(token) if refused.is_none() => return Ok(token),
                _ => oauth.current.lock().await,
            },
        };
        // A refresh taken up from a caller dropped long before is made again, once, when its
        // outcome is of no use now.
        let mut retried = false;
        loop {
            // Whether this call began the refresh it waits for: its own slow failure is its
            // answer (taken for a dropped caller's, it was made again at once: two requests
            // and twice the timeout; an audit).
            let mut began = false;
            if current.under_way.is_none() {
                if let Some(access) = &current.access
                    && access.refresh_at > Instant::now()
                    && oauth.holds(&access.token)
                {
                    return Ok(access.token.clone());
                }
                // One that failed while this call waited for the lock: its answer is this
                // call's.
                if let Some((e, attempt)) = current.failed.as_deref()
                    && *attempt > tried
                    && !retried
                {
                    return Err(e.clone());
                }
                // Counted once finished, so a call that began waiting meanwhile takes its
                // outcome.
                let attempt = oauth.attempts.load(Ordering::Acquire) + 1;
                current.under_way = Some(UnderWay {
                    task: oauth.spawn_refresh(http, base),
                    attempt,
                    started: Instant::now(),
                });
                began = true;
            } else if refused.is_none()
                && let Some(token) = oauth.token_in_hand()
            {
                // A refresh a dropped caller began: the token in hand serves meanwhile, as
                // beside any refresh (a review).
                return Ok(token);
            }
            let under_way = current.under_way.as_mut().expect("a refresh under way");
            let (attempt, started) = (under_way.attempt, under_way.started);
            // Dropped here, this call leaves the refresh under way for the next.
            let refreshed = (&mut under_way.task).await.unwrap_or_else(|e| {
                Err(ApiError::NoAccessToken {
                    status: None,
                    message: format!("refreshing the access token failed: {e}"),
                })
            });
            current.under_way = None;
            oauth.attempts.store(attempt, Ordering::Release);
            // Begun by a caller dropped long ago (a connector paused for hours): a failure, or
            // a token past its use, is no answer now (a review). A rotated refresh token was
            // kept all the same.
            let of_no_use = match &refreshed {
                Ok(access) => Instant::now() >= access.keep_until(),
                Err(_) => true,
            };
            let stale = !began && started.elapsed() > REFRESH_RETRY && of_no_use;
            if stale && !retried {
                retried = true;
                continue;
            }
            return match refreshed {
                Ok(access) => {
                    let token = access.token.clone();
                    *oauth.in_hand.lock().unwrap() = Some((token.clone(), access.keep_until()));
                    (current.access, current.failed) = (Some(access), None);
                    Ok(token)
                }
                Err(e) => {
                    // Not a refusal, and not for a token HubSpot refused: the one in hand
                    // serves.
                    if let (ApiError::NoAccessToken { .. }, None) = (&e, refused)
                        && let Some(token) = current
                            .access
                            .as_mut()
                            .filter(|a| oauth.holds(&a.token))
                            .and_then(|a| a.still_good(Instant::now()))
                    {
                        tracing::warn!(
                            "{e}; the current access token is used until it nearly expires"
                        );
                        return Ok(token);
                    }
                    current.failed = Some(Box::new((e.clone(), attempt)));
                    Err(e)
                }
            };
        }
    }
}

/// What a form body escapes: all but letters, digits and `*-._`.
const FORM: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'*')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_');

impl OAuth {
    /// Whether `token` is the one in hand: [`Auth::refused`] withdraws a token from there
    /// without waiting for `current`, and a token is kept only while it is there.
    fn holds(&self, token: &str) -> bool {
        let in_hand = self.in_hand.lock().unwrap();
        in_hand.as_ref().is_some_and(|(t, _)| &**t == token)
    }

    /// The token in hand, while it may be kept.
    fn token_in_hand(&self) -> Option<Arc<str>> {
        let in_hand = self.in_hand.lock().unwrap().clone();
        in_hand.and_then(|(token, until)| (Instant::now() < until).then_some(token))
    }

    /// [`OAuth::refresh`] in a task of its own: a caller dropped mid-refresh (a pause, a
    /// shutdown) would drop HubSpot's answer with it, and the refresh token it rotates in
    /// place of the one it spent (an audit). The task keeps that token whoever waits for it.
    fn spawn_refresh(
        self: &Arc<Self>,
        http: &reqwest::Client,
        base: &str,
    ) -> tokio::task::JoinHandle<Result<Access, ApiError>> {
        let (oauth, http, base) = (self.clone(), http.clone(), base.to_string());
        let refresh = async move { oauth.refresh(&http, &base).await };
        match REFRESHES.get() {
            Some(runtime) => runtime.spawn(refresh),
            None => tokio::spawn(refresh),
        }
    }

    /// A new access token, with the current client secret or, refused, the next one: the
    /// README's rotation names the new secret first before HubSpot takes it.
    async fn refresh(&self, http: &reqwest::Client, base: &str) -> Result<Access, ApiError> {
        let mut refused = None;
        let secrets = self.client_secrets.lock().unwrap().clone();
        for secret in &secrets {
            match self.refresh_with(http, base, secret).await {
                Err(e @ ApiError::Permanent { .. }) => {
                    refused.get_or_insert(e);
                }
                other => return other,
            }
        }
        Err(refused.expect("an OAuth connector has a client secret"))
    }

    async fn refresh_with(
        &self,
        http: &reqwest::Client,
        base: &str,
        client_secret: &str,
    ) -> Result<Access, ApiError> {
        let refresh_token = self.refresh_token.lock().unwrap().clone();
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", client_secret),
            ("refresh_token", refresh_token.as_str()),
        ];
        // Whatever goes wrong, the call it was for was not made.
        let unavailable = |status: Option<u16>, message: String| ApiError::NoAccessToken {
            status,
            message: format!("HubSpot's token endpoint: {message}"),
        };
        let started = Instant::now();
        let resp = http
            .post(format!("{base}{TOKEN_PATH}"))
            .form(&form)
            .send()
            .await
            .map_err(|e| unavailable(None, unanswered(e)))?;
        let status = resp.status();
        // A token answer is a few hundred bytes.
        let (bytes, _) = read_at_most(resp, 64 << 10)
            .await
            .map_err(|e| unavailable(Some(status.as_u16()), unanswered(e)))?;
        let text = String::from_utf8_lossy(&bytes);
        let json = serde_json::from_str::<serde_json::Value>(&text).ok();
        if !status.is_success() {
            // An edge's page may echo the form it was sent: the secrets never reach a
            // message, which goes to outcome rows, `/status` and logs (an audit).
            // As sent, and as a form encodes it (`+`, `/`, `=` escaped).
            let secrets = [client_secret, refresh_token.as_str()];
            let message = redacted(text.trim().to_string(), secrets, FORM);
            let message: String = message.chars().take(MESSAGE_CHARS).collect();
            // A 429 there is no refusal of the credentials: the connector waits, as for a 5xx.
            return Err(
                if matches!(status.as_u16(), 400 | 401 | 403) && json.is_some() {
                    // A refresh token or client credentials HubSpot refuses: the connector's
                    // credentials are wrong, as with a refused static token. (Another 4xx, a
                    // path gone or a timeout at an edge, says nothing of them.)
                    ApiError::Permanent {
                        status: 401,
                        message: format!(
                            "HubSpot refused to refresh the OAuth access token ({status}): {message}"
                        ),
                        correlation_id: None,
                    }
                } else {
                    // A 5xx, or a page from something in front of HubSpot (an edge, a proxy):
                    // nothing about the credentials.
                    unavailable(Some(status.as_u16()), format!("HTTP {status}: {message}"))
                },
            );
        }
        // A rotated refresh token is kept before anything else is read: HubSpot has spent the
        // old one, whatever else is wrong with the answer.
        if let Some(rotated) = json
            .as_ref()
            .and_then(|j| j.get("refresh_token").or_else(|| j.get("refreshToken")))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
        {
            *self.refresh_token.lock().unwrap() = rotated.to_string();
        }
        let answer: TokenAnswer = json
            .ok_or_else(|| "not JSON".to_string())
            .and_then(|j| serde_json::from_value(j).map_err(|e| e.to_string()))
            .map_err(|e| {
                unavailable(
                    Some(status.as_u16()),
                    format!("an answer sendtime cannot read ({e})"),
                )
            })?;
        // A token no header can carry would fail every call before it leaves.
        if answer.access_token.is_empty()
            || reqwest::header::HeaderValue::from_str(&answer.access_token).is_err()
        {
            return Err(unavailable(
                Some(status.as_u16()),
                "an empty access token, or one no HTTP header can carry".into(),
            ));
        }
        let expires_in = answer
            .expires_in
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.trim().parse().ok()))
            .unwrap_or(DEFAULT_TOKEN_LIFE_S);
        // HubSpot's last 30 minutes; a broken answer must neither overflow the clock nor make
        // every call refresh.
        let life = Duration::from_secs(expires_in.clamp(MIN_TOKEN_LIFE_S, MAX_TOKEN_LIFE_S));
        let margin = REFRESH_MARGIN.min(life / 6);
        tracing::info!(expires_in_s = expires_in, "OAuth access token refreshed");
        Ok(Access {
            token: answer.access_token.into(),
            refresh_at: started + life - margin,
            expires_at: started + life,
            margin,
        })
    }
}

/// What went wrong with a request that got no (complete) answer, as [`transport`] says it.
fn unanswered(e: reqwest::Error) -> String {
    match transport(e) {
        ApiError::Transient { message, .. } => message,
        other => other.to_string(),
    }
}
