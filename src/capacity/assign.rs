//! Placing a batch of new receipts in what their connectors have left, greedily by regret:
//! the receipts that lose most by leaving their preferred hour choose first, and a receipt
//! whose hour is full takes its next-best hour with room inside its window. Only when the
//! whole window is full does it go past it.

use rayon::prelude::*;

use super::{Cost, Ledger};
use crate::local_time::{Local, Masks, WHOLE_HOUR};
use crate::model::plan::{Move, Preference, Window, minute_in};
use crate::time::MINUTE_MS;

/// One receipt to place.
#[derive(Debug, Clone)]
pub struct Request {
    /// Its connector's ledger (an index into the ledgers given to [`assign`]).
    pub ledger: usize,
    /// What sending it costs ([`super::cost`]).
    pub cost: Cost,
    /// Its window; `None` for the types that go on the next tick, from `from`.
    pub window: Option<Window>,
    pub from: i64,
    /// The latest it may go, whatever the capacity: a workflow action's contact is moved on by
    /// HubSpot when its block expires.
    pub deadline: Option<i64>,
    /// Its preferred candidate hour and next choices (none: no minute of the window is open
    /// to it).
    pub preference: Option<Preference>,
    /// [`crate::model::plan::minute_hash`] of its contact.
    pub hash: u64,
    /// Its quiet hours and zone, when it has them.
    pub local: Option<Local>,
}

/// Where a receipt went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub due: i64,
    /// The candidate hour of its window it went in (none: outside the window, or no window).
    pub k: Option<usize>,
    pub moved: Move,
}

/// Place every request, booking each in its ledger. `rank(i, out)` puts request `i`'s
/// candidate hours in `out`, best first; it is called only for receipts whose preferred hour
/// and next choices are full (it works the contact's profile out again).
pub fn assign(
    requests: &[Request],
    ledgers: &mut [Ledger],
    masks: &Masks,
    mut rank: impl FnMut(usize, &mut Vec<usize>),
) -> Vec<Placed> {
    // Next-tick receipts have no choice: they go first. Then by regret, largest first.
    let mut order: Vec<(f64, u32)> = requests
        .par_iter()
        .enumerate()
        .map(|(i, r)| match (r.window, r.preference) {
            (None, _) => (f64::INFINITY, i as u32),
            (Some(_), p) => (p.map_or(0.0, |p| p.regret), i as u32),
        })
        .collect();
    order.par_sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut placed = vec![
        Placed {
            due: 0,
            k: None,
            moved: Move::None,
        };
        requests.len()
    ];
    let mut ranked = Vec::new();
    for (_, i) in order {
        let i = i as usize;
        let r = &requests[i];
        let ledger = &mut ledgers[r.ledger];
        let allowed = |hour: i64| masks.allowed(r.local, hour);
        let mut p = place(r, ledger, &allowed, || {
            ranked.clear();
            rank(i, &mut ranked);
            &ranked
        });
        if let Some(deadline) = r.deadline
            && p.due > deadline
        {
            p.due = deadline.max(r.from);
        }
        ledger.book(p.due, r.cost);
        placed[i] = p;
    }
    placed
}

fn place<'a>(
    r: &Request,
    ledger: &Ledger,
    allowed: &dyn Fn(i64) -> u64,
    ranked: impl FnOnce() -> &'a Vec<usize>,
) -> Placed {
    let outside = |due: i64, moved: Move| Placed {
        due,
        k: None,
        moved,
    };
    // The first minute with room from `from` on (outside quiet hours when `quiet`), as a move
    // of its kind; with none in the search, at once, as an overflow (it was due at the end of
    // its window, a week on for a weekly type, while its reason said "at once"; an audit).
    let first_fit = |from: i64, quiet: bool, moved: Move| {
        ledger
            .first_fit(
                from,
                r.cost,
                |h| if quiet { allowed(h) } else { WHOLE_HOUR },
            )
            .map_or(outside(r.from, Move::Overflow), |due| outside(due, moved))
    };
    let Some(window) = r.window else {
        let placed = first_fit(r.from, false, Move::Delayed);
        return match placed.moved {
            Move::Delayed if placed.due.div_euclid(MINUTE_MS) <= r.from.div_euclid(MINUTE_MS) => {
                outside(placed.due, Move::None)
            }
            _ => placed,
        };
    };
    if window.hours == 0 {
        return first_fit(window.from, true, Move::Late);
    }
    let Some(preference) = r.preference else {
        return first_fit(window.end, true, Move::Quiet);
    };
    let preferred = preference.k;
    if let Some(due) = in_hour(r, ledger, &window, preferred, allowed) {
        return Placed {
            due,
            k: Some(preferred),
            moved: Move::None,
        };
    }
    // Its next choices; when they are full too, every hour of its window, ranked.
    let others = preference
        .next()
        .chain(std::iter::once_with(ranked).flat_map(|all| all.iter().copied()));
    for k in others {
        if let Some(due) = in_hour(r, ledger, &window, k, allowed) {
            return Placed {
                due,
                k: Some(k),
                moved: Move::Capacity { preferred },
            };
        }
    }
    first_fit(window.end, true, Move::Spilled)
}

