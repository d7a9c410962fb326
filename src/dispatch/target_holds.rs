//! What a connector knows of the targets (workflows, lists) HubSpot refused calls to. HubSpot's
//! 404 to an enrollment does not say whether the address or the workflow was not found, nor
//! its 400 or 404 to a list add whether the list or the batch was at fault, so the first such
//! refusal has the target read; until the read answers, the target's other calls wait, so a
//! workflow deleted with thousands of contacts due costs a few calls, not one each. A target
//! found unusable holds its calls for [`policy::TARGET_HOLD_MS`], doubling while it stays so;
//! one found usable makes the refusals that follow, for [`policy::TARGET_USABLE_MS`], the
//! contacts' own, without another read.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::datasets::outcomes::Action;
use crate::hubspot::policy;
use crate::hubspot::targets::Unusable;
use crate::time::format_minute;

/// One target's state, from the first refusal of a call to it.
#[derive(Debug, Clone)]
enum State {
    /// Being read since then (clock ms): its calls wait for the answer.
    Checking(i64),
    /// Read and found usable then.
    Usable(i64),
    /// Found unusable then: its calls wait until the second, and why.
    Held(i64, i64, String),
}

/// The latest hold of a target: its end and length, which the next one doubles when it comes
/// within one length of that end.
#[derive(Debug, Clone, Copy)]
struct LastHold {
    until: i64,
    lasts: i64,
}

impl State {
    /// Still what it says at `now` (a clock moved back ends every state).
    fn current(&self, now: i64) -> bool {
        let (since, lasts) = match self {
            State::Checking(at) => (*at, policy::TARGET_CHECK_MS),
            State::Usable(at) => (*at, policy::TARGET_USABLE_MS),
            State::Held(since, until, _) => (*since, until - since),
        };
        since <= now && now < since + lasts
    }
}

/// What a caller whose call HubSpot refused does about the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Read it: no one has lately ([`TargetHolds::checked`] after; the [`Reading`] guard
    /// lets the next refusal read if this one never answers).
    Read,
    /// Read lately and usable: the refusal is the contact's own.
    Usable,
    /// Another refusal is having it read: wait for the answer, then ask again.
    BeingRead,
    /// It cannot take calls: the contact waits, for this reason.
    Held(String),
}

/// The states by kind of call and target id. Keys are targets configs named; states end on
/// their own, and ended ones go at the next refusal.
#[derive(Default)]
pub struct TargetHolds {
    states: Mutex<HashMap<(Action, String), State>>,
    last_holds: Mutex<HashMap<(Action, String), LastHold>>,
}

impl TargetHolds {
    /// Whether calls of `action` to `target` are held at `now`.
    pub fn is_held(&self, action: Action, target: &str, now: i64) -> bool {
        self.is(action, target, now, |s| matches!(s, State::Held(..)))
    }

    /// Whether `target` is being read at `now`: its calls wait for the answer.
    pub fn being_read(&self, action: Action, target: &str, now: i64) -> bool {
        self.is(action, target, now, |s| matches!(s, State::Checking(_)))
    }

    fn is(&self, action: Action, target: &str, now: i64, what: fn(&State) -> bool) -> bool {
        let states = self.states.lock().unwrap();
        states
            .get(&(action, target.to_string()))
            .is_some_and(|s| s.current(now) && what(s))
    }

    /// HubSpot refused a call of `action` to `target` at `now`: what to do. [`Refused::Read`]
    /// marks it as being read, by this caller.
    pub fn refused(&self, action: Action, target: &str, now: i64) -> Refused {
        let mut states = self.states.lock().unwrap();
        states.retain(|_, s| s.current(now));
        let key = (action, target.to_string());
        match states.get(&key) {
            Some(State::Usable(_)) => Refused::Usable,
            Some(State::Checking(_)) => Refused::BeingRead,
            Some(State::Held(_, until, why)) => Refused::Held(held(why, *until)),
            None => {
                states.insert(key, State::Checking(now));
                Refused::Read
            }
        }
    }

    /// The read [`Refused::Read`] asked for found `target` usable (`None`) or not: then its
    /// calls are held, while the connector's others go on, and tried again after
    /// [`policy::TARGET_HOLD_MS`], so a workflow restored is sent to without a restart (and a
    /// config naming another at once). Returns what the contact's row says when held.
    pub fn checked(
        &self,
        connector: &str,
        action: Action,
        target: &str,
        now: i64,
        unusable: Option<&Unusable>,
    ) -> Option<String> {
        let key = (action, target.to_string());
        let mut states = self.states.lock().unwrap();
        let Some(unusable) = unusable else {
            self.last_holds.lock().unwrap().remove(&key);
            states.insert(key, State::Usable(now));
            return None;
        };
        let mut last_holds = self.last_holds.lock().unwrap();
        last_holds.retain(|_, h| now < h.until + h.lasts);
        let lasts = last_holds.get(&key).map_or(policy::TARGET_HOLD_MS, |h| {
            (2 * h.lasts).min(policy::TARGET_HOLD_MAX_MS)
        });
        let until = now + lasts;
        last_holds.insert(key.clone(), LastHold { until, lasts });
        tracing::error!(
            connector,
            action = action.as_str(),
            target,
            until = %format_minute(until),
            "{unusable}: its contacts wait, queued, while the connector's other calls go on; restore it in HubSpot or name another in the config (it is tried again at the time shown)"
        );
        let why = unusable.to_string();
        let row = held(&why, until);
        states.insert(key, State::Held(now, until, why));
        Some(row)
    }

    /// Forget that `target` was found usable: the next refusal has it read again.
    pub fn forget_usable(&self, action: Action, target: &str) {
        let mut states = self.states.lock().unwrap();
        let key = (action, target.to_string());
        if matches!(states.get(&key), Some(State::Usable(_))) {
            states.remove(&key);
        }
    }

