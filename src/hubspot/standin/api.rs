//! The stand-in's answers to the API's calls: account details and usage, workflows, lists,
//! email events, enrollments and list memberships.

use std::collections::{HashMap, HashSet};

use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;
use serde_json::json;

use super::oauth::unauthenticated;
use super::{DEFAULT_EVENTS_LIMIT, ListKind, MAX_EVENTS_LIMIT, World, account_day, error};
use crate::hubspot::EmailEvent;
use crate::time::{DAY_MS, MINUTE_MS};

impl World {
    /// The daily allowance: used, limit, and when it resets (the account's next midnight).
    pub(super) fn daily_usage(&self) -> Response {
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

    pub(super) fn account_details(&self) -> Response {
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

    /// A legacy workflow (what the v2 and v3 APIs know) by this id; a flow id is not one.
    fn workflow_exists(&self, id: u64) -> bool {
        (self.options.workflows.is_empty() || self.options.workflows.contains(&id))
            && !self.options.flow_ids.iter().any(|(flow, _)| *flow == id)
    }

    /// A legacy workflow, by its workflow id.
    pub(super) fn workflow(&self, id: &str) -> Response {
        match id.parse::<u64>() {
            Ok(id) if self.workflow_exists(id) => {
                let body = json!({
                    "id": id,
                    "name": format!("Workflow {id}"),
                    "type": "DRIP_DELAY",
                    "enabled": !self.options.workflows_off.contains(&id),
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

    pub(super) fn workflow_id_mappings(&self, body: &[u8]) -> Response {
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

    /// The app's action definitions, with the developer API key (`hapikey`), on either path
    /// (the date-versioned one's spec named the key until 2026-04; a test scripts a refusal).
    pub(super) fn action_definitions(&self, app: &str, uri: &axum::http::Uri) -> Response {
        let key = uri
            .query()
            .into_iter()
            .flat_map(|q| q.split('&'))
            .find_map(|p| p.strip_prefix("hapikey="))
            .map(|k| percent_decode_str(k).decode_utf8_lossy().into_owned());
        if key.as_deref() != Some(self.options.developer_api_key.as_str()) {
            return unauthenticated();
        }
        // Paged, as HubSpot's reference has it (`limit`, `after`, `paging.next.after`); its
        // default page size is not documented.
        let param = |name: &str| {
            (uri.query().into_iter().flat_map(|q| q.split('&')))
                .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
                .and_then(|v| v.parse::<usize>().ok())
        };
        let (limit, after) = (
            param("limit").unwrap_or(10).max(1),
            param("after").unwrap_or(0),
        );
        let urls = &self.options.action_urls;
        let published = !self.options.actions_unpublished;
        let results: Vec<serde_json::Value> = (urls.iter().enumerate())
            .skip(after)
            .take(limit)
            .map(|(i, url)| {
                json!({"id": (10_646 + i).to_string(), "appId": app, "actionUrl": url, "published": published})
            })
            .collect();
        let mut body = json!({ "results": results });
        let next = after.saturating_add(limit);
        if next < urls.len() {
            body["paging"] = json!({"next": {"after": next.to_string()}});
        }
        (StatusCode::OK, axum::Json(body)).into_response()
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

    pub(super) fn list(&self, list: &str) -> Response {
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

    pub(super) fn events_page(&self, uri: &axum::http::Uri) -> Response {
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
        let limit = match limit {
            None => DEFAULT_EVENTS_LIMIT,
            Some(l) if (1..=MAX_EVENTS_LIMIT as i64).contains(&l) => l as usize,
            Some(l) => {
                let message = format!("limit {l} is not between 1 and {MAX_EVENTS_LIMIT}");
                return error(StatusCode::BAD_REQUEST, &message, None);
            }
        };
        let offset = offset.unwrap_or(0).max(0) as usize;
        let exclude_filtered = q.get("excludeFilteredEvents").is_some_and(|v| v == "true");
        let event_type = q.get("eventType");
        // HubSpot has no event after its now (a test sets the stand-in's clock apart from
        // this machine's).
        let now = self.options.clock.now_ms();
        let end = end.map_or(now, |e| e.min(now));
        // Newest first: skip what is newer than `end`, stop at what is older than `start`.
        let lo = self.events.partition_point(|ev| ev.created > end);
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

    pub(super) fn enroll(&mut self, workflow: &str, email: &str) -> Response {
        let Ok(workflow) = workflow.parse::<u64>() else {
            return error(
                StatusCode::NOT_FOUND,
                &format!("Workflow {workflow:?} not found"),
                None,
            );
        };
        if !self.workflow_exists(workflow) {
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
        if self.options.workflows_off.contains(&workflow) {
            return StatusCode::NO_CONTENT.into_response();
        }
        self.enrollments.entry(vid).or_default().insert(workflow);
        self.enrolled_at
            .insert((vid, workflow), std::time::Instant::now());
        self.mailed(vid);
        StatusCode::NO_CONTENT.into_response()
    }

    /// A contact by id, with its primary `email` (the only property sendtime asks for) and
    /// those HubSpot always adds.
    pub(super) fn contact(&self, id: &str) -> Response {
        let found = id
            .parse::<u64>()
            .ok()
            .and_then(|vid| Some((vid, self.addresses.get(&vid)?)));
        let Some((vid, email)) = found else {
            return error(
                StatusCode::NOT_FOUND,
                "Object not found.  objectId are usually numeric.",
                Some("OBJECT_NOT_FOUND"),
            );
        };
        let created = "2026-01-05T09:30:00.000Z";
        let body = json!({
            "id": vid.to_string(),
            "properties": {
                "createdate": created,
                "email": email,
                "hs_object_id": vid.to_string(),
                "lastmodifieddate": created,
            },
            "createdAt": created,
            "updatedAt": created,
            "archived": false,
        });
        (StatusCode::OK, axum::Json(body)).into_response()
    }

    pub(super) fn enrollments_read(&self, vid: &str) -> Response {
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

    pub(super) fn list_add(&mut self, list: &str, body: &[u8]) -> Response {
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
        for vid in added.iter().filter_map(|id| id.parse().ok()) {
            self.mailed(vid);
        }
        axum::Json(json!({
            "recordIdsMissing": missing,
            "recordIdsRemoved": [],
            "recordsIdsAdded": added,
        }))
        .into_response()
    }
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
