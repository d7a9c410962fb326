//! Per-contact engagement profiles: what the model knows about each contact, and the
//! population profile that stands in for what it does not.
//!
//! Counts are kept decayed to a fixed reference day, so adding new events is a plain sum (the
//! same event always adds the same amount) and re-basing to a later day is one multiplication;
//! that is what lets profiles be updated incrementally instead of recomputed from all history.

use std::fmt;

use super::slots::SlotWeights;
use super::{ModelConfig, Thresholds};
use crate::datasets::events::Kind;
use crate::prefetch::prefetch;
use crate::time::{SLOTS, hours_of_day};

/// Half-lives of the two rate trackers that tell fading engagement from steady engagement.
const FAST_HALF_LIFE: f64 = 14.0;
const SLOW_HALF_LIFE: f64 = 365.0;
/// Weight of a uniform floor mixed into the population profile so no slot is impossible.
pub(super) const UNIFORM_FLOOR: f64 = 0.01;

/// Engagement class.
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

/// What a batch of events added, sparsely: (contact, slot, weight) rows, kept as columns (the
/// stored delta part's, so storing moves them rather than copying), and per-contact stats.
#[derive(Debug, Default, Clone)]
pub struct Delta {
    pub contact: Vec<u32>,
    pub slot: Vec<u8>,
    pub weight: Vec<f32>,
    pub stats: Vec<(u32, Stats)>,
}

impl Delta {
    fn push(&mut self, contact: u32, slot: u8, weight: f32) {
        self.contact.push(contact);
        self.slot.push(slot);
        self.weight.push(weight);
    }

    /// The weight rows, as (contact, slot, weight).
    #[cfg(test)]
    fn weights(&self) -> impl Iterator<Item = (u32, u8, f32)> + '_ {
        self.contact
            .iter()
            .zip(&self.slot)
            .zip(&self.weight)
            .map(|((c, s), w)| (*c, *s, *w))
    }

    /// Everything in `p`, as one delta (for storing a full rebuild).
    pub fn of(p: &Profiles) -> Delta {
        let mut d = Delta::default();
        for (c, (w, s)) in p.weights.iter().zip(&p.stats).enumerate() {
            if s.engagements == 0 {
                continue;
            }
            for (slot, v) in w.iter() {
                if v != 0.0 {
                    d.push(c as u32, slot as u8, v);
                }
            }
            d.stats.push((c as u32, *s));
        }
        d
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
    /// The prior in force (the fit's, where habits predict nothing in this account) gives
    /// every contact the population's profile: `scores` are its, whatever the history.
    pub pooled: bool,
}

/// Profiles of every contact in the contact dictionary, decayed to `reference_day`.
#[derive(Debug, Clone)]
pub struct Profiles {
    pub config: ModelConfig,
    pub reference_day: i32,
    /// Per contact, decayed click-weighted engagement per slot.
    pub weights: Vec<SlotWeights>,
    pub stats: Vec<Stats>,
    /// Normalised population profile (machines excluded), mixed with a uniform floor.
    pub population: [f64; SLOTS],
    /// Share of the population's engagement on each weekday (Monday first).
    pub weekdays: [f64; 7],
    /// The knobs fitted to the account's data, once they were (see [`super::calibrate`]).
    pub fit: Option<super::calibrate::Fit>,
    /// The kernel of `config.params.hour_bandwidth`.
    kernel: Kernel,
    decay: DecayTables,
    prev_day: Vec<i32>,
}

/// `0.5^(age / half_life)` for ages in whole days, precomputed for the hot loop.
#[derive(Debug, Clone)]
struct DecayTables {
    model: Vec<f32>,
    fast: Vec<f32>,
    slow: Vec<f32>,
    /// The three factors side by side, for the batch loop.
    all: Vec<[f32; 3]>,
    half_life: f64,
}

const TABLE_DAYS: usize = 20 * 366;