    /// The read [`Refused::Read`] asked for, until it is dropped: a read not made, failed or
    /// cut short (a panic, a stop) leaves the next refusal to read.
    pub fn reading<'h>(&'h self, action: Action, target: &str) -> Reading<'h> {
        Reading {
            holds: self,
            key: (action, target.to_string()),
        }
    }

    /// The targets held at `now`: kind of call, target, the end of the hold, why.
    pub fn held(&self, now: i64) -> Vec<(Action, String, i64, String)> {
        let states = self.states.lock().unwrap();
        let mut out: Vec<_> = states
            .iter()
            .filter(|(_, s)| s.current(now))
            .filter_map(|((action, target), s)| match s {
                State::Held(_, until, why) => Some((*action, target.clone(), *until, why.clone())),
                _ => None,
            })
            .collect();
        out.sort_by(|a, b| (a.0 as usize, &a.1).cmp(&(b.0 as usize, &b.1)));
        out
    }
}

/// A read of a target under way ([`TargetHolds::reading`]).
pub struct Reading<'h> {
    holds: &'h TargetHolds,
    key: (Action, String),
}

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        let mut states = self.holds.states.lock().unwrap();
        if matches!(states.get(&self.key), Some(State::Checking(_))) {
            states.remove(&self.key);
        }
    }
}

/// What a contact's row says of a target held until `until`, HubSpot having said `why`.
fn held(why: &str, until: i64) -> String {
    format!(
        "{why}: its contacts wait until it can take them or the config names another (tried \
         again at {})",
        format_minute(until)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::MINUTE_MS;

    #[test]
    fn one_refusal_reads_the_target_and_the_others_wait_for_its_answer() {
        let holds = TargetHolds::default();
        let (enroll, now) = (Action::Enroll, 1_000 * MINUTE_MS);
        assert_eq!(holds.refused(enroll, "104", now), Refused::Read);
        let reading = holds.reading(enroll, "104");
        assert!(holds.being_read(enroll, "104", now));
        assert!(!holds.being_read(enroll, "105", now), "another target");
        assert!(
            !holds.being_read(Action::ListAdd, "104", now),
            "another kind of call"
        );
        assert_eq!(holds.refused(enroll, "104", now), Refused::BeingRead);
        // Found usable: refusals are the contacts' own, without a read, for a while.
        assert_eq!(holds.checked("main", enroll, "104", now, None), None);
        drop(reading);
        assert!(!holds.being_read(enroll, "104", now));
        assert!(!holds.is_held(enroll, "104", now));
        let later = now + policy::TARGET_USABLE_MS - 1;
        assert_eq!(holds.refused(enroll, "104", later), Refused::Usable);
        // Forgotten (a contact found under the address HubSpot did not find): read again.
        holds.forget_usable(enroll, "104");
        assert_eq!(holds.refused(enroll, "104", later), Refused::Read);
        holds.checked("main", enroll, "104", now, None);
        assert_eq!(holds.refused(enroll, "104", later + 1), Refused::Read);
        // Found gone: held, shown, and read again once the hold ends.
        let gone = Unusable::NoWorkflow(104);
        let row = holds.checked("main", enroll, "104", later + 1, Some(&gone));
        assert!(row.is_some_and(|r| r.contains("no workflow 104")));
        assert!(holds.is_held(enroll, "104", later + 2));
        assert!(matches!(
            holds.refused(enroll, "104", later + 2),
            Refused::Held(_)
        ));
        assert_eq!(holds.held(later + 2).len(), 1);
        let ends = later + 1 + policy::TARGET_HOLD_MS;
        assert!(!holds.is_held(enroll, "104", ends));
        assert!(holds.held(ends).is_empty());
        // Still gone right after: held twice as long, and so on up to the longest.
        assert_eq!(holds.refused(enroll, "104", ends), Refused::Read);
        holds.checked("main", enroll, "104", ends, Some(&gone));
        let (_, _, until, _) = holds.held(ends)[0].clone();
        assert_eq!(until, ends + 2 * policy::TARGET_HOLD_MS);
        let mut at = until;
        for _ in 0..6 {
            holds.refused(enroll, "104", at);
            holds.checked("main", enroll, "104", at, Some(&gone));
            at = holds.held(at)[0].2;
        }
        assert_eq!(
            holds.held(at - 1)[0].2 - (at - policy::TARGET_HOLD_MAX_MS),
            policy::TARGET_HOLD_MAX_MS
        );
        // Usable again: the next hold is the shortest.
        assert_eq!(holds.refused(enroll, "104", at), Refused::Read);
        holds.checked("main", enroll, "104", at, None);
        let ends = at + policy::TARGET_USABLE_MS;
        assert_eq!(holds.refused(enroll, "104", ends), Refused::Read);
        holds.checked("main", enroll, "104", ends, Some(&gone));
        assert_eq!(holds.held(ends)[0].2, ends + policy::TARGET_HOLD_MS);
        let ends = ends + policy::TARGET_HOLD_MS;
        // A read that failed, or never ended, leaves the next refusal to read.
        assert_eq!(holds.refused(enroll, "104", ends), Refused::Read);
        drop(holds.reading(enroll, "104"));
        assert_eq!(holds.refused(enroll, "104", ends), Refused::Read);
        assert!(!holds.being_read(enroll, "104", ends + policy::TARGET_CHECK_MS));
        // A clock moved back ends a hold.
        holds.checked("main", enroll, "104", ends, Some(&gone));
        assert!(!holds.is_held(enroll, "104", ends - MINUTE_MS));
    }
}
