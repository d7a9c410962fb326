//! `sendtime gen`: synthetic but realistic engagement data, seeded, for tests and benchmarks.
//!
//! Each contact lives in a time zone, has one or two preferred local reading hours, reads less
//! at weekends, and opens a share of the campaigns sent to it; some contacts go quiet (the
//! inactive tail) and a few are machines that open everything within seconds, at any hour.
//! The same seed gives the same files on every machine and, unless its rules change, every
//! version: the generator uses its own SplitMix64 stream rather than a library RNG whose
//! streams may change.

use std::path::Path;

use anyhow::Context;
use polars::prelude::*;
use ulid::Ulid;

use crate::datasets::contacts::{self, Contacts};
use crate::datasets::events::{self, Kind, PartColumns};
use crate::store::Dataset;
use crate::time::{DAY_MS, HOUR_MS, MINUTE_MS};

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub contacts: usize,
    pub events: usize,
    pub seed: u64,
    /// Last day covered (events span the year before it), epoch ms.
    pub end_ms: i64,
    /// Each contact opens at its own habitual hours; without, every open's hour is drawn from
    /// the whole population's (so a contact's history says nothing of its own).
    pub habits: bool,
}

/// Rows per part file.
const PART_ROWS: usize = 2_000_000;

/// The largest world `gen` makes: its contacts are all in memory (about 80 bytes each), and
/// each contact's year of events at once.
const MAX_CONTACTS: usize = 20_000_000;
const MAX_EVENTS: usize = 2_000_000_000;
const MAX_EVENTS_PER_CONTACT: usize = 10_000;

/// Refuse sizes `gen` cannot make on a machine (a typo of a few zeros would take all its
/// memory), before anything is written.
pub fn check_sizes(contacts: usize, events: Option<usize>) -> anyhow::Result<()> {
    anyhow::ensure!(contacts > 0, "--contacts must be at least 1");
    anyhow::ensure!(
        contacts <= MAX_CONTACTS,
        "--contacts {contacts} is more than gen makes ({MAX_CONTACTS})"
    );
    if let Some(events) = events {
        anyhow::ensure!(
            events <= MAX_EVENTS && events <= contacts * MAX_EVENTS_PER_CONTACT,
            "--events {events} is more than gen makes: at most {MAX_EVENTS}, and \
             {MAX_EVENTS_PER_CONTACT} a contact on average"
        );
    }
    Ok(())
}

/// The seeded random stream.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5851_f42d_4c95_7f2d)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.f64().max(1e-12);
        let v = self.f64();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// One synthetic contact's habits.
struct Persona {
    utc_offset_h: i64,
    peaks: [f64; 2],
    second_peak_share: f64,
    weekend_factor: f64,
    activity: f64,
    machine: bool,
    /// Engagement stops after this instant (the inactive tail), if set.
    quits_at: Option<i64>,
    clicks: f64,
}

impl Persona {
    fn draw(rng: &mut Rng, start: i64, end: i64) -> Self {
        // Time zones weighted toward Europe and the Americas.
        const ZONES: [i64; 8] = [-8, -6, -5, -5, 0, 1, 1, 2];
        // Reading habits in local time: early morning, commute, lunch, evening.
        const HABITS: [f64; 6] = [6.5, 8.0, 9.5, 12.5, 19.0, 21.0];
        let machine = rng.f64() < 0.005;
        Self {
            utc_offset_h: ZONES[rng.below(ZONES.len() as u64) as usize],
            peaks: [
                HABITS[rng.below(6) as usize] + rng.normal() * 0.7,
                HABITS[rng.below(6) as usize] + rng.normal() * 0.7,
            ],
            second_peak_share: rng.f64() * 0.5,
            weekend_factor: 0.3 + rng.f64() * 0.6,
            activity: (rng.normal() * 0.9).exp(),
            machine,
            quits_at: (rng.f64() < 0.2).then(|| start + (rng.f64() * (end - start) as f64) as i64),
            clicks: 0.05 + rng.f64() * 0.2,
        }
    }

