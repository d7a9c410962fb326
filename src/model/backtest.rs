//! Honest evaluation: build profiles from events before a split time, score the
//! opens and clicks after it, and compare with simple baselines on the same events.
//!
//! Parameters are tuned only on validation windows inside the training period; a run reads
//! the test period once, to score (how often a data set's test period has been looked at is
//! the README's to say).

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;

use super::profile::Profiles;
use super::{ModelConfig, Params, calibrate};
use crate::datasets::contacts::Contacts;
use crate::datasets::events::{self, Kind};
use crate::time::{DAY_MS, SLOTS, day_of, hours_of_day, slot_of};

/// One event, reduced to what evaluation needs.
pub type Row = events::Stored;

/// Rows with dense contact indices local to this evaluation, sorted by contact and time.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    pub rows: Vec<Row>,
    pub contacts: usize,
}

impl Rows {
    /// Every event of the events dataset under `data_dir`.
    pub fn from_dataset(data_dir: &Path) -> anyhow::Result<Self> {
        // Parts listed before the dictionary is read, as every reader does: an import beside
        // this appends entries, then events indexed by them (an audit found the other order
        // could read an index past the dictionary, and the backtest panic).
        let parts = events::dataset(data_dir)?.parts()?;
        let contacts = Contacts::load(data_dir)?;
        let mut rows = Vec::new();
        events::for_each_event(data_dir, &parts, |row| rows.push(row))?;
        Ok(Self::new(rows, contacts.len()))
    }

    /// `contacts` at least, and every index the rows name: events whose dictionary is
    /// missing (a `gen` or import stopped before it wrote it) panicked the backtest.
    pub fn new(mut rows: Vec<Row>, contacts: usize) -> Self {
        rows.sort_by_key(|r| (r.contact, r.at_ms));
        let named = rows.last().map_or(0, |r| r.contact as usize + 1);
        Self {
            rows,
            contacts: contacts.max(named),
        }
    }

    fn engagements(&self) -> impl Iterator<Item = &Row> {
        self.rows
            .iter()
            .filter(|r| !r.filtered && Kind::from_code(r.kind).is_some_and(Kind::is_engagement))
    }
}

/// Profiles from every row before `until_ms`, as of that moment.
pub fn build(config: ModelConfig, rows: &Rows, until_ms: i64) -> Profiles {
    let mut p = Profiles::new(config, rows.contacts, day_of(until_ms));
    let before = rows.rows.iter().filter(|r| r.at_ms < until_ms);
    let (mut c, mut k, mut s, mut d, mut f) = (vec![], vec![], vec![], vec![], vec![]);
    for r in before {
        c.push(r.contact);
        k.push(r.kind);
        s.push(slot_of(r.at_ms));
        d.push(day_of(r.at_ms));
        f.push(r.filtered);
    }
    // Rows are sorted by contact and time, as the batch path wants.
    p.add_batch(&c, &k, &s, &d, Some(&f), None, &mut Vec::new(), None);
    if config.auto.any() && until_ms != i64::MAX {
        // Fitted on the latest weeks before `until_ms`, as a profile build does.
        let end_day = day_of(until_ms);
        let mut recent = calibrate::Recent::until(end_day);
        for i in 0..c.len() {
            if !f[i] && Kind::from_code(k[i]).is_some_and(Kind::is_engagement) {
                recent.push(c[i], s[i], d[i], k[i]);
            }
        }
        let counts = p.population_counts();
        let fit = calibrate::fit(&p, &counts, recent, config.auto);
        p.apply_fit(fit, &counts);
    } else {
        p.refresh_population();
    }
    p
}

/// Hit rates and log-likelihood of one predictor on one group of events.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Scores {
    pub events: usize,
    pub contacts: usize,
    pub hour_of_day: SlotScores,
    pub hour_of_week: SlotScores,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SlotScores {
    pub hit_at_1: f64,
    pub hit_at_3: f64,
    /// Mean negative log-likelihood in nats over the slots (24 or 168); absent for
    /// predictors that only rank.
    pub nll: Option<f64>,
}

/// What a predictor says about one contact.
enum Prediction {
    Distribution(Box<[f64; SLOTS]>),
    /// Slots best first (hour-of-week), and hours best first (hour-of-day).
    Ranking(Vec<u8>, Vec<u8>),
}

/// One contact's hour-of-day figures under one predictor: what the paired comparison
/// resamples.
#[derive(Debug, Clone, Copy, Default)]
struct ContactTally {
    events: u32,
    hits_at_3: u32,
    nll: f64,
}

#[derive(Default)]
struct Tally {
    events: usize,
    /// Keyed by contact, in contact order, so predictors line up for pairing.
    contacts: std::collections::BTreeMap<u32, ContactTally>,
    hits: [[usize; 2]; 2],
    nll: [f64; 2],
    ranked_only: bool,
}

