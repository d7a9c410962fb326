//! What a connector knows of the targets (workflows, lists) HubSpot refused calls to. HubSpot's
//! 404 to an enrollment does not say whether the address or the workflow was not found, nor
//! its 400 or 404 to a list add whether the list or the batch was at fault, so such a refusal
//! has the target read, one read at a time (a refusal that comes while it is under way is
//! tried again shortly). A target found usable makes the refusals of the next
//! [`policy::TARGET_USABLE_MS`] the contacts' own, so contacts HubSpot does not know cost no
//! read each; one found unusable holds its calls, which are then not made (those waiting at
//! the rate limiter leave it), for [`policy::TARGET_HOLD_MS`], twice as long each time it is
//! found so again right after, up to [`policy::TARGET_HOLD_MAX_MS`]. A hold's end is one
//! read, its calls waiting for the answer: a target that may be gone is not sent every due
//! contact to find out. A read that fails after a refusal holds the calls a minute; one the
//! first call at a hold's end made lets them go in doubt, the first refused holding them
//! again (a target HubSpot cannot read but takes calls, whose first refusal was a contact's
//! own, is not held as long as reads fail). A workflow its calls go to is also read every
//! [`policy::TARGET_RECHECK_MS`] by the call then due, the others going on meanwhile: one
//! turned off in HubSpot is held as one gone, but as it refuses nothing (HubSpot may take
//! enrollments into it and not run them) its calls never go in doubt, and it is kept under
//! `state/` ([`super::workflow_reads`]) for the next process to read first, as is when each
//! was last read.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::datasets::outcomes::Action;
use crate::hubspot::policy;
use crate::hubspot::targets::Unusable;
use crate::time::{MINUTE_MS, format_minute};

use super::workflow_reads::{self, Files, Off, Reads};

type Key = (Action, String);

/// A target's state after a refusal of a call to it.
#[derive(Debug, Clone)]
enum State {
    /// Being read since then, after a refusal or because it is due to be read again: its
    /// other calls go on meanwhile (a refusal is most often the contact's own).
    Reading(i64),
    /// Read then and found usable.
    Usable(i64),
    /// Its calls wait from the first to the second, and why. Once it ends, the next call has
    /// it read before any call goes.
    Held(i64, i64, Why),
    /// A hold ended and it is being read since then: its calls wait.
    Rechecking(i64),
    /// Its read at a hold's end failed then: its calls go, the first refused holding them a
    /// minute for the hold's why, and one taken makes it usable.
    Doubting(i64, Why),
}

/// The workflows whose latest read found them turned off, and what it said, kept for the next
/// process ([`TargetHolds::keep_in`]).
#[derive(Default)]
struct KeptOff {
    found: Off,
    /// Where they are written as a read changes them (none: kept in memory only).
    files: Option<Files>,
    /// Those files could not be read: any workflow may be off, or due a read, so each is read
    /// at its first call.
    unreadable: bool,
}

/// Why a target's calls are held.
#[derive(Debug, Clone)]
struct Why {
    /// What HubSpot said, or that it could not be read.
    text: String,
    /// Its calls are taken and not run (a workflow turned off): only a read tells that it can
    /// take them again, so they never go in doubt of it.
    silent: bool,
}

impl Why {
    fn loud(text: String) -> Why {
        Why {
            text,
            silent: false,
        }
    }
}

impl State {
    /// Still in force at `now`: a read, a usable finding or a doubt goes with time (a clock
    /// moved back before its start ends it); a hold is read again before it goes.
    fn current(&self, now: i64) -> bool {
        match self {
            State::Reading(since) => *since <= now,
            State::Usable(at) => *at <= now && now < at + policy::TARGET_USABLE_MS,
            State::Doubting(at, _) => *at <= now && now < at + MINUTE_MS,
            State::Held(..) | State::Rechecking(..) => true,
        }
    }
}

