//! Turns the text of `webhooks.toml` into a [`Config`], collecting every problem with its
//! line and column instead of stopping at the first.
//!
//! serde's `deny_unknown_fields` stops at the first error and silently stops working under
//! `flatten`, so the file is parsed into toml's spanned document tree and each table is read
//! by a [`TableReader`] that knows its keys: whatever it was not asked for is an unknown key.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{
    Config, Connector, DEFAULT_API_BASE, DEFAULT_CRON, DEFAULT_MAX_BODY_BYTES, Diagnostics,
    EnvCheck, Loaded, SUPPORTED_VERSION, Scheduler, Server, Severity, Target, Webhook, WebhookType,
    identity_of,
};

const TOP_KEYS: &[&str] = &[
    "version",
    "server",
    "scheduler",
    "model",
    "connector",
    "webhook",
];
const MODEL_KEYS: &[&str] = &[
    "half_life_days",
    "click_weight",
    "prior_strength",
    "hour_bandwidth",
    "day_pooling",
    "evaluating_below",
    "inactive_days",
    "recent_days",
    "passive_ratio",
    "machine_per_day",
    "machine_per_year",
];
const SERVER_KEYS: &[&str] = &["listen", "public_url", "data_dir", "max_body_bytes"];
const SCHEDULER_KEYS: &[&str] = &["cron"];
const CONNECTOR_KEYS: &[&str] = &[
    "id",
    "portal_id",
    "app_id",
    "client_secret_env",
    "access_token_env",
    "api_base",
    "requests_per_10s",
    "requests_per_day",
    "list_batch_size",
    "dry_run",
    "allow_unsigned",
];
const WEBHOOK_KEYS: &[&str] = &["id", "name", "connector", "type", "workflow_id", "list_id"];
/// Keys people reach for that would put a secret in git.
const INLINE_SECRET_KEYS: &[(&str, &str)] = &[
    ("client_secret", "client_secret_env"),
    ("secret", "client_secret_env"),
    ("access_token", "access_token_env"),
    ("token", "access_token_env"),
    ("api_key", "access_token_env"),
];

/// Where problems are collected while reading one file.
struct Ctx<'t> {
    text: &'t str,
    diags: Diagnostics,
}

impl Ctx<'_> {
    fn error(&mut self, at: usize, message: impl Into<String>) {
        self.diags
            .push(Severity::Error, self.text, at, message.into());
    }

    fn warning(&mut self, at: usize, message: impl Into<String>) {
        self.diags
            .push(Severity::Warning, self.text, at, message.into());
    }
}

type Value<'i> = Spanned<DeValue<'i>>;

/// Reads the keys of one table, type-checking each and reporting the ones it does not know.
struct TableReader<'a, 'i> {
    /// How the table is named in messages, e.g. `[server]` or `[[webhook]] #2`.
    name: String,
    table: &'a DeTable<'i>,
    /// Where "missing key" problems point: the table's header.
    at: usize,
}

impl<'a, 'i> TableReader<'a, 'i> {
    fn new(ctx: &mut Ctx, name: String, table: &'a DeTable<'i>, at: usize, known: &[&str]) -> Self {
        for (key, _) in table.iter() {
            let k = key.get_ref().as_ref();
            if known.contains(&k) {
                continue;
            }
            let hint = if let Some((_, env)) = INLINE_SECRET_KEYS.iter().find(|(s, _)| *s == k) {
                format!(
                    "; secrets never go in this file: name the environment variable that holds it with `{env}`"
                )
            } else if let Some(close) = closest(k, known) {
                format!("; did you mean `{close}`?")
            } else {
                format!("; expected one of: {}", known.join(", "))
            };
            ctx.error(
                key.span().start,
                format!("unknown key `{k}` in {name}{hint}"),
            );
        }
        Self { name, table, at }
    }

    fn get(&self, key: &str) -> Option<&'a Value<'i>> {
        self.table
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .map(|(_, v)| v)
    }

    fn missing(&self, ctx: &mut Ctx, key: &str, why: &str) {
        ctx.error(
            self.at,
            format!("missing required key `{key}` in {}{why}", self.name),
        );
    }

    fn wrong_type(&self, ctx: &mut Ctx, key: &str, v: &Value, expected: &str) {
        ctx.error(
            v.span().start,
            format!(
                "`{key}` in {} must be {expected}, found {}",
                self.name,
                describe(v.get_ref())
            ),
        );
    }

