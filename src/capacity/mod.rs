//! How many HubSpot calls each connector can take, and what each delivery costs, so that plans
//! never ask for more than the dispatcher can send: [`ledger`] books planned sends per minute
//! and per day, [`assign`] places a batch of new receipts in what is left.

pub mod assign;
pub mod ledger;

use chrono_tz::Tz;

use crate::config::{Connector, Target};
use crate::hubspot::limiter::Limiter;

pub use assign::{Placed, Request, assign};
pub use ledger::Ledger;

/// One call in the units capacity is counted in: a contact added to a list in batches of
/// 2,500 costs 400 of them, so list and callback batches share a minute with enrollments.
pub const CALL: u64 = 1_000_000;
/// The share (percent) of the dispatcher's pace that planning may fill: the rest is left for
/// retries, reading the enrollments of contacts in doubt, and the HubSpot import.
pub const PLAN_SHARE_PERCENT: u64 = 90;

/// What a connector can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Calls (in [`CALL`] units) per minute that may be planned.
    pub per_minute: u64,
    /// Calls (in [`CALL`] units) per day that may be planned (`daily_budget`).
    pub per_day: Option<u64>,
    /// Whose day `per_day` counts (the account's).
    pub day_zone: Tz,
}

impl Capacity {
    /// The connector's capacity: its paced rate ([`Limiter::paced_per_10s`]) less the share
    /// left for other calls, and its daily budget.
    pub fn of(connector: &Connector) -> Capacity {
        let per_10s = Limiter::paced_per_10s(connector.requests_per_10s) as u64;
        Capacity {
            per_minute: (per_10s * 6 * CALL * PLAN_SHARE_PERCENT / 100).max(CALL),
            per_day: connector.daily_budget.map(|d| d as u64 * CALL),
            day_zone: connector.time_zone.unwrap_or(Tz::UTC),
        }
    }

    /// Whole calls per hour that may be planned.
    pub fn calls_per_hour(&self) -> u64 {
        self.per_minute * 60 / CALL
    }
}

/// What sending one contact to `target` costs on `connector`: a call per enrollment, a share
/// of a batch call for lists and callbacks (rounded up, so a minute never holds more).
pub fn cost(target: &Target, connector: &Connector) -> u64 {
    match target {
        Target::Workflow(_) => CALL,
        Target::List(_) => CALL.div_ceil(connector.list_batch_size as u64),
        Target::Callback => CALL.div_ceil(connector.callback_batch_size as u64),
    }
}

/// Planned calls per hour against capacity, per connector, from the hour `from_ms` (what
/// `/status` and `/metrics` show).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Forecast {
    pub from_ms: i64,
    pub connectors: Vec<ConnectorForecast>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ConnectorForecast {
    pub connector: String,
    /// Calls per hour that planning may fill.
    pub capacity_per_hour: u64,
    pub daily_budget: Option<u64>,
    /// Calls planned in each hour from `from_ms`, for 7 days.
    pub planned_per_hour: Vec<u64>,
}
