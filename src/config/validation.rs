//! The checks that need more than one key or table, as named passes over what
//! [`super::read`] read, in the manner of vector's `config::validation`: each pass reports
//! every problem it finds (errors and warnings apart, by severity) and none stops the others.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use super::Server;
use super::read::{ConnectorDraft, Draft, WebhookDraft};
use super::reader::Ctx;
use super::{Connector, Credentials, EnvCheck, Target, Webhook};
use crate::model::plan::RELEASE_MARGIN_MS;
use crate::receiver::signature::{Floor, Version};

/// Run every pass; the webhooks as configured when the draft holds everything a config needs
/// (errors may still have been reported: the caller looks).
pub(super) fn check(ctx: &mut Ctx, draft: Draft, env: EnvCheck) -> Option<(Draft, Vec<Webhook>)> {
    check_connectors_declared(ctx, &draft);
    check_action_ticks(ctx, &draft);
    check_unique(
        ctx,
        draft
            .connector_ids
            .iter()
            .map(|(id, at)| (id.as_str(), *at, "connector")),
    );
    // Webhooks and actions share one URL space; checked on their ids as read, so a repeat
    // is reported beside a webhook's other errors, not once they are fixed.
    check_unique(
        ctx,
        draft.webhooks.iter().filter_map(|w| {
            let (id, at) = w.id.as_ref()?;
            Some((
                id.as_str(),
                *at,
                if w.action { "action" } else { "webhook" },
            ))
        }),
    );
    // Each once: a repeated id is its own error, reported above.
    let mut declared: Vec<String> = Vec::new();
    for (id, _) in &draft.connector_ids {
        if !declared.contains(id) {
            declared.push(id.clone());
        }
    }
    let webhooks: Vec<Webhook> = draft
        .webhooks
        .iter()
        .filter_map(|w| {
            let connector = check_webhook_connector(ctx, w, &declared);
            let target = check_webhook_target(ctx, w);
            check_timing(ctx, w);
            let (id, _) = w.id.clone()?;
            let connector = connector?;
            let drafted = draft
                .connectors
                .iter()
                .find(|c| c.connector.id == connector)
                .map(|c| &c.connector);
            if let Some(c) = drafted {
                check_action_signature(ctx, w, c);
            }
            let inherited = drafted.and_then(|c| c.quiet_hours);
            Some(Webhook {
                id,
                name: w.name.clone(),
                connector,
                kind: w.kind?,
                target: target?,
                window: w.window?,
                // Next-tick webhooks have no window for quiet hours to shape.
                quiet_hours: w
                    .quiet_hours?
                    .or(inherited.filter(|_| w.action || w.kind.is_some_and(|k| k.timed()))),
                holdout: w.holdout?,
            })
        })
        .collect();
    for c in &draft.connectors {
        check_env(ctx, c, env);
        check_allow_unsigned(ctx, c, draft.server.as_ref());
    }
    check_shared_account(ctx, &draft);
    check_one_installation(ctx, &draft);
    check_quiet_hours_zone(ctx, &draft, &webhooks);
    check_archive_keeps_lift(ctx, &draft, &webhooks);
    check_accounts_apart(ctx, &draft, &webhooks);
    let complete = draft.version.is_some()
        && draft.server.is_some()
        && draft.scheduler.is_some()
        && draft.import.is_some()
        && draft.model.is_some();
    complete.then_some((draft, webhooks))
}

/// Connectors that call one HubSpot account each pace their own `requests_per_10s` and count
/// their own `daily_budget`: together they can pass the account's limits.
fn check_shared_account(ctx: &mut Ctx, draft: &Draft) {
    let calling: Vec<&Connector> = draft
        .connectors
        .iter()
        .map(|c| &c.connector)
        .filter(|c| !c.dry_run)
        .collect();
    for (i, c) in calling.iter().enumerate() {
        let Some(first) = calling[..i].iter().find(|o| o.portal_id == c.portal_id) else {
            continue;
        };
        let at = draft.connector_at(&c.id);
        ctx.warning(
            at,
            format!(
                "connectors `{}` and `{}` both call portal {}: each paces its own `requests_per_10s` and counts its own `daily_budget`, so together they can pass HubSpot's limits (the daily one is the account's, the 10-second one each app's): use one connector for the account, or split the two between them",
                first.id, c.id, c.portal_id
            ),
        );
    }
}

