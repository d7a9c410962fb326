//! Comparing the two groups' rates for one metric: each webhook with itself, the differences
//! weighted by its sends, a bootstrap 95 % interval that draws contacts whole, and a verdict
//! only when that interval excludes zero and each group has [`MIN_SENDS`].

use serde::Serialize;

use crate::model::synth::Rng;

/// Bootstrap resamples; enough for a stable 95 % interval.
const RESAMPLES: usize = 4000;
/// The bootstrap's seed: the same data gives the same interval.
const SEED: u64 = 20_261_130;

/// Fewer sends than this in either group: no verdict, whatever the interval.
pub const MIN_SENDS: u64 = 30;
/// A webhook is compared only with at least this many contacts in each group: a group of one
/// or two contacts barely varies when resampled, so many such webhooks made the interval far
/// too narrow (a review's simulation: 30 webhooks holding out one contact each, 45 % of
/// verdicts on no difference).
pub const MIN_CONTACTS: u64 = 5;

/// One group's count for one metric, over the webhooks compared ([`compare`]).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Share {
    /// Sends whose window is complete.
    pub sends: u64,
    /// Of them, those engaged within it; a send that went together with others to its
    /// contact counts its share of their engagement (a half of two), so this may be
    /// fractional.
    pub engaged: f64,
    /// Each webhook's share engaged, weighted by its sends in both groups (for one webhook,
    /// `engaged / sends`).
    pub rate: f64,
}

/// What a metric counts as engaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engagement {
    /// An open or a click.
    Opened,
    Clicked,
}

impl Engagement {
    pub const ALL: [Engagement; 2] = [Engagement::Opened, Engagement::Clicked];

    pub fn as_str(self) -> &'static str {
        match self {
            Engagement::Opened => "opened",
            Engagement::Clicked => "clicked",
        }
    }
}

/// Which group did better, when the interval excludes zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    OptimizedBetter,
    HoldoutBetter,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::OptimizedBetter => "optimized_better",
            Verdict::HoldoutBetter => "holdout_better",
        }
    }
}