impl DecayTables {
    fn new(half_life: f64) -> Self {
        let table = |hl: f64| {
            (0..TABLE_DAYS)
                .map(|d| 0.5f64.powf(d as f64 / hl) as f32)
                .collect()
        };
        let model: Vec<f32> = table(half_life);
        let fast: Vec<f32> = table(FAST_HALF_LIFE);
        let slow: Vec<f32> = table(SLOW_HALF_LIFE);
        let all = (0..TABLE_DAYS)
            .map(|d| [model[d], fast[d], slow[d]])
            .collect();
        Self {
            model,
            fast,
            slow,
            all,
            half_life,
        }
    }

    /// Model, fast and slow factors for an event `age` days before the reference day.
    #[inline]
    fn factors(&self, age: i32) -> [f32; 3] {
        match usize::try_from(age) {
            Ok(a) if a < self.all.len() => self.all[a],
            _ => [
                lookup(&self.model, age, self.half_life),
                lookup(&self.fast, age, FAST_HALF_LIFE),
                lookup(&self.slow, age, SLOW_HALF_LIFE),
            ],
        }
    }
}

/// Stored profiles are decayed to a new reference day at least every
/// [`REBASE_DAYS`](super::stored::REBASE_DAYS), so a real event is at most this far after it;
/// a later one (a misread time) weighs as one this far after, rather than enough to swamp
/// every other event (or overflow).
const MAX_DAYS_AHEAD: i32 = super::stored::REBASE_DAYS + 1;

fn lookup(table: &[f32], age: i32, half_life: f64) -> f32 {
    match usize::try_from(age) {
        Ok(a) if a < table.len() => table[a],
        // Events older than the table (from 2000 on are imported) and after the reference day
        // (weighing more than 1): exact, and rare. The old ones weighed 0, a second decay
        // rule that a half-life of a billion days ("do not decay") met (an audit).
        _ => 0.5f64.powf(age.max(-MAX_DAYS_AHEAD) as f64 / half_life) as f32,
    }
}

impl Profiles {
    /// Empty profiles for `contacts` contacts, decayed to `reference_day`.
    pub fn new(config: ModelConfig, contacts: usize, reference_day: i32) -> Self {
        Self {
            config,
            reference_day,
            weights: vec![SlotWeights::default(); contacts],
            stats: vec![Stats::default(); contacts],
            population: [1.0 / SLOTS as f64; SLOTS],
            weekdays: [1.0 / 7.0; 7],
            fit: None,
            kernel: Kernel::new(config.params.hour_bandwidth),
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
            self.weights.resize(contacts, SlotWeights::default());
            self.stats.resize(contacts, Stats::default());
            self.prev_day.resize(contacts, i32::MIN);
        }
    }