    fn string(&self, ctx: &mut Ctx, key: &str) -> Option<(String, usize)> {
        let v = self.get(key)?;
        match v.get_ref() {
            DeValue::String(s) => Some((s.to_string(), v.span().start)),
            _ => {
                self.wrong_type(ctx, key, v, "a string");
                None
            }
        }
    }

    fn integer(&self, ctx: &mut Ctx, key: &str) -> Option<(i64, usize)> {
        let v = self.get(key)?;
        match v.get_ref() {
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Some((n, v.span().start)),
                Err(_) => {
                    ctx.error(v.span().start, format!("`{key}` is out of range"));
                    None
                }
            },
            _ => {
                self.wrong_type(ctx, key, v, "an integer");
                None
            }
        }
    }

    /// A positive integer no larger than `max`.
    fn positive(&self, ctx: &mut Ctx, key: &str, max: u64) -> Option<u64> {
        let (n, at) = self.integer(ctx, key)?;
        if n <= 0 || n as u64 > max {
            ctx.error(
                at,
                format!(
                    "`{key}` in {} must be between 1 and {max}, found {n}",
                    self.name
                ),
            );
            return None;
        }
        Some(n as u64)
    }

    fn boolean(&self, ctx: &mut Ctx, key: &str) -> Option<bool> {
        let v = self.get(key)?;
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(ctx, key, v, "true or false");
                None
            }
        }
    }

    /// An environment variable *name*, checked for shape (never its value).
    fn env_name(&self, ctx: &mut Ctx, key: &str) -> Option<(String, usize)> {
        let (name, at) = self.string(ctx, key)?;
        if is_env_name(&name) {
            Some((name, at))
        } else {
            ctx.error(
                at,
                format!(
                    "`{key}` must name an environment variable (letters, digits and `_`, not starting with a digit), not hold a value; the secret itself belongs in that variable"
                ),
            );
            None
        }
    }

    /// An absolute http(s) URL, returned without a trailing slash.
    fn http_url(&self, ctx: &mut Ctx, key: &str) -> Option<String> {
        let (raw, at) = self.string(ctx, key)?;
        match check_http_url(&raw) {
            Ok(url) => Some(url),
            Err(why) => {
                ctx.error(at, format!("`{key}` {why}, found \"{raw}\""));
                None
            }
        }
    }
}

/// Parse and validate. On success the warnings (e.g. unset env vars) come along.
pub(super) fn parse(path: &Path, text: &str, env: EnvCheck) -> Result<Loaded, Diagnostics> {
    let mut ctx = Ctx {
        text,
        diags: Diagnostics::new(path),
    };
    let (doc, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        for e in syntax {
            let at = e.span().map_or(0, |s| s.start);
            ctx.error(
                at,
                format!("TOML syntax error: {}", first_line(e.message())),
            );
        }
        ctx.diags.finish();
        return Err(ctx.diags);
    }
    let config = read_document(&mut ctx, path, doc.get_ref(), text, env);
    ctx.diags.finish();
    match config {
        Some(config) if !ctx.diags.has_errors() => Ok(Loaded {
            config,
            warnings: ctx.diags,
        }),
        _ => Err(ctx.diags),
    }
}

