//! What is left today of each connector's `daily_budget`, asked before every call: the plan
//! books the calls it foresees, and this holds the ones it does not (a failed call's retries,
//! the enrollment checks of a call in doubt, the reads of a target) to the same cap. One per
//! tick, from the calls already made ([`super::Spent`]).

use std::collections::HashMap;
use std::sync::Mutex;

use chrono_tz::Tz;

use super::Spent;
use crate::config::Config;
use crate::local_time::next_local_day;

/// Calls left today, per connector with a budget (the config's: a handful).
#[derive(Debug, Default)]
pub struct DayLeft(Mutex<HashMap<String, Day>>);

#[derive(Debug)]
struct Day {
    /// Below zero once calls that go whatever the budget (callbacks) overdrew it.
    left: i64,
    /// When the account's next day begins (clock ms).
    ends_at_ms: i64,
    /// Whether a refusal was logged this tick.
    told: bool,
}

impl DayLeft {
    pub fn new(config: &Config, spent: &Spent, now_ms: i64) -> DayLeft {
        let days = config
            .connectors
            .iter()
            .filter_map(|c| {
                let budget = u64::from(c.daily_budget?);
                let zone = c.time_zone.unwrap_or(Tz::UTC);
                let day = Day {
                    left: budget.saturating_sub(spent.today(&c.id, zone, now_ms)) as i64,
                    ends_at_ms: next_local_day(zone, now_ms),
                    told: false,
                };
                Some((c.id.clone(), day))
            })
            .collect();
        DayLeft(Mutex::new(days))
    }

    /// One call of `connector`, taken from today's budget; when it is spent, the instant its
    /// next day begins.
    pub fn take(&self, connector: &str) -> Result<(), i64> {
        self.left(connector, 1)
    }

    /// A call that goes whatever the budget (a workflow action's callbacks: HubSpot's hold
    /// on their contacts runs out), taken from it all the same: the calls held to it later in
    /// this tick see it spent (the plan books callbacks, but this tick's allowance was read
    /// before they went).
    pub fn spend(&self, connector: &str) {
        if let Some(day) = self.days().get_mut(connector) {
            day.left -= 1;
        }
    }

    /// [`Self::take`] without taking: whether a call may still be made today. Asked before
    /// waiting on the limiter, so that a spent budget refuses at once, not at each call's
    /// turn.
    pub fn check(&self, connector: &str) -> Result<(), i64> {
        self.left(connector, 0)
    }

    fn left(&self, connector: &str, taking: i64) -> Result<(), i64> {
        let mut days = self.days();
        let Some(day) = days.get_mut(connector) else {
            return Ok(());
        };
        if day.left <= 0 {
            if !std::mem::replace(&mut day.told, true) {
                tracing::warn!(
                    connector,
                    "daily_budget is spent for today (by callbacks, which go whatever it says, or calls the plan did not foresee: retries, enrollment checks, workflow reads): the rest wait for the account's next day"
                );
            }
            return Err(day.ends_at_ms);
        }
        day.left -= taking;
        Ok(())
    }

    /// A call taken but not made.
    pub fn give_back(&self, connector: &str) {
        if let Some(day) = self.days().get_mut(connector) {
            day.left += 1;
        }
    }

    fn days(&self) -> std::sync::MutexGuard<'_, HashMap<String, Day>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spent_budget_refuses_until_the_next_day_and_takes_back_what_was_not_made() {
        let day = DayLeft(Mutex::new(HashMap::from([(
            "a".to_string(),
            Day {
                left: 1,
                ends_at_ms: 77,
                told: false,
            },
        )])));
        assert_eq!(day.check("a"), Ok(()));
        assert_eq!(day.take("a"), Ok(()));
        assert_eq!(day.check("a"), Err(77));
        assert_eq!(day.take("a"), Err(77));
        day.give_back("a");
        assert_eq!(day.take("a"), Ok(()));
        assert_eq!(day.take("unbudgeted"), Ok(()));
        // A callback overdraws it, and a call it took but did not make is given back.
        day.give_back("a");
        day.spend("a");
        day.spend("a");
        assert_eq!(day.check("a"), Err(77));
        day.give_back("a");
        assert_eq!(day.check("a"), Err(77));
        day.give_back("a");
        assert_eq!(day.take("a"), Ok(()));
    }
}
