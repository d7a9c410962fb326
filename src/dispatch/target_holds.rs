//! What a connector knows of the targets (workflows, lists) HubSpot refused calls to. HubSpot's
//! 404 to an enrollment does not say whether the address or the workflow was not found, nor
//! its 400 or 404 to a list add whether the list or the batch was at fault, so such a refusal
//! has the target read, one read at a time (a refusal that comes while it is under way is
//! tried again shortly). A target found usable makes the refusals of the next
//! [`policy::TARGET_USABLE_MS`] the contacts' own, so contacts HubSpot does not know cost no
//! read each; one found unusable holds its calls, which are then not made, for
//! [`policy::TARGET_HOLD_MS`], twice as long each time it is found so again right after, up
//! to [`policy::TARGET_HOLD_MAX_MS`].

use std::collections::HashMap;
use std::sync::Mutex;

use crate::datasets::outcomes::Action;
use crate::hubspot::policy;
use crate::hubspot::targets::Unusable;
use crate::time::{MINUTE_MS, format_minute};

type Key = (Action, String);

/// A target's state after a refusal of a call to it.
#[derive(Debug, Clone)]
enum State {
    /// Being read since then (clock ms).
    Reading(i64),
    /// Read then and found usable.
    Usable(i64),
    /// Found unusable at the first: its calls wait until the second, and why.
    Held(i64, i64, String),
}

impl State {
    /// When the contacts of a target in this state are looked at again.
    fn look_again(&self, now: i64) -> i64 {
        match self {
            State::Reading(_) | State::Usable(_) => now + policy::TARGET_READ_WAIT_MS,
            State::Held(..) => now + MINUTE_MS,
        }
    }

    /// Still in force at `now` (a clock moved back before its start ends it).
    fn current(&self, now: i64) -> bool {
        match self {
            State::Reading(since) => *since <= now,
            State::Usable(at) => *at <= now && now < at + policy::TARGET_USABLE_MS,
            State::Held(since, until, _) => *since <= now && now < *until,
        }
    }
}

/// The latest hold of a target: its end and length, which the next one doubles when it comes
/// within one length of that end.
#[derive(Debug, Clone, Copy)]
struct LastHold {
    until: i64,
    lasts: i64,
}

/// What a caller whose call HubSpot refused does about the target.
pub enum Refused<'h> {
    /// Read it, holding this until the answer is recorded ([`Reading::found`]); dropped
    /// without one (a read not made, failed, cut short), the next refusal reads.
    Read(Reading<'h>),
    /// Read lately and found usable: the refusal is the contact's own.
    Usable,
    /// Another refusal is having it read (the contact is tried again shortly), or it cannot
    /// take calls: the contact waits, for this reason, until the second (clock ms).
    Wait(String, i64),
}

/// The states by kind of call and target id. Keys are targets configs named; ended states go
/// at the next refusal.
#[derive(Default)]
pub struct TargetHolds {
    states: Mutex<HashMap<Key, State>>,
    last_holds: Mutex<HashMap<Key, LastHold>>,
}

impl TargetHolds {
    /// Whether calls of `action` to `target` are held at `now` (found unable to take them):
    /// when their contacts are looked at again, in a minute (the config may name another
    /// target meanwhile).
    pub fn waits(&self, action: Action, target: &str, now: i64) -> Option<i64> {
        let states = self.states.lock().unwrap();
        match states.get(&(action, target.to_string()))? {
            state @ State::Held(..) if state.current(now) => Some(state.look_again(now)),
            _ => None,
        }
    }

    /// Forget that `target` was found usable (a contact HubSpot did not find by an address it
    /// has: the target is the likelier cause): the next refusal has it read again.
    pub fn forget_usable(&self, action: Action, target: &str) {
        let mut states = self.states.lock().unwrap();
        let key = (action, target.to_string());
        if matches!(states.get(&key), Some(State::Usable(_))) {
            states.remove(&key);
        }
    }

    /// HubSpot refused a call of `action` to `target` at `now`, in a way that may be the
    /// target's: what to do.
    pub fn refused(&self, action: Action, target: &str, now: i64) -> Refused<'_> {
        let mut states = self.states.lock().unwrap();
        states.retain(|_, s| s.current(now));
        let key = (action, target.to_string());
        match states.get(&key) {
            Some(State::Usable(_)) => Refused::Usable,
            Some(state @ State::Reading(_)) => Refused::Wait(
                format!(
                    "{} {target} is being read, after HubSpot refused another contact's call to it",
                    match action {
                        Action::ListAdd => "list",
                        _ => "workflow",
                    }
                ),
                state.look_again(now),
            ),
            Some(state @ State::Held(_, until, why)) => {
                Refused::Wait(held(why, *until), state.look_again(now))
            }
            None => {
                states.insert(key.clone(), State::Reading(now));
                Refused::Read(Reading {
                    holds: self,
                    key,
                    since: now,
                })
            }
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
                State::Reading(_) | State::Usable(_) => None,
            })
            .collect();
        out.sort_by(|a, b| (a.0 as usize, &a.1).cmp(&(b.0 as usize, &b.1)));
        out
    }
}

/// A read of a target under way ([`Refused::Read`]).
pub struct Reading<'h> {
    holds: &'h TargetHolds,
    key: Key,
    since: i64,
}

