//! The JSON Schema of `webhooks.toml` (`sendtime schema`, shipped as `webhooks.schema.json`),
//! for editors (Taplo / Even Better TOML) to complete and check the file as it is typed.
//! Defaults come from the same constants the reader uses; `tests/schema.rs` proves the schema
//! and the reader agree on every key, type, range and default.

use serde_json::{Map, Value, json};

use super::{
    Connector, ImportSchedule, MAX_MODEL_COUNT, Scheduler, Server, Webhook, WebhookType,
    model_range,
};
use crate::model::ModelConfig;

/// What the shipped config names on its first line.
pub const FILE: &str = "webhooks.schema.json";

/// A string key that names or configures something, so it may not be empty.
fn string(doc: &str) -> Value {
    json!({"type": "string", "minLength": 1, "description": doc})
}

/// Free text for people, which may be empty.
fn text(doc: &str) -> Value {
    json!({"type": "string", "description": doc})
}

fn with_default(mut v: Value, default: Value) -> Value {
    v["default"] = default;
    v
}

fn integer(doc: &str, min: u64, max: u64) -> Value {
    json!({"type": "integer", "minimum": min, "maximum": max, "description": doc})
}

fn number(doc: &str, min: f64, max: f64, default: f64) -> Value {
    json!({"type": "number", "minimum": min, "maximum": max, "default": default, "description": doc})
}

fn holdout() -> Value {
    number(
        "The share of receipts sent at receipt, as without sendtime, to measure lift (sendtime report lift).",
        0.0,
        Webhook::MAX_HOLDOUT,
        0.0,
    )
}

/// The `[model]` number `key`, in its range ([`super::MODEL_NUMBERS`]).
fn model_number<'k>(key: &'k str, doc: &str, default: f64) -> (&'k str, Value) {
    let (min, max) = model_range(key);
    (key, number(doc, min, max, default))
}

/// The `[model]` knob `key`, which the account's data fits (`"auto"`, the default) or the
/// file fixes, in its range.
fn auto_or_number<'k>(key: &'k str, doc: &str) -> (&'k str, Value) {
    let (min, max) = model_range(key);
    let value = json!({
        "description": doc,
        "default": "auto",
        "anyOf": [
            {"type": "number", "minimum": min, "maximum": max},
            {"const": "auto"},
        ],
    });
    (key, value)
}

fn boolean(doc: &str, default: bool) -> Value {
    json!({"type": "boolean", "default": default, "description": doc})
}

fn choice(doc: &str, values: &[&str]) -> Value {
    json!({"type": "string", "enum": values, "description": doc})
}

fn table(doc: &str, properties: Vec<(&str, Value)>, required: &[&str]) -> Value {
    let properties: Map<String, Value> = properties
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    json!({
        "type": "object",
        "description": doc,
        "additionalProperties": false,
        "required": required,
        "properties": properties,
    })
}

const ID_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$";
const ENV_PATTERN: &str = "^[A-Za-z_][A-Za-z0-9_]*$";
const SPAN_PATTERN: &str = "^[1-9][0-9]*[mhd]$";
/// An http(s) URL as the reader takes it: no space anywhere, no user info, no query or
/// fragment.
const HTTP_URL_PATTERN: &str = "^https?://[^\\s?#@/]+(/[^\\s?#]*)?$";
/// An IP address and port, as `SocketAddr` parses them (a host name is refused).
const SOCKET_PATTERN: &str = "^([0-9]{1,3}(\\.[0-9]{1,3}){3}|\\[[0-9A-Fa-f:.]+\\]):[0-9]{1,5}$";
const QUIET_PATTERN: &str =
    "^([01]?[0-9]|2[0-3]):[0-5][0-9]-(([01]?[0-9]|2[0-3]):[0-5][0-9]|24:00)$";

fn id(doc: &str) -> Value {
    json!({"type": "string", "pattern": ID_PATTERN, "description": doc})
}

fn socket(doc: &str) -> Value {
    json!({"type": "string", "pattern": SOCKET_PATTERN, "description": doc})
}

