//! Reading `webhooks.toml` table by table: each key's kind, range and default. What holds
//! across tables (ids unique, connectors named exist, targets that fit the type, secrets set)
//! is [`super::validation`]'s; reading keeps the positions those checks point at.
//!
//! serde's `deny_unknown_fields` stops at the first error and silently stops working under
//! `flatten`, so the file is parsed into toml's spanned document tree and every problem is
//! collected with its line and column instead of stopping at the first.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

use super::diagnostics::Lines;
use super::reader::{Ctx, TableReader, closest, first_line, number, read_array, sub_table};
use super::{
    Config, Connector, Credentials, Diagnostics, EnvCheck, ImportSchedule, Loaded, Overrides,
    SUPPORTED_VERSION, Scheduler, Server, Severity, Webhook, WebhookType, identity_of, validation,
};
use crate::local_time::{DEFAULT_ZONE_PROPERTY, QuietHours, parse_zone};
use crate::model::ModelConfig;
use crate::receiver::signature::{Floor, Version};
use crate::time::parse_span;

/// A connector as read, with the positions the checks point at.
pub(super) struct ConnectorDraft {
    pub connector: Connector,
    /// Where each of `client_secret_env`'s names is.
    pub client_secret_env_at: Vec<usize>,
    /// Where each of the credentials' env var names is, in [`Credentials::env_names`] order.
    pub credentials_at: Vec<usize>,
    /// Where `allow_unsigned = true` is, when it is.
    pub allow_unsigned_at: Option<usize>,
}

/// A webhook as read: what it says, before the checks that need the other tables.
pub(super) struct WebhookDraft {
    /// `[[webhook]] #n` or `[[action]] #n`, for messages.
    pub name_in_messages: String,
    /// An `[[action]]`: completes a callback; no workflow or list of its own.
    pub action: bool,
    /// Its header.
    pub at: usize,
    pub id: Option<(String, usize)>,
    pub name: Option<String>,
    /// The connector it names, valid or not, and where.
    pub connector: Option<(String, usize)>,
    /// `connector` is present but not a string (already reported).
    pub connector_unreadable: bool,
    pub kind: Option<WebhookType>,
    /// `workflow_id` and where its value is, when the key is present.
    pub workflow_id: Option<u64>,
    pub workflow_id_at: Option<usize>,
    pub list_id: Option<String>,
    pub list_id_at: Option<usize>,
    /// `window` (outer `None`: present and wrong, reported).
    pub window: Option<Option<i64>>,
    /// `quiet_hours`, likewise.
    pub quiet_hours: Option<Option<QuietHours>>,
    /// Where `window` or `quiet_hours` is, when either is.
    pub timing_at: Option<usize>,
    /// `holdout` (`None`: present and wrong, reported).
    pub holdout: Option<f64>,
}

/// The whole file as read.
pub(super) struct Draft {
    pub version: Option<i64>,
    pub server: Option<Server>,
    pub scheduler: Option<Scheduler>,
    pub import: Option<ImportSchedule>,
    pub model: Option<ModelConfig>,
    /// `[[connector]]` is present (even if not an array of tables), and not an empty array.
    pub connector_key: bool,
    /// Every connector's id as written, valid connector or not, and where: repeats are
    /// reported beside the connectors' other errors, and a webhook naming a connector that has
    /// its own errors gets no second, misleading "unknown connector".
    pub connector_ids: Vec<(String, usize)>,
    pub connectors: Vec<ConnectorDraft>,
    pub webhooks: Vec<WebhookDraft>,
}

impl Draft {
    /// Where connector `id` is written (0: nowhere), for a message about it.
    pub fn connector_at(&self, id: &str) -> usize {
        (self.connector_ids.iter())
            .find(|(c, _)| c == id)
            .map_or(0, |(_, at)| *at)
    }
}

/// A `[webhook]` header among `[[webhook]]` ones (or of actions, connectors) is a duplicate
/// key to TOML, said at the correct headers after it: the line to fix is named too (an
/// audit).
fn single_headers(ctx: &mut Ctx, text: &str) {
    // Each header line's offset, name and brackets (1 or 2); comments left out.
    let mut headers = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let code = line.split('#').next().unwrap_or_default().trim();
        let double = code.strip_prefix("[[").and_then(|h| h.strip_suffix("]]"));
        let single = code.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
        if let Some((name, brackets)) = double.map(|h| (h, 2)).or(single.map(|h| (h, 1))) {
            headers.push((offset + line.find('[').unwrap_or(0), name.trim(), brackets));
        }
        offset += line.len();
    }
    for &(at, key, brackets) in &headers {
        let array = |k: &str| headers.iter().any(|&(_, name, b)| name == k && b == 2);
        if brackets == 1 && ["webhook", "action", "connector"].contains(&key) && array(key) {
            ctx.error(
                at,
                format!("[{key}] opens one table where the others are entries of the `{key}` array: write [[{key}]] here"),
            );
        }
    }
}

/// Read and check `text` as the config at `path`. On success the warnings (e.g. unset env
/// vars) come along.
pub(super) fn parse(
    path: &Path,
    text: &str,
    env: EnvCheck,
    overrides: &Overrides,
) -> Result<Loaded, Diagnostics> {
    let mut ctx = Ctx {
        lines: Lines::new(text),
        diags: Diagnostics::new(path),
        overrides,
        env,
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
        single_headers(&mut ctx, text);
        ctx.diags.finish();
        return Err(ctx.diags);
    }
    let draft = read_document(&mut ctx, path, doc.get_ref());
    let config = validation::check(&mut ctx, draft, env).map(|(draft, webhooks)| Config {
        version: draft.version.expect("checked"),
        server: draft.server.expect("checked"),
        scheduler: draft.scheduler.expect("checked"),
        import: draft.import.expect("checked"),
        model: draft.model.expect("checked"),
        connectors: draft.connectors.into_iter().map(|c| c.connector).collect(),
        webhooks,
        identity: identity_of(text.as_bytes()),
        path: path.to_path_buf(),
    });
    ctx.diags.finish();
    match config {
        Some(config) if !ctx.diags.has_errors() => Ok(Loaded {
            config,
            warnings: ctx.diags,
        }),
        _ => Err(ctx.diags),
    }
}

