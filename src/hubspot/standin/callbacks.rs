//! Workflow-action callbacks as HubSpot holds them: a workflow played against sendtime's
//! action, the answer that blocks a contact (and for how long), and batched completions.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{StandIn, WorkflowRun, World, error};
use crate::time::{DAY_MS, HOUR_MS, MINUTE_MS};

impl StandIn {
    /// A workflow execution HubSpot is holding (blocked) under `callback_id`, until
    /// [`StandIn::answered`] says for how long.
    pub fn add_callback(&self, callback_id: &str) {
        self.hold(callback_id, None);
    }

    /// Hold `callback_id`, an execution for `contact` when known (mailed once released).
    fn hold(&self, callback_id: &str, contact: Option<u64>) {
        self.world.lock().unwrap().callbacks.insert(
            callback_id.to_string(),
            Callback::Blocked {
                expires_at_ms: None,
                contact,
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
            if let Some(Callback::Blocked { contact, .. }) = world.callbacks.get(callback_id) {
                let contact = *contact;
                world.callbacks.remove(callback_id);
                if let Some(vid) = contact {
                    world.mailed(vid);
                }
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
                    contact: None,
                });
        if let Callback::Blocked { expires_at_ms, .. } = callback {
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
            // A contact executed again is another callback (one id per contact made the
            // demo's repeats duplicates, an audit found).
            let callback = {
                let mut world = self.world.lock().unwrap();
                world.executions += 1;
                format!(
                    "ap-{}-{}-{vid}-{}",
                    execution.portal_id, execution.workflow_id, world.executions
                )
            };
            self.hold(&callback, Some(*vid));
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
}

impl World {
    /// Complete callbacks, all or none: 204. HubSpot's docs give a batch no per-callback
    /// results and do not say how an unknown or already completed callback is answered; the
    /// stand-in refuses the whole batch (400, naming them), and batches of more than
    /// [`MAX_CALLBACK_BATCH`].
    pub(super) fn complete_callbacks(&mut self, body: &[u8]) -> Response {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Input {
            callback_id: String,
            /// Required by both references: an input without it is refused.
            output_fields: serde_json::Value,
            /// Required by HubSpot's references, 2026-03's and v4's (since 2026-03): an input
            /// without it is refused.
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
        if let Some(i) = batch.inputs.iter().find(|i| i.typed_outputs.is_none()) {
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
                    ..
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
            let held = (self.callbacks)
                .insert(input.callback_id, Callback::Completed(input.output_fields));
            if let Some(Callback::Blocked {
                contact: Some(vid), ..
            }) = held
            {
                self.mailed(vid);
            }
        }
        StatusCode::NO_CONTENT.into_response()
    }
}

/// The most callbacks the stand-in completes in one call.
pub const MAX_CALLBACK_BATCH: usize = 100;

/// A workflow-action callback HubSpot holds.
pub(super) enum Callback {
    /// The contact (when known) waits in the action, until `expires_at_ms` when known.
    Blocked {
        expires_at_ms: Option<i64>,
        contact: Option<u64>,
    },
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