fn env_name(doc: &str) -> Value {
    json!({"type": "string", "pattern": ENV_PATTERN, "description": doc})
}

fn window() -> Value {
    json!({"type": "string", "pattern": SPAN_PATTERN,
           "description": "How long after receipt a timed contact may wait: 90m, 36h or 7d, 1h to 7d; the type's default when absent (24 hours, 7 days)"})
}

fn quiet_hours(doc: &str) -> Value {
    json!({"type": "string", "pattern": QUIET_PATTERN, "description": doc})
}

fn types(accepted: impl Fn(WebhookType) -> bool) -> Vec<&'static str> {
    WebhookType::ALL
        .into_iter()
        .filter(|t| accepted(*t))
        .map(WebhookType::as_str)
        .collect()
}

/// The schema, as JSON.
pub fn schema() -> Value {
    let model = ModelConfig::default();
    let (p, t) = (&model.params, &model.thresholds);
    let server = table(
        "Where the receiver listens and what it accepts.",
        vec![
            (
                "listen",
                with_default(
                    socket("IP address and port to listen on (serve --listen overrides it)."),
                    json!(Server::DEFAULT_LISTEN.to_string()),
                ),
            ),
            (
                "admin_listen",
                with_default(
                    socket(
                        "IP address and port of the admin surface (the dashboard, /status, /metrics), never the public listener (serve --admin-listen overrides it).",
                    ),
                    json!(Server::DEFAULT_ADMIN_LISTEN.to_string()),
                ),
            ),
            (
                "admin_token_env",
                env_name(
                    "The environment variable holding the admin surface's bearer token; required when admin_listen is not loopback (validate refuses the config without it).",
                ),
            ),
            (
                "public_url",
                json!({"type": "string", "format": "uri", "pattern": HTTP_URL_PATTERN, "description": "The URL HubSpot calls, without a trailing slash; signatures v2/v3 cover it."}),
            ),
            (
                "data_dir",
                with_default(
                    json!({"type": "string", "pattern": "^\\S(.*\\S)?$", "description": "Where the datasets live, relative to this file (--data overrides it)."}),
                    json!(Server::DEFAULT_DATA_DIR),
                ),
            ),
            (
                "max_body_bytes",
                with_default(
                    integer(
                        "Larger posts get 413.",
                        1,
                        Server::MAX_MAX_BODY_BYTES as u64,
                    ),
                    json!(Server::DEFAULT_MAX_BODY_BYTES),
                ),
            ),
            (
                "archive_days",
                integer(
                    "Days an archived receipt (its inbox, plan and outcome rows, emails included) is kept, from its receipt; absent, kept for good.",
                    1,
                    Server::MAX_ARCHIVE_DAYS.into(),
                ),
            ),
        ],
        &["public_url"],
    );
    let scheduler = table(
        "When the dispatcher runs.",
        vec![(
            "cron",
            with_default(
                string("Cron expression, six fields, seconds first."),
                json!(Scheduler::DEFAULT_CRON),
            ),
        )],
        &[],
    );
    let import = table(
        "serve's own HubSpot email-event import.",
        vec![
            (
                "enabled",
                boolean(
                    "Import inside serve for each connector not in dry_run.",
                    true,
                ),
            ),
            (
                "cron",
                with_default(
                    string("When it runs: cron, seconds first."),
                    json!(ImportSchedule::DEFAULT_CRON),
                ),
            ),
        ],
        &[],
    );
    let model = table(
        "Model parameters and engagement-class thresholds.",
        vec![
            model_number(
                "half_life_days",
                "Half-life of an event's weight, in days.",
                p.half_life_days,
            ),
            model_number(
                "click_weight",
                "A click counts this many opens.",
                p.click_weight,
            ),
            auto_or_number(
                "prior_strength",
                "Population prior, in pseudo-events; \"auto\": fitted to the account's data.",
            ),
            auto_or_number(
                "hour_bandwidth",
                "Spread to neighbouring hours (sigma, hours); \"auto\": fitted to the account's data.",
            ),
            model_number(
                "day_pooling",
                "Share of counts pooled across weekdays.",
                p.day_pooling,
            ),
            model_number(
                "passive_ratio",
                "Recent rate below this share of the long-run rate: passive.",
                t.passive_ratio,
            ),
            model_number(
                "machine_per_day",
                "More events a day than this: machine-like.",
                t.machine_per_day,
            ),
            model_number(
                "machine_per_year",
                "More events a year than this: machine-like.",
                t.machine_per_year,
            ),
            (
                "evaluating_below",
                with_default(
                    integer(
                        "Fewer opens and clicks than this: evaluating.",
                        1,
                        MAX_MODEL_COUNT,
                    ),
                    json!(t.evaluating_below),
                ),
            ),
            (
                "inactive_days",
                with_default(
                    integer(
                        "No open or click for this many days: inactive.",
                        1,
                        MAX_MODEL_COUNT,
                    ),
                    json!(t.inactive_days),
                ),
            ),
            (
                "recent_days",
                with_default(
                    integer("Window of recent engagement, in days.", 1, MAX_MODEL_COUNT),
                    json!(t.recent_days),
                ),
            ),
        ],
        &[],
    );
    let max_id = i64::MAX as u64;
    let connector = table(
        "One HubSpot account and the app whose secret signs its posts.",
        vec![
            ("id", id("What webhooks name it by; URL-safe.")),
            (
                "portal_id",
                integer(
                    "The HubSpot account; posts naming another get 401.",
                    1,
                    max_id,
                ),
            ),
            (
                "app_id",
                integer(
                    "The app whose client secret signs the workflow's posts.",
                    1,
                    max_id,
                ),
            ),
            (
                "client_secret_env",
                json!({"description": "The environment variable(s) holding the app's client secret, current first.",
                "anyOf": [{"type": "string", "pattern": ENV_PATTERN},
                          {"type": "array", "minItems": 1, "maxItems": 8, "items": {"type": "string", "pattern": ENV_PATTERN}}]}),
            ),
            (
                "auth",
                with_default(
                    choice("How API calls authenticate.", &["static", "oauth"]),
                    json!("static"),
                ),
            ),
            (
                "client_id_env",
                env_name(
                    "With auth = \"oauth\": the environment variable holding the app's client id.",
                ),
            ),
            (
                "refresh_token_env",
                env_name(
                    "With auth = \"oauth\": the environment variable holding the installation's refresh token.",
                ),
            ),
            (
                "access_token_env",
                env_name(
                    "With auth = \"static\" (required then): the environment variable holding the token for API calls.",
                ),
            ),
            (
                "api_base",
                with_default(
                    json!({"type": "string", "pattern": HTTP_URL_PATTERN, "description": "HubSpot's API base (a stand-in in tests): https, or http to this machine only (localhost, a loopback address)."}),
                    json!(Connector::DEFAULT_API_BASE),
                ),
            ),
            (
                "requests_per_10s",
                with_default(
                    integer(
                        "The app's burst limit; the dispatcher paces a little under it.",
                        1,
                        Connector::MAX_REQUESTS_PER_10S.into(),
                    ),
                    json!(Connector::DEFAULT_REQUESTS_PER_10S),
                ),
            ),
            (
                "requests_per_day",
                with_default(
                    integer(
                        "The account's daily limit, for reference.",
                        1,
                        Connector::MAX_REQUESTS_PER_DAY.into(),
                    ),
                    json!(Connector::DEFAULT_REQUESTS_PER_DAY),
                ),
            ),
            (
                "list_batch_size",
                with_default(
                    integer(
                        "Record ids per list-membership call.",
                        1,
                        Connector::MAX_LIST_BATCH_SIZE as u64,
                    ),
                    json!(Connector::DEFAULT_LIST_BATCH_SIZE),
                ),
            ),
            (
                "callback_batch_size",
                with_default(
                    integer(
                        "Workflow-action callbacks per batch-complete call.",
                        1,
                        Connector::MAX_CALLBACK_BATCH_SIZE as u64,
                    ),
                    json!(Connector::DEFAULT_CALLBACK_BATCH_SIZE),
                ),
            ),
            (
                "dry_run",
                boolean("Record what would be called; call nothing.", false),
            ),
            (
                "allow_unsigned",
                boolean(
                    "Accept unsigned posts: local testing only (an error on a listener other machines reach, unless dry_run).",
                    false,
                ),
            ),
            (
                "require_portal_id",
                boolean("Refuse a post whose body names no portal.", false),
            ),
            (
                "min_signature_version",
                with_default(
                    choice(
                        "Refuse posts signed with an older version; \"auto\": per endpoint, older than the strongest it has taken.",
                        &["auto", "v1", "v2", "v3"],
                    ),
                    json!("auto"),
                ),
            ),
            (
                "daily_budget",
                integer(
                    "The most calls a day that planning may use.",
                    1,
                    Connector::MAX_REQUESTS_PER_DAY.into(),
                ),
            ),
            (
                "time_zone",
                string(
                    "The account's IANA zone: the day of daily_budget, and contacts' zone when theirs is unknown.",
                ),
            ),
            (
                "time_zone_property",
                with_default(
                    json!({"type": "string", "minLength": 1, "maxLength": 100, "description": "The contact property holding the contact's zone."}),
                    json!(crate::local_time::DEFAULT_ZONE_PROPERTY),
                ),
            ),
            (
                "quiet_hours",
                quiet_hours(
                    "Default quiet hours (HH:MM-HH:MM, the contact's local time) for its webhooks and actions.",
                ),
            ),
        ],
        &["id", "portal_id", "app_id", "client_secret_env"],
    );
    let webhook = table(
        "A HubSpot workflow's \"Send a webhook\" step: {public_url}/hooks/{id}.",
        vec![
            (
                "id",
                id("The URL path segment; unique across webhooks and actions."),
            ),
            ("name", text("For people; we suggest the workflow's name.")),
            (
                "connector",
                string("The connector id; may be left out when there is one."),
            ),
            (
                "type",
                choice("What happens to a posted contact.", &types(|_| true)),
            ),
            (
                "workflow_id",
                integer(
                    "The workflow to enroll into (every type but UPDATE_ONLY).",
                    1,
                    max_id,
                ),
            ),
            (
                "list_id",
                json!({"description": "The list to add to (UPDATE_ONLY).", "anyOf": [{"type": "string", "pattern": "^[1-9][0-9]{0,19}$"}, {"type": "integer", "minimum": 1}]}),
            ),
            ("window", window()),
            (
                "quiet_hours",
                quiet_hours("No send in this range of the contact's local day (HH:MM-HH:MM)."),
            ),
            ("holdout", holdout()),
        ],
        &["id", "type"],
    );
    let action = table(
        "sendtime's custom workflow action: {public_url}/actions/{id}.",
        vec![
            (
                "id",
                id("The action's URL path segment; unique across webhooks and actions."),
            ),
            ("name", text("The action's name in the workflow editor.")),
            (
                "connector",
                string(
                    "The connector whose app owns the action; may be left out when there is one.",
                ),
            ),
            (
                "default_type",
                with_default(
                    choice(
                        "The delivery type when the workflow chooses none.",
                        &types(WebhookType::enrolls),
                    ),
                    json!(WebhookType::Next24Hours.as_str()),
                ),
            ),
            ("window", window()),
            (
                "quiet_hours",
                quiet_hours("No send in this range of the contact's local day (HH:MM-HH:MM)."),
            ),
            ("holdout", holdout()),
        ],
        &["id"],
    );
    let mut root = table(
        "sendtime's webhooks.toml",
        vec![
            (
                "version",
                json!({"type": "integer", "const": super::SUPPORTED_VERSION, "description": "The schema version."}),
            ),
            ("server", server),
            ("scheduler", scheduler),
            ("import", import),
            ("model", model),
            ("connector", json!({"type": "array", "items": connector})),
            ("webhook", json!({"type": "array", "items": webhook})),
            ("action", json!({"type": "array", "items": action})),
        ],
        &["version", "server", "connector"],
    );
    root["$schema"] = json!("http://json-schema.org/draft-07/schema#");
    root["title"] = json!("webhooks.toml");
    root
}