fn read_document(ctx: &mut Ctx, path: &Path, doc: &DeTable) -> Draft {
    let top = TableReader::new("the top level".into(), doc, 0);
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
            if !top.has("version") {
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
    let base_dir = folder_of(path);
    let server = read_server(ctx, &top, base_dir);
    let scheduler = read_scheduler(ctx, &top);
    let import = read_import(ctx, &top);
    let model = read_model(ctx, &top);
    let connector_tables = read_array(ctx, &top, "connector");
    let connector_ids: Vec<(String, usize)> = connector_tables
        .iter()
        .filter_map(|(t, _, _)| {
            let (_, v) = t.iter().find(|(k, _)| k.get_ref().as_ref() == "id")?;
            Some((v.get_ref().as_str()?.to_string(), v.span().start))
        })
        .collect();
    let connectors = connector_tables
        .into_iter()
        .filter_map(|(t, at, n)| read_connector(ctx, t, at, n))
        .collect();
    let mut webhooks: Vec<WebhookDraft> = read_array(ctx, &top, "webhook")
        .into_iter()
        .map(|(t, at, n)| read_webhook(ctx, t, at, n))
        .collect();
    webhooks.extend(
        read_array(ctx, &top, "action")
            .into_iter()
            .map(|(t, at, n)| read_action(ctx, t, at, n)),
    );
    // `connector = []` reads without an error of its own: none is declared.
    let connector_key = top
        .get("connector")
        .is_some_and(|v| !matches!(v.get_ref(), DeValue::Array(a) if a.is_empty()));
    top.finish(ctx);
    Draft {
        version,
        server,
        scheduler,
        import,
        model,
        connector_key,
        connector_ids,
        connectors,
        webhooks,
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
    let r = TableReader::new("[server]".into(), table, at);
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
        None if !r.has("listen") => Some(Server::DEFAULT_LISTEN),
        None => None,
    };
    let admin_listen = match r.string(ctx, "admin_listen") {
        Some((s, at)) => match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                ctx.error(
                    at,
                    format!("`admin_listen` must be an IP address and port such as \"127.0.0.1:8081\", found \"{s}\""),
                );
                None
            }
        },
        None if !r.has("admin_listen") => Some(Server::DEFAULT_ADMIN_LISTEN),
        None => None,
    };
    let admin_token_env = r.env_name(ctx, "admin_token_env");
    if let Some((name, at)) = &admin_token_env {
        let problem = match super::env_value(name) {
            None => Some(format!(
                "environment variable {name} (`admin_token_env`) {}: `serve` refuses to start without it",
                super::env_missing(name)
            )),
            Some(token) => Server::admin_token_problem(&token).map(|problem| {
                format!(
                    "environment variable {name} (`admin_token_env`) {problem} (`serve` refuses to start with it)"
                )
            }),
        };
        // An error where `serve` is what is checked for (`validate --online` passed a config
        // `serve` then refused; an audit).
        match problem {
            Some(p) if ctx.env == EnvCheck::Require => ctx.error(*at, p),
            Some(p) => ctx.warning(*at, p),
            None => {}
        }
    }
    // Overridden by `--admin-listen`, the file's address is not the one in use (the flag's is
    // checked once applied): a safe flag over an unsafe file was refused (an audit).
    if let Some(addr) = admin_listen.filter(|_| ctx.overrides.admin_listen.is_none()) {
        let at = r.get("admin_listen").map_or(0, |v| v.span().start);
        match admin_listen_problem("`admin_listen`", addr, admin_token_env.is_some()) {
            Some((Severity::Error, error)) => ctx.error(at, error),
            Some((_, warning)) => ctx.warning(at, warning),
            None => {}
        }
    }
    let public_url = r.required(
        ctx,
        "public_url",
        " (the URL HubSpot calls; request signatures are computed over it)",
        |r, ctx| r.http_url(ctx, "public_url"),
    );
    // HubSpot calls webhooks and actions over https only, and signs the URL it calls: an
    // http one (TLS ended at a proxy) is refused in the workflow, or every post's signature
    // is checked against the wrong scheme (an audit). This machine's is for testing.
    if let Some(url) = public_url
        .as_ref()
        .filter(|u| u.to_ascii_lowercase().starts_with("http://") && !loopback_url(u))
    {
        ctx.error(
            r.get("public_url").map_or(0, |v| v.span().start),
            format!(
                "`public_url` must be https: HubSpot calls webhooks and actions over https only, and signs the URL it calls (write the address HubSpot is given, even where TLS ends at a proxy in front); http only to this machine, for testing, found \"{}\"",
                super::reader::shown_url(url)
            ),
        );
    }
    let data_dir = match r.string(ctx, "data_dir") {
        Some((s, at)) if s.trim().is_empty() => {
            ctx.error(at, "`data_dir` must not be empty");
            None
        }
        Some((s, at)) if s.trim() != s => {
            ctx.error(
                at,
                "`data_dir` starts or ends with a space: remove it (a folder named so is almost always a typo)",
            );
            None
        }
        // No shell reads the file: `~/sendtime` made a folder named `~` beside the config.
        Some((s, at)) if s.starts_with('~') || s.contains('$') => {
            ctx.error(
                at,
                "`data_dir` starts with `~` or holds `$`, which nothing expands here (no shell reads the file): write the path itself, absolute or relative to the config's folder (an earlier version took it as written: its data is in a folder of that name beside the config)",
            );
            None
        }
        Some((s, _)) => Some(resolve(base_dir, &s)),
        None if !r.has("data_dir") => Some(resolve(base_dir, Server::DEFAULT_DATA_DIR)),
        None => None,
    };
    let max_body_bytes = r.positive_or(
        ctx,
        "max_body_bytes",
        Server::MAX_MAX_BODY_BYTES as u64,
        Server::DEFAULT_MAX_BODY_BYTES as u64,
    );
    if let (Some(n), Some(v)) = (max_body_bytes, r.get("max_body_bytes"))
        && n < Server::SMALL_MAX_BODY_BYTES as u64
    {
        ctx.warning(
            v.span().start,
            format!(
                "`max_body_bytes` in [server] is {n}: HubSpot posts a contact with its properties, often tens of KB, and a larger post is refused (413), which HubSpot does not retry"
            ),
        );
    }
    let archive_days = match r.has("archive_days") {
        false => Some(None),
        true => r
            .positive(ctx, "archive_days", Server::MAX_ARCHIVE_DAYS.into())
            .map(|n| Some(n as u32)),
    };
    r.finish(ctx);
    Some(Server {
        listen: listen?,
        admin_listen: admin_listen?,
        admin_token_env: admin_token_env.map(|(name, _)| name),
        public_url: public_url?,
        data_dir: data_dir?,
        max_body_bytes: max_body_bytes? as usize,
        archive_days: archive_days?,
    })
}