/// What a call about to be made to a target does.
pub enum Gate<'h> {
    /// Goes.
    Open,
    /// Waits, queued, until then (clock ms): the target is held or being read after a hold.
    Wait(i64),
    /// Reads the target first, its hold having ended or a read being due: found usable, or
    /// not read (in doubt after a hold of a target that refuses calls, [`Reading::failed`]),
    /// it goes.
    Read(Reading<'h>),
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
    /// Read it, holding this until the answer is recorded ([`Reading::found`]).
    Read(Reading<'h>),
    /// Read lately and found usable: the refusal is the contact's own.
    Usable,
    /// Another refusal is having it read (the contact is tried again shortly), or it cannot
    /// take calls: the contact waits, for this reason, until the second (clock ms).
    Wait(String, i64),
}

/// The states by kind of call and target id. Keys are targets configs named; a read, a
/// usable finding or a doubt goes at the next refusal after it ends.
#[derive(Default)]
pub struct TargetHolds {
    states: Mutex<HashMap<Key, State>>,
    last_holds: Mutex<HashMap<Key, LastHold>>,
    /// When each workflow calls go to was last found usable by a read, or first called
    /// (`validate --online` reads it before): read again [`policy::TARGET_RECHECK_MS`] after.
    read_on: Mutex<HashMap<Key, i64>>,
    off: Mutex<KeptOff>,
    /// Told when a target's state changes, so calls queued at the rate limiter leave it once
    /// their target's calls wait, instead of each using a turn to be turned away
    /// ([`TargetHolds::until_waits`]).
    waiting: tokio::sync::Notify,
}

impl TargetHolds {
    /// Whether a call of `action` to `target` waits at `now`, and until when: a minute while
    /// it is held (the config may name another target meanwhile), or to the hold's end when
    /// sooner, and shortly while it is read after a hold. The call that finds a hold ended
    /// reads it ([`TargetHolds::gate`]).
    fn waits(&self, action: Action, target: &str, now: i64) -> Option<i64> {
        waits_in(
            &self.states.lock().unwrap(),
            &(action, target.to_string()),
            now,
        )
    }

    /// Why calls of `action` to `target` wait at `now` (what their rows say), and until when,
    /// if they do ([`TargetHolds::waits`]).
    pub fn waiting(&self, action: Action, target: &str, now: i64) -> Option<(String, i64)> {
        let again = self.waits(action, target, now)?;
        let states = self.states.lock().unwrap();
        let why = match states.get(&(action, target.to_string())) {
            Some(State::Held(_, until, why)) => held(&why.text, *until),
            _ => format!("{} is being read", named(action, target)),
        };
        Some((why, again))
    }

    /// What a call of `action` to `target` about to be made at `now` does: as
    /// [`TargetHolds::waits`], and the first call after a hold ends reads the target, as does
    /// one when it is due to be read again, `recheck` (clock ms) after it last was, if it
    /// may (`None` right after its own read: a clock moved on meanwhile would have it read for
    /// ever).
    pub fn gate(&self, action: Action, target: &str, now: i64, recheck: Option<i64>) -> Gate<'_> {
        let mut states = self.states.lock().unwrap();
        let key = (action, target.to_string());
        // Under the same lock as what follows: a hold's end read by another call meanwhile
        // has this one wait for it.
        if let Some(again) = waits_in(&states, &key, now) {
            return Gate::Wait(again);
        }
        match states.get(&key) {
            Some(State::Held(_, _, why)) => {
                let after_hold = Some(why.clone());
                states.insert(key.clone(), State::Rechecking(now));
                self.waiting.notify_waiters();
                Gate::Read(Reading {
                    holds: self,
                    key,
                    since: now,
                    after_hold,
                    cause: Cause::HoldEnd,
                    answered: false,
                })
            }
            // Read now, or in doubt for a minute after a hold (a read would end the doubt).
            Some(State::Reading(_) | State::Doubting(..)) => Gate::Open,
            _ if action != Action::Enroll || recheck.is_none() => Gate::Open,
            _ => {
                let every = recheck.unwrap_or(policy::TARGET_RECHECK_MS);
                let mut read_on = self.read_on.lock().unwrap();
                let last = match read_on.get(&key).copied() {
                    Some(last) if last <= now => last,
                    // A clock moved back starts the wait again.
                    Some(_) => now,
                    // First called: `validate --online` read it before, and one found off
                    // before is held ([`TargetHolds::keep_in`]), unless what was kept could
                    // not be read.
                    None if self.off.lock().unwrap().unreadable => now - every,
                    None => now,
                };
                if now < last + every {
                    self.note_read(&mut read_on, &key, last);
                    return Gate::Open;
                }
                // In memory only: a read that cannot be made now (a paused connector, the day's
                // budget) puts `before` back, and the file keeps it meanwhile.
                let before = last;
                read_on.insert(key.clone(), now);
                states.insert(key.clone(), State::Reading(now));
                Gate::Read(Reading {
                    holds: self,
                    key,
                    since: now,
                    after_hold: None,
                    cause: Cause::Recheck(before),
                    answered: false,
                })
            }
        }
    }

    /// Keep the workflows found turned off, and when each was last read, in `files`, written
    /// as soon as a read changes them, and take what they say (an earlier process's, or the
    /// link's this one replaces): a workflow found off is held until the first call to it has
    /// read it (one that fails, or cannot be made, holding it a minute more), at `now`; one
    /// last read [`policy::TARGET_RECHECK_MS`] ago is read by its next call. Files that cannot
    /// be read have every workflow read at its first call.
    pub fn keep_in(&self, files: Files, now: i64) {
        let found = workflow_reads::load::<Off>(&files.off);
        let reads = workflow_reads::load::<Reads>(&files.reads);
        let unreadable = found.is_none() || reads.is_none();
        // Either unreadable: every workflow is read at its first call, whatever the other says.
        if let (false, Some(reads)) = (unreadable, reads) {
            self.read_on.lock().unwrap().extend(
                reads
                    .into_iter()
                    .map(|(workflow, at)| ((Action::Enroll, workflow), at)),
            );
        }
        let found = found.unwrap_or_default();
        let mut states = self.states.lock().unwrap();
        for (workflow, text) in &found {
            let why = Why {
                text: text.clone(),
                silent: true,
            };
            states.insert(
                (Action::Enroll, workflow.clone()),
                State::Held(now, now, why),
            );
        }
        *self.off.lock().unwrap() = KeptOff {
            found,
            files: Some(files),
            unreadable,
        };
    }

    /// The workflows found turned off.
    #[cfg(test)]
    fn off(&self) -> Off {
        self.off.lock().unwrap().found.clone()
    }

    /// Record that a read found `workflow` turned off (`why`) or not, in its file when that
    /// changes it.
    fn note_off(&self, workflow: &str, why: Option<String>) {
        let mut off = self.off.lock().unwrap();
        let KeptOff { found, files, .. } = &mut *off;
        let changed = match why {
            Some(why) => found.insert(workflow.to_string(), why.clone()) != Some(why),
            None => found.remove(workflow).is_some(),
        };
        if let (true, Some(Files { off: file, .. })) = (changed, files.as_ref())
            && let Err(e) = workflow_reads::store(file, found)
        {
            tracing::warn!(
                workflow,
                "cannot record the workflows found turned off in {} (a restart would send to them before reading them again): {e}",
                file.display()
            );
        }
    }

    /// Record in `read_on` (this holds' own, locked) that the workflow of `key` was last read,
    /// or first called, `at`; and in its file, when kept and changed.
    fn note_read(&self, read_on: &mut HashMap<Key, i64>, key: &Key, at: i64) {
        if read_on.insert(key.clone(), at) == Some(at) {
            return;
        }
        let off = self.off.lock().unwrap();
        let Some(Files { reads: file, .. }) = off.files.as_ref() else {
            return;
        };
        let reads: Reads = read_on
            .iter()
            .map(|((_, workflow), at)| (workflow.clone(), *at))
            .collect();
        if let Err(e) = workflow_reads::store(file, &reads) {
            tracing::warn!(
                workflow = key.1,
                "cannot record when workflows were last read in {} (the next process reads them later): {e}",
                file.display()
            );
        }
    }

    /// HubSpot took a call of `action` to `target` at `now`: a target in doubt, or found
    /// usable, is usable from then (a contact it does not know costs no read while calls are
    /// taken).
    pub fn took(&self, action: Action, target: &str, now: i64) {
        let mut states = self.states.lock().unwrap();
        let key = (action, target.to_string());
        if matches!(
            states.get(&key),
            Some(State::Doubting(..) | State::Usable(_))
        ) {
            states.insert(key, State::Usable(now));
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
        if let Some((why, again)) = self.waiting(action, target, now) {
            return Refused::Wait(why, again);
        }
        let mut states = self.states.lock().unwrap();
        states.retain(|_, s| s.current(now));
        let key = (action, target.to_string());
        let (state, after_hold) = match states.get(&key) {
            Some(State::Usable(_)) => return Refused::Usable,
            Some(State::Reading(_)) => {
                let why = format!(
                    "{} is being read (after another refusal, or to check it is still on): the \
                     contact is sent again after its answer",
                    named(action, target)
                );
                return Refused::Wait(why, now + policy::TARGET_READ_WAIT_MS);
            }
            // Its hold ended: read with its calls waiting, as at the next call.
            Some(State::Held(_, _, why)) => (State::Rechecking(now), Some(why.clone())),
            // Reads fail: held again without one, the contact waiting past the hold's end so
            // that another's call goes then.
            Some(State::Doubting(_, why)) => {
                let (why, until) = (why.clone(), now + MINUTE_MS);
                // Not read now, and the refusal may be the contact's own: said as such.
                let when = "since its hold's end, when it could not be read (the refusal may be \
                            the contact's own)";
                warn_unread(action, target, until, when);
                let row = held(&why.text, until);
                // Not `set`: it would lock `states` again.
                states.insert(key, State::Held(now, until, why));
                self.waiting.notify_waiters();
                return Refused::Wait(row, until + MINUTE_MS);
            }
            _ => (State::Reading(now), None),
        };
        states.insert(key.clone(), state);
        self.waiting.notify_waiters();
        Refused::Read(Reading {
            holds: self,
            key,
            since: now,
            after_hold,
            cause: Cause::Refusal,
            answered: false,
        })
    }

    /// Whether `target`'s calls wait for a hold, or for the read that follows one (a workflow
    /// found turned off by an earlier process is such a hold, ended): its contacts are not
    /// booked in the connector's capacity, where they would push back contacts that can go.
    pub fn holding(&self, action: Action, target: &str) -> bool {
        let key = (action, target.to_string());
        matches!(
            self.states.lock().unwrap().get(&key),
            Some(State::Held(..) | State::Rechecking(..))
        )
    }

    /// The targets held at `now`: kind of call, target, the end of the hold, why.
    pub fn held(&self, now: i64) -> Vec<(Action, String, i64, String)> {
        let states = self.states.lock().unwrap();
        let mut out: Vec<_> = states
            .iter()
            .filter_map(|((action, target), s)| match s {
                State::Held(since, until, why) if *since <= now && now < *until => {
                    Some((*action, target.clone(), *until, why.text.clone()))
                }
                _ => None,
            })
            .collect();
        out.sort_by(|a, b| (a.0 as usize, &a.1).cmp(&(b.0 as usize, &b.1)));
        out
    }

    /// Record `state` of `key`.
    fn set(&self, key: &Key, state: State) {
        self.states.lock().unwrap().insert(key.clone(), state);
        self.waiting.notify_waiters();
    }

    /// Once calls of `action` to `target` wait (it is held, or read after a hold), until when
    /// ([`TargetHolds::waits`]): a call waiting its turn at the rate limiter leaves then.
    pub async fn until_waits(&self, action: Action, target: &str, now: impl Fn() -> i64) -> i64 {
        loop {
            let told = self.waiting.notified();
            let mut told = std::pin::pin!(told);
            // Listening before looking, so a change between the two is not missed.
            told.as_mut().enable();
            if let Some(again) = self.waits(action, target, now()) {
                return again;
            }
            told.await;
        }
    }
}

/// [`TargetHolds::waits`], in `states`.
fn waits_in(states: &HashMap<Key, State>, key: &Key, now: i64) -> Option<i64> {
    match states.get(key)? {
        State::Held(since, until, _) if *since <= now && now < *until => {
            Some((now + MINUTE_MS).min(*until))
        }
        State::Rechecking(..) => Some(now + policy::TARGET_READ_WAIT_MS),
        _ => None,
    }
}

/// How messages name `target` of `action`: "workflow 104", "list 12".
pub fn named(action: Action, target: &str) -> String {
    match action {
        Action::ListAdd => format!("list {target}"),
        _ => format!("workflow {target}"),
    }
}

/// A read of a target under way ([`Refused::Read`], [`Gate::Read`]). Dropped without an
/// answer (not made, cut short), a read after a hold holds the calls a minute more; one due
/// again leaves it to the next call; another leaves the next refusal to read.
pub struct Reading<'h> {
    holds: &'h TargetHolds,
    key: Key,
    since: i64,
    /// Why the hold this read follows was.
    after_hold: Option<Why>,
    cause: Cause,
    /// Its answer is recorded: the drop leaves the state to it. (A newer read may have begun
    /// at the same instant since, as under a fixed clock: the instant cannot tell them apart.)
    answered: bool,
}

