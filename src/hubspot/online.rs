//! `sendtime validate --online`: the config checked against the live account, one line per
//! check, so a workflow id pasted from the workflow editor (a flow id), a DYNAMIC list or a
//! token without a scope is found before contacts fail at dispatch.

use std::fmt;

use super::client::Client;
use super::error::ApiError;
use super::targets::Unusable;
use super::{paths, targets};
use crate::config::{Config, Connector, Target};

/// The environment variable holding the developer API key that lists an app's workflow
/// actions (HubSpot's action definitions API takes no app token).
pub const DEVELOPER_API_KEY_ENV: &str = "HUBSPOT_DEVELOPER_API_KEY";

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Ok(String),
    Fail(String),
    /// Not checked, and why (not a failure).
    Skip(String),
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub connector: String,
    /// What was checked: `account`, `workflow 123`, `list 987`, `email events`, `action x`.
    pub subject: String,
    pub verdict: Verdict,
}

impl Check {
    pub fn failed(&self) -> bool {
        matches!(self.verdict, Verdict::Fail(_))
    }

    pub fn skipped(&self) -> bool {
        matches!(self.verdict, Verdict::Skip(_))
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (tag, text) = match &self.verdict {
            Verdict::Ok(t) => ("ok  ", t),
            Verdict::Fail(t) => ("FAIL", t),
            Verdict::Skip(t) => ("skip", t),
        };
        write!(f, "{tag} {} {}: {text}", self.connector, self.subject)
    }
}

/// Every check for every connector of `config`.
pub async fn check(config: &Config) -> Vec<Check> {
    let mut out = Vec::new();
    for connector in &config.connectors {
        check_connector(config, connector, &mut out).await;
    }
    out
}

async fn check_connector(config: &Config, connector: &Connector, out: &mut Vec<Check>) {
    let mut push = |subject: String, verdict: Verdict| {
        out.push(Check {
            connector: connector.id.clone(),
            subject,
            verdict,
        })
    };
    let client = match Client::for_connector(connector, super::policy::REQUEST_TIMEOUT) {
        Ok(c) => c,
        // A dry run calls nothing, and `serve` runs it without credentials.
        Err(e) if connector.dry_run => {
            push(
                "credentials".into(),
                Verdict::Skip(format!("dry_run, so not checked: {e:#}")),
            );
            return;
        }
        Err(e) => {
            push("credentials".into(), Verdict::Fail(format!("{e:#}")));
            return;
        }
    };
    // The token works, and for this account.
    match client.get_json(paths::ACCOUNT_DETAILS).await {
        Ok(details) => {
            let portal = details["portalId"].as_u64();
            if portal == Some(connector.portal_id) {
                push(
                    "account".into(),
                    Verdict::Ok(format!(
                        "the token works for portal {}",
                        connector.portal_id
                    )),
                );
                push(
                    "time zone".into(),
                    time_zone(
                        connector.time_zone,
                        details["timeZone"].as_str(),
                        crate::time::now_ms(),
                    ),
                );
            } else {
                push(
                    "account".into(),
                    Verdict::Fail(format!(
                        "the token belongs to portal {}, not portal_id {}",
                        portal.map_or("?".into(), |p| p.to_string()),
                        connector.portal_id
                    )),
                );
                return;
            }
        }
        // A token that works, without the scope account information needs (HubSpot's docs
        // name `oauth`): the checks of the rest need other scopes, and go on.
        Err(e @ ApiError::MissingScopes { .. }) => push(
            "account".into(),
            Verdict::Fail(format!(
                "the token lacks the scope account information needs (`oauth`), so its portal was not checked, and a daily-limit pause cannot learn when HubSpot resets the limit: {e}"
            )),
        ),
        Err(e) => {
            push(
                "account".into(),
                Verdict::Fail(match &e {
                    ApiError::Permanent {
                        status: 401 | 403, ..
                    } => format!("HubSpot refused the token: {e}"),
                    ApiError::Transient { status: None, .. } => format!(
                        "could not reach HubSpot at {} (the token was not checked): {e}",
                        connector.api_base
                    ),
                    _ => format!("the token could not be checked: {e}"),
                }),
            );
            return;
        }
    }
    let endpoints: Vec<_> = config
        .webhooks
        .iter()
        .filter(|w| w.connector == connector.id)
        .collect();
    for w in &endpoints {
        match &w.target {
            Target::Workflow(id) => {
                let verdict = workflow(&client, *id).await;
                push(format!("webhook {} workflow {id}", w.id), verdict);
            }
            Target::List(id) => {
                let verdict = list(&client, id).await;
                push(format!("webhook {} list {id}", w.id), verdict);
            }
            Target::Callback => {
                let verdict = action(config, connector, &client, w).await;
                push(format!("action {}", w.id), verdict);
            }
        }
    }
    if config.import.enabled && !connector.dry_run {
        let verdict = match client
            .get_json(&format!("{}?limit=1", paths::EMAIL_EVENTS))
            .await
        {
            Ok(_) => Verdict::Ok("readable (the scheduled import can run)".into()),
            Err(e) => Verdict::Fail(scope_or(&e, "content", "cannot read email events")),
        };
        push("email events".into(), verdict);
    }
}

