//! `webhooks.toml`: the one declarative file that says which HubSpot accounts we talk to and
//! which webhooks we accept. The types and their defaults are here; [`read`] reads each table
//! (types, ranges, defaults) with the machinery of [`reader`], [`validation`] runs the checks
//! across tables as named passes, and [`watch`] reloads the file live.

mod diagnostics;
mod read;
mod reader;
pub mod schema;
mod validation;
mod watch;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use diagnostics::{Diagnostic, Diagnostics, Severity};
pub use watch::{ConfigHandle, Watcher};

use crate::local_time::QuietHours;

/// The schema versions this build understands.
pub const SUPPORTED_VERSION: i64 = 1;
/// A larger config file is refused: thousands of webhooks fit in a fraction of this.
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;
/// How the warning of a `[scheduler] cron` firing more than once a minute begins: `serve`
/// leaves it out under a faster clock (the demo's), whose every run spans minutes.
pub const FAST_DISPATCH_WARNING: &str = "the dispatcher runs more than once a minute";

/// The `[model]` keys that take a number, and the range each takes: one table for the
/// reader's checks and the schema.
pub const MODEL_NUMBERS: [(&str, f64, f64); 8] = [
    ("prior_strength", 0.0, 1e6),
    ("hour_bandwidth", 0.0, 24.0),
    ("half_life_days", 1.0, 1e9),
    ("click_weight", 0.0, 100.0),
    ("day_pooling", 0.0, 1.0),
    ("passive_ratio", 0.0, 1.0),
    ("machine_per_day", 1.0, 1e9),
    ("machine_per_year", 1.0, 1e12),
];
/// The largest a `[model]` count (of days, or of opens and clicks) may be.
pub const MAX_MODEL_COUNT: u64 = 100_000;

/// The range of the `[model]` number `key` ([`MODEL_NUMBERS`]).
pub fn model_range(key: &str) -> (f64, f64) {
    let (_, min, max) = MODEL_NUMBERS
        .into_iter()
        .find(|(k, ..)| *k == key)
        .expect("a [model] key that takes a number");
    (min, max)
}