    /// When this contact opens a mail delivered at `delivered`, if at all.
    fn open_after(&self, rng: &mut Rng, delivered: i64) -> i64 {
        if self.machine {
            return delivered + rng.below(30_000) as i64;
        }
        let peak = if rng.f64() < self.second_peak_share {
            self.peaks[1]
        } else {
            self.peaks[0]
        };
        let local_hour = peak + rng.normal() * 1.0;
        // The first time after delivery that the contact's local clock shows that hour
        // (weekends are skipped with probability 1 - weekend_factor).
        let offset = self.utc_offset_h * HOUR_MS;
        let mut day = (delivered + offset).div_euclid(DAY_MS);
        loop {
            let at = day * DAY_MS + (local_hour * HOUR_MS as f64) as i64 - offset;
            let weekday = (day + 3).rem_euclid(7);
            let weekend = weekday >= 5;
            if at > delivered && (!weekend || rng.f64() < self.weekend_factor) {
                return at;
            }
            day += 1;
        }
    }
}

/// The contacts' habits: the generator's first draws, so the same spec gives them back.
fn personas(rng: &mut Rng, contacts: usize, start: i64, end: i64) -> Vec<Persona> {
    (0..contacts)
        .map(|_| Persona::draw(rng, start, end))
        .collect()
}

/// How a synthetic contact answers a mail sent at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    /// Send time matters: a mail is opened when it arrives while the contact reads, with a
    /// chance in proportion to how likely it reads at that local time (its habits' density).
    Habit,
    /// Send time does not matter: the same chance whenever it arrives.
    Flat,
    /// Send time matters as it does for everyone (the world `--no-habits` generates): the
    /// chance follows the whole population's reading at that time, the contact's own habits
    /// aside, so that the population's best hours are every contact's.
    Population,
}

/// Chance of opening a mail that arrives at the contact's likeliest reading time.
const OPEN_AT_PEAK: f64 = 0.7;
/// The chance under [`Response::Flat`].
const OPEN_FLAT: f64 = 0.3;

impl Persona {
    /// How likely the contact reads at `at`, against its likeliest time (0 to 1): its two
    /// habits as normal curves of an hour around their local hours, less at weekends.
    fn reading(&self, at: i64) -> f64 {
        self.reading_against(at, self.best_density())
    }

    /// Its habits' density at local `hour`.
    fn density(&self, hour: f64) -> f64 {
        let near = |peak: f64| {
            let d = (hour - peak).rem_euclid(24.0);
            let d = d.min(24.0 - d);
            (-0.5 * d * d).exp()
        };
        (1.0 - self.second_peak_share) * near(self.peaks[0])
            + self.second_peak_share * near(self.peaks[1])
    }

    /// The density at its likeliest time of day (to a quarter hour).
    fn best_density(&self) -> f64 {
        (0..96)
            .map(|q| self.density(q as f64 / 4.0))
            .fold(0.0, f64::max)
            .max(1e-12)
    }

    /// [`Persona::reading`] with its best density given.
    fn reading_against(&self, at: i64, best: f64) -> f64 {
        let local = at + self.utc_offset_h * HOUR_MS;
        let hour = local.rem_euclid(DAY_MS) as f64 / HOUR_MS as f64;
        let weekend = (local.div_euclid(DAY_MS) + 3).rem_euclid(7) >= 5;
        self.density(hour) / best * if weekend { self.weekend_factor } else { 1.0 }
    }
}

/// Contacts whose readings make the population's: a sample, enough for a mean to a few
/// thousandths, so a world of millions is not read 168 times over.
const POPULATION_SAMPLE: usize = 10_000;