/// A legacy workflow id that exists and is turned on; a flow id from the workflow editor names
/// the id to paste.
async fn workflow(client: &Client, id: u64) -> Verdict {
    match targets::workflow(client.admit().await, id).await {
        Ok(Ok(name)) => Verdict::Ok(format!("exists ({name})")),
        Ok(Err(Unusable::WorkflowOff { name, .. })) => Verdict::Fail(format!(
            "exists ({name}) but is turned off in HubSpot: turn it on before contacts are sent \
             to it (HubSpot enrolls only into a workflow that is on; the dispatcher reads it \
             every 10 minutes while sending, and holds its contacts while it is off)"
        )),
        Ok(Err(unusable)) => {
            let mapped = client
                .post_json(
                    paths::WORKFLOW_ID_MAPPINGS,
                    &serde_json::json!({"inputs": [{"type": "FLOW_ID", "flowId": id.to_string()}]}),
                )
                .await
                .ok()
                .and_then(|m| m["results"].get(0).and_then(|r| r["workflowId"].as_u64()));
            match mapped {
                Some(workflow_id) => Verdict::Fail(format!(
                    "{id} is a flow id (the number in the workflow editor's URL); enrollment \
                     takes the workflow id: set workflow_id = {workflow_id}"
                )),
                None => Verdict::Fail(unusable.to_string()),
            }
        }
        Err(e) => Verdict::Fail(scope_or(&e, "automation", "cannot read the workflow")),
    }
}

/// A contact list that exists and accepts manual membership changes.
async fn list(client: &Client, id: &str) -> Verdict {
    match targets::list(client.admit().await, id).await {
        Ok(Ok((name, Some(kind)))) => Verdict::Ok(format!(
            "exists ({name}, {kind}): accepts membership changes"
        )),
        Ok(Ok((name, None))) => Verdict::Ok(format!(
            "exists ({name}); HubSpot's answer does not say its processing type: the first list add will tell whether it accepts membership changes"
        )),
        Ok(Err(unusable)) => Verdict::Fail(unusable.to_string()),
        Err(e) => Verdict::Fail(scope_or(&e, "crm.lists.read", "cannot read the list")),
    }
}

/// The action registered for the connector's app with the URL `validate` prints.
async fn action(
    config: &Config,
    connector: &Connector,
    client: &Client,
    action: &crate::config::Webhook,
) -> Verdict {
    let Some(key) = crate::config::env_value(DEVELOPER_API_KEY_ENV) else {
        return Verdict::Skip(format!(
            "set {DEVELOPER_API_KEY_ENV} to check that it is registered"
        ));
    };
    let url = config.action_url(action);
    let app = connector.app_id;
    // The date-versioned path first; HubSpot's spec for it has named the developer key and,
    // lately, an OAuth token only: the legacy path, while it lasts, when it refuses the key.
    let dated = registered(client, &paths::action_definitions(app), &key, &url, app).await;
    let refused = |e: &ApiError| match e {
        ApiError::Permanent { status, .. } => matches!(status, 401 | 403 | 404),
        e => matches!(
            e,
            ApiError::MissingScopes { .. } | ApiError::NotTheApi { .. }
        ),
    };
    match dated {
        Err(e) if refused(&e) => {
            let legacy = paths::legacy_action_definitions(app);
            match registered(client, &legacy, &key, &url, app).await {
                Ok(verdict) => verdict,
                Err(old) if refused(&old) => Verdict::Fail(format!(
                    "cannot list app {app}'s actions: {e}; on HubSpot's legacy path (v4, until 2027-03-30): {old} (if HubSpot refuses the developer key, unset {DEVELOPER_API_KEY_ENV} to skip this check)"
                )),
                Err(old) => Verdict::Fail(format!(
                    "cannot list app {app}'s actions: {e}; on HubSpot's legacy path (v4, until 2027-03-30): {old}"
                )),
            }
        }
        Err(e) => Verdict::Fail(format!("cannot list app {app}'s actions: {e}")),
        Ok(verdict) => verdict,
    }
}