/// The config file's first [`MAX_CONFIG_BYTES`] + 1 bytes at most: more than the limit says it
/// is too large. A file of gigabytes, or one growing while it is read (a log redirected into
/// it by mistake), is never read whole (a reload read it all first, to hash it).
pub fn read_head(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// A validated configuration. Built only by [`Config::load`] / [`Config::from_text`], so
/// every value in it has passed the checks in [`parse`].
#[derive(Debug, Clone)]
pub struct Config {
    /// The schema version, [`SUPPORTED_VERSION`].
    pub version: i64,
    pub server: Server,
    pub scheduler: Scheduler,
    /// `serve`'s own HubSpot import (`[import]`).
    pub import: ImportSchedule,
    /// Model parameters and engagement-class thresholds (`[model]`, all optional).
    pub model: crate::model::ModelConfig,
    /// At least one; ids unique.
    pub connectors: Vec<Connector>,
    /// Ids unique; each names one of `connectors`.
    pub webhooks: Vec<Webhook>,
    /// Short hash of the file's bytes: written on rows and logs so every decision can be
    /// traced to the exact config that made it.
    pub identity: String,
    /// Where the config was read from (relative paths inside it resolve against its folder).
    pub path: PathBuf,
}

/// `[server]`: where the receiver listens and what it accepts.
#[derive(Debug, Clone)]
pub struct Server {
    /// Address and port to listen on (`serve --listen` overrides it): the public surface,
    /// `/hooks/`, `/actions/` and `/healthz` only.
    pub listen: SocketAddr,
    /// The admin surface (`/status`, `/metrics`): never on the public listener
    /// (`serve --admin-listen` overrides it).
    pub admin_listen: SocketAddr,
    /// The environment variable holding the admin surface's bearer token; unset, the admin
    /// surface takes any request that reaches it (loopback by default) and names this machine
    /// in `Host`.
    pub admin_token_env: Option<String>,
    /// The URL HubSpot calls, without a trailing slash. Signatures v2/v3 cover it, so it must
    /// be the public one, not the local listener.
    pub public_url: String,
    /// Where the datasets live; relative paths in the file resolve against its folder.
    pub data_dir: PathBuf,
    /// Larger posts get 413.
    pub max_body_bytes: usize,
    /// Days an archived receipt's rows (inbox, plan, outcomes: emails and ids) are kept,
    /// counted from its receipt; `None` keeps them for good. An erasure policy needs an end.
    pub archive_days: Option<u32>,
}

impl Server {
    /// Loopback: expose it on purpose, behind the proxy that HubSpot calls.
    pub const DEFAULT_LISTEN: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);
    /// Loopback, beside the public port.
    pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8081);
    /// Beside the config file.
    pub const DEFAULT_DATA_DIR: &str = "data";
    /// Real contact bodies are tens of KB; 1 MiB leaves room.
    pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
    /// Below this, `validate` warns: a contact with many properties would be refused (413,
    /// which HubSpot does not retry).
    pub const SMALL_MAX_BODY_BYTES: usize = 32 * 1024;
    /// The shortest admin token `serve` starts with: nothing slows guesses down, only length.
    pub const MIN_ADMIN_TOKEN_CHARS: usize = 16;

    /// Why `token` cannot be the admin surface's, if it cannot ("... holds ..."): too short to
    /// resist guessing, or not printable ASCII, which no request's header would carry as it
    /// is, so that every request was refused. (Spaces at its ends are trimmed as it is read.)
    pub fn admin_token_problem(token: &str) -> Option<String> {
        let advice = "use a long random one, e.g. `openssl rand -hex 32`";
        if token.chars().count() < Self::MIN_ADMIN_TOKEN_CHARS {
            Some(format!(
                "holds fewer than {} characters: anyone who reaches the admin port could guess it; {advice}",
                Self::MIN_ADMIN_TOKEN_CHARS
            ))
        } else if !token.bytes().all(|b| (b' '..=b'~').contains(&b)) {
            Some(format!(
                "holds characters beyond printable ASCII, which no request's header carries as they are: the token could never be given; {advice}"
            ))
        } else {
            None
        }
    }
    /// Beyond 64 MiB a "webhook" is not a contact.
    pub const MAX_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
    /// A century: past it, keeping for good says the same.
    pub const MAX_ARCHIVE_DAYS: u32 = 36_500;
}

/// `[scheduler]`: when the dispatcher runs.
#[derive(Debug, Clone)]
pub struct Scheduler {
    /// The expression as written.
    pub cron: String,
    /// It parsed, and it fires at some time after the config was loaded.
    pub schedule: croner::Cron,
}

impl Scheduler {
    /// Second 0 of every minute (seconds come first).
    pub const DEFAULT_CRON: &str = "0 * * * * *";
    /// `validate` warns about a schedule with a longer stretch without a run: contacts due in
    /// it go late.
    pub const LONGEST_QUIET: chrono::TimeDelta = chrono::TimeDelta::hours(1);
}

/// `[import]`: `serve` imports new HubSpot email events for each connector on this schedule,
/// so profiles stay current without a separate cron job.
#[derive(Debug, Clone)]
pub struct ImportSchedule {
    /// `false`: no import inside `serve` (run `sendtime import hubspot` yourself).
    pub enabled: bool,
    /// The expression as written.
    pub cron: String,
    /// It parsed, and it fires at some time after the config was loaded.
    pub schedule: croner::Cron,
}

impl ImportSchedule {
    /// Every 15 minutes, at second 0.
    pub const DEFAULT_CRON: &str = "0 */15 * * * *";
}