/// The population's reading in each quarter hour of the week (UTC, from Thursday 00:00 as
/// epoch time does), against its likeliest: the mean of its readers' [`Persona::reading`].
fn population_reading(personas: &[Persona]) -> Vec<f64> {
    let readers: Vec<(&Persona, f64)> = (personas.iter())
        .filter(|p| !p.machine)
        .take(POPULATION_SAMPLE)
        .map(|p| (p, p.best_density()))
        .collect();
    let quarter = HOUR_MS / 4;
    let mut week: Vec<f64> = (0..WEEK_QUARTERS)
        .map(|q| {
            let at = q * quarter + quarter / 2;
            let sum: f64 = readers
                .iter()
                .map(|(p, best)| p.reading_against(at, *best))
                .sum();
            sum / readers.len().max(1) as f64
        })
        .collect();
    let best = week.iter().copied().fold(0.0, f64::max).max(1e-12);
    week.iter_mut().for_each(|r| *r /= best);
    week
}

/// Quarter hours in a week.
const WEEK_QUARTERS: i64 = 7 * 24 * 4;

/// Draw each synthetic contact's response to the mails sent to it: `sends` are (HubSpot id,
/// send time, a per-send seed), for contacts generated with `spec`. Returns the events: an
/// open within half an hour of the send, and sometimes a click a minute after it.
pub fn respond(
    spec: Spec,
    sends: &[(i64, i64, u64)],
    response: Response,
) -> anyhow::Result<Vec<events::Event>> {
    let responder = Responder::new(spec, response);
    let mut out = Vec::new();
    for &(id, sent, seed) in sends {
        out.extend(responder.respond(id, sent, seed).with_context(|| {
            format!(
                "contact {id} was not generated with --contacts {}: respond with the spec that generated the data",
                spec.contacts
            )
        })?);
    }
    Ok(out)
}

/// The contacts of one generated world, answering mails one at a time (the demo's HubSpot
/// stand-in answers each send as it is made).
pub struct Responder {
    seed: u64,
    personas: Vec<Persona>,
    response: Response,
    /// With [`Response::Population`], its reading in each quarter hour of the week.
    population: Vec<f64>,
}

impl Responder {
    /// The contacts generated with `spec` (their habits are the generator's first draws).
    pub fn new(spec: Spec, response: Response) -> Self {
        let start = spec.end_ms - 365 * DAY_MS;
        let personas = personas(&mut Rng::new(spec.seed), spec.contacts, start, spec.end_ms);
        let population = match response {
            Response::Population => population_reading(&personas),
            Response::Habit | Response::Flat => Vec::new(),
        };
        Responder {
            seed: spec.seed,
            personas,
            response,
            population,
        }
    }

    /// The chance that `persona` opens a mail sent at `sent`.
    fn chance(&self, persona: &Persona, sent: i64) -> f64 {
        match self.response {
            Response::Flat => OPEN_FLAT,
            Response::Habit => OPEN_AT_PEAK * persona.reading(sent),
            Response::Population => {
                let quarter = (sent.rem_euclid(WEEK_QUARTERS * HOUR_MS / 4)) / (HOUR_MS / 4);
                OPEN_AT_PEAK * self.population[quarter as usize]
            }
        }
    }

    /// Contact `id`'s events in answer to a mail sent at `sent` (`seed` differs per send);
    /// `None` for an id the world does not have.
    pub fn respond(&self, id: i64, sent: i64, seed: u64) -> Option<Vec<events::Event>> {
        let persona = self.personas.get(usize::try_from(id - 1).ok()?)?;
        let mut out = Vec::new();
        let mut rng = Rng::new(self.seed ^ seed);
        let event = |kind, at_ms, filtered| events::Event {
            event_id: None,
            contact_id: Some(id),
            email: None,
            kind,
            at_ms,
            filtered,
            source: "gen-respond".into(),
        };
        if persona.quits_at.is_some_and(|q| q < sent) {
            return Some(out);
        }
        // A machine (a security scanner) opens every mail within seconds, whenever it comes,
        // and HubSpot marks half such opens as filtered, as in the generated history (it
        // opened none, so its sends always counted as unread). Not in a world without habits:
        // its history has it read at people's times, as everyone (an audit).
        if persona.machine && self.response != Response::Population {
            let at = sent + rng.below(30_000) as i64;
            out.push(event(Kind::Open, at, rng.f64() < 0.5));
            return Some(out);
        }
        if rng.f64() >= self.chance(persona, sent) {
            return Some(out);
        }
        let open_at = sent + rng.below(30 * MINUTE_MS as u64) as i64;
        out.push(event(
            Kind::Open,
            open_at,
            persona.machine && rng.f64() < 0.5,
        ));
        if rng.f64() < persona.clicks {
            out.push(event(Kind::Click, open_at + MINUTE_MS, false));
        }
        Some(out)
    }
}