impl Reading<'_> {
    /// The read found the target usable (`None`) or not: then its calls are held, while the
    /// connector's others go on, and tried again at the hold's end (a config naming another
    /// target sends at once). Returns what the contact's row says when held.
    pub fn found(self, connector: &str, now: i64, unusable: Option<&Unusable>) -> Option<String> {
        let Some(unusable) = unusable else {
            self.holds.last_holds.lock().unwrap().remove(&self.key);
            let usable = State::Usable(now);
            self.holds
                .states
                .lock()
                .unwrap()
                .insert(self.key.clone(), usable);
            return None;
        };
        let mut last_holds = self.holds.last_holds.lock().unwrap();
        last_holds.retain(|_, h| now < h.until + h.lasts);
        let lasts = last_holds
            .get(&self.key)
            .map_or(policy::TARGET_HOLD_MS, |h| {
                (2 * h.lasts).min(policy::TARGET_HOLD_MAX_MS)
            });
        let until = now + lasts;
        last_holds.insert(self.key.clone(), LastHold { until, lasts });
        let (action, target) = &self.key;
        tracing::error!(
            connector,
            action = action.as_str(),
            target,
            until = %format_minute(until),
            "{unusable}: its contacts wait, queued, while the connector's other calls go on; restore it in HubSpot or name another in the config (it is tried again at the time shown)"
        );
        let why = unusable.to_string();
        let row = held(&why, until);
        self.holds
            .states
            .lock()
            .unwrap()
            .insert(self.key.clone(), State::Held(now, until, why));
        Some(row)
    }
}

impl Drop for Reading<'_> {
    /// Ends this read's state, not what it found nor a newer read's.
    fn drop(&mut self) {
        let mut states = self.holds.states.lock().unwrap();
        if matches!(states.get(&self.key), Some(State::Reading(since)) if *since == self.since) {
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

    fn read<'h>(holds: &'h TargetHolds, target: &str, now: i64) -> Reading<'h> {
        match holds.refused(Action::Enroll, target, now) {
            Refused::Read(reading) => reading,
            Refused::Wait(why, _) => panic!("waits: {why}"),
            Refused::Usable => panic!("taken as usable"),
        }
    }

    #[test]
    fn one_refusal_reads_the_target_and_its_answer_serves_the_next() {
        let holds = TargetHolds::default();
        let (enroll, now) = (Action::Enroll, 1_000 * MINUTE_MS);
        let reading = read(&holds, "104", now);
        // While it is read, calls go on; another refusal is tried again shortly.
        assert_eq!(holds.waits(enroll, "104", now), None);
        assert!(matches!(
            holds.refused(enroll, "104", now),
            Refused::Wait(_, again) if again == now + policy::TARGET_READ_WAIT_MS
        ));
        assert!(
            matches!(holds.refused(enroll, "105", now), Refused::Read(_)),
            "another target"
        );
        assert!(matches!(
            holds.refused(Action::ListAdd, "104", now),
            Refused::Read(_)
        ));
        // Found usable: refusals are the contacts' own, without a read, for a while.
        assert_eq!(reading.found("main", now, None), None);
        let later = now + policy::TARGET_USABLE_MS - 1;
        assert!(matches!(
            holds.refused(enroll, "104", later),
            Refused::Usable
        ));
        // Forgotten (a contact found under the address HubSpot did not find): read again.
        holds.forget_usable(enroll, "104");
        read(&holds, "104", later).found("main", now, None);
        let reading = read(&holds, "104", later + 1);
        // Found gone: held, shown, and read again once the hold ends.
        let gone = Unusable::NoWorkflow(104);
        let row = reading.found("main", later + 1, Some(&gone));
        assert!(row.is_some_and(|r| r.contains("no workflow 104")));
        assert_eq!(
            holds.waits(enroll, "104", later + 2),
            Some(later + 2 + MINUTE_MS)
        );
        assert!(matches!(
            holds.refused(enroll, "104", later + 2),
            Refused::Wait(..)
        ));
        assert_eq!(holds.held(later + 2).len(), 1);
        let ends = later + 1 + policy::TARGET_HOLD_MS;
        assert_eq!(holds.waits(enroll, "104", ends), None);
        assert!(holds.held(ends).is_empty());
        // Still gone right after: held twice as long, and so on up to the longest.
        read(&holds, "104", ends).found("main", ends, Some(&gone));
        assert_eq!(holds.held(ends)[0].2, ends + 2 * policy::TARGET_HOLD_MS);
        let mut at = ends + 2 * policy::TARGET_HOLD_MS;
        for _ in 0..6 {
            read(&holds, "104", at).found("main", at, Some(&gone));
            at = holds.held(at)[0].2;
        }
        read(&holds, "104", at).found("main", at, Some(&gone));
        assert_eq!(holds.held(at)[0].2, at + policy::TARGET_HOLD_MAX_MS);
        // Usable again: the next hold is the shortest.
        let at = at + policy::TARGET_HOLD_MAX_MS;
        read(&holds, "104", at).found("main", at, None);
        let at = at + policy::TARGET_USABLE_MS;
        read(&holds, "104", at).found("main", at, Some(&gone));
        assert_eq!(holds.held(at)[0].2, at + policy::TARGET_HOLD_MS);
        // A read dropped without an answer (failed, cut short) leaves the next refusal to
        // read, and a clock moved back ends a hold.
        let later = at + policy::TARGET_HOLD_MS;
        drop(read(&holds, "104", later));
        drop(read(&holds, "104", later));
        read(&holds, "104", later).found("main", later, Some(&gone));
        assert_eq!(holds.waits(enroll, "104", later - MINUTE_MS), None);
    }
}