// As their names: the report's JSON, its text and the bootstrap's seed say them alike.
impl Serialize for Engagement {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl Serialize for Verdict {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One metric: optimized against held out.
#[derive(Debug, Clone, Serialize)]
pub struct Metric {
    pub metric: Engagement,
    pub window_hours: i64,
    pub optimized: Share,
    pub holdout: Share,
    /// Optimized rate less held-out rate; none when no webhook is compared (none has sends,
    /// or [`MIN_CONTACTS`], in both groups).
    pub difference: Option<f64>,
    /// Bootstrap 95 % interval of the difference (none when there is no difference).
    pub interval: Option<[f64; 2]>,
    pub verdict: Option<Verdict>,
    /// Why there is no verdict, when there is none, and as the report says it.
    pub no_verdict: Option<NoVerdict>,
    pub no_verdict_text: Option<String>,
    /// When no send is counted yet, when the first one's window ends.
    pub first_window_end_ms: Option<i64>,
    /// Webhooks with sends in both groups left out, as one of them reached fewer than
    /// [`MIN_CONTACTS`] contacts.
    pub too_few_contacts: usize,
    /// The webhooks compared (their strata) and their weights: what else is weighed against
    /// the difference is weighed so too.
    #[serde(skip)]
    pub(super) weighed: Vec<(usize, f64)>,
}

/// Why a metric has no verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoVerdict {
    /// No send's window has ended by the as-of time.
    NoWindowEnded,
    /// No webhook has sends in both groups whose windows ended.
    NotSentInBoth,
    /// The webhooks that sent in both groups reached fewer than [`MIN_CONTACTS`] contacts in
    /// a group.
    TooFewContacts,
    /// A group has fewer than [`MIN_SENDS`] sends.
    TooFewSends,
    /// The interval includes zero.
    IncludesZero,
    /// The groups lost receipts (failed, never sent) at shares too different for chance, and
    /// by enough to explain the verdict ([`Lift::optimized_lost`](super::report::Lift::optimized_lost)): those who stay in a group
    /// are not like those in the other.
    LostUnequally,
}

impl NoVerdict {
    /// As the report's table says it.
    pub fn text(self) -> String {
        match self {
            NoVerdict::NoWindowEnded => "no window has ended yet".into(),
            NoVerdict::NotSentInBoth => "no webhook sent in both groups".into(),
            NoVerdict::TooFewContacts => {
                format!("fewer than {MIN_CONTACTS} contacts in a group")
            }
            NoVerdict::TooFewSends => format!("fewer than {MIN_SENDS} sends in a group"),
            NoVerdict::IncludesZero => "the interval includes zero".into(),
            NoVerdict::LostUnequally => {
                "the groups lost unequal shares of their receipts (see the notes)".into()
            }
        }
    }
}

pub(super) fn share((sends, engaged): (u64, f64)) -> Share {
    Share {
        sends,
        engaged,
        rate: if sends == 0 {
            0.0
        } else {
            engaged / sends as f64
        },
    }
}

/// One contact's sends in one webhook and group, and how many of them engaged within the
/// window.
#[derive(Debug, Clone, Copy)]
pub(super) struct Cell {
    pub stratum: usize,
    pub holdout: bool,
    pub sends: u64,
    pub engaged: f64,
}

/// A contact's cells, in every webhook and group that sent to it: what the bootstrap
/// resamples, since a contact's sends are not independent of each other, whichever webhook
/// sent them and whether they were held out or not.
pub(super) type Cluster = Vec<Cell>;

/// Draws of one resample at most, to find one with sends in every compared group; past
/// them, the webhooks without are left out of it.
const REDRAWS: usize = 100;

/// Resample contacts, not sends, when there are at most this many; beyond, the normal
/// approximation of the same (the estimate's cluster-robust variance).
const EXACT_CLUSTERS: usize = 4000;

/// The difference of the groups' rates with its bootstrap interval.
///
/// Each webhook is compared with itself, and the differences are weighted by its sends in
/// both groups: pooled, webhooks that hold out different shares would set one webhook's
/// audience against another's (Simpson's paradox). A webhook with sends in one group only has
/// nothing to compare and is left out, and so is one with fewer than [`MIN_CONTACTS`] in a
/// group.
pub(super) fn compare(
    metric: Engagement,
    hours: i64,
    strata: usize,
    clusters: &[Cluster],
) -> Metric {
    let add = |t: (u64, f64), c: &(u64, f64)| (t.0 + c.0, t.1 + c.1);
    // Each webhook's [optimized, holdout] totals, and contacts (a cluster has one cell per
    // webhook and group); the webhooks compared.
    let mut totals = vec![[(0u64, 0.0); 2]; strata];
    let mut contacts = vec![[0u64; 2]; strata];
    for c in clusters.iter().flatten() {
        let g = usize::from(c.holdout);
        totals[c.stratum][g] = add(totals[c.stratum][g], &(c.sends, c.engaged));
        contacts[c.stratum][g] += 1;
    }
    let sent_both = |k: &usize| totals[*k].iter().all(|t| t.0 > 0);
    let both: Vec<usize> = (0..strata)
        .filter(sent_both)
        .filter(|&k| contacts[k].iter().all(|&n| n >= MIN_CONTACTS))
        .collect();
    let sent: Vec<usize> = (0..strata).filter(sent_both).collect();
    let too_few_contacts = sent.len() - both.len();
    // Counted over the webhooks compared; with none, over those with sends in both groups
    // (shown, not compared), else over all (there is nothing to compare). Where some webhook
    // has sends in both groups, the rates are each webhook's, weighted: never pooled.
    let (counted, weighted): (Vec<usize>, bool) = match (both.is_empty(), sent.is_empty()) {
        (false, _) => (both.clone(), true),
        (true, false) => (sent, true),
        (true, true) => ((0..strata).collect(), false),
    };
    let [mut a, mut b] =
        [0, 1].map(|g| share(counted.iter().map(|&k| &totals[k][g]).fold((0, 0.0), add)));
    let weights: Vec<f64> = counted
        .iter()
        .map(|&k| (totals[k][0].0 + totals[k][1].0) as f64)
        .collect();
    let weight: f64 = weights.iter().sum();
    if weighted {
        let rate = |g: usize| {
            counted
                .iter()
                .zip(&weights)
                .map(|(&k, w)| w * share(totals[k][g]).rate)
                .sum::<f64>()
                / weight
        };
        (a.rate, b.rate) = (rate(0), rate(1));
    }
    let difference = (!both.is_empty()).then_some(a.rate - b.rate);
    let interval = (!both.is_empty()).then(|| {
        // (Its name's length: the seed reports have been drawn with.)
        let seed = SEED ^ hours as u64 ^ metric.as_str().len() as u64;
        Resample::new(strata, &both, &weights, clusters).interval(seed)
    });
    let enough = a.sends >= MIN_SENDS && b.sends >= MIN_SENDS;
    let verdict = interval.filter(|_| enough).and_then(|[lo, hi]| {
        if lo > 0.0 {
            Some(Verdict::OptimizedBetter)
        } else if hi < 0.0 {
            Some(Verdict::HoldoutBetter)
        } else {
            None
        }
    });
    let no_verdict = match (verdict, interval) {
        (Some(_), _) => None,
        (None, None) if too_few_contacts > 0 => Some(NoVerdict::TooFewContacts),
        (None, None) => Some(NoVerdict::NotSentInBoth),
        (None, Some(_)) if !enough => Some(NoVerdict::TooFewSends),
        (None, Some(_)) => Some(NoVerdict::IncludesZero),
    };
    Metric {
        metric,
        window_hours: hours,
        optimized: a,
        holdout: b,
        difference,
        interval,
        verdict,
        no_verdict,
        no_verdict_text: None,
        first_window_end_ms: None,
        too_few_contacts,
        weighed: if both.is_empty() {
            Vec::new()
        } else {
            counted
                .iter()
                .copied()
                .zip(weights.iter().copied())
                .collect()
        },
    }
}

/// The contacts of the webhooks compared, to draw from with replacement, each with all its
/// sends: a contact reached by two webhooks (or in both groups of one) is drawn once for
/// both, as the dependence between its sends asks.
struct Resample<'w> {
    /// The webhooks' weights, in the order of their cells.
    weights: &'w [f64],
    /// Per contact: (cell, sends, engaged); a webhook's cells are `2 × its place` (optimized)
    /// and the next (held out).
    pool: Vec<Vec<(usize, f64, f64)>>,
}