fn read_document(
    ctx: &mut Ctx,
    path: &Path,
    doc: &DeTable,
    text: &str,
    env: EnvCheck,
) -> Option<Config> {
    let top = TableReader::new(ctx, "the top level".into(), doc, 0, TOP_KEYS);

    let version = match top.integer(ctx, "version") {
        Some((v, _)) if v == SUPPORTED_VERSION => Some(v),
        Some((v, at)) => {
            ctx.error(
                at,
                format!(
                    "unsupported schema version {v}; this sendtime reads version = {SUPPORTED_VERSION}"
                ),
            );
            None
        }
        None => {
            if top.get("version").is_none() {
                ctx.error(
                    0,
                    format!(
                        "missing required key `version` at the top level; add `version = {SUPPORTED_VERSION}` as the first line"
                    ),
                );
            }
            None
        }
    };

    let base_dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let server = read_server(ctx, &top, &base_dir);
    let scheduler = read_scheduler(ctx, &top);
    let model = read_model(ctx, &top);
    let connector_tables = read_array(ctx, &top, "connector");
    // Ids as declared, valid connector or not: a webhook naming a connector that has its own
    // errors gets no second, misleading "unknown connector".
    let declared_ids: Vec<&str> = connector_tables
        .iter()
        .filter_map(|(t, _, _)| {
            t.iter()
                .find(|(k, _)| k.get_ref().as_ref() == "id")
                .and_then(|(_, v)| match v.get_ref() {
                    DeValue::String(s) => Some(s.as_ref()),
                    _ => None,
                })
        })
        .collect();
    let connectors = connector_tables
        .into_iter()
        .filter_map(|(t, at, n)| read_connector(ctx, t, at, n))
        .collect::<Vec<_>>();
    let webhook_tables = read_array(ctx, &top, "webhook");

    if connectors.is_empty() && top.get("connector").is_none() {
        ctx.error(
            0,
            "no [[connector]] defined; add one for the HubSpot account that sends the webhooks",
        );
    }
    check_unique(
        ctx,
        connectors.iter().map(|(c, at)| (c.id.as_str(), *at)),
        "connector",
    );

    let webhooks: Vec<(Webhook, usize)> = webhook_tables
        .into_iter()
        .filter_map(|(t, at, n)| read_webhook(ctx, t, at, n, &declared_ids))
        .collect();
    check_unique(
        ctx,
        webhooks.iter().map(|(w, at)| (w.id.as_str(), *at)),
        "webhook",
    );

    // Unset env vars are warnings for `validate` (the config repo's CI has no secrets) and
    // errors for `serve` and `tick` (which needs only the tokens), except on dry-run
    // connectors, which call nothing.
    for (c, _) in &connectors {
        for (key, name) in [
            ("client_secret_env", &c.client_secret_env),
            ("access_token_env", &c.access_token_env),
        ] {
            if env == EnvCheck::RequireTokens && key == "client_secret_env" {
                continue;
            }
            if std::env::var(name).map_or(true, |v| v.is_empty()) {
                let at = find_value(doc, "connector", &c.id, key).unwrap_or(0);
                let message = format!(
                    "environment variable {name} (`{key}` of connector `{}`) is not set",
                    c.id
                );
                if env != EnvCheck::Warn && !c.dry_run {
                    ctx.error(at, format!("{message}; set it, or set `dry_run = true` to run without calling HubSpot"));
                } else if key == "client_secret_env" {
                    ctx.warning(
                        at,
                        format!("{message}: posts to its webhooks are refused (503) until it is"),
                    );
                } else {
                    ctx.warning(at, message);
                }
            }
        }
    }

    Some(Config {
        version: version?,
        server: server?,
        scheduler: scheduler?,
        model: model?,
        connectors: connectors.into_iter().map(|(c, _)| c).collect(),
        webhooks: webhooks.into_iter().map(|(w, _)| w).collect(),
        identity: identity_of(text.as_bytes()),
        path: path.to_path_buf(),
    })
}

/// Reads `[name]` (a plain table) if present; `None` plus an error when it is not a table.
fn sub_table<'a, 'i>(
    ctx: &mut Ctx,
    top: &TableReader<'a, 'i>,
    key: &str,
) -> Result<Option<(&'a DeTable<'i>, usize)>, ()> {
    let Some(v) = top.get(key) else {
        return Ok(None);
    };
    match v.get_ref() {
        DeValue::Table(t) => Ok(Some((t, v.span().start))),
        other => {
            ctx.error(
                v.span().start,
                format!(
                    "`{key}` must be a table ([{key}]), found {}",
                    describe(other)
                ),
            );
            Err(())
        }
    }
}

