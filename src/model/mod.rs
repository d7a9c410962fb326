//! The send-time model: per-contact engagement profiles over the 168 hour-of-week
//! slots, smoothed toward the population, and the planning rule that turns a profile into a
//! due time for each webhook type.
//!
//! Profile: decayed, click-weighted counts of opens and clicks per slot. Score for a contact:
//! the counts are spread to neighbouring hours (a small Gaussian kernel), partly pooled across
//! the days of the week (a contact's hour-of-day habit is far better measured than its
//! hour-of-week one), and then combined with the population profile as a Dirichlet prior. The
//! parameters were tuned on a validation split inside the training period of the Outspot data
//! (`sendtime backtest --tune`); see the README's model section.

pub mod backtest;
pub mod calibrate;
pub mod commands;
pub mod dataset;
pub mod explain;
pub mod plan;
pub mod profile;
pub mod slots;
pub mod stored;
pub mod synth;

pub use plan::{Plan, plan};
pub use profile::{Class, Profile, Profiles};

/// Knobs of the model. Defaults are the values `backtest --tune` chose on the Outspot data
/// (validation windows before 2022-07-01; see the README).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Half-life of an event's weight, in days.
    pub half_life_days: f64,
    /// Weight of a click relative to an open.
    pub click_weight: f64,
    /// Strength of the population prior, in pseudo-events.
    pub prior_strength: f64,
    /// Standard deviation, in hours, of the kernel that spreads counts to neighbouring hours.
    pub hour_bandwidth: f64,
    /// Share of a contact's counts pooled across days of the week (0: none, 1: all).
    pub day_pooling: f64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            half_life_days: 480.0,
            click_weight: 2.0,
            prior_strength: 12.0,
            hour_bandwidth: 1.0,
            day_pooling: 0.9,
        }
    }
}

/// Thresholds of the engagement classes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Fewer opens and clicks than this: still evaluating.
    pub evaluating_below: u32,
    /// No open or click for this many days: inactive.
    pub inactive_days: u32,
    /// Window for "recent" engagement when judging fading, in days.
    pub recent_days: u32,
    /// Recent engagement rate below this share of the contact's own long-run rate: passive.
    pub passive_ratio: f64,
    /// More engagement events than this on one day, on average over its active days, or in
    /// total over a year: a machine (mail scanner, bot), not a person.
    pub machine_per_day: f64,
    pub machine_per_year: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            evaluating_below: 3,
            inactive_days: 90,
            recent_days: 30,
            passive_ratio: 0.4,
            machine_per_day: 25.0,
            machine_per_year: 5000.0,
        }
    }
}

/// Everything the model needs from the config.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ModelConfig {
    /// The file's values (the defaults); those `auto` names are fitted when profiles are built.
    pub params: Params,
    pub thresholds: Thresholds,
    pub auto: calibrate::Auto,
}