/// What has a target read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// HubSpot refused a call to it.
    Refusal,
    /// Its hold ended: made by the call about to go then.
    HoldEnd,
    /// It is due to be read again ([`policy::TARGET_RECHECK_MS`]), last found usable (or
    /// first called) then: made by the call about to go.
    Recheck(i64),
}

impl Reading<'_> {
    /// The read found the target usable (`None`) or not: then its calls are held, while the
    /// connector's others go on, and it is read again at the hold's end (a config naming
    /// another target sends at once). Returns what the contact's row says when held.
    pub fn found(
        mut self,
        connector: &str,
        now: i64,
        unusable: Option<&Unusable>,
    ) -> Option<String> {
        self.answered = true;
        let enroll = self.key.0 == Action::Enroll;
        let row = match unusable {
            None => {
                self.holds.last_holds.lock().unwrap().remove(&self.key);
                // The next periodic read counted from this one before its calls may go: the
                // first let through found it due a read, and another began (CI saw it).
                if enroll {
                    let mut read_on = self.holds.read_on.lock().unwrap();
                    self.holds.note_read(&mut read_on, &self.key, now);
                }
                self.holds.set(&self.key, State::Usable(now));
                None
            }
            Some(unusable) => Some(self.hold(connector, now, unusable)),
        };
        // A workflow's finding, written once its calls are held (calls admitted meanwhile
        // would go): kept if off.
        if enroll {
            let off = unusable.filter(|u| matches!(u, Unusable::WorkflowOff { .. }));
            self.holds
                .note_off(&self.key.1, off.map(ToString::to_string));
        }
        row
    }

    /// Hold the target found `unusable` at `now`, twice as long as its last hold when that
    /// ended lately; what the contact's row says.
    fn hold(&self, connector: &str, now: i64, unusable: &Unusable) -> String {
        let until = {
            let mut last_holds = self.holds.last_holds.lock().unwrap();
            last_holds.retain(|_, h| now < h.until + h.lasts);
            let lasts = policy::target_hold_ms(last_holds.get(&self.key).map(|h| h.lasts));
            let until = now + lasts;
            last_holds.insert(self.key.clone(), LastHold { until, lasts });
            until
        };
        let (action, target) = &self.key;
        tracing::error!(
            connector,
            action = action.as_str(),
            target,
            until = %format_minute(until),
            "{unusable}: its contacts wait, queued, while the connector's other calls go on; restore it in HubSpot or name another in the config (it is read again at the time shown)"
        );
        let why = Why {
            text: unusable.to_string(),
            silent: matches!(unusable, Unusable::WorkflowOff { .. }),
        };
        let row = held(&why.text, until);
        self.holds.set(&self.key, State::Held(now, until, why));
        row
    }

    /// The read failed as every call would (an outage, a rate limit), which decides what
    /// becomes of the caller's contact. After a refusal, the target's calls wait a minute and
    /// it is read again then, rather than each be sent and refused meanwhile. Made by a call
    /// at a hold's end, they go in doubt: reads may fail while calls are taken; but a
    /// workflow held for being off refuses nothing, so it is held a minute more. Due again,
    /// they go on as before, and it is read again in a minute.
    pub fn failed(mut self, now: i64) {
        self.answered = true;
        let (action, target) = (self.key.0, self.key.1.clone());
        let name = named(action, &target);
        if let Cause::Recheck(_) = self.cause {
            tracing::info!(
                action = action.as_str(),
                target,
                "{name} could not be read to check it is still on: its calls go on, and it is read again in a minute"
            );
            let again = now + MINUTE_MS - policy::TARGET_RECHECK_MS;
            let mut read_on = self.holds.read_on.lock().unwrap();
            self.holds.note_read(&mut read_on, &self.key, again);
            drop(read_on);
            let mut states = self.holds.states.lock().unwrap();
            if matches!(states.get(&self.key), Some(State::Reading(since)) if *since == self.since)
            {
                states.remove(&self.key);
            }
            return;
        }
        // A workflow turned off is held again: its calls would be taken and not run.
        if self.cause == Cause::HoldEnd
            && let Some(why) = self.after_hold.take_if(|why| !why.silent)
        {
            tracing::warn!(
                action = action.as_str(),
                target,
                "{name} could not be read at its hold's end: its calls go, and the first HubSpot refuses holds them again"
            );
            self.holds.set(&self.key, State::Doubting(now, why));
            return;
        }
        let why = self.after_hold.take().unwrap_or_else(|| {
            Why::loud(format!(
                "HubSpot refused a call to {name} and it could not be read"
            ))
        });
        let until = now + MINUTE_MS;
        if self.cause == Cause::HoldEnd {
            tracing::warn!(
                action = action.as_str(),
                target,
                until = %format_minute(until),
                "{name} could not be read at its hold's end, and it may take calls and run none: its calls wait a minute"
            );
        } else {
            warn_unread(action, &target, until, "and it could not be read");
        }
        self.holds.set(&self.key, State::Held(now, until, why));
    }

    /// The read cannot be made (a scope only it needs): refusals are the contacts' own. A
    /// workflow held for being off stays held a minute more (by the drop), as it refuses
    /// nothing.
    pub fn unread(mut self) {
        if self.after_hold.as_ref().is_some_and(|why| why.silent) {
            return;
        }
        self.answered = true;
        self.holds.states.lock().unwrap().remove(&self.key);
    }
}