/// `[[connector]]`: one HubSpot account (portal) and the app whose secret signs its workflow
/// webhooks.
#[derive(Debug, Clone)]
pub struct Connector {
    /// What webhooks name it by; URL-safe.
    pub id: String,
    /// The HubSpot account; posts naming another portal get 401.
    pub portal_id: u64,
    /// The app whose client secret signs the workflow's posts.
    pub app_id: u64,
    /// The environment variables holding that app's client secret, current first: during a
    /// rotation a post signed with any of them is accepted.
    pub client_secret_env: Vec<String>,
    /// How API calls authenticate (`auth`).
    pub credentials: Credentials,
    /// HubSpot's API base (a stand-in in tests), without a trailing slash.
    pub api_base: String,
    /// The app's burst limit; the dispatcher paces a little under it.
    pub requests_per_10s: u32,
    /// The account's daily limit, for reference: HubSpot's DAILY 429 is what pauses.
    pub requests_per_day: u32,
    /// Record ids per list-membership call (UPDATE_ONLY).
    pub list_batch_size: usize,
    /// Workflow-action callbacks per batch-complete call.
    pub callback_batch_size: usize,
    /// Record what would be called; call nothing.
    pub dry_run: bool,
    /// Accept posts without a signature. For local testing only; warned about loudly.
    pub allow_unsigned: bool,
    /// Refuse (401) a post whose body names no portal.
    pub require_portal_id: bool,
    /// Refuse (503, an action's 429) posts signed with an older version: v1 signs only the body, so a captured
    /// v1 post can be replayed to any webhook of the connector. `"auto"`: per endpoint, the
    /// strongest it has taken.
    pub min_signature_version: crate::receiver::signature::Floor,
    /// The most calls per day (in `time_zone`) that planning may use, so sendtime can share
    /// the account's daily allowance with other integrations; unlimited when absent.
    pub daily_budget: Option<u32>,
    /// The account's zone: its day for `daily_budget`, the zone of contacts whose own is
    /// unknown, and a midnight a daily-limit pause may end at. UTC when absent.
    pub time_zone: Option<chrono_tz::Tz>,
    /// The contact property (in posted bodies) that holds the contact's zone.
    pub time_zone_property: String,
    /// Quiet hours for the connector's webhooks and actions that set none.
    pub quiet_hours: Option<QuietHours>,
}

impl Connector {
    /// HubSpot's production API.
    pub const DEFAULT_API_BASE: &str = "https://api.hubapi.com";
    /// HubSpot's burst limit for a private app on a Free or Starter account.
    pub const DEFAULT_REQUESTS_PER_10S: u32 = 100;
    pub const MAX_REQUESTS_PER_10S: u32 = 10_000;
    /// HubSpot's daily limit for a Free or Starter account.
    pub const DEFAULT_REQUESTS_PER_DAY: u32 = 250_000;
    pub const MAX_REQUESTS_PER_DAY: u32 = 100_000_000;
    /// A batch HubSpot refuses as too large is split and sent on anyway.
    pub const DEFAULT_LIST_BATCH_SIZE: usize = 2500;
    pub const MAX_LIST_BATCH_SIZE: usize = 100_000;
    /// Callbacks completed per call of HubSpot's batch-complete endpoint.
    pub const DEFAULT_CALLBACK_BATCH_SIZE: usize = 100;
    pub const MAX_CALLBACK_BATCH_SIZE: usize = 100;
}

impl Connector {
    /// The client secrets set in the environment (non-empty), current first, each with the
    /// name of its variable.
    pub fn client_secrets(&self) -> Vec<(&str, String)> {
        self.client_secret_env
            .iter()
            .filter_map(|name| Some((name.as_str(), env_value(name)?)))
            .collect()
    }
}

/// How a connector's API calls authenticate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Credentials {
    /// `auth = "static"`: a token that does not expire, from `access_token_env` (a
    /// developer-platform app's static token, a service key, or a legacy private app's token).
    Static { access_token_env: String },
    /// `auth = "oauth"`: an installed app's refresh token (`refresh_token_env`) and client id
    /// (`client_id_env`), with the app's client secret; access tokens (30 minutes) are obtained
    /// and refreshed before they expire.
    OAuth {
        client_id_env: String,
        refresh_token_env: String,
    },
}

impl Credentials {
    /// `auth`'s values.
    pub const STATIC: &str = "static";
    pub const OAUTH: &str = "oauth";

    /// The variables the credentials are read from, for messages: `A` or `A and B`.
    pub fn describe(&self) -> String {
        let names: Vec<&str> = self.env_names().into_iter().map(|(_, n)| n).collect();
        names.join(" and ")
    }