/// Generate into `{out}/events/` and `{out}/contacts/`. Returns the number of events written.
pub fn generate(out: &Path, spec: Spec) -> anyhow::Result<usize> {
    check_sizes(spec.contacts, Some(spec.events))?;
    let end = spec.end_ms;
    let start = end - 365 * DAY_MS;
    let dictionary = contacts::dataset(out)?;
    let events_ds = events::dataset(out)?;
    // The events too: a run stopped half way leaves contacts and some events, which a second
    // run would add to, twice over (an audit).
    anyhow::ensure!(
        dictionary.parts()?.is_empty() && events_ds.parts()?.is_empty(),
        "{} already holds data (a run stopped half way leaves some): generate into an empty folder",
        out.display()
    );
    let mut rng = Rng::new(spec.seed);
    let personas = personas(&mut rng, spec.contacts, start, end);
    let total_activity: f64 = personas
        .iter()
        .map(|p| p.activity * if p.machine { 40.0 } else { 1.0 })
        .sum();

    // Campaigns: sent every Tuesday and Thursday at 14:00 UTC, with a jitter of an hour.
    let mut sends = Vec::new();
    let mut day = start.div_euclid(DAY_MS);
    while day * DAY_MS < end {
        let weekday = (day + 3).rem_euclid(7);
        if weekday == 1 || weekday == 3 {
            let sent = day * DAY_MS + 14 * HOUR_MS + rng.below(HOUR_MS as u64) as i64;
            if sent < end - MINUTE_MS {
                sends.push(sent);
            }
        }
        day += 1;
    }

    // Contact `c` is HubSpot id `c + 1`, known by id only. Written first, as every writer of
    // events writes the contacts they name: events past the dictionary, which a run stopped
    // before it left, stopped `predict` (an audit).
    let dict = Contacts::new(
        (1..=spec.contacts).map(|id| format!("#{id}")).collect(),
        (1..=spec.contacts as i64).map(Some).collect(),
    );
    contacts::write(out, &dict, 0..spec.contacts)?;

    let mut part = PartBuilder::default();
    let mut written = 0usize;
    for (c, p) in personas.iter().enumerate() {
        let share = p.activity * if p.machine { 40.0 } else { 1.0 } / total_activity;
        // Stochastic rounding keeps the total on target when shares are tiny.
        let expected = share * spec.events as f64;
        let n = expected.floor() as usize + usize::from(rng.f64() < expected.fract());
        let mut rows: Vec<(i64, Kind)> = Vec::with_capacity(n + 2);
        for _ in 0..n {
            let sent = sends[rng.below(sends.len() as u64) as usize];
            let kind = match rng.f64() {
                x if x < 0.25 => Kind::Delivered,
                x if x < 0.25 + 0.75 * p.clicks => Kind::Click,
                _ => Kind::Open,
            };
            let at = if kind == Kind::Delivered {
                sent + rng.below(MINUTE_MS as u64) as i64
            } else if spec.habits {
                p.open_after(&mut rng, sent)
            } else {
                personas[rng.below(personas.len() as u64) as usize].open_after(&mut rng, sent)
            };
            // Quiet contacts stop engaging (deliveries go on), and an open after the end
            // has not happened yet: the mail is only delivered.
            if kind != Kind::Delivered && (at >= end || p.quits_at.is_some_and(|q| at > q)) {
                rows.push((sent, Kind::Delivered));
                continue;
            }
            rows.push((at, kind));
        }
        rows.sort_unstable_by_key(|r| r.0);
        for (at, kind) in rows {
            part.push(c as u32, kind, at, p.machine && rng.f64() < 0.5);
        }
        if part.len() >= PART_ROWS {
            written += part.flush(&events_ds)?;
        }
    }
    written += part.flush(&events_ds)?;
    Ok(written)
}

