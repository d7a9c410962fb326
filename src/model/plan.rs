//! When to enroll a received contact: one pure function of the webhook type, the receipt time,
//! what the model knows about the contact, and the population profile.

use std::fmt::Write;

use super::profile::{Class, Profile};
use crate::config::WebhookType;
use crate::time::{HOUR_MS, MINUTE_MS, Minute, SLOTS, SlotName, slot_of};

/// A decided due time and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// When to call HubSpot (UTC, epoch ms); the first tick at or after it does.
    pub due_at_ms: i64,
    /// The hour-of-week slot chosen, when one was.
    pub slot: Option<u8>,
    /// One line a person can read: the rule applied and what it was based on.
    pub reason: String,
}

/// Who the plan is for; the seed makes cold-contact draws and minute spreading reproducible.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The contact's key (email or `#id`).
    pub contact: &'a str,
    /// The receipt id: a contact posted twice gets independent (but reproducible) draws.
    pub receipt: &'a str,
}

/// Decide the due time for one receipt.
///
/// `profile` is `None` for a contact the model has never seen. Contacts without usable history
/// (none, or machine-like) get an hour drawn from the population profile inside the window,
/// which spreads load and gathers unbiased data; the others get the window's best hour. The
/// minute inside the hour is spread by a hash of the contact so a popular hour is not a spike.
pub fn plan(
    kind: WebhookType,
    received_at_ms: i64,
    profile: Option<&Profile>,
    population: &[f64; SLOTS],
    who: Subject<'_>,
) -> Plan {
    let mut reason = String::new();
    let (due_at_ms, slot) = plan_into(
        kind,
        received_at_ms,
        received_at_ms,
        profile,
        population,
        who,
        &mut reason,
    );
    Plan {
        due_at_ms,
        slot,
        reason,
    }
}

/// [`plan`] that appends the reason to `reason` and returns (due at, slot): planning a million
/// receipts then fills one reused buffer instead of allocating a handful of strings each.
///
/// `now_ms` is when the plan is made, normally the tick right after receipt. When it is later
/// (the dispatcher was down), only the hours of the window still ahead are candidates, and a
/// window already over means now.
pub fn plan_into(
    kind: WebhookType,
    received_at_ms: i64,
    now_ms: i64,
    profile: Option<&Profile>,
    population: &[f64; SLOTS],
    who: Subject<'_>,
    reason: &mut String,
) -> (i64, Option<u8>) {
    let hours = match kind {
        WebhookType::Immediate => {
            reason.push_str("IMMEDIATE: on the next tick");
            return (received_at_ms, None);
        }
        WebhookType::UpdateOnly => {
            reason.push_str("UPDATE_ONLY: list membership updated on the next tick, in a batch");
            return (received_at_ms, None);
        }
        WebhookType::Next24Hours => 24,
        WebhookType::NextWeek => 168,
        // A machine-like contact's class was learned from its machine: it has no usable one.
        WebhookType::NextWeekFrequencyOptimized => {
            match profile.filter(|p| !p.machine).map(|p| p.class) {
                Some(Class::Passive | Class::Inactive) => 168,
                _ => 24,
            }
        }
    };
    let window = if hours == 24 { "24 hours" } else { "7 days" };
    // Candidate hours: the hour it is (from receipt, or from now when planned late) and the
    // whole hours after it, up to the window's end; candidate k starts k hours after the first
    // and falls in the slot k after the first's.
    let from = received_at_ms.max(now_ms);
    let first_hour = from.div_euclid(HOUR_MS) * HOUR_MS;
    let window_end = received_at_ms.div_euclid(HOUR_MS) * HOUR_MS + hours as i64 * HOUR_MS;
    let hours = ((window_end - first_hour) / HOUR_MS).max(0) as usize;
    let class = profile.map_or("unknown", |p| {
        if p.machine {
            "machine-like"
        } else {
            p.class.as_str()
        }
    });
    // Writing to a String cannot fail.
    let _ = match kind {
        WebhookType::NextWeekFrequencyOptimized => {
            write!(reason, "{kind} gives {class} contacts the next {window}; ")
        }
        _ => write!(reason, "{kind}: the next {window}; "),
    };

    if hours == 0 {
        let _ = write!(
            reason,
            "the window was over when planned; due now, {}",
            Minute(from)
        );
        return (from, None);
    }
    let first_slot = slot_of(first_hour) as usize;
    let candidate = |k: usize| {
        (
            first_hour + k as i64 * HOUR_MS,
            ((first_slot + k) % SLOTS) as u8,
        )
    };
    let seed = fnv1a(&[who.contact.as_bytes(), b"\0", who.receipt.as_bytes()]);

    let usable = profile.filter(|p| p.engagements > 0 && !p.machine);
    let (start, slot) = match usable {
        Some(p) => {
            let (mut best, mut best_score, mut sum) = (0, f64::MIN, 0.0);
            let slots = (first_slot..SLOTS).chain(0..first_slot).take(hours);
            for (k, s) in slots.enumerate() {
                let score = p.scores[s];
                if score > best_score {
                    (best, best_score) = (k, score);
                }
                sum += score;
            }
            let (start, slot) = candidate(best);
            let mean = sum / hours as f64;
            let _ = write!(
                reason,
                "best hour for this {class} contact ({} opens/clicks): {} ({:.1}x the window's average)",
                p.engagements,
                SlotName(slot),
                p.scores[slot as usize] / mean
            );
            (start, slot)
        }
        None => {
            let mut weights = [0.0f64; SLOTS];
            let slots = (first_slot..SLOTS).chain(0..first_slot);
            for (w, s) in weights.iter_mut().take(hours).zip(slots) {
                *w = population[s];
            }
            let (start, slot) = candidate(draw(&weights[..hours], seed));
            let who = match profile {
                Some(p) if p.machine => "machine-like contact",
                _ => "contact without history",
            };
            let _ = write!(
                reason,
                "{who}: {} drawn from the population profile",
                SlotName(slot)
            );
            (start, slot)
        }
    };
    let due_at_ms = due_in_hour(start, from, who.contact);
    let _ = write!(reason, "; due {}", Minute(due_at_ms));
    (due_at_ms, Some(slot))
}