/// Where the value of `[table] key` is written in `text` (already parsed whole), if it is.
pub(super) fn value_position(text: &str, table: &str, key: &str) -> Option<(usize, usize)> {
    let doc = DeTable::parse(text).ok()?;
    let DeValue::Table(t) = doc.get_ref().get(table)?.get_ref() else {
        return None;
    };
    Some(Lines::new(text).line_column(t.get(key)?.span().start))
}

/// Where `key` of the `[[connector]]` whose id is `id` is in `text` (line, column).
pub(super) fn connector_value_position(text: &str, id: &str, key: &str) -> Option<(usize, usize)> {
    let doc = DeTable::parse(text).ok()?;
    let DeValue::Array(items) = doc.get_ref().get("connector")?.get_ref() else {
        return None;
    };
    let table = items.iter().find_map(|item| match item.get_ref() {
        DeValue::Table(t) if matches!(t.get("id").map(|v| v.get_ref()), Some(DeValue::String(s)) if s == id) => Some(t),
        _ => None,
    })?;
    Some(Lines::new(text).line_column(table.get(key)?.span().start))
}

/// Whether an http(s) URL names this machine (`localhost` or a loopback address).
pub(super) fn loopback_url(url: &str) -> bool {
    reqwest::Url::parse(url).is_ok_and(|url| crate::hubspot::client::is_loopback(&url))
}

/// What is wrong with an admin surface at `addr` (named as `what`), if anything: an error
/// where other machines reach it without a token, else a warning where the internet may
/// reach it over plain HTTP. The file's address and `--admin-listen`'s are checked alike.
pub(super) fn admin_listen_problem(
    what: &str,
    addr: SocketAddr,
    token: bool,
) -> Option<(Severity, String)> {
    (exposed_admin(what, addr, token).map(|error| (Severity::Error, error)))
        .or_else(|| plain_admin(what, addr).map(|warning| (Severity::Warning, warning)))
}

/// The error for an admin surface at `addr` (named as `what`) that other machines would reach
/// without a token, if it is one: its Host check is no login, anyone can send `localhost`.
fn exposed_admin(what: &str, addr: SocketAddr, token: bool) -> Option<String> {
    (!addr.ip().to_canonical().is_loopback() && !token).then(|| {
        format!(
            "{what} {addr} is reachable from other machines, and the admin surface (status, metrics, the dashboard, pause and resume) has no token: set `admin_token_env` to a variable holding a long random token, or listen on loopback"
        )
    })
}

/// An admin surface on every interface or a public address, served over plain HTTP: its
/// token and data travel in the clear (said in the README alone, an audit). A private address
/// (a VPN's, a private network's) is the operator's choice, not warned of.
fn plain_admin(what: &str, addr: SocketAddr) -> Option<String> {
    let private = match addr.ip().to_canonical() {
        std::net::IpAddr::V4(ip) => {
            // 100.64.0.0/10, shared address space (Tailscale's addresses).
            let shared = ip.octets()[0] == 100 && ip.octets()[1] & 0xc0 == 64;
            ip.is_loopback() || ip.is_private() || ip.is_link_local() || shared
        }
        std::net::IpAddr::V6(ip) => {
            ip.is_loopback() || ip.is_unique_local() || ip.is_unicast_link_local()
        }
    };
    (!private).then(|| {
        format!(
            "{what} {addr} may be reached over plain HTTP from the internet: the admin token and the data would travel in the clear; listen on loopback behind a TLS proxy, or on a private address (a VPN's)"
        )
    })
}