/// Quiet hours are the contact's local hours; a contact whose zone HubSpot does not hold
/// (`time_zone_property`) has its connector's `time_zone`, and with none set, UTC: an
/// account in Brussels sent at 23:00 under `"22:00-07:00"`. (A webhook's quiet hours, its
/// connector's inherited, are those of timed sends alone.)
fn check_quiet_hours_zone(ctx: &mut Ctx, draft: &Draft, webhooks: &[Webhook]) {
    for c in draft.connectors.iter().map(|c| &c.connector) {
        let quiet = (webhooks.iter()).any(|w| w.connector == c.id && w.quiet_hours.is_some());
        if quiet && c.time_zone.is_none() {
            ctx.warning(
                draft.connector_at(&c.id),
                format!(
                    "connector `{}` has webhooks with quiet hours (theirs or its own) but no `time_zone`: a contact whose zone is not in its `{}` property keeps them in UTC; set `time_zone` to the account's zone",
                    c.id, c.time_zone_property
                ),
            );
        }
    }
}

/// `report lift` counts a receipt once its 72-hour window after its webhook's longest wait
/// has ended and been imported: an archive that deletes receipts before then leaves nothing to
/// count, and the report waits for good for a window to end.
fn check_archive_keeps_lift(ctx: &mut Ctx, draft: &Draft, webhooks: &[Webhook]) {
    use crate::config::WebhookType;
    use crate::time::{DAY_MS, HOUR_MS};
    let Some(days) = draft.server.as_ref().and_then(|s| s.archive_days) else {
        return;
    };
    for w in webhooks.iter().filter(|w| w.holdout > 0.0) {
        // An action's delivery type is chosen in the workflow editor: any timed one.
        let kind = match w.target {
            Target::Callback => WebhookType::NextWeek,
            _ => w.kind,
        };
        let Some(wait) = crate::model::plan::longest_wait(kind, w.window) else {
            continue;
        };
        let late = crate::import::hubspot::OVERLAP.as_millis() as i64;
        // A day more: the archive is pruned once a day.
        let needed = (wait + 72 * HOUR_MS + late + DAY_MS - 1) / DAY_MS + 1;
        if i64::from(days) < needed {
            let at = (draft.webhooks.iter())
                .find(|d| d.id.as_ref().is_some_and(|(id, _)| *id == w.id))
                .map_or(0, |d| d.at);
            ctx.warning(
                at,
                format!(
                    "`archive_days = {days}` deletes the receipts of `{}` (holdout {}) before `report lift` can count them: it counts a receipt once the 72 hours after its longest wait ({} h) have ended and been imported; keep them at least {needed} days",
                    w.id,
                    w.holdout,
                    wait / HOUR_MS
                ),
            );
        }
    }
}