fn read_server(ctx: &mut Ctx, top: &TableReader, base_dir: &Path) -> Option<Server> {
    let (table, at) = match sub_table(ctx, top, "server") {
        Ok(Some(t)) => t,
        Ok(None) => {
            ctx.error(
                0,
                "missing [server] table; it needs at least `public_url`, the URL HubSpot calls",
            );
            return None;
        }
        Err(()) => return None,
    };
    let r = TableReader::new(ctx, "[server]".into(), table, at, SERVER_KEYS);
    let listen = match r.string(ctx, "listen") {
        Some((s, at)) => match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                ctx.error(
                    at,
                    format!("`listen` must be an IP address and port such as \"127.0.0.1:8080\", found \"{s}\""),
                );
                None
            }
        },
        None if r.get("listen").is_none() => Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
        None => None,
    };
    let public_url = r.http_url(ctx, "public_url");
    if r.get("public_url").is_none() {
        r.missing(
            ctx,
            "public_url",
            " (the URL HubSpot calls; request signatures are computed over it)",
        );
    }
    let data_dir = match r.string(ctx, "data_dir") {
        Some((s, at)) if s.trim().is_empty() => {
            ctx.error(at, "`data_dir` must not be empty");
            None
        }
        Some((s, _)) => Some(resolve(base_dir, &s)),
        None if r.get("data_dir").is_none() => Some(resolve(base_dir, "data")),
        None => None,
    };
    let max_body_bytes = match r.get("max_body_bytes") {
        None => Some(DEFAULT_MAX_BODY_BYTES),
        Some(_) => r
            .positive(ctx, "max_body_bytes", 64 * 1024 * 1024)
            .map(|n| n as usize),
    };
    Some(Server {
        listen: listen?,
        public_url: public_url?,
        data_dir: data_dir?,
        max_body_bytes: max_body_bytes?,
    })
}

fn read_scheduler(ctx: &mut Ctx, top: &TableReader) -> Option<Scheduler> {
    let default = || {
        let schedule = parse_cron(DEFAULT_CRON).expect("the default cron parses");
        (DEFAULT_CRON.to_string(), schedule)
    };
    let (table, at) = match sub_table(ctx, top, "scheduler") {
        Ok(Some(t)) => t,
        Ok(None) => {
            let (cron, schedule) = default();
            return Some(Scheduler { cron, schedule });
        }
        Err(()) => return None,
    };
    let r = TableReader::new(ctx, "[scheduler]".into(), table, at, SCHEDULER_KEYS);
    let cron = match r.string(ctx, "cron") {
        Some((s, at)) => match parse_cron(&s) {
            Ok(schedule) => Some((s, schedule)),
            Err(why) => {
                ctx.error(
                    at,
                    format!(
                        "invalid cron expression \"{s}\": {why}; six fields, seconds first, e.g. \"{DEFAULT_CRON}\" for every minute"
                    ),
                );
                None
            }
        },
        None if r.get("cron").is_none() => Some(default()),
        None => None,
    };
    let (cron, schedule) = cron?;
    Some(Scheduler { cron, schedule })
}

fn read_model(ctx: &mut Ctx, top: &TableReader) -> Option<crate::model::ModelConfig> {
    let mut model = crate::model::ModelConfig::default();
    let (table, at) = match sub_table(ctx, top, "model") {
        Ok(Some(t)) => t,
        Ok(None) => return Some(model),
        Err(()) => return None,
    };
    let r = TableReader::new(ctx, "[model]".into(), table, at, MODEL_KEYS);
    let mut ok = true;
    let p = &mut model.params;
    let t = &mut model.thresholds;
    for (key, slot, min, max) in [
        ("half_life_days", &mut p.half_life_days, 1.0, 1e9),
        ("click_weight", &mut p.click_weight, 0.0, 100.0),
        ("prior_strength", &mut p.prior_strength, 0.0, 1e6),
        ("hour_bandwidth", &mut p.hour_bandwidth, 0.0, 24.0),
        ("day_pooling", &mut p.day_pooling, 0.0, 1.0),
        ("passive_ratio", &mut t.passive_ratio, 0.0, 1.0),
        ("machine_per_day", &mut t.machine_per_day, 1.0, 1e9),
        ("machine_per_year", &mut t.machine_per_year, 1.0, 1e12),
    ] {
        if let Some(v) = r.get(key) {
            match number(v.get_ref()) {
                Some(n) if (min..=max).contains(&n) => *slot = n,
                Some(n) => {
                    ctx.error(
                        v.span().start,
                        format!("`{key}` in [model] must be between {min} and {max}, found {n}"),
                    );
                    ok = false;
                }
                None => {
                    r.wrong_type(ctx, key, v, "a number");
                    ok = false;
                }
            }
        }
    }
    for (key, slot) in [
        ("evaluating_below", &mut t.evaluating_below),
        ("inactive_days", &mut t.inactive_days),
        ("recent_days", &mut t.recent_days),
    ] {
        if r.get(key).is_some() {
            match r.positive(ctx, key, 100_000) {
                Some(n) => *slot = n as u32,
                None => ok = false,
            }
        }
    }
    ok.then_some(model)
}

