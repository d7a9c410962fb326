//! The receipts accepted and not yet finished, by webhook and contact: how the receiver knows
//! that a post repeats one still waiting (HubSpot retries a post whose answer it did not get),
//! so a retry never becomes a second enrollment. The dispatcher releases a receipt once it is
//! finished (enrolled, listed, failed for good, dry run), or once the inbox part holding it
//! is set aside before planning read it; after that, the same contact posted again is a new
//! receipt.
//!
//! It also remembers, for [`REPLAY_WINDOW_MS`], each post's body by webhook: the same body
//! posted to the same webhook again within that span (HubSpot's retry of a post whose 200 it
//! lost, or a captured post replayed) is a duplicate even once its contact was sent; so is a
//! body answered as a waiting receipt's repeat, remembered as that receipt's (in memory only).
//! The same body to another webhook is a new receipt.
//!
//! Shared by the inbox writer and the dispatcher; one lock, held for map operations only.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use ulid::Ulid;

use crate::metrics::Metrics;

/// How long a post's body is remembered: as long as HubSpot retries it.
pub const REPLAY_WINDOW_MS: i64 = crate::hubspot::policy::WEBHOOK_RETRIES_MS;

/// The set, cheap to clone (clones share it). Counts each webhook's pending receipts in
/// `sendtime_pending{webhook}`.
#[derive(Clone)]
pub struct PendingSet {
    inner: Arc<Mutex<State>>,
    metrics: Metrics,
}

#[derive(Default)]
struct State {
    /// Each waiting contact's receipt, and how it was taken.
    pending: HashMap<Key, (String, Option<SendsAs>)>,
    /// What each pending execution of a workflow action was answered (by receipt id), so
    /// HubSpot's retry of it gets the same answer whatever the config says by then.
    answers: HashMap<String, Answered>,
    /// (webhook id, body's hash or an execution's callback id) → the receipt that post was
    /// stored as, and when.
    recent: HashMap<(String, String), (String, i64)>,
    /// When each of `recent` was received, and as which receipt, oldest first (about: start-up
    /// adds them in part order), to forget them after the window: an entry withdrawn and
    /// stored again by a later receipt is that receipt's, and expires with it.
    expiry: VecDeque<(i64, (String, String), String)>,
    /// The pending receipts taken unsigned (`allow_unsigned`): anyone's, so their number is
    /// bounded ([`MAX_UNSIGNED`]).
    unsigned: HashSet<String>,
    /// Pending receipts whose contact's key a later post took ([`PendingSet::insert`]):
    /// still counted until released.
    displaced: HashSet<String>,
    /// Pending receipts per webhook or action id, as `sendtime_pending{webhook}` counts them
    /// (ids the config names or named when they were taken: a bounded set).
    by_webhook: HashMap<String, u64>,
    /// Receipts in an inbox part that planning has not planned yet, by receipt id: the
    /// part's id, the receipt's key and its body's. A part set aside unplanned (its bytes
    /// changed) releases them: nothing else would, and later posts of their contacts were
    /// answered `duplicate` until a restart (an audit).
    unread: HashMap<String, Unread>,
}

impl State {
    /// Whether a signed post of the contact, to be sent as `new`, is stored as a receipt of
    /// its own rather than answered as the repeat of `waiting` (a receipt id and how it was
    /// taken). It is when that one was taken unsigned (anyone's, only ever a dry run: a
    /// stranger's had HubSpot's answered `duplicate`, never sent once live), or to be sent
    /// otherwise: its webhook's type changed between a list's and an enrolling one, or it
    /// was taken for another account (the dispatcher holds it: HubSpot's post to the webhook
    /// as it is now was answered `duplicate`, and lost if the held one was discarded). Audits
    /// found both.
    fn gives_way(&self, waiting: &(String, Option<SendsAs>), new: Option<SendsAs>) -> bool {
        let (id, was) = waiting;
        self.unsigned.contains(id) || matches!((was, new), (Some(a), Some(b)) if a.differs(b))
    }
}

/// How a receipt is to be sent: to enroll (or to a list), for which account (none: recorded by
/// an older version).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendsAs {
    pub enrolls: bool,
    pub portal: Option<i64>,
}

