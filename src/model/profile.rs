//! Per-contact engagement profiles: what the model knows about each contact, and the
//! population profile that stands in for what it does not.
//!
//! Counts are kept decayed to a fixed reference day, so adding new events is a plain sum (the
//! same event always adds the same amount) and re-basing to a later day is one multiplication;
//! that is what lets profiles be updated incrementally instead of recomputed from all history.

use std::fmt;

use super::{ModelConfig, Params, Thresholds};
use crate::events::{Kind, SLOTS};

/// Half-lives of the two rate trackers that tell fading engagement from steady engagement.
const FAST_HALF_LIFE: f64 = 14.0;
const SLOW_HALF_LIFE: f64 = 365.0;
/// Weight of a uniform floor mixed into the population profile so no slot is impossible.
const UNIFORM_FLOOR: f64 = 0.01;

/// Engagement class (DESIGN §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Too little history to judge.
    Evaluating,
    /// Opened or clicked recently, at its usual pace.
    Active,
    /// Engagement fading against the contact's own baseline.
    Passive,
    /// No opens or clicks for a long time.
    Inactive,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Evaluating => "evaluating",
            Class::Active => "active",
            Class::Passive => "passive",
            Class::Inactive => "inactive",
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Additive per-contact statistics (as of the reference day).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Opens and clicks, not filtered, undecayed.
    pub engagements: u32,
    /// Distinct days with an engagement (approximate across separately imported parts).
    pub active_days: u32,
    pub first_day: i32,
    pub last_day: i32,
    /// Engagements decayed with 14- and 365-day half-lives.
    pub fast: f32,
    pub slow: f32,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            engagements: 0,
            active_days: 0,
            first_day: i32::MAX,
            last_day: i32::MIN,
            fast: 0.0,
            slow: 0.0,
        }
    }
}

impl Stats {
    /// Combine two partial statistics of one contact.
    pub fn merge(&mut self, o: &Stats) {
        self.engagements += o.engagements;
        self.active_days += o.active_days;
        self.first_day = self.first_day.min(o.first_day);
        self.last_day = self.last_day.max(o.last_day);
        self.fast += o.fast;
        self.slow += o.slow;
    }
}

/// What the model says about one contact at one moment.
#[derive(Debug, Clone)]
pub struct Profile {
    pub class: Class,
    /// Probability of engaging in each hour-of-week slot (sums to 1).
    pub scores: [f64; SLOTS],
    pub engagements: u32,
    /// Last engagement, days since the epoch (None: never).
    pub last_day: Option<i32>,
    /// Machine-like volume or cadence: not learned from, treated as cold.
    pub machine: bool,
}

/// Profiles of every contact in the contact dictionary, decayed to `reference_day`.
#[derive(Debug, Clone)]
pub struct Profiles {
    pub config: ModelConfig,
    pub reference_day: i32,
    /// Per contact, decayed click-weighted engagement per slot.
    pub weights: Vec<[f32; SLOTS]>,
    pub stats: Vec<Stats>,
    /// Normalised population profile (machines excluded), mixed with a uniform floor.
    pub population: [f64; SLOTS],
    /// Share of the population's engagement on each weekday (Monday first).
    pub weekdays: [f64; 7],
    decay: DecayTables,
    prev_day: Vec<i32>,
}

/// `0.5^(age / half_life)` for ages in whole days, precomputed for the hot loop.
#[derive(Debug, Clone)]
struct DecayTables {
    model: Vec<f32>,
    fast: Vec<f32>,
    slow: Vec<f32>,
}

const TABLE_DAYS: usize = 20 * 366;

impl DecayTables {
    fn new(half_life: f64) -> Self {
        let table = |hl: f64| {
            (0..TABLE_DAYS)
                .map(|d| 0.5f64.powf(d as f64 / hl) as f32)
                .collect()
        };
        Self {
            model: table(half_life),
            fast: table(FAST_HALF_LIFE),
            slow: table(SLOW_HALF_LIFE),
        }
    }
}

fn lookup(table: &[f32], age: i32, half_life: f64) -> f32 {
    match usize::try_from(age) {
        Ok(a) if a < table.len() => table[a],
        Ok(_) => 0.0,
        // Events after the reference day weigh more than 1: exact, and rare.
        Err(_) => 0.5f64.powf(age as f64 / half_life) as f32,
    }
}