    /// Add a batch of events given as columns (a Parquet part sorted by contact: each
    /// contact's run is summed in registers). Rows where `skip` is true are left out
    /// entirely; `filtered` rows count as seen but are not learned from; `seen` (grown to the
    /// profiles' length) marks every contact with a row that was not skipped. With `delta`,
    /// what the batch added is also recorded sparsely (for storing an incremental update).
    ///
    /// A large batch sorted by contact is cut into contact ranges added on all cores: the
    /// ranges touch disjoint rows, so no locking, and the result is the same as in one pass.
    #[allow(clippy::too_many_arguments)]
    pub fn add_batch(
        &mut self,
        contact: &[u32],
        kind: &[u8],
        slot: &[u8],
        day: &[i32],
        filtered: Option<&[bool]>,
        skip: Option<&[bool]>,
        seen: &mut Vec<bool>,
        delta: Option<&mut Delta>,
    ) {
        use rayon::prelude::*;
        let n = contact.len();
        let sorted = contact.is_sorted();
        let max = if sorted {
            contact.last()
        } else {
            contact.iter().max()
        };
        let Some(max) = max else {
            return;
        };
        self.grow(*max as usize + 1);
        if seen.len() < self.len() {
            seen.resize(self.len(), false);
        }
        let mut kind_weight = [0.0f32; 256];
        kind_weight[Kind::Open as usize] = 1.0;
        kind_weight[Kind::Click as usize] = self.config.params.click_weight as f32;
        let adder = Adder {
            kind_weight,
            decay: &self.decay,
            reference_day: self.reference_day,
            kind,
            slot,
            day,
            filtered,
            skip,
        };
        // Row ranges that start and end on a contact boundary.
        let pieces = if n >= PARALLEL_ROWS && sorted {
            rayon::current_num_threads()
        } else {
            1
        };
        let mut bounds = vec![0];
        for k in 1..pieces {
            let from = contact[n * k / pieces];
            let b = contact.partition_point(|c| *c <= from);
            if b > *bounds.last().unwrap() && b < n {
                bounds.push(b);
            }
        }
        bounds.push(n);
        // The matching contact ranges of every per-contact array.
        let mut jobs = Vec::with_capacity(bounds.len() - 1);
        let (mut weights, mut stats) = (&mut self.weights[..], &mut self.stats[..]);
        let (mut prev_day, mut seen) = (&mut self.prev_day[..], &mut seen[..]);
        let mut base = 0;
        for w in bounds.windows(2) {
            let end = if w[1] == n {
                weights.len() + base
            } else {
                contact[w[1]] as usize
            };
            let (w0, w1) = std::mem::take(&mut weights).split_at_mut(end - base);
            let (s0, s1) = std::mem::take(&mut stats).split_at_mut(end - base);
            let (p0, p1) = std::mem::take(&mut prev_day).split_at_mut(end - base);
            let (seen0, seen1) = std::mem::take(&mut seen).split_at_mut(end - base);
            jobs.push((
                w[0]..w[1],
                ContactRange {
                    base,
                    weights: w0,
                    stats: s0,
                    prev_day: p0,
                    seen: seen0,
                },
            ));
            (weights, stats, prev_day, seen) = (w1, s1, p1, seen1);
            base = end;
        }
        let record = delta.is_some();
        let parts: Vec<Option<Delta>> = jobs
            .into_par_iter()
            .map(|(rows, range)| adder.add(range, contact, rows, record))
            .collect();
        if let Some(delta) = delta {
            for part in parts.into_iter().flatten() {
                delta.contact.extend(part.contact);
                delta.slot.extend(part.slot);
                delta.weight.extend(part.weight);
                delta.stats.extend(part.stats);
            }
        }
    }

    /// How much the model has learnt of `contact`: its engagement weighted by kind and decayed
    /// to the reference day, as its scores weigh it (one scale for every contact, so two can
    /// be compared); nothing for a machine-like contact, which is scored as the population.
    pub fn learnt(&self, contact: u32) -> f64 {
        if self.is_machine(contact) {
            return 0.0;
        }
        self.weights
            .get(contact as usize)
            .map_or(0.0, |w| w.iter().map(|(_, w)| f64::from(w)).sum())
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
        // A day is counted again in each batch it comes back in (a file out of time order,
        // cut into parts): never more days than the span holds.
        let span = (s.last_day - s.first_day + 1).max(1) as u32;
        let per_day = s.engagements as f64 / s.active_days.min(span).max(1) as f64;
        let years = ((s.last_day - s.first_day + 1) as f64 / 365.0).max(1.0);
        per_day > t.machine_per_day || s.engagements as f64 / years > t.machine_per_year
    }

    /// After summing stored counts and stats (instead of adding events): the population from
    /// them, and each contact's last active day, so that the next batch's events on that day
    /// are not counted as a new active day, the same as in one pass over all events.
    pub fn loaded(&mut self) {
        for (prev, s) in self.prev_day.iter_mut().zip(&self.stats) {
            if s.engagements > 0 {
                *prev = s.last_day;
            }
        }
        self.refresh_population();
    }

    /// Recompute the population profile: everyone's engagement pooled (machines excluded),
    /// spread to neighbouring hours like a contact's, with a small uniform floor.
    pub fn refresh_population(&mut self) {
        (self.population, self.weekdays) =
            population_of(&self.population_counts(), self.config.params.hour_bandwidth);
    }