/// A TOML integer or float as f64.
fn number(v: &DeValue) -> Option<f64> {
    match v {
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
            .ok()
            .map(|n| n as f64),
        DeValue::Float(f) => f.as_str().replace('_', "").parse().ok(),
        _ => None,
    }
}

/// The tables of `[[key]]`, each with its header offset and 1-based position.
fn read_array<'a, 'i>(
    ctx: &mut Ctx,
    top: &TableReader<'a, 'i>,
    key: &str,
) -> Vec<(&'a DeTable<'i>, usize, usize)> {
    let Some(v) = top.get(key) else {
        return Vec::new();
    };
    let DeValue::Array(items) = v.get_ref() else {
        ctx.error(
            v.span().start,
            format!(
                "`{key}` must be an array of tables: write each one under a [[{key}]] header, found {}",
                describe(v.get_ref())
            ),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item.get_ref() {
            DeValue::Table(t) => out.push((t, item.span().start, i + 1)),
            other => ctx.error(
                item.span().start,
                format!("each `{key}` must be a table, found {}", describe(other)),
            ),
        }
    }
    out
}

fn read_connector(
    ctx: &mut Ctx,
    table: &DeTable,
    at: usize,
    n: usize,
) -> Option<(Connector, usize)> {
    let r = TableReader::new(
        ctx,
        format!("[[connector]] #{n}"),
        table,
        at,
        CONNECTOR_KEYS,
    );
    let id = read_id(ctx, &r, "connector");
    for key in [
        "portal_id",
        "app_id",
        "client_secret_env",
        "access_token_env",
    ] {
        if r.get(key).is_none() {
            r.missing(ctx, key, "");
        }
    }
    let portal_id = r.positive(ctx, "portal_id", i64::MAX as u64);
    let app_id = r.positive(ctx, "app_id", i64::MAX as u64);
    let secret = r.env_name(ctx, "client_secret_env");
    let token = r.env_name(ctx, "access_token_env");
    let api_base = match r.get("api_base") {
        None => Some(DEFAULT_API_BASE.to_string()),
        Some(_) => r.http_url(ctx, "api_base"),
    };
    let per_10s = optional(&r, "requests_per_10s", 100, |r| {
        r.positive(ctx, "requests_per_10s", 10_000)
            .map(|n| n as u32)
    });
    let per_day = optional(&r, "requests_per_day", 250_000, |r| {
        r.positive(ctx, "requests_per_day", 100_000_000)
            .map(|n| n as u32)
    });
    let batch = optional(&r, "list_batch_size", 2500, |r| {
        r.positive(ctx, "list_batch_size", 100_000)
            .map(|n| n as usize)
    });
    let dry_run = optional(&r, "dry_run", false, |r| r.boolean(ctx, "dry_run"));
    let allow_unsigned = optional(&r, "allow_unsigned", false, |r| {
        r.boolean(ctx, "allow_unsigned")
    });
    if allow_unsigned == Some(true)
        && let Some(v) = r.get("allow_unsigned")
    {
        ctx.warning(
                v.span().start,
            "`allow_unsigned` is on: posts without a signature are accepted from anyone; for local testing only",
        );
    }
    let (id, id_at) = id?;
    Some((
        Connector {
            id,
            portal_id: portal_id?,
            app_id: app_id?,
            client_secret_env: secret?.0,
            access_token_env: token?.0,
            api_base: api_base?,
            requests_per_10s: per_10s?,
            requests_per_day: per_day?,
            list_batch_size: batch?,
            dry_run: dry_run?,
            allow_unsigned: allow_unsigned?,
        },
        id_at,
    ))
}

fn read_webhook(
    ctx: &mut Ctx,
    table: &DeTable,
    at: usize,
    n: usize,
    connectors: &[&str],
) -> Option<(Webhook, usize)> {
    let r = TableReader::new(ctx, format!("[[webhook]] #{n}"), table, at, WEBHOOK_KEYS);
    let id = read_id(ctx, &r, "webhook");
    let name = r.string(ctx, "name").map(|(s, _)| s);
    let connector = match r.string(ctx, "connector") {
        Some((c, _)) if connectors.contains(&c.as_str()) => Some(c),
        Some((c, at)) => {
            ctx.error(
                at,
                format!(
                    "unknown connector `{c}`; defined connectors: {}",
                    list_or_none(connectors)
                ),
            );
            None
        }
        None if r.get("connector").is_some() => None,
        None => match connectors {
            [only] => Some(only.to_string()),
            [] => None, // reported once, at the top level
            many => {
                r.missing(
                    ctx,
                    "connector",
                    &format!(" (there is more than one connector: {})", many.join(", ")),
                );
                None
            }
        },
    };
    let names: Vec<&str> = WebhookType::ALL.iter().map(|t| t.as_str()).collect();
    let kind = match r.string(ctx, "type") {
        Some((s, at)) => match WebhookType::parse(&s) {
            Some(t) => Some(t),
            None => {
                let hint = closest(&s.to_ascii_uppercase(), &names)
                    .map(|c| format!("did you mean `{c}`? "))
                    .unwrap_or_default();
                ctx.error(
                    at,
                    format!(
                        "unknown webhook type `{s}`; {hint}expected one of: {}",
                        names.join(", ")
                    ),
                );
                None
            }
        },
        None => {
            if r.get("type").is_none() {
                r.missing(ctx, "type", &format!(" (one of: {})", names.join(", ")));
            }
            None
        }
    };
    let workflow_id = r.positive(ctx, "workflow_id", i64::MAX as u64);
    let list_id = match r.get("list_id") {
        None => None,
        Some(v) => match v.get_ref() {
            DeValue::String(s) if is_numeric_id(s) => Some(s.to_string()),
            DeValue::Integer(i) if is_numeric_id(i.as_str()) && i.radix() == 10 => {
                Some(i.as_str().to_string())
            }
            _ => {
                r.wrong_type(ctx, "list_id", v, "a HubSpot list id such as \"987\"");
                None
            }
        },
    };
    if let Some(kind) = kind {
        if kind.enrolls() {
            if r.get("workflow_id").is_none() {
                r.missing(
                    ctx,
                    "workflow_id",
                    &format!(" ({kind} webhooks enroll the contact into this HubSpot workflow)"),
                );
            }
            if let Some(v) = r.get("list_id") {
                ctx.error(
                    v.span().start,
                    format!(
                        "`list_id` is only used by UPDATE_ONLY webhooks; {kind} enrolls into `workflow_id`, so remove `list_id` or change `type`"
                    ),
                );
            }
        } else {
            if let Some(v) = r.get("workflow_id") {
                ctx.error(
                    v.span().start,
                    "`workflow_id` is not allowed on UPDATE_ONLY webhooks, which update list membership and never enroll; remove it or change `type`",
                );
            }
            if r.get("list_id").is_none() {
                r.missing(
                    ctx,
                    "list_id",
                    " (UPDATE_ONLY webhooks add the contact to this HubSpot list)",
                );
            }
        }
    }
    let (id, id_at) = id?;
    let kind = kind?;
    let target = if kind.enrolls() {
        Target::Workflow(workflow_id?)
    } else {
        Target::List(list_id?)
    };
    Some((
        Webhook {
            id,
            name,
            connector: connector?,
            kind,
            target,
        },
        id_at,
    ))
}

/// A required, URL-safe `id`.
fn read_id(ctx: &mut Ctx, r: &TableReader, what: &str) -> Option<(String, usize)> {
    let Some((id, at)) = r.string(ctx, "id") else {
        if r.get("id").is_none() {
            r.missing(ctx, "id", "");
        }
        return None;
    };
    if is_url_safe_id(&id) {
        Some((id, at))
    } else {
        ctx.error(
            at,
            format!(
                "{what} id \"{id}\" is not URL-safe; use 1 to 64 letters, digits, `-`, `_` or `.`, starting with a letter or digit"
            ),
        );
        None
    }
}

/// Reads an optional key with a default; `None` only when the key is present and invalid.
fn optional<'a, 'i, T>(
    r: &TableReader<'a, 'i>,
    key: &str,
    default: T,
    read: impl FnOnce(&TableReader<'a, 'i>) -> Option<T>,
) -> Option<T> {
    if r.get(key).is_none() {
        Some(default)
    } else {
        read(r)
    }
}

fn check_unique<'s>(ctx: &mut Ctx, ids: impl Iterator<Item = (&'s str, usize)>, what: &str) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (id, at) in ids {
        if let Some(first) = seen.get(id) {
            let (line, _) = {
                let before = &ctx.text[..*first];
                (before.matches('\n').count() + 1, ())
            };
            ctx.error(
                at,
                format!("duplicate {what} id \"{id}\" (first defined on line {line})"),
            );
        } else {
            seen.insert(id, at);
        }
    }
}

