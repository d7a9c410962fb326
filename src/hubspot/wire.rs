//! The bodies sendtime reads from HubSpot and sends it: email event pages, a contact's
//! workflows, a list add's answer, callback completions.

use serde::{Deserialize, Serialize};

/// HubSpot's largest page for the email events API.
pub const MAX_EVENTS_PAGE: u32 = 1000;

/// One email event as HubSpot's email events API returns it. Fields we do not use are kept
/// in `extra` so the stand-in can serve, and tools can print, HubSpot's full shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmailEvent {
    /// HubSpot's event id (a string); unique together with `created`.
    pub id: String,
    /// Epoch milliseconds.
    pub created: i64,
    /// `OPEN`, `CLICK`, `SENT`, ...; empty when absent (HubSpot's UNBOUNCE events have no
    /// type): a type sendtime does not learn from, not a page it cannot read.
    #[serde(
        rename = "type",
        default,
        deserialize_with = "crate::lenient::or_default"
    )]
    pub kind: String,
    #[serde(
        default,
        deserialize_with = "crate::lenient::or_default",
        skip_serializing_if = "Option::is_none"
    )]
    pub recipient: Option<String>,
    #[serde(
        default,
        deserialize_with = "crate::lenient::or_default",
        skip_serializing_if = "Option::is_none"
    )]
    pub email_campaign_id: Option<i64>,
    /// Machine opens and bot clicks that HubSpot hides from its reports.
    #[serde(default, deserialize_with = "flag")]
    pub filtered_event: bool,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The filter flag, also as text (`"true"`): a bot's open read as a person's would be
/// learnt from.
fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Bool(b) => b,
        serde_json::Value::String(s) => s.trim().eq_ignore_ascii_case("true"),
        _ => false,
    })
}

/// One page of email events, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", from = "PageAsSent")]
pub struct EventsPage {
    pub events: Vec<EmailEvent>,
    pub has_more: bool,
    /// Opaque cursor for the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<String>,
    /// Events that could not be read (no id, no time): skipped and counted, not a page that
    /// stops the import.
    #[serde(skip)]
    pub unreadable: u64,
    /// Why the first of them could not be read.
    #[serde(skip)]
    pub first_unreadable: Option<String>,
    /// When HubSpot answered, by its `Date` header: the import marks its window complete up
    /// to HubSpot's time, not this machine's (a clock ahead marked events complete before
    /// HubSpot had them, and no run read them; an audit).
    #[serde(skip)]
    pub answered_at_ms: Option<i64>,
}

/// A page as it comes, each event read on its own.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageAsSent {
    #[serde(default, deserialize_with = "at_most_a_page")]
    events: Vec<serde_json::Value>,
    /// Required: HubSpot always says it, and an answer without it (a proxy's `{}`, an
    /// `api_base` naming some other JSON service) read as a last page marked the window
    /// imported with nothing read.
    has_more: bool,
    #[serde(default)]
    offset: Option<String>,
}

/// A page's events, refused past [`MAX_EVENTS_PAGE`] (more than HubSpot sends): each is read
/// as a JSON value, a few hundred bytes a key, so millions of tiny objects in a body's 32 MB (a
/// broken proxy's, another service's at `api_base`) took gigabytes. It bounds their number,
/// not what each nests.
fn at_most_a_page<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<serde_json::Value>, D::Error> {
    struct Events;
    impl<'de> serde::de::Visitor<'de> for Events {
        type Value = Vec<serde_json::Value>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a list of at most {MAX_EVENTS_PAGE} events")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut events = Vec::new();
            while let Some(event) = seq.next_element()? {
                if events.len() == MAX_EVENTS_PAGE as usize {
                    return Err(serde::de::Error::custom(format!(
                        "more than {MAX_EVENTS_PAGE} events in one page, the most HubSpot sends: not an answer of the email events API"
                    )));
                }
                events.push(event);
            }
            Ok(events)
        }
    }
    d.deserialize_seq(Events)
}