    /// The environment variables the credentials are read from, with their keys.
    pub fn env_names(&self) -> Vec<(&'static str, &str)> {
        match self {
            Credentials::Static { access_token_env } => {
                vec![("access_token_env", access_token_env)]
            }
            Credentials::OAuth {
                client_id_env,
                refresh_token_env,
            } => vec![
                ("client_id_env", client_id_env),
                ("refresh_token_env", refresh_token_env),
            ],
        }
    }
}

/// Whether two listeners would ask for one port: the same one on the same address, or on
/// every address of a family (`0.0.0.0` for IPv4; `::`, which takes IPv4 too) and another of
/// it. Port 0 picks a free port for each (tests do).
pub(crate) fn share_a_port(a: SocketAddr, b: SocketAddr) -> bool {
    let covers = |any: SocketAddr, other: SocketAddr| {
        any.ip().is_unspecified() && (any.is_ipv6() || other.is_ipv4())
    };
    a.port() == b.port() && a.port() != 0 && (a.ip() == b.ip() || covers(a, b) || covers(b, a))
}

/// Whether `url` is https, its scheme written in any case (`HTTPS://` was taken for http;
/// an audit).
pub(crate) fn is_https(url: &str) -> bool {
    url.get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
}

/// An environment variable's value without surrounding white space (a secret file's final
/// newline, CRLF line ends), if set and not blank: no token or secret contains white space.
pub fn env_value(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Why [`env_value`] found nothing in `name`, as a message says it: a variable set to blanks,
/// or to bytes that are not UTF-8, was said to be "not set", and sent people looking for a
/// missing export (a first-user audit).
pub fn env_missing(name: &str) -> &'static str {
    match std::env::var(name) {
        Err(std::env::VarError::NotPresent) => "is not set",
        Err(std::env::VarError::NotUnicode(_)) => "is set but not to UTF-8 text",
        Ok(_) => "is set but blank",
    }
}

/// What happens to a contact posted to a webhook. Stored (inbox, plan, the inbox's log) by
/// its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum WebhookType {
    #[serde(rename = "NEXT_24_HOURS")]
    Next24Hours,
    #[serde(rename = "NEXT_WEEK_FREQUENCY_OPTIMIZED")]
    NextWeekFrequencyOptimized,
    #[serde(rename = "NEXT_WEEK")]
    NextWeek,
    #[serde(rename = "IMMEDIATE")]
    Immediate,
    #[serde(rename = "UPDATE_ONLY")]
    UpdateOnly,
}

impl WebhookType {
    pub const ALL: [WebhookType; 5] = [
        WebhookType::Next24Hours,
        WebhookType::NextWeekFrequencyOptimized,
        WebhookType::NextWeek,
        WebhookType::Immediate,
        WebhookType::UpdateOnly,
    ];

    /// The name used in `webhooks.toml` and on stored rows.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookType::Next24Hours => "NEXT_24_HOURS",
            WebhookType::NextWeekFrequencyOptimized => "NEXT_WEEK_FREQUENCY_OPTIMIZED",
            WebhookType::NextWeek => "NEXT_WEEK",
            WebhookType::Immediate => "IMMEDIATE",
            WebhookType::UpdateOnly => "UPDATE_ONLY",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Timed types wait for a time inside a window; the others go on the next tick.
    pub fn timed(self) -> bool {
        !matches!(self, WebhookType::Immediate | WebhookType::UpdateOnly)
    }

    /// Enrolling types call the workflow enrollment API; UPDATE_ONLY updates a list instead.
    pub fn enrolls(self) -> bool {
        self != WebhookType::UpdateOnly
    }
}