impl Profiles {
    /// Empty profiles for `contacts` contacts, decayed to `reference_day`.
    pub fn new(config: ModelConfig, contacts: usize, reference_day: i32) -> Self {
        Self {
            config,
            reference_day,
            weights: vec![[0.0; SLOTS]; contacts],
            stats: vec![Stats::default(); contacts],
            population: [1.0 / SLOTS as f64; SLOTS],
            weekdays: [1.0 / 7.0; 7],
            decay: DecayTables::new(config.params.half_life_days),
            prev_day: vec![i32::MIN; contacts],
        }
    }

    pub fn len(&self) -> usize {
        self.weights.len()
    }

    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// Make room for contacts added to the dictionary since.
    pub fn grow(&mut self, contacts: usize) {
        if contacts > self.weights.len() {
            self.weights.resize(contacts, [0.0; SLOTS]);
            self.stats.resize(contacts, Stats::default());
            self.prev_day.resize(contacts, i32::MIN);
        }
    }

    /// Add one event. The hot loop of profile building: no allocation, no hashing.
    #[inline]
    pub fn add(&mut self, contact: u32, kind: u8, slot: u8, day: i32, filtered: bool) {
        let weight = match kind {
            k if k == Kind::Open as u8 => 1.0,
            k if k == Kind::Click as u8 => self.config.params.click_weight as f32,
            _ => return,
        };
        if filtered || slot as usize >= SLOTS {
            return;
        }
        let c = contact as usize;
        if c >= self.weights.len() {
            self.grow(c + 1);
        }
        let age = self.reference_day - day;
        let hl = self.config.params.half_life_days;
        self.weights[c][slot as usize] += weight * lookup(&self.decay.model, age, hl);
        let s = &mut self.stats[c];
        s.engagements += 1;
        if self.prev_day[c] != day {
            s.active_days += 1;
            self.prev_day[c] = day;
        }
        s.first_day = s.first_day.min(day);
        s.last_day = s.last_day.max(day);
        s.fast += lookup(&self.decay.fast, age, FAST_HALF_LIFE);
        s.slow += lookup(&self.decay.slow, age, SLOW_HALF_LIFE);
    }

    /// Add another set of profiles (same reference day and parameters) into this one.
    pub fn merge(&mut self, other: &Profiles) {
        assert_eq!(self.reference_day, other.reference_day);
        self.grow(other.len());
        for (c, (w, s)) in other.weights.iter().zip(&other.stats).enumerate() {
            if s.engagements == 0 {
                continue;
            }
            for (a, b) in self.weights[c].iter_mut().zip(w) {
                *a += b;
            }
            self.stats[c].merge(s);
        }
    }

    /// Move the reference day to `day`, decaying everything accordingly.
    pub fn rebase(&mut self, day: i32) {
        let age = (day - self.reference_day) as f64;
        let f = 0.5f64.powf(age / self.config.params.half_life_days) as f32;
        let ff = 0.5f64.powf(age / FAST_HALF_LIFE) as f32;
        let fs = 0.5f64.powf(age / SLOW_HALF_LIFE) as f32;
        for w in &mut self.weights {
            for x in w.iter_mut() {
                *x *= f;
            }
        }
        for s in &mut self.stats {
            s.fast *= ff;
            s.slow *= fs;
        }
        self.reference_day = day;
    }

    /// Whether a contact's volume or cadence is implausible for a person.
    pub fn is_machine(&self, contact: u32) -> bool {
        let Some(s) = self.stats.get(contact as usize) else {
            return false;
        };
        if s.engagements == 0 {
            return false;
        }
        let t = &self.config.thresholds;
        let per_day = s.engagements as f64 / s.active_days.max(1) as f64;
        let years = ((s.last_day - s.first_day + 1) as f64 / 365.0).max(1.0);
        per_day > t.machine_per_day || s.engagements as f64 / years > t.machine_per_year
    }

    /// Recompute the population profile: everyone's engagement pooled (machines excluded),
    /// spread to neighbouring hours like a contact's, with a small uniform floor.
    pub fn refresh_population(&mut self) {
        let mut sum = vec![0.0f64; SLOTS];
        for (c, w) in self.weights.iter().enumerate() {
            if self.stats[c].engagements == 0 || self.is_machine(c as u32) {
                continue;
            }
            for (a, b) in sum.iter_mut().zip(w) {
                *a += *b as f64;
            }
        }
        let sum = spread_hours(&sum, self.config.params.hour_bandwidth);
        let total: f64 = sum.iter().sum();
        let uniform = 1.0 / SLOTS as f64;
        for (p, s) in self.population.iter_mut().zip(&sum) {
            let empirical = if total > 0.0 { s / total } else { uniform };
            *p = (1.0 - UNIFORM_FLOOR) * empirical + UNIFORM_FLOOR * uniform;
        }
        for (d, w) in self.weekdays.iter_mut().enumerate() {
            *w = self.population[d * 24..(d + 1) * 24].iter().sum();
        }
    }

