//! The body of a custom workflow action's execution: what HubSpot posts to the action's URL
//! when a contact reaches the action in a workflow.
//!
//! `{"callbackId", "origin": {"portalId", "actionDefinitionId", ...}, "context": {"workflowId",
//! ...}, "object": {"objectId", "objectType", "properties": {...}}, "inputFields": {...}}`;
//! unknown fields are skipped (HubSpot adds some). The delivery type chosen in the workflow
//! editor arrives as the input field [`DELIVERY_TYPE_FIELD`].

use std::collections::HashMap;

use serde::Deserialize;

use super::payload::{Portal, portal_of};
use super::refusal::{ECHOED_CHARS, clip};
use crate::config::WebhookType;
use crate::lenient::or_default;

/// The action's input field that carries the delivery type.
pub const DELIVERY_TYPE_FIELD: &str = "delivery_type";
/// HubSpot's callback ids are a few dozen characters; this one is stored and sent back.
pub const MAX_CALLBACK_ID: usize = 256;

/// What sendtime needs of an execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execution {
    pub callback_id: String,
    pub portal: Portal,
    pub workflow_id: Option<i64>,
    /// The contact's record id.
    pub contact_id: Option<i64>,
    pub email: Option<String>,
    /// The contact's time zone as HubSpot gives it (`america_slash_new_york`).
    pub time_zone: Option<String>,
    /// The delivery type chosen in the workflow editor, when one was.
    pub delivery_type: Option<WebhookType>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExecutionError {
    #[error("body is not a workflow action execution: {0}")]
    NotJson(String),
    #[error("the execution has no callbackId")]
    NoCallback,
    #[error(
        "the execution's callbackId is {0} bytes long; HubSpot's are far shorter (at most {MAX_CALLBACK_ID} taken)"
    )]
    CallbackTooLong(usize),
    #[error(
        "the execution is for a {0} record; this action releases contacts only (object type CONTACT)"
    )]
    NotContact(String),
    #[error(
        "unknown delivery type {0:?} in the input field `delivery_type`; expected one of: NEXT_24_HOURS, NEXT_WEEK_FREQUENCY_OPTIMIZED, NEXT_WEEK, IMMEDIATE"
    )]
    UnknownDeliveryType(String),
}

// Optional fields of an unexpected type (null, a string for a map) count as absent, as in
// webhook bodies: a 4xx fails the workflow's action, and HubSpot does not retry it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    #[serde(default)]
    callback_id: Option<String>,
    #[serde(default, deserialize_with = "or_default")]
    origin: Option<Origin>,
    #[serde(default, deserialize_with = "or_default")]
    context: Option<Context>,
    #[serde(default, deserialize_with = "or_default")]
    object: Option<Object>,
    #[serde(default, deserialize_with = "or_default")]
    input_fields: HashMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Origin {
    /// Checked as a webhook body's is: a number or a string of digits, anything else invalid.
    #[serde(default)]
    portal_id: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Context {
    #[serde(default, deserialize_with = "super::payload::id")]
    workflow_id: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Object {
    #[serde(default, deserialize_with = "super::payload::id")]
    object_id: Option<i64>,
    #[serde(default, deserialize_with = "or_default")]
    object_type: Option<String>,
    #[serde(default, deserialize_with = "or_default")]
    properties: HashMap<String, serde_json::Value>,
}

/// Read an execution body; only contact executions with a callback id are taken. The
/// contact's zone is read from the object property `zone_property`.
pub fn parse(body: &[u8], zone_property: &str) -> Result<Execution, ExecutionError> {
    // serde's message quotes a mistyped value whole.
    let b: Body = serde_json::from_slice(body)
        .map_err(|e| ExecutionError::NotJson(clip(&e.to_string(), 4 * ECHOED_CHARS)))?;
    let callback_id = b
        .callback_id
        .filter(|c| !c.trim().is_empty())
        .ok_or(ExecutionError::NoCallback)?;
    if callback_id.len() > MAX_CALLBACK_ID {
        return Err(ExecutionError::CallbackTooLong(callback_id.len()));
    }
    let object = b.object.unwrap_or(Object {
        object_id: None,
        object_type: None,
        properties: HashMap::new(),
    });
    match object.object_type.as_deref() {
        Some(t) if t.eq_ignore_ascii_case("CONTACT") => {}
        other => {
            return Err(ExecutionError::NotContact(clip(
                other.unwrap_or("(no object type)"),
                ECHOED_CHARS,
            )));
        }
    }
    let delivery_type = match b.input_fields.get(DELIVERY_TYPE_FIELD) {
        // Left empty in the workflow editor: the action's default.
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(t)) if t.trim().is_empty() => None,
        Some(v) => {
            let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            let kind = WebhookType::parse(text.trim()).filter(|k| k.enrolls());
            Some(
                kind.ok_or_else(|| ExecutionError::UnknownDeliveryType(clip(&text, ECHOED_CHARS)))?,
            )
        }
    };
    let email = object
        .properties
        .get("email")
        .and_then(|v| v.as_str())
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_string);
    let time_zone = object
        .properties
        .get(zone_property)
        .and_then(|v| v.as_str())
        .map(str::trim)
        .filter(|z| !z.is_empty() && z.len() <= crate::local_time::MAX_ZONE_CHARS)
        .map(str::to_string);
    Ok(Execution {
        callback_id,
        time_zone,
        portal: b.origin.map_or(Portal::Absent, |o| portal_of(&o.portal_id)),
        workflow_id: b.context.and_then(|c| c.workflow_id),
        contact_id: object.object_id,
        email,
        delivery_type,
    })
}