    /// Everyone's engagement pooled per slot (machines excluded).
    pub(super) fn population_counts(&self) -> Vec<f64> {
        let mut sum = vec![0.0f64; SLOTS];
        for (c, w) in self.weights.iter().enumerate() {
            if self.stats[c].engagements == 0 || self.is_machine(c as u32) {
                continue;
            }
            for (s, x) in w.iter() {
                sum[s] += x as f64;
            }
        }
        sum
    }

    /// Score with the knobs `fit` chose (when it could fit), and keep it to show; the
    /// population is the caller's to refresh.
    pub fn set_fit(&mut self, fit: super::calibrate::Fit) {
        fit.apply(&mut self.config.params);
        self.kernel = Kernel::new(self.config.params.hour_bandwidth);
        self.fit = Some(fit);
    }

    /// [`Profiles::set_fit`], with the population from `counts` ([`Profiles::population_counts`],
    /// which the fit read too) at the fitted bandwidth.
    pub fn apply_fit(&mut self, fit: super::calibrate::Fit, counts: &[f64]) {
        self.set_fit(fit);
        (self.population, self.weekdays) = population_of(counts, self.config.params.hour_bandwidth);
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
        // A prior that strong is the population's profile (what the fit picks where personal
        // habits predict nothing): exactly, not nearly.
        if self.pooled() {
            return self.population;
        }
        let Some(c) = contact.filter(|c| (*c as usize) < self.len() && !self.is_machine(*c)) else {
            return self.population;
        };
        let f = 0.5f64.powf((now_day - self.reference_day) as f64 / p.half_life_days);
        // Planning scores a million contacts a tick: only their engaged slots are spread, on
        // the stack, with the kernel worked out once (afresh only if `config` was changed
        // other than by `set_fit`).
        let fresh;
        let kernel = if self.kernel.bandwidth == p.hour_bandwidth {
            &self.kernel
        } else {
            fresh = Kernel::new(p.hour_bandwidth);
            &fresh
        };
        let mut spread = [0.0f64; SLOTS];
        let mut total = 0.0;
        for (s, w) in self.weights[c as usize].iter() {
            let w = w as f64 * f;
            total += w;
            kernel.add(s, w, &mut spread);
        }
        if total <= 0.0 {
            return self.population;
        }
        // Pool across weekdays: the contact's hour-of-day habit, laid over the population's
        // weekly rhythm.
        let by_hour = hours_of_day(&spread);
        let scale = 1.0 / (total + p.prior_strength);
        let mut out = [0.0f64; SLOTS];
        for (s, o) in out.iter_mut().enumerate() {
            let pooled = by_hour[s % 24] * self.weekdays[s / 24];
            let counts = (1.0 - p.day_pooling) * spread[s] + p.day_pooling * pooled;
            *o = (counts + p.prior_strength * self.population[s]) * scale;
        }
        out
    }

    /// Whether the prior in force scores every contact by the population's profile.
    fn pooled(&self) -> bool {
        self.config.params.prior_strength >= super::calibrate::POPULATION_PRIOR
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
            pooled: self.pooled(),
        }
    }
}

/// Batches smaller than this are added on one thread.
const PARALLEL_ROWS: usize = 1 << 16;

/// The per-contact arrays of one contact range, `base..base + weights.len()`.
struct ContactRange<'a> {
    base: usize,
    weights: &'a mut [SlotWeights],
    stats: &'a mut [Stats],
    prev_day: &'a mut [i32],
    seen: &'a mut [bool],
}

/// How far ahead [`Adder::add`] asks for a contact's state, in rows.
const PREFETCH_ROWS: usize = 16;

/// What every contact range of one batch shares.
struct Adder<'a> {
    kind_weight: [f32; 256],
    decay: &'a DecayTables,
    reference_day: i32,
    kind: &'a [u8],
    slot: &'a [u8],
    day: &'a [i32],
    filtered: Option<&'a [bool]>,
    skip: Option<&'a [bool]>,
}