    /// Engagement class of a contact on day `now_day`.
    pub fn class(&self, contact: Option<u32>, now_day: i32) -> Class {
        let t: &Thresholds = &self.config.thresholds;
        let Some(s) = contact.and_then(|c| self.stats.get(c as usize)) else {
            return Class::Evaluating;
        };
        if s.engagements < t.evaluating_below {
            return Class::Evaluating;
        }
        if now_day - s.last_day > t.inactive_days as i32 {
            return Class::Inactive;
        }
        // Engagement rates (per day) over the recent past and over the long run, each
        // corrected for how much history the contact has, so a steady contact scores 1:1.
        let age = (now_day - self.reference_day) as f64;
        let history = ((now_day - s.first_day).max(1)) as f64;
        let rate = |sum: f32, hl: f64| {
            let now_sum = sum as f64 * 0.5f64.powf(age / hl);
            now_sum * std::f64::consts::LN_2 / (hl * (1.0 - 0.5f64.powf(history / hl)))
        };
        let fast = rate(s.fast, FAST_HALF_LIFE);
        let slow = rate(s.slow, SLOW_HALF_LIFE);
        // Only judge fading once the contact has a baseline longer than the recent window.
        if history > 2.0 * t.recent_days as f64 && fast < t.passive_ratio * slow {
            return Class::Passive;
        }
        Class::Active
    }

    /// The model's slot probabilities for a contact on day `now_day` (the population's for
    /// unknown and machine-like contacts).
    pub fn scores(&self, contact: Option<u32>, now_day: i32) -> [f64; SLOTS] {
        let p = &self.config.params;
        let Some(c) = contact.filter(|c| (*c as usize) < self.len() && !self.is_machine(*c)) else {
            return self.population;
        };
        let f = 0.5f64.powf((now_day - self.reference_day) as f64 / p.half_life_days);
        let raw: Vec<f64> = self.weights[c as usize]
            .iter()
            .map(|w| *w as f64 * f)
            .collect();
        let total: f64 = raw.iter().sum();
        if total <= 0.0 {
            return self.population;
        }
        let spread = spread_hours(&raw, p.hour_bandwidth);
        // Pool across weekdays: the contact's hour-of-day habit, laid over the population's
        // weekly rhythm.
        let mut by_hour = [0.0f64; 24];
        for (s, w) in spread.iter().enumerate() {
            by_hour[s % 24] += w;
        }
        let mut out = [0.0f64; SLOTS];
        for (s, o) in out.iter_mut().enumerate() {
            let pooled = by_hour[s % 24] * self.weekdays[s / 24];
            let counts = (1.0 - p.day_pooling) * spread[s] + p.day_pooling * pooled;
            *o = (counts + p.prior_strength * self.population[s]) / (total + p.prior_strength);
        }
        out
    }

    /// Everything about one contact, for planning and `explain`.
    pub fn profile(&self, contact: Option<u32>, now_day: i32) -> Profile {
        let stats = contact.and_then(|c| self.stats.get(c as usize));
        let machine = contact.is_some_and(|c| self.is_machine(c));
        Profile {
            class: self.class(contact, now_day),
            scores: self.scores(contact, now_day),
            engagements: stats.map_or(0, |s| s.engagements),
            last_day: stats.filter(|s| s.engagements > 0).map(|s| s.last_day),
            machine,
        }
    }

    /// The parameters these profiles were built with.
    pub fn params(&self) -> &Params {
        &self.config.params
    }
}

