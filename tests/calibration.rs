//! The model fits itself to each account's data: where contacts have habits of their own it
//! trusts them, and where they have none it converges to the population, never doing worse
//! than the population's best hours. Synthetic data sets from `sendtime gen`, judged by
//! `sendtime backtest` through the binary.

mod common;

use std::path::Path;

use serde_json::Value;

fn sendtime(data: &Path, args: &[&str]) -> String {
    common::sendtime(&common::shipped_config(), data, args, &[])
}

/// A year of 3,000 synthetic contacts, with or without habits of their own, backtested at a
/// split six weeks before its end.
fn backtest(habits: bool) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = data.display().to_string();
    let mut args = vec![
        "gen",
        "--contacts",
        "3000",
        "--events",
        "200000",
        "--seed",
        "9",
        "--end",
        "2026-01-01",
        "--out",
        &out,
    ];
    if !habits {
        args.push("--no-habits");
    }
    sendtime(&data, &args);
    let json = sendtime(&data, &["backtest", "--split", "2025-11-15", "--json"]);
    serde_json::from_str(&json).unwrap()
}

fn hit_at_3(report: &Value, predictor: &str) -> f64 {
    report["warm"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p[0] == predictor)
        .unwrap()[1]["hour_of_day"]["hit_at_3"]
        .as_f64()
        .unwrap()
}

fn against_population(report: &Value) -> &Value {
    report["model_against"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["baseline"] == "population best hours")
        .unwrap()
}

#[test]
fn without_personal_habits_the_fit_converges_to_the_population() {
    let report = backtest(false);
    let fit = &report["fit"];
    assert_eq!(fit["fitted"], true, "{fit}");
    assert!(
        fit["prior_strength"].as_f64().unwrap() >= 1000.0,
        "a strong prior: the population decides; {fit}"
    );
    let (model, population) = (
        hit_at_3(&report, "sendtime model"),
        hit_at_3(&report, "population best hours"),
    );
    let c = against_population(&report);
    let [lo, hi] = [
        c["hit_at_3_interval"][0].as_f64().unwrap(),
        c["hit_at_3_interval"][1].as_f64().unwrap(),
    ];
    assert!(
        lo <= 1e-9 && hi >= -1e-9,
        "within noise of the population: {model} vs {population}, [{lo}, {hi}]"
    );
    assert!(c["nll_gain"].as_f64().unwrap() >= -0.01, "{c}");
    // Within noise of the population, as the intervals read it (a point estimate a hair
    // below would be noise, not a loss).
    let warm = &report["against_population"]["warm"];
    assert!(warm == "holds" || warm == "within_noise", "{warm}");
}

#[test]
fn with_personal_habits_the_fit_trusts_each_contact() {
    let report = backtest(true);
    let fit = &report["fit"];
    assert_eq!(fit["changed"], true, "{fit}");
    assert!(fit["prior_strength"].as_f64().unwrap() <= 16.0, "{fit}");
    assert!(
        fit["loss"].as_f64().unwrap() < fit["file_loss"].as_f64().unwrap(),
        "{fit}"
    );
    let c = against_population(&report);
    assert!(c["hit_at_3_interval"][0].as_f64().unwrap() > 0.1, "{c}");
    assert_eq!(report["never_worse_than_population"], true);
    assert_eq!(report["against_population"]["warm"], "holds");
    assert!(hit_at_3(&report, "sendtime model") > hit_at_3(&report, "population best hours"));
}