impl Tally {
    fn add(&mut self, contact: u32, prediction: &Prediction, at_ms: i64) {
        let slot = slot_of(at_ms) as usize;
        let hour = slot % 24;
        self.events += 1;
        let mine = self.contacts.entry(contact).or_default();
        mine.events += 1;
        let (week, day) = match prediction {
            Prediction::Distribution(p) => {
                let by_hour = hours_of_day(&p[..]);
                let nll = -by_hour[hour].max(1e-12).ln();
                mine.nll += nll;
                self.nll[0] += nll;
                self.nll[1] -= p[slot].max(1e-12).ln();
                (top(&p[..]), top(&by_hour))
            }
            Prediction::Ranking(week, day) => {
                self.ranked_only = true;
                (week.clone(), day.clone())
            }
        };
        for (g, (ranking, truth)) in [(day, hour), (week, slot)].into_iter().enumerate() {
            for (k, n) in [1, 3].into_iter().enumerate() {
                if ranking.iter().take(n).any(|s| *s as usize == truth) {
                    self.hits[g][k] += 1;
                    if (g, n) == (0, 3) {
                        mine.hits_at_3 += 1;
                    }
                }
            }
        }
    }

    fn scores(&self) -> Scores {
        let n = self.events.max(1) as f64;
        let slot = |g: usize| SlotScores {
            hit_at_1: self.hits[g][0] as f64 / n,
            hit_at_3: self.hits[g][1] as f64 / n,
            nll: (!self.ranked_only && self.events > 0).then_some(self.nll[g] / n),
        };
        Scores {
            events: self.events,
            contacts: self.contacts.len(),
            hour_of_day: slot(0),
            hour_of_week: slot(1),
        }
    }
}

/// The model against one baseline on the same warm events, with 95% intervals from
/// resampling contacts (a contact's opens are not independent of each other, so resampling
/// events would overstate the certainty).
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub baseline: String,
    /// The model's hour-of-day hit@3 minus the baseline's.
    pub hit_at_3_gain: f64,
    pub hit_at_3_interval: [f64; 2],
    /// The baseline's hour-of-day NLL minus the model's, in nats per event (positive: the
    /// model is better); absent for baselines that only rank.
    pub nll_gain: Option<f64>,
    pub nll_interval: Option<[f64; 2]>,
}

const RESAMPLES: usize = 2000;
const RESAMPLE_SEED: u64 = 2022;

/// None when there are no events to compare on.
fn compare(model: &Tally, baseline: &Tally, name: &str) -> Option<Comparison> {
    let pairs: Vec<(ContactTally, ContactTally)> = model
        .contacts
        .iter()
        .map(|(c, m)| (*m, baseline.contacts[c]))
        .collect();
    if pairs.is_empty() {
        return None;
    }
    let gains = |picked: &mut dyn Iterator<Item = &(ContactTally, ContactTally)>| {
        let (mut events, mut hits, mut nll) = (0u64, 0i64, 0.0);
        for (m, b) in picked {
            events += u64::from(m.events);
            hits += i64::from(m.hits_at_3) - i64::from(b.hits_at_3);
            nll += b.nll - m.nll;
        }
        let n = events.max(1) as f64;
        (hits as f64 / n, nll / n)
    };
    let (hit, nll) = gains(&mut pairs.iter());
    let mut rng = fastrand::Rng::with_seed(RESAMPLE_SEED);
    let (mut hits, mut nlls) = (Vec::with_capacity(RESAMPLES), Vec::with_capacity(RESAMPLES));
    for _ in 0..RESAMPLES {
        let (h, l) = gains(&mut (0..pairs.len()).map(|_| &pairs[rng.usize(..pairs.len())]));
        hits.push(h);
        nlls.push(l);
    }
    let interval = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        [at(0.025), at(0.975)]
    };
    let ranks_only = baseline.ranked_only;
    Some(Comparison {
        baseline: name.to_string(),
        hit_at_3_gain: hit,
        hit_at_3_interval: interval(hits),
        nll_gain: (!ranks_only).then_some(nll),
        nll_interval: (!ranks_only).then(|| interval(nlls)),
    })
}

/// Indices best first (ties: lower index first).
fn top(p: &[f64]) -> Vec<u8> {
    let mut idx: Vec<u8> = (0..p.len() as u8).collect();
    idx.sort_by(|a, b| p[*b as usize].total_cmp(&p[*a as usize]).then(a.cmp(b)));
    idx
}

/// Results for three groups of contacts, by their history before the split: warm (at least
/// `evaluating_below` opens and clicks, so the product judges them on their own profile),
/// evaluating (some history, less than that) and cold (none).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub split: String,
    /// The knobs used: the file's, or those fitted on the training period's latest weeks.
    pub params: ParamsReport,
    pub fit: Option<calibrate::Fit>,
    /// How the predictors learnt again during the test period, when they did.
    pub relearn: Option<Relearn>,
    /// Opens and clicks (not filtered) before the split.
    pub training_events: usize,
    pub excluded_machine_contacts: usize,
    /// Opens and clicks before the split that make a contact warm.
    pub warm_from: u32,
    pub warm: Vec<(String, Scores)>,
    pub evaluating: Vec<(String, Scores)>,
    pub cold: Vec<(String, Scores)>,
    /// The model against each baseline on the warm contacts.
    pub model_against: Vec<Comparison>,
    /// Whether the model does at least as well as the population's best hours on the warm
    /// contacts (hour of day, hit@3 and NLL, point estimates): what it must never fall below.
    pub never_worse_than_population: Option<bool>,
    /// The same with its intervals, for the warm contacts and for those with some history
    /// (planning trusts their own hours too): a point estimate below the population's may
    /// be noise (an audit).
    pub against_population: AgainstPopulation,
    pub tuning: Option<Tuning>,
}