fn read_scheduler(ctx: &mut Ctx, top: &TableReader) -> Option<Scheduler> {
    let default = || default_cron(Scheduler::DEFAULT_CRON);
    let (table, at) = match sub_table(ctx, top, "scheduler") {
        Ok(Some(t)) => t,
        Ok(None) => {
            let (cron, schedule) = default();
            return Some(Scheduler { cron, schedule });
        }
        Err(()) => return None,
    };
    let r = TableReader::new("[scheduler]".into(), table, at);
    let cron = read_cron(ctx, &r, Scheduler::DEFAULT_CRON);
    if let (Some((_, schedule)), Some(at)) = (&cron, r.get("cron").map(|v| v.span().start))
        && let gap = longest_gap(schedule, chrono::Utc::now())
        && gap > Scheduler::LONGEST_QUIET
    {
        ctx.warning(
            at,
            format!(
                "the scheduler goes up to {} without a run: contacts due in between wait for the next run (the day of month and the day of week must both match)",
                crate::time::format_gap(gap.num_milliseconds())
            ),
        );
    }
    // Capacity books one list add and one callback batch a minute: each run sends its own
    // (runs every 10 s made six calls where one was booked, past `daily_budget`; an audit).
    if let (Some((_, schedule)), Some(at)) = (&cron, r.get("cron").map(|v| v.span().start))
        && fires_within_a_minute(schedule, chrono::Utc::now())
    {
        ctx.warning(
            at,
            format!(
                "{}: each run sends its own list adds and callback batches, which planning books once a minute, so they take more calls (and more of `daily_budget`) than planned; \"{}\" runs every minute",
                super::FAST_DISPATCH_WARNING,
                Scheduler::DEFAULT_CRON
            ),
        );
    }
    r.finish(ctx);
    let (cron, schedule) = cron?;
    Some(Scheduler { cron, schedule })
}

/// The longest stretch of the next eight days (a week, and a day to wrap) in which `cron`
/// does not fire, measured between runs; to keep a run every second cheap to walk, from a run
/// to the next is looked at every ten minutes or so, so a longer stretch among shorter ones
/// may be missed by less than that.
pub(super) fn longest_gap(
    cron: &croner::Cron,
    now: chrono::DateTime<chrono::Utc>,
) -> chrono::TimeDelta {
    let step = chrono::TimeDelta::minutes(10);
    let end = now + chrono::TimeDelta::days(8);
    let next =
        |t: chrono::DateTime<chrono::Utc>, inclusive| cron.find_next_occurrence(&t, inclusive).ok();
    let Some(mut run) = next(now, true) else {
        return end - now;
    };
    // Not from now to the first run: that would depend on the time `validate` runs.
    let mut longest = if run >= end {
        run - now
    } else {
        chrono::TimeDelta::zero()
    };
    while run < end {
        let Some(following) = next(run, false) else {
            return longest.max(end - run);
        };
        longest = longest.max(following - run);
        if following - run >= step {
            run = following;
            continue;
        }
        // Runs close together: the next one ten minutes on, and the stretch before it (at
        // most ten minutes short: the night after a day of runs a minute apart).
        let Some(later) = next(run + step, true) else {
            return longest.max(end - run);
        };
        longest = longest.max(later - (run + step));
        run = later;
    }
    longest
}

/// Whether `cron` fires twice within a minute somewhere in the next day (a seconds field of
/// `*` or a step).
fn fires_within_a_minute(cron: &croner::Cron, now: chrono::DateTime<chrono::Utc>) -> bool {
    let next = |t| cron.find_next_occurrence(&t, false).ok();
    let mut at = now;
    while at < now + chrono::TimeDelta::days(1) {
        let Some(first) = next(at) else { return false };
        if next(first).is_some_and(|second| second - first < chrono::TimeDelta::minutes(1)) {
            return true;
        }
        at = first;
    }
    false
}

fn read_import(ctx: &mut Ctx, top: &TableReader) -> Option<ImportSchedule> {
    let (table, at) = match sub_table(ctx, top, "import") {
        Ok(Some(t)) => t,
        Ok(None) => {
            let (cron, schedule) = default_cron(ImportSchedule::DEFAULT_CRON);
            return Some(ImportSchedule {
                enabled: true,
                cron,
                schedule,
            });
        }
        Err(()) => return None,
    };
    let r = TableReader::new("[import]".into(), table, at);
    let enabled = r.boolean_or(ctx, "enabled", true);
    let cron = read_cron(ctx, &r, ImportSchedule::DEFAULT_CRON);
    if let (Some((_, schedule)), Some(at), Some(true)) =
        (&cron, r.get("cron").map(|v| v.span().start), enabled)
        && fires_within_a_minute(schedule, chrono::Utc::now())
    {
        ctx.warning(
            at,
            format!(
                "the import runs more than once a minute (cron times are seconds first, in UTC): each run calls HubSpot for every connector; e.g. \"{}\" runs every 15 minutes",
                ImportSchedule::DEFAULT_CRON
            ),
        );
    }
    r.finish(ctx);
    let (cron, schedule) = cron?;
    Some(ImportSchedule {
        enabled: enabled?,
        cron,
        schedule,
    })
}

fn default_cron(expr: &str) -> (String, croner::Cron) {
    let schedule = parse_cron(expr).expect("the default cron parses");
    (expr.to_string(), schedule)
}

/// A table's `cron`, or `default` when it has none.
fn read_cron(ctx: &mut Ctx, r: &TableReader, default: &str) -> Option<(String, croner::Cron)> {
    match r.string(ctx, "cron") {
        Some((s, at)) => match parse_cron(&s) {
            Ok(schedule) => Some((s, schedule)),
            Err(why) => {
                ctx.error(
                    at,
                    format!(
                        "invalid cron expression \"{s}\": {why}; six fields: second (0-59), minute (0-59), hour (0-23), day of month (1-31), month (1-12 or JAN-DEC), day of week (0-7, 0 and 7 Sunday, or SUN-SAT); e.g. \"{}\" for every minute",
                        Scheduler::DEFAULT_CRON
                    ),
                );
                None
            }
        },
        None if !r.has("cron") => Some(default_cron(default)),
        None => None,
    }
}