/// Connectors refreshing one installation's token (the same client id and refresh token)
/// share its credentials in `serve` (a rotated refresh token is then the one each refreshes
/// with): the app's client secrets are one list too, or the last connector built would set
/// them for both. Told apart as `serve` does, by the variables' values where they are set (two
/// variables holding the same passed; an audit), else by their names.
fn check_one_installation(ctx: &mut Ctx, draft: &Draft) {
    let installation = |c: &Connector| match &c.credentials {
        Credentials::OAuth {
            client_id_env,
            refresh_token_env,
        } => {
            let value = |name: &str| super::env_value(name).ok_or_else(|| name.to_string());
            Some((value(client_id_env), value(refresh_token_env)))
        }
        Credentials::Static { .. } => None,
    };
    // The secrets by value too: per-connector variables holding the same are one list.
    let secrets = |c: &Connector| -> Vec<Result<String, String>> {
        (c.client_secret_env.iter())
            .map(|name| super::env_value(name).ok_or_else(|| name.clone()))
            .collect()
    };
    // The variables, for the message: the values are secrets.
    let named = |c: &Connector| match &c.credentials {
        Credentials::OAuth {
            client_id_env,
            refresh_token_env,
        } => format!("{client_id_env} and {refresh_token_env}"),
        Credentials::Static { .. } => String::new(),
    };
    let connectors: Vec<&Connector> = draft.connectors.iter().map(|c| &c.connector).collect();
    for (i, c) in connectors.iter().enumerate() {
        let Some(mine) = installation(c) else {
            continue;
        };
        let other = connectors[..i]
            .iter()
            .find(|o| installation(o).as_ref() == Some(&mine) && secrets(o) != secrets(c));
        if let Some(o) = other {
            let names = match (named(o), named(c)) {
                (a, b) if a == b => a,
                (a, b) => format!("{a}; {b}, which hold the same"),
            };
            ctx.error(
                draft.connector_at(&c.id),
                format!(
                    "connectors `{}` and `{}` refresh one installation's token ({names}), so they share its credentials, but name different `client_secret_env` lists ([{}] and [{}]): the app's client secrets are one; name the same list in both",
                    o.id,
                    c.id,
                    o.client_secret_env.join(", "),
                    c.client_secret_env.join(", ")
                ),
            );
        }
    }
}

/// Connectors of two accounts that share what is one account's: a token (HubSpot refuses it
/// for the other), or an app's client secret while a webhook's post may name no portal (a
/// post signed for one account is then taken by the other's webhooks too; an action's
/// execution always names its portal).
fn check_accounts_apart(ctx: &mut Ctx, draft: &Draft, webhooks: &[Webhook]) {
    let connectors: Vec<&Connector> = draft.connectors.iter().map(|c| &c.connector).collect();
    fn token(c: &Connector) -> &str {
        match &c.credentials {
            Credentials::Static { access_token_env } => access_token_env,
            Credentials::OAuth {
                refresh_token_env, ..
            } => refresh_token_env,
        }
    }
    // Found once: a hundred connectors of one app each looked through every webhook for every
    // earlier connector (connectors² × webhooks at each validation and reload).
    let with_webhooks: HashSet<&str> = (webhooks.iter())
        .filter(|w| w.target != Target::Callback)
        .map(|w| w.connector.as_str())
        .collect();
    let open = |c: &Connector| !c.require_portal_id && with_webhooks.contains(c.id.as_str());
    // Each connector is warned of once per kind, naming the first before it that shares: one
    // app installed in a hundred accounts shares its secret with 99 others (a warning per pair
    // was 4,950 lines at each validation and reload).
    for (i, c) in connectors.iter().enumerate() {
        let at = draft.connector_at(&c.id);
        let others = || {
            connectors[..i]
                .iter()
                .filter(|o| o.portal_id != c.portal_id)
        };
        let portals = |o: &Connector| format!("portals {} and {}", o.portal_id, c.portal_id);
        if let Some(o) = others().find(|o| token(o) == token(c) && !o.dry_run && !c.dry_run) {
            ctx.warning(
                at,
                format!(
                    "connectors `{}` and `{}` call {} with the token in one variable, {}: a token is one account's, so HubSpot refuses it for the other; give each connector its own",
                    o.id,
                    c.id,
                    portals(o),
                    token(c)
                ),
            );
        }
        let shared = others().find_map(|o| {
            let secret = (o.client_secret_env.iter()).find(|e| c.client_secret_env.contains(e))?;
            (open(o) || open(c)).then_some((o, secret))
        });
        if let Some((o, secret)) = shared {
            ctx.warning(
                at,
                format!(
                    "connectors `{}` and `{}` ({}) check signatures with one client secret, {secret}: a post signed for either account whose body names no portal is taken by both accounts' webhooks; set `require_portal_id = true` on each that has webhooks",
                    o.id,
                    c.id,
                    portals(o)
                ),
            );
        }
    }
}