impl Adder<'_> {
    /// Add `rows` (whose contacts all lie in `r`) to `r`; with `record`, return what was added.
    ///
    /// Two passes: the first marks contacts seen and picks out, without branching, the rows
    /// the model learns from (whether a row is an engagement is a coin flip the CPU cannot
    /// predict); the second sums each contact's run of them per slot in a small dense buffer
    /// (in L1 cache, no search per event), and the row takes one addition per slot at the end
    /// of the run: the same sums the stored deltas give when they are loaded.
    fn add(
        &self,
        r: ContactRange<'_>,
        contact: &[u32],
        rows: std::ops::Range<usize>,
        record: bool,
    ) -> Option<Delta> {
        let mut learn = vec![0u32; rows.len()];
        let mut n = 0;
        for i in rows {
            let skipped = self.skip.is_some_and(|m| m[i]);
            if !skipped && let Some(x) = r.seen.get_mut(contact[i] as usize - r.base) {
                *x = true;
            }
            let w = self.kind_weight[self.kind[i] as usize];
            let keep = (w != 0.0)
                & ((self.slot[i] as usize) < SLOTS)
                & !skipped
                & !self.filtered.is_some_and(|f| f[i]);
            learn[n] = i as u32;
            n += keep as usize;
        }
        let learn = &learn[..n];

        let mut delta = record.then(Delta::default);
        let mut local = [0.0f32; SLOTS];
        // Which slots of `local` this run touched.
        let mut touched = [0u64; SLOTS.div_ceil(64)];
        let mut j = 0;
        while j < learn.len() {
            // The state of a contact a few runs ahead starts loading now: in a part that names
            // most contacts each run is a cache miss on its own otherwise.
            if let Some(&ahead) = learn.get(j + PREFETCH_ROWS) {
                let a = contact[ahead as usize] as usize - r.base;
                prefetch(&r.weights[a]);
                prefetch(&r.stats[a]);
                prefetch(&r.prev_day[a]);
            }
            // Nearer, once the row above has arrived: the slot a dense row will add to.
            if let Some(&ahead) = learn.get(j + PREFETCH_ROWS / 2) {
                let a = contact[ahead as usize] as usize - r.base;
                if let Some(w) = r.weights[a].dense_slot(self.slot[ahead as usize] as usize) {
                    prefetch(w);
                }
            }
            let c = contact[learn[j] as usize] as usize;
            let at = c - r.base;
            let mut prev = r.prev_day[at];
            let mut add = Stats::default();
            // Decay factors change only with the day: computed once per day of a run (not
            // carried over from `prev`, which may come from an earlier batch).
            let mut factors = [0.0f32; 3];
            let mut factors_day = None;
            while let Some(&i) = learn.get(j)
                && contact[i as usize] as usize == c
            {
                let i = i as usize;
                let d = self.day[i];
                if prev != d {
                    add.active_days += 1;
                    add.first_day = add.first_day.min(d);
                    add.last_day = add.last_day.max(d);
                    prev = d;
                }
                if factors_day != Some(d) {
                    factors = self.decay.factors(self.reference_day - d);
                    factors_day = Some(d);
                }
                let s = self.slot[i] as usize;
                local[s] += self.kind_weight[self.kind[i] as usize] * factors[0];
                touched[s / 64] |= 1 << (s % 64);
                add.engagements += 1;
                add.fast += factors[1];
                add.slow += factors[2];
                j += 1;
            }
            let row = &mut r.weights[at];
            for (k, bits) in touched.iter_mut().enumerate() {
                while *bits != 0 {
                    let s = k * 64 + bits.trailing_zeros() as usize;
                    *bits &= *bits - 1;
                    let x = std::mem::take(&mut local[s]);
                    if x != 0.0 {
                        row.add(s, x);
                        if let Some(delta) = delta.as_mut() {
                            delta.push(c as u32, s as u8, x);
                        }
                    }
                }
            }
            r.stats[at].merge(&add);
            if let Some(delta) = delta.as_mut() {
                delta.stats.push((c as u32, add));
            }
            r.prev_day[at] = prev;
        }
        delta
    }
}