/// The first minute of candidate `k` with room, from the contact's own minute on (wrapping
/// round the hour): its due time.
fn in_hour(
    r: &Request,
    ledger: &Ledger,
    window: &Window,
    k: usize,
    allowed: &dyn Fn(i64) -> u64,
) -> Option<i64> {
    let hour = window.hour(k);
    if !ledger.hour_fits(hour, r.cost) {
        return None;
    }
    let open = window.minutes(k) & allowed(hour);
    if open == 0 {
        return None;
    }
    let start = minute_in(open, r.hash);
    let from_start = open & !((1u64 << start) - 1);
    let before = open & ((1u64 << start) - 1);
    for mut mask in [from_start, before] {
        while mask != 0 {
            let m = mask.trailing_zeros();
            let due = window.due(k, m);
            if ledger.fits(due, r.cost) {
                return Some(due);
            }
            mask &= mask - 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use chrono_tz::Tz;

    use super::*;
    use crate::capacity::{CALL, Capacity};
    use crate::time::HOUR_MS;

    /// A workflow action's contact goes by its deadline even when capacity has no room then:
    /// HubSpot would move it on without us after.
    #[test]
    fn a_deadline_wins_over_a_full_day() {
        let mut ledgers = vec![Ledger::new(Capacity {
            per_minute: 10 * CALL,
            per_day: Some(CALL),
            day_zone: Tz::UTC,
        })];
        ledgers[0].book(0, Cost::Call);
        let request = |deadline| Request {
            ledger: 0,
            cost: Cost::Call,
            window: None,
            from: HOUR_MS,
            deadline,
            preference: None,
            hash: 0,
            local: None,
        };
        let masks = Masks::build([], 0, 1);
        let placed = assign(
            &[request(None), request(Some(12 * HOUR_MS))],
            &mut ledgers,
            &masks,
            |_, _| {},
        );
        assert_eq!(placed[0].due, 24 * HOUR_MS);
        assert_eq!(placed[1].due, 12 * HOUR_MS);
    }

    /// With every day of the search full, a contact is planned at once and marked so (it was
    /// planned at once as if the next tick had room: no count, no warning, "on the next tick").
    #[test]
    fn no_room_in_the_whole_search_is_an_overflow() {
        use crate::capacity::ledger::SEARCH_DAYS;
        let mut ledgers = vec![Ledger::new(Capacity {
            per_minute: 10 * CALL,
            per_day: Some(CALL),
            day_zone: Tz::UTC,
        })];
        let day = 24 * HOUR_MS;
        let request = Request {
            ledger: 0,
            cost: Cost::Call,
            window: None,
            from: HOUR_MS,
            deadline: None,
            preference: None,
            hash: 0,
            local: None,
        };
        let masks = Masks::build([], 0, 1);
        // The search runs 400 days from the hour `from` is in: into day 400's first hour.
        for d in 0..=SEARCH_DAYS {
            ledgers[0].book(d * day, Cost::Call);
        }
        let placed = assign(
            std::slice::from_ref(&request),
            &mut ledgers,
            &masks,
            |_, _| {},
        );
        assert_eq!((placed[0].due, placed[0].moved), (HOUR_MS, Move::Overflow));
        // With a week's window every hour of which is full: at once too, not at its end.
        let window = crate::model::plan::window(
            crate::config::WebhookType::NextWeek,
            HOUR_MS,
            HOUR_MS,
            None,
            None,
        )
        .unwrap();
        for d in SEARCH_DAYS + 1..=SEARCH_DAYS + 8 {
            ledgers[0].book(d * day, Cost::Call);
        }
        let who = crate::model::plan::Subject {
            contact: "ada@example.com",
            receipt: "01J0000000000000000000000",
        };
        let population = [1.0 / crate::time::SLOTS as f64; crate::time::SLOTS];
        let windowed = Request {
            window: Some(window),
            preference: crate::model::plan::prefer(&window, None, &population, who, |k| {
                window.minutes(k)
            }),
            ..request.clone()
        };
        let placed = assign(&[windowed], &mut ledgers, &masks, |_, o| {
            o.extend(0..window.hours)
        });
        assert_eq!((placed[0].due, placed[0].moved), (HOUR_MS, Move::Overflow));
        // Room at the search's end: it goes then, as delayed.
        let mut ledgers = vec![Ledger::new(ledgers[0].capacity)];
        for d in 0..SEARCH_DAYS {
            ledgers[0].book(d * day, Cost::Call);
        }
        let placed = assign(&[request], &mut ledgers, &masks, |_, _| {});
        assert_eq!(
            (placed[0].due, placed[0].moved),
            (SEARCH_DAYS * day, Move::Delayed)
        );
    }
}
