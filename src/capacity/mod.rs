//! How many HubSpot calls each connector can take, and what each delivery costs, so that plans
//! never ask for more than the dispatcher can send: [`ledger`] books planned sends per minute
//! and per day, [`assign`] places a batch of new receipts in what is left, [`spent`]
//! remembers the calls already made, and [`day_left`] holds every call to the daily budget.

pub mod assign;
pub mod day_left;
pub mod ledger;
pub mod spent;

use std::hash::BuildHasher;

use chrono_tz::Tz;

use crate::config::{Connector, Target};
use crate::hubspot::limiter::Limiter;

pub use assign::{Placed, Request, assign};
pub use day_left::DayLeft;
pub use ledger::Ledger;
pub use spent::Spent;

/// One call in the units capacity is counted in.
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
        Capacity::under(connector, connector.requests_per_10s)
    }

    /// [`Capacity::of`] the connector with calls paced under `requests_per_10s`: HubSpot's
    /// limit for the app, when a response said a lower one than the connector's.
    pub fn under(connector: &Connector, requests_per_10s: u32) -> Capacity {
        let per_10s = Limiter::paced_per_10s(requests_per_10s) as u64;
        Capacity {
            per_minute: (per_10s * 6 * CALL * PLAN_SHARE_PERCENT / 100).max(CALL),
            per_day: connector.daily_budget.map(|d| d as u64 * CALL),
            day_zone: connector.time_zone.unwrap_or(Tz::UTC),
        }
    }

    /// Per minute of a clock `speed` times faster than real time (the demo's): a real
    /// minute's calls spread over `speed` of its minutes, at least one a minute (the demo
    /// planned 60,240 calls an hour that took 5 s to pass; an audit).
    pub fn at_speed(self, speed: i64) -> Capacity {
        let speed = speed.max(1) as u64;
        Capacity {
            per_minute: (self.per_minute / speed).max(CALL),
            ..self
        }
    }

    /// Whole calls per hour that may be planned: each minute holds whole calls (an earlier
    /// version counted the minutes' fractions too, 60,264 an hour at 190 per 10 s for 60,240).
    pub fn calls_per_hour(&self) -> u64 {
        (self.per_minute / CALL).saturating_mul(60)
    }
}

/// What sending one contact costs on its connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cost {
    /// A call of its own: an enrollment.
    Call,
    /// A place in a batch call of up to `size` contacts to `batch` (a list, or the
    /// connector's callbacks). The dispatcher sends a minute's contacts of one batch together,
    /// so the first of each minute's batch pays the call and the next `size - 1` ride along:
    /// list adds that trickle in one a minute cost a call each, as they do at HubSpot.
    Batched { batch: u64, size: u64 },
}

/// The batch of a connector's workflow-action callbacks (lists are keyed by their id's hash).
const CALLBACKS: u64 = u64::MAX;

impl Cost {
    /// Whether `daily_budget` holds it back. A workflow action's callback goes whatever the
    /// budget, planned as when it is made: HubSpot's hold on its contact runs out.
    pub fn budgeted(self) -> bool {
        !matches!(
            self,
            Cost::Batched {
                batch: CALLBACKS,
                ..
            }
        )
    }
}

/// What sending one contact to `target` costs on `connector`.
pub fn cost(target: &Target, connector: &Connector) -> Cost {
    match target {
        Target::Workflow(_) => Cost::Call,
        Target::List(list) => Cost::Batched {
            batch: rustc_hash::FxBuildHasher.hash_one(list) & !1,
            size: connector.list_batch_size.max(1) as u64,
        },
        Target::Callback => Cost::Batched {
            batch: CALLBACKS,
            size: connector.callback_batch_size.max(1) as u64,
        },
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