/// The population profile from pooled counts, spread at `bandwidth` like a contact's, with a
/// small uniform floor; and its share on each weekday (Monday first).
pub(super) fn population_of(counts: &[f64], bandwidth: f64) -> ([f64; SLOTS], [f64; 7]) {
    let sum = spread_hours(counts, bandwidth);
    let total: f64 = sum.iter().sum();
    let uniform = 1.0 / SLOTS as f64;
    let mut population = [0.0; SLOTS];
    for (p, s) in population.iter_mut().zip(&sum) {
        let empirical = if total > 0.0 { s / total } else { uniform };
        *p = (1.0 - UNIFORM_FLOOR) * empirical + UNIFORM_FLOOR * uniform;
    }
    let mut weekdays = [0.0; 7];
    for (d, w) in weekdays.iter_mut().enumerate() {
        *w = population[d * 24..(d + 1) * 24].iter().sum();
    }
    (population, weekdays)
}

/// Spread counts to neighbouring hours with a Gaussian kernel (circular over the week).
pub(super) fn spread_hours(raw: &[f64], bandwidth: f64) -> [f64; SLOTS] {
    debug_assert_eq!(raw.len(), SLOTS, "one value per hour of the week");
    let kernel = Kernel::new(bandwidth);
    let mut out = [0.0; SLOTS];
    for (s, &w) in raw.iter().enumerate() {
        if w != 0.0 {
            kernel.add(s, w, &mut out);
        }
    }
    out
}

/// A Gaussian over neighbouring hours that sums to one: how a slot's weight is spread.
#[derive(Debug, Clone)]
struct Kernel {
    bandwidth: f64,
    /// For offsets `-reach..=reach` hours (one weight, 1, without a bandwidth).
    weights: Vec<f64>,
    /// `-reach`, as a step forward round the week.
    back: usize,
}

impl Kernel {
    fn new(bandwidth: f64) -> Kernel {
        if bandwidth <= 0.0 {
            return Kernel {
                bandwidth,
                weights: vec![1.0],
                back: 0,
            };
        }
        let reach = (3.0 * bandwidth).ceil() as i64;
        let raw: Vec<f64> = (-reach..=reach)
            .map(|j| (-(j * j) as f64 / (2.0 * bandwidth * bandwidth)).exp())
            .collect();
        let norm: f64 = raw.iter().sum();
        Kernel {
            bandwidth,
            weights: raw.iter().map(|k| k / norm).collect(),
            back: (-reach).rem_euclid(SLOTS as i64) as usize,
        }
    }

    /// Add `w`, spread around `slot`, to `out` (circular over the week).
    fn add(&self, slot: usize, w: f64, out: &mut [f64; SLOTS]) {
        let start = slot + self.back;
        for (k, kv) in self.weights.iter().enumerate() {
            out[(start + k) % SLOTS] += w * kv;
        }
    }
}