/// Index drawn with probability proportional to `weights`, from a 64-bit seed.
fn draw(weights: &[f64], seed: u64) -> usize {
    let total: f64 = weights.iter().sum();
    if total <= 0.0 {
        return (seed % weights.len() as u64) as usize;
    }
    // 53 random bits → uniform in [0, 1).
    let u = (splitmix(seed) >> 11) as f64 / (1u64 << 53) as f64;
    let mut acc = 0.0;
    for (i, w) in weights.iter().enumerate() {
        acc += w / total;
        if u < acc {
            return i;
        }
    }
    weights.len() - 1
}

/// The minute inside the hour starting at `start`, from a hash of the contact. In the hour of
/// receipt, when the contact's minute is already past, it is spread over what is left of the
/// hour instead, so a burst of posts does not become a burst of calls.
fn due_in_hour(start: i64, received_at_ms: i64, contact: &str) -> i64 {
    let hash = fnv1a(&[contact.as_bytes()]);
    let due = start + (hash % 60) as i64 * MINUTE_MS;
    if due >= received_at_ms {
        return due;
    }
    let left = ((start + HOUR_MS - received_at_ms) / MINUTE_MS).max(1);
    received_at_ms + (hash % left as u64) as i64 * MINUTE_MS
}

/// Stable 64-bit hash (FNV-1a): the same contact spreads to the same minute on every host.
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::DAY_MS;

    /// 2024-01-07 was a Sunday.
    const SUNDAY_MIDNIGHT: i64 = 1_704_585_600_000;
    const WHO: Subject = Subject {
        contact: "ada@example.com",
        receipt: "01J0000000000000000000000",
    };

    fn profile_peaking_at(slot: usize, class: Class) -> Profile {
        let mut scores = [0.5 / (SLOTS as f64 - 1.0); SLOTS];
        scores[slot] = 0.5;
        Profile {
            class,
            scores,
            engagements: 20,
            last_day: Some(0),
            machine: false,
        }
    }

    fn uniform() -> [f64; SLOTS] {
        [1.0 / SLOTS as f64; SLOTS]
    }

    #[test]
    fn immediate_and_update_only_go_on_the_next_tick() {
        for kind in [WebhookType::Immediate, WebhookType::UpdateOnly] {
            let p = plan(kind, 123_456, None, &uniform(), WHO);
            assert_eq!(p.due_at_ms, 123_456);
            assert_eq!(p.slot, None);
        }
    }

    #[test]
    fn next_24_hours_picks_the_best_slot_across_the_week_wrap() {
        // Received Sunday 22:30; the contact's best slot is Monday 09:00 (slot 9).
        let received = SUNDAY_MIDNIGHT + 22 * HOUR_MS + 30 * MINUTE_MS;
        let prof = profile_peaking_at(9, Class::Active);
        let p = plan(
            WebhookType::Next24Hours,
            received,
            Some(&prof),
            &uniform(),
            WHO,
        );
        assert_eq!(p.slot, Some(9));
        let monday_9 = SUNDAY_MIDNIGHT + DAY_MS + 9 * HOUR_MS;
        assert!(
            p.due_at_ms >= monday_9 && p.due_at_ms < monday_9 + HOUR_MS,
            "{}",
            p.reason
        );
        assert!(p.reason.contains("Mon 09:00 UTC"), "{}", p.reason);
        // Reproducible.
        assert_eq!(
            plan(
                WebhookType::Next24Hours,
                received,
                Some(&prof),
                &uniform(),
                WHO
            ),
            p
        );
    }

    #[test]
    fn next_24_hours_never_leaves_its_window_even_when_the_best_slot_is_outside() {
        // Best slot Wednesday 12:00 (slot 60); received Monday 10:00: outside 24 h.
        let received = SUNDAY_MIDNIGHT + DAY_MS + 10 * HOUR_MS;
        let prof = profile_peaking_at(60, Class::Active);
        let p = plan(
            WebhookType::Next24Hours,
            received,
            Some(&prof),
            &uniform(),
            WHO,
        );
        assert!(p.due_at_ms >= received && p.due_at_ms < received + DAY_MS);
        // NEXT_WEEK reaches it.
        let p = plan(
            WebhookType::NextWeek,
            received,
            Some(&prof),
            &uniform(),
            WHO,
        );
        assert_eq!(p.slot, Some(60));
        assert!(p.due_at_ms < received + 7 * DAY_MS);
    }

    #[test]
    fn window_edges_receipt_hour_and_last_hour() {
        // Best slot is the hour of receipt: the due time is not before the receipt.
        let received = SUNDAY_MIDNIGHT + 22 * HOUR_MS + 59 * MINUTE_MS + 30_000;
        let prof = profile_peaking_at(slot_of(received) as usize, Class::Active);
        let p = plan(
            WebhookType::Next24Hours,
            received,
            Some(&prof),
            &uniform(),
            WHO,
        );
        assert!(p.due_at_ms >= received && p.due_at_ms < received + HOUR_MS);
        // Best slot is the last whole hour of the window (received 10:00, best 09:00 next day).
        let received = SUNDAY_MIDNIGHT + DAY_MS + 10 * HOUR_MS;
        let prof = profile_peaking_at(24 + 9, Class::Active);
        let p = plan(
            WebhookType::Next24Hours,
            received,
            Some(&prof),
            &uniform(),
            WHO,
        );
        assert_eq!(p.slot, Some(33));
        assert!(p.due_at_ms >= received + 23 * HOUR_MS && p.due_at_ms < received + DAY_MS);
    }

    #[test]
    fn frequency_optimized_waits_a_week_only_for_fading_contacts() {
        let received = SUNDAY_MIDNIGHT + DAY_MS; // Monday 00:00
        for (class, reach) in [
            (Class::Active, DAY_MS),
            (Class::Evaluating, DAY_MS),
            (Class::Passive, 7 * DAY_MS),
            (Class::Inactive, 7 * DAY_MS),
        ] {
            // Best slot Thursday 18:00: only reachable in a week.
            let prof = profile_peaking_at(3 * 24 + 18, class);
            let p = plan(
                WebhookType::NextWeekFrequencyOptimized,
                received,
                Some(&prof),
                &uniform(),
                WHO,
            );
            assert!(p.due_at_ms < received + reach, "{class}: {}", p.reason);
            assert_eq!(p.slot == Some(90), reach > DAY_MS, "{class}: {}", p.reason);
        }
    }

    /// Planned late (the dispatcher was down): the best hour still ahead in the window, not
    /// one already past; a window already over means now.
    #[test]
    fn planned_late_only_hours_still_ahead_count() {
        let monday = SUNDAY_MIDNIGHT + DAY_MS;
        let received = monday + 8 * HOUR_MS;
        let mut prof = profile_peaking_at(9, Class::Active); // Monday 09:00 best
        prof.scores[22] = 0.3; // Monday 22:00 next
        let at = |now: i64| {
            let mut reason = String::new();
            let (due, slot) = plan_into(
                WebhookType::Next24Hours,
                received,
                now,
                Some(&prof),
                &uniform(),
                WHO,
                &mut reason,
            );
            (due, slot, reason)
        };
        let (due, slot, _) = at(received);
        assert_eq!(slot, Some(9));
        assert!(due >= monday + 9 * HOUR_MS && due < monday + 10 * HOUR_MS);
        let now = monday + 20 * HOUR_MS;
        let (due, slot, reason) = at(now);
        assert_eq!(slot, Some(22), "{reason}");
        assert!(due >= monday + 22 * HOUR_MS && due < monday + 23 * HOUR_MS);
        let now = received + DAY_MS + 5 * MINUTE_MS;
        let (due, slot, reason) = at(now);
        assert_eq!((due, slot), (now, None));
        assert!(
            reason.contains("the window was over when planned"),
            "{reason}"
        );
    }

    #[test]
    fn a_machine_like_contact_has_no_class_to_wait_a_week_for() {
        let received = SUNDAY_MIDNIGHT + DAY_MS;
        let mut prof = profile_peaking_at(3 * 24 + 18, Class::Inactive);
        prof.machine = true;
        let p = plan(
            WebhookType::NextWeekFrequencyOptimized,
            received,
            Some(&prof),
            &uniform(),
            WHO,
        );
        assert!(p.due_at_ms < received + DAY_MS, "{}", p.reason);
        assert!(
            p.reason
                .starts_with("NEXT_WEEK_FREQUENCY_OPTIMIZED gives machine-like contacts the next 24 hours; machine-like contact: "),
            "{}",
            p.reason
        );
    }

    /// Posts arriving at 10:40 for contacts whose best hour is 10:00 are spread over the 20
    /// minutes left, not all due at 10:40.
    #[test]
    fn in_the_hour_of_receipt_minutes_spread_over_what_is_left() {
        let received = SUNDAY_MIDNIGHT + DAY_MS + 10 * HOUR_MS + 40 * MINUTE_MS; // Monday 10:40
        let prof = profile_peaking_at(10, Class::Active);
        let dues: Vec<i64> = (0..1000)
            .map(|i| {
                let contact = format!("c{i}@example.com");
                let who = Subject {
                    contact: &contact,
                    receipt: "r",
                };
                plan(
                    WebhookType::Next24Hours,
                    received,
                    Some(&prof),
                    &uniform(),
                    who,
                )
                .due_at_ms
            })
            .collect();
        let hour_end = received + 20 * MINUTE_MS;
        assert!(dues.iter().all(|d| (received..hour_end).contains(d)));
        let at_receipt = dues.iter().filter(|d| **d == received).count();
        assert!(
            at_receipt < 150,
            "{at_receipt} of 1000 due at the receipt time"
        );
        let minutes: std::collections::HashSet<i64> = dues.iter().map(|d| d / MINUTE_MS).collect();
        assert_eq!(minutes.len(), 20);
    }

    #[test]
    fn cold_contacts_draw_from_the_population_inside_the_window_reproducibly() {
        let received = SUNDAY_MIDNIGHT + 20 * HOUR_MS;
        let mut pop = [0.01; SLOTS];
        pop[7] = 1.0; // Monday 07:00 dominates
        let mut seen = std::collections::HashSet::new();
        for i in 0..200 {
            let contact = format!("c{i}@example.com");
            let who = Subject {
                contact: &contact,
                receipt: "r",
            };
            let p = plan(WebhookType::Next24Hours, received, None, &pop, who);
            assert!(p.due_at_ms >= received && p.due_at_ms < received + DAY_MS);
            assert_eq!(plan(WebhookType::Next24Hours, received, None, &pop, who), p);
            seen.insert(p.slot.unwrap());
            assert!(p.reason.contains("without history"));
        }
        // Mostly the dominant hour, but drawn, not fixed.
        assert!(seen.contains(&7) && seen.len() > 1, "{seen:?}");
        // Minutes are spread across the hour.
        let minutes: std::collections::HashSet<i64> = (0..200)
            .map(|i| {
                let contact = format!("c{i}@example.com");
                let p = plan(
                    WebhookType::Next24Hours,
                    received,
                    None,
                    &pop,
                    Subject {
                        contact: &contact,
                        receipt: "r",
                    },
                );
                (p.due_at_ms / MINUTE_MS) % 60
            })
            .collect();
        assert!(minutes.len() > 30);
    }
}