fn read_model(ctx: &mut Ctx, top: &TableReader) -> Option<ModelConfig> {
    let mut model = ModelConfig::default();
    let (table, at) = match sub_table(ctx, top, "model") {
        Ok(Some(t)) => t,
        Ok(None) => return Some(model),
        Err(()) => return None,
    };
    let r = TableReader::new("[model]".into(), table, at);
    let mut ok = true;
    let p = &mut model.params;
    let t = &mut model.thresholds;
    let auto = &mut model.auto;
    // Fitted to the account's data unless the file gives a number.
    for (key, slot, on) in [
        (
            "prior_strength",
            &mut p.prior_strength,
            &mut auto.prior_strength,
        ),
        (
            "hour_bandwidth",
            &mut p.hour_bandwidth,
            &mut auto.hour_bandwidth,
        ),
    ] {
        let (min, max) = super::model_range(key);
        let Some(v) = r.get(key) else { continue };
        match (v.get_ref(), number(v.get_ref())) {
            (DeValue::String(s), _) if s.as_ref() == "auto" => *on = true,
            (_, Some(n)) if (min..=max).contains(&n) => {
                *slot = n;
                *on = false;
            }
            (_, Some(n)) => {
                ctx.error(
                    v.span().start,
                    format!(
                        "`{key}` in [model] must be \"auto\" or between {min} and {max}, found {n}"
                    ),
                );
                ok = false;
            }
            (_, None) => {
                r.wrong_type(ctx, key, v, "\"auto\" or a number");
                ok = false;
            }
        }
    }
    for (key, slot) in [
        ("half_life_days", &mut p.half_life_days),
        ("click_weight", &mut p.click_weight),
        ("day_pooling", &mut p.day_pooling),
        ("passive_ratio", &mut t.passive_ratio),
        ("machine_per_day", &mut t.machine_per_day),
        ("machine_per_year", &mut t.machine_per_year),
    ] {
        let (min, max) = super::model_range(key);
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
        if r.has(key) {
            match r.positive(ctx, key, super::MAX_MODEL_COUNT) {
                Some(n) => *slot = n as u32,
                None => ok = false,
            }
        }
    }
    r.finish(ctx);
    ok.then_some(model)
}

fn read_connector(ctx: &mut Ctx, table: &DeTable, at: usize, n: usize) -> Option<ConnectorDraft> {
    let r = TableReader::new(format!("[[connector]] #{n}"), table, at);
    let id = read_id(ctx, &r, "connector");
    let portal_id = r.required(ctx, "portal_id", "", |r, ctx| {
        r.positive(ctx, "portal_id", i64::MAX as u64)
    });
    let app_id = r.required(ctx, "app_id", "", |r, ctx| {
        r.positive(ctx, "app_id", i64::MAX as u64)
    });
    let secret = r.required(ctx, "client_secret_env", "", |r, ctx| {
        r.env_names(ctx, "client_secret_env")
    });
    let credentials = read_credentials(ctx, &r);
    let api_base = match r.has("api_base") {
        false => Some(Connector::DEFAULT_API_BASE.to_string()),
        true => r.http_url(ctx, "api_base").filter(|url| {
            let plain = !super::is_https(url) && !loopback_url(url);
            if plain {
                ctx.error(
                    r.get("api_base").map_or(0, |v| v.span().start),
                    format!("`api_base` carries the connector's token and client secret, so it must be https (http only to this machine, e.g. a stand-in at http://127.0.0.1:PORT), found \"{}\"", super::reader::shown_url(url)),
                );
            }
            !plain
        }),
    };
    let per_10s = r.positive_or(
        ctx,
        "requests_per_10s",
        Connector::MAX_REQUESTS_PER_10S.into(),
        Connector::DEFAULT_REQUESTS_PER_10S.into(),
    );
    let per_day = r.positive_or(
        ctx,
        "requests_per_day",
        Connector::MAX_REQUESTS_PER_DAY.into(),
        Connector::DEFAULT_REQUESTS_PER_DAY.into(),
    );
    let batch = r.positive_or(
        ctx,
        "list_batch_size",
        Connector::MAX_LIST_BATCH_SIZE as u64,
        Connector::DEFAULT_LIST_BATCH_SIZE as u64,
    );
    let callback_batch = r.positive_or(
        ctx,
        "callback_batch_size",
        Connector::MAX_CALLBACK_BATCH_SIZE as u64,
        Connector::DEFAULT_CALLBACK_BATCH_SIZE as u64,
    );
    let dry_run = r.boolean_or(ctx, "dry_run", false);
    let allow_unsigned = r.boolean_or(ctx, "allow_unsigned", false);
    let require_portal_id = r.boolean_or(ctx, "require_portal_id", false);
    let min_signature_version = match r.string(ctx, "min_signature_version") {
        None if r.has("min_signature_version") => None,
        None => Some(Floor::Auto),
        Some((s, _)) if s == "auto" => Some(Floor::Auto),
        Some((s, at)) => {
            let v = Version::parse(&s).map(Floor::At);
            if v.is_none() {
                ctx.error(
                    at,
                    format!(
                        "`min_signature_version` must be \"auto\", \"v1\", \"v2\" or \"v3\", found \"{s}\""
                    ),
                );
            }
            v
        }
    };
    let daily_budget = match r.has("daily_budget") {
        false => Some(None),
        true => r
            .positive(ctx, "daily_budget", Connector::MAX_REQUESTS_PER_DAY.into())
            .map(|n| Some(n as u32)),
    };
    let time_zone = r.parsed(ctx, "time_zone", |s| {
        parse_zone(s).ok_or_else(|| {
            format!("unknown time zone \"{s}\"; use an IANA name such as \"America/New_York\"")
        })
    });
    // Names that parse but seldom mean what they seem: POSIX's inverted sign, and zones
    // without daylight saving (HubSpot's account zones are cities).
    if let Some(v) = r.get("time_zone")
        && let Some(name) = v.get_ref().as_str()
        && let Some(why) = misleading_zone(name)
    {
        ctx.warning(
            v.span().start,
            format!("`time_zone` \"{name}\" {why}: use the account's zone as a city (\"America/New_York\"), as HubSpot's settings name it"),
        );
    }
    // HubSpot's day ends at the account's midnight: counted in UTC, one account day can take
    // most of two budgets.
    if let (Some(v), false) = (r.get("daily_budget"), r.has("time_zone")) {
        ctx.warning(
            v.span().start,
            "`daily_budget` counts days in UTC, as `time_zone` is not set: set it to the account's zone (HubSpot's settings), whose midnight starts HubSpot's day",
        );
    }
    let time_zone_property = match r.string(ctx, "time_zone_property") {
        None if r.has("time_zone_property") => None,
        None => Some(DEFAULT_ZONE_PROPERTY.to_string()),
        Some((s, at)) if s.is_empty() || s.chars().count() > 100 => {
            ctx.error(
                at,
                "`time_zone_property` must name a contact property (1 to 100 characters)",
            );
            None
        }
        Some((s, _)) => Some(s),
    };
    let quiet_hours = read_quiet_hours(ctx, &r);
    let allow_unsigned_at = r
        .get("allow_unsigned")
        .filter(|_| allow_unsigned == Some(true))
        .map(|v| v.span().start);
    r.finish(ctx);
    let ((id, _), secrets) = (id?, secret?);
    let (client_secret_env, client_secret_env_at) = secrets.into_iter().unzip();
    let (credentials, credentials_at) = credentials?;
    Some(ConnectorDraft {
        connector: Connector {
            id,
            portal_id: portal_id?,
            app_id: app_id?,
            client_secret_env,
            credentials,
            api_base: api_base?,
            requests_per_10s: per_10s? as u32,
            requests_per_day: per_day? as u32,
            list_batch_size: batch? as usize,
            callback_batch_size: callback_batch? as usize,
            dry_run: dry_run?,
            allow_unsigned: allow_unsigned?,
            require_portal_id: require_portal_id?,
            min_signature_version: min_signature_version?,
            daily_budget: daily_budget?,
            time_zone: time_zone?,
            time_zone_property: time_zone_property?,
            quiet_hours: quiet_hours?,
        },
        client_secret_env_at,
        credentials_at,
        allow_unsigned_at,
    })
}

