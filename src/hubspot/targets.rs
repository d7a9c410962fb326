//! Whether the workflow or list a webhook sends to can take its calls, read from HubSpot: what
//! `validate --online` checks before anything is sent, and what the dispatcher asks when
//! HubSpot refuses a call in a way that may be the target's rather than the contact's.

use std::fmt;

use super::client::Admitted;
use super::error::ApiError;

/// Why a target cannot take a webhook's calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unusable {
    /// No legacy workflow of this id in the account (deleted, or a flow id).
    NoWorkflow(u64),
    /// A workflow that is turned off (`enabled: false`): HubSpot enrolls only into one on.
    WorkflowOff {
        id: u64,
        name: String,
    },
    NoList(String),
    /// A list of records other than contacts (its `objectTypeId`).
    NotContacts(String),
    /// A list whose members HubSpot keeps itself (DYNAMIC): it takes no manual changes.
    NotManual {
        list: String,
        kind: String,
    },
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unusable::NoWorkflow(id) => write!(f, "no workflow {id} in this account"),
            Unusable::WorkflowOff { id, name } => write!(
                f,
                "workflow {id} ({name}) is turned off in HubSpot, which enrolls contacts only into a workflow that is on"
            ),
            Unusable::NoList(id) => write!(f, "no list {id} in this account (ILS list ids)"),
            Unusable::NotContacts(id) => write!(f, "list {id} is not a contact list"),
            Unusable::NotManual { list, kind } => write!(
                f,
                "list {list} is {kind}: HubSpot accepts manual membership changes only for MANUAL or SNAPSHOT lists"
            ),
        }
    }
}

/// A legacy workflow's name, or why nothing can be enrolled into it (gone, or turned off:
/// `enabled` is taken as on when not said).
pub async fn workflow(call: Admitted<'_>, id: u64) -> Result<Result<String, Unusable>, ApiError> {
    match call.workflow(id).await {
        Ok((name, enabled)) => {
            let name = name.unwrap_or_else(|| "unnamed".into());
            Ok(match enabled {
                Some(false) => Err(Unusable::WorkflowOff { id, name }),
                _ => Ok(name),
            })
        }
        Err(ApiError::Permanent { status: 404, .. }) => Ok(Err(Unusable::NoWorkflow(id))),
        Err(e) => Err(e),
    }
}

/// A contact list's name and processing type (none: not said), or why contacts cannot be
/// added to it.
pub async fn list(
    call: Admitted<'_>,
    id: &str,
) -> Result<Result<(String, Option<String>), Unusable>, ApiError> {
    let answer = match call.get_json(&super::paths::list(id)).await {
        Ok(answer) => answer,
        Err(ApiError::Permanent { status: 404, .. }) => {
            return Ok(Err(Unusable::NoList(id.to_string())));
        }
        Err(e) => return Err(e),
    };
    let list = &answer["list"];
    if list["objectTypeId"].as_str().is_some_and(|t| t != "0-1") {
        return Ok(Err(Unusable::NotContacts(id.to_string())));
    }
    // A list whose type is not said is tried (the list add says if it refuses): taken for
    // one that refuses, an answer of another shape held every contact of the list (an audit).
    let name = || list["name"].as_str().unwrap_or("unnamed").to_string();
    Ok(match list["processingType"].as_str() {
        None => Ok((name(), None)),
        Some(kind @ ("MANUAL" | "SNAPSHOT")) => Ok((name(), Some(kind.into()))),
        Some(kind) => Err(Unusable::NotManual {
            list: id.to_string(),
            kind: kind.into(),
        }),
    })
}