/// HubSpot signs a custom action's requests v2 (its custom action guide): a connector that
/// requires v3 may refuse every execution.
fn check_action_signature(ctx: &mut Ctx, w: &WebhookDraft, c: &Connector) {
    if w.action && c.min_signature_version == Floor::At(Version::V3) {
        ctx.warning(
            w.at,
            format!(
                "{} goes through connector `{}`, whose `min_signature_version` is \"v3\"; HubSpot's custom action guide says its requests carry the v2 signature, so each execution may be refused: use \"auto\" or \"v2\"",
                w.name_in_messages, c.id
            ),
        );
    }
}

/// A callback may be planned as late as [`RELEASE_MARGIN_MS`] before HubSpot's hold on its
/// contact ends: a scheduler that leaves more than half of that without a run can send it
/// after the hold, after a slow tick.
fn check_action_ticks(ctx: &mut Ctx, draft: &Draft) {
    let Some(scheduler) = &draft.scheduler else {
        return;
    };
    let Some((id, at)) = draft
        .webhooks
        .iter()
        .filter(|w| w.action)
        .find_map(|w| w.id.clone())
    else {
        return;
    };
    let gap = super::read::longest_gap(&scheduler.schedule, chrono::Utc::now());
    if gap.num_milliseconds() > RELEASE_MARGIN_MS / 2 {
        ctx.warning(
            at,
            format!(
                "action `{id}`: the scheduler goes up to {} without a run, so a callback due in the last minutes of HubSpot's hold on its contact can go after it (HubSpot then moves the contact on without sendtime's release): run [scheduler] cron every minute",
                crate::time::format_gap(gap.num_milliseconds())
            ),
        );
    }
}

/// A webhook whose contacts go on the next tick has no window to shape (an action's
/// executions may choose a timed type, so its keys always apply).
fn check_timing(ctx: &mut Ctx, w: &WebhookDraft) {
    if let (false, Some(kind), Some(at)) = (w.action, w.kind, w.timing_at)
        && !kind.timed()
    {
        ctx.error(
            at,
            format!(
                "{}: `window` and `quiet_hours` apply to timed types; {kind} goes on the next tick",
                w.name_in_messages
            ),
        );
    }
}

fn check_connectors_declared(ctx: &mut Ctx, draft: &Draft) {
    if draft.connectors.is_empty() && !draft.connector_key {
        ctx.error(
            0,
            "no [[connector]] defined; add one for the HubSpot account that sends the webhooks",
        );
    }
}

/// Each (id, where, what it is) once.
/// Ids unique ignoring ASCII case: two that differ only in case are a typo waiting to happen,
/// and a connector's id names files under `state/`, which a file system that ignores case
/// (macOS's, by default) would share between `Main` and `main`.
fn check_unique<'s>(ctx: &mut Ctx, ids: impl Iterator<Item = (&'s str, usize, &'s str)>) {
    let mut seen: HashMap<String, (&str, usize)> = HashMap::new();
    for (id, at, what) in ids {
        if let Some(&(earlier, first)) = seen.get(&id.to_ascii_lowercase()) {
            let (line, _) = ctx.lines.line_column(first);
            let case = if earlier == id {
                String::new()
            } else {
                format!(": \"{earlier}\" differs only in case, which some file systems ignore")
            };
            ctx.error(
                at,
                format!("duplicate {what} id \"{id}\" (first defined on line {line}{case})"),
            );
        } else {
            seen.insert(id.to_ascii_lowercase(), (id, at));
        }
    }
}