/// The keys naming a connector's credentials, for either `auth`.
const CREDENTIAL_KEYS: [&str; 3] = ["client_id_env", "refresh_token_env", "access_token_env"];

/// `auth` and the env var names it needs, with where each name is.
fn read_credentials(ctx: &mut Ctx, r: &TableReader) -> Option<(Credentials, Vec<usize>)> {
    let auth = r.string(ctx, "auth");
    // Known whatever `auth` says: a bad `auth` must not make them "unknown keys" as well.
    for key in CREDENTIAL_KEYS {
        r.get(key);
    }
    let auth = match auth {
        None if r.has("auth") => return None,
        None => Credentials::STATIC.to_string(),
        Some((s, at)) => {
            if s != Credentials::STATIC && s != Credentials::OAUTH {
                ctx.error(
                    at,
                    format!("`auth` must be \"static\" or \"oauth\", found \"{s}\""),
                );
                return None;
            }
            s
        }
    };
    let (needed, refused): (&[&'static str], &[&'static str]) = if auth == Credentials::OAUTH {
        (
            &["client_id_env", "refresh_token_env"],
            &["access_token_env"],
        )
    } else {
        (
            &["access_token_env"],
            &["client_id_env", "refresh_token_env"],
        )
    };
    for key in refused {
        if let Some(v) = r.get(key) {
            ctx.error(
                v.span().start,
                format!("`{key}` does not apply with auth = \"{auth}\"; remove it"),
            );
        }
    }
    let why = if auth == Credentials::OAUTH {
        " (auth = \"oauth\")"
    } else {
        " (the token for API calls; or set auth = \"oauth\")"
    };
    let names: Vec<Option<(String, usize)>> = needed
        .iter()
        .map(|key| r.required(ctx, key, why, |r, ctx| r.env_name(ctx, key)))
        .collect();
    if !refused.iter().all(|k| !r.has(k)) {
        return None;
    }
    let names: Vec<(String, usize)> = names.into_iter().collect::<Option<_>>()?;
    let at = names.iter().map(|(_, at)| *at).collect();
    let mut names = names.into_iter().map(|(n, _)| n);
    let mut next = || names.next().expect("one per needed key");
    let credentials = if auth == Credentials::OAUTH {
        Credentials::OAuth {
            client_id_env: next(),
            refresh_token_env: next(),
        }
    } else {
        Credentials::Static {
            access_token_env: next(),
        }
    };
    Some((credentials, at))
}