/// Offset of `key`'s value in the `[[array]]` entry whose id is `id`.
fn find_value(doc: &DeTable, array: &str, id: &str, key: &str) -> Option<usize> {
    let (_, v) = doc.iter().find(|(k, _)| k.get_ref().as_ref() == array)?;
    let DeValue::Array(items) = v.get_ref() else {
        return None;
    };
    items.iter().find_map(|item| {
        let DeValue::Table(t) = item.get_ref() else {
            return None;
        };
        let has_id = t
            .iter()
            .any(|(k, v)| k.get_ref().as_ref() == "id" && v.get_ref().as_str() == Some(id));
        has_id
            .then(|| t.iter().find(|(k, _)| k.get_ref().as_ref() == key))
            .flatten()
            .map(|(_, v)| v.span().start)
    })
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn check_http_url(raw: &str) -> Result<String, &'static str> {
    let url = reqwest::Url::parse(raw)
        .map_err(|_| "must be an absolute http(s) URL such as \"https://hooks.example.com\"")?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("must be an absolute http(s) URL such as \"https://hooks.example.com\"");
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not carry a query or fragment");
    }
    Ok(raw.trim_end_matches('/').to_string())
}

/// A six-field (seconds first) cron expression that fires at some time after now; the error
/// says why not.
fn parse_cron(expr: &str) -> Result<croner::Cron, String> {
    let cron = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(expr)
        .map_err(|e| e.to_string().trim_end_matches('.').to_string())?;
    match cron.find_next_occurrence(&chrono::Utc::now(), false) {
        Ok(_) => Ok(cron),
        Err(_) => Err("it never fires after now (check the day of month, month and year)".into()),
    }
}