/// The connector a webhook sends through: the one it names, or the only one there is.
fn check_webhook_connector(ctx: &mut Ctx, w: &WebhookDraft, declared: &[String]) -> Option<String> {
    match &w.connector {
        Some((c, _)) if declared.contains(c) => Some(c.clone()),
        Some((c, at)) => {
            let list = if declared.is_empty() {
                "(none)".to_string()
            } else {
                declared.join(", ")
            };
            ctx.error(
                *at,
                format!("unknown connector `{c}`; defined connectors: {list}"),
            );
            None
        }
        None if w.connector_unreadable => None,
        None => match declared {
            [only] => Some(only.clone()),
            [] => None, // reported once, by check_connectors_declared
            many => {
                missing(
                    ctx,
                    w,
                    "connector",
                    &format!(" (there is more than one connector: {})", many.join(", ")),
                );
                None
            }
        },
    }
}

/// What the webhook's type calls: a workflow to enroll into, or a list (UPDATE_ONLY); the
/// other key is refused.
fn check_webhook_target(ctx: &mut Ctx, w: &WebhookDraft) -> Option<Target> {
    let kind = w.kind?;
    if w.action {
        return Some(Target::Callback);
    }
    if kind.enrolls() {
        if w.workflow_id_at.is_none() {
            missing(
                ctx,
                w,
                "workflow_id",
                &format!(" ({kind} webhooks enroll the contact into this HubSpot workflow)"),
            );
        }
        if let Some(at) = w.list_id_at {
            ctx.error(
                at,
                format!(
                    "`list_id` is only used by UPDATE_ONLY webhooks; {kind} enrolls into `workflow_id`, so remove `list_id` or change `type`"
                ),
            );
        }
        w.workflow_id.map(Target::Workflow)
    } else {
        if let Some(at) = w.workflow_id_at {
            ctx.error(
                at,
                "`workflow_id` is not allowed on UPDATE_ONLY webhooks, which update list membership and never enroll; remove it or change `type`",
            );
        }
        if w.list_id_at.is_none() {
            missing(
                ctx,
                w,
                "list_id",
                " (UPDATE_ONLY webhooks add the contact to this HubSpot list)",
            );
        }
        w.list_id.clone().map(Target::List)
    }
}

/// Unset env vars are warnings for `validate` (the config repo's CI has no secrets) and
/// errors for `validate --online` and `serve`, and for `tick` (which needs only the
/// tokens), except on dry-run connectors, which call nothing.
fn check_env(ctx: &mut Ctx, draft: &ConnectorDraft, env: EnvCheck) {
    let c = &draft.connector;
    let secrets = c
        .client_secret_env
        .iter()
        .zip(&draft.client_secret_env_at)
        .enumerate()
        .map(|(i, (name, at))| ("client_secret_env", name.as_str(), *at, i > 0));
    let names = c.credentials.env_names();
    let tokens = names
        .iter()
        .zip(&draft.credentials_at)
        .map(|((key, name), at)| (*key, *name, *at, false));
    // OAuth refreshes with the app's client secret, so `tick` needs it too.
    let oauth = matches!(c.credentials, Credentials::OAuth { .. });
    for (key, name, at, older) in secrets.chain(tokens) {
        if env == EnvCheck::RequireTokens && key == "client_secret_env" && !oauth {
            continue;
        }
        if older && super::env_value(name).is_some() {
            continue;
        }
        if older {
            // A secret being rotated out may already be gone.
            ctx.warning(
                at,
                format!(
                    "environment variable {name} (an older secret of connector `{}`) {}: posts signed with it are refused",
                    c.id,
                    super::env_missing(name)
                ),
            );
            continue;
        }
        if let Some(value) = super::env_value(name) {
            // Else every call fails as it leaves, tick after tick, with an action's contacts
            // running out their holds meanwhile.
            let header = format!("Bearer {value}");
            if key == "access_token_env"
                && !c.dry_run
                && reqwest::header::HeaderValue::from_str(&header).is_err()
            {
                let message = format!(
                    "environment variable {name} (`{key}` of connector `{}`) holds a character no HTTP header may carry (a line break inside it, say): set it to the token alone",
                    c.id
                );
                match env {
                    EnvCheck::Warn => ctx.warning(at, message),
                    _ => ctx.error(at, message),
                }
            }
            continue;
        }
        let message = format!(
            "environment variable {name} (`{key}` of connector `{}`) {}",
            c.id,
            super::env_missing(name)
        );
        if env != EnvCheck::Warn && !c.dry_run {
            ctx.error(
                at,
                format!(
                    "{message}; set it, or set `dry_run = true` to run without calling HubSpot (a running `serve` reads its environment at start only: set it there and restart)"
                ),
            );
        } else if !c.dry_run {
            let who = if key == "client_secret_env" && !oauth {
                "`serve` refuses"
            } else {
                "`serve` and `tick` refuse"
            };
            ctx.warning(at, format!("{message}: {who} to start without it"));
        } else if key == "client_secret_env" {
            let posts = if c.allow_unsigned {
                "signed posts to its webhooks are refused (503) until it holds the secret (unsigned ones are accepted: `allow_unsigned`)"
            } else {
                "posts to its webhooks are refused (503) until it holds the secret"
            };
            ctx.warning(at, format!("{message}: {posts}"));
        } else {
            ctx.warning(at, format!("{message} (not needed while `dry_run` is on)"));
        }
    }
}