impl From<PageAsSent> for EventsPage {
    fn from(page: PageAsSent) -> EventsPage {
        let total = page.events.len();
        let mut first_unreadable = None;
        let events: Vec<EmailEvent> = (page.events.into_iter())
            .filter_map(|e| {
                serde_json::from_value(e)
                    .map_err(|e| first_unreadable.get_or_insert_with(|| e.to_string()))
                    .ok()
            })
            .collect();
        EventsPage {
            answered_at_ms: None,
            unreadable: (total - events.len()) as u64,
            first_unreadable,
            events,
            has_more: page.has_more,
            offset: page.offset,
        }
    }
}

/// What to ask the email events API for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsQuery {
    /// Inclusive, epoch ms.
    pub start_ms: Option<i64>,
    /// Inclusive, epoch ms. Fixing it for a whole run keeps offsets stable while new events arrive.
    pub end_ms: Option<i64>,
    pub event_type: Option<String>,
    pub limit: u32,
    pub offset: Option<String>,
}

impl Default for EventsQuery {
    fn default() -> Self {
        EventsQuery {
            start_ms: None,
            end_ms: None,
            event_type: None,
            limit: MAX_EVENTS_PAGE,
            offset: None,
        }
    }
}

/// A workflow a contact is enrolled in (enrollments read).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workflow {
    pub id: u64,
    #[serde(default)]
    pub name: String,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// HubSpot's answer to a list membership add.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListAddResult {
    /// HubSpot's own schema spells it `recordsIdsAdded`; both spellings are accepted.
    #[serde(default, rename = "recordsIdsAdded", alias = "recordIdsAdded")]
    pub record_ids_added: Vec<String>,
    #[serde(default)]
    pub record_ids_missing: Vec<String>,
    #[serde(default)]
    pub record_ids_removed: Vec<String>,
}

/// One workflow-action callback to complete, with the output fields the workflow can branch
/// on after the action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Completion {
    pub callback_id: String,
    pub output_fields: serde_json::Map<String, serde_json::Value>,
    /// Required by the date-versioned API; sendtime sends none.
    #[serde(default)]
    pub typed_outputs: serde_json::Map<String, serde_json::Value>,
}

impl Completion {
    /// The contact goes on (`hs_execution_state: SUCCESS`), with the slot it was planned for,
    /// the planned time and the release time.
    pub fn released(callback_id: String, due_at_ms: i64, now_ms: i64) -> Completion {
        let mut fields = serde_json::Map::new();
        let mut put = |k: &str, v: String| fields.insert(k.into(), v.into());
        put("hs_execution_state", "SUCCESS".into());
        put(
            "sendtime_slot",
            crate::time::slot_name(crate::time::slot_of(due_at_ms)),
        );
        put(
            "sendtime_planned_at",
            crate::time::format_rfc3339(due_at_ms),
        );
        put("sendtime_released_at", crate::time::format_rfc3339(now_ms));
        Completion {
            callback_id,
            output_fields: fields,
            typed_outputs: serde_json::Map::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_of_more_events_than_hubspot_sends_is_refused() {
        let page = |n: usize| {
            format!(
                r#"{{"hasMore":false,"events":[{}]}}"#,
                vec!["{}"; n].join(",")
            )
        };
        let full: EventsPage = serde_json::from_str(&page(1000)).unwrap();
        assert_eq!((full.events.len(), full.unreadable), (0, 1000));
        let err = serde_json::from_str::<EventsPage>(&page(1001)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("more than 1000 events in one page"),
            "{err}"
        );
    }

    #[test]
    fn list_add_accepts_both_spellings() {
        let a: ListAddResult =
            serde_json::from_str(r#"{"recordsIdsAdded":["1"],"recordIdsMissing":["9"]}"#).unwrap();
        let b: ListAddResult = serde_json::from_str(r#"{"recordIdsAdded":["1"]}"#).unwrap();
        assert_eq!(a.record_ids_added, ["1"]);
        assert_eq!(a.record_ids_missing, ["9"]);
        assert_eq!(b.record_ids_added, ["1"]);
    }
}