/// Columns of one events part, in the events schema.
#[derive(Default)]
struct PartBuilder {
    contact: Vec<u32>,
    kind: Vec<u8>,
    at: Vec<i64>,
    filtered: Vec<bool>,
}

impl PartBuilder {
    fn len(&self) -> usize {
        self.contact.len()
    }

    fn push(&mut self, contact: u32, kind: Kind, at: i64, filtered: bool) {
        self.contact.push(contact);
        self.kind.push(kind as u8);
        self.at.push(at);
        self.filtered.push(filtered);
    }

    fn flush(&mut self, ds: &Dataset) -> anyhow::Result<usize> {
        let n = self.len();
        if n == 0 {
            return Ok(0);
        }
        let contact_ids: Vec<i64> = self.contact.iter().map(|c| *c as i64 + 1).collect();
        let mut df = PartColumns {
            contact: std::mem::take(&mut self.contact),
            event_id: Column::full_null("".into(), n, &DataType::String),
            contact_id: Column::new("".into(), contact_ids),
            email: Column::full_null("".into(), n, &DataType::String),
            kind: std::mem::take(&mut self.kind),
            at_ms: std::mem::take(&mut self.at),
            filtered: std::mem::take(&mut self.filtered),
            source: Column::new_scalar("".into(), Scalar::from(PlSmallStr::from("gen")), n),
        }
        .into_frame()?;
        ds.write_part(Ulid::generate(), &mut df)
            .context("cannot write generated events")?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_data_and_the_events_schema() {
        let spec = Spec {
            contacts: 50,
            events: 2000,
            seed: 7,
            end_ms: 1_700_000_000_000,
            habits: true,
        };
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let n = generate(a.path(), spec).unwrap();
        assert!(n > 1500 && n < 2500, "{n}");
        generate(b.path(), spec).unwrap();
        let read = |d: &Path| events::dataset(d).unwrap().read_all().unwrap().remove(0).1;
        let (da, db) = (read(a.path()), read(b.path()));
        assert!(da.equals_missing(&db));
        // Same columns and types as imported events.
        let imported = tempfile::tempdir().unwrap();
        crate::datasets::events::append(
            imported.path(),
            &[crate::datasets::events::Event {
                event_id: None,
                contact_id: Some(1),
                email: None,
                kind: Kind::Open,
                at_ms: 0,
                filtered: false,
                source: "x".into(),
            }],
        )
        .unwrap();
        assert_eq!(read(imported.path()).schema(), da.schema());
    }

    /// Without habits (`gen --respond --no-habits`), a mail's chance of an open is the
    /// population's at its time, the same for every reader, and the population's best hour
    /// is every reader's: with its own habits' chance, the responses showed habits the
    /// history never had. A machine does too (the history has it read at people's times),
    /// half its opens filtered: it opened every mail within seconds.
    #[test]
    fn without_habits_every_reader_answers_as_the_population() {
        let end_ms = 1_700_000_000_000;
        let spec = Spec {
            contacts: 2000,
            events: 0,
            seed: 9,
            end_ms,
            habits: false,
        };
        let population = Responder::new(spec, Response::Population);
        let habit = Responder::new(spec, Response::Habit);
        let readers: Vec<&Persona> = (population.personas.iter())
            .filter(|p| !p.machine)
            .collect();
        let week: Vec<i64> = (0..7 * 24)
            .map(|h| end_ms - 8 * DAY_MS + h * HOUR_MS)
            .collect();
        let mut best = (0, 0.0);
        let mut worst = (0, 1.0);
        let mut habits_differ = false;
        for &at in &week {
            let chance = population.chance(readers[0], at);
            assert!(readers.iter().all(|p| population.chance(p, at) == chance));
            let own: Vec<f64> = readers.iter().map(|p| habit.chance(p, at)).collect();
            habits_differ |= own.iter().any(|&c| (c - own[0]).abs() > 0.1);
            if chance > best.1 {
                best = (at, chance);
            }
            if chance < worst.1 {
                worst = (at, chance);
            }
        }
        assert!(habits_differ);
        assert!(best.1 > 0.65 && worst.1 < 0.35, "{best:?} {worst:?}");
        // At each hour, the readers' mean reading then, against the week's best: a table
        // looked up at another time of the week (an hour or a day off) would differ.
        let mean =
            |at: i64| readers.iter().map(|p| p.reading(at)).sum::<f64>() / readers.len() as f64;
        let means: Vec<f64> = week.iter().map(|&at| mean(at)).collect();
        let top = means.iter().copied().fold(0.0, f64::max);
        for (&at, m) in week.iter().zip(&means) {
            let chance = population.chance(readers[0], at) / OPEN_AT_PEAK;
            assert!(
                (chance - m / top).abs() < 0.05,
                "{at}: {chance} {}",
                m / top
            );
        }
        // The draws follow the chance: opens at the best hour outnumber the worst's.
        let ids = 1..=spec.contacts as i64;
        let opened = |at: i64| {
            (ids.clone())
                .filter(|&id| !population.personas[id as usize - 1].machine)
                .filter(|&id| !population.respond(id, at, id as u64).unwrap().is_empty())
                .count()
        };
        let (at_best, at_worst) = (opened(best.0), opened(worst.0));
        assert!(at_best > 2 * at_worst + 100, "{at_best} {at_worst}");
        let machine = (population.personas.iter())
            .position(|p| p.machine && p.quits_at.is_none_or(|q| q > end_ms))
            .expect("a machine among 2,000 contacts") as i64
            + 1;
        let sends = (1..=400).map(|seed| population.respond(machine, best.0, seed).unwrap());
        let opens: Vec<_> = sends.flatten().filter(|e| e.kind == Kind::Open).collect();
        let filtered = opens.iter().filter(|e| e.filtered).count();
        let expected = 400.0 * best.1;
        assert!(
            (opens.len() as f64 - expected).abs() < 50.0,
            "{} {expected}",
            opens.len()
        );
        assert!(filtered > opens.len() / 4 && filtered < 3 * opens.len() / 4);
        let late = opens.iter().filter(|e| e.at_ms - best.0 > 30_000).count();
        assert!(late > opens.len() / 2, "{late}");
    }

    /// The data end at `end_ms`, as an export would: opens that would come later are left
    /// out, not piled into its last millisecond. This end is a Tuesday at 22:13 UTC, hours
    /// after that day's campaign.
    #[test]
    fn nothing_lies_at_or_after_the_end() {
        let end_ms = 1_700_000_000_000;
        let spec = Spec {
            contacts: 300,
            events: 30_000,
            seed: 3,
            end_ms,
            habits: true,
        };
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path(), spec).unwrap();
        let df = events::dataset(dir.path()).unwrap().read_all().unwrap();
        let at: Vec<i64> = df
            .iter()
            .flat_map(|(_, f)| {
                let at = f.column(events::col::AT).unwrap();
                let at = at.cast(&DataType::Int64).unwrap();
                at.i64().unwrap().into_no_null_iter().collect::<Vec<_>>()
            })
            .collect();
        let last_hour = at.iter().filter(|&&t| t >= end_ms - HOUR_MS).count();
        let hour_before = at
            .iter()
            .filter(|&&t| (end_ms - 2 * HOUR_MS..end_ms - HOUR_MS).contains(&t))
            .count();
        assert!(at.len() > 20_000, "{} events", at.len());
        assert!(at.iter().all(|&t| t < end_ms));
        assert!(
            last_hour <= 2 * hour_before + 10,
            "{last_hour} {hour_before}"
        );
    }
}