#[cfg(test)]
impl Profiles {
    /// One event, through the batch path (tests build small histories row by row).
    fn add(&mut self, contact: u32, kind: u8, slot: u8, day: i32, filtered: bool) {
        self.add_batch(
            &[contact],
            &[kind],
            &[slot],
            &[day],
            Some(&[filtered]),
            None,
            &mut Vec::new(),
            None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spreading keeps each slot's weight, symmetric round the week, wrapping past Sunday and
    /// Monday; a bandwidth as wide as the config allows reaches three days each way.
    #[test]
    fn spreading_keeps_weight_and_wraps_round_the_week() {
        for bandwidth in [0.0, 0.5, 1.0, 24.0] {
            for slot in [0, 1, 100, SLOTS - 1] {
                let mut raw = [0.0; SLOTS];
                raw[slot] = 3.0;
                let out = spread_hours(&raw, bandwidth);
                let total: f64 = out.iter().sum();
                assert!((total - 3.0).abs() < 1e-12, "{bandwidth} {slot}: {total}");
                for d in 1..SLOTS / 2 {
                    let (after, before) =
                        (out[(slot + d) % SLOTS], out[(slot + SLOTS - d) % SLOTS]);
                    assert!((after - before).abs() < 1e-12, "{bandwidth} {slot} {d}");
                }
                let reach = (3.0 * bandwidth).ceil() as usize;
                assert!(out[(slot + reach) % SLOTS] > 0.0 || bandwidth == 0.0);
                assert_eq!(out[(slot + reach + 1) % SLOTS], 0.0, "{bandwidth} {slot}");
            }
        }
    }

    /// The accumulation rule written plainly, one event at a time: the oracle for the batch loop.
    fn reference_add(p: &mut Profiles, contact: u32, kind: u8, slot: u8, day: i32, filtered: bool) {
        let weight = match kind {
            k if k == Kind::Open as u8 => 1.0,
            k if k == Kind::Click as u8 => p.config.params.click_weight as f32,
            _ => return,
        };
        if filtered || slot as usize >= SLOTS {
            return;
        }
        let c = contact as usize;
        p.grow(c + 1);
        let age = p.reference_day - day;
        let hl = p.config.params.half_life_days;
        p.weights[c].add(slot as usize, weight * lookup(&p.decay.model, age, hl));
        let s = &mut p.stats[c];
        s.engagements += 1;
        if p.prev_day[c] != day {
            s.active_days += 1;
            p.prev_day[c] = day;
        }
        s.first_day = s.first_day.min(day);
        s.last_day = s.last_day.max(day);
        s.fast += lookup(&p.decay.fast, age, FAST_HALF_LIFE);
        s.slow += lookup(&p.decay.slow, age, SLOW_HALF_LIFE);
    }

    fn profiles() -> Profiles {
        Profiles::new(ModelConfig::default(), 4, 1000)
    }

    /// An event dated far after the reference day (a misread time that got in) weighs as one
    /// a month after it: the population stays a distribution led by the real opens.
    #[test]
    fn an_event_far_in_the_future_does_not_swamp_the_population() {
        let mut p = profiles();
        for d in 0..10 {
            p.add(0, Kind::Open as u8, 9, 1000 - d * 7, false);
            p.add(1, Kind::Open as u8, 9, 1000 - d * 7, false);
        }
        p.add(2, Kind::Open as u8, 3, 1000 + 20_000, false);
        p.refresh_population();
        assert!(p.population.iter().all(|v| v.is_finite()));
        assert!((p.population.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(
            p.population[9] > 5.0 * p.population[3],
            "{:?}",
            p.population
        );
        for c in 0..3 {
            assert!(p.scores(Some(c), 1000).iter().all(|v| v.is_finite()));
        }
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
        let best = |c: u32| {
            let s = p.scores(Some(c), 1000);
            (0..SLOTS).max_by(|a, b| s[*a].total_cmp(&s[*b])).unwrap()
        };
        assert_eq!((best(0) % 24, best(1) % 24), (9, 20));
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
        assert_eq!(p.weights[0].get(1), 0.0);
        p.add(0, Kind::Click as u8, 1, 1000, false);
        assert_eq!(p.weights[0].get(1), 2.0);
    }

    #[test]
    fn decay_halves_per_half_life_and_later_events_weigh_more() {
        let mut a = profiles();
        let hl = a.config.params.half_life_days as i32;
        a.add(0, Kind::Open as u8, 5, 1000 - hl, false);
        assert!((a.weights[0].get(5) - 0.5).abs() < 1e-6);
        // An event after the reference day (profiles are decayed to a new one at least every
        // 30 days) counts more, exactly: adding stays exact.
        a.add(1, Kind::Open as u8, 5, 1000 + 30, false);
        let ahead = 0.5f64.powf(-30.0 / f64::from(hl)) as f32;
        assert!((a.weights[1].get(5) - ahead).abs() < 1e-6);
        // One further ahead than that is a misread time: it weighs as one 31 days ahead.
        a.add(2, Kind::Open as u8, 5, 1000 + hl, false);
        let most = 0.5f64.powf(-31.0 / f64::from(hl)) as f32;
        assert!((a.weights[2].get(5) - most).abs() < 1e-6);
        // One older than the table decays as any (it weighed nothing).
        a.add(3, Kind::Open as u8, 5, 1000 - 8000, false);
        let old = 0.5f64.powf(8000.0 / f64::from(hl)) as f32;
        assert!(old > 0.0 && (a.weights[3].get(5) / old - 1.0).abs() < 1e-3);
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
    fn batch_adding_equals_adding_one_by_one() {
        // One pass, and a batch large enough to be cut into contact ranges (with `seen`
        // shorter than the contact count, as a caller may pass it).
        batch_equals_one_by_one(500, 10);
        batch_equals_one_by_one(3 * PARALLEL_ROWS as u32, 1000);
    }

    fn batch_equals_one_by_one(n: u32, seen_len: usize) {
        let rows: Vec<(u32, u8, u8, i32, bool)> = (0..n)
            .map(|i| {
                (
                    i / 50,
                    [6u8, 7, 0, 3][(i % 4) as usize],
                    (i * 7 % 168) as u8,
                    900 + (i % 40) as i32,
                    i % 13 == 0,
                )
            })
            .collect();
        let mut one = profiles();
        for (c, k, s, d, f) in &rows {
            reference_add(&mut one, *c, *k, *s, *d, *f);
        }
        let mut batch = profiles();
        let col = |f: fn(&(u32, u8, u8, i32, bool)) -> u32| rows.iter().map(f).collect::<Vec<_>>();
        let c = col(|r| r.0);
        let k: Vec<u8> = rows.iter().map(|r| r.1).collect();
        let s: Vec<u8> = rows.iter().map(|r| r.2).collect();
        let d: Vec<i32> = rows.iter().map(|r| r.3).collect();
        let f: Vec<bool> = rows.iter().map(|r| r.4).collect();
        let mut seen = vec![false; seen_len];
        let mut delta = Delta::default();
        batch.add_batch(&c, &k, &s, &d, Some(&f), None, &mut seen, Some(&mut delta));
        assert_eq!(one.weights, batch.weights);
        assert_eq!(one.stats, batch.stats);
        // The recorded delta is exactly what was added.
        let mut replay = profiles();
        replay.grow(batch.len());
        for (c, s, w) in delta.weights() {
            replay.weights[c as usize].add(s as usize, w);
        }
        for (c, st) in &delta.stats {
            replay.stats[*c as usize].merge(st);
        }
        assert_eq!(replay.weights, batch.weights);
        assert_eq!(replay.stats, batch.stats);
        assert!(seen.iter().all(|x| *x));
        // Skipped rows count for nothing, not even as seen.
        let mut skipped = profiles();
        let mut seen = vec![false; seen_len];
        skipped.add_batch(
            &c,
            &k,
            &s,
            &d,
            None,
            Some(&vec![true; c.len()]),
            &mut seen,
            None,
        );
        assert!(skipped.stats.iter().all(|s| s.engagements == 0) && !seen.iter().any(|x| *x));
    }

    #[test]
    fn a_day_continued_in_a_later_batch_still_counts() {
        // Minute-by-minute updates: the same contact, the same day, two batches.
        let mut p = profiles();
        for slot in [9, 10] {
            p.add_batch(
                &[0],
                &[Kind::Open as u8],
                &[slot],
                &[999],
                None,
                None,
                &mut Vec::new(),
                None,
            );
        }
        let decayed = 0.5f32.powf(1.0 / p.config.params.half_life_days as f32);
        assert!((p.weights[0].get(9) - decayed).abs() < 1e-6);
        assert_eq!(p.weights[0].get(10), p.weights[0].get(9));
        assert_eq!((p.stats[0].engagements, p.stats[0].active_days), (2, 1));
    }

    /// 30 opens a day on 10 days, met three times over (as a file out of time order comes in
    /// three parts): a machine however the days were counted. It counted 30 active days.
    #[test]
    fn a_machine_out_of_time_order_is_still_a_machine() {
        let mut p = profiles();
        for _ in 0..3 {
            for day in 1000..1010 {
                for _ in 0..10 {
                    p.add(0, Kind::Open as u8, 3, day, false);
                }
            }
        }
        assert!(p.is_machine(0), "{:?}", p.stats[0]);
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