impl SendsAs {
    /// An account unknown (an older version's receipt) differs from none.
    fn differs(self, other: SendsAs) -> bool {
        self.enrolls != other.enrolls
            || matches!((self.portal, other.portal), (Some(a), Some(b)) if a != b)
    }
}

/// Receipts taken unsigned that may wait at once: anyone may post them (a dry-run connector
/// may take them on a public listener), and each waits until its due time, up to a week.
pub const MAX_UNSIGNED: usize = 10_000;

/// What a workflow action's execution was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    /// BLOCK, HubSpot asked to hold the contact this long (ms).
    Hold(i64),
    /// SUCCESS: the contact went on at once (in dry run).
    Released,
}

/// The receipt a post repeats.
#[derive(Debug, Clone, PartialEq)]
pub enum Repeat {
    /// Its contact still waits on that receipt.
    Waiting(String),
    /// Its body was stored within the window as that receipt, since finished.
    Finished(String),
}

/// A post's body, for replays: its hash (hex) and when it was received.
#[derive(Debug, Clone, Copy)]
pub struct Body<'a> {
    pub hash: &'a str,
    pub received_at_ms: i64,
}

/// (webhook or action id, the callback id, else the contact id, else the lower-cased email).
type Key = (String, String);

/// A receipt in an inbox part not planned yet ([`State::unread`]).
struct Unread {
    part: Ulid,
    key: Key,
}

/// A contact as the set knows it.
#[derive(Debug, Clone, Copy)]
pub struct Contact<'a> {
    pub webhook_id: &'a str,
    pub contact_id: Option<i64>,
    pub email: Option<&'a str>,
    /// A workflow action's execution: HubSpot's retry of it repeats its callback id.
    pub callback_id: Option<&'a str>,
    /// The post's body, when known (not needed to release).
    pub body: Option<Body<'a>>,
    /// How it is to be sent, when known (not needed to release).
    pub sends_as: Option<SendsAs>,
}

impl Contact<'_> {
    /// Who "the same contact" is: the execution for an action, else the HubSpot id, else the
    /// email.
    fn key(&self) -> Key {
        let who = match (self.callback_id, self.contact_id, self.email) {
            (Some(callback), _, _) => format!("callback {callback}"),
            (None, Some(id), _) => id.to_string(),
            (None, None, Some(email)) => email.to_ascii_lowercase(),
            (None, None, None) => String::new(),
        };
        (self.webhook_id.to_string(), who)
    }

    /// What a replay of this post repeats: an execution's callback id (HubSpot's retry may
    /// carry other bytes, refreshed properties say), else the body's hash.
    fn replay_key(&self, body: &Body<'_>) -> Key {
        let what = match self.callback_id {
            Some(callback) => format!("callback {callback}"),
            None => body.hash.to_string(),
        };
        (self.webhook_id.to_string(), what)
    }
}

impl PendingSet {
    pub fn new(metrics: Metrics) -> PendingSet {
        PendingSet {
            inner: Arc::default(),
            metrics,
        }
    }

    /// Record `receipt_id` (taken `unsigned` or not) as pending for `contact`, unless one is
    /// already, or its body was posted to the same webhook within [`REPLAY_WINDOW_MS`]: then
    /// the earlier receipt. A repeat of a waiting receipt has its body remembered as that
    /// receipt's, under the lock that decided it (a part lost meanwhile forgets it).
    pub fn insert(
        &self,
        contact: Contact<'_>,
        receipt_id: &str,
        unsigned: bool,
    ) -> Result<(), Repeat> {
        let k = contact.key();
        let mut state = self.inner.lock().unwrap();
        // One that gives way stays pending, and the contact's key is the new one's.
        let displaced = match state.pending.get(&k) {
            Some(waiting) if unsigned || !state.gives_way(waiting, contact.sends_as) => {
                let existing = waiting.0.clone();
                state.remember(contact, &existing);
                return Err(Repeat::Waiting(existing));
            }
            waiting => waiting.map(|w| w.0.clone()),
        };
        // Not the waiting receipt that gives way: the same bytes as its (a fixed body, or
        // HubSpot's retry of the post from before the config changed) were answered as its
        // repeat, and the contact never sent (an audit).
        if let Some(body) = contact.body
            && let Some((existing, at)) = state.recent.get(&contact.replay_key(&body))
            && *at >= body.received_at_ms - REPLAY_WINDOW_MS
            && displaced.as_ref() != Some(existing)
        {
            // The same body is the same contact: were that receipt waiting, it would be
            // found above. (Checked before the waiting one is marked displaced: marked, it
            // stayed so, and its release was counted twice, an audit found.)
            return Err(Repeat::Finished(existing.clone()));
        }
        if let Some(displaced) = displaced {
            state.displaced.insert(displaced);
        }
        state
            .pending
            .insert(k, (receipt_id.to_string(), contact.sends_as));
        if unsigned {
            state.unsigned.insert(receipt_id.to_string());
        }
        state.remember(contact, receipt_id);
        *state
            .by_webhook
            .entry(contact.webhook_id.to_string())
            .or_default() += 1;
        self.metrics.pending(contact.webhook_id).inc();
        Ok(())
    }