/// The model against the population's best hours, per group with history.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AgainstPopulation {
    pub warm: Option<Standing>,
    pub evaluating: Option<Standing>,
    /// The gains behind `evaluating` (the warm ones are in `model_against`).
    pub evaluating_gains: Option<Comparison>,
}

/// Where the model stands against a baseline, by the 95% intervals of its gains (hit@3 and,
/// for a baseline that scores, NLL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// Both gains at least zero.
    Holds,
    /// A gain below zero whose interval reaches zero.
    WithinNoise,
    /// A gain whose whole interval is below zero (or that is not a number).
    Worse,
}

impl Standing {
    fn of(c: &Comparison) -> Standing {
        let gains = [
            Some((c.hit_at_3_gain, c.hit_at_3_interval)),
            c.nll_gain.zip(c.nll_interval),
        ];
        let gains = gains.into_iter().flatten();
        // Not a number (an NLL of infinities) is no evidence of holding.
        let unknown = |(g, [lo, hi]): (f64, [f64; 2])| g.is_nan() || lo.is_nan() || hi.is_nan();
        if gains.clone().any(|(_, [_, hi])| hi < -1e-9) || gains.clone().any(unknown) {
            Standing::Worse
        } else if gains.clone().any(|(g, _)| g < -1e-9) {
            Standing::WithinNoise
        } else {
            Standing::Holds
        }
    }

    fn text(self) -> &'static str {
        match self {
            Standing::Holds => "holds",
            Standing::WithinNoise => "within noise (a gain below zero, its interval reaching zero)",
            Standing::Worse => "DOES NOT HOLD (worse beyond noise)",
        }
    }
}