impl fmt::Display for WebhookType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[[webhook]]` or `[[action]]`: one URL a HubSpot workflow posts contacts to (a "Send a
/// webhook" step at `/hooks/{id}`, or sendtime's custom workflow action at `/actions/{id}`;
/// the two share one id space).
#[derive(Debug, Clone)]
pub struct Webhook {
    /// The URL path segment; URL-safe, unique.
    pub id: String,
    /// For people; we suggest the workflow's name.
    pub name: Option<String>,
    /// Resolved connector id (filled in when the file leaves it out and there is one connector).
    pub connector: String,
    /// What happens to a posted contact (for an action, its `default_type`: the delivery type
    /// chosen in the workflow editor wins).
    pub kind: WebhookType,
    /// Where its contacts go; which one follows from `kind`.
    pub target: Target,
    /// How long after receipt a timed contact may wait (`window`); the type's default when
    /// absent (24 hours, 7 days).
    pub window: Option<i64>,
    /// No timed send in this local range of the contact's day (its own or its connector's).
    pub quiet_hours: Option<QuietHours>,
    /// The share of receipts held out: sent at receipt, as without sendtime, to measure lift.
    pub holdout: f64,
}

impl Webhook {
    /// Half at most: more would optimise fewer contacts than it measures.
    pub const MAX_HOLDOUT: f64 = 0.5;
    /// The shortest and longest `window`.
    pub const MIN_WINDOW_MS: i64 = crate::time::HOUR_MS;
    pub const MAX_WINDOW_MS: i64 = 7 * crate::time::DAY_MS;
}

/// Whether a webhook or action sending to `target`, through a connector of the account
/// `portal_id`, sends a receipt taken as an action's (`callback`: with a callback id) or as a
/// webhook's (`enrolls`: of a type that enrolls, none when unknown), for the account `portal`
/// (none: recorded by an older version). Not one of the other kind (the id changed kind
/// since), nor a list's receipt by a webhook that now enrolls or the reverse (its type changed
/// since: contacts queued for a list would be enrolled into an email workflow, an audit
/// found), nor one taken for another account (its connector changed since: its id there is
/// some other person's, or no one's).
pub fn sends(
    target: &Target,
    portal_id: u64,
    callback: bool,
    enrolls: Option<bool>,
    portal: Option<u64>,
) -> bool {
    let kind = match target {
        Target::Callback => callback,
        Target::Workflow(_) => !callback && enrolls != Some(false),
        Target::List(_) => !callback && enrolls != Some(true),
    };
    kind && portal.is_none_or(|p| p == portal_id)
}

/// Where a webhook's contacts go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Enrolled into this workflow (`workflow_id`; every type but UPDATE_ONLY).
    Workflow(u64),
    /// Added to this list (`list_id`; UPDATE_ONLY).
    List(String),
    /// A workflow action (`[[action]]`): the contact waits inside its workflow, and its
    /// callback is completed at the planned time.
    Callback,
}

impl Target {
    /// The workflow's or list's id, as calls and target holds name it; none for a workflow
    /// action, whose calls name each contact's callback.
    pub fn id(&self) -> Option<String> {
        match self {
            Target::Workflow(wf) => Some(wf.to_string()),
            Target::List(list) => Some(list.clone()),
            Target::Callback => None,
        }
    }
}

/// Command-line overrides that win over the file, on first load and on every reload.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
}

/// How to treat connector env vars that are unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvCheck {
    /// `validate` without `--online`: the config repo's CI has no secrets, so only warn.
    Warn,
    /// `serve`: a connector that calls HubSpot cannot run without them.
    Require,
    /// A running `serve`'s reload: as [`EnvCheck::Require`], but what applies on restart only
    /// (the admin token's variable) is the next start's to refuse (a reload was refused for a
    /// variable the running process does not use; a review).
    Reload,
    /// `tick`: it calls HubSpot but receives nothing, so only the access tokens are needed.
    RequireTokens,
}

/// A config that parsed and validated, plus the warnings worth showing (e.g. unset env vars).
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Diagnostics,
}

/// The ids a config names and its data folder: what an operator's pause needs. Read from a
/// loaded config, or from the file's TOML alone when it does not pass validation (a bad edit
/// that `serve` refused, keeping the config before it, is when a pause may be needed most).
#[derive(Debug, Clone, Default)]
pub struct Named {
    /// The file, for messages.
    pub path: PathBuf,
    pub data_dir: PathBuf,
    pub webhooks: Vec<String>,
    pub actions: Vec<String>,
    pub connectors: Vec<String>,
}

impl Named {
    pub fn of(config: &Config) -> Named {
        let (actions, webhooks): (Vec<&Webhook>, Vec<&Webhook>) = config
            .webhooks
            .iter()
            .partition(|w| w.target == Target::Callback);
        let ids = |ws: Vec<&Webhook>| ws.into_iter().map(|w| w.id.clone()).collect();
        Named {
            path: config.path.clone(),
            data_dir: config.server.data_dir.clone(),
            webhooks: ids(webhooks),
            actions: ids(actions),
            connectors: config.connectors.iter().map(|c| c.id.clone()).collect(),
        }
    }

    /// From the file's TOML alone: `[server] data_dir` (or `--data`) and the `id` of each
    /// `[[webhook]]`, `[[action]]` and `[[connector]]`. An error when it is not TOML.
    pub fn read(path: &Path, overrides: &Overrides) -> anyhow::Result<Named> {
        let bytes = read_head(path)?;
        anyhow::ensure!(
            bytes.len() as u64 <= MAX_CONFIG_BYTES,
            "config is over {MAX_CONFIG_BYTES} bytes"
        );
        let text = String::from_utf8(bytes)?;
        let doc: toml::Table = toml::from_str(&text)?;
        let ids = |table: &str| -> Vec<String> {
            doc.get(table)
                .and_then(toml::Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|t| t.get("id")?.as_str().map(str::to_string))
                .collect()
        };
        let data_dir = match overrides.data_dir.clone() {
            Some(dir) => dir,
            None => {
                // One that is there and no text is the error, not the default folder (an
                // erase there would erase from another folder; a review).
                let dir = match doc.get("server").and_then(|s| s.get("data_dir")) {
                    None => Server::DEFAULT_DATA_DIR,
                    Some(dir) => dir.as_str().ok_or_else(|| {
                        anyhow::anyhow!("server.data_dir is not a text (a folder's path)")
                    })?,
                };
                read::resolve(read::folder_of(path), dir)
            }
        };
        Ok(Named {
            path: path.to_path_buf(),
            data_dir,
            webhooks: ids("webhook"),
            actions: ids("action"),
            connectors: ids("connector"),
        })
    }
}

/// Why contacts of a webhook or action the config still names are held: what they were taken
/// for, it no longer sends ([`Config::route`]).
pub const HELD_AS_CHANGED: &str = "changed: made the other kind (a webhook and an action), switched between a list's type and an enrolling one, or moved to another account's connector";

/// What becomes of the contacts held for webhook or action `id`, and the way out: said by a
/// reload, at `serve`'s start and when they come due.
pub fn held_until_back(id: &str) -> String {
    format!(
        "the contacts it took before are held (not sent, not deleted) until it is back as it was, or `sendtime discard {id}` gives them up"
    )
}

/// What to do when no config file is where a command looked.
pub const NO_CONFIG_HINT: &str =
    "run from the folder that holds webhooks.toml, or give its path (--config PATH)";

impl Config {
    /// Read, parse and validate the file at `path`. All problems come back at once.
    pub fn load(path: &Path, overrides: &Overrides, env: EnvCheck) -> Result<Loaded, Diagnostics> {
        let cannot_read = |e: std::io::Error| {
            let hint = match e.kind() {
                std::io::ErrorKind::NotFound => format!("; {NO_CONFIG_HINT}"),
                _ => String::new(),
            };
            Diagnostics::whole_file(path, format!("cannot read config: {e}{hint}"))
        };
        let bytes = read_head(path).map_err(cannot_read)?;
        if bytes.len() as u64 > MAX_CONFIG_BYTES {
            let size = std::fs::metadata(path).map_or(bytes.len() as u64, |m| m.len());
            return Err(Diagnostics::whole_file(
                path,
                format!("config is {size} bytes; at most {MAX_CONFIG_BYTES} are read"),
            ));
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            // Reported where the first bad byte is: the text before it is sound.
            let valid = e.utf8_error().valid_up_to();
            let before = std::str::from_utf8(&e.as_bytes()[..valid]).unwrap_or_default();
            let at = diagnostics::Lines::new(before).line_column(valid);
            let mut d = Diagnostics::new(path);
            d.push(
                Severity::Error,
                at,
                format!("config is not valid UTF-8 here: {}", e.utf8_error()),
            );
            d
        })?;
        Self::from_text(path, &text, overrides, env)
    }

    /// Parse and validate `text` as if read from `path`.
    pub fn from_text(
        path: &Path,
        text: &str,
        overrides: &Overrides,
        env: EnvCheck,
    ) -> Result<Loaded, Diagnostics> {
        let mut loaded = read::parse(path, text, env, overrides)?;
        let config = &mut loaded.config;
        if let Some(dir) = &overrides.data_dir {
            config.server.data_dir = dir.clone();
        }
        if let Some(listen) = overrides.listen {
            config.server.listen = listen;
        }
        if let Some(listen) = overrides.admin_listen {
            config.server.admin_listen = listen;
        }
        let server = &config.server;
        // (Where the problem is, what it is.)
        let mut errors = Vec::new();
        let flags = overrides.listen.is_some() || overrides.admin_listen.is_some();
        if share_a_port(server.listen, server.admin_listen) {
            // At the address the file sets (the other is its default); both from the file
            // rather than flags, which read::parse cannot know of.
            let at = if flags {
                Diagnostics::COMMAND_LINE
            } else {
                ["admin_listen", "listen"]
                    .into_iter()
                    .find_map(|key| read::value_position(text, "server", key))
                    .unwrap_or((1, 1))
            };
            errors.push((at, format!(
                "the admin surface ({}) and the public listener ({}) share a port: `serve` could not listen on both, and the admin surface is never served to HubSpot's side; give `admin_listen` (or --admin-listen) another port",
                server.admin_listen, server.listen
            )));
        }
        // The file's own addresses are checked where they are read; the flags' only here.
        let token = server.admin_token_env.is_some();
        match (overrides.admin_listen)
            .and_then(|addr| read::admin_listen_problem("--admin-listen", addr, token))
        {
            Some((Severity::Error, error)) => errors.push((Diagnostics::COMMAND_LINE, error)),
            Some((_, warning)) => {
                (loaded.warnings).push(Severity::Warning, Diagnostics::COMMAND_LINE, warning)
            }
            None => {}
        }
        errors.extend(
            (overrides.listen)
                .and_then(|addr| {
                    (config.connectors.iter())
                        .find_map(|c| validation::exposed_unsigned("--listen", addr, c))
                })
                .map(|e| (Diagnostics::COMMAND_LINE, e)),
        );
        if errors.is_empty() {
            return Ok(loaded);
        }
        // Reported with the file's warnings, as every other problem is.
        let mut all = loaded.warnings;
        for (at, error) in errors {
            all.push(Severity::Error, at, error);
        }
        all.finish();
        Err(all)
    }

    pub fn connector(&self, id: &str) -> Option<&Connector> {
        self.connectors.iter().find(|c| c.id == id)
    }

    /// The webhook or action `id`.
    pub fn webhook(&self, id: &str) -> Option<&Webhook> {
        self.webhooks.iter().find(|w| w.id == id)
    }

    /// The webhook that sends a receipt taken by `id` (as an action's when `callback`, else
    /// to enroll or not as `enrolls` says) for the account `portal` ([`sends`]); none: such a
    /// receipt is held.
    pub fn route(
        &self,
        id: &str,
        callback: bool,
        enrolls: Option<bool>,
        portal: Option<u64>,
    ) -> Option<&Webhook> {
        self.webhook(id).filter(|w| {
            self.connector(&w.connector)
                .is_some_and(|c| sends(&w.target, c.portal_id, callback, enrolls, portal))
        })
    }

    /// The URL HubSpot calls for an action: its `actionUrl`.
    pub fn action_url(&self, action: &Webhook) -> String {
        format!("{}/actions/{}", self.server.public_url, action.id)
    }

    /// The URL to paste into the HubSpot workflow's "Send a webhook" step.
    pub fn webhook_url(&self, webhook: &Webhook) -> String {
        format!("{}/hooks/{}", self.server.public_url, webhook.id)
    }
}

/// The short content hash that identifies a config version.
pub fn identity_of(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    hex::encode(&digest[..6])
}