/// A hold ([`crate::model::plan::hold`]) as HubSpot is asked for it: whole hours, rounded up.
pub fn asked(hold_ms: i64) -> i64 {
    use crate::time::HOUR_MS;
    (hold_ms + HOUR_MS - 1) / HOUR_MS * HOUR_MS
}

/// A hold as HubSpot takes it: an ISO-8601 duration in whole hours, rounded up ([`asked`]).
pub fn expiration(hold_ms: i64) -> String {
    let hours = asked(hold_ms) / crate::time::HOUR_MS;
    match (hours / 24, hours % 24) {
        (days, 0) => format!("P{days}D"),
        (days, hours) => format!("P{days}DT{hours}H"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &[u8]) -> Result<Execution, ExecutionError> {
        super::parse(body, crate::local_time::DEFAULT_ZONE_PROPERTY)
    }

    const EXAMPLE: &str = r#"{
      "callbackId": "ap-102670506-56776413549-7-0",
      "origin": {"portalId": 62515, "actionDefinitionId": 10646, "actionDefinitionVersion": 1,
                 "extensionDefinitionId": 1, "extensionDefinitionVersionId": 1},
      "context": {"source": "WORKFLOWS", "workflowId": 123456},
      "object": {"objectId": 9153674, "objectType": "CONTACT",
                 "properties": {"email": "ada@example.com", "hs_timezone": "europe_slash_brussels"}},
      "inputFields": {"delivery_type": "NEXT_WEEK"}
    }"#;

    #[test]
    fn hubspots_example_execution() {
        assert_eq!(
            parse(EXAMPLE.as_bytes()).unwrap(),
            Execution {
                callback_id: "ap-102670506-56776413549-7-0".into(),
                portal: Portal::Id(62515),
                workflow_id: Some(123456),
                contact_id: Some(9153674),
                email: Some("ada@example.com".into()),
                time_zone: Some("europe_slash_brussels".into()),
                delivery_type: Some(WebhookType::NextWeek),
            }
        );
    }

    /// Optional fields of an unexpected type count as absent: a 400 would fail the action,
    /// and HubSpot does not retry it.
    #[test]
    fn optional_fields_of_another_type_count_as_absent() {
        let with = |from: &str, to: &str| parse(EXAMPLE.replace(from, to).as_bytes());
        let no_input = with("{\"delivery_type\": \"NEXT_WEEK\"}", "null").unwrap();
        assert_eq!(no_input.delivery_type, None, "the action's default");
        let as_string = with("{\"delivery_type\": \"NEXT_WEEK\"}", "\"NEXT_WEEK\"").unwrap();
        assert_eq!(as_string.delivery_type, None);
        let start = EXAMPLE.find("{\"email\"").unwrap();
        let end = EXAMPLE[start..].find('}').unwrap() + start + 1;
        let no_properties = with(&EXAMPLE[start..end], "null").unwrap();
        assert_eq!(
            (no_properties.email, no_properties.contact_id),
            (None, Some(9153674))
        );
        let odd_context = with("{\"source\": \"WORKFLOWS\", \"workflowId\": 123456}", "7").unwrap();
        assert_eq!(odd_context.workflow_id, None);
        let odd_origin = parse(
            EXAMPLE
                .replacen("{\"portalId\"", "[{\"portalId\"", 1)
                .replacen(
                    "\"extensionDefinitionVersionId\": 1}",
                    "\"extensionDefinitionVersionId\": 1}]",
                    1,
                )
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(odd_origin.portal, Portal::Absent);
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        let with = |from: &str, to: &str| parse(EXAMPLE.replace(from, to).as_bytes());
        assert_eq!(
            with("\"CONTACT\"", "\"DEAL\"").unwrap_err(),
            ExecutionError::NotContact("DEAL".into())
        );
        assert_eq!(
            with("\"NEXT_WEEK\"", "\"UPDATE_ONLY\"").unwrap_err(),
            ExecutionError::UnknownDeliveryType("UPDATE_ONLY".into())
        );
        assert_eq!(
            with("\"callbackId\": \"ap-102670506-56776413549-7-0\",", "").unwrap_err(),
            ExecutionError::NoCallback
        );
        assert!(matches!(parse(b"[1]"), Err(ExecutionError::NotJson(_))));
        // Strangers' long values are bounded, stored or echoed.
        let long = "x".repeat(10_000);
        let callback = format!("\"{}\"", "a".repeat(MAX_CALLBACK_ID + 1));
        assert_eq!(
            with("\"ap-102670506-56776413549-7-0\"", &callback).unwrap_err(),
            ExecutionError::CallbackTooLong(MAX_CALLBACK_ID + 1)
        );
        let at_most = format!("\"{}\"", "a".repeat(MAX_CALLBACK_ID));
        assert!(with("\"ap-102670506-56776413549-7-0\"", &at_most).is_ok());
        let ExecutionError::NotContact(echoed) =
            with("\"CONTACT\"", &format!("\"{long}\"")).unwrap_err()
        else {
            panic!("not refused as another object type")
        };
        assert_eq!(echoed.chars().count(), ECHOED_CHARS + 1);
        let ExecutionError::UnknownDeliveryType(echoed) =
            with("\"NEXT_WEEK\"", &format!("\"{long}\"")).unwrap_err()
        else {
            panic!("not refused as a delivery type")
        };
        assert_eq!(echoed.chars().count(), ECHOED_CHARS + 1);
        let ExecutionError::NotJson(echoed) = parse(format!("\"{long}\"").as_bytes()).unwrap_err()
        else {
            panic!("not refused as JSON")
        };
        assert_eq!(echoed.chars().count(), 4 * ECHOED_CHARS + 1, "{echoed}");
        // No delivery type chosen: the action's default applies.
        for none in [
            "{}",
            "{\"delivery_type\": \"\"}",
            "{\"delivery_type\": \" \"}",
        ] {
            let e = with("{\"delivery_type\": \"NEXT_WEEK\"}", none).unwrap();
            assert_eq!(e.delivery_type, None, "{none}");
        }
    }

    /// The hold outlasts the longest window the contact can be planned in, by a day.
    #[test]
    fn the_hold_outlasts_the_window() {
        use crate::model::plan::hold;
        use crate::time::{DAY_MS, HOUR_MS};
        assert_eq!(
            expiration(hold(WebhookType::Immediate, Some(7 * DAY_MS))),
            "P1D"
        );
        assert_eq!(expiration(hold(WebhookType::Next24Hours, None)), "P2D");
        assert_eq!(expiration(hold(WebhookType::NextWeek, None)), "P8D");
        assert_eq!(
            expiration(hold(WebhookType::NextWeekFrequencyOptimized, None)),
            "P8D"
        );
        assert_eq!(
            expiration(hold(WebhookType::Next24Hours, Some(7 * DAY_MS))),
            "P8D"
        );
        assert_eq!(
            expiration(hold(WebhookType::Next24Hours, Some(36 * HOUR_MS))),
            "P2DT12H"
        );
        assert_eq!(
            expiration(hold(WebhookType::NextWeek, Some(90 * 60_000))),
            "P1DT2H"
        );
    }

    /// Ids sent as strings of digits are read; a portal that is not an id is invalid (the
    /// portal check refuses it), never absent.
    #[test]
    fn ids_as_strings() {
        let with = |from: &str, to: &str| parse(EXAMPLE.replace(from, to).as_bytes()).unwrap();
        assert_eq!(with("62515,", "\"62515\",").portal, Portal::Id(62515));
        assert_eq!(with("9153674,", "\"9153674\",").contact_id, Some(9153674));
        assert_eq!(with("123456}", "\"123456\"}").workflow_id, Some(123456));
        assert!(matches!(
            with("62515,", "\"62515x\",").portal,
            Portal::Invalid(_)
        ));
    }
}