impl<'w> Resample<'w> {
    /// `clusters`' cells in the webhooks of `both`, and one more contact per group with one
    /// engaged send and one not (Agresti and Caffo's adjustment), spread over the webhooks by
    /// weight: a group that engaged never (or always) still varies, so 0 of 20 does not pass
    /// for certainty, and one such contact per webhook would pull many small groups towards
    /// 50 % and shift the interval off the estimate. They are drawn as the others are (and
    /// counted so by the normal approximation): kept in every resample, they moved a rate of
    /// 0 of 100 without adding spread, and 10 of 400 against it was a verdict (an audit
    /// found it; Fisher's exact test gives p = 0.22).
    fn new(strata: usize, both: &[usize], weights: &'w [f64], clusters: &[Cluster]) -> Self {
        let mut place = vec![None; strata];
        for (p, &k) in both.iter().enumerate() {
            place[k] = Some(p);
        }
        let mut pool: Vec<Vec<(usize, f64, f64)>> = clusters
            .iter()
            .map(|cells| {
                cells
                    .iter()
                    .filter_map(|c| {
                        let cell = 2 * place[c.stratum]? + usize::from(c.holdout);
                        Some((cell, c.sends as f64, c.engaged))
                    })
                    .collect::<Vec<_>>()
            })
            .filter(|cells| !cells.is_empty())
            .collect();
        let weight: f64 = weights.iter().sum();
        for g in 0..2 {
            let share = |p: usize| weights[p] / weight;
            pool.push(
                (0..both.len())
                    .map(|p| (2 * p + g, 2.0 * share(p), share(p)))
                    .collect(),
            );
        }
        Self { weights, pool }
    }