/// Learning again during the test period (`--relearn`).
#[derive(Debug, Clone, Serialize)]
pub struct Relearn {
    pub every_days: u32,
    /// Steps scored, each by predictors built from every event before its start.
    pub steps: usize,
    /// Steps at which the fit replaced the `[model]` values.
    pub fits_changed: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ParamsReport {
    pub half_life_days: f64,
    pub click_weight: f64,
    pub prior_strength: f64,
    pub hour_bandwidth: f64,
    pub day_pooling: f64,
}

impl From<&Params> for ParamsReport {
    fn from(p: &Params) -> Self {
        Self {
            half_life_days: p.half_life_days,
            click_weight: p.click_weight,
            prior_strength: p.prior_strength,
            hour_bandwidth: p.hour_bandwidth,
            day_pooling: p.day_pooling,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Tuning {
    pub validation_split: String,
    pub candidates: usize,
    pub chosen: ParamsReport,
    pub validation_nll_hour_of_day: f64,
    pub validation_nll_hour_of_week: f64,
}

/// The "simple smoothing" baseline: each contact's histogram with 24 pseudo-events of the
/// population (the strength that reproduces the data README's reference NLL of 3.00), no
/// decay, no spreading to neighbouring hours.
fn histogram_params(base: &Params) -> Params {
    Params {
        half_life_days: 1e9,
        hour_bandwidth: 0.0,
        day_pooling: 1.0,
        prior_strength: 24.0,
        ..*base
    }
}

/// The baseline the model must never fall below.
const POPULATION_BASELINE: &str = "population best hours";

/// The predictors' names, the model first.
const NAMES: [&str; 5] = [
    "sendtime model",
    "histogram + population prior",
    POPULATION_BASELINE,
    "contact's mode hour",
    "fixed hour",
];

/// What every predictor knows at one moment: learnt from the events before it only.
struct Predictors {
    day: i32,
    model: Profiles,
    hist: Profiles,
    /// Raw counts per contact, for the mode-hour baseline.
    counts: HashMap<u32, [f64; SLOTS]>,
    pop_by_hour: [f64; 24],
}

impl Predictors {
    fn at(config: ModelConfig, rows: &Rows, at_ms: i64) -> Self {
        let hist_cfg = ModelConfig {
            params: histogram_params(&config.params),
            auto: calibrate::Auto::NONE,
            ..config
        };
        let model = build(config, rows, at_ms);
        let mut counts: HashMap<u32, [f64; SLOTS]> = HashMap::new();
        for r in rows.engagements().filter(|r| r.at_ms < at_ms) {
            counts.entry(r.contact).or_insert([0.0; SLOTS])[slot_of(r.at_ms) as usize] += 1.0;
        }
        let pop_by_hour = hours_of_day(&model.population);
        Self {
            day: day_of(at_ms),
            hist: build(hist_cfg, rows, at_ms),
            model,
            counts,
            pop_by_hour,
        }
    }

    /// One prediction per name in [`NAMES`].
    fn predict(&self, contact: u32, fixed_hour: u8) -> Vec<Prediction> {
        let c = Some(contact);
        let population = self.model.population;
        // Mode: the contact's own most frequent slots/hours, ties and the rest by population.
        let mode = |n: &[f64; SLOTS]| {
            let week: Vec<f64> = n
                .iter()
                .zip(&population)
                .map(|(n, p)| n + p * 1e-6)
                .collect();
            let day: Vec<f64> = hours_of_day(n)
                .iter()
                .zip(&self.pop_by_hour)
                .map(|(n, p)| n + p * 1e-6)
                .collect();
            Prediction::Ranking(top(&week), top(&day))
        };
        // Fixed: the hour on Tuesday, Wednesday and Thursday; the hour and the two after it.
        let fixed_week: Vec<u8> = (1..=3).map(|d| d * 24 + fixed_hour).collect();
        let fixed_day: Vec<u8> = (0..3).map(|k| (fixed_hour + k) % 24).collect();
        vec![
            Prediction::Distribution(Box::new(self.model.scores(c, self.day))),
            Prediction::Distribution(Box::new(self.hist.scores(c, self.day))),
            Prediction::Distribution(Box::new(population)),
            self.counts
                .get(&contact)
                .map_or_else(|| mode(&[0.0; SLOTS]), mode),
            Prediction::Ranking(fixed_week, fixed_day),
        ]
    }
}

/// Evaluate the model and the baselines on events after `split_ms`. With `relearn_days`,
/// every predictor learns again from the events before each step of that many days, as
/// `serve`'s imports keep profiles current; contacts keep the group of their history before
/// the split, so both ways score the same events.
pub fn evaluate(
    config: ModelConfig,
    rows: &Rows,
    split_ms: i64,
    fixed_hour: u8,
    relearn_days: Option<u32>,
) -> Report {
    let at_split = Predictors::at(config, rows, split_ms);
    // Machine-like contacts are left out of the evaluation, judged on all their events.
    let everything = build(
        ModelConfig {
            auto: calibrate::Auto::NONE,
            ..config
        },
        rows,
        i64::MAX,
    );
    let excluded: std::collections::HashSet<u32> = (0..rows.contacts as u32)
        .filter(|c| everything.is_machine(*c))
        .collect();
    let group_of: Vec<usize> = {
        let warm_from = config.thresholds.evaluating_below;
        (0..rows.contacts)
            .map(|c| match at_split.model.stats[c].engagements {
                0 => 2,
                n if n < warm_from => 1,
                _ => 0,
            })
            .collect()
    };
    // Step starts: the split, then every `relearn_days` until the last event.
    let last_ms = rows.rows.iter().map(|r| r.at_ms).max().unwrap_or(split_ms);
    let starts: Vec<i64> = match relearn_days {
        Some(days) => (0..)
            .map(|k| split_ms + k * i64::from(days.max(1)) * DAY_MS)
            .take_while(|t| *t <= last_ms)
            .collect(),
        None => vec![split_ms],
    };
    let mut relearn = relearn_days.map(|every_days| Relearn {
        every_days,
        steps: starts.len(),
        fits_changed: 0,
    });

    // Warm, evaluating, cold.
    let mut groups: [Vec<Tally>; 3] =
        std::array::from_fn(|_| NAMES.iter().map(|_| Tally::default()).collect());
    let mut later = None;
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(i64::MAX);
        let now = if i == 0 {
            &at_split
        } else {
            later.insert(Predictors::at(config, rows, start))
        };
        if let (Some(r), Some(fit)) = (relearn.as_mut(), &now.model.fit) {
            r.fits_changed += usize::from(fit.changed);
        }
        let mut cache: Option<(u32, Vec<Prediction>)> = None;
        for r in rows
            .engagements()
            .filter(|r| r.at_ms >= start && r.at_ms < end)
        {
            if excluded.contains(&r.contact) {
                continue;
            }
            if cache.as_ref().is_none_or(|(c, _)| *c != r.contact) {
                cache = Some((r.contact, now.predict(r.contact, fixed_hour)));
            }
            let preds = &cache.as_ref().unwrap().1;
            for (t, p) in groups[group_of[r.contact as usize]].iter_mut().zip(preds) {
                t.add(r.contact, p, r.at_ms);
            }
        }
    }
    let [warm, evaluating, cold] = groups;
    let model_against: Vec<Comparison> = NAMES
        .iter()
        .zip(&warm)
        .skip(1)
        .filter_map(|(name, t)| compare(&warm[0], t, name))
        .collect();
    let population = NAMES
        .iter()
        .position(|n| *n == POPULATION_BASELINE)
        .expect("named");
    let evaluating_gains = compare(&evaluating[0], &evaluating[population], POPULATION_BASELINE);
    let against_population = AgainstPopulation {
        warm: (model_against.iter())
            .find(|c| c.baseline == POPULATION_BASELINE)
            .map(Standing::of),
        evaluating: evaluating_gains.as_ref().map(Standing::of),
        evaluating_gains,
    };
    let named = |tallies: Vec<Tally>| {
        NAMES
            .iter()
            .zip(tallies)
            .map(|(n, t)| (n.to_string(), t.scores()))
            .collect()
    };
    Report {
        split: crate::time::format_minute(split_ms),
        params: (&at_split.model.config.params).into(),
        fit: at_split.model.fit,
        relearn,
        training_events: rows.engagements().filter(|r| r.at_ms < split_ms).count(),
        excluded_machine_contacts: excluded.len(),
        warm_from: config.thresholds.evaluating_below,
        warm: named(warm),
        evaluating: named(evaluating),
        cold: named(cold),
        never_worse_than_population: model_against
            .iter()
            .find(|c| c.baseline == POPULATION_BASELINE)
            .map(|c| c.hit_at_3_gain >= -1e-9 && c.nll_gain.is_none_or(|g| g >= -1e-9)),
        against_population,
        model_against,
        tuning: None,
    }
}

/// Validation windows inside the training period: `WINDOWS` back-to-back spans of
/// `days` each, ending at the split; each is predicted from the events before it.
const WINDOWS: i64 = 4;

/// Mean warm NLL (hour of day, hour of week) of the model over the validation windows, warm
/// judged as in [`evaluate`].
fn validate(config: ModelConfig, train: &Rows, split_ms: i64, days: i64) -> (f64, f64) {
    let mut tally = Tally::default();
    for k in 1..=WINDOWS {
        let start = split_ms - k * days * DAY_MS;
        let end = start + days * DAY_MS;
        let model = build(config, train, start);
        let day = day_of(start);
        let mut last: Option<(u32, [f64; SLOTS])> = None;
        for r in train
            .engagements()
            .filter(|r| r.at_ms >= start && r.at_ms < end)
        {
            let c = r.contact;
            let warm = model.stats[c as usize].engagements >= config.thresholds.evaluating_below;
            if !warm || model.is_machine(c) {
                continue;
            }
            if last.as_ref().is_none_or(|(lc, _)| *lc != c) {
                last = Some((c, model.scores(Some(c), day)));
            }
            let p = Prediction::Distribution(Box::new(last.as_ref().unwrap().1));
            tally.add(c, &p, r.at_ms);
        }
    }
    let s = tally.scores();
    (
        s.hour_of_day.nll.unwrap_or(f64::INFINITY),
        s.hour_of_week.nll.unwrap_or(f64::INFINITY),
    )
}

/// Pick parameters on validation windows inside the training period (the test period after
/// `split_ms` is never looked at): decay, prior strength and hour spread by hour-of-day
/// log-likelihood, then day pooling by hour-of-week log-likelihood.
pub fn tune(
    config: ModelConfig,
    rows: &Rows,
    split_ms: i64,
    validation_days: i64,
) -> anyhow::Result<(ModelConfig, Tuning)> {
    // The grid picks every knob here: nothing fitted on top.
    let config = ModelConfig {
        auto: calibrate::Auto::NONE,
        ..config
    };
    let days = (validation_days / WINDOWS).max(7);
    let train = Rows {
        rows: rows
            .rows
            .iter()
            .copied()
            .filter(|r| r.at_ms < split_ms)
            .collect(),
        contacts: rows.contacts,
    };
    let from = split_ms - WINDOWS * days * DAY_MS;
    let first = train.rows.iter().map(|r| r.at_ms).min().unwrap_or(split_ms);
    anyhow::ensure!(
        from >= first,
        "the validation windows ({WINDOWS} of {days} days) would start {}, before the first event ({}): give --validation-days fewer days",
        crate::time::format_minute(from),
        crate::time::format_minute(first)
    );
    let mut candidates = 0;
    // (hour-of-day loss, hour-of-week loss, config)
    let mut best = (f64::INFINITY, f64::INFINITY, config);
    for half_life_days in [60.0, 120.0, 240.0, 480.0, 1e9] {
        for prior_strength in [4.0, 8.0, 12.0, 16.0, 24.0, 32.0] {
            for hour_bandwidth in [0.0, 0.5, 0.75, 1.0, 1.25, 1.5] {
                candidates += 1;
                let cfg = ModelConfig {
                    params: Params {
                        half_life_days,
                        prior_strength,
                        hour_bandwidth,
                        ..config.params
                    },
                    ..config
                };
                let (hod, how) = validate(cfg, &train, split_ms, days);
                if hod < best.0 {
                    best = (hod, how, cfg);
                }
            }
        }
    }
    anyhow::ensure!(
        best.0.is_finite(),
        "the validation windows ({WINDOWS} of {days} days before the split) hold no opens or clicks of warm contacts to tune on: give --validation-days more days, or --split a later time"
    );
    // `day_pooling` is kept: chosen on hour-of-week loss it learns the weekdays mail was
    // sent on, and planned other days no better than at random (the account fit leaves it
    // out for that reason; an audit found `--tune` still chose it so).
    let (_, best_week, chosen) = best;
    let tuning = Tuning {
        validation_split: format!(
            "{} windows of {days} days from {}",
            WINDOWS,
            crate::time::format_minute(from)
        ),
        candidates,
        chosen: (&chosen.params).into(),
        validation_nll_hour_of_day: best.0,
        validation_nll_hour_of_week: best_week,
    };
    Ok((chosen, tuning))
}

impl Report {
    /// Opens and clicks after the split that were scored, in every group.
    pub fn test_events(&self) -> usize {
        [&self.warm, &self.evaluating, &self.cold]
            .iter()
            .filter_map(|rows| rows.first())
            .map(|(_, s)| s.events)
            .sum()
    }

    /// A table for a terminal.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "split {}; {} opens and clicks before it; {} machine-like contact(s) left out",
            self.split, self.training_events, self.excluded_machine_contacts
        );
        let p = &self.params;
        let _ = writeln!(
            out,
            "model: {}, prior {} events, hour spread {} h, day pooling {}, click weight {}",
            if p.half_life_days > 1e8 {
                "no decay".into()
            } else {
                format!("half-life {} d", p.half_life_days)
            },
            p.prior_strength,
            p.hour_bandwidth,
            p.day_pooling,
            p.click_weight
        );
        if let Some(fit) = &self.fit {
            let _ = writeln!(out, "knobs {}", fit.describe());
        }
        if let Some(r) = &self.relearn {
            let refits = if self.fit.is_some() {
                format!(
                    ", the knobs fitted again at each (the [model] values replaced at {})",
                    r.fits_changed
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "relearnt every {} day(s) of the test period, as serve's imports keep profiles current: \
                 {} steps, each predictor built from every event before the step{refits}; \
                 contacts grouped by their history before the split",
                r.every_days, r.steps
            );
        }
        if let Some(t) = &self.tuning {
            let _ = writeln!(
                out,
                "tuned on {} ({} candidates; validation NLL {:.3} hour of day, {:.3} hour of week)",
                t.validation_split,
                t.candidates,
                t.validation_nll_hour_of_day,
                t.validation_nll_hour_of_week
            );
        }
        let from = self.warm_from;
        for (group, rows) in [
            (
                format!("warm ({from}+ opens/clicks before the split)"),
                &self.warm,
            ),
            (
                format!("evaluating (fewer than {from} before the split)"),
                &self.evaluating,
            ),
            ("cold (none before the split)".to_string(), &self.cold),
        ] {
            let (events, contacts) = rows.first().map_or((0, 0), |(_, s)| (s.events, s.contacts));
            let _ = writeln!(out, "\n{group}: {contacts} contacts, {events} test events");
            if events == 0 {
                continue;
            }
            let _ = writeln!(
                out,
                "{:<30} {:>7} {:>7} {:>8}   {:>7} {:>7} {:>8}",
                "predictor", "hod@1", "hod@3", "hod NLL", "how@1", "how@3", "how NLL"
            );
            for (name, s) in rows.iter() {
                let nll = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3}"));
                let _ = writeln!(
                    out,
                    "{:<30} {:>7.3} {:>7.3} {:>8}   {:>7.3} {:>7.3} {:>8}",
                    name,
                    s.hour_of_day.hit_at_1,
                    s.hour_of_day.hit_at_3,
                    nll(s.hour_of_day.nll),
                    s.hour_of_week.hit_at_1,
                    s.hour_of_week.hit_at_3,
                    nll(s.hour_of_week.nll),
                );
            }
        }
        if !self.model_against.is_empty() {
            let _ = writeln!(
                out,
                "\nsendtime model against each baseline, warm contacts, hour of day \
                 (95% intervals from resampling contacts):"
            );
            let _ = writeln!(
                out,
                "{:<30} {:>7} {:>17}   {:>8} {:>17}",
                "baseline", "hit@3 +", "interval", "NLL -", "interval"
            );
            let span = |i: [f64; 2]| format!("[{:+.3}, {:+.3}]", i[0], i[1]);
            for c in &self.model_against {
                let _ = writeln!(
                    out,
                    "{:<30} {:>+7.3} {:>17}   {:>8} {:>17}",
                    c.baseline,
                    c.hit_at_3_gain,
                    span(c.hit_at_3_interval),
                    c.nll_gain.map_or("-".into(), |v| format!("{v:+.3}")),
                    c.nll_interval.map_or("-".into(), span),
                );
            }
        }
        let groups = [
            ("warm", self.against_population.warm),
            ("some history", self.against_population.evaluating),
        ];
        if groups.iter().any(|(_, s)| s.is_some()) {
            out.push('\n');
        }
        for (group, standing) in groups {
            let Some(standing) = standing else { continue };
            let gains = match (group, &self.against_population.evaluating_gains) {
                ("some history", Some(c)) => format!(
                    " (hit@3 {:+.3} [{:+.3}, {:+.3}], NLL {})",
                    c.hit_at_3_gain,
                    c.hit_at_3_interval[0],
                    c.hit_at_3_interval[1],
                    c.nll_gain
                        .zip(c.nll_interval)
                        .map_or("-".into(), |(g, [lo, hi])| {
                            format!("{g:+.3} [{lo:+.3}, {hi:+.3}]")
                        }),
                ),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "never worse than the population's best hours ({group}, hour of day, hit@3 and NLL, 95% intervals): {}{gains}",
                standing.text()
            );
        }
        let _ = writeln!(
            out,
            "\nhod = hour of day (24 slots), how = hour of week (168 slots), UTC. Learning from past \
             opens also learns when mail was sent: where sends happen at fixed hours, these figures \
             flatter every history-based predictor alike."
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Thresholds;

    /// A gain below zero is noise while its interval reaches zero, and a loss once the
    /// whole interval is below; a point estimate at or above zero holds.
    #[test]
    fn the_standing_against_the_population_reads_the_intervals() {
        let c = |hit: f64, hit_hi: f64, nll: Option<(f64, f64)>| Comparison {
            baseline: POPULATION_BASELINE.into(),
            hit_at_3_gain: hit,
            hit_at_3_interval: [hit - 0.05, hit_hi],
            nll_gain: nll.map(|n| n.0),
            nll_interval: nll.map(|n| [n.0 - 0.05, n.1]),
        };
        assert_eq!(
            Standing::of(&c(0.0, 0.02, Some((0.0, 0.01)))),
            Standing::Holds
        );
        assert_eq!(Standing::of(&c(0.01, 0.02, None)), Standing::Holds);
        assert_eq!(
            Standing::of(&c(-0.01, 0.01, Some((0.02, 0.03)))),
            Standing::WithinNoise
        );
        assert_eq!(
            Standing::of(&c(0.01, 0.02, Some((-0.01, 0.0)))),
            Standing::WithinNoise
        );
        assert_eq!(
            Standing::of(&c(-0.03, -0.01, Some((0.02, 0.03)))),
            Standing::Worse
        );
        assert_eq!(
            Standing::of(&c(0.02, 0.03, Some((-0.03, -0.01)))),
            Standing::Worse
        );
        assert_eq!(
            Standing::of(&c(0.02, 0.03, Some((f64::NAN, 0.01)))),
            Standing::Worse
        );
    }

    fn row(contact: u32, at_ms: i64) -> Row {
        Row {
            contact,
            kind: Kind::Open as u8,
            at_ms,
            filtered: false,
        }
    }

    /// No decay, no spreading and a weak prior, the file's values (no fit), any history
    /// warm: figures that can be worked out by hand.
    fn by_hand() -> ModelConfig {
        ModelConfig {
            params: Params {
                half_life_days: 1e9,
                hour_bandwidth: 0.0,
                prior_strength: 0.5,
                ..Params::default()
            },
            thresholds: Thresholds {
                evaluating_below: 1,
                ..Thresholds::default()
            },
            auto: crate::model::calibrate::Auto::NONE,
        }
    }

    /// A tiny data set whose figures are worked out by hand.
    #[test]
    fn figures_on_a_tiny_data_set_checked_by_hand() {
        const H: i64 = crate::time::HOUR_MS;
        // 2024-01-01 is a Monday; the split is Monday 2024-01-15 00:00.
        let monday = 1_704_067_200_000;
        let split = monday + 14 * DAY_MS;
        let rows = Rows::new(
            vec![
                // Contact 0 opens at 09:00 on two Mondays, then (test) Monday 09:00 and 15:00.
                row(0, monday + 9 * H),
                row(0, monday + 7 * DAY_MS + 9 * H),
                row(0, split + 9 * H),
                row(0, split + 15 * H),
                // Contact 1 opens at 20:00 once, then (test) 20:00.
                row(1, monday + 20 * H),
                row(1, split + DAY_MS + 20 * H),
                // Contact 2 is new in the test period: cold.
                row(2, split + 2 * DAY_MS + 9 * H),
            ],
            3,
        );
        // Any history makes a contact warm here; the default threshold is checked below.
        let config = by_hand();
        let report = evaluate(config, &rows, split, 9, None);
        assert_eq!(report.training_events, 3);
        let by = |group: &[(String, Scores)], name: &str| {
            group.iter().find(|(n, _)| n == name).unwrap().1.clone()
        };
        // Mode hour: contact 0 → 09 (hit for the 09:00 open, miss for 15:00); contact 1 → 20
        // (hit). hit@1 = 2/3.
        let mode = by(&report.warm, "contact's mode hour");
        assert_eq!((mode.events, mode.contacts), (3, 2));
        assert!((mode.hour_of_day.hit_at_1 - 2.0 / 3.0).abs() < 1e-9);
        // Fixed 09:00: only contact 0's 09:00 open: 1/3; top-3 09-11 also 1/3.
        let fixed = by(&report.warm, "fixed hour");
        assert!((fixed.hour_of_day.hit_at_1 - 1.0 / 3.0).abs() < 1e-9);
        assert!((fixed.hour_of_day.hit_at_3 - 1.0 / 3.0).abs() < 1e-9);
        assert!(fixed.hour_of_day.nll.is_none());
        // Population: the pooled training opens, two at 09 and one at 20: 09 first, 20
        // second. hit@1 = 1/3 (the 09:00 open), hit@3 = 2/3.
        let pop = by(&report.warm, "population best hours");
        assert!((pop.hour_of_day.hit_at_1 - 1.0 / 3.0).abs() < 1e-9);
        assert!((pop.hour_of_day.hit_at_3 - 2.0 / 3.0).abs() < 1e-9);
        // Population NLL over 24 hours, with the 1% uniform floor:
        // p(09) = 0.99 * 2/3 + 0.01/24, p(20) = 0.99 * 1/3 + 0.01/24, p(15) = 0.01/24.
        let p9: f64 = 0.99 * 2.0 / 3.0 + 0.01 / 24.0;
        let p20: f64 = 0.99 / 3.0 + 0.01 / 24.0;
        let p15: f64 = 0.01 / 24.0;
        let want = -(p9.ln() + p15.ln() + p20.ln()) / 3.0;
        assert!((pop.hour_of_day.nll.unwrap() - want).abs() < 1e-9);
        // With a weak prior the model ranks each contact's own hour first: 2/3.
        let model = by(&report.warm, "sendtime model");
        assert!((model.hour_of_day.hit_at_1 - 2.0 / 3.0).abs() < 1e-9);
        // Cold: one event by one contact, predicted by the population: 09 is first.
        let cold = by(&report.cold, "sendtime model");
        assert_eq!((cold.events, cold.contacts), (1, 1));
        assert_eq!(cold.hour_of_day.hit_at_1, 1.0);
        assert_eq!(by(&report.evaluating, "sendtime model").events, 0);
        // The model (2/3 hit@3: 09 for contact 0, 20 for contact 1) against the fixed hours
        // 09-11 (1/3): +1/3. Resampling the two contacts gives 0 (contact 0 twice: both hit
        // its 09:00 open only), 1/3 or 1 (contact 1 twice), so the interval is [0, 1].
        let fixed = report
            .model_against
            .iter()
            .find(|c| c.baseline == "fixed hour")
            .unwrap();
        assert!((fixed.hit_at_3_gain - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(fixed.hit_at_3_interval, [0.0, 1.0]);
        assert!(fixed.nll_gain.is_none());

        // With the default threshold (3 opens) contacts 0 and 1 are still evaluating.
        let config = ModelConfig {
            thresholds: Thresholds::default(),
            ..config
        };
        let report = evaluate(config, &rows, split, 9, None);
        let warm = by(&report.warm, "sendtime model");
        let evaluating = by(&report.evaluating, "sendtime model");
        assert_eq!((warm.events, evaluating.events), (0, 3));
        assert_eq!(evaluating.contacts, 2);
        assert_eq!(by(&report.cold, "sendtime model").events, 1);
    }

    /// Relearning scores each step with what came before it, and nothing after.
    #[test]
    fn relearning_scores_each_step_with_the_events_before_it_only() {
        const H: i64 = crate::time::HOUR_MS;
        let monday = 1_704_067_200_000;
        let split = monday + 14 * DAY_MS;
        let mut rows = vec![
            // Contact 0 opened at 09:00 once before the split; after it, twice at 20:00 in
            // the first week and three times at 20:00 in the second.
            row(0, monday + 9 * H),
            row(0, split + 20 * H),
            row(0, split + DAY_MS + 20 * H),
        ];
        rows.extend((0..3).map(|d| row(0, split + (7 + d) * DAY_MS + 20 * H)));
        // Contact 1 is new after the split: 03:00 in the first week and in the second.
        rows.push(row(1, split + 2 * DAY_MS + 3 * H));
        rows.push(row(1, split + 8 * DAY_MS + 3 * H));
        // Contact 2 opened at 09:00 before the split; after it, at a new hour each day
        // (10:00, 11:00, ...), more often each day (2, 3, ... times): whatever a step learnt
        // from its own day would rank that day's hour first.
        rows.push(row(2, monday + 9 * H));
        for d in 0..5 {
            for m in 0..2 + d {
                rows.push(row(
                    2,
                    split + (21 + d) * DAY_MS + (10 + d) * H + m * 60_000,
                ));
            }
        }
        let rows = Rows::new(rows, 3);
        let config = by_hand();
        let model = |relearn: Option<u32>, group: usize| {
            let r = evaluate(config, &rows, split, 9, relearn);
            let g = [&r.warm, &r.evaluating, &r.cold][group];
            (r.relearn.clone(), g[0].1.clone())
        };
        // Frozen at the split: contact 0 is predicted at 09:00 (0 of 5 first hours right),
        // contact 2 too (0 of 20); contact 1 by the population, 09:00 (0 of 2).
        let (none, warm) = model(None, 0);
        assert!(none.is_none());
        assert_eq!((warm.events, warm.hour_of_day.hit_at_1), (25, 0.0));
        let (_, cold) = model(None, 2);
        assert_eq!((cold.events, cold.hour_of_day.hit_at_1), (2, 0.0));
        // Weekly: in the second week contact 0 has 20:00 twice against 09:00 once (3 of 5
        // right), and contact 1 has its 03:00 (1 of 2). Contact 1 stays cold: groups are
        // judged at the split.
        let (relearn, warm) = model(Some(7), 0);
        let relearn = relearn.unwrap();
        // Steps start at the split and 7, 14, 21 days after it; the last event is day 25.
        assert_eq!((relearn.every_days, relearn.steps), (7, 4));
        assert_eq!(warm.events, 25);
        assert!((warm.hour_of_day.hit_at_1 - 3.0 / 25.0).abs() < 1e-9);
        let (_, cold) = model(Some(7), 2);
        assert_eq!((cold.events, cold.hour_of_day.hit_at_1), (2, 0.5));
        // Daily: each of contact 2's days is scored before it is learnt from, so its new
        // hour is never first (0 of 20; 20 if a step saw its own day). Contact 0 is as
        // weekly: on its second day, 20:00 once ties 09:00 and the population ranks 09:00.
        let (relearn, warm) = model(Some(1), 0);
        assert_eq!(relearn.unwrap().steps, 26);
        assert!((warm.hour_of_day.hit_at_1 - 3.0 / 25.0).abs() < 1e-9);
    }
}