fn read_webhook(ctx: &mut Ctx, table: &DeTable, at: usize, n: usize) -> WebhookDraft {
    let r = TableReader::new(format!("[[webhook]] #{n}"), table, at);
    let id = read_id(ctx, &r, "webhook");
    let name = r.string(ctx, "name").map(|(s, _)| s);
    let connector = r.string(ctx, "connector");
    let connector_unreadable = connector.is_none() && r.has("connector");
    let names: Vec<&str> = WebhookType::ALL.iter().map(|t| t.as_str()).collect();
    let kind = r.required(
        ctx,
        "type",
        &format!(" (one of: {})", names.join(", ")),
        |r, ctx| {
            let (s, at) = r.string(ctx, "type")?;
            let problem = format!("unknown webhook type `{s}`");
            webhook_type(ctx, &s, at, |_| true, &problem)
        },
    );
    let workflow_id = r.positive(ctx, "workflow_id", i64::MAX as u64);
    let workflow_id_at = r.get("workflow_id").map(|v| v.span().start);
    let list_id = r.get("list_id").and_then(|v| match v.get_ref() {
        DeValue::String(s) if is_numeric_id(s) => Some(s.to_string()),
        DeValue::Integer(i) => match u64::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) if n > 0 => Some(n.to_string()),
            _ => {
                r.wrong_type(ctx, "list_id", v, LIST_ID);
                None
            }
        },
        _ => {
            r.wrong_type(ctx, "list_id", v, LIST_ID);
            None
        }
    });
    let list_id_at = r.get("list_id").map(|v| v.span().start);
    let (window, quiet_hours, timing_at) = read_timing(ctx, &r);
    let holdout = read_holdout(ctx, &r);
    if let (Some(k), Some(h), Some(v)) = (kind, holdout, r.get("holdout"))
        && h > 0.0
        && !k.timed()
    {
        ctx.warning(
            v.span().start,
            format!(
                "{}: `holdout` on {k} compares two groups sent at receipt alike: its lift measures nothing",
                r.name
            ),
        );
    }
    let name_in_messages = r.name.clone();
    r.finish(ctx);
    WebhookDraft {
        name_in_messages,
        action: false,
        at,
        id,
        name,
        connector,
        connector_unreadable,
        kind,
        workflow_id,
        workflow_id_at,
        list_id,
        list_id_at,
        window,
        quiet_hours,
        timing_at,
        holdout,
    }
}

/// `[[action]]`: sendtime's custom workflow action. Its delivery type comes with each execution
/// (the workflow editor's choice); `default_type` is used when an execution names none.
fn read_action(ctx: &mut Ctx, table: &DeTable, at: usize, n: usize) -> WebhookDraft {
    let r = TableReader::new(format!("[[action]] #{n}"), table, at);
    let id = read_id(ctx, &r, "action");
    let name = r.string(ctx, "name").map(|(s, _)| s);
    let connector = r.string(ctx, "connector");
    let connector_unreadable = connector.is_none() && r.has("connector");
    let kind = match r.string(ctx, "default_type") {
        None if r.has("default_type") => None,
        None => Some(WebhookType::Next24Hours),
        Some((s, at)) => {
            let problem =
                format!("`default_type` `{s}` is not a delivery type of a workflow action");
            webhook_type(ctx, &s, at, WebhookType::enrolls, &problem)
        }
    };
    let (window, quiet_hours, timing_at) = read_timing(ctx, &r);
    let holdout = read_holdout(ctx, &r);
    let name_in_messages = r.name.clone();
    r.finish(ctx);
    WebhookDraft {
        name_in_messages,
        action: true,
        at,
        id,
        name,
        connector,
        connector_unreadable,
        kind,
        workflow_id: None,
        workflow_id_at: None,
        list_id: None,
        list_id_at: None,
        window,
        quiet_hours,
        timing_at,
        holdout,
    }
}

/// `holdout`: the share of receipts sent at receipt, to measure lift against (0 when absent).
fn read_holdout(ctx: &mut Ctx, r: &TableReader) -> Option<f64> {
    let Some(v) = r.get("holdout") else {
        return Some(0.0);
    };
    match number(v.get_ref()) {
        Some(n) if (0.0..=Webhook::MAX_HOLDOUT).contains(&n) => Some(n),
        Some(n) => {
            ctx.error(
                v.span().start,
                format!(
                    "`holdout` must be a share between 0 and {}, found {n}",
                    Webhook::MAX_HOLDOUT
                ),
            );
            None
        }
        None => {
            r.wrong_type(ctx, "holdout", v, "a share such as 0.1");
            None
        }
    }
}

/// Why a zone `name` that parses likely means another one than the account's: the `Etc/GMT`
/// zones' sign is POSIX's, the inverse of ISO's (`Etc/GMT+2` is two hours behind UTC), and
/// `EST` is New York's winter offset all year (`MST` and `HST` are Arizona's and Hawaii's
/// right zones, which keep no daylight saving: not warned of).
fn misleading_zone(name: &str) -> Option<&'static str> {
    let lower = name.trim().to_ascii_lowercase();
    if let Some(offset) = lower.strip_prefix("etc/gmt")
        && !matches!(offset, "" | "0" | "+0" | "-0")
    {
        return Some(
            "is a fixed offset whose sign is inverted (\"Etc/GMT+2\" is UTC-2) and which keeps no daylight saving",
        );
    }
    (lower == "est").then_some("is a fixed offset that keeps no daylight saving")
}

/// `quiet_hours`, with a warning when they leave less than an hour a day to send in.
fn read_quiet_hours(ctx: &mut Ctx, r: &TableReader) -> Option<Option<QuietHours>> {
    let quiet = r.parsed(ctx, "quiet_hours", QuietHours::parse);
    if let (Some(Some(q)), Some(v)) = (quiet, r.get("quiet_hours"))
        && q.open_minutes() < 60
    {
        ctx.warning(
            v.span().start,
            format!(
                "`quiet_hours` in {} leave {} minute(s) a day to send in: every timed contact crowds into them, and those past the connector's capacity there wait for the next day",
                r.name,
                q.open_minutes()
            ),
        );
    }
    quiet
}