    /// The receipt still waiting on `webhook_id` for one of the contacts `ids` (those merged
    /// into a contact posted now: its receipt waits for the same person), but one that gives
    /// way to the post of `contact` ([`State::gives_way`]), taken `unsigned` or not.
    pub fn waiting_for_any(
        &self,
        contact: Contact<'_>,
        ids: &[i64],
        unsigned: bool,
    ) -> Option<String> {
        if ids.is_empty() {
            return None;
        }
        let mut state = self.inner.lock().unwrap();
        let existing = ids.iter().find_map(|&id| {
            let merged = Contact {
                contact_id: Some(id),
                email: None,
                callback_id: None,
                body: None,
                ..contact
            };
            let waiting = state.pending.get(&merged.key())?;
            (unsigned || !state.gives_way(waiting, contact.sends_as)).then(|| waiting.0.clone())
        })?;
        state.remember(contact, &existing);
        Some(existing)
    }

    /// Record what execution `receipt_id`, just inserted, was answered (kept until it is
    /// released).
    pub fn answered(&self, receipt_id: &str, answer: Answered) {
        let mut state = self.inner.lock().unwrap();
        state.answers.insert(receipt_id.to_string(), answer);
    }

    /// What pending execution `receipt_id` was answered, when known.
    pub fn answer_of(&self, receipt_id: &str) -> Option<Answered> {
        self.inner.lock().unwrap().answers.get(receipt_id).copied()
    }

    /// Remember the body of a receipt that is already finished (at start-up), so a replay of
    /// it within the window is still a duplicate.
    pub fn remember(&self, contact: Contact<'_>, receipt_id: &str) {
        self.inner.lock().unwrap().remember(contact, receipt_id);
    }

    /// `receipt_id` is no longer pending for `contact` (finished, or never stored); a later
    /// receipt of the same contact is left alone.
    pub fn release(&self, contact: Contact<'_>, receipt_id: &str) {
        let k = contact.key();
        self.inner
            .lock()
            .unwrap()
            .release(&k, receipt_id, &self.metrics);
    }