impl Drop for Reading<'_> {
    /// Ends this read's state, not what it found nor a newer read's.
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let mut states = self.holds.states.lock().unwrap();
        let ours = match states.get(&self.key) {
            Some(State::Reading(since) | State::Rechecking(since)) => *since == self.since,
            _ => false,
        };
        if !ours {
            return;
        }
        // Due again and not made (the budget spent, shutting down): the next call reads it.
        // In memory only, as the file still says so.
        if let Cause::Recheck(before) = self.cause {
            let mut read_on = self.holds.read_on.lock().unwrap();
            read_on.insert(self.key.clone(), before);
        }
        match self.after_hold.take() {
            Some(why) => {
                let hold = State::Held(self.since, self.since + MINUTE_MS, why);
                states.insert(self.key.clone(), hold);
                self.holds.waiting.notify_waiters();
            }
            None => {
                states.remove(&self.key);
            }
        }
    }
}

/// Say that calls of `action` to `target` wait until `until`: HubSpot refused one `when` the
/// target could not be read.
fn warn_unread(action: Action, target: &str, until: i64, when: &str) {
    tracing::warn!(
        action = action.as_str(),
        target,
        until = %format_minute(until),
        "HubSpot refused a call to {} {when}: its calls wait a minute",
        named(action, target)
    );
}

