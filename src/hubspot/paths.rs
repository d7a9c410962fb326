//! Every HubSpot API path sendtime calls, in one place, with where each stands. HubSpot moves
//! to date-versioned paths (`/2026-03/`); numbered v1–v3 paths go unsupported in September 2027
//! and v4 on 2027-03-30 ([changelog](https://developers.hubspot.com/changelog/legacy-apis-and-legacy-apps-whats-going-unsupported-and-when)).
//! Where a date-versioned successor exists, it is used; the others have none yet.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Everything except RFC 3986 unreserved characters, so an email (`+`, `@`, `/`...) or a
/// list id is one path segment whatever it contains.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// Email events (legacy v1, no successor yet; unsupported after September 2027).
pub const EMAIL_EVENTS: &str = "/email/public/v1/events";

/// Enroll a contact by email into a workflow (legacy v2; workflow enrollment has no successor
/// yet).
pub fn enroll(workflow_id: u64, email: &str) -> String {
    format!(
        "/automation/v2/workflows/{workflow_id}/enrollments/contacts/{}",
        segment(email)
    )
}

/// The workflows a contact (by vid) is enrolled in (legacy v2, as enrollment).
pub fn enrollments(vid: u64) -> String {
    format!("/automation/v2/workflows/enrollments/contacts/{vid}")
}

/// A contact by its id (date-versioned).
pub fn contact(vid: u64) -> String {
    format!("/crm/objects/2026-03/contacts/{vid}")
}

/// A legacy workflow by its workflow id (v3; what enrollment takes).
pub fn workflow(workflow_id: u64) -> String {
    format!("/automation/v3/workflows/{workflow_id}")
}

/// Mappings between the workflow editor's flow ids and legacy workflow ids (v4).
pub const WORKFLOW_ID_MAPPINGS: &str = "/automation/v4/workflow-id-mappings/batch/read";

/// Complete workflow-action callbacks in a batch (date-versioned).
pub const CALLBACKS_COMPLETE: &str = "/automation/actions/callbacks/2026-03/complete";

/// An app's workflow-action definitions (date-versioned).
pub fn action_definitions(app_id: u64) -> String {
    format!("/automation/actions/2026-03/{app_id}")
}

/// An app's workflow-action definitions on HubSpot's legacy path (v4, unsupported from
/// 2027-03-30), which takes the developer API key.
pub fn legacy_action_definitions(app_id: u64) -> String {
    format!("/automation/v4/actions/{app_id}")
}

/// A list (date-versioned).
pub fn list(list_id: &str) -> String {
    format!("/crm/lists/2026-03/{}", segment(list_id))
}

/// Add records to a MANUAL or SNAPSHOT list (date-versioned).
pub fn list_add(list_id: &str) -> String {
    format!("/crm/lists/2026-03/{}/memberships/add", segment(list_id))
}

/// The account the token belongs to (date-versioned).
pub const ACCOUNT_DETAILS: &str = "/account-info/2026-03/details";

/// The account's daily API usage and when it resets (date-versioned).
pub const API_USAGE_DAILY: &str = "/account-info/2026-03/api-usage/daily/private-apps";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_and_list_ids_are_one_path_segment() {
        assert_eq!(
            enroll(1, "a+b/c@x.com"),
            "/automation/v2/workflows/1/enrollments/contacts/a%2Bb%2Fc%40x.com"
        );
        assert_eq!(
            list_add("98/7"),
            "/crm/lists/2026-03/98%2F7/memberships/add"
        );
    }
}