fn check_allow_unsigned(ctx: &mut Ctx, draft: &ConnectorDraft, server: Option<&Server>) {
    let Some(at) = draft.allow_unsigned_at else {
        return;
    };
    let c = &draft.connector;
    // A `listen` overridden by `--listen` is not the one in use (the flag's is checked).
    let listen = |s: &Server| {
        (ctx.overrides.listen.is_none())
            .then(|| exposed_unsigned("`listen`", s.listen, c))
            .flatten()
    };
    let exposed = server.and_then(|s| listen(s).or_else(|| public_unsigned(&s.public_url, c)));
    match exposed {
        Some(error) => ctx.error(at, error),
        None => ctx.warning(
            at,
            "`allow_unsigned` is on: posts without a signature are accepted from anyone; for local testing only",
        ),
    }
}

/// The error for a connector that takes unsigned posts on a listener at `addr` (named as
/// `what`) that other machines reach, and calls HubSpot for them, if it is one: anyone could
/// enroll any email in the account's workflows.
pub(super) fn exposed_unsigned(what: &str, addr: SocketAddr, c: &Connector) -> Option<String> {
    (c.allow_unsigned && !c.dry_run && !addr.ip().to_canonical().is_loopback()).then(|| {
        format!(
            "connector `{}` has `allow_unsigned` on and calls HubSpot, on {what} {addr}, which other machines reach: anyone could enroll any contact; listen on 127.0.0.1, set `dry_run = true`, or turn `allow_unsigned` off",
            c.id
        )
    })
}

/// The error for a connector that takes unsigned posts and calls HubSpot for them behind a
/// `public_url` other machines reach (a proxy in front of a loopback listener), if it is one.
fn public_unsigned(public_url: &str, c: &Connector) -> Option<String> {
    (c.allow_unsigned && !c.dry_run && !super::read::loopback_url(public_url)).then(|| {
        format!(
            "connector `{}` has `allow_unsigned` on and calls HubSpot, behind `public_url` {}, which other machines reach: anyone could enroll any contact; set `dry_run = true` or turn `allow_unsigned` off",
            c.id,
            super::reader::shown_url(public_url)
        )
    })
}

fn missing(ctx: &mut Ctx, w: &WebhookDraft, key: &str, why: &str) {
    ctx.error(
        w.at,
        format!(
            "missing required key `{key}` in {}{why}",
            w.name_in_messages
        ),
    );
}