/// What a contact's row says of a target held until `until`, HubSpot having said `why`.
fn held(why: &str, until: i64) -> String {
    format!(
        "{why}: its contacts wait until it can take them or the config names another (read \
         again at {})",
        format_minute(until)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::HOUR_MS as HOUR;

    fn read<'h>(holds: &'h TargetHolds, target: &str, now: i64) -> Reading<'h> {
        match holds.refused(Action::Enroll, target, now) {
            Refused::Read(reading) => reading,
            Refused::Wait(why, _) => panic!("waits: {why}"),
            Refused::Usable => panic!("taken as usable"),
        }
    }

    /// Read again as often as asked: at a demo's 720 times the recheck in clock time, eleven
    /// clock minutes are no reason to read (each workflow was read at every tick; an audit).
    #[test]
    fn a_recheck_is_as_often_as_asked() {
        let (enroll, at) = (Action::Enroll, 1_000 * MINUTE_MS);
        let later = at + policy::TARGET_RECHECK_MS + MINUTE_MS;
        let demo = Some(720 * policy::TARGET_RECHECK_MS);
        let holds = TargetHolds::default();
        assert!(matches!(holds.gate(enroll, "104", at, demo), Gate::Open));
        assert!(matches!(holds.gate(enroll, "104", later, demo), Gate::Open));
        let real = Some(policy::TARGET_RECHECK_MS);
        assert!(matches!(
            holds.gate(enroll, "104", later, real),
            Gate::Read(_)
        ));
    }

    /// The wait a call to 104 about to be made at `now` is given, if it waits (not due to be
    /// read again: that is the other test's).
    fn waits(holds: &TargetHolds, now: i64) -> Option<i64> {
        match holds.gate(Action::Enroll, "104", now, None) {
            Gate::Wait(again) => Some(again),
            Gate::Open => None,
            Gate::Read(_) => panic!("reads"),
        }
    }

    #[test]
    fn one_refusal_reads_the_target_and_its_answer_serves_the_next() {
        let holds = TargetHolds::default();
        let (enroll, now) = (Action::Enroll, 1_000 * MINUTE_MS);
        let reading = read(&holds, "104", now);
        // While it is read, calls go on; another refusal is tried again shortly.
        assert_eq!(waits(&holds, now), None);
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
        assert_eq!(waits(&holds, later + 2), Some(later + 2 + MINUTE_MS));
        assert!(matches!(
            holds.refused(enroll, "104", later + 2),
            Refused::Wait(..)
        ));
        assert_eq!(holds.held(later + 2).len(), 1);
        let ends = later + 1 + policy::TARGET_HOLD_MS;
        // In its last minute, a call waits to its end, not a minute past it.
        assert_eq!(waits(&holds, ends - 1_000), Some(ends));
        assert!(holds.held(ends).is_empty());
        // At its end the first call reads it, the others waiting for the answer.
        let Gate::Read(reading) = holds.gate(enroll, "104", ends, None) else {
            panic!("the hold's end is not read")
        };
        assert_eq!(
            waits(&holds, ends),
            Some(ends + policy::TARGET_READ_WAIT_MS)
        );
        assert!(matches!(
            holds.refused(enroll, "104", ends),
            Refused::Wait(_, again) if again == ends + policy::TARGET_READ_WAIT_MS
        ));
        // Still gone: held twice as long, and so on up to the longest.
        reading.found("main", ends, Some(&gone));
        assert_eq!(holds.held(ends)[0].2, ends + 2 * policy::TARGET_HOLD_MS);
        let mut at = ends + 2 * policy::TARGET_HOLD_MS;
        for _ in 0..6 {
            read(&holds, "104", at).found("main", at, Some(&gone));
            at = holds.held(at)[0].2;
        }
        read(&holds, "104", at).found("main", at, Some(&gone));
        assert_eq!(holds.held(at)[0].2, at + policy::TARGET_HOLD_MAX_MS);
        // Usable again: calls go, and the next hold is the shortest.
        let at = at + policy::TARGET_HOLD_MAX_MS;
        let Gate::Read(reading) = holds.gate(enroll, "104", at, None) else {
            panic!("the hold's end is not read")
        };
        reading.found("main", at, None);
        assert_eq!(waits(&holds, at), None);
        let at = at + policy::TARGET_USABLE_MS;
        read(&holds, "104", at).found("main", at, Some(&gone));
        assert_eq!(holds.held(at)[0].2, at + policy::TARGET_HOLD_MS);
        // A read after a hold left unanswered holds the calls a minute more.
        let at = at + policy::TARGET_HOLD_MS;
        drop(read(&holds, "104", at));
        assert_eq!(holds.held(at)[0].2, at + MINUTE_MS);
        // A clock moved back ends a hold.
        assert!(matches!(
            holds.gate(enroll, "104", at - MINUTE_MS, None),
            Gate::Read(_)
        ));
        // One that fails lets the calls go in doubt: the first refused holds them a minute
        // for the hold's why, the contact waiting past its end; one taken makes it usable.
        let at = at + MINUTE_MS;
        let Gate::Read(reading) = holds.gate(enroll, "104", at, None) else {
            panic!("the hold's end is not read")
        };
        reading.failed(at);
        assert_eq!(waits(&holds, at), None);
        let Refused::Wait(row, again) = holds.refused(enroll, "104", at) else {
            panic!("a refusal in doubt does not hold")
        };
        assert!(row.contains("no workflow 104"), "{row}");
        assert_eq!(again, at + 2 * MINUTE_MS);
        assert_eq!(holds.held(at)[0].2, at + MINUTE_MS);
        let at = at + MINUTE_MS;
        let Gate::Read(reading) = holds.gate(enroll, "104", at, None) else {
            panic!("the hold's end is not read")
        };
        reading.failed(at);
        assert_eq!(waits(&holds, at), None);
        holds.took(enroll, "104", at);
        assert!(matches!(holds.refused(enroll, "104", at), Refused::Usable));
        // Each call taken makes it usable from then.
        let at = at + policy::TARGET_USABLE_MS - 1;
        holds.took(enroll, "104", at);
        let at = at + policy::TARGET_USABLE_MS - 1;
        assert!(matches!(holds.refused(enroll, "104", at), Refused::Usable));
        // A call taken to a target nothing is known of says nothing of a refusal to come.
        holds.took(enroll, "107", at);
        assert!(matches!(holds.refused(enroll, "107", at), Refused::Read(_)));
        // A doubt goes with its minute: the next refusal reads.
        let at = at + policy::TARGET_USABLE_MS;
        read(&holds, "104", at).failed(at);
        let at = at + MINUTE_MS;
        let Gate::Read(reading) = holds.gate(enroll, "104", at, None) else {
            panic!("the hold's end is not read")
        };
        reading.failed(at);
        assert_eq!(waits(&holds, at), None);
        let at = at + MINUTE_MS;
        read(&holds, "104", at).found("main", at, None);
        // A refusal that reads at a hold's end and fails holds the calls a minute, the
        // refusal being what a doubt would wait for.
        let at = at + policy::TARGET_USABLE_MS;
        read(&holds, "104", at).found("main", at, Some(&gone));
        let at = holds.held(at)[0].2;
        read(&holds, "104", at).failed(at);
        let (row, _) = holds.waiting(enroll, "104", at).unwrap();
        assert!(row.contains("no workflow 104"), "{row}");
        assert!(matches!(holds.gate(enroll, "104", at, None), Gate::Wait(_)));
        // After a refusal, a read that fails holds the calls a minute (not every due contact
        // sent and refused meanwhile); one not made, or one that cannot be made, does not.
        read(&holds, "105", at).failed(at);
        let (row, _) = holds.waiting(enroll, "105", at).unwrap();
        assert!(
            row.contains("workflow 105 and it could not be read"),
            "{row}"
        );
        assert!(holds.held(at).iter().any(|h| h.1 == "105"));
        assert!(matches!(
            holds.gate(enroll, "105", at + 1, None),
            Gate::Wait(_)
        ));
        drop(read(&holds, "106", at));
        read(&holds, "106", at).unread();
        drop(read(&holds, "106", at));
        assert!(matches!(holds.gate(enroll, "106", at, None), Gate::Open));
    }

    #[test]
    fn a_workflow_calls_go_to_is_read_again_every_while_and_held_when_turned_off() {
        let holds = TargetHolds::default();
        let (enroll, t0) = (Action::Enroll, 1_000 * MINUTE_MS);
        let every = policy::TARGET_RECHECK_MS;
        let goes = |at: i64| {
            matches!(
                holds.gate(enroll, "104", at, Some(policy::TARGET_RECHECK_MS)),
                Gate::Open
            )
        };
        let due = |at: i64| -> Reading<'_> {
            match holds.gate(enroll, "104", at, Some(policy::TARGET_RECHECK_MS)) {
                Gate::Read(reading) => reading,
                _ => panic!("not read at {at}"),
            }
        };
        // The first call is not read (`validate --online` reads it before); the one due an
        // interval later is, the others going on meanwhile and a refusal waiting for its
        // answer; not by a call that has just read it (a clock moved on would have it read
        // for ever).
        assert!(goes(t0));
        assert!(goes(t0 + every - 1));
        assert!(matches!(
            holds.gate(enroll, "104", t0 + every, None),
            Gate::Open
        ));
        let t1 = t0 + every;
        let reading = due(t1);
        assert!(goes(t1));
        assert!(matches!(
            holds.refused(enroll, "104", t1),
            Refused::Wait(..)
        ));
        // Found on: read again an interval after that answer.
        assert_eq!(reading.found("main", t1, None), None);
        assert!(goes(t1 + every - 1));
        // A failed read: the calls go on, and it is read again in a minute.
        let t2 = t1 + every;
        due(t2).failed(t2);
        assert!(goes(t2));
        assert!(goes(t2 + MINUTE_MS - 1));
        // Not made (the budget spent, shutting down): the next call reads it.
        let t3 = t2 + MINUTE_MS;
        drop(due(t3));
        let reading = due(t3);
        // Turned off: held as one gone, its row saying so, and read again at the hold's end.
        let off = Unusable::WorkflowOff {
            id: 104,
            name: "Welcome".into(),
        };
        let row = reading.found("main", t3, Some(&off)).unwrap();
        assert!(
            row.contains("workflow 104 (Welcome) is turned off"),
            "{row}"
        );
        assert_eq!(holds.held(t3)[0].2, t3 + policy::TARGET_HOLD_MS);
        assert!(matches!(
            holds.gate(enroll, "104", t3 + 1, Some(policy::TARGET_RECHECK_MS)),
            Gate::Wait(_)
        ));
        // That read failing does not let its calls go in doubt, as for one gone (a workflow
        // off takes them and runs none): held a minute more, for the same reason.
        let end = t3 + policy::TARGET_HOLD_MS;
        due(end).failed(end);
        let (row, _) = holds.waiting(enroll, "104", end).unwrap();
        assert!(row.contains("is turned off"), "{row}");
        assert_eq!(holds.held(end)[0].2, end + MINUTE_MS);
        assert!(matches!(
            holds.gate(enroll, "104", end + 1, Some(policy::TARGET_RECHECK_MS)),
            Gate::Wait(_)
        ));
        // On again: its calls go.
        let on = end + MINUTE_MS;
        due(on).found("main", on, None);
        assert!(goes(on));
        assert!(goes(on + every - 1));
        // A clock moved back starts the interval again.
        assert!(goes(on - HOUR));
        assert!(goes(on - HOUR + every - 1));
        assert!(matches!(
            holds.gate(
                enroll,
                "104",
                on - HOUR + every,
                Some(policy::TARGET_RECHECK_MS)
            ),
            Gate::Read(_)
        ));
        // Found off, it is kept for the next process; found on, no more.
        let later = on - HOUR + every;
        let Gate::Read(reading) = holds.gate(enroll, "104", later, Some(policy::TARGET_RECHECK_MS))
        else {
            panic!("not read")
        };
        reading.found("main", later, Some(&off));
        assert_eq!(holds.off().keys().collect::<Vec<_>>(), ["104"]);
        // Kept in its file (when it has one): the next process holds it until the first call
        // to it has read it.
        let dir = tempfile::tempdir().unwrap();
        let files = workflow_reads::files(dir.path(), "main");
        let file = files.off.clone();
        let kept = TargetHolds::default();
        kept.keep_in(files.clone(), later);
        read(&kept, "104", later).found("main", later, Some(&off));
        let next = TargetHolds::default();
        next.keep_in(files.clone(), later);
        let Gate::Read(reading) = next.gate(enroll, "104", later, None) else {
            panic!("a workflow found off before is not read first")
        };
        assert!(matches!(
            next.gate(enroll, "104", later, Some(policy::TARGET_RECHECK_MS)),
            Gate::Wait(_)
        ));
        reading.failed(later);
        let (row, _) = next.waiting(enroll, "104", later).unwrap();
        assert!(row.contains("is turned off"), "{row}");
        let Gate::Read(reading) = next.gate(enroll, "104", later + MINUTE_MS, None) else {
            panic!("not read again")
        };
        // A read not made (dropped), or one that cannot be made (a scope), holds it a minute
        // more too.
        drop(reading);
        let at = later + 2 * MINUTE_MS;
        let Gate::Read(reading) = next.gate(enroll, "104", at, None) else {
            panic!("not read again")
        };
        reading.unread();
        assert!(matches!(
            next.gate(enroll, "104", at + 1, Some(policy::TARGET_RECHECK_MS)),
            Gate::Wait(_)
        ));
        let at = at + MINUTE_MS;
        let Gate::Read(reading) = next.gate(enroll, "104", at, None) else {
            panic!("not read again")
        };
        reading.found("main", at, None);
        assert!(next.off().is_empty());
        assert!(!file.exists(), "found on: the file goes");
        // When each was last read is kept too: the next holds read it an interval after.
        let after = TargetHolds::default();
        after.keep_in(files.clone(), at);
        assert!(matches!(
            after.gate(
                enroll,
                "104",
                at + every - 1,
                Some(policy::TARGET_RECHECK_MS)
            ),
            Gate::Open
        ));
        assert!(matches!(
            after.gate(enroll, "104", at + every, Some(policy::TARGET_RECHECK_MS)),
            Gate::Read(_)
        ));
        // That read not made (dropped) writes nothing: the file still has the last one.
        let kept_reads = workflow_reads::load::<Reads>(&files.reads).unwrap();
        assert_eq!(kept_reads.get("104"), Some(&at));
        // First called in one, it is read an interval later in the next.
        let first = TargetHolds::default();
        first.keep_in(files.clone(), at);
        assert!(matches!(
            first.gate(enroll, "106", at, Some(policy::TARGET_RECHECK_MS)),
            Gate::Open
        ));
        let then = TargetHolds::default();
        then.keep_in(files.clone(), at);
        assert!(matches!(
            then.gate(enroll, "106", at + every, Some(policy::TARGET_RECHECK_MS)),
            Gate::Read(_)
        ));
        // A file that cannot be read: every workflow is read at its first call, those the
        // read times name too.
        std::fs::write(&file, b"{not json").unwrap();
        let unsure = TargetHolds::default();
        unsure.keep_in(files.clone(), at);
        for workflow in ["104", "105"] {
            assert!(matches!(
                unsure.gate(enroll, workflow, at, Some(policy::TARGET_RECHECK_MS)),
                Gate::Read(_)
            ));
        }
        // Lists are not read so: their refusals say what is wrong.
        let list = |at| holds.gate(Action::ListAdd, "987", at, Some(policy::TARGET_RECHECK_MS));
        assert!(matches!(list(t0), Gate::Open));
        assert!(matches!(list(t0 + 10 * every), Gate::Open));
    }
}