/// `window` and `quiet_hours` of a webhook or action, and where the first of them is.
fn read_timing(
    ctx: &mut Ctx,
    r: &TableReader,
) -> (
    Option<Option<i64>>,
    Option<Option<QuietHours>>,
    Option<usize>,
) {
    let window = r.parsed(ctx, "window", |s| {
        let span = parse_span(s)
            .ok_or_else(|| format!("\"{s}\" is not a span such as \"90m\", \"36h\" or \"7d\""))?;
        if (Webhook::MIN_WINDOW_MS..=Webhook::MAX_WINDOW_MS).contains(&span) {
            Ok(span)
        } else {
            Err(format!("\"{s}\" is outside 1h to 7d"))
        }
    });
    let quiet_hours = read_quiet_hours(ctx, r);
    let at = ["window", "quiet_hours"]
        .into_iter()
        .find_map(|k| r.get(k).map(|v| v.span().start));
    (window, quiet_hours, at)
}

/// `s` as a webhook type that `accepts`; else an error at `at` that says `problem`, the closest
/// accepted name and all of them.
fn webhook_type(
    ctx: &mut Ctx,
    s: &str,
    at: usize,
    accepts: fn(WebhookType) -> bool,
    problem: &str,
) -> Option<WebhookType> {
    let kind = WebhookType::parse(s).filter(|&k| accepts(k));
    if kind.is_none() {
        let names: Vec<&str> = WebhookType::ALL
            .iter()
            .filter(|&&t| accepts(t))
            .map(|t| t.as_str())
            .collect();
        let hint = closest(&s.to_ascii_uppercase(), &names)
            .map(|c| format!("did you mean `{c}`? "))
            .unwrap_or_default();
        ctx.error(
            at,
            format!("{problem}; {hint}expected one of: {}", names.join(", ")),
        );
    }
    kind
}

/// A required, URL-safe `id`.
fn read_id(ctx: &mut Ctx, r: &TableReader, what: &str) -> Option<(String, usize)> {
    let (id, at) = r.required(ctx, "id", "", |r, ctx| r.string(ctx, "id"))?;
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

/// The folder that relative paths in the config file at `path` resolve against.
pub(super) fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// `p` from the config, resolved against its folder `base`.
pub(super) fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// A six-field (seconds first) cron expression that fires at some time after now; the error
/// says why not.
fn parse_cron(expr: &str) -> Result<croner::Cron, String> {
    // A year would make a file that validates today fail on a later start.
    // A nickname (`@hourly`) is one word that croner reads as six fields.
    match expr.split_whitespace().count() {
        7.. => return Err("a seventh field (a year) is not taken".into()),
        1 if expr.trim_start().starts_with('@') => {}
        1 => return Err("it has 1 field".into()),
        n @ 0..6 => return Err(format!("it has {n} fields")),
        6 => {}
    }
    let cron = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(expr)
        .map_err(|e| e.to_string().trim_end_matches('.').to_string())?;
    match cron.find_next_occurrence(&chrono::Utc::now(), false) {
        Ok(_) => Ok(cron),
        Err(_) => Err("it never fires after now (check the day of month and the month)".into()),
    }
}

fn is_url_safe_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// What `list_id` takes.
const LIST_ID: &str = "a HubSpot list id such as \"987\" (a positive number without leading zeros)";

/// A positive number as HubSpot writes ids: "007" and "7" would name one list as two targets
/// (held and counted apart), and 0 is no list.
fn is_numeric_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 20 && !s.starts_with('0') && s.bytes().all(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An admin surface with a token is warned of on every interface and a public address,
    /// not on loopback or a private address (a VPN's), which is the operator's choice.
    #[test]
    fn plain_http_is_warned_of_where_the_internet_may_reach_it() {
        for (addr, warned) in [
            ("0.0.0.0:8081", true),
            ("[::]:8081", true),
            ("203.0.113.7:8081", true),
            ("[2001:db8::1]:8081", true),
            ("127.0.0.1:8081", false),
            ("10.8.0.1:8081", false),
            ("192.168.1.20:8081", false),
            ("[fd00::1]:8081", false),
            ("100.101.102.103:8081", false),
            ("[::ffff:10.0.0.1]:8081", false),
            ("[::ffff:203.0.113.7]:8081", true),
        ] {
            let warning = plain_admin("`admin_listen`", addr.parse().unwrap());
            assert_eq!(warning.is_some(), warned, "{addr}");
        }
    }

    /// croner's nicknames are taken, as before fields were counted (they are one word).
    #[test]
    fn cron_nicknames_are_taken() {
        for nickname in ["@hourly", "@daily", "@weekly", "@monthly", "@yearly"] {
            assert!(parse_cron(nickname).is_ok(), "{nickname}");
        }
        assert_eq!(parse_cron("hourly").unwrap_err(), "it has 1 field");
    }

    /// The longest stretch without a run, whatever the time `validate` runs at: the night
    /// and weekend of a cron that runs every minute of working hours, the minute of one that
    /// runs every minute, the ten minutes of one that runs every ten.
    #[test]
    fn the_longest_gap_is_found_between_runs() {
        let cron = |c: &str| parse_cron(c).unwrap();
        let monday_noon = chrono::DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z")
            .unwrap()
            .to_utc();
        let minutes = |m: i64| chrono::TimeDelta::minutes(m);
        for hours in [0, 5, 8, 11, 17, 21] {
            let now = monday_noon + chrono::TimeDelta::hours(hours);
            let working = longest_gap(&cron("0 * 9-17 * * MON-FRI"), now);
            // Friday 17:59 to Monday 09:00, less at most ten minutes.
            let weekend = minutes(2 * 24 * 60 + 15 * 60 + 1);
            assert!(
                working <= weekend && working > weekend - minutes(10),
                "{hours}: {working}"
            );
            assert_eq!(longest_gap(&cron("0 * * * * *"), now), minutes(1));
            assert_eq!(longest_gap(&cron("0 */10 * * * *"), now), minutes(10));
        }
    }

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
}
