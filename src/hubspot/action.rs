//! sendtime's custom workflow action as HubSpot's create-action-definition API takes it: the
//! URL HubSpot posts executions to, the delivery-type input field, the output fields a
//! workflow can branch on, and the contact property to include in each execution.

use serde_json::{Value, json};

use crate::config::{Config, Webhook, WebhookType};
use crate::model::plan::{longest_wait, span_label};
use crate::receiver::execution::DELIVERY_TYPE_FIELD;
use crate::time::DAY_MS;

/// Output fields set when a callback is completed (see
/// [`crate::hubspot::wire::Completion::released`]).
pub const OUTPUT_FIELDS: [(&str, &str); 3] = [
    ("sendtime_slot", "Planned hour (UTC)"),
    ("sendtime_planned_at", "Planned time"),
    ("sendtime_released_at", "Released at"),
];

/// How each delivery type reads in the workflow editor, for an action whose `window` is
/// `span` (none: the types' own).
fn label(kind: WebhookType, span: Option<i64>) -> String {
    let Some(long) = longest_wait(kind, span) else {
        return match kind {
            WebhookType::Immediate => "Right away (no wait)".into(),
            _ => String::new(),
        };
    };
    match kind {
        // As planning gives it: the long window to fading contacts, at most a day of it to
        // the others.
        WebhookType::NextWeekFrequencyOptimized => format!(
            "Best time in the next {}; the next {} for passive or inactive contacts",
            span_label(long.min(DAY_MS)),
            span_label(long)
        ),
        _ => format!("Best time in the next {}", span_label(long)),
    }
}

/// The definition's JSON body for `action`.
pub fn definition(config: &Config, action: &Webhook) -> Value {
    // The contact's zone, for quiet hours in its local time.
    let zone_property = config
        .connector(&action.connector)
        .map_or(crate::local_time::DEFAULT_ZONE_PROPERTY, |c| {
            c.time_zone_property.as_str()
        });
    let options: Vec<Value> = WebhookType::ALL
        .into_iter()
        .filter(|k| k.enrolls())
        .map(|k| json!({"label": label(k, action.window), "value": k.as_str()}))
        .collect();
    let outputs: Vec<Value> = OUTPUT_FIELDS
        .iter()
        .map(|(name, _)| {
            json!({"typeDefinition": {"name": name, "type": "string", "fieldType": "text"}})
        })
        .collect();
    let output_labels: serde_json::Map<String, Value> = OUTPUT_FIELDS
        .iter()
        .map(|(name, label)| (name.to_string(), json!(label)))
        .collect();
    json!({
        "actionUrl": config.action_url(action),
        "published": true,
        "objectTypes": ["CONTACT"],
        "objectRequestOptions": {"properties": ["email", zone_property]},
        "inputFields": [{
            "typeDefinition": {
                "name": DELIVERY_TYPE_FIELD,
                "type": "enumeration",
                "fieldType": "select",
                "options": options,
            },
            "supportedValueTypes": ["STATIC_VALUE"],
            "isRequired": false,
        }],
        "outputFields": outputs,
        "functions": [],
        "labels": {"en": {
            "actionName": action.name.as_deref().unwrap_or("Send at the best time (sendtime)"),
            "actionDescription": "Holds the contact here until the hour it is most likely to read email, then lets it go on.",
            "appDisplayName": "sendtime",
            "inputFieldLabels": {DELIVERY_TYPE_FIELD: "Delivery"},
            "inputFieldDescriptions": {DELIVERY_TYPE_FIELD: format!("When to let the contact go on; left empty: {}", label(action.kind, action.window))},
            "outputFieldLabels": output_labels,
        }},
    })
}