    /// The weighted difference from each cell's (sends, engaged); a webhook left without sends
    /// in a group is left out, as in the estimate.
    fn difference(&self, sums: &[(f64, f64)]) -> Option<f64> {
        let (mut sum, mut weight) = (0.0, 0.0);
        for (p, w) in self.weights.iter().enumerate() {
            let (a, b) = (sums[2 * p], sums[2 * p + 1]);
            if a.0 > 0.0 && b.0 > 0.0 {
                sum += w * (a.1 / a.0 - b.1 / b.0);
                weight += w;
            }
        }
        (weight > 0.0).then(|| sum / weight)
    }

    /// The bootstrap 95 % interval, or beyond [`EXACT_CLUSTERS`] contacts its normal
    /// approximation: the estimate's variance summed over contacts, each contributing its
    /// cells' deviations from their rates.
    fn interval(&self, seed: u64) -> [f64; 2] {
        let cells = 2 * self.weights.len();
        let mut totals = vec![(0.0, 0.0); cells];
        for &(i, s, e) in self.pool.iter().flatten() {
            totals[i].0 += s;
            totals[i].1 += e;
        }
        let n = self.pool.len();
        if n > EXACT_CLUSTERS {
            let weight: f64 = self.weights.iter().sum();
            let spread: f64 = self
                .pool
                .iter()
                .map(|cells| {
                    cells
                        .iter()
                        .map(|&(i, s, e)| {
                            let (sends, engaged) = totals[i];
                            let sign = if i % 2 == 0 { 1.0 } else { -1.0 };
                            sign * self.weights[i / 2] / weight * (e - engaged / sends * s) / sends
                        })
                        .sum::<f64>()
                        .powi(2)
                })
                .sum();
            let se = (n as f64 / (n as f64 - 1.0) * spread).sqrt();
            let center = self.difference(&totals).unwrap_or(0.0);
            return [
                (center - 1.96 * se).max(-1.0),
                (center + 1.96 * se).min(1.0),
            ];
        }
        let mut rng = Rng::new(seed);
        let mut sums = vec![(0.0, 0.0); cells];
        let mut real = vec![false; cells];
        // The two pseudo-contacts come last.
        let contacts = n - 2;
        let mut diffs: Vec<f64> = (0..RESAMPLES)
            .filter_map(|_| {
                // A resample that leaves a compared webhook without a real contact's sends in
                // a group is drawn again: left out, its weight would go to the others (a
                // webhook with one or two held-out contacts would be left out of one resample
                // in ten or so); kept with the pseudo-contact's alone, its rate would be 50 %.
                for _ in 0..REDRAWS {
                    sums.fill((0.0, 0.0));
                    real.fill(false);
                    // Every contact drawn with replacement, the pseudo-contacts too.
                    for k in (0..n).map(|_| rng.below(n as u64) as usize) {
                        for &(i, s, e) in &self.pool[k] {
                            sums[i].0 += s;
                            sums[i].1 += e;
                            real[i] |= k < contacts;
                        }
                    }
                    if real.iter().all(|&r| r) {
                        break;
                    }
                }
                self.difference(&sums)
            })
            .collect();
        if diffs.is_empty() {
            return [-1.0, 1.0];
        }
        diffs.sort_by(f64::total_cmp);
        central_95(&diffs)
    }
}