    /// The receipts of `rows` (a receipt id and its contact each) are in the inbox part
    /// `part`, written: until planning has planned them ([`PendingSet::read`]), that part's
    /// loss releases them ([`PendingSet::release_unread`]).
    pub fn flushed<'a>(&self, part: Ulid, rows: impl IntoIterator<Item = (&'a str, Contact<'a>)>) {
        // Built before the lock, which every post's check takes.
        let rows: Vec<(String, Unread)> = (rows.into_iter())
            .map(|(id, contact)| {
                let unread = Unread {
                    part,
                    key: contact.key(),
                };
                (id.to_string(), unread)
            })
            .collect();
        self.inner.lock().unwrap().unread.extend(rows);
    }

    /// Planning has planned these receipts, durably.
    pub fn read(&self, receipt_ids: impl IntoIterator<Item = impl AsRef<str>>) {
        let mut state = self.inner.lock().unwrap();
        for id in receipt_ids {
            if state.unread.is_empty() {
                return;
            }
            state.unread.remove(id.as_ref());
        }
    }

    /// Whether any receipt is recorded as not planned ([`PendingSet::flushed`]).
    pub fn has_unread(&self) -> bool {
        !self.inner.lock().unwrap().unread.is_empty()
    }

    /// The inbox parts holding receipts planning has not planned.
    pub fn unread_parts(&self) -> HashSet<Ulid> {
        let state = self.inner.lock().unwrap();
        state.unread.values().map(|u| u.part).collect()
    }

    /// The inbox parts `gone` are lost, their receipts in no other part: release those
    /// receipts, and forget their bodies (a retry of a post lost is taken), except those
    /// `planned` (planned before their part was recorded here). Returns how many were
    /// released.
    pub fn release_unread(&self, gone: &HashSet<Ulid>, planned: impl Fn(&str) -> bool) -> usize {
        let mut state = self.inner.lock().unwrap();
        let lost: Vec<(String, Unread)> = (state.unread)
            .extract_if(|_, u| gone.contains(&u.part))
            .collect();
        let mut released = HashSet::new();
        for (id, u) in lost {
            if !planned(&id) && state.release(&u.key, &id, &self.metrics) {
                released.insert(id);
            }
        }
        // Its body and those of the posts answered as its repeats (a rare loss: one pass).
        if !released.is_empty() {
            state.recent.retain(|_, (r, _)| !released.contains(r));
        }
        released.len()
    }

    /// Pending receipts per webhook or action id (those with any).
    pub fn by_webhook(&self) -> BTreeMap<String, u64> {
        let state = self.inner.lock().unwrap();
        (state.by_webhook.iter())
            .map(|(id, n)| (id.clone(), *n))
            .collect()
    }

    /// `receipt_id` could not be stored: forget it entirely, so HubSpot's retry of the post
    /// is a new receipt.
    pub fn withdraw(&self, contact: Contact<'_>, receipt_id: &str) {
        self.release(contact, receipt_id);
        if let Some(body) = contact.body {
            let key = contact.replay_key(&body);
            let mut state = self.inner.lock().unwrap();
            if state
                .recent
                .get(&key)
                .is_some_and(|(id, _)| id == receipt_id)
            {
                state.recent.remove(&key);
            }
        }
    }

    /// The receipts `ids` could not be stored: forget the bodies of the posts answered as their
    /// repeats too ([`PendingSet::withdraw`] forgets each one's own).
    pub fn forget_repeats_of(&self, ids: &HashSet<&str>) {
        let mut state = self.inner.lock().unwrap();
        state.recent.retain(|_, (r, _)| !ids.contains(r.as_str()));
    }

    /// Whether as many receipts taken unsigned wait as may ([`MAX_UNSIGNED`]).
    pub fn unsigned_full(&self) -> bool {
        self.inner.lock().unwrap().unsigned.len() >= MAX_UNSIGNED
    }

    /// Receipts pending, all webhooks: those that gave way to a later receipt of their
    /// contact too, which wait to be released as the gauges count them (the dashboard's card
    /// said fewer than its rows; an audit).
    pub fn len(&self) -> usize {
        let state = self.inner.lock().unwrap();
        state.pending.len() + state.displaced.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl State {
    /// `receipt_id` is no longer pending for the contact `k`: false when it was not.
    fn release(&mut self, k: &Key, receipt_id: &str, metrics: &Metrics) -> bool {
        // By its id, unique: counted out even if its contact's key no longer finds it.
        self.unsigned.remove(receipt_id);
        self.unread.remove(receipt_id);
        if self.pending.get(k).is_some_and(|(id, _)| id == receipt_id) {
            self.pending.remove(k);
        } else if !self.displaced.remove(receipt_id) {
            return false;
        }
        self.answers.remove(receipt_id);
        let webhook_id = &k.0;
        if let Some(n) = self.by_webhook.get_mut(webhook_id) {
            *n -= 1;
            if *n == 0 {
                self.by_webhook.remove(webhook_id);
            }
        }
        metrics.pending(webhook_id).dec();
        true
    }

    /// Remember `contact`'s body (if known and recent) as `receipt_id`'s, and forget the
    /// bodies that left the window.
    fn remember(&mut self, contact: Contact<'_>, receipt_id: &str) {
        let Some(body) = contact.body else { return };
        let horizon = body.received_at_ms - REPLAY_WINDOW_MS;
        while self.expiry.front().is_some_and(|(at, ..)| *at < horizon) {
            let (_, key, receipt) = self.expiry.pop_front().expect("checked");
            if self.recent.get(&key).is_some_and(|(id, _)| *id == receipt) {
                self.recent.remove(&key);
            }
        }
        let key = contact.replay_key(&body);
        // A body past the window is forgotten here even while the queue, in the order
        // bodies came (start-up reads them part by part), has yet to reach it.
        if self.recent.get(&key).is_some_and(|(_, at)| *at >= horizon) {
            return;
        }
        let entry = (receipt_id.to_string(), body.received_at_ms);
        self.recent.insert(key.clone(), entry);
        self.expiry
            .push_back((body.received_at_ms, key, receipt_id.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::DAY_MS;
    use Repeat::{Finished, Waiting};

    /// A post of contact `id` to `webhook` whose body hashes to `hash`, received at 0.
    fn posted<'a>(webhook_id: &'a str, id: i64, hash: &'a str) -> Contact<'a> {
        Contact {
            webhook_id,
            contact_id: Some(id),
            email: None,
            callback_id: None,
            body: Some(Body {
                hash,
                received_at_ms: 0,
            }),
            sends_as: None,
        }
    }

    /// Receipts taken unsigned are counted while they wait, up to [`MAX_UNSIGNED`]; signed
    /// ones and those released (finished, or withdrawn) are not.
    #[test]
    fn receipts_taken_unsigned_are_bounded_while_they_wait() {
        let set = PendingSet::new(Metrics::new());
        let emails: Vec<String> = (0..=MAX_UNSIGNED)
            .map(|i| format!("u{i}@example.com"))
            .collect();
        let contact = |i: usize| Contact {
            webhook_id: "w",
            contact_id: None,
            email: Some(&emails[i]),
            callback_id: None,
            body: None,
            sends_as: None,
        };
        for i in 0..MAX_UNSIGNED - 1 {
            set.insert(contact(i), &format!("r{i}"), true).unwrap();
        }
        set.insert(contact(MAX_UNSIGNED), "signed", false).unwrap();
        assert!(!set.unsigned_full(), "a signed receipt does not count");
        let last = MAX_UNSIGNED - 1;
        set.insert(contact(last), "last", true).unwrap();
        assert!(set.unsigned_full());
        // A repeat of a waiting contact is not stored, and not counted.
        assert!(set.insert(contact(0), "again", true).is_err());
        set.release(contact(0), "r0");
        assert!(!set.unsigned_full());
        set.insert(contact(0), "r0 again", true).unwrap();
        assert!(set.unsigned_full());
        set.withdraw(contact(last), "last");
        assert!(!set.unsigned_full());
    }

    #[test]
    fn a_signed_post_is_not_a_repeat_of_an_unsigned_receipt() {
        let set = PendingSet::new(Metrics::new());
        let contact = Contact {
            webhook_id: "w",
            contact_id: Some(123),
            email: None,
            callback_id: None,
            body: None,
            sends_as: None,
        };
        set.insert(contact, "stranger", true).unwrap();
        assert_eq!(
            set.insert(contact, "another stranger", true),
            Err(Waiting("stranger".into()))
        );
        set.insert(contact, "hubspot", false).unwrap();
        let gauge = || set.metrics.pending("w").get();
        assert_eq!(gauge(), 2, "both receipts wait");
        assert_eq!(set.len(), 2, "the total counts as the gauge");
        // From then on the key is the signed receipt's, whatever comes.
        assert_eq!(
            set.insert(contact, "retry", false),
            Err(Waiting("hubspot".into()))
        );
        assert_eq!(
            set.insert(contact, "stranger again", true),
            Err(Waiting("hubspot".into()))
        );
        // The unsigned receipt's release leaves the signed one waiting.
        set.release(contact, "stranger");
        assert_eq!(gauge(), 1);
        assert_eq!(
            set.insert(contact, "retry", false),
            Err(Waiting("hubspot".into()))
        );
        assert!(!set.unsigned_full());
        set.release(contact, "hubspot");
        assert_eq!(gauge(), 0);
    }

    /// A receipt to be sent otherwise than a post of its contact now (its webhook's type
    /// changed, or it was taken for another account: the dispatcher holds it) gives way to
    /// that post, merged ids included; one of unknown kind (an older version's) does not.
    #[test]
    fn a_receipt_to_be_sent_otherwise_gives_way_to_a_new_post() {
        let set = PendingSet::new(Metrics::new());
        let as_ = |enrolls, portal| Some(SendsAs { enrolls, portal });
        let contact = |id, sends_as| Contact {
            webhook_id: "w",
            contact_id: Some(id),
            email: None,
            callback_id: None,
            body: None,
            sends_as,
        };
        set.insert(contact(1, as_(true, Some(7))), "enroll", false)
            .unwrap();
        set.insert(contact(2, None), "older", false).unwrap();
        // The webhook is UPDATE_ONLY now.
        let listed = contact(9, as_(false, Some(7)));
        assert_eq!(set.waiting_for_any(listed, &[1], false), None);
        assert_eq!(
            set.waiting_for_any(listed, &[1], true),
            Some("enroll".into())
        );
        set.insert(contact(1, as_(false, Some(7))), "list", false)
            .unwrap();
        assert_eq!(
            set.insert(contact(1, as_(false, Some(7))), "retry", false),
            Err(Waiting("list".into()))
        );
        // Another account's contact 1 is someone else; one of an unknown account (an older
        // version's receipt) may be the same.
        set.insert(contact(1, as_(false, Some(8))), "theirs", false)
            .unwrap();
        assert_eq!(
            set.insert(contact(1, as_(false, None)), "unknown", false),
            Err(Waiting("theirs".into()))
        );
        assert_eq!(
            set.insert(contact(2, as_(false, Some(7))), "again", false),
            Err(Waiting("older".into()))
        );
        assert_eq!(set.metrics.pending("w").get(), 4);
        for id in ["enroll", "list", "theirs"] {
            set.release(contact(1, None), id);
        }
        set.release(contact(2, None), "older");
        assert_eq!(set.metrics.pending("w").get(), 0);
        // The same bytes as the waiting one's (a fixed body, HubSpot's retry of the post
        // from before the change) too: it was answered as that one's repeat, never sent.
        let body = Some(Body {
            hash: "fixed",
            received_at_ms: 0,
        });
        let fixed = |sends_as| Contact {
            body,
            ..contact(3, sends_as)
        };
        set.insert(fixed(as_(true, Some(7))), "before", false)
            .unwrap();
        set.insert(fixed(as_(false, Some(7))), "after", false)
            .unwrap();
        assert_eq!(
            set.insert(fixed(as_(false, Some(7))), "retry", false),
            Err(Waiting("after".into()))
        );
    }

    #[test]
    fn a_contact_is_pending_once_per_webhook_until_its_receipt_is_released() {
        let set = PendingSet::new(Metrics::new());
        let ada = |webhook_id| Contact {
            webhook_id,
            contact_id: None,
            email: Some("Ada@Example.com"),
            callback_id: None,
            body: None,
            sends_as: None,
        };
        assert_eq!(set.insert(ada("a"), "r1", false), Ok(()));
        let same = Contact {
            email: Some("ada@example.com"),
            ..ada("a")
        };
        assert_eq!(set.insert(same, "r2", false), Err(Waiting("r1".into())));
        assert_eq!(set.insert(ada("b"), "r3", false), Ok(()), "another webhook");
        // Releasing another receipt of the contact leaves the pending one.
        set.release(ada("a"), "r2");
        assert_eq!(set.insert(ada("a"), "r4", false), Err(Waiting("r1".into())));
        set.release(ada("a"), "r1");
        assert_eq!(set.insert(ada("a"), "r4", false), Ok(()));
        assert_eq!(set.len(), 2);
        // The HubSpot id, when known, is who the contact is.
        let by_id = |email| Contact {
            webhook_id: "a",
            contact_id: Some(7),
            email,
            callback_id: None,
            body: None,
            sends_as: None,
        };
        assert_eq!(
            set.insert(by_id(Some("x@example.com")), "r5", false),
            Ok(())
        );
        assert_eq!(
            set.insert(by_id(Some("y@example.com")), "r6", false),
            Err(Waiting("r5".into()))
        );
        // An action's executions are told apart by callback: the same contact may wait in
        // two workflows at once.
        let execution = |callback_id| Contact {
            callback_id: Some(callback_id),
            ..by_id(None)
        };
        assert_eq!(set.insert(execution("cb-1"), "r7", false), Ok(()));
        assert_eq!(set.insert(execution("cb-2"), "r8", false), Ok(()));
        assert_eq!(
            set.insert(execution("cb-1"), "r9", false),
            Err(Waiting("r7".into()))
        );
    }

    /// A body whose first receipt could not be stored, stored again by HubSpot's retry an
    /// hour later, is remembered for the retry's whole window, not the first post's.
    #[test]
    fn a_withdrawn_body_stored_again_expires_with_its_new_receipt() {
        let set = PendingSet::new(Metrics::new());
        let post = |email, hash, received_at_ms| Contact {
            webhook_id: "a",
            contact_id: None,
            email: Some(email),
            callback_id: None,
            body: Some(Body {
                hash,
                received_at_ms,
            }),
            sends_as: None,
        };
        let hour = crate::time::HOUR_MS;
        assert_eq!(set.insert(post("ada@x.com", "b1", 0), "r1", false), Ok(()));
        set.withdraw(post("ada@x.com", "b1", 0), "r1");
        assert_eq!(
            set.insert(post("ada@x.com", "b1", hour), "r2", false),
            Ok(())
        );
        set.release(post("ada@x.com", "b1", hour), "r2");
        // Another post moves the window past the first receipt, not the second.
        let later = REPLAY_WINDOW_MS + hour / 2;
        assert_eq!(
            set.insert(post("bob@x.com", "b2", later), "r3", false),
            Ok(())
        );
        assert_eq!(
            set.insert(post("ada@x.com", "b1", later), "r4", false),
            Err(Finished("r2".into()))
        );
    }

    /// A signed replay of a finished body while an unsigned receipt of the contact waits is
    /// that finished receipt's: the waiting one is not displaced, and its release counts it
    /// out once.
    #[test]
    fn a_replay_displaces_no_waiting_receipt() {
        let set = PendingSet::new(Metrics::new());
        let post = |hash| posted("a", 7, hash);
        assert_eq!(set.insert(post("h"), "r0", false), Ok(()));
        set.release(post("h"), "r0");
        assert_eq!(set.insert(post("other"), "r1", true), Ok(()));
        assert_eq!(
            set.insert(post("h"), "r2", false),
            Err(Finished("r0".into()))
        );
        let gauge = || set.metrics.pending("a").get();
        assert_eq!(gauge(), 1);
        set.release(post("other"), "r1");
        set.release(post("other"), "r1");
        assert_eq!(gauge(), 0);
    }

    /// A workflow that posts the same body every week: the second week's post is a new
    /// receipt, though no other post came between to move the window on.
    #[test]
    fn a_body_posted_again_after_the_window_is_a_new_receipt() {
        let set = PendingSet::new(Metrics::new());
        let post = |received_at_ms| Contact {
            webhook_id: "a",
            contact_id: Some(7),
            email: None,
            callback_id: None,
            body: Some(Body {
                hash: "same",
                received_at_ms,
            }),
            sends_as: None,
        };
        assert_eq!(set.insert(post(0), "r1", false), Ok(()));
        set.release(post(0), "r1");
        assert_eq!(
            set.insert(post(DAY_MS), "r2", false),
            Err(Finished("r1".into())),
            "a replay"
        );
        let week = 7 * DAY_MS;
        assert_eq!(set.insert(post(week), "r3", false), Ok(()));
        set.release(post(week), "r3");
        // Remembered at start-up out of order: an older body read after a newer one.
        set.remember(post(week - 6 * DAY_MS), "r0");
        assert_eq!(
            set.insert(post(week + DAY_MS), "r4", false),
            Err(Finished("r3".into()))
        );
        assert_eq!(set.insert(post(3 * week), "r5", false), Ok(()));
    }

    /// HubSpot's retry of an execution already released, with other bytes (its properties
    /// refreshed), is a replay of that execution: its callback id says so. It was a new
    /// receipt, held (BLOCK) and completed a second time.
    #[test]
    fn a_released_execution_retried_with_other_bytes_is_a_replay() {
        let set = PendingSet::new(Metrics::new());
        let execution = |hash| Contact {
            webhook_id: "send-time",
            contact_id: Some(7),
            email: None,
            callback_id: Some("cb-1"),
            body: Some(Body {
                hash,
                received_at_ms: 0,
            }),
            sends_as: None,
        };
        assert_eq!(set.insert(execution("first"), "r1", false), Ok(()));
        set.release(execution("first"), "r1");
        assert_eq!(
            set.insert(execution("refreshed"), "r2", false),
            Err(Finished("r1".into()))
        );
    }

    /// A post answered as the repeat of a waiting receipt (a later pass, a contact merged into
    /// it) stays one once that receipt is sent: HubSpot's retry of it was taken and sent
    /// again. Not once that receipt is lost before planning, or could not be stored.
    #[test]
    fn a_repeat_stays_one_once_its_receipt_is_sent_not_once_it_is_lost() {
        let set = PendingSet::new(Metrics::new());
        let post = |id, hash| posted("w", id, hash);
        set.insert(post(1, "first"), "r1", false).unwrap();
        let later = set.insert(post(1, "later"), "x", false);
        assert_eq!(later, Err(Waiting("r1".into())));
        let merged = set.waiting_for_any(post(9, "merged"), &[1], false);
        assert_eq!(merged, Some("r1".into()));
        set.release(post(1, "first"), "r1");
        for (id, hash) in [(1, "later"), (9, "merged")] {
            let retry = set.insert(post(id, hash), "retry", false);
            assert_eq!(retry, Err(Finished("r1".into())), "{hash}");
        }
        set.insert(post(2, "second"), "r2", false).unwrap();
        let again = set.insert(post(2, "again"), "x", false);
        assert_eq!(again, Err(Waiting("r2".into())));
        let part = Ulid::from_parts(1, 1);
        set.flushed(part, [("r2", post(2, "second"))]);
        assert_eq!(set.release_unread(&HashSet::from([part]), |_| false), 1);
        assert_eq!(set.insert(post(2, "again"), "r3", false), Ok(()));
        set.insert(post(3, "third"), "r4", false).unwrap();
        let again = set.insert(post(3, "third again"), "x", false);
        assert_eq!(again, Err(Waiting("r4".into())));
        set.withdraw(post(3, "third"), "r4");
        set.forget_repeats_of(&HashSet::from(["r4"]));
        assert_eq!(set.insert(post(3, "third again"), "r5", false), Ok(()));
    }

    /// The receipts of a part lost before they were planned are released, and their bodies
    /// forgotten (a retry of the post is taken); those planned, before or after their part
    /// was recorded, or finished, are not released again.
    #[test]
    fn only_receipts_of_a_lost_part_not_planned_are_released() {
        let set = PendingSet::new(Metrics::new());
        let hashes: Vec<String> = (0..5).map(|i| format!("body {i}")).collect();
        let contact = |i: usize| Contact {
            webhook_id: "w",
            contact_id: Some(i as i64),
            email: None,
            callback_id: None,
            body: Some(Body {
                hash: &hashes[i],
                received_at_ms: 0,
            }),
            sends_as: None,
        };
        let names: Vec<String> = (0..5).map(|i| format!("r{i}")).collect();
        for (i, name) in names.iter().enumerate() {
            set.insert(contact(i), name, false).unwrap();
        }
        let (lost, kept) = (Ulid::from_parts(1, 1), Ulid::from_parts(2, 2));
        let rows = |range: std::ops::Range<usize>| {
            range
                .map(|i| (names[i].as_str(), contact(i)))
                .collect::<Vec<_>>()
        };
        set.flushed(lost, rows(0..4));
        set.flushed(kept, rows(4..5));
        assert_eq!(set.unread_parts(), HashSet::from([lost, kept]));
        // r0 planned, r1 planned before its part was recorded, r2 finished; r3 not planned.
        set.read(["r0"]);
        set.release(contact(2), "r2");
        let gone = HashSet::from([lost]);
        assert_eq!(set.release_unread(&gone, |id| id == "r1"), 1);
        assert_eq!(set.len(), 3, "r0, r1 and r4 wait");
        assert_eq!(set.metrics.pending("w").get(), 3);
        assert_eq!(set.insert(contact(3), "r3 again", false), Ok(()));
        assert_eq!(
            set.insert(contact(0), "r0 again", false),
            Err(Waiting("r0".into()))
        );
        // The finished one's body is still a replay.
        assert_eq!(
            set.insert(contact(2), "r2 again", false),
            Err(Finished("r2".into()))
        );
        assert_eq!(
            set.unread_parts(),
            HashSet::from([kept]),
            "the lost part is forgotten"
        );
        assert_eq!(set.release_unread(&gone, |_| false), 0, "and released once");
    }
}