/// Whether an action of `app` posts to `url`, from its definitions at `definitions` read with
/// the developer key `key`; the first page's failure as an error.
async fn registered(
    client: &Client,
    definitions: &str,
    key: &str,
    url: &str,
    app: u64,
) -> Result<Verdict, ApiError> {
    let first = format!(
        "{definitions}?hapikey={}",
        percent_encoding::utf8_percent_encode(key, percent_encoding::NON_ALPHANUMERIC)
    );
    // Paged: an app's definitions past the first page were reported unregistered.
    let (mut after, mut read): (Option<String>, usize) = (None, 0);
    let mut unpublished = false;
    for _ in 0..MAX_DEFINITION_PAGES {
        let path = match &after {
            Some(a) => format!(
                "{first}&after={}",
                percent_encoding::utf8_percent_encode(a, percent_encoding::NON_ALPHANUMERIC)
            ),
            None => first.clone(),
        };
        let defs = match client.get_json(&path).await {
            Ok(defs) => defs,
            Err(e) if after.is_none() => return Err(e),
            Err(e) => {
                return Ok(Verdict::Fail(format!(
                    "cannot list app {app}'s actions past the first {read}: {e}"
                )));
            }
        };
        let page = defs["results"].as_array().map_or(&[][..], Vec::as_slice);
        read += page.len();
        // Saved but not published, it is offered to no workflow (it passed; an audit): the
        // pages after may hold a published one.
        for d in page.iter().filter(|d| d["actionUrl"].as_str() == Some(url)) {
            match d["published"] != false {
                true => return Ok(Verdict::Ok(format!("registered for app {app} at {url}"))),
                false => unpublished = true,
            }
        }
        match defs["paging"]["next"]["after"].as_str() {
            None if unpublished => {
                return Ok(Verdict::Fail(format!(
                    "registered for app {app} at {url} but not published: no workflow can use it; publish it (update the definition with \"published\": true)"
                )));
            }
            None => {
                return Ok(Verdict::Fail(format!(
                    "no action of app {app} posts to {url}; register it with `sendtime hubspot action-definition`"
                )));
            }
            // A cursor given again would loop.
            Some(next) if after.as_deref() == Some(next) => break,
            Some(next) => after = Some(next.to_string()),
        }
    }
    // Not found in what was read; the rest is unknown, so no verdict on it.
    Ok(Verdict::Skip(format!(
        "none of the first {read} action definitions of app {app} posts to {url}, and sendtime \
         reads no further (at most {MAX_DEFINITION_PAGES} pages, and never a page twice): check \
         the app's actions in HubSpot"
    )))
}

/// The most pages of an app's action definitions read (a broken cursor must not loop).
const MAX_DEFINITION_PAGES: usize = 100;

/// A missing scope named as such; any other failure as `what` and HubSpot's answer.
fn scope_or(e: &ApiError, scope: &str, what: &str) -> String {
    match e {
        ApiError::MissingScopes { .. } => format!("the token lacks the scope `{scope}` ({what})"),
        ApiError::Permanent {
            status: 403,
            message,
            ..
        } if message.contains("scope") => {
            format!("the token lacks the scope `{scope}` ({what})")
        }
        other => format!("{what}: {other}"),
    }
}

/// Whether the connector's `time_zone` is the account's (HubSpot's `timeZone`): it is the day
/// `daily_budget` counts, the zone of contacts whose own is unknown (their quiet hours), and
/// the midnight a daily-limit pause may end at. Zones alike every hour of the coming year
/// pass (`US/Eastern` is `America/New_York`).
fn time_zone(ours: Option<chrono_tz::Tz>, account: Option<&str>, now: i64) -> Verdict {
    let Some(name) = account else {
        return Verdict::Skip("HubSpot named no time zone for the account".into());
    };
    let Some(zone) = crate::local_time::parse_zone(name) else {
        return Verdict::Skip(format!(
            "the account's zone, {name:?}, is not one sendtime knows"
        ));
    };
    let set = match ours {
        Some(z) => format!("`time_zone` is {}", z.name()),
        None => "`time_zone` is not set (UTC)".into(),
    };
    let ours = ours.unwrap_or(chrono_tz::Tz::UTC);
    // Hour by hour: a weekly look missed zones whose changes fall days apart.
    let alike = (0..=366 * 24).all(|hour| {
        let at = now + hour * crate::time::HOUR_MS;
        crate::local_time::offset_ms(zone, at) == crate::local_time::offset_ms(ours, at)
    });
    match alike {
        true => Verdict::Ok(format!("the account's zone is {name}; {set}")),
        false => Verdict::Fail(format!(
            "the account's zone is {name}, but {set}: set `time_zone = \"{name}\"` (the day `daily_budget` counts, and the zone of contacts whose own is unknown)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Zones whose changes fall days apart differ, whatever day `validate` runs on (a weekly
    /// look passed Athens for Jerusalem on a Thursday); a link of the account's zone passes.
    #[test]
    fn a_zone_passes_only_when_alike_every_hour_of_the_year() {
        let at = |t: &str| {
            chrono::DateTime::parse_from_rfc3339(t)
                .unwrap()
                .timestamp_millis()
        };
        let athens = Some(chrono_tz::Europe::Athens);
        for day in ["2026-12-03T10:00:00Z", "2026-12-05T10:00:00Z"] {
            let verdict = time_zone(athens, Some("Asia/Jerusalem"), at(day));
            assert!(matches!(verdict, Verdict::Fail(_)), "{day}: {verdict:?}");
        }
        let kolkata = Some(chrono_tz::Asia::Kolkata);
        let verdict = time_zone(kolkata, Some("Asia/Calcutta"), at("2026-12-03T10:00:00Z"));
        assert!(matches!(verdict, Verdict::Ok(_)), "{verdict:?}");
    }
}