pub(crate) fn is_url_safe_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_env_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && !b[0].is_ascii_digit()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

fn is_numeric_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 20 && s.bytes().all(|c| c.is_ascii_digit())
}

fn describe(v: &DeValue) -> String {
    match v {
        DeValue::String(s) => format!("the string \"{s}\""),
        DeValue::Integer(i) => format!("the integer {}", i.as_str()),
        DeValue::Float(f) => format!("the float {}", f.as_str()),
        DeValue::Boolean(b) => format!("the boolean {b}"),
        DeValue::Datetime(d) => format!("the datetime {d}"),
        DeValue::Array(_) => "an array".into(),
        DeValue::Table(_) => "a table".into(),
    }
}

fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() {
        "(none)".into()
    } else {
        items.join(", ")
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s).trim()
}

/// The known key closest to a typo, if it is close enough to be a plausible suggestion.
fn closest<'k>(typo: &str, known: &[&'k str]) -> Option<&'k str> {
    // `workflow` for `workflow_id`, `secret_env` for `client_secret_env`.
    if let Some(k) = known
        .iter()
        .find(|k| typo.len() >= 4 && (k.starts_with(typo) || k.ends_with(typo)))
    {
        return Some(k);
    }
    known
        .iter()
        .map(|k| (edit_distance(typo, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_be_url_safe() {
        assert!(is_url_safe_id("nurture-step-2"));
        assert!(is_url_safe_id("a.b_c"));
        assert!(!is_url_safe_id(""));
        assert!(!is_url_safe_id("-lead"));
        assert!(!is_url_safe_id("has space"));
        assert!(!is_url_safe_id("slash/y"));
        assert!(!is_url_safe_id(&"x".repeat(65)));
    }

    #[test]
    fn suggestions_only_for_near_misses() {
        assert_eq!(closest("lisen", SERVER_KEYS), Some("listen"));
        assert_eq!(closest("zzzzzz", SERVER_KEYS), None);
    }
}