/// Spread counts to neighbouring hours with a Gaussian kernel (circular over the week).
fn spread_hours(raw: &[f64], bandwidth: f64) -> Vec<f64> {
    if bandwidth <= 0.0 {
        return raw.to_vec();
    }
    let reach = (3.0 * bandwidth).ceil() as i64;
    let kernel: Vec<f64> = (-reach..=reach)
        .map(|j| (-(j * j) as f64 / (2.0 * bandwidth * bandwidth)).exp())
        .collect();
    let norm: f64 = kernel.iter().sum();
    let n = raw.len() as i64;
    let mut out = vec![0.0; raw.len()];
    for (s, &w) in raw.iter().enumerate() {
        if w == 0.0 {
            continue;
        }
        for (k, kv) in kernel.iter().enumerate() {
            let t = (s as i64 + k as i64 - reach).rem_euclid(n) as usize;
            out[t] += w * kv / norm;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profiles() -> Profiles {
        Profiles::new(ModelConfig::default(), 4, 1000)
    }

    #[test]
    fn scores_are_distributions_and_follow_the_contact() {
        let mut p = profiles();
        for d in 0..10 {
            p.add(0, Kind::Open as u8, 9, 1000 - d * 7, false); // Monday 09:00
            p.add(1, Kind::Open as u8, 20, 1000 - d * 7, false); // Monday 20:00
        }
        p.refresh_population();
        for c in [Some(0), Some(1), Some(3), None] {
            let s = p.scores(c, 1000);
            assert!((s.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        }
        let s0 = p.scores(Some(0), 1000);
        let best = (0..SLOTS).max_by(|a, b| s0[*a].total_cmp(&s0[*b])).unwrap();
        assert_eq!(best % 24, 9);
        // An unknown contact gets the population, which has both habits.
        let pop = p.scores(None, 1000);
        assert!(pop[9] > pop[3] && pop[20] > pop[3]);
    }

    #[test]
    fn filtered_and_non_engagement_events_do_not_count() {
        let mut p = profiles();
        p.add(0, Kind::Open as u8, 1, 1000, true);
        p.add(0, Kind::Sent as u8, 1, 1000, false);
        p.add(0, Kind::Delivered as u8, 1, 1000, false);
        assert_eq!(p.stats[0].engagements, 0);
        assert_eq!(p.weights[0][1], 0.0);
        p.add(0, Kind::Click as u8, 1, 1000, false);
        assert_eq!(p.weights[0][1], 2.0);
    }

    #[test]
    fn decay_halves_per_half_life_and_rebase_is_consistent() {
        let mut a = profiles();
        let hl = a.config.params.half_life_days as i32;
        a.add(0, Kind::Open as u8, 5, 1000 - hl, false);
        assert!((a.weights[0][5] - 0.5).abs() < 1e-6);
        let mut b = Profiles::new(ModelConfig::default(), 4, 1000 - hl);
        b.add(0, Kind::Open as u8, 5, 1000 - hl, false);
        b.rebase(1000);
        assert!((b.weights[0][5] - a.weights[0][5]).abs() < 1e-6);
    }

    #[test]
    fn classes_from_fixed_histories() {
        let mut p = profiles();
        let now = 1000;
        // 0: two opens → evaluating.
        p.add(0, Kind::Open as u8, 1, now - 1, false);
        p.add(0, Kind::Open as u8, 1, now - 2, false);
        // 1: weekly opens for a year up to yesterday → active.
        for w in 0..52 {
            p.add(1, Kind::Open as u8, 1, now - 1 - w * 7, false);
        }
        // 2: weekly opens for a year, then only one in the last 60 days → passive.
        for w in 9..60 {
            p.add(2, Kind::Open as u8, 1, now - w * 7, false);
        }
        p.add(2, Kind::Open as u8, 1, now - 20, false);
        // 3: plenty of opens, the last 120 days ago → inactive.
        for w in 0..20 {
            p.add(3, Kind::Open as u8, 1, now - 120 - w, false);
        }
        assert_eq!(p.class(Some(0), now), Class::Evaluating);
        assert_eq!(p.class(Some(1), now), Class::Active);
        assert_eq!(p.class(Some(2), now), Class::Passive);
        assert_eq!(p.class(Some(3), now), Class::Inactive);
        assert_eq!(p.class(None, now), Class::Evaluating);
    }

    #[test]
    fn machines_are_flagged_and_kept_out_of_the_population() {
        let mut p = profiles();
        for i in 0..500 {
            p.add(0, Kind::Open as u8, 3, 1000 - i / 100, false); // 100 opens a day at 03:00
        }
        p.add(1, Kind::Open as u8, 10, 1000, false);
        p.refresh_population();
        assert!(p.is_machine(0));
        assert!(!p.is_machine(1));
        assert!(p.population[10] > p.population[3] * 10.0);
        // A machine is scored like a cold contact.
        assert_eq!(p.scores(Some(0), 1000), p.population);
    }
}