/// The bounds of `sorted`'s (not empty) central 95%: as many draws outside each (the upper
/// bound, one place too high, left one fewer above it than below the lower: an audit).
fn central_95(sorted: &[f64]) -> [f64; 2] {
    let out = ((0.025 * sorted.len() as f64) as usize).min((sorted.len() - 1) / 2);
    [sorted[out], sorted[sorted.len() - 1 - out]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interval_leaves_as_many_draws_out_on_each_side() {
        let draws: Vec<f64> = (0..4000).map(f64::from).collect();
        let [lo, hi] = central_95(&draws);
        let below = draws.iter().filter(|&&d| d < lo).count();
        let above = draws.iter().filter(|&&d| d > hi).count();
        assert_eq!((below, above), (100, 100));
        assert_eq!(central_95(&draws[..1]), [0.0, 0.0]);
    }

    /// Per webhook, [optimized, held out]: each contact's (sends, engaged).
    type Groups = [Vec<(u64, u64)>; 2];

    /// The comparison of webhooks whose contacts are all different ones.
    fn apart(strata: &[Groups]) -> Metric {
        let clusters: Vec<Cluster> = strata
            .iter()
            .enumerate()
            .flat_map(|(stratum, groups)| {
                groups.iter().enumerate().flat_map(move |(g, contacts)| {
                    contacts.iter().map(move |&(sends, engaged)| {
                        vec![Cell {
                            stratum,
                            holdout: g == 1,
                            sends,
                            engaged: engaged as f64,
                        }]
                    })
                })
            })
            .collect();
        compare(Engagement::Opened, 24, strata.len(), &clusters)
    }

    /// The comparison of one webhook's two groups.
    fn one_webhook(a: &[(u64, u64)], b: &[(u64, u64)]) -> Metric {
        apart(&[[a.to_vec(), b.to_vec()]])
    }

    /// `sends` contacts with one send each, `engaged` of them engaged.
    fn singles(sends: u64, engaged: u64) -> Vec<(u64, u64)> {
        (0..sends).map(|i| (1, u64::from(i < engaged))).collect()
    }

    #[test]
    fn the_interval_excludes_zero_only_for_a_real_difference() {
        let same = one_webhook(&singles(400, 120), &singles(400, 118));
        let [lo, hi] = same.interval.unwrap();
        assert!(lo < 0.0 && hi > 0.0, "{lo} {hi}");
        assert_eq!(same.verdict, None);
        assert_eq!(same.no_verdict, Some(NoVerdict::IncludesZero));
        let better = one_webhook(&singles(400, 200), &singles(400, 120));
        let [lo, hi] = better.interval.unwrap();
        assert!(lo > 0.1 && hi < 0.3, "{lo} {hi}");
        assert_eq!(better.verdict, Some(Verdict::OptimizedBetter));
        assert_eq!(better.no_verdict, None);
        // Large groups use the normal approximation; the interval narrows with size.
        let big = one_webhook(&singles(100_000, 30_500), &singles(100_000, 30_000));
        let [lo, hi] = big.interval.unwrap();
        assert!(lo > 0.0 && hi - lo < 0.01, "{lo} {hi}");
        let alone = one_webhook(&singles(10, 5), &[]);
        assert!(alone.interval.is_none());
        assert_eq!(alone.no_verdict, Some(NoVerdict::NotSentInBoth));
        // A group that never engaged is not certainty: 0 of 60 against 6 of 400 covers zero,
        // and fewer than MIN_SENDS sends give no verdict at all.
        let [lo, _] = one_webhook(&singles(400, 6), &singles(60, 0))
            .interval
            .unwrap();
        assert!(lo < 0.0, "{lo}");
        let few = one_webhook(&singles(400, 200), &singles(20, 0));
        assert_eq!(few.verdict, None);
        // Though its interval excludes zero: the reason is the sends, not the interval.
        assert!(few.interval.unwrap()[0] > 0.0);
        assert_eq!(few.no_verdict, Some(NoVerdict::TooFewSends));
        // Nor is it when the other group's rate is low (clicks) or high (machine opens): an
        // earlier version's pseudo-contacts, in every resample, gave these verdicts.
        let low = one_webhook(&singles(400, 10), &singles(100, 0));
        assert_eq!(low.verdict, None, "{:?}", low.interval);
        let high = one_webhook(&singles(400, 390), &singles(100, 100));
        assert_eq!(high.verdict, None, "{:?}", high.interval);
    }

    /// Webhooks that each hold out a contact or two are left out: resampled, such a group's
    /// rate barely varies, so together they gave an interval far too narrow and verdicts on
    /// no difference. Here 30 webhooks reach 50 contacts optimized (30 % engaged) and one held
    /// out (a third of them engaged): the old interval excluded zero.
    #[test]
    fn webhooks_holding_out_too_few_contacts_are_not_compared() {
        let strata: Vec<Groups> = (0..30)
            .map(|i| [singles(50, 15), singles(1, u64::from(i % 3 == 0))])
            .collect();
        let m = apart(&strata);
        assert_eq!(
            (m.too_few_contacts, m.interval, m.verdict, m.no_verdict),
            (30, None, None, Some(NoVerdict::TooFewContacts))
        );
        // The rates shown are still each webhook's, weighted by its sends, never pooled.
        let m = apart(&[
            [singles(50, 5), singles(2, 1)],
            [singles(2, 2), singles(4, 1)],
        ]);
        assert_eq!((m.too_few_contacts, m.difference), (2, None));
        let weighted = |a: f64, b: f64| (52.0 * a + 6.0 * b) / 58.0;
        assert!(
            (m.optimized.rate - weighted(0.1, 1.0)).abs() < 1e-9,
            "{m:?}"
        );
        assert!((m.holdout.rate - weighted(0.5, 0.25)).abs() < 1e-9, "{m:?}");
        // Five contacts in each group are enough to compare.
        let mut strata = strata;
        strata.push([singles(50, 15), singles(5, 1)]);
        let m = apart(&strata);
        assert_eq!(m.too_few_contacts, 30);
        assert_eq!((m.optimized.sends, m.holdout.sends), (50, 5));
        assert!(m.interval.is_some());
    }

    /// The pseudo-contacts are drawn like real ones: groups whose contacts are all alike
    /// still give an interval that holds the difference shown and excludes zero. An earlier
    /// version kept them in every resample: the interval was a fraction of a point wide,
    /// below the +100 points shown, and a group of 0 of 100 barely varied at all.
    #[test]
    fn the_pseudo_contacts_are_drawn_like_the_others() {
        let m = one_webhook(&singles(40, 40), &singles(40, 0));
        let [lo, hi] = m.interval.unwrap();
        assert!(lo > 0.8 && hi > 0.999, "{lo} {hi}");
        assert_eq!(m.verdict, Some(Verdict::OptimizedBetter));
    }

    /// Two webhooks, each the same for both groups, one holding out half its receipts and
    /// one a twentieth, with different audiences (10 % and 50 % engaged). Pooled, the held-out
    /// group is mostly the first webhook's audience and optimized sends would look 22 points
    /// better; each webhook compared with itself, there is no difference.
    #[test]
    fn webhooks_holding_out_different_shares_are_each_compared_with_themselves() {
        let strata = [
            [singles(500, 50), singles(500, 50)],
            [singles(950, 475), singles(50, 25)],
        ];
        let m = apart(&strata);
        assert!(m.difference.unwrap().abs() < 1e-9, "{:?}", m.difference);
        let [lo, hi] = m.interval.unwrap();
        assert!(lo < 0.0 && hi > 0.0, "{lo} {hi}");
        assert_eq!(m.verdict, None);
        assert_eq!((m.optimized.sends, m.holdout.sends), (1450, 550));
        assert!((m.optimized.rate - m.holdout.rate).abs() < 1e-9);
        // A webhook with sends in one group only is left out of the counts and the rates.
        let strata = [
            [singles(100, 10), singles(100, 30)],
            [singles(300, 300), vec![]],
        ];
        let m = apart(&strata);
        assert_eq!((m.optimized.sends, m.optimized.engaged), (100, 10.0));
        assert!(
            (m.difference.unwrap() + 0.2).abs() < 1e-9,
            "{:?}",
            m.difference
        );
        // With no webhook in both groups there is no difference, pooled or not.
        let m = apart(&[[singles(100, 10), vec![]], [vec![], singles(100, 30)]]);
        assert_eq!((m.difference, m.interval), (None, None));
        // Many webhooks each holding out a few sends, at a rate far from 50 %: the
        // adjustment, shared among them, does not pull the interval off zero.
        let strata: Vec<Groups> = (0..20)
            .map(|_| [singles(400, 40), singles(20, 2)])
            .collect();
        let m = apart(&strata);
        let [lo, hi] = m.interval.unwrap();
        assert!(lo < 0.0 && hi > 0.0, "{lo} {hi}");
    }

    #[test]
    fn contacts_with_many_sends_widen_the_interval() {
        // The same 400 sends and rates, as 40 contacts of 10 sends that all engage or none.
        let lumped = |contacts: u64, engaged: u64| -> Vec<(u64, u64)> {
            (0..contacts)
                .map(|i| (10, if i < engaged { 10 } else { 0 }))
                .collect()
        };
        let width = |m: Metric| m.interval.map(|[lo, hi]| hi - lo).unwrap();
        let independent = width(one_webhook(&singles(400, 200), &singles(400, 140)));
        let clustered = width(one_webhook(&lumped(40, 20), &lumped(40, 14)));
        assert!(clustered > 2.5 * independent, "{clustered} {independent}");
        // Beyond the exact resampling, the normal approximation keeps the clustering.
        let independent = width(one_webhook(
            &singles(40_000, 20_000),
            &singles(40_000, 14_000),
        ));
        let clustered = width(one_webhook(&lumped(4_000, 2_000), &lumped(4_000, 1_400)));
        assert!(clustered > 2.5 * independent, "{clustered} {independent}");
    }

    /// Two webhooks sending to the same 400 contacts, each of whom opens every send or none:
    /// drawn once for both webhooks, a contact counts once, and the interval is about √2
    /// wider than for 800 different contacts with the same sends (an earlier version drew
    /// each webhook's contacts apart, as if they were different people).
    #[test]
    fn a_contact_in_several_webhooks_is_drawn_once_for_all_of_them() {
        let cell = |stratum, holdout, engaged| Cell {
            stratum,
            holdout,
            sends: 1,
            engaged: f64::from(u8::from(engaged)),
        };
        let width = |m: &Metric| m.interval.map(|[lo, hi]| hi - lo).unwrap();
        // `n` contacts per group, each sent by both webhooks, `a` optimized and `b` held out
        // engaging: the interval's width drawn together against drawn apart.
        let ratio = |n: u64, a: u64, b: u64| {
            let shared: Vec<Cluster> = (0..2 * n)
                .map(|i| {
                    let (holdout, engaged) = if i < n {
                        (false, i < a)
                    } else {
                        (true, i - n < b)
                    };
                    vec![cell(0, holdout, engaged), cell(1, holdout, engaged)]
                })
                .collect();
            let groups = [singles(n, a), singles(n, b)];
            let separate = apart(&[groups.clone(), groups]);
            let together = compare(Engagement::Opened, 24, 2, &shared);
            assert_eq!(together.difference, separate.difference);
            width(&together) / width(&separate)
        };
        let exact = ratio(200, 100, 70);
        assert!((1.25..1.6).contains(&exact), "{exact}");
        // The same beyond the exact resampling, where the normal approximation sums each
        // contact's cells before squaring.
        let normal = ratio(4000, 2000, 1400);
        assert!((1.35..1.47).contains(&normal), "{normal}");
    }

    /// Contacts in both groups of one webhook, each opening both of its sends or neither: the
    /// groups' rates move together when contacts are drawn, so the interval of their
    /// difference is far narrower than for different contacts, and still covers zero.
    #[test]
    fn a_contact_in_both_groups_is_drawn_once_for_both() {
        let paired: Vec<Cluster> = (0..400)
            .map(|i| {
                [false, true]
                    .map(|holdout| Cell {
                        stratum: 0,
                        holdout,
                        sends: 1,
                        engaged: f64::from(u8::from(i < 120)),
                    })
                    .to_vec()
            })
            .collect();
        let together = compare(Engagement::Opened, 24, 1, &paired);
        let separate = one_webhook(&singles(400, 120), &singles(400, 120));
        let [lo, hi] = together.interval.unwrap();
        assert!(lo <= 0.0 && hi >= 0.0, "{lo} {hi}");
        let [slo, shi] = separate.interval.unwrap();
        assert!(hi - lo < 0.5 * (shi - slo), "{lo} {hi} against {slo} {shi}");
    }
}
